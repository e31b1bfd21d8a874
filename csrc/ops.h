// Host-side helpers shared by the CPU and CUDA implementations of the alara ops.
#pragma once

#include <ATen/ATen.h>

#include "raymath.h"

namespace alara {

// Number of zero pixels added on each side of the interpolated axis (see plane_range).
constexpr int kPad = 2;

inline Geometry make_geometry(int64_t kind, int64_t n0, int64_t n1, double x0, double y0,
                              double dx, double dy, int64_t n_bins, double s0, double ds,
                              double src_radius, double src_det) {
  TORCH_CHECK(kind >= 0 && kind <= 2, "alara: kind must be 0 (parallel), 1 (fan flat) or ",
              "2 (fan curved), got ", kind);
  TORCH_CHECK(n0 > 0 && n1 > 0 && n_bins > 0, "alara: grid and detector sizes must be positive");
  TORCH_CHECK(dx > 0 && dy > 0 && ds > 0, "alara: pixel and bin spacings must be positive");
  TORCH_CHECK(kind == PARALLEL || (src_radius > 0 && src_det > 0),
              "alara: fan beam needs positive src_radius and src_det");
  Geometry g;
  g.kind = static_cast<int>(kind);
  g.n0 = static_cast<int>(n0);
  g.n1 = static_cast<int>(n1);
  g.x0 = x0;
  g.y0 = y0;
  g.dx = dx;
  g.dy = dy;
  g.n_bins = static_cast<int>(n_bins);
  g.s0 = s0;
  g.ds = ds;
  g.src_radius = src_radius;
  g.src_det = src_det;
  return g;
}

inline void check_angles(const at::Tensor& angles, const at::Tensor& data) {
  TORCH_CHECK(angles.dim() == 1 && angles.numel() > 0, "alara: angles must be a non-empty 1-D tensor");
  TORCH_CHECK(angles.scalar_type() == at::kDouble, "alara: angles must be float64, got ",
              angles.scalar_type());
  TORCH_CHECK(angles.device() == data.device(), "alara: angles must be on the device of the "
              "data (", data.device(), "), got ", angles.device());
}

inline void check_distance_weight(int64_t kind, bool distance_weight) {
  TORCH_CHECK(!distance_weight || kind != PARALLEL,
              "alara: distance_weight is a fan-beam weight; it is undefined for parallel beams");
}

inline void check_data(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, "alara: ", name, " must be 4-D [B, C, H, W], got ", t.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "alara: ", name,
              " must be floating point, got ", t.scalar_type());
}

// The checks every entry point of project (name "image") and backproject ("sinogram")
// runs on its arguments.
inline void check_call(const at::Tensor& data, const char* name, const at::Tensor& angles,
                       int64_t kind, bool distance_weight) {
  check_data(data, name);
  check_angles(angles, data);
  check_distance_weight(kind, distance_weight);
}

// Channels-last copies of a [B, C, n0, n1] image for the two ray families, each padded
// with kPad zeros on both sides of the interpolated axis:
//   planes along axis 0 (x-dominant rays): [n0, n1 + 2 kPad, B*C]
//   planes along axis 1 (y-dominant rays): [n1, n0 + 2 kPad, B*C]
inline std::pair<at::Tensor, at::Tensor> plane_layouts(const at::Tensor& image,
                                                       int64_t pad = kPad) {
  const auto n0 = image.size(2), n1 = image.size(3);
  auto flat = image.reshape({-1, n0, n1});
  auto xl = at::constant_pad_nd(flat, {pad, pad}).permute({1, 2, 0}).contiguous();
  auto yl = at::constant_pad_nd(flat.transpose(1, 2), {pad, pad}).permute({1, 2, 0}).contiguous();
  return {xl, yl};
}

}  // namespace alara

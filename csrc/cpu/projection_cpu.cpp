// The CPU implementations of alara::project and alara::backproject: the op entries,
// which check the arguments, build the geometry once and pick a path for the batch: the
// symmetric paths (symmetric_paths.h), batch groups (batching.h) or the per-view kernels
// (kernels.h), all inside one parallel region per call (parallel.h).

// GCC 12's -W(maybe-)uninitialized flags the AVX-512 intrinsics' own headers (their
// _mm512_undefined_* placeholders, GCC bug 105593) hundreds of times per build: silenced
// for those headers' lines only (included first, before anything else includes them).
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../ops.h"
#include "batching.h"
#include "kernels.h"
#include "parallel.h"
#include "symmetric_paths.h"
#include "symmetry.h"

namespace alara {
namespace {

// What every path of one operator call shares, built once at the op's entry (make_geometry
// checks it): the geometry, including the grid and detector sizes, and the FBP weight.
struct Call {
  Geometry g;
  bool distance_weight;
};

at::Tensor project_impl(const at::Tensor& image, const at::Tensor& angles, const Call& call,
                        bool symmetric) {
  if (is_half(image))
    return project_impl(image.to(at::kFloat), angles, call, symmetric).to(image.scalar_type());
  const Geometry& g = call.g;
  const int kind = g.kind, n_bins = g.n_bins;
  const bool distance_weight = call.distance_weight;
  const int64_t B = image.size(0), C = image.size(1), n0 = g.n0, n1 = g.n1;
  // The symmetric path fills the channel lanes with a single image's views (fan beams; a
  // parallel beam's 4 channels of a quarter of the views cost as much as batch 1); from 8
  // images on the per-view kernel fills them with the images, and a batch's last 1-7
  // images come back here through batch_groups.
  // Below `whole_from` images, one at a time through the batch-1 kernels.  The batch-1
  // fan-beam AVX-512 rays (16 planes per step, simd_avx512.h) beat a masked block of 8
  // channels up to 5 images (float32, 362 x 362, 997 views, one thread, ms per image: 70
  // at batch 1, 83 for 4 channels, 41 for 8).
  int64_t whole_from = 4;
#ifdef ALARA_HAVE_AVX512_PATH
  if (image.scalar_type() == at::kFloat && avx512::enabled()) whole_from = 6;
#endif
  if (symmetric && kind != PARALLEL && B * C > 0 && B * C <= kSymmetricFpImages && symmetry_enabled()) {
    const ViewOrbits orbits = find_view_orbits(g, cpu_doubles(angles));
    if (orbits.useful() && symmetric_fp_pays(orbits, B * C, n0, n1, whole_from)) {
      return project_symmetric(image, angles, orbits, [&](const at::Tensor& x, const at::Tensor& a) {
        return project_impl(x, a, call, false);
      });
    }
  }
  const auto groups = batch_groups(B * C, whole_from, kChannelBlock, false);
  if (!groups.empty()) {
    return in_groups(image, groups, [&](const at::Tensor& x) {
      return project_impl(x, angles, call, symmetric && x.size(0) <= kSymmetricFpImages);
    });
  }
  std::vector<double> cs, sn;
  cos_sin(angles, cs, sn);
  const int64_t V = static_cast<int64_t>(cs.size()), bc = B * C;
  auto out = at::empty({V, n_bins, bc}, image.options());
  if (bc == 0) return out.permute({2, 0, 1}).reshape({B, C, V, n_bins});
#ifdef ALARA_HAVE_AVX2_PATH
  if (kind == PARALLEL && bc == 1 && !distance_weight && image.scalar_type() == at::kFloat &&
      avx2::supported()) {
    std::vector<ViewParams> views(V);
    for (int64_t v = 0; v < V; ++v) views[v] = parallel_view(g, cs[v], sn[v]);
    auto wide = plane_layouts_in_tasks(image, avx2::kGroupPad);
    if (project_parallel_groups_avx2(g, views, wide.first.data_ptr<float>(),
                                     wide.second.data_ptr<float>(), out.data_ptr<float>()))
      return out.permute({2, 0, 1}).reshape({B, C, V, n_bins}).contiguous();
  }
#endif
  auto layouts = plane_layouts_in_tasks(image);
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "alara_project_cpu", [&] {
    project_kernel<scalar_t>(g, cs, sn, layouts.first.data_ptr<scalar_t>(),
                             layouts.second.data_ptr<scalar_t>(), bc, distance_weight,
                             out.data_ptr<scalar_t>());
  });
  return out.permute({2, 0, 1}).reshape({B, C, V, n_bins}).contiguous();
}

// rows: only the image rows [0, rows) (parallel beams; the symmetric path's halves)
at::Tensor backproject_impl(const at::Tensor& sino, const at::Tensor& angles, const Call& call,
                            bool symmetric, int64_t rows) {
  const Geometry& g = call.g;
  const int kind = g.kind;
  const bool distance_weight = call.distance_weight;
  const int64_t n0 = g.n0, n1 = g.n1;
  TORCH_INTERNAL_ASSERT(rows == n0 || kind == PARALLEL);
  if (is_half(sino)) {
    return backproject_impl(sino.to(at::kFloat), angles, call, symmetric, rows)
        .to(sino.scalar_type());
  }
  const int64_t B = sino.size(0), C = sino.size(1), K = g.n_bins;
  if (symmetric && rows == n0 && B * C > 0 && symmetry_enabled()) {
    const ViewOrbits orbits = find_view_orbits(g, cpu_doubles(angles));
    const int64_t group = orbits.useful() ? symmetric_bp_group(orbits, B * C, n0, n1, sino.element_size()) : 0;
    if (group > 0) {
      return backproject_symmetric(sino, angles, orbits, n0, n1, group,
                                   [&](const at::Tensor& y, const at::Tensor& a, int64_t r) {
        return backproject_impl(y, a, call, false, r);
      });
    }
  }
  // Fan beams: from 3 channels on, sharing each pixel's tap search between the channels
  // beats the batch-1 AVX2 lanes.  The batch-1 AVX-512 rows (simd_avx512.h) are faster:
  // per image, float32, one thread, 362 x 362, parallel beam, 1000 views, ms per image at
  // 1 / 4 / 5 / 6 images, the channels padded to a block of 8: 65 / 99 / 69 / 62.  Fan
  // beams: 2 .. 4 channels run unpadded through the AVX-512 lanes, which share each
  // pixel's taps between them (avx512::fan_bp_lanes_multi).
  int64_t whole_from = kind == PARALLEL ? 4 : 2;
  bool fan_lanes_multi = false;  // fan beams, 2 .. 4 channels: the AVX-512 lanes take them as they are
#ifdef ALARA_HAVE_AVX512_PATH
  if (sino.scalar_type() == at::kFloat && avx512::enabled()) {
    whole_from = kind == PARALLEL ? 6 : 2;
    fan_lanes_multi = kind != PARALLEL && !distance_weight;
  }
#endif
  // Fan beams through the AVX-512 lanes: up to 15 channels run in groups of up to 4, whose
  // taps the lanes share; from more channels the AVX2 blocks, which share each tap among
  // all channels, win.  Per image, one thread, 362 x 362, ms: fan-short (720 views) at 8
  // images 42 in groups against 51 padded; fan-997 (orbits of 2 views) at 3 images 63
  // against 98, at 7 images (14 channels) 57 against 64, at 8 (16 channels) 59 against 53;
  // the symmetric fan (orbits of 8) at 1 image 58 against 79, at 2 images 64 against 59.
#ifdef ALARA_HAVE_AVX512_PATH
  const int64_t lanes_group = fan_lanes_multi ? avx512::kMaxMultiChannels : 0;
#else
  const int64_t lanes_group = 0;
#endif
  const auto groups = batch_groups(B * C, whole_from, INT64_MAX, kind == PARALLEL, lanes_group);
  if (!groups.empty()) {
    return in_groups(sino, groups, [&](const at::Tensor& s) {
      return backproject_impl(s, angles, call, false, rows);
    });
  }
  const int64_t bc = B * C;
  if (bc == 0) return at::zeros({B, C, rows, n1}, sino.options());
  const bool multi = fan_lanes_multi && bc >= 2 && bc <= 4;
  if (sino.scalar_type() == at::kFloat && bc > 1 && bc % kChannelBlock != 0 && !multi) {
    // A masked last block of channels costs more than a full one (AVX2 masked stores):
    // pad the batch with zero images to whole blocks (single-thread CPU time per image
    // relative to batch 1: parallel beam 12 images 0.68 masked, 0.37 padded; fan beam 3
    // images 1.02 masked).
    const int64_t pad = kChannelBlock - bc % kChannelBlock;
    auto flat = sino.reshape({bc, 1, sino.size(2), K});
    auto padded = at::cat({flat, at::zeros({pad, 1, sino.size(2), K}, sino.options())}, 0);
    auto out = backproject_impl(padded, angles, call, false, rows);
    return out.narrow(0, 0, bc).reshape({B, C, rows, n1});
  }
  std::vector<double> cs, sn;
  cos_sin(angles, cs, sn);
  const int64_t V = sino.size(2);
  // [V, K, bc] (the glue's large copies and fills run in the region's tasks, see parallel.h)
  auto y = bc == 1 ? sino.reshape({V, K, 1}).contiguous() : transposed(sino, bc, {V, K, bc});
  at::Tensor y_padded;  // [V, K + 2 kBinPad] for the AVX2 parallel-beam rows
  auto out = at::empty({kind == PARALLEL ? rows : 0, n1, bc}, sino.options());
#ifdef ALARA_HAVE_AVX2_PATH
  if (kind == PARALLEL && bc == 1 && sino.scalar_type() == at::kFloat && avx2::supported())
    y_padded = at::constant_pad_nd(y.reshape({-1, K}), {avx2::kBinPad, avx2::kBinPad}).contiguous();
#endif
  if (kind != PARALLEL) {
    auto acc_x = at::empty({n0, n1, bc}, sino.options());
    auto acc_y = at::empty({n1, n0, bc}, sino.options());
    AT_DISPATCH_FLOATING_TYPES(sino.scalar_type(), "alara_backproject_cpu", [&] {
      auto run = distance_weight ? backproject_fan<scalar_t, true> : backproject_fan<scalar_t, false>;
      run(g, cs, sn, y.data_ptr<scalar_t>(), bc, acc_x.data_ptr<scalar_t>(), acc_y.data_ptr<scalar_t>());
    });
    auto img = acc_x + acc_y.transpose(0, 1);
    return img.permute({2, 0, 1}).reshape({B, C, n0, n1}).contiguous();
  }
  AT_DISPATCH_FLOATING_TYPES(sino.scalar_type(), "alara_backproject_cpu", [&] {
    backproject_parallel<scalar_t>(g, cs, sn, y.data_ptr<scalar_t>(), bc, out.data_ptr<scalar_t>(),
                                   y_padded.defined() ? y_padded.data_ptr<float>() : nullptr, rows);
  });
  if (bc == 1) return out.reshape({B, C, rows, n1});
  return transposed(out, rows * n1, {bc, rows, n1}).reshape({B, C, rows, n1});
}

at::Tensor project_cpu(const at::Tensor& image, const at::Tensor& angles, int64_t kind,
                       int64_t n_bins, double x0, double y0, double dx, double dy, double s0,
                       double ds, double src_radius, double src_det, bool distance_weight) {
  check_call(image, "image", angles, kind, distance_weight);
  const Call call{make_geometry(kind, image.size(2), image.size(3), x0, y0, dx, dy, n_bins, s0,
                                ds, src_radius, src_det),
                  distance_weight};
  return run_in_one_region([&] { return project_impl(image, angles, call, true); });
}

at::Tensor backproject_cpu(const at::Tensor& sino, const at::Tensor& angles, int64_t kind,
                           int64_t n0, int64_t n1, double x0, double y0, double dx, double dy,
                           double s0, double ds, double src_radius, double src_det,
                           bool distance_weight) {
  check_call(sino, "sinogram", angles, kind, distance_weight);
  TORCH_CHECK(sino.size(2) == angles.size(0), "alara: sinogram has ", sino.size(2),
              " views but ", angles.size(0), " angles were given");
  const Call call{make_geometry(kind, n0, n1, x0, y0, dx, dy, sino.size(3), s0, ds, src_radius,
                                src_det),
                  distance_weight};
  return run_in_one_region([&] { return backproject_impl(sino, angles, call, true, n0); });
}

}  // namespace

TORCH_LIBRARY_IMPL(alara, CPU, m) {
  m.impl("project", &project_cpu);
  m.impl("backproject", &backproject_cpu);
}

}  // namespace alara

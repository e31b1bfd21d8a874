// The symmetric paths of the CPU operators: where a geometry has the symmetries of the
// square (symmetry.h finds its view orbits), one view of each orbit stands for all of
// them; the other views' sinogram rows, or the image's transforms, become extra channels
// of the per-view kernels.  Here: when that pays, and the reshaping around the kernels.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "batching.h"
#include "kernels.h"
#include "symmetry.h"

namespace alara {
// (Only projection_cpu.cpp includes this: one translation unit, where the templates
// instantiate; an unnamed namespace keeps its helpers out of the library's symbols.)
namespace {

// Where a symmetry of the square moves the pixels: h(p)[d] = p[src[d]], mirrored (n - 1 -
// index) where flip[d].
struct PixelMap {
  int src[2];
  bool flip[2];
};

PixelMap pixel_map(const SquareSymmetry& h) {
  PixelMap a{{0, 1}, {false, false}};
  if (h.reflect) a.flip[1] = !a.flip[1];  // F(q) = (q0, n - 1 - q1)
  for (int i = 0; i < h.m; ++i)           // R(q) = (n - 1 - q1, q0)
    a = PixelMap{{a.src[1], a.src[0]}, {!a.flip[1], a.flip[0]}};
  return a;
}

std::vector<int64_t> flipped_dims(const PixelMap& a) {
  std::vector<int64_t> dims;
  for (int d = 0; d < 2; ++d)
    if (a.flip[d]) dims.push_back(d - 2);
  return dims;
}

// out[..., h(p)] = img[..., p] over the last two (square) dimensions.
at::Tensor move_pixels(const at::Tensor& img, const SquareSymmetry& h) {
  const PixelMap a = pixel_map(h);
  const at::Tensor t = a.src[0] == 0 ? img : img.transpose(-2, -1);
  const auto dims = flipped_dims(a);
  return dims.empty() ? t : t.flip(dims);
}

// out[..., p] = img[..., h(p)]: the inverse of move_pixels.
at::Tensor pull_pixels(const at::Tensor& img, const SquareSymmetry& h) {
  const PixelMap a = pixel_map(h);
  const auto dims = flipped_dims(a);
  const at::Tensor t = dims.empty() ? img : img.flip(dims);
  return a.src[0] == 0 ? t : t.transpose(-2, -1);
}

at::Tensor index_tensor(const int64_t* first, int64_t n, int64_t step) {
  auto t = at::empty({n}, at::TensorOptions().dtype(at::kLong));
  auto* d = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) d[i] = first[i * step];
  return t;
}

// When the symmetric paths pay.  They add work per channel and pixel (the images'
// transforms, the channels' accumulators and their sum) and save work per view, so they
// need enough views per orbit: measured on 2 cores (docs/benchmarks.md), at least 12
// orbits per image of a call; the forward projection only below a full block of 8 images
// and where the channels' image copies stay near the L3 cache (1024^2 pixels, 128 views,
// one image: 1.5x slower through the orbits).
constexpr int64_t kOrbitsPerImage = 12;
constexpr int64_t kSymmetricGroup = 8;                     // images per backprojection call
constexpr int64_t kSymmetricBpBytes = int64_t{256} << 20;  // its accumulators, at most
constexpr int64_t kSymmetricFpImages = kChannelBlock - 1;
constexpr int64_t kSymmetricFpPixels = int64_t{1} << 23;  // channels x pixels, at most

// Images per symmetric backprojection call (0: run per view): as many as the orbits pay
// for, up to 8; but from 8 images on the per-view kernel fills whole channel blocks
// itself, and beats groups of fewer than 8 (e.g. 128 views on 362 x 362, 8 images: 1.9x
// faster than one call of 8 through 16 orbits).
int64_t symmetric_bp_group(const ViewOrbits& orb, int64_t bc, int64_t n0, int64_t n1, int64_t elem) {
  const int64_t per_image = 2 * (orb.half_turn ? 2 : 1) * static_cast<int64_t>(orb.group.size()) * n0 * n1 * elem;
  const int64_t g = std::min({kSymmetricGroup, static_cast<int64_t>(orb.rep.size()) / kOrbitsPerImage,
                              kSymmetricBpBytes / std::max<int64_t>(per_image, 1)});
  if (symmetry_mode() == SymmetryMode::kForce) return std::max<int64_t>(g, 1);
  if (g < 1 || (bc >= kSymmetricGroup && g < kSymmetricGroup)) return 0;
#ifdef ALARA_HAVE_AVX512_PATH
  // A parallel beam's orbits smaller than the square's 8 fill only part of a block of 8
  // channels (padded with zeros); against the batch-1 kernel's 16-pixel AVX-512 rows that
  // pays only from 8 channels (its orbits of 2 views with odd view counts: 4 channels,
  // 91 ms against 60 ms per view; float32, 362 x 362, 1001 views, one thread).  (Fan
  // beams' 2 .. 4 channels run unpadded through the AVX-512 lanes.)
  const int64_t channels = (orb.half_turn ? 2 : 1) * static_cast<int64_t>(orb.group.size()) * std::min(bc, g);
  if (elem == 4 && orb.half_turn && channels < kChannelBlock && avx512::enabled()) return 0;
#endif
  return g;
}

// fp_whole_from: channels from which project_impl runs a batch whole (channels-last)
// rather than image by image; below it the orbits' channels would run one at a time and
// the orbits only add the images' copies (orbits of 2 views, one image: odd fan view
// counts).
bool symmetric_fp_pays(const ViewOrbits& orb, int64_t bc, int64_t n0, int64_t n1, int64_t fp_whole_from) {
  if (symmetry_mode() == SymmetryMode::kForce) return true;
  if (static_cast<int64_t>(orb.group.size()) * bc < fp_whole_from) return false;
  return bc <= kSymmetricFpImages && static_cast<int64_t>(orb.rep.size()) >= kOrbitsPerImage * bc &&
         static_cast<int64_t>(orb.group.size()) * bc * n0 * n1 <= kSymmetricFpPixels;
}

// rows [bc, orbits, K] of the symmetry e with the bins of orbit r reversed where
// orb.reversed says (all toggled if `turn`): between the representative view's bin order
// and that of the view e(rep) (an involution, so it maps either way).
at::Tensor reverse_bins(const at::Tensor& rows, const ViewOrbits& orb, int64_t e, bool turn) {
  const int64_t n = static_cast<int64_t>(orb.group.size()), R = static_cast<int64_t>(orb.rep.size());
  auto mask = at::empty({R}, at::TensorOptions().dtype(at::kBool));
  bool any = false, all = true;
  for (int64_t r = 0; r < R; ++r) {
    const bool rev = (orb.reversed[r * n + e] != 0) != turn;
    mask.data_ptr<bool>()[r] = rev;
    any = any || rev;
    all = all && rev;
  }
  if (!any) return rows;
  if (all) return rows.flip({-1});
  return at::where(mask.view({1, R, 1}), rows.flip({-1}), rows);
}

// The sinogram rows of the views e(rep) of `flat` [bc, V, K], in the representative
// views' bin order: [bc, orbits, K].
at::Tensor member_rows(const at::Tensor& flat, const ViewOrbits& orb, int64_t e, bool turn) {
  const int64_t n = static_cast<int64_t>(orb.group.size()), R = static_cast<int64_t>(orb.rep.size());
  return reverse_bins(flat.index_select(1, index_tensor(orb.member.data() + e, R, n)), orb, e, turn);
}

// Forward projection through the view orbits (symmetry.h): channel (e, b) of the
// representative views projects the image b pulled back by the symmetry e, and lands in
// the views e(rep), with the bins reversed by reflections.  `run(images, angles)` is the
// per-view operator.  For fewer than kChannelBlock images (project_impl).
template <typename F>
at::Tensor project_symmetric(const at::Tensor& image, const at::Tensor& angles,
                             const ViewOrbits& orb, const F& run) {
  const int64_t B = image.size(0), C = image.size(1), bc = B * C;
  const int64_t n = static_cast<int64_t>(orb.group.size()), R = static_cast<int64_t>(orb.rep.size());
  const int64_t V = angles.size(0);
  auto flat = image.reshape({bc, image.size(2), image.size(3)});
  std::vector<at::Tensor> chans;
  for (const SquareSymmetry& h : orb.group) chans.push_back(pull_pixels(flat, h));
  auto x = at::stack(chans, 0).reshape({1, n * bc, image.size(2), image.size(3)});
  auto s = run(x, angles.index_select(0, index_tensor(orb.rep.data(), R, 1)));
  const int64_t K = s.size(3);
  s = s.reshape({n, bc, R, K});
  auto out = at::empty({bc, V, K}, image.options());
  for (int64_t e = 0; e < n; ++e) {
    out.index_copy_(1, index_tensor(orb.member.data() + e, R, n), reverse_bins(s[e], orb, e, false));
  }
  if (!orb.rest.empty()) {
    auto idx = index_tensor(orb.rest.data(), static_cast<int64_t>(orb.rest.size()), 1);
    out.index_copy_(1, idx, run(image, angles.index_select(0, idx)).reshape({bc, -1, K}));
  }
  return out.reshape({B, C, V, K});
}

// Backprojection through the view orbits: the sinogram rows of the views e(rep) (bins
// reversed as the symmetry says) are channel (e, b) of the representative views, and the
// image of channel (e, b) moves to the pixels h_e(p).  With the half turn (parallel beams)
// every channel also has a partner h_e o R(pi), the same view with its bins reversed; each
// of the pair computes only the first half of the rows (`run(y, angles, rows)`), which
// together with the partner's half-turned half covers the image once.
template <typename F>
at::Tensor backproject_symmetric(const at::Tensor& sino, const at::Tensor& angles,
                                 const ViewOrbits& orb, int64_t n0, int64_t n1, int64_t group,
                                 const F& run) {
  const int64_t B = sino.size(0), C = sino.size(1), bc = B * C;
  const int64_t n = static_cast<int64_t>(orb.group.size()), R = static_cast<int64_t>(orb.rep.size());
  const int64_t V = sino.size(2), K = sino.size(3), halves = orb.half_turn ? 2 : 1;
  if (bc > group) {  // `group` images per call
    std::vector<int64_t> sizes;
    for (int64_t left = bc; left > 0; left -= group) sizes.push_back(std::min(left, group));
    return in_groups(sino, sizes, [&](const at::Tensor& y) {
      return backproject_symmetric(y, angles, orb, n0, n1, group, run);
    });
  }
  auto flat = sino.reshape({bc, V, K});
  std::vector<at::Tensor> chans;
  for (int64_t half = 0; half < halves; ++half)
    for (int64_t e = 0; e < n; ++e) chans.push_back(member_rows(flat, orb, e, half == 1));
  const int64_t rows = orb.half_turn ? (n0 + 1) / 2 : n0;
  auto y = at::stack(chans, 0).reshape({1, halves * n * bc, R, K});
  auto img = run(y, angles.index_select(0, index_tensor(orb.rep.data(), R, 1)), rows)
                 .reshape({halves, n, bc, rows, n1});
  auto out = at::zeros({bc, n0, n1}, sino.options());
  for (int64_t half = 0; half < halves; ++half) {
    for (int64_t e = 0; e < n; ++e) {
      SquareSymmetry h = orb.group[e];
      at::Tensor part = img[half][e];
      if (half == 1) {  // the partner: its rows [0, n0 / 2) land on [n0 - n0 / 2, n0)
        h.m += 2;
        part = part.narrow(-2, 0, n0 / 2);
      }
      if (part.size(-2) < n0) part = at::constant_pad_nd(part, {0, 0, 0, n0 - part.size(-2)});
      out.add_(move_pixels(part, h));
    }
  }
  if (!orb.rest.empty()) {
    auto idx = index_tensor(orb.rest.data(), static_cast<int64_t>(orb.rest.size()), 1);
    out.add_(run(sino.index_select(2, idx), angles.index_select(0, idx), n0).reshape({bc, n0, n1}));
  }
  return out.reshape({B, C, n0, n1});
}

}  // namespace
}  // namespace alara

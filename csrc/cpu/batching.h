// Batch shaping of the CPU operators: how a batch of images is split between the
// kernels (batch_groups), and the small conversions the entry points share.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "../ops.h"
#include "kernels.h"
#include "parallel.h"

namespace alara {
// (Only projection_cpu.cpp includes this: one translation unit, where the templates
// instantiate; an unnamed namespace keeps its helpers out of the library's symbols.)
namespace {

std::vector<double> cpu_doubles(const at::Tensor& t) {
  auto c = t.to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

void cos_sin(const at::Tensor& angles, std::vector<double>& cs, std::vector<double>& sn) {
  cs = cpu_doubles(angles);
  sn.resize(cs.size());
  for (size_t v = 0; v < cs.size(); ++v) {
    const double a = cs[v];
    cs[v] = std::cos(a);
    sn[v] = std::sin(a);
  }
}

// Runs `run` on consecutive groups of the B*C images of t (each [n, 1, H, W], n from
// `sizes`) and concatenates the results.
template <typename F>
at::Tensor in_groups(const at::Tensor& t, const std::vector<int64_t>& sizes, const F& run) {
  const int64_t B = t.size(0), C = t.size(1);
  auto flat = t.reshape({B * C, 1, t.size(2), t.size(3)});
  std::vector<at::Tensor> outs;
  int64_t first = 0;
  for (int64_t n : sizes) {
    outs.push_back(run(flat.narrow(0, first, n)));
    first += n;
  }
  auto out = at::cat(outs, 0);
  return out.reshape({B, C, out.size(2), out.size(3)});
}

// How the CPU kernels split a batch of bc images (the sizes of consecutive groups; empty:
// run it whole), so that batching always pays (issue 11: per image, a batch should cost
// at most a single image, and at most 0.6 of it from 8 images on):
// - below `whole_from` images, one at a time through the batch-1 kernels: the
//   channels-last kernels pay off only from about a block of kChannelBlock channels;
// - above `max_group` images, groups of min(max_group, kChannelBlock): the forward
//   projection's masked last block costs as much as a full one, and its channels-last
//   image copies of 32 images (17 MB each) stream from memory (single-thread CPU time per
//   image relative to batch 1, whole / in groups of 8: 9 images 0.85 / 0.51, 32 images
//   0.83 / 0.49);
// - a last block of 1-3 channels after full ones (`split_tail`) one at a time: a masked
//   block of 8 costs as much as a full one (parallel BP at 9 images: 0.7-0.8 of batch 1);
// - with `lanes_group` (the AVX-512 fan BP, whose lanes take up to lanes_group channels
//   unpadded), groups of lanes_group below 2 kChannelBlock channels, and from there whole
//   blocks with the channels past them in groups of lanes_group (fan-offset, orbits of 4
//   views, at 5 images: 20 channels padded to 24 cost 1.02-1.12 of batch 1 per image).
std::vector<int64_t> batch_groups(int64_t bc, int64_t whole_from, int64_t max_group, bool split_tail,
                                  int64_t lanes_group = 0) {
  if (bc > 1 && bc < whole_from) return std::vector<int64_t>(bc, 1);
  std::vector<int64_t> sizes;
  if (lanes_group > 0) {
    const int64_t whole = bc >= 2 * kChannelBlock ? bc - bc % kChannelBlock : 0;
    if (whole > 0) sizes.push_back(whole);
    for (int64_t left = bc - whole; left > 0; left -= lanes_group) sizes.push_back(std::min(left, lanes_group));
    if (sizes.size() == 1) sizes.clear();  // (one group: the batch as it is)
    return sizes;
  }
  if (bc > max_group) {
    const int64_t step = std::min<int64_t>(max_group, kChannelBlock);
    for (int64_t left = bc; left > 0; left -= step) sizes.push_back(std::min<int64_t>(left, step));
    return sizes;
  }
  const int64_t tail = bc % kChannelBlock;
  if (split_tail && bc > kChannelBlock && tail > 0 && tail < 4) {
    sizes.push_back(bc - tail);
    sizes.push_back(tail);
  }
  return sizes;
}

// dst[j, i] = src[i, j] for contiguous [n, m] -> [m, n] data (channels-first <->
// channels-last), in tasks of the operator's region: ATen's copy would run on the
// region's calling thread alone.  Blocks of 32 x 32 keep both sides in cache lines.
template <typename T>
void transpose_in_tasks(const T* src, int64_t n, int64_t m, T* dst) {
  constexpr int64_t kBlock = 32;
  const int64_t nb = (n + kBlock - 1) / kBlock, mb = (m + kBlock - 1) / kBlock;
  for_each_chunk(nb * mb, 64, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = (t / mb) * kBlock, j0 = (t % mb) * kBlock;
      const int64_t i1 = std::min(n, i0 + kBlock), j1 = std::min(m, j0 + kBlock);
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) dst[j * n + i] = src[i * m + j];
    }
  });
}

// The same on tensors: [n, m] (any shape of n * m elements) -> a new contiguous tensor of
// shape `out_shape`, e.g. [bc, V, K] -> [V, K, bc] with n = bc.
inline at::Tensor transposed(const at::Tensor& t, int64_t n, at::IntArrayRef out_shape) {
  auto src = t.contiguous();
  auto out = at::empty(out_shape, t.options());
  const int64_t m = n > 0 ? src.numel() / n : 0;
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "alara_transpose_cpu", [&] {
    transpose_in_tasks(src.data_ptr<scalar_t>(), n, m, out.data_ptr<scalar_t>());
  });
  return out;
}

// ops.h's plane_layouts (the channels-last, zero-padded copies of an image for the two
// ray families), written in tasks of the operator's region: each task fills whole padded
// rows of both layouts.  Same result as plane_layouts, element for element.
inline std::pair<at::Tensor, at::Tensor> plane_layouts_in_tasks(const at::Tensor& image,
                                                                int64_t pad = kPad) {
  const int64_t n0 = image.size(2), n1 = image.size(3);
  const int64_t bc = image.numel() / std::max<int64_t>(n0 * n1, 1);
  auto src = image.contiguous();
  auto xl = at::empty({n0, n1 + 2 * pad, bc}, image.options());
  auto yl = at::empty({n1, n0 + 2 * pad, bc}, image.options());
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "alara_plane_layouts_cpu", [&] {
    const scalar_t* s = src.data_ptr<scalar_t>();
    scalar_t* x = xl.data_ptr<scalar_t>();
    scalar_t* y = yl.data_ptr<scalar_t>();
    // tasks 0 .. n0-1: rows of xl; n0 .. n0+n1-1: rows of yl
    for_each_chunk(n0 + n1, 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const bool xd = r < n0;
        const int64_t p = xd ? r : r - n0, other = xd ? n1 : n0;
        scalar_t* row = (xd ? x : y) + p * (other + 2 * pad) * bc;
        std::fill(row, row + pad * bc, scalar_t(0));
        std::fill(row + (pad + other) * bc, row + (other + 2 * pad) * bc, scalar_t(0));
        for (int64_t q = 0; q < other; ++q) {
          // pixel (i, j) = (p, q) for xl, (q, p) for yl
          const scalar_t* px = s + (xd ? p * n1 + q : q * n1 + p);
          scalar_t* d = row + (pad + q) * bc;
          for (int64_t c = 0; c < bc; ++c) d[c] = px[c * n0 * n1];
        }
      }
    });
  });
  return {xl, yl};
}

bool is_half(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

}  // namespace
}  // namespace alara

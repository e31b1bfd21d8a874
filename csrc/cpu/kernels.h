// The per-view CPU kernels of alara::project and alara::backproject (Joseph's method).
//
// Forward projection is ray-driven: dynamic tasks over the rays (parallel.h), an inner
// loop over the planes with the two pixel reads of the linear interpolation.
// Backprojection is a pixel-driven gather (the exact adjoint, no atomics): tasks over
// pixel rows (parallel beams) or planes (fan beams), for every view a loop over the two
// or three bins whose rays touch the pixel.
//
// Images are read from channels-last copies ([planes, other + 2 kPad, B*C], see ops.h)
// so that a batch is processed inside each ray (contiguous channel loads) and so that the
// interpolated axis is contiguous and zero padded: the plane loop has no branches.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../ops.h"
#include "fan_plane.h"
#include "fan_rays.h"
#include "parallel.h"
#include "simd_avx2.h"
#include "simd_avx512.h"

namespace alara {
// (Only projection_cpu.cpp includes this: one translation unit, where the templates
// instantiate; an unnamed namespace keeps its helpers out of the library's symbols.)
namespace {


// Channels processed together inside a ray (a full AVX register of floats).
constexpr int kChannelBlock = 8;

// floor() for values > -kFloorShift, as a truncation (cheaper, and branch-free).
constexpr double kFloorShift = 8.0;
inline int fast_floor(double v) { return static_cast<int>(v + kFloorShift) - static_cast<int>(kFloorShift); }

// Sum over planes [p0, p1] of the interpolated pixels of channels [c0, c0 + CB).
// Accumulators are locals (no aliasing with the image) so they stay in registers.
template <typename scalar_t, int CB>
inline void ray_sum(const scalar_t* __restrict__ img, int64_t stride, int64_t bc, int c0,
                    double alpha, double beta, int p0, int p1, scalar_t* __restrict__ out) {
  scalar_t acc[CB];
  for (int b = 0; b < CB; ++b) acc[b] = 0;
  for (int p = p0; p <= p1; ++p) {
    const double pos = alpha + beta * p;
    const int q = fast_floor(pos);
    const scalar_t f = static_cast<scalar_t>(pos - q);
    const scalar_t* a = img + (p * stride + q + kPad) * bc + c0;
    for (int b = 0; b < CB; ++b) acc[b] += a[b] + f * (a[bc + b] - a[b]);
  }
  for (int b = 0; b < CB; ++b) out[b] = acc[b];
}

// One channel (batch 1): two independent accumulators hide the add latency.
template <typename scalar_t>
inline scalar_t ray_sum1(const scalar_t* __restrict__ img, int64_t stride, double alpha,
                         double beta, int p0, int p1) {
  scalar_t acc0 = 0, acc1 = 0;
  const scalar_t* base = img + kPad;
  int p = p0;
  for (; p + 1 <= p1; p += 2) {
    const double pos0 = alpha + beta * p, pos1 = pos0 + beta;
    const int q0 = fast_floor(pos0), q1 = fast_floor(pos1);
    const scalar_t f0 = static_cast<scalar_t>(pos0 - q0), f1 = static_cast<scalar_t>(pos1 - q1);
    const scalar_t* a0 = base + p * stride + q0;
    const scalar_t* a1 = base + (p + 1) * stride + q1;
    acc0 += a0[0] + f0 * (a0[1] - a0[0]);
    acc1 += a1[0] + f1 * (a1[1] - a1[0]);
  }
  if (p <= p1) {
    const double pos = alpha + beta * p;
    const int q = fast_floor(pos);
    const scalar_t f = static_cast<scalar_t>(pos - q);
    const scalar_t* a = base + p * stride + q;
    acc0 += a[0] + f * (a[1] - a[0]);
  }
  return acc0 + acc1;
}

// The same with the fan-beam distance weight applied to every pixel.
template <typename scalar_t>
inline scalar_t ray_sum_dw(const Geometry& g, double c, double sn, bool xdom,
                           const scalar_t* img, int64_t stride, int64_t bc, int ch,
                           double alpha, double beta, int p0, int p1) {
  scalar_t acc = 0;
  const double pd = xdom ? g.dx : g.dy, od = xdom ? g.dy : g.dx;
  const double pmin = xdom ? g.x0 : g.y0, omin = xdom ? g.y0 : g.x0;
  for (int p = p0; p <= p1; ++p) {
    const double pos = alpha + beta * p;
    const int q = fast_floor(pos);
    const scalar_t f = static_cast<scalar_t>(pos - q);
    const scalar_t* a = img + (p * stride + q + kPad) * bc + ch;
    const double pc = pmin + (p + 0.5) * pd;
    const double oa = omin + (q + 0.5) * od, ob = oa + od;
    const double wa = xdom ? distance_weight(g, c, sn, pc, oa) : distance_weight(g, c, sn, oa, pc);
    const double wb = xdom ? distance_weight(g, c, sn, pc, ob) : distance_weight(g, c, sn, ob, pc);
    acc += (1 - f) * static_cast<scalar_t>(wa) * a[0] + f * static_cast<scalar_t>(wb) * a[bc];
  }
  return acc;
}

#ifdef ALARA_HAVE_AVX2_PATH
// Parallel beam, float32, one channel: rays in groups of 8 adjacent bins (avx2::group_sum8).
// Returns false where the view's bin spacing is too coarse for the 16-pixel windows.
bool project_parallel_groups_avx2(const Geometry& g, const std::vector<ViewParams>& views,
                                  const float* xl, const float* yl, float* out) {
  for (const ViewParams& vp : views)
    if (!avx2::group_fits(vp.dalpha)) return false;
  const int K = g.n_bins, groups = (K + 7) / 8;
  const int64_t n_views = static_cast<int64_t>(views.size());
  for_each_chunk(n_views * groups, 64, [&](int64_t g0, int64_t g1) {
    float sums[8];
    for (int64_t gi = g0; gi < g1; ++gi) {
      const int64_t v = gi / groups;
      const int k0 = static_cast<int>(gi - v * groups) * 8;
      const ViewParams& vp = views[v];
      const int n_planes = vp.xdom ? g.n0 : g.n1, n_other = vp.xdom ? g.n1 : g.n0;
      const int64_t stride = n_other + 2 * avx2::kGroupPad;
      const float* img = (vp.xdom ? xl : yl) + avx2::kGroupPad;
      float* o = out + v * K;
      const Joseph first = kernel_ray(g, vp, 0.0, 0.0, k0);
      if (k0 + 8 > K) {  // the last, partial group: one ray at a time
        for (int k = k0; k < K; ++k) {
          const Joseph jp = kernel_ray(g, vp, 0.0, 0.0, k);
          int p0, p1;
          plane_range(jp.alpha, jp.beta, n_planes, n_other, p0, p1);
          o[k] = static_cast<float>(jp.weight) * ray_sum1(img - kPad, stride, jp.alpha, jp.beta, p0, p1);
        }
        continue;
      }
      const Joseph last = kernel_ray(g, vp, 0.0, 0.0, k0 + 7);
      int a0, a1, b0, b1;
      plane_range(first.alpha, first.beta, n_planes, n_other, a0, a1);
      plane_range(last.alpha, last.beta, n_planes, n_other, b0, b1);
      const int p0 = std::min(a0, b0), p1 = std::max(a1, b1);
      const double alpha_b = vp.dalpha > 0 ? first.alpha : last.alpha;
      avx2::group_sum8(img, stride, alpha_b, vp.beta, vp.dalpha, p0, p1, sums);
      const float w = static_cast<float>(vp.weight);
      for (int l = 0; l < 8; ++l) o[k0 + l] = w * sums[l];
    }
  });
  return true;
}
#endif

template <typename scalar_t>
void project_kernel(const Geometry& g, const std::vector<double>& cs,
                    const std::vector<double>& sn, const scalar_t* xl, const scalar_t* yl,
                    int64_t bc, bool dw, scalar_t* out) {
  const int64_t n_views = static_cast<int64_t>(cs.size());
  const int K = g.n_bins;
  std::vector<ViewParams> views;
  if (g.kind == PARALLEL) {
    views.resize(n_views);
    for (int64_t v = 0; v < n_views; ++v) views[v] = parallel_view(g, cs[v], sn[v]);
  }
  const int64_t n_rays = n_views * K;
#ifdef ALARA_HAVE_AVX2_PATH
  const bool use_avx2 = avx2::supported();
#endif
#ifdef ALARA_HAVE_AVX512_PATH
  const bool use_avx512 = use_avx2 && avx512::enabled();
#endif
  for_each_chunk(n_rays, 256, [&](int64_t r0, int64_t r1) {
    scalar_t acc[kChannelBlock];
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t v = r / K;
      const int k = static_cast<int>(r - v * K);
      const Joseph jp = kernel_ray(g, g.kind == PARALLEL ? views[v] : ViewParams{}, cs[v], sn[v], k);
      const int n_planes = jp.xdom ? g.n0 : g.n1, n_other = jp.xdom ? g.n1 : g.n0;
      const int64_t stride = n_other + 2 * kPad;
      const scalar_t* img = jp.xdom ? xl : yl;
      int p0, p1;
      plane_range(jp.alpha, jp.beta, n_planes, n_other, p0, p1);
      scalar_t* o = out + r * bc;
      const scalar_t w = static_cast<scalar_t>(jp.weight);
      if (dw) {
        for (int ch = 0; ch < bc; ++ch)
          o[ch] = w * ray_sum_dw(g, cs[v], sn[v], jp.xdom, img, stride, bc, ch, jp.alpha,
                                 jp.beta, p0, p1);
        continue;
      }
#ifdef ALARA_HAVE_AVX2_PATH
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (use_avx2) {
          if (bc == 1) {
#ifdef ALARA_HAVE_AVX512_PATH
            if (use_avx512) {
              o[0] = w * avx512::ray_sum1(img + kPad, stride, jp.alpha, jp.beta, p0, p1);
              continue;
            }
#endif
            o[0] = w * avx2::ray_sum1(img + kPad, stride, jp.alpha, jp.beta, p0, p1);
            continue;
          }
          int c0 = 0;
          for (; c0 + 8 <= bc; c0 += 8) {
            avx2::ray_sum8<false>(img + kPad * bc + c0, stride, bc, jp.alpha, jp.beta, p0, p1, acc);
            for (int b = 0; b < 8; ++b) o[c0 + b] = w * acc[b];
          }
          if (c0 < bc) {  // the last, partial block of channels
            const int n = static_cast<int>(bc - c0);
            avx2::ray_sum8<true>(img + kPad * bc + c0, stride, bc, jp.alpha, jp.beta, p0, p1, acc, n);
            for (int b = 0; b < n; ++b) o[c0 + b] = w * acc[b];
          }
          continue;
        }
      }
#endif
      if (bc == 1) {
        o[0] = w * ray_sum1(img, stride, jp.alpha, jp.beta, p0, p1);
        continue;
      }
      int c0 = 0;
      for (; c0 + kChannelBlock <= bc; c0 += kChannelBlock) {
        ray_sum<scalar_t, kChannelBlock>(img, stride, bc, c0, jp.alpha, jp.beta, p0, p1, acc);
        for (int b = 0; b < kChannelBlock; ++b) o[c0 + b] = w * acc[b];
      }
      for (; c0 < bc; ++c0) {
        ray_sum<scalar_t, 1>(img, stride, bc, c0, jp.alpha, jp.beta, p0, p1, acc);
        o[c0] = w * acc[0];
      }
    }
  });
}

// Adds w * y[k, :] to acc[:] (bc channels).
template <typename scalar_t>
inline void axpy(scalar_t w, const scalar_t* y, scalar_t* acc, int64_t bc) {
  for (int64_t b = 0; b < bc; ++b) acc[b] += w * y[b];
}

// Parallel-beam backprojection into the rows [0, n_rows) of the image (`out` need not be
// initialised: each task zeroes its rows): a pixel-driven gather (every view's rays share one direction, so the bins that touch a pixel follow
// from an affine formula).
template <typename scalar_t>
void backproject_parallel(const Geometry& g, const std::vector<double>& cs,
                          const std::vector<double>& sn, const scalar_t* y, int64_t bc,
                          scalar_t* out, const float* y_padded, int64_t n_rows) {
  const int64_t n_views = static_cast<int64_t>(cs.size());
  const int K = g.n_bins, n1 = g.n1;
  std::vector<ViewParams> views(n_views);
  for (int64_t v = 0; v < n_views; ++v) views[v] = parallel_view(g, cs[v], sn[v]);
#ifdef ALARA_HAVE_AVX2_PATH
  const bool use_avx2 = avx2::supported();
#endif
#ifdef ALARA_HAVE_AVX512_PATH
  const bool use_avx512 = avx512::enabled();
#endif
  // Rows per task: the task's accumulators stay in the L2 cache while every view streams
  // over them (the view's bins and sinogram row stay in L1); at most 16 rows, so that
  // there are enough tasks to balance between threads when one of them is slowed down.
  const int64_t row_bytes = static_cast<int64_t>(n1) * bc * sizeof(scalar_t);
  const int64_t block_rows = std::clamp<int64_t>((192 * 1024) / std::max<int64_t>(row_bytes, 1), 1, 16);
  for_each_chunk(n_rows, block_rows, [&](int64_t ib, int64_t ie) {
    std::vector<float> scratch_w(8 * (n1 + 8));  // per-task tap scratch (AVX2 rows)
    std::vector<int> scratch_k(8 * (n1 + 8));
    scalar_t* acc_block = out + ib * n1 * bc;  // accumulate in place
    // (zeroed here, not by the caller: the task's thread touches its rows first, and the
    // zeroing runs on every thread of the region instead of before it on one)
    std::fill(acc_block, acc_block + (ie - ib) * n1 * bc, scalar_t(0));
    for (int64_t v = 0; v < n_views; ++v) {
      const scalar_t* yv = y + v * K * bc;
      const ViewParams& vp = views[v];
      const double inv = 1.0 / std::fabs(vp.dalpha);
      const double da = vp.dalpha;
      // Bins with |L + k da| < 1 lie in (lo, lo + 2 / |da|): n_taps consecutive bins
      // from floor(lo) + 1 cover them (extra taps get weight 0 from the hat).
      const int n_taps = static_cast<int>(2.0 * inv) + 1;
      const double shift = K + 16.0;
      const scalar_t w0 = static_cast<scalar_t>(vp.weight);
      for (int64_t i = ib; i < ie; ++i) {
        scalar_t* acc_row = acc_block + (i - ib) * n1 * bc;
        // L(j) = alpha0 + beta * plane - other: the position error of bin 0 at (i, j).
        const double L0 = vp.xdom ? vp.alpha0 + vp.beta * i : vp.alpha0 - i;
        const double dL = vp.xdom ? -1.0 : vp.beta;
        int j_start = 0;
#ifdef ALARA_HAVE_AVX2_PATH
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (use_avx2 && bc >= 8 && n_taps <= avx2::kMaxTaps) {
            avx2::bp_row_channels(acc_row, n1, bc, yv, K, L0, dL, da, n_taps, w0,
                                  scratch_w.data(), scratch_k.data());
            continue;
          }
          const float* yp = y_padded == nullptr ? nullptr : y_padded + v * (K + 2 * avx2::kBinPad) + avx2::kBinPad;
#ifdef ALARA_HAVE_AVX512_PATH
          if (yp != nullptr && use_avx512 && avx512::bp_row_fits(dL, da, n_taps)) {
            avx512::bp_row(acc_row, n1, yp, K, L0, dL, da, n_taps, w0);
            continue;
          }
#endif
          if (yp != nullptr && avx2::bp_row_fits(dL, da, n_taps)) {
            j_start = n1 & ~7;
            avx2::bp_row(acc_row, j_start, yp, K, L0, dL, da, n_taps, w0);
          }
        }
#endif
        for (int j = j_start; j < n1; ++j) {
          const double L = L0 + dL * j;
          double lo = (da > 0 ? -1.0 - L : 1.0 - L) / da;  // = min((-1-L)/da, (1-L)/da)
          lo = std::min(std::max(lo, -8.0), K + 8.0);
          const int k0 = static_cast<int>(lo + shift) - static_cast<int>(shift) + 1;
          scalar_t* a = acc_row + static_cast<int64_t>(j) * bc;
          if (bc == 1) {
            scalar_t sum = 0;
            for (int t = 0; t < n_taps; ++t) {
              const int k = k0 + t;
              const double err = L + k * da;
              const scalar_t w = static_cast<scalar_t>(std::max(0.0, 1.0 - std::fabs(err)));
              const int kc = std::min(std::max(k, 0), K - 1);
              sum += (k == kc) ? w * yv[kc] : scalar_t(0);
            }
            a[0] += w0 * sum;
          } else {
            for (int t = 0; t < n_taps; ++t) {
              const int k = k0 + t;
              if (k < 0 || k >= K) continue;
              const double err = L + k * da;
              const scalar_t w = w0 * static_cast<scalar_t>(std::max(0.0, 1.0 - std::fabs(err)));
              if (w != 0) axpy(w, yv + static_cast<int64_t>(k) * bc, a, bc);
            }
          }
        }
      }
    }
  });
}

// Fan-beam backprojection of the rays of one view onto one plane, any dtype and channel
// count: pixel j gets dw(j) * sum_i max(0, 1 - |P[i] - j|) c[i, :] over the rays, whose
// positions P increase with i; two pointers find the rays with |P - j| < 1.  dw is the
// FBP distance weight of each pixel (nullptr: 1).
template <typename scalar_t>
void fan_bp_row_generic(scalar_t* acc, int n, int64_t bc, const double* P, const scalar_t* c,
                        int n_rays, const double* dw) {
  int first = 0;
  for (int j = 0; j < n; ++j) {
    while (first < n_rays && P[first] <= j - 1.0) ++first;
    scalar_t* a = acc + static_cast<int64_t>(j) * bc;
    const scalar_t d = dw ? static_cast<scalar_t>(dw[j]) : scalar_t(1);
    for (int i = first; i < n_rays && P[i] < j + 1.0; ++i) {
      const scalar_t e = static_cast<scalar_t>(P[i] - j);
      const scalar_t w = d * (1 - (e < 0 ? -e : e));
      if (w > 0) axpy(w, c + static_cast<int64_t>(i) * bc, a, bc);
    }
  }
}

// Planes per task of the fan-beam backprojection, and per pass of its AVX-512 position
// tables.  A task streams every segment's lines and values of its family through the
// cache (about 4 MB at 720 views of 513 bins), so it takes many planes: 4 per task made
// the tables' pass wait on those loads.
constexpr int kFanTaskPlanes = 16;
constexpr int kFanTablePlanes = 4;

// Taps per pixel above which the rays are too dense for the AVX2 lanes (generic path); the
// values' padding leaves room for them past a segment's end on every build.
constexpr int kMaxFanTaps = 24;

#ifdef ALARA_HAVE_AVX2_PATH

// Scratch of one task for fan_bp_plane_avx2.
struct FanScratch {
  std::vector<int32_t> tables;  // a group's planes' positions, kFanTablePlanes x (K + 64)
  std::vector<float> wt;       // tap weights, kMaxFanTaps x stride (channels only)
  std::vector<int32_t> idx;    // tap rays, likewise
  int stride;
  int S;  // fan_fixed_shift(n_other)
  FanScratch(int K, int n_other, int64_t bc)
      : tables(kFanTablePlanes * (K + 64)), wt(bc > 1 ? kMaxFanTaps * (n_other + 8) : 0),
        idx(bc > 1 ? kMaxFanTaps * (n_other + 8) : 0), stride(n_other + 8), S(fan_fixed_shift(n_other)) {}
};

// Whether T taps from a start one ray short still reach every ray of the pixel (so the
// lanes can skip the step past it: a window read, a compare and an add per 16 pixels).
// The lane map is lowered by fp.margin bins and errs by less than that, so where it is
// short, its first ray f lies less than 2 margin bins left of j - 1: at most 2 margin
// spacing_max pixels (a flat detector's crossings are projective in the bin; 5 % covers
// the change of slope within one bin), less 1.5 units for the table's rounding.  Rays f
// .. last then lie in [j 2^S - 2^S - R, j 2^S + 2^S - 1], at most (2^(S+1) + R - 1) /
// spacing + 1 of them; that is T where 2^(S+1) + R - 1 < T spacing.  spacing_max <= 0:
// unknown (always step).
inline bool fan_short_start_fits(const FanPlane& fp, int S, int64_t T, int64_t spacing, int64_t spacing_max) {
  if (spacing_max <= 0) return false;
  const int64_t R = static_cast<int64_t>(2.1 * fp.margin * static_cast<double>(spacing_max)) + 4;
  return (int64_t{2} << S) + R - 1 < T * spacing;
}

// One segment's rays onto one plane through the AVX2 lanes (`wide`: the AVX-512 lanes,
// simd_avx512.h), from the plane's position table (its 32 sentinels included) and smallest
// spacing; false where the rays are too dense for the lanes (the generic path runs
// instead).
bool fan_bp_plane_lanes(float* row, int64_t bc, const FanPlane& fp, const int32_t* table, int64_t spacing,
                        int n_other, FanScratch& scratch, const float* c, bool wide, const float* c_cm,
                        int64_t cm_stride, int64_t spacing_max = 0) {
  if (spacing <= 0) return false;
  const int S = scratch.S;
  // rays in an open interval of 2 pixels (in 32 bits: 2^(S+1) <= 2^30, spacing <= 2^30,
  // and a 64-bit division cost as much as a plane's set-up)
  const int64_t T = static_cast<int64_t>(static_cast<uint32_t>((2u << S) - 1) / static_cast<uint32_t>(spacing)) + 1;
  if (T > kMaxFanTaps) return false;
  const int jlo = std::max(0, table[fp.ia] >> S);
  const int jhi = std::min(n_other - 1, (table[fp.ib - 1] >> S) + 1);
  if (jlo > jhi) return true;
#ifdef ALARA_HAVE_AVX512_PATH
  const bool step = !fan_short_start_fits(fp, S, T, spacing, spacing_max);
  if (bc == 1 && wide) {
    avx512::fan_bp_lanes(row, jlo, jhi, table, c, fp.ia, fp.ib, S, static_cast<int>(T), fp.map, step);
    return true;
  }
  if (c_cm != nullptr) {  // 2 .. 4 channels, channel-major values
    avx512::fan_bp_lanes_multi(row, static_cast<int>(bc), jlo, jhi, table, c_cm, cm_stride, fp.ia, fp.ib,
                               S, static_cast<int>(T), fp.map, step);
    return true;
  }
#endif
  if (bc == 1)
    avx2::fan_bp_lanes(row, jlo, jhi, table, c, fp.ia, fp.ib, S, static_cast<int>(T), fp.map);
  else
    avx2::fan_bp_channels(row, bc, jlo, jhi, table, c, fp.ia, fp.ib, S, static_cast<int>(T), fp.map,
                          scratch.wt.data(), scratch.idx.data(), scratch.stride);
  return true;
}

#ifdef ALARA_HAVE_AVX512_PATH
// avx512::fan_plane_tables_split for np = 1 .. 4 planes.
template <bool kSpacing, bool kRising>
inline void fan_plane_tables_split_t(int np, int32_t* const* P, int64_t* spacing, const avx512::SplitLines& L,
                                     int n, int p0, int ia, int ib) {
  switch (np) {
    case 1: return avx512::fan_plane_tables_split<1, kSpacing, kRising>(P, spacing, L, n, p0, ia, ib);
    case 2: return avx512::fan_plane_tables_split<2, kSpacing, kRising>(P, spacing, L, n, p0, ia, ib);
    case 3: return avx512::fan_plane_tables_split<3, kSpacing, kRising>(P, spacing, L, n, p0, ia, ib);
    default: return avx512::fan_plane_tables_split<4, kSpacing, kRising>(P, spacing, L, n, p0, ia, ib);
  }
}

// One plane's split table and its smallest spacing (fan_plane_tables_split for one plane).
inline int64_t split_table(int32_t* P, const avx512::SplitLines& L, int n, bool rising, int plane, int ia, int ib) {
  int64_t spacing = 0;
  (rising ? fan_plane_tables_split_t<true, true> : fan_plane_tables_split_t<true, false>)(1, &P, &spacing, L, n,
                                                                                         plane, ia, ib);
  return spacing;
}
#endif

// One segment's rays onto one plane (float; bc channels, channels-last): its position
// table, then fan_bp_plane_lanes.
bool fan_bp_plane_avx2(float* row, int64_t bc, const FanPlane& fp, const double* al,
                       const double* be, int n, double plane, int n_other, FanScratch& scratch,
                       const float* c, bool wide, const float* c_cm = nullptr, int64_t cm_stride = 0,
                       const avx512::SplitLines* split = nullptr) {
  if (fp.ia >= fp.ib) return true;  // no ray of the segment reaches the plane's pixels
  const int S = scratch.S;
  int32_t* table = scratch.tables.data();  // (an unfused group's tables are free)
#ifdef ALARA_HAVE_AVX512_PATH
  const int64_t spacing =
      split != nullptr ? split_table(table, *split, n, fp.rising, static_cast<int>(plane), fp.ia, fp.ib)
      : wide ? avx512::fan_plane_table(table, al, be, n, fp.rising, plane, fp.ia, fp.ib, S)
             : avx2::fan_plane_table(table, al, be, n, fp.rising, plane, fp.ia, fp.ib, S);
#else
  const int64_t spacing = avx2::fan_plane_table(table, al, be, n, fp.rising, plane, fp.ia, fp.ib, S);
#endif
  return fan_bp_plane_lanes(row, bc, fp, table, spacing, n_other, scratch, c, wide, c_cm, cm_stride);
}

#ifdef ALARA_HAVE_AVX512_PATH
// How far a split table's smallest spacing can lie below the smaller of its two end
// spacings on a flat detector (units of 2^-S pixel; see fan_plane_tables).  Each position
// is within 1.5 units of the exact crossing (the double table's rounding, then the
// split's one unit), so each spacing within 3 units of the exact one.
constexpr int64_t kEndSpacingSlack = 8;

// The position tables of one group of planes (fps[q] for plane p0 + q, np of them, all
// rising or all falling) over the union [ia, ib) of their ray ranges, and each plane's
// smallest spacing over its own range.  On a flat detector the rays meet a plane's line at
// a projective function of the bin, (a + b k) / (c + d k), with c + d k of one sign along a
// segment (its rays all cross the plane's line ahead of the source): its slope, hence the
// spacing of consecutive rays, is monotone in k, and the smallest spacing is at an end of
// the range (less kEndSpacingSlack for rounding).  That spares the pass a third of its
// work; a curved detector's spacing is smallest inside the range (sec^2 of the angle), so
// there the pass finds it.
inline void fan_plane_tables(int np, const FanPlane* fps, int32_t* const* P, int64_t* spacing,
                             int64_t* spacing_max, const avx512::SplitLines& L, int n, int p0, int ia, int ib,
                             bool flat) {
  const bool rising = fps[0].rising;
  if (!flat) {
    for (int q = 0; q < np; ++q) spacing_max[q] = 0;  // (not found: the lanes step)
    (rising ? fan_plane_tables_split_t<true, true> : fan_plane_tables_split_t<true, false>)(np, P, spacing, L, n,
                                                                                           p0, ia, ib);
    return;
  }
  (rising ? fan_plane_tables_split_t<false, true> : fan_plane_tables_split_t<false, false>)(np, P, spacing, L, n,
                                                                                           p0, ia, ib);
  for (int q = 0; q < np; ++q) {
    const int a = fps[q].ia, b = fps[q].ib;
    if (b - a < 2) {
      spacing[q] = 1 << 30;  // (as the pass: no two rays)
      spacing_max[q] = 0;
      continue;
    }
    const int64_t first = static_cast<int64_t>(P[q][a + 1]) - P[q][a];
    const int64_t last = static_cast<int64_t>(P[q][b - 1]) - P[q][b - 2];
    spacing[q] = std::min(first, last) - kEndSpacingSlack;
    spacing_max[q] = std::max(first, last) + kEndSpacingSlack;
  }
}
#endif
#endif

// Fan-beam backprojection, pixel-driven per (view, plane), the exact adjoint of the
// ray-driven forward projection: a ray of the x-dominant family interpolates on plane i
// (array axis 0) between the pixels floor(P) and floor(P) + 1, P = alpha + beta i, with
// weights 1 - f and f, i.e. pixel j gets max(0, 1 - |P - j|).  Every per-ray quantity
// (Joseph line, weight * y) is tabulated once; per view and plane the rays' positions are
// one multiply-add each, and the pixels gather from the few rays next to them.  In float
// (AVX2) each pixel finds its first ray from the detector coordinate of the point j - 1
// on the plane (fan_plane: per view and plane, the point's coordinate is a ratio of two
// affine functions of j) and takes only the T rays from there, T from the smallest ray
// spacing on the plane; float64, the FBP distance weight and rays too dense for the lanes
// take the generic two-pointer path.  Each family accumulates in its own plane layout (acc_x [n0, n1, bc], acc_y [n1, n0, bc]);
// a task owns a block of planes, so threads never write the same pixel; it zeroes them
// first (acc_x and acc_y need not be initialised).
template <typename scalar_t, bool DW>
void backproject_fan(const Geometry& g, const std::vector<double>& cs,
                     const std::vector<double>& sn, const scalar_t* y, int64_t bc,
                     scalar_t* acc_x, scalar_t* acc_y) {
  const int64_t n_views = static_cast<int64_t>(cs.size());
  const int K = g.n_bins;
#ifdef ALARA_HAVE_AVX2_PATH
  const bool use_avx2 = std::is_same_v<scalar_t, float> && !DW && avx2::supported();
#ifdef ALARA_HAVE_AVX512_PATH
  const bool use_avx512 = use_avx2 && avx512::enabled();
#else
  const bool use_avx512 = false;
#endif
#else
  const bool use_avx512 = false;
#endif
  const std::shared_ptr<const FanRays> rays = fan_rays(g, cs, sn, use_avx512);
  const std::vector<double>& alpha = rays->alpha;
  const std::vector<double>& beta = rays->beta;
  const std::vector<FanSegment>* segments = rays->segments;
  // ray weight * sinogram value, and the same with every segment's bins reversed; padded:
  // the AVX2 lanes read up to kMaxFanTaps + 34 rays past a segment's end
  std::vector<scalar_t> cw((n_views * K + kMaxFanTaps + 64) * bc + 16), cw_rev(cw.size());
  for_each_chunk(n_views * K, 4096, [&](int64_t r0, int64_t r1) {
    const int64_t v0 = r0 / K;
    for (int64_t r = r0, v = v0, k = r0 - v0 * K; r < r1; ++r, ++k) {
      if (k == K) k = 0, ++v;
      const scalar_t w = static_cast<scalar_t>(rays->weight[r]);
      const int64_t rr = v * K + rays->reversed[r];
      for (int64_t ch = 0; ch < bc; ++ch) cw_rev[rr * bc + ch] = cw[r * bc + ch] = w * y[r * bc + ch];
    }
  });
  // 2 .. 4 channels through the AVX-512 lanes (a small orbit's or batch's channels share
  // each pixel's taps): the values channel-major, as the lanes' windows load them.
  [[maybe_unused]] const int64_t cm_stride = n_views * K + kMaxFanTaps + 64;
  std::vector<float> cw_cm, cw_rev_cm;
#ifdef ALARA_HAVE_AVX512_PATH
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (use_avx512 && bc >= 2 && bc <= avx512::kMaxMultiChannels) {
      cw_cm.assign(bc * cm_stride, 0.0f);
      cw_rev_cm.assign(bc * cm_stride, 0.0f);
      for_each_chunk(n_views * K, 4096, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t ch = 0; ch < bc; ++ch) {
            cw_cm[ch * cm_stride + r] = cw[r * bc + ch];
            cw_rev_cm[ch * cm_stride + r] = cw_rev[r * bc + ch];
          }
      });
    }
  }
#endif
  constexpr int kPlanes = kFanTaskPlanes;
  // Both families' planes in one task set (one join at its end, as above).
  const int64_t tasks_x = (g.n0 + kPlanes - 1) / kPlanes, tasks_y = (g.n1 + kPlanes - 1) / kPlanes;
  for_each_task(tasks_x + tasks_y, [&](int64_t task) {
    // (a local copy: the table and row stores could alias a reference, so the compiler
    // would reload the geometry and redo fan_plane's per-geometry divisions every plane)
    [[maybe_unused]] const Geometry gl = g;
    const int f = task < tasks_x ? 0 : 1;
    const bool xd = f == 0;
    const int n_planes = xd ? g.n0 : g.n1, n_other = xd ? g.n1 : g.n0;
    scalar_t* acc = xd ? acc_x : acc_y;
    const double pd = xd ? g.dx : g.dy, od = xd ? g.dy : g.dx;
    const double pmin = xd ? g.x0 : g.y0, omin = xd ? g.y0 : g.x0;
    const int64_t pb = (xd ? task : task - tasks_x) * kPlanes;
    const int64_t pe = std::min<int64_t>(n_planes, pb + kPlanes);
    std::fill(acc + pb * n_other * bc, acc + pe * n_other * bc, scalar_t(0));  // (as above)
    std::vector<double> P(2 * K + 16), dw(DW ? n_other : 0);
#ifdef ALARA_HAVE_AVX2_PATH
    FanScratch scratch(K, n_other, use_avx2 ? bc : 1);
    int32_t* tables[kFanTablePlanes];  // a group's plane tables
    for (int q = 0; q < kFanTablePlanes; ++q) tables[q] = scratch.tables.data() + q * (K + 64);
#endif
    for (const FanSegment& seg : segments[f]) {
      const int64_t base = seg.view * K;
      const int n = seg.k1 - seg.k0;
      const double* al = alpha.data() + base + seg.k0;
      const double* be = beta.data() + base + seg.k0;
#ifdef ALARA_HAVE_AVX2_PATH
      // The lane maps of all the task's planes first: each is a chain of dependent
      // divisions and roundings, and side by side they overlap instead of each stalling
      // its group's tables.
      FanPlane fps_all[kFanTaskPlanes];
      const avx512::SplitLines lines{rays->split_ai.data() + base + seg.k0, rays->split_bi.data() + base + seg.k0,
                                     rays->split_af.data() + base + seg.k0, rays->split_bf.data() + base + seg.k0};
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (use_avx512) {
          fan_planes_avx512(gl, cs[seg.view], sn[seg.view], xd, static_cast<int>(pb), static_cast<int>(pe - pb),
                            seg.k0, seg.k1, n_other, fps_all);
        } else if (use_avx2) {
          for (int64_t p = pb; p < pe; ++p)
            fps_all[p - pb] = fan_plane(gl, cs[seg.view], sn[seg.view], xd, static_cast<double>(p), seg.k0, seg.k1,
                                        n_other);
        }
      }
#endif
      // (the task's planes in groups of kFanTablePlanes: a group's tables are built in one
      // pass, and the segment's lines stay in L1 from one group to the next)
      for (int64_t gb = pb; gb < pe; gb += kFanTablePlanes) {
        const int64_t ge = std::min<int64_t>(pe, gb + kFanTablePlanes);
#ifdef ALARA_HAVE_AVX2_PATH
        // For split lines (AVX-512), all the group's tables in one pass over the union of
        // their ray ranges (fused): where every plane takes the lanes and the rays run the
        // same way on each.  A plane's table then also holds rays beyond its own range;
        // those lie past its pixels (weight 0), and the smallest spacing over the union
        // can only add a tap.
        const FanPlane* fps = fps_all + (gb - pb);
        int64_t spacings[kFanTablePlanes], spacings_max[kFanTablePlanes];
        bool fused = false;
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (use_avx2) {
            int ia = n, ib = 0;
            fused = use_avx512 && seg.split;
            for (int64_t p = gb; p < ge; ++p) {
              const FanPlane& fp = fps[p - gb];
              fused = fused && fp.ok && fp.rising == fps[0].rising;
              if (fp.ia < fp.ib) ia = std::min(ia, fp.ia), ib = std::max(ib, fp.ib);
            }
            if (fused && ia < ib)
              fan_plane_tables(static_cast<int>(ge - gb), fps, tables, spacings, spacings_max, lines, n,
                               static_cast<int>(gb),
                               ia, ib, g.kind == FAN_FLAT);
          }
        }
#endif
        for (int64_t p = gb; p < ge; ++p) {
          const double pp = static_cast<double>(p);
          scalar_t* row = acc + p * n_other * bc;
#ifdef ALARA_HAVE_AVX2_PATH
          if constexpr (std::is_same_v<scalar_t, float>) {
            if (use_avx2) {
              const FanPlane& fp = fps[p - gb];
              const float* c_cm = cw_cm.empty() ? nullptr
                                  : (fp.rising ? cw_cm : cw_rev_cm).data() + base + seg.k0;
              const float* c = (fp.rising ? cw : cw_rev).data() + (base + seg.k0) * bc;
              if (fused) {
                if (fp.ia >= fp.ib || fan_bp_plane_lanes(row, bc, fp, tables[p - gb], spacings[p - gb], n_other,
                                                         scratch, c, true, c_cm, cm_stride,
                                                         spacings_max[p - gb]))
                  continue;
              } else if (fp.ok && fan_bp_plane_avx2(row, bc, fp, al, be, n, pp, n_other, scratch, c, use_avx512,
                                                    c_cm, cm_stride, seg.split ? &lines : nullptr)) {
                continue;
              }
            }
          }
#endif
          // positions in increasing order (they are monotone along a segment)
          const bool rising = al[n - 1] + be[n - 1] * pp >= al[0] + be[0] * pp;
          double* Pd = P.data();
          if (rising) {
            for (int i = 0; i < n; ++i) Pd[i] = al[i] + be[i] * pp;
          } else {
            for (int i = 0; i < n; ++i) Pd[i] = al[n - 1 - i] + be[n - 1 - i] * pp;
          }
          const scalar_t* ci = (rising ? cw : cw_rev).data() + (base + seg.k0) * bc;
          if constexpr (DW) {
            const double pc = pmin + (p + 0.5) * pd;
            const double c_ = cs[seg.view], s_ = sn[seg.view];
            for (int j = 0; j < n_other; ++j) {
              const double oc = omin + (j + 0.5) * od;
              dw[j] = xd ? distance_weight(g, c_, s_, pc, oc) : distance_weight(g, c_, s_, oc, pc);
            }
          }
          fan_bp_row_generic(row, n_other, bc, P.data(), ci, n, DW ? dw.data() : nullptr);
        }
      }
    }
  });
}

}  // namespace
}  // namespace alara

// AVX2 + FMA inner loops of the float32 CPU kernels (selected at run time, so the
// extension still runs on CPUs without AVX2 through the portable loops).
//
// They compute exactly the scalar formulas of projection_cpu.cpp: positions in double,
// interpolation weights in float.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(ALARA_PORTABLE_ONLY)
#define ALARA_HAVE_AVX2_PATH 1
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>

namespace alara {
namespace avx2 {

#define ALARA_AVX2 __attribute__((target("avx2,fma")))

inline bool supported() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

ALARA_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ray_sum1's scalar part, the same at every vector width: planes p..p1 one at a time,
// added to acc.
inline float ray_sum1_tail(const float* base, int64_t stride, double alpha, double beta, int p, int p1,
                           float acc) {
  for (; p <= p1; ++p) {
    const double pos = alpha + beta * p;
    const double fl = __builtin_floor(pos);
    const float f = static_cast<float>(pos - fl);
    const float* a = base + p * stride + static_cast<int>(fl);
    acc += (1.0f - f) * a[0] + f * a[1];
  }
  return acc;
}

// Forward projection of one ray, one channel: planes [p0, p1] of img (row stride
// `stride`, rows already offset by the padding), four planes per 64-bit gather: each
// gathered element is the pixel pair (q, q + 1) of one plane.
ALARA_AVX2 inline float ray_sum1(const float* base, int64_t stride, double alpha, double beta,
                                 int p0, int p1) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const __m256d va = _mm256_set1_pd(alpha), vb = _mm256_set1_pd(beta);
  const __m256d ramp = _mm256_setr_pd(0.0, 1.0, 2.0, 3.0);
  const int s32 = static_cast<int>(stride);
  __m128i rows = _mm_setr_epi32(p0 * s32, (p0 + 1) * s32, (p0 + 2) * s32, (p0 + 3) * s32);
  const __m128i step = _mm_set1_epi32(4 * s32);
  const __m128 one = _mm_set1_ps(1.0f);
  const long long* pairs = reinterpret_cast<const long long*>(base);
  int p = p0;
  for (; p + 7 <= p1; p += 8) {
    const __m256d pv0 = _mm256_add_pd(_mm256_set1_pd(static_cast<double>(p)), ramp);
    const __m256d pv1 = _mm256_add_pd(pv0, _mm256_set1_pd(4.0));
    const __m256d pos0 = _mm256_fmadd_pd(vb, pv0, va), pos1 = _mm256_fmadd_pd(vb, pv1, va);
    const __m256d fl0 = _mm256_floor_pd(pos0), fl1 = _mm256_floor_pd(pos1);
    const __m128i idx0 = _mm_add_epi32(rows, _mm256_cvttpd_epi32(fl0));
    rows = _mm_add_epi32(rows, step);
    const __m128i idx1 = _mm_add_epi32(rows, _mm256_cvttpd_epi32(fl1));
    rows = _mm_add_epi32(rows, step);
    const __m256i g0 = _mm256_i32gather_epi64(pairs, idx0, 4);
    const __m256i g1 = _mm256_i32gather_epi64(pairs, idx1, 4);
    const __m128 f0 = _mm256_cvtpd_ps(_mm256_sub_pd(pos0, fl0));
    const __m128 f1 = _mm256_cvtpd_ps(_mm256_sub_pd(pos1, fl1));
    const __m128 m0 = _mm_sub_ps(one, f0), m1 = _mm_sub_ps(one, f1);
    const __m256 w0 = _mm256_set_m128(_mm_unpackhi_ps(m0, f0), _mm_unpacklo_ps(m0, f0));
    const __m256 w1 = _mm256_set_m128(_mm_unpackhi_ps(m1, f1), _mm_unpacklo_ps(m1, f1));
    acc0 = _mm256_fmadd_ps(w0, _mm256_castsi256_ps(g0), acc0);
    acc1 = _mm256_fmadd_ps(w1, _mm256_castsi256_ps(g1), acc1);
  }
  float acc = hsum(_mm256_add_ps(acc0, acc1));
  return ray_sum1_tail(base, stride, alpha, beta, p, p1, acc);
}

// Lane mask of the first n (1..8) lanes, for the last, partial block of channels.
ALARA_AVX2 inline __m256i first_lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <bool kMasked>
ALARA_AVX2 inline __m256 load8(const float* a, __m256i m) {
  return kMasked ? _mm256_maskload_ps(a, m) : _mm256_loadu_ps(a);
}

// Forward projection of one ray for the channels [0, n) (n <= 8) of a channels-last image
// (bc channels): kMasked reads only the first n lanes (a partial block) and writes n sums.
template <bool kMasked>
ALARA_AVX2 inline void ray_sum8(const float* base, int64_t stride, int64_t bc, double alpha,
                                double beta, int p0, int p1, float* out, int n = 8) {
  const __m256i m = kMasked ? first_lanes(n) : _mm256_set1_epi32(-1);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int p = p0;
  for (; p + 1 <= p1; p += 2) {
    const double pos0 = alpha + beta * p, pos1 = pos0 + beta;
    const double fl0 = __builtin_floor(pos0), fl1 = __builtin_floor(pos1);
    const float* a0 = base + (p * stride + static_cast<int64_t>(fl0)) * bc;
    const float* a1 = base + ((p + 1) * stride + static_cast<int64_t>(fl1)) * bc;
    const __m256 f0 = _mm256_set1_ps(static_cast<float>(pos0 - fl0));
    const __m256 f1 = _mm256_set1_ps(static_cast<float>(pos1 - fl1));
    const __m256 x0 = load8<kMasked>(a0, m), y0 = load8<kMasked>(a0 + bc, m);
    const __m256 x1 = load8<kMasked>(a1, m), y1 = load8<kMasked>(a1 + bc, m);
    acc0 = _mm256_add_ps(acc0, _mm256_fmadd_ps(f0, _mm256_sub_ps(y0, x0), x0));
    acc1 = _mm256_add_ps(acc1, _mm256_fmadd_ps(f1, _mm256_sub_ps(y1, x1), x1));
  }
  if (p <= p1) {
    const double pos = alpha + beta * p;
    const double fl = __builtin_floor(pos);
    const float* a = base + (p * stride + static_cast<int64_t>(fl)) * bc;
    const __m256 f = _mm256_set1_ps(static_cast<float>(pos - fl));
    const __m256 x = load8<kMasked>(a, m), y = load8<kMasked>(a + bc, m);
    acc0 = _mm256_add_ps(acc0, _mm256_fmadd_ps(f, _mm256_sub_ps(y, x), x));
  }
  if (kMasked)
    _mm256_maskstore_ps(out, m, _mm256_add_ps(acc0, acc1));
  else
    _mm256_storeu_ps(out, _mm256_add_ps(acc0, acc1));
}

// Zero padding of the image rows that group_sum8 reads.
constexpr int kGroupPad = 24;

// Whether 8 adjacent parallel rays (positions dalpha apart on every plane) read pixel
// pairs inside one 16-pixel window.
inline bool group_fits(double dalpha) { return 7.0 * __builtin_fabs(dalpha) + 3.0 <= 15.0; }

// Forward projection of 8 adjacent rays of a parallel-beam view (bins k .. k + 7, one
// channel) over planes [p0, p1]: on every plane their positions lie within 7 |dalpha| + 1
// pixels, so one 16-pixel window load and lane permutes replace the gathers.  `alpha_b`
// is the position at plane 0 of the base lane `lb` (the leftmost: 0 if dalpha > 0, else
// 7); lane l sits at alpha_b + beta p + (l - lb) dalpha.  Rows of `base` are padded with
// kGroupPad zeros (base points at pixel 0 of plane 0), so rays outside the image read 0.
ALARA_AVX2 inline void group_sum8(const float* base, int64_t stride, double alpha_b,
                                  double beta, double dalpha, int p0, int p1, float* out) {
  const int lb = dalpha > 0 ? 0 : 7;
  const __m256 lane_off = _mm256_mul_ps(
      _mm256_setr_ps(0.f - lb, 1.f - lb, 2.f - lb, 3.f - lb, 4.f - lb, 5.f - lb, 6.f - lb, 7.f - lb),
      _mm256_set1_ps(static_cast<float>(dalpha)));
  const __m256i seven = _mm256_set1_epi32(7), one_i = _mm256_set1_epi32(1);
  __m256 acc_a = _mm256_setzero_ps(), acc_f = _mm256_setzero_ps();
  for (int p = p0; p <= p1; ++p) {
    const double B = alpha_b + beta * p;
    const double qb = __builtin_floor(B);
    const __m256 o = _mm256_add_ps(_mm256_set1_ps(static_cast<float>(B - qb)), lane_off);
    const __m256 fl = _mm256_floor_ps(o);
    const __m256 f = _mm256_sub_ps(o, fl);
    const __m256i rel = _mm256_cvttps_epi32(fl);
    const __m256i rel1 = _mm256_add_epi32(rel, one_i);
    const float* row = base + p * stride + static_cast<int64_t>(qb);
    const __m256 w0 = _mm256_loadu_ps(row), w1 = _mm256_loadu_ps(row + 8);
    const __m256 a = _mm256_blendv_ps(_mm256_permutevar8x32_ps(w0, rel),
                                      _mm256_permutevar8x32_ps(w1, rel),
                                      _mm256_castsi256_ps(_mm256_cmpgt_epi32(rel, seven)));
    const __m256 b = _mm256_blendv_ps(_mm256_permutevar8x32_ps(w0, rel1),
                                      _mm256_permutevar8x32_ps(w1, rel1),
                                      _mm256_castsi256_ps(_mm256_cmpgt_epi32(rel1, seven)));
    acc_a = _mm256_add_ps(acc_a, a);
    acc_f = _mm256_fmadd_ps(f, _mm256_sub_ps(b, a), acc_f);
  }
  _mm256_storeu_ps(out, _mm256_add_ps(acc_a, acc_f));
}

// Padding (zeros) on each side of a view's bins in the sinogram copy bp_row reads (and
// avx512::bp_row, whose window of 32 bins reaches K + 41).
constexpr int kBinPad = 48;

// Whether bp_row's 16-bin window covers every tap of 8 consecutive pixels.
inline bool bp_row_fits(double dL, double dalpha, int n_taps) {
  const double span = 7.0 * __builtin_fabs(dL) / __builtin_fabs(dalpha);
  return span + 2.0 + n_taps <= 16.0;
}

// Parallel-beam backprojection of one view into pixels [0, n8) (a multiple of 8) of one
// row, one channel: acc[j] += weight * sum_t hat(L(j) + k dalpha) y[k] over the n_taps
// bins from k0(j) = floor(lo(j)) + 1, L(j) = L0 + dL j.  The bins of 8 pixels lie in a
// window of 16 (bp_row_fits), loaded once and permuted: no gathers.  `y` points at bin 0
// of a row padded with kBinPad zeros on both sides.
// kTaps > 0: the tap count as a compile-time constant (unrolled); 0: n_taps at run time.
template <int kTaps>
ALARA_AVX2 inline void bp_row_t(float* acc, int n8, const float* y, int K, double L0, double dL,
                                double dalpha, int n_taps, float weight) {
  if (kTaps > 0) n_taps = kTaps;
  // lo(j) = (sgn - L(j)) / dalpha is affine in j: lo(j0 + l) = lo(j0 + lb) + (l - lb) dlo,
  // with the base lane lb the smallest.  Per block: lo and the error of the first tap at
  // the base lane in double, the lanes' offsets from it in float (small numbers).
  const double sgn = dalpha > 0 ? -1.0 : 1.0;
  const double inv = 1.0 / dalpha;
  const double dlo = -dL * inv;
  const int lb = dlo >= 0 ? 0 : 7;
  const __m256 lanes = _mm256_setr_ps(0.f - lb, 1.f - lb, 2.f - lb, 3.f - lb, 4.f - lb,
                                      5.f - lb, 6.f - lb, 7.f - lb);
  const __m256 vdlo = _mm256_mul_ps(lanes, _mm256_set1_ps(static_cast<float>(dlo)));
  const __m256 vdL = _mm256_mul_ps(lanes, _mm256_set1_ps(static_cast<float>(dL)));
  const __m256 vda = _mm256_set1_ps(static_cast<float>(dalpha));
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  const __m256 vw = _mm256_set1_ps(weight);
  const __m256i seven = _mm256_set1_epi32(7), one_i = _mm256_set1_epi32(1);
  for (int j0 = 0; j0 < n8; j0 += 8) {
    const double Lb = L0 + dL * (j0 + lb);
    double lob = (sgn - Lb) * inv;
    lob = lob < -8.0 ? -8.0 : (lob > K + 8.0 ? K + 8.0 : lob);
    const double qb = __builtin_floor(lob);
    // first bin of lane l: qb + 1 + rel_l, rel_l = floor(frac + (l - lb) dlo) >= 0
    const __m256 lo = _mm256_add_ps(_mm256_set1_ps(static_cast<float>(lob - qb)), vdlo);
    const __m256 relf = _mm256_floor_ps(lo);
    __m256i rel = _mm256_cvttps_epi32(relf);
    // error of the first tap: L(j) + k0 dalpha = [Lb + (qb + 1) dalpha] + (l - lb) dL + rel dalpha
    const float E = static_cast<float>(Lb + (qb + 1.0) * dalpha);
    const __m256 e0 = _mm256_fmadd_ps(relf, vda, _mm256_add_ps(_mm256_set1_ps(E), vdL));
    const float* win = y + static_cast<int64_t>(qb) + 1;
    const __m256 win_lo = _mm256_loadu_ps(win), win_hi = _mm256_loadu_ps(win + 8);
    __m256 sum = zero;
    __m256 err = e0;
#pragma GCC unroll 4
    for (int t = 0; t < (kTaps > 0 ? kTaps : n_taps); ++t) {
      const __m256 vlo = _mm256_permutevar8x32_ps(win_lo, rel);
      const __m256 vhi = _mm256_permutevar8x32_ps(win_hi, rel);
      const __m256 v = _mm256_blendv_ps(vlo, vhi, _mm256_castsi256_ps(_mm256_cmpgt_epi32(rel, seven)));
      const __m256 w = _mm256_max_ps(zero, _mm256_sub_ps(one, _mm256_andnot_ps(sign_mask, err)));
      sum = _mm256_fmadd_ps(w, v, sum);
      rel = _mm256_add_epi32(rel, one_i);
      err = _mm256_add_ps(err, vda);
    }
    _mm256_storeu_ps(acc + j0, _mm256_fmadd_ps(vw, sum, _mm256_loadu_ps(acc + j0)));
  }
}

ALARA_AVX2 inline void bp_row(float* acc, int n8, const float* y, int K, double L0, double dL,
                              double dalpha, int n_taps, float weight) {
  if (n_taps == 2)
    bp_row_t<2>(acc, n8, y, K, L0, dL, dalpha, n_taps, weight);
  else if (n_taps == 3)
    bp_row_t<3>(acc, n8, y, K, L0, dL, dalpha, n_taps, weight);
  else
    bp_row_t<0>(acc, n8, y, K, L0, dL, dalpha, n_taps, weight);
}

// Parallel-beam backprojection of one view into one row for bc >= 8 channels
// (channels-last accumulators and sinogram row).  The taps of 8 pixels at a time are
// found with the vector arithmetic of bp_row (weights and bin offsets into small
// per-thread arrays), then applied to 8 channels per instruction.
constexpr int kMaxTaps = 8;

// acc[j, :] += sum_t wt[t * n8 + j] * y[off[t * n8 + j] + :] for the bc channels of every
// pixel j < n1 (the second half of bp_row_channels); kT > 0: n_taps as a constant.
template <int kT>
ALARA_AVX2 inline void apply_taps(float* acc, int n1, int64_t bc, const float* y, int n8,
                                  const float* wt, const int* off, int n_taps) {
  if (kT > 0) n_taps = kT;
  for (int j = 0; j < n1; ++j) {
    float* a = acc + static_cast<int64_t>(j) * bc;
    int64_t c = 0;
    for (; c + 8 <= bc; c += 8) {
      __m256 s = _mm256_loadu_ps(a + c);
#pragma GCC unroll 4
      for (int t = 0; t < n_taps; ++t)
        s = _mm256_fmadd_ps(_mm256_set1_ps(wt[t * n8 + j]), _mm256_loadu_ps(y + off[t * n8 + j] + c), s);
      _mm256_storeu_ps(a + c, s);
    }
    if (c < bc) {  // the last, partial block of channels
      const __m256i m = first_lanes(static_cast<int>(bc - c));
      __m256 s = _mm256_maskload_ps(a + c, m);
      for (int t = 0; t < n_taps; ++t)
        s = _mm256_fmadd_ps(_mm256_set1_ps(wt[t * n8 + j]), _mm256_maskload_ps(y + off[t * n8 + j] + c, m), s);
      _mm256_maskstore_ps(a + c, m, s);
    }
  }
}

// (aligned: its hot loops' placement moved LoDoPaB's batch-1 BP, which runs here through
// the orbits, by 5-8% between builds that did not change it)
ALARA_AVX2 __attribute__((aligned(64))) inline void bp_row_channels(float* acc, int n1, int64_t bc, const float* y, int K,
                                       double L0, double dL, double dalpha, int n_taps,
                                       float weight, float* wt, int* off) {
  // wt, off: n_taps x round_up(n1, 8) scratch
  const int n8 = (n1 + 7) & ~7;
  const __m256d ramp_lo = _mm256_setr_pd(0.0, 1.0, 2.0, 3.0);
  const __m256d ramp_hi = _mm256_setr_pd(4.0, 5.0, 6.0, 7.0);
  const __m256d vL0 = _mm256_set1_pd(L0), vdL = _mm256_set1_pd(dL);
  const __m256d vda = _mm256_set1_pd(dalpha);
  const __m256d vsgn = _mm256_set1_pd(dalpha > 0 ? -1.0 : 1.0);
  const __m256d vmin = _mm256_set1_pd(-8.0), vmax = _mm256_set1_pd(K + 8.0);
  const __m256d one_d = _mm256_set1_pd(1.0);
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  const __m256 vw = _mm256_set1_ps(weight);
  const __m256i kz = _mm256_setzero_si256(), kK = _mm256_set1_epi32(K - 1);
  const __m256i vbc = _mm256_set1_epi32(static_cast<int>(bc));
  const float daf = static_cast<float>(dalpha);
  for (int j0 = 0; j0 < n8; j0 += 8) {
    const __m256d jb = _mm256_set1_pd(static_cast<double>(j0));
    const __m256d L_lo = _mm256_fmadd_pd(vdL, _mm256_add_pd(jb, ramp_lo), vL0);
    const __m256d L_hi = _mm256_fmadd_pd(vdL, _mm256_add_pd(jb, ramp_hi), vL0);
    __m256d lo_lo = _mm256_div_pd(_mm256_sub_pd(vsgn, L_lo), vda);
    __m256d lo_hi = _mm256_div_pd(_mm256_sub_pd(vsgn, L_hi), vda);
    lo_lo = _mm256_min_pd(_mm256_max_pd(lo_lo, vmin), vmax);
    lo_hi = _mm256_min_pd(_mm256_max_pd(lo_hi, vmin), vmax);
    const __m256d k_lo = _mm256_add_pd(_mm256_floor_pd(lo_lo), one_d);
    const __m256d k_hi = _mm256_add_pd(_mm256_floor_pd(lo_hi), one_d);
    const __m256 e0 = _mm256_set_m128(_mm256_cvtpd_ps(_mm256_fmadd_pd(k_hi, vda, L_hi)),
                                      _mm256_cvtpd_ps(_mm256_fmadd_pd(k_lo, vda, L_lo)));
    __m256i k = _mm256_set_m128i(_mm256_cvttpd_epi32(k_hi), _mm256_cvttpd_epi32(k_lo));
    for (int t = 0; t < n_taps; ++t) {
      const __m256 err = _mm256_add_ps(e0, _mm256_set1_ps(t * daf));
      __m256 w = _mm256_mul_ps(vw, _mm256_max_ps(zero, _mm256_sub_ps(one, _mm256_andnot_ps(sign_mask, err))));
      const __m256i kc = _mm256_min_epi32(_mm256_max_epi32(k, kz), kK);
      w = _mm256_and_ps(w, _mm256_castsi256_ps(_mm256_cmpeq_epi32(kc, k)));
      _mm256_storeu_ps(wt + t * n8 + j0, w);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(off + t * n8 + j0), _mm256_mullo_epi32(kc, vbc));
      k = _mm256_add_epi32(k, _mm256_set1_epi32(1));
    }
  }
  switch (n_taps) {
    case 2: return apply_taps<2>(acc, n1, bc, y, n8, wt, off, n_taps);
    case 3: return apply_taps<3>(acc, n1, bc, y, n8, wt, off, n_taps);
    default: return apply_taps<0>(acc, n1, bc, y, n8, wt, off, n_taps);
  }
}

// atan of 8 floats (Cephes' atanf: reduction to |x| <= tan(pi/8), degree-9 odd polynomial;
// relative error ~1e-7), for the curved fan's detector coordinate.
ALARA_AVX2 __attribute__((always_inline)) inline __m256 atan_ps(__m256 x) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  const __m256 sgn = _mm256_and_ps(x, sign_mask);
  __m256 a = _mm256_andnot_ps(sign_mask, x);
  const __m256 big = _mm256_cmp_ps(a, _mm256_set1_ps(2.414213562373095f), _CMP_GT_OQ);
  const __m256 mid = _mm256_andnot_ps(big, _mm256_cmp_ps(a, _mm256_set1_ps(0.4142135623730950f), _CMP_GT_OQ));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 a_big = _mm256_div_ps(_mm256_set1_ps(-1.0f), a);
  const __m256 a_mid = _mm256_div_ps(_mm256_sub_ps(a, one), _mm256_add_ps(a, one));
  a = _mm256_blendv_ps(_mm256_blendv_ps(a, a_mid, mid), a_big, big);
  const __m256 y0 = _mm256_or_ps(_mm256_and_ps(big, _mm256_set1_ps(1.5707963267948966f)),
                                 _mm256_and_ps(mid, _mm256_set1_ps(0.7853981633974483f)));
  const __m256 z = _mm256_mul_ps(a, a);
  __m256 p = _mm256_set1_ps(8.05374449538e-2f);
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-1.38776856032e-1f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.99777106478e-1f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.33329491539e-1f));
  const __m256 r = _mm256_add_ps(y0, _mm256_fmadd_ps(_mm256_mul_ps(p, z), a, a));
  return _mm256_or_ps(r, sgn);
}

// atan on [-1, 1] to 2.5e-6 (odd polynomial of degree 11, least-squares fit in float): the
// curved fan's lane map near the detector's centre, at a third of atan_ps's cost.
constexpr double kAtanPolyError = 2.5e-6;

ALARA_AVX2 __attribute__((always_inline)) inline __m256 atan_poly_ps(__m256 x) {
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(-0.011468027718365192f);
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(0.05195688456296921f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-0.11573600769042969f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(0.19323821365833282f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-0.33256882429122925f));
  p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(0.9999744892120361f));
  return _mm256_mul_ps(p, x);
}

// Where the rays of one fan-beam view cross one plane, as the kernels' lanes need it.
// A point at position t on the plane (pixel units along the interpolated axis) has
// detector-frame coordinates u(t) = u0 + t du, e(t) = e0 + t de (e > 0: the source is off
// the plane's pixel range), so the rays of the segment in increasing position order with
// position <= t number a * r(t) + b rounded down, r = u / e for a flat detector and
// atan(u / e) for a curved one (b includes a safety margin that makes the count at most
// one too small; the kernel corrects it from the table; with atan_poly_ps' error, if
// `poly`, where |u / e| <= 1).  `newton`: the AVX-512 lanes refine their reciprocal
// estimate by a Newton step (where its error would need more margin than it is worth).
struct FanLaneMap {
  float u0, du, e0, de, a, b;
  bool curved, poly, newton;
};

// Fan-beam backprojection of one segment's rays onto the pixels [jlo, jhi] of one plane.
// Pixel j gets sum_i max(0, 1 - |P_i - j|) c_i: the forward projection's interpolation
// weights, so this is its exact adjoint (to the 2^-S quantisation of the positions).  P
// (int32, positions times 2^S, increasing, valid on [ia, ib + 32) with sentinels past ib)
// and c (weight * sinogram value in the same order, readable on [ia, ib + 32)) are the
// segment's table on this plane.  Each pixel lane takes only its own rays: the first one
// right of j - 1 from the lane map (which may be one short: one compare steps over it),
// then T consecutive ones (T bounds the rays in an open interval of 2 pixels).  The rays
// of 8 lanes usually lie in a window of 16 table entries, loaded once and permuted;
// otherwise they are gathered.
// kWeights: instead of accumulating into acc (one channel), write each tap's weight and
// offset (ray index times bc), wt[k * stride + j - jlo] and idx[k * stride + j - jlo]
// (k < T; stride >= jhi - jlo + 8), for apply_taps.  kT > 0: T as a compile-time constant.
template <bool kCurved, int kT, bool kWeights>
ALARA_AVX2 inline void fan_bp_lanes_t(float* acc, int jlo, int jhi, const int32_t* P, const float* c,
                                      int ia, int ib, int S, int T, const FanLaneMap& m,
                                      float* wt, int32_t* idx_out, int stride, int bc = 1) {
  if (kT > 0) T = kT;
  const __m256 lanes = _mm256_setr_ps(0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f);
  const __m256i lanes_fix = _mm256_slli_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), S);
  const __m256 u0 = _mm256_set1_ps(m.u0), du = _mm256_set1_ps(m.du);
  const __m256 e0 = _mm256_set1_ps(m.e0), de = _mm256_set1_ps(m.de);
  const __m256 va = _mm256_set1_ps(m.a), vb = _mm256_set1_ps(m.b);
  const __m256i via = _mm256_set1_epi32(ia), vib = _mm256_set1_epi32(ib);
  const __m256i seven = _mm256_set1_epi32(7), one_i = _mm256_set1_epi32(1);
  const __m256i unit = _mm256_set1_epi32(1 << S);
  const __m256 inv_scale = _mm256_set1_ps(1.0f / static_cast<float>(1 << S));
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  const __m256i vbc = _mm256_set1_epi32(bc);
  for (int j0 = jlo; j0 <= jhi; j0 += 8) {
    const __m256 t = _mm256_add_ps(_mm256_set1_ps(static_cast<float>(j0 - 1)), lanes);
    __m256 r = _mm256_div_ps(_mm256_fmadd_ps(t, du, u0), _mm256_fmadd_ps(t, de, e0));
    if (kCurved) {
      const __m256 beyond = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), r), one, _CMP_GT_OQ);
      r = m.poly && _mm256_movemask_ps(beyond) == 0 ? atan_poly_ps(r) : atan_ps(r);
    }
    const __m256i count = _mm256_cvttps_epi32(_mm256_floor_ps(_mm256_fmadd_ps(r, va, vb)));
    const __m256i first = _mm256_min_epi32(_mm256_max_epi32(count, via), vib);
    const __m256i jfix = _mm256_add_epi32(_mm256_set1_epi32(j0 << S), lanes_fix);
    const __m256i thr1 = _mm256_sub_epi32(_mm256_add_epi32(jfix, one_i), unit);  // (j-1) 2^S + 1
    const int f0 = _mm256_cvtsi256_si32(first);
    const int f7 = _mm256_extract_epi32(first, 7);
    __m256 s = zero;
    const int64_t o = j0 - jlo;
#define ALARA_TAP(p, cc, ray)                                                                \
  {                                                                                          \
    const __m256 dist = _mm256_cvtepi32_ps(_mm256_abs_epi32(_mm256_sub_epi32(p, jfix)));     \
    const __m256 w = _mm256_max_ps(zero, _mm256_fnmadd_ps(dist, inv_scale, one));            \
    if (kWeights) {                                                                          \
      _mm256_storeu_ps(wt + k * stride + o, w);                                              \
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx_out + k * stride + o),              \
                          _mm256_mullo_epi32(ray, vbc));                                     \
    } else {                                                                                 \
      s = _mm256_fmadd_ps(w, cc, s);                                                         \
    }                                                                                        \
  }
    if (f7 - f0 + 1 + T <= 16) {
      const __m256i plo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(P + f0));
      const __m256i phi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(P + f0 + 8));
      __m256 clo = zero, chi = zero;
      if (!kWeights) clo = _mm256_loadu_ps(c + f0), chi = _mm256_loadu_ps(c + f0 + 8);
      const __m256i vf0 = _mm256_set1_epi32(f0);
      __m256i rel = _mm256_sub_epi32(first, vf0);
      {  // the lane map's margin: step over the first ray if it lies at or left of j - 1
        const __m256i hi = _mm256_cmpgt_epi32(rel, seven);
        const __m256i p = _mm256_blendv_epi8(_mm256_permutevar8x32_epi32(plo, rel),
                                             _mm256_permutevar8x32_epi32(phi, rel), hi);
        rel = _mm256_sub_epi32(rel, _mm256_cmpgt_epi32(thr1, p));
      }
#pragma GCC unroll 8
      for (int k = 0; k < (kT > 0 ? kT : T); ++k) {
        const __m256i hi = _mm256_cmpgt_epi32(rel, seven);
        const __m256i p = _mm256_blendv_epi8(_mm256_permutevar8x32_epi32(plo, rel),
                                             _mm256_permutevar8x32_epi32(phi, rel), hi);
        __m256 cc = zero;
        if (!kWeights)
          cc = _mm256_blendv_ps(_mm256_permutevar8x32_ps(clo, rel),
                                _mm256_permutevar8x32_ps(chi, rel), _mm256_castsi256_ps(hi));
        ALARA_TAP(p, cc, _mm256_add_epi32(rel, vf0))
        rel = _mm256_add_epi32(rel, one_i);
      }
    } else {
      __m256i idx = first;
      idx = _mm256_sub_epi32(idx, _mm256_cmpgt_epi32(thr1, _mm256_i32gather_epi32(P, idx, 4)));
      for (int k = 0; k < (kT > 0 ? kT : T); ++k) {
        const __m256i p = _mm256_i32gather_epi32(P, idx, 4);
        __m256 cc = zero;
        if (!kWeights) cc = _mm256_i32gather_ps(c, idx, 4);
        ALARA_TAP(p, cc, idx)
        idx = _mm256_add_epi32(idx, one_i);
      }
    }
#undef ALARA_TAP
    if (kWeights) continue;
    if (j0 + 8 <= jhi + 1) {
      _mm256_storeu_ps(acc + j0, _mm256_add_ps(_mm256_loadu_ps(acc + j0), s));
    } else {
      const __m256i msk = first_lanes(jhi + 1 - j0);
      _mm256_maskstore_ps(acc + j0, msk, _mm256_add_ps(_mm256_maskload_ps(acc + j0, msk), s));
    }
  }
}

template <bool kCurved, bool kWeights>
ALARA_AVX2 inline void fan_bp_lanes_c(float* acc, int jlo, int jhi, const int32_t* P, const float* c,
                                      int ia, int ib, int S, int T, const FanLaneMap& m,
                                      float* wt, int32_t* idx, int stride, int bc = 1) {
  switch (T) {
    case 1: return fan_bp_lanes_t<kCurved, 1, kWeights>(acc, jlo, jhi, P, c, ia, ib, S, T, m, wt, idx, stride, bc);
    case 2: return fan_bp_lanes_t<kCurved, 2, kWeights>(acc, jlo, jhi, P, c, ia, ib, S, T, m, wt, idx, stride, bc);
    case 3: return fan_bp_lanes_t<kCurved, 3, kWeights>(acc, jlo, jhi, P, c, ia, ib, S, T, m, wt, idx, stride, bc);
    case 4: return fan_bp_lanes_t<kCurved, 4, kWeights>(acc, jlo, jhi, P, c, ia, ib, S, T, m, wt, idx, stride, bc);
    default: return fan_bp_lanes_t<kCurved, 0, kWeights>(acc, jlo, jhi, P, c, ia, ib, S, T, m, wt, idx, stride, bc);
  }
}

// One channel: accumulates into acc (see fan_bp_lanes_t).
ALARA_AVX2 inline void fan_bp_lanes(float* acc, int jlo, int jhi, const int32_t* P, const float* c,
                                    int ia, int ib, int S, int T, const FanLaneMap& m) {
  if (m.curved)
    fan_bp_lanes_c<true, false>(acc, jlo, jhi, P, c, ia, ib, S, T, m, nullptr, nullptr, 0);
  else
    fan_bp_lanes_c<false, false>(acc, jlo, jhi, P, c, ia, ib, S, T, m, nullptr, nullptr, 0);
}

// bc channels (channels-last acc [n_other, bc] and c [rays, bc]): the lanes find every
// pixel's taps (weights and offsets into wt / idx, T x stride scratch with stride >= jhi -
// jlo + 8), then apply_taps applies each to 8 channels per instruction.
ALARA_AVX2 inline void fan_bp_channels(float* acc, int64_t bc, int jlo, int jhi, const int32_t* P,
                                       const float* c, int ia, int ib, int S, int T,
                                       const FanLaneMap& m, float* wt, int32_t* idx, int stride) {
  if (m.curved)
    fan_bp_lanes_c<true, true>(nullptr, jlo, jhi, P, nullptr, ia, ib, S, T, m, wt, idx, stride, static_cast<int>(bc));
  else
    fan_bp_lanes_c<false, true>(nullptr, jlo, jhi, P, nullptr, ia, ib, S, T, m, wt, idx, stride, static_cast<int>(bc));
  switch (T) {
    case 2: return apply_taps<2>(acc + jlo * bc, jhi - jlo + 1, bc, c, stride, wt, idx, T);
    case 3: return apply_taps<3>(acc + jlo * bc, jhi - jlo + 1, bc, c, stride, wt, idx, T);
    default: return apply_taps<0>(acc + jlo * bc, jhi - jlo + 1, bc, c, stride, wt, idx, T);
  }
}

// fan_plane_table's scalar part, the same at every vector width: the positions [i, ib)
// one at a time (what the vector loop left), then the 32 sentinels.
inline void fan_plane_table_tail(int32_t* P, const double* alpha, const double* beta, int n, bool rising,
                                 double plane, int i, int ib, int S) {
  const double sc = static_cast<double>(1 << S), li = static_cast<double>(1 << 29);
  for (; i < ib; ++i) {
    const int k = rising ? i : n - 1 - i;
    double pos = (alpha[k] + beta[k] * plane) * sc;
    pos = pos < -li ? -li : (pos > li ? li : pos);
    P[i] = static_cast<int32_t>(__builtin_nearbyint(pos));
  }
  for (i = ib; i < ib + 32; ++i) P[i] = 1 << 29;
}

// The smaller of ``spacing`` and the spacings P[k + 1] - P[k] for k in [i, ib - 1).
inline int64_t min_spacing_from(const int32_t* P, int i, int ib, int64_t spacing) {
  for (; i + 1 < ib; ++i) spacing = P[i + 1] - P[i] < spacing ? P[i + 1] - P[i] : spacing;
  return spacing;
}

// The table of fan_bp_lanes for the n rays of a segment on one plane: positions
// P_i = alpha[k] + beta[k] * plane for i in [ia, ib) (k = i if rising, else n - 1 - i, so
// that positions increase), times 2^S, clamped to +-2^29, then 32 sentinels (2^29).
// Returns the smallest spacing of consecutive positions (times 2^S; <= 0 if they do not
// increase).
ALARA_AVX2 inline int64_t fan_plane_table(int32_t* P, const double* alpha, const double* beta,
                                          int n, bool rising, double plane, int ia, int ib, int S) {
  const __m256d vp = _mm256_set1_pd(plane), scale = _mm256_set1_pd(static_cast<double>(1 << S));
  const __m256d lim = _mm256_set1_pd(static_cast<double>(1 << 29));
  const __m256d nlim = _mm256_set1_pd(-static_cast<double>(1 << 29));
  int i = ia;
  for (; i + 4 <= ib; i += 4) {
    __m256d pos;
    if (rising) {
      pos = _mm256_fmadd_pd(_mm256_loadu_pd(beta + i), vp, _mm256_loadu_pd(alpha + i));
    } else {
      const int k = n - 4 - i;  // reversed blocks of 4
      pos = _mm256_permute4x64_pd(
          _mm256_fmadd_pd(_mm256_loadu_pd(beta + k), vp, _mm256_loadu_pd(alpha + k)), 0x1B);
    }
    pos = _mm256_min_pd(_mm256_max_pd(_mm256_mul_pd(pos, scale), nlim), lim);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(P + i), _mm256_cvtpd_epi32(pos));
  }
  fan_plane_table_tail(P, alpha, beta, n, rising, plane, i, ib, S);
  __m256i vmin = _mm256_set1_epi32(1 << 30);
  i = ia;
  for (; i + 9 <= ib; i += 8)
    vmin = _mm256_min_epi32(vmin, _mm256_sub_epi32(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(P + i + 1)),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(P + i))));
  int32_t lanes_min[8];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(lanes_min), vmin);
  int64_t spacing = 1 << 30;
  for (int l = 0; l < 8; ++l) spacing = lanes_min[l] < spacing ? lanes_min[l] : spacing;
  return min_spacing_from(P, i, ib, spacing);
}

#undef ALARA_AVX2

}  // namespace avx2
}  // namespace alara
#endif

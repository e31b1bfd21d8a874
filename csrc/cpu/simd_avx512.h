// AVX-512 inner loops of the float32 batch-1 CPU kernels (selected at run time, like the
// AVX2 ones in simd_avx2.h, whose formulas they repeat 16 lanes wide).
//
// Why a second width.  At batch 1 the kernels cannot share a pixel's taps between
// channels (the batch and symmetric paths do: every channel of a view has the same rays),
// so the cost is the tap search per pixel and view.  Vectorising over 8 neighbouring
// views instead of over pixels does not share it either: each view has its own rays, so
// each lane needs its own taps (positions, weights and a gather per tap), which costs as
// much as the 8-pixel windows it would replace.  What lowers the cost per pixel and view
// is a wider window: 16 pixels per block, and the two-register permute (vpermt2ps) that
// selects each lane's bin or ray from a window of 32 in one instruction where AVX2 needs
// two permutes, a compare and a blend.
//
// ALARA_SIMD=avx2 keeps the AVX2 loops (tests compare both; timings of either).
#pragma once

#include "simd_avx2.h"

#if defined(ALARA_HAVE_AVX2_PATH)
#define ALARA_HAVE_AVX512_PATH 1

#include <cctype>
#include <cstdlib>
#include <string>

#include <c10/util/Exception.h>

namespace alara {
namespace avx512 {

#define ALARA_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))

inline bool cpu_supports() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                         avx2::supported();
  return ok;
}

// Whether the AVX-512 loops run: the CPU has them and ALARA_SIMD does not say avx2
// (unset or auto: the widest the CPU has).  Read per call, like ALARA_SYMMETRY.
inline bool enabled() {
  if (!cpu_supports()) return false;
  const char* raw = std::getenv("ALARA_SIMD");
  if (raw == nullptr) return true;
  std::string v(raw);
  for (char& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (v.empty() || v == "auto" || v == "avx512") return true;
  TORCH_CHECK(v == "avx2", "alara: ALARA_SIMD must be auto (the default), avx512 or avx2, got '",
              raw, "'");
  return false;
}

// Whether bp_row16's 32-bin window covers every tap of 16 consecutive pixels.
inline bool bp_row_fits(double dL, double dalpha, int n_taps) {
  const double span = 15.0 * __builtin_fabs(dL) / __builtin_fabs(dalpha);
  return span + 2.0 + n_taps <= 32.0;
}

// avx2::bp_row_t for 16 pixels per block: pixels [0, n) of one row (the last block
// masked), one channel; `y` points at bin 0 of a row padded with avx2::kBinPad (>= 41)
// zeros.
template <int kTaps>
ALARA_AVX512 inline void bp_row_t(float* acc, int n, const float* y, int K, double L0, double dL,
                                  double dalpha, int n_taps, float weight) {
  static_assert(avx2::kBinPad >= 41, "bp_row16 reads bins [-8, K + 41)");
  if (kTaps > 0) n_taps = kTaps;
  const double sgn = dalpha > 0 ? -1.0 : 1.0;
  const double inv = 1.0 / dalpha;
  const double dlo = -dL * inv;
  const int lb = dlo >= 0 ? 0 : 15;
  const __m512 lanes = _mm512_sub_ps(
      _mm512_setr_ps(0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f, 8.f, 9.f, 10.f, 11.f, 12.f, 13.f, 14.f, 15.f),
      _mm512_set1_ps(static_cast<float>(lb)));
  const __m512 vdlo = _mm512_mul_ps(lanes, _mm512_set1_ps(static_cast<float>(dlo)));
  const __m512 vdL = _mm512_mul_ps(lanes, _mm512_set1_ps(static_cast<float>(dL)));
  const __m512 vda = _mm512_set1_ps(static_cast<float>(dalpha));
  const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
  const __m512 vw = _mm512_set1_ps(weight);
  const __m512i one_i = _mm512_set1_epi32(1);
  for (int j0 = 0; j0 < n; j0 += 16) {
    const double Lb = L0 + dL * (j0 + lb);
    double lob = (sgn - Lb) * inv;
    lob = lob < -8.0 ? -8.0 : (lob > K + 8.0 ? K + 8.0 : lob);
    const double qb = __builtin_floor(lob);
    const __m512 lo = _mm512_add_ps(_mm512_set1_ps(static_cast<float>(lob - qb)), vdlo);
    const __m512 relf = _mm512_roundscale_ps(lo, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512i rel = _mm512_cvttps_epi32(relf);
    const float E = static_cast<float>(Lb + (qb + 1.0) * dalpha);
    __m512 err = _mm512_fmadd_ps(relf, vda, _mm512_add_ps(_mm512_set1_ps(E), vdL));
    const float* win = y + static_cast<int64_t>(qb) + 1;
    const __m512 win_lo = _mm512_loadu_ps(win), win_hi = _mm512_loadu_ps(win + 16);
    __m512 sum = zero;
#pragma GCC unroll 4
    for (int t = 0; t < (kTaps > 0 ? kTaps : n_taps); ++t) {
      const __m512 v = _mm512_permutex2var_ps(win_lo, rel, win_hi);
      const __m512 w = _mm512_max_ps(zero, _mm512_sub_ps(one, _mm512_abs_ps(err)));
      sum = _mm512_fmadd_ps(w, v, sum);
      rel = _mm512_add_epi32(rel, one_i);
      err = _mm512_add_ps(err, vda);
    }
    const __mmask16 m = n - j0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j0)) - 1);
    _mm512_mask_storeu_ps(acc + j0, m, _mm512_fmadd_ps(vw, sum, _mm512_maskz_loadu_ps(m, acc + j0)));
  }
}

ALARA_AVX512 inline void bp_row(float* acc, int n, const float* y, int K, double L0, double dL,
                                double dalpha, int n_taps, float weight) {
  if (n_taps == 2)
    bp_row_t<2>(acc, n, y, K, L0, dL, dalpha, n_taps, weight);
  else if (n_taps == 3)
    bp_row_t<3>(acc, n, y, K, L0, dL, dalpha, n_taps, weight);
  else
    bp_row_t<0>(acc, n, y, K, L0, dL, dalpha, n_taps, weight);
}

// avx2::atan_ps and avx2::atan_poly_ps, 16 lanes (the same constants).
ALARA_AVX512 __attribute__((always_inline)) inline __m512 atan_ps(__m512 x) {
  const __m512 sign_mask = _mm512_set1_ps(-0.0f);
  const __m512 sgn = _mm512_and_ps(x, sign_mask);
  __m512 a = _mm512_abs_ps(x);
  const __mmask16 big = _mm512_cmp_ps_mask(a, _mm512_set1_ps(2.414213562373095f), _CMP_GT_OQ);
  const __mmask16 mid = _mm512_kandn(big, _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.4142135623730950f), _CMP_GT_OQ));
  const __m512 one = _mm512_set1_ps(1.0f);
  a = _mm512_mask_div_ps(a, mid, _mm512_sub_ps(a, one), _mm512_add_ps(a, one));
  a = _mm512_mask_div_ps(a, big, _mm512_set1_ps(-1.0f), _mm512_abs_ps(x));
  __m512 y0 = _mm512_setzero_ps();
  y0 = _mm512_mask_mov_ps(y0, big, _mm512_set1_ps(1.5707963267948966f));
  y0 = _mm512_mask_mov_ps(y0, mid, _mm512_set1_ps(0.7853981633974483f));
  const __m512 z = _mm512_mul_ps(a, a);
  __m512 p = _mm512_set1_ps(8.05374449538e-2f);
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-1.38776856032e-1f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.99777106478e-1f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-3.33329491539e-1f));
  const __m512 r = _mm512_add_ps(y0, _mm512_fmadd_ps(_mm512_mul_ps(p, z), a, a));
  return _mm512_or_ps(r, sgn);
}

ALARA_AVX512 __attribute__((always_inline)) inline __m512 atan_poly_ps(__m512 x) {
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-0.011468027718365192f);
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(0.05195688456296921f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-0.11573600769042969f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(0.19323821365833282f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-0.33256882429122925f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(0.9999744892120361f));
  return _mm512_mul_ps(p, x);
}

// The lane map of fan_bp_lanes_t and fan_bp_lanes_multi_t (see avx2::FanLaneMap), 16
// pixels per block: its constants broadcast once per plane.
struct FanLanes16 {
  __m512 lanes, u0, du, e0, de, va, vb, one, two, zero, inv_scale, unit, sixteen;
  __m512i lanes_fix, via, vib, unit_minus_one, one_i, sixteen_fix;
  int S;
  bool poly, newton;

  // One block of 16 pixels: each lane's first ray (see first()), j 2^S, (j - 1) 2^S + 1,
  // and the first rays of lanes 0 and 15.
  struct Block {
    __m512i first, jfix, thr1;
    int f0, f15;
  };

  ALARA_AVX512 FanLanes16(int ia, int ib, int S_, const avx2::FanLaneMap& m)
      : S(S_), poly(m.poly), newton(m.newton) {
    const __m512i lanes_i = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    lanes = _mm512_cvtepi32_ps(lanes_i);
    lanes_fix = _mm512_slli_epi32(lanes_i, S);
    u0 = _mm512_set1_ps(m.u0), du = _mm512_set1_ps(m.du);
    e0 = _mm512_set1_ps(m.e0), de = _mm512_set1_ps(m.de);
    va = _mm512_set1_ps(m.a), vb = _mm512_set1_ps(m.b);
    via = _mm512_set1_epi32(ia), vib = _mm512_set1_epi32(ib);
    unit_minus_one = _mm512_set1_epi32((1 << S) - 1);
    one = _mm512_set1_ps(1.0f);
    two = _mm512_set1_ps(2.0f);
    zero = _mm512_setzero_ps();
    inv_scale = _mm512_set1_ps(1.0f / static_cast<float>(1 << S));
    unit = _mm512_set1_ps(static_cast<float>(1 << S));
    one_i = _mm512_set1_epi32(1);
    sixteen = _mm512_set1_ps(16.0f);
    sixteen_fix = _mm512_set1_epi32(16 << S);
  }

  // Where a block starts: t = j - 1 (float) and jfix = j 2^S for its 16 pixels j, stepped
  // by 16 pixels per block (exact: small integers) instead of built from j0 each time.
  struct Cursor {
    __m512 t;
    __m512i jfix;
  };

  ALARA_AVX512 __attribute__((always_inline)) inline Cursor start(int j0) const {
    return {_mm512_add_ps(_mm512_set1_ps(static_cast<float>(j0 - 1)), lanes),
            _mm512_add_epi32(_mm512_set1_epi32(j0 << S), lanes_fix)};
  }

  ALARA_AVX512 __attribute__((always_inline)) inline void advance(Cursor& at) const {
    at.t = _mm512_add_ps(at.t, sixteen);
    at.jfix = _mm512_add_epi32(at.jfix, sixteen_fix);
  }

  // For the block's pixels j: each lane's first ray right of j - 1 (at most one short),
  // clamped to [ia, ib].
  template <bool kCurved>
  ALARA_AVX512 __attribute__((always_inline)) inline __m512i first(const Cursor& at) const {
    const __m512 num = _mm512_fmadd_ps(at.t, du, u0), den = _mm512_fmadd_ps(at.t, de, e0);
    __m512 rcp = _mm512_rcp14_ps(den);  // (the map's margin covers its error, unless `newton`)
    if (newton) rcp = _mm512_mul_ps(rcp, _mm512_fnmadd_ps(den, rcp, two));
    __m512 r = _mm512_mul_ps(num, rcp);
    if (kCurved) {
      const __mmask16 beyond = _mm512_cmp_ps_mask(_mm512_abs_ps(r), one, _CMP_GT_OQ);
      r = poly && beyond == 0 ? atan_poly_ps(r) : atan_ps(r);
    }
    // (the floor in the conversion itself: one instruction instead of a round and a cvtt)
    const __m512i count =
        _mm512_cvt_roundps_epi32(_mm512_fmadd_ps(r, va, vb), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    return _mm512_min_epi32(_mm512_max_epi32(count, via), vib);
  }

  template <bool kCurved>
  ALARA_AVX512 __attribute__((always_inline)) inline Block block(const Cursor& at) const {
    Block b;
    b.first = first<kCurved>(at);
    b.jfix = at.jfix;
    b.thr1 = _mm512_sub_epi32(at.jfix, unit_minus_one);
    b.f0 = _mm_cvtsi128_si32(_mm512_castsi512_si128(b.first));
    b.f15 = _mm_extract_epi32(_mm512_extracti32x4_epi32(b.first, 3), 3);
    return b;
  }

  // Whether every lane's T taps lie in the window of 32 table entries from f0.
  ALARA_AVX512 __attribute__((always_inline)) inline bool fits(const Block& b, int T) const {
    return b.f15 - b.f0 + 1 + T <= 32;
  }

  // Each lane's first tap relative to f0, past the map's margin: with kStep, one step over
  // the first ray if it lies at or left of j - 1 (a window read; see fits()); without, the
  // map's first ray as it is (the caller's tap count has room for a ray short: see
  // fan_short_start_fits in kernels.h).
  template <bool kStep>
  ALARA_AVX512 __attribute__((always_inline)) inline __m512i window_start(const Block& b, const int32_t* P) const {
    const __m512i rel = _mm512_sub_epi32(b.first, _mm512_set1_epi32(b.f0));
    if (!kStep) return rel;
    const __m512i p = _mm512_permutex2var_epi32(_mm512_loadu_si512(P + b.f0), rel, _mm512_loadu_si512(P + b.f0 + 16));
    return _mm512_mask_add_epi32(rel, _mm512_cmpgt_epi32_mask(b.thr1, p), rel, one_i);
  }

  // The same as a ray index (a gather; where the taps do not fit the window).
  template <bool kStep>
  ALARA_AVX512 __attribute__((always_inline)) inline __m512i gather_start(const Block& b, const int32_t* P) const {
    if (!kStep) return b.first;
    return _mm512_mask_add_epi32(b.first, _mm512_cmpgt_epi32_mask(b.thr1, _mm512_i32gather_epi32(b.first, P, 4)),
                                 b.first, one_i);
  }

  // The taps' weights times 2^S, 2^S - min(|P - j|, 2^S), from positions p (times 2^S):
  // exact integers in float, and one range instruction (the smaller magnitude, sign
  // cleared) does the absolute value and the clamp.  The block's sum takes the 2^-S at
  // its store (to_acc), an exact power-of-two scaling.
  ALARA_AVX512 __attribute__((always_inline)) inline __m512 weight(__m512i p, const Block& b) const {
    const __m512 dist = _mm512_range_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(p, b.jfix)), unit, 0x0A);
    return _mm512_sub_ps(unit, dist);
  }

  // acc + s 2^-S (s a sum of weight() products).
  ALARA_AVX512 __attribute__((always_inline)) inline __m512 to_acc(__m512 s, __m512 acc) const {
    return _mm512_fmadd_ps(s, inv_scale, acc);
  }
};

// avx2::fan_bp_lanes_t (one channel) for 16 pixels per block: the rays of 16 lanes
// usually lie in a window of 32 table entries, one two-register permute per tap each for
// the positions and the values; otherwise they are gathered.  The lane map's ratio uses
// the reciprocal estimate (relative error 2^-14, which fan_plane adds to the map's margin;
// where that would take much of it, with one Newton step) instead of a division.
template <bool kCurved, bool kStep, int kT>
ALARA_AVX512 inline void fan_bp_lanes_t(float* acc, int jlo, int jhi, const int32_t* P, const float* c,
                                        int ia, int ib, int S, int T, const avx2::FanLaneMap& m) {
  if (kT > 0) T = kT;
  const FanLanes16 map(ia, ib, S, m);
  FanLanes16::Cursor at = map.start(jlo);
  for (int j0 = jlo; j0 <= jhi; j0 += 16, map.advance(at)) {
    const FanLanes16::Block b = map.block<kCurved>(at);
    __m512 s = map.zero;
    if (map.fits(b, T)) {
      const __m512i rel = map.template window_start<kStep>(b, P);
      // tap k reads the windows loaded k entries further on (loads are cheap; the index
      // stays put, one vector instruction less per tap)
#pragma GCC unroll 8
      for (int k = 0; k < (kT > 0 ? kT : T); ++k) {
        const __m512i p = _mm512_permutex2var_epi32(_mm512_loadu_si512(P + b.f0 + k), rel,
                                                    _mm512_loadu_si512(P + b.f0 + k + 16));
        const __m512 cc = _mm512_permutex2var_ps(_mm512_loadu_ps(c + b.f0 + k), rel, _mm512_loadu_ps(c + b.f0 + k + 16));
        s = _mm512_fmadd_ps(map.weight(p, b), cc, s);
      }
    } else {
      __m512i idx = map.template gather_start<kStep>(b, P);
      for (int k = 0; k < (kT > 0 ? kT : T); ++k) {
        s = _mm512_fmadd_ps(map.weight(_mm512_i32gather_epi32(idx, P, 4), b), _mm512_i32gather_ps(idx, c, 4), s);
        idx = _mm512_add_epi32(idx, map.one_i);
      }
    }
    const __mmask16 msk = jhi + 1 - j0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (jhi + 1 - j0)) - 1);
    _mm512_mask_storeu_ps(acc + j0, msk, map.to_acc(s, _mm512_maskz_loadu_ps(msk, acc + j0)));
  }
}

template <bool kCurved, bool kStep>
ALARA_AVX512 inline void fan_bp_lanes_c(float* acc, int jlo, int jhi, const int32_t* P, const float* c,
                                        int ia, int ib, int S, int T, const avx2::FanLaneMap& m) {
  switch (T) {
    case 1: return fan_bp_lanes_t<kCurved, kStep, 1>(acc, jlo, jhi, P, c, ia, ib, S, T, m);
    case 2: return fan_bp_lanes_t<kCurved, kStep, 2>(acc, jlo, jhi, P, c, ia, ib, S, T, m);
    case 3: return fan_bp_lanes_t<kCurved, kStep, 3>(acc, jlo, jhi, P, c, ia, ib, S, T, m);
    case 4: return fan_bp_lanes_t<kCurved, kStep, 4>(acc, jlo, jhi, P, c, ia, ib, S, T, m);
    default: return fan_bp_lanes_t<kCurved, kStep, 0>(acc, jlo, jhi, P, c, ia, ib, S, T, m);
  }
}

// One channel: accumulates into acc[jlo .. jhi] (see avx2::fan_bp_lanes).  `step`: each
// lane steps past a first ray at or left of j - 1; false where T taps cover a start one ray
// short (fan_short_start_fits in kernels.h).
ALARA_AVX512 inline void fan_bp_lanes(float* acc, int jlo, int jhi, const int32_t* P, const float* c,
                                      int ia, int ib, int S, int T, const avx2::FanLaneMap& m, bool step) {
  if (m.curved)
    (step ? fan_bp_lanes_c<true, true> : fan_bp_lanes_c<true, false>)(acc, jlo, jhi, P, c, ia, ib, S, T, m);
  else
    (step ? fan_bp_lanes_c<false, true> : fan_bp_lanes_c<false, false>)(acc, jlo, jhi, P, c, ia, ib, S, T, m);
}

// fan_bp_lanes_t for C = 2..4 channels at once (the few channels of a small orbit or
// batch): each tap's weight is found once per pixel and applied to every channel, one
// two-register permute and one multiply-add per channel and tap.  `c` holds the channels'
// values channel-major (channel ch at c + ch * c_stride, the same ray order as the
// table); acc is channels-last ([pixel, C]) as everywhere else: the channels' sums are
// interleaved into it (two permutes and a blend per 16 floats).
template <bool kCurved, bool kStep, int kT, int C>
ALARA_AVX512 inline void fan_bp_lanes_multi_t(float* acc, int jlo, int jhi, const int32_t* P, const float* c,
                                              int64_t c_stride, int ia, int ib, int S, int T,
                                              const avx2::FanLaneMap& m) {
  static_assert(C >= 2 && C <= 4, "2 to 4 channels");
  if (kT > 0) T = kT;
  // output vector k of a block, element e: float 16 k + e of the block's 16 C floats,
  // i.e. pixel lane (16 k + e) / C of channel (16 k + e) % C (tables built once)
  struct Interleave {
    alignas(64) int32_t a[C][16];
    alignas(64) int32_t b[C][16];
    __mmask16 from_b[C];
    Interleave() {
      for (int k = 0; k < C; ++k) {
        unsigned mb = 0;
        for (int e = 0; e < 16; ++e) {
          const int g = 16 * k + e, lane = g / C, ch = g % C;
          a[k][e] = lane + (ch == 1 ? 16 : 0);
          b[k][e] = lane + (ch == 3 ? 16 : 0);
          if (ch >= 2) mb |= 1u << e;
        }
        from_b[k] = static_cast<__mmask16>(mb);
      }
    }
  };
  static const Interleave il;
  __m512i idx_a[C], idx_b[C];
  for (int k = 0; k < C; ++k) {
    idx_a[k] = _mm512_load_si512(il.a[k]);
    idx_b[k] = _mm512_load_si512(il.b[k]);
  }
  const __mmask16* from_b = il.from_b;
  const FanLanes16 map(ia, ib, S, m);
  FanLanes16::Cursor at = map.start(jlo);
  for (int j0 = jlo; j0 <= jhi; j0 += 16, map.advance(at)) {
    const FanLanes16::Block b = map.block<kCurved>(at);
    __m512 s[4] = {map.zero, map.zero, map.zero, map.zero};
    if (map.fits(b, T)) {
      const __m512i rel = map.template window_start<kStep>(b, P);
#pragma GCC unroll 8
      for (int k = 0; k < (kT > 0 ? kT : T); ++k) {  // (windows k entries on, as in fan_bp_lanes_t)
        const __m512 w = map.weight(_mm512_permutex2var_epi32(_mm512_loadu_si512(P + b.f0 + k), rel,
                                                              _mm512_loadu_si512(P + b.f0 + k + 16)), b);
        for (int ch = 0; ch < C; ++ch) {
          const float* cc = c + ch * c_stride + b.f0 + k;
          s[ch] = _mm512_fmadd_ps(w, _mm512_permutex2var_ps(_mm512_loadu_ps(cc), rel, _mm512_loadu_ps(cc + 16)), s[ch]);
        }
      }
    } else {
      __m512i idx = map.template gather_start<kStep>(b, P);
      for (int k = 0; k < (kT > 0 ? kT : T); ++k) {
        const __m512 w = map.weight(_mm512_i32gather_epi32(idx, P, 4), b);
        for (int ch = 0; ch < C; ++ch)
          s[ch] = _mm512_fmadd_ps(w, _mm512_i32gather_ps(idx, c + ch * c_stride, 4), s[ch]);
        idx = _mm512_add_epi32(idx, map.one_i);
      }
    }
    const int valid = (jhi + 1 - j0 >= 16 ? 16 : jhi + 1 - j0) * C;  // floats of the block
    float* a = acc + static_cast<int64_t>(j0) * C;
    for (int k = 0; k < C; ++k) {
      const int left = valid - 16 * k;
      if (left <= 0) break;
      const __mmask16 msk = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
      const __m512 va_ = _mm512_permutex2var_ps(s[0], idx_a[k], s[1]);
      // (two channels fill every float from s[0] and s[1])
      const __m512 v = C == 2 ? va_
                              : _mm512_mask_blend_ps(from_b[k], va_,
                                                     _mm512_permutex2var_ps(s[2], idx_b[k], s[C == 4 ? 3 : 2]));
      _mm512_mask_storeu_ps(a + 16 * k, msk, map.to_acc(v, _mm512_maskz_loadu_ps(msk, a + 16 * k)));
    }
  }
}

template <bool kCurved, bool kStep, int C>
ALARA_AVX512 inline void fan_bp_lanes_multi_c(float* acc, int jlo, int jhi, const int32_t* P, const float* c,
                                              int64_t cs, int ia, int ib, int S, int T,
                                              const avx2::FanLaneMap& m) {
  switch (T) {
    case 1: return fan_bp_lanes_multi_t<kCurved, kStep, 1, C>(acc, jlo, jhi, P, c, cs, ia, ib, S, T, m);
    case 2: return fan_bp_lanes_multi_t<kCurved, kStep, 2, C>(acc, jlo, jhi, P, c, cs, ia, ib, S, T, m);
    case 3: return fan_bp_lanes_multi_t<kCurved, kStep, 3, C>(acc, jlo, jhi, P, c, cs, ia, ib, S, T, m);
    default: return fan_bp_lanes_multi_t<kCurved, kStep, 0, C>(acc, jlo, jhi, P, c, cs, ia, ib, S, T, m);
  }
}

// Channels 2..4 (bc), channels-last acc, channel-major c (stride c_stride); `step` as in
// fan_bp_lanes.
ALARA_AVX512 inline void fan_bp_lanes_multi(float* acc, int bc, int jlo, int jhi, const int32_t* P,
                                            const float* c, int64_t c_stride, int ia, int ib, int S,
                                            int T, const avx2::FanLaneMap& m, bool step) {
#define ALARA_MULTI(C)                                                                                    \
  return m.curved ? (step ? fan_bp_lanes_multi_c<true, true, C> : fan_bp_lanes_multi_c<true, false, C>)(  \
                        acc, jlo, jhi, P, c, c_stride, ia, ib, S, T, m)                                   \
                  : (step ? fan_bp_lanes_multi_c<false, true, C> : fan_bp_lanes_multi_c<false, false, C>)( \
                        acc, jlo, jhi, P, c, c_stride, ia, ib, S, T, m)
  switch (bc) {
    case 2: ALARA_MULTI(2);
    case 3: ALARA_MULTI(3);
    default: ALARA_MULTI(4);
  }
#undef ALARA_MULTI
}

// Channel counts that fan_bp_lanes_multi takes.
constexpr int kMaxMultiChannels = 4;

// The smallest spacing P[k + 1] - P[k], k in [ia, ib - 1) (1 << 30 if none).
ALARA_AVX512 inline int64_t min_spacing(const int32_t* P, int ia, int ib) {
  __m512i vmin = _mm512_set1_epi32(1 << 30);
  int i = ia;
  for (; i + 17 <= ib; i += 16)
    vmin = _mm512_min_epi32(vmin, _mm512_sub_epi32(_mm512_loadu_si512(P + i + 1), _mm512_loadu_si512(P + i)));
  if (i + 1 < ib) {  // the last ib - 1 - i spacings, masked
    const __mmask16 m = static_cast<__mmask16>((1u << (ib - 1 - i)) - 1);
    vmin = _mm512_mask_min_epi32(vmin, m, vmin, _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, P + i + 1),
                                                                 _mm512_maskz_loadu_epi32(m, P + i)));
  }
  return _mm512_reduce_min_epi32(vmin);
}

// avx2::fan_plane_table, 8 positions per step (the same values: positions times 2^S in
// double, clamped to +-2^29, rounded to int32 under the default rounding mode).
ALARA_AVX512 inline int64_t fan_plane_table(int32_t* P, const double* alpha, const double* beta,
                                            int n, bool rising, double plane, int ia, int ib, int S) {
  const __m512d vp = _mm512_set1_pd(plane), scale = _mm512_set1_pd(static_cast<double>(1 << S));
  const __m512d lim = _mm512_set1_pd(static_cast<double>(1 << 29));
  const __m512d nlim = _mm512_set1_pd(-static_cast<double>(1 << 29));
  const __m512i rev = _mm512_setr_epi64(7, 6, 5, 4, 3, 2, 1, 0);
  int i = ia;
  for (; i + 8 <= ib; i += 8) {
    __m512d pos;
    if (rising) {
      pos = _mm512_fmadd_pd(_mm512_loadu_pd(beta + i), vp, _mm512_loadu_pd(alpha + i));
    } else {
      const int k = n - 8 - i;  // reversed blocks of 8
      pos = _mm512_permutexvar_pd(rev, _mm512_fmadd_pd(_mm512_loadu_pd(beta + k), vp, _mm512_loadu_pd(alpha + k)));
    }
    pos = _mm512_min_pd(_mm512_max_pd(_mm512_mul_pd(pos, scale), nlim), lim);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(P + i), _mm512_cvtpd_epi32(pos));
  }
  avx2::fan_plane_table_tail(P, alpha, beta, n, rising, plane, i, ib, S);
  return min_spacing(P, ia, ib);
}

// A segment's rays for fan_plane_tables_split: each ray's line alpha + beta p times 2^S as
// A + B p, split into the nearest integers and float remainders, A = ai + af and
// B = bi + bf (|af|, |bf| <= 1/2).  Then A + B p = (ai + bi p) + (af + bf p): the first
// part is exact in int32 (the caller checks the range), the second is at most p / 2 + 1/2
// in size, so float keeps it to ~1e-5 units (of 2^-S pixel) and its rounding to the
// nearest integer is the double table's to within one unit.
struct SplitLines {
  const int32_t* ai;
  const int32_t* bi;
  const float* af;
  const float* bf;
};

// The position tables of fan_bp_lanes from SplitLines for the NP consecutive planes
// p0 .. p0 + NP - 1 of one task at once (plane < 2^24), over one range [ia, ib) of rays,
// 16 positions per step in 32-bit lanes: each step loads the lines once, and the integer
// parts step by bi from plane to plane (one add instead of a multiply).  The positions are
// not clamped; the caller guarantees them within +-2^30.  P[q] gets plane p0 + q's
// positions and 32 sentinels; with kSpacing, spacing[q] its smallest spacing over [ia, ib)
// (without, the caller finds it: a flat detector's is at an end of the range).
template <int NP, bool kSpacing, bool kRising>
ALARA_AVX512 inline void fan_plane_tables_split(int32_t* const* P, int64_t* spacing, const SplitLines& L,
                                                int n, int p0, int ia, int ib) {
  const int32_t* __restrict__ ai = L.ai;
  const int32_t* __restrict__ bi = L.bi;
  const float* __restrict__ af = L.af;
  const float* __restrict__ bf = L.bf;
  const __m512i vp0 = _mm512_set1_epi32(p0);
  __m512 vpf[NP];
  __m512i vmin[NP], prev[NP];
  for (int q = 0; q < NP; ++q) {
    vpf[q] = _mm512_set1_ps(static_cast<float>(p0 + q));
    vmin[q] = _mm512_set1_epi32(1 << 30);
    prev[q] = _mm512_setzero_si512();
  }
  const __m512i rev = _mm512_setr_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  __mmask16 valid = 0xfffe;  // (the first position has no predecessor)
  for (int i = ia; i < ib; i += 16) {
    const int m = ib - i < 16 ? ib - i : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << m) - 1);
    // lines k .. k + m - 1; reversed segments: positions i .. i + m - 1 are the lines
    // n - 1 - i down to n - m - i, lane m - 1 - j going to i + j
    const int k = kRising ? i : n - m - i;
    const __m512i perm = _mm512_sub_epi32(rev, _mm512_set1_epi32(16 - m));
    const __m512i b_int = _mm512_maskz_loadu_epi32(mask, bi + k);
    const __m512 a_f = _mm512_maskz_loadu_ps(mask, af + k), b_f = _mm512_maskz_loadu_ps(mask, bf + k);
    __m512i whole = _mm512_add_epi32(_mm512_maskz_loadu_epi32(mask, ai + k), _mm512_mullo_epi32(b_int, vp0));
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q) {
      if (q > 0) whole = _mm512_add_epi32(whole, b_int);
      __m512i cur = _mm512_add_epi32(whole, _mm512_cvtps_epi32(_mm512_fmadd_ps(b_f, vpf[q], a_f)));
      if (!kRising) cur = _mm512_permutexvar_epi32(perm, cur);
      _mm512_mask_storeu_epi32(P[q] + i, mask, cur);
      if (kSpacing) {
        vmin[q] = _mm512_mask_min_epi32(vmin[q], valid & mask, vmin[q],
                                        _mm512_sub_epi32(cur, _mm512_alignr_epi32(cur, prev[q], 15)));
        prev[q] = cur;
      }
    }
    valid = 0xffff;
  }
  const __m512i sentinel = _mm512_set1_epi32(1 << 29);
  for (int q = 0; q < NP; ++q) {
    _mm512_storeu_si512(P[q] + ib, sentinel);
    _mm512_storeu_si512(P[q] + ib + 16, sentinel);
    if (kSpacing) spacing[q] = _mm512_reduce_min_epi32(vmin[q]);
  }
}

// avx2::ray_sum1 with 8 planes per 64-bit gather (each element the pixel pair (q, q + 1)
// of one plane), 16 planes per step: forward projection of one ray, one channel.
ALARA_AVX512 inline float ray_sum1(const float* base, int64_t stride, double alpha, double beta,
                                   int p0, int p1) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  const __m512d va = _mm512_set1_pd(alpha), vb = _mm512_set1_pd(beta);
  const __m512d ramp = _mm512_setr_pd(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
  const int s32 = static_cast<int>(stride);
  __m256i rows = _mm256_mullo_epi32(_mm256_add_epi32(_mm256_set1_epi32(p0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
                                    _mm256_set1_epi32(s32));
  const __m256i step = _mm256_set1_epi32(8 * s32);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m512i pairs_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const long long* pairs = reinterpret_cast<const long long*>(base);
  int p = p0;
  for (; p + 15 <= p1; p += 16) {
    const __m512d pv0 = _mm512_add_pd(_mm512_set1_pd(static_cast<double>(p)), ramp);
    const __m512d pv1 = _mm512_add_pd(pv0, _mm512_set1_pd(8.0));
    const __m512d pos0 = _mm512_fmadd_pd(vb, pv0, va), pos1 = _mm512_fmadd_pd(vb, pv1, va);
    const __m512d fl0 = _mm512_roundscale_pd(pos0, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m512d fl1 = _mm512_roundscale_pd(pos1, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m256i idx0 = _mm256_add_epi32(rows, _mm512_cvttpd_epi32(fl0));
    rows = _mm256_add_epi32(rows, step);
    const __m256i idx1 = _mm256_add_epi32(rows, _mm512_cvttpd_epi32(fl1));
    rows = _mm256_add_epi32(rows, step);
    const __m512i g0 = _mm512_i32gather_epi64(idx0, pairs, 4);
    const __m512i g1 = _mm512_i32gather_epi64(idx1, pairs, 4);
    const __m256 f0 = _mm512_cvtpd_ps(_mm512_sub_pd(pos0, fl0));
    const __m256 f1 = _mm512_cvtpd_ps(_mm512_sub_pd(pos1, fl1));
    const __m512 w0 = _mm512_permutex2var_ps(_mm512_castps256_ps512(_mm256_sub_ps(one, f0)), pairs_idx,
                                             _mm512_castps256_ps512(f0));
    const __m512 w1 = _mm512_permutex2var_ps(_mm512_castps256_ps512(_mm256_sub_ps(one, f1)), pairs_idx,
                                             _mm512_castps256_ps512(f1));
    acc0 = _mm512_fmadd_ps(w0, _mm512_castsi512_ps(g0), acc0);
    acc1 = _mm512_fmadd_ps(w1, _mm512_castsi512_ps(g1), acc1);
  }
  float acc = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  return avx2::ray_sum1_tail(base, stride, alpha, beta, p, p1, acc);
}

// (ALARA_AVX512 stays defined: fan_plane.h's eight-plane lane maps use it)

}  // namespace avx512
}  // namespace alara
#endif

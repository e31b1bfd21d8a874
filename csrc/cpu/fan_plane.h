// Where a fan-beam view's rays meet one plane of the image (fan_plane): the lane map that
// gives each pixel of the plane its first ray, and the range of rays that can reach the
// plane's pixels.  The fan BP needs one per view and plane (720 x 362 of them at fan-short),
// and each is a chain of two divisions and roundings: one at a time they cost about a
// tenth of a batch-1 call.  So the arithmetic is written once over a lane type, one plane
// per call in double (fan_plane) or eight planes per call in AVX-512 (fan_planes: the flat
// detector; a curved one needs atan and takes the double lanes).
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../raymath.h"
#include "simd_avx2.h"
#include "simd_avx512.h"

namespace alara {

// A segment's rays on one plane of a fan-beam view, for the AVX2 lanes: the lane map
// (see avx2::FanLaneMap), whether the rays' positions increase with the bin, and the range
// [ia, ib) of positions (in increasing order) that can reach the plane's pixels.
struct FanPlane {
  bool ok;  // false: the plane's pixel range comes near the source (use the generic path)
  bool rising;
  int ia, ib;
#ifdef ALARA_HAVE_AVX2_PATH
  double margin;  // bins the lane map is lowered by (it errs by less than that)
  avx2::FanLaneMap map;
#endif
};

#ifdef ALARA_HAVE_AVX2_PATH

// Safety margin (in bins) of the lane map's float arithmetic: its error is ~1e-4 bins.
constexpr double kLaneMargin = 0.01;
// Relative error bound of the AVX-512 lane map's ratio, the reciprocal estimate without a
// Newton step (vrcp14ps: 2^-14), doubled for the product's rounding.
constexpr double kLaneRatioError = 1.0 / 8192.0;
// The most margin (bins) spent on that error before the lanes take a Newton step instead.
constexpr double kLaneRatioMargin = 0.1;

namespace fan_plane_detail {

// (The lane helpers are always inlined, into fan_planes_avx512 for the vector lanes, so
// they compile for AVX-512 there; setup.py silences GCC's note that 64-byte vector
// arguments would pass differently without it.)

typedef double f64x8 __attribute__((vector_size(64)));
typedef int i32x8 __attribute__((vector_size(32)));
typedef decltype(f64x8{} < f64x8{}) m64x8;  // a comparison's lanes (-1 or 0)

// What one view, segment and family share across the planes.
struct Setup {
  bool xd, curved, poly;
  double x0, y0, dx, dy, c, sn, src_radius;
  double du, de;  // u and e per pixel along the plane
  double a, b0;  // detector coordinate kappa = a r + b0 (bins) of the ratio r = u / e
  int k0, k1, n_other;
};

// The lane map's per-plane values (V: double, or f64x8 for eight planes).
template <class V, class M, class I>
struct Lanes {
  M ok, rising, newton;
  I ia, ib;
  V u0, e0, a, b, margin;
};

#define ALARA_LANE inline __attribute__((always_inline))

ALARA_LANE int to_int(double x) { return static_cast<int>(x); }
ALARA_LANE i32x8 to_int(f64x8 x) { return __builtin_convertvector(x, i32x8); }
ALARA_LANE double to_double(int x) { return static_cast<double>(x); }
ALARA_LANE f64x8 to_double(i32x8 x) { return __builtin_convertvector(x, f64x8); }
ALARA_LANE int int_mask(bool m) { return m ? -1 : 0; }
template <class M>
ALARA_LANE i32x8 int_mask(M m) {
  return __builtin_convertvector(m, i32x8);
}
ALARA_LANE double sel(bool m, double a, double b) { return m ? a : b; }
ALARA_LANE int sel(int m, int a, int b) { return m ? a : b; }
template <class M>
ALARA_LANE f64x8 sel(M m, f64x8 a, f64x8 b) {
  return m ? a : b;
}
ALARA_LANE i32x8 sel(i32x8 m, i32x8 a, i32x8 b) { return m ? a : b; }
ALARA_LANE bool all_of(bool a, bool b, bool c, bool d) { return a && b && c && d; }
ALARA_LANE m64x8 all_of(m64x8 a, m64x8 b, m64x8 c, m64x8 d) { return a & b & c & d; }

// floor(min(max(x, lo), hi)) (floored by hand: without SSE4.1, std::floor is a library
// call)
template <class V>
ALARA_LANE auto floor_clamped(V x, double lo, double hi) {
  x = sel(x < lo, V{} + lo, x);
  x = sel(x > hi, V{} + hi, x);
  const auto i = to_int(x);
  return i + int_mask(x < to_double(i));  // (the mask is -1 where the conversion rounded up)
}

template <class I>
ALARA_LANE I clamp_int(I x, int lo, int hi) {
  const I vlo = I{} + lo, vhi = I{} + hi;
  x = sel(int_mask(x < vlo), vlo, x);
  return sel(int_mask(x > vhi), vhi, x);
}

// The lane map of the planes `plane` (V: one or eight) of one view and segment: the pixel
// centre at position t on the plane is (px0 + t dpx, py0 + t dpy); it projects to the
// ratio r(t) = u(t) / e(t) of two affine functions of t, and to the detector coordinate
// kappa = a r + b0 (flat) or a atan(r) + b0 (curved).  Rays (in increasing position order)
// at or left of t: floor(sigma kappa(t) + tau).
template <class V, class M, class I>
ALARA_LANE void lane_map(const Setup& s, const V& plane, Lanes<V, M, I>& out) {
  const V px0 = s.xd ? s.x0 + (plane + 0.5) * s.dx : V{} + (s.x0 + 0.5 * s.dx);
  const V py0 = s.xd ? V{} + (s.y0 + 0.5 * s.dy) : s.y0 + (plane + 0.5) * s.dy;
  const double du = s.du, de = s.de;
  const V u0 = px0 * s.c + py0 * s.sn;
  const V e0 = s.src_radius - px0 * s.sn + py0 * s.c;
  const V slope = du * e0 - u0 * de;  // sign of d(u / e) / dt, constant along the plane
  const double e_min = 1e-3 * s.src_radius;
  out.rising = slope > 0;
  const int n = s.k1 - s.k0;
  const V sigma = sel(out.rising, V{} + 1.0, V{} - 1.0);
  const V tau = sel(out.rising, V{} + (1.0 - s.k0), V{} + static_cast<double>(s.k1));
  auto count = [&](const V& r) __attribute__((always_inline)) {
    V kappa;
    if constexpr (std::is_same_v<V, double>)
      kappa = s.a * (s.curved ? std::atan(r) : r) + s.b0;
    else
      kappa = s.a * r + s.b0;  // (flat only: fan_planes_avx512)
    return floor_clamped(sigma * kappa + tau, -4.0, n + 4.0);
  };
  const V r_lo = (u0 - 1.5 * du) / (e0 - 1.5 * de);
  const V r_hi = (u0 + (s.n_other + 0.5) * du) / (e0 + (s.n_other + 0.5) * de);
  // the curved map's polynomial atan moves kappa by up to a * kAtanPolyError bins; the
  // ratio's relative error e moves it by up to a |r| e (flat) or a e |r| / (1 + r^2) <=
  // a e |r| (curved), |r| largest at an end of the plane (u / e is monotone along it)
  const V abs_lo = sel(r_lo < 0, -r_lo, r_lo), abs_hi = sel(r_hi < 0, -r_hi, r_hi);
  const V ratio_error = s.a * sel(abs_lo > abs_hi, abs_lo, abs_hi) * kLaneRatioError;
  // (a long detector, many bins per unit of r: the AVX-512 lanes take a Newton step, and
  // the ratio is then exact to ~1e-7, inside kLaneMargin)
  out.newton = ratio_error > kLaneRatioMargin;
  out.margin = kLaneMargin + (s.poly ? s.a * avx2::kAtanPolyError : 0.0) + sel(out.newton, V{}, ratio_error);
  // the plane's pixels must stay ahead of the source, and the map at most one ray short:
  // beyond half a bin of margin, take the generic path
  out.ok = all_of(e0 - 2 * de > e_min, e0 + (s.n_other + 8) * de > e_min, slope != 0, out.margin <= 0.5);
  const auto ok_i = int_mask(out.ok);
  using IV = decltype(to_int(V{}));
  out.ia = sel(ok_i, clamp_int(count(r_lo) - 2, 0, n), IV{});
  out.ib = sel(ok_i, clamp_int(count(r_hi) + 2, 0, n), IV{});
  out.u0 = u0;
  out.e0 = e0;
  out.a = sigma * s.a;
  out.b = sigma * s.b0 + tau - out.margin;
}

#undef ALARA_LANE

inline Setup setup(const Geometry& g, double c, double sn, bool xd, int k0, int k1, int n_other) {
  const bool curved = g.kind == FAN_CURVED;
  const double a = g.src_det / g.ds;
  const double dpx = xd ? 0.0 : g.dx, dpy = xd ? g.dy : 0.0;
  return Setup{xd,   curved, curved && a * avx2::kAtanPolyError < 0.25,
               g.x0, g.y0,   g.dx, g.dy, c, sn, g.src_radius, dpx * c + dpy * sn, -dpx * sn + dpy * c,
               a,    -g.s0 / g.ds, k0, k1, n_other};
}

inline FanPlane pack(const Setup& s, bool ok, bool rising, int ia, int ib, double u0, double e0, double a, double b,
                     double margin, bool newton) {
  FanPlane fp{};
  fp.ok = ok;
  fp.rising = rising;
  fp.ia = ia;
  fp.ib = ib;
  fp.margin = margin;
  fp.map = avx2::FanLaneMap{static_cast<float>(u0), static_cast<float>(s.du), static_cast<float>(e0),
                            static_cast<float>(s.de), static_cast<float>(a), static_cast<float>(b),
                            s.curved, s.poly, newton};
  return fp;
}

}  // namespace fan_plane_detail

// The lane map of one plane of one segment (bins [k0, k1)) of the view (c, sn).
inline FanPlane fan_plane(const Geometry& g, double c, double sn, bool xd, double plane, int k0, int k1,
                          int n_other) {
  using namespace fan_plane_detail;
  const Setup s = setup(g, c, sn, xd, k0, k1, n_other);
  Lanes<double, bool, int> l;
  lane_map(s, plane, l);
  return pack(s, l.ok, l.rising, l.ia, l.ib, l.u0, l.e0, l.a, l.b, l.margin, l.newton);
}

#ifdef ALARA_HAVE_AVX512_PATH
// fan_plane for the planes p0 .. p0 + np - 1 into out[0 .. np), eight per step on a flat
// detector (the same formulas in 8 double lanes).
ALARA_AVX512 inline void fan_planes_avx512(const Geometry& g, double c, double sn, bool xd, int p0, int np, int k0,
                                           int k1, int n_other, FanPlane* out) {
  using namespace fan_plane_detail;
  const Setup s = setup(g, c, sn, xd, k0, k1, n_other);
  if (s.curved) {
    for (int q = 0; q < np; ++q) out[q] = fan_plane(g, c, sn, xd, static_cast<double>(p0 + q), k0, k1, n_other);
    return;
  }
  for (int q0 = 0; q0 < np; q0 += 8) {
    const f64x8 plane = f64x8{0, 1, 2, 3, 4, 5, 6, 7} + static_cast<double>(p0 + q0);
    Lanes<f64x8, m64x8, i32x8> l;
    lane_map(s, plane, l);
    for (int q = q0; q < std::min(np, q0 + 8); ++q) {
      const int e = q - q0;
      out[q] = pack(s, l.ok[e] != 0, l.rising[e] != 0, l.ia[e], l.ib[e], l.u0[e], l.e0[e], l.a[e], l.b[e],
                    l.margin[e], l.newton[e] != 0);
    }
  }
}
#endif

#endif  // ALARA_HAVE_AVX2_PATH

}  // namespace alara

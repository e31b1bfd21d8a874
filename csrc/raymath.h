// Ray and pixel math of alara's discretisation, shared by the CPU and CUDA kernels.
//
// This is a line-by-line transcription of alara/ops/raymath.py (Joseph's method, the
// discretisation of ASTRA's `linear` projector and of ODL's LoDoPaB ray transform).  Every
// function is HOST_DEVICE and works in double; the kernels cast to the accumulation type
// only after the per-ray parameters are known.
//
// Conventions (see alara/geometry.py): image x[i, j] samples the pixel centre
// (x0 + (i + 1/2) dx, y0 + (j + 1/2) dy); at angle theta rays travel along
// e = (-sin, cos), the detector axis is u = (cos, sin); bin k sits at s = s0 + k ds.
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define HOST_DEVICE __host__ __device__
#else
#define HOST_DEVICE
#endif

namespace alara {

// min/max without the NaN rules of fmin/fmax, which keep libm calls in host loops.
HOST_DEVICE inline double dmin(double a, double b) { return a < b ? a : b; }
HOST_DEVICE inline double dmax(double a, double b) { return a > b ? a : b; }

enum Kind : int { PARALLEL = 0, FAN_FLAT = 1, FAN_CURVED = 2 };

// The primitive scalars of a geometry (GeometryParams in Python).
struct Geometry {
  int kind;
  int n0, n1;
  double x0, y0, dx, dy;
  int n_bins;
  double s0, ds;
  double src_radius, src_det;
};

struct Ray {
  double ax, ay;  // a point on the ray
  double vx, vy;  // unit direction
};

// Joseph parameters: an x-dominant ray (xdom) visits every plane i (array axis 0) and
// interpolates along axis 1 at the fractional index alpha + beta * i; a y-dominant ray
// swaps the axes.  weight is the ray length between two planes.
struct Joseph {
  bool xdom;
  double alpha, beta, weight;
};

// Origin and unit direction of the ray of detector coordinate s at the view (c, s_).
HOST_DEVICE inline Ray make_ray(const Geometry& g, double c, double sn, double s) {
  const double ex = -sn, ey = c;  // ray direction at the centre of the detector
  const double ux = c, uy = sn;   // detector axis
  Ray r;
  if (g.kind == PARALLEL) {
    r.ax = s * ux;
    r.ay = s * uy;
    r.vx = ex;
    r.vy = ey;
    return r;
  }
  r.ax = -g.src_radius * ex;
  r.ay = -g.src_radius * ey;
  if (g.kind == FAN_FLAT) {
    double vx = g.src_det * ex + s * ux, vy = g.src_det * ey + s * uy;
    const double norm = sqrt(vx * vx + vy * vy);
    r.vx = vx / norm;
    r.vy = vy / norm;
  } else {
    const double gam = s / g.src_det;
    const double cg = cos(gam), sg = sin(gam);
    r.vx = cg * ex + sg * ux;
    r.vy = cg * ey + sg * uy;
  }
  return r;
}

HOST_DEVICE inline Joseph joseph(const Geometry& g, const Ray& r) {
  Joseph j;
  j.xdom = fabs(r.vx) * g.dy >= fabs(r.vy) * g.dx;
  const double px0 = g.x0 + 0.5 * g.dx, py0 = g.y0 + 0.5 * g.dy;
  if (j.xdom) {
    const double tx = r.vy / r.vx;  // slope dy/dx
    j.alpha = (r.ay + (px0 - r.ax) * tx - g.y0) / g.dy - 0.5;
    j.beta = (g.dx / g.dy) * tx;
    j.weight = g.dx / fabs(r.vx);
  } else {
    const double ty = r.vx / r.vy;
    j.alpha = (r.ax + (py0 - r.ay) * ty - g.x0) / g.dx - 0.5;
    j.beta = (g.dy / g.dx) * ty;
    j.weight = g.dy / fabs(r.vy);
  }
  return j;
}

// Joseph parameters of bin k at the view with cosine c and sine sn.
HOST_DEVICE inline Joseph ray_params(const Geometry& g, double c, double sn, int k) {
  return joseph(g, make_ray(g, c, sn, g.s0 + g.ds * k));
}

// Per-view constants of a parallel beam: every ray of a view has the same direction,
// hence the same dominance, slope and weight, and alpha is affine in the bin index.
struct ViewParams {
  bool xdom;
  double alpha0, dalpha, beta, weight;
};

HOST_DEVICE inline ViewParams parallel_view(const Geometry& g, double c, double sn) {
  const Joseph j0 = ray_params(g, c, sn, 0);
  ViewParams vp;
  vp.xdom = j0.xdom;
  vp.alpha0 = j0.alpha;
  vp.beta = j0.beta;
  vp.weight = j0.weight;
  // d(alpha)/d(bin): joseph() differentiated along the detector axis u = (c, sn).
  if (j0.xdom) {
    vp.dalpha = g.ds * (sn - c * (c / -sn)) / g.dy;
  } else {
    vp.dalpha = g.ds * (c - sn * (-sn / c)) / g.dx;
  }
  return vp;
}

// The Joseph parameters of bin k that every kernel uses: for a parallel beam from the
// view's affine form (equal to ray_params() to rounding), else ray_params().
HOST_DEVICE inline Joseph kernel_ray(const Geometry& g, const ViewParams& vp, double c,
                                     double sn, int k) {
  if (g.kind == PARALLEL) {
    Joseph j;
    j.xdom = vp.xdom;
    j.alpha = vp.alpha0 + k * vp.dalpha;
    j.beta = vp.beta;
    j.weight = vp.weight;
    return j;
  }
  return ray_params(g, c, sn, k);
}

// Detector coordinate of the ray through the point (px, py).
HOST_DEVICE inline double detector_coordinate(const Geometry& g, double c, double sn,
                                              double px, double py) {
  const double along_u = px * c + py * sn;
  if (g.kind == PARALLEL) return along_u;
  const double along_e = g.src_radius + (-px * sn + py * c);
  if (g.kind == FAN_FLAT) return g.src_det * along_u / along_e;
  return g.src_det * atan2(along_u, along_e);
}

// Fractional bin range [k_lo, k_hi] of the rays that can touch the pixel centred at
// (px, py): the detector footprint of its "diamond" (the two segments of length 2 dx and
// 2 dy through the centre along which Joseph's hat weights are nonzero).
HOST_DEVICE inline void diamond_bin_range(const Geometry& g, double c, double sn, double px,
                                          double py, double& k_lo, double& k_hi) {
  if (g.kind == FAN_CURVED) {
    // s = D atan2(u, e) with e > 0 (the source lies outside the grid) is increasing in
    // u / e: two atan instead of four atan2 (equal to raymath.py up to rounding).
    const double u = px * c + py * sn, e = g.src_radius + (-px * sn + py * c);
    const double ux = g.dx * c, ex = -g.dx * sn, uy = g.dy * sn, ey = g.dy * c;
    const double ra = (u + ux) / (e + ex), rb = (u - ux) / (e - ex);
    const double rd = (u + uy) / (e + ey), re = (u - uy) / (e - ey);
    const double lo = g.src_det * atan(dmin(dmin(ra, rb), dmin(rd, re)));
    const double hi = g.src_det * atan(dmax(dmax(ra, rb), dmax(rd, re)));
    k_lo = (lo - g.s0) / g.ds;
    k_hi = (hi - g.s0) / g.ds;
    return;
  }
  const double a = detector_coordinate(g, c, sn, px + g.dx, py);
  const double b = detector_coordinate(g, c, sn, px - g.dx, py);
  const double d = detector_coordinate(g, c, sn, px, py + g.dy);
  const double e = detector_coordinate(g, c, sn, px, py - g.dy);
  const double lo = dmin(dmin(a, b), dmin(d, e));
  const double hi = dmax(dmax(a, b), dmax(d, e));
  k_lo = (lo - g.s0) / g.ds;
  k_hi = (hi - g.s0) / g.ds;
}

// Fan-beam FBP distance weight R / (R + p.e) of the point (px, py) at a view.
HOST_DEVICE inline double distance_weight(const Geometry& g, double c, double sn, double px,
                                          double py) {
  return g.src_radius / (g.src_radius + (-px * sn + py * c));
}

// Planes [first, last] (inclusive, clamped to [0, n_planes - 1]) on which a ray with
// fractional position alpha + beta * p can touch a pixel, i.e. -1 < position < n_other.
// The range is widened by one plane on each side against rounding; the kernels pad the
// interpolated axis with two zero pixels on each side so that widened planes read zeros.
HOST_DEVICE inline void plane_range(double alpha, double beta, int n_planes, int n_other,
                                    int& first, int& last) {
  double lo, hi;
  if (fabs(beta) < 1e-12) {
    if (alpha > -1.0 && alpha < n_other) {
      first = 0;
      last = n_planes - 1;
    } else {
      first = 0;
      last = -1;
    }
    return;
  }
  const double t0 = (-1.0 - alpha) / beta, t1 = (n_other - alpha) / beta;
  lo = dmin(t0, t1);
  hi = dmax(t0, t1);
  lo = dmin(dmax(floor(lo), 0.0), static_cast<double>(n_planes));
  hi = dmax(dmin(ceil(hi), n_planes - 1.0), -1.0);
  first = static_cast<int>(lo);
  last = hi < lo ? first - 1 : static_cast<int>(hi);
}

// A line alpha + beta * p evaluated in float at integer p, 0 <= p < 2^11 (the kernels'
// inner loops run in float: double is 1/32 to 1/64 of the float rate on most GPUs), to
// float rounding of the fractional part: alpha = a_int + a_frac, and beta = b_hi + b_lo
// with b_hi of 13 significant bits, so that b_hi * p is exact in float and only small
// numbers are rounded (|b_lo * p| <= |beta| / 4).
struct FloatLine {
  int a_int;
  float a_frac, b_hi, b_lo;
};

constexpr int kFloatLinePlanes = 2048;

HOST_DEVICE inline FloatLine float_line(double alpha, double beta) {
  FloatLine l;
  const double fa = floor(alpha);
  l.a_int = static_cast<int>(fa);
  l.a_frac = static_cast<float>(alpha - fa);
  int e = 0;
  frexp(beta, &e);  // |beta| < 2^e
  const double scale = ldexp(1.0, 12 - e);
  const double hi = rint(beta * scale) / scale;  // at most 13 significant bits
  l.b_hi = static_cast<float>(hi);
  l.b_lo = static_cast<float>(beta - hi);
  return l;
}

// alpha + beta * p = q + f with 0 <= f < 1 (f to float rounding).
HOST_DEVICE inline void float_line_at(const FloatLine& l, int p, int& q, float& f) {
  const float t = l.b_hi * static_cast<float>(p);  // exact: 13 bits times 11 bits
  const float ti = floorf(t);
  const float s = l.a_frac + (t - ti) + l.b_lo * static_cast<float>(p);
  const float si = floorf(s);
  q = l.a_int + static_cast<int>(ti) + static_cast<int>(si);
  f = s - si;
}

}  // namespace alara

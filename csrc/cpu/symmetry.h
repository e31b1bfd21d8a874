// Symmetries of a fan-beam geometry that the CPU kernels exploit.
//
// On a square grid centred on the rotation axis, the eight symmetries of the square (the
// dihedral group D4: rotations by m pi/2, each optionally after the reflection y -> -y)
// map the grid onto itself, and they map the rays of a view onto the rays of another view:
//   rotation by m pi/2:      (theta, s) -> (theta + m pi/2, s)
//   reflection y -> -y:      (theta, s) -> (pi - theta, -s)
// (alara's conventions: source at -R e(theta), e = (-sin, cos), detector axis (cos, sin)).
// Joseph's discretisation is equivariant under them (square pixels: a rotation by pi/2
// swaps the x- and y-dominant families, a reflection mirrors the interpolation), so where
// the view angles and the detector are symmetric too, the system matrix satisfies
//   A[h(v), k_h(k); h(p)] = A[v, k; p]
// and one view of every orbit {h(v)} stands for all of them: the other views' sinogram
// rows become extra channels of that view (backprojection), or the image's transforms
// become extra channels (forward projection).  The channels-last kernels then do per
// (view, plane) set-up once for 8 views, which is what makes batch 1 as cheap per image as
// batch 8 (issue 11).
//
// A view whose orbit is smaller than the group (it lies on a mirror axis) or lacks a
// member is left to the regular per-view path, so the result is the per-view operator to
// rounding of the ray positions (~1e-13 pixels).  Rays at 45 degrees need no care: the
// family rule |vx| dy >= |vy| dx may break their tie differently in a view and its image,
// but on square pixels both families give such a ray the same weights (tests/ops/
// test_symmetry.py puts exact 45 degree rays into orbits).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../raymath.h"

namespace alara {

// A symmetry h = R(m pi/2) o F^reflect of the square (F: y -> -y, applied first).
struct SquareSymmetry {
  int m;
  bool reflect;
};

// The views of a geometry grouped by the symmetries it has.
struct ViewOrbits {
  std::vector<SquareSymmetry> group;  // the symmetries used (the first is the identity)
  std::vector<int64_t> rep;           // one view per orbit
  std::vector<int64_t> member;        // [orbit][element]: the view h(rep)
  std::vector<int64_t> rest;          // views outside every orbit (regular path)
  bool useful() const { return group.size() > 1 && !rep.empty(); }
};

// Whether the symmetric path is enabled (ALARA_SYMMETRY=0 turns it off, e.g. to time or
// test the per-view kernels on a symmetric geometry).
inline bool symmetry_enabled() {
  const char* v = std::getenv("ALARA_SYMMETRY");
  return v == nullptr || !(std::strcmp(v, "0") == 0 || std::strcmp(v, "false") == 0 ||
                           std::strcmp(v, "no") == 0);
}

// Angles match to this (radians): ray positions then agree to < 1e-7 pixels on any grid
// alara handles.
constexpr double kSymmetryAngleTol = 1e-10;

namespace symmetry_detail {

constexpr double kTwoPi = 6.283185307179586476925286766559;

inline double wrap(double a) {
  a = std::fmod(a, kTwoPi);
  return a < 0 ? a + kTwoPi : a;
}

// The image of view angle theta under h.
inline double map_angle(const SquareSymmetry& h, double theta) {
  const double quarter = 1.5707963267948966192313216916398;
  return wrap((h.reflect ? 3.1415926535897932384626433832795 - theta : theta) + h.m * quarter);
}

// Index of the view whose angle equals `a` (mod 2 pi) within kSymmetryAngleTol, or -1;
// `sorted` holds (wrapped angle, view) in increasing angle.
inline int64_t find_view(const std::vector<std::pair<double, int64_t>>& sorted, double a) {
  auto it = std::lower_bound(sorted.begin(), sorted.end(), std::make_pair(a - kSymmetryAngleTol, int64_t{-1}));
  for (int pass = 0; pass < 2; ++pass) {
    if (it != sorted.end() && std::fabs(it->first - a) <= kSymmetryAngleTol) return it->second;
    // wrap-around near 0 and 2 pi
    a = a < 1.0 ? a + kTwoPi : a - kTwoPi;
    it = std::lower_bound(sorted.begin(), sorted.end(), std::make_pair(a - kSymmetryAngleTol, int64_t{-1}));
  }
  return -1;
}

}  // namespace symmetry_detail

// The orbits of the views of a fan-beam geometry under the symmetries of the square that
// map it onto itself (empty group: none apply, or it is not a fan beam).
inline ViewOrbits find_view_orbits(const Geometry& g, const std::vector<double>& angles) {
  using namespace symmetry_detail;
  ViewOrbits out;
  const int64_t V = static_cast<int64_t>(angles.size());
  if (g.kind == PARALLEL || V < 2) return out;
  const double tol = 1e-9;
  const bool square = g.n0 == g.n1 && std::fabs(g.dx - g.dy) <= tol * g.dx &&
                      std::fabs(g.x0 + 0.5 * g.n0 * g.dx) <= tol * g.dx &&
                      std::fabs(g.y0 + 0.5 * g.n1 * g.dy) <= tol * g.dy;
  if (!square) return out;
  const int K = g.n_bins;
  // reflections reverse the bins: s -> -s is bin k -> K - 1 - k on a centred detector
  const bool centred = std::fabs(2.0 * g.s0 / g.ds + (K - 1)) <= 1e-6;
  std::vector<std::pair<double, int64_t>> sorted(V);
  for (int64_t v = 0; v < V; ++v) sorted[v] = {wrap(angles[v]), v};
  std::sort(sorted.begin(), sorted.end());
  // the symmetries that map most view angles onto view angles (views whose images are
  // missing stay on the regular path: orbits are formed only where all images exist)
  for (int r = 0; r < 2; ++r) {
    if (r == 1 && !centred) break;
    for (int m = 0; m < 4; ++m) {
      const SquareSymmetry h{m, r == 1};
      int64_t hits = 0;
      for (int64_t v = 0; v < V; ++v) hits += find_view(sorted, map_angle(h, angles[v])) >= 0;
      if (2 * hits >= V) out.group.push_back(h);
    }
  }
  const size_t n = out.group.size();
  if (n < 2) return out;
  std::vector<uint8_t> used(V, 0);
  std::vector<int64_t> members(n);
  for (int64_t v = 0; v < V; ++v) {
    if (used[v]) continue;
    bool ok = true;
    for (size_t e = 0; e < n && ok; ++e) {
      members[e] = find_view(sorted, map_angle(out.group[e], angles[v]));
      // (the identity must find v itself: a repeated angle finds the first copy)
      ok = members[e] >= 0 && !used[members[e]] && (e > 0 || members[e] == v);
      for (size_t f = 0; f < e && ok; ++f) ok = members[f] != members[e];
    }
    if (!ok) {
      out.rest.push_back(v);
      used[v] = 1;
      continue;
    }
    out.rep.push_back(v);
    for (size_t e = 0; e < n; ++e) {
      out.member.push_back(members[e]);
      used[members[e]] = 1;
    }
  }
  return out;
}

}  // namespace alara

// Symmetries of a projection geometry that the CPU kernels exploit.
//
// On a square grid centred on the rotation axis, the eight symmetries of the square (the
// dihedral group D4: rotations by m pi/2, each optionally after the reflection y -> -y)
// map the grid onto itself, and they map the rays of a view onto the rays of another view:
//   rotation by m pi/2:      (theta, s) -> (theta + m pi/2, s)
//   reflection y -> -y:      (theta, s) -> (pi - theta, -s)
// (alara's conventions: rays along e = (-sin, cos), detector axis (cos, sin), fan source
// at -R e(theta)).  Joseph's discretisation is equivariant under them (square pixels: a
// rotation by pi/2 swaps the x- and y-dominant families, a reflection mirrors the
// interpolation), so where the view angles and the detector are symmetric too, the system
// matrix satisfies
//   A[h(v), k_h(k); h(p)] = A[v, k; p]
// and one view of every orbit {h(v)} stands for all of them: the other views' sinogram
// rows become extra channels of that view (backprojection), or the image's transforms
// become extra channels (forward projection).  The channels-last kernels then do their per
// (view, plane) set-up once for 8 views, which makes batch 1 as cheap per image as a batch
// of 8 (issue 11).  A parallel beam's views live on [0, pi): the half turn maps each view
// onto itself with s -> -s, so an orbit has 4 views, and the view and its reversed bins
// each take half of the image's rows (projection_cpu.cpp, backproject_symmetric).
//
// alara/ops/symmetry.py is the pure-torch reference of the fan-beam part.
//
// A view whose orbit is smaller than the group (it lies on a mirror axis) or lacks a
// member is left to the regular per-view path, so the result is the per-view operator to
// rounding of the ray positions (~1e-13 pixels).  Rays at 45 degrees need no care: the
// family rule |vx| dy >= |vy| dx may break their tie differently in a view and its image,
// but on square pixels both families give such a ray the same weights (tests/ops/
// test_symmetry.py puts exact 45 degree rays into orbits).
#pragma once

#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
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
  std::vector<uint8_t> reversed;      // [orbit][element]: whose bins run reversed
  std::vector<int64_t> rest;          // views outside every orbit (regular path)
  // Parallel beams: the half turn maps every view onto itself with its bins reversed
  // ((theta + pi, s) is the line (theta, -s)), so `group` holds one symmetry of each pair
  // {h, h o R(pi)} and the kernels split the image between the two (see
  // backproject_symmetric).
  bool half_turn = false;
  bool useful() const { return group.size() > 1 && !rep.empty(); }
};

// ALARA_SYMMETRY: 0 (off, false, no) runs every view on its own, e.g. to time or test the
// per-view kernels on a symmetric geometry; force takes the symmetric path wherever the
// geometry has it, also where it does not pay (tests); unset, 1, auto (on, true, yes):
// where it pays.  Any other value is an error, not a silent default.
enum class SymmetryMode { kOff, kAuto, kForce };

inline SymmetryMode symmetry_mode() {
  const char* raw = std::getenv("ALARA_SYMMETRY");
  if (raw == nullptr) return SymmetryMode::kAuto;
  std::string v(raw);
  for (char& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  v.erase(0, v.find_first_not_of(" \t"));
  v.erase(v.find_last_not_of(" \t") + 1);
  if (v == "0" || v == "off" || v == "false" || v == "no") return SymmetryMode::kOff;
  if (v.empty() || v == "1" || v == "auto" || v == "on" || v == "true" || v == "yes")
    return SymmetryMode::kAuto;
  TORCH_CHECK(v == "force", "alara: ALARA_SYMMETRY must be 0 (off), 1 (auto, the default) or ",
              "force, got '", raw, "'");
  return SymmetryMode::kForce;
}

inline bool symmetry_enabled() { return symmetry_mode() != SymmetryMode::kOff; }

// Angles match to this (radians), grids and detectors are centred to this relative error:
// float64 angles of one intent (k 2 pi / V) differ by ~1e-15, and a position error of
// 1e-12 stays below float64 comparisons of the operators (1e-10).
constexpr double kSymmetryAngleTol = 1e-12;

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

// Index of the view whose angle equals `a` modulo `period` (2 pi, or pi for parallel
// beams) within kSymmetryAngleTol, or -1; `sorted` holds (angle mod period, view) in
// increasing angle.
inline int64_t find_view(const std::vector<std::pair<double, int64_t>>& sorted, double a,
                         double period) {
  a = std::fmod(a, period);
  for (int pass = 0; pass < 2; ++pass) {
    auto it = std::lower_bound(sorted.begin(), sorted.end(), std::make_pair(a - kSymmetryAngleTol, int64_t{-1}));
    if (it != sorted.end() && std::fabs(it->first - a) <= kSymmetryAngleTol) return it->second;
    a = a < 1.0 ? a + period : a - period;  // wrap-around near 0 and the period
  }
  return -1;
}

}  // namespace symmetry_detail

// The orbits of the views of a geometry under the symmetries of the square that map it
// onto itself (an empty group where none apply).
inline ViewOrbits find_view_orbits(const Geometry& g, const std::vector<double>& angles) {
  using namespace symmetry_detail;
  ViewOrbits out;
  const int64_t V = static_cast<int64_t>(angles.size());
  if (V < 2) return out;
  for (double a : angles)  // (NaN would break the sort below; such views stay per view)
    if (!std::isfinite(a)) return out;
  const double tol = 1e-12;
  const bool square = g.n0 == g.n1 && std::fabs(g.dx - g.dy) <= tol * g.dx &&
                      std::fabs(g.x0 + 0.5 * g.n0 * g.dx) <= tol * g.dx &&
                      std::fabs(g.y0 + 0.5 * g.n1 * g.dy) <= tol * g.dy;
  if (!square) return out;
  const int K = g.n_bins;
  // s -> -s is bin k -> K - 1 - k on a centred detector (reflections; parallel beams'
  // half turn)
  const bool centred = std::fabs(2.0 * g.s0 / g.ds + (K - 1)) <= 1e-12 * K;
  out.half_turn = g.kind == PARALLEL;
  if (out.half_turn && !centred) return out;
  const double period = out.half_turn ? kTwoPi / 2 : kTwoPi;
  std::vector<std::pair<double, int64_t>> sorted(V);
  for (int64_t v = 0; v < V; ++v) sorted[v] = {wrap(angles[v]), v};
  if (out.half_turn)
    for (auto& e : sorted) e.first = std::fmod(e.first, period);
  std::sort(sorted.begin(), sorted.end());
  // The symmetries that map most view angles onto view angles (views whose images are
  // missing stay on the regular path: orbits are formed only where all images exist);
  // with the half turn, rotations by 0 and pi/2 stand for all four.
  for (int r = 0; r < 2; ++r) {
    if (r == 1 && !centred) break;
    for (int m = 0; m < (out.half_turn ? 2 : 4); ++m) {
      const SquareSymmetry h{m, r == 1};
      int64_t hits = 0;
      for (int64_t v = 0; v < V; ++v) hits += find_view(sorted, map_angle(h, angles[v]), period) >= 0;
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
      members[e] = find_view(sorted, map_angle(out.group[e], angles[v]), period);
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
      const SquareSymmetry& h = out.group[e];
      // a parallel view found half a turn away from h(theta) sees the line with s -> -s
      const double gap = wrap(map_angle(h, angles[v]) - angles[members[e]]);
      const bool turned = out.half_turn && std::fabs(gap - period) < 1.0;
      out.member.push_back(members[e]);
      out.reversed.push_back(static_cast<uint8_t>(h.reflect != turned));
      used[members[e]] = 1;
    }
  }
  return out;
}

}  // namespace alara

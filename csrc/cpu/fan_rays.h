// The per-ray tables of the fan-beam backprojection: each ray's Joseph line and weight, its
// family and run (FanSegment), and the AVX-512 path's split lines.  They depend on the
// geometry alone, so they are built once and kept for the next calls with the same
// geometry (a training loop's, an iterative reconstruction's, a benchmark's): building
// them cost about 8 % of a batch-1 call (fan-short, 720 views of 513 bins), and their
// ~12 MB of fresh pages as much again in page faults.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "../raymath.h"
#include "parallel.h"

namespace alara {

// A run of consecutive bins of one view whose rays are all x- or all y-dominant and point
// the same way along the family's axis.
struct FanSegment {
  int64_t view;
  int k0, k1;          // bins [k0, k1)
  bool split = false;  // its rays have split lines (avx512::SplitLines)
};

// Fixed-point scale of the AVX2 / AVX-512 lanes' positions: (n_other + 8) 2^S <= 2^29.
inline int fan_fixed_shift(int n_other) {
  int S = 29;
  while (S > 0 && (static_cast<int64_t>(n_other) + 8) << S > (int64_t{1} << 29)) --S;
  return std::min(S, 23);
}

struct FanRays {
  std::vector<double> alpha, beta, weight;  // per ray (view-major): Joseph line and weight
  std::vector<int32_t> reversed;            // where each ray sits in its segment reversed
  std::vector<FanSegment> segments[2];      // per family, in view order
  // Split lines (with_split only): each ray's line alpha + beta p times 2^S as A + B p,
  // A = ai + af and B = bi + bf, integers and float remainders (see avx512::SplitLines);
  // padded by 16 (the tables' masked loads stay inside).
  std::vector<int32_t> split_ai, split_bi;
  std::vector<float> split_af, split_bf;

  size_t bytes() const {
    return alpha.size() * 3 * sizeof(double) + reversed.size() * sizeof(int32_t) +
           split_ai.size() * 2 * sizeof(int32_t) + split_af.size() * 2 * sizeof(float);
  }
};

namespace fan_rays_detail {

// Each ray's family and the sign of its direction along the family's axis: 2 * (y-dominant)
// + (negative).  Rays of one code and view lie in a pencil that crosses every plane in bin
// order, so their positions on a plane are monotone.  A run of one family can hold both
// signs where the bins are coarse enough to skip the other family's wedge (very flat
// pixels): positions then fold back.
inline FanRays build(const Geometry& g, const std::vector<double>& cs, const std::vector<double>& sn,
                     bool with_split) {
  const int64_t n_views = static_cast<int64_t>(cs.size());
  const int K = g.n_bins;
  const int64_t n = n_views * K;
  FanRays t;
  t.alpha.resize(n), t.beta.resize(n), t.weight.resize(n), t.reversed.resize(n);
  std::vector<uint8_t> code(n), fits(with_split ? n : 0);
  if (with_split) {
    t.split_ai.assign(n + 16, 0), t.split_bi.assign(n + 16, 0);
    t.split_af.assign(n + 16, 0.f), t.split_bf.assign(n + 16, 0.f);
  }
  // The split holds where every ray of a segment stays within +-2^30 units on every plane,
  // so the 32-bit sums cannot overflow; other segments keep the double tables.
  const double lim = static_cast<double>(1 << 30);
  const double scale[2] = {static_cast<double>(1 << fan_fixed_shift(g.n1)),
                           static_cast<double>(1 << fan_fixed_shift(g.n0))};
  for_each_chunk(n, 4096, [&](int64_t r0, int64_t r1) {
    // (the view and bin stepped along, not divided out per ray: a 64-bit division cost
    // about a third of this loop)
    int64_t v = r0 / K;
    int k = static_cast<int>(r0 - v * K);
    for (int64_t r = r0; r < r1; ++r, ++k) {
      if (k == K) k = 0, ++v;
      const Ray ray = make_ray(g, cs[v], sn[v], g.s0 + g.ds * k);
      const Joseph j = joseph(g, ray);
      t.alpha[r] = j.alpha;
      t.beta[r] = j.beta;
      t.weight[r] = j.weight;
      code[r] = static_cast<uint8_t>((j.xdom ? 0 : 2) + ((j.xdom ? ray.vx : ray.vy) < 0 ? 1 : 0));
      if (!with_split) continue;
      const int n_planes = j.xdom ? g.n0 : g.n1;
      const double sc = scale[j.xdom ? 0 : 1];
      const double A = j.alpha * sc, B = j.beta * sc;
      if (!(std::fabs(A) <= lim && std::fabs(A + B * (n_planes - 1)) <= lim)) continue;
      const double ai = std::nearbyint(A), bi = std::nearbyint(B);
      t.split_ai[r] = static_cast<int32_t>(ai);
      t.split_bi[r] = static_cast<int32_t>(bi);
      t.split_af[r] = static_cast<float>(A - ai);
      t.split_bf[r] = static_cast<float>(B - bi);
      fits[r] = 1;
    }
  });
  for (int64_t v = 0; v < n_views; ++v) {
    int k0 = 0;
    for (int k = 1; k <= K; ++k) {
      if (k == K || code[v * K + k] != code[v * K + k0]) {
        const bool split = with_split && std::all_of(fits.begin() + v * K + k0, fits.begin() + v * K + k,
                                                     [](uint8_t f) { return f != 0; });
        t.segments[code[v * K + k0] >> 1].push_back(FanSegment{v, k0, k, split});
        for (int i = k0; i < k; ++i) t.reversed[v * K + i] = static_cast<int32_t>(k0 + k - 1 - i);
        k0 = k;
      }
    }
  }
  return t;
}

inline bool same_geometry(const Geometry& a, const Geometry& b) {
  return a.kind == b.kind && a.n0 == b.n0 && a.n1 == b.n1 && a.x0 == b.x0 && a.y0 == b.y0 && a.dx == b.dx &&
         a.dy == b.dy && a.n_bins == b.n_bins && a.s0 == b.s0 && a.ds == b.ds && a.src_radius == b.src_radius &&
         a.src_det == b.src_det;
}

struct Entry {
  Geometry g;
  std::vector<double> cs, sn;
  bool with_split;
  std::shared_ptr<const FanRays> rays;
};

// The most recently used geometries last; at most kEntries of them and kBytes in all.
constexpr size_t kEntries = 4;
constexpr size_t kBytes = size_t{256} << 20;
inline std::mutex cache_mutex;
inline std::vector<Entry> cache;

}  // namespace fan_rays_detail

// The tables of (g, the views' cosines and sines), built or found in the cache; with_split:
// with the split lines.
inline std::shared_ptr<const FanRays> fan_rays(const Geometry& g, const std::vector<double>& cs,
                                               const std::vector<double>& sn, bool with_split) {
  using namespace fan_rays_detail;
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    for (size_t i = 0; i < cache.size(); ++i) {
      Entry& e = cache[i];
      // (tables with split lines also serve a call that does not need them)
      if ((e.with_split || !with_split) && same_geometry(e.g, g) && e.cs == cs && e.sn == sn) {
        std::rotate(cache.begin() + i, cache.begin() + i + 1, cache.end());  // now the most recent
        return cache.back().rays;
      }
    }
  }
  auto rays = std::make_shared<const FanRays>(build(g, cs, sn, with_split));
  if (rays->bytes() <= kBytes) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    cache.push_back(Entry{g, cs, sn, with_split, rays});
    size_t total = 0;
    for (const Entry& e : cache) total += e.rays->bytes();
    while (cache.size() > kEntries || total > kBytes) {
      total -= cache.front().rays->bytes();
      cache.erase(cache.begin());
    }
  }
  return rays;
}

}  // namespace alara

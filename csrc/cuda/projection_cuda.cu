// CUDA kernels of alara::project and alara::backproject (Joseph's method).
//
// Both ops first build a table of the Joseph parameters of every (view, bin) ray in
// double (one thread per ray, the HOST_DEVICE functions of raymath.h).  Forward
// projection is ray-driven: one thread per (ray, channel), channels fastest, so a warp
// reads one pixel pair for up to 32 images of a batch (coalesced) or, for a single image,
// neighbouring pixels of neighbouring rays (L1 hits).  Backprojection is the pixel-driven
// gather: one thread per (pixel, channel) that loops over the views and the few bins whose
// rays touch the pixel; no atomics, deterministic.  Half / bfloat16 inputs accumulate in
// float, float in float, double in double.  Float kernels run their inner loops in float
// (FloatLine: positions to float rounding); double appears only in the per-view and
// per-ray tables, and in the distance-weighted (FBP) variants.  Everything runs on the current CUDA stream.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <type_traits>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../ops.h"

namespace alara {
namespace {

constexpr int kThreads = 256;

struct RayEntry {
  double alpha, beta, weight;
  int xdom;
  FloatLine line;  // alpha + beta * plane in float (inner loops of the float kernels)
};

// A parallel-beam view in float: L(plane, other, k) = line(plane) - other + step(k), the
// position error of bin k at a pixel (see the double path of backproject_kernel).
struct FloatView {
  FloatLine line, step;
};

inline int64_t blocks_for(int64_t n) { return (n + kThreads - 1) / kThreads; }

__global__ void view_table_kernel(Geometry g, const double* __restrict__ angles,
                                  int64_t n_views, double* __restrict__ cs,
                                  double* __restrict__ sn, ViewParams* __restrict__ views,
                                  FloatView* __restrict__ fviews) {
  const int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (v >= n_views) return;
  double s, c;
  sincos(angles[v], &s, &c);
  cs[v] = c;
  sn[v] = s;
  if (g.kind == PARALLEL) {
    const ViewParams vp = parallel_view(g, c, s);
    views[v] = vp;
    fviews[v] = FloatView{float_line(vp.alpha0, vp.beta), float_line(0.0, vp.dalpha)};
  }
}

__global__ void ray_table_kernel(Geometry g, const double* __restrict__ cs,
                                 const double* __restrict__ sn,
                                 const ViewParams* __restrict__ views, int64_t n_rays,
                                 RayEntry* __restrict__ table) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= n_rays) return;
  const int64_t v = r / g.n_bins;
  const int k = static_cast<int>(r - v * g.n_bins);
  const ViewParams vp = g.kind == PARALLEL ? views[v] : ViewParams{};
  const Joseph j = kernel_ray(g, vp, cs[v], sn[v], k);
  table[r] = RayEntry{j.alpha, j.beta, j.weight, j.xdom ? 1 : 0, float_line(j.alpha, j.beta)};
}

template <typename scalar_t, typename acc_t, bool DW>
__global__ void project_kernel(Geometry g, const double* __restrict__ cs,
                               const double* __restrict__ sn,
                               const RayEntry* __restrict__ table,
                               const scalar_t* __restrict__ xl,
                               const scalar_t* __restrict__ yl, int64_t bc, int64_t n_rays,
                               bool float_lines, scalar_t* __restrict__ out) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= n_rays * bc) return;
  const int64_t r = idx / bc, ch = idx - r * bc;
  const RayEntry e = table[r];
  const bool xdom = e.xdom != 0;
  const int n_planes = xdom ? g.n0 : g.n1, n_other = xdom ? g.n1 : g.n0;
  const int64_t stride = n_other + 2 * kPad;
  const scalar_t* img = (xdom ? xl : yl) + ch;
  int p0, p1;
  plane_range(e.alpha, e.beta, n_planes, n_other, p0, p1);
  acc_t acc = 0;
  if constexpr (!DW && std::is_same<acc_t, float>::value) {
    if (float_lines) {  // the plane loop in float (positions to float rounding)
      for (int p = p0; p <= p1; ++p) {
        int q;
        float f;
        float_line_at(e.line, p, q, f);
        const int64_t at = (p * stride + q + kPad) * bc;
        const float a = static_cast<float>(img[at]);
        const float b = static_cast<float>(img[at + bc]);
        acc += a + f * (b - a);
      }
      out[idx] = static_cast<scalar_t>(acc * static_cast<acc_t>(e.weight));
      return;
    }
  }
  double c = 0, s = 0, pd = 0, od = 0, pmin = 0, omin = 0;
  if (DW) {
    const int64_t v = r / g.n_bins;
    c = cs[v];
    s = sn[v];
    pd = xdom ? g.dx : g.dy;
    od = xdom ? g.dy : g.dx;
    pmin = xdom ? g.x0 : g.y0;
    omin = xdom ? g.y0 : g.x0;
  }
  for (int p = p0; p <= p1; ++p) {
    const double pos = e.alpha + e.beta * p;
    const double fl = floor(pos);
    const int q = static_cast<int>(fl);
    const acc_t f = static_cast<acc_t>(pos - fl);
    const int64_t at = (p * stride + q + kPad) * bc;
    const acc_t a = static_cast<acc_t>(img[at]);
    const acc_t b = static_cast<acc_t>(img[at + bc]);
    if (DW) {
      const double pc = pmin + (p + 0.5) * pd;
      const double oa = omin + (q + 0.5) * od, ob = oa + od;
      const double wa = xdom ? distance_weight(g, c, s, pc, oa) : distance_weight(g, c, s, oa, pc);
      const double wb = xdom ? distance_weight(g, c, s, pc, ob) : distance_weight(g, c, s, ob, pc);
      acc += (1 - f) * static_cast<acc_t>(wa) * a + f * static_cast<acc_t>(wb) * b;
    } else {
      acc += a + f * (b - a);
    }
  }
  out[idx] = static_cast<scalar_t>(acc * static_cast<acc_t>(e.weight));
}

// Fractional bin range [k_lo, k_hi] of the rays that can touch the pixel (px, py) of a
// fan beam, in float (diamond_bin_range of raymath.h: the detector coordinate of both
// detectors increases with u / e; the callers widen the range by a bin for rounding).
__device__ inline void diamond_bin_range_f(const Geometry& g, float c, float sn, float px,
                                           float py, float& k_lo, float& k_hi) {
  const float dx = static_cast<float>(g.dx), dy = static_cast<float>(g.dy);
  const float u = px * c + py * sn, e = static_cast<float>(g.src_radius) + (-px * sn + py * c);
  const float ux = dx * c, ex = -dx * sn, uy = dy * sn, ey = dy * c;
  const float ra = (u + ux) / (e + ex), rb = (u - ux) / (e - ex);
  const float rd = (u + uy) / (e + ey), re = (u - uy) / (e - ey);
  float lo = fminf(fminf(ra, rb), fminf(rd, re)), hi = fmaxf(fmaxf(ra, rb), fmaxf(rd, re));
  const float D = static_cast<float>(g.src_det);
  if (g.kind == FAN_CURVED) {
    lo = D * atanf(lo);
    hi = D * atanf(hi);
  } else {
    lo *= D;
    hi *= D;
  }
  const float s0 = static_cast<float>(g.s0), ds = static_cast<float>(g.ds);
  k_lo = (lo - s0) / ds;
  k_hi = (hi - s0) / ds;
}

// Backprojection of one pixel and channel, float throughout the view and tap loops: the
// per-view and per-ray lines (FloatLine) give every position error as an exact integer
// part plus a float fraction, so the weights equal the double ones to float rounding.
template <typename scalar_t>
__device__ float backproject_pixel_float(const Geometry& g, int64_t n_views,
                                         const double* __restrict__ cs,
                                         const double* __restrict__ sn,
                                         const ViewParams* __restrict__ views,
                                         const FloatView* __restrict__ fviews,
                                         const RayEntry* __restrict__ table,
                                         const scalar_t* __restrict__ y, int64_t bc, int i,
                                         int j) {
  const int K = g.n_bins;
  float acc = 0;
  if (g.kind == PARALLEL) {
    for (int64_t v = 0; v < n_views; ++v) {
      const scalar_t* yv = y + v * K * bc;
      const bool xdom = views[v].xdom;
      const FloatView fv = fviews[v];
      // error of bin k: L + k dalpha, L = line(plane) - other = L_int + L_frac
      int q;
      float f;
      float_line_at(fv.line, xdom ? i : j, q, f);
      const int L_int = q - (xdom ? j : i);
      const float da = static_cast<float>(views[v].dalpha);
      const float L = static_cast<float>(L_int) + f;
      const float ka = (-1.0f - L) / da, kb = (1.0f - L) / da;
      const int k_first = max(0, static_cast<int>(ceilf(fminf(ka, kb))) - 1);
      const int k_last = min(K - 1, static_cast<int>(floorf(fmaxf(ka, kb))) + 1);
      if (k_first > k_last) continue;
      int kq;
      float kf;
      float_line_at(fv.step, k_first, kq, kf);
      float err = static_cast<float>(L_int + kq) + (f + kf);
      float sum = 0;
      for (int k = k_first; k <= k_last; ++k, err += da)
        sum += fmaxf(0.0f, 1.0f - fabsf(err)) * static_cast<float>(yv[static_cast<int64_t>(k) * bc]);
      acc += static_cast<float>(views[v].weight) * sum;
    }
    return acc;
  }
  const float px = static_cast<float>(g.x0 + (i + 0.5) * g.dx);
  const float py = static_cast<float>(g.y0 + (j + 0.5) * g.dy);
  for (int64_t v = 0; v < n_views; ++v) {
    const scalar_t* yv = y + v * K * bc;
    float k_lo, k_hi;
    diamond_bin_range_f(g, static_cast<float>(cs[v]), static_cast<float>(sn[v]), px, py, k_lo, k_hi);
    const int k_first = max(0, static_cast<int>(ceilf(fmaxf(k_lo, -2.0f))) - 1);
    const int k_last = min(K - 1, static_cast<int>(floorf(fminf(k_hi, K + 1.0f))) + 1);
    const RayEntry* tv = table + v * K;
    float sum = 0;
    for (int k = k_first; k <= k_last; ++k) {
      const RayEntry& e = tv[k];
      int q;
      float f;
      float_line_at(e.line, e.xdom ? i : j, q, f);
      const float err = static_cast<float>(q - (e.xdom ? j : i)) + f;
      sum += static_cast<float>(e.weight) * fmaxf(0.0f, 1.0f - fabsf(err)) *
             static_cast<float>(yv[static_cast<int64_t>(k) * bc]);
    }
    acc += sum;
  }
  return acc;
}

template <typename scalar_t, typename acc_t>
__global__ void backproject_kernel(Geometry g, int64_t n_views, const double* __restrict__ cs,
                                   const double* __restrict__ sn,
                                   const ViewParams* __restrict__ views,
                                   const FloatView* __restrict__ fviews,
                                   const RayEntry* __restrict__ table,
                                   const scalar_t* __restrict__ y, int64_t bc, bool dw,
                                   bool float_lines, scalar_t* __restrict__ out) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t n_pix = static_cast<int64_t>(g.n0) * g.n1;
  if (idx >= n_pix * bc) return;
  const int64_t pix = idx / bc, ch = idx - pix * bc;
  const int i = static_cast<int>(pix / g.n1), j = static_cast<int>(pix - static_cast<int64_t>(i) * g.n1);
  const double px = g.x0 + (i + 0.5) * g.dx, py = g.y0 + (j + 0.5) * g.dy;
  const int K = g.n_bins;
  acc_t acc = 0;
  if constexpr (std::is_same<acc_t, float>::value) {
    if (float_lines && !dw) {
      out[idx] = static_cast<scalar_t>(
          backproject_pixel_float(g, n_views, cs, sn, views, fviews, table, y + ch, bc, i, j));
      return;
    }
  }
  for (int64_t v = 0; v < n_views; ++v) {
    const scalar_t* yv = y + v * K * bc + ch;
    if (g.kind == PARALLEL) {
      // Exact footprint: the bins with |L + k dalpha| < 1, L the error of bin 0.
      const ViewParams vp = views[v];
      const double L = vp.xdom ? vp.alpha0 + vp.beta * i - j : vp.alpha0 + vp.beta * j - i;
      const double ka = (-1.0 - L) / vp.dalpha, kb = (1.0 - L) / vp.dalpha;
      const int k_first = static_cast<int>(fmax(0.0, ceil(fmin(ka, kb))));
      const int k_last = static_cast<int>(fmin(K - 1.0, floor(fmax(ka, kb))));
      acc_t sum = 0;
      for (int k = k_first; k <= k_last; ++k) {
        const double err = L + k * vp.dalpha;
        const acc_t w = static_cast<acc_t>(fmax(0.0, 1.0 - fabs(err)));
        sum += w * static_cast<acc_t>(yv[static_cast<int64_t>(k) * bc]);
      }
      acc += static_cast<acc_t>(vp.weight) * sum;
    } else {
      const double c = cs[v], s = sn[v];
      double k_lo, k_hi;
      diamond_bin_range(g, c, s, px, py, k_lo, k_hi);
      const int k_first = static_cast<int>(fmax(0.0, ceil(k_lo)));
      const int k_last = static_cast<int>(fmin(K - 1.0, floor(k_hi)));
      const RayEntry* tv = table + v * K;
      acc_t sum = 0;
      for (int k = k_first; k <= k_last; ++k) {
        const RayEntry e = tv[k];
        const double err = e.xdom ? e.alpha + e.beta * i - j : e.alpha + e.beta * j - i;
        const acc_t w = static_cast<acc_t>(e.weight * fmax(0.0, 1.0 - fabs(err)));
        sum += w * static_cast<acc_t>(yv[static_cast<int64_t>(k) * bc]);
      }
      if (dw) sum *= static_cast<acc_t>(distance_weight(g, c, s, px, py));
      acc += sum;
    }
  }
  out[idx] = static_cast<scalar_t>(acc);
}

struct Tables {
  at::Tensor cs, sn, views, fviews, rays;
};

// Whether the planes, pixels and bins are few enough for FloatLine (exact b_hi * p).
bool float_lines_fit(const Geometry& g) {
  return g.n0 < kFloatLinePlanes && g.n1 < kFloatLinePlanes && g.n_bins < kFloatLinePlanes;
}

// cos/sin and (parallel beam) per-view parameters; with rays, the per-ray table too.
Tables make_tables(const Geometry& g, const at::Tensor& angles, bool rays) {
  const int64_t V = angles.size(0);
  auto dopt = angles.options().dtype(at::kDouble);
  auto bopt = angles.options().dtype(at::kByte);
  Tables t;
  t.cs = at::empty({V}, dopt);
  t.sn = at::empty({V}, dopt);
  t.views = at::empty({std::max<int64_t>(V, 1) * static_cast<int64_t>(sizeof(ViewParams))}, bopt);
  t.fviews = at::empty({std::max<int64_t>(V, 1) * static_cast<int64_t>(sizeof(FloatView))}, bopt);
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto a = angles.contiguous();
  view_table_kernel<<<blocks_for(V), kThreads, 0, stream>>>(
      g, a.data_ptr<double>(), V, t.cs.data_ptr<double>(), t.sn.data_ptr<double>(),
      reinterpret_cast<ViewParams*>(t.views.data_ptr()),
      reinterpret_cast<FloatView*>(t.fviews.data_ptr()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (rays) {
    const int64_t n_rays = V * g.n_bins;
    t.rays = at::empty({n_rays * static_cast<int64_t>(sizeof(RayEntry))}, bopt);
    ray_table_kernel<<<blocks_for(n_rays), kThreads, 0, stream>>>(
        g, t.cs.data_ptr<double>(), t.sn.data_ptr<double>(),
        reinterpret_cast<const ViewParams*>(t.views.data_ptr()), n_rays,
        reinterpret_cast<RayEntry*>(t.rays.data_ptr()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return t;
}

at::Tensor project_cuda(const at::Tensor& image, const at::Tensor& angles, int64_t kind,
                        int64_t n_bins, double x0, double y0, double dx, double dy, double s0,
                        double ds, double src_radius, double src_det, bool distance_weight) {
  check_call(image, "image", angles, kind, distance_weight);
  const c10::cuda::CUDAGuard guard(image.device());
  const int64_t B = image.size(0), C = image.size(1), n0 = image.size(2), n1 = image.size(3);
  const Geometry g = make_geometry(kind, n0, n1, x0, y0, dx, dy, n_bins, s0, ds, src_radius, src_det);
  const int64_t V = angles.size(0), bc = B * C, n_rays = V * n_bins;
  auto out = at::empty({V, n_bins, bc}, image.options());
  if (bc > 0) {
    const Tables t = make_tables(g, angles, true);
    auto layouts = plane_layouts(image);
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, image.scalar_type(),
                                    "alara_project_cuda", [&] {
      using acc_t = at::acc_type<scalar_t, true>;
      auto kernel = distance_weight ? project_kernel<scalar_t, acc_t, true>
                                    : project_kernel<scalar_t, acc_t, false>;
      kernel<<<blocks_for(n_rays * bc), kThreads, 0, stream>>>(
          g, t.cs.data_ptr<double>(), t.sn.data_ptr<double>(),
          reinterpret_cast<const RayEntry*>(t.rays.data_ptr()),
          layouts.first.data_ptr<scalar_t>(), layouts.second.data_ptr<scalar_t>(), bc, n_rays,
          float_lines_fit(g), out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return out.permute({2, 0, 1}).reshape({B, C, V, n_bins}).contiguous();
}

at::Tensor backproject_cuda(const at::Tensor& sino, const at::Tensor& angles, int64_t kind,
                            int64_t n0, int64_t n1, double x0, double y0, double dx,
                            double dy, double s0, double ds, double src_radius,
                            double src_det, bool distance_weight) {
  check_call(sino, "sinogram", angles, kind, distance_weight);
  TORCH_CHECK(sino.size(2) == angles.size(0), "alara: sinogram has ", sino.size(2),
              " views but ", angles.size(0), " angles were given");
  const c10::cuda::CUDAGuard guard(sino.device());
  const int64_t B = sino.size(0), C = sino.size(1), V = sino.size(2), K = sino.size(3);
  const Geometry g = make_geometry(kind, n0, n1, x0, y0, dx, dy, K, s0, ds, src_radius, src_det);
  const int64_t bc = B * C;
  auto out = at::empty({n0, n1, bc}, sino.options());
  if (bc > 0) {
    const Tables t = make_tables(g, angles, kind != PARALLEL);
    auto y = sino.reshape({bc, V, K}).permute({1, 2, 0}).contiguous();  // [V, K, bc]
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, sino.scalar_type(),
                                    "alara_backproject_cuda", [&] {
      using acc_t = at::acc_type<scalar_t, true>;
      backproject_kernel<scalar_t, acc_t><<<blocks_for(n0 * n1 * bc), kThreads, 0, stream>>>(
          g, V, t.cs.data_ptr<double>(), t.sn.data_ptr<double>(),
          reinterpret_cast<const ViewParams*>(t.views.data_ptr()),
          reinterpret_cast<const FloatView*>(t.fviews.data_ptr()),
          t.rays.defined() ? reinterpret_cast<const RayEntry*>(t.rays.data_ptr()) : nullptr,
          y.data_ptr<scalar_t>(), bc, distance_weight, float_lines_fit(g), out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return out.permute({2, 0, 1}).reshape({B, C, n0, n1}).contiguous();
}

}  // namespace

TORCH_LIBRARY_IMPL(alara, CUDA, m) {
  m.impl("project", &project_cuda);
  m.impl("backproject", &backproject_cuda);
}

}  // namespace alara

// Op schemas of the alara namespace and the Python module alara._C.
//
// The schemas take primitive arguments only, so the ops are ordinary dispatcher ops:
// torch.compile traces them (with the fake kernels registered in alara/ops/native.py),
// autograd is registered from Python, and the CPU / CUDA kernels are registered with
// TORCH_LIBRARY_IMPL in cpu/ and cuda/.
#include <torch/extension.h>
#include <torch/library.h>

#ifndef ALARA_CUDA_ARCH_LIST
#define ALARA_CUDA_ARCH_LIST ""
#endif

namespace alara {

TORCH_LIBRARY(alara, m) {
  m.def(
      "project(Tensor image, Tensor angles, int kind, int n_bins, float x0, float y0, "
      "float dx, float dy, float s0, float ds, float src_radius, float src_det, "
      "bool distance_weight=False) -> Tensor");
  m.def(
      "backproject(Tensor sino, Tensor angles, int kind, int n0, int n1, float x0, "
      "float y0, float dx, float dy, float s0, float ds, float src_radius, float src_det, "
      "bool distance_weight=False) -> Tensor");
}

bool cuda_built() {
#ifdef ALARA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace alara

PYBIND11_MODULE(_C, m) {
  m.doc() = "alara native operators (registered as torch.ops.alara.*)";
  m.def("cuda_built", &alara::cuda_built, "Whether the CUDA kernels were compiled.");
  m.def("cuda_arch_list", [] { return std::string(ALARA_CUDA_ARCH_LIST); },
        "The CUDA architectures the kernels were compiled for (empty without CUDA).");
  m.def("parallel_info", [] { return at::get_parallel_info(); },
        "ATen's description of the CPU thread pool the kernels use.");
}

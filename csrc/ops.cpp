// Op schemas of the alara namespace, the build information ops, and the module alara._C.
//
// The schemas take primitive arguments only, so the ops are ordinary dispatcher ops:
// torch.compile traces them (with the fake kernels registered in alara/ops/native.py),
// autograd is registered from Python, and the CPU / CUDA kernels are registered with
// TORCH_LIBRARY_IMPL in cpu/ and cuda/.  What was built is itself an op
// (torch.ops.alara.build_info), so it reaches Python the same way the kernels do; the
// module alara._C only exists so that `import alara._C` loads the library.
#include <Python.h>
#include <torch/library.h>

#include <string>

#ifndef ALARA_CUDA_ARCH_LIST
#define ALARA_CUDA_ARCH_LIST ""
#endif

namespace alara {

// "cuda=<0|1>;arch=<sm_80,sm_90+PTX>": what this library was compiled with.
std::string build_info() {
#ifdef ALARA_WITH_CUDA
  const char* cuda = "1";
#else
  const char* cuda = "0";
#endif
  std::string arch = ALARA_CUDA_ARCH_LIST;
  for (char& ch : arch)
    if (ch == ';') ch = ',';
  return std::string("cuda=") + cuda + ";arch=" + arch;
}

TORCH_LIBRARY(alara, m) {
  m.def(
      "project(Tensor image, Tensor angles, int kind, int n_bins, float x0, float y0, "
      "float dx, float dy, float s0, float ds, float src_radius, float src_det, "
      "bool distance_weight=False) -> Tensor");
  m.def(
      "backproject(Tensor sino, Tensor angles, int kind, int n0, int n1, float x0, "
      "float y0, float dx, float dy, float s0, float ds, float src_radius, float src_det, "
      "bool distance_weight=False) -> Tensor");
  m.def("build_info() -> str", &build_info);
}

}  // namespace alara

// A Python module with no functions: importing it runs the static registrations above.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C",
                                      "alara native operators (torch.ops.alara.*)", -1,
                                      nullptr};
  return PyModule_Create(&module);
}

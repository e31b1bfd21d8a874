"""Builds the optional native extension ``alara._C``; all metadata lives in pyproject.toml.

Environment variables:

- ``ALARA_NO_EXTENSION=1``  pure-Python install (no compiler needed; ``backend="auto"``
  then uses the pure-torch operators).
- ``FORCE_CUDA=1``          build the CUDA kernels even where no GPU is visible (they are
  built anyway whenever a CUDA toolkit is found: ``CUDA_HOME`` / ``nvcc`` on ``PATH``).
- ``ALARA_NO_CUDA=1``       skip the CUDA kernels even where a toolkit is found.
- ``TORCH_CUDA_ARCH_LIST``  CUDA architectures (default ``8.0;9.0+PTX``: A100, H100/H200,
  and PTX that newer GPUs JIT-compile).
- ``MAX_JOBS``              parallel compile jobs (ninja).

Install with ``pip install --no-build-isolation -e .`` so that the extension is compiled
against the torch already installed.
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _log(msg: str) -> None:
    print(f"[alara setup] {msg}", file=sys.stderr, flush=True)


def _arch_macro(arch_list: str) -> str:
    # "8.0;9.0+PTX" -> "sm_80;sm_90+PTX" (what `alara info` prints)
    out = []
    for a in arch_list.replace(",", ";").replace(" ", ";").split(";"):
        if not a:
            continue
        ptx = a.endswith("+PTX")
        num = a[:-4] if ptx else a
        out.append("sm_" + num.replace(".", "") + ("+PTX" if ptx else ""))
    return ";".join(out)


def extensions():
    if _flag("ALARA_NO_EXTENSION"):
        _log("ALARA_NO_EXTENSION is set: skipping alara._C (pure-torch operators only)")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError as exc:
        raise SystemExit(
            "[alara setup] building alara._C needs torch in the build environment: install "
            "torch first and run `pip install --no-build-isolation -e .`, or set "
            f"ALARA_NO_EXTENSION=1 for a pure-Python install ({exc})") from exc

    csrc = os.path.join("csrc")
    sources = sorted(glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")))
    with_cuda = (not _flag("ALARA_NO_CUDA")) and (
        _flag("FORCE_CUDA") or (CUDA_HOME is not None and torch.version.cuda is not None))
    if with_cuda and torch.version.cuda is None:
        _log("warning: FORCE_CUDA=1 but this torch is a CPU-only build; building CPU only")
        with_cuda = False

    openmp = "-fopenmp" if sys.platform.startswith("linux") else None
    # (-Wno-psabi: GCC notes that 64-byte vectors pass differently without AVX-512 even for
    # the always-inlined lane helpers of csrc/cpu/fan_plane.h; nothing crosses an ABI there)
    cxx = ["-O3", "-fno-math-errno", "-Wno-psabi"]
    if openmp:
        cxx.append(openmp)
    link = [openmp] if openmp else []
    macros = []
    ext_cls = CppExtension
    extra = {"cxx": cxx}
    if with_cuda:
        arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCH_LIST
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list  # read by torch's nvcc flag logic
        sources += cuda_sources
        macros += [("ALARA_WITH_CUDA", None),
                   ("ALARA_CUDA_ARCH_LIST", '"' + _arch_macro(arch_list) + '"')]
        extra["nvcc"] = ["-O3", "-lineinfo",
                         "--expt-relaxed-constexpr"]
        ext_cls = CUDAExtension
    _log(f"torch {torch.__version__} (CUDA {torch.version.cuda}), python {sys.version.split()[0]}")
    _log(f"CPU kernels: yes ({', '.join(cxx)})")
    if with_cuda:
        _log(f"CUDA kernels: yes (CUDA_HOME={CUDA_HOME}, TORCH_CUDA_ARCH_LIST={arch_list})")
    else:
        why = ("ALARA_NO_CUDA is set" if _flag("ALARA_NO_CUDA")
               else "no CUDA toolkit found (set CUDA_HOME or FORCE_CUDA=1)")
        _log(f"CUDA kernels: no ({why})")
    ext = ext_cls(
        "alara._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=macros,
        extra_compile_args=extra,
        extra_link_args=link,
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)

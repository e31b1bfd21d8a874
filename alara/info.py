"""What this installation has (versions, built backends, threads): recorded in every run
folder and printed by ``alara info``."""

from __future__ import annotations

import os
import platform

import torch

__all__ = ["collect"]


def collect() -> dict[str, str]:
    """What this installation has: versions, backends, threads."""
    from alara import __version__
    from alara.ops import backend, symmetry

    mod = backend.native_module()
    cuda_built, archs = False, []
    if mod is not None:  # build information is an op of the library, like the kernels
        from alara.ops import native

        cuda_built, archs = native.cuda_built(), native.cuda_arch_list()
    info = {
        "alara": __version__,
        "python": platform.python_version(),
        "torch": f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        "threads": f"{torch.get_num_threads()} (interop {torch.get_num_interop_threads()})",
        "native CPU": "built (alara._C)" if mod is not None else
                      "not built (reinstall with `pip install --no-build-isolation -e .`)",
        "native CUDA": f"built for {', '.join(archs)}" if cuda_built else "not built",
        "CUDA device": (f"{torch.cuda.get_device_name()} (sm_"
                        f"{''.join(map(str, torch.cuda.get_device_capability()))})"
                        if torch.cuda.is_available() else "none"),
        f"{backend.ENV_VAR}": os.environ.get(backend.ENV_VAR, "") or "(unset)",
    }
    try:
        info[symmetry.ENV_VAR] = f"{symmetry.mode()} (symmetries of the square: CPU fan and parallel beams)"
    except ValueError as exc:
        info[symmetry.ENV_VAR] = f"error: {exc}"
    try:
        info["backend auto (cpu)"] = backend.resolve("auto", torch.device("cpu"))
        if torch.cuda.is_available():
            info["backend auto (cuda)"] = backend.resolve("auto", torch.device("cuda"))
    except ValueError as exc:  # a bad ALARA_BACKEND value
        info["backend auto (cpu)"] = f"error: {exc}"
    return info

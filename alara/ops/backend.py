"""Backend selection: ``"auto"`` (native when built), ``"native"`` or ``"torch"``.

The default for ``backend="auto"`` can be pinned with the environment variable
``ALARA_BACKEND`` (``native`` or ``torch``), e.g. to compare the two on one script.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

Backend = Literal["auto", "native", "torch"]
BACKENDS = ("auto", "native", "torch")
ENV_VAR = "ALARA_BACKEND"


def native_module():
    """The compiled extension ``alara._C``, or ``None`` when it is not built."""
    try:
        from alara import _C  # noqa: F401  (importing registers the ops)
    except ImportError:
        return None
    return _C


def native_available(device: torch.device | None = None) -> bool:
    """Whether the native kernels exist for ``device`` (CPU when ``None``)."""
    mod = native_module()
    if mod is None:
        return False
    if device is not None and device.type == "cuda":
        from alara.ops import native

        return native.cuda_built()
    return device is None or device.type == "cpu"


def resolve(backend: str, device: torch.device) -> str:
    """Turn a requested backend into ``"native"`` or ``"torch"`` for tensors on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env and env not in ("native", "torch", "auto"):
            raise ValueError(f"{ENV_VAR} must be 'native', 'torch' or 'auto', got {env!r}")
        backend = env if env in ("native", "torch") else "auto"
    if backend == "auto":
        return "native" if native_available(device) else "torch"
    if backend == "native" and not native_available(device):
        raise RuntimeError(
            f"backend='native' was requested for a {device.type} tensor but alara's native "
            "extension (alara._C) is not built for it; reinstall with "
            "`pip install --no-build-isolation -e .` (see README) or use backend='torch'"
        )
    return backend

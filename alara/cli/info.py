"""``alara info``: versions, built backends and threads."""

from __future__ import annotations

import argparse
import platform

import torch


def collect() -> dict[str, str]:
    """What this installation has: versions, backends, threads."""
    from alara import __version__
    from alara.ops import backend

    mod = backend.native_module()
    info = {
        "alara": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "native CPU": "built" if mod is not None else "not built",
        "native CUDA": "built" if backend.native_available(torch.device("cuda")) else "not built",
        "CUDA device": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "backend auto (cpu)": backend.resolve("auto", torch.device("cpu")),
    }
    return info


def _run(args: argparse.Namespace) -> int:
    for key, value in collect().items():
        print(f"{key:>20}: {value}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions, built backends and threads",
                       description="Show versions, which operator backends are built, "
                                   "the thread count and what backend='auto' picks.")
    p.set_defaults(func=_run)

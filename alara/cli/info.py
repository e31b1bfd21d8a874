"""``alara info``: versions, built backends (CPU, CUDA and its arch list), threads, and
which operator backend ``backend="auto"`` picks."""

from __future__ import annotations

import argparse
import os
import platform

import torch


from alara.info import collect  # noqa: E402  (re-exported: alara info prints it)


def _run(args: argparse.Namespace) -> int:
    for key, value in collect().items():
        print(f"{key:>20}: {value}")
    if args.verbose:
        print(torch.__config__.parallel_info().rstrip())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions, built backends and threads",
                       description="Show versions, which operator backends are built (CPU, "
                                   "CUDA and its architectures), the thread count and what "
                                   "backend='auto' picks.")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print ATen's parallel configuration (OpenMP, MKL)")
    p.set_defaults(func=_run)

"""Where the native CPU kernels' symmetric path pays (issue 11): the default ("auto")
against the per-view kernels (``ALARA_SYMMETRY=0``) over grid sizes, view counts, beams and
batch sizes, both in this process.

    .venv/bin/python benchmarks/symmetry_crossover.py [--rounds 3] [--sizes 128,362,1024]

Prints the markdown table summarised in docs/benchmarks.md ("When it pays")."""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

from alara import ops
from alara.geometry import FanBeam, ImageGrid, lodopab, uniform_angles

# (grid size, fan views); the parallel beam gets half the views over pi
CASES = ((128, 64), (362, 64), (362, 128), (362, 256), (1024, 128), (1024, 512))


def _best_ms(fn, arg, rounds: int) -> float:
    fn(arg)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def _timed(fn, arg, rounds: int, mode: str | None) -> float:
    if mode is None:
        os.environ.pop("ALARA_SYMMETRY", None)
    else:
        os.environ["ALARA_SYMMETRY"] = mode
    try:
        return _best_ms(fn, arg, rounds)
    finally:
        os.environ.pop("ALARA_SYMMETRY", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per case (best is kept)")
    parser.add_argument("--sizes", default="128,362,1024", help="grid sizes to include")
    args = parser.parse_args()
    sizes = {int(s) for s in args.sizes.split(",")}
    print("| grid | views | beam | op | batch | auto ms | per-view ms | auto / per-view |")
    print("|---|---|---|---|---|---|---|---|")
    for n, views in CASES:
        if n not in sizes:
            continue
        bins = int(1.4 * n) | 1
        fan = FanBeam(ImageGrid.square(n, 0.26), uniform_angles(views, 0, 2 * math.pi), bins,
                      0.26 * 2.2 / bins, src_radius=0.5, det_radius=0.5)
        for beam, g in (("fan", fan), ("parallel", lodopab(views // 2, bins, n))):
            for op in ("bp", "fp") if beam == "fan" else ("bp",):
                fn = (lambda t, g=g: ops.backproject(t, g, "native")) if op == "bp" else \
                     (lambda t, g=g: ops.project(t, g, "native"))
                shape = g.sinogram_shape if op == "bp" else g.grid.shape
                for batch in (1, 4, 8):
                    x = torch.rand(batch, 1, *shape)
                    auto = _timed(fn, x, args.rounds, None)
                    per_view = _timed(fn, x, args.rounds, "0")
                    print(f"| {n} | {g.n_views} | {beam} | {op.upper()} | {batch} | {auto:.1f} | "
                          f"{per_view:.1f} | {auto / per_view:.2f} |", flush=True)


if __name__ == "__main__":
    main()

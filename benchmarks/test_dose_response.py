"""Dose response of the synthetic patients: does dose still matter to a learned reconstructor?

The project's quick experiment (64 x 64 pixels, 90 views; FBP Hann 0.641 + a small
FBP+U-Net) needs image quality to rise with dose where the policies operate.  This trains
``fbp_unet`` (scales 4, channels 16-32-64-64) for a fixed budget on textured synthetic
patients, with noise drawn on the fly at n0 log-uniform in [128, 65536] photons per bin
(:func:`alara.noise.postlog_noise`), then measures the median and 5th/95th percentile PSNR
(data range 1) on a test split, per n0, for FBP and FBP+U-Net, and the noiseless FBP
ceiling.  The operating point is the dose where the median U-Net PSNR is ``margin`` dB
(3) under the median ceiling; the slope is the PSNR gain per doubling of dose from half
to twice that dose.  Target (issue 14): slope >= 1.5 dB per doubling.

Run as a script (prints the table, writes JSON and the figure)::

    python benchmarks/test_dose_response.py --out docs/figures/dose_response.png

or as a slow test: ``pytest -m slow benchmarks/test_dose_response.py`` (the issue-14 target
is an expected failure there: see docs/benchmarks.md, "Dose response of the synthetic
patients").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
import torch
import torch.nn.functional as F

from alara.data.lodopab import hu_to_x
from alara.data.phantoms import render_slice, sample_patient, slice_positions
from alara.data.synth import fine_geometry, small_geometry
from alara.data.texture import DEFAULT_TEXTURE, TextureParams
from alara.noise import postlog_noise
from alara.ops import fbp, project

N0_RANGE = (128.0, 65536.0)


def n0_grid(lo: float, hi: float = 65536.0) -> list[float]:
    """Doses evaluated: the powers of two from ``lo`` to ``hi``."""
    return [2.0 ** k for k in range(int(round(math.log2(lo))), int(round(math.log2(hi))) + 1)]


@dataclass
class Setup:
    """What is trained and measured (defaults: the quick experiment)."""

    image_size: int = 64
    n_views: int = 90
    upsample: int = 2
    train_patients: int = 128
    test_patients: int = 24
    slices: int = 4
    steps: int = 1500
    batch: int = 8
    lr: float = 2e-3
    scales: int = 4
    channels: tuple = (16, 32, 64, 64)
    seed: int = 0
    texture: Optional[TextureParams] = DEFAULT_TEXTURE
    margin_db: float = 3.0
    n0_range: tuple = N0_RANGE


@dataclass
class Curves:
    n0: list
    fbp: dict = field(default_factory=dict)      # "p5" / "median" / "p95" -> list over n0
    unet: dict = field(default_factory=dict)
    ceiling: dict = field(default_factory=dict)  # noiseless FBP: p5 / median / p95
    train_seconds: float = 0.0


def _render(setup: Setup, patients: range, geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground truth [N, 1, n, n] and clean sinograms (from the finer rendering)."""
    fine = fine_geometry(geometry, setup.upsample)
    seeds = torch.randint(0, 2 ** 31, (max(patients) + 1,),
                          generator=torch.Generator().manual_seed(setup.seed)).tolist()
    xs = []
    for pid in patients:
        p = sample_patient(seeds[pid], pid)
        xs += [hu_to_x(render_slice(p, t, fine.grid, setup.texture)) for t in slice_positions(p, setup.slices)]
    x_fine = torch.stack(xs)[:, None].float()
    with torch.no_grad():
        line = torch.cat([project(x_fine[i:i + 64], fine) for i in range(0, len(x_fine), 64)])
    return F.avg_pool2d(x_fine, setup.upsample), line


def _noisy_fbp(line: torch.Tensor, n0: torch.Tensor, geometry, gen: torch.Generator) -> torch.Tensor:
    n0_views = n0[:, None].expand(-1, geometry.n_views).double()
    y = postlog_noise(line, n0_views, generator=gen).float()
    return fbp(y, geometry, filter="hann", frequency_scaling=0.641)


def _psnr(x: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    mse = ((x - gt) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def _stats(v: torch.Tensor) -> tuple[float, float, float]:
    q = torch.quantile(v.double(), torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    return tuple(round(float(a), 2) for a in q)


def run(setup: Setup, log=print) -> Curves:
    """Render, train, evaluate; returns the curves."""
    from alara_builtin.reconstructors import FBPUNetReconstructor

    torch.manual_seed(setup.seed)
    geometry = small_geometry(setup.image_size, setup.n_views)
    n_train = setup.train_patients
    t0 = time.perf_counter()
    gt_train, line_train = _render(setup, range(n_train), geometry)
    gt_test, line_test = _render(setup, range(n_train, n_train + setup.test_patients), geometry)
    log(f"rendered {len(gt_train)} train / {len(gt_test)} test slices in {time.perf_counter() - t0:.1f} s")

    rec = FBPUNetReconstructor(FBPUNetReconstructor.Config(scales=setup.scales, channels=tuple(setup.channels)))
    opt = torch.optim.Adam(rec.unet.parameters(), lr=setup.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=setup.lr, total_steps=setup.steps)
    gen = torch.Generator().manual_seed(setup.seed + 1)
    lo, hi = (math.log(v) for v in setup.n0_range)
    t0 = time.perf_counter()
    rec.unet.train()
    for step in range(setup.steps):
        idx = torch.randint(0, len(gt_train), (setup.batch,), generator=gen)
        n0 = torch.exp(lo + (hi - lo) * torch.rand(setup.batch, generator=gen, dtype=torch.float64))
        with torch.no_grad():
            x0 = _noisy_fbp(line_train[idx], n0, geometry, gen)
        loss = F.mse_loss(rec.unet(x0), gt_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == setup.steps - 1:
            log(f"step {step:5d}  loss {loss.item():.3e}  ({time.perf_counter() - t0:.0f} s)")
    train_seconds = time.perf_counter() - t0

    rec.unet.eval()
    grid = n0_grid(setup.n0_range[0])
    curves = Curves(n0=grid, train_seconds=round(train_seconds, 1))
    with torch.no_grad():
        clean = fbp(line_test, geometry, filter="hann", frequency_scaling=0.641)
        curves.ceiling = dict(zip(("p5", "median", "p95"), _stats(_psnr(clean, gt_test))))
        for key in ("p5", "median", "p95"):
            curves.fbp[key], curves.unet[key] = [], []
        eval_gen = torch.Generator().manual_seed(12345)
        for n0 in grid:
            x0 = _noisy_fbp(line_test, torch.full((len(line_test),), n0, dtype=torch.float64),
                            geometry, eval_gen)
            for name, img in (("fbp", x0), ("unet", rec.unet(x0))):
                for key, v in zip(("p5", "median", "p95"), _stats(_psnr(img, gt_test))):
                    getattr(curves, name)[key].append(v)
    return curves


def operating_point(curves: Curves, margin_db: float = 3.0) -> dict:
    """The dose where the median U-Net PSNR is ``margin_db`` under the median ceiling
    (log-linear interpolation on the n0 grid), and the slope there (dB per doubling of
    dose, from half to twice that dose)."""
    logn = [math.log2(v) for v in curves.n0]
    med = curves.unet["median"]
    target = curves.ceiling["median"] - margin_db

    def at(l2: float) -> float:
        l2 = min(max(l2, logn[0]), logn[-1])
        for k in range(len(logn) - 1):
            if logn[k] <= l2 <= logn[k + 1]:
                w = (l2 - logn[k]) / (logn[k + 1] - logn[k])
                return med[k] * (1 - w) + med[k + 1] * w
        return med[-1]

    if med[0] >= target:
        l_op = logn[0]
    elif med[-1] < target:
        l_op = logn[-1]
    else:
        k = next(k for k in range(len(med) - 1) if med[k] < target <= med[k + 1])
        l_op = logn[k] + (target - med[k]) / (med[k + 1] - med[k]) * (logn[k + 1] - logn[k])
    slope = (at(l_op + 1) - at(l_op - 1)) / 2
    return {"n0": round(2 ** l_op), "psnr": round(at(l_op), 2), "ceiling": curves.ceiling["median"],
            "slope_db_per_doubling": round(slope, 2)}


def table(curves: Curves) -> str:
    """Markdown table: n0 against FBP and FBP+U-Net PSNR (median [p5, p95])."""
    rows = ["| n0 | FBP median [p5, p95] (dB) | FBP+U-Net median [p5, p95] (dB) |", "|---|---|---|"]
    for k, n0 in enumerate(curves.n0):
        f = curves.fbp
        u = curves.unet
        rows.append(f"| {int(n0)} | {f['median'][k]:.2f} [{f['p5'][k]:.2f}, {f['p95'][k]:.2f}] | "
                    f"{u['median'][k]:.2f} [{u['p5'][k]:.2f}, {u['p95'][k]:.2f}] |")
    c = curves.ceiling
    rows.append(f"| noiseless FBP | {c['median']:.2f} [{c['p5']:.2f}, {c['p95']:.2f}] | |")
    return "\n".join(rows)


def plot(results: dict, path: Path) -> None:
    """PSNR against n0, one panel per data set (median line, 5-95% band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for ax, (name, (curves, op)) in zip(axes[0], results.items()):
        for key, colour, label in (("fbp", "tab:blue", "FBP"), ("unet", "tab:red", "FBP+U-Net")):
            c = getattr(curves, key)
            ax.plot(curves.n0, c["median"], "o-", color=colour, label=f"{label} (median)")
            ax.fill_between(curves.n0, c["p5"], c["p95"], color=colour, alpha=0.2)
        ax.axhline(curves.ceiling["median"], color="k", ls="--", label="noiseless FBP (median)")
        ax.axvline(op["n0"], color="gray", ls=":", label=f"operating point n0={op['n0']}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("n0 (photons per bin)")
        ax.set_ylabel("PSNR (dB, data range 1)")
        ax.set_title(f"{name}\n{op['slope_db_per_doubling']:.2f} dB per doubling at n0={op['n0']}",
                     fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@pytest.fixture(scope="module")
def textured_curves():
    setup = Setup()
    curves = run(setup, log=lambda *a: None)
    return curves, operating_point(curves, setup.margin_db)


@pytest.mark.slow
def test_dose_response_is_measured(textured_curves):
    curves, op = textured_curves
    u, f = curves.unet["median"], curves.fbp["median"]
    # FBP converges to its noiseless ceiling; the U-Net learned more than FBP (it deblurs:
    # above the ceiling at the highest dose, never much below FBP) and gains with dose.
    assert abs(f[-1] - curves.ceiling["median"]) < 0.1
    assert u[-1] > curves.ceiling["median"]
    assert all(a >= b - 0.5 for a, b in zip(u, f))
    assert u[-1] - u[0] > 1.0
    assert op["n0"] >= curves.n0[0]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 14's target is not met at 64 x 64, 90 views: the "
                   "U-Net's bias floor, not noise, dominates its error (docs/benchmarks.md)")
def test_issue_14_target(textured_curves):
    curves, op = textured_curves
    assert op["ceiling"] >= op["psnr"] + 3.0 - 1e-9
    assert op["slope_db_per_doubling"] >= 1.5, (op, table(curves))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=Setup.steps)
    p.add_argument("--batch", type=int, default=Setup.batch)
    p.add_argument("--train-patients", type=int, default=Setup.train_patients)
    p.add_argument("--test-patients", type=int, default=Setup.test_patients)
    p.add_argument("--cartoon", action="store_true", help="also run the untextured patients")
    p.add_argument("--only-cartoon", action="store_true", help="run the untextured patients only")
    p.add_argument("--n0-min", type=float, default=N0_RANGE[0],
                   help=f"lowest training and evaluation dose (default {N0_RANGE[0]:g})")
    p.add_argument("--n0-max", type=float, default=N0_RANGE[1],
                   help=f"highest training dose (default {N0_RANGE[1]:g}; evaluation goes to 65536)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", type=Path, help="write the curves here")
    p.add_argument("--out", type=Path, help="write the figure here (PNG)")
    p.add_argument("--plot", type=Path, nargs="+", metavar="JSON",
                   help="no training: draw the figure from earlier --json files")
    args = p.parse_args(argv)
    if args.plot:
        results = {}
        for path in args.plot:
            for name, r in json.loads(path.read_text()).items():
                label = path.stem.replace("_", " ").strip()
                results[f"{name}, {label}"] = (Curves(**r["curves"]), r["operating_point"])
        plot(results, args.out or Path("dose_response.png"))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    base = dict(steps=args.steps, batch=args.batch, train_patients=args.train_patients,
                test_patients=args.test_patients, seed=args.seed, n0_range=(args.n0_min, args.n0_max))
    runs = {} if args.only_cartoon else {"textured (default)": Setup(**base)}
    if args.cartoon or args.only_cartoon:
        runs["cartoon (--no-texture)"] = Setup(texture=None, **base)
    results = {}
    for name, setup in runs.items():
        print(f"== {name}", flush=True)
        curves = run(setup, log=lambda s: print(s, flush=True))
        op = operating_point(curves, setup.margin_db)
        results[name] = (curves, op)
        print(table(curves))
        print(f"operating point: {op}; training {curves.train_seconds:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({k: {"curves": vars(c), "operating_point": o}
                                         for k, (c, o) in results.items()}, indent=1))
    if args.out:
        plot(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

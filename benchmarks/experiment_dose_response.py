"""Dose response of an experiment's trained shared reconstructor (issue 14, item 3):
median and 5th/95th percentile PSNR against dose on the validation split, for the
reconstructor's own FBP and for FBP + U-Net, and the noiseless FBP ceiling.

    .venv/bin/python benchmarks/experiment_dose_response.py results/experiment [--plot out.png]

Prints a markdown table (the one in docs/benchmarks.md) and the slope per doubling of
dose between neighbouring doses."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from alara.config import ComponentSpec, build_component
from alara.experiment.response import flat_shape, quality_at_doses
from alara.experiment.runner import _split
from alara.pipeline import Pipeline
from alara.run_config import rebuild_from_checkpoint
from alara.train.checkpoint import load_latest

DOSES = (0.015625, 0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0, 4.0)


def curves(run: Path) -> dict:
    state = load_latest(run / "shared_reconstructor")
    pipe, obj, geometry = rebuild_from_checkpoint(state)
    data = Path(json.loads((run / "metrics.json").read_text())["data"])
    val = _split(data, "validation", obj.metric, seed=1)
    x, idx = val.x, val.index
    fixed = build_component(ComponentSpec("dose_policy", "fixed", {}, None, "bench"))
    c = pipe.reconstructor.config
    fbp = build_component(ComponentSpec("reconstructor", "fbp", {"filter": c.filter,
                                                                  "frequency_scaling": c.frequency_scaling}, None, "bench"))
    out = {"doses": list(DOSES)}
    for name, rec in (("fbp", fbp), ("fbp_unet", pipe.reconstructor)):
        p = Pipeline(pipe.prior, fixed, pipe.simulator, rec)
        rows = []
        for d in DOSES:
            v = quality_at_doses(p, obj.metric, x, idx, geometry, flat_shape(x.shape[0], geometry.n_views),
                                 torch.full((x.shape[0],), d, dtype=torch.float64), seed=1, realisations=1)
            rows.append([float(np.percentile(v, 5)), float(np.median(v)), float(np.percentile(v, 95))])
        out[name] = rows
    from alara import ops

    sino = ops.project(x, geometry)
    ceiling = obj.metric(fbp(sino, geometry).float(), x).numpy()
    out["ceiling"] = [float(np.percentile(ceiling, 5)), float(np.median(ceiling)), float(np.percentile(ceiling, 95))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="experiment run folder (alara experiment --out)")
    ap.add_argument("--plot", type=Path, help="write a PNG of the curves")
    a = ap.parse_args()
    r = curves(a.run)
    print("| relative dose | n0 | FBP p5 / median / p95 | FBP+U-Net p5 / median / p95 | U-Net slope (dB/doubling, median) |")
    print("|---|---|---|---|---|")
    for i, d in enumerate(r["doses"]):
        f, u = r["fbp"][i], r["fbp_unet"][i]
        slope = ""
        if i + 1 < len(r["doses"]):
            slope = f"{(r['fbp_unet'][i + 1][1] - u[1]) / np.log2(r['doses'][i + 1] / d):.2f}"
        print(f"| {d:g} | {d * 4096:.0f} | {f[0]:.2f} / {f[1]:.2f} / {f[2]:.2f} | {u[0]:.2f} / {u[1]:.2f} / {u[2]:.2f} | {slope} |")
    c = r["ceiling"]
    print(f"\nNoiseless FBP ceiling: {c[0]:.2f} / {c[1]:.2f} / {c[2]:.2f} dB (p5 / median / p95)")
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, color in (("fbp", "tab:gray"), ("fbp_unet", "tab:blue")):
            v = np.array(r[name])
            ax.plot(r["doses"], v[:, 1], color=color, marker="o", label=f"{name} median")
            ax.fill_between(r["doses"], v[:, 0], v[:, 2], color=color, alpha=0.2)
        ax.axhline(c[1], color="k", ls="--", label="noiseless FBP (median)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("relative dose (1 = LoDoPaB's n0 = 4096)")
        ax.set_ylabel("PSNR (dB)")
        ax.legend(fontsize=8)
        fig.savefig(a.plot, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()

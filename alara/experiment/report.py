"""The experiment's report: ``report.md``, ``metrics.json`` and ``figures/`` (the only
matplotlib user of the experiment).  Every number in report.md is read from the same
dictionary that is written as metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from alara.evaluate import write_json
from alara.experiment.spec import spec_dict

__all__ = ["write_report", "headline_lines"]

HEADLINE_ARM = "learned_joint"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> str:
    from alara.data.writer import atomic_file

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    _plt().close(fig)
    return f"figures/{path.name}"


def _metrics(rc: Any, spec: Any, arms: list, calib: dict, evaluation: dict, timings: dict,
             wall_seconds: float, data_root: Path) -> dict[str, Any]:
    name = evaluation["metric"]
    policies = {}
    for arm in arms:
        c, e = calib["arms"][arm.name], evaluation["arms"][arm.name]
        g = e["guarantee"]
        entry = {"label": arm.label, "policy": arm.policy, "prior": arm.prior, "reconstructor": arm.reconstructor,
                 "calibration_factor": c["factor"], "validation_share": c["validation_share"],
                 "validation_dose": c["validation_dose"],
                 "test": {"relative_dose": g["relative_dose"], name: g["metrics"][name],
                          "share_met": g["target"]["share_met"]}}
        for other, a in e.get("also", {}).items():
            if "unreachable" in a:
                entry.setdefault("also", {})[other] = {"q": a["q"], "unreachable": a["unreachable"]}
                continue
            entry.setdefault("also", {})[other] = {
                "q": a["target"]["q"], "calibration_factor": a["factor"],
                "validation_share": c["also"][other]["validation_share"],
                "relative_dose": a["relative_dose"], other: a["metrics"][other],
                "share_met": a["target"]["share_met"]}
        if "mean_q" in e:
            m = e["mean_q"]
            entry["matched_mean_q"] = {"factor": m["factor"], "relative_dose_mean": m["relative_dose"]["mean"],
                                       f"{name}_mean": m["metrics"][name]["mean"]}
        policies[arm.name] = entry
    head = policies.get(HEADLINE_ARM)
    headline: dict[str, Any] = {"metric": name, "q": calib["q"], "share": spec.share, "arm": HEADLINE_ARM}
    if head is not None:
        d = head["test"]["relative_dose"]["mean"]
        headline["dose"] = d
        headline["dose_ratio_vs"] = {a: d / p["test"]["relative_dose"]["mean"] for a, p in policies.items()
                                     if a in spec.baselines}
        if all("matched_mean_q" in p for p in policies.values()):
            dm = head["matched_mean_q"]["relative_dose_mean"]
            headline["dose_ratio_vs_at_matched_mean_q"] = {
                a: dm / p["matched_mean_q"]["relative_dose_mean"] for a, p in policies.items() if a in spec.baselines}
        headline["q_std"] = {a: p["test"][name]["std"] for a, p in policies.items()}
    out: dict[str, Any] = {"headline": headline, "policies": policies}
    if "oracle" in calib:
        fixed_val = calib["arms"]["fixed"]["validation_dose"]
        out["oracle"] = {"validation_dose": calib["oracle"]["dose"],
                         "ratio_vs_fixed": calib["oracle"]["dose"] / fixed_val if fixed_val else float("nan")}
        headline["oracle_ratio_vs_fixed"] = out["oracle"]["ratio_vs_fixed"]
    if "slope" in calib:
        out["slope"] = {**calib["slope"], "min_slope": spec.min_slope,
                        "ok": calib["slope"]["median"] >= spec.min_slope}
    if "matched_mean_q" in calib:
        out["matched_mean_q_target"] = calib["matched_mean_q"]["target"]
    out.update(experiment=spec_dict(spec), data=str(data_root), timings=timings, wall_seconds=wall_seconds,
               test_images=evaluation["test_images"], test_patients=evaluation["test_patients"],
               validation_images=calib["images"])
    return out


def headline_lines(m: dict[str, Any]) -> list[str]:
    """The report's first lines: End2end-ALARA's dose against each baseline at the same
    guarantee, its Q spread against theirs, the oracle bound; losses said plainly."""
    h = m["headline"]
    name = h["metric"].upper()
    lines = []
    if "dose" not in h:
        return ["No learned policy in this experiment."]
    ratios = ", ".join(f"{r:.2f}x {a}" for a, r in h["dose_ratio_vs"].items())
    lines.append(f"**At the same guarantee ({100 * h['share']:.0f}% of validation images with {name} >= "
                 f"{h['q']:g}), End2end-ALARA uses {h['dose']:.3f} of LoDoPaB's dose on the test split: "
                 f"{ratios}.**")
    losses = [a for a, r in h["dose_ratio_vs"].items() if r > 1]
    if losses:
        lines.append(f"It loses to {', '.join(losses)} here: it needs more dose than "
                     f"{'that baseline' if len(losses) == 1 else 'those baselines'} for the same guarantee.")
    else:
        lines.append("It needs less dose than every baseline for the same guarantee.")
    spread = ", ".join(f"{a} {s:.2f}" for a, s in h["q_std"].items())
    lines.append(f"Spread of {name} over test images (standard deviation): {spread}.")
    if "oracle_ratio_vs_fixed" in h:
        lines.append(f"The per-image oracle (each image at its own smallest fixed dose reaching q; the images "
                     f"allowed to fail get none) needs {h['oracle_ratio_vs_fixed']:.2f}x the fixed dose: the "
                     "bound for any policy that picks one dose level per patient.")
    if "dose_ratio_vs_at_matched_mean_q" in h:
        r = ", ".join(f"{v:.2f}x {a}" for a, v in h["dose_ratio_vs_at_matched_mean_q"].items())
        lines.append(f"At the same mean {name} instead (the classic comparison): {r}.")
    s = m.get("slope")
    if s is not None and not s["ok"]:
        lines.append(f"WARNING: {name} rises only {s['median']:.2f} per doubling of dose around the calibrated "
                     f"doses (minimum {s['min_slope']:g}): q sits on the reconstructor's bias floor and this "
                     "comparison measures little; lower [objective] target.")
    return lines


# ------------------------------------------------------------------------------- figures


def _pick(n: int, k: int) -> np.ndarray:
    """``k`` indices spread evenly over ``n`` images (the ones a figure shows)."""
    return np.linspace(0, n - 1, min(k, n)).round().astype(int)


def _fig_dose_vs_size(out: Path, arms: list, rows: dict[str, np.ndarray]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for arm in arms:
        sel = rows["policy"] == arm.name
        ax.scatter(rows["wed_cm"][sel], rows["relative_dose"][sel], s=14, label=arm.label, alpha=0.8)
    ax.set_xlabel("water-equivalent diameter (cm)")
    ax.set_ylabel("relative dose (1 = LoDoPaB's)")
    ax.set_yscale("log")
    ax.set_title("Dose per test image at the guarantee")
    ax.legend(fontsize=7)
    return _save(fig, out / "figures" / "dose_vs_size.png")


def _fig_quality(out: Path, arms: list, rows: dict[str, np.ndarray], name: str, q: float) -> str:
    plt = _plt()
    fig, axes = plt.subplots(len(arms), 1, figsize=(6.5, 1.6 * len(arms)), sharex=True)
    vals = rows[name]
    bins = np.linspace(np.nanmin(vals), np.nanmax(vals), 30)
    for ax, arm in zip(np.atleast_1d(axes), arms):
        v = vals[rows["policy"] == arm.name]
        ax.hist(v, bins=bins, color="tab:blue", alpha=0.75)
        ax.axvline(q, color="tab:red", lw=1.5)
        ax.set_ylabel(arm.name, fontsize=8)
        ax.text(0.01, 0.8, f"{100 * np.mean(v >= q):.0f}% >= q", transform=ax.transAxes, fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel(f"{name} on the test split (red: q = {q:g})")
    return _save(fig, out / "figures" / "quality_hist.png")


def _fig_curves(out: Path, arms: list, calib: dict) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for arm in arms:
        c = calib["arms"][arm.name]["curve"]
        if c:
            ax.plot([d for _, d in c], [100 * s for s, _ in c], marker="o", ms=3, label=arm.label)
    if "oracle" in calib:
        c = [(s, d) for s, d in calib["oracle"]["curve"] if d == d]
        ax.plot([d for _, d in c], [100 * s for s, _ in c], "k--", label="per-image oracle")
    ax.set_xscale("log")
    ax.set_xlabel("mean relative dose (validation)")
    ax.set_ylabel("images reaching q (%)")
    ax.set_title("Guarantee against dose")
    ax.legend(fontsize=7)
    return _save(fig, out / "figures" / "guarantee_curves.png")


@torch.no_grad()
def _fig_examples(out: Path, arms: list, calib: dict, x: torch.Tensor, index: torch.Tensor, geometry: Any,
                  metric: Any, k: int, seed: int, truth: dict[str, torch.Tensor]) -> str:
    from alara.pipeline import noise_generator, scan_truth, twin_background

    plt = _plt()
    pick = _pick(x.shape[0], k)
    k = len(pick)
    fig, axes = plt.subplots(k, len(arms) + 1, figsize=(1.9 * (len(arms) + 1), 1.9 * k), squeeze=False)
    for r, i in enumerate(pick):
        xi = x[i:i + 1]
        axes[r, 0].imshow(xi[0, 0].T.numpy(), cmap="gray", vmin=0, vmax=0.5)
        axes[r, 0].set_title("ground truth" if r == 0 else "", fontsize=8)
        for c, arm in enumerate(arms, start=1):
            arm.pipeline.eval()
            ti = {key: v[i:i + 1] for key, v in truth.items()}
            scan = arm.pipeline(xi, geometry, generator=noise_generator(seed + 1, 0, int(index[i])),
                                dose_scale=float(calib["arms"][arm.name]["factor"]),
                                background=twin_background([metric], ti))
            q = float(metric(scan.x_hat.float(), xi, **scan_truth(scan, ti))[0])
            axes[r, c].imshow(scan.x_hat[0, 0].T.numpy(), cmap="gray", vmin=0, vmax=0.5)
            axes[r, c].set_title(f"{arm.name}\n{q:.1f}, dose {float(scan.relative_dose[0]):.2f}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    return _save(fig, out / "figures" / "examples.png")


@torch.no_grad()
def _fig_angular(out: Path, arms: list, calib: dict, x: torch.Tensor, index: torch.Tensor, geometry: Any,
                 seed: int) -> str:
    from alara.pipeline import noise_generator

    plt = _plt()
    pick = _pick(x.shape[0], 3)
    k = len(pick)
    fig, axes = plt.subplots(1, k, figsize=(4.2 * k, 3.2), squeeze=False)
    theta = np.degrees(geometry.angles.numpy())
    for col, i in enumerate(pick):
        ax = axes[0, col]
        for arm in arms:
            if arm.reconstructor == "shared" and arm.name.startswith("learned"):
                continue   # same policy as learned_joint
            arm.pipeline.eval()
            scan = arm.pipeline(x[i:i + 1], geometry, generator=noise_generator(seed + 1, 0, int(index[i])),
                                dose_scale=float(calib["arms"][arm.name]["factor"]))
            ax.plot(theta, scan.n0[0].numpy(), label=arm.name)
        ax.set_yscale("log")
        ax.set_xlabel("view angle (deg)")
        ax.set_title(f"test image {int(index[i])}", fontsize=9)
    axes[0, 0].set_ylabel("n0 (photons per bin)")
    axes[0, -1].legend(fontsize=7)
    return _save(fig, out / "figures" / "angular.png")


def write_report(out: Path, *, rc: Any, spec: Any, arms: list, calib: dict, evaluation: dict,
                 x_test: torch.Tensor, idx_test: torch.Tensor, geometry: Any, metric: Any, data_root: Path,
                 timings: dict, wall_seconds: float,
                 truth_test: Optional[dict[str, torch.Tensor]] = None) -> dict[str, Any]:
    """Write metrics.json, the figures and report.md; returns the metrics."""
    import csv

    m = _metrics(rc, spec, arms, calib, evaluation, timings, wall_seconds, data_root)
    name = evaluation["metric"]
    with open(out / "results_test.csv") as fh:
        raw = list(csv.DictReader(fh))
    rows = {k: np.array([r[k] for r in raw]) for k in raw[0]}
    for k in rows:
        if k != "policy":
            rows[k] = rows[k].astype(float)
    figures = {
        "dose_vs_size": _fig_dose_vs_size(out, arms, rows),
        "quality": _fig_quality(out, arms, rows, name, calib["q"]),
        "curves": _fig_curves(out, arms, calib),
        "examples": _fig_examples(out, arms, calib, x_test, idx_test, geometry, metric, spec.examples, spec.seed,
                                  truth_test or {}),
        "angular": _fig_angular(out, arms, calib, x_test, idx_test, geometry, spec.seed),
    }
    m["figures"] = figures
    write_json(out / "metrics.json", m)
    _write_markdown(out, m, rc, spec)
    return m


def _write_markdown(out: Path, m: dict[str, Any], rc: Any, spec: Any) -> None:
    from alara.data.writer import atomic_file

    h, name = m["headline"], m["headline"]["metric"]
    lines = ["# End2end-ALARA against fixed dose, TCM and AEC", ""] + headline_lines(m) + [""]
    lines += ["## Setup", "",
              f"- Data: `{m['data']}`; {m['validation_images']} validation images (calibration), "
              f"{m['test_images']} test images of {m['test_patients']} patients (evaluation).",
              f"- Guarantee: each policy's doses are scaled by one global factor, found on the validation "
              f"split, until {100 * spec.share:.0f}% of images reach {name} >= {h['q']:g}; then evaluated on "
              f"the test split with exact Poisson noise ({spec.realisations} realisations per image, fixed seeds).",
              "- Reconstructors: every baseline and the oracle use one FBP + U-Net trained over the whole dose "
              f"range for {rc.train.total_steps} steps (the *shared* reconstructor); End2end-ALARA is shown with "
              f"its jointly trained reconstructor ({rc.train.warmup_steps} warm-up + {rc.train.steps} joint steps: "
              "the same budget) and with the shared one, so the gain of joint training is visible.",
              "- Every photon counts: the dose of scouts and pre-scans is included (1.0 = 4096 photons per bin "
              "on every view).", ""]
    if "slope" in m:
        s = m["slope"]
        lines += [f"- Dose response at the calibrated fixed dose (factor {s['at_factor']:.3g}): {name} rises "
                  f"{s['median']:.2f} per doubling of dose (median over validation images; 5th-95th percentile "
                  f"{s['p5']:.2f} to {s['p95']:.2f}); required: >= {s['min_slope']:g}.", ""]
    lines += ["## Results on the test split (at the guarantee)", "",
              f"| policy | prior | reconstructor | factor | dose mean | dose median | dose p5-p95 | {name} mean | "
              f"{name} std | {name} p5 | {name} min | share >= q |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a, p in m["policies"].items():
        d, q = p["test"]["relative_dose"], p["test"][name]
        lines.append(f"| {p['label']} | {p['prior']} | {p['reconstructor']} | {p['calibration_factor']:.3g} | "
                     f"{d['mean']:.3f} | {d['median']:.3f} | {d['p5']:.3f}-{d['p95']:.3f} | {q['mean']:.2f} | "
                     f"{q['std']:.2f} | {q['p5']:.2f} | {q['min']:.2f} | {100 * p['test']['share_met']:.1f}% |")
    if "oracle" in m:
        lines += ["", f"Per-image oracle on validation: mean relative dose {m['oracle']['validation_dose']:.3f} "
                      f"({m['oracle']['ratio_vs_fixed']:.2f}x fixed)."]
    others = {o: a["q"] for p in m["policies"].values() for o, a in p.get("also", {}).items()}
    if others:
        head = " | ".join(f"dose for {o} >= {q:g}" for o, q in others.items())
        lines += ["", f"## Doses each policy needs, target by target (test split, {100 * spec.share:.0f}% guarantee "
                      "calibrated on validation for each target separately)", "",
                  f"| policy | dose for {name} >= {h['q']:g} | {head} |", "|---|---|" + "---|" * len(others)]
        for a, p in m["policies"].items():
            cells = [f"{p['test']['relative_dose']['mean']:.3f} ({100 * p['test']['share_met']:.0f}% met)"]
            for o in others:
                ao = p.get("also", {}).get(o)
                if ao is None:
                    cells.append("-")
                elif "unreachable" in ao:
                    cells.append(f"out of reach (factor up to {spec.factor_range[1]:g})")
                else:
                    cells.append(f"{ao['relative_dose']['mean']:.3f} ({100 * ao['share_met']:.0f}% met)")
            lines.append(f"| {p['label']} | " + " | ".join(cells) + " |")
    if "matched_mean_q_target" in m:
        lines += ["", f"## At the same mean {name} ({m['matched_mean_q_target']:.2f}, the fixed policy's at its "
                      "guarantee)", "", f"| policy | dose mean | {name} mean |", "|---|---|---|"]
        for a, p in m["policies"].items():
            mm = p.get("matched_mean_q")
            if mm:
                lines.append(f"| {p['label']} | {mm['relative_dose_mean']:.3f} | {mm[f'{name}_mean']:.2f} |")
    f = m["figures"]
    lines += ["", "## Figures", "",
              f"![dose against patient size]({f['dose_vs_size']})", "",
              f"![{name} histograms]({f['quality']})", "",
              f"![guarantee against dose]({f['curves']})", "",
              f"![examples]({f['examples']})", "",
              f"![n0 per view]({f['angular']})", "",
              f"Wall time: {m['wall_seconds']:.0f} s ("
              + ", ".join(f"{k} {v:.0f} s" for k, v in m["timings"].items()) + ")."]
    with atomic_file(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")

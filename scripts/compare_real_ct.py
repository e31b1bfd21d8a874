#!/usr/bin/env python
"""Compare synthetic patients with real CT slices: HU histograms per tissue class and the
noise-power-like spectrum of soft-tissue ROIs; write a figure and print a table.

The real slices are pydicom's test data (pydicom-data: ``693_UNCI.dcm``, head;
``explicit_VR-UN.dcm``, abdomen), imported with ``alara data import-dicom``; synthetic
patients are written with ``alara data synth --no-observations``.  Both go through
LoDoPaB's recipe onto the same grid and are read back as HU, so the comparison sees what
the data sets hold.

    python scripts/compare_real_ct.py --out docs/figures/synthetic_vs_real.png
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REAL = {"head": "693_UNCI.dcm", "abdomen": "explicit_VR-UN.dcm"}
#: HU ranges of the tissue classes compared (lower bound inclusive).
CLASSES = {"lung": (-950.0, -500.0), "fat": (-200.0, -40.0), "soft tissue": (-40.0, 150.0),
           "bone": (200.0, 3000.0)}
ROI = 24            # soft-tissue ROI side (pixels)


def real_files() -> dict[str, Path]:
    """Paths of the real slices; a clear error when pydicom-data is not installed."""
    import pydicom.data

    out = {}
    for name, fname in REAL.items():
        try:
            path = pydicom.data.get_testdata_file(fname, download=False)
        except TypeError:  # pydicom < 3 has no download flag
            path = pydicom.data.get_testdata_file(fname)
        if path is None:
            raise SystemExit(f"{fname} is not available offline: install pydicom's test data "
                             f"(pip install pydicom-data) and run again")
        out[name] = Path(path)
    return out


def x_to_hu(x: np.ndarray) -> np.ndarray:
    """Inverse of LoDoPaB's recipe (``alara.data.lodopab.hu_to_x``) inside [0, 1]."""
    from alara.data.lodopab import MU_AIR, MU_WATER
    from alara.geometry import LODOPAB_MU_MAX

    return (x * LODOPAB_MU_MAX - MU_WATER) * 1000.0 / (MU_WATER - MU_AIR)


def read_split(root: Path, split: str) -> np.ndarray:
    """All ground-truth images of a split as HU ``[N, H, W]`` (axis 0: patient's left)."""
    from alara.data.reader import LoDoPaBDataset

    ds = LoDoPaBDataset(root, split, observations=False)
    return np.stack([x_to_hu(ds[i]["ground_truth"][0].numpy().astype(np.float64))
                     for i in range(len(ds))])


def import_real(tmp: Path, size: int) -> dict[str, np.ndarray]:
    from alara.cli import main

    out = {}
    for name, path in real_files().items():
        root = tmp / f"real_{name}"
        if main(["data", "import-dicom", str(root), str(path), "--image-size", str(size), "-q"]) != 0:
            raise SystemExit(f"alara data import-dicom failed for {path}")
        out[name] = read_split(root, "test")[0]
    return out


def synthesise(tmp: Path, size: int, patients: int, texture: bool) -> np.ndarray:
    from alara.cli import main

    root = tmp / f"synth_{'texture' if texture else 'cartoon'}"
    argv = ["data", "synth", str(root), "--train", str(patients), "--validation", "0", "--test", "0",
            "--slices", "2", "--image-size", str(size), "--no-observations", "-q"]
    if not texture:
        argv.append("--no-texture")
    if main(argv) != 0:
        raise SystemExit("alara data synth failed")
    return read_split(root, "train")


def class_stats(hu: np.ndarray) -> dict[str, dict[str, float]]:
    """Per tissue class: share of body pixels, mean, std and 5/50/95th percentiles (HU)."""
    body = hu > -950
    out = {}
    for name, (lo, hi) in CLASSES.items():
        v = hu[(hu >= lo) & (hu < hi)]
        if v.size < 20:
            continue
        p5, p50, p95 = np.percentile(v, [5, 50, 95])
        out[name] = {"fraction": float(v.size / max(body.sum(), 1)), "mean": float(v.mean()),
                     "std": float(v.std()), "p5": float(p5), "median": float(p50), "p95": float(p95)}
    return out


def soft_rois(hu: np.ndarray, size: int = ROI, stride: int = ROI // 2) -> list[np.ndarray]:
    """Square ROIs lying entirely in soft tissue (-40..150 HU, after a 2-pixel margin)."""
    lo, hi = CLASSES["soft tissue"]
    inside = (hu >= lo) & (hu < hi)
    rois = []
    for img, ok in zip(hu.reshape(-1, *hu.shape[-2:]), inside.reshape(-1, *hu.shape[-2:])):
        for i in range(2, img.shape[0] - size - 2, stride):
            for j in range(2, img.shape[1] - size - 2, stride):
                if ok[i - 2:i + size + 2, j - 2:j + size + 2].all():
                    rois.append(img[i:i + size, j:j + size])
    return rois


def radial_spectrum(rois: list[np.ndarray], pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Noise-power-like spectrum of the ROIs (mean removed, linear trend not removed):
    ``|FFT|^2 * pixel area / N`` (HU^2 mm^2), radially averaged; frequencies in 1/mm."""
    n = rois[0].shape[0]
    ps = np.mean([np.abs(np.fft.fft2(r - r.mean())) ** 2 for r in rois], axis=0) * pixel_mm ** 2 / n ** 2
    f = np.fft.fftfreq(n, d=pixel_mm)
    fr = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    edges = np.linspace(0, 0.5 / pixel_mm, n // 2 + 1)
    k = np.digitize(fr.ravel(), edges) - 1
    keep = (k >= 1) & (k < len(edges) - 1)
    power = np.bincount(k[keep], ps.ravel()[keep], minlength=len(edges)) / np.maximum(
        np.bincount(k[keep], minlength=len(edges)), 1)
    centres = (edges[:-1] + edges[1:]) / 2
    return centres[1:], power[1:len(edges) - 1]


def slope(f: np.ndarray, p: np.ndarray) -> float:
    """Power-law exponent beta (power ~ f^-beta) fitted in log-log over the bins used."""
    ok = p > 0
    return float(-np.polyfit(np.log(f[ok]), np.log(p[ok]), 1)[0])


def roi_summary(hu: np.ndarray, pixel_mm: float) -> dict:
    rois = soft_rois(hu)
    if not rois:
        return {"n_rois": 0}
    f, p = radial_spectrum(rois, pixel_mm)
    band = (f > 0.04) & (f < 0.35)
    return {"n_rois": len(rois), "std": float(np.mean([r.std() for r in rois])),
            "beta": slope(f[band], p[band]), "f": f.tolist(), "power": p.tolist()}


def figure(real: dict, synth: np.ndarray, cartoon: np.ndarray, stats: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 4, figsize=(17, 8.5))
    shows = [("real head (693_UNCI)", real["head"]), ("real abdomen (explicit_VR-UN)", real["abdomen"]),
             ("synthetic, textured", synth[0]), ("synthetic, textured", synth[-1])]
    for a, (title, img) in zip(ax[0], shows):
        a.imshow(img.T, cmap="gray", vmin=-160, vmax=240)   # imshow(x.T): upright (LoDoPaB)
        a.set_title(f"{title}\nwindow W400 L40")
        a.axis("off")
    colours = {"real abdomen": "k", "real head": "gray", "synthetic": "tab:red", "cartoon": "tab:blue"}
    data = {"real abdomen": real["abdomen"], "real head": real["head"], "synthetic": synth,
            "cartoon": cartoon}
    for a, cls in zip(ax[1][:3], ("fat", "soft tissue", "bone")):
        lo, hi = CLASSES[cls]
        bins = np.linspace(lo, min(hi, 1500), 60)
        for name, img in data.items():
            v = img[(img >= lo) & (img < hi)]
            if v.size > 20:
                a.hist(v, bins=bins, density=True, histtype="step", color=colours[name], label=name)
        a.set_title(f"HU histogram: {cls}")
        a.set_xlabel("HU")
        a.legend(fontsize=8)
    a = ax[1][3]
    for name in ("real abdomen", "real head", "synthetic"):
        s = stats["rois"][name]
        if s.get("n_rois"):
            a.loglog(s["f"], s["power"], color=colours[name],
                     label=f"{name}: std {s['std']:.0f} HU, beta {s['beta']:.1f}")
    a.set_title(f"soft-tissue ROIs ({ROI} px): radial power spectrum")
    a.set_xlabel("spatial frequency (1/mm)")
    a.set_ylabel("HU$^2$ mm$^2$")
    a.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=362,
                   help="grid N x N over LoDoPaB's 26 cm field of view (default 362: 0.72 mm)")
    p.add_argument("--patients", type=int, default=8, help="synthetic patients (2 slices each)")
    p.add_argument("--out", type=Path, default=Path("docs/figures/synthetic_vs_real.png"),
                   help="figure (PNG) to write")
    p.add_argument("--json", type=Path, help="also write the statistics here")
    args = p.parse_args(argv)
    pixel_mm = 260.0 / args.image_size
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        real = import_real(tmp, args.image_size)
        synth = synthesise(tmp, args.image_size, args.patients, texture=True)
        cartoon = synthesise(tmp, args.image_size, args.patients, texture=False)
    sets = {"real abdomen": real["abdomen"], "real head": real["head"], "synthetic": synth,
            "cartoon": cartoon}
    stats = {"classes": {k: class_stats(v) for k, v in sets.items()},
             "rois": {k: roi_summary(v, pixel_mm) for k, v in sets.items()}}
    print(f"grid {args.image_size} x {args.image_size} ({pixel_mm:.2f} mm pixels)")
    print("| data | class | share of body | mean HU | std HU | p5 / median / p95 HU |")
    print("|---|---|---|---|---|---|")
    for name, cls in stats["classes"].items():
        for c, s in cls.items():
            print(f"| {name} | {c} | {s['fraction']:.2f} | {s['mean']:.0f} | {s['std']:.0f} | "
                  f"{s['p5']:.0f} / {s['median']:.0f} / {s['p95']:.0f} |")
    print(f"\n| data | soft-tissue ROIs ({ROI} px) | ROI std HU | spectral exponent beta |")
    print("|---|---|---|---|")
    for name, s in stats["rois"].items():
        if s.get("n_rois"):
            print(f"| {name} | {s['n_rois']} | {s['std']:.1f} | {s['beta']:.2f} |")
        else:
            print(f"| {name} | 0 | - | - |")
    figure(real, synth, cartoon, stats, args.out)
    print(f"\nwrote {args.out}")
    if args.json:
        args.json.write_text(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``alara demo``: project and reconstruct a phantom at LoDoPaB dose and write a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from alara import ops, phantom
from alara.cli import photons, whole
from alara.data.synth import simulate_observation
from alara.atomic import atomic_file
from alara.geometry import LODOPAB_N0, lodopab


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> float:
    mse = torch.mean((x - ref) ** 2).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(data_range**2 / mse)).item()


def run(size: int, views: int, bins: int, n0: float, out: Path, seed: int) -> dict[str, float]:
    """Simulate one noisy scan of a Shepp-Logan phantom, reconstruct it, save a figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    # The format follows the name: PNG bytes under a .jpg name would mislead every viewer.
    kind = Path(out).suffix.lower().lstrip(".")
    supported = Figure().canvas.get_supported_filetypes()
    if kind not in supported and not Path(out).is_dir():  # a folder gets the writer's own message
        raise ValueError(f"--out {out}: {'no' if not kind else 'unknown'} image format "
                         f"{'(no extension)' if not kind else repr('.' + kind)}; end the name in .png "
                         f"(or {', '.join('.' + k for k in sorted(supported) if k != 'png')})")
    geometry = lodopab(views, bins, size)
    x = phantom.rasterize(phantom.shepp_logan(0.12, scale=0.5), geometry.grid, 4,
                          dtype=torch.float32)[None, None]
    gen = torch.Generator().manual_seed(seed)
    y = simulate_observation(x, geometry, n0, generator=gen)
    rec = ops.fbp(y, geometry, filter="hann", frequency_scaling=0.641)
    score = psnr(rec, x)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, img, title in zip(axes, (x, y, rec), ("phantom (mu / mu_max)",
                                                 f"sinogram, n0 = {n0:g}",
                                                 f"FBP (hann, 0.641): PSNR {score:.2f} dB")):
        # LoDoPaB convention: sinograms are [views, bins]; images show upright transposed.
        shown = img[0, 0] if img is y else img[0, 0].T
        ax.imshow(shown.numpy(), cmap="gray", aspect="auto" if img is y else "equal")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    try:
        # written next to the target and renamed: an interrupted run leaves no half image
        with atomic_file(out) as tmp:
            fig.savefig(tmp, dpi=100, format=kind)
    finally:
        plt.close(fig)
    return {"psnr": score}


def _run(args: argparse.Namespace) -> int:
    result = run(args.size, args.views, args.bins, args.n0, Path(args.out), args.seed)
    print(f"wrote {args.out}: FBP PSNR {result['psnr']:.2f} dB")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="project and reconstruct a phantom, write a PNG",
                       description="Simulate a LoDoPaB-style scan of a Shepp-Logan phantom "
                                   "(Poisson noise at n0 photons) and reconstruct it by FBP.")
    p.add_argument("--size", type=whole(1), default=362, help="image side in pixels (default 362)")
    p.add_argument("--views", type=whole(1), default=1000, help="number of angles (default 1000)")
    p.add_argument("--bins", type=whole(1), default=513, help="detector bins (default 513)")
    p.add_argument("--n0", type=photons, default=LODOPAB_N0, help="photons per bin and view")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--out", default="results/demo.png", help="output PNG path")
    p.set_defaults(func=_run)

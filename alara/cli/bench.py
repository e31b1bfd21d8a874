"""``alara bench``: time alara's operators against every installed peer in one process.

Each case (geometry, operation, batch) is timed for alara's native and pure-torch
backends and for the peers found (ASTRA CPU and, with ``--device cuda``, ASTRA GPU;
scikit-image for the parallel beam), on the same data, one after the other, so that the
printed ratios compare runs on the same (possibly shared) machine.  Peers loop over the
batch, as their users do.  The ratio column divides by the case's reference peer: ASTRA's
``line`` projector (``line_fanflat`` for fan beams) on CPU, ASTRA's GPU projector on CUDA.

The peer adapters (:func:`astra_pair`, :func:`skimage_pair`) are also what the peer tests
in ``tests/ops/test_peers.py`` check against alara, so a wrong convention fails there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from alara.geometry import FanBeam, Geometry, ImageGrid, ParallelBeam, lodopab, uniform_angles

Pair = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]
OPS = ("fp", "bp")

# Fan beams: source and detector 0.5 m from the axis (magnification 2), 513 bins.
_SRC = _DET = 0.5


def _lodopab_pixels(shape: tuple[int, int], centre: tuple[float, float] = (0.0, 0.0)) -> ImageGrid:
    """A grid of LoDoPaB's pixels (0.26 m / 362), ``shape`` pixels around ``centre``."""
    d = 0.26 / 362
    half = (shape[0] * d / 2, shape[1] * d / 2)
    return ImageGrid(shape, (centre[0] - half[0], centre[1] - half[1]),
                     (centre[0] + half[0], centre[1] + half[1]))


def _parallel(grid: ImageGrid, n_views: int) -> ParallelBeam:
    """1000-ish views on [0, pi), 513 bins covering the grid's corners."""
    return ParallelBeam(grid, uniform_angles(n_views), 513, 2 * grid.radius / 513)


def fan_geometry(detector: str = "flat", n_views: int = 1000, stop: float = 2 * math.pi,
                 bin_offset: float = 0.0) -> FanBeam:
    """The LoDoPaB grid seen by a fan beam: ``n_views`` views k stop / n_views from 0, 513
    bins covering the image (plus 2%), source and detector 0.5 m from the axis
    (magnification 2); ``bin_offset`` in bins (a quarter-detector offset: 0.25)."""
    grid = lodopab().grid
    half = math.tan(math.asin(grid.radius / _SRC))  # half-width of the image's shadow, per m
    angles = torch.linspace(0, stop, n_views + 1, dtype=torch.float64)[:-1]
    # a curved detector gets the same fan angles on an equiangular arc
    ds = 2.04 * (math.atan(half) if detector == "curved" else half) / 513
    return FanBeam(grid, angles, 513, ds, src_radius=_SRC, det_radius=_DET, detector=detector,
                   bin_offset=bin_offset * ds)


def short_scan_range() -> float:
    """pi + the fan angle of the LoDoPaB image seen from the source: a short scan."""
    return math.pi + 2 * math.asin(lodopab().grid.radius / _SRC)


# name -> (builder, description).  The first three have the symmetries of the square that
# the CPU kernels exploit (symmetric view sets on a centred square grid and detector); the
# others are what scanners and protocols also use, and take the per-view kernels.
GEOMETRIES: dict[str, tuple[Callable[[], Geometry], str]] = {
    "lodopab": (lodopab, "LoDoPaB: 362 x 362, parallel, 1000 views on [0, pi), 513 bins"),
    "fan": (lambda: fan_geometry("flat"), "fan beam, flat detector, 1000 views over 2 pi"),
    "fan-curved": (lambda: fan_geometry("curved"), "fan beam, curved detector, 1000 views over 2 pi"),
    "parallel-1001": (lambda: _parallel(lodopab().grid, 1001), "parallel, 1001 views (odd)"),
    "off-centre": (lambda: _parallel(_lodopab_pixels((362, 362), (0.02, -0.013)), 1000),
                   "parallel, 1000 views, the grid 20 / -13 mm off the rotation axis"),
    "non-square": (lambda: _parallel(_lodopab_pixels((362, 256)), 1000),
                   "parallel, 1000 views, 362 x 256 pixels"),
    "fan-offset": (lambda: fan_geometry("flat", 984, bin_offset=0.25),
                   "fan beam, 984 views over 2 pi, quarter-bin detector offset"),
    "fan-short": (lambda: fan_geometry("flat", 720, short_scan_range()),
                  "fan beam short scan, 720 views over pi + fan angle"),
    "fan-997": (lambda: fan_geometry("flat", 997), "fan beam, 997 views (prime) over 2 pi"),
}
GEOMETRY_CHOICES = tuple(GEOMETRIES)
GEOMETRY_GROUPS = {"all": GEOMETRY_CHOICES, "symmetric": ("lodopab", "fan", "fan-curved"),
                   "asymmetric": GEOMETRY_CHOICES[3:]}


def bench_geometry(name: str) -> Geometry:
    """One of :data:`GEOMETRIES` by name."""
    if name not in GEOMETRIES:
        raise ValueError(f"unknown benchmark geometry {name!r}; choose from {GEOMETRY_CHOICES}")
    return GEOMETRIES[name][0]()


def parse_geometries(text: str) -> list[str]:
    """``"lodopab,fan-short"``, a group (``all``, ``symmetric``, ``asymmetric``) or a mix ->
    the geometries' names, in the order given, without repeats."""
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        names = GEOMETRY_GROUPS.get(part, (part,))
        for name in names:
            if name not in GEOMETRIES:
                raise ValueError(f"--geometry: unknown geometry {name!r}; choose from "
                                 f"{', '.join(GEOMETRY_CHOICES)} or {', '.join(GEOMETRY_GROUPS)}")
            if name not in out:
                out.append(name)
    if not out:
        raise ValueError(f"--geometry: no geometry in {text!r}")
    return out


# --------------------------------------------------------------------------- peers


def _batched(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def run(a: np.ndarray) -> np.ndarray:
        out = np.stack([fn(s) for s in a.reshape(-1, *a.shape[-2:])])
        return out.reshape(*a.shape[:-2], *out.shape[-2:])

    return run


def astra_geometries(geometry: Geometry):
    """ASTRA volume and projection geometries computing alara's transform.

    ASTRA's volume rows run along its y axis from max to min and its columns along x; with
    alara's axis 0 (world x) as ASTRA's rows, the image goes in untransposed when ASTRA's
    x is alara's y and ASTRA's y is alara's -x: ``create_vol_geom(n0, n1, ymin, ymax,
    -xmax, -xmin)``, and that rotation by 90 degrees shifts every angle by ``-pi/2``.
    A curved fan has no ASTRA 2-D counterpart (``ValueError``).
    """
    import astra

    grid = geometry.grid
    (xmin, ymin), (xmax, ymax) = grid.min_pt, grid.max_pt
    vol = astra.create_vol_geom(grid.shape[0], grid.shape[1], ymin, ymax, -xmax, -xmin)
    if abs(geometry.bin_offset) > 0:
        raise ValueError("ASTRA's plain geometries have no detector offset")
    angles = geometry.angles.numpy() - math.pi / 2
    if isinstance(geometry, ParallelBeam):
        return vol, astra.create_proj_geom("parallel", geometry.bin_spacing, geometry.n_bins, angles)
    if geometry.detector != "flat":
        raise ValueError("ASTRA has no 2-D curved fan-beam detector")
    return vol, astra.create_proj_geom("fanflat", geometry.bin_spacing, geometry.n_bins, angles,
                                       geometry.src_radius, geometry.det_radius)


def astra_pair(geometry: Geometry, projector: str) -> Pair:
    """ASTRA's ``projector`` (``line``, ``linear``, ``strip``, ``line_fanflat``; ``cuda``
    runs on the GPU) as ``(forward, backward)`` on float32 arrays ``[..., rows, cols]``."""
    import astra

    vol, proj = astra_geometries(geometry)
    pid = astra.create_projector(projector, proj, vol)

    def forward(img: np.ndarray) -> np.ndarray:
        sid, sino = astra.create_sino(np.ascontiguousarray(img, dtype=np.float32), pid)
        astra.data2d.delete(sid)
        return sino

    def backward(sino: np.ndarray) -> np.ndarray:
        bid, img = astra.create_backprojection(np.ascontiguousarray(sino, dtype=np.float32), pid)
        astra.data2d.delete(bid)
        return img

    return _batched(forward), _batched(backward)


def skimage_pair(geometry: ParallelBeam) -> Pair:
    """scikit-image's ``radon`` and unfiltered ``iradon`` (parallel beam only).  ``radon``
    picks its own detector (one bin per pixel of the padded diagonal), so the backward
    callable takes a sinogram made by the forward one, not alara's."""
    from skimage import transform

    theta = np.degrees(geometry.angles.numpy())
    size = geometry.grid.shape[0]

    def forward(img: np.ndarray) -> np.ndarray:
        return transform.radon(img, theta=theta, circle=False)

    def backward(sino: np.ndarray) -> np.ndarray:
        return transform.iradon(sino, theta=theta, filter_name=None, circle=False, output_size=size)

    return _batched(forward), _batched(backward)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def astra_cuda_available() -> bool:
    if not _installed("astra"):
        return False
    import astra

    return bool(astra.use_cuda())


# --------------------------------------------------------------------------- timing


@dataclass
class Result:
    geometry: str
    op: str
    batch: int
    impl: str
    ms: float  # best of the rounds
    rounds_ms: list[float] = field(default_factory=list)
    ratio: float | None = None  # ms / the reference's ms in the same case
    per_image_vs_batch1: float | None = None  # (ms / batch) / ms at batch 1, same impl


def time_call(fn: Callable[[], object], rounds: int, cuda: bool) -> list[float]:
    """Wall times (ms) of ``rounds`` calls after one warm-up call."""
    def sync():
        if cuda:
            torch.cuda.synchronize()

    fn()
    sync()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _cases(geometry: Geometry, name: str, device: str, impls: set[str]):
    """``(impl, fp, bp, takes_torch, reference)`` for every implementation to time."""
    from alara import ops
    from alara.ops import backend

    dev = torch.device(device)
    if "native" in impls and backend.native_available(dev):
        yield ("alara-native", lambda x: ops.project(x, geometry, "native"),
               lambda y: ops.backproject(y, geometry, "native"), True)
    if "torch" in impls:
        yield ("alara-torch", lambda x: ops.project(x, geometry, "torch"),
               lambda y: ops.backproject(y, geometry, "torch"), True)
    if "astra" in impls and _installed("astra"):
        flat = peer_geometry(geometry, name)
        if device == "cuda":
            if astra_cuda_available():
                yield ("astra-gpu", *astra_pair(flat, "cuda"), False)
        elif isinstance(geometry, ParallelBeam):
            yield ("astra-line", *astra_pair(flat, "line"), False)
            yield ("astra-linear", *astra_pair(flat, "linear"), False)
        else:
            yield ("astra-line_fanflat", *astra_pair(flat, "line_fanflat"), False)
    if "skimage" in impls and device == "cpu" and isinstance(geometry, ParallelBeam) \
            and _square_centred(geometry.grid) and _installed("skimage"):
        yield ("skimage", *skimage_pair(geometry), False)


def peer_geometry(geometry: Geometry, name: str) -> Geometry:
    """The geometry the peers run for ``geometry``: itself, or the nearest one they have
    (a curved fan as the flat fan of the same fan angles; a detector offset dropped), which
    costs them the same."""
    if name == "fan-curved":
        return fan_geometry("flat")
    if abs(geometry.bin_offset) > 0:
        return dataclasses.replace(geometry, bin_offset=0.0)
    return geometry


def _square_centred(grid: ImageGrid) -> bool:
    """scikit-image's radon takes square images centred on the rotation axis."""
    (x0, y0), (x1, y1) = grid.min_pt, grid.max_pt
    return grid.shape[0] == grid.shape[1] and abs(x0 + x1) < 1e-12 and abs(y0 + y1) < 1e-12


def reference_impl(geometry: Geometry, device: str) -> str:
    if device == "cuda":
        return "astra-gpu"
    return "astra-line" if isinstance(geometry, ParallelBeam) else "astra-line_fanflat"


def run(geometries: list[str], batches: list[int], ops_: list[str], dtype: torch.dtype,
        device: str, rounds: int, impls: set[str], log=print) -> list[Result]:
    """Time every case; returns the results with ratios filled in."""
    results: list[Result] = []
    gen = torch.Generator().manual_seed(0)
    cuda = device == "cuda"
    for name in geometries:
        g = bench_geometry(name)
        cases = list(_cases(g, name, device, impls))
        for batch in batches:
            x = torch.rand(batch, 1, *g.grid.shape, generator=gen, dtype=dtype).to(device)
            y = torch.rand(batch, 1, *g.sinogram_shape, generator=gen, dtype=dtype).to(device)
            xs, ys = (x.float().cpu().numpy(), y.float().cpu().numpy())
            for op in ops_:
                for impl, fp, bp, takes_torch in cases:
                    fn = fp if op == "fp" else bp
                    if takes_torch:
                        arg = x if op == "fp" else y
                    else:  # scikit-image's backward takes its own sinogram
                        arg = xs if op == "fp" else (fp(xs) if impl == "skimage" else ys)
                    times = time_call(lambda: fn(arg), rounds, cuda)
                    results.append(Result(name, op, batch, impl, min(times), times))
                    log(f"  {name:<10} {op} b{batch:<3} {impl:<19} {min(times):10.1f} ms")
    _fill_ratios(results, device)
    return results


def _fill_ratios(results: list[Result], device: str) -> None:
    by_case = {}
    for r in results:
        by_case.setdefault((r.geometry, r.op, r.batch), {})[r.impl] = r
    for (name, op, batch), impls in by_case.items():
        ref = impls.get(reference_impl(bench_geometry(name), device))
        for r in impls.values():
            if ref is not None:
                r.ratio = r.ms / ref.ms
            one = by_case.get((name, op, 1), {}).get(r.impl)
            if one is not None:
                r.per_image_vs_batch1 = (r.ms / batch) / one.ms


def format_table(results: list[Result], device: str) -> str:
    """Markdown table: one row per case and implementation."""
    lines = ["| geometry | op | batch | implementation | ms (best) | ratio to reference | "
             "per image / batch 1 | ms (worst) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        ref = reference_impl(bench_geometry(r.geometry), device)
        ratio = f"{r.ratio:.3f}x {ref}" if r.ratio is not None else "-"
        per = f"{r.per_image_vs_batch1:.2f}" if r.per_image_vs_batch1 is not None else "-"
        worst = f"{max(r.rounds_ms):.1f}" if r.rounds_ms else "-"
        lines.append(f"| {r.geometry} | {r.op} | {r.batch} | {r.impl} | {r.ms:.1f} | {ratio} | "
                     f"{per} | {worst} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- machine


def machine_info(device: str) -> dict[str, object]:
    """What the numbers depend on: versions, threads, CPU or GPU, the load average."""
    from alara.cli import info

    out: dict[str, object] = dict(info.collect())
    out["cpu"] = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                out["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out["cores"] = os.cpu_count()
    out["load average (1, 5, 15 min)"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    if _installed("astra"):
        import astra

        out["astra"] = astra.__version__
    if _installed("skimage"):
        import skimage

        out["scikit-image"] = skimage.__version__
    if device == "cuda" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


# Another PyTorch process at work: short elementwise ops on 2-thread tensors (many short
# parallel regions, as a training step's activations and optimiser) and a matrix product.
# Beside such a process, kernels that open a parallel region per view collapsed 8-12x on
# 2 threads while plain busy loops barely slowed them (issue 23): two OpenMP runtimes
# competing for the cores, each region's join waiting for a descheduled thread.
_TORCH_LOAD = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
x, a = torch.rand(200_000), torch.rand(256, 256)
print("ready", flush=True)
while True:
    for _ in range(50):
        x = torch.sin(x).add_(0.1)
    a = torch.tanh(a @ a)
"""

LOAD_KINDS = ("busy", "torch")


class BusyLoad:
    """``n`` processes at work while the benchmark runs (a shared machine): ``busy``, a
    Python loop spinning on one core; ``torch``, PyTorch tensor work on ``threads`` threads
    (see ``_TORCH_LOAD``)."""

    def __init__(self, n: int, kind: str = "busy", threads: int = 2):
        if kind not in LOAD_KINDS:
            raise ValueError(f"--load-kind must be one of {LOAD_KINDS}, got {kind!r}")
        self.n, self.kind, self.threads = n, kind, threads
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        try:
            for _ in range(self.n):
                if self.kind == "busy":
                    self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
                else:
                    self.procs.append(subprocess.Popen(
                        [sys.executable, "-c", _TORCH_LOAD, str(self.threads)],
                        stdout=subprocess.PIPE, text=True))
            for p in self.procs:  # time nothing before the load runs (importing torch: ~s)
                if self.kind == "torch" and p.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"the torch load process failed to start (exit code "
                                       f"{p.poll()})")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()
            if p.stdout is not None:
                p.stdout.close()
        self.procs = []


# --------------------------------------------------------------------------- CLI


def parse_batches(text: str) -> list[int]:
    """``"1,8"`` or ``"1-16"`` (or a mix, ``"1-4,8,16"``) -> sorted batch sizes."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                out.update(range(lo, hi + 1))
            elif part:
                out.add(int(part))
        except ValueError:
            raise ValueError(f"--batch takes sizes like 1,8 or 1-16, got {text!r}") from None
    if not out or min(out) < 1:
        raise ValueError(f"--batch sizes must be >= 1, got {text!r}")
    return sorted(out)


def _run(args: argparse.Namespace) -> int:
    geometries = parse_geometries(args.geometry)
    batches = parse_batches(args.batch)
    ops_ = list(OPS) if args.op == "both" else [args.op]
    impls = {s.strip() for s in args.impl.split(",") if s.strip()}
    unknown = impls - {"native", "torch", "astra", "skimage"}
    if unknown:
        raise ValueError(f"--impl takes native, torch, astra, skimage; got {sorted(unknown)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda needs a CUDA GPU, and torch sees none")
    if args.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    load_kind = args.load_kind or ("torch" if args.sharing else "busy")
    if args.sharing:
        if args.device != "cpu":
            raise ValueError("--sharing measures the CPU operators; drop --device cuda")
        impls &= {"native", "torch"}  # (the peers' CPU projectors use one thread)
        if not impls:
            raise ValueError("--sharing times alara's operators: give --impl native and/or torch")
        args.load = max(args.load, 1)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    meta = machine_info(args.device)
    meta["command"] = "alara bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "alara bench"
    meta["load processes added"] = args.load
    meta["load kind"] = (f"{load_kind}" + (f" ({args.load_threads} threads each)"
                                           if load_kind == "torch" else ""))
    print(f"alara bench on {meta['cpu']} ({meta['threads']} threads), load average "
          f"{meta['load average (1, 5, 15 min)']}, {args.device}, {args.dtype}", flush=True)
    record: dict = {"machine": meta, "dtype": args.dtype, "device": args.device}
    if args.sharing:
        from alara.cli.bench_sharing import format_sharing, measure_sharing

        threads = torch.get_num_threads()
        rows = measure_sharing(run, lambda: BusyLoad(args.load, load_kind, args.load_threads),
                               geometries, batches, ops_, dtype, args.rounds, impls, threads,
                               args.repeats, log=lambda s: print(s, flush=True))
        print()
        print(format_sharing(rows, threads))
        record["sharing"] = [dict(asdict(r), worst_ratio=r.worst_ratio, median_ratio=r.median_ratio)
                             for r in rows]
    else:
        with BusyLoad(args.load, load_kind, args.load_threads):
            results = run(geometries, batches, ops_, dtype, args.device, args.rounds, impls,
                          log=lambda s: print(s, flush=True))
        print()
        print(format_table(results, args.device))
        record["results"] = [asdict(r) for r in results]
    if args.json:
        from alara.atomic import atomic_file

        meta["load average after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        with atomic_file(args.json) as tmp:
            tmp.write_text(json.dumps(record, indent=1, default=str))
        print(f"\nwrote {args.json}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from alara.cli import whole

    p = sub.add_parser("bench", help="time the CT operators against installed peers",
                       description="Time alara's native and pure-torch projection (fp) and "
                                   "backprojection (bp) against every installed peer (ASTRA "
                                   "CPU/GPU, scikit-image) in one process and print the "
                                   "ratios to ASTRA.")
    p.add_argument("--geometry", default="all", metavar="NAMES",
                   help="comma list of geometries or groups (default: all); groups: "
                        + "; ".join(f"{k}: {', '.join(v)}" for k, v in GEOMETRY_GROUPS.items()
                                    if k != "all")
                        + ". Geometries: " + "; ".join(f"{k}: {d}" for k, (_, d) in GEOMETRIES.items()))
    p.add_argument("--batch", default="1,8", help="batch sizes, e.g. 1,8 or 1-16 (default 1,8)")
    p.add_argument("--op", choices=("fp", "bp", "both"), default="both")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="alara's dtype (peers always run in float32)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--impl", default="native,torch,astra,skimage",
                   help="comma list of implementations to time (default: all installed)")
    p.add_argument("--rounds", type=int, default=3, help="timed calls per case, after one "
                   "warm-up; the best is reported (default 3)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch/alara CPU threads (default: torch's); ASTRA's CPU projectors "
                        "use one")
    p.add_argument("--load", type=whole(0), default=0, metavar="N",
                   help="run N processes at work meanwhile, to measure a shared machine "
                        "(their kind: --load-kind)")
    p.add_argument("--load-kind", choices=LOAD_KINDS, default=None,
                   help="busy: a Python loop spinning on one core; torch: another PyTorch "
                        "process doing tensor work on --load-threads threads (what a second "
                        "job, DataLoader workers or a test suite do) (default busy; torch "
                        "with --sharing)")
    p.add_argument("--load-threads", type=whole(1), default=2, metavar="T",
                   help="threads of each torch load process (default 2)")
    p.add_argument("--sharing", action="store_true",
                   help="measure a shared machine: alara's operators on --threads threads "
                        "alone, then beside --load processes (at least 1; --load-kind torch "
                        "by default) on --threads threads and on 1 thread, --repeats times in "
                        "alternation; prints the worst loaded call over the worst on 1 thread "
                        "(target <= 1.1) and the median loaded over alone (target <= 2.2)")
    p.add_argument("--repeats", type=int, default=2, metavar="R",
                   help="alternations of the three settings of --sharing (default 2)")
    p.add_argument("--json", metavar="OUT", help="also write every timing to this JSON file")
    p.set_defaults(func=_run)

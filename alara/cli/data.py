"""``alara data synth | check | import-dicom | fetch``: build, validate and download
LoDoPaB-layout data."""

from __future__ import annotations

import argparse
import sys

from alara.cli import photons as _photons
from alara.cli import whole as _whole
from alara.data.lodopab import SPLITS


def _geometry(args: argparse.Namespace):
    from alara.data.synth import small_geometry
    from alara.geometry import lodopab

    if args.lodopab:
        return lodopab()
    return small_geometry(args.image_size, args.n_angles, args.n_bins)


def _add_geometry_args(p: argparse.ArgumentParser, default_size: int, default_angles: int) -> None:
    g = p.add_argument_group("geometry (LoDoPaB's 0.26 m field of view, parallel beam)")
    g.add_argument("--image-size", type=_whole(1), default=default_size, metavar="N",
                   help=f"image size N x N (default {default_size})")
    g.add_argument("--n-angles", type=_whole(1), default=default_angles, metavar="V",
                   help=f"number of views over [0, pi) (default {default_angles})")
    g.add_argument("--n-bins", type=_whole(1), default=None, metavar="K",
                   help="detector bins (default: odd number nearest N * sqrt(2))")
    g.add_argument("--lodopab", action="store_true",
                   help="full LoDoPaB geometry: 362 x 362, 1000 views, 513 bins "
                        "(overrides the three options above)")


def _add_output_args(p: argparse.ArgumentParser, seed_help: str) -> None:
    """Options shared by the commands that write a data set."""
    p.add_argument("--seed", type=int, default=0, help=f"{seed_help} (default 0)")
    p.add_argument("--upsample", type=_whole(1), default=2,
                   help="simulate observations on an UPSAMPLE-times finer grid (default 2)")
    p.add_argument("--n0", type=_photons, default=4096.0, help="photons per bin (default 4096)")
    p.add_argument("--samples-per-file", type=_whole(1), default=128, help="default 128 (LoDoPaB)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_texture_args(p: argparse.ArgumentParser) -> None:
    from alara.data.texture import DEFAULT_TEXTURE as d

    g = p.add_argument_group("texture (tissue texture, lung vessels and airways; see docs/data.md)")
    g.add_argument("--no-texture", action="store_true",
                   help="piecewise-constant cartoon patients (no texture, vessel trees, airways)")
    g.add_argument("--soft-hu", type=float, default=d.soft_hu, metavar="HU",
                   help=f"soft-tissue and organ texture std in HU (default {d.soft_hu:g})")
    g.add_argument("--lung-hu", type=float, default=d.lung_hu, metavar="HU",
                   help=f"lung parenchyma texture std in HU (default {d.lung_hu:g})")
    g.add_argument("--bone-hu", type=float, default=d.bone_hu, metavar="HU",
                   help=f"trabecular bone texture std in HU (default {d.bone_hu:g})")


def _output_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of ``generate_dataset`` / ``import_dicom`` from the shared options."""
    return dict(geometry=_geometry(args), upsample=args.upsample, n0=args.n0, seed=args.seed,
                samples_per_file=args.samples_per_file, overwrite=args.overwrite,
                progress=not args.quiet)


def _synth(args: argparse.Namespace) -> int:
    from alara.data.synth import generate_dataset
    from alara.data.texture import TextureParams

    texture = None if args.no_texture else TextureParams(
        soft_hu=args.soft_hu, lung_hu=args.lung_hu, bone_hu=args.bone_hu)
    result = generate_dataset(
        args.out, patients=(args.train, args.validation, args.test),
        slices_per_patient=args.slices, observations=not args.no_observations,
        texture=texture, lesion_free=args.lesion_free, lesion_slices=args.lesion_slices,
        train_sizes=args.train_sizes, **_output_kwargs(args))
    lengths = ", ".join(f"{k} {v}" for k, v in result.info.lengths.items())
    print(f"wrote {result.root}: {lengths} samples from {result.n_patients} patients "
          f"({result.seconds_per_patient:.2f} s per patient)")
    return 0


def _check(args: argparse.Namespace) -> int:
    from alara.data.check import check_dataset

    show = None if args.quiet else (lambda name: print(f"checking {name}", file=sys.stderr))
    problems = check_dataset(args.dir, args.split or None, scan_values=not args.headers_only,
                             progress=show, note=lambda text: print(f"note: {text}", file=sys.stderr))
    if problems:
        print(f"{args.dir}: {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"{args.dir}: OK")
    return 0


def _import_dicom(args: argparse.Namespace) -> int:
    from alara.data.dicom import import_dicom

    info = import_dicom(
        args.inputs, args.out, split=args.split, observations=args.observations,
        mode="crop" if args.crop else "resample", **_output_kwargs(args))
    print(f"wrote {args.out}: {info.lengths[args.split]} {args.split} slices from "
          f"{info.extra['n_patients']} patient(s)")
    return 0


def _fetch_lodopab(args: argparse.Namespace) -> int:
    from alara.data.fetch import fetch_lodopab

    log = None if args.quiet else (lambda text: print(text, file=sys.stderr))
    result = fetch_lodopab(args.dir, args.splits, keep_archives=args.keep_archives,
                           base_url=args.base_url, timeout=args.timeout,
                           progress=not args.quiet, log=log)
    parts = [f"{len(result.downloaded)} file(s) downloaded"]
    if result.found:
        parts.append(f"{len(result.found)} found in the directory and verified")
    if result.unpacked:
        parts.append(f"{len(result.unpacked)} archive(s) unpacked and checked")
    if result.removed:
        parts.append(f"{len(result.removed)} archive(s) removed")
    if result.skipped:
        parts.append(f"already in place: {', '.join(result.skipped)}")
    print(f"{result.root}: LoDoPaB-CT {', '.join(result.splits)}: {'; '.join(parts)}")
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _add_fetch_parser(dsub: argparse._SubParsersAction) -> None:
    from alara.data.fetch import ZENODO_RECORD_URL, ZENODO_URL

    fetch = dsub.add_parser("fetch", help="download a public data set (LoDoPaB-CT)",
                            description="Download a public data set into the LoDoPaB layout.")
    fetch.set_defaults(func=lambda args: (fetch.print_help(), 2)[1])
    fsub = fetch.add_subparsers(dest="fetch_dataset", metavar="DATASET")
    p = fsub.add_parser(
        "lodopab", help=f"LoDoPaB-CT from Zenodo ({ZENODO_RECORD_URL})",
        description="Download LoDoPaB-CT (Zenodo record 3384092, about 55 GB of zip "
                    "archives, about 111 GB unpacked) into DIR: every archive is verified "
                    "against its published MD5 checksum, unpacked into the LoDoPaB layout, "
                    "checked as `alara data check` does, and then deleted.  A rerun resumes "
                    "interrupted downloads (NAME.part) and skips what is done; archives "
                    "fetched by hand and put in DIR are verified and unpacked without "
                    "downloading.  Free disk space is checked first.")
    p.add_argument("dir", metavar="DIR", help="directory to fetch into (created if missing)")
    p.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS), metavar="SPLIT",
                   help="fetch only these splits: train, validation, test (default: all; "
                        "test and validation are processed first)")
    p.add_argument("--keep-archives", action="store_true",
                   help="keep the zip archives after unpacking (default: delete them once "
                        "the unpacked files pass the check)")
    p.add_argument("--base-url", default=ZENODO_URL, metavar="URL",
                   help=f"fetch every file from URL/NAME?download=1 instead (a mirror; "
                        f"default {ZENODO_URL})")
    p.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                   help="network timeout per connect or read (default 60)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or step lines")
    p.set_defaults(func=_fetch_lodopab)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``alara data`` and its sub-commands."""
    data = sub.add_parser("data", help="create, download and validate LoDoPaB-layout data sets",
                          description="Create (synthetic or from DICOM), download "
                                      "(LoDoPaB-CT) and validate data sets in the "
                                      "LoDoPaB-CT file layout.")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    p = dsub.add_parser("synth", help="write a synthetic data set",
                        description="Write synthetic patients (child to large adult; lungs, "
                                    "spine, ribs, organs, small lesions) in the LoDoPaB layout, "
                                    "with observations simulated at n0 photons per bin.")
    p.add_argument("out", help="output directory")
    p.add_argument("--train", type=_whole(0), default=8, help="training patients (default 8)")
    p.add_argument("--validation", type=_whole(0), default=2, help="validation patients (default 2)")
    p.add_argument("--test", type=_whole(0), default=2, help="test patients (default 2)")
    p.add_argument("--slices", type=_whole(1), default=4, help="slices per patient (default 4)")
    p.add_argument("--no-observations", action="store_true", help="ground truth only")
    p.add_argument("--train-sizes", choices=("population", "stratified"), default="population",
                   help="training patients' body sizes: drawn like validation's and test's (population, "
                        "default) or spread evenly over the whole size range (stratified)")
    g = p.add_argument_group("lesion truth (lesions/lesions_{split}.json is always written; "
                             "see docs/data.md)")
    g.add_argument("--lesion-free", action="store_true",
                   help="also write each sample's ground truth without its lesions "
                        "(lesion_free/ground_truth_{split}_NNN.hdf5)")
    g.add_argument("--lesion-slices", action="store_true",
                   help="place each patient's slices through its lesions' centres first "
                        "(a lesion in nearly every slice, for detection tasks)")
    _add_texture_args(p)
    _add_output_args(p, "random seed")
    _add_geometry_args(p, 128, 180)
    p.set_defaults(func=_synth)

    p = dsub.add_parser("check", help="validate a data set directory",
                        description="Validate a LoDoPaB-CT download or an alara data set: file "
                                    "names and counts, keys, shapes, dtypes, NaN/inf and value "
                                    "ranges.  Exits 1 and lists every problem found.")
    p.add_argument("dir", help="data set directory")
    p.add_argument("--split", action="append", choices=SPLITS,
                   help="check only this split (repeatable; default: all)")
    p.add_argument("--headers-only", action="store_true",
                   help="skip reading the values (fast)")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print file names")
    p.set_defaults(func=_check)

    p = dsub.add_parser("import-dicom", help="convert CT DICOM slices to LoDoPaB layout",
                        description="Convert CT DICOM slices (files or directories) into "
                                    "LoDoPaB-layout ground truth: rescale to HU, HU -> mu -> "
                                    "mu/mu_max, resample onto the grid by PixelSpacing "
                                    "(or --crop: LoDoPaB's central crop).  Stored as "
                                    "LoDoPaB does (pixel_array transposed: axis 0 = DICOM "
                                    "columns, axis 1 = rows), so imshow(x.T) is upright.")
    p.add_argument("out", help="output directory")
    p.add_argument("inputs", nargs="+", help="DICOM files or directories")
    p.add_argument("--split", choices=SPLITS, default="test", help="split to write (default test)")
    p.add_argument("--observations", action="store_true",
                   help="also simulate observations (LoDoPaB protocol)")
    p.add_argument("--crop", action="store_true",
                   help="LoDoPaB's exact recipe: the central N x N DICOM pixels "
                        "(512 -> 362 is [75:-75]), PixelSpacing ignored, uniform [0, 1) HU "
                        "dequantisation noise (default: resample by PixelSpacing)")
    _add_output_args(p, "seed of the noise")
    _add_geometry_args(p, 362, 1000)
    p.set_defaults(func=_import_dicom)

    _add_fetch_parser(dsub)

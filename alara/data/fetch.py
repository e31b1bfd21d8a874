"""Download LoDoPaB-CT from Zenodo (record 3384092) into the LoDoPaB layout.

``alara data fetch lodopab DIR`` and :func:`fetch_lodopab`: per split, the two zip
archives (ground truth, observations) and the patient-id CSV are downloaded into ``DIR``,
each verified against its published checksum, the archives unpacked into a hidden staging
folder and moved into place, the split checked with :func:`alara.data.check.check_dataset`,
and only then are the archives deleted.

- Downloads go to ``NAME.part`` and resume with an HTTP ``Range`` request on a rerun (a
  server that ignores ``Range`` gets a full download); hashing is streamed, so every byte
  is read once.
- A file already in ``DIR`` under its final name (fetched by hand, or kept with
  ``keep_archives``) is verified and used without downloading.  A split whose files are
  already unpacked is skipped: without its archives in ``DIR`` when they pass the header
  check, with them when they pass the full check (the archives are then deleted unless
  ``keep_archives``).
- A checksum mismatch renames the file to ``NAME.corrupt`` (kept for inspection; delete it
  when done) and unpacks nothing.
- A split that fails the check keeps its archives: a finished download is never lost.
- Free disk space is checked before anything is downloaded.

Every error is a :class:`~alara.data.layout.DataError` whose message is one line.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Sequence, Union

from alara.progress import tqdm

from alara.data.layout import DataError, inspect_split
from alara.data.lodopab import KINDS, SPLITS, parse_data_filename, patient_ids_filename
from alara.data.metadata import METADATA_FILE
from alara.data.writer import STAGING_PREFIX, DirectoryLock, leftovers, output_path

__all__ = [
    "RemoteFile", "FetchResult", "LODOPAB_FILES", "ZENODO_RECORD", "ZENODO_RECORD_URL",
    "ZENODO_URL", "PART_SUFFIX", "CORRUPT_SUFFIX", "file_url", "free_bytes", "space_needed",
    "hash_file", "download_file", "verify_file", "unpack_archive", "fetch_lodopab",
]

PathLike = Union[str, Path]

#: The LoDoPaB-CT record on Zenodo (Leuschner, Schmidt, Otero Baguer, Maass).
ZENODO_RECORD = "3384092"
#: The record's landing page, where every file can be fetched by hand.
ZENODO_RECORD_URL = f"https://zenodo.org/records/{ZENODO_RECORD}"
#: Default base URL: a file is fetched from ``{base}/{name}?download=1``.
ZENODO_URL = f"{ZENODO_RECORD_URL}/files"
#: Suffix of a download in progress (resumed on a rerun).
PART_SUFFIX = ".part"
#: Suffix a file whose checksum does not match is renamed to.
CORRUPT_SUFFIX = ".corrupt"

_CHUNK = 1 << 20  # bytes per read while downloading, hashing and unpacking
#: Safety margin on the free space: this share of the bytes needed, plus a fixed amount.
SPACE_MARGIN = (0.05, 1 << 30)


@dataclass(frozen=True)
class RemoteFile:
    """One file of the record: where it goes and how to verify it."""

    #: File name in the record, e.g. ``ground_truth_test.zip``.
    name: str
    #: The split it belongs to.
    split: str
    #: ``ground_truth`` or ``observation`` (zip archives), or ``patient_ids`` (a CSV kept as is).
    kind: str
    #: ``ALGORITHM:HEX`` as published, e.g. ``md5:ecc6...``; any :mod:`hashlib` algorithm.
    checksum: str
    #: Bytes of the download, ``None`` where unknown.
    size: Optional[int] = None
    #: Bytes once unpacked (an upper bound for the real archives; 0 for a plain file).
    unpacked_size: int = 0

    @property
    def is_archive(self) -> bool:
        """Whether the file is a zip archive to unpack (else it is kept as it is)."""
        return self.kind in KINDS

    @property
    def algorithm(self) -> str:
        return self.checksum.partition(":")[0].lower()

    @property
    def digest(self) -> str:
        return self.checksum.partition(":")[2].lower()


# Published file list of Zenodo record 3384092.  MD5 checksums as Zenodo lists them
# (DIVal reads them from the Zenodo API at run time, dival/util/zenodo_download.py);
# sizes of the archives in bytes.  Unpacked sizes are upper bounds: every file full
# (128 samples) of float32 images (362 x 362 = 524,176 bytes per sample) or sinograms
# (1000 x 513 = 2,052,000 bytes per sample); 280 / 28 / 28 files per kind.  Ordered
# smallest split first, so that test and validation are usable while train downloads.
_GT, _OBS = 362 * 362 * 4, 1000 * 513 * 4
LODOPAB_FILES: tuple[RemoteFile, ...] = (
    RemoteFile("patient_ids_rand_test.csv", "test", "patient_ids",
               "md5:e86068312ad8a039e03f7f929352f7fd"),
    RemoteFile("ground_truth_test.zip", "test", "ground_truth",
               "md5:ecc655767fbe3d40908ca823921f4c7f", 1_582_139_537, 28 * 128 * _GT),
    RemoteFile("observation_test.zip", "test", "observation",
               "md5:9ae6b053bb1faa94d573311af8ec67b2", 2_996_574_366, 28 * 128 * _OBS),
    RemoteFile("patient_ids_rand_validation.csv", "validation", "patient_ids",
               "md5:a387e619074f49573ae376c60a948db4"),
    RemoteFile("ground_truth_validation.zip", "validation", "ground_truth",
               "md5:666c36f403734842f14ca8811a63b8f7", 1_567_086_812, 28 * 128 * _GT),
    RemoteFile("observation_validation.zip", "validation", "observation",
               "md5:3cff406e09c59774912655eb7a72cfcf", 2_944_573_582, 28 * 128 * _OBS),
    RemoteFile("patient_ids_rand_train.csv", "train", "patient_ids",
               "md5:4fee01b076920f85fc92e0de774dc277"),
    RemoteFile("ground_truth_train.zip", "train", "ground_truth",
               "md5:f06829ccf2b9bb817abd093ce490b2c7", 15_940_074_239, 280 * 128 * _GT),
    RemoteFile("observation_train.zip", "train", "observation",
               "md5:c4fde721ac5862469812de49f98fb0a3", 29_938_738_627, 280 * 128 * _OBS),
)


@dataclass
class FetchResult:
    """What :func:`fetch_lodopab` did (file names relative to :attr:`root`)."""

    root: Path
    #: Splits asked for, in the order they were processed.
    splits: list[str]
    #: Splits already in place (unpacked, passing the check): nothing was fetched for them.
    skipped: list[str] = field(default_factory=list)
    #: Files fetched over the network (whole or resumed).
    downloaded: list[str] = field(default_factory=list)
    #: Files found in ``root`` and verified without downloading.
    found: list[str] = field(default_factory=list)
    #: Archives unpacked into the layout.
    unpacked: list[str] = field(default_factory=list)
    #: Archives deleted after their split passed the check.
    removed: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ helpers

def file_url(base_url: str, name: str) -> str:
    """The download URL of ``name`` below ``base_url`` (Zenodo: ``.../files/NAME?download=1``)."""
    return f"{base_url.rstrip('/')}/{name}?download=1"


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def _new_hash(entry: RemoteFile) -> "hashlib._Hash":
    try:
        return hashlib.new(entry.algorithm, usedforsecurity=False)
    except (ValueError, TypeError):
        raise DataError(f"{entry.name}: unknown checksum algorithm {entry.algorithm!r} in "
                        f"{entry.checksum!r}; expected e.g. md5:HEX or sha256:HEX") from None


def _bar(desc: str, total: Optional[int], initial: int, progress: bool) -> tqdm:
    """A byte progress bar: size done / total, rate and time left."""
    return tqdm(desc=desc, total=total, initial=initial, unit="B", unit_scale=True,
                unit_divisor=1024, disable=not progress, file=sys.stderr, leave=False,
                dynamic_ncols=True)


def _hash_into(h: "hashlib._Hash", f: BinaryIO, bar: tqdm) -> int:
    n = 0
    while block := f.read(_CHUNK):
        h.update(block)
        n += len(block)
        bar.update(len(block))
    return n


def hash_file(path: PathLike, algorithm: str = "md5", *, progress: bool = False) -> str:
    """Hex digest of ``path``, read in 1 MiB chunks (with a progress bar if asked)."""
    path = Path(path)
    h = hashlib.new(algorithm, usedforsecurity=False)
    size = path.stat().st_size
    with open(path, "rb") as f, _bar(f"verifying {path.name}", size, 0, progress) as bar:
        _hash_into(h, f, bar)
    return h.hexdigest()


def _reject(path: Path, entry: RemoteFile, got: str) -> DataError:
    """Rename a file that failed its checksum to ``NAME.corrupt``; the error to raise."""
    bad = path.with_name(entry.name + CORRUPT_SUFFIX)
    os.replace(path, bad)
    return DataError(f"{entry.name}: {entry.algorithm} checksum mismatch, expected "
                     f"{entry.digest}, got {got}; the file was moved to {bad} (delete it) "
                     f"and nothing was unpacked; rerun to download it again")


def verify_file(path: PathLike, entry: RemoteFile, *, progress: bool = False) -> None:
    """Check ``path`` against ``entry``'s size and checksum; a mismatch renames it to
    ``NAME.corrupt`` and raises :class:`DataError` naming the file, expected and got."""
    path = Path(path)
    _new_hash(entry)  # refuses an unknown algorithm before reading
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise _reject(path, entry, f"a file of {size} bytes instead of {entry.size}")
    got = hash_file(path, entry.algorithm, progress=progress)
    if got != entry.digest:
        raise _reject(path, entry, got)


# ---------------------------------------------------------------------------- download

class _NetworkError(Exception):
    """The server could not be reached or the transfer broke off."""


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                   TimeoutError)


def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": "alara-data-fetch"}
    if start > 0:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start > 0:  # the .part is not a prefix the server can extend
            exc.close()
            return _open(url, 0, timeout)
        exc.close()
        raise _NetworkError(f"the server answered HTTP {exc.code} {exc.reason}") from None
    except _NETWORK_ERRORS as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _NetworkError(str(reason) or type(exc).__name__) from None


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def download_file(url: str, dest: PathLike, entry: RemoteFile, *, timeout: float = 60.0,
                  progress: bool = True) -> bool:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming a ``.part`` left by an
    interrupted run with a ``Range`` request, and verify it against ``entry``.

    Returns whether a ``Range`` request was honoured (the download resumed).  Hashing is
    streamed: the bytes already in the ``.part`` are hashed first, the new ones as they
    arrive.  On success the file is renamed to ``dest``; a checksum mismatch renames it to
    ``NAME.corrupt`` and raises :class:`DataError`.  A broken connection raises
    ``_NetworkError`` and keeps the ``.part`` for the next run.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + PART_SUFFIX)
    start = part.stat().st_size if part.exists() else 0
    if entry.size is not None and start > entry.size:
        part.unlink()  # longer than the file: not a prefix of it
        start = 0
    h = _new_hash(entry)
    if start:
        with open(part, "rb") as f, _bar(f"hashing {part.name}", start, 0, progress) as bar:
            _hash_into(h, f, bar)
    resumed = False
    if entry.size is None or start < entry.size:
        response = _open(url, start, timeout)
        with response:
            total: Optional[int] = None
            if start and response.status == 206:
                content_range = response.headers.get("Content-Range", "")
                m = _CONTENT_RANGE.match(content_range)
                if not m or int(m.group(1)) != start:
                    raise _NetworkError(f"the server resumed at the wrong offset "
                                        f"(Content-Range {content_range!r}, asked for byte "
                                        f"{start})")
                resumed = True
                total = None if m.group(3) == "*" else int(m.group(3))
            else:  # a full answer: Range ignored, or not asked for
                if start:
                    h, start = _new_hash(entry), 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            if total is not None and entry.size is not None and total != entry.size:
                raise DataError(f"{entry.name}: the server offers {total} bytes, the record "
                                f"lists {entry.size} ({url}); is a proxy answering in its "
                                f"place? nothing was downloaded")
            with open(part, "ab" if resumed else "wb") as out, \
                    _bar(entry.name, total or entry.size, start, progress) as bar:
                while True:
                    try:
                        block = response.read(_CHUNK)
                    except _NETWORK_ERRORS as exc:
                        raise _NetworkError(f"the transfer broke off after {out.tell()} "
                                            f"bytes ({exc or type(exc).__name__})") from None
                    if not block:
                        break
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
        size, expected = part.stat().st_size, total or entry.size
        if expected is not None and size < expected:
            raise _NetworkError(f"the transfer broke off after {size} of {expected} bytes")
    if h.hexdigest() != entry.digest:
        raise _reject(part, entry, h.hexdigest())
    os.replace(part, dest)
    return resumed


# ------------------------------------------------------------------------------ unpack

def unpack_archive(archive: PathLike, dest: PathLike, kind: str, split: str, *,
                   progress: bool = True) -> list[Path]:
    """Extract the ``{kind}_{split}_NNN.hdf5`` members of ``archive`` into ``dest``.

    Members are written under their base names (a folder inside the archive is dropped,
    so nothing lands outside ``dest``); other members are ignored.  CRC errors raise
    :class:`DataError`.  Returns the files written, sorted.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            wanted: dict[str, zipfile.ZipInfo] = {}
            for info in zf.infolist():
                base = info.filename.rpartition("/")[2]
                parsed = parse_data_filename(base)
                if info.is_dir() or parsed is None or parsed[:2] != (kind, split):
                    continue
                if base in wanted:
                    raise DataError(f"{archive}: holds {base} twice ({wanted[base].filename} "
                                    f"and {info.filename})")
                wanted[base] = info
            if not wanted:
                names = ", ".join(i.filename for i in zf.infolist()[:5])
                raise DataError(f"{archive}: holds no {kind}_{split}_NNN.hdf5 files "
                                f"(found: {names or 'nothing'})")
            total = sum(i.file_size for i in wanted.values())
            written = []
            with _bar(f"unpacking {archive.name}", total, 0, progress) as bar:
                for base in sorted(wanted):
                    with zf.open(wanted[base]) as src, open(dest / base, "wb") as out:
                        while block := src.read(_CHUNK):
                            out.write(block)
                            bar.update(len(block))
                    written.append(dest / base)
            return written
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DataError(f"{archive}: not a readable zip archive ({exc}); delete it and rerun "
                        f"to download it again") from None


def _unpacked_size(path: Path, entry: RemoteFile) -> int:
    """Bytes ``path`` unpacks to, from its zip directory where readable, else the table's."""
    try:
        with zipfile.ZipFile(path) as zf:
            return sum(i.file_size for i in zf.infolist())
    except (OSError, zipfile.BadZipFile, EOFError):
        return entry.unpacked_size


# ------------------------------------------------------------------------------ planning

def space_needed(steps: Sequence[tuple[int, int, int]], keep_archives: bool) -> int:
    """Peak extra disk use of fetching splits one after another.

    ``steps`` holds, per split in processing order, ``(download, unpacked, present)``:
    bytes still to download, bytes its archives unpack to, bytes of its files already
    in the directory.  A split's archives are deleted once it is checked (unless
    ``keep_archives``), so the peak is reached while the largest split is unpacked.
    """
    peak = done = 0
    for download, unpacked, present in steps:
        peak = max(peak, done + download + unpacked)
        done += download + unpacked if keep_archives else unpacked - present
    return max(peak, 0)


def _split_done(root: Path, split: str) -> bool:
    """Whether ``split``'s data files are in place and pass the header check."""
    if not any(root.glob(f"ground_truth_{split}_*.hdf5")):
        return False
    _, problems = inspect_split(root, split, KINDS, has_metadata=False)
    return not problems


def _manual_help(root: Path, base_url: str, missing: Sequence[RemoteFile],
                 splits: Sequence[str]) -> str:
    page = ZENODO_RECORD_URL if base_url.rstrip("/") == ZENODO_URL else base_url.rstrip("/")
    names = ", ".join(e.name for e in missing)
    first = file_url(base_url, missing[0].name) if missing else page
    option = "" if set(splits) == set(SPLITS) else f" --splits {' '.join(splits)}"
    return (f"if this machine is offline or behind a proxy (set https_proxy), fetch the files "
            f"by hand from {page} (e.g. {first}): {names}; put them in {root} and run "
            f"`alara data fetch lodopab {root}{option}` again, which verifies and unpacks "
            f"them without downloading (a {PART_SUFFIX} file there is resumed)")


# --------------------------------------------------------------------------------- fetch

def fetch_lodopab(root: PathLike, splits: Optional[Sequence[str]] = None, *,
                  keep_archives: bool = False, base_url: str = ZENODO_URL,
                  files: Optional[Sequence[RemoteFile]] = None,
                  free_space: Optional[Callable[[Path], int]] = None,
                  timeout: float = 60.0, progress: bool = True,
                  log: Optional[Callable[[str], None]] = None,
                  scan_values: bool = True) -> FetchResult:
    """Download, verify and unpack LoDoPaB-CT into ``root`` in the LoDoPaB layout.

    ``splits`` defaults to all three.  ``files`` replaces the record's file table
    (:data:`LODOPAB_FILES`, e.g. for a mirror or a test), ``free_space`` the function
    that measures free bytes (:func:`free_bytes`).  Splits are processed one after
    another: download (or find and verify) its files, unpack the archives into a staging
    folder and move them into ``root``, check the split (``scan_values``: every value, as
    ``alara data check`` does), then delete its archives unless ``keep_archives``.
    ``log`` receives one line per step.  Raises :class:`DataError` (one line) for a
    checksum mismatch, too little disk space, an unreachable server (with what to fetch
    by hand and where to put it) or a split that fails the check.
    """
    from alara.data.check import check_dataset

    root = output_path(root)
    say = log or (lambda text: None)
    table = list(LODOPAB_FILES if files is None else files)
    measure = free_bytes if free_space is None else free_space
    splits = list(SPLITS if splits is None else splits)
    for split in splits:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    order = list(dict.fromkeys(e.split for e in table if e.split in splits))
    for split in splits:
        if split not in order:
            raise DataError(f"the file table lists no files for split {split!r}")
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} is a file, not a directory; give the directory to fetch into")
    if (root / METADATA_FILE).exists():
        raise DataError(f"{root} holds an alara data set ({METADATA_FILE}); fetch LoDoPaB-CT "
                        f"into its own directory")

    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    lock = DirectoryLock(root)
    lock.acquire()
    try:
        return _fetch_locked(root, order, table, keep_archives=keep_archives,
                             base_url=base_url, measure=measure, timeout=timeout,
                             progress=progress, say=say, scan_values=scan_values,
                             check_dataset=check_dataset)
    finally:
        lock.release()
        if created:
            try:
                root.rmdir()  # only if nothing was put there
            except OSError:
                pass


def _on_disk(root: Path, e: RemoteFile) -> tuple[bool, int]:
    """``(complete, bytes)``: whether ``root / NAME`` is there in full (by size, where
    known), and how many bytes of it (or of ``NAME.part``) are already on disk."""
    final, part = root / e.name, root / (e.name + PART_SUFFIX)
    if final.exists():
        size = final.stat().st_size
        return e.size is None or size >= e.size, size
    return False, part.stat().st_size if part.exists() else 0


def _fetch_locked(root: Path, order: list[str], table: list[RemoteFile], *,
                  keep_archives: bool, base_url: str, measure: Callable[[Path], int],
                  timeout: float, progress: bool, say: Callable[[str], None],
                  scan_values: bool, check_dataset: Callable[..., list[str]]) -> FetchResult:
    for p in leftovers(root):  # staging folder of a killed run
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    result = FetchResult(root, list(order))
    # split -> the files still to obtain; a split already unpacked needs only its plain
    # files (patient ids) where they are missing.
    plan: dict[str, list[RemoteFile]] = {}
    unpacked_before: set[str] = set()
    steps = []
    for split in order:
        entries = [e for e in table if e.split == split]
        if _split_done(root, split):
            archives = [e for e in entries if e.is_archive and (root / e.name).exists()]
            # Unpacked, archives still there: a run killed before it finished its check,
            # one whose check failed, or --keep-archives.  The full check decides.
            if archives:
                say(f"{split}: unpacked files found beside the archives, checking them")
            if not archives or not check_dataset(root, [split], scan_values=scan_values):
                unpacked_before.add(split)
                if not keep_archives:
                    for e in archives:
                        (root / e.name).unlink()
                        result.removed.append(e.name)
                entries = [e for e in entries
                           if not e.is_archive and not (root / e.name).exists()]
                if not entries:
                    result.skipped.append(split)
                    say(f"{split}: already in {root}, skipped")
                    continue
        plan[split] = entries
        download = unpacked = present = 0
        for e in entries:
            complete, have = _on_disk(root, e)
            present += have
            if not complete:
                download += max((e.size or 0) - have, 0)
            if e.is_archive:
                unpacked += _unpacked_size(root / e.name, e) if complete else e.unpacked_size
        steps.append((download, unpacked, present))
    if not plan:
        return result

    needed = space_needed(steps, keep_archives)
    needed = int(needed * (1 + SPACE_MARGIN[0])) + SPACE_MARGIN[1] if needed else 0
    free = measure(root)
    if needed > free:
        raise DataError(f"{root}: not enough free disk space for LoDoPaB-CT "
                        f"({', '.join(plan)}): {needed} bytes ({_size(needed)}) needed for "
                        f"the archives and their unpacked files (with a margin), {free} "
                        f"bytes ({_size(free)}) free; free some space or choose another "
                        f"directory")

    for split, entries in plan.items():
        for e in entries:
            final, part = root / e.name, root / (e.name + PART_SUFFIX)
            complete, have = _on_disk(root, e)
            if complete:
                say(f"{e.name}: found in {root}, verifying")
                verify_file(final, e, progress=progress)
                result.found.append(e.name)
                continue
            if final.exists():  # a hand-fetched file that is too short: resume it
                say(f"{e.name}: only {have} of {e.size} bytes in {root}, resuming")
                os.replace(final, part)
            url = file_url(base_url, e.name)
            say(f"{e.name}: resuming from byte {have}" if have else f"{e.name}: downloading {url}")
            try:
                download_file(url, final, e, timeout=timeout, progress=progress)
            except _NetworkError as exc:
                missing = [m for s, es in plan.items() for m in es
                           if not _on_disk(root, m)[0]]
                raise DataError(f"cannot download {e.name} from {url}: {exc}; "
                                f"{_manual_help(root, base_url, missing, order)}") from None
            result.downloaded.append(e.name)

        archives = [e for e in entries if e.is_archive]
        if archives:
            # Unpacked beside the data set (same file system: moving in is a rename), so
            # a failure or a kill midway never leaves a partial file under a final name.
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
            try:
                files: list[Path] = []
                for e in archives:
                    say(f"{e.name}: unpacking")
                    files += unpack_archive(root / e.name, staging, e.kind, split,
                                            progress=progress)
                for p in files:
                    os.replace(p, root / p.name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            result.unpacked += [e.name for e in archives]

        say(f"{split}: checking")
        # A split unpacked earlier (only a patient-id file was added) gets the header check.
        problems = check_dataset(root, [split],
                                 scan_values=scan_values and split not in unpacked_before)
        if problems:
            shown = "; ".join(problems[:3]) + (f"; ... ({len(problems)} in all)"
                                               if len(problems) > 3 else "")
            kept = (f"so the archives were kept ({', '.join(e.name for e in archives)})"
                    if archives else "nothing was deleted")
            raise DataError(f"{split}: the files in {root} fail the check, {kept}: {shown}; "
                            f"run `alara data check {root} --split {split}` for the full list")
        if not keep_archives:
            for e in archives:
                (root / e.name).unlink()
                result.removed.append(e.name)
        say(f"{split}: OK")
    return result

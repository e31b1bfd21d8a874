"""``alara data fetch lodopab``: download, verify, resume and unpack, against a local
HTTP server that serves a tiny archive set in the Zenodo record's layout."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from alara.cli import main
from alara.data import fetch
from alara.data.check import check_dataset
from alara.data.fetch import (
    CORRUPT_SUFFIX, LODOPAB_FILES, PART_SUFFIX, RemoteFile, fetch_lodopab, space_needed,
)
from alara.data.layout import DataError
from alara.data.lodopab import LODOPAB_LENGTHS, SPLITS, data_filename, n_files, patient_ids_filename
from alara.data.reader import LoDoPaBDataset

# LoDoPaB's split lengths (a directory without metadata is read as LoDoPaB), with tiny
# samples and 1024 samples per file (35 / 4 / 4 files) to keep the set small.
SPF = 1024
IMAGE, SINOGRAM = (3, 3), (4, 3)


def _hdf5_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("data", data=array)
    return buf.getvalue()


def _archive(kind: str, split: str, rng: np.random.Generator) -> tuple[bytes, int]:
    """The zip of one kind and split, as the record has it (files at the top level), and
    its unpacked size."""
    length = LODOPAB_LENGTHS[split]
    shape, hi = (IMAGE, 1.0) if kind == "ground_truth" else (SINOGRAM, 0.1)
    buf, unpacked = io.BytesIO(), 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n_files(length, SPF)):
            n = min(SPF, length - i * SPF)
            if kind == "ground_truth":
                n = SPF  # LoDoPaB pads the last ground-truth file
            data = _hdf5_bytes(rng.uniform(0, hi, (n, *shape)).astype(np.float32))
            zf.writestr(data_filename(kind, split, i), data)
            unpacked += len(data)
    return buf.getvalue(), unpacked


@pytest.fixture(scope="module")
def record():
    """``(table, contents)``: a file table in the record's layout and the files' bytes."""
    rng = np.random.default_rng(0)
    table, contents = [], {}
    for split in ("test", "validation", "train"):
        ids = "".join(f"{i // 7}\n" for i in range(LODOPAB_LENGTHS[split])).encode()
        items = [(patient_ids_filename(split), "patient_ids", ids, 0)]
        for kind in ("ground_truth", "observation"):
            data, unpacked = _archive(kind, split, rng)
            items.append((f"{kind}_{split}.zip", kind, data, unpacked))
        for name, kind, data, unpacked in items:
            table.append(RemoteFile(name, split, kind, "md5:" + hashlib.md5(data).hexdigest(),
                                    len(data), unpacked))
            contents[name] = data
    return tuple(table), contents


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        state = self.server.state
        name = self.path.split("?", 1)[0].rpartition("/")[2]
        state["requests"].append((name, self.headers.get("Range")))
        data = state["files"].get(name)
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and state["ranges"] and rng.startswith("bytes=") and rng.endswith("-"):
            start, status = int(rng[6:-1]), 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(record):
    """A local server for the record; ``state`` holds its files, whether it honours
    ``Range`` and the ``(name, Range header)`` of every request."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = {"files": dict(record[1]), "ranges": True, "requests": []}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _url(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/records/3384092/files"


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/records/3384092/files"


def _fetch(root, table, **kw):
    kw.setdefault("progress", False)
    return fetch_lodopab(root, files=table, **kw)


def _names(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()} if root.exists() else set()


def test_full_fetch_unpacks_checks_and_removes_archives(tmp_path, record, server):
    table, _ = record
    root = tmp_path / "lodopab"
    result = _fetch(root, table, base_url=_url(server))
    assert result.downloaded == [e.name for e in table]
    assert sorted(result.removed) == sorted(e.name for e in table if e.is_archive)
    names = _names(root)
    assert not any(n.endswith((".zip", PART_SUFFIX)) or n.startswith(".") for n in names)
    for split in SPLITS:
        for kind in ("ground_truth", "observation"):
            for i in range(n_files(LODOPAB_LENGTHS[split], SPF)):
                assert data_filename(kind, split, i) in names
        assert patient_ids_filename(split) in names
    assert check_dataset(root) == []
    ds = LoDoPaBDataset(root, "test")
    assert len(ds) == LODOPAB_LENGTHS["test"] and ds[3]["patient_id"] == 0
    assert main(["data", "check", str(root), "-q"]) == 0

    # A rerun finds everything in place and asks the server for nothing.
    server.state["requests"].clear()
    again = _fetch(root, table, base_url=_url(server))
    assert again.skipped == ["test", "validation", "train"] and server.state["requests"] == []


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "range-ignored"])
def test_resume_after_a_killed_download(tmp_path, record, server, ranges):
    table, contents = record
    server.state["ranges"] = ranges
    root = tmp_path / "lodopab"
    root.mkdir()
    name = "observation_test.zip"
    cut = len(contents[name]) // 3
    (root / (name + PART_SUFFIX)).write_bytes(contents[name][:cut])
    result = _fetch(root, table, splits=["test"], base_url=_url(server), keep_archives=True)
    asked = dict(server.state["requests"])
    assert asked[name] == f"bytes={cut}-"  # the Range request was made
    assert asked["ground_truth_test.zip"] is None
    assert name in result.downloaded
    assert (root / name).read_bytes() == contents[name]  # complete: resumed or refetched
    assert not (root / (name + PART_SUFFIX)).exists()
    assert check_dataset(root, ["test"]) == []


def test_interrupted_transfer_keeps_the_part_and_says_how_to_resume(tmp_path, record, server):
    table, contents = record
    name = "ground_truth_test.zip"
    short = contents[name][:1000]

    class _Cut(_Handler):  # promises the whole archive, sends 1000 bytes, hangs up
        def do_GET(self):  # noqa: N802
            if name not in self.path:
                return super().do_GET()
            self.server.state["requests"].append((name, self.headers.get("Range")))
            self.send_response(200)
            self.send_header("Content-Length", str(len(contents[name])))
            self.end_headers()
            self.wfile.write(short)

    server.RequestHandlerClass = _Cut
    root = tmp_path / "lodopab"
    with pytest.raises(DataError) as err:
        _fetch(root, table, splits=["test"], base_url=_url(server))
    msg = str(err.value)
    assert f"cannot download {name}" in msg and "broke off after 1000" in msg
    assert "\n" not in msg and "fetch the files by hand" in msg
    assert (root / (name + PART_SUFFIX)).read_bytes() == short
    assert not any(n.endswith(".hdf5") for n in _names(root))
    # The next run resumes from byte 1000.
    server.RequestHandlerClass = _Handler
    server.state["requests"].clear()
    result = _fetch(root, table, splits=["test"], base_url=_url(server))
    assert server.state["requests"] == [(name, "bytes=1000-"), ("observation_test.zip", None)]
    assert result.found == ["patient_ids_rand_test.csv"]
    assert check_dataset(root, ["test"]) == []


def test_corrupted_archive_is_kept_aside_and_nothing_unpacked(tmp_path, record, server):
    table, contents = record
    name = "ground_truth_test.zip"
    bad = bytearray(contents[name])
    bad[len(bad) // 2] ^= 0xFF
    server.state["files"][name] = bytes(bad)
    root = tmp_path / "lodopab"
    with pytest.raises(DataError) as err:
        _fetch(root, table, splits=["test"], base_url=_url(server))
    entry = next(e for e in table if e.name == name)
    msg = str(err.value)
    assert name in msg and entry.digest in msg and hashlib.md5(bad).hexdigest() in msg
    assert "\n" not in msg
    assert (root / (name + CORRUPT_SUFFIX)).read_bytes() == bytes(bad)
    assert not any(n.endswith(".hdf5") for n in _names(root))
    assert not (root / name).exists()


def test_too_little_disk_space_downloads_nothing(tmp_path, record, server):
    table, _ = record
    root = tmp_path / "lodopab"
    seen = []

    def tiny_disk(path):
        seen.append(path)
        return 1000

    with pytest.raises(DataError) as err:
        _fetch(root, table, base_url=_url(server), free_space=tiny_disk)
    msg = str(err.value)
    needed = space_needed([(sum(e.size for e in table if e.split == s),
                            sum(e.unpacked_size for e in table if e.split == s), 0)
                           for s in ("test", "validation", "train")], keep_archives=False)
    assert str(root) in msg and "not enough free disk space" in msg
    assert "1000 bytes" in msg and "needed" in msg
    assert int(re.search(r"\): (\d+) bytes", msg).group(1)) > needed
    assert server.state["requests"] == [] and seen == [root]
    assert not root.exists()  # created for the lock and removed again, empty


def test_space_needed_is_the_peak_of_split_by_split_processing():
    # (download, unpacked, present) per split.
    steps = [(10, 20, 0), (100, 200, 0)]
    assert space_needed(steps, keep_archives=False) == 20 + 100 + 200
    assert space_needed(steps, keep_archives=True) == 330
    # Archives already in the directory free their space once unpacked.
    assert space_needed([(0, 20, 10), (0, 200, 100)], keep_archives=False) == 210


def test_offline_gives_one_clear_error_with_the_manual_url(tmp_path, record):
    table, _ = record
    root = tmp_path / "lodopab"
    base = _closed_port_url()
    with pytest.raises(DataError) as err:
        _fetch(root, table, splits=["test"], base_url=base, timeout=5)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"cannot download patient_ids_rand_test.csv from {base}/patient_ids_rand_test.csv" in msg
    assert "fetch the files by hand from" in msg and str(root) in msg
    assert "ground_truth_test.zip" in msg and "observation_test.zip" in msg
    assert f"`alara data fetch lodopab {root} --splits test` again" in msg


def test_offline_cli_prints_one_line(tmp_path, record, monkeypatch, capsys):
    table, _ = record
    monkeypatch.setattr(fetch, "LODOPAB_FILES", table)
    root = tmp_path / "lodopab"
    rc = main(["data", "fetch", "lodopab", str(root), "--splits", "test", "-q",
               "--base-url", _closed_port_url(), "--timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith("alara data fetch: error: cannot download")


def test_real_table_lists_every_split():
    for split in SPLITS:
        names = {e.name for e in LODOPAB_FILES if e.split == split}
        assert names == {f"ground_truth_{split}.zip", f"observation_{split}.zip",
                         patient_ids_filename(split)}
    assert all(e.algorithm == "md5" and len(e.digest) == 32 for e in LODOPAB_FILES)


def _hand_fetched(root, table, contents, corrupt=None):
    """The test split's files placed in ``root`` by hand (``corrupt``: one with a bit flipped)."""
    root.mkdir()
    for e in table:
        if e.split == "test":
            data = contents[e.name]
            if e.name == corrupt:
                data = data[:-1] + bytes([data[-1] ^ 1])
            (root / e.name).write_bytes(data)
    return root


def test_hand_fetched_archives_unpack_without_network(tmp_path, record):
    table, contents = record
    root = _hand_fetched(tmp_path / "lodopab", table, contents)
    result = _fetch(root, table, splits=["test"], base_url=_closed_port_url(), timeout=5)
    assert result.downloaded == [] and sorted(result.found) == sorted(
        e.name for e in table if e.split == "test")
    assert not (root / "ground_truth_test.zip").exists()
    assert check_dataset(root, ["test"]) == []


def test_hand_fetched_corrupt_archive_is_refused(tmp_path, record):
    table, contents = record
    root = _hand_fetched(tmp_path / "lodopab", table, contents, corrupt="observation_test.zip")
    with pytest.raises(DataError, match="observation_test.zip: md5 checksum mismatch"):
        _fetch(root, table, splits=["test"], base_url=_closed_port_url(), timeout=5)
    assert (root / ("observation_test.zip" + CORRUPT_SUFFIX)).exists()
    assert not any(n.endswith(".hdf5") for n in _names(root))
    assert (root / "ground_truth_test.zip").exists()  # the good one is kept


def test_splits_fetches_only_those(tmp_path, record, server):
    table, _ = record
    root = tmp_path / "lodopab"
    _fetch(root, table, splits=["validation"], base_url=_url(server))
    asked = {name for name, _ in server.state["requests"]}
    assert asked == {e.name for e in table if e.split == "validation"}
    names = _names(root)
    assert any(n.startswith("ground_truth_validation_") for n in names)
    assert not any("_test" in n or "_train" in n for n in names)
    assert check_dataset(root, ["validation"]) == []


def test_rerun_over_kept_archives_checks_instead_of_downloading(tmp_path, record, server):
    """Unpacked files beside their archives (--keep-archives, or a run killed before its
    check finished): a rerun checks them and deletes the archives, without a request."""
    table, _ = record
    root = tmp_path / "lodopab"
    _fetch(root, table, splits=["test"], base_url=_url(server), keep_archives=True)
    assert (root / "ground_truth_test.zip").exists()
    server.state["requests"].clear()
    again = _fetch(root, table, splits=["test"], base_url=_url(server))
    assert server.state["requests"] == [] and again.skipped == ["test"]
    assert sorted(again.removed) == ["ground_truth_test.zip", "observation_test.zip"]
    assert not (root / "ground_truth_test.zip").exists()
    assert check_dataset(root, ["test"]) == []


def test_failed_check_keeps_the_archives(tmp_path, record, server):
    table, contents = record
    # A test archive that verifies but holds one file too few.
    name = "observation_test.zip"
    src = zipfile.ZipFile(io.BytesIO(contents[name]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info in src.infolist()[:-1]:
            zf.writestr(info.filename, src.read(info))
    data = buf.getvalue()
    server.state["files"][name] = data
    table = tuple(RemoteFile(e.name, e.split, e.kind, "md5:" + hashlib.md5(data).hexdigest(),
                             len(data), e.unpacked_size) if e.name == name else e for e in table)
    root = tmp_path / "lodopab"
    with pytest.raises(DataError, match="fail the check, so the archives were kept"):
        _fetch(root, table, splits=["test"], base_url=_url(server))
    assert (root / name).exists() and (root / "ground_truth_test.zip").exists()


def test_cli_fetch_then_check(tmp_path, record, server, monkeypatch, capsys):
    table, _ = record
    monkeypatch.setattr(fetch, "LODOPAB_FILES", table)
    root = tmp_path / "lodopab"
    rc = main(["data", "fetch", "lodopab", str(root), "--splits", "test", "validation",
               "--keep-archives", "-q", "--base-url", _url(server)])
    out = capsys.readouterr().out
    assert rc == 0 and "6 file(s) downloaded" in out and "4 archive(s) unpacked" in out
    assert (root / "ground_truth_test.zip").exists()  # --keep-archives
    assert main(["data", "check", str(root), "-q", "--split", "test",
                 "--split", "validation"]) == 0


def test_disk_error_from_cli_names_path_and_bytes(tmp_path, record, server, monkeypatch, capsys):
    table, _ = record
    monkeypatch.setattr(fetch, "LODOPAB_FILES", table)
    monkeypatch.setattr(fetch, "free_bytes", lambda path: 12345)
    root = tmp_path / "lodopab"
    rc = main(["data", "fetch", "lodopab", str(root), "-q", "--base-url", _url(server)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert f"error: {root}: not enough free disk space" in err and "12345 bytes" in err


def test_a_directory_holding_an_alara_data_set_is_refused(tmp_path, record):
    root = tmp_path / "synth"
    root.mkdir()
    (root / "alara_dataset.json").write_text("{}")
    with pytest.raises(DataError, match="holds an alara data set"):
        _fetch(root, record[0], base_url=_closed_port_url())


@pytest.mark.parametrize("cmd", [["fetch"], ["fetch", "lodopab"]])
def test_fetch_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", *cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: alara data fetch" in out
    if cmd == ["fetch", "lodopab"]:
        for option in ("--splits", "--keep-archives", "--base-url", "--timeout", "--quiet"):
            assert option in out

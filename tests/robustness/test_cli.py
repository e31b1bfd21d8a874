"""The command line: bad numbers, sizes and paths give one clear line and a non-zero exit,
never a traceback, and never touch the files already there."""

from __future__ import annotations

import pytest

SYNTH = ("data", "synth", "out", "-q", "--image-size", "16", "--n-angles", "12",
         "--train", "1", "--validation", "0", "--test", "0", "--slices", "1")


@pytest.mark.parametrize("value", ["inf", "nan", "-5", "0"])
def test_photon_count_must_be_positive_and_finite(ws, cli, value):
    r = cli(*SYNTH, "--n0", value)
    assert r.rc == 2
    assert "argument --n0: must be a positive finite number of photons per bin" in r.line
    assert "LoDoPaB: 4096" in r.line  # what a valid value looks like
    assert not (ws.root / "out").exists()


@pytest.mark.parametrize("option, value, expected", [
    ("--image-size", "0", "argument --image-size: must be >= 1, got 0"),
    ("--n-angles", "0", "argument --n-angles: must be >= 1, got 0"),
    ("--n-bins", "-3", "argument --n-bins: must be >= 1, got -3"),
    ("--slices", "0", "argument --slices: must be >= 1, got 0"),
    ("--upsample", "0", "argument --upsample: must be >= 1, got 0"),
    ("--samples-per-file", "0", "argument --samples-per-file: must be >= 1, got 0"),
    ("--train", "-1", "argument --train: must be >= 0, got -1"),
    ("--n-angles", "2.5", "argument --n-angles: must be a whole number, got '2.5'"),
])
def test_sizes_and_counts(ws, cli, option, value, expected):
    r = cli(*SYNTH, option, value)
    assert r.rc == 2 and expected in r.line


def test_output_path_that_is_a_file(ws, cli):
    r = cli("data", "synth", "notes.txt", "-q", "--image-size", "16", "--n-angles", "12")
    assert r.rc == 1
    assert r.line == ("alara data synth: error: notes.txt is a file, not a directory; give a "
                      "directory to write the data set into")


def test_output_path_below_a_file(ws, cli):
    r = cli("data", "synth", "notes.txt/sub", "-q", "--image-size", "16", "--n-angles", "12")
    assert r.rc == 1
    assert r.line.startswith("alara data synth: error: notes.txt/sub")
    assert "not a directory" in r.line.lower()


def test_empty_output_path(ws, cli):
    r = cli("data", "synth", "", "-q", "--image-size", "16", "--n-angles", "12")
    assert r.rc == 1
    assert "output directory is empty; give the directory to write" in r.line


def test_existing_data_set_needs_overwrite(ws, cli):
    r = cli("data", "synth", "dataset", "-q", "--image-size", "16", "--n-angles", "12")
    assert r.rc == 1
    assert "dataset already holds a data set" in r.line and "--overwrite" in r.line


@pytest.mark.parametrize("bad", [("--n0", "-1"), ("--samples-per-file", "0"), ("--n0", "inf")])
def test_overwrite_with_a_bad_option_keeps_the_old_data_set(ws, cli, bad):
    r = cli("data", "synth", "dataset", "--overwrite", "-q", *bad)
    assert r.rc == 2 and bad[0] in r.line
    assert cli("data", "check", "-q", "dataset").rc == 0


def test_overwrite_needing_too_many_files_keeps_the_old_data_set(ws, cli):
    r = cli("data", "synth", "dataset", "--overwrite", "-q", "--image-size", "16",
            "--n-angles", "12", "--train", "300", "--slices", "4", "--samples-per-file", "1")
    assert r.rc == 1
    assert "train: 1200 samples at 1 per file need 1200 files, more than the layout's 1000" in r.line
    assert "raise --samples-per-file to at least 2" in r.line


def test_check_a_file_instead_of_a_directory(ws, cli):
    r = cli("data", "check", "notes.txt")
    assert r.rc == 1 and "notes.txt: not a directory" in r.out


def test_check_metadata_that_is_a_directory(ws, cli, tmp_path):
    odd = tmp_path / "odd"
    (odd / "alara_dataset.json").mkdir(parents=True)
    r = cli("data", "check", str(odd))
    assert r.rc == 1
    assert "alara_dataset.json: invalid alara metadata" in r.out
    assert "recreate the data set or restore the file" in r.out


def test_import_dicom_of_a_non_dicom_file(ws, cli):
    r = cli("data", "import-dicom", "out", "notes.txt", "-q")
    assert r.rc == 1
    assert r.line.startswith("alara data import-dicom: error: notes.txt: not a DICOM file")
    assert not (ws.root / "out").exists()


def test_import_dicom_of_a_missing_input(ws, cli):
    r = cli("data", "import-dicom", "out", "scans/", "-q")
    assert r.rc == 1 and "scans: no such file or directory" in r.line


def test_interrupt_is_one_line_and_status_130(ws, cli, monkeypatch):
    import alara.data.synth as synth

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "generate_dataset", interrupted)
    r = cli(*SYNTH)
    assert r.rc == 130 and r.line == "alara data synth: interrupted"


def test_os_errors_name_the_path(ws, cli, monkeypatch):
    """An OS error (here: permission denied while writing) is one line naming the path."""
    import alara.data.synth as synth

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/data/ct")

    monkeypatch.setattr(synth, "generate_dataset", denied)
    r = cli(*SYNTH)
    assert r.rc == 1 and r.line == "alara data synth: error: /data/ct: Permission denied"


@pytest.mark.parametrize("args, message", [
    (("--bins", "0"), "alara demo: error: argument --bins: must be >= 1, got 0"),
    (("--n0", "nan"), "alara demo: error: argument --n0: must be a positive finite number"),
    (("--out", "notes.txt/demo.png"), "alara demo: error: notes.txt: is a file, so nothing can "
                                      "be written below it; choose another path"),
    (("--out", "dataset"), "alara demo: error: dataset: is a directory; give the name of a "
                           "file to write"),
])
def test_demo_bad_sizes_and_output_paths(ws, cli, args, message):
    r = cli("demo", "--size", "16", "--views", "8", "--bins", "23", *args)
    assert r.rc in (1, 2) and r.line.startswith(message)


def test_reading_a_file_as_a_data_set_names_the_fix(ws):
    from alara.data import DataError, LoDoPaBDataset

    with pytest.raises(DataError, match="notes.txt: is a file; give the directory that holds"):
        LoDoPaBDataset(ws.notes)

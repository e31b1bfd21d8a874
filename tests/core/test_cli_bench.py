"""``alara bench``: argument checking, the JSON it writes and the ratios it computes."""

import json

import pytest

from alara.cli import bench, main


def test_parse_batches():
    assert bench.parse_batches("1,8") == [1, 8]
    assert bench.parse_batches("1-4,8,3") == [1, 2, 3, 4, 8]
    for bad in ("0", "a", "", "2-x"):
        with pytest.raises(ValueError, match="--batch"):
            bench.parse_batches(bad)


def test_bad_arguments_are_errors(capsys):
    assert main(["bench", "--impl", "matlab"]) == 1
    assert "--impl" in capsys.readouterr().err
    assert main(["bench", "--rounds", "0"]) == 1
    assert main(["bench", "--threads", "0"]) == 1


def test_bench_writes_json_with_ratios(tmp_path, capsys):
    from alara.ops import native_available

    out = tmp_path / "b.json"
    impl = "native" if native_available() else "torch"  # native: fast enough for every run
    # batch 1 and 2 give the per-image column
    assert main(["bench", "--geometry", "lodopab", "--op", "fp", "--batch", "1,2", "--impl",
                 impl, "--rounds", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data["results"]
    assert [(r["impl"], r["batch"]) for r in rows] == [(f"alara-{impl}", 1), (f"alara-{impl}", 2)]
    assert rows[0]["per_image_vs_batch1"] == pytest.approx(1.0)
    assert rows[1]["per_image_vs_batch1"] == pytest.approx(rows[1]["ms"] / 2 / rows[0]["ms"])
    assert all(r["ratio"] is None for r in rows)  # no reference peer was timed
    assert "load average (1, 5, 15 min)" in data["machine"]
    assert f"| lodopab | fp | 2 | alara-{impl} |" in capsys.readouterr().out


def test_ratios_divide_by_the_reference():
    rows = [bench.Result("fan", "bp", 1, "alara-native", 10.0),
            bench.Result("fan", "bp", 1, "astra-line_fanflat", 40.0),
            bench.Result("fan", "bp", 8, "alara-native", 40.0)]
    bench._fill_ratios(rows, "cpu")
    assert rows[0].ratio == pytest.approx(0.25) and rows[1].ratio == pytest.approx(1.0)
    assert rows[2].ratio is None and rows[2].per_image_vs_batch1 == pytest.approx(0.5)


def test_fan_geometries_cover_the_image():
    flat, curved = bench.bench_geometry("fan"), bench.bench_geometry("fan-curved")
    assert flat.sinogram_shape == curved.sinogram_shape == (1000, 513)
    assert curved.detector == "curved" and flat.detector == "flat"
    with pytest.raises(ValueError, match="unknown benchmark geometry"):
        bench.bench_geometry("cone")

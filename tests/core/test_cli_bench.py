"""``alara bench``: argument checking, the JSON it writes and the ratios it computes."""

import json

import pytest
import torch

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


def test_parse_geometries_takes_names_and_groups():
    assert bench.parse_geometries("lodopab") == ["lodopab"]
    assert bench.parse_geometries("fan-short, lodopab,fan-short") == ["fan-short", "lodopab"]
    assert bench.parse_geometries("symmetric") == ["lodopab", "fan", "fan-curved"]
    assert bench.parse_geometries("all") == list(bench.GEOMETRY_CHOICES)
    assert set(bench.parse_geometries("asymmetric")) == set(bench.GEOMETRY_CHOICES) - {
        "lodopab", "fan", "fan-curved"}
    for bad in ("cone", "lodopab,cone", ","):
        with pytest.raises(ValueError, match="--geometry"):
            bench.parse_geometries(bad)


def test_geometry_classes_are_what_their_names_say():
    import math

    from alara.geometry import FanBeam, ParallelBeam
    from alara.ops.checks import angular_coverage

    lodopab = bench.bench_geometry("lodopab")
    g = bench.bench_geometry("parallel-1001")
    assert isinstance(g, ParallelBeam) and g.n_views == 1001 and g.grid == lodopab.grid
    g = bench.bench_geometry("off-centre")
    assert g.grid.shape == (362, 362) and g.grid.spacing == pytest.approx(lodopab.grid.spacing)
    assert sum(g.grid.min_pt) + sum(g.grid.max_pt) == pytest.approx(2 * (0.02 - 0.013))
    g = bench.bench_geometry("non-square")
    assert g.grid.shape == (362, 256) and g.grid.spacing == pytest.approx(lodopab.grid.spacing)
    for name in ("off-centre", "non-square"):  # the detector still covers the whole grid
        g = bench.bench_geometry(name)
        assert g.n_bins * g.bin_spacing == pytest.approx(2 * g.grid.radius)
    g = bench.bench_geometry("fan-offset")
    assert isinstance(g, FanBeam) and g.n_views == 984
    assert g.bin_offset == pytest.approx(0.25 * g.bin_spacing)
    g = bench.bench_geometry("fan-short")
    covered, needed = angular_coverage(g)
    assert g.n_views == 720 and covered < 2 * math.pi - 1
    assert float(g.angles[-1] - g.angles[0]) == pytest.approx(needed * 719 / 720)
    assert bench.bench_geometry("fan-997").n_views == 997


def test_peers_run_the_nearest_geometry_they_have():
    g = bench.bench_geometry("fan-offset")
    peer = bench.peer_geometry(g, "fan-offset")
    assert peer.bin_offset == 0 and peer.n_views == g.n_views and peer.bin_spacing == g.bin_spacing
    assert bench.peer_geometry(bench.bench_geometry("fan-curved"), "fan-curved").detector == "flat"
    short = bench.bench_geometry("fan-short")
    assert bench.peer_geometry(short, "fan-short") is short


def test_load_arguments_are_checked(capsys):
    # Refused by the parser, before anything runs (argparse exits with status 2).
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--load", "-1"])
    assert exc.value.code == 2 and "argument --load: must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--load", "1", "--load-threads", "0"])
    assert exc.value.code == 2 and "argument --load-threads: must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--load-kind", "sleepy"])


def test_torch_load_is_a_running_torch_process_and_stops():
    with bench.BusyLoad(1, "torch", 2) as load:
        (proc,) = load.procs
        assert proc.poll() is None  # started (it said "ready" after importing torch) and working
    assert proc.poll() is not None
    with pytest.raises(ValueError, match="--load-kind"):
        bench.BusyLoad(1, "sleepy")


def test_bench_under_torch_load_on_a_new_geometry_class(tmp_path, capsys):
    from alara.ops import native_available

    out = tmp_path / "b.json"
    impl = "native" if native_available() else "torch"
    assert main(["bench", "--geometry", "fan-short", "--op", "bp", "--batch", "1", "--impl", impl,
                 "--rounds", "2", "--load", "1", "--load-kind", "torch", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["machine"]["load kind"] == "torch (2 threads each)"
    assert data["machine"]["load processes added"] == 1
    (row,) = data["results"]
    assert row["geometry"] == "fan-short" and len(row["rounds_ms"]) == 2
    assert f"| fan-short | bp | 1 | alara-{impl} |" in capsys.readouterr().out


def test_sharing_ratios_and_their_verdicts():
    from alara.cli.bench_sharing import SharingRow, format_sharing

    row = SharingRow("fan", "bp", 1, "alara-native", quiet=[10.0, 12.0, 30.0],
                     loaded=[22.0, 24.0, 26.0], loaded_one_thread=[40.0, 20.0, 21.0])
    assert row.worst_ratio == pytest.approx(26.0 / 40.0)  # slowest against slowest
    assert row.median_ratio == pytest.approx(24.0 / 12.0)  # median against median
    slow = SharingRow("fan", "fp", 1, "alara-native", quiet=[10.0], loaded=[25.0],
                      loaded_one_thread=[20.0])
    table = format_sharing([row, slow], 2)
    lines = table.splitlines()
    assert "worst 2 threads loaded / worst 1 thread loaded (<= 1.1)" in lines[0]
    assert lines[2].endswith("| 0.65 met | 2.00 met |")
    assert lines[3].endswith("| 1.25 **missed** | 2.50 **missed** |")


def test_sharing_measures_three_settings_in_alternation(tmp_path, capsys):
    from alara.ops import native_available

    out = tmp_path / "s.json"
    impl = "native" if native_available() else "torch"
    before = torch_threads()
    try:
        assert main(["bench", "--sharing", "--geometry", "fan-short", "--op", "bp", "--batch", "1",
                     "--impl", f"{impl},astra", "--rounds", "2", "--repeats", "2", "--threads",
                     "2", "--json", str(out)]) == 0
        assert torch_threads() == 2  # restored after the 1-thread setting
    finally:
        torch.set_num_threads(before)
    data = json.loads(out.read_text())
    assert data["machine"]["load kind"] == "torch (2 threads each)"  # the default under --sharing
    assert data["machine"]["load processes added"] == 1
    (row,) = data["sharing"]  # the peer is left out: its projectors use one thread
    assert row["impl"] == f"alara-{impl}"
    for phase in ("quiet", "loaded", "loaded_one_thread"):
        assert len(row[phase]) == 4  # 2 rounds x 2 repeats
    assert row["worst_ratio"] == pytest.approx(max(row["loaded"]) / max(row["loaded_one_thread"]))
    printed = capsys.readouterr().out
    assert "repeat 2/2, loaded one thread" in printed
    assert f"| fan-short | bp | 1 | alara-{impl} |" in printed


def torch_threads() -> int:
    return torch.get_num_threads()


def test_sharing_needs_several_threads_and_alara(capsys):
    assert main(["bench", "--sharing", "--threads", "1", "--geometry", "fan", "--batch", "1"]) == 1
    assert "--threads 2 or more" in capsys.readouterr().err
    assert main(["bench", "--sharing", "--impl", "astra", "--threads", "2"]) == 1
    assert "--impl native" in capsys.readouterr().err
    assert main(["bench", "--sharing", "--repeats", "0", "--threads", "2"]) == 1

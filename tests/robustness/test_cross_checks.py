"""Settings that contradict each other or cannot mean what they say are refused, never
silently reinterpreted: a target outside the metric's range, negative counts, a float
index, a zero DICOM RescaleSlope, an image format that does not match its name, a
misspelt plugin block list."""

from __future__ import annotations

import pytest


def test_target_outside_the_metrics_range(tmp_path):
    from alara.run_config import build_pipeline, load_run_config

    rc = load_run_config({"iq_metric": {"name": "ssim"}, "objective": {"target": 29.5}})
    with pytest.raises(ValueError, match=r"\[objective\] target = 29.5 is outside the range of ssim \(\[-1, 1\]\), "
                                         "so it can never be met"):
        build_pipeline(rc.components, rc.objective)
    rc = load_run_config({"iq_metric": {"name": "ssim"}, "objective": {"target": 0.9}})
    build_pipeline(rc.components, rc.objective)  # a target within the range is fine


def test_negative_bench_load(cli, monkeypatch):
    import alara.cli.bench as bench

    monkeypatch.setattr(bench, "_run", lambda args: 0)  # were -1 accepted, do not time anything
    r = cli("bench", "--load", "-1")
    assert r.rc == 2 and "argument --load: must be >= 0, got -1" in r.line


def test_float_index_is_refused(ws):
    from alara.data import LoDoPaBDataset

    ds = LoDoPaBDataset(ws.dataset, "train", observations=False)
    ds[1]
    with pytest.raises(TypeError, match=r"train split: index must be a whole number, got 1.7 \(float\)"):
        ds[1.7]


def test_dicom_rescale_slope_zero_is_refused(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    from alara.data.dicom import read_ct_slice
    from alara.data.layout import DataError

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.RescaleSlope = 0
    path = tmp_path / "slope0.dcm"
    ds.save_as(path)
    with pytest.raises(DataError, match=r"slope0.dcm: RescaleSlope 0 / RescaleIntercept -1024 cannot map pixels"):
        read_ct_slice(path)


@pytest.mark.parametrize("name, message", [
    ("demo.jpg", None),
    ("demo.txt", "--out demo.txt: unknown image format '.txt'; end the name in .png"),
    ("demo", "--out demo: no image format (no extension); end the name in .png"),
])
def test_demo_writes_the_format_its_name_says(ws, cli, name, message):
    r = cli("demo", "--size", "16", "--views", "8", "--bins", "23", "--out", name)
    if message is None:
        ws.allow_changes_under(name)
        assert r.rc == 0, r.err
        assert (ws.root / name).read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes
    else:
        assert r.rc == 1 and message in r.line
        assert not (ws.root / name).exists()


def test_block_list_typo_is_visible_in_alara_plugins(cli, monkeypatch):
    from alara import plugins

    monkeypatch.setenv(plugins.BLOCK_ENV, "biultin")
    plugins.reset()
    try:
        r = cli("plugins")
    finally:
        plugins.reset()
    assert r.rc == 0
    assert ("biultin  NAMED IN ALARA_BLOCK_PLUGINS, but no installed plugin is called that; did you mean "
            "'builtin'?") in r.out


@pytest.mark.parametrize("case, cause", [
    ("reconstruction", "the reconstruction has 16 NaN/inf pixels there (a diverged model: lower train.lr"),
    ("constant", "some reference images are constant, so a range or contrast computed from them is zero"),
])
def test_nan_quality_names_its_cause(case, cause):
    import torch

    from alara.plugins import create

    metric = create("iq_metric", "psnr", {"data_range": "per_image"})
    x = torch.rand(2, 1, 4, 4)
    x_hat = x + 0.1
    if case == "reconstruction":
        x_hat[1] = float("nan")
    else:
        x[1] = 0.5
    with pytest.raises(ValueError, match=r"iq_metric 'psnr' is NaN or -inf for 1 of 2 images: ") as info:
        metric(x_hat, x)
    assert cause in str(info.value)


def test_out_of_memory_is_one_line(ws, cli, monkeypatch):
    import alara.data.synth as synth

    def oom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 1099511627776 bytes.")

    monkeypatch.setattr(synth, "generate_dataset", oom)
    r = cli("data", "synth", "out", "-q")
    assert r.rc == 1
    assert r.line.startswith("alara data synth: error: out of CPU memory ([enforce fail")
    assert r.line.endswith("ask for less at once (a smaller image size, fewer views or samples per file)")

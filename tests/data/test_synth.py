import h5py
import numpy as np
import pytest
import torch

from alara.cli import main
from alara.data.check import check_dataset
from alara.data.layout import DataError
from alara.data.lodopab import data_filename, observation_max
from alara.data.metadata import read_metadata
from alara.data.reader import LoDoPaBDataset
from alara.data.synth import fine_geometry, generate_dataset, simulate_observation, small_geometry
from alara.geometry import LODOPAB_MU_MAX
from alara.ops import fbp, project


def test_small_geometry_matches_lodopab_fov():
    g = small_geometry(128)
    assert g.grid.shape == (128, 128) and g.grid.min_pt == (-0.13, -0.13)
    assert g.n_bins == 181 and g.n_views == 180
    f = fine_geometry(g, 2)
    assert f.grid.shape == (256, 256) and f.grid.max_pt == g.grid.max_pt
    assert f.n_bins == g.n_bins and torch.equal(f.angles, g.angles)


def test_split_by_patient_and_layout(synth_dir):
    info = read_metadata(synth_dir)
    assert info.lengths == {"train": 9, "validation": 3, "test": 3}
    assert info.samples_per_file == 4 and info.image_shape == (32, 32)
    assert info.sinogram_shape == (24, 45) and info.get_geometry() == small_geometry(32, 24)
    ids = {s: LoDoPaBDataset(synth_dir, s).patient_ids for s in info.lengths}
    sets = {s: set(v.tolist()) for s, v in ids.items()}
    assert sets["train"] == {0, 1, 2} and sets["validation"] == {3} and sets["test"] == {4}
    assert all(np.bincount(v)[sorted(set(v))].tolist() == [3] * len(set(v)) for v in ids.values())
    assert (synth_dir / data_filename("ground_truth", "train", 2)).exists()


def test_ground_truth_uses_lodopab_hu_recipe(synth_dir):
    from alara.data.lodopab import hu_to_x

    x = torch.stack([LoDoPaBDataset(synth_dir, "train")[i]["ground_truth"][0] for i in range(9)])
    air = float(hu_to_x(torch.tensor(-1000.0)))
    assert x[:, 0, 0].tolist() == pytest.approx([air] * 9, rel=1e-6)  # 0.02 / 81.35858
    soft = float(hu_to_x(torch.tensor(40.0)))                         # 0.2461
    assert ((x - soft).abs() < 0.002).float().mean() > 0.05           # soft tissue present
    assert x.max() <= hu_to_x(torch.tensor(1000.0)) + 1e-6            # no bone above 1000 HU


def test_deterministic_and_seed_dependent(tmp_path, tiny_geometry):
    kw = dict(patients=(1, 0, 1), slices_per_patient=2, geometry=tiny_geometry, progress=False)
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        generate_dataset(tmp_path / name, seed=seed, **kw)

    def read(name):
        with h5py.File(tmp_path / name / "observation_test_000.hdf5", "r") as f:
            return f["data"][()]

    np.testing.assert_array_equal(read("a"), read("b"))
    assert not np.array_equal(read("a"), read("c"))
    assert read_metadata(tmp_path / "a").lengths == {"train": 2, "validation": 0, "test": 2}
    assert check_dataset(tmp_path / "a") == []


def test_observation_noise_model(tiny_geometry):
    x = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    x[..., 8:24, 10:22] = 0.3
    clean = project(x, tiny_geometry)
    gen = torch.Generator().manual_seed(0)
    ys = torch.cat([simulate_observation(x, tiny_geometry, generator=gen) for _ in range(200)])
    # Post-log mean is close to the line integral; the variance is 1/(n0 mu_max^2 e^-p).
    lam = 4096 * torch.exp(-LODOPAB_MU_MAX * clean[0, 0])
    torch.testing.assert_close(ys.mean(0)[0], clean[0, 0], atol=3e-4, rtol=0)
    var = 1 / (lam * LODOPAB_MU_MAX ** 2)
    ratio = (ys.var(0)[0] / var).mean()
    assert 0.9 < ratio < 1.1
    # A bin with no photons is set to 0.1 counts: y at its documented maximum.
    opaque = torch.ones(1, 1, 32, 32) * 1.0
    y = simulate_observation(opaque * 40, tiny_geometry, generator=gen)
    assert y.max() == pytest.approx(observation_max(), rel=1e-6)
    assert torch.isfinite(y).all()


def test_observations_reconstruct_ground_truth(synth_dir):
    ds = LoDoPaBDataset(synth_dir, "train")
    item = ds[0]
    rec = fbp(item["observation"][None], ds.geometry)[0]
    gt = item["ground_truth"]
    mse = ((rec - gt) ** 2).mean()
    psnr = 10 * torch.log10(1 / mse)
    assert psnr > 22, psnr  # upright, same scale: the data set is self-consistent


def test_refuses_to_overwrite_and_cleans_stale_files(tmp_path, tiny_geometry):
    kw = dict(geometry=tiny_geometry, slices_per_patient=2, samples_per_file=2, progress=False)
    generate_dataset(tmp_path, patients=(3, 1, 1), **kw)
    before = (tmp_path / "ground_truth_train_000.hdf5").read_bytes()
    with pytest.raises(DataError, match="already holds a data set"):
        generate_dataset(tmp_path, patients=(1, 1, 1), **kw)
    assert (tmp_path / "ground_truth_train_000.hdf5").read_bytes() == before
    generate_dataset(tmp_path, patients=(1, 1, 1), overwrite=True, **kw)
    assert not (tmp_path / "ground_truth_train_002.hdf5").exists()
    assert check_dataset(tmp_path) == []


def _files(root):
    """Relative path -> bytes of every file under ``root`` (sub-folders included)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_interrupted_overwrite_keeps_the_old_data_set(tmp_path, tiny_geometry, monkeypatch):
    import alara.data.synth as synth

    kw = dict(geometry=tiny_geometry, slices_per_patient=2, samples_per_file=2, progress=False)
    generate_dataset(tmp_path, patients=(2, 1, 1), **kw)
    before = _files(tmp_path)
    calls = iter(range(100))
    real = synth.simulate_observation

    def dies_on_fifth(*args, **kwargs):
        if next(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "simulate_observation", dies_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path, patients=(2, 1, 1), seed=5, overwrite=True, **kw)
    # The new set was staged in a hidden folder, removed again: the old set is untouched.
    assert _files(tmp_path) == before
    assert check_dataset(tmp_path) == []


def test_ground_truth_only(tmp_path, tiny_geometry):
    generate_dataset(tmp_path, patients=(1, 1, 1), slices_per_patient=1, geometry=tiny_geometry,
                     observations=False, progress=False)
    assert not list(tmp_path.glob("observation_*"))
    assert check_dataset(tmp_path) == []
    assert "observation" not in LoDoPaBDataset(tmp_path, "test")[0]


def test_cli_synth_check_and_read(tmp_path, capsys):
    out = tmp_path / "set"
    argv = ["data", "synth", str(out), "--train", "2", "--validation", "1", "--test", "1",
            "--slices", "2", "--image-size", "32", "--n-angles", "16", "-q"]
    assert main(argv) == 0
    assert "train 4, validation 2, test 2 samples from 4 patients" in capsys.readouterr().out
    assert main(["data", "check", "-q", str(out)]) == 0
    ds = LoDoPaBDataset(out, "validation")
    assert ds[1]["observation"].shape == (1, 16, 45)
    assert main(argv) == 1  # exists: refused with a message, not a traceback
    assert "already holds a data set" in capsys.readouterr().err


@pytest.mark.slow
def test_full_lodopab_geometry_one_slice(tmp_path):
    from alara.geometry import lodopab

    generate_dataset(tmp_path, patients=(0, 0, 1), slices_per_patient=1, geometry=lodopab(),
                     progress=False)
    ds = LoDoPaBDataset(tmp_path, "test")
    item = ds[0]
    assert item["ground_truth"].shape == (1, 362, 362)
    assert item["observation"].shape == (1, 1000, 513)
    assert check_dataset(tmp_path) == []


def test_texture_option_and_metadata(tmp_path, capsys):
    from alara.data.texture import DEFAULT_TEXTURE

    base = ["data", "synth", "--train", "1", "--validation", "0", "--test", "0", "--slices", "2",
            "--image-size", "48", "--n-angles", "8", "--no-observations", "-q"]
    runs = {"tex": [], "cartoon": ["--no-texture"], "soft": ["--soft-hu", "30"]}
    for name, extra in runs.items():
        assert main(base[:2] + [str(tmp_path / name)] + base[2:] + extra) == 0
    capsys.readouterr()
    extra = {k: read_metadata(tmp_path / k).extra["texture"] for k in runs}
    assert extra["cartoon"] is None
    assert extra["tex"]["soft_hu"] == DEFAULT_TEXTURE.soft_hu and extra["soft"]["soft_hu"] == 30.0
    gt = {k: torch.stack([LoDoPaBDataset(tmp_path / k, "train")[i]["ground_truth"] for i in range(2)])
          for k in runs}
    # Same patients and anatomy; only the texture differs, and more soft-tissue texture
    # means larger differences from the cartoon.
    d_tex = (gt["tex"] - gt["cartoon"]).abs()
    d_soft = (gt["soft"] - gt["cartoon"]).abs()
    assert d_tex.max() > 0 and float(d_soft.sum()) > float(d_tex.sum())
    assert main(base[:2] + [str(tmp_path / "bad")] + base[2:] + ["--soft-hu", "-1"]) != 0


def test_stratified_training_sizes_span_the_whole_range(monkeypatch, tmp_path, tiny_geometry):
    """train_sizes = "stratified": the k-th of n training patients has its size in the k-th
    of n strata of [0, 1]; validation and test keep the population's draw."""
    from alara.data import synth

    seen = []
    orig = synth.sample_patient

    def record(seed, pid=0, size=None):
        seen.append((pid, size))
        return orig(seed, pid, size)

    monkeypatch.setattr(synth, "sample_patient", record)
    synth.generate_dataset(tmp_path / "d", patients=(8, 2, 2), slices_per_patient=1, geometry=tiny_geometry,
                           observations=False, progress=False, train_sizes="stratified")
    train = sorted(s for pid, s in seen if pid < 8)
    assert all(k / 8 <= s < (k + 1) / 8 for k, s in enumerate(train))
    assert all(s is None for pid, s in seen if pid >= 8)
    # A fixed size changes the body (and where in it the lesions sit), nothing else drawn.
    a, b = orig(7, 0, 0.0), orig(7, 0, 1.0)
    assert a.half_width < b.half_width and a.rib_count == b.rib_count and a.heart_size == b.heart_size
    assert [(l.t, l.radius, l.contrast) for l in a.lesions] == [(l.t, l.radius, l.contrast) for l in b.lesions]
    with pytest.raises(ValueError, match="train_sizes must be"):
        synth.generate_dataset(tmp_path / "e", patients=(2, 1, 1), geometry=tiny_geometry, train_sizes="even")
    with pytest.raises(ValueError, match=r"size must be in \[0, 1\]"):
        orig(7, 0, 1.5)

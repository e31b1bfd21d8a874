"""Trainer: it learns (loss falls; a learned policy gives the larger patient more dose and
both patients about the target), resumes bit-identically, survives damaged checkpoints,
and a checkpoint alone rebuilds the pipeline by registered names."""

from __future__ import annotations

import pytest
import torch

from alara.geometry import lodopab
from alara.objective import ConstrainedHinge, ObjectiveConfig, reconstruction_loss
from alara.pipeline import Pipeline
from alara.run_config import rebuild_from_checkpoint
from alara.train import Trainer, TrainConfig
from alara.train.callbacks import read_metrics
from alara.train.checkpoint import CheckpointWarning, list_checkpoints, load_latest
from alara_builtin.metrics import PSNR
from alara_builtin.priors import PreScanPrior, PriorExamPrior
from alara_builtin.reconstructors import FBPReconstructor, FBPUNetReconstructor
from alara_builtin.resnet_policy import ResNet18Policy
from alara_builtin.simulator import PoissonSimulator

from .conftest import TinyPolicy, blob


def unet_pipeline(seed: int = 0) -> Pipeline:
    torch.manual_seed(seed)
    return Pipeline(PreScanPrior.from_params(relative_dose=0.05),
                    ResNet18Policy.from_params(input_size=32, norm="group"), PoissonSimulator(),
                    FBPUNetReconstructor.from_params(scales=2, channels=(4, 8), skip_channels=2, use_norm=False))


def images(geometry, n: int = 8) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    sig = 0.03 + 0.04 * torch.rand(n, generator=gen)
    amp = 0.2 + 0.4 * torch.rand(n, generator=gen)
    return torch.stack([blob(geometry, float(s), float(a)) for s, a in zip(sig, amp)])


def test_warmup_steps_lower_the_reconstruction_loss(tiny_geometry):
    x = images(tiny_geometry)
    pipe = unet_pipeline()
    n0 = torch.full((8, tiny_geometry.n_views), 4096.0)

    def loss() -> float:
        pipe.eval()
        with torch.no_grad():
            scan = pipe(x, tiny_geometry, n0=n0, generator=torch.Generator().manual_seed(0))
        return float(reconstruction_loss(scan.x_hat, x).mean())

    before = loss()
    cfg = TrainConfig(steps=0, warmup_steps=30, batch_size=8, lr=1e-2, progress=False)
    Trainer(pipe, ConstrainedHinge(PSNR()), torch.utils.data.TensorDataset(x), tiny_geometry, cfg).fit()
    assert loss() < 0.5 * before


def test_learned_policy_gives_the_larger_patient_more_dose_and_both_reach_q(tiny_geometry):
    # Dense enough to be noise-limited, thin enough for >= ~50 counts per bin (where the
    # reparameterised noise of training matches the exact Poisson noise of evaluation).
    small, large = blob(tiny_geometry, 0.03, 0.15), blob(tiny_geometry, 0.06, 0.3)
    x = torch.stack([small, large] * 4)
    torch.manual_seed(0)
    pipe = Pipeline(PriorExamPrior.from_params(max_shift_px=0.0, max_rotation_deg=0.0), TinyPolicy(),
                    PoissonSimulator(), FBPReconstructor.from_params(filter="hann", frequency_scaling=0.8))
    q = 42.0
    cfg = TrainConfig(steps=400, warmup_steps=0, batch_size=8, policy_lr=0.05, clip_grad_norm=0.0,
                      progress=False)
    # A small lambda: at 24 x 24 pixels one noise draw moves PSNR by ~1 dB, and a large
    # lambda makes rare dips below q outweigh the dose term (Q then settles high above q).
    Trainer(pipe, ConstrainedHinge(PSNR(), ObjectiveConfig(target=q, weight=0.3)),
            torch.utils.data.TensorDataset(x), tiny_geometry, cfg).fit()
    pipe.eval()
    psnr, dose = [], None
    for k in range(16):
        scan = pipe(x[:2], tiny_geometry, generator=torch.Generator().manual_seed(100 + k))
        psnr.append(PSNR()(scan.x_hat, x[:2]))
        dose = scan.n0.mean(-1)
    psnr = torch.stack(psnr).mean(0)
    # Noise-limited at these doses: the large, dense patient needs far more photons.
    assert dose[1] > 5 * dose[0], dose
    assert bool(((psnr > q - 1.5) & (psnr < q + 3.0)).all()), (psnr, dose)
    # The dose went down for the small one (init: 256 photons, 47 dB) and up for the large.
    assert dose[0] < 128 and dose[1] > 300, dose


def _train(run_dir, steps_total, resume=False, checkpoint_every=2):
    geometry = lodopab(n_angles=24, n_bins=33, image_size=24)
    x = images(geometry)
    cfg = TrainConfig(steps=3, warmup_steps=3, batch_size=4, grad_accum=2, checkpoint_every=checkpoint_every,
                      keep_checkpoints=5, lr=1e-2, policy_lr=1e-3, progress=False, log_every=1)
    trainer = Trainer(unet_pipeline(), ConstrainedHinge(PSNR(), ObjectiveConfig(target=20.0)),
                      torch.utils.data.TensorDataset(x), geometry, cfg, run_dir)
    if resume:
        trainer.resume()
    # Stop early by shrinking the phases' end: run only to steps_total.
    while trainer.step < steps_total:
        it = iter(trainer._loader())
        trainer.train_step(trainer._batches(it))
        if trainer.step % checkpoint_every == 0:
            trainer.save()
    return trainer


def test_resume_gives_bit_identical_weights(tmp_path):
    straight = _train(tmp_path / "a", 6)
    _train(tmp_path / "b", 4)                      # killed after step 4 (checkpoint at 4)
    resumed = _train(tmp_path / "b", 6, resume=True)
    assert resumed.step == straight.step == 6
    a, b = straight.state_dict(), resumed.state_dict()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        for name in va:
            assert torch.equal(torch.as_tensor(va[name]), torch.as_tensor(vb[name])), (ka, name)
    assert a["scheduler"] == b["scheduler"]


def test_fit_resume_matches_uninterrupted_fit(tmp_path):
    """The public path: fit() to the end vs fit() on a run folder holding a mid checkpoint."""
    geometry = lodopab(n_angles=24, n_bins=33, image_size=24)
    x = images(geometry)
    data = torch.utils.data.TensorDataset(x)

    def trainer(run):
        cfg = TrainConfig(steps=2, warmup_steps=2, batch_size=4, checkpoint_every=1, keep_checkpoints=10,
                          progress=False, log_every=1)
        return Trainer(unet_pipeline(), ConstrainedHinge(PSNR(), ObjectiveConfig(target=20.0)), data,
                       geometry, cfg, run)

    full = trainer(tmp_path / "full")
    full.fit()
    # A second run folder with only the step-2 checkpoint of the first: as if killed at 2.
    part = tmp_path / "part" / "checkpoints"
    part.mkdir(parents=True)
    (part / "step_0000002.pt").write_bytes((tmp_path / "full" / "checkpoints" / "step_0000002.pt").read_bytes())
    resumed = trainer(tmp_path / "part")
    resumed.fit(resume=True)
    for key, value in full.pipeline.state_dict().items():
        assert torch.equal(value, resumed.pipeline.state_dict()[key]), key
    steps = [r["step"] for r in read_metrics(tmp_path / "part" / "metrics.jsonl")]
    assert steps == [3, 4]


def test_damaged_latest_checkpoint_falls_back_with_a_warning(tmp_path):
    _train(tmp_path, 4)
    found = list_checkpoints(tmp_path)
    assert [s for s, _ in found] == [2, 4]
    latest = found[-1][1]
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])   # truncated
    with pytest.warns(CheckpointWarning, match=r"step_0000004.pt: damaged checkpoint.*resuming from .*step_0000002.pt"):
        state = load_latest(tmp_path)
    assert state["step"] == 2


def test_checkpoint_alone_rebuilds_the_pipeline_by_name(tmp_path):
    trainer = _train(tmp_path, 2)
    state = load_latest(tmp_path)
    assert state["components"]["dose_policy"] == {"name": "resnet18", "params": trainer.pipeline.dose_policy.params()
                                                  | {"input_size": 32, "norm": "group"}}
    pipe, objective, geometry = rebuild_from_checkpoint(state)
    assert objective.config.target == 20.0 and geometry.n_views == 24
    x = images(geometry, 2)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    a = trainer.pipeline.eval()(x, geometry, generator=gen())
    b = pipe.eval()(x, geometry, generator=gen())
    assert torch.equal(a.n0, b.n0) and torch.equal(a.x_hat, b.x_hat)


def test_dataloader_workers_train_to_the_same_weights(tiny_geometry):
    """``train.num_workers > 0`` (the paper config uses 4): batches come from worker
    processes, and the run must not change: the sampler and the noise streams are seeded
    by step, not by which process loaded the batch."""
    x = images(tiny_geometry)
    weights = []
    for workers in (0, 2):
        pipe = unet_pipeline(seed=1)
        cfg = TrainConfig(steps=3, warmup_steps=3, batch_size=4, lr=1e-2, num_workers=workers, progress=False)
        Trainer(pipe, ConstrainedHinge(PSNR(), ObjectiveConfig(target=30.0)), torch.utils.data.TensorDataset(x),
                tiny_geometry, cfg).fit()
        weights.append({k: v.detach().clone() for k, v in pipe.state_dict().items()})
    init = unet_pipeline(seed=1).state_dict()
    assert any(not torch.equal(init[k], weights[0][k]) for k in init)     # it did train
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=0, atol=0, msg=k)


def test_bf16_autocast_trains_on_cpu(tiny_geometry):
    """``train.amp = "bf16"`` (the paper config's) autocasts on a CPU too: the U-Net's
    convolutions run in bfloat16, and training lowers the loss about as far as in full
    precision."""
    x = images(tiny_geometry)
    n0 = torch.full((8, tiny_geometry.n_views), 4096.0)
    seen: set = set()

    def loss(pipe: Pipeline) -> float:
        pipe.eval()
        with torch.no_grad():
            scan = pipe(x, tiny_geometry, n0=n0, generator=torch.Generator().manual_seed(0))
        return float(reconstruction_loss(scan.x_hat, x).mean())

    before = loss(unet_pipeline(seed=2))
    after = {}
    for amp in ("none", "bf16"):
        pipe = unet_pipeline(seed=2)
        conv = next(m for m in pipe.reconstructor.modules() if isinstance(m, torch.nn.Conv2d))
        hook = conv.register_forward_hook(lambda m, i, o, amp=amp: seen.add((amp, o.dtype)))
        cfg = TrainConfig(steps=0, warmup_steps=20, batch_size=8, lr=1e-2, amp=amp, progress=False)
        Trainer(pipe, ConstrainedHinge(PSNR()), torch.utils.data.TensorDataset(x), tiny_geometry, cfg).fit()
        hook.remove()
        after[amp] = loss(pipe)
    assert ("bf16", torch.bfloat16) in seen and ("bf16", torch.float32) not in seen
    assert ("none", torch.float32) in seen
    assert after["none"] < 0.7 * before and after["bf16"] < 0.7 * before
    assert after["bf16"] < 1.5 * after["none"]

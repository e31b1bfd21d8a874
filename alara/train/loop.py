"""``Trainer.fit``: warm-up of the reconstructor over a dose range, then joint training of
dose policy and reconstructor on the constrained hinge (see :class:`TrainConfig`).

The trainer takes built modules (a :class:`~alara.pipeline.Pipeline`, a
:class:`~alara.objective.ConstrainedHinge`, a dataset and a geometry), so tests drive it
with components defined in the test; config files and plugins stay in ``alara.cli``.

Determinism: the images of step ``s`` and their noise are functions of ``(seed, s)`` (the
noise of an image depends on its place in the global batch, not on the process holding
it; see :func:`~alara.train.sampling.noise_blocks`), and a checkpoint holds model, optimiser, scheduler and RNG states, so a run
resumed from step ``s`` ends with the same weights, bit for bit on CPU, as one that never
stopped.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch.utils.data import DataLoader, Dataset
from alara.progress import tqdm

from alara.geometry import Geometry
from alara.objective import ConstrainedHinge, reconstruction_loss
from alara.pipeline import twin_background
from alara.params import params_of
from alara.pipeline import Pipeline
from alara.train import checkpoint as ckpt
from alara.train import distributed
from alara.train.callbacks import Callback, MetricsLog, TensorBoardLog
from alara.train.config import TrainConfig
from alara.train.sampling import NoiseBlocks, StepSampler, noise_blocks
from alara.train.state import rng_state, set_rng_state

__all__ = ["Trainer", "PhaseSchedule", "resolve_device", "component_specs", "batch_images"]

PathLike = Union[str, Path]


def resolve_device(device: str) -> torch.device:
    """``"auto"``: the current CUDA device when one is visible, else the CPU."""
    if device == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device = {device!r} but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return dev


def component_specs(pipeline: Pipeline, objective: Optional[ConstrainedHinge] = None) -> dict[str, dict[str, Any]]:
    """``{kind: {"name", "params"}}`` of the pipeline's components (and the objective's
    metric): what a checkpoint needs to rebuild them through the registry."""
    mods = {"prior": pipeline.prior, "dose_policy": pipeline.dose_policy,
            "simulator": pipeline.simulator, "reconstructor": pipeline.reconstructor}
    if objective is not None:
        mods["iq_metric"] = objective.metric
    return {k: {"name": type(m).name, "params": params_of(m.config)} for k, m in mods.items()}


def batch_images(batch: Any) -> torch.Tensor:
    """Ground-truth images [B, 1, H, W] from a collated batch (a LoDoPaBDataset dict, a
    tensor, or a tuple whose first entry is the images)."""
    if isinstance(batch, dict):
        batch = batch["ground_truth"]
    elif isinstance(batch, (tuple, list)):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
        raise ValueError("training data must give images [1, H, W] per item (a LoDoPaBDataset, or "
                         f"tensors); got a batch of {type(batch).__name__} "
                         f"{tuple(batch.shape) if isinstance(batch, torch.Tensor) else ''}")
    return batch


class PhaseSchedule:
    """Learning-rate factor of step ``s`` for a parameter group trained from step
    ``start`` for ``length`` steps: cosine from 1 to ``floor`` over that span (constant
    afterwards and before), or constant.  The reconstructor's span is the whole run (the
    joint phase fine-tunes it at the rate the warm-up reached); the policy's is the joint
    phase."""

    def __init__(self, start: int, length: int, kind: str = "cosine", floor: float = 0.05) -> None:
        self.start, self.length, self.kind, self.floor = start, length, kind, floor

    def __call__(self, s: int) -> float:
        if self.kind == "constant":
            return 1.0
        t = min(max(s - self.start, 0) / max(self.length, 1), 1.0)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * t))


@dataclass
class _Batch:
    x: torch.Tensor
    index: Optional[torch.Tensor]
    #: Per-image truth the metric reads besides x (IQMetric.requires / accepts).
    truth: dict[str, torch.Tensor] = field(default_factory=dict)


class Trainer:
    """Trains ``pipeline`` on ``dataset`` (ground-truth images; observations are simulated
    on the fly, since the dose changes) and writes checkpoints and logs to ``run_dir``.

    ``run_info`` (e.g. the resolved config) is stored in every checkpoint next to the
    components' registered names and parameters and the geometry.
    """

    def __init__(self, pipeline: Pipeline, objective: ConstrainedHinge, dataset: Dataset,
                 geometry: Geometry, config: TrainConfig = TrainConfig(),
                 run_dir: Optional[PathLike] = None, *, run_info: Optional[dict[str, Any]] = None,
                 callbacks: Optional[Sequence[Callback]] = None) -> None:
        self.config = config
        self.geometry = geometry
        self.dataset = dataset
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run_info = dict(run_info or {})
        self.rank, self.world_size = distributed.rank_and_world()
        self.device = distributed.local_device(config.device) if self.world_size > 1 else resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.pipeline = pipeline.to(self.device)
        self.objective = objective.to(self.device)
        if config.noise_block and config.batch_size % config.noise_block:
            raise ValueError(f"train.noise_block = {config.noise_block} must divide train.batch_size = "
                             f"{config.batch_size} (0: one noise block per process and micro-batch)")
        self.model = distributed.wrap(NoiseBlocks(self.pipeline), self.device)
        recon = [p for p in pipeline.reconstructor.parameters()]
        policy = [p for p in pipeline.dose_policy.parameters()]
        groups = [g for g in ({"params": recon, "lr": config.lr, "name": "reconstructor"},
                              {"params": policy, "lr": config.policy_lr, "name": "dose_policy"}) if g["params"]]
        if not groups:
            raise ValueError("nothing to train: neither the reconstructor nor the dose policy has parameters")
        # fused: one kernel for all parameters; the per-tensor loop costs more than the
        # ResNet-18's forward and backward on a CPU (11M parameters).
        self.optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay, fused=True)
        spans = {"reconstructor": (0, config.total_steps), "dose_policy": (config.warmup_steps, config.steps)}
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, [PhaseSchedule(*spans[g["name"]], config.schedule, config.lr_floor)
                             for g in self.optimizer.param_groups])
        # bf16 autocast works on CPUs too (the paper config asks for it; CI runs it there);
        # fp16 needs CUDA's gradient scaler.
        amp = config.amp if self.device.type == "cuda" or config.amp == "bf16" else "none"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        self.step = 0
        if callbacks is None:
            callbacks = [MetricsLog(self.run_dir), TensorBoardLog(self.run_dir)] if self.run_dir else []
        self.callbacks = list(callbacks) if self.rank == 0 else []

    # -------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, plus what rebuilding the pipeline needs."""
        from alara.data.metadata import geometry_to_dict

        return {
            "model": self.pipeline.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "components": component_specs(self.pipeline, self.objective),
            "objective": params_of(self.objective.config),
            "train": params_of(self.config),
            "geometry": geometry_to_dict(self.geometry),
            "run": self.run_info,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's model, optimiser, scheduler, scaler, RNG and step."""
        self.pipeline.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])

    def save(self) -> Optional[Path]:
        """Write the checkpoint of the current step (rank 0 only; others wait for it)."""
        path = None
        if self.rank == 0 and self.run_dir is not None:
            path = ckpt.save_checkpoint(self.run_dir, self.step, self.state_dict(), self.config.keep_checkpoints)
        distributed.barrier()
        return path

    def resume(self) -> bool:
        """Load the newest valid checkpoint of ``run_dir``; False when there is none."""
        if self.run_dir is None:
            raise ValueError("resume needs a run directory")
        if self.rank == 0:      # the writer's leftovers; other ranks only read
            ckpt.clean_temporary(self.run_dir)
        state = ckpt.load_latest(self.run_dir, map_location=self.device)
        if state is None:
            return False
        comps = component_specs(self.pipeline, self.objective)
        if state.get("components") != comps:
            diff = [k for k in comps if state.get("components", {}).get(k) != comps[k]]
            raise ValueError(f"cannot resume {self.run_dir}: its checkpoint was trained with other "
                             f"{', '.join(diff)} settings; start a new run folder (--out)")
        saved = state.get("train", {})
        for key in ("batch_size", "grad_accum", "seed", "warmup_steps", "noise_block"):
            if key in saved and saved[key] != getattr(self.config, key):
                raise ValueError(f"cannot resume {self.run_dir}: train.{key} was {saved[key]} and is now "
                                 f"{getattr(self.config, key)}; the data order would change (start a new run)")
        # The objective and the data's geometry define what was trained: a change would
        # make the run claim the new values for all of it.
        from alara.data.metadata import geometry_to_dict
        from alara.runs import config_differences, geometry_differences

        diffs = config_differences({"objective": state.get("objective", {})},
                                   {"objective": params_of(self.objective.config)}) if "objective" in state else []
        if state.get("geometry"):
            diffs += geometry_differences(state["geometry"], geometry_to_dict(self.geometry))
        if diffs:
            raise ValueError(f"cannot resume {self.run_dir}: " + "; ".join(f"{k} was {a!r}, now {b!r}"
                                                                         for k, a, b in diffs)
                             + "; restore the old values or start a new run folder (--out)")
        self.load_state_dict(state)
        return True

    # --------------------------------------------------------------------------- loop

    def _phase(self, step: int) -> str:
        return "warmup" if step < self.config.warmup_steps else "joint"

    def _set_modes(self, phase: str) -> None:
        c, p = self.config, self.pipeline
        joint = phase == "joint"
        train_policy = joint and c.train_policy
        train_recon = (not joint) or c.train_reconstructor
        p.prior.eval()
        p.simulator.train(joint)            # reparameterised noise only where n0 learns
        p.dose_policy.train(train_policy)
        p.reconstructor.train(train_recon)
        for param in p.dose_policy.parameters():
            param.requires_grad_(train_policy)
        for param in p.reconstructor.parameters():
            param.requires_grad_(train_recon)

    def _loader(self) -> DataLoader:
        c = self.config
        sampler = StepSampler(len(self.dataset), c.batch_size, seed=c.seed, start=self.step * c.grad_accum,
                              rank=self.rank, world_size=self.world_size)
        return DataLoader(self.dataset, batch_size=c.batch_size, sampler=sampler, num_workers=c.num_workers,
                          pin_memory=self.device.type == "cuda", drop_last=True)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _micro_step(self, batch: _Batch, micro: int, phase: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        x = batch.x
        blocks = noise_blocks(c.seed, self.step, micro, self.rank * x.shape[0], x.shape[0], c.noise_block,
                              device=self.device)
        with self._autocast():
            metric = self.objective.metric
            if phase == "warmup":
                scan = self.model(x, self.geometry, blocks, warmup_dose=c.warmup_dose)
                recon = reconstruction_loss(scan.x_hat.float(), x, self.objective.config.recon_loss)
                loss = recon.mean()
                with torch.no_grad():
                    # A metric that compares with a lesion-free twin's scans would triple the
                    # warm-up's reconstructions just for a log line: not measured there.
                    q = (torch.full_like(recon, float("nan")) if metric.needs_background_scans
                         else metric(scan.x_hat.float(), x, **batch.truth))
                terms = {"relative_dose": scan.relative_dose.detach(), "quality": q,
                         "reconstruction": recon.detach()}
            else:
                scan = self.model(x, self.geometry, blocks, background=twin_background([metric], batch.truth))
                t = self.objective(scan, x, batch.truth)
                loss = t.loss
                terms = {"relative_dose": t.relative_dose, "quality": t.quality,
                         "shortfall": t.shortfall, "reconstruction": t.reconstruction}
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(f"step {self.step}: the loss is {float(loss)} ({phase} phase); lower "
                                     "train.lr / train.policy_lr or check the data for NaN")
        if batch.index is not None:
            terms["index"] = batch.index.to(self.device)
        return loss, terms

    def train_step(self, batches: Sequence[_Batch]) -> dict[str, Any]:
        """One optimiser update over ``grad_accum`` micro-batches; returns the logs."""
        c = self.config
        phase = self._phase(self.step)
        self._set_modes(phase)
        self.optimizer.zero_grad(set_to_none=True)
        per_patient: dict[str, list[torch.Tensor]] = {}
        total = 0.0
        for micro, batch in enumerate(batches):
            loss, terms = self._micro_step(batch, micro, phase)
            sync = micro == len(batches) - 1
            with distributed.no_sync(self.model, sync):
                self.scaler.scale(loss / len(batches)).backward()
            total += float(loss.detach()) / len(batches)
            for k, v in terms.items():
                per_patient.setdefault(k, []).append(v.detach())
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        grad_norm = (torch.nn.utils.clip_grad_norm_(params, c.clip_grad_norm) if c.clip_grad_norm and params
                     else torch.zeros(()))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        gathered = {k: distributed.gather_cat(torch.cat(v)) for k, v in per_patient.items()}
        # Every process holds the same number of images: the mean of the means is the mean.
        logs: dict[str, Any] = {"phase": phase, "loss": distributed.mean(total),
                                "grad_norm": float(grad_norm)}
        for g in self.optimizer.param_groups:
            logs[f"lr_{g['name']}"] = g["lr"]
        for k in ("relative_dose", "quality", "reconstruction"):
            logs[k] = float(gathered[k].double().mean())
        # The worst 5 % (the tail a quality target is about), from every process's images.
        tail = 0.05 if self.objective.metric.higher_is_better else 0.95
        logs[f"quality_p{round(100 * tail):02d}"] = float(torch.quantile(gathered["quality"].double(), tail))
        if "shortfall" in gathered:
            logs["met"] = float((gathered["shortfall"] <= 0).double().mean())
        logs["patients"] = {k: [round(float(v), 6) for v in t.tolist()] for k, t in gathered.items()}
        return logs

    def _batches(self, it: Any) -> list[_Batch]:
        out = []
        for _ in range(self.config.grad_accum):
            raw = next(it)
            index = raw.get("index") if isinstance(raw, dict) else None
            truth = {k: v.to(self.device, non_blocking=True)
                     for k, v in self.objective.metric.truth_from(raw).items()}
            out.append(_Batch(batch_images(raw).to(self.device, non_blocking=True), index, truth))
        return out

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``config.total_steps`` (from the newest checkpoint when ``resume``);
        returns the last logs.  Checkpoints every ``checkpoint_every`` steps and at the end."""
        c = self.config
        if resume:
            self.resume()
        if self.run_dir is not None and self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        for cb in self.callbacks:
            cb.on_start(self.step)
        logs: dict[str, Any] = {}
        bar = tqdm(total=c.total_steps, initial=self.step, desc="alara train", unit="step",
                   disable=not c.progress or self.rank != 0)
        it = iter(self._loader()) if self.step < c.total_steps else None
        t0, images = time.perf_counter(), 0
        try:
            while self.step < c.total_steps:
                batches = self._batches(it)
                logs = self.train_step(batches)
                images += sum(b.x.shape[0] for b in batches) * self.world_size
                bar.update(1)
                bar.set_postfix(phase=logs["phase"], loss=f"{logs['loss']:.4g}",
                                dose=f"{logs['relative_dose']:.3g}", q=f"{logs['quality']:.2f}")
                if self.step % c.log_every == 0 or self.step == c.total_steps:
                    elapsed = time.perf_counter() - t0
                    logs["images_per_s"] = images / elapsed if elapsed > 0 else float("nan")
                    t0, images = time.perf_counter(), 0
                    for cb in self.callbacks:
                        cb.on_log(self.step, logs)
                if self.step % c.checkpoint_every == 0 or self.step == c.total_steps:
                    self.save()
        finally:
            bar.close()
            for cb in self.callbacks:
                cb.on_end(self.step)
        return logs

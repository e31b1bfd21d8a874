"""The ``[train]`` section: how long, how fast and how often to save."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (every field is a key of the ``[train]`` section).

    Training has two phases.  The warm-up (``warmup_steps``) trains the reconstructor
    alone on doses drawn log-uniformly from ``warmup_dose`` (relative doses; 1.0 is
    LoDoPaB's), with exact Poisson noise, so it works at any dose a policy may pick.  The
    joint phase (``steps``) trains the dose policy and the reconstructor together on the
    constrained hinge, with the simulator's differentiable noise.  A step is one optimiser
    update of ``batch_size * grad_accum`` images (times the number of processes).
    """

    steps: int = 200
    warmup_steps: int = 200
    warmup_dose: tuple[float, float] = (0.02, 4.0)
    batch_size: int = 8
    grad_accum: int = 1
    #: AdamW learning rates of the reconstructor and of the dose policy.
    lr: float = 1e-3
    policy_lr: float = 1e-3
    weight_decay: float = 1e-4
    #: Cosine decay to ``lr_floor * lr`` (the reconstructor's over the whole run, the
    #: policy's over the joint phase), or constant.
    schedule: Literal["cosine", "constant"] = "cosine"
    lr_floor: float = 0.05
    #: Gradient-norm clipping (0 disables).
    clip_grad_norm: float = 1.0
    #: Train the policy / the reconstructor in the joint phase (False freezes it).
    train_policy: bool = True
    train_reconstructor: bool = True
    seed: int = 0
    #: Images per noise generator, counted in the global batch (0: one generator per
    #: process and micro-batch).  The pipeline runs once per block; a block that divides
    #: ``batch_size`` makes N processes draw the noise one process with N times the batch
    #: draws with the same ``noise_block`` (see alara.train.sampling.noise_blocks).
    noise_block: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    log_every: int = 10
    num_workers: int = 0
    #: Mixed precision: "bf16" autocasts on CUDA and on CPU; "fp16" (with a gradient
    #: scaler) on CUDA only, and runs in full precision on a CPU.
    amp: Literal["none", "bf16", "fp16"] = "none"
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("steps", "warmup_steps", "num_workers", "noise_block"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in ("batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        lo, hi = self.warmup_dose
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise ValueError(f"warmup_dose must be two relative doses 0 < low <= high, got {self.warmup_dose}")
        for key in ("lr", "policy_lr"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise ValueError(f"{key} must be a finite positive learning rate, got {getattr(self, key)}")
        for key, lo_ok in (("weight_decay", 0.0), ("clip_grad_norm", 0.0)):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= lo_ok):
                raise ValueError(f"{key} must be a finite number >= 0, got {getattr(self, key)}")
        if not 0 <= self.lr_floor <= 1:
            raise ValueError(f"lr_floor must be in [0, 1], got {self.lr_floor}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")

    @property
    def total_steps(self) -> int:
        """Warm-up plus joint steps."""
        return self.warmup_steps + self.steps

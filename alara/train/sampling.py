"""Which images and which doses a training step sees: pure functions of (seed, step).

Keeping the data order a function of the step (not of an iterator's hidden state) is what
makes resuming exact, and sharding each global batch across ranks keeps the images of a
step the same whatever the number of processes: one process with batch 2b sees exactly
what two processes with batch b see together.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler

from alara.geometry import LODOPAB_N0
from alara.pipeline import noise_generator

__all__ = ["StepSampler", "log_uniform_n0"]


class StepSampler(Sampler[int]):
    """Endless dataset indices in per-epoch shuffled order, starting at micro-batch
    ``start``; each rank yields its ``batch_size`` slice of every global batch.

    Epoch ``e`` is a permutation seeded by ``(seed, e)``; the tail that does not fill a
    global batch of ``batch_size * world_size`` images is dropped (and differs per epoch).
    """

    def __init__(self, length: int, batch_size: int, *, seed: int = 0, start: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        global_batch = batch_size * world_size
        if length < global_batch:
            raise ValueError(f"the training split has {length} images, fewer than one global batch "
                             f"({batch_size} per process x {world_size} processes); lower "
                             "train.batch_size or add data")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.start, self.rank, self.world_size = start, rank, world_size
        self.per_epoch = length // global_batch

    def __iter__(self) -> Iterator[int]:
        k = self.start
        while True:
            epoch, j = divmod(k, self.per_epoch)
            perm = torch.randperm(self.length, generator=noise_generator(self.seed, 0xDA7A, epoch))
            gb = self.batch_size * self.world_size
            lo = j * gb + self.rank * self.batch_size
            yield from perm[lo:lo + self.batch_size].tolist()
            k += 1


def log_uniform_n0(batch: int, views: int, dose_range: tuple[float, float], generator: torch.Generator,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Photons per bin [batch, views], constant over views, at relative doses drawn
    log-uniformly from ``dose_range`` (1.0 is LoDoPaB's 4096 photons)."""
    lo, hi = (math.log(d) for d in dose_range)
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    rel = torch.exp(lo + (hi - lo) * u)
    return (rel * LODOPAB_N0).to(dtype).unsqueeze(-1).expand(batch, views).contiguous()

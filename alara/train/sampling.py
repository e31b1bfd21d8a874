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

__all__ = ["StepSampler", "log_uniform_n0", "noise_blocks", "NoiseBlocks"]


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
    u = torch.rand(batch, generator=generator, dtype=torch.float64, device=generator.device)
    rel = torch.exp(lo + (hi - lo) * u)
    return (rel * LODOPAB_N0).to(dtype).unsqueeze(-1).expand(batch, views).contiguous()


def noise_blocks(seed: int, step: int, micro: int, first: int, count: int, block: int,
                 device: torch.device | str = "cpu") -> list[tuple[slice, torch.Generator]]:
    """The noise blocks of one process's micro-batch: ``(slice of the micro-batch,
    generator)`` pairs.

    The process holds global positions ``first .. first + count - 1`` of micro-batch
    ``micro`` of step ``step``; block ``k`` covers global positions ``k*block ..
    (k+1)*block - 1`` (``block`` 0: the whole micro-batch is one block) and draws its noise
    from a generator seeded by ``(seed, step, micro, k)``.  The noise of an image thus
    depends on where it sits in the global batch, not on which process holds it: one
    process with batch ``2b`` and two with batch ``b`` draw the same noise when ``block``
    divides ``b``.
    """
    block = block or count
    if count % block or first % block:
        raise ValueError(f"train.noise_block = {block} must divide train.batch_size = {count}")
    return [(slice(i, i + block), noise_generator(seed, step, micro, (first + i) // block, device=device))
            for i in range(0, count, block)]


class NoiseBlocks(torch.nn.Module):
    """Runs ``pipeline`` once per noise block (see :func:`noise_blocks`) and joins the
    scans; the module DDP wraps, so one training forward is one DDP forward.

    ``warmup_dose`` given: each block's doses are drawn by :func:`log_uniform_n0` from its
    own generator and replace the policy (the warm-up); otherwise the policy chooses.
    """

    def __init__(self, pipeline: torch.nn.Module) -> None:
        super().__init__()
        self.pipeline = pipeline

    def forward(self, x: torch.Tensor, geometry: object, blocks: list[tuple[slice, torch.Generator]],
                warmup_dose: tuple[float, float] | None = None,
                background: torch.Tensor | None = None) -> object:
        scans = []
        for part, gen in blocks:
            xb = x[part]
            n0 = None
            if warmup_dose is not None:
                n0 = log_uniform_n0(xb.shape[0], geometry.n_views, warmup_dose, gen).to(x.device)
            scans.append(self.pipeline(xb, geometry, generator=gen, n0=n0,
                                       background=None if background is None else background[part]))
        if len(scans) == 1:
            return scans[0]
        from alara.pipeline import Scan

        # The prior differs per block and nothing downstream of the scan needs it.
        twins = None if background is None else torch.cat([s.background_scans for s in scans])
        return Scan(None, *(torch.cat([getattr(s, f) for s in scans])
                            for f in ("n0", "relative_dose", "sinogram", "y", "x_hat")), twins)

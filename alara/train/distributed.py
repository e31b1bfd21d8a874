"""torch.distributed glue: DDP when launched by ``torchrun``, a no-op otherwise.

``torchrun --nproc_per_node=N -m alara train CONFIG`` sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``; :func:`init_from_env` starts the process group (NCCL on GPUs, gloo on
CPU) and :func:`wrap` puts the pipeline in :class:`~torch.nn.parallel.DistributedDataParallel`.
Metrics are reduced correctly across ranks: means over all images (weighted by counts,
by gathering per-image values) rather than means of per-rank means.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["init_from_env", "rank_and_world", "local_device", "wrap", "barrier", "no_sync",
           "gather_cat", "mean", "shutdown"]


def init_from_env(backend: str = "auto") -> bool:
    """Start the process group when launched by torchrun (``WORLD_SIZE`` > 1); returns
    whether it is distributed.  ``backend="auto"``: NCCL with CUDA, else gloo."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def shutdown() -> None:
    """Tear the process group down (end of a distributed command)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(device: str) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` with GPUs (unless ``cpu`` is asked)."""
    if device != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """DDP around ``module`` in a process group, the module itself otherwise."""
    if rank_and_world()[1] == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    # Frozen parts (a fixed policy, the warm-up's unused policy) get no gradient.
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def barrier() -> None:
    """Wait for every rank (no-op outside a process group)."""
    if rank_and_world()[1] > 1:
        dist.barrier()


def no_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient all-reduce on accumulation micro-steps (``sync`` False)."""
    if not sync and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a per-rank 1-D tensor over ranks (same length on each rank)."""
    if rank_and_world()[1] == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def mean(value: float) -> float:
    """Mean of a per-rank scalar over ranks (equal batch sizes on every rank)."""
    world = rank_and_world()[1]
    if world == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / world


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if rank_and_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]

"""Training: :class:`Trainer` (warm-up, then joint training on the constrained hinge),
atomic checkpoints that resume exactly, logging callbacks and torch.distributed glue."""

from alara.train.checkpoint import CheckpointError, load_latest, save_checkpoint
from alara.train.config import TrainConfig
from alara.train.loop import Trainer, component_specs

__all__ = ["CheckpointError", "TrainConfig", "Trainer", "component_specs", "load_latest", "save_checkpoint"]

"""alara's built-in components, registered through the ``alara`` entry-point group exactly
as a third-party plugin is (entry point ``builtin = "alara_builtin"``)."""

from __future__ import annotations

from alara.hookspecs import hookimpl
from alara.registry import Registry

from alara_builtin.aec import AECPolicy
from alara_builtin.detectability import Detectability
from alara_builtin.metrics import PSNR, SSIM
from alara_builtin.policies import FixedPolicy, SizePolicy, TCMPolicy
from alara_builtin.priors import PreScanPrior, PriorExamPrior, ScoutPrior
from alara_builtin.reconstructors import FBPReconstructor, FBPUNetReconstructor
from alara_builtin.resnet_policy import ResNet18Policy
from alara_builtin.simulator import PoissonSimulator

__all__ = [
    "AECPolicy", "Detectability", "FBPReconstructor", "FBPUNetReconstructor", "FixedPolicy", "PSNR", "PoissonSimulator",
    "PreScanPrior", "PriorExamPrior", "ResNet18Policy", "SSIM", "ScoutPrior", "SizePolicy", "TCMPolicy",
]


@hookimpl
def alara_register_prior(registry: Registry) -> None:
    """Priors: ``prescan`` (default), ``scouts``, ``prior_exam``."""
    for cls in (PreScanPrior, ScoutPrior, PriorExamPrior):
        registry.add(cls)


@hookimpl
def alara_register_dose_policy(registry: Registry) -> None:
    """Dose policies: ``fixed``, ``tcm``, ``aec``, ``size``, ``resnet18``."""
    for cls in (FixedPolicy, TCMPolicy, AECPolicy, SizePolicy, ResNet18Policy):
        registry.add(cls)


@hookimpl
def alara_register_simulator(registry: Registry) -> None:
    """Simulator: ``poisson`` (LoDoPaB's noise model)."""
    registry.add(PoissonSimulator)


@hookimpl
def alara_register_reconstructor(registry: Registry) -> None:
    """Reconstructors: ``fbp``, ``fbp_unet``."""
    for cls in (FBPReconstructor, FBPUNetReconstructor):
        registry.add(cls)


@hookimpl
def alara_register_iq_metric(registry: Registry) -> None:
    """Metrics: ``psnr``, ``ssim``, ``detectability``."""
    for cls in (PSNR, SSIM, Detectability):
        registry.add(cls)

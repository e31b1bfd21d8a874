"""The experiment: End2end-ALARA against fixed dose, TCM and AEC at the same per-patient
guarantee (spec, calibration, runner, report)."""

from alara.experiment.spec import ExperimentSpec

__all__ = ["ExperimentSpec"]

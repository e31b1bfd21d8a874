"""A run's whole configuration: the components plus ``[data]``, ``[objective]``,
``[train]``, ``[eval]`` (and ``[experiment]``, read by :mod:`alara.experiment.spec`).

Every section is checked like a component's parameters (file, section, key, close
matches); ``--set section.key=value`` overrides are applied before checking, and the
resolved result (every default filled in) is what a run folder records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from alara.config import DEFAULT_COMPONENTS, OTHER_SECTIONS as _ALL_OTHER, ComponentSpec, parse_component, read_toml, tomllib
from alara.evaluate import EvalConfig
from alara.interfaces import KINDS
from alara.objective import ObjectiveConfig
from alara.params import ConfigError, close_matches, make_config, params_of
from alara.train.config import TrainConfig

__all__ = ["DataConfig", "RunConfig", "SETTINGS_SECTIONS", "apply_overrides", "parse_override",
           "load_run_config"]


@dataclass(frozen=True)
class DataConfig:
    """The ``[data]`` section: a LoDoPaB-layout directory (a LoDoPaB-CT download, or one
    written by ``alara data synth`` / ``import-dicom``); its metadata gives the geometry."""

    root: str = "data/synth"

    def __post_init__(self) -> None:
        if not self.root.strip():
            raise ValueError("root must name a data directory, got an empty string")


#: Non-component sections and their dataclasses.
SETTINGS_SECTIONS: dict[str, type] = {"data": DataConfig, "objective": ObjectiveConfig,
                                      "train": TrainConfig, "eval": EvalConfig}
#: Sections read elsewhere (checked there).
OTHER_SECTIONS = tuple(s for s in _ALL_OTHER if s not in SETTINGS_SECTIONS)
assert set(_ALL_OTHER) == set(SETTINGS_SECTIONS) | set(OTHER_SECTIONS)


@dataclass(frozen=True)
class RunConfig:
    """Parsed and validated configuration of a run."""

    components: dict[str, ComponentSpec]
    data: DataConfig
    objective: ObjectiveConfig
    train: TrainConfig
    eval: EvalConfig
    raw: dict[str, Any]
    file: Optional[str] = None

    def resolved(self) -> dict[str, Any]:
        """The configuration with every default filled in (component params as given:
        their defaults are added when built, see :func:`alara.train.component_specs`)."""
        out: dict[str, Any] = {k: {"name": s.name, "params": dict(s.params)} for k, s in self.components.items()}
        for name in SETTINGS_SECTIONS:
            out[name] = params_of(getattr(self, name))
        for name in OTHER_SECTIONS:
            if name in self.raw:
                out[name] = self.raw[name]
        return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.steps=100"`` -> ``(["train", "steps"], 100)``; the value is read as TOML
    (numbers, booleans, ``"strings"``, ``[lists]``), or as a bare string otherwise."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value (e.g. train.steps=100)")
    path, value = text.split("=", 1)
    keys = [k.strip() for k in path.strip().split(".")]
    if len(keys) < 2 or not all(keys):
        raise ConfigError(f"--set {text!r}: expected section.key=value (e.g. train.steps=100)")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return keys, parsed


def apply_overrides(doc: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``doc`` with ``--set`` overrides applied (nested tables created as needed)."""
    import copy

    out = copy.deepcopy(doc)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            if isinstance(node.get(k), str) and k in KINDS:  # shorthand iq_metric = "ssim"
                node[k] = {"name": node[k]}
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {k!r} is not a table")
        node[keys[-1]] = value
    return out


def _check_sections(doc: Mapping[str, Any], file: Optional[str]) -> None:
    known = list(KINDS) + list(SETTINGS_SECTIONS) + list(OTHER_SECTIONS)
    for section, value in doc.items():
        if section not in known:
            raise ConfigError(f"unknown section{close_matches(section, known)} (sections: "
                              f"{', '.join(known)})", file=file, section=section)
        if section in SETTINGS_SECTIONS and not isinstance(value, dict):
            raise ConfigError(f"must be a table, got {type(value).__name__}", file=file, section=section)


def load_run_config(source: Union[str, Path, Mapping[str, Any]], overrides: Sequence[str] = (),
                    defaults: Mapping[str, str] = DEFAULT_COMPONENTS) -> RunConfig:
    """Read a run's TOML file (or mapping), apply ``--set`` overrides and validate every
    section; absent component sections take ``defaults`` (the paper's pipeline)."""
    if isinstance(source, Mapping):
        doc, file = dict(source), None
    else:
        doc, file = read_toml(source), str(source)
    given = set(doc)
    doc = apply_overrides(doc, overrides)
    for kind in KINDS:
        # `--set reconstructor.params.x=...` on a default component: keep the default name.
        if kind not in given and isinstance(doc.get(kind), dict) and "name" not in doc[kind] and kind in defaults:
            doc[kind]["name"] = defaults[kind]
    _check_sections(doc, file)
    comps = {}
    for kind in KINDS:
        if kind in doc:
            comps[kind] = parse_component(doc[kind], kind, file=file, section=kind)
        elif kind in defaults:
            comps[kind] = ComponentSpec(kind, defaults[kind], {}, file, kind)
    settings = {name: make_config(cls, doc.get(name, {}), file=file, section=name, table="")
                for name, cls in SETTINGS_SECTIONS.items()}
    return RunConfig(comps, raw=doc, file=file, **settings)


# ------------------------------------------------------------------------------ building


def build_components(specs: Mapping[str, ComponentSpec]) -> dict[str, Any]:
    """Instantiate each spec through the registry (the one way a component is built)."""
    from alara.config import build_component

    return {kind: build_component(spec) for kind, spec in specs.items()}


def build_pipeline(specs: Mapping[str, ComponentSpec], objective: ObjectiveConfig,
                   backend: str = "auto") -> tuple[Any, Any]:
    """``(Pipeline, ConstrainedHinge)`` from component specs and the objective settings."""
    from alara.objective import ConstrainedHinge
    from alara.pipeline import Pipeline

    missing = [k for k in KINDS if k not in specs]
    if missing:
        raise ConfigError(f"missing component section(s) {', '.join(f'[{k}]' for k in missing)}")
    c = build_components(specs)
    c["iq_metric"].check_target(objective.target)
    pipeline = Pipeline(c["prior"], c["dose_policy"], c["simulator"], c["reconstructor"], backend=backend)
    return pipeline, ConstrainedHinge(c["iq_metric"], objective)


def specs_from_checkpoint(state: Mapping[str, Any], source: str) -> dict[str, ComponentSpec]:
    """The component specs a checkpoint recorded (registered names and full parameters)."""
    try:
        comps = state["components"]
        return {kind: ComponentSpec(kind, d["name"], dict(d["params"]), source, kind) for kind, d in comps.items()}
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"checkpoint has no component record ({exc}); was it written by alara train?",
                          file=source) from None


def rebuild_from_checkpoint(state: Mapping[str, Any], source: str = "<checkpoint>") -> tuple[Any, Any, Any]:
    """``(pipeline, objective, geometry)`` rebuilt by registered names from a checkpoint
    alone, with its weights loaded."""
    from alara.data.metadata import geometry_from_dict

    specs = specs_from_checkpoint(state, source)
    objective = make_config(ObjectiveConfig, state.get("objective", {}), file=source, section="objective", table="")
    pipeline, hinge = build_pipeline(specs, objective)
    pipeline.load_state_dict(state["model"])
    return pipeline, hinge, geometry_from_dict(state["geometry"])

"""A run's lifecycle in the library: open a split of a data set, write a run folder's
record of its configuration and environment, train a run from its config.  The commands (``alara.cli``) and the
experiment (``alara.experiment``) both call these; nothing here imports ``alara.cli``."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from alara.atomic import RUN_LOCK_FILE, DirectoryLock

__all__ = ["environment", "open_split", "write_run_files", "default_run_dir", "train_run", "RunFolderError",
           "run_lock", "config_differences", "geometry_differences", "check_run_config", "RECORD_FILES",
           "RESUME_NEUTRAL", "RESUME_OPT_IN", "check_free_space"]

#: What a run writes before its first step: its record, not results.
RECORD_FILES = ("config.json", "environment.json")
#: Entries a run folder may hold that ``--overwrite`` removes (never anything else).
RUN_ENTRIES = RECORD_FILES + ("changes.json", "metrics.jsonl", "metrics.csv", "tensorboard", "checkpoints",
                               "guard.json")
#: Keys a resume may change without a word: they do not change what is trained.
RESUME_NEUTRAL = ("train.progress", "train.num_workers", "train.log_every", "train.checkpoint_every",
                  "train.keep_checkpoints")
#: Keys a resume may change with ``--allow-change KEY`` (recorded in ``changes.json``
#: with the step where the change happened); every other difference is refused.
RESUME_OPT_IN = ("train.steps", "train.device", "data.root")


class RunFolderError(ValueError):
    """A run folder this command must not write (a refused command leaves it as it was)."""


def environment() -> dict[str, Any]:
    """Versions, backends and threads of this process (recorded in every run folder)."""
    from alara.info import collect

    env: dict[str, Any] = dict(collect())
    env.update(platform=platform.platform(), argv=sys.argv, cpu_count=os.cpu_count())
    return env


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(dotted.key, old value, new value)`` of every leaf that differs (``<unset>`` for a
    key only one side has), sorted by key.  Lists and tuples compare as equal JSON."""
    a, b = _flat(json.loads(json.dumps(old))), _flat(json.loads(json.dumps(new)))
    missing = "<unset>"
    return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)]


def geometry_differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """:func:`config_differences` of two :func:`~alara.data.metadata.geometry_to_dict`
    records, keys prefixed ``geometry.``; the angles are summarised (count and range)."""
    def summary(g: dict[str, Any]) -> dict[str, Any]:
        g = dict(g)
        angles = g.pop("angles", None) or []
        g["views"] = len(angles)
        g["angles"] = f"{len(angles)} views on [{min(angles):.6g}, {max(angles):.6g}]" if angles else "none"
        return g

    if old == new:
        return []
    diffs = [(f"geometry.{k}", a, b) for k, a, b in config_differences(summary(old), summary(new)) if k != "views"]
    if not any(k == "geometry.angles" for k, _, _ in diffs) and old.get("angles") != new.get("angles"):
        # Same count and range, other values in between: still another geometry.
        diffs.append(("geometry.angles", summary(old)["angles"], summary(new)["angles"] + " (other angles)"))
    return diffs


def _listing(diffs: Sequence[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{k} was {a!r}, now {b!r}" for k, a, b in diffs)


def _read_config(run_dir: Path) -> Optional[dict[str, Any]]:
    path = run_dir / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc}); restore it or use another --out") from None


def _contents(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` other than the lock and the atomic writer's leftovers."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir()
                  if p.name != RUN_LOCK_FILE and not (p.name.startswith(".") and p.name.endswith(".tmp")))


def check_run_config(run_dir: Path, resolved: dict[str, Any]) -> None:
    """Refuse to write ``resolved`` into ``run_dir`` when the folder already holds something
    else: results of another configuration (each differing key named with both values), or
    files that are not an alara run.  Reads only; a folder holding nothing but its record
    (``config.json``, ``environment.json``: a run that never started) may be rewritten."""
    names = _contents(run_dir)
    if not names or set(names) <= set(RECORD_FILES):
        return
    saved = _read_config(run_dir)
    if saved is None:
        raise RunFolderError(f"{run_dir} is not empty and is not an alara run (it holds {', '.join(names[:3])}"
                             f"{', ...' if len(names) > 3 else ''}, no config.json); choose another --out")
    diffs = config_differences(saved, resolved)
    if diffs:
        raise RunFolderError(f"{run_dir} holds a run of another configuration ({_listing(diffs)}); nothing "
                             f"was written: use another --out, or restore those values to continue it")


def write_run_files(run_dir: Path, resolved: dict[str, Any], *, check: bool = True) -> None:
    """``config.json`` (the resolved configuration) and ``environment.json``, atomically;
    with ``check`` (default) :func:`check_run_config` runs first, so a refused run leaves
    the folder as it was."""
    from alara.evaluate import write_json

    if check:
        check_run_config(run_dir, resolved)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", resolved)
    write_json(run_dir / "environment.json", environment())


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse to start writing ``folder`` when its file system has less than ``needed``
    bytes free (a full disk midway would stop the run with half its files)."""
    probe = next((p for p in (Path(folder), *Path(folder).parents) if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise RunFolderError(f"{folder}: only {free / 2**20:.1f} MiB free on its file system, and {what} needs "
                             f"about {needed / 2**20:.1f} MiB; free some space or write elsewhere (--out)")


@contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    """Hold the advisory lock of a run folder (created if missing) for the block; a second
    writer gets one line naming this process.  A folder the block created and left empty
    is removed again, so a refused command leaves no trace."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"--out {run_dir} is a file; give a directory for the run")
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = DirectoryLock(run_dir, RUN_LOCK_FILE, what="written")
    try:
        lock.acquire()
        try:
            yield run_dir
        finally:
            lock.release()
    finally:
        for p in created:  # innermost first
            try:
                p.rmdir()
            except OSError:
                break


def open_split(root: str, split: str, geometry_expected: Optional[Any] = None) -> Any:
    """The ``LoDoPaBDataset`` of one split, ground truth only; with ``geometry_expected``
    the data set's recorded geometry must match it."""
    from alara.data import LoDoPaBDataset
    from alara.data.layout import DataError
    from alara.data.metadata import geometry_to_dict

    path = Path(root)
    if not path.exists():
        raise DataError(f"{root}: data directory not found; write one with `alara data synth {root}` "
                        "or set data.root to a LoDoPaB-CT download")
    if not path.is_dir():
        raise DataError(f"{root}: is a file, expected a data directory (LoDoPaB layout)")
    ds = LoDoPaBDataset(path, split, observations=False)
    if geometry_expected is not None:
        got = ds.geometry
        want = geometry_to_dict(geometry_expected)
        if got is None:
            raise DataError(f"{root}: records no geometry (no alara metadata), so it cannot be checked against "
                            "the run's; write it with `alara data synth` or `alara data import-dicom`")
        diffs = geometry_differences(want, geometry_to_dict(got))
        if diffs:
            raise DataError(f"{root}: its geometry differs from the run's ({_listing(diffs)}); evaluate on data "
                            "written with the run's geometry (alara data synth --image-size/--n-angles/--n-bins, "
                            "or import-dicom with the run's geometry)")
    return ds


def default_run_dir(config: str) -> Path:
    """``runs/<config file stem>``."""
    return Path("runs") / Path(config).stem


def _write_guard(run_dir: Path, pipeline: Any, root: str, train: Any, geometry: Any, seed: int) -> None:
    """The learned policy's input guard (alara.guard), calibrated on the validation split
    when the data has one; ``alara evaluate`` falls back to a safe dose outside it."""
    from alara.guard import write_run_guard

    try:
        validation = open_split(root, "validation", geometry)
    except (FileNotFoundError, ValueError):
        validation = None
    guard = write_run_guard(run_dir, pipeline.to("cpu"), train, validation, geometry, seed)
    if guard is not None:
        print(f"[alara train] input guard: allowed distance {guard.threshold:.2f} sd outside the training range "
              f"({guard.fitted_on['threshold']})", file=sys.stderr)


def _check_resume(run_dir: Path, state: dict[str, Any], resolved: dict[str, Any], geometry: Any,
                  allow_changes: Sequence[str]) -> list[dict[str, Any]]:
    """Compare a checkpoint's whole resolved configuration and data geometry with this
    run's; returns the accepted changes (``{step, key, was, now}``), raises on any other."""
    from alara.data.metadata import geometry_to_dict

    step = int(state["step"])
    problems = geometry_differences(state.get("geometry") or {}, geometry_to_dict(geometry)) \
        if state.get("geometry") else []
    saved = (state.get("run") or {}).get("config")
    if saved is None:
        raise RunFolderError(f"cannot resume {run_dir}: its checkpoint (step {step}) records no configuration, so "
                             "nothing can be compared; start a new run folder (--out)")
    changes, refused, unlock = [], list(problems), []
    for key, was, now in config_differences(saved, resolved):
        if key in RESUME_NEUTRAL or key.startswith("eval."):
            changes.append(dict(step=step, key=key, was=was, now=now))
        elif key in RESUME_OPT_IN and key in allow_changes:
            changes.append(dict(step=step, key=key, was=was, now=now))
        else:
            refused.append((key, was, now))
            if key in RESUME_OPT_IN:
                unlock.append(key)
    if refused:
        hint = (f"; pass {' '.join(f'--allow-change {k}' for k in unlock)} to accept "
                f"{'that change' if len(unlock) == 1 else 'those changes'}" if len(unlock) == len(refused) else
                "; restore the old values, or start a new run folder (--out)")
        raise RunFolderError(f"cannot resume {run_dir} (checkpoint of step {step}): {_listing(refused)}{hint}")
    return changes


def _inspect_run_folder(run_dir: Path, resolved: dict[str, Any], resume: bool, overwrite: bool) -> Optional[dict]:
    """Read-only checks of the folder a training run will write; returns the checkpoint a
    resume continues from (``None`` to start at step 0)."""
    from alara.train.checkpoint import list_checkpoints, load_latest

    if resume and not run_dir.is_dir():
        raise RunFolderError(f"--resume: {run_dir} does not exist, so there is nothing to resume; drop --resume "
                             "to start a new run there, or give the run's folder with --out")
    names = _contents(run_dir)
    found = list_checkpoints(run_dir)
    if resume:
        if overwrite:
            raise RunFolderError("--resume continues a run and --overwrite replaces it; pass one of them")
        if found:
            state = load_latest(run_dir)
            if state is not None:
                return state
        saved = _read_config(run_dir)
        if saved is None:
            raise RunFolderError(f"--resume: {run_dir} holds no checkpoint and no config.json, so it is not an "
                                 "alara run; drop --resume and give a new --out")
        diffs = config_differences(saved, resolved)
        if diffs:
            raise RunFolderError(f"cannot resume {run_dir} (no checkpoint yet): {_listing(diffs)}; restore the "
                                 "old values, or start a new run folder (--out)")
        print(f"[alara train] {run_dir} has no checkpoint yet: starting it at step 0", file=sys.stderr)
        return None
    if overwrite or not names:
        return None
    if found:
        raise RunFolderError(f"{run_dir} already holds a run with checkpoints (up to step {found[-1][0]}); pass "
                             "--resume to continue it, --out NEW_DIR to start another, or --overwrite to replace it")
    if set(names) <= set(RECORD_FILES) and _read_config(run_dir) == json.loads(json.dumps(resolved)):
        return None  # the record of this very configuration, never trained: harmless to redo
    raise RunFolderError(f"{run_dir} is not empty ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}) "
                         "but holds no checkpoint to resume; pass --overwrite to replace its run files, or "
                         "--out NEW_DIR")


def _clear_run_folder(run_dir: Path) -> None:
    """Remove what a run writes (:data:`RUN_ENTRIES`, ``eval_*``), nothing else."""
    for p in list(run_dir.iterdir()) if run_dir.is_dir() else []:
        if p.name in RUN_ENTRIES or (p.name.startswith("eval_") and p.is_dir()):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def train_run(config: str, out: Optional[str] = None, resume: bool = False, overrides: list[str] = (), *,
              overwrite: bool = False, allow_changes: Sequence[str] = ()) -> dict:
    """Train the run of a config file into ``out`` (default :func:`default_run_dir`): build
    everything from the config, check the folder (lock, what it holds, on resume the whole
    configuration and the data geometry against the checkpoint), only then write the run
    files, train (or resume), return the last logs.  ``alara train`` calls this; torchrun
    ranks each call it (rank 0 locks and writes)."""
    from alara.run_config import load_run_config
    from alara.train import distributed

    rc = load_run_config(config, overrides)
    run_dir = Path(out) if out else default_run_dir(config)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"--out {run_dir} is a file; give a directory for the run")
    for key in allow_changes:
        if key not in RESUME_OPT_IN:
            raise RunFolderError(f"--allow-change {key}: only {', '.join(RESUME_OPT_IN)} may change on resume")
    if resume and not run_dir.is_dir():  # before the lock creates it
        _inspect_run_folder(run_dir, {}, resume, overwrite)
    distributed.init_from_env()
    try:
        rank, _ = distributed.rank_and_world()
        with run_lock(run_dir) if rank == 0 else nullcontext():
            return _train_locked(rc, run_dir, resume, overwrite, allow_changes, rank)
    finally:
        distributed.shutdown()


def _train_locked(rc: Any, run_dir: Path, resume: bool, overwrite: bool, allow_changes: Sequence[str],
                  rank: int) -> dict:
    import torch

    from alara.evaluate import task_subset, write_json
    from alara.run_config import build_pipeline
    from alara.train import Trainer

    resolved = rc.resolved()
    # Other ranks may see rank 0's first writes, so only rank 0 judges a new run's folder;
    # on resume every rank reads the checkpoint it continues from.
    state = _inspect_run_folder(run_dir, resolved, resume, overwrite) if rank == 0 or resume else None
    data = open_split(rc.data.root, "train")
    geometry = data.geometry
    changes = _check_resume(run_dir, state, resolved, geometry, allow_changes) if state is not None else []
    torch.manual_seed(rc.train.seed)    # the same initial weights on every run (and rank)
    pipeline, objective = build_pipeline(rc.components, rc.objective)
    data = task_subset(data, objective.metric, "train", lambda msg: print(f"[alara train] {msg}", file=sys.stderr))
    # A checkpoint holds the weights, AdamW's two moments and the RNG/scheduler state; one
    # new file must fit next to the old ones before the first is written.
    params = sum(p.numel() * p.element_size() for p in pipeline.parameters())
    if rank == 0:
        check_free_space(run_dir, 3 * params + (1 << 20), "one checkpoint")
    # Everything is checked: from here on the folder is written.
    history = list(((state or {}).get("run") or {}).get("changes", [])) + changes
    if rank == 0:
        if overwrite:
            _clear_run_folder(run_dir)
        write_run_files(run_dir, resolved, check=False)
        if changes:
            write_json(run_dir / "changes.json", history)
            for c in changes:
                print(f"[alara train] resuming at step {c['step']} with {c['key']} = {c['now']!r} "
                      f"(was {c['was']!r}; recorded in changes.json)", file=sys.stderr)
    trainer = Trainer(pipeline, objective, data, geometry, rc.train, run_dir,
                      run_info={"config": resolved, "changes": history})
    logs = trainer.fit(resume=state is not None)
    if rank == 0:
        _write_guard(run_dir, pipeline, rc.data.root, data, geometry, rc.train.seed)
    return logs

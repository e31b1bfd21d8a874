"""Profile of one training step at the quick experiment's size (configs/experiment.toml):
images per second and the share of time in the projection operators.

    .venv/bin/python benchmarks/test_train_step.py [--config configs/experiment.toml] [--steps 5]
    .venv/bin/python -m pytest benchmarks/test_train_step.py --benchmark-only -s

Warm-up and joint steps are profiled separately (the joint step also runs the prior and
the dose policy).  The operator share is the self time of the ``alara::`` ops (forward
and backward projection, which FBP and the simulator call) over the step's total."""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch.profiler import ProfilerActivity, profile

from alara.run_config import build_pipeline, load_run_config
from alara.train import Trainer


def profile_steps(config: str = "configs/experiment.toml", steps: int = 5, threads: int = 0) -> dict[str, dict]:
    """``{phase: {"images_per_s", "ms_per_step", "operator_share"}}`` on random images."""
    if threads:
        torch.set_num_threads(threads)
    rc = load_run_config(config)
    from alara.data.synth import small_geometry
    from alara.experiment.runner import load_experiment_config

    _, spec = load_experiment_config(config)
    geometry = small_geometry(spec.image_size, spec.views)
    torch.manual_seed(0)
    x = torch.rand(64, 1, *geometry.grid.shape) * 0.3
    data = torch.utils.data.TensorDataset(x)
    pipeline, objective = build_pipeline(rc.components, rc.objective)
    out = {}
    for phase, tc in (("warmup", dataclasses.replace(rc.train, warmup_steps=10 ** 6, steps=0, progress=False)),
                      ("joint", dataclasses.replace(rc.train, warmup_steps=0, steps=10 ** 6, progress=False))):
        trainer = Trainer(pipeline, objective, data, geometry, tc)
        it = iter(trainer._loader())
        trainer.train_step(trainer._batches(it))        # warm caches
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            for _ in range(steps):
                trainer.train_step(trainer._batches(it))
            wall = time.perf_counter() - t
        ops = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith("alara::"))
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        images = steps * tc.batch_size * tc.grad_accum
        out[phase] = {"images_per_s": images / wall, "ms_per_step": 1000 * wall / steps,
                      "operator_share": ops / total if total else float("nan")}
    return out


def test_train_step_profile(benchmark):
    result = benchmark.pedantic(profile_steps, kwargs={"steps": 3}, rounds=1, iterations=1)
    for phase, r in result.items():
        print(f"\n{phase}: {r['images_per_s']:.1f} images/s, {r['ms_per_step']:.0f} ms/step, "
              f"operators {100 * r['operator_share']:.1f}% of the step")
    assert all(0 <= r["operator_share"] <= 1 for r in result.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/experiment.toml")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()
    for phase, r in profile_steps(a.config, a.steps, a.threads).items():
        print(f"{phase}: {r['images_per_s']:.1f} images/s, {r['ms_per_step']:.0f} ms/step, "
              f"operators {100 * r['operator_share']:.1f}% of the step")


if __name__ == "__main__":
    main()

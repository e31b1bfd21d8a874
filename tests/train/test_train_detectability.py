"""``iq_metric = detectability`` is one config line for ``alara train`` and ``alara
evaluate``: the lesion truth travels from the data set to the hinge loss, and images
without a lesion are left out."""

from __future__ import annotations

import json
import math

import pytest

from alara.cli import main
from alara.data.synth import generate_dataset, small_geometry

CONFIG = """
[data]
root = "{root}"

[prior]
name = "prescan"
params = {{ relative_dose = 0.02, filter = "ram-lak" }}

[dose_policy]
name = "resnet18"
params = {{ mode = "scalar", input_size = 32, norm = "group" }}

[reconstructor]
name = "fbp_unet"
params = {{ filter = "ram-lak", scales = 2, channels = [4, 8], skip_channels = 2, use_sigmoid = false, residual = true }}

[iq_metric]
name = "detectability"
params = {{ observer = "npw", no_lesion = "skip" }}

[objective]
target = 2.0

[train]
warmup_steps = 2
steps = 3
batch_size = 2
checkpoint_every = 5
log_every = 1

[eval]
metrics = ["psnr"]
"""


@pytest.fixture(scope="module")
def lesion_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesions") / "data"
    generate_dataset(root, patients=(3, 1, 2), slices_per_patient=2, geometry=small_geometry(64, 30),
                     observations=False, progress=False, lesion_slices=True, lesion_free=True)
    return root


def test_train_and_evaluate_against_detectability(lesion_data, tmp_path, capsys):
    config = tmp_path / "det.toml"
    config.write_text(CONFIG.format(root=lesion_data))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    joint = [row for row in lines if row.get("phase") == "joint"]
    assert len(joint) == 3
    for row in joint:
        # d' of real lesions: finite, and the hinge term of the loss is there.
        assert math.isfinite(row["quality"]) and math.isfinite(row["loss"])
    assert main(["evaluate", str(run), "--split", "test"]) == 0
    summary = json.loads((run / "eval_test" / "summary.json").read_text())
    assert set(summary["metrics"]) == {"detectability", "psnr"}
    assert summary["target"]["metric"] == "detectability" and summary["target"]["q"] == 2.0
    assert math.isfinite(summary["metrics"]["detectability"]["mean"])

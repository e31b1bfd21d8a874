#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the main job: the experiment comparing
# End2end-ALARA with fixed dose, TCM and AEC (configs/experiment.toml); extra arguments go
# to `alara experiment` (e.g. a config path, --out DIR, --set train.steps=100).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/alara experiment "$@"

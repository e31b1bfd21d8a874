#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the main job; extra arguments go to it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/alara demo "$@"

#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the test suite; extra arguments go to pytest.
# Slow tests are skipped unless ALARA_SLOW=1; CUDA tests run only where a GPU exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
marker="not slow"
if [ "${ALARA_SLOW:-0}" = "1" ]; then marker=""; fi
exec .venv/bin/python -m pytest -m "$marker" "$@"

#!/usr/bin/env bash
# Create .venv and install alara with its test extras from this repository's own files.
# Idempotent: re-installs only when pyproject.toml, setup.py or csrc/ changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${ALARA_VENV:-.venv}

# The nvcc on PATH may be a wrapper script; torch needs the real toolkit root.
if [ -z "${CUDA_HOME:-}" ]; then
    for d in /usr/local/cuda /usr/local/cuda-13.0; do
        if [ -x "$d/bin/nvcc" ]; then export CUDA_HOME="$d"; break; fi
    done
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp="$VENV/.alara-install-stamp"
digest=$(cat pyproject.toml setup.py $(find csrc -type f 2>/dev/null | sort) 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ] && "$PY" -c "import alara" 2>/dev/null; then
    echo "setup: $VENV is up to date"
    exit 0
fi

# The extension is built against the torch it runs with, so torch comes first and the
# package is built without isolation (as pytorch/extension-cpp documents).
torch_req=$("$PY" - <<'PYEOF'
import re
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(next(d for d in deps if re.match(r"torch\b", d) and not d.startswith("torchvision")))
PYEOF
)
# torch's CUDA build with its CUDA libraries fills about 6.5 GB; say so before pip fails
# half-way with "No space left on device" on a small disk.
need_kb=$((7 * 1024 * 1024))
free_kb=$(df -Pk "$VENV" | awk 'NR == 2 {print $4}')
if [ -n "$free_kb" ] && [ "$free_kb" -lt "$need_kb" ]; then
    echo "setup: warning: $((free_kb / 1024)) MiB free on the disk of $VENV; torch with its" \
         "CUDA libraries needs about 6.5 GiB. Free space there (or point ALARA_VENV at a" \
         "larger disk) if pip fails with 'No space left on device'." >&2
fi
# --no-cache-dir: the cache would hold a second copy of every downloaded wheel.
pipi=("$PY" -m pip install -q --disable-pip-version-check --no-cache-dir)
"${pipi[@]}" "setuptools>=64" wheel "$torch_req"
"${pipi[@]}" --no-build-isolation -e ".[test]"
echo "$digest" > "$stamp"
"$VENV/bin/alara" info

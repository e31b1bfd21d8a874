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
"$PY" -m pip install -q --disable-pip-version-check "setuptools>=64" wheel "$torch_req"
"$PY" -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[test]"
echo "$digest" > "$stamp"
"$VENV/bin/alara" info

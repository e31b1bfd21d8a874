#!/usr/bin/env bash
# Build alara's source distribution, install it with pip into a fresh virtualenv, and run
# the operator tests (tests/ops, not slow) against the installed copy: proves that the
# sdist carries every C++/CUDA source and header and builds alara._C from them.
#
# Usage: scripts/sdist-check.sh [--download]
#   default     the fresh venv sees the third-party packages (torch, numpy, pytest, ...)
#               of $ALARA_VENV (default .venv) through a path file, alara itself excluded,
#               so nothing is downloaded;
#   --download  the fresh venv installs alara's dependencies and test extras from the
#               package index instead (CI with network; torch is a large download).
# Environment: PYTHON (default .venv/bin/python, builds the sdist), ALARA_NO_CUDA /
# FORCE_CUDA / CUDA_HOME / MAX_JOBS are passed to the build (see setup.py).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${ALARA_VENV:-.venv}
PY=${PYTHON:-$VENV/bin/python}
download=0
if [ "${1:-}" = "--download" ]; then download=1; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/alara-sdist.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "sdist-check: working in $work"

# 1. the sdist (no compiler needed for this step)
ALARA_NO_EXTENSION=1 "$PY" setup.py -q sdist -d "$work/dist" >/dev/null 2>&1
rm -rf "$ROOT/alara.egg-info"
sdist=$(ls "$work"/dist/alara-*.tar.gz)
tar tzf "$sdist" | sed 's|^[^/]*/||' > "$work/sdist-files.txt"
for f in $(cd "$ROOT" && git ls-files csrc); do
    grep -qx "$f" "$work/sdist-files.txt" || { echo "sdist-check: $f missing from $sdist" >&2; exit 1; }
done
echo "sdist-check: $sdist has every file of csrc/"

# 2. a fresh virtualenv
"$PY" -m venv "$work/venv"
VPY="$work/venv/bin/python"
if [ "$download" = 1 ]; then
    "$VPY" -m pip install -q --disable-pip-version-check "setuptools>=64" wheel
    torch_req=$("$PY" -c "import torch; print('torch==' + torch.__version__.split('+')[0])")
    "$VPY" -m pip install -q --disable-pip-version-check "$torch_req"
else
    # the third-party packages of $VENV, without alara (no editable finder, no metadata)
    site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    vsite=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    mkdir -p "$work/deps"
    for entry in "$site"/*; do
        case "$(basename "$entry")" in
            alara*|__editable__*|_alara*|*.pth|pip|pip-*|setuptools|setuptools-*|_distutils_hack) ;;
            *) ln -s "$entry" "$work/deps/" ;;
        esac
    done
    echo "$work/deps" > "$vsite/zz-sdist-check-deps.pth"
    "$VPY" -m pip install -q --disable-pip-version-check "setuptools>=64" wheel 2>/dev/null || true
fi

# 3. install the sdist: the extension is compiled against the torch the venv runs
extras=""
if [ "$download" = 1 ]; then extras="[test]"; fi
"$VPY" -m pip install -q --disable-pip-version-check --no-build-isolation "$sdist$extras"

# 4. the operator tests from the unpacked sdist, importing the installed package (run
# from outside the unpacked tree, so that its alara/ is not what gets imported)
mkdir -p "$work/src" && tar xzf "$sdist" -C "$work/src"
src=$(ls -d "$work"/src/alara-*)
cd "$work"
"$VPY" - <<'PY'
import alara, alara._C, torch
from alara.ops import native
assert "site-packages" in alara._C.__file__, alara._C.__file__
print("sdist-check: installed", alara._C.__file__, native.build_info())
PY
"$VPY" -m pytest -q -m "not slow" -p no:cacheprovider --rootdir "$src" \
    -c "$src/pyproject.toml" "$src/tests/ops"
echo "sdist-check: OK"

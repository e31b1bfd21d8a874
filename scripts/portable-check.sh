#!/usr/bin/env bash
# Compiles the CPU operators (syntax and warnings only, a few seconds) as a machine without
# the x86 SIMD paths would (ALARA_PORTABLE_ONLY: aarch64, other compilers), so that code
# outside those paths never comes to depend on them.  Needs the virtualenv of
# scripts/setup.sh (its torch headers); fails on any error or warning in alara's sources.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
torch_inc=$("$py" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'include'))")
py_inc=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for src in csrc/cpu/projection_cpu.cpp csrc/ops.cpp; do
  "${CXX:-g++}" -std=c++20 -fsyntax-only -Wall -fopenmp -DALARA_PORTABLE_ONLY -Icsrc \
    -I"$torch_inc" -I"$torch_inc/torch/csrc/api/include" -I"$py_inc" "$src" >>"$log" 2>&1 || true
done
# (torch's own headers may warn; alara's sources may not)
if grep -E "^csrc/[^:]+:[0-9]+:[0-9]+: (error|warning)" "$log"; then
  echo "portable-check: the CPU sources do not build cleanly without the x86 SIMD paths" >&2
  exit 1
fi
if grep -q "error" "$log"; then
  cat "$log" >&2
  echo "portable-check: the compile failed" >&2
  exit 1
fi
echo "portable-check: the CPU sources build without the x86 SIMD paths"

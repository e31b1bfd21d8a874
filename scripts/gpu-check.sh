#!/usr/bin/env bash
# On a machine with a CUDA GPU: build alara._C with its CUDA kernels, run the CUDA tests
# (every test marked `cuda`, slow ones included), then `alara bench --device cuda` and
# check the targets of docs/benchmarks.md ("CUDA targets"):
#   - LoDoPaB forward projections at batch 64, float32: >= 10,000 per second;
#   - native FP and BP at least 3x faster than ASTRA's GPU projector in the same run.
# Results: results/gpu-bench.json and the printed table. Exit status 1 when a test fails
# or a target is missed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA GPU visible (nvidia-smi -L failed)" >&2
    exit 1
fi
nvidia-smi -L
# The nvcc on PATH may be a wrapper; torch needs the real toolkit root (as scripts/setup.sh).
if [ -z "${CUDA_HOME:-}" ]; then
    for d in /usr/local/cuda /usr/local/cuda-13.0; do
        if [ -x "$d/bin/nvcc" ]; then export CUDA_HOME="$d"; break; fi
    done
fi
export FORCE_CUDA=1
bash scripts/setup.sh
PY=.venv/bin/python
.venv/bin/alara info
"$PY" -c "from alara.ops import native; assert native.cuda_built(), 'alara._C has no CUDA kernels'"

"$PY" -m pytest -q -m cuda tests/ops

mkdir -p results
.venv/bin/alara bench --device cuda --geometry all --batch 1,8,64 --rounds 10 \
    --json results/gpu-bench.json

"$PY" - <<'PY'
import json, sys

rows = json.load(open("results/gpu-bench.json"))["results"]
ok = True
for r in rows:
    if r["impl"] != "alara-native":
        continue
    if r["geometry"] == "lodopab" and r["op"] == "fp" and r["batch"] == 64:
        per_s = 64 / (r["ms"] / 1e3)
        good = per_s >= 10_000
        ok &= good
        print(f"gpu-check: LoDoPaB FP batch 64: {per_s:,.0f} projections/s (target 10,000) "
              f"{'ok' if good else 'MISSED'}")
    if r["ratio"] is not None:
        good = r["ratio"] <= 1 / 3
        ok &= good
        print(f"gpu-check: {r['geometry']} {r['op']} b{r['batch']}: {r['ratio']:.3f}x ASTRA GPU "
              f"(target <= 0.333x) {'ok' if good else 'MISSED'}")
sys.exit(0 if ok else 1)
PY

#!/usr/bin/env bash
# The GPU study in one command, for a machine with an NVIDIA GPU where torch,
# torchvision, transformers, nvidia-ml-py, pandas and scipy are installed and
# nothing can be downloaded: it runs the package from this checkout through
# PYTHONPATH (no virtual environment needed).
#
#   OUT=/path/to/results scripts/gpu_study.sh
#
# Full ResNet50 (8..4096 px) and BERT (50..500 tokens) sweeps and the AlexNet
# point, 10 runs each, with iterations cut so the whole study takes about six
# minutes on a recent GPU. It checks that the GPU energy is *measured* (NVML
# energy counter), then packs the run trees into $OUT/gpu_study.tar.gz and writes
# one summary CSV and one per-run CSV per model, and a log, beside it.
#
# Environment: OUT (default ./gpu_results), DEVICE (default cuda), RUNS (default 10),
# SCALE (multiplies every iteration count; default 1), PYTHON (default python3).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$PWD/gpu_results}"
DEVICE="${DEVICE:-cuda}"
RUNS="${RUNS:-10}"
SCALE="${SCALE:-1}"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

mkdir -p "$OUT"
trees="$(mktemp -d)"
log="$OUT/gpu_study.log"
iters() { "$PYTHON" -c "print(max(1, round($1 * $SCALE)))"; }

run() {  # run MODEL ITERS SIZES... [-- EXTRA OPTIONS]
  local model=$1 n; n=$(iters "$2"); shift 2
  echo "== $model: $*, $n iterations, $RUNS runs on $DEVICE" | tee -a "$log"
  # --period 0.02: windows here last about a second, over which NVML's counter, moving every ~100 ms, is off
  # by a few % read at the edges only; sampled five times faster, the analysis aligns it on its updates
  "$PYTHON" -m measure run "$model" --device "$DEVICE" --iters "$n" --runs "$RUNS" \
      --warmup 20 --period 0.02 --out "$trees/$model" --no-progress --sizes "$@" 2>&1 | tee -a "$log"
}

{ "$PYTHON" -m measure sensors; nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv || true; } \
  2>&1 | tee "$log"

run alexnet 2000 224
run resnet50 400 8 32 64 128 256 512 1024 2048 4096 --iters-at "4096=$(iters 100)"
run bert 300 50 100 150 200 250 300 350 400 450 500

# The GPU energy must come from a real sensor: every complete run has a measured gpu energy counter.
"$PYTHON" - "$trees" <<'PY' 2>&1 | tee -a "$log"
import json, sys
from pathlib import Path
bad = []
for meta_path in Path(sys.argv[1]).rglob("meta.json"):
    meta = json.loads(meta_path.read_text())
    gpus = {k: v for k, v in meta["sensors"].items() if k.startswith("gpu")}
    if meta["status"] != "complete":
        print(f"note: {meta_path.parent} is {meta['status']}: {meta['reason']}")
    elif not any(v["source"] == "measured" and f"{k}.energy_j" in v["channels"] for k, v in gpus.items()):
        bad.append(str(meta_path.parent))
if bad:
    sys.exit(f"GPU energy is not measured by an NVML energy counter in {len(bad)} runs, e.g. {bad[0]}")
print("check: GPU energy measured by the NVML energy counter in every complete run")
PY

for model in alexnet resnet50 bert; do
  "$PYTHON" -m analysis summarize "$trees/$model" -o "$OUT/${model}_summary.csv" --runs-csv "$OUT/${model}_runs.csv"
done
tar -C "$trees" -czf "$OUT/gpu_study.tar.gz" .
rm -rf "$trees"
echo "GPU study written to $OUT (gpu_study.tar.gz, *_summary.csv, *_runs.csv, gpu_study.log)"

#!/usr/bin/env bash
# The GPU study in one command, for a machine with an NVIDIA GPU where torch,
# torchvision, transformers, nvidia-ml-py, pandas and scipy are installed and
# nothing can be downloaded: it runs the package from this checkout through
# PYTHONPATH (no virtual environment needed).
#
#   OUT=/path/to/results scripts/gpu_study.sh
#
# Full ResNet50 (8..4096 px) and BERT (50..500 tokens) sweeps and the AlexNet
# point, 10 runs each, with iterations cut so that they take about six minutes
# on a recent GPU (the package's gpu-study preset, measure/plan.py); ResNet50
# at 224 px over batch sizes 1..128 and fp32/bf16/fp16 (the gpu-batch preset,
# about two minutes); the generation points, about a minute: GPT-2's
# architecture (hf:gpt2, random weights) generating 128 tokens greedily from
# prompts of 64 and 512 tokens in batches of 1 and 16, 5 runs of one request
# each, with the prefill and the decode measured at their boundary (the
# generate task's gpu-study preset); and a test of NVML's energy counter with
# a square-wave load at several phases of its updates
# (benchmarks/nvml_phase.py, about a minute). It checks that the GPU energy is
# *measured* (NVML energy counter), then packs the run trees into
# $OUT/gpu_study.tar.gz and writes one summary CSV and one per-run CSV per
# sweep, the batch x dtype comparison, the phase test's nvml_phase.json and a
# log beside it. Nothing is changed on the GPU: no clock, power limit or
# persistence setting.
#
# Environment: OUT (default ./gpu_results), DEVICE (default cuda), RUNS (default 10; not the
# generation points'), SCALE (multiplies every iteration count; default 1; not the generation
# points'), PYTHON (default python3).
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
scaled() {  # the --iters / --iters-at options of MODEL's gpu-study preset times SCALE (none when SCALE is 1)
  "$PYTHON" - "$1" "$SCALE" <<'PY'
import sys
from measure.plan import PRESETS
preset, scale = PRESETS["gpu-study"][sys.argv[1]], float(sys.argv[2])
n = lambda count: max(1, round(count * scale))
if scale != 1:
    print(f"--iters {n(preset.iterations)}", *(f"--iters-at {s}={n(i)}" for s, i in preset.iterations_at.items()))
PY
}

run() {  # run MODEL: the gpu-study preset (measure/plan.py), RUNS runs on DEVICE
  local model=$1 options; options=$(scaled "$model")
  echo "== $model: gpu-study preset ${options:-as is}, $RUNS runs on $DEVICE" | tee -a "$log"
  # the preset samples every 0.02 s: windows here last about a second, over which NVML's counter, moving every
  # ~100 ms, is off by a few % read at the edges only; sampled five times faster, the analysis aligns it
  # shellcheck disable=SC2086 # $options holds several options
  "$PYTHON" -m measure run "$model" --preset gpu-study $options --device "$DEVICE" --runs "$RUNS" \
      --out "$trees/$model" --no-progress 2>&1 | tee -a "$log" \
    || [ "${PIPESTATUS[0]}" -eq 1 ]  # 1: some run failed (out of memory, say), which the check below notes
}

{ "$PYTHON" -m measure sensors; nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv || true; } \
  2>&1 | tee "$log"

run alexnet
run resnet50
run bert

# Batch size x dtype (the gpu-batch preset: ResNet50 at 224 px, batch 1..128, fp32/bf16/fp16, runs interleaved)
echo "== resnet50: gpu-batch preset, on $DEVICE" | tee -a "$log"
"$PYTHON" -m measure run resnet50 --preset gpu-batch --device "$DEVICE" --out "$trees/resnet50_batch" --no-progress \
    2>&1 | tee -a "$log" || [ "${PIPESTATUS[0]}" -eq 1 ]

# Does NVML's energy counter see a short burst of work whatever its phase? (benchmarks/nvml_phase.py)
"$PYTHON" "$here/benchmarks/nvml_phase.py" --out "$OUT" 2>&1 | tee -a "$log" || echo "note: the NVML phase test failed" | tee -a "$log"

echo "== generation: hf:gpt2, the generate task's gpu-study preset on $DEVICE" | tee -a "$log"
# each window is one request; its decode phase (128 tokens) lasts well over NVML's ~100 ms update, its prefill
# usually not: the analysis then takes the prefill from the power readings and says so in the run's figures
"$PYTHON" -m measure run hf:gpt2 --task generate --preset gpu-study --device "$DEVICE" --out "$trees/generation" \
    --no-progress 2>&1 | tee -a "$log" || [ "${PIPESTATUS[0]}" -eq 1 ]

# The GPU energy must come from a real sensor: in every complete run, the GPU the model ran on (gpu_domain,
# matched by UUID) has a measured NVML energy counter.
"$PYTHON" - "$trees" <<'PY' 2>&1 | tee -a "$log"
import sys
from pathlib import Path
from measure import runtree
bad = []
for meta_path in Path(sys.argv[1]).rglob("meta.json"):
    meta = runtree.read_meta(meta_path.parent)
    domain = meta.get("gpu_domain")
    about = meta.sensors.get(domain) or {}
    if meta.status != "complete":
        print(f"note: {meta_path.parent} is {meta.status}: {meta.reason}")
    elif not (about.get("source") == "measured" and f"{domain}.energy_j" in about.get("channels", [])):
        bad.append(f"{meta_path.parent} ({meta.get('gpu_domain_note') or domain})")
if bad:
    sys.exit(f"GPU energy is not measured by an NVML energy counter in {len(bad)} runs, e.g. {bad[0]}")
print("check: GPU energy measured by the NVML energy counter of the run's GPU in every complete run")
PY

for model in alexnet resnet50 bert resnet50_batch generation; do
  "$PYTHON" -m analysis summarize "$trees/$model" -o "$OUT/${model}_summary.csv" --runs-csv "$OUT/${model}_runs.csv"
done
"$PYTHON" -m analysis compare "$trees/resnet50_batch" --baseline dtype=fp32 batch_size=1 -o "$OUT/resnet50_batch_compare.csv"
tar -C "$trees" -czf "$OUT/gpu_study.tar.gz" .
rm -rf "$trees"
echo "GPU study written to $OUT (gpu_study.tar.gz, *_summary.csv, *_runs.csv, gpu_study.log)"

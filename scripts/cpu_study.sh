#!/usr/bin/env bash
# The committed CPU studies: data/{alexnet,resnet50,bert,batch_precision,generation}/ measured on this machine's CPU.
#
#   scripts/cpu_study.sh                 # all five (about 40 minutes on a 2-core CPU: ResNet50 5, BERT 10,
#                                        # AlexNet 1, batch_precision 12, generation 8)
#   scripts/cpu_study.sh resnet50 bert   # some of them
#
# For each study it runs `python -m measure run ... --device cpu` into a fresh
# temporary folder, summarises it with `python -m analysis summarize`, writes a README.md
# saying how, where and when, and only then replaces data/<study>/ (a failed or
# interrupted run leaves the committed data as they were). Layout:
#
#   data/<study>/tree/        the run tree (docs/run-tree.md); for batch_precision a folder of two trees,
#                             tree/resnet50/ and tree/distilbert/
#   data/<study>/summary.csv  one row per point (`python -m analysis summarize`: the seed's per-model CSV,
#                             <domain>_<quantity>_<statistic> columns; docs/tables.md)
#   data/<study>/runs.csv     one row per run (`--runs-csv`: the wide per-run table, Study.wide())
#   data/<study>/README.md    commands, machine, date, load
#   data/alexnet/cold/        AlexNet measured with --warmup 0, each run in a new process
#
# The protocol is the package's `cpu-study` preset (measure/plan.py), cut to fit a
# 2-core CPU (the seed's is for a GPU):
# - ResNet50 stops at 1024 px: one inference takes about 2 s there on one
#   thread, and 2048 / 4096 px would take about 4x / 16x longer each;
# - iterations per run are chosen so each energy window lasts about a second or
#   more (the estimate samples CPU load every 0.1 s), fewer at large sizes;
# - BERT runs 8 timed inferences per run at 150..500 tokens (20 / 12 at 50 / 100);
# - batch_precision: ResNet50 at 64 px and DistilBERT (random weights) at 64 tokens, batch 1, 4, 16 x fp32,
#   bf16, eager (torch.compile takes minutes per shape on this CPU), runs interleaved so that a drift of the
#   machine's load falls on every configuration alike, iterations filling 2 s windows.
# - generation: GPT-2's architecture (hf:gpt2, random weights), prompts of 32, 128 and 512 tokens,
#   32 new tokens, batches of 1 and 4, one request per window, the preset's 5 runs (RUNS does not apply).
#
# Inference uses THREADS torch threads (OMP_NUM_THREADS, default 1): on a shared
# 2-core machine, two threads make every parallel region wait for the thread that
# another process has descheduled (AlexNet went from 14 ms to 235 ms per inference),
# while one thread is only slowed down in proportion (17 ms alone).
#
# Before each study it waits (up to WAIT_S seconds) for the 1-minute load average
# to fall below MAX_LOAD: other processes on the CPU would slow the inferences down
# and inflate the estimated energy. The README records the load before and after.
#
# Environment: DATA (default data), RUNS (default 10), PYTHON (default .venv/bin/python),
# THREADS (default 1), MAX_LOAD (default 1.0), WAIT_S (default 600).
set -euo pipefail

cd "$(dirname "$0")/.."
DATA="${DATA:-data}"
RUNS="${RUNS:-10}"
MAX_LOAD="${MAX_LOAD:-1.0}"
WAIT_S="${WAIT_S:-600}"
PYTHON="${PYTHON:-.venv/bin/python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS="${THREADS:-1}"
studies=("$@")
[ ${#studies[@]} -gt 0 ] || studies=(alexnet resnet50 bert batch_precision generation)

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

wait_for_quiet() {  # until the 1-minute load average is below MAX_LOAD, or WAIT_S seconds
  local waited=0
  while awk -v max="$MAX_LOAD" '{ exit !($1 >= max) }' /proc/loadavg && [ "$waited" -lt "$WAIT_S" ]; do
    [ "$waited" -gt 0 ] || echo "waiting for the load average ($(loadavg)) to fall below $MAX_LOAD ..."
    sleep 15; waited=$((waited + 15))
  done
}

measure() {  # measure OUT MODEL [OPTIONS...]: one `python -m measure run`, logged in the study's README
  local out=$1; shift
  local cmd=(python -m measure run "$@" --device cpu --out "$out" --no-progress)
  echo "    ${cmd[*]}" | sed "s#$build#$DATA/$study#" >>"$build/commands.txt"
  echo "== ${cmd[*]}"
  "$PYTHON" "${cmd[@]:1}" || [ $? -eq 1 ]  # 1: some run failed; summarize leaves it out with a warning
}

summarize() {  # summarize TREE DEST: summary.csv and runs.csv of a run tree
  local cmd=(python -m analysis summarize "$1" -o "$2/summary.csv" --runs-csv "$2/runs.csv")
  echo "    ${cmd[*]}" | sed "s#$build#$DATA/$study#g" >>"$build/commands.txt"
  "$PYTHON" "${cmd[@]:1}"
}

alexnet() {
  measure "$build/tree" alexnet --preset cpu-study --runs "$RUNS"
  # The warm-up effect: no untimed warm-up, and each of the 3 runs in a process of its own (one shard each).
  for k in 0 1 2; do
    measure "$build/cold" alexnet --preset cpu-study --iters 100 --warmup 0 --runs 3 --idle-seconds 1 --shard "$k/3"
  done
}

resnet50() {
  measure "$build/tree" resnet50 --preset cpu-study --runs "$RUNS"
}

bert() {
  measure "$build/tree" bert --preset cpu-study --runs "$RUNS"
}

batch_precision() {
  local grid=(--batch-sizes 1 4 16 --dtypes fp32 bf16 --iters auto --min-window 2 --warmup 5 --runs "$RUNS"
              --order interleave --threads "$OMP_NUM_THREADS")
  measure "$build/tree/resnet50" resnet50 --sizes 64 "${grid[@]}"
  measure "$build/tree/distilbert" hf:distilbert --sizes 64 "${grid[@]}"
}

files() {  # the README's list of files
  if [ "$study" = batch_precision ]; then
    echo "Files:"
    echo
    echo "- \`tree/resnet50/\`, \`tree/distilbert/\`: the two run trees (docs/run-tree.md), one folder per configuration"
    echo "  (\`batch4-bf16-eager-threads1/\`, ...)."
  else
    echo "Files:"
    echo
    echo "- \`tree/\`: the run tree (docs/run-tree.md)."
  fi
  echo "- \`summary.csv\`: one row per point (model, input size and every dimension that varies) with"
  echo "  \`<domain>_<quantity>_<statistic>\` columns (median, iqr, ci_low, ci_high: bootstrap 95 % CI of the median,"
  echo "  n: runs), \`n_runs\`, the run constants as they are (iterations, warmup, period_s, params,"
  echo "  flops_per_inference; never summarised) and each energy domain's \`source\` and \`method\`: the seed's"
  echo "  per-model CSV (\`python -m analysis summarize\`, docs/tables.md)."
  echo "- \`runs.csv\`: one row per run: its identity, constants and every per-run quantity as"
  echo "  \`<domain>_<quantity>\` (latencies as the quantity alone), with each energy domain's \`source\` and"
  echo "  \`method\` (\`--runs-csv\`, the wide table of docs/tables.md)."
  [ "$study" != alexnet ] || echo "- \`cold/\`: 3 runs with \`--warmup 0\`, each in a new process, for the warm-up effect."
}

generation() {
  measure "$build/tree" hf:gpt2 --task generate --preset cpu-study
}

for study in "${studies[@]}"; do
  case "$study" in alexnet|resnet50|bert|batch_precision|generation) ;;
    *) echo "unknown study $study (alexnet, resnet50, bert, batch_precision, generation)" >&2; exit 2 ;; esac
  build="$(mktemp -d)/$study"  # outside the checkout until complete: nothing half-done to commit
  mkdir -p "$build"
  wait_for_quiet
  started=$(date +%s) load_before=$(loadavg) date_utc=$(date -u +%Y-%m-%dT%H:%MZ)
  "$study"
  summarize "$build/tree" "$build"
  load_after=$(loadavg) minutes=$(( ($(date +%s) - started + 30) / 60 ))
  cpu=$("$PYTHON" -c 'from measure.host import cpu_model; print(cpu_model())')
  gpus=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
  weights=$("$PYTHON" -c 'import sys, pandas; print(", ".join(pandas.read_csv(sys.argv[1])["weights"].unique()))' \
            "$build/runs.csv")
  sensors=$("$PYTHON" -m measure sensors)
  if grep -q '^rapl .*unavailable' <<<"$sensors"; then
    energy="CPU energy is **estimated** (TDP x machine-wide CPU load): RAPL cannot be read here"
  else
    energy="CPU energy is **measured** (RAPL)"
  fi
  {
    echo "# $study: committed CPU study"
    echo
    echo "Measured on $date_utc by \`scripts/cpu_study.sh $study\` in about $minutes min, which ran:"
    echo
    cat "$build/commands.txt"
    echo
    echo "- Machine: $cpu, $(getconf _NPROCESSORS_ONLN) logical CPUs, $gpus CUDA GPU(s); inference on the CPU (\`--device cpu\`)"
    echo "  with $OMP_NUM_THREADS torch thread(s) (\`OMP_NUM_THREADS=$OMP_NUM_THREADS\`)."
    echo "- $energy. \`python -m measure sensors\` said:"
    echo
    sed 's/^/      /' <<<"$sensors"
    echo
    echo "- Load average (1, 5, 15 min) before: $load_before; after: $load_after. On a shared machine other"
    echo "  processes slow the inferences down and raise the estimated CPU energy, which follows the whole machine's load."
    echo "- Weights: $weights (pretrained weights are used only when already in the local cache);"
    echo "  latency and energy depend on the architecture and the input size, not on the weight values."
    if [ "$study" = batch_precision ]; then
      echo "- Each point's timed inferences fill windows of at least 2 s (\`--iters auto\`, sized once per point"
      echo "  from 5 timed inferences); the runs are interleaved (\`--order interleave\`: run 0 of every configuration,"
      echo "  then run 1, ...), so that \`python -m analysis compare\` pairs run k of two configurations and a drift of"
      echo "  the machine's load cancels in their ratio. Energy per sample = energy per inference / batch size."
    fi
    echo
    files
    [ "$study" != generation ] || cat <<'TEXT'

Generation: each run is one request of the batch (prompt of `input_size` tokens, 32 new tokens, greedy), with a
sample at the boundary between its prefill and its decode phase; `tree/*/input_*/run_*/tokens.csv` holds each
token's timing. `summary.csv` has one row per prompt length and batch size, with the energy per output token, per
prompt token (prefill) and per decode token, TTFT and inter-token latencies (docs/tables.md, "Generation runs").
These come from a 2-core CPU virtual machine: the CPU energy is an estimate, and there is no GPU figure.
TEXT
  } >"$build/README.md"
  rm "$build/commands.txt"
  rm -rf "$DATA/$study.old"
  [ ! -e "$DATA/$study" ] || mv "$DATA/$study" "$DATA/$study.old"
  mkdir -p "$DATA"
  mv "$build" "$DATA/$study"
  rm -rf "$DATA/$study.old"
  rmdir "$(dirname "$build")"
  echo "$study: $DATA/$study ($(du -sh "$DATA/$study" | cut -f1), $minutes min)"
done

"""Time and peak memory of ``load_study`` + ``summarize`` on synthetic run trees.

    python benchmarks/analysis_speed.py --runs 2000

Writes a tree of ``--runs`` runs (``--samples`` samples of 10 channels and as
many latencies each) in a temporary folder, nested so that a quarter, a half
and all of it can be loaded alone; each load runs in a fresh interpreter so its
peak memory (``ru_maxrss``) is its own.  The last line holds ``key=value`` pairs.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS_PER_SIZE = 10
GPU_EXTRA = ("sm_util_pct", "mem_used_mib", "proc_mem_mib")  # + energy_j, power_w, 2 RAPL, 3 process = 10


def power(model: str, input_size: int, run: int) -> dict[str, float]:
    return {"gpu0": 60.0 + input_size / 8 + run % 3, "package-0": 35.0 + run % 5, "dram-0": 4.0}


def generate(root: Path, runs: int, samples: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from treegen import write_tree

    sizes = [16 * (k + 1) for k in range(runs // 4 // RUNS_PER_SIZE)]
    for i in range(4):  # root/part<i//2>/m<i>: a quarter, a half (part0) and all
        write_tree(root / f"part{i // 2}", models=(f"m{i}",), input_sizes=sizes,
                   runs=RUNS_PER_SIZE, power_w=power, samples=samples, iterations=samples, duration_s=10.0,
                   gpu_extra=GPU_EXTRA)


def measure(path: Path) -> dict:
    """Load and summarise ``path`` in this interpreter; the figures as a dict."""
    sys.path.insert(0, str(ROOT))
    from analysis import load_study, summarize

    start = time.perf_counter()
    study = load_study(path)
    summary = summarize(study)
    seconds = time.perf_counter() - start
    return {"runs": len(study.runs), "groups": len(summary), "seconds": round(seconds, 2),
            "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="runs in the largest tree (default 2000)")
    parser.add_argument("--samples", type=int, default=1000, help="samples and latencies per run (default 1000)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: one load in a fresh process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    if args.runs < 4 * RUNS_PER_SIZE:
        parser.error(f"--runs must be at least {4 * RUNS_PER_SIZE}")
    with tempfile.TemporaryDirectory(prefix="analysis-speed-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        generate(root, args.runs, args.samples)
        print(f"generated {args.runs} runs in {time.perf_counter() - start:.1f} s", flush=True)
        results = []
        for path in (root / "part0" / "m0", root / "part0", root):
            out = subprocess.run([sys.executable, __file__, "--measure", str(path)], check=True,
                                 capture_output=True, text=True).stdout
            results.append(json.loads(out.splitlines()[-1]))
            print(results[-1], flush=True)
    largest = results[-1]
    per_1000 = [r["seconds"] / r["runs"] * 1000 for r in results]
    print(f"runs={largest['runs']} seconds={largest['seconds']} peak_mb={largest['peak_mb']} "
          f"seconds_per_1000_runs={'/'.join(f'{s:.2f}' for s in per_1000)} "
          f"sizes={'/'.join(str(r['runs']) for r in results)}")


if __name__ == "__main__":
    main()

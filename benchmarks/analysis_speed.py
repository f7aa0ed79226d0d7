"""Time and peak memory of ``load_study`` + ``summarize`` on synthetic run trees, ours and AIPowerMeter's.

    python benchmarks/analysis_speed.py --runs 2000

Writes a tree of ``--runs`` of our runs (``--samples`` samples of 10 channels
and as many latencies each) and one of ``--runs`` AIPowerMeter runs
(``--aipm-samples`` lines of its 2023 release with two GPUs, about 1 kB each,
and ``--samples`` latencies each) in a temporary folder, nested so that a
quarter, a half and all of each can be loaded alone; each load runs in a fresh
interpreter so its peak memory (``ru_maxrss``) is its own. ``--formats``
picks the trees. The last line holds ``key=value`` pairs (``aipm_`` for
AIPowerMeter's; ``mb_per_s``: sample files read per second).
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime, timedelta
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


def aipowermeter_line(date: datetime, rng: random.Random) -> str:
    """One line as AIPowerMeter's 2023 release writes it (nvidia-smi, two GPUs, three processes)."""
    package, gpu1 = 60.0 + 10 * rng.random(), 60.0 + 40 * rng.random()
    cpu = {"per_process_mem_use_abs": {"20379": 582656, "20381": 333759488, "20382": 4154213376},
           "per_process_cpu_uses": {"20379": 0.0, "20381": 0.03, "20382": rng.random()},
           "per_process_mem_use_percent": {"20379": 4.6e-05, "20381": 0.0263, "20382": 0.328},
           "intel_power": package, "psys_power": -1,
           "per_process_dram_power": {"20379": 0.0005, "20381": 0.3068, "20382": 3.8182},
           "total_dram_power": 11.0 + rng.random(),
           "per_process_mem_use_uss": {"20379": 245760, "20381": 331751424, "20382": 4149968896}}
    gpu = {"nvidia_draw_absolute": 18.92 + gpu1, "per_gpu_power_draw": {"0": 18.92, "1": gpu1},
           "per_gpu_attributable_mem_use": {"0": {}, "1": {"20382": 1821376512}},
           "per_gpu_per_pid_utilization_absolute": {"0": {"14091": 0.0}, "1": {"20382": 0.08}},
           "per_gpu_absolute_percent_usage": {"0": 0, "1": 0.08},
           "per_gpu_estimated_attributable_utilization": {"0": 0, "1": 1.0},
           "per_gpu_attributable_power": {"1": 100.0, "all": 100.0}}
    return json.dumps({"date": str(date), "metrics": {"cpu": cpu, "gpu": gpu}})


def generate_aipowermeter(root: Path, runs: int, lines: int, latencies: int) -> None:
    """``root/part<i//2>/m<i>/input_<size>/run_<k>/``: AIPowerMeter's files, latencies as ``np.savetxt`` writes."""
    rng = random.Random(0)
    sizes = [16 * (k + 1) for k in range(runs // 4 // RUNS_PER_SIZE)]
    start = datetime(2023, 7, 27, 17, 21, 57, 146517)
    for i in range(4):
        for size in sizes:
            for run in range(RUNS_PER_SIZE):
                folder = root / f"part{i // 2}" / f"m{i}" / f"input_{size}" / f"run_{run}"
                folder.mkdir(parents=True)
                dates = [start + timedelta(seconds=0.5 * k + 0.1 * rng.random()) for k in range(lines)]
                (folder / "power_metrics.json").write_text(
                    "".join(aipowermeter_line(d, rng) + "\n" for d in dates) + '"END OF RECORDING SEGMENT"\n')
                (folder / "latency.csv").write_text("".join(f"{0.02 + 0.001 * rng.random():.18e}\n"
                                                            for _ in range(latencies)))


def measure(path: Path) -> dict:
    """Load and summarise ``path`` in this interpreter; the figures as a dict."""
    sys.path.insert(0, str(ROOT))
    from analysis import load_study, summarize

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean tree warns of nothing
        study = load_study(path)
        summary = summarize(study)
    seconds = time.perf_counter() - start
    megabytes = sum(f.stat().st_size for f in path.rglob("power_metrics.json")) / 1e6
    return {"runs": len(study.runs), "groups": len(summary), "seconds": round(seconds, 2),
            "mb": round(megabytes, 1), "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def load_all(root: Path) -> list[dict]:
    """Load a quarter, a half and all of the tree under ``root``, each in a fresh interpreter."""
    results = []
    for path in (root / "part0" / "m0", root / "part0", root):
        out = subprocess.run([sys.executable, __file__, "--measure", str(path)], check=True,
                             capture_output=True, text=True).stdout
        results.append(json.loads(out.splitlines()[-1]))
        print(results[-1], flush=True)
    return results


def figures(results: list[dict], prefix: str = "") -> str:
    largest = results[-1]
    per_1000 = [r["seconds"] / r["runs"] * 1000 for r in results]
    return (f"{prefix}runs={largest['runs']} {prefix}seconds={largest['seconds']} {prefix}peak_mb={largest['peak_mb']} "
            f"{prefix}mb_per_s={largest['mb'] / largest['seconds']:.0f} "
            f"{prefix}seconds_per_1000_runs={'/'.join(f'{s:.2f}' for s in per_1000)} "
            f"{prefix}sizes={'/'.join(str(r['runs']) for r in results)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="runs in each largest tree (default 2000)")
    parser.add_argument("--samples", type=int, default=1000,
                        help="samples of our runs, and latencies of every run (default 1000)")
    parser.add_argument("--aipm-samples", type=int, default=100, help="lines of AIPowerMeter's runs (default 100)")
    parser.add_argument("--formats", nargs="+", choices=("ours", "aipowermeter"), default=["ours", "aipowermeter"])
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: one load in a fresh process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    if args.runs < 4 * RUNS_PER_SIZE:
        parser.error(f"--runs must be at least {4 * RUNS_PER_SIZE}")
    line = []
    with tempfile.TemporaryDirectory(prefix="analysis-speed-") as tmp:
        for name in args.formats:
            root = Path(tmp) / name
            start = time.perf_counter()
            if name == "ours":
                generate(root, args.runs, args.samples)
            else:
                generate_aipowermeter(root, args.runs, args.aipm_samples, args.samples)
            print(f"generated {args.runs} runs ({name}) in {time.perf_counter() - start:.1f} s", flush=True)
            line.append(figures(load_all(root), "" if name == "ours" else "aipm_"))
    print(" ".join(line))


if __name__ == "__main__":
    main()

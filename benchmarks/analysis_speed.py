"""Time and peak memory of ``load_study`` + ``summarize`` on synthetic run trees: first load, cached reload.

    python benchmarks/analysis_speed.py                    # 2,000 and 20,000 runs, and AIPowerMeter's 2,000
    python benchmarks/analysis_speed.py --runs 100000      # 100,000 runs

For each size of ``--runs`` it writes a tree of our runs in a temporary folder
(``--samples`` samples of 10 channels each in trees of up to 2,000 runs,
``--large-samples`` in larger ones, to keep them small on disk: 20,000 runs of
1,000 samples would be 8 GB; ``--latencies`` latencies each), nested so that a
quarter, a half and all of it can be loaded alone, and for the smallest size
a tree of AIPowerMeter runs (``--aipm-samples`` lines of its 2023 release with
two GPUs, about 1 kB each). Each part is loaded and summarised twice, each
time in a fresh interpreter: first (the cache written) and cached (read back);
peak memory is that interpreter's ``ru_maxrss``, and its worker processes'
largest (``worker_peak_mb``; forked workers share the interpreter's pages,
which they count too). Printed: one line per load, then ``key=value`` pairs
(``<format>_<runs>_...``; ``per_1000_runs``: a quarter/a half/all of the tree;
``mb_per_s``: sample files read per second in the first load; ``load_avg``:
the machine's 1-minute load average before and after).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS_PER_SIZE = 10
SMALL = 2000  # trees of at most this many runs get --samples samples per run, larger ones --large-samples
GPU_EXTRA = ("sm_util_pct", "mem_used_mib", "proc_mem_mib")  # + energy_j, power_w, 2 RAPL, 3 process = 10


def power(model: str, input_size: int, run: int) -> dict[str, float]:
    return {"gpu0": 60.0 + input_size / 8 + run % 3, "package-0": 35.0 + run % 5, "dram-0": 4.0}


def write_part(root: Path, model: str, sizes: list[int], samples: int, latencies: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from treegen import write_tree

    write_tree(root, models=(model,), input_sizes=sizes, runs=RUNS_PER_SIZE, power_w=power, samples=samples,
               iterations=latencies, duration_s=10.0, gpu_extra=GPU_EXTRA)


def sizes_of(runs: int) -> list[int]:
    return [16 * (k + 1) for k in range(runs // 4 // RUNS_PER_SIZE)]


def generate(root: Path, runs: int, samples: int, latencies: int) -> None:
    """``root/part<i//2>/m<i>``, i = 0..3: a quarter (``part0/m0``), a half (``part0``) and all, two processes."""
    with ProcessPoolExecutor(2) as pool:
        for done in [pool.submit(write_part, root / f"part{i // 2}", f"m{i}", sizes_of(runs), samples, latencies)
                     for i in range(4)]:
            done.result()


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
    start = datetime(2023, 7, 27, 17, 21, 57, 146517)
    for i in range(4):
        for size in sizes_of(runs):
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
        study = load_study(path, progress=False)
        loaded = time.perf_counter()
        summary = summarize(study)
    end = time.perf_counter()
    return {"runs": len(study.runs), "groups": len(summary), "seconds": round(end - start, 2),
            "load_s": round(loaded - start, 2), "summary_s": round(end - loaded, 2),
            "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "worker_peak_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def fresh(path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", str(path)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.splitlines()[-1])


def load_parts(root: Path, name: str) -> list[dict]:
    """First load then cached reload of a quarter, a half and all of the tree under ``root``."""
    results = []
    for path in (root / "part0" / "m0", root / "part0", root):
        megabytes = sum(f.stat().st_size for f in path.rglob("power_metrics.json")) / 1e6
        first, cached = fresh(path), fresh(path)
        results.append({"tree": name, "mb": round(megabytes, 1), "first": first, "cached": cached})
        print(results[-1], flush=True)
    return results


def figures(results: list[dict], prefix: str, samples: int) -> str:
    whole = results[-1]
    first, cached = whole["first"], whole["cached"]

    def per_1000(load: str) -> str:
        return "/".join(f"{r[load]['seconds'] / r[load]['runs'] * 1000:.3f}" for r in results)

    return (f"{prefix}_runs={first['runs']} {prefix}_samples={samples} {prefix}_first_s={first['seconds']} "
            f"{prefix}_cached_s={cached['seconds']} {prefix}_cached_summary_s={cached['summary_s']} "
            f"{prefix}_peak_mb={first['peak_mb']} {prefix}_worker_peak_mb={first['worker_peak_mb']} "
            f"{prefix}_cached_peak_mb={cached['peak_mb']} {prefix}_mb_per_s={whole['mb'] / first['load_s']:.0f} "
            f"{prefix}_first_s_per_1000_runs={per_1000('first')} "
            f"{prefix}_cached_s_per_1000_runs={per_1000('cached')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[2000, 20000], help="runs of each tree")
    parser.add_argument("--samples", type=int, default=1000, help=f"samples per run, trees of up to {SMALL} runs")
    parser.add_argument("--large-samples", type=int, default=100, help="samples per run, larger trees")
    parser.add_argument("--latencies", type=int, default=1000, help="latencies per run (default 1000)")
    parser.add_argument("--aipm-samples", type=int, default=100, help="lines of AIPowerMeter's runs (default 100)")
    parser.add_argument("--formats", nargs="+", choices=("ours", "aipowermeter"), default=["ours", "aipowermeter"])
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: one load in a fresh process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    if min(args.runs) < 4 * RUNS_PER_SIZE:
        parser.error(f"--runs must be at least {4 * RUNS_PER_SIZE}")
    line = [f"load_avg_before={os.getloadavg()[0]:.1f}", f"cpus={len(os.sched_getaffinity(0))}"]
    with tempfile.TemporaryDirectory(prefix="analysis-speed-") as tmp:
        trees = [("ours", runs) for runs in args.runs if "ours" in args.formats]
        trees += [("aipm", min(args.runs))] if "aipowermeter" in args.formats else []
        for name, runs in trees:
            root = Path(tmp) / f"{name}{runs}"
            samples = args.aipm_samples if name == "aipm" else args.samples if runs <= SMALL else args.large_samples
            start = time.perf_counter()
            if name == "ours":
                generate(root, runs, samples, args.latencies)
            else:
                generate_aipowermeter(root, runs, samples, args.latencies)
            time.sleep(2.5)  # files written just now are not cached (analysis.cache.RACY_S)
            print(f"generated {runs} runs ({name}, {samples} samples each) in {time.perf_counter() - start:.1f} s",
                  flush=True)
            line.append(figures(load_parts(root, name), f"{name}_{runs}", samples))
    line.append(f"load_avg_after={os.getloadavg()[0]:.1f}")
    print(" ".join(line))


if __name__ == "__main__":
    main()

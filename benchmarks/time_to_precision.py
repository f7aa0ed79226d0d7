"""Wall time to a ±1 % median: measuring to a precision versus the seed's fixed protocol.

    python benchmarks/time_to_precision.py [--model resnet50] [--size 32] [--precision 0.01]
                                           [--seed-iters 5000] [--seed-runs 10] [--device cpu]

Both protocols measure the same model and input size in this one process, one
after the other, through ``run_study``: ours (``--precision``: runs of a
``--min-window`` seconds window added until the bootstrap 95 % CI of the median
is within ±precision) and the seed's (``--seed-iters`` iterations × ``--seed-runs``
runs). For each it prints the wall time and the precision it actually reached
on the same quantity (the measured energy per inference where a sensor
measures it, else the median latency), then the ratio of the wall times. It
ends with one ``key=value`` line.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from analysis.precision import precision_rule, relative_half_width, tracked_values
from measure import runtree
from measure.plan import Plan
from measure.sweep import run_study


def reached_precision(tree: Path) -> tuple[str, int, float]:
    """The tracked quantity, the number of runs, and the relative half-width of its median's 95 % CI."""
    folders = sorted(folder for folder in tree.glob("*/input_*/run_*") if runtree.is_complete(folder))
    tracked, values = tracked_values(folders)
    return tracked.label, len(values), relative_half_width(values)


def timed(plan: Plan, out: Path) -> float:
    start = time.perf_counter()
    rule = precision_rule(plan.precision, plan.runs) if plan.precision is not None else None
    run_study(plan, out, stop_rule=rule, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--precision", type=float, default=0.01)
    parser.add_argument("--min-window", type=float, default=1.0)
    parser.add_argument("--seed-iters", type=int, default=5000)
    parser.add_argument("--seed-runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    common = dict(warmup=args.warmup, device=args.device, idle_s=0.0)
    ours = Plan(args.model, [args.size], iterations=1, runs=3, precision=args.precision,
                min_window_s=args.min_window, **common)
    seed = Plan(args.model, [args.size], iterations=args.seed_iters, runs=args.seed_runs, **common)
    with tempfile.TemporaryDirectory() as folder:
        results = {}
        for name, plan in (("ours", ours), ("seed", seed)):
            seconds = timed(plan, Path(folder) / name)
            quantity, runs, half_width = reached_precision(Path(folder) / name)
            results[name] = seconds, runs, half_width
            print(f"{name:5} {seconds:8.1f} s  {runs:3d} runs  median {quantity} within ±{half_width:.2%}")
    ratio = results["seed"][0] / results["ours"][0]
    print(f"the seed's protocol took {ratio:.1f}x the time of measuring to ±{args.precision:.0%} "
          f"({args.model} at {args.size}, {args.device})")
    print(f"model={args.model} size={args.size} device={args.device} target_pct={args.precision * 100:g} "
          f"ours_s={results['ours'][0]:.1f} ours_runs={results['ours'][1]} ours_pct={results['ours'][2] * 100:.2f} "
          f"seed_s={results['seed'][0]:.1f} seed_pct={results['seed'][2] * 100:.2f} speedup={ratio:.2f}")


if __name__ == "__main__":
    main()

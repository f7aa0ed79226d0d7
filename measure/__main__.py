"""Command line: ``python -m measure run MODEL [options]`` and ``python -m measure sensors``.

Exit status: 0 done; 2 bad input (one ``error:`` line, nothing measured);
1 the tree could not be written (disk full, read-only) or, with ``--wait``,
some task or run did not complete; 130 interrupted.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from .models import BUILDERS, ModelError
from .protocol import Plan, run_study
from .runtree import COMPLETE, RunTreeError


def int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def size_iterations(text: str) -> tuple[int, int]:
    size, _, iterations = text.partition("=")
    try:
        return positive_int(size), positive_int(iterations)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"expected SIZE=N such as 4096=1000, got {text!r} ({error})") from None


def shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n such as 0/4, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected i/n with n >= 1 and 0 <= i < n, got {text}")
    return index, count


def sbatch_option(text: str) -> tuple[str, str | bool]:
    key, equals, value = text.partition("=")
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", key):
        raise argparse.ArgumentTypeError(f"expected an sbatch option as KEY=VALUE (account=myproject) "
                                         f"or KEY (exclusive), got {text!r}")
    return key, value if equals else True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m measure", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="measure a model over a sweep of input sizes",
        description="Measure the energy and latency of MODEL's inference over input sizes, "
                    "writing OUT/input_<size>/run_<k>/{power_metrics.json, latency.csv, meta.json}.")
    run.add_argument("model", choices=sorted(BUILDERS), metavar="MODEL",
                     help=f"one of: {', '.join(sorted(BUILDERS))}")
    run.add_argument("--sizes", type=positive_int, nargs="+", metavar="N",
                     help="input sizes: image side in pixels (alexnet, resnet50) or tokens (bert, at most 510); "
                          "default: the seed study's sweep")
    run.add_argument("--iters", type=positive_int, dest="iterations", metavar="N",
                     help="timed inferences per run (default: the seed's, e.g. 5000 for resnet50)")
    run.add_argument("--iters-at", type=size_iterations, action="append", default=[], metavar="SIZE=N",
                     help="timed inferences at one input size, overriding --iters there (repeatable)")
    run.add_argument("--runs", type=positive_int, metavar="R", help="runs per input size (default 10)")
    run.add_argument("--warmup", type=non_negative_int, metavar="N",
                     help="untimed inferences before each run's window (default 50)")
    run.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="output folder (default: runs/<model>); must be empty, absent, or a run tree")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:<i> or auto (default: cuda if present)")
    run.add_argument("--period", type=positive_float, dest="period_s", metavar="S",
                     help="background sampling period in seconds (default 0.1)")
    run.add_argument("--idle-seconds", type=positive_float, dest="idle_s", metavar="S",
                     help="seconds of idle power measured before the study (default 5, 1 with --quick)")
    run.add_argument("--precision", type=positive_float, metavar="REL",
                     help="instead of a fixed number of runs, add runs at each size until the 95%% CI of the median "
                          "energy per inference (latency where no energy is measured) is within ±REL, e.g. 0.01")
    run.add_argument("--max-runs", type=positive_int, default=50, metavar="R",
                     help="with --precision: the most runs per size (default 50)")
    run.add_argument("--min-window", type=positive_float, default=2.0, dest="min_window_s", metavar="S",
                     help="with --precision: iterations per run chosen so each window lasts at least S seconds "
                          "(default 2)")
    run.add_argument("--quick", action="store_true",
                     help="a short sweep (fewer sizes, iterations and runs) that takes about a minute on a CPU")
    run.add_argument("--resume", action="store_true",
                     help="complete an existing run tree: redo missing or incomplete runs, keep complete ones")
    run.add_argument("--shard", type=shard, default=(0, 1), metavar="i/n",
                     help="measure only the i-th of n interleaved shares of the (size, run) cells")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cluster = run.add_argument_group(
        "running as jobs", "submit the sweep through submitit as --tasks jobs, each measuring one shard into --out "
                           "(shared storage); retry failed tasks with the same command and --resume")
    cluster.add_argument("--executor", choices=("slurm", "local"),
                         help="slurm: a Slurm job array; local: processes on this machine")
    cluster.add_argument("--tasks", type=positive_int, metavar="N", help="jobs, one shard each (default 1)")
    cluster.add_argument("--timeout-min", type=positive_int, metavar="M",
                         help="time limit of each task in minutes (default 60); a task that reaches it is "
                              "requeued and resumes")
    cluster.add_argument("--slurm-partition", metavar="NAME", help="Slurm partition")
    cluster.add_argument("--gpus-per-task", type=positive_int, metavar="N", help="GPUs each task gets")
    cluster.add_argument("--cpus-per-task", type=positive_int, metavar="N", help="CPU cores each task gets")
    cluster.add_argument("--array-parallelism", type=positive_int, metavar="N",
                         help="at most N tasks of the Slurm array at once (default: all)")
    cluster.add_argument("--slurm-extra", type=sbatch_option, action="append", default=[], metavar="KEY=VALUE",
                         help="any other sbatch option, without its dashes: account=proj, mem=32G, "
                              "constraint=a100, exclusive (repeatable)")
    cluster.add_argument("--wait", action="store_true", help="wait for the tasks and report those that failed")

    commands.add_parser("sensors", help="list the sensors found on this machine and why others are missing")
    return parser


CLUSTER_OPTIONS = ("tasks", "timeout_min", "slurm_partition", "gpus_per_task", "cpus_per_task", "array_parallelism",
                   "slurm_extra", "wait")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sensors":
        return show_sensors()
    given = [name for name in CLUSTER_OPTIONS if getattr(args, name)]
    if args.executor is None and given:
        parser.error(f"--{given[0].replace('_', '-')} goes with --executor")
    if args.executor and args.shard != (0, 1):
        parser.error("--shard goes without --executor: the executor gives each task its shard")
    try:
        plan = Plan.from_preset(args.model, quick=args.quick, sizes=args.sizes, iterations=args.iterations,
                                runs=args.runs, warmup=args.warmup, device=args.device,
                                period_s=args.period_s, idle_s=args.idle_s, precision=args.precision,
                                max_runs=args.max_runs, min_window_s=args.min_window_s)
        plan.iterations_at.update(args.iters_at)
        plan.validate()
        out = args.out or Path("runs") / args.model
        if args.executor:
            return submit_sweep(args, plan, out)
        run_study(plan, out, resume=args.resume, shard=args.shard, progress=not args.no_progress)
    except (ModelError, RunTreeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # disk full, read-only folder: the run being written is left incomplete
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}; complete runs are kept, --resume finishes the tree "
              "once this is fixed", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: complete runs are kept; rerun with --resume to finish", file=sys.stderr)
        return 130
    print(f"run tree written to {out}")
    return 0


def submit_sweep(args: argparse.Namespace, plan: Plan, out: Path) -> int:
    """Submit the sweep through submitit; with ``--wait``, report each task. The exit status."""
    from .executors import LOG_FOLDER, Resources, outcome, submit

    resources = Resources(args.timeout_min or Resources.timeout_min, args.slurm_partition, args.gpus_per_task, args.cpus_per_task,
                          args.array_parallelism, dict(args.slurm_extra))
    out = out.absolute()
    jobs = submit(plan, out, cluster=args.executor, tasks=args.tasks or 1, resume=args.resume, resources=resources)
    print(f"submitted {len(jobs)} task(s) ({args.executor}), job id(s): {' '.join(job.job_id for job in jobs)}")
    print(f"submitit logs: {out / LOG_FOLDER}")
    if not args.wait:
        print(f"when they end: python -m analysis summarize {out}; retry failed tasks with this command and --resume")
        return 0
    unfinished = 0
    for index, job in enumerate(jobs):
        statuses, failure = outcome(job)
        if failure:
            print(f"task {index}/{len(jobs)} (job {job.job_id}) failed: {failure}; log: {job.paths.stderr}")
        else:
            print(f"task {index}/{len(jobs)} (job {job.job_id}): "
                  + ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())))
        unfinished += bool(failure) or set(statuses) != {COMPLETE}
    if unfinished:
        print(f"error: {unfinished} task(s) left runs not complete; retry them with this command and --resume",
              file=sys.stderr)
        return 1
    print(f"run tree written to {out}")
    return 0


def show_sensors() -> int:
    from .sensors import open_sensors

    sensors, unavailable = open_sensors(gpu=True)
    for sensor in sensors:
        for domain in sensor.domains:
            print(f"{domain.name:16} {domain.source:9} {sensor.name:8} {', '.join(domain.channels)}")
            for metric, reason in (domain.details.get("unsupported") or {}).items():
                print(f"{domain.name + '.' + metric:16} not read: {reason}")
    for name, reason in unavailable.items():
        print(f"{name:16} unavailable: {reason}")
    for sensor in sensors:
        sensor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

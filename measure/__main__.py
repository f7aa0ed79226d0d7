"""Command line: ``python -m measure run MODEL [options]`` and ``python -m measure sensors``.

Exit status: 0 done (or nothing to do); 2 bad input (one ``error:`` line,
nothing measured; argparse's usage errors too); 1 some run failed, the tree
could not be written (disk full, read-only), a submission failed or, with
``--wait``, some task or run did not complete; 130 interrupted. Every error
ends in one ``error:`` line on stderr, never a traceback.

This is the one module of ``measure`` that may use the analysis: for the
precision stop rule (``analysis.precision``) and the table printed after a
sweep. Heavy imports (torch, the models) happen inside ``main``, so that an
interrupt while they load is an interrupt like any other.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import re
import sys
import textwrap
import time
from pathlib import Path

# How this command line names the plan's fields and run_study's keywords in its messages.
OPTIONS = {
    "model": "MODEL", "sizes": "--sizes", "iterations": "--iters", "iterations_at": "--iters-at", "runs": "--runs",
    "warmup": "--warmup", "device": "--device", "period_s": "--period", "idle_s": "--idle-seconds",
    "precision": "--precision", "max_runs": "--max-runs", "min_window_s": "--min-window",
    "batch_sizes": "--batch-sizes", "dtypes": "--dtypes", "dtype_mode": "--dtype-mode", "executions": "--compile",
    "threads": "--threads", "order": "--order", "seed": "--seed", "resume": "--resume", "overwrite": "--overwrite",
    "shard": "--shard", "out": "--out", "task": "--task", "new_tokens": "--new-tokens",
}
PLAN_OPTIONS = ("sizes", "iterations", "runs", "warmup", "device", "period_s", "idle_s", "precision", "max_runs",
                "min_window_s", "batch_sizes", "dtypes", "dtype_mode", "executions", "threads", "order", "seed",
                "task", "new_tokens")
CLUSTER_OPTIONS = ("tasks", "timeout_min", "slurm_partition", "gpus_per_task", "cpus_per_task", "array_parallelism",
                   "slurm_extra", "wait")
INTERRUPTED = "error: interrupted; complete runs are kept, --resume finishes the tree"


class Refused(Exception):
    """Bad input found by the command line itself (one line; exit status 2)."""


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


def float_above(minimum: float, inclusive: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (math.isfinite(value) and (value >= minimum if inclusive else value > minimum)):
            raise argparse.ArgumentTypeError(
                f"must be a {'non-negative' if inclusive else 'positive'} number, got {text}")
        return value

    return parse


positive_float, non_negative_float = float_above(0, inclusive=False), float_above(0, inclusive=True)


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


def iterations(text: str) -> int | str:
    """A positive count of timed inferences, or ``auto``."""
    return "auto" if text == "auto" else positive_int(text)


def model_name(text: str) -> str:
    """A model name ``load_model`` can build (checked without building it)."""
    from .models import ModelError, check_model_name

    try:
        return check_model_name(text)
    except ModelError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    from .models import model_help
    from .plan import DTYPE_MODES, DTYPES, EXECUTIONS, ORDERS, PRESETS, TASKS

    parser = argparse.ArgumentParser(prog="python -m measure", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="measure a model over a grid of input sizes and configurations",
        description="Measure the energy and latency of MODEL's inference over input sizes and configurations, "
                    "writing OUT/<config>/input_<size>/run_<k>/{power_metrics.json, latency.csv, meta.json}. "
                    "Options left out take the preset's value (--preset, default seed).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="models:\n" + textwrap.indent(model_help(), "  "))
    run.add_argument("model", nargs="?", type=model_name, metavar="MODEL",
                     help="alexnet, resnet50, bert, torchvision:<name> or hf:<id or architecture> (see below; "
                          "with --resume: read from OUT/study.json)")
    run.add_argument("--preset", choices=sorted(PRESETS),
                     help="the protocol the other options start from: seed (the seed study's, default), quick, "
                          "cpu-study (the committed CPU study), gpu-study (the GPU study), cpu-batch and "
                          "gpu-batch (resnet50: batch size x dtype at one size)")
    run.add_argument("--quick", action="store_true", help="--preset quick: about a minute per model on a CPU")
    run.add_argument("--task", choices=TASKS,
                     help="forward: timed forward passes (default); generate: a decoder's greedy generation "
                          "(hf:<name>), one request of each batch per window, with a sample at the boundary "
                          "between its prefill and its decode phase and each token timed (tokens.csv)")
    run.add_argument("--prompt-tokens", type=positive_int, nargs="+", dest="prompt_tokens", metavar="N",
                     help="with --task generate: prompt lengths in tokens (the input sizes; --sizes alike)")
    run.add_argument("--new-tokens", type=int_at_least(2), nargs="+", dest="new_tokens", metavar="M",
                     help="with --task generate: tokens generated per request, at least 2, one configuration each "
                          "(greedy, end of sequence disabled)")
    run.add_argument("--sizes", type=positive_int, nargs="+", metavar="N",
                     help="input sizes: image side in pixels (alexnet, resnet50) or tokens (bert, at most 510)")
    run.add_argument("--iters", type=iterations, dest="iterations", metavar="N|auto",
                     help="timed inferences (forward passes) per run, at every size; auto: as many as fill "
                          "--min-window seconds, sized once per point (the default for models without a preset)")
    run.add_argument("--iters-at", type=size_iterations, action="append", default=[], metavar="SIZE=N",
                     help="timed inferences at one input size, overriding --iters there (repeatable)")
    run.add_argument("--runs", type=positive_int, metavar="R",
                     help="runs per point (default: the preset's, 10 for seed); with --precision the minimum "
                          "number of runs before the stop rule is asked (default 3)")
    run.add_argument("--warmup", type=non_negative_int, metavar="N",
                     help="untimed inferences before each run's window (default: the preset's, 50 for seed)")
    run.add_argument("--batch-sizes", type=positive_int, nargs="+", dest="batch_sizes", metavar="B",
                     help="batch sizes, one configuration each (default 1)")
    run.add_argument("--dtypes", nargs="+", choices=DTYPES, metavar="DTYPE",
                     help=f"dtypes, one configuration each: {', '.join(DTYPES)} (default fp32)")
    run.add_argument("--dtype-mode", choices=DTYPE_MODES, dest="dtype_mode",
                     help="how fp16/bf16 is applied: cast the model and its floating inputs (default), or "
                          "torch.autocast")
    run.add_argument("--compile", nargs="+", choices=EXECUTIONS, dest="executions", metavar="EXECUTION",
                     help="execution, one configuration each: eager (default) or compiled (torch.compile; the "
                          "compilation is timed apart, before the warm-up, as compile_s)")
    run.add_argument("--threads", type=positive_int, nargs="+", metavar="N",
                     help="torch threads, one configuration each (default: torch's, not set; always recorded)")
    run.add_argument("--order", choices=ORDERS,
                     help="order of the runs: sequential (point after point, default), interleave (run 0 of "
                          "every point, then run 1, ...) or shuffle (a permutation drawn from --seed)")
    run.add_argument("--seed", type=non_negative_int, metavar="N", help="seed of --order shuffle (default 0)")
    run.add_argument("--device", help="cpu, cuda, cuda:<i> or auto (default: cuda if present)")
    run.add_argument("--period", type=positive_float, dest="period_s", metavar="S",
                     help="sampling period in seconds between the window's edges (default 0.1; 0.05 or less "
                          "lets the analysis align NVML's ~100 ms energy counter on its updates; 0.02 or less "
                          "leaves a margin)")
    run.add_argument("--idle-seconds", type=non_negative_float, dest="idle_s", metavar="S",
                     help="seconds of idle recording before the first run, the baseline of dynamic energy "
                          "(default 5, 1 with --quick; 0: none)")
    run.add_argument("--precision", type=positive_float, metavar="REL",
                     help="instead of a fixed number of runs, add runs at each point until the 95%% CI of the "
                          "median measured energy per inference (the latency where no energy is measured) is "
                          "within ±REL, e.g. 0.01; --runs is then the minimum number of runs")
    run.add_argument("--max-runs", type=positive_int, dest="max_runs", metavar="R",
                     help="with --precision: the most runs per point (default 50)")
    run.add_argument("--min-window", type=positive_float, dest="min_window_s", metavar="S",
                     help="with --precision: iterations per run chosen so each window lasts at least S seconds "
                          "(default 2)")
    run.add_argument("--out", type=Path, metavar="DIR",
                     help="output folder (default: runs/<model>); must be absent, empty, or a run tree")
    run.add_argument("--resume", action="store_true",
                     help="complete an existing run tree: redo missing or incomplete runs, keep complete ones; "
                          "the plan is read from OUT/study.json, and options given must match it")
    run.add_argument("--overwrite", action="store_true",
                     help="start an existing run tree again: its runs, idle recordings and study.json are removed "
                          "when the first run starts")
    run.add_argument("--shard", type=shard, default=(0, 1), metavar="i/n",
                     help="measure only the i-th of n shares of the ordered runs (every n-th from the i-th)")
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

    commands.add_parser("sensors", help="list the sensors found on this machine, why others are missing, and the "
                                        "TDP the CPU estimate uses")
    return parser


def entry(argv: list[str] | None = None) -> int:
    """``main`` with the streams made safe to print any path, and an interrupt at any moment one line."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")  # a path the terminal's encoding lacks is escaped, not fatal
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


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
    if args.quick and args.preset not in (None, "quick"):
        parser.error(f"--quick is --preset quick; it cannot go with --preset {args.preset}")
    return run(args)


def run(args: argparse.Namespace) -> int:
    """``python -m measure run``: check everything, say what will run, run it, say what it did."""
    from .models import ModelError
    from .plan import PlanError
    from .runtree import RunTreeError

    tracking_errors: tuple[type[Exception], ...] = ()
    try:
        plan, out = resolve_plan(args)
        if args.prompt_tokens is not None and plan.task != "generate":
            raise Refused("--prompt-tokens go with --task generate; the input sizes of forward passes are --sizes")
        if args.executor:
            return submit_sweep(args, plan, out)
        if plan.precision is not None:
            from analysis.precision import TrackingError

            tracking_errors = (TrackingError,)
        return measure(args, plan, out)
    except tracking_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (Refused, ModelError, PlanError, RunTreeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # disk full, read-only folder: the run being written is left incomplete
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}; complete runs are kept, --resume finishes the tree "
              "once this is fixed", file=sys.stderr)
        return 1


def resolve_plan(args: argparse.Namespace):
    """The plan and the tree: from the preset and the options, or with ``--resume`` from ``OUT/study.json``
    and the options given (which must then match it)."""
    from . import runtree
    from .plan import Plan

    out = args.out or (Path("runs") / re.sub(r"[^A-Za-z0-9._-]+", "_", args.model) if args.model else None)
    if out is None:
        raise Refused("give MODEL, or --out of the tree to --resume")
    given = {name: getattr(args, name) for name in PLAN_OPTIONS if getattr(args, name) is not None}
    if args.iters_at:
        given["iterations_at"] = dict(args.iters_at)
    if args.prompt_tokens is not None:
        if args.sizes is not None:
            raise Refused("--prompt-tokens are the input sizes of --task generate; give them or --sizes, not both")
        given["sizes"] = args.prompt_tokens
    recorded = None
    if args.resume and args.preset is None and not args.quick:
        try:
            recorded = runtree.read_study(out) if out.is_dir() else None
        except runtree.MetaError as error:
            raise Refused(str(error)) from None
    if recorded is None:
        if args.model is None:
            raise Refused(f"{out} holds no study.json to --resume; give MODEL to start a study there")
        from .models import size_unit_of

        auto = given.get("iterations") == "auto"
        if auto:
            del given["iterations"]
        plan = Plan.from_preset(args.model, args.preset or "seed", quick=args.quick,
                                size_unit=size_unit_of(args.model), names=OPTIONS, **given)
        if auto:  # as many as fill --min-window, except where --iters-at says otherwise
            plan.iterations, plan.iterations_at = None, dict(args.iters_at)
        return plan, out
    if recorded.get("schema", 1) < runtree.SCHEMA:
        raise Refused(f"{out} was written by an older version of this package (run-tree schema "
                      f"{recorded.get('schema', 1)}); it cannot be resumed: choose another --out, or --overwrite it")
    plan = Plan.from_record(recorded["plan"])
    plan.model = args.model or plan.model
    if given.get("iterations") == "auto":
        given["iterations"] = None
    for name, value in given.items():
        setattr(plan, name, {**plan.iterations_at, **value} if name == "iterations_at" else value)
    return plan, out


def measure(args: argparse.Namespace, plan, out: Path) -> int:
    """Measure ``plan`` into ``out`` with a report before and after; the exit status."""
    from .sensors import open_sensors
    from .sweep import load_checked, outcome, prepare, resolve_device, run_study

    prepared = prepare(plan, out, resume=args.resume, shard=args.shard, overwrite=args.overwrite, names=OPTIONS)
    if plan.precision is None and not prepared.todo:
        print(f"nothing to do: the {len(prepared.cells)} runs of {out}"
              f"{' (shard ' + '/'.join(map(str, args.shard)) + ')' if args.shard != (0, 1) else ''} are complete")
        return 0
    device = resolve_device(plan.device)
    loaded = load_checked(plan)
    sensors, unavailable = open_sensors(gpu=True)
    try:
        print_start(plan, out, prepared, loaded, device, sensors, unavailable)
        skipped = outcome(plan, out, args.shard).statuses["complete"] if args.resume else 0
        started = time.monotonic()
        run_study(plan, out, resume=args.resume, shard=args.shard, overwrite=args.overwrite, model=loaded,
                  sensors=(sensors, unavailable), stop_rule=stop_rule(plan), progress=not args.no_progress)
        wall_s = time.monotonic() - started
    finally:
        for sensor in sensors:
            sensor.close()
    done = outcome(plan, out, args.shard)
    complete, failed = done.statuses["complete"], done.statuses["failed"]
    others = sum(done.statuses.values()) - complete - failed
    print(f"done in {duration(wall_s)}: {complete - skipped} runs complete, {failed} failed, {skipped} skipped "
          f"(complete before){f', {others} not complete' if others else ''}")
    print(f"run tree: {out}")
    print_medians(out)
    if failed or others:
        first = f" (first: {done.first_failure[0]}: {done.first_failure[1]})" if done.first_failure else ""
        print(f"error: {failed} run(s) failed{first}{f', {others} not complete' if others else ''}; the complete "
              "runs are kept, --resume redoes the others", file=sys.stderr)
        return 1
    return 0


def stop_rule(plan):
    """The stop rule of a plan with a precision (``analysis.precision``), else None."""
    if plan.precision is None:
        return None
    from analysis.precision import precision_rule

    return precision_rule(plan.precision, plan.runs)


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def print_start(plan, out: Path, prepared, loaded, device, sensors, unavailable: dict[str, str]) -> None:
    """What is about to run: model and weights, device, sensors found and missing, what is estimated, the grid."""
    import torch

    from .models import count_params
    from .sweep import gpu_domain

    params = count_params(loaded)
    weights = loaded.weights if loaded.weights_notice is None else f"{loaded.weights} weights: {loaded.weights_notice}"
    print(f"model    {loaded.name} ({loaded.task}{f', {params:,} parameters' if params else ''}), {weights}")
    threads = "set per configuration" if plan.threads else f"{torch.get_num_threads()} torch thread(s)"
    print(f"device   {device}, {threads}")
    lines = [sensor_line(sensor.name, domain) for sensor in sensors for domain in sensor.domains]
    for i, line in enumerate(lines):
        print(f"{'sensors' if i == 0 else '':8} {line}")
    for i, (name, reason) in enumerate(unavailable.items()):
        print(f"{'missing' if i == 0 else '':8} {name}: {reason}")
    domain, note = gpu_domain(device, sensors)
    if domain:
        print(f"gpu      {device} is NVML domain {domain}")
    elif note:
        print(f"warning: {note}", file=sys.stderr)
    grid = f"{len(plan.sizes)} {'prompt length' if plan.task == 'generate' else 'size'}(s) x " \
           f"{len(plan.configs())} configuration(s)"
    if plan.precision is None:
        grid += f" x {plan.runs} run(s) = {len(plan.cells())} runs"
        if len(prepared.cells) < len(plan.cells()):
            grid += f", {len(prepared.cells)} in this shard"
        if prepared.todo != prepared.cells:
            grid += f", {len(prepared.cells) - len(prepared.todo)} complete before"
    else:
        grid += f" x {plan.runs} to {plan.max_runs} runs, until the median is known to ±{plan.precision:.1%}"
    print(f"plan     {grid}, order {plan.order}")
    print(f"tree     {out}", flush=True)


def sensor_line(sensor: str, domain) -> str:
    """One sensor domain: its source and, for an estimate, what it is estimated from."""
    line = f"{domain.name}: {domain.source} ({sensor})"
    tdp_w = domain.details.get("tdp_w")
    if tdp_w is not None:
        line += (f", from TDP {tdp_w:g} W x CPU load ({domain.details.get('tdp_source')}); "
                 "set MEASURE_CPU_TDP_W to this CPU's TDP in watts")
    return line


def print_medians(out: Path) -> None:
    """The analysis's table of the complete runs: per point, median latency and each headline domain's median
    energy per inference with its source and 95 % CI; a warning line instead if it cannot be computed."""
    import warnings

    from analysis import AnalysisWarning, NoUsableRuns, export, load_study, metadata, phases, summarize

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AnalysisWarning)  # failed runs are reported above
            study = load_study(out)
            generation = phases.generating(study)
            table = export.headline(summarize(study), metadata.headline_domains(study),
                                    **export.headline_quantities(study))
    except NoUsableRuns:
        return
    except Exception as error:  # noqa: BLE001 - the tree is written; the table is a courtesy
        print(f"warning: no table of medians ({type(error).__name__}: {error})", file=sys.stderr)
        return
    print("medians over complete runs; energy per output token (whole request), per prompt token (prefill) and "
          "per decode token, in J:" if generation else
          "medians over complete runs (energy per inference = one forward pass):")
    print(table.drop(columns="model").to_string(index=False))


def submit_sweep(args: argparse.Namespace, plan, out: Path) -> int:
    """Submit the sweep through submitit; with ``--wait``, report each task. The exit status."""
    from .executors import LOG_FOLDER, Resources, outcome, submit
    from .runtree import COMPLETE
    from .sweep import prepare

    prepare(plan, out, resume=args.resume, overwrite=args.overwrite, names=OPTIONS)
    resources = Resources(args.timeout_min or Resources.timeout_min, args.slurm_partition, args.gpus_per_task,
                          args.cpus_per_task, args.array_parallelism, dict(args.slurm_extra))
    out = out.absolute()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's complaint; it ends our line
            jobs = submit(plan, out, cluster=args.executor, tasks=args.tasks or 1, resume=args.resume,
                          overwrite=args.overwrite, resources=resources, stop_rule=stop_rule(plan))
    except (RuntimeError, OSError) as error:  # sbatch refused the job, or could not be run
        text = [line for line in str(error).splitlines() if line.strip()]
        print(f"error: the submission failed: {type(error).__name__}: {text[-1] if text else ''}", file=sys.stderr)
        return 1
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

    try:
        sensors, unavailable = open_sensors(gpu=True)
    except ValueError as error:  # MEASURE_CPU_TDP_W that is not a number of watts
        print(f"error: {error}", file=sys.stderr)
        return 2
    for sensor in sensors:
        for domain in sensor.domains:
            print(f"{domain.name:16} {domain.source:9} {sensor.name:8} {', '.join(domain.channels)}")
            if domain.details.get("tdp_w") is not None:
                print(f"{'':16} TDP {domain.details['tdp_w']:g} W ({domain.details.get('tdp_source')}); "
                      "set MEASURE_CPU_TDP_W to this CPU's TDP in watts")
            for metric, reason in (domain.details.get("unsupported") or {}).items():
                print(f"{domain.name + '.' + metric:16} not read: {reason}")
    for name, reason in unavailable.items():
        print(f"{name:16} unavailable: {reason}")
    for sensor in sensors:
        sensor.close()
    return 0


def exit_with(status: int) -> None:
    """End the process with ``status``; after an interrupt (130), without Python's finalisation.

    A Ctrl-C that lands while a C extension runs Python code through
    ``PyRun_String`` (pybind11 modules do, as torch and torchvision load)
    leaves CPython marked as "interrupted" even though ``entry`` handled it,
    and CPython then ends the process by SIGINT instead of with 130.
    Everything was already closed on the way out of ``entry``.
    """
    if status == 130:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing more to say
                stream.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    exit_with(entry())

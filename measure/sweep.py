"""Running a study: the model on its device, the sensors, the idle recording, each cell measured into the tree.

For each cell (configuration, input size, run) ``measure_cell`` applies the
configuration (``knobs``), makes the inputs, compiles for their shape
(compiled execution), warms the model up outside the window, starts the
recorder, times each inference (synchronising the GPU before reading the
clock), stops the recorder right after the last one and writes
``latency.csv`` and ``meta.json`` (``runtree``). The generate task measures
one request per window instead, with a ``split`` sample between its prefill
and its decode phase and ``tokens.csv`` beside ``latency.csv``
(``measure.generation``). A point that fails (out of
memory, an operation the dtype lacks on the device, a compiler missing) is a
``failed`` run with its reason, and the sweep goes on.

With a precision, runs are added to each point until a *stop rule* passed in
by the caller says to stop (``StopRule``): the sweep never analyses what it
measured (``python -m measure`` builds its rule with ``analysis.precision``).

Nothing is written before the first run starts: ``study.json`` and the idle
recording come with it, and are removed again when the start fails before a
run folder exists, so that a failed start never holds the folder.
"""
from __future__ import annotations

import math
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from . import generation, knobs, runtree
from .host import host_info
from .models import LoadedModel, ModelInputs, count_flops, count_params, load_model
from .plan import API_NAMES, Cell, Config, Plan, PlanError, named
from .recorder import Recorder
from .sensors import open_sensors
from .sensors.base import Sensor

StopRule = Callable[[Sequence[Path]], tuple[bool, str]]
"""``rule(folders) -> (stop, reason)``: given the complete run folders of one point, in run order, whether to
stop adding runs there, and why (one line, written in every run's ``stop_reason``)."""

SIZING_INFERENCES = 5  # timed inferences that size the iterations of a precision sweep's windows


# ---------------------------------------------------------------- device

def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:<i>`` or ``auto`` (the GPU when there is one) as a device with its index
    (``cuda`` is the current CUDA device); ``ValueError`` (one line) for one this machine lacks."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda, cuda:<i> or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use cpu, cuda, cuda:<i> or auto")
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA GPU is available here")
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device("cuda", index)


def same_device(recorded: str, given: str) -> bool:
    """Whether two device names resolve to the same device here (``auto`` is ``cpu`` on a CPU-only machine)."""
    try:
        return resolve_device(recorded) == resolve_device(given)
    except ValueError:
        return recorded == given


def synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def tick_source(device: torch.device, polled: bool = False) -> str:
    """The recorder's tick source for work on ``device``: on the CPU the model keeps every core busy and a
    sampling thread would preempt it, so ticks are taken in the measuring thread: by the measured loop
    itself where it calls ``Recorder.poll()`` between two units of its work (``polled``), else by the timer
    signal (see ``recorder``). On a GPU, a thread."""
    if device.type != "cpu":
        return "thread"
    return "loop" if polled else "signal"


def gpu_domain(device: torch.device, sensors: Sequence[Sensor]) -> tuple[str | None, str | None]:
    """The NVML domain of the CUDA device the model runs on, or None and why (None, None on the CPU)."""
    if device.type != "cuda":
        return None, None
    return nvml_domain_of(str(getattr(torch.cuda.get_device_properties(device), "uuid", "")), sensors)


def nvml_domain_of(cuda_uuid: str, sensors: Sequence[Sensor]) -> tuple[str | None, str | None]:
    """The NVML domain (``gpu<i>``) whose UUID contains ``cuda_uuid`` (torch gives it without NVML's ``GPU-``
    prefix; NVML ignores ``CUDA_VISIBLE_DEVICES``, so indices cannot be trusted), and None; or None and a
    one-line note saying that no NVML device matches, so that no GPU energy is attributed to the run."""
    domains = [d for s in sensors for d in s.domains if d.sensor == "nvml"]
    for domain in domains:
        if cuda_uuid and cuda_uuid in str(domain.details.get("uuid") or ""):
            return domain.name, None
    listed = ", ".join(f"{d.name} {d.details.get('uuid')}" for d in domains) or "none"
    return None, (f"the CUDA device (UUID {cuda_uuid or 'unknown'}) matches no NVML device (NVML: {listed}); "
                  "no GPU energy is attributed to its runs")


# ---------------------------------------------------------------- timing

def timed_loop(loaded: LoadedModel, inputs: ModelInputs, iterations: int, sync: Callable[[], None],
               between: Callable[[], None] = lambda: None) -> np.ndarray:
    """Latency of each of ``iterations`` forward passes, in seconds. ``between`` runs after each pass's clock
    read (``Recorder.poll``: a loop tick), so that its time is in no pass's latency."""
    latencies = np.empty(iterations)
    clock = time.perf_counter
    for i in range(iterations):
        start = clock()
        loaded(inputs)
        sync()
        latencies[i] = clock() - start
        between()
    return latencies


def iterations_for_window(latencies_s: np.ndarray, min_window_s: float) -> int:
    """Iterations that make a window of at least ``min_window_s`` seconds at the median of ``latencies_s``."""
    median_s = float(np.median(latencies_s))
    return max(1, math.ceil(min_window_s / max(median_s, 1e-9)))


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


# ---------------------------------------------------------------- checks before anything runs

@dataclass(frozen=True)
class Prepared:
    """A tree checked for a plan: ``cells``, the shard's cells (none with a precision, whose runs are not
    known in advance), and ``todo``, those not complete."""

    out: Path
    cells: list[Cell]
    todo: list[Cell]


def prepare(plan: Plan, out: Path, *, resume: bool = False, shard: tuple[int, int] = (0, 1),
            overwrite: bool = False, names: Mapping[str, str] = API_NAMES) -> Prepared:
    """Check that the tree ``out`` can take the ``shard``'s cells of ``plan``, writing nothing.

    ``study.json`` records the plan: a tree started with another plan is
    refused (its runs would not be comparable). Without ``resume`` a cell that
    already has a folder is refused; with it, the cells not complete remain;
    with ``overwrite`` the tree will be started again. Messages name fields
    and keywords in the caller's ``names`` (``plan.API_NAMES``, or the command
    line's options). Raises ``PlanError`` or ``runtree.RunTreeError``.
    """
    def name(key: str) -> str:
        return named(names, key)

    plan.validate(names)
    index, count = shard
    if not 0 <= index < count:
        raise PlanError(f"a {name('shard')} is i/n with 0 <= i < n, got {index}/{count}")
    if plan.precision is not None and count > 1:
        raise PlanError(f"{name('precision')} decides the number of runs as it goes; it cannot be split into shards")
    if overwrite and resume:
        raise PlanError(f"{name('overwrite')} starts the tree again and {name('resume')} completes it; pass one")
    if overwrite and count > 1:
        raise PlanError(f"{name('overwrite')} cannot go with {name('shard')}: each shard would remove the others' runs")
    out = runtree.check_out(out)
    try:
        recorded = runtree.read_study(out)
    except runtree.MetaError as error:
        raise runtree.RunTreeError(str(error)) from None
    if not overwrite:
        if (recorded or {}).get("schema", runtree.SCHEMA) < runtree.SCHEMA or any(out.glob("input_*")):
            raise runtree.RunTreeError(f"{out} was written by an older version of this package (run-tree schema 1); "
                                       f"choose another {name('out')}, or pass {name('overwrite')} to replace it")
        if recorded is not None:
            changed = plan.differences(recorded["plan"], same_device)
            if changed:
                listed = "; ".join(f"{name(key)}: {before!r} there, {now!r} now" for key, before, now in changed[:3])
                raise runtree.RunTreeError(f"{out} was started with another plan ({listed}); give the same options "
                                           f"to complete it, choose another {name('out')}, or pass "
                                           f"{name('overwrite')} to start again")
    cells = plan.cells(shard) if plan.precision is None else []
    if not resume and not overwrite:
        if plan.precision is None:
            taken = [str(cell) for cell in cells if cell.folder(out).exists()]
        else:
            taken = [f"{c.name}/input_{size}" for c, size in plan.points() if (out / c.name / f"input_{size}").exists()]
        if taken:
            raise runtree.RunTreeError(f"{out} already holds runs (first: {taken[0]}); pass {name('resume')} to "
                                       f"complete it, {name('overwrite')} to start again, or choose another "
                                       f"{name('out')}")
    todo = cells if overwrite else [cell for cell in cells if not runtree.is_complete(cell.folder(out))]
    return Prepared(out, cells, todo)


def load_checked(plan: Plan, model: LoadedModel | None = None) -> LoadedModel:
    """The plan's model (``model``, or loaded by name for the plan's task) once every input size fits it (for
    the generate task, with every number of new tokens); ``ModelError`` if not."""
    if model is not None and model.name != plan.model:
        raise PlanError(f"the plan measures {plan.model!r} but the model given is {model.name!r}")
    loaded = model if model is not None else load_model(plan.model, plan.task)
    if plan.task == "generate":
        generation.check_lengths(loaded, plan.sizes, plan.new_tokens)
    for size in plan.sizes:
        loaded.check_size(size)
    return loaded


# ---------------------------------------------------------------- the tree's first writes

class Start:
    """The first writes of a study into its tree, made when its first run starts: the folder,
    ``study.json`` (the plan, with the device it resolved to when given) and, with ``overwrite``, the
    old tree's removal. ``undo`` removes what ``begin`` wrote when no run folder followed."""

    def __init__(self, plan: Plan, out: Path, device: str | None = None, overwrite: bool = False):
        self.plan, self.out, self.device, self.overwrite = plan, Path(out), device, overwrite
        self.created: Path | None = None  # the outermost folder ``begin`` created
        self.wrote_study = False

    def begin(self) -> None:
        out = self.out.absolute()
        missing = [folder for folder in (out, *out.parents) if not folder.exists()]
        runtree.prepare_out(self.out)
        self.created = missing[-1] if missing else None
        if self.overwrite:
            runtree.clear_tree(self.out)
        if not (self.out / runtree.STUDY_FILE).exists():  # shards write the same bytes, atomically
            record = self.plan.record()
            record["device"] = self.device or record["device"]
            runtree.write_json(self.out / runtree.STUDY_FILE, {"schema": runtree.SCHEMA, "plan": record})
            self.wrote_study = True

    def undo(self, written: Sequence[Path] = ()) -> None:
        """Remove ``study.json`` (if ``begin`` wrote it), the ``written`` files and the folders ``begin``
        created, unless the tree holds a run folder."""
        if any(self.out.glob("*/input_*/run_*")):
            return
        for path in written:
            path.unlink(missing_ok=True)
        if self.wrote_study:
            (self.out / runtree.STUDY_FILE).unlink(missing_ok=True)
        idle = self.out / runtree.IDLE_FOLDER
        if idle.is_dir() and not any(idle.iterdir()):
            idle.rmdir()
        if self.created is not None:
            folder = self.out.absolute()
            while folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                if folder == self.created:
                    break
                folder = folder.parent


# ---------------------------------------------------------------- a study in one process

@dataclass
class Session:
    """What a study needs while it runs: the model as loaded (``pristine``) on its device, the open sensors,
    the configuration being measured, and what the start wrote."""

    plan: Plan
    out: Path
    pristine: LoadedModel
    device: torch.device
    sensors: list[Sensor]
    unavailable: dict[str, str]
    start: Start
    host: dict
    gpu_domain: str | None
    gpu_domain_note: str | None
    idle: dict | None = None  # {"recording": path relative to the tree or None, "seconds"}, once started
    idle_path: Path | None = None
    configured: knobs.Configured | None = None
    flops: dict[tuple[Config, int], int | None] = field(default_factory=dict)

    @property
    def sensors_meta(self) -> dict:
        return {d.name: d.describe() for s in self.sensors for d in s.domains}

    def begin(self) -> None:
        """Write the tree's first files and record the idle power, once."""
        if self.idle is None:
            self.start.begin()
            self.idle = record_idle(self)

    def enter(self, config: Config) -> None:
        """Make ``config`` current: threads set, the previous configuration's model dropped."""
        if self.configured is not None and self.configured.config != config:
            knobs.release(self.configured)
            self.configured = None
        knobs.set_threads(config)

    def configured_for(self, config: Config) -> knobs.Configured:
        """The model in ``config`` (after ``enter``), built on first use."""
        if self.configured is None:
            self.configured = knobs.configure(self.pristine, config, self.plan.dtype_mode, self.device)
        return self.configured


def run_study(plan: Plan, out: Path, *, resume: bool = False, shard: tuple[int, int] = (0, 1),
              overwrite: bool = False, model: LoadedModel | None = None,
              sensors: tuple[list[Sensor], dict[str, str]] | None = None, stop_rule: StopRule | None = None,
              progress: bool = True) -> Path:
    """Measure every cell of ``plan`` (or the ``shard``'s share) into the run tree ``out``; the tree.

    ``model``: the model to measure (a ``measure.models.user_model``, say),
    named ``plan.model``; default ``load_model(plan.model)``. It is moved to
    the device; casts and compilation work on copies. ``sensors``: opened
    sensors and ``{sensor: reason}`` of those missing (default: all this
    machine has, closed at the end). With ``plan.precision``, ``stop_rule``
    (required then, and only then) decides when each point has enough runs,
    at most ``plan.max_runs``; otherwise exactly ``plan.runs`` runs.
    ``resume``: measure what is not complete; ``overwrite``: remove the old
    tree's runs first. Raises ``PlanError``, ``ModelError``,
    ``runtree.RunTreeError`` or ``ValueError`` (one line) before anything is
    written; an ``OSError`` writing the tree stops the sweep.
    """
    if (plan.precision is None) != (stop_rule is None):
        raise PlanError("a plan with a precision needs a stop_rule (and only such a plan takes one), e.g. "
                        "analysis.precision.precision_rule(plan.precision, plan.runs)")
    device = resolve_device(plan.device)
    prepared = prepare(plan, out, resume=resume, shard=shard, overwrite=overwrite)
    if not prepared.todo and plan.precision is None:
        return prepared.out
    loaded = load_checked(plan, model)
    opened, unavailable = sensors if sensors is not None else open_sensors(gpu=True)
    threads = torch.get_num_threads()
    session = None
    try:
        if isinstance(loaded.module, torch.nn.Module):
            loaded.module.to(device)
        domain, note = gpu_domain(device, opened)
        session = Session(plan, prepared.out, loaded, device, opened, unavailable,
                          Start(plan, prepared.out, str(device), overwrite), host_info(device, opened), domain, note)
        with knobs.compile_limits(plan):
            if plan.precision is None:
                measure_fixed(session, prepared.todo, progress)
            else:
                measure_adaptive(session, stop_rule, resume, progress)
    except BaseException:
        if session is not None:
            session.start.undo([session.idle_path] if session.idle_path else [])
        raise
    finally:
        if session is not None:
            knobs.release(session.configured)
        torch.set_num_threads(threads)
        if sensors is None:
            for sensor in opened:
                sensor.close()
    return prepared.out


def measure_fixed(session: Session, todo: Sequence[Cell], progress: bool) -> None:
    """Measure each cell of ``todo`` with the plan's iterations."""
    from tqdm import tqdm

    sized: dict[tuple[Config, int], int] = {}  # a point's iterations once sized to fill min_window_s
    bar = tqdm(todo, desc=session.plan.model, unit="run", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(str(cell))
        point = (cell.config, cell.size)
        iterations = session.plan.iterations_for(cell.size)
        if iterations is None and point not in sized:
            sized.update({point: meta.iterations for meta in _complete_runs(session, point)[:1]})
        meta = measure_cell(session, cell, iterations or sized.get(point))
        if meta.status == runtree.COMPLETE:
            sized.setdefault(point, meta.iterations)
    bar.close()


def _complete_runs(session: Session, point: tuple[Config, int]) -> list[runtree.Meta]:
    """The metadata of a point's complete runs already in the tree (a resumed sweep keeps their iterations)."""
    config, size = point
    folders = [Cell(config, size, run).folder(session.out) for run in range(session.plan.runs)]
    return [runtree.read_meta(folder) for folder in folders if runtree.is_complete(folder)]


def measure_adaptive(session: Session, stop_rule: StopRule, resume: bool, progress: bool) -> None:
    """Add runs to each point until ``stop_rule`` says to stop, a run fails, or ``max_runs`` is reached.

    Iterations are sized once per point so that each window lasts at least
    ``min_window_s``, and kept by every run of the point. With ``resume``,
    complete runs are read back instead of measured. At the end every run of a
    point says in its ``stop_reason`` why the point stopped.
    """
    from tqdm import tqdm

    plan, out = session.plan, session.out
    points = plan.points()
    iterations: dict[tuple[Config, int], int | None] = dict.fromkeys(points)
    if resume:
        for config, size in points:
            kept = [runtree.read_meta(Cell(config, size, run).folder(out)) for run in range(plan.max_runs)
                    if runtree.is_complete(Cell(config, size, run).folder(out))]
            iterations[config, size] = kept[0].iterations if kept else None
    active = set(points)
    complete: dict[tuple[Config, int], list[Path]] = {point: [] for point in points}
    visited: dict[tuple[Config, int], list[Path]] = {point: [] for point in points}
    reasons: dict[tuple[Config, int], str] = {}
    bar = tqdm(desc=f"{plan.model} to ±{plan.precision:.1%}", unit="run", disable=not progress)
    for cell in plan.adaptive_cells(active):
        point, folder = (cell.config, cell.size), cell.folder(out)
        bar.set_postfix_str(str(cell))
        if resume and runtree.is_complete(folder):
            meta = runtree.read_meta(folder)
        else:
            meta = measure_cell(session, cell, iterations[point])
        bar.update()
        visited[point].append(folder)
        if meta.status != runtree.COMPLETE:
            reasons[point] = f"run {cell.run} failed: {meta.reason}"
            active.discard(point)
            continue
        iterations[point] = iterations[point] or meta.iterations
        complete[point].append(folder)
        stop, reason = stop_rule(complete[point])
        if stop or cell.run + 1 >= plan.max_runs:
            reasons[point] = reason if stop else f"cap reached: {plan.max_runs} runs without stopping ({reason})"
            active.discard(point)
    bar.close()
    for point, reason in reasons.items():
        for folder in visited[point]:
            runtree.write_meta(folder, runtree.read_meta(folder).with_changes(stop_reason=reason))


def measure_cell(session: Session, cell: Cell, iterations: int | None) -> runtree.Meta:
    """Measure one cell with ``iterations`` timed inferences (None: sized to fill ``min_window_s``).

    The model failing (an error, out of memory, a configuration it cannot
    run, a compilation inside the window) is recorded as a ``failed`` run,
    never raised; an OSError writing the tree (disk full, read-only)
    propagates and leaves the run ``running``. The files are written in an
    order that makes a run ``complete`` only once all of them are in place.
    """
    session.begin()
    plan, loaded, device = session.plan, session.pristine, session.device
    folder = cell.folder(session.out)
    folder.mkdir(parents=True, exist_ok=True)
    runtree.clear_run(folder)
    session.enter(cell.config)
    identity = {"model": loaded.name, "task": loaded.task, "input_size": cell.size,
                "batch_size": cell.config.batch_size, "dtype": cell.config.dtype,
                "execution": cell.config.execution, "threads": torch.get_num_threads(), "device": str(device)}
    generating = plan.task == "generate"
    if generating:
        identity["new_tokens"] = cell.config.new_tokens
        iterations = 1  # one request per window
    fields = {
        "warmup": plan.warmup, "input_shape": None, "dtype_mode": plan.dtype_mode, "compile_s": None,
        "gpu_domain": session.gpu_domain, **({"gpu_domain_note": session.gpu_domain_note} if device.type == "cuda"
                                             and session.gpu_domain is None else {}),
        "weights": loaded.weights, "weights_notice": loaded.weights_notice, "model_description": loaded.description, "params": count_params(loaded),
        "flops_per_inference": None, "period_s": plan.period_s, "sensors": session.sensors_meta,
        "unavailable": session.unavailable, "idle": session.idle, "window": None, "host": session.host,
        "order": plan.order, "seed": plan.seed if plan.order == "shuffle" else None,
        "stop_reason": f"fixed protocol: {plan.runs} runs",
    }

    def write(status: str, reason: str | None = None) -> runtree.Meta:
        meta = runtree.Meta(runtree.SCHEMA, status, reason, identity, cell.run, iterations, fields)
        runtree.write_meta(folder, meta)
        return meta

    write(runtree.RUNNING)
    try:
        configured = session.configured_for(cell.config)
        inputs = configured.inputs(cell.size)
        fields["input_shape"] = inputs.shape
        with configured.running():
            if generating:
                latencies, window = _generation_window(session, cell, configured, inputs, fields)
            else:
                latencies, window = _forward_window(session, cell, configured, inputs, iterations, fields)
                iterations = len(latencies)
        fields["flops_per_inference"] = session.flops[cell.config, cell.size]
        if fields["flops_per_inference"] is None:
            fields["flops_note"] = "torch.utils.flop_counter could not count this model's operations"
        fields["window"] = window.describe()
        runtree.write_latencies(folder / runtree.LATENCY_FILE, latencies)
    except OSError:
        raise  # the tree cannot be written: the sweep stops, this run stays ``running``
    except Exception as error:  # noqa: BLE001 - whatever the model raises fails this point only
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return write(runtree.FAILED, one_line(error))
    return write(runtree.COMPLETE)


def _forward_window(session: Session, cell: Cell, configured: knobs.Configured, inputs, iterations: int | None,
                    fields: dict) -> tuple[np.ndarray, object]:
    """``measure_cell``'s forward passes (inside ``configured.running()``): compilation of the input's shape,
    warm-up, ``iterations`` timed ones in the window (None: as many as fill ``min_window_s``), FLOPs of one
    (once per point, after the window). The latencies and the recorder's window."""
    plan, folder, device = session.plan, cell.folder(session.out), session.device
    sync = synchronizer(device)
    fields["compile_s"] = configured.compile_call(inputs, sync)
    timed_loop(configured.model, inputs, plan.warmup, sync)
    if iterations is None:
        iterations = iterations_for_window(timed_loop(configured.model, inputs, SIZING_INFERENCES, sync),
                                           plan.min_window_s)
    compiled_before = knobs.compilations() if configured.compiled else None
    sync()
    recorder = Recorder(session.sensors, folder / runtree.SAMPLES_FILE, plan.period_s,
                        ticks=tick_source(device, polled=True))
    recorder.start()
    try:
        latencies = timed_loop(configured.model, inputs, iterations, sync, recorder.poll)
    finally:
        window = recorder.stop()
    if compiled_before is not None and knobs.compilations() != compiled_before:
        raise knobs.ConfigError("torch.compile compiled inside the measured window")
    if (cell.config, cell.size) not in session.flops:  # after the window, so a run without warm-up starts cold
        session.flops[cell.config, cell.size] = count_flops(configured.eager, inputs)
    return latencies, window


def _generation_window(session: Session, cell: Cell, configured: knobs.Configured, inputs,
                       fields: dict) -> tuple[list[float], object]:
    """``measure_cell``'s generate task (inside ``configured.running()``): warm-up requests, one request in the
    window with its ``split`` sample, FLOPs of a request (once per point, after the window), ``tokens.csv`` and
    the generation's fields of ``meta.json``. The request's latency (a list of one) and the recorder's window."""
    plan, folder, sync = session.plan, cell.folder(session.out), synchronizer(session.device)
    decoder = generation.Decoder(configured.model.module)
    recorder = Recorder(session.sensors, folder / runtree.SAMPLES_FILE, plan.period_s,
                        ticks=tick_source(session.device, polled=True))
    measured = generation.measure_window(decoder, inputs, cell.config.new_tokens, plan.warmup, sync, recorder)
    point = (cell.config, cell.size)
    if point not in session.flops:
        session.flops[point] = generation.count_flops(generation.Decoder(configured.eager.module), inputs,
                                                      cell.config.new_tokens)
    request = measured.generated
    fields["phases"] = list(generation.PHASES)
    fields["generation"] = {
        "prompt_tokens": cell.size, "new_tokens": cell.config.new_tokens, "split_s": measured.split_s,
        "decoding": "greedy, end of sequence suppressed", "kv_cache": request.cache_type,
        "kv_cache_mib": request.cache_mib, "output_ids": request.tokens[0].tolist(),
    }
    runtree.write_tokens(folder / runtree.TOKENS_FILE, request.t_s, request.latency_s)
    return [request.request_s], measured.window


def record_idle(session: Session) -> dict:
    """Record the sensors for ``idle_s`` seconds while nothing runs, in ``OUT/idle/idle_<utc>_<host>_<pid>.json``
    (the format of ``power_metrics.json``); ``{"recording": its path relative to the tree, "seconds"}`` for
    each run's ``meta.json`` (recording None when ``idle_s`` is 0). The analysis computes the idle power."""
    plan = session.plan
    if plan.idle_s == 0:
        return {"recording": None, "seconds": 0.0}
    folder = session.out / runtree.IDLE_FOLDER
    folder.mkdir(exist_ok=True)
    name = f"idle_{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}_{socket.gethostname()}_{os.getpid()}.json"
    session.idle_path = folder / name
    synchronizer(session.device)()
    recorder = Recorder(session.sensors, session.idle_path, plan.period_s, ticks=tick_source(session.device))
    recorder.start()
    try:
        time.sleep(plan.idle_s)
    finally:
        recorder.stop()
    return {"recording": f"{runtree.IDLE_FOLDER}/{name}", "seconds": float(plan.idle_s)}


# ---------------------------------------------------------------- what a sweep left

@dataclass(frozen=True)
class Outcome:
    """The runs of a plan's cells in a tree: how many in each status (``missing``: no usable ``meta.json``)
    and the first failure (cell, reason)."""

    statuses: Counter
    first_failure: tuple[str, str] | None


def outcome(plan: Plan, out: Path, shard: tuple[int, int] = (0, 1)) -> Outcome:
    """The runs of ``plan``'s cells in ``out`` (with a precision: every run folder of its points)."""
    if plan.precision is None:
        cells = plan.cells(shard)
    else:
        cells = [Cell(config, size, run) for config, size in plan.points() for run in range(plan.max_runs)
                 if Cell(config, size, run).folder(out).exists()]
    statuses: Counter = Counter()
    first = None
    for cell in cells:
        try:
            meta = runtree.read_meta(cell.folder(out))
        except runtree.MetaError:
            statuses["missing"] += 1
            continue
        statuses[meta.status] += 1
        if meta.status == runtree.FAILED and first is None:
            first = (str(cell), meta.reason or "")
    return Outcome(statuses, first)

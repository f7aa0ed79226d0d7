"""The inference protocol: warm-up, a timed loop inside an exact energy window, sweeps.

This is the only module that runs models. For every cell (input size, run) it
warms the model up outside the window, starts the recorder, times each
inference (synchronising the GPU before reading the clock), stops the recorder
right after the last one and writes ``latency.csv`` and ``meta.json``.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch

from . import runtree
from .models import LoadedModel, ModelError, ModelInputs, count_flops, count_params, load_model
from .recorder import Recorder
from .sensors import open_sensors
from .sensors.base import Sensor

SCHEMA = 1

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Preset:
    sizes: tuple[int, ...]
    iterations: int
    runs: int = 10
    warmup: int = 50
    iterations_at: dict[int, int] = field(default_factory=dict)  # per-size overrides


# The seed study's protocol, and a quick one that runs in about a minute on a 2-core CPU.
PRESETS = {
    "alexnet": Preset((224,), 4000),
    "resnet50": Preset((8, 32, 64, 128, 256, 512, 1024, 2048, 4096), 5000, iterations_at={4096: 1000}),
    "bert": Preset(tuple(range(50, 501, 50)), 1000),
}
QUICK_PRESETS = {
    "alexnet": Preset((224,), 40, runs=5, warmup=5),
    "resnet50": Preset((32, 64, 128, 224), 15, runs=3, warmup=3),
    "bert": Preset((50, 100, 200, 300), 5, runs=3, warmup=2),
}


@dataclass
class Plan:
    """Everything that defines a study; recorded in ``study.json``."""

    model: str
    sizes: list[int]
    iterations: int
    runs: int
    warmup: int
    device: str = "auto"
    period_s: float = 0.1
    idle_s: float = 5.0
    iterations_at: dict[int, int] = field(default_factory=dict)
    precision: float | None = None  # target relative half-width of the 95 % CI of the median
    max_runs: int = 50  # cap on runs per point when measuring to a precision
    min_window_s: float = 2.0  # with a precision: iterations chosen so each window lasts this long

    @classmethod
    def from_preset(cls, model: str, quick: bool = False, **overrides) -> "Plan":
        presets = QUICK_PRESETS if quick else PRESETS
        if model not in presets:
            raise ModelError(f"unknown model {model!r}; choose from {', '.join(presets)}")
        preset = presets[model]
        plan = cls(model, list(preset.sizes), preset.iterations, preset.runs, preset.warmup,
                   idle_s=1.0 if quick else 5.0, iterations_at=dict(preset.iterations_at))
        for name, value in overrides.items():
            if value is not None:
                setattr(plan, name, value)
        if overrides.get("iterations") is not None:
            plan.iterations_at = {}  # an explicit --iters applies to every size
        plan.iterations_at = {size: n for size, n in plan.iterations_at.items() if size in plan.sizes}
        plan.validate()
        return plan

    def validate(self) -> None:
        if not self.sizes or any(size <= 0 for size in self.sizes):
            raise ValueError(f"input sizes must be positive integers, got {self.sizes}")
        repeated = sorted({size for size in self.sizes if self.sizes.count(size) > 1})
        if repeated:
            raise ValueError(f"--sizes lists {', '.join(map(str, repeated))} more than once")
        stray = sorted(set(self.iterations_at) - set(self.sizes))
        if stray:
            raise ValueError(f"--iters-at names size(s) {', '.join(map(str, stray))} that --sizes does not list")
        for name in ("iterations", "runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name[:5] if name == 'iterations' else name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.period_s <= 0:
            raise ValueError(f"--period must be positive, got {self.period_s}")
        if self.precision is not None and not 0 < self.precision < 1:
            raise ValueError(f"--precision is a relative half-width such as 0.01, got {self.precision}")
        if self.precision is not None and self.max_runs < max(self.runs, 3):
            raise ValueError(f"--max-runs must be at least --runs and 3, got {self.max_runs}")

    def iterations_for(self, size: int) -> int:
        return self.iterations_at.get(size, self.iterations)

    def cells(self, shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[int, int]]:
        """The (input size, run) cells, or those of the ``i``-th of ``n`` interleaved shares, ``shard=(i, n)``."""
        index, count = shard
        for i, cell in enumerate((size, run) for size in self.sizes for run in range(self.runs)):
            if i % count == index:
                yield cell


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda, cuda:<i> or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use cpu, cuda, cuda:<i> or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA GPU is available here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def timed_loop(loaded: LoadedModel, inputs: ModelInputs, iterations: int, sync: Callable[[], None]) -> np.ndarray:
    """Latency of each of ``iterations`` forward passes, in seconds."""
    latencies = np.empty(iterations)
    clock = time.perf_counter
    for i in range(iterations):
        start = clock()
        loaded(inputs)
        sync()
        latencies[i] = clock() - start
    return latencies


def host_info(device: torch.device, sensors: Sequence[Sensor]) -> dict:
    import torchvision
    import transformers

    gpus = [
        {"domain": d.name, "name": d.details.get("device_name"), "driver": d.details.get("driver_version"),
         "uuid": d.details.get("uuid")}
        for s in sensors for d in s.domains if d.sensor == "nvml"
    ]
    if device.type == "cuda" and not gpus:
        gpus = [{"domain": None, "name": torch.cuda.get_device_name(device), "driver": None, "uuid": None}]
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "transformers": transformers.__version__,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


@dataclass
class Session:
    """What a study needs while it runs: the model on its device and the open sensors."""

    plan: Plan
    out: Path
    loaded: LoadedModel
    device: torch.device
    sensors: list[Sensor]
    unavailable: dict[str, str]
    idle_power_w: dict[str, dict]
    host: dict

    @property
    def sensors_meta(self) -> dict:
        return {d.name: d.describe() for s in self.sensors for d in s.domains}


def run_study(plan: Plan, out: Path, *, resume: bool = False, shard: tuple[int, int] = (0, 1),
              sensors: tuple[list[Sensor], dict[str, str]] | None = None, progress: bool = True) -> Path:
    """Measure every cell of ``plan`` (or the ``shard``'s share) into the run tree ``out``.

    With ``plan.precision`` each input size is measured run after run until the
    95 % confidence interval of its median is within the target (see
    ``measure_to_precision``); otherwise exactly ``plan.runs`` runs.
    """
    from tqdm import tqdm

    device = resolve_device(plan.device)
    loaded = load_checked(plan)
    out, todo = prepare_study(plan, out, resume=resume, shard=shard)
    if not todo and plan.precision is None:
        return out
    opened, unavailable = sensors if sensors is not None else open_sensors(gpu=True)
    try:
        session = Session(plan, out, loaded, device, opened, unavailable, {}, host_info(device, opened))
        loaded.module.to(device)
        session.idle_power_w = measure_idle(session) if plan.idle_s else {}
        flops: dict[int, int | None] = {}
        if plan.precision is not None:
            for size in tqdm(plan.sizes, desc=f"{plan.model} to ±{plan.precision:.1%}", unit="point",
                             disable=not progress):
                measure_to_precision(session, size, flops, resume=resume)
            return out
        bar = tqdm(todo, desc=plan.model, unit="run", disable=not progress)
        for size, run in bar:
            bar.set_postfix_str(f"input {size}, run {run}")
            measure_cell(session, size, run, flops)
        bar.close()
    finally:
        if sensors is None:
            for sensor in opened:
                sensor.close()
    return out


def load_checked(plan: Plan) -> LoadedModel:
    """The plan's model, once some of its sizes fit it (within a sweep a bad size is a failed point)."""
    loaded = load_model(plan.model)
    size_errors = []
    for size in plan.sizes:
        try:
            loaded.check_size(size)
        except ModelError as error:
            size_errors.append(error)
    if len(size_errors) == len(plan.sizes):  # nothing to measure
        raise size_errors[0]
    return loaded


def prepare_study(plan: Plan, out: Path, *, resume: bool = False,
                  shard: tuple[int, int] = (0, 1)) -> tuple[Path, list[tuple[int, int]]]:
    """Check that the run tree ``out`` can take the ``shard``'s cells of ``plan``; the tree and the cells to measure.

    ``study.json`` records the plan: a tree started with another plan is refused
    (its runs would not be comparable), and every process of a sharded study
    writes the same bytes there, atomically. Without ``resume`` a cell that
    already has a folder is refused; with it, the cells not complete remain.
    """
    if not 0 <= shard[0] < shard[1]:
        raise ValueError(f"a shard is i/n with 0 <= i < n, got {shard[0]}/{shard[1]}")
    if plan.precision is not None and shard != (0, 1):
        raise ValueError("--precision decides the number of runs as it goes; it cannot be split into shards")
    out = runtree.prepare_out(out)
    planned = json.loads(json.dumps(asdict(plan), default=str))
    recorded = runtree.read_json(out / runtree.STUDY_FILE)
    if recorded is not None:
        before = recorded.get("plan") if isinstance(recorded.get("plan"), dict) else {}
        changed = [f"{key}: {before.get(key)!r} there, {value!r} now" for key, value in planned.items()
                   if before.get(key) != value]
        if changed:
            raise runtree.RunTreeError(f"{out} was started with another plan ({'; '.join(changed[:3])}); "
                                       "give the same options to complete it, or choose another --out")
    mine = list(plan.cells(shard))
    if not resume:
        taken = [cell for cell in mine if runtree.run_dir(out, *cell).exists()]
        if taken:
            raise runtree.RunTreeError(f"{out} already holds runs (first: input_{taken[0][0]}/run_{taken[0][1]}); "
                                       "pass --resume to complete it or choose another --out")
    if recorded is None:
        runtree.write_json(out / runtree.STUDY_FILE, {"schema": SCHEMA, "plan": planned})
    return out, [cell for cell in mine if not runtree.is_complete(runtree.run_dir(out, *cell))]


def measure_to_precision(session: Session, size: int, flops: dict[int, int | None], resume: bool = False) -> str:
    """Add runs at ``size`` until the 95 % CI of the median is within ``plan.precision``.

    The quantity is the energy per inference of the run's measured domain (the
    GPU's on a GPU, else the CPU package's), or the median latency where no
    energy is measured (an estimate is a model, not a measurement to converge).
    Each window lasts at least ``plan.min_window_s``. Every run's ``meta.json``
    ends up with the point's ``stop_reason``. With ``resume``, complete runs are
    read back instead of measured again, and new runs keep their iterations.
    """
    from analysis import bootstrap_median_ci

    plan = session.plan
    folders = [runtree.run_dir(session.out, size, run) for run in range(plan.max_runs)]
    kept = [runtree.read_meta(folder) if resume and runtree.is_complete(folder) else None for folder in folders]
    iterations = kept[0]["iterations"] if kept[0] else iterations_for_window(session, size)
    metas, values, quantity = [], [], None
    reason = f"cap reached: {plan.max_runs} runs without reaching ±{plan.precision:.1%}"
    for run in range(plan.max_runs):
        meta = kept[run] or measure_cell(session, size, run, flops, iterations=iterations)
        metas.append(meta)
        if meta["status"] != runtree.COMPLETE:
            reason = f"run {run} failed: {meta['reason']}"
            break
        quantity, value = precision_quantity(session, folders[run])
        values.append(value)
        if len(values) >= max(plan.runs, 3):
            median = float(np.median(values))
            (low,), (high,) = bootstrap_median_ci(np.asarray(values)[:, None])
            half_width = max(median - low, high - median) / abs(median) if median else np.inf
            if half_width <= plan.precision:
                reason = (f"precision reached: 95 % CI of the median {quantity} within ±{half_width:.2%} "
                          f"(target ±{plan.precision:.1%}) after {len(values)} runs")
                break
    for folder, meta in zip(folders, metas):
        meta["stop_reason"] = reason
        runtree.write_json(folder / runtree.META_FILE, meta)
    return reason


def iterations_for_window(session: Session, size: int) -> int:
    """Iterations that make a window of at least ``min_window_s``, from a few timed inferences."""
    loaded, sync = session.loaded, synchronizer(session.device)
    inputs = loaded.inputs(size, 1, session.device)
    with torch.inference_mode():
        timed_loop(loaded, inputs, max(session.plan.warmup, 1), sync)
        latency = float(np.median(timed_loop(loaded, inputs, 5, sync)))
    return max(1, int(np.ceil(session.plan.min_window_s / latency)))


def precision_quantity(session: Session, folder: Path) -> tuple[str, float]:
    """The figure whose precision is tracked for a finished run, and its value."""
    import warnings

    from analysis import AnalysisWarning, load_study

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        runs = load_study(folder).runs
    name, values = tracked_quantity(runs, session.device.type == "cuda")
    return name, float(values.iloc[0])


def tracked_quantity(runs: "pd.DataFrame", on_gpu: bool) -> tuple[str, "pd.Series"]:
    """The measured energy per inference of the runs' main domain, else their median latency.

    The GPU's energy on a GPU, the CPU package's on a CPU; an estimate is a
    model, not a measurement whose precision can be tracked.
    """
    domain = "gpu" if on_gpu else "cpu_package"
    column = f"{domain}_energy_per_inference_j"
    if column in runs and (runs[f"{domain}_source"] == "measured").all() and np.isfinite(runs[column]).all():
        return f"{domain} energy per inference", runs[column]
    return "latency (no measured energy sensor)", runs["latency_median_s"]


def measure_cell(session: Session, size: int, run: int, flops: dict[int, int | None],
                 iterations: int | None = None) -> dict:
    """Measure one (input size, run) cell.

    The model failing (an error, out of memory) is recorded as a ``failed`` run,
    never raised; an OSError writing the tree (disk full, read-only) propagates
    and leaves the run ``running``. The files are written in an order that
    makes a run ``complete`` only once all of them are in place.
    """
    plan, loaded = session.plan, session.loaded
    folder = runtree.run_dir(session.out, size, run)
    folder.mkdir(parents=True, exist_ok=True)
    runtree.clear_run(folder)
    meta = {
        "schema": SCHEMA, "status": runtree.RUNNING, "reason": None,
        "model": loaded.name, "task": loaded.task, "input_size": size, "input_shape": None, "batch_size": 1,
        "run": run, "iterations": iterations or plan.iterations_for(size), "warmup": plan.warmup,
        "device": str(session.device), "gpu_domain": nvml_domain_of(session.device, session.sensors), "weights": loaded.weights, "weights_notice": loaded.weights_notice,
        "params": count_params(loaded), "flops_per_inference": None,
        "period_s": plan.period_s, "sensors": session.sensors_meta, "unavailable": session.unavailable,
        "idle_power_w": session.idle_power_w, "window": None, "host": session.host,
        "stop_reason": f"fixed protocol: {plan.runs} runs",
    }
    runtree.write_json(folder / runtree.META_FILE, meta)
    sync = synchronizer(session.device)
    try:
        inputs = loaded.inputs(size, 1, session.device)
        meta["input_shape"] = inputs.shape
        with torch.inference_mode():
            timed_loop(loaded, inputs, plan.warmup, sync)
            sync()
            recorder = Recorder(session.sensors, folder / runtree.SAMPLES_FILE, plan.period_s,
                                ticks=tick_source(session.device))
            recorder.start()
            try:
                latencies = timed_loop(loaded, inputs, meta["iterations"], sync)
            finally:
                window = recorder.stop()
        if size not in flops:  # after the timed loop, so that a run without warm-up starts cold
            flops[size] = count_flops(loaded, inputs)
        meta["flops_per_inference"] = flops[size]
        meta["window"] = window.describe()
        runtree.write_latencies(folder / runtree.LATENCY_FILE, latencies)
        meta["status"] = runtree.COMPLETE
    except (ModelError, RuntimeError, ValueError) as error:  # torch.OutOfMemoryError is a RuntimeError
        meta["status"], meta["reason"] = runtree.FAILED, one_line(error)
        if session.device.type == "cuda":
            torch.cuda.empty_cache()
    runtree.write_json(folder / runtree.META_FILE, meta)
    return meta


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def measure_idle(session: Session) -> dict:
    """Mean power of every energy domain while nothing runs, for ``idle_s`` seconds.

    The recording is kept in ``OUT/idle/`` as evidence; each run's ``meta.json``
    carries the resulting ``{domain: {value, source, method, window_s}}``.
    """
    import warnings

    from analysis import AnalysisWarning, NoUsableRuns, recording_power

    folder = session.out / "idle"
    folder.mkdir(exist_ok=True)
    path = folder / f"idle_{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}_{socket.gethostname()}_{os.getpid()}.json"
    sync = synchronizer(session.device)
    sync()
    recorder = Recorder(session.sensors, path, session.plan.period_s, ticks=tick_source(session.device))
    recorder.start()
    time.sleep(session.plan.idle_s)
    recorder.stop()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AnalysisWarning)  # a domain it cannot measure is simply absent
            power = recording_power(path, session.sensors_meta)
    except NoUsableRuns:
        return {}
    return {
        row.domain: {"value": row.mean_power_w, "source": row.source, "method": row.method, "window_s": row.window_s}
        for row in power.itertuples() if np.isfinite(row.mean_power_w)
    }


def tick_source(device: torch.device) -> str:
    """The recorder's tick source for work on ``device``: on the CPU the model keeps every core busy and a
    sampling thread would preempt it, so ticks are taken in the measuring thread (see ``recorder``)."""
    return "signal" if device.type == "cpu" else "thread"


def nvml_domain_of(device: torch.device, sensors: Sequence[Sensor]) -> str | None:
    """The NVML domain of the CUDA device the model runs on (matched by UUID; NVML ignores CUDA_VISIBLE_DEVICES)."""
    if device.type != "cuda":
        return None
    uuid = str(getattr(torch.cuda.get_device_properties(device), "uuid", ""))
    for sensor in sensors:
        for domain in sensor.domains:
            if domain.sensor == "nvml" and uuid and uuid in str(domain.details.get("uuid", "")):
                return domain.name
    return f"gpu{device.index or 0}"

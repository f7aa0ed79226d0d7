"""What a study measures: the plan, its grid of dimensions, named presets, cells, their order and shards.

A study measures every point of a grid (configuration x input size) ``runs``
times. A configuration is one value of each knob: batch size, dtype, execution
(eager or compiled), when swept the number of torch threads and, for the
``generate`` task, the number of new tokens; each has a folder of its own,
``OUT/<config>/input_<size>/run_<k>/`` (``runtree.config_name``). The task is
``forward`` (timed forward passes) or ``generate`` (a decoder's greedy
generation, ``measure.generation``: one request of a batch per window, the
prompt length as the input size).
A *cell* is one run folder: (configuration, input size, run). The cells are
measured in the plan's ``order`` and a shard takes every n-th of the ordered
cells. This module imports no torch: a plan is checked, recorded and compared
without loading anything.

Errors are ``PlanError`` (a ``ValueError``) with one line naming what is wrong
by the names of the caller's vocabulary: the ``Plan`` fields and keywords by
default (``sizes``, ``resume=True``), the command line's options when it
passes its own (``--sizes``, ``--resume``).
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Collection, Iterator, Mapping, NamedTuple

from . import runtree

TASKS = ("forward", "generate")
DTYPES = ("fp32", "fp16", "bf16")
EXECUTIONS = ("eager", "compiled")
DTYPE_MODES = ("cast", "autocast")
ORDERS = ("sequential", "interleave", "shuffle")
MIN_PRECISION_RUNS = 3  # a confidence interval of a median needs a few runs; the default of ``runs`` with a precision
# How the Python API names the keywords of ``run_study`` in its messages (fields are named as they are).
API_NAMES = {"resume": "resume=True", "overwrite": "overwrite=True", "shard": "shard"}


class PlanError(ValueError):
    """A plan, or a way of running it, that cannot be measured (one line)."""


def named(names: Mapping[str, str], key: str) -> str:
    """How the caller calls ``key`` (a ``Plan`` field or a keyword of ``run_study``)."""
    return names.get(key, API_NAMES.get(key, key))


@dataclass(frozen=True)
class Preset:
    """A study's protocol for one model: sizes, timed iterations per run (``iterations_at``: per size; None:
    as many as fill ``min_window_s`` seconds), runs, untimed warm-up inferences, idle recording (s),
    sampling period (s), the grid's batch sizes and dtypes with the cells' order, and for the generate task
    its new tokens per request."""

    sizes: tuple[int, ...]
    iterations: int | None
    runs: int = 10
    warmup: int = 50
    iterations_at: Mapping[int, int] = field(default_factory=dict)
    idle_s: float = 5.0
    period_s: float = 0.1
    min_window_s: float = 2.0
    batch_sizes: tuple[int, ...] = (1,)
    dtypes: tuple[str, ...] = ("fp32",)
    order: str = "sequential"
    new_tokens: tuple[int, ...] | None = None  # the generate task's: new tokens per request


RESNET_SIZES = (8, 32, 64, 128, 256, 512, 1024, 2048, 4096)
BERT_SIZES = tuple(range(50, 501, 50))
PRESETS: dict[str, dict[str, Preset]] = {
    # The seed study's protocol (AlexNet, ResNet50 and BERT with AIPowerMeter).
    "seed": {
        "alexnet": Preset((224,), 4000),
        "resnet50": Preset(RESNET_SIZES, 5000, iterations_at={4096: 1000}),
        "bert": Preset(BERT_SIZES, 1000),
    },
    # About a minute per model on a 2-core CPU.
    "quick": {
        "alexnet": Preset((224,), 40, runs=5, warmup=5, idle_s=1.0),
        "resnet50": Preset((32, 64, 128, 224), 15, runs=3, warmup=3, idle_s=1.0),
        "bert": Preset((50, 100, 200, 300), 5, runs=3, warmup=2, idle_s=1.0),
    },
    # The committed CPU study (scripts/cpu_study.sh), cut to fit a 2-core CPU: ResNet50 stops at 1024 px and
    # iterations are chosen so each window lasts about a second or more, fewer at large sizes.
    "cpu-study": {
        "alexnet": Preset((224,), 200, warmup=20),
        "resnet50": Preset(RESNET_SIZES[:7], 20, warmup=3,
                           iterations_at={8: 100, 32: 100, 64: 80, 128: 60, 256: 30, 512: 8, 1024: 3}),
        "bert": Preset(BERT_SIZES, 8, warmup=2, iterations_at={50: 20, 100: 12}),
    },
    # The GPU study (scripts/gpu_study.sh): about six minutes on a recent GPU. Sampled every 0.02 s so that the
    # analysis aligns NVML's energy counter, which moves every ~100 ms, on its updates.
    "gpu-study": {
        "alexnet": Preset((224,), 2000, warmup=20, period_s=0.02),
        "resnet50": Preset(RESNET_SIZES, 400, warmup=20, period_s=0.02, iterations_at={4096: 100}),
        "bert": Preset(BERT_SIZES, 300, warmup=20, period_s=0.02),
    },
    # Batch size x dtype at one input size, runs interleaved so that drift spreads over every configuration;
    # iterations fill a window of min_window_s at each point. On a GPU (scripts/gpu_study.sh) and on a CPU.
    "gpu-batch": {
        "resnet50": Preset((224,), None, runs=5, warmup=20, period_s=0.02, min_window_s=1.0,
                           batch_sizes=(1, 8, 32, 128), dtypes=("fp32", "bf16", "fp16"), order="interleave"),
    },
    "cpu-batch": {
        "resnet50": Preset((64,), None, runs=5, warmup=3, min_window_s=1.0, batch_sizes=(1, 4, 16),
                           dtypes=("fp32", "bf16"), order="interleave"),
    },
}
# Any other model (torchvision:<name>, hf:<name>): a protocol per unit of its input size.
# Their iterations fill a window of min_window_s seconds at each point (sized once per point).
GENERIC_PRESETS: dict[str, dict[str, Preset]] = {
    "seed": {"px": Preset((64, 128, 224, 384, 512), None, warmup=20),
             "tokens": Preset((32, 64, 128, 256, 512), None, warmup=10)},
    "quick": {"px": Preset((32, 64, 128, 224), None, runs=3, warmup=2, idle_s=1.0, min_window_s=0.5),
              "tokens": Preset((16, 32, 64, 128), None, runs=3, warmup=2, idle_s=1.0, min_window_s=0.5)},
}


# The generate task (any decoder): prompt lengths as sizes, new tokens and batch sizes per request; one request
# per window (measure.generation), so ``iterations`` is 1.
GENERATION_PRESETS: dict[str, Preset] = {
    # The default: prompts of 32, 128 and 512 tokens, 64 new tokens, batches of 1 and 8.
    "seed": Preset((32, 128, 512), 1, warmup=2, batch_sizes=(1, 8), new_tokens=(64,)),
    # Seconds per point on a 2-core CPU with a small configuration, e.g. hf:gpt2:n_layer=2,n_head=4,n_embd=128.
    "quick": Preset((16, 64, 256), 1, runs=3, warmup=1, idle_s=1.0, batch_sizes=(1, 4), new_tokens=(16,)),
    # The committed CPU study (data/generation/): GPT-2's architecture on a 2-core CPU.
    "cpu-study": Preset((32, 128, 512), 1, runs=5, warmup=1, batch_sizes=(1, 4), new_tokens=(32,)),
    # The GPU study's generation points (scripts/gpu_study.sh): decode phases of 128 tokens last well over NVML's
    # ~100 ms counter update; sampled every 0.02 s so that the analysis aligns the counter on its updates.
    "gpu-study": Preset((64, 512), 1, runs=5, warmup=1, period_s=0.02, batch_sizes=(1, 16), new_tokens=(128,)),
}


@dataclass(frozen=True)
class Config:
    """One configuration of the knobs; ``threads`` None: torch's number, not set; ``new_tokens``: tokens
    generated per request (the generate task), None for forward passes."""

    batch_size: int = 1
    dtype: str = "fp32"
    execution: str = "eager"
    threads: int | None = None
    new_tokens: int | None = None

    @property
    def knobs(self) -> dict[str, int | str]:
        """The knobs that name the folder (``threads`` and ``new_tokens`` only when set)."""
        knobs: dict[str, int | str] = {"batch_size": self.batch_size, "dtype": self.dtype,
                                       "execution": self.execution}
        if self.threads is not None:
            knobs["threads"] = self.threads
        if self.new_tokens is not None:
            knobs["new_tokens"] = self.new_tokens
        return knobs

    @property
    def name(self) -> str:
        """The configuration's folder name, e.g. ``batch8-bf16-compiled-threads2`` or ``batch1-fp32-eager-new64``."""
        return runtree.config_name(self.knobs)


class Cell(NamedTuple):
    """One run folder of a study: ``root/<config.name>/input_<size>/run_<run>``."""

    config: Config
    size: int
    run: int

    def folder(self, root: Path) -> Path:
        return runtree.run_dir(root, self.size, self.run, self.config.name)

    def __str__(self) -> str:
        return f"{self.config.name}/input_{self.size}/run_{self.run}"


@dataclass
class Plan:
    """Everything that defines a study; recorded in ``study.json``.

    ``iterations``: timed forward passes per run (``iterations_at``: per input
    size); ``warmup``: untimed ones before each window; ``period_s``: sampling
    period (s); ``idle_s``: seconds of idle recording before the first run (0:
    none). The grid: ``sizes`` x ``batch_sizes`` x ``dtypes`` (``fp32``,
    ``fp16``, ``bf16``, applied by ``dtype_mode``: ``cast`` the model and its
    floating inputs, or ``autocast``) x ``executions`` (``eager``, ``compiled``)
    x ``threads`` (None: torch's, not set). ``order``: ``sequential`` (point
    after point), ``interleave`` (run 0 of every point, then run 1, ...) or
    ``shuffle`` (a permutation drawn from ``seed``). With ``precision`` (the
    target relative half-width of the 95 % CI of a point's median), runs are
    added to a point until a stop rule says so, ``runs`` being the minimum and
    ``max_runs`` the cap, and each window lasts at least ``min_window_s``.
    ``task``: ``forward`` (``iterations`` forward passes per window) or
    ``generate`` (one request of each batch per window, ``iterations`` 1:
    ``sizes`` are prompt lengths in tokens and ``new_tokens``, at least 2 each,
    one configuration each, the tokens generated per request; eager only).
    """

    model: str
    sizes: list[int]
    iterations: int | None
    runs: int
    warmup: int
    device: str = "auto"
    period_s: float = 0.1
    idle_s: float = 5.0
    iterations_at: dict[int, int] = field(default_factory=dict)
    precision: float | None = None
    max_runs: int = 50
    min_window_s: float = 2.0
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    dtypes: list[str] = field(default_factory=lambda: ["fp32"])
    dtype_mode: str = "cast"
    executions: list[str] = field(default_factory=lambda: ["eager"])
    threads: list[int] | None = None
    order: str = "sequential"
    seed: int = 0
    task: str = "forward"
    new_tokens: list[int] | None = None

    @classmethod
    def from_preset(cls, model: str, preset: str = "seed", *, quick: bool = False, size_unit: str | None = None,
                    names: Mapping[str, str] = API_NAMES, **overrides) -> "Plan":
        """The plan of a named preset (``PRESETS``) for ``model``, with ``overrides`` of its fields.

        ``quick=True`` is ``preset="quick"``. A model the preset does not name
        (``torchvision:<name>``, ``hf:<name>``) takes the preset's generic protocol
        for its ``size_unit`` (``px`` or ``tokens``, see ``GENERIC_PRESETS``), where
        it has one; ``task="generate"`` takes ``GENERATION_PRESETS`` for any model
        (its prompt lengths, new tokens and batch sizes). An override of None keeps the
        preset's value; ``iterations`` replaces every per-size count of the
        preset, and ``iterations_at`` adds per-size counts to those left; with
        a ``precision`` and no ``runs``, runs default to ``MIN_PRECISION_RUNS``
        (the minimum before the stop rule is asked). Raises ``PlanError`` for
        an unknown preset, model or keyword, or an invalid plan (``names``:
        how its message names the fields).
        """
        if quick:
            preset = "quick"
        if preset not in PRESETS:
            raise PlanError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        if overrides.get("task") == "generate":
            chosen = GENERATION_PRESETS.get(preset)
        else:
            chosen = PRESETS[preset].get(model) or GENERIC_PRESETS.get(preset, {}).get(size_unit)
        if chosen is None and overrides.get("task") == "generate":
            raise PlanError(f"preset {preset!r} has no protocol for the generate task; it has "
                            f"{', '.join(GENERATION_PRESETS)}")
        if chosen is None:
            generic = f" or any model with inputs in {' or '.join(GENERIC_PRESETS[preset])}" \
                if preset in GENERIC_PRESETS else ""
            raise PlanError(f"preset {preset!r} has no protocol for {model!r}; it has {', '.join(PRESETS[preset])}"
                            f"{generic}")
        known = {f.name for f in fields(cls)} - {"model"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise PlanError(f"Plan.from_preset() got unknown keyword(s) {', '.join(unknown)}; "
                            f"it takes {', '.join(sorted(known))}")
        plan = cls(model, list(chosen.sizes), chosen.iterations, chosen.runs, chosen.warmup,
                   period_s=chosen.period_s, idle_s=chosen.idle_s, min_window_s=chosen.min_window_s,
                   batch_sizes=list(chosen.batch_sizes), dtypes=list(chosen.dtypes), order=chosen.order,
                   new_tokens=None if chosen.new_tokens is None else list(chosen.new_tokens))
        given = {name: value for name, value in overrides.items() if value is not None}
        if "precision" in given and "runs" not in given:
            plan.runs = MIN_PRECISION_RUNS
        per_size = dict(given.pop("iterations_at", {}))
        for name, value in given.items():
            setattr(plan, name, value)
        kept = {} if "iterations" in given else {s: n for s, n in chosen.iterations_at.items() if s in plan.sizes}
        plan.iterations_at = {**kept, **per_size}
        plan.validate(names)
        return plan

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> "Plan":
        """The plan recorded in a ``study.json`` (its ``plan`` mapping); ``PlanError`` if it is not one."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise PlanError(f"the recorded plan has field(s) this version does not know: {', '.join(unknown)}")
        values = dict(record)
        values["iterations_at"] = {int(size): n for size, n in (values.get("iterations_at") or {}).items()}
        try:
            plan = cls(**values)
        except TypeError as error:
            raise PlanError(f"the recorded plan is incomplete: {error}") from None
        plan.validate()
        return plan

    def record(self) -> dict:
        """The plan as JSON values, as ``study.json`` holds it (size keys of ``iterations_at`` as text)."""
        document = asdict(self)
        document["iterations_at"] = {str(size): n for size, n in self.iterations_at.items()}
        return document

    def validate(self, names: Mapping[str, str] = API_NAMES) -> None:
        """Raise ``PlanError`` naming the first problem, in the caller's ``names`` of fields."""
        def name(key: str) -> str:
            return named(names, key)

        if self.task not in TASKS:
            raise PlanError(f"{name('task')} must be one of {', '.join(TASKS)}, got {self.task!r}")
        for key in ("sizes", "batch_sizes", "threads"):
            values = getattr(self, key)
            if values is None and key == "threads":
                continue
            if not values or any(not _integer(v) or v < 1 for v in values):
                raise PlanError(f"{name(key)} must be positive integers, got {values}")
        self._validate_generation(names)
        for key, allowed in (("dtypes", DTYPES), ("executions", EXECUTIONS)):
            values = getattr(self, key)
            if not values or any(v not in allowed for v in values):
                raise PlanError(f"{name(key)} must be among {', '.join(allowed)}, got {values}")
        for key in ("sizes", "batch_sizes", "dtypes", "executions", "threads", "new_tokens"):
            values = getattr(self, key) or []
            repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
            if repeated:
                raise PlanError(f"{name(key)} lists {', '.join(map(str, repeated))} more than once")
        stray = sorted(set(self.iterations_at) - set(self.sizes))
        if stray:
            raise PlanError(f"{name('iterations_at')} names size(s) {', '.join(map(str, stray))} "
                            f"that {name('sizes')} does not list")
        for key, least in (("iterations", 1), ("runs", 1), ("max_runs", 1), ("warmup", 0), ("seed", 0)):
            value = getattr(self, key)
            if key == "iterations" and value is None:
                continue  # as many as fill min_window_s
            if not _integer(value) or value < least:
                raise PlanError(f"{name(key)} must be an integer of at least {least}, got {value}")
        if any(not _integer(n) or n < 1 for n in self.iterations_at.values()):
            raise PlanError(f"{name('iterations_at')} counts must be at least 1, got {self.iterations_at}")
        for key in ("period_s", "min_window_s"):
            if not _number(getattr(self, key)) or getattr(self, key) <= 0:
                raise PlanError(f"{name(key)} must be a positive number of seconds, got {getattr(self, key)}")
        if not _number(self.idle_s) or self.idle_s < 0:
            raise PlanError(f"{name('idle_s')} must be 0 or more seconds, got {self.idle_s}")
        if self.dtype_mode not in DTYPE_MODES:
            raise PlanError(f"{name('dtype_mode')} must be one of {', '.join(DTYPE_MODES)}, got {self.dtype_mode!r}")
        if self.order not in ORDERS:
            raise PlanError(f"{name('order')} must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.precision is not None and not (_number(self.precision) and 0 < self.precision < 1):
            raise PlanError(f"{name('precision')} is a relative half-width such as 0.01, got {self.precision}")
        if self.precision is not None and self.max_runs < max(self.runs, MIN_PRECISION_RUNS):
            raise PlanError(f"{name('max_runs')} must be at least {name('runs')} and {MIN_PRECISION_RUNS} "
                            f"with {name('precision')}, got {self.max_runs} (with {name('runs')} {self.runs})")

    def _validate_generation(self, names: Mapping[str, str]) -> None:
        """The generate task's own rules: new tokens (at least 2: a first token and a decode phase), one
        request per window, eager execution; and no new tokens for forward passes."""
        def name(key: str) -> str:
            return named(names, key)

        if self.task != "generate":
            if self.new_tokens is not None:
                raise PlanError(f"{name('new_tokens')} goes with the generate {name('task')}")
            return
        values = self.new_tokens
        if not values or any(not _integer(v) or v < 2 for v in values):
            raise PlanError(f"{name('new_tokens')} must be integers of at least 2 (the first token comes from the "
                            f"prefill, the others from the decode phase), got {values}")
        if self.iterations != 1 or self.iterations_at:
            raise PlanError(f"the generate {name('task')} measures one request per window: {name('iterations')} "
                            f"must be 1 and {name('iterations_at')} empty; add runs with {name('runs')}")
        if "compiled" in self.executions:
            raise PlanError(f"the generate {name('task')} runs eager only: torch.compile would compile again at "
                            "every decode step, whose cache grows by one token")

    def iterations_for(self, size: int) -> int | None:
        """Timed inferences per run at ``size``; None: as many as fill ``min_window_s`` (sized per point)."""
        return self.iterations_at.get(size, self.iterations)

    def configs(self) -> list[Config]:
        """Every configuration of the grid: batch sizes, then dtypes, executions, threads and new tokens vary
        fastest."""
        threads = self.threads or [None]
        new_tokens = self.new_tokens or [None]
        return [Config(b, d, e, t, m) for b, d, e, t, m in itertools.product(self.batch_sizes, self.dtypes,
                                                                              self.executions, threads, new_tokens)]

    def points(self) -> list[tuple[Config, int]]:
        """Every (configuration, input size) of the grid, configuration by configuration."""
        return [(config, size) for config in self.configs() for size in self.sizes]

    def cells(self, shard: tuple[int, int] = (0, 1)) -> list[Cell]:
        """The cells of a fixed number of runs in the plan's order, or the ``i``-th of ``n`` shares of them
        (``shard=(i, n)``: every n-th cell from the i-th)."""
        if self.order == "interleave":
            cells = [Cell(c, s, run) for run in range(self.runs) for c, s in self.points()]
        else:
            cells = [Cell(c, s, run) for c, s in self.points() for run in range(self.runs)]
            if self.order == "shuffle":
                random.Random(self.seed).shuffle(cells)
        index, count = shard
        return cells[index::count]

    def adaptive_cells(self, active: Collection[tuple[Config, int]]) -> Iterator[Cell]:
        """The cells of a precision sweep, where a point leaves ``active`` (a live collection) once stopped.

        ``sequential``: each point's runs until it stops, point after point;
        ``interleave``: rounds (run k of every active point); ``shuffle``:
        rounds, each in an order drawn from ``seed`` and the round's number.
        """
        points = self.points()
        if self.order == "sequential":
            for config, size in points:
                for run in range(self.max_runs):
                    if (config, size) not in active:
                        break
                    yield Cell(config, size, run)
            return
        for run in range(self.max_runs):
            now = [point for point in points if point in active]
            if self.order == "shuffle":
                random.Random(f"{self.seed}/{run}").shuffle(now)
            for config, size in now:
                if (config, size) in active:
                    yield Cell(config, size, run)

    def differences(self, recorded: Mapping[str, object],
                    same_device: Callable[[str, str], bool] = str.__eq__) -> list[tuple[str, object, object]]:
        """``(field, recorded value, this plan's value)`` for every field that differs from a recorded plan.

        ``same_device`` compares devices as they resolve (``auto`` may be ``cpu``). A field a recorded plan
        lacks (written before the field existed) has its default value.
        """
        mine = self.record()
        defaults = {f.name: f.default for f in fields(self) if f.default is not MISSING}
        differ = []
        for key, value in mine.items():
            before = recorded.get(key, defaults.get(key))
            same = same_device(str(before), str(value)) if key == "device" else before == value
            if not same:
                differ.append((key, before, value))
        return differ


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

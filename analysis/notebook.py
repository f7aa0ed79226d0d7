"""The study notebooks' plumbing, in one place: the notebooks narrate and call this.

    from analysis import notebook
    PROFILE = notebook.profile()              # the parameters cell: defaults from STUDY_* variables
    DEVICE = notebook.device()
    OUT = notebook.results("alexnet")
    THREADS = notebook.threads(PROFILE)
    FRESH = notebook.fresh(PROFILE)

    nb = notebook.StudyNotebook("alexnet", PROFILE, DEVICE, OUT, THREADS, FRESH)
    print(nb.start())                         # threads applied, folders made
    nb.measure(nb.plan())                     # only when FRESH; says how long it will take first
    committed, study = nb.load()              # the committed tree, and committed + fresh as one study
    nb.show(plots.energy_vs(study), "energy_vs_size")   # shown, and saved as PNG, SVG and PDF
    nb.say("findings", "The median is {ms:.1f} ms.", ms=1e3 * latency)  # prose rendered from values
    nb.write_numbers()                        # OUT/key_numbers.json: the numbers and the prose

Parameters come from the environment because nbval cannot inject them:
``STUDY_PROFILE`` (``quick``, the default, or ``full``: the seed's protocol),
``STUDY_DEVICE`` (default ``auto``), ``STUDY_RESULTS`` (default ``results/`` of
the checkout), ``STUDY_THREADS`` (torch threads; default 1 in ``quick``, 0 =
torch's own in ``full``) and ``STUDY_FRESH`` (measure again now: default true
in ``quick`` only, so that a ``full`` measurement, hours long, never starts
without being asked for).

This module and the measuring CLI are the two places where ``measure`` and
``analysis`` meet: a fresh measurement goes through ``measure.plan`` and
``measure.sweep``. Warnings raised by the package, torch or transformers while
a notebook calls this module are shown as one line each,
``AnalysisWarning: message``, with this machine's paths shortened
(``short_warnings``, a context: nothing global is changed).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from measure.plan import DTYPES, EXECUTIONS, Plan

from . import export, metadata, plots
from .comparison import compare
from .findings import jsonable
from .problems import AnalysisWarning
from .stats import summarize
from .tables import Study, load_study

ROOT = Path(__file__).resolve().parents[1]
PROFILES = {"quick": "quick", "full": "seed"}  # notebook profile -> measuring preset
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
INLINE_DPI = 80  # figures in the notebook; the saved PNG has plots.DPI
RUN_OVERHEAD_S = 0.5  # per run, besides its inferences: sensors, files, FLOPs count
TIMED_INFERENCES = 3  # inferences timed per size to estimate a duration without committed data
LABELS = ("committed", "fresh")


# --------------------------------------------------------------------------- parameters


def profile() -> str:
    """``STUDY_PROFILE``: ``quick`` (default) or ``full``; ``ValueError`` for anything else."""
    value = os.environ.get("STUDY_PROFILE") or "quick"
    if value not in PROFILES:
        raise ValueError(f"STUDY_PROFILE={value!r}: use {' or '.join(PROFILES)}")
    return value


def device() -> str:
    """``STUDY_DEVICE``: ``auto`` (default: the GPU when there is one), ``cpu``, ``cuda`` or ``cuda:<i>``."""
    return os.environ.get("STUDY_DEVICE") or "auto"


def results(name: str) -> Path:
    """``STUDY_RESULTS/<name>``: where a notebook writes its fresh run tree, tables and figures (default:
    ``results/<name>`` of the checkout)."""
    return Path(os.environ.get("STUDY_RESULTS") or ROOT / "results") / name


def threads(profile: str) -> int:
    """``STUDY_THREADS``: torch threads, 0 for torch's own number; default 1 in ``quick`` (on a shared
    2-core machine two threads wait for each other in every parallel region), 0 in ``full``."""
    value = os.environ.get("STUDY_THREADS")
    if value in (None, ""):
        return 1 if profile == "quick" else 0
    if not value.isdigit():
        raise ValueError(f"STUDY_THREADS={value!r}: a number of threads, or 0 for torch's own")
    return int(value)


def fresh(profile: str) -> bool:
    """``STUDY_FRESH`` (``1``/``0``, ``true``/``false``, ...): measure again now. Default: true in ``quick``
    (about a minute), false in ``full``, whose measurement lasts hours and must be asked for."""
    value = os.environ.get("STUDY_FRESH")
    if value is None:
        return profile == "quick"
    if value.strip().lower() in TRUE:
        return True
    if value.strip().lower() in FALSE:
        return False
    raise ValueError(f"STUDY_FRESH={value!r}: use 1 or 0")


# --------------------------------------------------------------------------- paths and warnings


def display_path(path: str | Path, start: str | Path = ".") -> str:
    """``path`` to print: relative to ``start`` (the notebook's folder) when it lies in the checkout or
    under ``start``, else its last three parts after ``…/``; never this machine's absolute path."""
    path, start = Path(path).resolve(), Path(start).resolve()
    if path.is_relative_to(ROOT) or path.is_relative_to(start):
        return Path(os.path.relpath(path, start)).as_posix()
    return "…/" + "/".join(path.parts[-3:])


ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s/:;,()'\"]+/)*[^\s/:;,()'\"]+")


def short_message(message: str, start: str | Path = ".") -> str:
    """``message`` with every absolute path in it as ``display_path`` prints it."""
    return ABSOLUTE_PATH.sub(lambda m: display_path(m.group(0), start), message)


@contextlib.contextmanager
def short_warnings(stream=None, seen: set[str] | None = None) -> Iterator[None]:
    """Inside: every warning is shown as one line, ``Category: message`` (no source line, paths
    shortened by ``short_message``), on ``stream`` (default: stderr, read when shown);
    ``AnalysisWarning`` always, even if the same was shown before, unless its line is in ``seen``
    (the lines shown are added to it); tqdm's note that ipywidgets is missing is not shown (progress
    bars are off in notebooks). Nothing is silenced otherwise, and ``warnings`` is restored on exit."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = f"{category.__name__}: {short_message(str(message))}"
        if seen is not None:
            if text in seen:
                return
            seen.add(text)
        (stream or file or sys.stderr).write(text + "\n")

    with warnings.catch_warnings():
        warnings.simplefilter("always", AnalysisWarning)
        warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")
        warnings.showwarning = show
        yield


# --------------------------------------------------------------------------- figures and prose


def figure_png(fig, dpi: int = INLINE_DPI) -> bytes:
    """The figure as PNG bytes at ``dpi`` (moderate, so that committed notebooks stay small)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def duration_text(seconds: float) -> str:
    """``40 s``, ``3 min``, ``2 h 10 min``, ``3 days 4 h``: a duration to read."""
    if not math.isfinite(seconds):
        return "an unknown time"
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} h" if hours else f"{days} days"


def ratio_text(row: Mapping) -> str:
    """One row of ``compare`` to quote: ``0.61× [0.58, 0.64]`` (3 significant digits), ``(n < 5)`` after an
    interval from too few runs, and the verdict: ``lower``, ``higher`` or ``no difference shown``."""
    if not np.isfinite(row["ratio"]):
        return str(row["verdict"])
    text = f"{row['ratio']:.3g}×"
    if np.isfinite(row["ci_low"]):
        text += f" [{row['ci_low']:.3g}, {row['ci_high']:.3g}]" + ("" if row["ci_reliable"] else " (n < 5)")
    return f"{text}, {row['verdict']}"


def protocol_table(columns: Mapping[str, Plan | Study]) -> str:
    """A Markdown table of protocols side by side, one column per plan (what a profile would measure) or
    study (what was measured): input sizes, configurations, timed inferences and untimed warm-up per run,
    runs per point, sampling period; for the generate task, prompt tokens, new tokens per request, and
    requests instead of inferences."""
    described = {name: _plan_protocol(p) if isinstance(p, Plan) else _study_protocol(p)
                 for name, p in columns.items()}
    items = list(next(iter(described.values())))
    lines = ["| | " + " | ".join(described) + " |", "| --- " * (len(described) + 1) + "|"]
    lines += [f"| {item} | " + " | ".join(d[item] for d in described.values()) + " |" for item in items]
    return "\n".join(lines)


def _number(value) -> str:
    """``224``, ``0.1``: a plain number (anything else as it is)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _listed(values) -> str:
    return ", ".join(_number(v) for v in values)


def _plan_protocol(plan: Plan) -> dict[str, str]:
    if plan.iterations is None and not plan.iterations_at:
        timed = f"as many as fill {_number(plan.min_window_s)} s"
    else:
        others = [s for s in plan.sizes if plan.iterations_for(s) != plan.iterations]
        timed = ", ".join(f"{plan.iterations_for(s)} at {s}" for s in others)
        if plan.iterations is not None:
            timed = f"{plan.iterations} ({timed})" if others else str(plan.iterations)
    protocol = {"input sizes": _listed(plan.sizes),
                "configurations": _configurations(plan.batch_sizes, plan.dtypes, plan.executions),
                "timed inferences per run": timed, "untimed warm-up per run": str(plan.warmup),
                "runs per point": str(plan.runs), "sampling period (s)": _number(plan.period_s)}
    return _generation_protocol(protocol, plan.new_tokens) if plan.task == "generate" else protocol


GENERATION_ITEMS = {"input sizes": "prompt tokens", "timed inferences per run": "timed requests per run",
                    "untimed warm-up per run": "untimed warm-up requests per run"}


def _generation_protocol(protocol: dict[str, str], new_tokens) -> dict[str, str]:
    """A protocol of the generate task in its own words: prompt tokens, new tokens per request, requests."""
    out = {}
    for item, value in protocol.items():
        out[GENERATION_ITEMS.get(item, item)] = value
        if item == "input sizes":
            out["new tokens per request"] = _listed(new_tokens)
    return out


def _study_protocol(study: Study) -> dict[str, str]:
    runs = study.runs

    def counts(values: pd.Series) -> str:
        found = sorted(metadata.distinct(values))
        return _number(found[0]) if len(found) == 1 else f"{_number(found[0])}–{_number(found[-1])} by configuration"

    by_size = runs.groupby("input_size")["iterations"].agg(counts)
    timed = by_size.iloc[0] if by_size.nunique() == 1 else ", ".join(f"{n} at {_number(s)}"
                                                                        for s, n in by_size.items())
    points = runs.groupby([d for d in study.dimensions if d != "label"], observed=True)["run"].nunique()
    protocol = {"input sizes": _listed(sorted(metadata.distinct(runs["input_size"]))),
                "configurations": _configurations(sorted(metadata.distinct(runs["batch_size"])),
                                                  [d for d in DTYPES if d in set(runs["dtype"])],
                                                  [e for e in EXECUTIONS if e in set(runs["execution"])]),
                "timed inferences per run": timed,
                "untimed warm-up per run": _listed(metadata.distinct(runs["warmup"])),
                "runs per point": _listed(sorted(metadata.distinct(points))),
                "sampling period (s)": _listed(metadata.distinct(runs["period_s"]))}
    if (runs["task"] == "generate").all():
        return _generation_protocol(protocol, sorted(metadata.distinct(runs["new_tokens"])))
    return protocol


def _configurations(batch_sizes, dtypes, executions) -> str:
    return f"batch {_listed(batch_sizes)} × {', '.join(dtypes)} × {', '.join(executions)}"


# --------------------------------------------------------------------------- duration of a plan


def latency_model(plan: Plan, reference: Study | None) -> tuple[dict[tuple, float], str]:
    """Estimated latency per inference (s) of each (configuration, size) of ``plan``, and where it comes
    from: the median latencies of ``reference`` (a study of the same model on the same kind of device),
    scaled from the nearest measured size (pixels: by area; tokens: linearly) and batch size, else a few
    timed inferences of the model at batch 1 (``TIMED_INFERENCES`` per size)."""
    kind = _device_kind(plan.device)
    base = _reference_latencies(plan, reference, kind)
    source = "the committed data"
    if base is None:
        base, source = _timed_latencies(plan), f"{TIMED_INFERENCES} timed inferences per size"
    unit_exponent = 1.0 if _size_unit(plan.model) == "tokens" else 2.0
    out = {}
    for config, size in plan.points():
        rows = base[(base["dtype"] == config.dtype) & (base["execution"] == config.execution)]
        rows = rows if not rows.empty else base
        near = rows.iloc[((np.log(rows["input_size"]) - np.log(size)).abs()
                          + (np.log(rows["batch_size"]) - np.log(config.batch_size)).abs()).argmin()]
        out[config, size] = float(near["latency_s"] * (size / near["input_size"]) ** unit_exponent
                                  * config.batch_size / near["batch_size"])
    return out, source


def _device_name(name: str) -> str:
    """``cpu``, ``cuda:0``: the device ``name`` (``auto`` included) resolves to here."""
    from measure.sweep import resolve_device

    return str(resolve_device(name))


def _device_kind(name: str) -> str:
    from measure.sweep import resolve_device

    return resolve_device(name).type


def _size_unit(model: str) -> str:
    from measure.models import size_unit_of

    return size_unit_of(model)


def _reference_latencies(plan: Plan, reference: Study | None, kind: str) -> pd.DataFrame | None:
    """``input_size, batch_size, dtype, execution, latency_s`` (medians over runs) of the reference's runs of
    the plan's model on a device of ``kind``, or None when it has none."""
    if reference is None:
        return None
    runs = reference.runs
    runs = runs[(runs["model"] == plan.model) & runs["device"].astype(str).str.startswith(kind)]
    latency = reference.select("latency_median_s", "clock").set_index("run_id")["value"]
    runs = runs.assign(latency_s=latency.reindex(runs["run_id"]).to_numpy()).dropna(subset=["latency_s"])
    if runs.empty:
        return None
    keys = ["input_size", "batch_size", "dtype", "execution"]
    return runs.groupby(keys, observed=True)["latency_s"].median().reset_index()


def _timed_latencies(plan: Plan) -> pd.DataFrame:
    """Median latency of ``TIMED_INFERENCES`` forward passes at each size, batch 1, float32, eager."""
    from measure.sweep import load_checked, resolve_device, synchronizer, timed_loop

    loaded = load_checked(plan)
    target = resolve_device(plan.device)
    if hasattr(loaded.module, "to"):
        loaded.module.to(target)
    sync, rows = synchronizer(target), []
    with _inference():
        for size in plan.sizes:
            inputs = loaded.inputs(size, 1, target)
            timed_loop(loaded, inputs, 1, sync)
            rows.append((size, 1, "fp32", "eager", float(np.median(timed_loop(loaded, inputs, TIMED_INFERENCES,
                                                                               sync)))))
    return pd.DataFrame(rows, columns=["input_size", "batch_size", "dtype", "execution", "latency_s"])


@contextlib.contextmanager
def _inference() -> Iterator[None]:
    import torch

    with torch.inference_mode():
        yield


def expected_seconds(plan: Plan, latencies: Mapping[tuple, float]) -> float:
    """How long ``plan`` takes to measure with these latencies (``latency_model``): the idle recording,
    then per run its warm-up and timed inferences (as many as fill ``min_window_s`` where the plan says
    none), plus ``RUN_OVERHEAD_S``. Compilation and model loading are not counted; neither is a machine
    slower or busier than the reference's."""
    total = plan.idle_s
    for (config, size), latency in latencies.items():
        timed = plan.iterations_for(size) or math.ceil(plan.min_window_s / max(latency, 1e-9))
        total += plan.runs * ((plan.warmup + timed) * latency + RUN_OVERHEAD_S)
    return total


# --------------------------------------------------------------------------- a study notebook


class StudyNotebook:
    """One study notebook's state: its name, parameters, folders, the numbers and prose it writes.

    ``data``: the committed results (default ``data/<name>`` of the checkout); ``out``: where the fresh
    run trees, tables, figures (``out/figures``) and ``key_numbers.json`` go.
    """

    def __init__(self, name: str, profile: str, device: str, out: str | Path, threads: int, fresh: bool,
                 data: str | Path | None = None):
        if profile not in PROFILES:
            raise ValueError(f"profile {profile!r}: use {' or '.join(PROFILES)}")
        self.name, self.profile, self.device, self.threads, self.fresh = name, profile, device, threads, fresh
        self.out = Path(out)
        self.data = Path(data) if data is not None else ROOT / "data" / name
        self.figures = self.out / "figures"
        self.measured: set[str] = set()  # the folders under ``out`` measured by this notebook
        self.numbers: dict[str, object] = {}
        self.texts: dict[str, str] = {}
        self.warned: set[str] = set()  # warnings shown once by this notebook's calls

    def quiet(self) -> contextlib.AbstractContextManager:
        """``short_warnings`` that shows each warning once in this notebook."""
        return short_warnings(seen=self.warned)

    # ---------------------------------------------------------------- setting up and measuring

    def start(self) -> str:
        """Apply the threads (torch's, and ``OMP_NUM_THREADS`` for the processes started from here), make
        the folders, and say what this run of the notebook will do (one line)."""
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
            os.environ["OMP_NUM_THREADS"] = str(self.threads)
        self.figures.mkdir(parents=True, exist_ok=True)
        pd.set_option("display.width", 200)
        return (f"profile {self.profile}, device {self.device}, {torch.get_num_threads()} torch thread(s), "
                f"fresh measurement: {'yes' if self.fresh else 'no'}; writing to {display_path(self.out)}")

    def plan(self, model: str | None = None, *, iterations: int | str | None = None, **overrides) -> Plan:
        """The plan of this profile (``quick``: the ``quick`` preset; ``full``: the seed's) for ``model``
        (default: the notebook's name) on the notebook's device, with ``overrides`` of its fields;
        ``iterations="auto"``: as many as fill ``min_window_s`` at every size."""
        model = model or self.name
        auto = iterations == "auto"
        with self.quiet():  # the model's unit of size comes from its library (transformers for hf:)
            plan = Plan.from_preset(model, PROFILES[self.profile], size_unit=_size_unit(model), device=self.device,
                                    iterations=None if auto else iterations, **overrides)
        if auto:
            plan.iterations, plan.iterations_at = None, {}
        return plan

    def expected(self, plan: Plan, reference: Study | None = None) -> str:
        """``about 3 min (from the committed data)``: how long ``plan`` should take, and from what."""
        latencies, source = latency_model(plan, reference)
        return f"about {duration_text(expected_seconds(plan, latencies))} (latencies from {source})"

    def measure(self, plan: Plan, folder: str = "tree", *, reference: Study | None = None,
                processes: int = 0) -> Path | None:
        """Measure ``plan`` into ``out/<folder>`` (replacing this notebook's previous one) when ``fresh``;
        return the tree, or None when not fresh.

        First it prints the expected duration (``expected``; ``reference``: a study of the model on this
        kind of device, usually the committed one), and a ``full`` profile on a CPU warns with it, whether
        or not it measures. ``processes``: 0 measures here; n > 0 measures in n new Python processes, one
        shard each, one after the other (runs that start cold).
        """
        expected = self.expected(plan, reference)
        with self.quiet():
            if self.profile == "full" and _device_kind(plan.device) == "cpu":
                warnings.warn(f"the full profile on a CPU: measuring {plan.model} would take {expected}", UserWarning)
        if not self.fresh:
            print(f"no fresh measurement (FRESH is off): {plan.model} would take {expected}; "
                  "set STUDY_FRESH=1 or FRESH = True to measure")
            return None
        tree = self.out / folder
        grid = " x ".join(str(len(v)) for v in (plan.sizes, plan.configs()))
        print(f"measuring {plan.model}: {grid} point(s) x {plan.runs} run(s) on {_device_name(plan.device)} "
              f"into {display_path(tree)}; expected {expected}", flush=True)
        began = time.perf_counter()
        _remove_tree(tree)
        with self.quiet():
            if processes:
                for shard in range(processes):
                    _measure_in_process(plan, tree, (shard, processes))
            else:
                from measure.sweep import run_study

                run_study(plan, tree, progress=False)
        self.measured.add(folder)
        summary, runs = self.write_tables(folder)
        print(f"done in {duration_text(time.perf_counter() - began)}; tables {display_path(summary)} and "
              f"{display_path(runs)}")
        return tree

    def write_tables(self, folder: str = "tree") -> tuple[Path, Path]:
        """The fresh tree ``out/<folder>``'s summary (the seed's per-model CSV, ``export.wide_summary``, with the
        generation figures of a generation tree) and per-run table (``Study.wide``), as ``data/<study>/`` holds
        them: ``out/summary.csv`` and
        ``out/runs.csv`` for ``tree``, ``out/<folder>_summary.csv`` and ``..._runs.csv`` for another folder
        (``/`` as ``_``); their paths."""
        study = self.fresh_study(folder)
        prefix = "" if folder == "tree" else folder.replace("/", "_") + "_"
        summary, runs = self.out / f"{prefix}summary.csv", self.out / f"{prefix}runs.csv"
        with self.quiet():
            export.wide_summary(summarize(study), study, quantities=export.summary_quantities(study)).to_csv(
                summary, index=False)
        study.wide().to_csv(runs, index=False)
        return summary, runs

    # ---------------------------------------------------------------- reading

    def load(self, folder: str = "tree") -> tuple[Study, Study]:
        """``(committed, study)``: ``data/<folder>`` labelled ``committed``, and the same with this
        notebook's fresh ``out/<folder>`` (labelled ``fresh``) as one study, so that figures draw both on
        the same axes; ``study`` is ``committed`` when nothing was measured."""
        with self.quiet():
            committed = load_study(self.data / folder, labels=LABELS[:1])
            if folder not in self.measured:
                return committed, committed
            return committed, load_study([self.data / folder, self.out / folder], labels=list(LABELS))

    def describe_data(self, study: Study, key: str = "data") -> None:
        """Say (``say(key, ...)``) what the runs of ``study`` are, from their metadata: how many, the
        hardware, device, threads and weights, where each headline energy comes from (**measured** or
        **estimated**, with the estimate's model), the sensors that could not be read and why."""
        self.say(key, DATA_TEMPLATE, **data_values(study))

    def compare_fresh(self, study: Study, key: str = "fresh") -> pd.DataFrame | None:
        """The fresh runs against the committed ones (``comparison.compare``, baseline ``committed``) in the
        figures of the study's tables (``export.headline_quantities``: the latency and the energy per inference;
        for generation runs TTFT, ITL and the energies per token) and the mean power: the table printed and
        written to ``out/<key>_comparison.csv``, and a paragraph (``say(key, ...)``) that quotes the ratios
        with their CIs, the hardware, and, when both ran on the same hardware, that on a shared machine the
        differences come from background load. None when nothing fresh was measured."""
        if "fresh" not in set(study.runs["label"]):
            print("no fresh measurement to compare with the committed one")
            return None
        figures = export.headline_quantities(study)
        with self.quiet():
            table = compare(study, baseline="committed", by=["label"],
                            quantities=(*figures["clock"], *figures["energy"], "mean_power_w"))
        self.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(self.out / f"{key}_comparison.csv", index=False)
        print(export.comparison_text(table))
        threads = {label: sorted(metadata.distinct(study.runs.loc[study.runs["label"] == label, "threads"]))
                   for label in LABELS}
        self.say(key, FRESH_TEMPLATE, **_fresh_values(table, threads, **figures))
        return table

    def fresh_study(self, folder: str = "tree") -> Study | None:
        """``out/<folder>`` alone, labelled ``fresh``, when this notebook measured it; else None."""
        if folder not in self.measured:
            return None
        with self.quiet():
            return load_study(self.out / folder, labels=list(LABELS[1:]))

    # ---------------------------------------------------------------- showing and writing

    def show(self, fig, name: str) -> list[Path]:
        """Show ``fig`` and save it as ``out/figures/<name>.{png,svg,pdf}`` (``plots.save``); the paths."""
        from IPython.display import Image, display

        paths = plots.save(fig, self.figures / name)
        display(Image(figure_png(fig), format="png"))
        return paths

    def say(self, key: str, template: str, **values) -> None:
        """Show ``template`` (Markdown) filled with ``values`` (``str.format``), and keep both under ``key``
        (``texts[key]``, ``numbers["prose"][key]``) for ``write_numbers``."""
        from IPython.display import Markdown, display

        text = template.format(**values).strip()
        self.texts[key] = text
        self.numbers.setdefault("prose", {})[key] = values
        display(Markdown(text), metadata={"key": key})

    def write_numbers(self) -> Path:
        """Write ``out/key_numbers.json``: the study, profile, ``numbers`` (with the values of each text of
        ``say``) and the rendered ``texts``, strict JSON (NaN as null); the path."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "key_numbers.json"
        document = {"study": self.name, "profile": self.profile, "numbers": self.numbers, "texts": self.texts}
        path.write_text(json.dumps(jsonable(document), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return path


DATA_TEMPLATE = """
**The data.** {runs} runs of {models} measured on {cpu} ({logical_cpus} logical CPUs; GPUs: {gpus}), the model on
`{device}` with {threads} torch thread(s) and {weights} weights. {energy} {missing}
"""


def cpu_estimate(study: Study) -> dict | None:
    """The CPU estimate's model as the runs recorded it (``tdp_w``, ``tdp_source``, ``idle_fraction``): the
    first run's that has one; None when no run has a CPU estimate."""
    for sensors in study.info.loc[study.runs["run_id"], "sensors"]:
        about = (sensors or {}).get("cpu_estimated")
        if about:
            return {k: about.get(k) for k in ("tdp_w", "tdp_source", "idle_fraction")}
    return None


def estimate_load(study: Study, power_w: float) -> float:
    """The machine-wide CPU load (0..1) that the CPU estimate of ``study`` turns into ``power_w`` watts
    (the inverse of TDP × (idle fraction + (1 − idle fraction) × load)); NaN without an estimate."""
    estimate = cpu_estimate(study)
    if not estimate or not estimate.get("tdp_w") or estimate.get("idle_fraction") is None:
        return float("nan")
    idle = estimate["idle_fraction"]
    return (power_w / estimate["tdp_w"] - idle) / (1 - idle)


def data_values(study: Study) -> dict[str, object]:
    """The values of ``DATA_TEMPLATE`` from a study's runs and metadata."""
    hardware = metadata.hardware(study).set_index("item")["value"]
    sources = metadata.energy_sources(study)
    sources = sources[sources["domain"].isin(metadata.headline_domains(study))]
    parts = []
    for row in sources.itertuples(index=False):
        estimate = cpu_estimate(study) if row.domain == "cpu_estimated" else None
        if estimate and estimate["tdp_w"] is not None and estimate["idle_fraction"] is not None:
            text = (f"CPU energy is **{row.source}**: TDP {_number(estimate['tdp_w'])} W "
                    f"({estimate['tdp_source']}) × ({_number(estimate['idle_fraction'])} + "
                    f"{_number(1 - estimate['idle_fraction'])} × machine-wide CPU load), integrated over each "
                    f"window ({row.method}): a model of the whole machine, not a measurement")
        else:
            text = f"The energy of the {row.what} is **{row.source}** (method {row.method})"
        parts.append(text)
    energy = ("; ".join(parts) + ".") if parts else "No energy was recorded."
    if not metadata.has_gpu(study):
        energy += " There is no GPU figure in these runs, and none is claimed."
    missing = metadata.unavailable(study)
    return {"runs": len(study.runs), "models": metadata.joined(study.runs["model"]), "cpu": hardware["CPU"],
            "logical_cpus": hardware["logical CPUs"], "gpus": hardware["GPUs"], "device": hardware["device"],
            "threads": hardware["torch threads"], "weights": hardware["weights"], "energy": energy,
            "missing": ("Not read: " + "; ".join(f"{sensor} ({reason})" for sensor, reason in missing.items())
                        + ".") if missing else ""}


FRESH_TEMPLATE = """
**Fresh against committed.** At the {points} point(s) measured both times ({runs} fresh runs per point
against {baseline_runs} committed), the fresh {clock} against the committed one is
{latency}{energy}. {unreliable}{hardware}{threads}
"""
# quantities in the words of a sentence, where plots.quantity_name's (an axis's) do not read as one
PROSE_NAMES = {"latency_median_s": "latency per inference", "itl_median_s": "median inter-token latency",
               "energy_per_output_token_j": "energy per output token over the whole request"}


def _prose_name(quantity: str) -> str:
    """A quantity in the words of a sentence: ``latency per inference``, ``time to first token``."""
    return PROSE_NAMES.get(quantity) or plots.quantity_name(quantity).lower()


def _span(rows: pd.DataFrame) -> str:
    """The ratios of some ``compare`` rows to quote: one row's with its CI and verdict, or their range and
    how many of them are higher, lower or show no difference."""
    if len(rows) == 1:
        return ratio_text(rows.iloc[0])
    counts = rows["verdict"].value_counts()
    verdicts = ", ".join(f"{verdict} at {n}" for verdict, n in counts.items())
    return f"{rows['ratio'].min():.3g}× to {rows['ratio'].max():.3g}× ({verdicts} of {len(rows)} points)"


def _fresh_values(table: pd.DataFrame, threads: Mapping[str, list] | None = None, *,
                  clock: Sequence[str] = export.HEADLINE_CLOCK,
                  energy: Sequence[str] = export.HEADLINE_ENERGY) -> dict[str, object]:
    """The values of ``FRESH_TEMPLATE`` from a comparison of the fresh runs with the committed ones in the
    ``clock`` and ``energy`` quantities and the mean power, and the torch threads of each label."""
    known = table[np.isfinite(table["ratio"].astype(float))]
    latency = known[known["quantity"] == clock[0]]
    power = known[known["quantity"] == "mean_power_w"]
    latency_text = _span(latency) if not latency.empty else "not comparable"
    for quantity in clock[1:]:
        rows = known[known["quantity"] == quantity]
        latency_text += f"; its {_prose_name(quantity)}: {_span(rows)}" if not rows.empty else ""
    energy = known[known["quantity"].isin(energy)]
    energy_text = ""
    for (quantity, domain), rows in energy.groupby(["quantity", "domain"], observed=True, sort=False):
        source = metadata.joined(rows["source"])
        energy_text += (f"; its {plots.domain_name(str(domain))} {_prose_name(str(quantity))} ({source}): "
                        f"{_span(rows)}")
    if energy.empty:
        energy_text = "; no energy figure was measured both times, so no energy is compared"
    hardware = metadata.distinct(table["hardware"])
    if any(" vs " in str(h) for h in hardware):
        hardware_text = (f"The hardware differs ({'; '.join(map(str, hardware))}): the ratios compare machines as "
                         "much as measurements.")
    else:
        hardware_text = (f"Both ran on the same hardware ({'; '.join(map(str, hardware))}), so these differences do "
                         "not come from the model or the machine: on a shared machine they come from background "
                         "load. Other processes slow down the inferences of whichever run shares the machine with "
                         "them")
        if (energy["source"] == "estimated").any():
            hardware_text += (", and an estimated CPU energy, which follows the whole machine's load, rises with "
                              "that load")
            if not power.empty:
                hardware_text += (f": its mean power was {power['median_baseline'].median():.3g} W in the "
                                  f"committed runs and {power['median'].median():.3g} W in the fresh ones")
        hardware_text += "."
    few = int(min(known["n"].min(), known["n_baseline"].min())) if not known.empty else 0
    unreliable = (f"With {few} runs on one side, a confidence interval is too coarse to trust (marked `(n < 5)`): "
                  "read these ratios as indications. ") if not known["ci_reliable"].all() else ""
    return {"points": len(latency),
            "runs": _listed(sorted(metadata.distinct(latency["n"]))),
            "baseline_runs": _listed(sorted(metadata.distinct(latency["n_baseline"]))),
            "clock": _prose_name(clock[0]), "latency": latency_text, "energy": energy_text,
            "unreliable": unreliable, "hardware": hardware_text,
            "threads": "" if len({tuple(v) for v in (threads or {}).values()}) <= 1 else
            " The two sides also ran with different torch threads (" + ", ".join(
                f"{label}: {_listed(v)}" for label, v in threads.items()) + "), which changes the latency by itself."}


def _remove_tree(tree: Path) -> None:
    """Remove a previous fresh run tree (a folder holding ``study.json``, or absent); refuse anything else."""
    import shutil

    if tree.exists():
        if not (tree / "study.json").is_file():
            raise ValueError(f"{display_path(tree)} is not a run tree: not removed")
        shutil.rmtree(tree)


def _measure_in_process(plan: Plan, tree: Path, shard: tuple[int, int]) -> None:
    """Run ``run_study(plan, tree, shard=shard)`` in a new Python process importing this checkout; its
    warnings are shown here, one line each."""
    code = ("import json, sys, warnings; from measure.plan import Plan; from measure.sweep import run_study; "
            "warnings.showwarning = lambda m, c, *a, **k: print(f'{c.__name__}: {m}', file=sys.stderr); "
            "run_study(Plan.from_record(json.loads(sys.argv[1])), sys.argv[2], shard=(int(sys.argv[3]), "
            "int(sys.argv[4])), progress=False)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(plan.record()), str(tree), *map(str, shard)],
                          capture_output=True, text=True, env=env)
    for line in done.stderr.splitlines():
        if re.match(r"\w+Warning: ", line):
            print(short_message(line), file=sys.stderr)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"measuring shard {shard[0]}/{shard[1]} failed: {short_message(last)}")

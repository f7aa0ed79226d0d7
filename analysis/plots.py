"""Figures of a ``Study`` (docs/tables.md), made to be read on their own, in a paper or on a slide.

    study = load_study(["data/resnet50/tree", "results/resnet50/tree"], labels=["committed", "fresh"])
    fig = plots.energy_vs(study)                                  # headline domains, one line per label
    fig = plots.energy_vs(study, domains=["gpu", "cpu_package"])  # GPU and CPU energy on one axis
    plots.save(fig, "figures/resnet50_energy")                    # .png (200 dpi), .svg and .pdf

Every function takes a ``Study`` (and the comparison table it draws) and returns a new
``matplotlib.figure.Figure`` built with the object API: no pyplot state, nothing shown, nothing to close.

Rules, applied by the helpers of this module and nowhere else:

- **Sources and hardware.** Every energy or power axis says ``measured`` or ``estimated`` (the
  ``source`` of the values drawn) and names the hardware of its domains (``hardware_gpu`` for the GPUs,
  ``hardware_cpu`` for the CPU, DRAM and the estimate; "hardware not recorded" where the runs do not
  say, as in AIPowerMeter's files). Each legend entry of an energy figure carries its own source, so a
  figure mixing measured and estimated values says which is which; estimated series are dashed. The
  title names the model(s), the device and the hardware, and "(random weights)" when so.
- **Configurations.** A line (or strip, or scatter marker) is one configuration: by default the
  dimensions that vary in the study, other than the one on the x axis, named together in one legend
  entry ("committed, bf16, batch 8"); ``hue`` chooses the dimensions instead, and a dimension left out
  of ``hue`` must be constant within each line (never pooled silently). With several configurations the
  colour is the configuration and the marker the domain; with one, the colour is the domain.
- **Scales, one rule per quantity, whatever the subset drawn** (``x_scale``, ``value_scale``):
  input size in pixels (or of unknown unit) is log2 when it spans 16x or more, else linear; tokens are
  always linear (a BERT sweep of 50..500 tokens is linear, with readable ticks); batch size is always
  log2; other dimensions linear. Energy, latency, power and memory go log10 when the values shown (the
  medians and their bands) are all positive and span 100x or more, else linear; a ratio (forest plot)
  is always log, so that 0.5 and 2 lie as far from 1. Ticks of a dimension are plain numbers at the
  measured values when they are few enough not to collide, else a ``MaxNLocator`` (a base-2
  ``LogLocator`` on a log2 axis).
- **Spread.** A line is the median over runs and its band the interquartile range (drawn where a point
  has two runs or more); the caption in the title says over how many runs, and "one run" with no band
  where there is one. Distributions over runs are strip plots (one dot per run) with the median.
  Confidence intervals (forest plot) from fewer than ``MIN_RUNS_FOR_CI`` runs of either side are drawn
  dashed with a hollow marker and the legend says "CI from < 5 runs: unreliable".
- **Footer** (small text under the figure, ``footer_text``): the study's label(s) with the UTC date(s)
  their windows started (from ``meta.json``; omitted where not recorded), the torch threads, and for a
  figure drawing an estimate, its model and TDP (``cpu_estimated = TDP x (0.3 + 0.7 x CPU load), TDP =
  8 W (default: 4 W x 2 logical CPUs, ...)``).
- **Size and formats.** Figures are 6.4 x 4.8 in (1280 x 960 px at 200 dpi: a column of a paper, half
  a slide) unless their content needs more; ``save`` writes PNG at 200 dpi, SVG and PDF side by side.
- **Refusals.** A needed quantity that is missing or all NaN raises ``ValueError`` saying which
  (domain, quantity) and why: no sensor is never drawn as zero.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullLocator

from . import metadata, phases
from .stats import MIN_RUNS_FOR_CI
from .tables import ENERGY_QUANTITIES, Study, wide_name

__all__ = [
    "energy_vs", "latency_vs", "memory_vs", "sm_util_vs_latency", "gpu_power_vs_sm_util", "spearman_heatmap",
    "latency_distribution", "energy_distribution", "warmup_effect", "forest", "save",
    "source_label", "x_scale", "value_scale", "footer_text", "footer", "variable_labels",
]

FIG_SIZE = (6.4, 4.8)  # inches: 1280 x 960 px at DPI, room for a three-line title and the footer
AXIS_HEIGHT_IN = FIG_SIZE[1] - 1.8  # what the title, the x axis and the footer leave to a y label
DPI = 200
FORMATS = ("png", "svg", "pdf")
SOURCES = ("measured", "estimated")
NO_HARDWARE = "hardware not recorded"
LOG2_SPAN = 16  # an axis of image sides goes log2 from this max / min on
LOG_SPAN = 100  # a value axis goes log10 from this max / min on
TITLE_PT, FOOTER_PT = 10.0, 7.0
GLYPH_EM = 0.55  # mean glyph width over the font size, to wrap text and space ticks
FIXED_TICKS_MAX = 12
LEGEND_INSIDE = 5  # more entries go beside the axes

DOMAIN_NAMES = {"gpu": "GPU", "gpu_node": "all GPUs of the node", "cpu_package": "CPU package", "dram": "DRAM",
                "cpu_estimated": "CPU", "process": "", "clock": ""}
# quantity -> (axis name, short name for tick labels and rows)
QUANTITY_NAMES = {
    "energy_j": ("Energy over the window", "energy"),
    "energy_per_inference_j": ("Energy per inference", "energy / inference"),
    "energy_per_sample_j": ("Energy per sample", "energy / sample"),
    "dynamic_energy_per_inference_j": ("Dynamic energy per inference (above idle)", "dynamic energy / inference"),
    "energy_per_gflop_j": ("Energy per GFLOP", "energy / GFLOP"),
    "mean_power_w": ("Mean power", "mean power"),
    "idle_power_w": ("Idle power", "idle power"),
    "latency_median_s": ("Latency per inference, run median", "latency (median)"),
    "latency_mean_s": ("Latency per inference, run mean", "latency (mean)"),
    "latency_p90_s": ("Latency per inference, run 90th percentile", "latency (p90)"),
    "latency_p99_s": ("Latency per inference, run 99th percentile", "latency (p99)"),
    "sm_util_mean_pct": ("SM utilisation, run mean", "SM utilisation (mean)"),
    "mem_used_peak_mib": ("GPU memory, whole device, peak", "memory, whole device (peak)"),
    "proc_mem_peak_mib": ("GPU memory, this process tree, peak", "memory, this process tree (peak)"),
    "rss_peak_mib": ("Host RSS, this process tree, peak", "host RSS (peak)"),
    "cpu_share_mean": ("CPU share, run mean", "CPU share (mean)"),
    # generation runs (analysis.phases)
    "prefill_energy_j": ("Prefill energy per request", "prefill energy"),
    "decode_energy_j": ("Decode energy per request", "decode energy"),
    "prefill_energy_per_token_j": ("Prefill energy per prompt token", "prefill energy / prompt token"),
    "decode_energy_per_token_j": ("Decode energy per generated token", "decode energy / token"),
    "energy_per_request_j": ("Energy per request (one sequence)", "energy / request"),
    "energy_per_output_token_j": ("Energy per output token, whole request", "energy / output token"),
    "prefill_energy_share": ("Prefill share of the request's energy", "prefill share"),
    "prefill_mean_power_w": ("Mean power during the prefill", "prefill power"),
    "decode_mean_power_w": ("Mean power during the decode", "decode power"),
    "ttft_s": ("Time to first token", "TTFT"),
    "itl_median_s": ("Inter-token latency, run median", "ITL (median)"),
    "itl_p90_s": ("Inter-token latency, run 90th percentile", "ITL (p90)"),
    "itl_mean_s": ("Inter-token latency, run mean", "ITL (mean)"),
    "output_tokens_per_s": ("Output tokens per second", "output tokens/s"),
    "prefill_tokens_per_s": ("Prompt tokens per second (prefill)", "prefill tokens/s"),
    "decode_tokens_per_s": ("Generated tokens per second (decode)", "decode tokens/s"),
}
# memory_vs: what it draws, those recorded, with their legend names
MEMORY_ITEMS = {
    ("gpu", "mem_used_peak_mib"): "GPU memory, whole device (all processes)",
    ("gpu", "proc_mem_peak_mib"): "GPU memory, this process tree",
    ("process", "rss_peak_mib"): "host RSS, this process tree",
}
SOURCED = (*ENERGY_QUANTITIES, *phases.ENERGY_QUANTITIES)  # quantities with a source: measured or estimated
SIZE_UNITS = {"vision": "px", "nlp": "tokens", "generate": "tokens"}  # generate: the prompt's length
TASK_OF_MODEL = {"alexnet": "vision", "resnet50": "vision", "bert": "nlp"}  # trees that record no task
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
VERDICT_COLOURS = {"lower": "C0", "higher": "C1"}  # any other verdict is grey
FOREST_COLUMNS = ["baseline", "domain", "quantity", "ratio", "ci_low", "ci_high", "verdict", "source", "n",
                  "n_baseline"]


# --------------------------------------------------------------------------- names and labels


def domain_name(domain: str) -> str:
    """A reported domain in words, short: ``GPU``, ``CPU package``, ``GPU 1 (not the model's)``."""
    if domain in DOMAIN_NAMES:
        return DOMAIN_NAMES[domain]
    return f"GPU {domain[3:]} (not the model's)" if domain.startswith("gpu") else domain


def quantity_name(quantity: str, short: bool = False) -> str:
    """The axis name (or the short name) of a quantity; the quantity itself when unknown."""
    return QUANTITY_NAMES.get(quantity, (quantity, quantity))[short]


def source_label(sources: Iterable) -> str:
    """``measured``, ``estimated`` or ``measured and estimated`` for the given source values.

    Raises ``ValueError`` when no source is known or a value is not a known source: an unlabelled energy
    is not drawn.
    """
    found = metadata.distinct(sources)
    unknown = [s for s in found if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown energy source {unknown!r} (expected one of {SOURCES})")
    if not found:
        raise ValueError("the source (measured or estimated) of these energies is not recorded")
    return " and ".join(s for s in SOURCES if s in found)


def _number(value) -> str:
    """A plain number: ``224``, ``0.5``, ``1e-05`` (anything else as it is)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"


def _size_unit(task, model) -> str | None:
    """``px``, ``tokens`` or None: the unit of a run's input size, from its task (or its model's)."""
    task = task if isinstance(task, str) else TASK_OF_MODEL.get(str(model).lower())
    return SIZE_UNITS.get(task)


def _value_text(dimension: str, value, unit: str | None = None) -> str:
    """One dimension's value as a legend reads it: ``224 px``, ``batch 8``, ``4 threads``, ``bf16``."""
    if dimension == "input_size":
        return f"{_number(value)} {unit}" if unit else f"input {_number(value)}"
    if dimension == "batch_size":
        return f"batch {_number(value)}"
    if dimension == "threads":
        return f"{_number(value)} threads"
    if dimension == "new_tokens":
        return f"{_number(value)} new tokens"
    if dimension in ("label", "model", "task", "dtype", "execution", "device"):
        return str(value)
    return f"{dimension} {value}"


def _units(rows: pd.DataFrame) -> list[str]:
    """The distinct units of the input sizes of ``rows`` (runs or long rows: ``task`` and ``model``)."""
    return metadata.distinct(_size_unit(t, m) for t, m in zip(rows["task"], rows["model"]))


def _one_unit(rows: pd.DataFrame) -> str | None:
    """The unit of the input sizes of ``rows`` when they have one only, else None."""
    units = _units(rows)
    return units[0] if len(units) == 1 else None


def _axis_unit(rows: pd.DataFrame) -> str | None:
    """The one unit of the input sizes of ``rows``; ``ValueError`` when they mix pixels and tokens."""
    units = _units(rows)
    if len(units) > 1:
        raise ValueError(f"these runs give input sizes in {' and '.join(units)}: one axis cannot hold both; "
                         "draw one task per figure")
    return units[0] if units else None


def _dimension_label(dimension: str, unit: str | None) -> str:
    if dimension == "input_size":
        return {"px": "Input size (image side, px)", "tokens": "Input size (tokens)"}.get(unit, "Input size")
    return {"batch_size": "Batch size (inputs per inference)", "threads": "Torch threads"}.get(dimension, dimension)


# --------------------------------------------------------------------------- the study's rows


def _missing(study: Study, pairs: Sequence[tuple[str, str]]) -> str:
    """Why each (domain, quantity) has no value: not recorded, or all NaN with the runs' own note."""
    reasons = []
    for domain, quantity in pairs:
        rows = study.quantities[(study.quantities["domain"] == domain) & (study.quantities["quantity"] == quantity)]
        if rows.empty:
            reasons.append(f"{quantity} of {domain} is missing (no sensor recorded it)")
        else:
            notes = metadata.distinct(rows["note"])
            reasons.append(f"{quantity} of {domain} is all NaN" + (f" ({notes[0]})" if notes else ""))
    return "; ".join(reasons)


def _rows(study: Study, pairs: Sequence[tuple[str, str]], what: str, *, every: bool = True) -> pd.DataFrame:
    """The long rows with a value of each (domain, quantity) of ``pairs``, in that order, labels as plain
    strings.

    Raises ``ValueError`` (``no <what>: ...``) when one of them (``every``) or all of them has no value.
    """
    rows = study.select(list(dict.fromkeys(q for _, q in pairs)), list(dict.fromkeys(d for d, _ in pairs)))
    rows = rows.astype({c: object for c in ("domain", "quantity", "unit", "source", "method")})
    rank = {pair: i for i, pair in enumerate(pairs)}
    order = pd.Series([rank.get(pair, -1) for pair in zip(rows["domain"], rows["quantity"])], index=rows.index)
    rows = rows[order >= 0].assign(_order=order).sort_values("_order", kind="stable").drop(columns="_order")
    absent = [p for p in pairs if not ((rows["domain"] == p[0]) & (rows["quantity"] == p[1])).any()]
    if absent and (every or len(absent) == len(pairs)):
        raise ValueError(f"no {what}: {_missing(study, absent)}")
    return rows.reset_index(drop=True)


def _runs_of(study: Study, run_ids: Iterable) -> pd.DataFrame:
    return study.runs[study.runs["run_id"].isin(set(run_ids))]


def _hardware(study: Study, domain: str, run_ids: Iterable) -> list[str]:
    """The hardware behind a domain in these runs: its GPU(s), else the CPU; ``[NO_HARDWARE]`` if unknown."""
    runs = _runs_of(study, run_ids)
    if domain == "gpu":
        found = metadata.distinct(runs["hardware_gpu"])
    elif domain.startswith("gpu"):  # another GPU of the node, or all of them
        gpus = [g for h in study.info.loc[runs["run_id"], "host"] for g in (h or {}).get("gpus") or []]
        found = metadata.distinct(g.get("name") for g in gpus if domain == "gpu_node" or g.get("domain") == domain)
    else:
        found = metadata.distinct(runs["hardware_cpu"])
    return [str(f) for f in found] or [NO_HARDWARE]


def _context(study: Study, run_ids: Iterable) -> str:
    """``resnet50 on cuda:0 — GPU: ...; CPU: ... (random weights)``: models, device and hardware of the runs."""
    runs = _runs_of(study, run_ids)
    models = metadata.joined(runs["model"]).replace(" / ", ", ")
    gpus, cpus = metadata.distinct(runs["hardware_gpu"]), metadata.distinct(runs["hardware_cpu"])
    hardware = "; ".join([*(["GPU: " + " / ".join(map(str, gpus))] if gpus else []),
                          *(["CPU: " + " / ".join(map(str, cpus))] if cpus else [])])
    devices = metadata.distinct(runs["device"])
    if devices:
        text = f"{models} on {', '.join(map(str, devices))}" + (f" — {hardware}" if hardware else f" ({NO_HARDWARE})")
    else:
        text = f"{models} on {hardware}" if hardware else f"{models} ({NO_HARDWARE})"
    weights = metadata.distinct(runs["weights"])
    if "random" in weights:
        text += " (random weights)" if weights == ["random"] else " (some runs with random weights)"
    return text


def _dates(study: Study, runs: pd.DataFrame) -> dict[str, str]:
    """``{label: "2025-01-01"}`` (or ``first to last``) for the labels whose windows' dates are recorded."""
    dates = metadata.window_dates(study).reindex(runs["run_id"])
    out = {}
    for label in metadata.distinct(runs["label"]):
        found = sorted(metadata.distinct(dates[(runs["label"] == label).to_numpy()]))
        if found:
            out[label] = found[0] if len(found) == 1 else f"{found[0]} to {found[-1]}"
    return out


def _estimate_model(study: Study, runs: pd.DataFrame) -> str:
    """``cpu_estimated = TDP x (0.3 + 0.7 x CPU load), TDP = 8 W (default: ...)``, from the runs' sensors."""
    models = []
    for sensors in study.info.loc[runs["run_id"], "sensors"]:
        about = (sensors or {}).get("cpu_estimated") or {}
        tdp, source, idle = about.get("tdp_w"), about.get("tdp_source"), about.get("idle_fraction")
        formula = f"TDP × ({idle:g} + {1 - idle:g} × CPU load)" if isinstance(idle, (int, float)) else "TDP × CPU load"
        tdp_text = f"TDP = {tdp:g} W" if isinstance(tdp, (int, float)) else "TDP not recorded"
        if source:
            tdp_text += f" ({str(source).replace(' x ', ' × ')})"
        models.append(f"{formula}, {tdp_text}")
    return "cpu_estimated = " + "; ".join(metadata.distinct(models) or ["TDP × CPU load, TDP not recorded"])


def footer_text(study: Study, run_ids: Iterable | None = None, estimated: bool = False) -> str:
    """The footer of a figure of these runs (default: all) on one line: ``data: committed (measured
    2025-01-01 UTC), fresh (...) · torch threads: 1`` and, when ``estimated``, the model and TDP of the CPU
    estimate. A figure wraps it between its parts."""
    return " · ".join(_footer_parts(study, run_ids, estimated))


def _footer_parts(study: Study, run_ids: Iterable | None, estimated: bool) -> list[str]:
    runs = study.runs if run_ids is None else _runs_of(study, run_ids)
    dates = _dates(study, runs)
    labels = [f"{label} (measured {dates[label]} UTC)" if label in dates else str(label)
              for label in metadata.distinct(runs["label"])]
    parts = ["data: " + ", ".join(labels)]
    threads = metadata.distinct(runs["threads"])
    if threads:
        parts.append("torch threads: " + " / ".join(_number(t) for t in threads))
    if estimated:
        parts.append(_estimate_model(study, runs))
    return parts


# --------------------------------------------------------------------------- figure, title, footer, save


def _chars(points: float, width_in: float) -> int:
    """How many characters of a ``points`` font fit in ``width_in`` inches."""
    return max(20, int(width_in * 72 / (points * GLYPH_EM)))


def _wrap(text: str, points: float, width_in: float) -> list[str]:
    """``text``'s lines wrapped to ``width_in`` inches at ``points``."""
    return [part for line in text.split("\n") for part in (textwrap.wrap(line, _chars(points, width_in)) or [""])]


def _wrap_parts(parts: list[str], points: float, width_in: float) -> list[str]:
    """Parts joined by `` · `` into lines of ``width_in`` inches, a line broken between parts where it can be."""
    lines: list[str] = []
    for part in parts:
        joined = f"{lines[-1]} · {part}" if lines else part
        if lines and len(joined) <= _chars(points, width_in):
            lines[-1] = joined
        else:
            lines += _wrap(part, points, width_in)
    return lines


def _figure(ncols: int = 1, size: tuple[float, float] = FIG_SIZE) -> tuple[Figure, list]:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0].tolist()


def _finish(fig: Figure, study: Study, run_ids: Iterable, headline: str, caption: str | None,
            estimated: bool = False) -> Figure:
    """The title (headline, models and hardware, caption) and the footer, with room kept for it."""
    run_ids = list(run_ids)
    width = fig.get_figwidth() * 0.96
    lines = [headline, _context(study, run_ids)] + ([caption] if caption else [])
    fig.suptitle("\n".join(_wrap("\n".join(lines), TITLE_PT, width)), fontsize=TITLE_PT)
    footer = _wrap_parts(_footer_parts(study, run_ids, estimated), FOOTER_PT, width)
    fig.text(0.01, 0.008, "\n".join(footer), fontsize=FOOTER_PT, color="0.3", ha="left", va="bottom",
             gid="footer")
    height = (len(footer) * FOOTER_PT * 1.25 + 6) / (fig.get_figheight() * 72)
    fig.get_layout_engine().set(rect=(0, height, 1, 1 - height))
    return fig


def footer(fig: Figure) -> str:
    """The footer text of a figure of this module."""
    return next(t.get_text() for t in fig.texts if t.get_gid() == "footer")


def save(fig: Figure, path: str | Path) -> list[Path]:
    """Write ``fig`` as ``<path>.png`` (200 dpi), ``<path>.svg`` and ``<path>.pdf``; returns the three paths.

    ``path`` has no suffix; its folder is created. The files carry no date, so an unchanged figure
    writes the same bytes again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.rc_context({"svg.hashsalt": "inference-energy"}):
        for fmt in FORMATS:
            target = path.with_name(f"{path.name}.{fmt}")
            no_date = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)
            fig.savefig(target, format=fmt, dpi=DPI, metadata=no_date)
            written.append(target)
    return written


# --------------------------------------------------------------------------- scales and ticks


def _positive_span(values: Iterable) -> float:
    """max / min of the finite values, NaN unless they are all positive."""
    v = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v.max() / v.min()) if v.size and (v > 0).all() else float("nan")


def x_scale(dimension: str, values: Iterable, unit: str | None = None) -> str:
    """``log2`` or ``linear``: the rule of a dimension's axis (module docstring). ``unit`` is the input
    size's (``px``, ``tokens`` or None)."""
    if dimension == "batch_size":
        return "log2"
    if dimension == "input_size" and unit != "tokens" and _positive_span(values) >= LOG2_SPAN:
        return "log2"
    return "linear"


def value_scale(values: Iterable) -> str:
    """``log`` when the finite values shown are all positive and span ``LOG_SPAN`` (100x) or more, else
    ``linear``: the rule of every energy, latency, power and memory axis."""
    return "log" if _positive_span(values) >= LOG_SPAN else "linear"


def _plain(axis) -> None:
    axis.set_major_formatter(FuncFormatter(lambda v, _: _number(v) if np.isfinite(v) else ""))
    axis.set_minor_locator(NullLocator())


def _ticks_fit(positions: np.ndarray, labels: list[str], length_in: float, points: float = 10.0) -> bool:
    """Whether labels at these positions (in the axis' own scale) leave room between each other."""
    if len(positions) > FIXED_TICKS_MAX:
        return False
    if len(positions) < 2:
        return True
    gap_in = np.diff(np.sort(positions)).min() / np.ptp(positions) * length_in
    return gap_in >= (max(map(len, labels)) + 2) * points * GLYPH_EM / 72


def _dimension_axis(ax, fig: Figure, dimension: str, values: pd.Series, unit: str | None) -> None:
    """Label, scale and ticks of a dimension on the x axis (module docstring)."""
    ax.set_xlabel(_dimension_label(dimension, unit))
    measured = np.unique(pd.to_numeric(values).to_numpy(dtype=float))
    scale = x_scale(dimension, measured, unit)
    if scale == "log2":
        ax.set_xscale("log", base=2)
    positions = np.log2(measured) if scale == "log2" else measured
    if _ticks_fit(positions, [_number(v) for v in measured], 0.75 * fig.get_figwidth()):
        ax.xaxis.set_major_locator(FixedLocator(measured))
    elif scale == "log2":
        ax.xaxis.set_major_locator(LogLocator(base=2, numticks=8))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=bool(np.all(measured == np.round(measured)))))
    _plain(ax.xaxis)


def _value_axis(ax, which: str, values: Iterable) -> None:
    """The log-or-linear rule on the value axis ``which`` (``x`` or ``y``) of ``ax``."""
    if value_scale(values) == "log":
        (ax.set_xscale if which == "x" else ax.set_yscale)("log")
        axis = ax.xaxis if which == "x" else ax.yaxis
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _ratio_axis(ax, values: Iterable) -> None:
    """A ratio axis: always log, plain ticks (``MaxNLocator``'s within a 4x span, powers of 2 beyond)."""
    ax.set_xscale("log")
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0] + [1.0])
    low, high = v.min(), v.max()
    if high / low < 4:
        ticks = MaxNLocator(5).tick_values(low, high)
        ax.xaxis.set_major_locator(FixedLocator(ticks[ticks > 0]))
    else:
        ax.xaxis.set_major_locator(LogLocator(base=2, numticks=8))
    _plain(ax.xaxis)


# --------------------------------------------------------------------------- configurations and series


def _hue_columns(study: Study, exclude: Sequence[str], hue: str | Sequence[str] | None) -> list[str]:
    """The dimensions that name a configuration: ``hue``, checked, or every varying one not in ``exclude``
    (those the figure shows otherwise: its x axis, its colours)."""
    if hue is None:
        return [d for d in study.varying() if d not in exclude]
    columns = [hue] if isinstance(hue, str) else list(hue)
    unknown = [c for c in columns if c not in study.dimensions]
    if unknown:
        raise ValueError(f"hue {', '.join(unknown)}: not a dimension of the study ({', '.join(study.dimensions)})")
    on_axis = [c for c in columns if c in exclude]
    if on_axis:
        raise ValueError(f"hue {', '.join(on_axis)}: this figure already shows it (axis or colour)")
    return columns


def _configurations(study: Study, rows: pd.DataFrame, exclude: Sequence[str] = (),
                    hue: str | Sequence[str] | None = None) -> pd.Series:
    """Each row's configuration in words (``committed, bf16``; empty when nothing varies), as an ordered
    categorical. Raises ``ValueError`` when a varying dimension left out of ``hue`` varies within one."""
    columns = _hue_columns(study, exclude, hue)
    if not columns:
        return pd.Series(pd.Categorical([""] * len(rows)), index=rows.index)
    keys = [tuple(map(str, k)) for k in rows[columns].itertuples(index=False, name=None)]
    names = {}
    for _, row in rows.assign(_key=keys).drop_duplicates("_key").sort_values(columns, kind="stable").iterrows():
        unit = _size_unit(row["task"], row["model"])
        names[row["_key"]] = ", ".join(_value_text(c, row[c], unit) for c in columns)
    config = pd.Series(pd.Categorical([names[k] for k in keys], categories=list(dict.fromkeys(names.values()))),
                       index=rows.index)
    for other in [d for d in study.varying() if d not in columns and d not in exclude]:
        if (rows.groupby(config, observed=True)[other].nunique(dropna=False) > 1).any():
            raise ValueError(f"{other} varies within a line of hue {', '.join(columns)}: add {other} to hue "
                             "(a line never pools configurations)")
    return config


def _median_iqr(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Median, quartiles and number of runs of ``value`` per ``keys``."""
    grouped = rows.groupby(keys, sort=True, observed=True)["value"]
    return pd.DataFrame({"median": grouped.median(), "q1": grouped.quantile(0.25), "q3": grouped.quantile(0.75),
                         "n": grouped.count()}).reset_index()


def _spread_caption(runs: pd.Series, where: str = "point") -> str:
    """What a line and its band are, from the number of runs behind each point."""
    low, high = int(runs.min()), int(runs.max())
    if high == 1:
        return "one run" + (f" per {where}" if where != "iteration" else "") + ": no band"
    count = str(low) if low == high else f"{low}–{high}"
    return f"line: median over {count} runs at each {where}; band: interquartile range"


def _series(rows: pd.DataFrame, item: pd.Series) -> pd.DataFrame:
    """``rows`` with ``series`` (the legend entry: configuration · item), ``colour`` and ``marker``: the
    colour is the configuration when there are several, else the item; the marker is the item."""
    items = list(dict.fromkeys(item))
    configs = list(rows["config"].cat.categories)
    by_config = len(configs) > 1
    colour_of = {c: i for i, c in enumerate(configs if by_config else items)}
    names = [" · ".join(p for p in (str(c), i) if p) for c, i in zip(rows["config"], item)]
    return rows.assign(
        series=pd.Categorical(names, categories=list(dict.fromkeys(
            " · ".join(p for p in (c, i) if p) for c in configs for i in items))),
        colour=[f"C{colour_of[c if by_config else i] % 10}" for c, i in zip(rows["config"], item)],
        marker=[MARKERS[items.index(i) % len(MARKERS)] for i in item])


def _draw_lines(ax, rows: pd.DataFrame, x: str) -> pd.DataFrame:
    """One line per series (median over runs) with its IQR band; returns the drawn summary."""
    summary = _median_iqr(rows, ["series", x])
    style = rows.drop_duplicates("series").set_index("series")
    for name, part in summary.groupby("series", observed=True, sort=True):
        s = style.loc[name]
        dashed = s.get("source") == "estimated"
        ax.plot(part[x], part["median"], color=s["colour"], marker=s["marker"], markersize=4,
                linestyle="--" if dashed else "-", label=name or "_median")
        band = part[part["n"] >= 2]
        if not band.empty:
            ax.fill_between(band[x], band["q1"], band["q3"], color=s["colour"], alpha=0.18, linewidth=0)
    return summary


def _legend(ax, always: bool = False) -> None:
    """The legend of the labelled artists (with one entry only when ``always``): inside where it finds room
    for up to ``LEGEND_INSIDE`` entries, else beside the axes, so that it never covers data."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles or not (always or len(handles) > 1):
        return
    if len(handles) <= LEGEND_INSIDE:
        ax.legend(handles, labels, loc="best", fontsize="small", framealpha=0.85)
    else:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="x-small", frameon=False)


# --------------------------------------------------------------------------- sweeps


def _numeric_x(rows: pd.DataFrame, x: str) -> pd.DataFrame:
    if x not in rows.columns:
        raise ValueError(f"x = {x}: not a dimension of the study")
    values = pd.to_numeric(rows[x], errors="coerce")
    if values[rows[x].notna()].isna().any():
        raise ValueError(f"x = {x} is not numeric ({metadata.joined(rows[x])}); use it as hue instead")
    if values.notna().sum() == 0:
        raise ValueError(f"no {x} recorded for these runs: nothing to put on the x axis")
    return rows[values.notna()].assign(**{x: values[values.notna()]})


def _sweep(study: Study, rows: pd.DataFrame, item: str | pd.Series, x: str, hue, headline: str, ylabel: str,
           legend_always: bool) -> Figure:
    """Lines of ``value`` against the dimension ``x``, one per configuration and item (module rules)."""
    rows = _numeric_x(rows, x)
    unit = _axis_unit(rows) if x == "input_size" else None
    rows = rows.assign(config=_configurations(study, rows, [x], hue))
    rows = _series(rows, rows[item] if isinstance(item, str) else item.reindex(rows.index))
    fig, (ax,) = _figure()
    summary = _draw_lines(ax, rows, x)
    _dimension_axis(ax, fig, x, rows[x], unit)
    ax.set_ylabel(ylabel)
    _value_axis(ax, "y", summary[["median", "q1", "q3"]].to_numpy().ravel())
    _legend(ax, legend_always)
    headline = f"{headline} vs {_dimension_label(x, unit).split(' (')[0].lower()}"
    return _finish(fig, study, rows["run_id"], headline, _spread_caption(summary["n"]),
                   estimated=(rows["source"] == "estimated").any())


def _source_axis_label(name: str, unit: str, sources: Iterable, hardware: Iterable[str]) -> str:
    """``Energy per inference (J, measured)`` over the hardware (short names, wrapped to the axis); when
    the sources mix, ``Energy per inference (J)`` / ``measured + estimated: see legend`` / the hardware."""
    source = source_label(sources)
    head = f"{name} ({unit})\nmeasured + estimated: see legend" if " and " in source else f"{name} ({unit}, {source})"
    names = " + ".join(metadata.distinct(_short_hardware(h) for h in hardware))
    return "\n".join([head, *_wrap(names, TITLE_PT, AXIS_HEIGHT_IN)])


def _short_hardware(name: str) -> str:
    """A hardware name without trademarks, clock or "Processor": ``Intel Xeon Platinum 8468``."""
    name = re.sub(r"\((R|TM|tm)\)", "", name)
    name = re.sub(r"\s*(CPU\s*)?@.*$", "", name)
    return " ".join(re.sub(r"\bProcessor\b", "", name).split())


def _energy_label(quantity: str, rows: pd.DataFrame, study: Study) -> str:
    """The energy axis of ``rows``: its source(s) and the hardware of its domains."""
    hardware = [h for d in metadata.distinct(rows["domain"])
                for h in _hardware(study, d, rows.loc[rows["domain"] == d, "run_id"])]
    return _source_axis_label(quantity_name(quantity), metadata.joined(rows["unit"]), rows["source"], hardware)


def _energy_items(rows: pd.DataFrame) -> pd.Series:
    """Each energy row's legend item: ``GPU (measured)``."""
    source_label(rows["source"])  # refuses unknown or unrecorded sources
    return pd.Series([f"{domain_name(d)} ({s})" for d, s in zip(rows["domain"], rows["source"])], index=rows.index)


def energy_vs(study: Study, x: str = "input_size", domains: Sequence[str] | None = None,
              hue: str | Sequence[str] | None = None, quantity: str = "energy_per_inference_j") -> Figure:
    """Energy per inference (or any energy quantity: ``energy_per_sample_j``, ``dynamic_energy_per_inference_j``,
    ``mean_power_w``, a generation run's ``decode_energy_per_token_j``, ...) against ``x`` (``input_size``,
    ``batch_size``: a numeric dimension): the median
    over runs with its IQR band, one line per configuration (``hue``: dimensions, default every varying one
    but ``x``) and domain, each legend entry with its source.

    ``domains``: default ``metadata.headline_domains(study)`` (the model's GPU, the CPU's measured or
    estimated energy and DRAM; never ``gpu_node`` or another GPU unless asked). Needs ``quantity`` with a
    ``source`` in every domain drawn. Raises ``ValueError`` when a domain has no value (naming it and
    why), for an unknown quantity or source, a non-numeric ``x``, or input sizes mixing px and tokens.
    """
    if quantity not in SOURCED:
        raise ValueError(f"{quantity} is not an energy quantity ({', '.join(SOURCED)})")
    domains = list(domains) if domains is not None else metadata.headline_domains(study)
    if not domains:
        raise ValueError("no energy in this study: no GPU, RAPL or CPU-estimate energy was recorded")
    rows = _rows(study, [(d, quantity) for d in domains], quantity_name(quantity).lower())
    return _sweep(study, rows, _energy_items(rows), x, hue, quantity_name(quantity),
                  _energy_label(quantity, rows, study), legend_always=True)


def latency_vs(study: Study, x: str = "input_size", hue: str | Sequence[str] | None = None,
               quantity: str = "latency_median_s") -> Figure:
    """Latency per inference (each run's median, or ``latency_p90_s``, ``latency_p99_s``,
    ``latency_mean_s``; a generation run's ``ttft_s`` or ``itl_median_s``, ...) against ``x``: the median over
    runs with its IQR band, one line per configuration.

    Needs the ``clock`` domain's ``quantity``; raises ``ValueError`` when it has no value.
    """
    rows = _rows(study, [("clock", quantity)], "latency")
    ylabel = f"{quantity_name(quantity)} ({metadata.joined(rows['unit'])})"
    return _sweep(study, rows.assign(item=""), "item", x, hue, "Latency", ylabel, legend_always=False)


def memory_vs(study: Study, x: str = "input_size", hue: str | Sequence[str] | None = None) -> Figure:
    """Peak memory against ``x``: GPU device memory, GPU memory of the process tree and host RSS, those
    recorded (``MEMORY_ITEMS``), median over runs with the IQR band.

    Raises ``ValueError`` when none of them is recorded.
    """
    rows = _rows(study, list(MEMORY_ITEMS), "memory measurement", every=False)
    items = pd.Series([MEMORY_ITEMS[p] for p in zip(rows["domain"], rows["quantity"])], index=rows.index)
    return _sweep(study, rows, items, x, hue, "Peak memory", "Peak memory (MiB)", legend_always=True)


# --------------------------------------------------------------------------- one point per run


def _per_run(study: Study, pairs: list[tuple[str, str]], what: str) -> pd.DataFrame:
    """One row per run with the values of ``pairs`` as columns ``<domain>_<quantity>`` and ``source``
    (the last pair's), runs lacking one left out."""
    rows = _rows(study, pairs, what)
    wide = rows.pivot_table(index="run_id", columns=["domain", "quantity"], values="value", aggfunc="first")
    wide.columns = [wide_name(d, q) for d, q in wide.columns]
    wide = wide.dropna()
    if wide.empty:
        raise ValueError(f"no {what}: no run has both {' and '.join(wide_name(d, q) for d, q in pairs)}")
    last = rows[(rows["domain"] == pairs[-1][0]) & (rows["quantity"] == pairs[-1][1])].set_index("run_id")
    runs = study.runs.set_index("run_id").loc[wide.index, study.dimensions]
    return runs.join(wide).join(last["source"]).reset_index()


def _scatter_runs(ax, study: Study, data: pd.DataFrame, x: str, y: str, hue) -> None:
    """One point per run, coloured by input size (viridis, legend of sizes) and shaped by configuration."""
    sizes = sorted(metadata.distinct(data["input_size"]))
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, max(len(sizes), 1)))
    colour_of = dict(zip(sizes, colours))
    config = _configurations(study, data, ["input_size"], hue)
    for i, (name, part) in enumerate(data.groupby(config, observed=True, sort=True)):
        ax.scatter(part[x], part[y], c=[colour_of.get(s, "0.5") for s in part["input_size"]], s=28, alpha=0.85,
                   marker=MARKERS[i % len(MARKERS)], edgecolors="white", linewidths=0.4)
    handles = [Line2D([], [], linestyle="", marker="o", color=colour_of[s], label=_number(s)) for s in sizes]
    handles += [Line2D([], [], linestyle="", marker=MARKERS[i % len(MARKERS)], color="0.4", label=name)
                for i, name in enumerate(config.cat.categories) if name]
    if handles:
        ax.legend(handles=handles, title=_dimension_label("input_size", _one_unit(data)), fontsize="small",
                  title_fontsize="small", loc="best", framealpha=0.85)


def sm_util_vs_latency(study: Study, hue: str | Sequence[str] | None = None) -> Figure:
    """The GPU's SM utilisation (mean over each run's window) against each run's median latency, one point
    per run, coloured by input size and shaped by configuration.

    Needs ``sm_util_mean_pct`` of ``gpu`` and ``latency_median_s``; raises ``ValueError`` without them
    (a CPU-only study has no SM utilisation).
    """
    data = _per_run(study, [("clock", "latency_median_s"), ("gpu", "sm_util_mean_pct")], "GPU measurement")
    fig, (ax,) = _figure()
    _scatter_runs(ax, study, data, "latency_median_s", "gpu_sm_util_mean_pct", hue)
    ax.set_xlabel(f"{quantity_name('latency_median_s')} (s)")
    ax.set_ylabel(f"{quantity_name('sm_util_mean_pct')} (%)")
    ax.set_ylim(0, 105)
    _value_axis(ax, "x", data["latency_median_s"])
    return _finish(fig, study, data["run_id"], "GPU SM utilisation vs latency", "one point per run")


def gpu_power_vs_sm_util(study: Study, domain: str = "gpu", hue: str | Sequence[str] | None = None) -> Figure:
    """A GPU's mean power over each run's window against its SM utilisation, one point per run, coloured
    by input size and shaped by configuration; the power axis says its source and names the GPU.

    Needs ``sm_util_mean_pct`` and ``mean_power_w`` of ``domain``; raises ``ValueError`` without them.
    """
    data = _per_run(study, [(domain, "sm_util_mean_pct"), (domain, "mean_power_w")], "GPU measurement")
    power = wide_name(domain, "mean_power_w")
    fig, (ax,) = _figure()
    _scatter_runs(ax, study, data, wide_name(domain, "sm_util_mean_pct"), power, hue)
    ax.set_xlabel(f"{quantity_name('sm_util_mean_pct')} (%)")
    ax.set_xlim(0, 105)
    ax.set_ylabel(_source_axis_label(f"{domain_name(domain)} mean power", "W", data["source"],
                                     _hardware(study, domain, data["run_id"])))
    _value_axis(ax, "y", data[power])
    return _finish(fig, study, data["run_id"], f"{domain_name(domain)} power vs SM utilisation", "one point per run",
                   estimated=(data["source"] == "estimated").any())


# --------------------------------------------------------------------------- correlations


def variable_labels(study: Study) -> dict[str, str]:
    """Readable names of the wide columns ``spearman`` returns: ``GPU energy / inference (measured)``,
    ``latency (median)``, ``input size (px)``; built from the study's long table, never parsed."""
    labels = {}
    pairs = study.quantities[["domain", "quantity", "source"]].astype(object).drop_duplicates(["domain", "quantity"])
    for domain, quantity, source in pairs.itertuples(index=False):
        name = quantity_name(quantity, short=True)
        if domain != "clock":
            name = f"{domain_name(domain)} {name}".strip()
        if quantity in SOURCED and isinstance(source, str):
            name += f" ({source})"
        labels[wide_name(domain, quantity)] = name
    unit = _one_unit(study.runs)
    labels["input_size"] = f"input size ({unit})" if unit else "input size"
    labels.update({d: _dimension_label(d, unit).split(" (")[0].lower() for d in study.dimensions if d != "input_size"})
    return labels


def spearman_heatmap(rho: pd.DataFrame, p: pd.DataFrame | None, study: Study, *, alpha: float = 0.05) -> Figure:
    """Spearman's rho between per-run quantities (``stats.spearman(study)``) as an annotated heatmap
    (diverging, -1 to 1); a cell with ``p >= alpha`` says ``ns``, a NaN cell ``n/a``.

    Labels are readable names (``variable_labels``), not column names. ``p`` may be None (significance
    then not shown). Raises ``ValueError`` for an empty ``rho``.
    """
    if rho.empty:
        raise ValueError("no correlation to draw (rho is empty)")
    p = p.reindex(index=rho.index, columns=rho.columns) if p is not None else None
    names = variable_labels(study)
    n = len(rho)
    fig, (ax,) = _figure(size=(FIG_SIZE[0], max(FIG_SIZE[1], min(9.0, 2.4 + 0.5 * n))))
    values = rho.to_numpy(dtype=float)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.9")
    mesh = ax.pcolormesh(np.ma.masked_invalid(values), cmap=cmap, vmin=-1, vmax=1, edgecolors="white",
                         linewidth=0.5)
    for i in range(rho.shape[0]):
        for j in range(rho.shape[1]):
            r = values[i, j]
            if np.isnan(r):
                text = "n/a"
            else:
                text = f"{r:.2f}" + ("\nns" if p is not None and not p.iat[i, j] < alpha else "")
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize="small",
                    color="white" if abs(r) > 0.6 else "0.1" if not np.isnan(r) else "0.4")
    ax.set_xticks(np.arange(rho.shape[1]) + 0.5, [names.get(c, c) for c in rho.columns], rotation=35, ha="right",
                  rotation_mode="anchor", fontsize="small")
    ax.set_yticks(np.arange(rho.shape[0]) + 0.5, [names.get(c, c) for c in rho.index], fontsize="small")
    ax.invert_yaxis()
    ax.tick_params(length=0)
    fig.colorbar(mesh, ax=ax, label="Spearman ρ (unitless)", fraction=0.05, pad=0.02)
    note = f"ns: not significant (p ≥ {alpha:g}); n/a: too few runs" if p is not None else \
        "p-values not given: significance not shown"
    estimated = any("(estimated)" in names.get(c, "") for c in rho.columns)
    return _finish(fig, study, study.runs["run_id"], "Spearman rank correlations over runs", note, estimated)


# --------------------------------------------------------------------------- distributions over runs


def _strips(ax, rows: pd.DataFrame, unit: str) -> None:
    """One strip of dots per configuration (one dot per run, fixed jitter) with its median as a bar."""
    rng = np.random.default_rng(0)
    configs = [c for c in rows["config"].cat.categories if (rows["config"] == c).any()]
    for i, config in enumerate(configs):
        values = rows.loc[rows["config"] == config, "value"].to_numpy()
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=22, color=f"C{i % 10}", alpha=0.8,
                   edgecolors="white", linewidths=0.4, zorder=3, label="one run" if i == 0 else "_run")
        median = np.median(values)
        ax.hlines(median, i - 0.28, i + 0.28, color="k", linewidth=1.6, zorder=2,
                  label="median over runs" if i == 0 else "_median")
        ax.annotate(f"{median:#.3g} {unit}", (i + 0.3, median), va="center", fontsize="small")
    ax.set_xticks(range(len(configs)), [f"{c}\n({(rows['config'] == c).sum()} runs)" if c else
                                        f"{(rows['config'] == c).sum()} runs" for c in configs], fontsize="small")
    ax.set_xlim(-0.6, len(configs) - 0.1)
    _value_axis(ax, "y", rows["value"])


def _point(rows: pd.DataFrame) -> str:
    """`` at 224 px`` when the rows hold one input size, else empty."""
    sizes = metadata.distinct(rows["input_size"])
    return f" at {_value_text('input_size', sizes[0], _one_unit(rows))}" if len(sizes) == 1 else ""


STRIP_CAPTION = "dots: one run each; bar: median over runs"


def latency_distribution(study: Study, hue: str | Sequence[str] | None = None,
                         quantity: str = "latency_median_s") -> Figure:
    """Each run's median latency (or ``quantity`` of the clock) as a strip plot, one strip per configuration
    (default: every varying dimension, the input size included), with the median over runs.

    Raises ``ValueError`` when the quantity has no value.
    """
    rows = _rows(study, [("clock", quantity)], "latency")
    rows = rows.assign(config=_configurations(study, rows, (), hue))
    unit = metadata.joined(rows["unit"])
    fig, (ax,) = _figure()
    _strips(ax, rows, unit)
    ax.set_ylabel(f"{quantity_name(quantity)} ({unit})")
    return _finish(fig, study, rows["run_id"], f"Latency over runs{_point(rows)}", STRIP_CAPTION)


def energy_distribution(study: Study, domains: Sequence[str] | None = None, hue: str | Sequence[str] | None = None,
                        quantity: str = "energy_per_inference_j") -> Figure:
    """Each run's energy per inference (or ``quantity``) as a strip plot with the median over runs, one
    panel per domain (its source and hardware on its axis), one strip per configuration.

    ``domains``: default ``metadata.headline_domains(study)``. Raises ``ValueError`` when a domain has no
    value, or for an unknown source.
    """
    domains = list(domains) if domains is not None else metadata.headline_domains(study)
    if not domains:
        raise ValueError("no energy in this study: no GPU, RAPL or CPU-estimate energy was recorded")
    rows = _rows(study, [(d, quantity) for d in domains], quantity_name(quantity).lower())
    rows = rows.assign(config=_configurations(study, rows, (), hue))
    fig, axes = _figure(len(domains), (max(FIG_SIZE[0], 2.6 * len(domains)), FIG_SIZE[1]))
    for ax, domain in zip(axes, domains):
        part = rows[rows["domain"] == domain]
        _strips(ax, part, metadata.joined(part["unit"]))
        ax.set_ylabel(_energy_label(quantity, part, study))
        ax.set_title(f"{domain_name(domain)} ({source_label(part['source'])})", fontsize="small")
    return _finish(fig, study, rows["run_id"], f"{quantity_name(quantity)} over runs{_point(rows)}",
                   STRIP_CAPTION, estimated=(rows["source"] == "estimated").any())


def warmup_effect(study: Study, first: int = 50, hue: str | Sequence[str] | None = None) -> Figure:
    """Latency against the index of the timed iteration over the first ``first`` ones: per configuration
    (default: every varying dimension), the median over runs with the IQR band, or the one run's latencies.

    The untimed warm-up that precedes them (``warmup`` of the runs) is not drawn; the caption says how
    many there were. Reads ``study.latencies``; raises ``ValueError`` when no latency is recorded.
    """
    latencies = study.latencies
    rows = latencies[(latencies["iteration"] < first) & latencies["latency_s"].notna()].rename(
        columns={"latency_s": "value"})
    if rows.empty:
        raise ValueError("no latency: no run recorded a per-inference latency")
    rows = rows.merge(study.runs[[*study.identity, "run_id"]], on=study.identity, how="left")
    rows = rows.assign(config=_configurations(study, rows, (), hue), source="measured")
    rows = _series(rows, pd.Series("", index=rows.index))
    fig, (ax,) = _figure()
    summary = _draw_lines(ax, rows, "iteration")
    ax.set_xlabel("Timed iteration (index)")
    ax.set_ylabel("Latency per inference (s)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _value_axis(ax, "y", summary[["median", "q1", "q3"]].to_numpy().ravel())
    _legend(ax)
    warmups = metadata.distinct(_runs_of(study, rows["run_id"])["warmup"])
    done = f"after {metadata.joined(_number(w) for w in warmups)} untimed warm-up inferences" if warmups else \
        "untimed warm-up not recorded"
    caption = f"first {first} timed iterations, {done}\n{_spread_caption(summary['n'], 'iteration')}"
    return _finish(fig, study, rows["run_id"], "Latency over the first timed iterations", caption)


# --------------------------------------------------------------------------- comparisons


def _unreliable(comparison: pd.DataFrame) -> pd.Series:
    """Rows whose CI the table calls unreliable (``ci_reliable``) or, where it does not say, that come
    from fewer than ``MIN_RUNS_FOR_CI`` runs on either side."""
    few = comparison[["n", "n_baseline"]].min(axis=1) < MIN_RUNS_FOR_CI
    if "ci_reliable" not in comparison.columns:
        return few
    said = comparison["ci_reliable"]
    return (~said.fillna(True).astype(bool)).where(said.notna(), few)


def _forest_rows(comparison: pd.DataFrame, study: Study) -> tuple[pd.DataFrame, str]:
    """The rows to draw with ``config`` (``bf16 vs fp32``) and ``item`` (``GPU energy / inference
    (measured)``); the one comparison's name when every row shares it, else empty."""
    columns = [c for c in study.dimensions if c in comparison.columns]
    rows = comparison[comparison["ratio"].notna()].reset_index(drop=True)
    if rows.empty:
        raise ValueError("no ratio to draw: every ratio of the comparison is NaN")
    unit = _one_unit(study.runs)
    if "configuration" in rows:  # compare's own table: the compared values are named there, the group's vary
        columns = [c for c in columns if rows[c].nunique(dropna=False) > 1]
    config = [", ".join(_value_text(c, v, unit) for c, v in zip(columns, values))
              for values in rows[columns].itertuples(index=False)]
    if "configuration" in rows:
        config = [", ".join(p for p in (c, str(name)) if p) for c, name in zip(config, rows["configuration"])]
    rows["config"] = [f"{c} vs {b}" if c else f"vs {b}" for c, b in zip(config, rows["baseline"])]
    rows["item"] = [" ".join(p for p in (domain_name(str(d)), quantity_name(str(q), short=True)) if p)
                    + (f" ({s})" if isinstance(s, str) and q in SOURCED else "")
                    for d, q, s in zip(rows["domain"], rows["quantity"], rows["source"])]
    single = rows["config"].nunique() == 1
    return rows, rows["config"].iat[0] if single else ""


def forest(comparison: pd.DataFrame, study: Study) -> Figure:
    """A forest plot of compared ratios: one row per (configuration, domain, quantity) against its
    baseline, the ratio as a point, its CI as a bar, a vertical line at 1 and the verdict written beside.

    ``comparison``: ``stats.compare``'s long table, columns ``FOREST_COLUMNS`` and either its
    ``configuration`` (a row is then named by it and the grouping dimensions that vary between rows:
    ``batch 4, dtype=bf16 vs dtype=fp32``) or the compared dimensions (``label`` or those that vary;
    ``ci_reliable`` optional). A CI from fewer than
    ``MIN_RUNS_FOR_CI`` runs on either side is dashed with a hollow point. ``study``: the compared runs
    (hardware, footer). Raises ``ValueError`` for a missing column or when no ratio is known.
    """
    missing = [c for c in FOREST_COLUMNS if c not in comparison.columns]
    if missing:
        raise ValueError(f"not a comparison table: {', '.join(missing)} missing")
    rows, single = _forest_rows(comparison, study)
    unreliable = _unreliable(rows)
    fig, (ax,) = _figure(size=(FIG_SIZE[0], max(FIG_SIZE[1], 2.2 + (0.32 if single else 0.5) * len(rows))))
    for i, row in rows.iterrows():
        colour = VERDICT_COLOURS.get(str(row["verdict"]), "0.45")
        ax.hlines(i, row["ci_low"], row["ci_high"], color=colour, linewidth=1.6, gid="ci",
                  linestyles="--" if unreliable[i] else "-")
        ax.plot(row["ratio"], i, marker="o", markersize=6, color=colour, gid="ratio",
                markerfacecolor="white" if unreliable[i] else colour)
        ax.annotate(f"{row['verdict']}\n{row['ratio']:.3g} [{row['ci_low']:.3g}, {row['ci_high']:.3g}], "
                    f"n {row['n']:g}/{row['n_baseline']:g}", (1.02, i), xycoords=("axes fraction", "data"),
                    va="center", fontsize="x-small", color=colour)
    ax.axvline(1.0, color="0.3", linewidth=0.8, zorder=0)
    labels = rows["item"] if single else rows["config"] + "\n" + rows["item"]
    ax.set_yticks(range(len(rows)), labels, fontsize="small")
    ax.set_ylim(len(rows) - 0.5, -0.5)
    _ratio_axis(ax, [*rows["ci_low"], *rows["ci_high"], *rows["ratio"]])
    ax.set_xlabel("Ratio to the baseline (point), with its confidence interval (bar)")
    handles = [Line2D([], [], color=VERDICT_COLOURS.get(v, "0.45"), marker="o", label=v)
               for v in metadata.distinct(rows["verdict"])]
    if unreliable.any():
        handles.append(Line2D([], [], color="0.3", linestyle="--", marker="o", markerfacecolor="white",
                              label=f"CI from < {MIN_RUNS_FOR_CI} runs: unreliable"))
    handles.append(Line2D([], [], color="0.3", linewidth=0.8, label="1: same as the baseline"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2 if len(rows) < 4 else -0.12),
              ncols=min(len(handles), 3), fontsize="small", frameon=False)
    headline = f"Compared with the baseline: {single}" if single else "Compared with the baseline"
    estimated = (rows["source"] == "estimated").any()
    return _finish(fig, study, study.runs["run_id"], headline, "one row per configuration, domain and quantity",
                   estimated)

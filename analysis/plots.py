"""Figures of the tidy analysis tables (see docs/tables.md).

Every function takes DataFrames and returns a new ``matplotlib.figure.Figure``
built with the object API (no pyplot state: nothing to close, nothing shown).

Labelling rules, applied by the helpers below and nowhere else:

- every energy or power axis says where the numbers come from, ``measured`` or
  ``estimated``, read from the data's ``source`` / ``<domain>_source`` columns;
  when a figure mixes sources, each legend entry carries its own source;
- every title names the model and the hardware (``device``, ``hardware_gpu``,
  ``hardware_cpu``); tables without those columns (``energies``, ``latencies``,
  a Spearman matrix) take them from the study's ``runs`` passed as ``runs=``;
- every axis has its unit; an axis goes logarithmic when its values span at
  least one decade;
- a needed column that is missing or all-NaN raises ``ValueError`` saying what
  is missing: "no sensor" is never drawn as zero.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, ScalarFormatter

__all__ = [
    "energy_vs_size",
    "latency_vs_size",
    "sm_util_vs_latency",
    "gpu_power_vs_sm_util",
    "memory_vs_size",
    "spearman_heatmap",
    "latency_distribution",
    "energy_distribution",
    "warmup_effect",
]

SOURCES = ("measured", "estimated")
HARDWARE_COLUMNS = ("device", "hardware_gpu", "hardware_cpu")
# Unit of the input size when the table has no `task` column.
_TASK_OF_MODEL = {"alexnet": "vision", "resnet50": "vision", "bert": "nlp"}
_SIZE_LABEL = {"vision": "Input size (px, image side)", "nlp": "Input size (tokens)"}
MEDIAN_IQR = "line: median over runs; band: interquartile range"
# Columns of `runs` drawn by memory_vs_size, with their legend names.
MEMORY_COLUMNS = {
    "gpu_mem_peak_mb": "GPU memory, whole device (all processes)",
    "gpu_proc_mem_peak_mb": "GPU memory, this process tree",
    "rss_peak_mb": "host RSS, this process tree",
}


# --------------------------------------------------------------------------
# Shared helpers: data checks, source labels, titles, scales.


def _nonempty(values: Iterable) -> list:
    """Distinct values, without NaN/None/empty strings, in order of appearance."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or v == "":
            continue
        if v not in out:
            out.append(v)
    return out


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise ValueError unless every column exists and holds at least one value."""
    for col in columns:
        if col not in df.columns:
            raise ValueError(f"{what} ({col} is missing)")
        if df[col].isna().all():
            raise ValueError(f"{what} ({col} is empty)")


def _one_model(df: pd.DataFrame) -> str:
    _require(df, ["model"], "cannot name the model")
    models = _nonempty(df["model"])
    if len(models) > 1:
        raise ValueError(f"these rows hold several models ({', '.join(map(str, models))}); select one model per figure")
    return str(models[0])


def _one_point(df: pd.DataFrame) -> int:
    """The single input size of a single-point study (raises if several)."""
    _require(df, ["input_size"], "cannot tell the input size")
    sizes = sorted(_nonempty(df["input_size"]))
    if len(sizes) > 1:
        raise ValueError(
            f"this figure is for a single (model, input size) point; these rows hold input sizes "
            f"{', '.join(map(str, sizes))}: select one"
        )
    return sizes[0]


def source_label(sources: Iterable) -> str:
    """``measured``, ``estimated`` or ``measured and estimated`` for the given source values.

    Raises ValueError when no source is known or a value is not a known source:
    an unlabelled energy is not drawn.
    """
    found = _nonempty(sources)
    unknown = [s for s in found if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown energy source {unknown!r} (expected one of {SOURCES})")
    if not found:
        raise ValueError("the source (measured or estimated) of these energies is not recorded")
    return " and ".join(s for s in SOURCES if s in found)


def _quantity_label(name: str, unit: str, sources: Iterable | None = None, *, per_legend: bool = False) -> str:
    """``"Name (unit, measured)"``; with several sources, points to the legend."""
    if sources is None:
        return f"{name} ({unit})"
    src = source_label(sources)
    if per_legend and " and " in src:
        return f"{name} ({unit})\n{src.replace(' and ', ' + ')}: see legend"
    return f"{name} ({unit}, {src})"


def _hardware(rows: pd.DataFrame) -> str:
    """``"cuda:0 — GPU: NVIDIA H200; CPU: Intel Xeon"`` from the hardware columns."""
    parts = []
    devices = _nonempty(rows["device"]) if "device" in rows else []
    gpus = _nonempty(rows["hardware_gpu"]) if "hardware_gpu" in rows else []
    cpus = _nonempty(rows["hardware_cpu"]) if "hardware_cpu" in rows else []
    if gpus:
        parts.append("GPU: " + " / ".join(map(str, gpus)))
    if cpus:
        parts.append("CPU: " + " / ".join(map(str, cpus)))
    text = "; ".join(parts)
    if devices:
        text = ", ".join(map(str, devices)) + (f" — {text}" if text else "")
    if not text:
        raise ValueError("cannot name the hardware: device, hardware_gpu and hardware_cpu are all empty")
    return text


def _context(df: pd.DataFrame, runs: pd.DataFrame | None = None) -> str:
    """``"alexnet on cuda:0 — GPU: ...; CPU: ..."``: the model and the hardware of the rows.

    The hardware is read from ``df`` when it has the columns, otherwise from the
    study's ``runs`` table (restricted to the same model).
    """
    model = _one_model(df)
    rows = df
    if not any(c in df.columns for c in HARDWARE_COLUMNS):
        if runs is None:
            raise ValueError(
                "cannot name the hardware: these rows have no device/hardware_gpu/hardware_cpu column; "
                "pass runs= (the study's runs table)"
            )
        rows = runs[runs["model"] == model] if "model" in runs.columns else runs
        if rows.empty:
            raise ValueError(f"runs= holds no run of model {model}")
    text = f"{model} on {_hardware(rows)}"
    weights = _nonempty(rows["weights"]) if "weights" in rows.columns else []
    if "random" in weights:
        text += " (random weights)" if weights == ["random"] else " (some runs with random weights)"
    return text


def _new_figure(ncols: int = 1, width: float = 7.0, height: float = 4.6) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * ncols if ncols > 1 else width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0].tolist()
    return fig, axes


def _title(fig: Figure, headline: str, context: str, note: str | None = None) -> None:
    fig.suptitle("\n".join([headline, context] + ([note] if note else [])), fontsize="medium")


def spans_decade(values: Iterable) -> bool:
    """True when the finite values are all positive and max/min ≥ 10."""
    v = np.asarray(pd.to_numeric(pd.Series(list(values)), errors="coerce"), dtype=float)
    v = v[np.isfinite(v)]
    return bool(v.size and (v > 0).all() and v.max() / v.min() >= 10)


def _scale(ax, axis: str, values: Iterable, ticks: Sequence | None = None) -> None:
    """Log scale on ``axis`` ("x"/"y") when ``values`` span a decade; ``ticks`` labels the sizes."""
    if not spans_decade(values):
        return
    getattr(ax, f"set_{axis}scale")("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    if ticks is not None and 0 < len(ticks) <= 12:
        target.set_major_locator(FixedLocator(list(ticks)))
        target.set_major_formatter(ScalarFormatter())
        target.set_minor_locator(NullLocator())


def _size_label(df: pd.DataFrame) -> str:
    tasks = _nonempty(df["task"]) if "task" in df.columns else []
    if not tasks and "model" in df.columns:
        tasks = _nonempty(_TASK_OF_MODEL.get(str(m).lower()) for m in df["model"])
    return _SIZE_LABEL[tasks[0]] if len(tasks) == 1 and tasks[0] in _SIZE_LABEL else "Input size"


def _energy_rows(
    energies: pd.DataFrame, domains: Sequence[str] | None, dynamic: bool
) -> tuple[str, pd.DataFrame, list]:
    """The energy column, the rows of the chosen domains that have a value, and the domains.

    ``domains=None`` takes every domain with values, except the per-device
    ``gpu<i>`` when their sum ``gpu`` is present; a requested domain without
    values raises ValueError.
    """
    column = "dynamic_energy_per_inference_j" if dynamic else "energy_per_inference_j"
    what = "dynamic energy (no idle baseline recorded)" if dynamic else "energy"
    _require(energies, ["domain", "source", column], f"no {what} in these rows")
    present = _nonempty(energies.loc[energies[column].notna(), "domain"])
    if domains is None:
        domains = [d for d in present if not ("gpu" in present and str(d).startswith("gpu") and d != "gpu")]
    else:
        domains = list(domains)
        missing = [d for d in domains if d not in present]
        if missing:
            raise ValueError(f"no {what} for domain(s) {', '.join(missing)} ({column} is empty or absent)")
    if not domains:
        raise ValueError(f"no {what} in these rows (no domain selected)")
    data = energies[energies["domain"].isin(domains) & energies[column].notna()].copy()
    return column, data, domains


def _energy_name(dynamic: bool) -> str:
    return "Dynamic energy per inference (above idle)" if dynamic else "Energy per inference"


def _median_iqr_lines(ax, data: pd.DataFrame, x: str, y: str, hue: str | None = None) -> None:
    sns.lineplot(
        data=data, x=x, y=y, hue=hue, estimator="median", errorbar=("pi", 50),
        marker="o", ax=ax,
    )


def _size_sorted(df: pd.DataFrame) -> list:
    return sorted(_nonempty(df["input_size"]))


# --------------------------------------------------------------------------
# Sweeps over the input size.


def energy_vs_size(
    energies: pd.DataFrame,
    domains: Sequence[str] | None = None,
    *,
    dynamic: bool = False,
    runs: pd.DataFrame | None = None,
) -> Figure:
    """Energy per inference vs input size, one line per domain (median over runs, IQR band).

    Needs ``energies`` columns ``model, input_size, run, domain, source`` and
    ``energy_per_inference_j`` (or ``dynamic_energy_per_inference_j`` with
    ``dynamic=True``); the hardware columns come from ``runs=`` when ``energies``
    lacks them. ``domains=None`` draws every domain that has values, except the
    per-device ``gpu<i>`` when their sum ``gpu`` is present.
    """
    column, data, domains = _energy_rows(energies, domains, dynamic)
    _require(data, ["input_size"], "no input size in these rows")
    context = _context(energies, runs)
    legend = {}
    for d in domains:
        legend[d] = f"{d} ({source_label(data.loc[data['domain'] == d, 'source'])})"
    data["domain (source)"] = data["domain"].map(legend)

    fig, (ax,) = _new_figure()
    _median_iqr_lines(ax, data, "input_size", column, "domain (source)")
    name = _energy_name(dynamic)
    ax.set_xlabel(_size_label(data))
    ax.set_ylabel(_quantity_label(name, "J", data["source"], per_legend=True))
    _scale(ax, "x", data["input_size"], _size_sorted(data))
    _scale(ax, "y", data[column])
    _title(fig, f"{name} vs input size", context, MEDIAN_IQR)
    return fig


def latency_vs_size(runs: pd.DataFrame) -> Figure:
    """Median latency per inference vs input size (median over runs of each run's median, IQR band).

    Needs ``runs`` columns ``model, input_size, run, latency_median_s`` and the hardware columns.
    """
    _require(runs, ["input_size", "latency_median_s"], "no latency in these runs")
    context = _context(runs)
    data = runs[runs["latency_median_s"].notna()]
    fig, (ax,) = _new_figure()
    _median_iqr_lines(ax, data, "input_size", "latency_median_s")
    ax.set_xlabel(_size_label(data))
    ax.set_ylabel("Latency per inference, run median (s)")
    _scale(ax, "x", data["input_size"], _size_sorted(data))
    _scale(ax, "y", data["latency_median_s"])
    _title(fig, "Latency vs input size", context, MEDIAN_IQR)
    return fig


def memory_vs_size(runs: pd.DataFrame) -> Figure:
    """Peak memory vs input size: GPU device, GPU process tree and host RSS (those recorded).

    Needs ``runs`` columns ``model, input_size, run``, the hardware columns and at
    least one of ``gpu_mem_peak_mb``, ``gpu_proc_mem_peak_mb``, ``rss_peak_mb``.
    """
    _require(runs, ["input_size"], "no input size in these runs")
    present = [c for c in MEMORY_COLUMNS if c in runs.columns and runs[c].notna().any()]
    if not present:
        raise ValueError(f"no memory measurements in these runs ({', '.join(MEMORY_COLUMNS)} are missing or empty)")
    context = _context(runs)
    data = runs.melt(id_vars=["model", "input_size", "run"], value_vars=present, var_name="column", value_name="mib")
    data = data[data["mib"].notna()]
    data["memory"] = data["column"].map(MEMORY_COLUMNS)
    fig, (ax,) = _new_figure()
    _median_iqr_lines(ax, data, "input_size", "mib", "memory")
    ax.set_xlabel(_size_label(runs))
    ax.set_ylabel("Peak memory (MiB)")
    _scale(ax, "x", data["input_size"], _size_sorted(data))
    _scale(ax, "y", data["mib"])
    _title(fig, "Peak memory vs input size", context, MEDIAN_IQR)
    return fig


# --------------------------------------------------------------------------
# GPU utilisation and power (one point per run).


def _scatter_by_size(ax, data: pd.DataFrame, x: str, y: str) -> None:
    sizes = _size_sorted(data)
    sns.scatterplot(
        data=data.assign(input_size=data["input_size"].astype(int).astype(str)),
        x=x, y=y, hue="input_size", hue_order=[str(int(s)) for s in sizes],
        palette="viridis", ax=ax, s=45, alpha=0.85,
    )
    legend = ax.get_legend()
    if legend is not None:
        legend.set_title(_size_label(data))


def sm_util_vs_latency(runs: pd.DataFrame) -> Figure:
    """SM utilisation vs latency, one point per run, coloured by input size.

    Needs ``runs`` columns ``model, input_size, latency_median_s, sm_util_mean_pct`` and the hardware columns.
    """
    _require(runs, ["sm_util_mean_pct"], "no GPU measurements in these runs")
    _require(runs, ["input_size", "latency_median_s"], "no latency in these runs")
    context = _context(runs)
    data = runs[runs["sm_util_mean_pct"].notna() & runs["latency_median_s"].notna()]
    fig, (ax,) = _new_figure()
    _scatter_by_size(ax, data, "latency_median_s", "sm_util_mean_pct")
    ax.set_xlabel("Latency per inference, run median (s)")
    ax.set_ylabel("SM utilisation, run mean (%)")
    _scale(ax, "x", data["latency_median_s"])
    _title(fig, "GPU SM utilisation vs latency", context, "one point per run")
    return fig


def gpu_power_vs_sm_util(data: pd.DataFrame, domain: str = "gpu", *, runs: pd.DataFrame | None = None) -> Figure:
    """Mean GPU power vs SM utilisation, one point per run, coloured by input size.

    ``data`` is either ``runs`` (columns ``model, input_size, run, sm_util_mean_pct,
    <domain>_mean_power_w, <domain>_source`` and the hardware columns) or
    ``energies`` (columns ``model, input_size, run, domain, source, mean_power_w``)
    with the study's ``runs=``, which supplies ``sm_util_mean_pct`` and the hardware.
    """
    if "domain" in data.columns:  # energies, long form
        _require(data, ["mean_power_w", "source"], "no power in these rows")
        rows = data[data["domain"] == domain]
        if rows.empty:
            raise ValueError(f"no GPU power measurements in these rows (no domain {domain})")
        if runs is None and "sm_util_mean_pct" not in rows.columns:
            raise ValueError("energies hold no sm_util_mean_pct: pass runs= (the study's runs table)")
        if runs is not None:
            keys = ["model", "input_size", "run"]
            extra = [c for c in ("sm_util_mean_pct", *HARDWARE_COLUMNS, "weights") if c in runs.columns and c not in rows]
            rows = rows.merge(runs[keys + extra], on=keys, how="left")
        power, source = "mean_power_w", "source"
    else:  # runs, wide form
        rows = data
        power, source = f"{domain}_mean_power_w", f"{domain}_source"
    _require(rows, ["sm_util_mean_pct"], "no GPU measurements in these runs")
    _require(rows, [power], "no GPU power measurements in these runs")
    _require(rows, [source], f"the source of {power} is not recorded")
    _require(rows, ["input_size"], "no input size in these rows")
    rows = rows[rows[power].notna() & rows["sm_util_mean_pct"].notna()]
    if rows.empty:
        raise ValueError(f"no run has both {power} and sm_util_mean_pct")
    context = _context(rows)
    fig, (ax,) = _new_figure()
    _scatter_by_size(ax, rows, "sm_util_mean_pct", power)
    ax.set_xlabel("SM utilisation, run mean (%)")
    ax.set_ylabel(_quantity_label(f"{domain} power, run mean", "W", rows[source]))
    _title(fig, "GPU power vs SM utilisation", context, "one point per run")
    return fig


# --------------------------------------------------------------------------
# Correlations.


def spearman_heatmap(
    rho: pd.DataFrame,
    p: pd.DataFrame | None = None,
    *,
    runs: pd.DataFrame | None = None,
    alpha: float = 0.05,
) -> Figure:
    """Annotated heatmap of Spearman's ρ (diverging, centred on 0, from −1 to 1).

    Cells with ``p ≥ alpha`` are annotated ``ns``. ``runs`` (the table the
    correlations were computed on) names the model and hardware in the title and
    adds the source to ``<domain>_...`` energy/power labels; it is required.
    """
    if rho.empty:
        raise ValueError("no correlation to draw (rho is empty)")
    if runs is None:
        raise ValueError("cannot name the hardware and model: pass runs= (the runs the correlations come from)")
    context = _context(runs)
    if p is not None:
        p = p.reindex(index=rho.index, columns=rho.columns)
    annot = np.empty(rho.shape, dtype=object)
    for i in range(rho.shape[0]):
        for j in range(rho.shape[1]):
            r = rho.iat[i, j]
            if pd.isna(r):
                annot[i, j] = ""
            elif p is not None and not (p.iat[i, j] < alpha):
                annot[i, j] = f"{r:.2f}\nns"
            else:
                annot[i, j] = f"{r:.2f}"
    n = max(rho.shape)
    fig, (ax,) = _new_figure(width=max(6.0, 0.75 * n + 3), height=max(4.6, 0.6 * n + 2.5))
    with warnings.catch_warnings():  # seaborn 0.13 calls Colormap.set_bad, pending deprecation in matplotlib
        warnings.filterwarnings("ignore", message="The set_bad function", category=PendingDeprecationWarning)
        sns.heatmap(
            rho.astype(float), annot=annot, fmt="", cmap="vlag", center=0, vmin=-1, vmax=1,
            square=True, linewidths=0.5, cbar_kws={"label": "Spearman ρ (unitless)"},
            annot_kws={"fontsize": "small"}, ax=ax,
        )
    for i, j in zip(*np.nonzero(rho.isna().to_numpy())):  # seaborn leaves masked cells blank
        ax.text(j + 0.5, i + 0.5, "n/a", ha="center", va="center", fontsize="small", color="0.4")
    ax.set_xticklabels([_variable_label(t.get_text(), runs) for t in ax.get_xticklabels()], rotation=45, ha="right")
    ax.set_yticklabels([_variable_label(t.get_text(), runs) for t in ax.get_yticklabels()], rotation=0)
    ax.set_xlabel("")
    ax.set_ylabel("")
    note = f"ns: not significant (p ≥ {alpha:g})" if p is not None else "p-values not given: significance not shown"
    _title(fig, "Spearman rank correlations between runs", context, note)
    return fig


def _variable_label(name: str, runs: pd.DataFrame) -> str:
    """Append the source to a ``<domain>_...`` column of runs that has a ``<domain>_source``."""
    for col in runs.columns:
        if col.endswith("_source"):
            domain = col[: -len("_source")]
            if name.startswith(domain + "_"):
                return f"{name} ({source_label(runs[col])})"
    return name


# --------------------------------------------------------------------------
# A single (model, input size) point measured many times.


def latency_distribution(latencies: pd.DataFrame, *, runs: pd.DataFrame | None = None) -> Figure:
    """Distribution of the per-inference latency of one point: a violin per run, and all runs pooled.

    Needs ``latencies`` columns ``model, input_size, run, iteration, latency_s``;
    hardware from ``runs=`` when ``latencies`` lacks it.
    """
    _require(latencies, ["run", "latency_s"], "no latency in these rows")
    context = _context(latencies, runs)
    size = _one_point(latencies)
    data = latencies[latencies["latency_s"].notna()]
    fig, (ax_run, ax_all) = _new_figure(ncols=2, width=5.5)
    order = sorted(_nonempty(data["run"]))
    sns.violinplot(data=data.assign(run=data["run"].astype(str)), x="run", y="latency_s",
                   order=[str(r) for r in order], cut=0, inner="quartile", color="C0", ax=ax_run)
    ax_run.set_xlabel("Run")
    ax_run.set_ylabel("Latency per inference (s)")
    ax_run.set_title("each run (lines: quartiles)", fontsize="small")
    log = spans_decade(data["latency_s"])
    sns.histplot(data=data, x="latency_s", bins=40, log_scale=log, color="C0", ax=ax_all)
    ax_all.set_xlabel("Latency per inference (s)")
    ax_all.set_ylabel("Inferences (count)")
    ax_all.set_title(f"all runs pooled ({len(order)} runs, {len(data)} inferences)", fontsize="small")
    if log:
        ax_run.set_yscale("log")
    _title(fig, f"Latency distribution at input size {size}", context)
    return fig


def energy_distribution(
    energies: pd.DataFrame,
    domains: Sequence[str] | None = None,
    *,
    dynamic: bool = False,
    runs: pd.DataFrame | None = None,
) -> Figure:
    """Distribution over runs of the energy per inference of one point, one panel per domain.

    Needs ``energies`` columns ``model, input_size, run, domain, source`` and
    ``energy_per_inference_j`` (or ``dynamic_energy_per_inference_j``); hardware
    from ``runs=`` when ``energies`` lacks it. Domains as in ``energy_vs_size``.
    """
    column, data, domains = _energy_rows(energies, domains, dynamic)
    context = _context(energies, runs)
    size = _one_point(data)
    fig, axes = _new_figure(ncols=len(domains), width=4.5)
    name = _energy_name(dynamic)
    for ax, d in zip(axes, domains):
        rows = data[data["domain"] == d]
        src = source_label(rows["source"])
        sns.histplot(data=rows, x=column, bins=min(20, max(5, len(rows))), color="C0", ax=ax)
        sns.rugplot(data=rows, x=column, color="C3", height=0.06, ax=ax)
        median = rows[column].median()
        ax.axvline(median, color="k", linestyle="--", linewidth=1, label=f"median {median:.4g} J")
        ax.legend(fontsize="small")
        ax.set_xlabel(_quantity_label(name, "J", rows["source"]))
        ax.set_ylabel("Runs (count)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{d} ({src}), {rows['run'].nunique()} runs", fontsize="small")
    _title(fig, f"{name} over runs at input size {size}", context)
    return fig


def warmup_effect(latencies: pd.DataFrame, first: int = 50, *, runs: pd.DataFrame | None = None) -> Figure:
    """Latency vs iteration index over the first ``first`` timed iterations (median over runs, IQR band).

    Needs ``latencies`` columns ``model, input_size, run, iteration, latency_s``;
    hardware (and the untimed warm-up count, ``warmup``) from ``runs=`` when given.
    The latency table holds timed inferences only: the untimed warm-up that
    precedes them is not drawn.
    """
    _require(latencies, ["input_size", "iteration", "latency_s"], "no latency in these rows")
    context = _context(latencies, runs)
    start = latencies["iteration"].min()
    data = latencies[(latencies["iteration"] < start + first) & latencies["latency_s"].notna()]
    data = data.assign(input_size=data["input_size"].astype(int).astype(str))
    fig, (ax,) = _new_figure()
    sizes = [str(int(s)) for s in _size_sorted(latencies)]
    sns.lineplot(data=data, x="iteration", y="latency_s", hue="input_size", hue_order=sizes,
                 estimator="median", errorbar=("pi", 50), ax=ax)
    ax.get_legend().set_title(_size_label(latencies))
    ax.set_xlabel("Timed iteration (index)")
    ax.set_ylabel("Latency per inference (s)")
    _scale(ax, "y", data["latency_s"])
    src = runs if runs is not None else latencies
    warm = _nonempty(src["warmup"]) if "warmup" in src.columns else []
    if len(warm) == 1:
        note = f"first {first} timed iterations, after {int(warm[0])} untimed warm-up inferences\n{MEDIAN_IQR}"
    else:
        note = f"first {first} timed iterations (untimed warm-up not shown)\n{MEDIAN_IQR}"
    _title(fig, "Latency over the first iterations", context, note)
    return fig

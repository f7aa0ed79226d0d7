"""The edges: files for other tools, and tables for people.

Between steps the analysis keeps long tables; a spreadsheet, the seed study's
CSV and people reading a terminal want one row per point. ``wide_summary``
makes that row from a long summary: ``<domain>_<quantity>_<statistic>``
columns (the quantity alone for latencies), each energy domain's ``source``
and ``method``, ``n_runs``, and the run constants of the point as they are
(never summarised; NaN where they differ between its runs). ``headline`` and
``comparison_text`` are tables to read; ``write_tables`` writes the tidy
tables as they are (CSV or parquet) for other tools.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import phases
from .stats import MIN_RUNS_FOR_CI, summarize
from .tables import Study, wide_name

FORMATS = ("csv", "parquet")

CONSTANTS = ["iterations", "warmup", "period_s", "params", "flops_per_inference"]
SEED_STATISTICS = ("median", "iqr", "ci_low", "ci_high", "n")
SEED_QUANTITIES = ("latency_median_s", "latency_p90_s", "energy_per_inference_j", "energy_per_sample_j",
                   "dynamic_energy_per_inference_j", "mean_power_w", "sm_util_mean_pct", "mem_used_peak_mib",
                   "proc_mem_peak_mib", "rss_peak_mib")
HEADLINE_CLOCK, HEADLINE_ENERGY = ("latency_median_s",), ("energy_per_inference_j",)  # headline's, forward passes


def summary_quantities(study: Study) -> tuple[str, ...]:
    """The quantities of ``study``'s wide summary (the ``summary.csv`` of a tree): ``SEED_QUANTITIES``, and the
    generation figures (``phases.QUANTITIES``) when it holds generation runs."""
    return (*SEED_QUANTITIES, *phases.QUANTITIES) if phases.generating(study) else SEED_QUANTITIES


def headline_quantities(study: Study) -> dict[str, tuple[str, ...]]:
    """``headline``'s ``clock`` and ``energy`` quantities for ``study``: TTFT, ITL and the energies per token
    (``phases.HEADLINE_CLOCK``, ``phases.HEADLINE_ENERGY``) when it holds generation runs, else the latency and
    the energy per inference."""
    if phases.generating(study):
        return {"clock": phases.HEADLINE_CLOCK, "energy": phases.HEADLINE_ENERGY}
    return {"clock": HEADLINE_CLOCK, "energy": HEADLINE_ENERGY}


def wide_summary(summary: pd.DataFrame, study: Study, *, statistics: Sequence[str] = SEED_STATISTICS,
                 quantities: Sequence[str] | None = SEED_QUANTITIES) -> pd.DataFrame:
    """One row per point of a long ``summary`` (of ``study``): its ``by`` columns, ``n_runs``, the run
    constants, then ``<domain>_<quantity>_<statistic>`` for ``quantities`` (None: all) and
    ``<domain>_source``/``<domain>_method`` for every energy domain."""
    by = list(summary.columns[: summary.columns.get_loc("domain")])
    rows = summary if quantities is None else summary[summary["quantity"].isin(quantities)]
    rows = rows.assign(domain=rows["domain"].astype(str), quantity=rows["quantity"].astype(str))
    stacked = rows.set_index([*by, "domain", "quantity"])[list(statistics)].unstack(["domain", "quantity"])
    pairs = list(dict.fromkeys((d, q) for _, d, q in stacked.columns))
    stacked = stacked[[(s, d, q) for d, q in pairs for s in statistics]]
    stacked.columns = [f"{wide_name(d, q)}_{s}" for s, d, q in stacked.columns]
    wide = _points(study, by).merge(stacked.reset_index(), on=by, how="left")
    energy = rows[rows["quantity"] == "energy_per_inference_j"]
    for what in ("source", "method"):
        labels = energy.set_index([*by, "domain"])[what].unstack("domain")
        labels.columns = [f"{d}_{what}" for d in labels.columns]
        wide = wide.merge(labels.reset_index(), on=by, how="left")
    return wide


def _points(study: Study, by: list[str]) -> pd.DataFrame:
    """One row per point: its ``by`` values, ``n_runs`` and each run constant (NaN where its runs differ)."""
    groups = study.runs.groupby(by, sort=True, dropna=False, observed=True)
    table = groups.size().rename("n_runs").to_frame()
    for column in CONSTANTS:
        distinct = groups[column].nunique(dropna=False)
        table[column] = groups[column].first().where(distinct <= 1, np.nan)
    return table.reset_index()


def headline(summary: pd.DataFrame, domains: Sequence[str], sig: int = 3, *,
             clock: Sequence[str] = HEADLINE_CLOCK, energy: Sequence[str] = HEADLINE_ENERGY) -> pd.DataFrame:
    """A table to read: per point, the runs, the median of each ``clock`` quantity (default: the latency) and
    of each ``energy`` quantity of each domain (default: the energy per inference) with its 95 % CI (rounded
    to ``sig`` significant digits; ``(n < 5)`` after a CI from too few runs to trust), and each domain's
    source."""
    by = list(summary.columns[: summary.columns.get_loc("domain")])
    wanted = [("clock", q, "latency_s" if q == "latency_median_s" else q) for q in clock] + [
        (d, q, f"{d}_{q}") for d in domains for q in energy]
    out = summary.groupby(by, dropna=False, observed=True)["n"].max().rename("runs").to_frame()
    for domain, quantity, name in wanted:
        rows = summary[(summary["domain"] == domain) & (summary["quantity"] == quantity)].set_index(by)
        out[f"{name} median"] = rows["median"].map(lambda v: round_sig(v, sig))
        out[f"{name} 95% CI"] = pd.Series([
            f"[{round_sig(lo, sig)}, {round_sig(hi, sig)}]" + ("" if reliable else f" (n < {MIN_RUNS_FOR_CI})")
            for lo, hi, reliable in zip(rows["ci_low"], rows["ci_high"], rows["ci_reliable"])], index=rows.index,
            dtype=object)
        if domain != "clock":
            out[f"{domain} source"] = rows["source"]
    return out.reset_index()


def round_sig(value: float, sig: int = 3) -> float:
    """``value`` rounded to ``sig`` significant digits (NaN stays NaN)."""
    if value is None or not np.isfinite(value) or value == 0:
        return value
    return round(float(value), sig - 1 - int(math.floor(math.log10(abs(value)))))


def write_tables(study: Study, folder: str | Path, file_format: str = "csv",
                 by: Sequence[str] | None = None) -> list[Path]:
    """Write ``runs``, ``quantities`` and the long ``summary`` (``summarize(study, by)``) of ``study`` as
    ``folder/{runs,quantities,summary}.{csv,parquet}`` (``folder`` is made if absent; files there are replaced)
    and return their paths.

    The tables are written as they are: units in column names (``window_s``) or
    in the ``unit`` column of long rows, ``source`` and ``method`` beside every
    value. Parquet keeps the column types (categories included) and reads back
    equal with ``pandas.read_parquet``; it needs ``pyarrow`` (``ImportError``
    saying how to install it otherwise). Raises ``ValueError`` for another
    format, ``OSError`` when ``folder`` cannot be written.
    """
    if file_format not in FORMATS:
        raise ValueError(f"unknown format {file_format!r} (formats: {', '.join(FORMATS)})")
    if file_format == "parquet":
        require_pyarrow()
    tables = {"runs": study.runs, "quantities": study.quantities, "summary": summarize(study, by=by)}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in tables.items():
        path = folder / f"{name}.{file_format}"
        if file_format == "csv":
            table.to_csv(path, index=False)
        else:
            table.to_parquet(path, engine="pyarrow", index=False)
        paths.append(path)
    return paths


def require_pyarrow() -> None:
    """Raise ``ImportError`` saying how to install pyarrow when it is missing."""
    try:
        import pyarrow  # noqa: F401  (pandas writes parquet through it)
    except ImportError:
        raise ImportError("parquet needs pyarrow: pip install 'pyarrow>=14'") from None


def comparison_text(comparison: pd.DataFrame, sig: int = 3) -> str:
    """A ``compare`` table to read: one block per group (its grouping dimensions on a line), then one aligned
    line per row: configuration, baseline, domain and quantity, runs on each side (``paired``), both medians
    with their unit, the ratio and its 95 % CI (``(n < 5)`` after a CI from too few runs to trust), the
    verdict, source and hardware. Numbers are rounded to ``sig`` significant digits."""
    within = list(comparison.columns[: comparison.columns.get_loc("configuration")])

    def value(v: float, unit: object) -> str:
        return "" if pd.isna(v) else f"{round_sig(v, sig):g} {unit}"

    def interval(row: pd.Series) -> str:
        if pd.isna(row["ci_low"]):
            return ""
        text = f"[{round_sig(row['ci_low'], sig):g}, {round_sig(row['ci_high'], sig):g}]"
        return text + ("" if row["ci_reliable"] else f" (n < {MIN_RUNS_FOR_CI})")

    columns = {
        "configuration": comparison["configuration"], "baseline": comparison["baseline"],
        "domain": comparison["domain"].astype(str), "quantity": comparison["quantity"].astype(str),
        "runs": [f"{n} vs {m}" + (" paired" if p else "") for n, m, p in
                 zip(comparison["n"], comparison["n_baseline"], comparison["paired"])],
        "median": [value(v, u) for v, u in zip(comparison["median"], comparison["unit"])],
        "baseline median": [value(v, u) for v, u in zip(comparison["median_baseline"], comparison["unit"])],
        "ratio": ["" if pd.isna(r) else f"{round_sig(r, sig):g}" for r in comparison["ratio"]],
        "95% CI of ratio": [interval(row) for _, row in comparison.iterrows()],
        "verdict": comparison["verdict"], "source": comparison["source"].fillna(""),
        "hardware": comparison["hardware"].fillna(""),
    }
    right = {"runs", "median", "baseline median", "ratio"}
    cells = {name: [str(v) for v in values] for name, values in columns.items()}
    widths = {name: max(len(name), *map(len, values)) for name, values in cells.items()}

    def line(texts: dict[str, str]) -> str:
        return "  ".join(t.rjust(widths[n]) if n in right else t.ljust(widths[n]) for n, t in texts.items()).rstrip()

    lines = ["  " + line({name: name for name in cells})]
    groups = comparison.groupby(within, sort=False, dropna=False) if within else [((), comparison)]
    for point, group in groups:
        point = point if isinstance(point, tuple) else (point,)
        if within:
            lines.append(", ".join(f"{d}={v}" for d, v in zip(within, point)))
        lines += ["  " + line({name: cells[name][i] for name in cells}) for i in
                  comparison.index.get_indexer(group.index)]
    return "\n".join(lines)

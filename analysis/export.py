"""Wide tables at the edges: the seed's per-model summary CSV (one row per point, one column per median).

Between steps the analysis keeps long tables; a spreadsheet, the seed study's
CSV and people reading a terminal want one row per point. ``wide_summary``
makes that row from a long summary: ``<domain>_<quantity>_<statistic>``
columns (the quantity alone for latencies), each energy domain's ``source``
and ``method``, ``n_runs``, and the run constants of the point as they are
(never summarised; NaN where they differ between its runs).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .stats import MIN_RUNS_FOR_CI
from .tables import Study, wide_name

CONSTANTS = ["iterations", "warmup", "period_s", "params", "flops_per_inference"]
SEED_STATISTICS = ("median", "iqr", "ci_low", "ci_high", "n")
SEED_QUANTITIES = ("latency_median_s", "latency_p90_s", "energy_per_inference_j", "energy_per_sample_j",
                   "dynamic_energy_per_inference_j", "mean_power_w", "sm_util_mean_pct", "mem_used_peak_mib",
                   "proc_mem_peak_mib", "rss_peak_mib")


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


def headline(summary: pd.DataFrame, domains: Sequence[str], sig: int = 3) -> pd.DataFrame:
    """A table to read: per point, the runs, the median latency and each domain's median energy per
    inference with its 95 % CI (rounded to ``sig`` significant digits; ``(n < 5)`` after a CI from too few
    runs to trust) and its source."""
    by = list(summary.columns[: summary.columns.get_loc("domain")])
    wanted = [("clock", "latency_median_s", "latency_s")] + [(d, "energy_per_inference_j", f"{d}_energy_per_inference_j")
                                                            for d in domains]
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

"""Per-run reductions of sample frames and latencies: what a study keeps of each run.

A reduction turns the wide sample frame of a few runs into long rows, one per
(run, sensor domain, quantity): the energy of each sensor domain over the
run's window (its counter, else a trapezoid of its power), utilisation and
memory over the window, and the window itself; and a run's latencies into
their statistics. Nothing downstream needs the samples again, so memory grows
with the number of runs, not with their samples.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import energy as en
from .problems import warn

ROW_COLUMNS = ["run_id", "domain", "quantity", "value", "unit", "source", "method", "note"]
# (metric of a sensor domain, statistic over the window) -> quantity, unit
WINDOW_STATS = {
    ("sm_util_pct", "mean"): ("sm_util_mean_pct", "%"),
    ("mem_used_mib", "max"): ("mem_used_peak_mib", "MiB"),
    ("proc_mem_mib", "max"): ("proc_mem_peak_mib", "MiB"),
    ("rss_mib", "max"): ("rss_peak_mib", "MiB"),
    ("cpu_share", "mean"): ("cpu_share_mean", "CPUs"),
}
LATENCY_STATS = {"latency_median_s": 0.5, "latency_p90_s": 0.9, "latency_p99_s": 0.99}


def samples(frame: pd.DataFrame, info: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reduce one wide sample frame (several runs) to long rows and per-run window facts.

    ``frame``: ``run, segment, t_s, mark, <domain>.<metric>...`` with ``run`` the
    run ids of ``info`` (which gives each run's ``sensors`` and ``path``).
    Returns ``(rows, windows)``: rows with ``ROW_COLUMNS`` (energies per sensor
    domain, window statistics), and ``windows`` indexed by run id with
    ``window_s`` and ``window_complete``. A value that cannot be computed
    soundly is NaN with its reason in ``note`` and a warning.
    """
    code, ids = pd.factorize(frame["run"].to_numpy())
    n = len(ids)
    paths = info.loc[ids, "path"].tolist()
    sensors = info.loc[ids, "sensors"].tolist()
    _drop_impossible(frame, code, paths)
    mark = frame["mark"]
    win = en.window(code, frame["t_s"].to_numpy(), (mark == "start").to_numpy(), (mark == "end").to_numpy(), n)
    inside = frame if win.mask.all() else frame[win.mask]
    wcode, segment, t = code[win.mask], inside["segment"].to_numpy(), inside["t_s"].to_numpy()
    parts = []
    for domain in dict.fromkeys(c.rsplit(".", 1)[0] for c in frame.columns if "." in c):
        about = [s.get(domain) or {} for s in sensors]
        if f"{domain}.energy_j" in inside:
            values = inside[f"{domain}.energy_j"].to_numpy()
            wrap = np.array([a.get("counter_wrap_j") for a in about], dtype=float)
            energy, problems = en.counter_energy(wcode, values, wrap, n)
            aligned_j, aligned = en.aligned_counter_energy(wcode, t, values, n)
            energy, method = np.where(aligned, aligned_j, energy), np.where(aligned, "counter_aligned", "counter")
        elif f"{domain}.power_w" in inside:
            values = inside[f"{domain}.power_w"].to_numpy()
            (energy, problems), method = en.trapezoid_energy(wcode, t, values, n, segment), "trapezoid"
        else:
            values = None
        source = [a.get("source") or ("estimated" if "estimate" in domain else "measured") for a in about]
        if values is not None:
            for i in np.flatnonzero(problems.astype(bool)):
                warn(f"{paths[i]}: {domain}: {problems[i]}; its energy left NaN")
            parts.append(_rows(ids, domain, "energy_j", energy, "J", source, method, problems))
            parts.append(_rows(ids, domain, "gap_samples", en.missing(wcode, values, n).astype(float), "samples",
                               source, method))
        for (metric, how), (quantity, unit) in WINDOW_STATS.items():
            if f"{domain}.{metric}" in inside:
                stat = pd.Series(inside[f"{domain}.{metric}"].to_numpy()).groupby(wcode).agg(how)
                parts.append(_rows(ids, domain, quantity, stat.reindex(range(n)).to_numpy(), unit, source,
                                   f"{how} over the window"))
    for i in np.flatnonzero(~(win.has_start & win.has_end)):
        lacking = " and ".join(m for m, has in (("start", win.has_start[i]), ("end", win.has_end[i])) if not has)
        warn(f"{paths[i]}: no '{lacking}' sample, the window is incomplete; energies over the "
             f"{win.t_end[i] - win.t_start[i]:g} s recorded, energies per inference left NaN")
    windows = pd.DataFrame({"window_s": en.window_seconds(wcode, t, n, segment),
                            "window_complete": win.has_start & win.has_end}, index=ids)
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=ROW_COLUMNS)
    return rows, windows


def _rows(ids, domain, quantity, values, unit, source, method, notes=None) -> pd.DataFrame:
    return pd.DataFrame({"run_id": ids, "domain": domain, "quantity": quantity, "value": values, "unit": unit,
                         "source": source, "method": method, "note": notes if notes is not None else None})


def _drop_impossible(frame: pd.DataFrame, code: np.ndarray, paths: list) -> None:
    """Negative or infinite powers and energies become missing readings (in place), with a warning."""
    for channel in [c for c in frame.columns if c.endswith((".power_w", ".energy_j"))]:
        values = frame[channel].to_numpy()
        bad = (values < 0) | np.isinf(values)
        if bad.any():
            frame.loc[bad, channel] = np.nan
            for i, count in zip(*np.unique(code[bad], return_counts=True)):
                warn(f"{paths[i]}: {count} negative or infinite {channel} reading(s) treated as missing")


def latencies(values: pd.Series, run_ids: pd.Index) -> pd.DataFrame:
    """Per-run latency statistics as long rows (domain ``clock``): median, p90, p99 and mean, and the
    number of latencies read (``latency_count``), from every latency indexed by run id."""
    groups = values.groupby(level=0)
    stats = {name: groups.quantile(q) for name, q in LATENCY_STATS.items()}
    stats["latency_mean_s"] = groups.mean()
    parts = [_rows(run_ids, "clock", name, stat.reindex(run_ids).to_numpy(), "s", "measured", "perf_counter")
             for name, stat in stats.items()]
    parts.append(_rows(run_ids, "clock", "latency_count", groups.size().reindex(run_ids, fill_value=0)
                       .to_numpy(dtype=float), "inferences", "measured", "perf_counter"))
    return pd.concat(parts, ignore_index=True)

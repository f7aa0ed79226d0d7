"""Statistics over runs, in long form: medians, IQR, bootstrap CIs of the median and of a ratio of medians,
Spearman correlations.

A summary row describes one quantity of one domain at one point (a value of
every grouping dimension) over its runs: ``n`` runs with a value, ``median``,
``iqr``, the percentile-bootstrap 95 % CI of the median (``ci_low``,
``ci_high``), and ``ci_reliable``, False below ``MIN_RUNS_FOR_CI`` runs, where
a bootstrap of the median has too few distinct resamples to mean much. Run
constants (iterations, warm-up, period, parameters, FLOPs) are never summarised.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .problems import warn
from .tables import Study

MIN_RUNS_FOR_CI = 5
BOOTSTRAP_BLOCK = 4096  # columns whose medians are sorted at once
# per-run diagnostics, summarised only when asked for by name
DIAGNOSTICS = ("gap_samples", "latency_count")
SUMMARY_COLUMNS = ["domain", "quantity", "n", "median", "iqr", "ci_low", "ci_high", "ci_reliable", "unit", "source",
                   "method"]
SPEARMAN_DEFAULT = ["input_size", "latency_median_s", "gpu_sm_util_mean_pct", "gpu_mem_used_peak_mib",
                    "gpu_proc_mem_peak_mib", "process_rss_peak_mib"]


def default_by(study: Study) -> list[str]:
    """The dimensions a summary groups by by default: ``model`` and ``input_size`` always, and every
    other dimension that varies in the study."""
    varying = set(study.varying())
    return [d for d in study.dimensions if d in varying or d in ("model", "input_size")]


def bootstrap_median_ci(values: np.ndarray, *, n_boot: int = 2000, confidence: float = 0.95,
                        rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the median of each column of ``values`` (runs x quantities).

    NaN are ignored (the median of a resample is that of its sound values).
    Resampling n of n values and sorting the drawn positions lets every column
    share one sorted index draw: the order statistics of a resample of a
    sorted column are the column at the sorted positions. The median of a
    resample is then the mean of the column at two of those positions, a pair
    shared by every column with as many sound values; a column's ``n_boot``
    medians are its values at the distinct pairs drawn, each counted as often
    as it was drawn, and the percentiles of that multiset are those
    ``np.quantile`` takes of the ``n_boot`` medians (linear interpolation).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    values = np.sort(np.asarray(values, dtype=float), axis=0)  # NaN last
    n, q = values.shape
    positions = np.sort(rng.integers(0, n, size=(n_boot, n)), axis=1)
    alpha = (1 - confidence) / 2
    quantiles = np.array([alpha, 1 - alpha])
    sound = (~np.isnan(values)).sum(axis=0)
    bounds = np.full((2, q), np.nan)
    draws = np.arange(n_boot)
    for m in np.unique(sound[sound > 0]):
        k = (positions < m).sum(axis=1)  # sound values in each resample
        drawn = k > 0
        if not drawn.any():  # no resample drew a sound value: NaN
            continue
        lo, hi = np.maximum((k - 1) // 2, 0), k // 2
        pairs, counts = np.unique(positions[draws, lo][drawn] * n + positions[draws, hi][drawn], return_counts=True)
        first, second = np.divmod(pairs, n)
        columns = np.flatnonzero(sound == m)
        for at in range(0, len(columns), BOOTSTRAP_BLOCK):
            block = columns[at:at + BOOTSTRAP_BLOCK]
            of_block = values[:, block]  # the block's columns first: the whole matrix at the pairs is not taken
            bounds[:, block] = _weighted_quantiles(0.5 * (of_block[first] + of_block[second]), counts, quantiles)
    return bounds[0], bounds[1]


def _weighted_quantiles(medians: np.ndarray, counts: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """``np.quantile`` (linear) along axis 0 of the multiset where row ``i`` of ``medians`` (pairs x columns)
    appears ``counts[i]`` times; one row per quantile."""
    total = int(counts.sum())
    order = np.argsort(medians, axis=0, kind="stable")
    ranked = np.take_along_axis(medians, order, axis=0)
    ends = np.cumsum(counts[order], axis=0)  # the multiset's rank after each sorted value, per column
    columns = np.arange(medians.shape[1])

    def at_rank(rank: int) -> np.ndarray:
        return ranked[(ends <= rank).sum(axis=0), columns]

    out = np.empty((len(quantiles), medians.shape[1]))
    for j, virtual in enumerate((total - 1) * quantiles):  # as np.quantile's "linear" method
        if virtual >= total - 1:
            out[j] = at_rank(total - 1)
            continue
        previous = int(np.floor(virtual))
        gamma = virtual - previous
        a, b = at_rank(previous), at_rank(previous + 1)
        out[j] = b - (b - a) * (1 - gamma) if gamma >= 0.5 else a + (b - a) * gamma
    return out


def bootstrap_ratio_ci(values: np.ndarray, baseline: np.ndarray, *, paired: bool = False, n_boot: int = 2000,
                       confidence: float = 0.95, rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Percentile bootstrap CI of ``median(values) / median(baseline)`` (two 1-D arrays of one quantity's
    per-run values, no NaN, both positive for the ratio to mean anything).

    Unpaired: each side is resampled on its own (``n_boot`` resamples of
    ``len(values)`` and of ``len(baseline)`` values with replacement). Paired:
    ``values[i]`` and ``baseline[i]`` come from the same run index and are
    drawn together, so that a drift shared by both sides cancels in the ratio;
    the arrays must then have one length. ``scipy.stats.bootstrap`` with
    ``method="percentile"`` does the resampling. Returns ``(nan, nan)`` when a
    side has fewer than two values; raises ``ValueError`` for paired arrays of
    different lengths.
    """
    from scipy import stats  # imported on first use: it costs a fifth of the package's import (memory and time)

    values, baseline = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    if paired and len(values) != len(baseline):
        raise ValueError(f"paired bootstrap of {len(values)} and {len(baseline)} values: the lengths must agree")
    if min(len(values), len(baseline)) < 2:
        return np.nan, np.nan
    result = stats.bootstrap((values, baseline), _ratio_of_medians, n_resamples=n_boot, vectorized=True,
                             paired=paired, confidence_level=confidence, method="percentile",
                             rng=rng if rng is not None else np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _ratio_of_medians(values: np.ndarray, baseline: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(values, axis=axis) / np.median(baseline, axis=axis)


def summarize(study: Study, by: Sequence[str] | None = None, *, quantities: Sequence[str] | None = None,
              n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per (point, domain, quantity): ``by`` columns, then ``SUMMARY_COLUMNS``.

    ``by``: the grouping dimensions (default ``default_by(study)``); ``quantities``:
    those to summarise (default: every one but the per-run diagnostics). Labels
    (``source``, ``method``, ``unit``) are the runs' own, ``mixed`` where they differ.
    Seeded: the same study gives the same CIs.
    """
    by = list(by) if by is not None else default_by(study)
    unknown = [d for d in by if d not in study.runs.columns]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}: not a column of the runs "
                         f"(dimensions: {', '.join(study.dimensions)})")
    rows = study.quantities  # only the columns needed: a copy of every identity column costs as much as the rest
    rows = rows[[c for c in dict.fromkeys(["run_id", *by, "domain", "quantity", "value", "unit", "source", "method"])
                 if c in rows]]
    rows = rows[rows["quantity"].isin(quantities)] if quantities is not None else \
        rows[~rows["quantity"].isin(DIAGNOSTICS)]
    if not set(by) <= set(rows.columns):
        rows = rows.merge(study.runs[["run_id", *[d for d in by if d not in rows]]], on="run_id")
    keys = [*by, "domain", "quantity"]
    groups = rows.groupby(keys, sort=True, dropna=False, observed=True)
    table = groups["value"].agg(["count", "size", "median"]).rename(columns={"count": "n"})
    quartiles = groups["value"].quantile([0.25, 0.75]).unstack()
    table["iqr"] = quartiles[0.75] - quartiles[0.25]
    for label in ("unit", "source", "method"):
        first, distinct = groups[label].first(), groups[label].nunique()
        table[label] = first.astype(object).where(distinct <= 1, "mixed").astype("category")
    table["ci_low"], table["ci_high"] = _group_cis(rows, groups, table["size"], n_boot, confidence,
                                                   np.random.default_rng(seed))
    table = table[table["n"] > 0].reset_index()
    table["ci_reliable"] = table["n"] >= MIN_RUNS_FOR_CI
    table["n"] = table["n"].astype(int)
    return table[[*by, *SUMMARY_COLUMNS]]


def _group_cis(rows: pd.DataFrame, groups, sizes: pd.Series, n_boot: int, confidence: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap CIs of the median of every group of ``rows`` at once: the groups of one size are
    stacked as the columns of one matrix (``bootstrap_median_ci`` resamples every column alike)."""
    order = np.argsort(groups.ngroup().to_numpy(), kind="stable")
    values = rows["value"].to_numpy(dtype=float)[order]
    starts = np.r_[0, np.cumsum(sizes.to_numpy())[:-1]]
    low, high = np.full(len(sizes), np.nan), np.full(len(sizes), np.nan)
    for size in np.unique(sizes.to_numpy()):
        which = np.flatnonzero(sizes.to_numpy() == size)
        matrix = values[starts[which][None, :] + np.arange(size)[:, None]]
        sound = ~np.isnan(matrix).all(axis=0)
        if sound.any():
            low[which[sound]], high[which[sound]] = bootstrap_median_ci(matrix[:, sound], n_boot=n_boot,
                                                                        confidence=confidence, rng=rng)
    return low, high


def agreed(values: Iterable) -> object:
    """The one value of ``values`` (NaN and None aside), ``mixed`` when they differ, None when there is none."""
    distinct = pd.Series(list(values), dtype=object).dropna().unique()
    return distinct[0] if len(distinct) == 1 else ("mixed" if len(distinct) else None)


def spearman(study: Study | pd.DataFrame, columns: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spearman's rho and its p-value between per-run quantities, pairwise over the runs where both are known.

    ``study``: a ``Study`` (its ``wide()`` table) or a wide table of runs. By
    default: input size, median latency, every domain's energy per inference,
    SM utilisation and memory peaks. Constant or all-NaN columns are dropped
    with an ``AnalysisWarning``.
    """
    from scipy import stats

    runs = study.wide() if isinstance(study, Study) else study
    if columns is None:
        energies = [c for c in runs.columns if c.endswith("_energy_per_inference_j") and "_dynamic_" not in c]
        columns = [c for c in SPEARMAN_DEFAULT[:2] + energies + SPEARMAN_DEFAULT[2:] if c in runs]
    data = runs[columns].apply(pd.to_numeric, errors="coerce")
    flat = [c for c in columns if data[c].nunique() < 2]
    if flat:
        warn(f"spearman: constant or all-NaN column(s) left out: {', '.join(flat)}")
    kept = [c for c in columns if c not in flat]
    rho = pd.DataFrame(np.eye(len(kept)), index=kept, columns=kept)
    p = pd.DataFrame(np.zeros((len(kept), len(kept))), index=kept, columns=kept)
    for i, a in enumerate(kept):
        for b in kept[i + 1:]:
            pair = data[[a, b]].dropna()
            r, pv = stats.spearmanr(pair[a], pair[b]) if len(pair) >= 3 else (np.nan, np.nan)
            rho.loc[a, b] = rho.loc[b, a] = r
            p.loc[a, b] = p.loc[b, a] = pv
    return rho, p

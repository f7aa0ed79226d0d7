"""Statistics over runs: medians, IQR, bootstrap CIs of the median, Spearman correlations."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .load import Study, warn

GROUP = ["model", "input_size"]
LABELS = ("_source", "_method")
SPEARMAN_DEFAULT = ["input_size", "latency_median_s", "sm_util_mean_pct", "gpu_mem_peak_mb",
                    "gpu_proc_mem_peak_mb", "rss_peak_mb"]


def _runs(study_or_runs: Study | pd.DataFrame) -> pd.DataFrame:
    return study_or_runs.runs if isinstance(study_or_runs, Study) else study_or_runs


def quantities(runs: pd.DataFrame) -> list[str]:
    """The numeric per-run quantities of a runs table (identity columns excluded)."""
    return [c for c in runs.columns if c not in ("run", *GROUP)
            and pd.api.types.is_numeric_dtype(runs[c]) and not pd.api.types.is_bool_dtype(runs[c])]


def bootstrap_median_ci(values: np.ndarray, *, n_boot: int = 2000, confidence: float = 0.95,
                        rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the median of each column of ``values`` (runs x quantities).

    NaN are ignored (the median of a resample is that of its sound values).
    Resampling n of n values and sorting the drawn positions lets every column
    share one sorted index draw: the order statistics of a resample of a
    sorted column are the column at the sorted positions.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    values = np.sort(np.asarray(values, dtype=float), axis=0)  # NaN last
    n, q = values.shape
    positions = np.sort(rng.integers(0, n, size=(n_boot, n)), axis=1)
    distinct, column_of = np.unique((~np.isnan(values)).sum(axis=0), return_inverse=True)
    k = (positions[:, :, None] < distinct).sum(axis=1)[:, column_of]  # sound values per resample and column
    lo, hi = np.maximum((k - 1) // 2, 0), k // 2
    take = np.take_along_axis
    columns = np.arange(q)
    medians = 0.5 * (values[take(positions, lo, axis=1), columns] + values[take(positions, hi, axis=1), columns])
    medians[k == 0] = np.nan
    alpha = (1 - confidence) / 2
    low, high = np.quantile(medians, [alpha, 1 - alpha], axis=0)
    for c in np.flatnonzero(np.isnan(low) & ~np.isnan(medians).all(axis=0)):  # resamples with no sound value
        low[c], high[c] = np.quantile(medians[~np.isnan(medians[:, c]), c], [alpha, 1 - alpha])
    return low, high


def summarize(study_or_runs: Study | pd.DataFrame, *, n_boot: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """One row per (model, input size): ``q_median, q_iqr, q_ci_low, q_ci_high`` for every
    numeric quantity ``q`` of the runs table, ``n_runs``, and the ``<domain>_source``
    and ``<domain>_method`` labels (``mixed`` where runs disagree)."""
    runs = _runs(study_or_runs)
    numeric = quantities(runs)
    groups = runs.groupby(GROUP, sort=True, dropna=False)
    median = groups[numeric].median()
    iqr = groups[numeric].quantile(0.75) - groups[numeric].quantile(0.25)
    rng = np.random.default_rng(seed)
    bounds = [bootstrap_median_ci(frame[numeric].to_numpy(dtype=float), n_boot=n_boot, confidence=confidence,
                                  rng=rng) for _, frame in groups]
    parts = np.stack([median.to_numpy(), iqr.to_numpy(), *(np.array(b) for b in zip(*bounds))], axis=2)
    names = [f"{q}_{part}" for q in numeric for part in ("median", "iqr", "ci_low", "ci_high")]
    out = pd.DataFrame(parts.reshape(len(median), -1), index=median.index, columns=names)
    out.insert(0, "n_runs", groups.size())
    labels = [c for c in runs.columns if c.endswith(LABELS)]
    if labels:
        first, distinct = groups[labels].first(), groups[labels].nunique()
        out = out.join(first.where(distinct <= 1, "mixed"))
    return out.reset_index()


def spearman(study_or_runs: Study | pd.DataFrame, columns: list[str] | None = None) -> tuple[pd.DataFrame,
                                                                                                pd.DataFrame]:
    """Spearman's rho and its p-value between per-run quantities, pairwise over complete runs.

    By default: input size, median latency, every ``<domain>_energy_per_inference_j``,
    SM utilisation and memory peaks.  Constant or all-NaN columns are dropped
    with an ``AnalysisWarning``.
    """
    runs = _runs(study_or_runs)
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

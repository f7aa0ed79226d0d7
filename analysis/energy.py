"""Energy over exact windows: wrap-aware counter differences and trapezoids.

Every function works on the samples of many runs at once, as flat arrays sorted
by run then time, where ``run`` is an integer code ``0 .. n_runs-1``; each
returns one value per run.  A value that cannot be computed soundly is NaN,
with a one-line reason in the matching ``problems`` entry (``None`` when
sound) — never a zero.

Gap policy: a trapezoid is never drawn across a missing power reading; a run
whose window lacks any reading of a power channel gets NaN energy for that
domain (the reason says how many readings were missing).  A counter only needs
its readings at the two edges of the window, so gaps in between cost nothing.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd


class Window(NamedTuple):
    mask: np.ndarray        # per sample: inside its run's window
    t_start: np.ndarray     # per run, s
    t_end: np.ndarray       # per run, s
    has_start: np.ndarray   # per run: a ``start`` sample exists
    has_end: np.ndarray     # per run: an ``end`` sample exists


def window(run: np.ndarray, t_s: np.ndarray, is_start: np.ndarray, is_end: np.ndarray, n_runs: int) -> Window:
    """The window ``[t(start), t(end)]`` of each run.

    A run without a ``start`` (``end``) sample starts (ends) at its first (last)
    sample, and ``has_start`` (``has_end``) says so.
    """
    t = pd.Series(t_s)
    runs = pd.RangeIndex(n_runs)
    start = t.where(is_start).groupby(run).min().reindex(runs).to_numpy()
    end = t.where(is_end).groupby(run).max().reindex(runs).to_numpy()
    has_start, has_end = ~np.isnan(start), ~np.isnan(end)
    start = np.where(has_start, start, t.groupby(run).min().reindex(runs).to_numpy())
    end = np.where(has_end, end, t.groupby(run).max().reindex(runs).to_numpy())
    mask = (t_s >= start[run]) & (t_s <= end[run])
    return Window(mask, start, end, has_start, has_end)


def missing(run: np.ndarray, values: np.ndarray, n_runs: int) -> np.ndarray:
    """How many samples of each run lack a reading (NaN)."""
    return np.bincount(run[np.isnan(values)], minlength=n_runs)


def run_edges(run: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the first and of the last sample of each run present, in run order."""
    bounds = np.flatnonzero(np.diff(run)) + 1
    return np.r_[0, bounds], np.r_[bounds, len(run)] - 1


def counter_energy(run: np.ndarray, counter_j: np.ndarray, wrap_j: np.ndarray,
                   n_runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Energy of a cumulative counter between the first and last sample of each run.

    Samples must already be cut to the window.  Every backward step between two
    consecutive readings is a wrap and adds that run's ``wrap_j``; a backward
    step where ``wrap_j`` is NaN (a counter that should never wrap), or one of
    at most half of ``wrap_j`` (a glitch: a wrap drops from near the top to
    near zero), makes the run's energy NaN, as does a missing reading at
    either edge.
    Returns ``(energy_j, problems)``.
    """
    counter_j = np.asarray(counter_j, dtype=float)
    first, last = run_edges(run)
    sound = ~np.isnan(counter_j)
    step_run, steps = run[sound], np.diff(counter_j[sound])
    backward = (steps < 0) & (step_run[1:] == step_run[:-1])
    # a wrap drops from near the top to near zero; a smaller drop is a glitch, not a wrap
    glitch = backward & (-steps <= 0.5 * wrap_j[step_run[1:]])
    wraps = np.bincount(step_run[1:][backward], minlength=n_runs)
    glitches = np.bincount(step_run[1:][glitch], minlength=n_runs)
    present = np.zeros(n_runs, dtype=bool)
    present[run] = True
    edges = np.full((2, n_runs), np.nan)
    edges[:, run[first]] = counter_j[first], counter_j[last]
    energy = edges[1] - edges[0] + wraps * np.where(wraps > 0, wrap_j, 0.0)
    problems = np.full(n_runs, None, dtype=object)
    problems[present & np.isnan(edges).any(axis=0)] = "counter reading missing at a window edge"
    problems[np.bincount(run, minlength=n_runs) == 1] = "fewer than two samples in the window"
    no_wrap = (wraps > 0) & np.isnan(wrap_j)
    problems[no_wrap] = [f"counter went backwards {w} time(s) but has no wrap value" for w in wraps[no_wrap]]
    problems[glitches > 0] = [f"counter went backwards {g} time(s) by less than half its wrap value "
                              f"({w:g} J): not a wrap" for g, w in zip(glitches[glitches > 0], wrap_j[glitches > 0])]
    problems[~present] = "no sample in the window"
    energy[problems.astype(bool)] = np.nan
    return energy, problems


def aligned_counter_energy(run: np.ndarray, t_s: np.ndarray, counter_j: np.ndarray,
                           n_runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Energy of a counter that updates less often than it is sampled, aligned on its updates.

    A counter like NVML's total energy moves in steps (every 100 ms or so): a
    read returns its value at its last update, so the plain difference between
    the window's edges measures a stretch shifted by up to one update period at
    each edge.  Where the samples are at least twice as frequent as the updates
    (the reading changes in at most half of the intervals, and at least three
    times), each update is placed in the middle of the interval in which the
    reading changed.  The counter then gives the energy between the first and
    the last update seen in the window exactly, and the two slivers outside
    them (before the first, after the last, each shorter than an update period)
    are charged at the mean power the counter shows over the adjacent update
    period.  This assumes that the counter, at an update, holds the energy up to
    that update.  Samples must already be cut to the window, one segment per
    run.  A run with a missing reading, a backward step, too few changes, or
    one of the four updates used (the first two, the last two) read after an
    interval longer than 3/4 of the run's median time between updates (a late
    sample would misplace it) is left to the plain difference
    (``counter_energy``).
    Returns ``(energy_j, aligned)``: NaN and ``False`` where the alignment does not apply.
    """
    t_s, counter_j = np.asarray(t_s, dtype=float), np.asarray(counter_j, dtype=float)
    energy, aligned = np.full(n_runs, np.nan), np.zeros(n_runs, dtype=bool)
    if len(run) < 2:
        return energy, aligned
    same = run[1:] == run[:-1]
    step = np.diff(counter_j)
    after = np.flatnonzero(same & (step != 0)) + 1  # the first sample reading each update
    intervals = np.bincount(run[1:][same], minlength=n_runs)
    changes = np.bincount(run[after], minlength=n_runs)
    unusable = (np.bincount(run[np.isnan(counter_j)], minlength=n_runs)
                + np.bincount(run[1:][same & ~(step >= 0)], minlength=n_runs)) > 0
    aligned = ~unusable & (changes >= 3) & (2 * changes <= intervals)
    if not aligned.any():
        return energy, aligned
    runs, block = np.unique(run[after], return_index=True)
    keep = aligned[runs]
    runs, block, count = runs[keep], block[keep], changes[runs[keep]]
    used = np.column_stack([block, block + 1, block + count - 2, block + count - 1])
    # each update used must be placed to within 3/8 of the run's typical update period: an interval
    # stretched around it (a late tick) would misplace it and take the slivers' power from the wrong stretch
    update = 0.5 * (t_s[after - 1] + t_s[after])  # where each update is placed
    width = t_s[after] - t_s[after - 1]
    within = run[after][1:] == run[after][:-1]
    typical = pd.Series(np.diff(update)[within]).groupby(run[after][1:][within]).median().reindex(runs).to_numpy()
    placed = (width[used] <= 0.75 * typical[:, None]).all(axis=1)
    aligned[runs[~placed]] = False
    runs, block, count, used = runs[placed], block[placed], count[placed], used[placed]
    first, second, before_last, last = after[used].T
    run_first, run_last = run_edges(run)
    start, end = (edge[np.searchsorted(run[run_first], runs)] for edge in (run_first, run_last))
    t_first, t_second, t_before_last, t_last = update[used].T
    power_head = (counter_j[second] - counter_j[first]) / (t_second - t_first)
    power_tail = (counter_j[last] - counter_j[before_last]) / (t_last - t_before_last)
    energy[runs] = (counter_j[end] - counter_j[first] + power_head * (t_first - t_s[start])
                    + power_tail * (t_s[end] - t_last))
    return energy, aligned


def trapezoid_energy(run: np.ndarray, t_s: np.ndarray, power_w: np.ndarray, n_runs: int,
                     segment: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid integral of power over each run's samples (already cut to the window).

    Consecutive samples are joined only within one recording ``segment`` (an
    integer per sample; default: one segment per run).  A run
    with any missing power reading, or with no interval to integrate, gets NaN.
    Returns ``(energy_j, problems)``.
    """
    power_w = np.asarray(power_w, dtype=float)
    joined = run[1:] == run[:-1]
    if segment is not None:
        joined &= segment[1:] == segment[:-1]
    area = 0.5 * (power_w[1:] + power_w[:-1]) * np.diff(t_s)
    energy = np.bincount(run[1:][joined], weights=area[joined], minlength=n_runs).astype(float)
    intervals = np.bincount(run[1:][joined], minlength=n_runs)
    gaps = missing(run, power_w, n_runs)
    problems = np.full(n_runs, None, dtype=object)
    problems[intervals == 0] = "fewer than two samples in the window"
    problems[gaps > 0] = [f"{g} power reading(s) missing in the window; not integrated across gaps"
                          for g in gaps[gaps > 0]]
    energy[problems.astype(bool)] = np.nan
    return energy, problems


def window_seconds(run: np.ndarray, t_s: np.ndarray, n_runs: int, segment: np.ndarray | None = None) -> np.ndarray:
    """Duration of each run's window: the sum over its segments of last − first sample time."""
    t = pd.Series(t_s).groupby([run, np.zeros_like(run) if segment is None else segment])
    spans = (t.max() - t.min()).groupby(level=0).sum()
    return spans.reindex(pd.RangeIndex(n_runs)).to_numpy()


def energy_domain(domain: str) -> str:
    """The reported domain of a sensor domain: sockets are summed, devices kept."""
    if domain.startswith("package-"):
        return "cpu_package"
    if domain.startswith("dram-"):
        return "dram"
    return domain


def combine_domains(per_domain: pd.DataFrame) -> pd.DataFrame:
    """Sum sensor domains into reported domains, per run.

    ``per_domain`` has one row per (``run``, sensor ``domain``) with
    ``energy_j, gaps, idle_power_w, source, method``.  ``package-<s>`` rows sum
    into ``cpu_package``, ``dram-<s>`` into ``dram``; ``gpu<i>`` rows are kept
    and also summed into ``gpu`` unless the run has a ``gpu`` domain of its
    own.  A sum with a NaN member is NaN; ``method`` is ``mixed`` when members
    differ.
    """
    rows = per_domain.assign(domain=per_domain["domain"].map(energy_domain))
    has_total = rows["run"].isin(rows.loc[rows["domain"] == "gpu", "run"])
    devices = rows[rows["domain"].str.fullmatch(r"gpu\d+") & ~has_total].assign(domain="gpu")
    rows = pd.concat([rows, devices], ignore_index=True)
    grouped = rows.groupby(["run", "domain"], sort=True)
    out = grouped[["energy_j", "idle_power_w"]].sum(min_count=1)
    out[grouped[["energy_j", "idle_power_w"]].count() < grouped.size().to_numpy()[:, None]] = np.nan
    out["gaps"] = grouped["gaps"].sum()
    out["source"] = grouped["source"].first()
    out["method"] = grouped["method"].first().where(grouped["method"].nunique() == 1, "mixed")
    return out.reset_index()

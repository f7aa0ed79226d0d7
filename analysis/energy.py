"""Energy over exact windows: checked, wrap-aware counter differences, trapezoids and interval means.

Every function works on the samples of many runs at once, as flat arrays sorted
by run then time, where ``run`` is an integer code ``0 .. n_runs-1``; each
returns one value per run.  A value that cannot be computed soundly is NaN,
with a one-line reason in the matching ``problems`` entry (``None`` when
sound) — never a zero.

Gap policy: a trapezoid is never drawn across a missing power reading; a run
whose window lacks any reading of a power channel gets NaN energy for that
domain (the reason says how many readings were missing).  A counter only needs
its readings at the two edges of the window, so gaps in between cost nothing;
its readings are checked first (``counter_glitches``): a reading outside the
counter's range, or one that breaks the sequence on its own, is dropped.
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


EDGE_STEP_FACTOR = 10  # a first or last counter step this many times the largest step inside the window is a glitch


def _ahead(x: np.ndarray, y: np.ndarray, wrap_j: np.ndarray) -> np.ndarray:
    """How far a counter moved from ``x`` to ``y`` (J, both in ``[0, wrap_j)``): ``y - x``, plus ``wrap_j``
    where it went back and wraps (``y - x`` modulo ``wrap_j``)."""
    step = y - x
    with np.errstate(invalid="ignore"):
        return step + np.where(step < 0, np.nan_to_num(wrap_j, nan=0.0), 0.0)


def counter_glitches(run: np.ndarray, counter_j: np.ndarray, wrap_j: np.ndarray) -> np.ndarray:
    """Per reading of a cumulative counter: True where the reading is not data.

    ``run``: run code per reading (sorted by run, then time); ``counter_j``:
    readings (J, NaN where missing); ``wrap_j``: per run, the value at which
    the counter wraps back to 0 (NaN for a counter that never wraps).
    A reading is not data when it lies outside ``[0, wrap_j)``, or when it
    breaks the sequence on its own (``_lone_glitches``): a reading that does
    not lie between its neighbours (on the counter's circle, for one that
    wraps) is a glitch, not a wrap and back; a wrap is only a wrap when the
    readings after it continue from near zero. At a run's first or last
    reading, which has one neighbour only, a step more than
    ``EDGE_STEP_FACTOR`` times the largest step between the readings inside
    (at least four readings) marks a glitch. Several readings in a row off the
    sequence are left as they are: ``counter_energy`` then finds the counter
    non-monotonic. This assumes the counter moves by less than half its wrap
    value over two sampling intervals (RAPL's package counter wraps after
    minutes at full power). Returns a boolean array shaped like ``counter_j``.
    """
    counter_j = np.asarray(counter_j, dtype=float)
    wrap = np.asarray(wrap_j, dtype=float)[run]
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(counter_j) & ((counter_j < 0) | (counter_j >= wrap))
    at = np.flatnonzero(~np.isnan(counter_j) & ~bad)
    r, v, w = run[at], counter_j[at], wrap[at]
    back = (np.diff(v) < 0) & (r[1:] == r[:-1])
    lone = _lone_glitches(r, v, w) if back.any() else np.zeros(len(at), dtype=bool)  # off the way: a step back
    kept = np.flatnonzero(~lone)
    lone[kept[_edge_glitches(r[kept], v[kept], w[kept])]] = True
    bad[at[lone]] = True
    return bad


def _between(a: np.ndarray, b: np.ndarray, c: np.ndarray, wrap: np.ndarray) -> np.ndarray:
    """Whether ``b`` lies on the counter's way from ``a`` to ``c`` (around the circle where it wraps)."""
    around = _ahead(a, b, wrap) + _ahead(b, c, wrap) - _ahead(a, c, wrap)  # one more turn when b is off the way
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(wrap), (a <= b) & (b <= c), around <= wrap / 2)


def _lone_glitches(run: np.ndarray, value: np.ndarray, wrap: np.ndarray) -> np.ndarray:
    """Readings (sound ones, in order) that are off the sequence on their own.

    A reading is off when it does not lie between its neighbours while they are
    in order. One off reading between sound ones is a glitch; of two off in a
    row (a reading slightly out of order makes its neighbour look off too), the
    one whose removal leaves the other between the sound readings around them;
    three or more in a row are not a lone glitch.
    """
    m = len(value)
    off = np.zeros(m + 2, dtype=bool)  # padded: off[i + 1] is reading i's
    if m >= 3:
        a, b, c, wb = value[:-2], value[1:-1], value[2:], wrap[1:-1]
        within = (run[:-2] == run[1:-1]) & (run[1:-1] == run[2:])
        ordered = np.where(np.isnan(wb), a <= c, True)
        off[2:-2] = within & ordered & ~_between(a, b, c, wb)
    lone = off[1:-1] & ~off[:-2] & ~off[2:]
    pair = np.flatnonzero(off[1:-2] & off[2:-1] & ~off[:-3] & ~off[3:])  # readings i, i + 1 off, their neighbours not
    pair = pair[(pair >= 1) & (pair + 2 < m)]
    pair = pair[(run[pair - 1] == run[pair]) & (run[pair + 2] == run[pair])]
    if len(pair):
        outer = value[pair - 1], value[pair + 2]
        keep_first = _between(outer[0], value[pair], outer[1], wrap[pair])
        keep_second = _between(outer[0], value[pair + 1], outer[1], wrap[pair])
        lone[pair[keep_first] + 1] = True
        lone[pair[~keep_first & keep_second]] = True
    return lone


def _edge_glitches(run: np.ndarray, value: np.ndarray, wrap: np.ndarray) -> np.ndarray:
    """Positions of first or last readings whose step is ``EDGE_STEP_FACTOR`` times the largest inner step."""
    if len(run) < 4:
        return np.array([], dtype=int)
    step = _ahead(value[:-1], value[1:], wrap[1:])
    same = run[1:] == run[:-1]
    first = np.r_[True, ~same]  # reading i opens its run
    last = np.r_[~same, True]
    inner = same & ~first[:-1] & ~last[1:]
    largest = np.maximum.reduceat(np.r_[np.where(inner, step, -np.inf), -np.inf], np.flatnonzero(first))
    top = largest[np.cumsum(first)[:-1] - 1]  # of the run of each step's first reading
    with np.errstate(invalid="ignore"):
        far = same & (top > 0) & (step > EDGE_STEP_FACTOR * top)
    return np.r_[np.flatnonzero(far & first[:-1]), np.flatnonzero(far & last[1:]) + 1]


def out_of_time_order(sequence: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """Per sample: True where its time breaks the order of its sequence.

    ``sequence``: one integer code per sample (a run's segment), samples grouped
    by it in file order; ``t_s``: their times (s). A sample whose time is not
    between its neighbours' while theirs are in order is out of order on its
    own (as ``counter_glitches`` finds a lone counter glitch); after those, any
    sample earlier than one before it is out of order too.
    """
    t_s = np.asarray(t_s, dtype=float)
    same = sequence[1:] == sequence[:-1]
    if not (np.diff(t_s)[same] < 0).any():
        return np.zeros(len(t_s), dtype=bool)
    lone = _lone_glitches(sequence, t_s, np.full(len(t_s), np.nan))
    latest = pd.Series(np.where(lone, -np.inf, t_s)).groupby(sequence).cummax()
    before = latest.groupby(sequence).shift(1).to_numpy()
    with np.errstate(invalid="ignore"):
        return lone | (t_s < before)


def counter_energy(run: np.ndarray, counter_j: np.ndarray, wrap_j: np.ndarray, n_runs: int,
                   dropped: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Energy of a cumulative counter between the first and last sample of each run.

    Samples must already be cut to the window. Readings that are not data
    (``dropped``, as ``counter_glitches`` finds them, which is called when it
    is None) are dropped first. Every remaining backward step is
    a wrap and adds that run's ``wrap_j``; a backward step where ``wrap_j`` is
    NaN (a counter that should never wrap), or any step of more than half of
    ``wrap_j`` (a wrap drops from near the top to near zero, and the readings
    after it continue from there), makes the run's energy NaN, as does a
    missing reading at either edge.
    Returns ``(energy_j, problems)``.
    """
    dropped = counter_glitches(run, counter_j, wrap_j) if dropped is None else dropped
    counter_j = np.where(dropped, np.nan, np.asarray(counter_j, dtype=float))
    first, last = run_edges(run)
    sound = ~np.isnan(counter_j)
    step_run, value = run[sound], counter_j[sound]
    same = step_run[1:] == step_run[:-1]
    wrap = wrap_j[step_run[1:]]
    moved = _ahead(value[:-1], value[1:], wrap)
    backward = same & (value[1:] < value[:-1])
    with np.errstate(invalid="ignore"):
        too_far = same & (moved > wrap / 2)
    wraps = np.bincount(step_run[1:][backward & ~np.isnan(wrap)], minlength=n_runs)
    breaks = np.bincount(step_run[1:][too_far], minlength=n_runs)
    backwards = np.bincount(step_run[1:][backward], minlength=n_runs)
    present = np.zeros(n_runs, dtype=bool)
    present[run] = True
    edges = np.full((2, n_runs), np.nan)
    edges[:, run[first]] = counter_j[first], counter_j[last]
    energy = edges[1] - edges[0] + wraps * np.where(wraps > 0, wrap_j, 0.0)
    problems = np.full(n_runs, None, dtype=object)
    problems[present & np.isnan(edges).any(axis=0)] = "counter reading missing at a window edge"
    problems[np.bincount(run, minlength=n_runs) == 1] = "fewer than two samples in the window"
    no_wrap = (backwards > 0) & np.isnan(wrap_j)
    problems[no_wrap] = [f"counter went backwards {k} time(s) but has no wrap value (not a lone glitch)"
                         for k in backwards[no_wrap]]
    problems[breaks > 0] = [f"counter went backwards or jumped {k} time(s) by more than half its wrap value "
                            f"({w:g} J): not a wrap, and not a lone glitch"
                            for k, w in zip(breaks[breaks > 0], wrap_j[breaks > 0])]
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


def interval_mean_energy(run: np.ndarray, interval_s: np.ndarray, power_w: np.ndarray,
                         n_runs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy of readings that each give the mean power over the interval ending at their sample.

    Such a reading (RAPL's and NVML's powers in AIPowerMeter's files: an energy
    difference over the time since the previous reading) stands for its whole
    interval, ``interval_s`` long (s), so the energy is the sum of power ×
    interval. A reading whose interval is unknown (NaN: after a clock jump) is
    not integrated; a missing power reading (NaN) where the interval is known
    makes the run's energy NaN (gap policy), as does a run with no interval.
    Returns ``(energy_j, problems, covered_s)``: ``covered_s`` is the time the
    integrated intervals cover, per run.
    """
    interval_s, power_w = np.asarray(interval_s, dtype=float), np.asarray(power_w, dtype=float)
    known = ~np.isnan(interval_s)
    energy = np.bincount(run[known], weights=(power_w * interval_s)[known], minlength=n_runs).astype(float)
    covered = np.bincount(run[known], weights=interval_s[known], minlength=n_runs).astype(float)
    gaps = np.bincount(run[known & np.isnan(power_w)], minlength=n_runs)
    problems = np.full(n_runs, None, dtype=object)
    problems[~(covered > 0)] = "no interval to integrate in the window"
    problems[gaps > 0] = [f"{g} power reading(s) missing in the window; not integrated across gaps"
                          for g in gaps[gaps > 0]]
    energy[problems.astype(bool)] = np.nan
    return energy, problems, covered


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

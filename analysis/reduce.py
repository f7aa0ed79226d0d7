"""Per-run reductions of sample frames and latencies: what a study keeps of each run.

A reduction turns the wide sample frame of a few runs into long rows, one per
(run, sensor domain, quantity): the energy of each sensor domain over the
run's window (its counter, else its interval means, else a trapezoid of its
power), utilisation and memory over the window, and the window itself; and a
run's latencies into their statistics. Nothing downstream needs the samples
again, so memory grows with the number of runs, not with their samples.

Readings are checked before they are trusted: samples out of time order are
dropped, impossible powers and counter readings that are not data
(``energy.counter_glitches``) are treated as missing, and a counter that did
not resolve the window (it did not move, or the window is shorter than its
update period) gives way to the domain's power readings, or NaN: never 0 J.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from . import energy as en
from .problems import warn

ROW_COLUMNS = ["run_id", "domain", "quantity", "value", "unit", "source", "method", "note"]
# (metric of a sensor domain, statistic over the window) -> quantity, unit
WINDOW_STATS = {
    ("sm_util_pct", "mean"): ("sm_util_mean_pct", "%"),
    ("proc_sm_util_pct", "mean"): ("proc_sm_util_mean_pct", "%"),
    ("mem_used_mib", "max"): ("mem_used_peak_mib", "MiB"),
    ("proc_mem_mib", "max"): ("proc_mem_peak_mib", "MiB"),
    ("rss_mib", "max"): ("rss_peak_mib", "MiB"),
    ("pss_mib", "max"): ("pss_peak_mib", "MiB"),
    ("uss_mib", "max"): ("uss_peak_mib", "MiB"),
    ("cpu_share", "mean"): ("cpu_share_mean", "CPUs"),
    ("cpu_busy_share", "mean"): ("cpu_busy_share_mean", "fraction of busy CPU time"),
}
LATENCY_STATS = {"latency_median_s": 0.5, "latency_p90_s": 0.9, "latency_p99_s": 0.99}
# how often a sensor's energy counter moves (s): a window shorter than this is not resolved by it
COUNTER_UPDATE_S = {"nvml": 0.1}
# the CPU estimate's load comes from /proc/stat, which counts CPU time in clock ticks of 10 ms (USER_HZ = 100)
ESTIMATE_RESOLUTION_S = 0.01
# domains that draw power whenever the machine runs: a counter of theirs that does not move has not resolved
# the window, and a zero mean power over an interval is a counter that did not move under it
ALWAYS_POWERED = re.compile(r"gpu\d*|gpu_node|package-\d+|cpu_package|dram(-\d+)?|psys")
UNRESOLVED_METHOD = "trapezoid (counter did not resolve the window)"
OTHER_LOAD_WARNING = 0.10  # share of the machine's CPUs busy with other work above which a window is warned about


def samples(frame: pd.DataFrame, info: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reduce one wide sample frame (several runs) to long rows and per-run window facts.

    ``frame``: ``run, segment, t_s, mark, [interval_s,] <domain>.<metric>...``
    with ``run`` the run ids of ``info`` (which gives each run's ``sensors``,
    ``path``, ``gpu_domain`` and ``device``), sorted by run; ``interval_s`` is
    the interval each sample's ``interval_power_w`` readings stand for.
    Returns ``(rows, windows)``: rows with ``ROW_COLUMNS`` (energies per sensor
    domain with the seconds each covers, ``window_s``, and window statistics),
    and ``windows`` indexed by run id with ``window_s``, ``window_complete``
    and ``gpu_domain`` (the GPU holding the process's memory, for runs that
    record neither their GPU nor their device; else None). A value that cannot
    be computed soundly is NaN with its reason in ``note`` and a warning.
    """
    frame = _in_time_order(frame, info)
    code, ids = pd.factorize(frame["run"].to_numpy())
    n = len(ids)
    paths = info.loc[ids, "path"].tolist()
    sensors = info.loc[ids, "sensors"].tolist()
    _drop_impossible(frame, code, paths)
    mark = frame["mark"]
    win = en.window(code, frame["t_s"].to_numpy(), (mark == "start").to_numpy(), (mark == "end").to_numpy(), n)
    inside = frame if win.mask.all() else frame[win.mask]
    wcode, segment, t = code[win.mask], inside["segment"].to_numpy(), inside["t_s"].to_numpy()
    interval = inside["interval_s"].to_numpy(dtype=float) if "interval_s" in inside else None
    spans = en.window_seconds(wcode, t, n, segment)
    window_s = spans if interval is None else np.bincount(wcode[~np.isnan(interval)],
                                                          interval[~np.isnan(interval)], minlength=n)
    work = _cpu_work(inside, wcode, n)
    parts = []
    for domain in dict.fromkeys(c.rsplit(".", 1)[0] for c in frame.columns if "." in c):
        about = [s.get(domain) or {} for s in sensors]
        source = [a.get("source") or ("estimated" if "estimate" in domain else "measured") for a in about]
        power = inside[f"{domain}.power_w"].to_numpy() if f"{domain}.power_w" in inside else None
        if f"{domain}.energy_j" in inside:
            energy, method, problems, gaps, covered = _counter(
                domain, inside[f"{domain}.energy_j"].to_numpy(), power, wcode, t, segment, about, n, paths,
                spans, work)
        elif f"{domain}.interval_power_w" in inside and interval is not None:
            values = inside[f"{domain}.interval_power_w"].to_numpy()
            energy, problems, covered = en.interval_mean_energy(wcode, interval, values, n)
            method, gaps = "interval_mean", en.missing(wcode, values, n)
        elif power is not None:
            (energy, problems), method = en.trapezoid_energy(wcode, t, power, n, segment), "trapezoid"
            gaps, covered = en.missing(wcode, power, n), spans
            _note_unresolved_load(problems, about, spans)
        else:
            energy = None
        if energy is not None:
            for i in np.flatnonzero(pd.isna(energy) & problems.astype(bool)):
                warn(f"{paths[i]}: {domain}: {problems[i]}; its energy left NaN")
            parts.append(_rows(ids, domain, "energy_j", energy, "J", source, method, problems))
            parts.append(_rows(ids, domain, "gap_samples", gaps.astype(float), "samples", source, method))
            parts.append(_rows(ids, domain, "window_s", covered, "s", source, method))
        for (metric, how), (quantity, unit) in WINDOW_STATS.items():
            if f"{domain}.{metric}" in inside:
                stat = pd.Series(inside[f"{domain}.{metric}"].to_numpy()).groupby(wcode).agg(how)
                parts.append(_rows(ids, domain, quantity, stat.reindex(range(n)).to_numpy(), unit, source,
                                   f"{how} over the window"))
    parts += _other_load(inside, wcode, ids, spans, sensors)
    for i in np.flatnonzero(~(win.has_start & win.has_end)):
        lacking = " and ".join(m for m, has in (("start", win.has_start[i]), ("end", win.has_end[i])) if not has)
        warn(f"{paths[i]}: no '{lacking}' sample, the window is incomplete; energies over the "
             f"{win.t_end[i] - win.t_start[i]:g} s recorded, energies per inference left NaN")
    windows = pd.DataFrame({"window_s": window_s, "window_complete": win.has_start & win.has_end,
                            "gpu_domain": _gpu_of_process(inside, wcode, info.loc[ids])}, index=ids)
    return _frame(parts), windows


def _counter(domain, values, power, run, t, segment, about, n, paths, window_s, work):
    """A counter domain: ``(energy, method, problems, gaps, covered_s)`` per run.

    Readings that are not data are dropped with a warning; where the counter
    did not resolve the window and the domain has power readings, their
    trapezoid is used instead (``UNRESOLVED_METHOD``), else NaN.
    """
    wrap = np.array([a.get("counter_wrap_j") for a in about], dtype=float)
    dropped = en.counter_glitches(run, values, wrap)
    for i in np.unique(run[dropped]):
        at = t[dropped & (run == i)]
        warn(f"{paths[i]}: {domain}: {len(at)} counter reading(s) outside its range or breaking its sequence "
             f"dropped as glitches (t_s = {', '.join(f'{x:g}' for x in at[:3])}{', ...' if len(at) > 3 else ''})")
    clean = np.where(dropped, np.nan, values)
    energy, problems = en.counter_energy(run, values, wrap, n, dropped)
    aligned_j, aligned = en.aligned_counter_energy(run, t, clean, n)
    energy = np.where(aligned, aligned_j, energy)
    method = np.where(aligned, "counter_aligned", "counter").astype(object)
    gaps = en.missing(run, clean, n)
    why = _unresolved(domain, energy, problems, power, run, about, n, window_s, work)
    if power is not None and why.astype(bool).any():
        p_energy, p_problems = en.trapezoid_energy(run, t, power, n, segment)
        use = why.astype(bool) & ~p_problems.astype(bool)
        for i in np.flatnonzero(use):
            warn(f"{paths[i]}: {domain}: {why[i]}; its energy integrated from its power readings instead")
        energy[use], method[use], problems[use] = p_energy[use], UNRESOLVED_METHOD, why[use]
        gaps[use] = en.missing(run, power, n)[use]
        why[use] = None
        why[why.astype(bool)] = [f"{w}, and its power readings cannot replace it ({p})"
                                 for w, p in zip(why[why.astype(bool)], p_problems[why.astype(bool)])]
    unresolved = why.astype(bool)
    energy[unresolved], problems[unresolved] = np.nan, why[unresolved]
    return energy, method, problems, gaps, window_s


def _unresolved(domain, energy, problems, power, run, about, n, window_s, work) -> np.ndarray:
    """Per run: why its counter did not resolve the window (None where it did).

    A window shorter than the counter's update period (``COUNTER_UPDATE_S``) is
    never resolved; a counter that did not move is not resolved when the domain
    always draws power (``ALWAYS_POWERED``), its power readings say it drew
    some, or, for a CPU domain, the process or the machine worked.
    """
    why = np.full(n, None, dtype=object)
    update = np.array([COUNTER_UPDATE_S.get(a.get("sensor"), 0.0) for a in about])
    short = window_s < update
    why[short] = [f"the {w:g} s window is shorter than the counter's update period ({u:g} s)"
                  for w, u in zip(window_s[short], update[short])]
    flat = (energy == 0) & ~problems.astype(bool) & ~short
    if not flat.any():
        return why
    drew = np.full(n, np.nan) if power is None else pd.Series(power).groupby(run).max().reindex(range(n)).to_numpy()
    evidence = np.where(drew > 0, [f"while its power readings show up to {p:g} W" for p in drew],
                        None if domain.startswith("gpu") else work)
    always = ALWAYS_POWERED.fullmatch(domain) is not None
    for i in np.flatnonzero(flat & (always | pd.notna(evidence))):
        why[i] = (f"counter did not move over the {window_s[i]:g} s window "
                  + (evidence[i] if pd.notna(evidence[i]) else "(the domain always draws power)"))
    return why


def _note_unresolved_load(problems: np.ndarray, about: list, window_s: np.ndarray) -> None:
    """Note, in ``problems`` where it holds nothing, each window of the CPU estimate shorter than the
    resolution of the load it models (``ESTIMATE_RESOLUTION_S``): its power is the load of the readings
    around the window, not of the window."""
    estimate = np.array([a.get("sensor") == "estimate" for a in about], dtype=bool)
    for i in np.flatnonzero(estimate & (window_s < ESTIMATE_RESOLUTION_S) & ~problems.astype(bool)):
        problems[i] = (f"the {window_s[i]:.2g} s window is shorter than /proc/stat's {ESTIMATE_RESOLUTION_S:g} s "
                       "clock tick: the estimate's load is that of the readings around it")


def _cpu_work(frame: pd.DataFrame, run: np.ndarray, n: int) -> np.ndarray:
    """Per run: what says the CPU worked over the window (``while ...``), or None."""
    said = np.full(n, None, dtype=object)
    for channel, words in (("cpu_estimated.load", "while the CPU load was {:.0%}"),
                           ("process.cpu_share", "while this process used {:.2g} CPUs")):
        if channel in frame:
            mean = pd.Series(frame[channel].to_numpy()).groupby(run).mean().reindex(range(n)).to_numpy()
            busy = (mean > 0) & pd.isna(said)
            said[busy] = [words.format(m) for m in mean[busy]]
    return said


def _gpu_of_process(frame: pd.DataFrame, run: np.ndarray, info: pd.DataFrame) -> list:
    """Per run: the GPU holding the measured process's memory (``gpu<i>``) where the run records neither its
    GPU nor its device and exactly one GPU does (and no other might: an unknown reading might); else None."""
    found = [None] * len(info)
    channels = [c for c in frame.columns if re.fullmatch(r"gpu\d+\.proc_mem_mib", c)]
    if not channels or not {"gpu_domain", "device"} <= set(info.columns):  # an idle recording has neither
        return found
    unknown = np.flatnonzero((info["gpu_domain"].isna() & info["device"].isna()).to_numpy())
    unknown = unknown[np.isin(unknown, run)]
    if not len(unknown):
        return found
    memory = frame[channels].to_numpy(dtype=float)
    starts, _ = en.run_edges(run)  # samples are sorted by run
    holds = np.logical_or.reduceat(memory > 0, starts, axis=0)
    might = holds | np.logical_or.reduceat(np.isnan(memory), starts, axis=0)
    at = np.searchsorted(run[starts], unknown)
    for i, held, possible in zip(unknown, holds[at], might[at]):
        if held.sum() == 1 and possible.sum() == 1:
            found[i] = channels[int(np.flatnonzero(held)[0])].split(".")[0]
    return found


def _other_load(inside: pd.DataFrame, run: np.ndarray, ids, window_s: np.ndarray,
                sensors: list) -> list[dict[str, np.ndarray]]:
    """The share of the machine's CPUs that other work kept busy during each window (domain ``host``,
    quantity ``other_cpu_load``, a ``_rows`` block): (machine-wide busy CPU seconds − this process tree's) /
    (window × logical CPUs), from the ``host.busy_cpu_s`` and ``process.cpu_s`` counters at the window's
    edges; none without those counters. ``warn_other_load`` warns about the windows where it is high."""
    if "host.busy_cpu_s" not in inside or "process.cpu_s" not in inside or not len(run):
        return []
    first, last = en.run_edges(run)
    busy, own = inside["host.busy_cpu_s"].to_numpy(dtype=float), inside["process.cpu_s"].to_numpy(dtype=float)
    cpus = np.array([(s.get("host") or {}).get("logical_cpus") or np.nan for s in sensors], dtype=float)
    other = np.full(len(ids), np.nan)
    at = run[first]
    other[at] = ((busy[last] - busy[first]) - (own[last] - own[first])) / (window_s[at] * cpus[at])
    other = np.clip(other, 0.0, 1.0)  # the two counters tick at different resolutions
    return [_rows(ids, "host", "other_cpu_load", other, "fraction of CPUs", "measured",
                  "busy CPU time of the machine minus this process tree's, at the window's edges")]


def warn_other_load(rows: pd.DataFrame, paths: pd.Series) -> None:
    """One warning for every window of ``rows`` (long rows, ``ROW_COLUMNS``) whose ``other_cpu_load`` reaches
    ``OTHER_LOAD_WARNING``, naming the first such run's folder (``paths``: run id -> folder), how many others
    and the range: their energies include other work's (the CPU estimate's above all), and their latencies may
    be slowed by it. Said at once for all the runs of a load, whether just read or from the cache."""
    load = rows[(rows["domain"] == "host") & (rows["quantity"] == "other_cpu_load")]
    busy = load[load["value"].to_numpy(dtype=float) >= OTHER_LOAD_WARNING].sort_values("run_id", kind="stable")
    if busy.empty:
        return
    first, share = paths[busy["run_id"].iloc[0]], busy["value"].to_numpy(dtype=float)
    if len(busy) == 1:
        warn(f"{first}: other processes kept {share[0]:.0%} of the machine's CPUs busy during the window; its "
             "energies include their work (an estimated CPU energy above all) and its latencies may be slowed")
    else:
        warn(f"{first} and {len(busy) - 1} other run(s): other processes kept {share.min():.0%} to "
             f"{share.max():.0%} of the machine's CPUs busy during their windows; their energies include that "
             "work (an estimated CPU energy above all) and their latencies may be slowed")


def _rows(ids, domain, quantity, values, unit, source, method, notes=None) -> dict[str, np.ndarray]:
    """One block of long rows, one per run of ``ids``: ``ROW_COLUMNS`` as arrays (a label given once is every
    row's). ``_frame`` makes one DataFrame of the blocks: a DataFrame per block costs more than its rows."""
    n = len(ids)
    labels = {"domain": domain, "quantity": quantity, "unit": unit, "source": source, "method": method,
              "note": notes}
    block = {name: np.full(n, v, dtype=object) if v is None or isinstance(v, str) else np.asarray(v, dtype=object)
             for name, v in labels.items()}
    return {**block, "run_id": np.asarray(ids), "value": np.asarray(values, dtype=float)}


def _frame(blocks: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """Blocks of ``_rows`` as one DataFrame of ``ROW_COLUMNS`` (``note``: objects, None where there is none)."""
    if not blocks:
        return pd.DataFrame(columns=ROW_COLUMNS)
    columns = {name: np.concatenate([b[name] for b in blocks]) for name in ROW_COLUMNS}
    frame = pd.DataFrame({name: columns[name] for name in ROW_COLUMNS if name != "note"})
    frame["note"] = pd.Series(columns["note"], dtype=object)
    return frame


def _in_time_order(frame: pd.DataFrame, info: pd.DataFrame) -> pd.DataFrame:
    """The frame without the samples that break the time order of their run's segment
    (``energy.out_of_time_order``), with a warning naming them."""
    run, segment = frame["run"].to_numpy(), frame["segment"].to_numpy()
    sequence = np.cumsum(np.r_[True, (run[1:] != run[:-1]) | (segment[1:] != segment[:-1])]) if len(run) else run
    drop = en.out_of_time_order(sequence, frame["t_s"].to_numpy())
    if not drop.any():
        return frame
    for run, at in pd.Series(frame["t_s"].to_numpy()[drop]).groupby(frame["run"].to_numpy()[drop]):
        warn(f"{info.at[run, 'path']}: {len(at)} sample(s) out of time order dropped "
             f"(t_s = {', '.join(f'{x:g}' for x in at.iloc[:3])}{', ...' if len(at) > 3 else ''})")
    return frame[~drop].reset_index(drop=True)


def _drop_impossible(frame: pd.DataFrame, code: np.ndarray, paths: list) -> None:
    """Negative or infinite powers and energies, and zero mean powers of domains that always draw power (a
    counter that did not move under them), become missing readings (in place), with a warning."""
    for channel in [c for c in frame.columns if c.endswith((".power_w", ".energy_j", ".interval_power_w"))]:
        values = frame[channel].to_numpy()
        with np.errstate(invalid="ignore"):
            bad = (values < 0) | np.isinf(values)
            zero = (values == 0) & channel.endswith(".interval_power_w") \
                & (ALWAYS_POWERED.fullmatch(channel.rsplit(".", 1)[0]) is not None)
        if (bad | zero).any():
            frame.loc[bad | zero, channel] = np.nan
            for what, mask in (("negative or infinite", bad), ("zero (the counter under it did not move)", zero)):
                for i, count in zip(*np.unique(code[mask], return_counts=True)):
                    warn(f"{paths[i]}: {count} {what} {channel} reading(s) treated as missing")


def latencies(values: pd.Series, run_ids: pd.Index) -> pd.DataFrame:
    """Per-run latency statistics as long rows (domain ``clock``): median, p90, p99 and mean, and the
    number of latencies read (``latency_count``), from every latency indexed by run id."""
    groups = values.groupby(level=0)
    if len(values):  # the three quantiles in one pass over each run's sorted latencies
        quantiles = groups.quantile(list(LATENCY_STATS.values())).unstack()
        stats = {name: quantiles[q] for name, q in LATENCY_STATS.items()}
    else:
        stats = {name: pd.Series(dtype=float) for name in LATENCY_STATS}
    stats["latency_mean_s"] = groups.mean()
    parts = [_rows(run_ids, "clock", name, stat.reindex(run_ids).to_numpy(), "s", "measured", "perf_counter")
             for name, stat in stats.items()]
    parts.append(_rows(run_ids, "clock", "latency_count", groups.size().reindex(run_ids, fill_value=0)
                       .to_numpy(dtype=float), "inferences", "measured", "perf_counter"))
    return _frame(parts)

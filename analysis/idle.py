"""Idle baselines: the power each domain draws while nothing runs, computed at load time.

A tree of schema 2 names, in each run's ``meta.json``, the idle recording its
process made before measuring (``idle/idle_<utc>_<host>_<pid>.json``, samples in
the run format); its mean power per sensor domain is the baseline that
"dynamic" energy subtracts. Trees of schema 1 stored the baseline itself
(``idle_power_w``). A baseline measured while other work kept the machine busy
is not a baseline: when the machine-wide CPU load during the recording was
``BUSY_LOAD`` or more (from the ``host`` counters, else the CPU estimate's
load, else, for a stored estimate, the load its power implies), it is left
NaN with the reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import reduce
from .problems import warn
from .readers import ours

BUSY_LOAD = 0.10  # machine-wide CPU load (fraction of all logical CPUs) above which a recording is not idle
COLUMNS = ["run_id", "domain", "idle_power_w", "note"]


def baselines(info: pd.DataFrame,
              power_of: Callable[[Path, dict], pd.DataFrame] | None = None) -> pd.DataFrame:
    """Idle power per (run id, sensor domain) of the runs of ``info``: ``COLUMNS`` (note: why NaN), in run order.

    Each idle recording is read once, by ``power_of(path, sensors)`` (default:
    its mean power per energy domain, ``domain, idle_power_w, note``; the
    cache passes its own), with the sensors of the first run that names it.
    """
    power_of = power_of or recording_power
    baselines, owners, index = [], [], {}  # each distinct baseline, the runs it belongs to
    for run_id, idle, sensors, tree in zip(info.index, info["idle"], info["sensors"], info["tree"]):
        idle = idle or {}
        if idle.get("recording"):
            key = (tree, idle["recording"])
            if key not in index:
                index[key] = len(baselines)
                baselines.append(power_of(Path(tree) / idle["recording"], sensors))
                owners.append([])
        elif idle.get("given_w"):
            key = (id(idle["given_w"]), id(sensors))  # equal mappings of a tree are one object (readers)
            if key not in index:
                index[key] = len(baselines)
                baselines.append(_given(idle["given_w"], sensors))
                owners.append([])
        else:
            continue
        owners[index[key]].append(run_id)
    if not sum(len(b) for b in baselines):
        return pd.DataFrame(columns=COLUMNS)
    whole = pd.concat(baselines, ignore_index=True)
    starts = np.cumsum([0] + [len(b) for b in baselines[:-1]])
    take = np.concatenate([np.tile(np.arange(s, s + len(b)), len(o)) for s, b, o in zip(starts, baselines, owners)])
    run_ids = np.concatenate([np.repeat(o, len(b)) for b, o in zip(baselines, owners)])
    order = np.argsort(run_ids, kind="stable")
    table = whole.iloc[take[order]].reset_index(drop=True).assign(run_id=run_ids[order])[COLUMNS]
    given = info.loc[table["run_id"], "idle"].map(lambda idle: not (idle or {}).get("recording")).to_numpy()
    for note, runs in table[given & table["note"].notna().to_numpy()].groupby("note")["run_id"]:
        warn(f"{info.at[runs.iloc[0], 'path']} and {runs.nunique() - 1} other run(s): {note}")
    return table


def recording_power(path: Path, sensors: dict) -> pd.DataFrame:
    """Mean power of every energy domain of one idle recording, NaN for all when it was not idle (one
    warning). A recording that other work shared without making it busy is warned about as a run's window is
    (``reduce.warn_other_load``)."""
    info = pd.DataFrame({"path": [path.parent], "sensors": [sensors]})
    frame = next(ours.frames([(0, path)]), None)
    if frame is None:
        warn(f"{path}: no readable idle recording; dynamic energies left NaN")
        return pd.DataFrame(columns=["domain", "idle_power_w", "note"])
    load = _machine_load(frame, (sensors.get("host") or {}).get("logical_cpus"))
    rows, windows = reduce.samples(frame, info)
    energy = rows[rows["quantity"] == "energy_j"]
    power = energy["value"].to_numpy() / windows["window_s"].iloc[0]
    note = energy["note"].to_numpy()
    if load is not None and load >= BUSY_LOAD:  # one warning: the other work is what made it busy
        reason = (f"idle baseline recorded while the machine was busy (CPU load {load:.0%} of all CPUs, "
                  f"{path.name}); not used")
        warn(f"{path}: {reason}")
        power, note = np.full(len(power), np.nan), np.full(len(power), reason, dtype=object)
    else:
        reduce.warn_other_load(rows, info["path"])
    return pd.DataFrame({"domain": energy["domain"].to_numpy(), "idle_power_w": power, "note": note})


def _machine_load(frame: pd.DataFrame, logical_cpus: int | None) -> float | None:
    """Machine-wide CPU load over a recording: from ``host.busy_cpu_s`` over the window and the logical CPUs,
    else the mean of the CPU estimate's load; None when the recording holds neither."""
    t = frame["t_s"].to_numpy()
    if "host.busy_cpu_s" in frame and len(frame) > 1 and logical_cpus:
        busy = frame["host.busy_cpu_s"].to_numpy()
        if np.isfinite([busy[0], busy[-1]]).all() and t[-1] > t[0]:
            cpus = logical_cpus
            return float((busy[-1] - busy[0]) / ((t[-1] - t[0]) * cpus))
    if "cpu_estimated.load" in frame:
        load = frame["cpu_estimated.load"].dropna()
        return float(load.mean()) if len(load) else None
    return None


def _given(given_w: dict[str, float], sensors: dict) -> pd.DataFrame:
    """A stored (schema-1) baseline; the CPU estimate's is checked for load through its model:
    power = tdp * (idle_fraction + (1 - idle_fraction) * load)."""
    rows = []
    for domain, watts in given_w.items():
        note = None
        about = sensors.get(domain) or {}
        tdp, fraction = about.get("tdp_w"), about.get("idle_fraction")
        if about.get("sensor") == "estimate" and tdp and fraction is not None:
            load = (watts / tdp - fraction) / (1 - fraction)
            if load >= BUSY_LOAD:
                note = (f"idle baseline recorded while the machine was busy (estimated CPU load {load:.0%} of all "
                        "CPUs); not used")
                watts = np.nan
        rows.append((domain, watts, note))
    return pd.DataFrame(rows, columns=["domain", "idle_power_w", "note"])

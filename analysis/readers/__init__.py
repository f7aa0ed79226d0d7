"""Readers: run folders of every format -> the same intermediate records.

``discover`` walks one or several trees and returns one record per usable run
(a row of the ``info`` table); ``sample_frames`` and ``latencies`` read the
runs' files into wide sample frames and latency values. Only the modules of
this package know a format: ``ours`` (``measure.runtree``'s) and
``aipowermeter``. A run folder is any folder holding ``power_metrics.json``,
at any depth.

A record holds the run's identity (``label``, the identity dimensions of its
``meta.json``, ``run``), its constants (``iterations``, ``warmup``,
``period_s``, ``params``, ``flops_per_inference``, ``weights``, hardware, the
sweep's ``order``) and what the energy step needs (``sensors``: ``{domain:
{source, counter_wrap_j, ...}}``; ``idle``: the idle recording or the baseline
given; ``gpu_domain``: the GPU the model ran on).
"""
from __future__ import annotations

import os
import re
from itertools import chain
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from measure import runtree

from ..problems import NoUsableRuns, warn
from . import aipowermeter, files, ours

SAMPLES_FILE = runtree.SAMPLES_FILE
# Identity columns in display order; a tree may add dimensions of its own (appended in name order).
DIMENSIONS = ["model", "task", "input_size", "batch_size", "dtype", "execution", "threads", "device"]
RECORD_FIELDS = {"label", "run", "path", "tree", "sensors", "idle", "host", "unavailable", "phases"}  # not identity
CONSTANTS = ["status", "weights", "gpu_domain", "hardware_gpu", "hardware_cpu", "iterations", "warmup", "period_s",
             "params", "flops_per_inference", "logical_cpus", "order", "format", "folder"]


def discover(paths: Sequence[Path], labels: Sequence[str] | None = None, *, model: str | None = None,
             include_incomplete: bool = False) -> pd.DataFrame:
    """One row per usable run under ``paths``, indexed 0..n-1.

    Each path is a tree or a folder of trees; a run's ``label`` is the folder of
    its tree (the nearest folder above it holding ``study.json``) relative to the
    path given, else the path's own name, or ``labels[i]`` for every run under
    ``paths[i]``. The same identity and run under two labels are two runs. Runs
    not ``complete`` are left out (one warning) unless ``include_incomplete``; a
    run found twice under one label (same identity and run) is counted once,
    the second folder named in a warning.
    Raises ``ValueError`` when the number of ``labels`` is not that of ``paths``
    or when two of ``paths`` would give the same default label (name them with
    ``labels``), ``NoUsableRuns`` when no run is found.
    """
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} trees: give one label per tree")
    records, root_of, seen = [], {}, {}
    for i, root in enumerate(paths):
        root = Path(root)
        if not root.is_dir():
            raise NoUsableRuns(f"{root}: not a folder")
        if root.resolve() in map(Path.resolve, paths[:i]):
            raise ValueError(f"{root}: given twice")
        # under labels given, a label may gather several paths: a run is a duplicate across them
        found = _walk(root, labels[i] if labels else None, model, include_incomplete, seen if labels else {})
        if labels is None:
            for label in dict.fromkeys(record["label"] for record in found):
                if root_of.setdefault(label, root) != root:
                    raise ValueError(f"{root_of[label]} and {root} would both be labelled {label!r}: "
                                     f"name the trees with labels (--labels)")
        records += found
    if not records:
        where = ", ".join(str(p) for p in paths)
        raise NoUsableRuns(f"{where}: no usable run folder (none holds a readable {SAMPLES_FILE} and its metadata)")
    info = pd.DataFrame.from_records(records)
    extra = sorted(set(info.columns) - set(DIMENSIONS) - set(CONSTANTS) - RECORD_FIELDS)
    for column in [*DIMENSIONS, *CONSTANTS]:
        if column not in info:
            info[column] = None
    if "phases" not in info:  # only our generation runs name phases
        info["phases"] = None
    return info[["label", *DIMENSIONS, *extra, "run", *CONSTANTS, "path", "tree", "sensors", "idle", "host", "unavailable",
                 "phases"]]


def _walk(root: Path, label: str | None, model: str | None, include_incomplete: bool,
          seen: dict[tuple, Path]) -> list[dict]:
    """The records of the runs under ``root``; ``seen``: the folder of each (label, identity, run) kept so far."""
    records, skipped = [], []
    tree_of: dict[Path, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort(key=lambda name: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)])
        folder = Path(dirpath)
        parent_tree = tree_of.get(folder.parent, root)
        tree_of[folder] = folder if runtree.STUDY_FILE in filenames else parent_tree
        if SAMPLES_FILE not in filenames:
            status = runtree.read_status(folder) if runtree.META_FILE in filenames else None
            if status == runtree.COMPLETE:
                warn(f"{folder / runtree.META_FILE}: run marked complete but {SAMPLES_FILE} is missing; run skipped")
            elif status is not None:  # failed, or interrupted, before its window
                skipped.append(f"{folder.relative_to(root)} ({status}, no samples)")
            continue
        if runtree.is_run_folder(filenames):
            record = ours.record(folder)
        else:
            known, why = aipowermeter.recognises(folder / SAMPLES_FILE)
            if not known:
                warn(f"{folder / SAMPLES_FILE}: {why}; run skipped")
                continue
            record = aipowermeter.record(folder, model, root)
        if record is None:
            continue
        if record["status"] != runtree.COMPLETE and not include_incomplete:
            skipped.append(f"{folder.relative_to(root)} ({record['status']})")
            continue
        tree = tree_of[folder]
        record["label"] = label or (tree.relative_to(root).as_posix() if tree != root else root.absolute().name)
        record["tree"] = tree
        record["folder"] = folder.relative_to(tree).as_posix()
        key = (record["label"], *sorted((k, str(v)) for k, v in record.items()
                                        if k not in CONSTANTS and k not in RECORD_FIELDS), record["run"])
        if key in seen:
            warn(f"{folder}: same identity and run as {seen[key]}; duplicate skipped (the first is kept)")
            continue
        seen[key] = folder
        records.append(record)
    if skipped:
        warn(f"{root}: {len(skipped)} incomplete run(s) left out (include_incomplete=True keeps those with samples): "
             + ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""))
    return records


def sample_frames(info: pd.DataFrame, text: bool = False) -> Iterator[pd.DataFrame]:
    """Wide sample frames of the runs of ``info`` (its index as ``run`` ids), a few runs each:
    ``run, segment, t_s, mark, [utc, gap,] [interval_s,] <domain>.<metric>...``."""
    formats = info["format"].to_numpy()
    ours_at, aipm_at = np.flatnonzero(formats == ours.FORMAT), np.flatnonzero(formats == aipowermeter.FORMAT)
    paths = info["path"].to_numpy()
    ids = info.index.to_numpy()
    return chain(ours.frames([(ids[i], paths[i] / SAMPLES_FILE) for i in ours_at], text=text),
                 aipowermeter.frames([(ids[i], paths[i] / SAMPLES_FILE) for i in aipm_at]))


def tokens(info: pd.DataFrame) -> pd.DataFrame:
    """Every new token of the runs of ``info`` that name phases (our generation runs): ``run_id, token, t_s,
    latency_s`` (``ours.tokens``)."""
    phased = info["phases"].map(lambda phases: isinstance(phases, list) and len(phases) > 0)
    return ours.tokens(info.loc[phased, "path"])


def latencies(info: pd.DataFrame) -> pd.Series:
    """Every latency (s) of the runs of ``info``, indexed by run id, in file order."""
    return files.latencies(info["path"], iterations_known=info["iterations"].notna())

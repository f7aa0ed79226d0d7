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
given; ``gpu_domain``: the GPU the model ran on; ``phases``: a generation
run's phases, from its ``meta.json``, else None).
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Protocol, Sequence

import numpy as np
import pandas as pd

from measure import runtree

from ..problems import Message, NoUsableRuns, captured, reissue, warn
from . import aipowermeter, files, ours

SAMPLES_FILE = runtree.SAMPLES_FILE
CACHE_FOLDER = ".analysis_cache"  # the analysis cache beside a tree (analysis.cache): never walked
KEY_FILES = (*runtree.RUN_FILES, files.LATENCY_JSON)  # the files whose state keys a run's cached reductions
# Identity columns in display order; a tree may add dimensions of its own (appended in name order).
DIMENSIONS = ["model", "task", "input_size", "batch_size", "dtype", "execution", "threads", "device"]
RECORD_FIELDS = {"label", "run", "path", "tree", "sensors", "idle", "host", "unavailable", "phases", "root",
                 "key", "messages"}  # not identity
WALK_FIELDS = ("label", "tree", "folder", "root", "key", "messages")  # what discover adds to a record read
CONSTANTS = ["status", "weights", "gpu_domain", "hardware_gpu", "hardware_cpu", "iterations", "warmup", "period_s",
             "params", "flops_per_inference", "logical_cpus", "order", "format", "folder"]


class RecordStore(Protocol):
    """Records kept from earlier readings of run folders (``analysis.cache.Cache``)."""

    def get(self, root: Path, relpath: str, key: str, folder: Path) -> tuple[dict, list[Message]] | None:
        """``(record, messages)`` of the run folder ``folder``, ``relpath`` under ``root``, when its files were in
        state ``key``; else None."""

    def put(self, root: Path, folder: Path, record: dict) -> None:
        """Keep the record read from the folder's ``meta.json``."""


def discover(paths: Sequence[Path], labels: Sequence[str] | None = None, *, model: str | None = None,
             include_incomplete: bool = False, store: RecordStore | None = None,
             mapper: Callable = map, walks: list[Walk] | None = None) -> pd.DataFrame:
    """One row per usable run under ``paths``, indexed 0..n-1.

    Each path is a tree or a folder of trees; a run's ``label`` is the folder of
    its tree (the nearest folder above it holding ``study.json``) relative to the
    path given, else the path's own name, or ``labels[i]`` for every run under
    ``paths[i]``. The same identity and run under two labels are two runs. Runs
    not ``complete`` are left out (one warning) unless ``include_incomplete``; a
    run found twice under one label (same identity and run) is counted once,
    the second folder named in a warning. Folders named ``CACHE_FOLDER`` are
    never walked.

    Besides its fields, a record holds ``root`` (the path it was found under),
    ``key`` (``run_key``: the state of its files) and ``messages`` (the
    warnings reading it raised, ``problems.Message``s, issued here as well).
    ``store``: records kept from earlier readings; a record it gives for a
    folder in the same state stands for the folder's ``meta.json``, and the
    records read are given to it. ``mapper(function, chunks)``: how the other
    ``meta.json`` files are read, chunk by chunk, results in order (default:
    here; ``analysis.parallel.Workers.map`` reads them in processes).
    ``walks``: what ``walk_trees(paths, labels)`` gave, when it was called already. Equal
    ``sensors``, ``host``, ``unavailable`` and ``idle`` mappings of different
    runs are one object.
    Raises ``ValueError`` when the number of ``labels`` is not that of ``paths``
    or when two of ``paths`` would give the same default label (name them with
    ``labels``), ``NoUsableRuns`` when no run is found.
    """
    walks = walks if walks is not None else walk_trees(paths, labels)
    runs = [run for walk in walks for run in walk.runs]
    folders = [Path(run.dirpath) for run in runs]
    found = _records(runs, folders, model, store, mapper)
    records, root_of, seen, offset = [], {}, {}, 0
    for i, walk in enumerate(walks):
        # under labels given, a label may gather several paths: a run is a duplicate across them
        mine = slice(offset, offset + len(walk.runs))
        kept = _select(walk, found[mine], folders[mine], labels[i] if labels else None, include_incomplete,
                       seen if labels else {})
        offset += len(walk.runs)
        if labels is None:
            for label in dict.fromkeys(record["label"] for record in kept):
                if root_of.setdefault(label, walk.root) != walk.root:
                    raise ValueError(f"{root_of[label]} and {walk.root} would both be labelled {label!r}: "
                                     f"name the trees with labels (--labels)")
        records += kept
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
    return info[["label", *DIMENSIONS, *extra, "run", *CONSTANTS, "path", "tree", "sensors", "idle", "host",
                 "unavailable", "phases", "root", "key", "messages"]]


def walk_trees(paths: Sequence[Path], labels: Sequence[str] | None = None, mapper: Callable = map) -> list[Walk]:
    """The run folders under each of ``paths`` (``Walk``: each folder holding ``SAMPLES_FILE`` with the state
    of its files, ``run_key``; the incomplete folders without samples, with their status), in walk order:
    folders in natural order of their names. ``mapper(function, chunks)``: how the subtrees of a wide tree
    are walked (``map``; ``analysis.parallel.Workers.map``: in worker processes). Raises ``ValueError``
    when the number of ``labels`` is not that of ``paths`` or a path is given twice, ``NoUsableRuns`` when a
    path is not a folder."""
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} trees: give one label per tree")
    walks = []
    for i, root in enumerate(paths):
        root = Path(root)
        if not root.is_dir():
            raise NoUsableRuns(f"{root}: not a folder")
        if root.resolve() in [Path(p).resolve() for p in paths[:i]]:
            raise ValueError(f"{root}: given twice")
        walks.append(_walk(root, mapper))
    return walks


def run_key(folder: str, filenames: Iterable[str]) -> str:
    """The state of a run folder's files (``KEY_FILES`` present): ``name:size:mtime_ns:ctime_ns:inode`` of each,
    joined by ``;``. Any change to a file's content, or a file replaced, added or removed, changes it."""
    states = (file_state(f"{folder}/{name}") for name in KEY_FILES if name in filenames)
    return ";".join(state for state in states if state)  # an unreadable file: reported when read


def file_state(path: str | Path) -> str | None:
    """The state of one file, ``name:size:mtime_ns:ctime_ns:inode`` (the name may hold ``:``), or None when
    it cannot be read. Any change to its content, or the file replaced, changes it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{os.path.basename(path)}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def relative(path: Path, start: Path) -> str:
    """``path`` relative to ``start``, a folder above it as walked from it, as text (``.`` for ``start``)."""
    text, above = str(path), str(start)
    if text.startswith(above) and text[len(above):len(above) + 1] == "/":
        return text[len(above) + 1:]
    return Path(path).relative_to(start).as_posix()


@lru_cache(maxsize=65536)
def _natural(name: str) -> list:
    """A folder name's sort key: its runs of digits as numbers (``run_2`` before ``run_10``)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


class _Folder(NamedTuple):
    """A folder holding SAMPLES_FILE, as walked (its path as text: a ``Path`` each is made only when the runs
    are read, not when a kept load is read back)."""
    root: Path
    dirpath: str
    ours: bool     # it has a meta.json
    key: str       # run_key
    tree: Path
    relpath: str   # under root


class Walk(NamedTuple):
    """One tree as walked."""
    root: Path
    entries: list  # in walk order: a run (an index into ``runs``) or an incomplete folder without samples (text)
    runs: list     # the _Folder of each folder holding SAMPLES_FILE


PARALLEL_WALK = 4096  # folders at one depth from which each one's subtree is walked by the mapper
SUBTREES_PER_TASK = 64


class _Item(NamedTuple):
    """A folder of a walk that matters: one holding SAMPLES_FILE (``key``: its run_key), or one without it but
    with a status in its meta.json (``key`` None). ``tree``: the folder holding the nearest study.json, None
    for the root walked."""
    dirpath: str
    tree: str | None
    ours: bool
    key: str | None
    status: str | None


def _walk(root: Path, mapper: Callable = map) -> Walk:
    """The run folders under ``root`` in walk order (folders in natural order of their names), each with its
    tree (the nearest folder holding ``study.json``, else ``root``). The folders are listed here down to the
    first depth that holds ``PARALLEL_WALK`` of them; below, each one's subtree is walked by ``mapper``."""
    entries, runs, trees = [], [], {None: root}
    top = os.fspath(root)
    skip = len(top) + (0 if top.endswith("/") else 1)
    for dirpath, tree, ours_, key, status in _items(top, mapper):
        if key is None:
            folder = Path(dirpath)
            if status == runtree.COMPLETE:
                warn(f"{folder / runtree.META_FILE}: run marked complete but {SAMPLES_FILE} is missing; run skipped")
            else:  # failed, or interrupted, before its window
                entries.append(f"{folder.relative_to(root)} ({status}, no samples)")
            continue
        if tree not in trees:
            trees[tree] = Path(tree)
        entries.append(len(runs))
        runs.append(_Folder(root, dirpath, ours_, key, trees[tree], dirpath[skip:] if dirpath != top else "."))
    return Walk(root, entries, runs)


def _items(top: str, mapper: Callable) -> list[_Item]:
    """The ``_Item`` of every folder under ``top`` that matters, in walk order: the first depths listed here,
    breadth first, until one holds ``PARALLEL_WALK`` folders (or none); the subtree of each folder of that
    depth walked by ``mapper``, ``SUBTREES_PER_TASK`` a task; then all put in walk order."""
    listed: dict[str, tuple[list[str], list[str], str | None]] = {}  # folder -> subfolders followed, files, tree
    level: list[tuple[str, str | None]] = [(top, None)]
    while level and len(level) < PARALLEL_WALK:
        below = []
        for dirpath, tree in level:
            listing = _listing(dirpath)
            if listing is None:
                continue
            dirnames, filenames, links = listing
            tree = dirpath if runtree.STUDY_FILE in filenames else tree
            prefix = dirpath if dirpath.endswith("/") else f"{dirpath}/"
            followed = [prefix + name for name in _sorted(dirnames) if name not in links]
            listed[dirpath] = (followed, filenames, tree)
            below += [(folder, tree) for folder in followed]
        level = below
    tasks = [level[at:at + SUBTREES_PER_TASK] for at in range(0, len(level), SUBTREES_PER_TASK)]
    walked = dict(zip((dirpath for dirpath, _ in level), chain.from_iterable(mapper(_subtrees, tasks))))
    found: list[_Item] = []
    stack = [top]
    while stack:
        dirpath = stack.pop()
        if dirpath in walked:
            found += walked[dirpath]
        elif dirpath in listed:
            followed, filenames, tree = listed[dirpath]
            item = _item(dirpath, filenames, tree)
            if item is not None:
                found.append(item)
            stack.extend(reversed(followed))
    return found


def _subtrees(subtrees: list[tuple[str, str | None]]) -> list[list[_Item]]:
    """For each ``(folder, its tree)``: the ``_Item``s of its subtree, in walk order."""
    return [_subtree(dirpath, tree) for dirpath, tree in subtrees]


def _subtree(top: str, tree: str | None) -> list[_Item]:
    """The ``_Item``s of the subtree of ``top`` (whose tree is ``tree``), in walk order."""
    found, tree_of = [], {}  # tree_of: folder (as walked) -> its tree
    for dirpath, dirnames, filenames in _listings(top):
        folder_tree = tree_of.get(dirpath.rpartition("/")[0], tree)
        if runtree.STUDY_FILE in filenames:
            folder_tree = dirpath
        if dirnames:  # a run folder has none: its tree is never looked up
            dirnames[:] = _sorted(dirnames)
            tree_of[dirpath] = folder_tree
        item = _item(dirpath, filenames, folder_tree)
        if item is not None:
            found.append(item)
    return found


def _sorted(dirnames: list[str]) -> list[str]:
    """The subfolders to walk, in natural order of their names (the analysis cache's folder left out)."""
    return sorted((d for d in dirnames if d != CACHE_FOLDER), key=_natural)


def _item(dirpath: str, filenames: list[str], tree: str | None) -> _Item | None:
    """The ``_Item`` of a folder listed, or None when it holds neither samples nor a status."""
    if SAMPLES_FILE in filenames:
        return _Item(dirpath, tree, runtree.is_run_folder(filenames), run_key(dirpath, filenames), None)
    if runtree.META_FILE not in filenames:
        return None
    status = runtree.read_status(Path(dirpath))
    return None if status is None else _Item(dirpath, tree, False, None, status)


def _listing(dirpath: str) -> tuple[list[str], list[str], set[str]] | None:
    """A folder's subfolders, files, and the subfolders that are links (``DirEntry.is_symlink``: from the
    listing, not one more ``lstat`` of each as ``os.walk`` does); None when it cannot be listed."""
    try:
        with os.scandir(dirpath) as listing:
            found = list(listing)
    except OSError:
        return None
    dirnames, filenames, links = [], [], set()
    for entry in found:
        try:
            folder = entry.is_dir()
        except OSError:  # as os.walk: not a folder
            folder = False
        if folder:
            dirnames.append(entry.name)
            if entry.is_symlink():
                links.add(entry.name)
        else:
            filenames.append(entry.name)
    return dirnames, filenames, links


def _listings(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top)``: ``(dirpath, dirnames, filenames)`` top down, in the order of ``dirnames`` as the caller
    leaves it; unreadable folders skipped, links to folders listed but not followed."""
    stack = [top]
    while stack:
        dirpath = stack.pop()
        listing = _listing(dirpath)
        if listing is None:
            continue
        dirnames, filenames, links = listing
        yield dirpath, dirnames, filenames
        prefix = dirpath if dirpath.endswith("/") else f"{dirpath}/"
        stack.extend(prefix + name for name in reversed(dirnames) if name not in links)


RECORDS_PER_CHUNK = 256  # meta.json files read per task


SHARED = ours.SHARED


def _records(runs: list[_Folder], folders: list[Path], model: str | None, store: RecordStore | None,
             mapper) -> list[tuple]:
    """``(record or None, messages)`` of each run folder (``folders``: their paths): kept from an earlier
    reading (``store``) or read."""
    found: list = [store.get(run.root, run.relpath, run.key, folder) if store else None
                   for run, folder in zip(runs, folders)]
    unread = [i for i, run in enumerate(runs) if run.ours and found[i] is None]
    chunks = [unread[at:at + RECORDS_PER_CHUNK] for at in range(0, len(unread), RECORDS_PER_CHUNK)]
    shared: dict[str, object] = {}
    for chunk, read in zip(chunks, mapper(ours.records, [[folders[i] for i in chunk] for chunk in chunks])):
        ours.share([record for record, _ in read if record is not None], shared)  # equal across chunks too
        for i, (record, messages) in zip(chunk, read):
            if record is not None:
                if store:
                    store.put(runs[i].root, folders[i], record)
            found[i] = (record, messages)
    for i, (run, folder) in enumerate(zip(runs, folders)):
        if run.ours:
            continue
        if found[i] is None:  # an AIPowerMeter folder is recognised by its first line
            with captured() as messages:
                known, why = aipowermeter.recognises(folder / SAMPLES_FILE)
                if not known:
                    warn(f"{folder / SAMPLES_FILE}: {why}; run skipped")
            found[i] = (known or None, messages)
        if found[i][0] is not None:  # its record comes from its path, and from the model named
            found[i] = (aipowermeter.record(folder, model, run.root), found[i][1])
    return found


def _select(walk: Walk, found: list, folders: list[Path], label: str | None, include_incomplete: bool,
            seen: dict[tuple, Path]) -> list[dict]:
    """The records of the runs of one walk (``folders``: their paths) that are kept; ``seen``: the folder of
    each (label, identity, run) kept so far. Each record's warnings are issued."""
    records, skipped, label_of, identity_of = [], [], {}, {}
    root = walk.root
    for entry in walk.entries:
        if isinstance(entry, str):
            skipped.append(entry)
            continue
        folder, key, tree = folders[entry], walk.runs[entry].key, walk.runs[entry].tree
        record, messages = found[entry]
        reissue(messages)
        if record is None:
            continue
        if record["status"] != runtree.COMPLETE and not include_incomplete:
            skipped.append(f"{folder.relative_to(root)} ({record['status']})")
            continue
        if tree not in label_of:
            label_of[tree] = label or (relative(tree, root) if tree != root else root.absolute().name)
        record.update(zip(WALK_FIELDS, (label_of[tree], tree, relative(folder, tree), root, key, messages)))
        fields = tuple(record)
        if fields not in identity_of:
            names = tuple(sorted(k for k in fields if k not in CONSTANTS and k not in RECORD_FIELDS))
            identity_of[fields] = names, (itemgetter(*names) if len(names) > 1  # a tuple of their values
                                          else lambda r, k=names: tuple(r[n] for n in k))
        names, values = identity_of[fields]
        ident = (record["label"], names, tuple(map(str, values(record))), record["run"])
        if ident in seen:
            warn(f"{folder}: same identity and run as {seen[ident]}; duplicate skipped (the first is kept)")
            continue
        seen[ident] = folder
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

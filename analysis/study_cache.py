"""Whole loads kept: the tables a load gave, read back while every file it read is as it was.

The per-run cache (``analysis.cache``) spares reading and reducing a run
again; a load of a large tree from it still builds every record, the tables
and their identity columns. This cache keeps what ``load_study`` returned
(``runs``, ``quantities``, ``info``) and the ``AnalysisWarning``s it issued,
in ``loads/<digest>/`` inside the first tree's cache folder
(``analysis.cache.folders``).

- Digest: this code (``analysis.cache.tag`` and the sources of the tables and
  of this module), the load's arguments (the paths as given and as absolute
  paths, labels, model, ``include_incomplete``) and the walk of every tree:
  each run folder's relative path, its tree and ``readers.run_key`` (size,
  mtime, ctime and inode of each of its files), and each incomplete folder
  without samples with its status. A run changed, added, removed or resumed
  gives another digest.
- The idle recordings the runs name lie outside the run folders: their state
  (``_idle_key``) is kept beside the tables and checked before they are used;
  a copy found stale or damaged is written again by the load done instead.
- Not kept: a load that raised, one whose files (runs or idle recordings)
  changed less than ``analysis.cache.RACY_S`` before it began or that names a
  missing idle recording, and tables parquet would not give back with the
  same columns, types and index. At most ``KEPT`` loads per folder; the
  oldest go, and so do temporary folders older than ``ABANDONED_S``.
- Files: parquet (pyarrow), ``info``'s mappings and paths as JSON text, each
  distinct value once; written into a temporary folder renamed into place.
  Failures never fail a load: a load that cannot be read back is done again,
  one that cannot be written is not kept (the per-run cache says so).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import cache, readers
from .problems import AnalysisWarning, Message

KEPT = 4  # loads kept per cache folder
ABANDONED_S = 3600  # a temporary folder this old was left by a load that did not finish writing
FOLDER = "loads"
TABLES = ("runs", "quantities", "info")
SOURCES = ("tables.py", "problems.py", "study_cache.py")  # besides analysis.cache.CODE
PATH, TUPLE = "\x00path", "\x00tuple"  # tags of the values JSON has no type for
KINDS = b"study_cache.kinds"  # the parquet metadata naming how each encoded column is restored


def _digest(paths: Sequence[Path], walks: list[readers.Walk], labels: Sequence[str] | None, model: str | None,
            include_incomplete: bool) -> str:
    """The name of a load's tables: a hash of this code, the arguments and the walk of every tree (hex)."""
    hashed = hashlib.sha256(cache.tag().encode())
    for name in SOURCES:
        hashed.update((Path(__file__).parent / name).read_bytes())
    hashed.update(json.dumps([[str(p) for p in paths], [str(Path(p).absolute()) for p in paths],
                              list(labels) if labels is not None else None, model, include_incomplete],
                             default=lambda value: f"{type(value).__qualname__}:{value!r}").encode())
    for walk in walks:
        hashed.update(f"\x00{walk.root}\x00".encode())
        for entry in walk.entries:
            if isinstance(entry, str):  # an incomplete folder without samples, with its status
                hashed.update(f"{entry}\n".encode())
            else:
                run = walk.runs[entry]
                hashed.update(f"{run.relpath}\x00{run.ours}\x00{run.tree}\x00{run.key}\n".encode())
    return hashed.hexdigest()[:32]


class Kept:
    """The kept tables of the load of ``paths`` (walked: ``walks``) with the other arguments of
    ``load_study``: ``read`` them back, or ``write`` them after the load."""

    def __init__(self, paths: Sequence[Path], walks: list[readers.Walk], labels: Sequence[str] | None,
                 model: str | None, include_incomplete: bool):
        self.started_ns = time.time_ns()
        self.name = _digest(paths, walks, labels, model, include_incomplete)
        self.keys = [run.key for walk in walks for run in walk.runs]
        self.folders = [folder / FOLDER for folder in cache.folders(Path(paths[0]))]

    def read(self) -> tuple[dict[str, pd.DataFrame], list[Message]] | None:
        """``({table name: table}, warnings the load issued)``, or None when no sound copy is kept or an idle
        recording it used changed since."""
        for folder in self.folders:
            here = folder / self.name
            try:
                about = json.loads((here / "about.json").read_text(encoding="utf-8"))
                if any(_idle_key(Path(path)) != key for path, key in about["idle"]):
                    return None  # written again by this load
                messages = [(category, message) for category, message in about["messages"]
                            if isinstance(category, str) and isinstance(message, str)]
                if len(messages) != len(about["messages"]):
                    raise ValueError("not a list of warnings")
                tables = {name: _decoded(pq.read_table(here / f"{name}.parquet")) for name in TABLES}
            except (OSError, ValueError, KeyError, TypeError, AttributeError, pa.ArrowException):
                continue  # not here, being replaced, or damaged (written again by this load)
            finally:
                pa.default_memory_pool().release_unused()
            return tables, messages
        return None

    def write(self, tables: dict[str, pd.DataFrame], messages: list[Message]) -> None:
        """Keep ``tables`` (``TABLES``) and the ``AnalysisWarning``s of ``messages`` (the others are about
        the load, not the tree: a library's deprecation, say), replacing a copy kept under the same digest,
        unless a file the load read changed in the ``RACY_S`` before it began, an idle recording is missing
        (it may have gone after it was read), or the tables would not come back as they are; never raises."""
        settled_ns = self.started_ns - int(cache.RACY_S * 1e9)
        info = tables["info"]
        idle = sorted({str(Path(tree) / about["recording"]) for tree, about in zip(info["tree"], info["idle"])
                       if isinstance(about, dict) and about.get("recording")})
        keys = [_idle_key(Path(path)) for path in idle]
        if not all(cache.settled(key, settled_ns) for key in [*self.keys, *keys]):  # "missing": never settled
            return
        try:
            encoded = {name: _encoded(table) for name, table in tables.items()}
            if any(not _same_shape(_decoded(encoded[name]), table) for name, table in tables.items()):
                return  # a type parquet does not give back (a category of numbers, say)
            about = json.dumps({"idle": list(zip(idle, keys)),
                                "messages": [m for m in messages if m[0] == AnalysisWarning.__name__]})
        except (TypeError, ValueError, AttributeError, pa.ArrowException):  # a value this format cannot hold
            return
        for folder in self.folders:
            temporary = folder / f".{self.name}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                temporary.mkdir(parents=True)
                for name, table in encoded.items():
                    pq.write_table(table, temporary / f"{name}.parquet")
                (temporary / "about.json").write_text(about, encoding="utf-8")
                _replace(temporary, folder / self.name)
                _forget_old(folder)
                return
            except (OSError, ValueError, TypeError, pa.ArrowException):
                continue  # the next folder, else not kept
            finally:
                shutil.rmtree(temporary, ignore_errors=True)


def _idle_key(path: Path) -> str:
    """The state of an idle recording (``readers.file_state``), or ``missing``."""
    return readers.file_state(path) or "missing"


def _replace(temporary: Path, target: Path) -> None:
    """Rename the folder ``temporary`` to ``target``, removing a folder there first (a copy found stale or
    damaged, or the same tables kept by another load meanwhile: either way the new one is right)."""
    try:
        os.rename(temporary, target)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        os.rename(temporary, target)


def _forget_old(folder: Path) -> None:
    """Remove all but the ``KEPT`` loads of ``folder`` written last, and temporary folders older than
    ``ABANDONED_S`` (left by a load that was killed while it wrote)."""
    try:
        found = [(p, p.stat().st_mtime_ns) for p in folder.iterdir()]
    except OSError:
        return
    kept = sorted((item for item in found if not item[0].name.startswith(".")), key=lambda item: item[1])
    abandoned = [p for p, mtime in found if p.name.startswith(".") and mtime < time.time_ns() - ABANDONED_S * 1e9]
    for old in [p for p, _ in kept[:-KEPT]] + abandoned:
        shutil.rmtree(old, ignore_errors=True)


def _encoded(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as a parquet-ready table: columns of objects (paths, mappings, lists) as dictionaries of their
    JSON text (``_tagged``), each distinct object written once; the others as pyarrow keeps them."""
    kinds, columns = {}, {}
    for name in frame.columns:
        values = frame[name]
        if values.dtype != object:
            columns[name] = values
            continue
        objects = values.to_numpy()
        text = _text_or_none(objects)
        if text is not None:  # text (or no value) in every row: categories of the text, no JSON
            kinds[name], columns[name] = "text", text
            continue
        kinds[name] = "path" if len(objects) and all(type(v) is type(objects[0]) and isinstance(v, Path)
                                                     for v in objects) else "json"
        texts, memo = [], {}
        for value in objects:
            text = memo.get(id(value))
            if text is None:
                text = memo[id(value)] = str(value) if kinds[name] == "path" else json.dumps(_tagged(value))
            texts.append(text)
        columns[name] = pd.Categorical(texts)
    table = pa.Table.from_pandas(pd.DataFrame(columns, index=frame.index), preserve_index=None)  # a range: kept as such
    return table.replace_schema_metadata({**table.schema.metadata, KINDS: json.dumps(kinds).encode()})


def _decoded(table: pa.Table) -> pd.DataFrame:
    """A table ``_encoded`` wrote, as the frame it was: each distinct value decoded once; rows of equal value
    share it where it cannot be changed (text, numbers, paths, None) or where a load shares it too (the
    mappings of ``readers.SHARED``), and each row has its own list or mapping elsewhere."""
    kinds = json.loads(table.schema.metadata[KINDS])
    frame = table.to_pandas()
    for name, kind in kinds.items():
        values = frame[name].array
        texts, codes = list(values.categories), values.codes
        decoded = texts if kind == "text" else [Path(text) if kind == "path" else
                                                json.loads(text, object_hook=_untagged) for text in texts]
        objects = np.empty(len(decoded) + 1, dtype=object)
        objects[:-1] = decoded  # the last: a missing value's code, -1 (None; no other kind writes one)
        column = objects[codes]
        if name not in readers.SHARED:
            mutable = np.array([isinstance(v, (list, dict)) for v in decoded] + [False])
            for i in np.flatnonzero(mutable[codes]):
                text = texts[codes[i]]
                column[i] = [] if text == "[]" else json.loads(text, object_hook=_untagged)
        frame[name] = pd.Series(column, index=frame.index, dtype=object)
    return frame


def _text_or_none(objects: np.ndarray) -> pd.Categorical | None:
    """``objects`` as categories of text (None: code -1) when every value is a ``str`` or ``None``; else None
    (NaN, which a code cannot tell from None; a subclass of ``str``, which would come back as ``str``; text
    that is not UTF-8)."""
    if pd.api.types.infer_dtype(objects, skipna=True) not in ("string", "empty"):
        return None
    missing = pd.isna(objects)
    text = objects[~missing]
    if not (all(v is None for v in objects[missing]) and all(type(v) is str for v in text)):
        return None
    distinct = pd.unique(text)
    try:
        "".join(distinct).encode()  # parquet holds UTF-8: a lone surrogate (a folder name's byte) goes as JSON
    except UnicodeEncodeError:
        return None
    return pd.Categorical(objects, categories=pd.Index(distinct, dtype=str))  # text even when empty


def _same_shape(back: pd.DataFrame, frame: pd.DataFrame) -> bool:
    """Whether a frame read back has the columns, types and index of the one written."""
    return list(back.columns) == list(frame.columns) and back.dtypes.equals(frame.dtypes) \
        and type(back.index) is type(frame.index) and back.index.equals(frame.index)


def _tagged(value: object) -> object:
    """``value`` with what JSON would change tagged: a path, a tuple. ``TypeError`` for anything JSON cannot
    give back as it was (a mapping with keys that are not text, an object of another type)."""
    if value is None or type(value) in (str, bool, int) or isinstance(value, float):  # numpy's floats: floats
        return value
    if isinstance(value, Path):
        return {PATH: str(value)}
    if isinstance(value, list):
        return [_tagged(v) for v in value]
    if isinstance(value, tuple):
        return {TUPLE: [_tagged(v) for v in value]}
    if isinstance(value, dict) and all(type(k) is str for k in value):
        return {k: _tagged(v) for k, v in value.items()}
    raise TypeError(f"{type(value).__name__} is not kept")


def _untagged(mapping: dict) -> object:
    if len(mapping) == 1:
        if PATH in mapping:
            return Path(mapping[PATH])
        if TUPLE in mapping:
            return tuple(mapping[TUPLE])
    return mapping

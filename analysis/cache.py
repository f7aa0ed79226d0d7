"""The per-run cache: what reading and reducing a complete run gave, kept so that it is done once.

For each complete run with samples: its record (from ``meta.json``), its long
rows (energies per sensor domain, window statistics, latency statistics, a
generation run's token timings and the energy of each of its phases), its
window facts and the warnings reading and reducing it raised, issued again
whenever it is read back; for each idle recording: its baseline and its
warnings. Parquet files (pyarrow), in ``<tree>/.analysis_cache/<tag>/`` when
that can be written, else in ``$XDG_CACHE_HOME`` (or ``~/.cache``)
``/inference-energy/<hash of the tree's absolute path>/<tag>/``; a load reads
both. ``<tree>`` is each path given to ``load_study``.

- Key: the state of the run's files (``readers.run_key``: size, mtime, ctime
  and inode of ``meta.json``, ``power_metrics.json``, ``latency.csv``,
  ``latency.json``, ``tokens.csv``): a changed, replaced or resumed run is read
  again. A run whose files changed less than ``RACY_S`` before the load began
  is not kept (a timestamp may not move within its resolution; a later load
  keeps it). An idle recording's key is its file's state and its sensors.
- Version: ``<tag>`` holds ``REDUCTION_VERSION``, the package's version, a hash
  of the source of the code that reads and reduces runs, and the versions of
  numpy, pandas and pyarrow: a cache written by other code is never read, and
  is removed when this code writes its own.
- Files: each load that computed something adds one shard
  (``rows-<id>.parquet``, then ``entries-<id>.parquet``, each renamed into
  place; later shards win); past ``MAX_SHARDS`` shards, one shard of what the
  load used replaces them.
- Failures never fail a load: an unreadable shard is ignored (its runs are
  read again), and a cache that cannot be written is one ``AnalysisWarning``.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import time
import uuid
from functools import cache
from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import chunks, phases, readers, reduce
from .problems import Message, captured, reissue, warn

REDUCTION_VERSION = 2  # bump when what a run's reduction gives changes in a way the source hash cannot see
RACY_S = 2.0
MAX_SHARDS = 8
HERE = "\x00"  # stands for the run's folder (an idle recording's path) in the messages kept
SHARED = readers.SHARED
NOT_KEPT = {*SHARED, *readers.WALK_FIELDS, "path"}  # a record's fields not kept in its JSON (kept apart, or the walk's)
IDLE = "idle"  # the kind of an idle recording's entry; a run's is its format
TEXT = ["relpath", "key", "kind", "record", *SHARED, "record_messages", "messages", "gpu_domain"]
ENTRIES = pa.schema([*((name, pa.string()) for name in TEXT), ("window_s", pa.float64()),
                     ("window_complete", pa.bool_())])
DICTIONARY = ["kind", *SHARED, "record_messages", "messages", "gpu_domain"]  # few distinct values: read as such
ENTRIES_READ = pa.schema([pa.field(f.name, pa.dictionary(pa.int32(), f.type)) if f.name in DICTIONARY else f
                          for f in ENTRIES])
LABELS = ["relpath", "phase", *chunks.LABELS]  # categories in the rows files (phase: None but for a phase's rows)
# the code whose results are kept, relative to the analysis package (measure.runtree reads meta.json)
CODE = ("cache.py", "chunks.py", "energy.py", "idle.py", "phases.py", "reduce.py", "readers/__init__.py",
        "readers/files.py", "readers/ours.py", "readers/aipowermeter.py", "../measure/runtree.py")


@cache
def tag() -> str:
    """The name of this code's cache folder: ``v<REDUCTION_VERSION>-<hash>``."""
    digest = hashlib.sha256()
    try:
        version = importlib.metadata.version("inference-energy")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    digest.update(f"{version} {np.__version__} {pd.__version__} {pa.__version__}".encode())
    for name in CODE:
        digest.update((Path(__file__).parent / name).read_bytes())
    return f"v{REDUCTION_VERSION}-{digest.hexdigest()[:16]}"


def folders(root: Path) -> list[Path]:
    """Where the cache of the tree ``root`` may be: beside it, then in the user's cache folder (none without a
    home folder or ``XDG_CACHE_HOME``)."""
    beside = Path(root) / readers.CACHE_FOLDER / tag()
    try:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except (RuntimeError, KeyError):  # no home folder known
        return [beside]
    name = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return [beside, home / "inference-energy" / name / tag()]


class Cache:
    """The cache of the trees ``roots`` for one load; a ``readers.RecordStore`` for ``readers.discover``."""

    def __init__(self, roots: Sequence[Path]):
        self.started_ns = time.time_ns()
        self._shelves = {Path(root): _Shelf(Path(root)) for root in roots}

    def get(self, root: Path, relpath: str, key: str, folder: Path) -> tuple[dict, list[Message]] | None:
        return self._shelves[root].get(relpath, key, folder)

    def put(self, root: Path, folder: Path, record: dict) -> None:
        self._shelves[root].records[str(folder)] = record

    def reductions(self, info: pd.DataFrame) -> tuple[chunks.Reductions, np.ndarray]:
        """The reductions kept for the runs of ``info`` (the readers' records) whose files are as they were, and
        a mask of those runs."""
        found = np.zeros(len(info), dtype=bool)
        parts = []
        for root, shelf in self._shelves.items():
            mine = np.flatnonzero([r == root for r in info["root"]])
            part, hit = shelf.reductions(info.iloc[mine])
            found[mine[hit]] = True
            parts.append(part)
        return chunks.combine(parts), found

    def idle_power(self, compute: Callable[[Path, dict], pd.DataFrame]) -> Callable[[Path, dict], pd.DataFrame]:
        """``compute(path, sensors)``, an idle recording's baseline (``domain, idle_power_w, note``), through
        the cache: kept, or computed and kept, its warnings issued either way."""
        def through_cache(path: Path, sensors: dict) -> pd.DataFrame:
            root = next((r for r in self._shelves if Path(path).is_relative_to(r)), None)
            if root is None:  # a recording outside the trees given: not kept
                return compute(path, sensors)
            return self._shelves[root].idle_power(path, sensors, compute)
        return through_cache

    def store(self, info: pd.DataFrame, computed: list[chunks.Reductions]) -> None:
        """Keep the reductions ``computed`` (per chunk) of the complete runs of ``info`` whose files did not
        change in the ``RACY_S`` before the load, and the idle baselines computed; a warning if that fails."""
        settled_ns = self.started_ns - int(RACY_S * 1e9)
        for root, shelf in self._shelves.items():
            shelf.store(info[[r == root for r in info["root"]]], computed, settled_ns)


def _columns(table: pa.Table) -> dict[str, Sequence]:
    """The columns of an entries file: text as lists, numbers as arrays, a dictionary-encoded column as the index
    of each row's value in its decoded values (each decoded once)."""
    table = table.unify_dictionaries()
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_dictionary(column.type):
            values = column.chunk(0).dictionary.to_pylist() if column.num_chunks else []
            indices = np.concatenate([pc.fill_null(chunk.indices, -1).to_numpy()
                                      for chunk in column.chunks] or [np.array([], dtype=np.int32)])
            columns[name] = _Decoded(values, indices)
        elif pa.types.is_string(column.type):
            columns[name] = column.to_pylist()
        else:
            columns[name] = column.to_numpy()
    return columns


class _Decoded(Sequence):
    """A dictionary-encoded column: ``values[indices[i]]``, None where the index is -1."""

    def __init__(self, values: list, indices: np.ndarray):
        self.values, self.indices = values, indices

    def __getitem__(self, i: int):
        at = self.indices[i]
        return None if at < 0 else self.values[at]

    def __len__(self) -> int:
        return len(self.indices)


def settled(key: str, settled_ns: int) -> bool:
    """Whether every file of a key last changed (mtime and ctime) before ``settled_ns``; False for a key it
    cannot read (``missing``, a file name holding ``;``)."""
    try:
        times = [int(t) for part in key.split(";") if part for t in part.rsplit(":", 4)[2:4]]  # a name may hold ":"
    except ValueError:
        return False
    return bool(times) and max(times) < settled_ns


def _dumps_messages(messages: list[Message], here: str) -> str:
    return json.dumps([[c, m.replace(here, HERE)] for c, m in messages])


def _loads_messages(text: str, here: str) -> list[Message]:
    return [(c, m.replace(HERE, here)) for c, m in json.loads(text)] if text != "[]" else []


class _Shelf:
    """The shards of one tree's cache, read once per load, and what this load adds to them."""

    def __init__(self, root: Path):
        self.root = root
        self.records: dict[str, dict] = {}  # folder -> its record, as this load read it
        self._shards: list[tuple[Path, dict[str, list]]] = []  # entries file, its columns; oldest first
        self._entries: dict[str, tuple[int, int]] = {}  # relpath -> (shard, position): its latest entry
        self._hits: dict[str, tuple[int, int]] = {}  # folder -> its entry, found as it was this load
        self._used: dict[str, tuple[int, int]] = {}  # entries this load took reductions from
        self._rows: dict[int, pd.DataFrame | None] = {}
        self._shared: dict[str, object] = {}
        self._new: list[tuple[dict, pd.DataFrame]] = []  # idle entries computed, with their rows
        for folder in folders(root):
            try:
                paths = list(folder.glob("entries-*.parquet"))
            except OSError:
                continue
            for path in paths:
                try:
                    table = pq.read_table(path, read_dictionary=DICTIONARY, use_threads=False)
                except (OSError, pa.ArrowException):
                    continue  # being replaced by another load, or damaged: its runs are read again
                if table.schema.remove_metadata().equals(ENTRIES_READ):
                    self._shards.append((path, _columns(table)))
        pa.default_memory_pool().release_unused()  # the reader's buffers
        self._shards.sort(key=lambda shard: shard[0].name)  # names start with the time they were written
        for number, (_, columns) in enumerate(self._shards):
            self._entries.update((relpath, (number, i)) for i, relpath in enumerate(columns["relpath"]))

    def _found(self, relpath: str, key: str) -> tuple[int, int] | None:
        at = self._entries.get(relpath)
        return at if at is not None and self._shards[at[0]][1]["key"][at[1]] == key else None

    def get(self, relpath: str, key: str, folder: Path) -> tuple[dict, list[Message]] | None:
        at = self._found(relpath, key)
        if at is None:
            return None
        self._hits[str(folder)] = at
        columns, i = self._shards[at[0]][1], at[1]
        messages = _loads_messages(columns["record_messages"][i], str(folder))
        if columns["kind"][i] != readers.ours.FORMAT:
            return {"format": columns["kind"][i]}, messages
        record = json.loads(columns["record"][i])
        for name in SHARED:
            text = columns[name][i]
            record[name] = self._shared[text] if text in self._shared else \
                self._shared.setdefault(text, json.loads(text))
        record["path"] = folder
        self.records[str(folder)] = record  # kept again with its reductions, should they have to be read again
        return record, messages

    def reductions(self, info: pd.DataFrame) -> tuple[chunks.Reductions, np.ndarray]:
        folders = [str(path) for path in info["path"]]
        hit = np.array([f in self._hits for f in folders], dtype=bool)
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for folder, run in zip(np.array(folders, dtype=object)[hit], info.index[hit]):
            number, i = self._hits[folder]
            by_shard.setdefault(number, []).append((i, run))
        rows, phase_rows, windows, messages = [], [], [], {}
        for number, found in by_shard.items():
            table, columns = self._rows_of(number), self._shards[number][1]
            positions, runs = map(list, zip(*found))
            if table is None:  # its rows are gone: those runs are read again
                hit[info.index.get_indexer(runs)] = False
                continue
            codes = table["relpath"].cat.codes.to_numpy()
            names = [columns["relpath"][i] for i in positions]
            run_of = pd.Series(runs, index=names).reindex(table["relpath"].cat.categories).to_numpy()
            ids = run_of[codes]
            keep = (codes >= 0) & ~pd.isna(ids)
            mine = table.loc[keep].assign(run_id=ids[keep].astype(np.int64))
            of_phase = mine["phase"].notna().to_numpy()
            rows.append(mine.loc[~of_phase, reduce.ROW_COLUMNS])
            phase_rows.append(mine.loc[of_phase, phases.PHASE_COLUMNS])
            windows.append(pd.DataFrame({name: [columns[name][i] for i in positions]
                                         for name in chunks.WINDOW_COLUMNS}, index=runs))
            for i, name, run in zip(positions, names, runs):
                self._used[name] = (number, i)
                if columns["messages"][i] != "[]":
                    messages[run] = _loads_messages(columns["messages"][i], str(info.at[run, "path"]))
        windows = pd.concat(windows).sort_index() if windows else pd.DataFrame(columns=chunks.WINDOW_COLUMNS)
        return chunks.Reductions(chunks.concat_rows(rows), windows,
                                 chunks.concat_rows(phase_rows, phases.PHASE_COLUMNS), messages), hit

    def _rows_of(self, number: int) -> pd.DataFrame | None:
        """The rows file of a shard (``LABELS`` as categories), or None when it cannot be read."""
        if number not in self._rows:
            path = self._shards[number][0]
            try:
                self._rows[number] = pq.read_table(path.with_name(path.name.replace("entries-", "rows-")),
                                                   read_dictionary=LABELS, use_threads=False).to_pandas()
            except (OSError, pa.ArrowException):
                self._rows[number] = None
            pa.default_memory_pool().release_unused()
        return self._rows[number]

    def idle_power(self, path: Path, sensors: dict, compute: Callable[[Path, dict], pd.DataFrame]) -> pd.DataFrame:
        relpath = readers.relative(path, self.root)
        state = readers.file_state(path)
        if state is None:
            return compute(path, sensors)  # it says the recording is unreadable
        key = f"{state};sensors:" + hashlib.sha256(json.dumps(sensors, sort_keys=True).encode()).hexdigest()[:16]
        at = self._found(relpath, key)
        table = self._rows_of(at[0]) if at is not None else None
        if table is not None:
            self._used[relpath] = at
            mine = table[(table["relpath"] == relpath).to_numpy()]
            reissue(_loads_messages(self._shards[at[0]][1]["messages"][at[1]], str(path)))
            return pd.DataFrame({"domain": mine["domain"].to_numpy(dtype=object),
                                 "idle_power_w": mine["value"].to_numpy(dtype=float),
                                 "note": mine["note"].to_numpy(dtype=object)})
        with captured() as messages:
            baseline = compute(path, sensors)
        reissue(messages)
        entry = {"relpath": relpath, "key": key, "kind": IDLE, "record_messages": "[]",
                 "messages": _dumps_messages(messages, str(path))}
        self._new.append((entry, pd.DataFrame({
            "relpath": relpath, "domain": baseline["domain"].to_numpy(dtype=object), "quantity": "idle_power_w",
            "value": baseline["idle_power_w"].to_numpy(dtype=float), "unit": "W", "source": None, "method": None,
            "note": baseline["note"].to_numpy(dtype=object)})))
        return baseline

    def store(self, info: pd.DataFrame, computed: list[chunks.Reductions], settled_ns: int) -> None:
        entries = [e for e, _ in self._new if settled(e["key"], settled_ns)]
        rows = [r for e, r in self._new if settled(e["key"], settled_ns)]
        computed = [part for part in computed if not part.loose]  # a warning naming no run: its chunk is not kept
        reduced = info.index.intersection(np.concatenate([part.windows.index for part in computed] or [[]]))
        about = {run: (readers.relative(path, self.root), key, kind, messages, str(path))
                 for run, path, key, kind, messages, status in zip(
                     reduced, *(info.loc[reduced, c] for c in ("path", "key", "format", "messages", "status")))
                 if status == readers.runtree.COMPLETE and settled(key, settled_ns)}
        texts: dict = {}  # a SHARED mapping's JSON, by object: most runs share one (readers.ours.share)
        stored = []  # the runs whose reductions are kept
        for part in computed:
            windows = part.windows[part.windows.index.isin(list(about))]
            stored += list(windows.index)
            for run, window_s, complete, gpu in zip(windows.index, *(windows[c] for c in chunks.WINDOW_COLUMNS)):
                relpath, key, kind, record_messages, here = about[run]
                entry = {"relpath": relpath, "key": key, "kind": kind, "window_s": float(window_s),
                         "window_complete": bool(complete), "gpu_domain": None if pd.isna(gpu) else str(gpu),
                         "record_messages": _dumps_messages(record_messages, here),
                         "messages": _dumps_messages(part.messages.get(run, []), here)}
                if kind == readers.ours.FORMAT:
                    record = self.records[here]
                    entry["record"] = json.dumps({k: v for k, v in record.items() if k not in NOT_KEPT})
                    entry.update({name: readers.ours.json_once(record[name], texts) for name in SHARED})
                entries.append(entry)
        relpath_of = pd.Series({run: about[run][0] for run in stored}, dtype=object)
        for kept in (chunks.concat_rows([part.rows for part in computed]),
                     chunks.concat_rows([part.phases for part in computed], phases.PHASE_COLUMNS)):
            kept = kept[kept["run_id"].isin(stored)]
            rows.append(kept.assign(relpath=kept["run_id"].map(relpath_of).to_numpy()).drop(columns="run_id"))
        if not entries:
            return
        problem = None
        for folder in folders(self.root):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                for other in folder.parent.glob("v*-*"):  # other code's caches: never read by this code
                    if other != folder:
                        shutil.rmtree(other, ignore_errors=True)
                shards = sorted(folder.glob("entries-*.parquet"))
                if len(shards) + 1 > MAX_SHARDS:  # one shard of what this load used replaces them
                    kept_entries, kept_rows = self._kept()
                    self._write(folder, kept_entries + entries, kept_rows + rows)
                    _remove(shards)
                else:
                    self._write(folder, entries, rows)
                return
            except (OSError, ValueError, TypeError, pa.ArrowException) as error:  # never fails a load
                problem = problem or f"{folder}: {getattr(error, 'strerror', None) or error}"
        warn(f"{self.root}: analysis cache not written ({problem}); the next load reads these runs again")

    def _kept(self) -> tuple[list[dict], list[pd.DataFrame]]:
        """The entries this load used from the shards, and their rows."""
        entries, rows = [], []
        by_shard: dict[int, list[tuple[str, int]]] = {}
        for relpath, (number, i) in self._used.items():
            by_shard.setdefault(number, []).append((relpath, i))
        for number, used in by_shard.items():
            columns, table = self._shards[number][1], self._rows_of(number)
            entries += [{name: columns[name][i] for name in ENTRIES.names} for _, i in used]
            rows.append(table[table["relpath"].isin([relpath for relpath, _ in used]).to_numpy()])
        return entries, rows

    @staticmethod
    def _write(folder: Path, entries: list[dict], rows: list[pd.DataFrame]) -> None:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        rows = [r.astype({c: object for c in LABELS if c in r}) for r in rows if len(r)]  # an idle recording: none
        rows = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=LABELS)
        rows = rows.reindex(columns=["relpath", "phase", *reduce.ROW_COLUMNS[1:]]).astype(
            {**{c: "category" for c in LABELS}, "value": float, "note": object})
        _write_atomic(pa.Table.from_pandas(rows, preserve_index=False), folder / f"rows-{name}.parquet")
        columns = {c: [e.get(c) for e in entries] for c in ENTRIES.names}
        _write_atomic(pa.table(columns, schema=ENTRIES), folder / f"entries-{name}.parquet")


def _remove(shards: list[Path]) -> None:
    for path in shards:  # the entries first: a shard without them is never read
        path.unlink(missing_ok=True)
        path.with_name(path.name.replace("entries-", "rows-")).unlink(missing_ok=True)


def _write_atomic(table: pa.Table, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)

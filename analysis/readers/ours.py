"""Our run folders (``meta.json`` + JSON-lines samples + ``latency.csv``) -> records and sample frames.

The format is ``measure.runtree``'s; ``meta.json`` is read through its ``Meta``
validator (schema 1 and 2). Speed: our sample files have the same keys in the
same order on every line, so files sharing a key header are concatenated,
their JSON punctuation removed (one ``bytes.translate``: tokens one blank
apart) or, where lines are spaced otherwise, turned into blanks, and parsed by
pandas' C reader in batches; a file that fails the cheap shape checks goes
through ``json.loads`` line by line, bad lines skipped with a warning.
"""
from __future__ import annotations

import csv
import io
import json
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from measure import runtree

from ..problems import Message, captured, warn
from .files import batches, json_lines, numbers, read_bytes

FORMAT = "ours"
CHUNK_BYTES = 32 << 20
WORKERS = 3
BLANKS = bytes.maketrans(b",{}:", b"    ")
PUNCTUATION = b",{}:"
SHARED = ("sensors", "host", "unavailable", "idle")  # mappings most runs of a tree hold equal
MARKS = ("start", "tick", "split", "end")  # split: a generation's boundary between its phases
# schema-1 channel metric -> its current name (MiB channels were named _mb)
RENAMED = {old: new for old, new in runtree.SCHEMA_1_CHANNELS.items()}


def record(folder: Path) -> dict | None:
    """The record of one of our run folders, from its ``meta.json``; None (with a warning) if unusable."""
    try:
        meta = runtree.read_meta(folder)
    except runtree.MetaError as error:
        warn(f"{error}; run skipped")
        return None
    identity, host = dict(meta.identity), meta.host
    gpu_domain = meta.get("gpu_domain")
    device = str(identity.get("device"))
    if gpu_domain is None and meta.schema == 1 and device.startswith("cuda"):
        gpu_domain = f"gpu{device.partition(':')[2] or 0}"
        warn(f"{folder / runtree.META_FILE}: no gpu_domain recorded (an early tree); its GPU taken to be "
             f"{gpu_domain}, NVML's index for {device}")
    names = {g.get("domain"): g.get("name") for g in host.get("gpus") or []}
    recording = meta.idle_recording
    return {
        **identity, "run": meta.run, "status": meta.status, "format": FORMAT, "path": folder,
        "weights": meta.get("weights"), "iterations": meta.iterations, "warmup": meta.get("warmup"),
        "period_s": meta.get("period_s"), "params": meta.get("params"),
        "flops_per_inference": meta.get("flops_per_inference"), "gpu_domain": gpu_domain,
        "hardware_gpu": names.get(gpu_domain), "hardware_cpu": host.get("cpu_model"),
        "logical_cpus": host.get("logical_cpus"), "order": meta.get("order"), "sensors": _renamed_sensors(meta.sensors),
        "host": host, "unavailable": meta.unavailable,
        "idle": {"recording": recording, "given_w": meta.idle_power_w}, "phases": meta.get("phases"),
    }


def records(folders: list[Path]) -> list[tuple[dict | None, list[Message]]]:
    """``(record(folder), messages)`` of each folder, ``messages`` the warnings reading it raised (captured);
    equal ``SHARED`` mappings are one object (``share``), so a worker sends each once."""
    found = []
    for folder in folders:
        with captured() as messages:
            one = record(folder)
        found.append((one, messages))
    share([one for one, _ in found if one is not None], {})
    return found


def share(records: list[dict], pool: dict[str, object]) -> None:
    """Make the ``SHARED`` mappings of ``records`` that are equal one object, that of ``pool`` (JSON text ->
    mapping, added to): a load holds each once. Each distinct object is written as JSON once."""
    texts: dict = {}
    for one in records:
        for key in SHARED:
            one[key] = pool.setdefault(json_once(one[key], texts), one[key])


def json_once(value: object, texts: dict[int, tuple[str, object]]) -> str:
    """``json.dumps(value)``, computed once per object: ``texts`` keeps it by the object's id, with the object
    (held, so that its id stays its own)."""
    found = texts.get(id(value))
    if found is None:
        found = texts[id(value)] = (json.dumps(value), value)
    return found[0]


def _renamed_sensors(sensors: dict) -> dict:
    """``meta.json``'s sensors with schema-1 channel names updated."""
    return {domain: {**about, "channels": [_channel(c) for c in about.get("channels") or []]}
            for domain, about in sensors.items()}


def _channel(name: str) -> str:
    domain, _, metric = name.rpartition(".")
    return f"{domain}.{RENAMED[metric]}" if metric in RENAMED else name


def frames(items: list[tuple[int, Path]], text: bool = False) -> Iterator[pd.DataFrame]:
    """Wide sample frames (``run, segment, t_s, mark, [utc, gap,] <channels>``) of our sample files.

    ``items``: ``(run id, path of power_metrics.json)``. The files go by batches
    of about ``CHUNK_BYTES`` to ``WORKERS`` threads (file reads and pandas' C
    reader release the GIL) while the caller works on the frames already out;
    at most ``WORKERS`` batches wait, which bounds memory. A single batch (a
    chunk of ``load_study``'s, ``analysis.chunks``) is parsed in the calling
    thread: there is nothing to overlap, and a thread allocates from a malloc
    arena of its own, which gives its memory back to the system after each
    chunk and faults it in again for the next. ``text`` keeps the ``utc`` and
    ``gap`` columns.
    """
    todo = list(batches(items, CHUNK_BYTES))
    if len(todo) < 2:
        for batch in todo:
            yield from _parse_batch(batch, text)
        return
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        jobs: deque[Future] = deque()
        for batch in todo:
            jobs.append(pool.submit(_parse_batch, batch, text))
            while len(jobs) > WORKERS:
                yield from jobs.popleft().result()
        while jobs:
            yield from jobs.popleft().result()


def _parse_batch(batch: list[tuple[int, Path]], text: bool) -> list[pd.DataFrame]:
    """Read a batch of files; parse those sharing a key header together, the odd ones line by line."""
    frames, groups = [], {}
    for run, path in batch:
        data = read_bytes(path)
        if data is None:
            continue
        first = _header(data)
        if first is None or not data.endswith(b"\n"):
            frames.append(_parse_lines(run, path, data, text))
        else:
            groups.setdefault(tuple(first), []).append((run, path, data, first["mark"] == "start"))
    for keys, group in groups.items():
        runs, paths, datas, starts = zip(*group)
        frame = _read_chunk(keys, datas, all(starts), runs, text)
        if frame is not None:
            frames.append(frame)
            continue
        for run, path, data, start in group:  # some file does not fit: each alone, then line by line
            alone = _read_chunk(keys, [data], start, [run], text) if len(group) > 1 else None
            frames.append(alone if alone is not None else _parse_lines(run, path, data, text))
    return [_renamed(frame) for frame in frames if frame is not None]


def _renamed(frame: pd.DataFrame) -> pd.DataFrame:
    old = {c: _channel(c) for c in frame.columns if "." in c and c.rpartition(".")[2] in RENAMED}
    return frame.rename(columns=old) if old else frame


def _header(data: bytes) -> dict | None:
    """The first line of a file, if it is an object with ``t_s`` and ``mark``."""
    try:
        first = json.loads(data[:data.find(b"\n")])
    except ValueError:
        return None
    return first if isinstance(first, dict) and {"t_s", "mark"} <= set(first) else None


def _read_chunk(keys: tuple[str, ...], datas, starts: bool, runs, text: bool) -> pd.DataFrame | None:
    """Parse whole files of one key header with the C reader; None if any line does not fit (a line left
    blank once stripped of its punctuation, ``{}``, included: the line-by-line reader warns of it).

    Our recorder writes ``", "`` and ``": "`` between the tokens of a line:
    without that punctuation, tokens are one blank apart and the reader splits
    on that blank, the fastest way (taken unless ``text``, as it joins the
    parts of ``utc``); where a line does not fit, the punctuation becomes
    blanks and any run of blanks splits. ``starts``: whether every file's
    first line is its ``start`` sample (see ``_rows_per_file``).
    """
    frame = None if text else _read_tokens(keys, datas, starts, runs, text, single_blank=True)
    return frame if frame is not None else _read_tokens(keys, datas, starts, runs, text, single_blank=False)


def _rows_per_file(marks: pd.Categorical, datas, starts: bool) -> np.ndarray | None:
    """The rows each file gave, or None if they are not its lines.

    When every file's first line is its ``start`` sample and the rows hold as
    many ``start`` samples as there are files, the files begin where those rows
    are (no other ``start`` row can be among them): no need to count lines. Else
    each file must give a row per line.
    """
    first = np.flatnonzero(marks == '"start"')
    if starts and len(first) == len(datas):
        return np.diff(np.r_[first, len(marks)])
    lines = np.array([data.count(b"\n") for data in datas])
    return lines if lines.sum() == len(marks) else None


def _read_tokens(keys: tuple[str, ...], datas, starts: bool, runs, text: bool,
                 single_blank: bool) -> pd.DataFrame | None:
    def tokens_of(data: bytes) -> bytes:
        return data.translate(None, PUNCTUATION) if single_blank else data.translate(BLANKS)

    header = tokens_of(datas[0][:datas[0].index(b"\n")])
    tokens = header.split(b" ") if single_blank else header.split()
    try:
        at = [tokens.index(f'"{k}"'.encode()) for k in keys] + [len(tokens)]
    except ValueError:
        return None
    span = {k: range(at[i] + 1, at[i + 1]) for i, k in enumerate(keys)}
    wanted = [k for k in keys if "." in k or k in ("t_s", "mark") or (text and k in ("utc", "gap"))]
    if any(len(span[k]) != 1 for k in wanted if k != "utc"):
        return None
    columns = [c for k in wanted for c in span[k]]
    try:
        tokens_joined = b"".join([tokens_of(data) for data in datas])  # no copy of the files joined: less memory
        raw = pd.read_csv(io.BytesIO(tokens_joined), sep=" " if single_blank else r"\s+", header=None,
                          names=range(len(tokens)), usecols=columns, quoting=csv.QUOTE_NONE,
                          na_values=["null"], engine="c", skip_blank_lines=False,  # a blank line: no t_s, below
                          dtype={span["mark"][0]: "category", **{c: str for k in ("utc", "gap") if k in wanted
                                                                 for c in span[k]}})
    except (ValueError, pd.errors.ParserError):
        return None
    frame = pd.DataFrame({k: raw[span[k][0]] for k in wanted if k != "utc"})
    numeric = [k for k in wanted if k not in ("mark", "utc", "gap")]
    marks = set(frame["mark"].cat.categories)
    if any(frame[k].dtype.kind != "f" for k in numeric) or frame["t_s"].isna().any() \
            or not marks <= {f'"{mark}"' for mark in MARKS}:
        return None
    lines = _rows_per_file(frame["mark"].array, datas, starts)
    if lines is None:
        return None
    frame["mark"] = frame["mark"].cat.rename_categories(lambda c: c.strip('"'))
    if text:
        utc = raw[span["utc"][0]].astype(str)
        for extra in span["utc"][1:]:
            utc = utc + ":" + raw[extra].astype(str)
        frame["utc"], frame["gap"] = utc.str.strip('"'), frame["gap"].astype(str).str.strip('"')
    frame.insert(0, "run", np.repeat(runs, lines))
    frame.insert(1, "segment", 0)
    return frame


def tokens(folders: pd.Series) -> pd.DataFrame:
    """Every new token of the generation runs in ``folders`` (run id -> folder): ``run_id, token, t_s,
    latency_s`` from their ``tokens.csv`` (docs/run-tree.md), in file order. A missing or unreadable file, or
    one without those columns, is warned about and its run left out; rows with a value that is not a
    non-negative number are dropped with a warning."""
    parts = []
    for run, folder in folders.items():
        path = Path(folder) / runtree.TOKENS_FILE
        try:
            table = pd.read_csv(path)
        except FileNotFoundError:
            warn(f"{folder}: no {runtree.TOKENS_FILE}; its time to first token and inter-token latencies unknown")
            continue
        except (OSError, ValueError, pd.errors.ParserError) as error:
            warn(f"{path}: unreadable ({type(error).__name__}); its token timings unknown")
            continue
        if not {"token", "t_s", "latency_s"} <= set(table.columns):
            warn(f"{path}: no token, t_s and latency_s columns; its token timings unknown")
            continue
        values = table[["token", "t_s", "latency_s"]].apply(pd.to_numeric, errors="coerce")
        bad = ~(values >= 0).all(axis=1)
        if bad.any():
            warn(f"{path}: {int(bad.sum())} line(s) with a value that is not a non-negative number dropped")
        parts.append(values[~bad].assign(run_id=run))
    empty = pd.DataFrame({"run_id": pd.Series(dtype=int), **{c: pd.Series(dtype=float)
                                                             for c in ("token", "t_s", "latency_s")}})
    return pd.concat([empty, *parts], ignore_index=True)[list(empty.columns)]


def _parse_lines(run: int, path: Path, data: bytes, text: bool) -> pd.DataFrame | None:
    """The slow, forgiving path: line by line, bad lines skipped with a warning."""
    kept = json_lines(path, data, lambda v: isinstance(v, dict) and v.get("mark") in MARKS
                      and type(v.get("t_s")) in (int, float) and np.isfinite(v["t_s"]))
    if not kept:
        return None
    numbers_of, rows = zip(*kept)
    frame = pd.DataFrame.from_records(rows)
    channels = [c for c in frame.columns if "." in c]
    frame = frame.reindex(columns=["t_s", "mark", *(["utc", "gap"] if text else []), *channels])
    odd = []
    for channel in channels:
        frame[channel], bad = numbers(frame[channel].to_numpy(dtype=object))
        odd += [f"{channel} at line {numbers_of[i]}" for i in np.flatnonzero(bad)]
    if odd:
        warn(f"{path}: {len(odd)} value(s) not a number read as missing ({', '.join(odd[:5])}"
             + (", ..." if len(odd) > 5 else "") + ")")
    frame["mark"] = pd.Categorical(frame["mark"], categories=list(MARKS))
    frame.insert(0, "run", run)
    frame.insert(1, "segment", 0)
    return frame

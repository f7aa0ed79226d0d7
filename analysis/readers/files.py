"""Reading helpers both formats share: whole files, JSON lines, latency files."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from ..problems import warn

LATENCY_CSV, LATENCY_JSON = "latency.csv", "latency.json"


def read_bytes(path: Path) -> bytes | None:
    """The bytes of ``path``, or None (with a warning) if it is unreadable or empty."""
    try:
        data = path.read_bytes()
    except OSError as error:
        warn(f"{path}: unreadable ({error.strerror}); run skipped")
        return None
    if not data or data.isspace():
        warn(f"{path}: empty; run skipped")
        return None
    return data


def batches(items: list[tuple[int, Path]], chunk_bytes: int) -> Iterator[list[tuple[int, Path]]]:
    """``items`` (run id, file) in consecutive batches of about ``chunk_bytes`` of files each."""
    batch, size = [], 0
    for run, path in items:
        batch.append((run, path))
        try:
            size += path.stat().st_size
        except OSError:
            pass  # reported when read
        if size >= chunk_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def first_line(path: Path) -> object:
    """The JSON value of the first non-blank line of ``path``; None if unreadable."""
    try:
        with open(path, "rb") as handle:
            for line in handle:
                if line.strip():
                    return json.loads(line)
    except (OSError, ValueError):
        pass
    return None


def json_lines(path: Path, data: bytes, sound: Callable[[object], bool]) -> list[tuple[int, object]]:
    """``(line number, value)`` of the lines of ``data`` whose JSON value ``sound`` accepts; one warning
    for the others."""
    kept, bad = [], []
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if sound(value):
            kept.append((number, value))
        else:
            bad.append(f"{number}" + (" (truncated last line)" if number == len(lines) else ""))
    if bad:
        warn(f"{path}: {len(bad)} unreadable line(s) skipped (line {', '.join(bad[:5])}"
             + (", ..." if len(bad) > 5 else "") + ")" + ("; the rest used" if kept else "; run skipped"))
    return kept


def numbers(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (objects from JSON) as floats: numbers as they are, ``None`` (JSON null) as NaN, anything
    else (a string, a boolean, a list, an object) as NaN too. Returns ``(floats, not_a_number)``, the second
    True where a value was present but not a number (for a warning)."""
    kind = np.array([type(v) in (int, float) for v in values], dtype=bool)
    floats = np.full(len(values), np.nan)
    if kind.any():
        floats[kind] = np.asarray(values[kind], dtype=float)
    return floats, ~kind & np.array([v is not None for v in values], dtype=bool)


def latencies(folders: pd.Series, *, iterations_known: pd.Series) -> pd.Series:
    """Every latency (s) of the runs in ``folders`` (run id -> folder), indexed by run id, in file order.

    ``latency.csv`` (a ``latency_s`` header, one value a line) or, where only it
    exists, AIPowerMeter's ``latency.json`` (a list). Missing files, bad and
    negative values are warned about and left out; ``iterations_known`` (run id
    -> bool) says whether a missing file also leaves the iterations unknown.
    """
    bodies, counts, runs = [], [], []
    values: list[pd.Series] = []
    for run, folder in folders.items():
        if (folder / LATENCY_JSON).exists() and not (folder / LATENCY_CSV).exists():
            values.append(_latency_json(run, folder / LATENCY_JSON))
            continue
        try:
            data = (folder / LATENCY_CSV).read_bytes()
        except OSError:
            warn(f"{folder}: no {LATENCY_CSV}; latency unknown" + (
                "" if iterations_known[run] else ", iterations unknown: energies per inference left NaN"))
            continue
        head, _, rest = data.partition(b"\n")
        body = rest if head.strip() == b"latency_s" else data
        if not body.strip():
            warn(f"{folder / LATENCY_CSV}: no latency value; latency unknown")
            continue
        if not body.endswith(b"\n"):
            body += b"\n"
        bodies.append(body)
        counts.append(body.count(b"\n"))
        runs.append(run)
    values.append(_latency_csv(bodies, counts, runs))
    found = pd.concat(values)
    bad = ~(found >= 0)
    if bad.any():
        for run, count in found[bad].groupby(level=0).size().items():
            warn(f"{folders[run]}: {count} unreadable or negative latency value(s) skipped")
        found = found[~bad]
    return found


def _latency_csv(bodies: list[bytes], counts: list[int], runs: list[int]) -> pd.Series:
    index = np.repeat(runs, counts)
    try:
        parsed = pd.read_csv(io.BytesIO(b"".join(bodies)), header=None, names=["latency_s"], dtype=float,
                             skip_blank_lines=False, engine="c")["latency_s"].to_numpy()
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        parsed = None
    if parsed is None or len(parsed) != len(index):  # some file does not fit: one file at a time
        parsed = np.concatenate([np.array([_float(v) for v in body.split(b"\n")[:-1]]) for body in bodies]) \
            if bodies else np.array([])
    return pd.Series(parsed, index=index, dtype=float)


def _float(text: bytes) -> float:
    try:
        return float(text)
    except ValueError:
        return np.nan


def _latency_json(run: int, path: Path) -> pd.Series:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        values = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").astype(float)
    except (OSError, ValueError, TypeError):
        warn(f"{path}: unreadable; latency unknown")
        values = pd.Series(dtype=float)
    return values.set_axis(np.full(len(values), run))

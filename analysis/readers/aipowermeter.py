"""AIPowerMeter's run folders (``power_metrics.json`` without ``meta.json``) -> records and sample frames.

AIPowerMeter writes JSON lines ``{"date": <local wall time>, "metrics": {"cpu": {...}, "gpu": {...}}}``
and ``"END OF RECORDING SEGMENT"`` between recordings. A folder carries no
metadata: the model, input size and run come from its path
(``.../<model>/input_<size>/run_<k>``), its iteration count from its latency file.

What a line's values mean (AIPowerMeter's ``deep_learning_power_measure``):
its RAPL powers (``rapl_power.get_diff_power_draw``: an energy difference over
the sampling sleep) and, in releases that read NVML, its GPU powers
(``gpu_power.get_diff_gpu_sample``: a counter difference over the time
between two samples) are mean powers over the interval that ends at the
line's ``date``; they become ``<domain>.interval_power_w`` channels, and each
line's ``interval_s`` is the interval it stands for: the time since the
previous line, or, for the first line of a recording, one sampling period
(the file's median interval). nvidia-smi's power draws (``nvidia_draw_absolute``,
``per_gpu_power_draw``, older releases) are point readings: ``power_w``.

The dates are wall-clock time: a step back, or a jump of more than
``JUMP_PERIODS`` sampling periods (a clock change, a pause recorded without
its ``END OF RECORDING SEGMENT`` line), ends a segment, with a warning naming
the line; nothing is integrated across it, and the interval before the line
after it is unknown. A value that is null or of the wrong type is missing
(with a warning); an unreadable line between readable ones of a recording,
like a line without its ``gpu`` block, is a gap: its readings are missing.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson
import pandas as pd

from ..problems import warn
from .files import batches, first_line, read_bytes

FORMAT = "aipowermeter"
SAMPLES_FILE = "power_metrics.json"
SEGMENT_END = "END OF RECORDING SEGMENT"
CHUNK_BYTES = 8 << 20
JUMP_PERIODS = 4  # an interval longer than this many sampling periods is a clock jump or an unrecorded pause
MIB = 1 << 20
NUMBER = (int, float)
# How each key of metrics.cpu / metrics.gpu is read: (shape, channel or metric, scale).
# "value": a number; "sum": {pid: number}, summed over the measured processes; "gpu": {gpu: number},
# one channel gpu<i>.<metric> per GPU; "gpu_sum": {gpu: {pid: number}}, summed over the processes per GPU.
KEYS = {
    "cpu": {
        "intel_power": ("value", "cpu_package.interval_power_w", 1.0),  # RAPL package, summed over sockets
        "total_dram_power": ("value", "dram.interval_power_w", 1.0),
        "psys_power": ("value", "psys.interval_power_w", 1.0),  # -1 where the machine has no psys domain
        "total_cpu_power": ("value", "cpu_core.interval_power_w", 1.0),  # RAPL core (PP0)
        "uncore_power": ("value", "cpu_uncore.interval_power_w", 1.0),  # a one-number list in some releases
        "per_process_mem_use_abs": ("sum", "process.pss_mib", 1 / MIB),  # PSS (RSS where PSS is unreadable)
        "per_process_mem_use_uss": ("sum", "process.uss_mib", 1 / MIB),
        "per_process_cpu_uses": ("sum", "process.cpu_busy_share", 1.0),  # of the machine's busy CPU time
    },
    "gpu": {
        "nvidia_draw_absolute": ("value", "gpu_node.power_w", 1.0),  # nvidia-smi: point readings
        "per_gpu_power_draw": ("gpu", "power_w", 1.0),
        "nvidia_power": ("value", "gpu_node.interval_power_w", 1.0),  # NVML: mean over the interval
        "per_gpu_nvidia_power": ("gpu", "interval_power_w", 1.0),
        "per_gpu_attributable_mem_use": ("gpu_sum", "proc_mem_mib", 1 / MIB),
        "per_gpu_absolute_percent_usage": ("gpu", "proc_sm_util_pct", 100.0),  # SM use of the processes (pmon)
        "per_gpu_nvidia_use_rate": ("gpu", "sm_util_pct", 1.0),
        "per_gpu_nvidia_memory": ("gpu", "mem_used_mib", 1 / MIB),
    },
}
NO_PSYS = -1  # AIPowerMeter's psys_power where RAPL has no psys domain


def recognises(path: Path) -> tuple[bool, str]:
    """Whether ``path`` (a ``power_metrics.json``) is AIPowerMeter's, and if not, why (for a warning)."""
    first = first_line(path)
    if first == SEGMENT_END or isinstance(first, dict) and "metrics" in first:
        return True, ""
    what = ("holds our sample format but no meta.json" if isinstance(first, dict) and "t_s" in first
            else "is empty or not a recognised power_metrics.json")
    return False, what


def record(folder: Path, model: str | None, root: Path) -> dict:
    """The record of an AIPowerMeter folder under ``root``, its identity from its path.

    ``.../<model>/input_<size>/run_<k>``: that model, size and run (the
    folder's name where it is not numbered). Without ``input_<size>``, a folder
    named ``run_<k>`` or ``<k>`` is run k of the model named by its parent
    folder; any other is a recording of its own: run 0 of its parent folder's
    model, with a ``recording`` dimension, its path under ``root`` (``root``'s
    name for ``root`` itself), so that unrelated recordings are never pooled.
    ``model`` names the model of every run instead of its folder.
    """
    names = folder.absolute().parts[1:]
    size_at = next((i for i in range(len(names) - 1, -1, -1) if re.fullmatch(r"input_\d+", names[i])), None)
    number = re.fullmatch(r"(?:run_)?(\d+)", names[-1])
    identity: dict[str, object] = {"input_size": np.nan, "run": int(number.group(1)) if number else names[-1]}
    model_at = len(names) - 2
    if size_at is not None:
        identity["input_size"], model_at = int(names[size_at][6:]), size_at - 1
    elif number is None:
        identity["run"] = 0
        identity["recording"] = folder.relative_to(root).as_posix() if folder != root else root.absolute().name
    return {
        "model": model or (names[model_at] if model_at >= 0 else names[-1]), **identity, "status": "complete",
        "format": FORMAT, "path": folder, "iterations": np.nan, "gpu_domain": None, "sensors": {}, "idle": {},
        "host": {}, "unavailable": {},
    }


def frames(items: list[tuple[int, Path]]) -> Iterator[pd.DataFrame]:
    """Wide sample frames (``run, segment, t_s, mark, interval_s, <channels>``) of AIPowerMeter files.

    ``items``: ``(run id, path of power_metrics.json)``. Files are read in
    batches of about ``CHUNK_BYTES``; the files of a batch that hold the same
    channels make one frame.
    """
    for batch in batches(items, CHUNK_BYTES):
        groups: dict[tuple[str, ...], list[dict]] = {}
        for run, path in batch:
            parsed = _parse(run, path)
            if parsed is not None:
                groups.setdefault(tuple(sorted(parsed["channels"])), []).append(parsed)
        for channels, files in groups.items():
            frame = pd.DataFrame({column: np.concatenate([f[column] for f in files])
                                  for column in ("run", "segment", "t_s", "mark", "interval_s")})
            frame["mark"] = pd.Categorical.from_codes(frame["mark"], categories=["start", "tick", "end"])
            for channel in channels:
                frame[channel] = np.concatenate([f["channels"][channel] for f in files])
            yield frame


def _parse(run: int, path: Path) -> dict | None:
    """One file's columns (``run, segment, t_s, mark`` codes, ``interval_s``, ``channels``), or None (warned)."""
    data = read_bytes(path)
    if data is None:
        return None
    lines = data.split(b"\n")
    kind = np.zeros(len(lines), dtype=np.int8)  # 0 blank, 1 sample, 2 end of a recording, 3 unreadable
    dates: list[str] = []
    blocks: dict[str, list] = {name: [] for name in KEYS}  # per sample: its metrics.<name> object, or None
    block_rows = list(blocks.items())
    for j, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            value = _loads(line)
        except ValueError:
            kind[j] = 3
            continue
        if type(value) is dict and type(value.get("date")) is str and type(value.get("metrics")) is dict:
            kind[j] = 1
            dates.append(value["date"])
            metrics = value["metrics"]
            for name, rows in block_rows:
                rows.append(metrics.get(name))
        else:
            kind[j] = 2 if value == SEGMENT_END else 3
    sample_lines = np.flatnonzero(kind == 1)
    odd: list[str] = []
    columns = {}
    for name, rows in blocks.items():
        columns.update(_block_columns(name, rows, sample_lines + 1, odd))
    when = _dates(dates)
    kind[sample_lines[np.isnat(when)]] = 3
    if odd:
        warn(f"{path}: {len(odd)} value(s) null or not a number read as missing ({', '.join(odd[:5])}"
             + (", ..." if len(odd) > 5 else "") + ")")
    return _assemble(run, path, lines, kind, sample_lines, when, columns)


def _loads(line: bytes) -> object:
    """A JSON line's value: orjson's (``json``'s values, in less time; an integer beyond 64 bits comes as the
    nearest float, as every reading becomes one), or ``json``'s where orjson declines (``NaN``, ``Infinity``,
    a number beyond a double, a lone surrogate); ValueError if unreadable."""
    try:
        return orjson.loads(line)
    except ValueError:
        return json.loads(line)


class _Absent:
    """A key a line does not hold (unlike JSON null, which it holds)."""


ABSENT = _Absent()


def _block_columns(block: str, rows: list, numbers: np.ndarray, odd: list) -> dict[str, tuple]:
    """The channels of one block (``cpu`` or ``gpu``) over a file's samples: ``{channel: (floats, absent)}``.

    ``rows``: the block's object on each sample line (None where the line has
    none); ``numbers``: their line numbers, for the warnings gathered in ``odd``.
    """
    for i in np.flatnonzero([r is not None and type(r) is not dict for r in rows]):
        odd.append(f"metrics.{block} at line {numbers[i]}")
    rows = [r if type(r) is dict else {} for r in rows]
    spec = KEYS[block]
    out = {}
    present = set().union(*rows)
    for key in [k for k in spec if k in present]:
        shape, name, scale = spec[key]
        column = [r.get(key, ABSENT) for r in rows]
        where = f"metrics.{block}.{key}"
        if shape == "value":
            out[name] = _numbers(column, scale, where, numbers, odd)
            if name.startswith("psys."):  # no psys domain on that sample
                floats, absent = out[name]
                out[name] = floats, absent | (floats == NO_PSYS)
        elif shape == "sum":
            out[name] = _sums(column, scale, where, numbers, odd)
        else:
            bad = [i for i, v in enumerate(column) if v is not ABSENT and type(v) is not dict]
            for i in bad:
                odd.append(f"{where} at line {numbers[i]}")
            column = [v if type(v) is dict else {} for v in column]
            for gpu in sorted(set().union(*column), key=lambda g: (len(g), g)):  # "2" before "10"
                if not gpu.isdigit():
                    odd.append(f"{where} (GPU {gpu!r})")
                    continue
                per_gpu = [v.get(gpu, ABSENT) for v in column]
                there = f"{where} (GPU {gpu})"
                out[f"gpu{int(gpu)}.{name}"] = (_numbers(per_gpu, scale, there, numbers, odd) if shape == "gpu"
                                               else _sums(per_gpu, scale, there, numbers, odd))
    return out


def _numbers(column: list, scale: float, where: str, numbers: np.ndarray, odd: list) -> tuple:
    """A column of JSON values as ``(floats × scale, absent)``: NaN where absent, null or not a number (the
    last two noted in ``odd``; a one-number list, as some releases write ``uncore_power``, is that number)."""
    if {type(v) for v in column} <= {int, float, _Absent}:
        absent = np.array([v is ABSENT for v in column], dtype=bool)
        return np.array([np.nan if v is ABSENT else v for v in column], dtype=float) * scale, absent
    floats, absent = np.full(len(column), np.nan), np.zeros(len(column), dtype=bool)
    for i, v in enumerate(column):
        if type(v) is list and len(v) == 1:
            v = v[0]
        if type(v) in NUMBER:
            floats[i] = v * scale
        elif v is ABSENT:
            absent[i] = True
        else:
            odd.append(f"{where} at line {numbers[i]}")
    return floats, absent


def _sums(column: list, scale: float, where: str, numbers: np.ndarray, odd: list) -> tuple:
    """A column of ``{pid: number}`` objects as ``(sums × scale, absent)``: NaN where absent or where any value
    is not a number (never a partial sum; noted in ``odd``)."""
    absent = np.array([v is ABSENT for v in column], dtype=bool)
    if {type(v) for v in column} <= {dict, _Absent} and \
            {type(x) for v in column if v is not ABSENT for x in v.values()} <= {int, float}:
        return np.array([np.nan if v is ABSENT else sum(v.values()) for v in column], dtype=float) * scale, absent
    sums = np.full(len(column), np.nan)
    for i, v in enumerate(column):
        if type(v) is dict and all(type(x) in NUMBER for x in v.values()):
            sums[i] = sum(v.values()) * scale
        elif v is not ABSENT:
            odd.append(f"{where} at line {numbers[i]}")
    return sums, absent


def _dates(dates: list[str]) -> np.ndarray:
    """Local wall times as ``datetime64[us]``; NaT where unreadable."""
    try:
        return np.array(dates, dtype="datetime64[us]")
    except ValueError:
        return np.array([_date(d) for d in dates], dtype="datetime64[us]")


def _date(text: str) -> np.datetime64:
    try:
        return np.datetime64(text, "us")
    except ValueError:
        return np.datetime64("NaT")


def _assemble(run: int, path: Path, lines: list[bytes], kind: np.ndarray, sample_lines: np.ndarray,
              when: np.ndarray, columns: dict[str, tuple]) -> dict | None:
    """The rows of one file: its dated samples, and a gap row for each unreadable line between two of them
    in one recording; segments at the recordings' ends and at clock jumps; each row's ``interval_s``."""
    dated = ~np.isnat(when)
    recording = np.cumsum(kind == 2)  # per line: which recording it belongs to
    sample_at = np.flatnonzero(kind == 1)  # lines of dated samples
    if not len(sample_at):
        warn(f"{path}: no sample" + ("; run skipped" if (kind != 0).any() else ""))
        return None
    unreadable = np.flatnonzero(kind == 3)
    # an unreadable line is a gap when a sample of its recording comes before and after it
    before = np.searchsorted(sample_at, unreadable) - 1
    inside = (before >= 0) & (before + 1 < len(sample_at))
    inside[inside] &= (recording[sample_at[before[inside]]] == recording[unreadable[inside]]) \
        & (recording[sample_at[before[inside] + 1]] == recording[unreadable[inside]])
    _warn_unreadable(path, lines, unreadable, inside)
    rows = np.sort(np.r_[sample_at, unreadable[inside]])  # file lines, in order
    is_sample = kind[rows] == 1
    seconds = (when[dated] - when[dated].min()) / np.timedelta64(1, "s")
    t = np.full(len(rows), np.nan)
    t[is_sample] = seconds
    latest = np.maximum.accumulate(np.where(is_sample, np.arange(len(rows)), 0))  # the last sample row so far
    t = t[latest]  # a gap row sits at the time of the sample before it
    step = np.full(len(rows), np.nan)  # from the previous sample of the same recording
    last_sample = np.r_[np.nan, t[:-1]]
    same_recording = np.r_[False, recording[rows[1:]] == recording[rows[:-1]]]
    step[is_sample & same_recording] = (t - last_sample)[is_sample & same_recording]
    positive = step[step > 0]
    period = np.quantile(positive, 0.5, method="lower") if len(positive) else np.nan
    broken = is_sample & ((step <= 0) | (step > JUMP_PERIODS * period))
    if broken.any():
        shown = [f"line {rows[i] + 1} ({step[i]:+g} s)" for i in np.flatnonzero(broken)]
        warn(f"{path}: the date steps back or jumps by more than {JUMP_PERIODS} sampling periods ({period:g} s) at "
             f"{', '.join(shown[:5])}{', ...' if len(shown) > 5 else ''}: a new segment starts there, nothing is "
             "integrated across it")
    starts = ~same_recording | broken
    segment = np.cumsum(starts) - 1
    interval = np.where(is_sample, step, 0.0)
    interval[~same_recording & is_sample] = period  # a recording's first line: one sampling period before it
    interval[broken] = np.nan  # after a jump: unknown
    ends = np.r_[starts[1:], True]
    mark = np.where(starts, 0, np.where(ends, 2, 1)).astype(np.int8)
    position = np.maximum(np.cumsum(is_sample) - 1, 0)  # row -> index among the dated samples
    channels, absent = {}, {}
    for channel, (floats, lacking) in columns.items():
        lacking = lacking[dated]
        if lacking.all():
            continue
        if lacking.any():
            absent[channel] = rows[is_sample][lacking] + 1
        channels[channel] = np.where(is_sample, floats[dated][position], np.nan)
    if absent:
        _warn_absent(path, absent)
    return {"run": np.full(len(rows), run), "segment": segment, "t_s": t, "mark": mark, "interval_s": interval,
            "channels": channels}


def _warn_unreadable(path: Path, lines: list[bytes], unreadable: np.ndarray, inside: np.ndarray) -> None:
    def named(at: np.ndarray) -> str:
        shown = [f"{i + 1}" + (" (truncated last line)" if i + 1 == len(lines) else "") for i in at[:5]]
        return ", ".join(shown) + (", ..." if len(at) > 5 else "")

    if (~inside).any():
        warn(f"{path}: {(~inside).sum()} unreadable line(s) skipped (line {named(unreadable[~inside])}); "
             "the rest used")
    if inside.any():
        warn(f"{path}: {inside.sum()} unreadable line(s) between readable ones (line {named(unreadable[inside])}): "
             "their readings missing, a gap that is never bridged")


def _warn_absent(path: Path, absent: dict[str, np.ndarray]) -> None:
    """One warning for the readings some lines lack while others have them (a line without its gpu block)."""
    by_line: dict[int, list[str]] = {}
    for channel, numbers in absent.items():
        for number in numbers:
            by_line.setdefault(int(number), []).append(channel)
    shown = [f"line {n}: {', '.join(c[:3])}{', ...' if len(c) > 3 else ''}" for n, c in sorted(by_line.items())[:3]]
    warn(f"{path}: {len(by_line)} line(s) lack readings that other lines have, read as missing ("
         + "; ".join(shown) + ("; ..." if len(by_line) > 3 else "") + ")")

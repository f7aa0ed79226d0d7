"""Run trees (ours and AIPowerMeter's) -> tidy DataFrames: the only I/O of the package.

A run folder is any folder holding ``power_metrics.json``, at any depth.  Ours
carry ``meta.json`` (see docs/run-tree.md); AIPowerMeter's carry none, so their
model, input size and run come from the path and their iteration count from
the latency file.  Bad input never stops the rest: each problem is an
``AnalysisWarning`` naming the file and what was done.  A run found twice
(same model, input size and run in two folders) is counted once: the first
folder in walk order is kept, the other named in a warning.  Files of other
names (notes, a killed writer's ``.meta.json.*.tmp``) are ignored.

Speed: our sample files have the same keys in the same order on every line, so
files sharing a key header are concatenated, their JSON punctuation turned into
blanks (one ``bytes.translate``) and parsed by pandas' C reader in chunks; a
file that fails the cheap shape checks goes through ``json.loads`` line by line.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from itertools import chain
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from . import energy as en

SAMPLES_FILE, META_FILE = "power_metrics.json", "meta.json"
LATENCY_CSV, LATENCY_JSON = "latency.csv", "latency.json"
SEGMENT_END = "END OF RECORDING SEGMENT"
CHUNK_BYTES = 32 << 20
WORKERS = 3
BLANKS = bytes.maketrans(b",{}:", b"    ")
MARKS = ("start", "tick", "end")
MIB = 1 << 20
# AIPowerMeter key (under metrics.cpu / metrics.gpu) -> our channel; all W unless named.
AIPM_POWER = {("cpu", "intel_power"): "cpu_package.power_w", ("cpu", "total_dram_power"): "dram.power_w",
              ("gpu", "nvidia_draw_absolute"): "gpu.power_w", ("gpu", "nvidia_power"): "gpu.power_w"}
# per-GPU power: nvidia-smi schema (2021) and NVML schema (newer releases)
AIPM_PER_GPU_POWER = ("per_gpu_power_draw", "per_gpu_nvidia_power")
STAT_COLUMNS = ["sm_util_mean_pct", "gpu_mem_peak_mb", "gpu_proc_mem_peak_mb", "rss_peak_mb", "cpu_share_mean"]
IDENTITY = ["model", "input_size", "run"]
NUMERIC_META = ["iterations", "warmup", "period_s", "params", "flops_per_inference"]
TEXT_META = ["status", "weights", "device", "hardware_gpu", "hardware_cpu", "task", "format", "folder"]
RUN_COLUMNS = [*IDENTITY, "status", "weights", "device", "hardware_gpu", "hardware_cpu", "iterations", "warmup",
               "window_s", "period_s", "params", "flops_per_inference", "latency_median_s", "latency_mean_s",
               *STAT_COLUMNS, "task", "format", "folder"]  # then <domain>_<quantity> columns


class AnalysisWarning(UserWarning):
    """Something in the input was unsound; the message names the file and what was done."""


class NoUsableRuns(ValueError):
    """Nothing usable was left to analyse (one-line message)."""


def warn(message: str) -> None:
    warnings.warn(message, AnalysisWarning, stacklevel=3)


@dataclass(eq=False)
class Study:
    """The tidy tables of a study (see docs/tables.md)."""

    runs: pd.DataFrame
    energies: pd.DataFrame
    latencies: pd.DataFrame
    root: Path

    @cached_property
    def samples(self) -> pd.DataFrame:
        """One row per sample and channel; read again from the files on first use."""
        info = self.runs.reset_index(drop=True)
        folders = [self.root / folder for folder in info["folder"]]
        ours, aipm = np.flatnonzero(info["format"] == "ours"), np.flatnonzero(info["format"] == "aipowermeter")
        frames = chain(_our_frames([(i, folders[i] / SAMPLES_FILE) for i in ours], text=True),
                       (_aipm_frame(i, folders[i] / SAMPLES_FILE) for i in aipm))
        return pd.concat([_long(f, info) for f in frames if f is not None], ignore_index=True)


def load_study(path: str | Path, *, model: str | None = None, include_incomplete: bool = False) -> Study:
    """Read every run under ``path`` (ours and AIPowerMeter's) into a ``Study``.

    Only ``complete`` runs are kept unless ``include_incomplete`` (their
    ``status`` column says what they are).  ``model`` names the model of
    AIPowerMeter runs (default: a folder name from their path).
    Raises ``NoUsableRuns`` when no run is left.
    """
    root = Path(path)
    if not root.is_dir():
        raise NoUsableRuns(f"{root}: not a folder")
    info = _run_info(root, model, include_incomplete)
    ours, aipm = np.flatnonzero(info["format"] == "ours"), np.flatnonzero(info["format"] == "aipowermeter")
    frames = chain(_our_frames([(i, info.at[i, "path"] / SAMPLES_FILE) for i in ours]),
                   (_aipm_frame(i, info.at[i, "path"] / SAMPLES_FILE) for i in aipm))
    parts = [_quantities(frame, info) for frame in frames if frame is not None]  # one frame in memory at a time
    if not parts:
        raise NoUsableRuns(f"{root}: no run with a readable {SAMPLES_FILE}")
    per_domain = pd.concat([p[0] for p in parts], ignore_index=True)
    per_run = pd.concat([p[1] for p in parts]).sort_index()
    info = info.loc[per_run.index]
    latencies = _latencies(info)
    runs = _runs_table(info, per_run, latencies)
    energies = _energies_table(per_domain, runs, info)
    runs = _with_energy_columns(runs, energies)
    return Study(runs=runs.reset_index(drop=True), energies=energies.drop(columns="run_id"),
                 latencies=_latency_table(latencies, info), root=root)


# ---------------------------------------------------------------- run folders and identity

def recording_power(path: str | Path, sensors: dict) -> pd.DataFrame:
    """Energy and mean power of each sensor domain over the window of one of our sample files.

    ``sensors`` is the ``{domain: {source, counter_wrap_j, ...}}`` mapping of
    ``meta.json``.  One row per sensor domain (``gpu0``, ``package-0``, ...):
    ``domain, source, method, energy_j, window_s, mean_power_w, gaps``.  The
    measuring side uses it for the idle baseline.
    """
    path = Path(path)
    info = pd.DataFrame({"path": [path.parent], "sensors": [sensors], "idle": [{}], "stats_gpu": [None]})
    frame = next(_our_frames([(0, path)]), None)
    if frame is None:
        raise NoUsableRuns(f"{path}: no readable sample")
    per_domain, per_run = _quantities(frame, info)
    window_s = float(per_run["window_s"].iloc[0])
    return (per_domain.drop(columns=["run", "idle_power_w"])
            .assign(window_s=window_s, mean_power_w=lambda d: d["energy_j"] / window_s))


def _run_info(root: Path, model: str | None, include_incomplete: bool) -> pd.DataFrame:
    """One row per usable run folder, indexed 0..n-1: identity, protocol and what the parsers need."""
    records, skipped, seen = [], [], {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort(key=lambda name: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)])
        folder = Path(dirpath)
        if SAMPLES_FILE not in filenames:
            status = (_read_meta(folder) or {}).get("status") if META_FILE in filenames else None
            if status == "complete":
                warn(f"{folder / META_FILE}: run marked complete but {SAMPLES_FILE} is missing; run skipped")
            elif status is not None:  # failed, or interrupted, before its window
                skipped.append(f"{folder.relative_to(root)} ({status}, no samples)")
            continue
        record = _our_record(folder) if META_FILE in filenames else _aipm_record(folder, model)
        if record is None:
            continue
        if record["status"] != "complete" and not include_incomplete:
            skipped.append(f"{folder.relative_to(root)} ({record['status']})")
            continue
        key = (record["model"], record["input_size"], record["run"])
        if key in seen:
            warn(f"{folder}: same model, input size and run as {seen[key]}; duplicate skipped (the first is kept)")
            continue
        seen[key] = folder
        record["folder"] = folder.relative_to(root).as_posix()
        records.append(record)
    if skipped:
        warn(f"{root}: {len(skipped)} incomplete run(s) left out (include_incomplete=True keeps those with samples): "
             + ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""))
    if not records:
        raise NoUsableRuns(f"{root}: no usable run folder (none holds a readable {SAMPLES_FILE} and its metadata)")
    return pd.DataFrame.from_records(records)


def _read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _our_record(folder: Path) -> dict | None:
    meta = _read_meta(folder)
    missing = [k for k in ("model", "input_size", "run", "iterations", "status") if meta and meta.get(k) is None]
    malformed = _malformed(meta) if meta and not missing else []
    if meta is None or missing or malformed:
        warn(f"{folder / META_FILE}: " + ("unreadable" if meta is None else f"lacks {', '.join(missing)}" if missing
                                          else f"malformed {', '.join(malformed)}") + "; run skipped")
        return None
    device, host = meta.get("device"), meta.get("host") or {}
    on_gpu = str(device).startswith("cuda")
    gpu = meta.get("gpu_domain") or (f"gpu{str(device).partition(':')[2] or 0}" if on_gpu else None)
    names = {g.get("domain"): g.get("name") for g in host.get("gpus") or []}
    return {
        "model": meta["model"], "input_size": meta["input_size"], "run": meta["run"], "status": meta["status"],
        "task": meta.get("task"), "weights": meta.get("weights"), "device": device,
        "hardware_gpu": names.get(gpu), "hardware_cpu": host.get("cpu_model"),
        "iterations": meta["iterations"], "warmup": meta.get("warmup"), "period_s": meta.get("period_s"),
        "params": meta.get("params"), "flops_per_inference": meta.get("flops_per_inference"),
        "format": "ours", "path": folder, "stats_gpu": gpu,
        "sensors": meta.get("sensors") or {}, "idle": _idle(meta.get("idle_power_w") or {}),
    }


def _malformed(meta: dict) -> list[str]:
    """The keys of ``meta`` whose values have a type the analysis cannot use."""
    def integer(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def number(value: object) -> bool:
        return value is None or isinstance(value, (int, float)) and not isinstance(value, bool)

    sensors, idle, host = meta.get("sensors") or {}, meta.get("idle_power_w") or {}, meta.get("host") or {}
    sound = {
        "model": isinstance(meta["model"], str), "status": isinstance(meta["status"], str),
        "input_size": integer(meta["input_size"]), "run": integer(meta["run"]), "iterations": integer(meta["iterations"]),
        "sensors": isinstance(sensors, dict) and all(isinstance(s, dict) and number(s.get("counter_wrap_j"))
                                                     for s in sensors.values()),
        "idle_power_w": isinstance(idle, dict) and all(number(v.get("value") if isinstance(v, dict) else v)
                                                       for v in idle.values()),
        "host": isinstance(host, dict) and isinstance(host.get("gpus") or [], list)
                and all(isinstance(gpu, dict) for gpu in host.get("gpus") or []),
    }
    return [key for key, ok in sound.items() if not ok]


def _idle(idle_power_w: dict) -> dict[str, float]:
    """``{domain: W}`` from meta's ``{domain: {value, source}}`` (a bare number is accepted too)."""
    return {d: float(v["value"] if isinstance(v, dict) else v) for d, v in idle_power_w.items()
            if (v.get("value") if isinstance(v, dict) else v) is not None}


def _aipm_record(folder: Path, model: str | None) -> dict | None:
    """Identity of an AIPowerMeter folder from its path: ``.../<model>/input_<size>/run_<k>``.

    Without ``input_<size>``, the input size is NaN, the run is the folder's
    name (its number if it is one) and the model its parent folder's name.
    """
    first = _first_line(folder / SAMPLES_FILE)
    if not (first == SEGMENT_END or isinstance(first, dict) and "metrics" in first):
        what = "holds our sample format but no meta.json" if isinstance(first, dict) and "t_s" in first \
            else "is empty or not a recognised power_metrics.json"
        warn(f"{folder / SAMPLES_FILE}: {what}; run skipped")
        return None
    names = folder.absolute().parts[1:]
    size_at = next((i for i in range(len(names) - 1, -1, -1) if re.fullmatch(r"input_\d+", names[i])), None)
    run = re.fullmatch(r"(?:run_)?(\d+)", names[-1])
    model_at = (size_at if size_at is not None else len(names) - 1) - 1
    return {
        "model": model or (names[model_at] if model_at >= 0 else names[-1]),
        "input_size": int(names[size_at][6:]) if size_at is not None else np.nan,
        "run": int(run.group(1)) if run else names[-1], "status": "complete",
        "iterations": np.nan, "format": "aipowermeter", "path": folder, "stats_gpu": "gpu",
        "sensors": {}, "idle": {},
    }


def _first_line(path: Path) -> object:
    try:
        with open(path, "rb") as handle:
            for line in handle:
                if line.strip():
                    return json.loads(line)
    except (OSError, ValueError):
        pass
    return None


# ---------------------------------------------------------------- our sample files

def _our_frames(items: list[tuple[int, Path]], text: bool = False) -> Iterator[pd.DataFrame | None]:
    """Wide sample frames (``run, segment, t_s, mark, [utc, gap,] <channels>``) of our files.

    The files go by batches of about ``CHUNK_BYTES`` to ``WORKERS`` threads (file
    reads and pandas' C reader release the GIL) while the caller works on the
    frames already out; at most ``WORKERS`` batches wait, which bounds memory.
    """
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        jobs: deque[Future] = deque()
        for batch in _batches(items):
            jobs.append(pool.submit(_parse_batch, batch, text))
            while len(jobs) > WORKERS:
                yield from jobs.popleft().result()
        while jobs:
            yield from jobs.popleft().result()


def _batches(items: list[tuple[int, Path]]) -> Iterator[list[tuple[int, Path]]]:
    batch, size = [], 0
    for run, path in items:
        batch.append((run, path))
        try:
            size += path.stat().st_size
        except OSError:
            pass  # reported when read
        if size >= CHUNK_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _parse_batch(batch: list[tuple[int, Path]], text: bool) -> list[pd.DataFrame | None]:
    """Read a batch of files; parse those sharing a key header together, the odd ones line by line."""
    frames, groups = [], {}
    for run, path in batch:
        data = _read_bytes(path)
        if data is None:
            continue
        keys = _header(data)
        if keys is None or not data.endswith(b"\n"):
            frames.append(_parse_lines(run, path, data, text))
        else:
            groups.setdefault(keys, []).append((run, path, data, data.count(b"\n")))
    for keys, group in groups.items():
        runs, paths, datas, lines = zip(*group)
        frame = _read_chunk(keys, datas, lines, runs, text)
        if frame is not None:
            frames.append(frame)
            continue
        for run, path, data, count in group:  # some file does not fit: each alone, then line by line
            alone = _read_chunk(keys, [data], [count], [run], text) if len(group) > 1 else None
            frames.append(alone if alone is not None else _parse_lines(run, path, data, text))
    return frames


def _read_bytes(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError as error:
        warn(f"{path}: unreadable ({error.strerror}); run skipped")
        return None
    if not data or data.isspace():
        warn(f"{path}: empty; run skipped")
        return None
    return data


def _header(data: bytes) -> tuple[str, ...] | None:
    try:
        first = json.loads(data[:data.find(b"\n")])
    except ValueError:
        return None
    return tuple(first) if isinstance(first, dict) and {"t_s", "mark"} <= set(first) else None


def _read_chunk(keys: tuple[str, ...], datas, lines, runs, text: bool) -> pd.DataFrame | None:
    """Parse whole files of one key header with the C reader; None if any line does not fit."""
    tokens = datas[0][:datas[0].index(b"\n")].translate(BLANKS).split()
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
        raw = pd.read_csv(io.BytesIO(b"".join(datas).translate(BLANKS)), sep=r"\s+", header=None,
                          names=range(len(tokens)), usecols=columns, quoting=csv.QUOTE_NONE,
                          na_values=["null"], engine="c",
                          dtype={span["mark"][0]: "category", **{c: str for k in ("utc", "gap") if k in wanted
                                                                 for c in span[k]}})
    except (ValueError, pd.errors.ParserError):
        return None
    frame = pd.DataFrame({k: raw[span[k][0]] for k in wanted if k != "utc"})
    numeric = [k for k in wanted if k not in ("mark", "utc", "gap")]
    marks = set(frame["mark"].cat.categories)
    if len(frame) != sum(lines) or any(frame[k].dtype.kind != "f" for k in numeric) \
            or frame["t_s"].isna().any() or not marks <= {'"start"', '"tick"', '"end"'}:
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


def _json_lines(path: Path, data: bytes, sound: Callable[[object], bool]) -> list:
    """The JSON values of the lines of ``data`` that ``sound`` accepts; one warning for the others."""
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
            kept.append(value)
        else:
            bad.append(f"{number}" + (" (truncated last line)" if number == len(lines) else ""))
    if bad:
        warn(f"{path}: {len(bad)} unreadable line(s) skipped (line {', '.join(bad[:5])}"
             + (", ..." if len(bad) > 5 else "") + ")" + ("; the rest used" if kept else "; run skipped"))
    return kept


def _parse_lines(run: int, path: Path, data: bytes, text: bool) -> pd.DataFrame | None:
    """The slow, forgiving path for our files: line by line, bad lines skipped with a warning."""
    rows = _json_lines(path, data, lambda v: isinstance(v, dict) and isinstance(v.get("t_s"), (int, float))
                       and v.get("mark") in MARKS)
    if not rows:
        return None
    frame = pd.DataFrame.from_records(rows)
    channels = [c for c in frame.columns if "." in c]
    frame = frame.reindex(columns=["t_s", "mark", *(["utc", "gap"] if text else []), *channels])
    frame[channels] = frame[channels].apply(pd.to_numeric, errors="coerce").astype(float)
    frame["mark"] = pd.Categorical(frame["mark"], categories=["start", "tick", "end"])
    frame.insert(0, "run", run)
    frame.insert(1, "segment", 0)
    return frame


# ---------------------------------------------------------------- AIPowerMeter files

def _aipm_frame(run: int, path: Path) -> pd.DataFrame | None:
    """AIPowerMeter's JSON lines as a wide frame; each recording segment is marked start .. end."""
    data = _read_bytes(path)
    if data is None:
        return None
    records = _json_lines(path, data, lambda v: v == SEGMENT_END or (
        isinstance(v, dict) and isinstance(v.get("metrics"), dict) and "date" in v))
    segments = np.cumsum([r == SEGMENT_END for r in records])
    rows = [_aipm_row(r, segment) for r, segment in zip(records, segments) if r != SEGMENT_END]
    if not rows:
        if records:
            warn(f"{path}: no sample; run skipped")
        return None
    frame = pd.DataFrame.from_records(rows)
    date = pd.to_datetime(frame.pop("date"), errors="coerce", format="mixed")
    if date.isna().any():
        warn(f"{path}: {date.isna().sum()} sample(s) with an unreadable date skipped")
    frame = frame[date.notna()].assign(t_s=(date - date.min()).dt.total_seconds())
    first = frame["segment"].ne(frame["segment"].shift())
    last = frame["segment"].ne(frame["segment"].shift(-1))
    frame["mark"] = pd.Categorical(np.select([first, last], ["start", "end"], "tick"),
                                   categories=["start", "tick", "end"])
    frame.insert(0, "run", run)
    channels = sorted(c for c in frame.columns if "." in c)
    return frame[["run", "segment", "t_s", "mark", *channels]]


def _aipm_row(record: dict, segment: int) -> dict:
    metrics = record["metrics"]
    cpu, gpu = metrics.get("cpu") or {}, metrics.get("gpu") or {}
    row = {"date": record["date"], "segment": segment}
    row.update({channel: metrics[part][key] for (part, key), channel in AIPM_POWER.items()
                if key in (metrics.get(part) or {})})
    for key in AIPM_PER_GPU_POWER:
        row.update({f"gpu{i}.power_w": w for i, w in (gpu.get(key) or {}).items()})
    if "per_gpu_attributable_mem_use" in gpu:
        row["gpu.proc_mem_mb"] = sum(sum(p.values()) for p in gpu["per_gpu_attributable_mem_use"].values()) / MIB
    if "per_process_mem_use_abs" in cpu:
        row["process.rss_mb"] = sum(cpu["per_process_mem_use_abs"].values()) / MIB
    return row


# ---------------------------------------------------------------- per-run quantities

def _quantities(frame: pd.DataFrame, info: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (run, sensor domain) energies and per-run window statistics of one wide frame."""
    code, ids = pd.factorize(frame["run"].to_numpy())
    n = len(ids)
    paths, sensors, idle = (info.loc[ids, c].tolist() for c in ("path", "sensors", "idle"))
    _drop_impossible(frame, code, paths)
    mark = frame["mark"]
    win = en.window(code, frame["t_s"].to_numpy(), (mark == "start").to_numpy(), (mark == "end").to_numpy(), n)
    inside = frame if win.mask.all() else frame[win.mask]
    wcode, segment, t = code[win.mask], inside["segment"].to_numpy(), inside["t_s"].to_numpy()
    rows = []
    for domain in dict.fromkeys(c.rsplit(".", 1)[0] for c in frame.columns if "." in c):
        about = [s.get(domain) or {} for s in sensors]
        if f"{domain}.energy_j" in inside:
            values = inside[f"{domain}.energy_j"].to_numpy()
            wrap = np.array([a.get("counter_wrap_j") for a in about], dtype=float)
            energy, problems = en.counter_energy(wcode, values, wrap, n)
            aligned_j, aligned = en.aligned_counter_energy(wcode, t, values, n)
            energy, method = np.where(aligned, aligned_j, energy), np.where(aligned, "counter_aligned", "counter")
        elif f"{domain}.power_w" in inside:
            values = inside[f"{domain}.power_w"].to_numpy()
            (energy, problems), method = en.trapezoid_energy(wcode, t, values, n, segment), "trapezoid"
        else:
            continue
        for i in np.flatnonzero(problems.astype(bool)):
            warn(f"{paths[i]}: {domain}: {problems[i]}; its energy left NaN")
        rows.append(pd.DataFrame({
            "run": ids, "domain": domain, "energy_j": energy, "gaps": en.missing(wcode, values, n),
            "method": method, "idle_power_w": [d.get(domain, np.nan) for d in idle],
            "source": [a.get("source") or ("estimated" if "estimate" in domain else "measured") for a in about]}))
    for i in np.flatnonzero(~(win.has_start & win.has_end)):
        lacking = " and ".join(m for m, has in (("start", win.has_start[i]), ("end", win.has_end[i])) if not has)
        warn(f"{paths[i]}: no '{lacking}' sample, the window is incomplete; energies over the "
             f"{win.t_end[i] - win.t_start[i]:g} s recorded, energies per inference left NaN")
    per_run = pd.DataFrame({"window_s": en.window_seconds(wcode, t, n, segment),
                            "window_complete": win.has_start & win.has_end}, index=ids)
    per_run = per_run.join(_window_stats(inside, wcode, ids, info))
    empty = pd.DataFrame(columns=["run", "domain", "energy_j", "gaps", "method", "idle_power_w", "source"])
    return (pd.concat(rows, ignore_index=True) if rows else empty), per_run


def _drop_impossible(frame: pd.DataFrame, code: np.ndarray, paths: list[Path]) -> None:
    """Negative or infinite powers and energies become missing readings (in place), with a warning."""
    for channel in [c for c in frame.columns if c.endswith((".power_w", ".energy_j"))]:
        values = frame[channel].to_numpy()
        bad = (values < 0) | np.isinf(values)
        if bad.any():
            frame.loc[bad, channel] = np.nan
            for i, count in zip(*np.unique(code[bad], return_counts=True)):
                warn(f"{paths[i]}: {count} negative or infinite {channel} reading(s) treated as missing")


def _window_stats(inside: pd.DataFrame, wcode: np.ndarray, ids: np.ndarray, info: pd.DataFrame) -> pd.DataFrame:
    """Utilisation and memory over the window: the run's GPU (``stats_gpu``) and its process tree."""
    gpu = info.loc[ids, "stats_gpu"].to_numpy()[wcode]
    wanted = {"sm_util_mean_pct": ("sm_util_pct", "mean"), "gpu_mem_peak_mb": ("mem_used_mib", "max"),
              "gpu_proc_mem_peak_mb": ("proc_mem_mib", "max")}
    out = pd.DataFrame(index=pd.RangeIndex(len(ids)), columns=STAT_COLUMNS, dtype=float)
    for column, (metric, how) in wanted.items():
        values = np.full(len(inside), np.nan)
        for domain in pd.unique(info.loc[ids, "stats_gpu"].dropna()):
            channel = _mib_channel(inside, f"{domain}.{metric}")
            if channel in inside:
                pick = gpu == domain
                values[pick] = inside[channel].to_numpy()[pick]
        out[column] = pd.Series(values).groupby(wcode).agg(how)
    for column, channel, how in (("rss_peak_mb", _mib_channel(inside, "process.rss_mib"), "max"),
                                 ("cpu_share_mean", "process.cpu_share", "mean")):
        if channel in inside:
            out[column] = pd.Series(inside[channel].to_numpy()).groupby(wcode).agg(how)
    return out.set_axis(ids)


def _mib_channel(frame: pd.DataFrame, channel: str) -> str:
    """A channel in MiB as ``frame`` names it: ``<domain>.<metric>_mib``, or ``_mb`` in older trees."""
    return channel if channel in frame else channel.removesuffix("_mib") + "_mb"


# ---------------------------------------------------------------- latencies

def _latencies(info: pd.DataFrame) -> pd.Series:
    """Every latency (s) indexed by run id, in file order; warnings for missing, bad or short files."""
    bodies, counts, runs = [], [], []
    values: list[pd.Series] = []
    for run, folder in zip(info.index, info["path"]):
        if (folder / LATENCY_JSON).exists() and not (folder / LATENCY_CSV).exists():
            values.append(_latency_json(run, folder / LATENCY_JSON))
            continue
        try:
            data = (folder / LATENCY_CSV).read_bytes()
        except OSError:
            warn(f"{folder}: no {LATENCY_CSV}; latency unknown" + (
                ", iterations unknown: energies per inference left NaN"
                if info.at[run, "format"] == "aipowermeter" else ""))
            continue
        head, _, rest = data.partition(b"\n")
        body = rest if head.strip() == b"latency_s" else data
        if not body.strip():
            warn(f"{folder / LATENCY_CSV}: no latency value; latency unknown")
            continue
        if body and not body.endswith(b"\n"):
            body += b"\n"
        bodies.append(body)
        counts.append(body.count(b"\n"))
        runs.append(run)
    values.append(_latency_csv(bodies, counts, runs))
    latencies = pd.concat(values)
    bad = ~(latencies >= 0)
    if bad.any():
        for run, count in latencies[bad].groupby(level=0).size().items():
            warn(f"{info.at[run, 'path']}: {count} unreadable or negative latency value(s) skipped")
        latencies = latencies[~bad]
    return latencies


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


def _latency_table(latencies: pd.Series, info: pd.DataFrame) -> pd.DataFrame:
    """The latencies with their run's identity; each run's latencies are contiguous."""
    runs = latencies.index.to_numpy()
    starts = np.flatnonzero(np.diff(runs, prepend=-1))  # run ids are >= 0
    counts = np.diff(np.r_[starts, len(runs)])
    table = pd.DataFrame({c: np.repeat(info.loc[runs[starts], c].to_numpy(), counts) for c in IDENTITY})
    table["iteration"] = np.arange(len(runs)) - np.repeat(starts, counts)
    table["latency_s"] = latencies.to_numpy()
    return table


# ---------------------------------------------------------------- tables

def _runs_table(info: pd.DataFrame, per_run: pd.DataFrame, latencies: pd.Series) -> pd.DataFrame:
    counts = latencies.groupby(level=0).size().reindex(info.index, fill_value=0)
    iterations = pd.to_numeric(info["iterations"], errors="coerce").astype(float)
    aipm = (info["format"] == "aipowermeter").to_numpy()
    iterations[aipm] = counts[aipm].where(counts[aipm] > 0)
    for run in info.index[~aipm & (counts != iterations) & (counts > 0)]:
        warn(f"{info.at[run, 'path'] / LATENCY_CSV}: {counts[run]} latencies for {iterations[run]:g} "
             "iterations; latency statistics from those present")
    runs = info.reindex(columns=[*IDENTITY, *NUMERIC_META, *TEXT_META]).assign(iterations=iterations)
    runs[NUMERIC_META] = runs[NUMERIC_META].apply(pd.to_numeric, errors="coerce").astype(float)
    runs[TEXT_META] = runs[TEXT_META].astype(object)
    by_run = latencies.groupby(level=0)
    runs["latency_median_s"], runs["latency_mean_s"] = by_run.median(), by_run.mean()
    return runs.join(per_run)[[*RUN_COLUMNS, "window_complete"]]


def _energies_table(per_domain: pd.DataFrame, runs: pd.DataFrame, info: pd.DataFrame) -> pd.DataFrame:
    table = en.combine_domains(per_domain)
    given = pd.DataFrame([(run, domain, watts) for run, idle in info["idle"].items() for domain, watts in idle.items()],
                         columns=["run", "domain", "given"])  # a baseline given for a summed domain itself wins
    given = table.merge(given, on=["run", "domain"], how="left")["given"].to_numpy(dtype=float)
    table["idle_power_w"] = np.where(np.isnan(given), table["idle_power_w"], given)
    of_run = runs.loc[table["run"]]
    iterations = of_run["iterations"].where(of_run["window_complete"] & (of_run["iterations"] > 0)).to_numpy()
    window_s = of_run["window_s"].to_numpy()
    energy, idle = table["energy_j"].to_numpy(), table["idle_power_w"].to_numpy()
    table["energy_per_inference_j"] = energy / iterations
    table["dynamic_energy_per_inference_j"] = (energy - idle * window_s) / iterations
    table["mean_power_w"] = energy / window_s
    table["run_id"] = table.pop("run")
    for column in IDENTITY:
        table[column] = of_run[column].to_numpy()
    columns = [*IDENTITY, "domain", "source", "method", "energy_j", "energy_per_inference_j", "idle_power_w",
               "dynamic_energy_per_inference_j", "mean_power_w", "gaps", "run_id"]
    return table[columns]


def _with_energy_columns(runs: pd.DataFrame, energies: pd.DataFrame) -> pd.DataFrame:
    """Pivot ``energies`` wide onto ``runs``: ``<domain>_<quantity>`` columns."""
    gflops = runs["flops_per_inference"].loc[energies["run_id"]].to_numpy() / 1e9
    table = energies.assign(energy_per_gflop_j=energies["energy_per_inference_j"].to_numpy() / gflops)
    quantities = ["energy_per_inference_j", "dynamic_energy_per_inference_j", "mean_power_w",
                  "energy_per_gflop_j", "source", "method"]
    wide = table.pivot(index="run_id", columns="domain", values=quantities)
    domains = sorted(energies["domain"].unique(), key=lambda d: (d != "gpu", d))
    wide.columns = [f"{d}_{q}" for q, d in wide.columns]
    wide = wide[[f"{d}_{q}" for d in domains for q in quantities]]
    numeric = [c for c in wide.columns if not c.endswith(("_source", "_method"))]
    wide[numeric] = wide[numeric].astype(float)
    return runs.join(wide).drop(columns="window_complete")


def _long(frame: pd.DataFrame, info: pd.DataFrame) -> pd.DataFrame:
    """A wide sample frame as long rows: one per sample and channel."""
    channels = [c for c in frame.columns if "." in c]
    k = len(channels)
    domain, metric = zip(*(c.rsplit(".", 1) for c in channels))
    long = info.loc[np.repeat(frame["run"].to_numpy(), k), IDENTITY].reset_index(drop=True)
    long["t_s"] = np.repeat(frame["t_s"].to_numpy(), k)
    long["utc"] = np.repeat(frame["utc"].to_numpy(), k) if "utc" in frame else None
    long["mark"] = pd.Categorical(np.repeat(frame["mark"].to_numpy(), k), categories=["start", "tick", "end"])
    long["domain"] = pd.Categorical(np.tile(domain, len(frame)))
    long["metric"] = pd.Categorical(np.tile(metric, len(frame)))
    long["value"] = frame[channels].to_numpy(dtype=float).ravel()
    return long

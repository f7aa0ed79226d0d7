"""AIPowerMeter's run folders (``power_metrics.json`` without ``meta.json``) -> records and sample frames.

AIPowerMeter writes JSON lines ``{"date": <local wall time>, "metrics": {"cpu": {...}, "gpu": {...}}}``
and ``END OF RECORDING SEGMENT`` between recordings. A folder carries no
metadata: the model, input size and run come from its path
(``.../<model>/input_<size>/run_<k>``), its iteration count from its latency file.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..problems import warn
from .files import first_line, json_lines, read_bytes

FORMAT = "aipowermeter"
SAMPLES_FILE = "power_metrics.json"
SEGMENT_END = "END OF RECORDING SEGMENT"
MIB = 1 << 20
# AIPowerMeter key (under metrics.cpu / metrics.gpu) -> our channel; all W unless named.
POWER = {("cpu", "intel_power"): "cpu_package.power_w", ("cpu", "total_dram_power"): "dram.power_w",
         ("gpu", "nvidia_draw_absolute"): "gpu_node.power_w", ("gpu", "nvidia_power"): "gpu_node.power_w"}
# per-GPU power: nvidia-smi schema (2021) and NVML schema (newer releases)
PER_GPU_POWER = ("per_gpu_power_draw", "per_gpu_nvidia_power")


def recognises(path: Path) -> tuple[bool, str]:
    """Whether ``path`` (a ``power_metrics.json``) is AIPowerMeter's, and if not, why (for a warning)."""
    first = first_line(path)
    if first == SEGMENT_END or isinstance(first, dict) and "metrics" in first:
        return True, ""
    what = ("holds our sample format but no meta.json" if isinstance(first, dict) and "t_s" in first
            else "is empty or not a recognised power_metrics.json")
    return False, what


def record(folder: Path, model: str | None) -> dict:
    """The record of an AIPowerMeter folder, its identity from its path: ``.../<model>/input_<size>/run_<k>``.

    Without ``input_<size>``, the input size is unknown, the run is the folder's
    name (its number if it is one) and the model its parent folder's name.
    """
    names = folder.absolute().parts[1:]
    size_at = next((i for i in range(len(names) - 1, -1, -1) if re.fullmatch(r"input_\d+", names[i])), None)
    run = re.fullmatch(r"(?:run_)?(\d+)", names[-1])
    model_at = (size_at if size_at is not None else len(names) - 1) - 1
    return {
        "model": model or (names[model_at] if model_at >= 0 else names[-1]),
        "input_size": int(names[size_at][6:]) if size_at is not None else np.nan,
        "run": int(run.group(1)) if run else names[-1], "status": "complete", "format": FORMAT, "path": folder,
        "iterations": np.nan, "gpu_domain": None, "sensors": {}, "idle": {}, "host": {}, "unavailable": {},
    }


def frame(run: int, path: Path) -> pd.DataFrame | None:
    """AIPowerMeter's JSON lines as a wide frame; each recording segment is marked start .. end."""
    data = read_bytes(path)
    if data is None:
        return None
    records = [value for _, value in json_lines(path, data, lambda v: v == SEGMENT_END or (
        isinstance(v, dict) and isinstance(v.get("metrics"), dict) and "date" in v))]
    segments = np.cumsum([r == SEGMENT_END for r in records])
    rows = [_row(r, segment) for r, segment in zip(records, segments) if r != SEGMENT_END]
    if not rows:
        if records:
            warn(f"{path}: no sample; run skipped")
        return None
    wide = pd.DataFrame.from_records(rows)
    date = pd.to_datetime(wide.pop("date"), errors="coerce", format="mixed")
    if date.isna().any():
        warn(f"{path}: {date.isna().sum()} sample(s) with an unreadable date skipped")
    wide = wide[date.notna()].assign(t_s=(date - date.min()).dt.total_seconds())
    first = wide["segment"].ne(wide["segment"].shift())
    last = wide["segment"].ne(wide["segment"].shift(-1))
    wide["mark"] = pd.Categorical(np.select([first, last], ["start", "end"], "tick"),
                                  categories=["start", "tick", "end"])
    wide.insert(0, "run", run)
    channels = sorted(c for c in wide.columns if "." in c)
    return wide[["run", "segment", "t_s", "mark", *channels]]


def _row(record: dict, segment: int) -> dict:
    metrics = record["metrics"]
    cpu, gpu = metrics.get("cpu") or {}, metrics.get("gpu") or {}
    row = {"date": record["date"], "segment": segment}
    row.update({channel: metrics[part][key] for (part, key), channel in POWER.items()
                if key in (metrics.get(part) or {})})
    for key in PER_GPU_POWER:
        row.update({f"gpu{i}.power_w": w for i, w in (gpu.get(key) or {}).items()})
    if "per_gpu_attributable_mem_use" in gpu:
        row["gpu_node.proc_mem_mib"] = sum(sum(p.values()) for p in gpu["per_gpu_attributable_mem_use"].values()) / MIB
    if "per_process_mem_use_abs" in cpu:
        row["process.rss_mib"] = sum(cpu["per_process_mem_use_abs"].values()) / MIB
    return row

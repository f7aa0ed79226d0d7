"""The run-tree layout ``OUT/input_<size>/run_<k>/`` and its atomic writers.

``meta.json`` and ``latency.csv`` are written to a temporary file in the same
folder and renamed into place, so a reader (or a crash) never sees half of one.
A run is complete only when its ``meta.json`` says ``"status": "complete"``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

SAMPLES_FILE = "power_metrics.json"
LATENCY_FILE = "latency.csv"
META_FILE = "meta.json"
STUDY_FILE = "study.json"
COMPLETE, FAILED, RUNNING = "complete", "failed", "running"


class RunTreeError(ValueError):
    """An output folder that cannot hold a run tree (one-line message)."""


def run_dir(root: Path, input_size: int, run: int) -> Path:
    return Path(root) / f"input_{input_size}" / f"run_{run}"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, document: dict) -> None:
    write_atomic(path, json.dumps(document, indent=1, default=str) + "\n")


def write_latencies(path: Path, latencies_s: np.ndarray) -> None:
    write_atomic(path, "latency_s\n" + "\n".join(f"{value:.9f}" for value in latencies_s) + "\n")


def read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(folder: Path) -> bool:
    meta = read_meta(folder)
    return bool(meta) and meta.get("status") == COMPLETE


def prepare_out(root: Path) -> Path:
    """Check that ``root`` can receive a run tree and create it.

    An existing non-empty folder is accepted only if it already is a run tree
    (it holds ``study.json`` or ``input_*`` folders); anything else is refused
    so a study never scatters files into an unrelated folder.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RunTreeError(f"output path {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not looks_like_run_tree(root.iterdir()):
        raise RunTreeError(f"output folder {root} is not empty and is not a run tree; choose another --out")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunTreeError(f"cannot create output folder {root}: {error.strerror}") from None
    if not os.access(root, os.W_OK):
        raise RunTreeError(f"output folder {root} is not writable")
    return root


def looks_like_run_tree(entries: Iterable[Path]) -> bool:
    return any(entry.name == STUDY_FILE or entry.name.startswith("input_") for entry in entries)

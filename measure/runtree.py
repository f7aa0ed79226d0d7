"""The run-tree layout ``OUT/input_<size>/run_<k>/`` and its atomic writers.

``meta.json``, ``latency.csv`` and ``study.json`` are written to a temporary
file in the same folder (``.<name>.<random>.tmp``) and renamed into place, so a
reader, a crash or a second process never sees half of one; a temporary file
left by a killed process is never read, and removed when its run is redone.
A run is complete only when its ``meta.json`` says ``"status": "complete"``,
and that is written last.
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
RUN_FILES = (SAMPLES_FILE, LATENCY_FILE, META_FILE)
COMPLETE, FAILED, RUNNING = "complete", "failed", "running"
UMASK = os.umask(0o022)
os.umask(UMASK)  # read once: the temporary files get the modes an ordinary ``open`` would give


class RunTreeError(ValueError):
    """An output folder that cannot hold a run tree (one-line message)."""


def run_dir(root: Path, input_size: int, run: int) -> Path:
    return Path(root) / f"input_{input_size}" / f"run_{run}"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename; an OSError names ``path``."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp's 0600 would hide the tree from the other users of shared storage
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:  # disk full, read-only: name the file meant, not its temporary file
        raise OSError(error.errno, error.strerror, str(path)) from error
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)  # nothing left after a rename; the partial file after a failure


def write_json(path: Path, document: dict) -> None:
    write_atomic(path, json.dumps(document, indent=1, default=str) + "\n")


def write_latencies(path: Path, latencies_s: np.ndarray) -> None:
    write_atomic(path, "latency_s\n" + "\n".join(f"{value:.9f}" for value in latencies_s) + "\n")


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None if it is missing, unreadable or not an object."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def read_meta(folder: Path) -> dict | None:
    return read_json(folder / META_FILE)


def is_complete(folder: Path) -> bool:
    meta = read_meta(folder)
    return bool(meta) and meta.get("status") == COMPLETE


def clear_run(folder: Path) -> None:
    """Remove what an interrupted attempt left in a run folder: its files and temporary files."""
    for path in folder.iterdir():
        if path.name in RUN_FILES or (path.name.startswith(".") and path.name.endswith(".tmp")):
            path.unlink()


def prepare_out(root: Path) -> Path:
    """Check that ``root`` can receive a run tree and create it.

    An existing non-empty folder is accepted only if it already is a run tree
    (it holds ``study.json`` or ``input_*`` folders, or a concurrent shard is
    writing its ``study.json``); anything else is refused so a study never
    scatters files into an unrelated folder.
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
    return any(entry.name == STUDY_FILE or entry.name.startswith(("input_", f".{STUDY_FILE}.")) for entry in entries)

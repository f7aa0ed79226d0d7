"""The run tree: its layout, file names, statuses, the ``meta.json`` record and atomic writers.

This module owns the format. It imports no torch, numpy or pandas, so that the
analysis reads trees through it without pulling the measuring side in.

Layout (docs/run-tree.md)::

    OUT/study.json                        the plan, {schema, plan}
    OUT/idle/idle_<utc>_<host>_<pid>.json idle recordings (same format as power_metrics.json)
    OUT/<config>/input_<size>/run_<k>/    one folder per run: power_metrics.json, latency.csv, meta.json
                                          (and tokens.csv for generation)

``<config>`` is a readable name of the run's configuration (``batch1-fp32-eager-threads2``);
trees of schema 1 have no such level (``OUT/input_<size>/run_<k>/``). A run's
identity is data: the ``identity`` mapping of its ``meta.json`` (model, task,
input size, batch size, dtype, execution, threads, device, and whatever a task
adds), never parsed from folder names.

``meta.json``, ``latency.csv`` and ``study.json`` are written to a temporary
file in the same folder (``.<name>.<random>.tmp``) and renamed into place, so a
reader, a crash or a second process never sees half of one; a temporary file
left by a killed process is never read, and removed when its run is redone. A
run is complete only when its ``meta.json`` says ``"status": "complete"``, and
that is written last.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping

SCHEMA = 2  # 2: identity mapping, configuration folders, idle recording named per run, MiB channels named _mib
SAMPLES_FILE = "power_metrics.json"
LATENCY_FILE = "latency.csv"
TOKENS_FILE = "tokens.csv"
META_FILE = "meta.json"
STUDY_FILE = "study.json"
IDLE_FOLDER = "idle"
RUN_FILES = (SAMPLES_FILE, LATENCY_FILE, TOKENS_FILE, META_FILE)
COMPLETE, FAILED, RUNNING = "complete", "failed", "running"
# The task of the user's own code (``models.user_model``, a ``measure.window``): its ``identity.input_size`` may be
# null (a window has none), and so may a complete run's ``iterations`` (a window not told how many inferences ran).
CUSTOM = "custom"
STATUSES = (COMPLETE, FAILED, RUNNING)
# What a tree of schema 1 (no identity mapping) measured, for the dimensions it did not record.
SCHEMA_1_DEFAULTS = {"batch_size": 1, "dtype": "fp32", "execution": "eager"}
# Channels of schema 1 whose unit was MiB under an ``_mb`` name.
SCHEMA_1_CHANNELS = {"mem_used_mb": "mem_used_mib", "proc_mem_mb": "proc_mem_mib", "rss_mb": "rss_mib",
                     "uss_mb": "uss_mib"}
UMASK = os.umask(0o022)
os.umask(UMASK)  # read once: the temporary files get the modes an ordinary ``open`` would give

Scalar = str | int | float | bool | None


class RunTreeError(ValueError):
    """An output folder that cannot hold a run tree (one-line message)."""


class MetaError(ValueError):
    """A ``meta.json`` or ``study.json`` that cannot be used (one-line message naming the file)."""


# ---------------------------------------------------------------- layout

def config_name(config: Mapping[str, Scalar]) -> str:
    """The folder name of a configuration: ``key`` + value for each knob, joined by ``-``.

    ``{"batch_size": 8, "dtype": "bf16", "execution": "compiled", "threads": 2}`` ->
    ``batch8-bf16-compiled-threads2``. Knobs whose value names itself (dtype,
    execution) appear as the value alone; others as a short key and the value.
    """
    parts = []
    for key, value in config.items():
        text = str(value).lower()
        parts.append(text if key in _SELF_NAMED else f"{_SHORT.get(key, key.replace('_', ''))}{text}")
    name = re.sub(r"[^a-z0-9.+_-]+", "_", "-".join(parts)).strip("_")
    return name or "default"


_SELF_NAMED = {"dtype", "execution"}
_SHORT = {"batch_size": "batch", "new_tokens": "new", "threads": "threads"}


def run_dir(root: Path, input_size: int, run: int, config: str | None = None) -> Path:
    """``root/<config>/input_<size>/run_<k>`` (``config`` None: the schema-1 layout without it)."""
    base = Path(root) / config if config else Path(root)
    return base / f"input_{input_size}" / f"run_{run}"


def is_run_folder(filenames: Iterable[str]) -> bool:
    """Whether a folder holding these files is one of our run folders (it has a ``meta.json``)."""
    return META_FILE in set(filenames)


# ---------------------------------------------------------------- the meta.json record

@dataclass(frozen=True)
class Meta:
    """One run's ``meta.json``, validated (docs/run-tree.md lists every field).

    ``identity`` holds the run's dimensions (``model``, ``task``, ``input_size``,
    ``batch_size``, ``dtype``, ``execution``, ``threads``, ``device``, ...), each a
    scalar; ``run`` is the run's index at that point. ``fields`` holds every
    other key as written (``warmup``, ``period_s``, ``sensors``, ``host``,
    ``window``, ``weights``, ...); the typed accessors below check the ones
    the analysis relies on. Trees of schema 1 are read with their identity
    built from the top-level keys and ``SCHEMA_1_DEFAULTS``.
    """

    schema: int
    status: str
    reason: str | None
    identity: Mapping[str, Scalar]
    run: int
    iterations: int | None
    fields: Mapping[str, object] = field(default_factory=dict)

    # -- typed accessors (validated by from_document)
    @property
    def sensors(self) -> dict[str, dict]:
        """``{domain: {sensor, source, channels, counter_wrap_j, ...}}`` of every domain sampled."""
        return dict(self.fields.get("sensors") or {})

    @property
    def unavailable(self) -> dict[str, str]:
        """``{sensor: reason}`` for every sensor (or ``sensor:device``) that could not be opened."""
        return dict(self.fields.get("unavailable") or {})

    @property
    def host(self) -> dict:
        return dict(self.fields.get("host") or {})

    @property
    def window(self) -> dict:
        return dict(self.fields.get("window") or {})

    @property
    def idle_recording(self) -> str | None:
        """Path of the idle recording behind this run's baseline, relative to the tree's root (schema 2)."""
        idle = self.fields.get("idle")
        return idle.get("recording") if isinstance(idle, dict) else None

    @property
    def idle_power_w(self) -> dict[str, float]:
        """``{sensor domain: W}`` of a schema-1 tree, which stored the baseline itself; empty otherwise."""
        given = self.fields.get("idle_power_w") or {}
        return {d: float(v["value"] if isinstance(v, dict) else v) for d, v in given.items()
                if (v["value"] if isinstance(v, dict) else v) is not None}

    def get(self, key: str, default: object = None) -> object:
        return self.fields.get(key, default)

    def with_changes(self, **changes) -> "Meta":
        """A copy with record attributes (``status``, ``reason``, ...) or ``fields`` keys changed."""
        record = {k: changes.pop(k) for k in list(changes) if k in _RECORD}
        return replace(self, **record, fields={**self.fields, **changes})

    def to_document(self) -> dict:
        """The JSON document written as ``meta.json`` (always the current schema)."""
        return {"schema": SCHEMA, "status": self.status, "reason": self.reason, "identity": dict(self.identity),
                "run": self.run, "iterations": self.iterations, **self.fields}

    @classmethod
    def from_document(cls, document: object, where: str | Path = META_FILE) -> "Meta":
        """Validate a parsed ``meta.json``; raise ``MetaError`` saying what is wrong, naming ``where``."""
        if not isinstance(document, dict):
            raise MetaError(f"{where}: not a JSON object")
        schema = document.get("schema", 1)
        if not _integer(schema) or schema < 1:
            raise MetaError(f"{where}: malformed schema {schema!r}")
        if schema > SCHEMA:
            raise MetaError(f"{where}: written with format schema {schema}, newer than this package reads "
                            f"({SCHEMA}); upgrade the package to read it")
        if schema == 1:
            document = _from_schema_1(document)
        missing = [key for key in ("status", "identity", "run") if document.get(key) is None]
        identity = document.get("identity")
        custom = isinstance(identity, dict) and identity.get("task") == CUSTOM
        if isinstance(identity, dict):
            missing += [f"identity.{key}" for key in ("model", "input_size")
                        if identity.get(key) is None and not (custom and key == "input_size")]
        if document.get("status") == COMPLETE and document.get("iterations") is None and not custom:
            missing.append("iterations")
        if missing:
            raise MetaError(f"{where}: lacks {', '.join(missing)}")
        bad = _malformed(document)
        if bad:
            raise MetaError(f"{where}: malformed {', '.join(bad)}")
        rest = {k: v for k, v in document.items() if k not in ("schema", *_RECORD)}
        return cls(schema, document["status"], document.get("reason"), dict(identity), document["run"],
                   document.get("iterations"), rest)


_RECORD = ("status", "reason", "identity", "run", "iterations")
_SCHEMA_1_IDENTITY = ("model", "task", "input_size", "batch_size", "device")


def _from_schema_1(document: dict) -> dict:
    """A schema-1 document in the current shape: identity gathered from its top-level keys."""
    identity = {key: document.get(key) for key in _SCHEMA_1_IDENTITY}
    for key, value in SCHEMA_1_DEFAULTS.items():
        identity[key] = identity.get(key) if identity.get(key) is not None else value
    host = document.get("host")
    identity["threads"] = host.get("torch_threads") if isinstance(host, dict) else None
    order = ["model", "task", "input_size", "batch_size", "dtype", "execution", "threads", "device"]
    rest = {k: v for k, v in document.items() if k not in _SCHEMA_1_IDENTITY}
    return {**rest, "identity": {key: identity[key] for key in order}}


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return value is None or isinstance(value, (int, float)) and not isinstance(value, bool)


def _malformed(document: dict) -> list[str]:
    """The keys of a document (current shape) whose values have a type the readers cannot use."""
    identity = document["identity"]
    sensors, host = document.get("sensors") or {}, document.get("host") or {}
    idle_w, idle = document.get("idle_power_w") or {}, document.get("idle")
    sound = {
        "status": document["status"] in STATUSES,
        "identity": isinstance(identity, dict) and all(isinstance(k, str) and _scalar(v) for k, v in identity.items()),
        "identity.model": not isinstance(identity, dict) or isinstance(identity.get("model"), str),
        "identity.input_size": not isinstance(identity, dict) or _integer(identity.get("input_size"))
                               or identity.get("input_size") is None,
        "run": _integer(document["run"]) and document["run"] >= 0,
        "iterations": document.get("iterations") is None or _integer(document["iterations"]),
        "reason": document.get("reason") is None or isinstance(document["reason"], str),
        "sensors": isinstance(sensors, dict) and all(isinstance(s, dict) and _number(s.get("counter_wrap_j"))
                                                     for s in sensors.values()),
        "unavailable": isinstance(document.get("unavailable") or {}, dict),
        "idle_power_w": isinstance(idle_w, dict) and all(_number(v.get("value") if isinstance(v, dict) else v)
                                                         for v in idle_w.values()),
        "idle": idle is None or isinstance(idle, dict) and isinstance(idle.get("recording"), (str, type(None))),
        "window": isinstance(document.get("window") or {}, dict),
        "host": isinstance(host, dict) and isinstance(host.get("gpus") or [], list)
                and all(isinstance(gpu, dict) for gpu in host.get("gpus") or []),
    }
    return [key for key, ok in sound.items() if not ok]


def _scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int, bool))


def read_meta(folder: Path) -> Meta:
    """The validated ``meta.json`` of a run folder; ``MetaError`` (one line) if missing or unusable."""
    path = Path(folder) / META_FILE
    return Meta.from_document(_read_document(path), path)


def read_status(folder: Path) -> str | None:
    """The ``status`` of a run folder's ``meta.json``, or None if it has no usable one."""
    try:
        return read_meta(folder).status
    except MetaError:
        return None


def is_complete(folder: Path) -> bool:
    return read_status(folder) == COMPLETE


def read_study(root: Path) -> dict | None:
    """The plan recorded in ``root/study.json``; None if there is none.

    Raises ``MetaError`` for an unreadable file or one of a newer schema.
    """
    path = Path(root) / STUDY_FILE
    if not path.exists():
        return None
    document = _read_document(path)
    schema = document.get("schema", 1) if isinstance(document, dict) else None
    if not _integer(schema) or not isinstance(document.get("plan"), dict):
        raise MetaError(f"{path}: not a study record ({{schema, plan}})")
    if schema > SCHEMA:
        raise MetaError(f"{path}: written with format schema {schema}, newer than this package reads ({SCHEMA}); "
                        "upgrade the package")
    return document


def _read_document(path: Path) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MetaError(f"{path}: missing") from None
    except OSError as error:
        raise MetaError(f"{path}: unreadable ({error.strerror})") from None
    except UnicodeDecodeError:
        raise MetaError(f"{path}: unreadable (not UTF-8 text)") from None
    except ValueError:
        raise MetaError(f"{path}: not valid JSON") from None


# ---------------------------------------------------------------- writers

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


def write_meta(folder: Path, meta: Meta) -> None:
    write_json(Path(folder) / META_FILE, meta.to_document())


def write_latencies(path: Path, latencies_s: Iterable[float]) -> None:
    """``latency.csv``: a ``latency_s`` header, then one latency per timed inference, in seconds."""
    write_atomic(path, "latency_s\n" + "".join(f"{float(value):.9f}\n" for value in latencies_s))


def write_tokens(path: Path, t_s: Iterable[float], latency_s: Iterable[float]) -> None:
    """``tokens.csv`` of a generation: a ``token,t_s,latency_s`` header, then one line per new token (0: the
    first, made by the prefill): seconds from the request's start to the token, and of the step that made it."""
    write_atomic(path, "token,t_s,latency_s\n" + "".join(f"{k},{float(t):.9f},{float(step):.9f}\n"
                                                         for k, (t, step) in enumerate(zip(t_s, latency_s))))


def clear_run(folder: Path) -> None:
    """Remove what an interrupted attempt left in a run folder: its files and temporary files."""
    for path in folder.iterdir():
        if path.name in RUN_FILES or (path.name.startswith(".") and path.name.endswith(".tmp")):
            path.unlink()


def check_out(root: Path) -> Path:
    """Check, writing nothing, that ``root`` can receive a run tree; ``RunTreeError`` (one line) if not.

    An existing non-empty folder is accepted only if it already is a run tree
    (``looks_like_run_tree``); anything else is refused so a study never
    scatters files into an unrelated folder. A missing folder needs its first
    existing ancestor to be a writable folder.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RunTreeError(f"output path {root} exists and is not a folder")
    if root.is_dir():
        if any(root.iterdir()) and not looks_like_run_tree(root.iterdir()):
            raise RunTreeError(f"output folder {root} is not empty and is not a run tree; choose another output folder")
        if not os.access(root, os.W_OK):
            raise RunTreeError(f"output folder {root} is not writable")
        return root
    ancestor = next(parent for parent in root.absolute().parents if parent.exists())
    if not ancestor.is_dir():
        raise RunTreeError(f"cannot create output folder {root}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunTreeError(f"cannot create output folder {root}: {ancestor} is not writable")
    return root


def prepare_out(root: Path) -> Path:
    """``check_out``, then create ``root`` (and its missing parents)."""
    root = check_out(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunTreeError(f"cannot create output folder {root}: {error.strerror}") from None
    return root


def clear_tree(root: Path) -> None:
    """Remove a run tree's ``study.json``, idle recordings and runs (configuration and ``input_*``
    folders) from ``root``; anything else in it stays."""
    for entry in Path(root).iterdir():
        if entry.name == STUDY_FILE:
            entry.unlink()
        elif entry.is_dir() and (entry.name == IDLE_FOLDER or entry.name.startswith("input_")
                                 or _is_config_folder(entry)):
            shutil.rmtree(entry)


def looks_like_run_tree(entries: Iterable[Path]) -> bool:
    """Whether a folder holding ``entries`` is a run tree: ``study.json`` (or a shard writing it), ``input_*``
    folders (schema 1) or configuration folders holding ``input_*`` folders."""
    return any(entry.name == STUDY_FILE or entry.name.startswith(("input_", f".{STUDY_FILE}."))
               or _is_config_folder(entry) for entry in entries)


def _is_config_folder(entry: Path) -> bool:
    """A configuration's folder: a folder holding ``input_<size>`` folders."""
    return entry.is_dir() and any(child.name.startswith("input_") for child in entry.iterdir())

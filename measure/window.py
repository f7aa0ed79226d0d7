"""A measuring window around any block of code: ``with window("label") as w: ...``.

For code that is not a sweep of the model registry (a notebook cell, a
pipeline, a generation loop): every sensor found (``sensors.open_sensors``) is
sampled between two synchronous edge samples, right after the CUDA devices are
synchronised (the one given, else every device on which this process has a
CUDA context), with ticks every ``period_s`` in between (``recorder``: by a
timer signal in the calling thread on the CPU, since no loop of the window's
own polls for them, by a thread on a GPU). What it
measured is written as a schema-2 run folder (``runtree``): ``power_metrics.json``
and a ``meta.json`` with ``task: "custom"`` and the label as ``model``. There is
no ``latency.csv``: a window times its block as a whole, not each inference
(``meta.json``'s ``latencies`` says so).

This module records; it computes no energy. The energies are the analysis's
(counters checked, wrap-aware and aligned; trapezoids of power), computed from
the run folder by a ``report`` function passed in, as ``sweep`` takes its stop
rule: ``measure.window`` (the package's) and ``%%energy`` pass
``measure.magic.report``.

An exception in the block, KeyboardInterrupt included, still ends the window:
the recorder is stopped (its timer and signal handler, or its thread,
undone), a saved folder is marked ``failed`` with the reason, a temporary one
is removed, and the exception goes on.  The next window can start at once.

torch is imported when a window is asked for, not with this module: the
package imports this module, and the analysis imports the package (for
``runtree``) without wanting torch.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from . import runtree
from .recorder import Recorder, Window
from .sensors import Sensor, open_sensors

Reporter = Callable[["Measurement"], object]
"""``report(measurement) -> result``: called once the window is complete, while its run folder exists; what it
returns becomes ``measurement.result``."""

LATENCIES_NOTE = "not timed per inference: a window times its block as a whole (window.duration_s)"


@dataclass
class Measurement:
    """What a window measured; yielded by ``window`` and completed when its block ends.

    ``folder``: the run folder, ``save``'s, else a temporary one that exists
    until ``report`` has returned (``None`` after). ``device``: the device the
    figures are attributed to (``cpu`` or ``cuda:<i>``); ``synchronized``: what
    the edges synchronise. ``sensors``: ``{domain: description}`` of every domain
    sampled (``Domain.describe``: sensor, source ``measured``/``estimated``,
    channels, the estimate's TDP, ...); ``unavailable``: ``{sensor: reason}``.
    ``status``: ``running``, ``complete`` or ``failed`` (``reason``: the
    exception, one line). ``window``: the recorder's facts (edges, duration in
    s, samples, tick source), once the block has ended. ``result``: what
    ``report`` returned.
    """

    label: str
    inferences: int | None
    device: str
    synchronized: str
    period_s: float
    folder: Path | None
    saved: bool
    sensors: dict[str, dict] = field(default_factory=dict, repr=False)
    unavailable: dict[str, str] = field(default_factory=dict, repr=False)
    status: str = runtree.RUNNING
    reason: str | None = None
    window: Window | None = None
    result: object = field(default=None, repr=False)

    @property
    def duration_s(self) -> float | None:
        """Seconds between the window's edge samples; None before the block has ended."""
        return None if self.window is None else self.window.duration_s


def window(label: str, *, inferences: int | None = None, save: str | Path | None = None,
           device: str | None = None, period_s: float = 0.1,
           report: Reporter | None = None) -> ContextManager[Measurement]:
    """A context manager measuring its block: ``with window("label", inferences=20) as w: ...``.

    ``label`` names what the block does (the run's ``model``). ``inferences``:
    how many the block runs (``meta.json``'s ``iterations``; the analysis then
    divides each energy by it). ``save``: the folder to keep the run folder
    as, absent, empty or an earlier window's (whose files are replaced);
    default: a temporary folder, removed after ``report``. ``device``: ``cpu``, ``cuda`` or
    ``cuda:<i>``, the one device synchronised at the edges and whose GPU the
    figures are attributed to; default: every CUDA device on which this
    process has a context is synchronised, and the current CUDA device (the
    CPU without one) is attributed. ``period_s``: seconds between ticks.
    ``report``: see ``Reporter``.

    Raises ``ValueError`` (one line) for a bad argument here, before anything
    is opened or written. Entering the window opens the sensors (a ``ValueError``
    for a ``MEASURE_CPU_TDP_W`` that is not a number of watts), creates the save
    folder (``runtree.RunTreeError``, a ``ValueError``, where it cannot) and
    writes the run's files (an ``OSError`` where it cannot).
    """
    from .sweep import resolve_device

    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"the label must be a non-empty string, got {label!r}")
    if inferences is not None and (not isinstance(inferences, int) or isinstance(inferences, bool) or inferences < 1):
        raise ValueError(f"inferences must be a positive integer, got {inferences!r}")
    if isinstance(period_s, bool) or not isinstance(period_s, (int, float)) or not 0 < period_s < math.inf:
        raise ValueError(f"the sampling period must be a finite positive number of seconds, got {period_s!r}")
    attributed = resolve_device("auto" if device is None else str(device))
    folder = None if save is None else _checked_save(Path(save))
    return _measuring(label.strip(), inferences, folder, attributed, device is None, float(period_s), report)


def _checked_save(folder: Path) -> Path:
    """``folder`` if it can hold a window's run folder: absent, empty, or an earlier window's; ValueError if not."""
    if folder.is_dir() and any(folder.iterdir()):
        if not _holds_a_window(folder):
            raise ValueError(f"save folder {folder} is not empty and holds no earlier window; choose another folder")
        if not os.access(folder, os.W_OK):
            raise ValueError(f"save folder {folder} is not writable")
        return folder
    return runtree.check_out(folder)


def _holds_a_window(folder: Path) -> bool:
    """Whether ``folder`` is a window's run folder (a run of the user's own model in a sweep is not one)."""
    try:
        meta = runtree.read_meta(folder)
    except runtree.MetaError:
        return False
    return meta.identity.get("task") == runtree.CUSTOM and meta.get("latencies") == LATENCIES_NOTE


@contextmanager
def _measuring(label: str, inferences: int | None, save: Path | None, device, every_device: bool,
               period_s: float, report: Reporter | None) -> Iterator[Measurement]:
    from .sweep import one_line, tick_source

    sync, synchronized = _edges(device, every_device)
    opened, unavailable = open_sensors(gpu=True)
    folder = None
    measurement = Measurement(label, inferences, str(device), synchronized, period_s, None, save is not None,
                              {d.name: d.describe() for s in opened for d in s.domains}, unavailable)
    try:
        folder = _made(save) if save is not None else Path(tempfile.mkdtemp(prefix="measure-window-"))
        measurement.folder = folder
        meta = _opening_meta(measurement, device, opened)
        runtree.write_meta(folder, meta)
        try:
            recorder = Recorder(opened, folder / runtree.SAMPLES_FILE, period_s, ticks=tick_source(device))
            sync()
            recorder.start()
            try:
                yield measurement
                sync()
            finally:
                measurement.window = recorder.stop()
        except BaseException as error:
            measurement.status, measurement.reason = runtree.FAILED, one_line(error).removesuffix(": ")
            if save is not None:
                runtree.write_meta(folder, meta.with_changes(status=runtree.FAILED, reason=measurement.reason,
                                                             window=_facts(measurement.window)))
            raise
        runtree.write_meta(folder, meta.with_changes(status=runtree.COMPLETE, window=_facts(measurement.window)))
        measurement.status = runtree.COMPLETE
        if report is not None:
            measurement.result = report(measurement)
    finally:
        for sensor in opened:
            sensor.close()
        if save is None and folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            measurement.folder = None


def _opening_meta(measurement: Measurement, device, opened: list[Sensor]) -> runtree.Meta:
    """The window's ``meta.json`` as written before its ``start`` sample: ``running``, no ``window`` yet."""
    import torch

    from .host import host_info
    from .sweep import gpu_domain

    domain, note = gpu_domain(device, opened)
    identity = {"model": measurement.label, "task": runtree.CUSTOM, "input_size": None,
                "threads": torch.get_num_threads(), "device": str(device)}
    fields = {"warmup": None, "period_s": measurement.period_s, "synchronized": measurement.synchronized,
              "latencies": LATENCIES_NOTE, "gpu_domain": domain, **({"gpu_domain_note": note} if note else {}),
              "sensors": measurement.sensors, "unavailable": measurement.unavailable,
              "idle": {"recording": None, "seconds": 0.0}, "window": None, "host": host_info(device, opened)}
    return runtree.Meta(runtree.SCHEMA, runtree.RUNNING, None, identity, 0, measurement.inferences, fields)


def _made(folder: Path) -> Path:
    """The save folder, created (``RunTreeError``, one line, where it cannot be), or emptied of an earlier
    window's files."""
    if not folder.is_dir():
        runtree.prepare_out(folder)
    runtree.clear_run(folder)
    return folder


def _facts(window: Window | None) -> dict | None:
    return None if window is None else window.describe()


def _edges(device, every_device: bool) -> tuple[Callable[[], None], str]:
    """What to call right before each edge sample, and what it synchronises, in words.

    ``every_device``: every visible CUDA device on which this process has a
    context; only those can hold its work, and synchronising another would
    create a context there (memory, and time inside the window). Else
    ``device`` alone (nothing for the CPU).
    """
    import torch

    from .sweep import synchronizer

    if not every_device:
        return synchronizer(device), str(device) if device.type == "cuda" else "none (cpu)"
    if not torch.cuda.is_available():
        return synchronizer(device), "none (no CUDA device)"

    def synchronize() -> None:
        if torch.cuda.is_initialized():
            for index in range(torch.cuda.device_count()):
                if torch._C._cuda_hasPrimaryContext(index):  # public torch has no such query
                    torch.cuda.synchronize(index)

    return synchronize, "every CUDA device with a context of this process"

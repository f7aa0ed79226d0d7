"""Sampling of every open sensor into a JSON-lines file.

The measured window is delimited by two synchronous samples: ``start()`` takes
the ``start`` sample (t = 0) right before the first timed inference and
``stop()`` takes the ``end`` sample right after the last one, so the energy of
a counter over the window is exactly ``counter(end) - counter(start)``.
Between the two, a ``tick`` sample is taken every ``period_s`` on a fixed grid
(no drift; grid points missed by a late tick are skipped, not caught up).

Two tick sources:

- ``"thread"``: a daemon thread.  Right where the measured work leaves CPU
  cores free (a GPU model waiting on its kernels), it costs the work nothing
  but the moments it holds the GIL.
- ``"signal"``: an interval timer (``setitimer``, ``SIGALRM``) whose handler
  takes the tick in the thread that started the recorder, between two Python
  bytecodes: no thread to wake, no core taken from a CPU model that keeps
  every core busy, no GIL handed over.  A tick falls due during a long C call
  (one big operator, a CUDA synchronisation) is taken when the call returns,
  so this source suits work on the CPU.  It needs the main thread and an
  unused ``SIGALRM``; otherwise the thread is used, and ``Window.ticks`` says
  which source ran and why.

A tick does the least it can inside the window: it notes the clocks and takes
each sensor's raw reading (``capture()``, see ``sensors.base``).  Decoding the
readings and writing the lines happens when ``stop()`` has taken the ``end``
sample, outside the window, or in batches of ``flush_every`` ticks during a
long window, so that memory stays bounded (a crash loses at most the ticks of
one batch; the ``start`` line is written at once).  A sensor's slow
housekeeping (its optional ``refresh()``) runs before the window and, with the
thread, before each tick outside the lock, never delaying the ``end`` sample.
"""
from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from .sensors.base import Sensor, SensorError

TICK_SOURCES = ("thread", "signal")
FLUSH_EVERY = 1000  # ticks kept before a batch is written during the window


def utc_text(wall_s: float) -> str:
    """ISO 8601 UTC with a ``Z`` suffix, to the microsecond, of a ``time.time()`` value."""
    return datetime.fromtimestamp(wall_s, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def json_value(value: object) -> str:
    """``json.dumps(value)``, with a shortcut for the common cases (``None``, a finite float)."""
    if value is None:
        return "null"
    if type(value) is float and math.isfinite(value):
        return repr(value)
    return json.dumps(value)


def signal_ticks_refusal() -> str | None:
    """Why signal ticks cannot run in the calling thread now, or ``None`` when they can."""
    if not hasattr(signal, "setitimer"):
        return "no setitimer on this platform"
    if threading.current_thread() is not threading.main_thread():
        return "not in the main thread"
    if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None):
        return "SIGALRM already has a handler"
    if signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0):
        return "the real-time interval timer is already armed"
    return None


@dataclass(frozen=True)
class Window:
    start_utc: str
    end_utc: str
    duration_s: float
    samples: int
    gap_samples: int
    first_error: str | None
    ticks: str  # the tick source that ran, with the reason where it is not the one asked for
    tick_cpu_s: float  # CPU seconds the ticks took inside the window (capture, and any batch written)

    def describe(self) -> dict:
        return dict(vars(self))


class Recorder:
    """Samples ``sensors`` into ``path`` between ``start()`` and ``stop()``."""

    def __init__(
        self,
        sensors: Sequence[Sensor],
        path: str | Path,
        period_s: float = 0.1,
        *,
        ticks: str = "thread",
        flush_every: int = FLUSH_EVERY,
    ):
        if period_s <= 0:
            raise ValueError(f"the sampling period must be positive, got {period_s}")
        if ticks not in TICK_SOURCES:
            raise ValueError(f"ticks must be one of {TICK_SOURCES}, got {ticks!r}")
        self.sensors = list(sensors)
        self._captures = [getattr(sensor, "capture", sensor.read) for sensor in self.sensors]
        self._decoders = [getattr(sensor, "decode", None) for sensor in self.sensors]
        self._refreshers = [sensor.refresh for sensor in self.sensors if callable(getattr(sensor, "refresh", None))]
        self._keys: dict[str, str] = {}  # channel -> its pre-serialised ', "<channel>": '
        self.path = Path(path)
        self.period_s = period_s
        self.ticks = ticks
        self.flush_every = max(1, flush_every)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous_handler = None
        self._file = None
        self._pending: list[tuple] = []  # captured ticks not yet written: (mark, t, wall, readings)
        self._t0 = 0.0
        self._start_utc = ""
        self._ticks_used = ticks
        self._tick_cpu_s = 0.0
        self._samples = 0
        self._gaps = 0
        self.first_error: str | None = None  # the first failed read, for the run's metadata
        self._write_error: OSError | None = None

    def start(self) -> None:
        self._file = open(self.path, "wb")
        self._stop.clear()
        self._pending = []
        self._samples = self._gaps = 0
        self._tick_cpu_s = 0.0
        self.first_error = None
        self._write_error = None
        self._ticks_used = self.ticks
        refusal = signal_ticks_refusal() if self.ticks == "signal" else None
        if refusal:
            self._ticks_used = f"thread (signal refused: {refusal})"
        self._refresh()
        with self._lock:
            self._t0 = time.perf_counter()
            start = self._capture("start", self._t0)
        self._write([start])
        self._start_utc = utc_text(start[2])
        if self._ticks_used == "signal":
            self._previous_handler = signal.signal(signal.SIGALRM, self._on_signal)
            signal.setitimer(signal.ITIMER_REAL, self.period_s, self.period_s)
        else:
            self._thread = threading.Thread(target=self._run, name="power-recorder", daemon=True)
            self._thread.start()

    def stop(self) -> Window:
        """Take the ``end`` sample now, then stop the ticks, write what they captured and close the file."""
        try:
            with self._lock:
                self._stop.set()  # under the lock: no tick is captured after ``end``
                t_end = time.perf_counter()
                end = self._capture("end", t_end)
        finally:
            if self._thread is not None:
                self._thread.join()
                self._thread = None
            else:
                signal.setitimer(signal.ITIMER_REAL, 0, 0)
                signal.signal(signal.SIGALRM, self._previous_handler)
        try:
            if self._write_error is None:
                self._write([*self._pending, end])
            else:  # a batch could not be written during the window (a full disk, say): still try the end line
                self._write([end])
        finally:
            self._pending = []
            self._file.close()
        if self._write_error is not None:
            raise self._write_error
        return Window(self._start_utc, utc_text(end[2]), t_end - self._t0, self._samples, self._gaps,
                      self.first_error, self._ticks_used, self._tick_cpu_s)

    def __enter__(self) -> "Recorder":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self._stop.is_set():
            self.stop()

    def _run(self) -> None:
        tick = 1
        while not self._stop.wait(max(0.0, self._t0 + tick * self.period_s - time.perf_counter())):
            self._refresh()
            with self._lock:
                if self._stop.is_set():
                    return
                self._tick()
            if self._write_error is not None:
                return
            # skip grid points already missed (a slow read) instead of bursting to catch up
            tick = max(tick + 1, int((time.perf_counter() - self._t0) / self.period_s) + 1)

    def _on_signal(self, signum, frame) -> None:
        if not self._stop.is_set() and self._write_error is None:
            self._tick()

    def _tick(self) -> None:
        cpu = time.thread_time()
        self._pending.append(self._capture("tick", time.perf_counter()))
        if len(self._pending) >= self.flush_every:
            batch, self._pending = self._pending, []
            try:
                self._write(batch)
            except OSError as error:  # raised again by stop(), in the measuring thread
                self._write_error = error
        self._tick_cpu_s += time.thread_time() - cpu

    def _refresh(self) -> None:
        """Let sensors do their slow housekeeping now, rather than inside a read."""
        for refresh in self._refreshers:
            try:
                refresh()
            except (SensorError, OSError):
                pass  # the next read retries it and records the failure as a gap

    def _capture(self, mark: str, t: float) -> tuple:
        """Every sensor's raw reading now, or the error that prevented it."""
        readings = []
        for capture in self._captures:
            try:
                readings.append(capture())
            except (SensorError, OSError) as error:
                readings.append(error)
        return mark, t, time.time(), readings

    def _write(self, samples: list[tuple]) -> None:
        """Decode captured samples, in capture order, into lines; write and flush them."""
        self._file.write("".join([self._line(*sample) for sample in samples]).encode())
        self._file.flush()

    def _line(self, mark: str, t: float, wall: float, readings: list) -> str:
        t_s = round(t - self._t0, 6)
        parts = ['{"t_s": ', json_value(t_s), ', "utc": "', utc_text(wall), '", "mark": "', mark, '", "gap": ', '""']
        failed = []
        for sensor, decode, reading in zip(self.sensors, self._decoders, readings):
            values = reading
            if not isinstance(reading, Exception) and decode is not None:
                try:
                    values = decode(reading)
                except (SensorError, OSError, ValueError) as error:
                    values = error
            if isinstance(values, Exception):
                failed.append(sensor.name)
                self.first_error = self.first_error or f"{sensor.name} at t={t_s} s: {values}"
                values = dict.fromkeys(sensor.channels)
            for channel, value in values.items():
                parts.append(self._keys.get(channel) or self._key(channel))
                parts.append(json_value(value))
        if failed:
            parts[7] = json.dumps(";".join(failed))
            self._gaps += 1
        parts.append("}\n")
        self._samples += 1
        return "".join(parts)

    def _key(self, channel: str) -> str:
        key = self._keys[channel] = f", {json.dumps(channel)}: "
        return key

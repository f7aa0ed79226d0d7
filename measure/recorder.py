"""Background sampling of every open sensor into a JSON-lines file.

The measured window is delimited by two synchronous samples: ``start()`` takes
the ``start`` sample (t = 0) right before the first timed inference and
``stop()`` takes the ``end`` sample right after the last one, so the energy of
a counter over the window is exactly ``counter(end) - counter(start)``.
Between the two, a daemon thread samples every ``period_s`` on a fixed grid
(no drift). Every line is flushed as it is written, and nothing is kept in
memory, so a crash loses at most one sample and memory stays constant.

The sampling thread steals time from the inference it measures, so its path is
kept short: a line is assembled from pre-serialised keys (byte for byte what
``json.dumps`` of the line's dict writes), and a sensor's slow housekeeping
(its optional ``refresh()``, see ``sensors.base``) runs outside the lock,
before the window and before each tick, so that it never delays the ``end``
sample.
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from .sensors.base import Sensor, SensorError


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def json_value(value: object) -> str:
    """``json.dumps(value)``, with a shortcut for the common cases (``None``, a finite float)."""
    if value is None:
        return "null"
    if type(value) is float and math.isfinite(value):
        return repr(value)
    return json.dumps(value)


@dataclass(frozen=True)
class Window:
    start_utc: str
    end_utc: str
    duration_s: float
    samples: int
    gap_samples: int
    first_error: str | None

    def describe(self) -> dict:
        return dict(vars(self))


class Recorder:
    """Samples ``sensors`` into ``path`` between ``start()`` and ``stop()``."""

    def __init__(self, sensors: Sequence[Sensor], path: str | Path, period_s: float = 0.1):
        if period_s <= 0:
            raise ValueError(f"the sampling period must be positive, got {period_s}")
        self.sensors = list(sensors)
        self._refreshers = [sensor.refresh for sensor in self.sensors if callable(getattr(sensor, "refresh", None))]
        self._keys: dict[str, str] = {}  # channel -> its pre-serialised ', "<channel>": '
        self.path = Path(path)
        self.period_s = period_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file = None
        self._t0 = 0.0
        self._start_utc = ""
        self._samples = 0
        self._gaps = 0
        self.first_error: str | None = None  # the first failed read, for the run's metadata
        self._write_error: OSError | None = None

    def start(self) -> None:
        self._file = open(self.path, "wb")
        self._stop.clear()
        self._samples = self._gaps = 0
        self.first_error = None
        self._write_error = None
        self._refresh()
        with self._lock:
            self._t0 = time.perf_counter()
            self._start_utc = self._sample("start", self._t0)
        self._thread = threading.Thread(target=self._run, name="power-recorder", daemon=True)
        self._thread.start()

    def stop(self) -> Window:
        """Take the ``end`` sample now, then stop the thread and close the file."""
        try:
            with self._lock:
                self._stop.set()  # under the lock: the thread writes no tick after ``end``
                t_end = time.perf_counter()
                end_utc = self._sample("end", t_end)
        finally:
            self._thread.join()
            self._file.close()
        if self._write_error is not None:  # the thread could not write a tick (a full disk, say)
            raise self._write_error
        return Window(self._start_utc, end_utc, t_end - self._t0, self._samples, self._gaps, self.first_error)

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
                try:
                    self._sample("tick", time.perf_counter())
                except OSError as error:  # raised again by stop(), in the measuring thread
                    self._write_error = error
                    return
            # skip grid points already missed (a slow read) instead of bursting to catch up
            tick = max(tick + 1, int((time.perf_counter() - self._t0) / self.period_s) + 1)

    def _refresh(self) -> None:
        """Let sensors do their slow housekeeping now, outside the lock, rather than inside a read."""
        for refresh in self._refreshers:
            try:
                refresh()
            except (SensorError, OSError):
                pass  # the next read retries it and records the failure as a gap

    def _sample(self, mark: str, t: float) -> str:
        """Read every sensor and write one line; the caller holds the lock."""
        utc = utc_now()
        t_s = round(t - self._t0, 6)
        parts = ['{"t_s": ', json_value(t_s), ', "utc": "', utc, '", "mark": "', mark, '", "gap": ', '""']
        failed = []
        for sensor in self.sensors:
            try:
                values = sensor.read()
            except (SensorError, OSError) as error:
                failed.append(sensor.name)
                values = dict.fromkeys(sensor.channels)
                self.first_error = self.first_error or f"{sensor.name} at t={t_s} s: {error}"
            for channel, value in values.items():
                parts.append(self._keys.get(channel) or self._key(channel))
                parts.append(json_value(value))
        if failed:
            parts[7] = json.dumps(";".join(failed))
            self._gaps += 1
        parts.append("}\n")
        self._file.write("".join(parts).encode())
        self._file.flush()
        self._samples += 1
        return utc

    def _key(self, channel: str) -> str:
        key = self._keys[channel] = f", {json.dumps(channel)}: "
        return key

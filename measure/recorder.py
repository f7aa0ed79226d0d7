"""Background sampling of every open sensor into a JSON-lines file.

The measured window is delimited by two synchronous samples: ``start()`` takes
the ``start`` sample (t = 0) right before the first timed inference and
``stop()`` takes the ``end`` sample right after the last one, so the energy of
a counter over the window is exactly ``counter(end) - counter(start)``.
Between the two, a daemon thread samples every ``period_s`` on a fixed grid
(no drift). Every line is flushed as it is written, and nothing is kept in
memory, so a crash loses at most one sample and memory stays constant.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from .sensors.base import Sensor, SensorError


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


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

    def start(self) -> None:
        self._file = open(self.path, "w", encoding="utf-8")
        self._stop.clear()
        self._samples = self._gaps = 0
        self.first_error = None
        with self._lock:
            self._t0 = time.perf_counter()
            self._start_utc = self._sample("start", self._t0)
        self._thread = threading.Thread(target=self._run, name="power-recorder", daemon=True)
        self._thread.start()

    def stop(self) -> Window:
        """Take the ``end`` sample now, then stop the thread and close the file."""
        with self._lock:
            t_end = time.perf_counter()
            end_utc = self._sample("end", t_end)
            self._stop.set()  # under the lock: the thread writes no tick after ``end``
        self._thread.join()
        self._file.close()
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
            with self._lock:
                if self._stop.is_set():
                    return
                self._sample("tick", time.perf_counter())
            # skip grid points already missed (a slow read) instead of bursting to catch up
            tick = max(tick + 1, int((time.perf_counter() - self._t0) / self.period_s) + 1)

    def _sample(self, mark: str, t: float) -> str:
        """Read every sensor and write one line; the caller holds the lock."""
        utc = utc_now()
        line: dict[str, object] = {"t_s": round(t - self._t0, 6), "utc": utc, "mark": mark, "gap": ""}
        failed = []
        for sensor in self.sensors:
            try:
                line.update(sensor.read())
            except (SensorError, OSError) as error:
                failed.append(sensor.name)
                line.update(dict.fromkeys(sensor.channels))
                self.first_error = self.first_error or f"{sensor.name} at t={line['t_s']} s: {error}"
        if failed:
            line["gap"] = ";".join(failed)
            self._gaps += 1
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()
        self._samples += 1
        return utc

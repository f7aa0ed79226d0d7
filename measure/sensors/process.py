"""This process tree's CPU share and memory, through psutil.

Domain ``process``, channels:

- ``cpu_share``: CPU seconds (user + system) of this process and its
  descendants, those already exited and reaped included, per wall second
  (monotonic clock) since the previous read, or since the sensor opened for
  the first read; 0..logical CPUs.  This process's own time comes from
  ``time.process_time`` (nanosecond resolution), descendants' from psutil
  (clock-tick resolution, 10 ms).
- ``rss_mb``: resident memory of the tree, MiB (this process's read from
  ``/proc/<pid>/statm`` through a descriptor kept open: psutil's
  ``memory_info().rss`` without reopening the file at every read).
- ``uss_mb``: unique memory of the tree (``memory_full_info().uss``), MiB;
  ``None`` where a process's is unreadable.

Listing descendants walks the whole process table (about a millisecond on a
machine running a hundred processes, and a system call per process that lets
the inference thread take the GIL) and USS walks page tables (about 13 ms per
GiB resident): too slow for every sample.  Descendants are listed at most
every ``refresh_s`` (in the domain's details), through psutil only when the
kernel's per-thread ``children`` lists show that this process has a child.  USS is read at most every
``refresh_s`` too, and never more than ``MAX_USS_DUTY`` of the time: after a
read that took d seconds the next waits at least d / ``MAX_USS_DUTY`` (13 s
for a process of 1 GiB).  Reads in between reuse the last list and USS.  A
descendant started since the last listing is counted, in full, from the next
one.  ``refresh()`` does what is due of both; ``read()`` calls it, and the
recorder calls it outside its lock before the window (and before each tick
its thread takes).  ``capture()`` takes the raw
counters and ``decode()`` turns them into the channels (``sensors.base``);
the recorder's ticks use ``capture_tick()``, which reads this process's RSS
(``/proc/<pid>/statm``, ~10 µs while a model runs) at most every
``MEMORY_INTERVAL_S`` (50 ms) and repeats it in between.
"""
from __future__ import annotations

import math
import os
import time

import psutil

from .base import MEASURED, Domain, Sensor, SensorError, Unavailable

NAME = "process"
CHANNELS = ("process.cpu_share", "process.rss_mb", "process.uss_mb")
MAX_USS_DUTY = 0.001  # at most 0.1 % of the time spent reading USS
MEMORY_INTERVAL_S = 0.05  # the recorder's ticks read this process's RSS at most this often
_MIB = 2**20
_PAGE_B = os.sysconf("SC_PAGE_SIZE")


class ProcessSensor(Sensor):
    """CPU share and memory of this process and its descendants."""

    name = NAME

    def __init__(self, refresh_s: float = 1.0):
        self._me = psutil.Process()
        self._statm = open(f"/proc/{self._me.pid}/statm", "rb", buffering=0)
        self._tasks = f"/proc/{self._me.pid}/task"
        self._refresh_s = refresh_s
        self._listed_at = -math.inf
        self._uss_at = -math.inf
        self._uss_wait_s = refresh_s
        self._descendants: list[psutil.Process] = []
        self._uss_mb: float | None = None
        self.domains = (Domain(NAME, NAME, MEASURED, CHANNELS, details={"refresh_s": refresh_s}),)
        self.channels = CHANNELS
        self._statm_raw, self._statm_at = b"", -math.inf
        self._refresh(time.monotonic())
        self._last_t, self._last_cpu_s, _ = self._tree_totals(self.capture())

    def refresh(self) -> None:
        """List descendants and read USS, each when due."""
        try:
            self._refresh(time.monotonic())
        except psutil.Error as err:
            raise SensorError(f"process: {err}") from err

    def read(self) -> dict[str, float | None]:
        self.refresh()
        return self.decode(self.capture())

    def capture(self) -> tuple:
        """The clock, this process's CPU and memory counters, the listed descendants' and the last USS."""
        try:
            now = time.monotonic()
            self._statm_raw, self._statm_at = os.pread(self._statm.fileno(), 256, 0), now
            return self._counters(now, self._statm_raw)
        except (psutil.Error, OSError) as err:
            raise SensorError(f"process: {err}") from err

    def capture_tick(self) -> tuple:
        """As ``capture``, but this process's memory counters read at most every ``MEMORY_INTERVAL_S``
        (the previous ones in between): the CPU clocks move with every kernel, memory with allocations."""
        now = time.monotonic()
        if now - self._statm_at >= MEMORY_INTERVAL_S:
            return self.capture()
        try:
            return self._counters(now, self._statm_raw)
        except (psutil.Error, OSError) as err:
            raise SensorError(f"process: {err}") from err

    def _counters(self, now: float, statm: bytes) -> tuple:
        return (now, time.process_time(), os.times(), statm,
                [self._descendant_counters(child) for child in self._descendants], self._uss_mb)

    def decode(self, raw: tuple) -> dict[str, float | None]:
        """CPU share since the previous decoded reading, and memory."""
        now, cpu_s, rss_b = self._tree_totals(raw)
        share = (cpu_s - self._last_cpu_s) / (now - self._last_t) if now > self._last_t else None
        self._last_cpu_s, self._last_t = cpu_s, now
        return {"process.cpu_share": share, "process.rss_mb": rss_b / _MIB, "process.uss_mb": raw[5]}

    def close(self) -> None:
        self._statm.close()

    def _refresh(self, now: float) -> None:
        if now - self._listed_at >= self._refresh_s:
            self._descendants = self._me.children(recursive=True) if self._has_children() else []
            self._listed_at = now
        if now - self._uss_at >= self._uss_wait_s:
            self._uss_mb = self._tree_uss_mb()
            self._uss_at = now
            self._uss_wait_s = max(self._refresh_s, (time.monotonic() - now) / MAX_USS_DUTY)

    def _has_children(self) -> bool:
        """Whether a thread of this process has a child: a few small reads instead of psutil's walk of
        every process; True where the kernel has no ``/proc/<pid>/task/<tid>/children`` or a thread
        ended meanwhile, so that psutil decides."""
        try:
            for tid in os.listdir(self._tasks):
                with open(f"{self._tasks}/{tid}/children", "rb") as children:
                    if children.read(1):
                        return True
        except OSError:
            return True
        return False

    def _tree_uss_mb(self) -> float | None:
        uss_b = 0
        for p in [self._me, *self._descendants]:
            try:
                uss_b += p.memory_full_info().uss
            except psutil.NoSuchProcess:
                pass
            except psutil.AccessDenied:
                return None
        return uss_b / _MIB

    @staticmethod
    def _descendant_counters(child: psutil.Process) -> tuple | None:
        """A descendant's CPU times and RSS bytes (RSS ``None`` where unreadable), ``None`` once it exited
        (once reaped, its time is in its parent's ``children_*``)."""
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            return None
        try:
            rss_b = child.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            rss_b = None
        return times, rss_b

    @staticmethod
    def _tree_totals(raw: tuple) -> tuple[float, float, int]:
        """Clock, cumulative CPU seconds and RSS bytes of the tree (descendants as last listed)."""
        now, own_cpu_s, own_times, statm, descendants, _ = raw
        cpu_s = own_cpu_s + own_times.children_user + own_times.children_system
        rss_b = int(statm.split()[1]) * _PAGE_B
        for counters in descendants:
            if counters is not None:
                times, child_rss_b = counters
                cpu_s += times.user + times.system + times.children_user + times.children_system
                rss_b += child_rss_b or 0
        return now, cpu_s, rss_b


def probe(*, refresh_s: float = 1.0) -> ProcessSensor | Unavailable:
    """Open the process-tree sensor (psutil works wherever it imports)."""
    try:
        return ProcessSensor(refresh_s)
    except (psutil.Error, OSError) as err:
        return Unavailable(NAME, f"psutil cannot read this process: {err}")

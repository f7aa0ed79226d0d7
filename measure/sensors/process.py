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
recorder calls it beforehand, outside its lock.
"""
from __future__ import annotations

import math
import os
import time

import psutil

from .base import MEASURED, Domain, SensorError, Unavailable

NAME = "process"
CHANNELS = ("process.cpu_share", "process.rss_mb", "process.uss_mb")
MAX_USS_DUTY = 0.001  # at most 0.1 % of the time spent reading USS
_MIB = 2**20
_PAGE_B = os.sysconf("SC_PAGE_SIZE")


class ProcessSensor:
    """CPU share and memory of this process and its descendants."""

    name = NAME
    available = True

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
        self._last_t = time.monotonic()
        self._refresh(self._last_t)
        self._last_cpu_s, _ = self._sample()

    def refresh(self) -> None:
        """List descendants and read USS, each when due."""
        try:
            self._refresh(time.monotonic())
        except psutil.Error as err:
            raise SensorError(f"process: {err}") from err

    def read(self) -> dict[str, float | None]:
        now = time.monotonic()
        try:
            self._refresh(now)
            cpu_s, rss_b = self._sample()
        except (psutil.Error, OSError) as err:
            raise SensorError(f"process: {err}") from err
        share = (cpu_s - self._last_cpu_s) / (now - self._last_t) if now > self._last_t else None
        self._last_cpu_s, self._last_t = cpu_s, now
        return {"process.cpu_share": share, "process.rss_mb": rss_b / _MIB, "process.uss_mb": self._uss_mb}

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

    def _sample(self) -> tuple[float, int]:
        """Cumulative CPU seconds and RSS bytes of the tree (descendants as last listed)."""
        own = os.times()
        cpu_s = time.process_time() + own.children_user + own.children_system
        rss_b = int(os.pread(self._statm.fileno(), 256, 0).split()[1]) * _PAGE_B
        for child in self._descendants:
            try:
                t = child.cpu_times()
            except psutil.NoSuchProcess:
                continue  # exited: once reaped, its time is in its parent's children_*
            cpu_s += t.user + t.system + t.children_user + t.children_system
            try:
                rss_b += child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return cpu_s, rss_b


def probe(*, refresh_s: float = 1.0) -> ProcessSensor | Unavailable:
    """Open the process-tree sensor (psutil works wherever it imports)."""
    try:
        return ProcessSensor(refresh_s)
    except (psutil.Error, OSError) as err:
        return Unavailable(NAME, f"psutil cannot read this process: {err}")

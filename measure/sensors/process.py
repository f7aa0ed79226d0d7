"""This process tree's CPU share and memory, through psutil.

Domain ``process``, channels:

- ``cpu_share``: CPU seconds (user + system) of this process and its
  descendants, those already exited and reaped included, per wall second
  (monotonic clock) since the previous read, or since the sensor opened for
  the first read; 0..logical CPUs.  This process's own time comes from
  ``time.process_time`` (nanosecond resolution), descendants' from psutil
  (clock-tick resolution, 10 ms).
- ``rss_mb``: resident memory of the tree, MiB.
- ``uss_mb``: unique memory of the tree (``memory_full_info().uss``), MiB;
  ``None`` where a process's is unreadable.

Listing descendants walks the whole process table and USS walks page tables
(milliseconds for a large process), too slow for every 10 ms sample: both are
refreshed at most every ``refresh_s`` (in the domain's details), and reads in
between reuse the last list and USS.  A descendant started since the last
refresh is counted, in full, from the next one.
"""
from __future__ import annotations

import math
import os
import time

import psutil

from .base import MEASURED, Domain, SensorError, Unavailable

NAME = "process"
CHANNELS = ("process.cpu_share", "process.rss_mb", "process.uss_mb")
_MIB = 2**20


class ProcessSensor:
    """CPU share and memory of this process and its descendants."""

    name = NAME
    available = True

    def __init__(self, refresh_s: float = 1.0):
        self._me = psutil.Process()
        self._refresh_s = refresh_s
        self._refreshed_at = -math.inf
        self._descendants: list[psutil.Process] = []
        self._uss_mb: float | None = None
        self.domains = (Domain(NAME, NAME, MEASURED, CHANNELS, details={"refresh_s": refresh_s}),)
        self.channels = CHANNELS
        self._last_t = time.monotonic()
        self._last_cpu_s, _ = self._sample(self._last_t)

    def read(self) -> dict[str, float | None]:
        now = time.monotonic()
        try:
            cpu_s, rss_b = self._sample(now)
        except psutil.Error as err:
            raise SensorError(f"process: {err}") from err
        share = (cpu_s - self._last_cpu_s) / (now - self._last_t) if now > self._last_t else None
        self._last_cpu_s, self._last_t = cpu_s, now
        return {"process.cpu_share": share, "process.rss_mb": rss_b / _MIB, "process.uss_mb": self._uss_mb}

    def close(self) -> None:
        """Nothing to release."""

    def _sample(self, now: float) -> tuple[float, int]:
        """Cumulative CPU seconds and RSS bytes of the tree; refreshes descendants and USS when due."""
        refresh = now - self._refreshed_at >= self._refresh_s
        if refresh:
            self._refreshed_at = now
            self._descendants = self._me.children(recursive=True)
        own = os.times()
        cpu_s = time.process_time() + own.children_user + own.children_system
        tree = [self._me]
        for child in self._descendants:
            try:
                t = child.cpu_times()
                cpu_s += t.user + t.system + t.children_user + t.children_system
                tree.append(child)
            except psutil.NoSuchProcess:
                pass  # exited: once reaped, its time is in its parent's children_*
        rss_b = uss_b = 0
        for p in tree:
            try:
                if refresh and uss_b is not None:
                    info = p.memory_full_info()
                    uss_b += info.uss
                else:
                    info = p.memory_info()
                rss_b += info.rss
            except psutil.NoSuchProcess:
                pass
            except psutil.AccessDenied:
                uss_b = None
        if refresh:
            self._uss_mb = None if uss_b is None else uss_b / _MIB
        return cpu_s, rss_b


def probe(*, refresh_s: float = 1.0) -> ProcessSensor | Unavailable:
    """Open the process-tree sensor (psutil works wherever it imports)."""
    try:
        return ProcessSensor(refresh_s)
    except psutil.Error as err:
        return Unavailable(NAME, f"psutil cannot read this process: {err}")

"""The machine's CPU times from ``/proc/stat``, as ``psutil.cpu_times()`` reports them.

``ProcStatTimes`` reads them through a descriptor of ``/proc/stat`` kept open:
one system call a read instead of opening the file every time, the same
values.  ``busy_total`` turns a record into busy and total CPU seconds with
psutil's conventions: idle and iowait are idle; guest time is already inside
user time.

The counters move in clock ticks of 10 ms: over 10 ms a CPU's ticks say only
that it was busy or idle, over 50 ms its load to 20 %.  Sensors therefore read
them at their ticks at most every ``MIN_INTERVAL_S`` (50 ms), repeating the
last values in between (a faster read would add noise, not information, and
cost a regeneration of the file each); the window's edges always read them.
Two reads less than ``SAME_READ_S`` apart are one: the CPU estimate and the
process sensor both read the file at a tick or an edge, and the kernel
regenerates it once.
"""
from __future__ import annotations

import os
import time

import psutil

MIN_INTERVAL_S = 0.05
SAME_READ_S = 0.001  # far below the 10 ms clock tick of the counters


class ProcStatTimes:
    """``psutil.cpu_times()`` (same record type, same values) from a ``/proc/stat`` kept open.

    Raises OSError when the file cannot be opened or read."""

    _last: tuple[float, bytes] = (float("-inf"), b"")  # every instance's last read: (time.monotonic(), bytes)

    def __init__(self):
        sample = psutil.cpu_times()
        self._record, self._fields = type(sample), len(sample)
        self._ticks = os.sysconf("SC_CLK_TCK")  # psutil's CLOCK_TICKS
        self._fd = os.open("/proc/stat", os.O_RDONLY | os.O_CLOEXEC)

    def __call__(self):
        return self.parse(self.raw())

    def raw(self) -> bytes:
        """The start of ``/proc/stat`` (pread at offset 0 makes the kernel regenerate the file), or what any
        instance read less than ``SAME_READ_S`` ago."""
        now = time.monotonic()
        at, data = ProcStatTimes._last
        if not 0.0 <= now - at < SAME_READ_S:
            data = os.pread(self._fd, 512, 0)
            ProcStatTimes._last = (now, data)
        return data

    def parse(self, raw: bytes):
        """The record, in seconds, from the aggregate ``cpu`` line, which comes first."""
        values = raw.split(b"\n", 1)[0].split()[1 : self._fields + 1]
        return self._record(*[float(x) / self._ticks for x in values])

    def close(self) -> None:
        os.close(self._fd)


def busy_total(times) -> tuple[float, float]:
    """Busy and total CPU seconds, summed over CPUs, from a ``psutil.cpu_times()`` record."""
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total

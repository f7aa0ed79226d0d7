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
"""
from __future__ import annotations

import os

import psutil

MIN_INTERVAL_S = 0.05


class ProcStatTimes:
    """``psutil.cpu_times()`` (same record type, same values) from a ``/proc/stat`` kept open.

    Raises OSError when the file cannot be opened or read."""

    def __init__(self):
        sample = psutil.cpu_times()
        self._record, self._fields = type(sample), len(sample)
        self._ticks = os.sysconf("SC_CLK_TCK")  # psutil's CLOCK_TICKS
        self._fd = os.open("/proc/stat", os.O_RDONLY | os.O_CLOEXEC)

    def __call__(self):
        return self.parse(self.raw())

    def raw(self) -> bytes:
        """The start of ``/proc/stat`` (pread at offset 0 makes the kernel regenerate the file)."""
        return os.pread(self._fd, 512, 0)

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

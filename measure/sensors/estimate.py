"""Estimated CPU power where RAPL cannot be read: TDP x load.  Not a measurement.

Domain ``cpu_estimated`` (source ``estimated``), channels ``power_w`` and ``load``:

    power_w = tdp_w * (IDLE_FRACTION + (1 - IDLE_FRACTION) * load)

- ``load``: machine-wide CPU utilisation, 0..1, since the previous read (since
  the sensor opened for the first): busy / total CPU time from
  ``psutil.cpu_times()`` deltas (``procstat.busy_total``).  When no CPU time
  has passed between two reads (the counters move in 10 ms ticks) the second
  repeats the previous values (``None`` before the first interval) and the
  next covers both intervals.  Likewise a reading taken less than
  ``min_interval_s`` (``procstat.MIN_INTERVAL_S``, 50 ms; in the domain's
  details) after the last one that read the counters does not read them and
  repeats the previous values (see ``procstat``).  This holds for the
  recorder's background ticks (``capture_tick``); its window edges, like
  ``read()``, always read the counters.
- ``IDLE_FRACTION`` = 0.3: a package draws a sizeable share of its TDP even
  idle.  The linear idle-to-busy model is Fan, Weber and Barroso's ("Power
  provisioning for a warehouse-sized computer", ISCA 2007); 0.3 is a round
  value within the range of idle to full-load power that SPECpower_ssj2008
  results report for servers.
- ``tdp_w``: the ``tdp_w`` argument, else the environment variable
  ``MEASURE_CPU_TDP_W``, else ``W_PER_LOGICAL_CPU`` (4 W, about what server and
  desktop parts of 2019-2023 specify per hardware thread) x logical CPUs,
  capped at ``DEFAULT_TDP_CAP_W`` (500 W, two high-end server sockets).

The domain's details record ``tdp_w``, where it came from, ``idle_fraction``
and the formula.  Expect errors of tens of percent.

Machine CPU times are ``psutil.cpu_times()``'s, read through a descriptor of
``/proc/stat`` kept open (``procstat.ProcStatTimes``).
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable

import psutil

from .base import ESTIMATED, Domain, Sensor, Unavailable
from .procstat import MIN_INTERVAL_S, ProcStatTimes, busy_total

NAME = "estimate"
DOMAIN = "cpu_estimated"
CHANNELS = (f"{DOMAIN}.power_w", f"{DOMAIN}.load")
IDLE_FRACTION = 0.3
W_PER_LOGICAL_CPU = 4.0
DEFAULT_TDP_CAP_W = 500.0
TDP_ENV = "MEASURE_CPU_TDP_W"
MODEL = "power_w = tdp_w * (idle_fraction + (1 - idle_fraction) * load); load = busy / total CPU time since the previous read"


class CpuEstimate(Sensor):
    """TDP x load model of the CPU's power."""

    name = NAME

    def __init__(self, tdp_w: float, tdp_source: str, cpu_times: Callable, min_interval_s: float = MIN_INTERVAL_S):
        self.tdp_w = tdp_w
        self.min_interval_s = min_interval_s
        self._read_at = time.monotonic()
        self._cpu_times = cpu_times
        # a ProcStatTimes takes its raw bytes at the sampling instant and parses them when decoded
        self._capture = getattr(cpu_times, "raw", cpu_times)
        self._parse = getattr(cpu_times, "parse", lambda times: times)
        self._last = busy_total(cpu_times())
        self._values: dict[str, float | None] = dict.fromkeys(CHANNELS)
        details = {"tdp_w": tdp_w, "tdp_source": tdp_source, "idle_fraction": IDLE_FRACTION, "model": MODEL,
                   "min_interval_s": min_interval_s}
        self.domains = (Domain(DOMAIN, NAME, ESTIMATED, CHANNELS, details=details),)
        self.channels = CHANNELS

    def read(self) -> dict[str, float | None]:
        return self.decode(self.capture())

    def capture(self):
        """The machine's CPU times now, raw."""
        self._read_at = time.monotonic()
        return self._capture()

    def capture_tick(self):
        """As ``capture``, but ``None`` (repeat the previous values) within ``min_interval_s`` of the last read."""
        if time.monotonic() - self._read_at < self.min_interval_s:
            return None
        return self.capture()

    def decode(self, raw) -> dict[str, float | None]:
        """Load and power since the previous decoded reading; the previous values for ``None``."""
        if raw is None:
            return dict(self._values)
        busy, total = busy_total(self._parse(raw))
        d_total = total - self._last[1]
        if d_total > 0:
            # clamped: /proc/stat's iowait may go backwards
            load = min(max((busy - self._last[0]) / d_total, 0.0), 1.0)
            power_w = self.tdp_w * (IDLE_FRACTION + (1 - IDLE_FRACTION) * load)
            self._values = {CHANNELS[0]: power_w, CHANNELS[1]: load}
            self._last = busy, total
        return dict(self._values)

    def close(self) -> None:
        close = getattr(self._cpu_times, "close", None)
        if close is not None:
            close()


def probe(
    tdp_w: float | None = None,
    *,
    cpu_times: Callable | None = None,
    logical_cpus: int | None = None,
    min_interval_s: float = MIN_INTERVAL_S,
) -> CpuEstimate | Unavailable:
    """Open the estimate; raises ValueError for a TDP that is not a positive number.

    ``cpu_times`` replaces ``ProcStatTimes`` (tests)."""
    if tdp_w is not None:
        source = "argument"
    elif os.environ.get(TDP_ENV):
        tdp_w, source = os.environ[TDP_ENV], f"environment variable {TDP_ENV}"
    else:
        cpus = logical_cpus or psutil.cpu_count(logical=True) or 1
        tdp_w = min(W_PER_LOGICAL_CPU * cpus, DEFAULT_TDP_CAP_W)
        source = f"default: {W_PER_LOGICAL_CPU:g} W x {cpus} logical CPUs, capped at {DEFAULT_TDP_CAP_W:g} W"
    try:
        tdp = float(tdp_w)
    except (TypeError, ValueError):
        tdp = math.nan
    if not (math.isfinite(tdp) and tdp > 0):
        raise ValueError(f"CPU TDP must be a positive number of watts, got {tdp_w!r} ({source})")
    try:
        return CpuEstimate(tdp, source, cpu_times or ProcStatTimes(), min_interval_s)
    except (psutil.Error, OSError) as err:
        return Unavailable(NAME, f"cannot read machine CPU times: {err}")

"""The one small interface every power/utilisation sensor implements.

A sensor is opened once (probing the hardware), read many times by the
recorder, and closed.  ``read()`` returns a flat mapping from *channel* to
value, where a channel is ``"<domain>.<metric>"`` with the unit in the metric
name (``gpu0.energy_j``, ``package-0.power_w``, ``process.rss_mb``).  The set of
channels is fixed when the sensor opens (``channels``), so every line of a
``power_metrics.json`` has the same keys.

Where the hardware is missing, ``probe`` functions return ``Unavailable`` with
a one-line reason instead of raising.

A sensor may also have a ``refresh()`` method: slow housekeeping that ``read``
would otherwise do itself when it falls due (listing child processes, walking
page tables).  The recorder calls it outside its lock, before the window and,
when a thread takes its background samples, before each of them, so that a
synchronous window edge never waits for it; it raises ``SensorError`` on
failure.

A sensor whose read does real work besides taking the reading (parsing a
kernel file, computing a rate) may split ``read`` in two: ``capture()`` takes,
as cheaply as it can, what must be taken at the sampling instant, and
``decode(raw)`` turns it into the channels' values, with ``read() ==
decode(capture())``.  The recorder captures inside the measured window and
decodes afterwards, in capture order (a decoder may keep state from one
reading to the next); both raise ``SensorError`` on failure.  A sensor whose
readings cannot resolve short intervals may also define ``capture_tick()``,
which the recorder uses for its background ticks instead of ``capture()`` (the
window's edges always use ``capture()``): it may return ``None``, which its
``decode`` turns into the previous values, rather than read again too soon.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, runtime_checkable

MEASURED = "measured"
ESTIMATED = "estimated"


class SensorError(RuntimeError):
    """A read failed mid-run (GPU lost, RAPL read error): recorded as a gap."""


@dataclass(frozen=True)
class Unavailable:
    """Why a sensor could not be opened on this machine (one line)."""

    sensor: str
    reason: str

    available = False


@dataclass(frozen=True)
class Domain:
    """What one domain of a sensor measures, for ``meta.json``.

    ``counter_wrap_j`` is the value at which a cumulative energy counter wraps
    back to zero (RAPL's ``max_energy_range_uj``), ``None`` for counters that
    do not wrap in practice (NVML's 64-bit mJ counter) or when the domain has
    no counter.
    """

    name: str
    sensor: str
    source: str  # MEASURED or ESTIMATED
    channels: tuple[str, ...]
    counter_wrap_j: float | None = None
    details: Mapping[str, object] = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "sensor": self.sensor,
            "source": self.source,
            "channels": list(self.channels),
            "counter_wrap_j": self.counter_wrap_j,
            **dict(self.details),
        }


@runtime_checkable
class Sensor(Protocol):
    name: str
    available: bool  # always True for an opened sensor

    @property
    def domains(self) -> tuple[Domain, ...]: ...

    @property
    def channels(self) -> tuple[str, ...]: ...

    def read(self) -> dict[str, float | None]:
        """One reading of every channel; raise ``SensorError`` on failure."""

    def close(self) -> None: ...

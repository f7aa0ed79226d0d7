"""The one interface every power/utilisation sensor implements: ``Sensor``.

A sensor is opened once (probing the hardware), read many times by the
recorder, and closed.  A reading is a flat mapping from *channel* to value,
where a channel is ``"<domain>.<metric>"`` with the unit in the metric name
(``gpu0.energy_j``, ``package-0.energy_j``, ``process.rss_mib``).  The set of
channels is fixed when the sensor opens (``channels``), so every line of a
``power_metrics.json`` has the same keys.

Where the hardware is missing, ``probe`` functions return ``Unavailable`` with
a one-line reason instead of raising.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

MEASURED = "measured"
ESTIMATED = "estimated"


class SensorError(RuntimeError):
    """A read failed mid-run (GPU lost, RAPL read error): recorded as a gap.

    ``values`` holds the channels that were read nonetheless, ``{channel:
    value}`` (a partial reading: one device lost among several); every channel
    of the sensor missing from it failed.  Empty: the whole reading failed.
    """

    def __init__(self, message: str, values: Mapping[str, float | None] | None = None):
        super().__init__(message)
        self.values = dict(values or {})


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


class Sensor(ABC):
    """An opened sensor: every method the recorder calls, with defaults for those a sensor may leave out.

    Set by the subclass when it opens: ``name`` (the sensor's name, e.g.
    ``"nvml"``), ``domains`` (what each domain measures, its source and unit
    conventions) and ``channels`` (every ``<domain>.<metric>`` of every
    reading, in the order the lines list them).

    The recorder takes the window's edges with ``capture()`` and its ticks
    with ``capture_tick()``, inside the measured window, and turns each raw
    reading into values with ``decode()`` after it, in capture order (a decoder
    may keep state from one reading to the next).  A sensor whose reading is
    cheap implements ``read()`` alone; one that does real work besides taking
    the reading (parsing a kernel file, computing a rate) splits it: ``capture``
    takes, as cheaply as it can, what must be taken at the sampling instant,
    ``decode`` the rest, with ``read() == decode(capture())``.

    Values are floats in the unit the metric's name ends with (``_j``, ``_w``,
    ``_mib``, ``_s``, ``_pct``, ``_mhz``, ``_c``), or ``None`` where the
    hardware answered that it does not know.  A failed read raises
    ``SensorError`` (or ``OSError``), which the recorder records as a gap:
    only the channels missing from the error's ``values`` are null.  Any other
    exception is a bug, which stops the ticks and is raised by the recorder's
    ``stop()``.

    ``unavailable`` maps the parts of the sensor that could not be opened
    (``"<sensor>:<domain>"``, e.g. ``"nvml:gpu1"``) to the reason; the parts
    that opened are sampled.
    """

    name: str
    domains: tuple[Domain, ...]
    channels: tuple[str, ...]
    unavailable: Mapping[str, str] = MappingProxyType({})
    available = True  # an opened sensor; ``Unavailable`` says False

    @abstractmethod
    def read(self) -> dict[str, float | None]:
        """One reading of every channel, ``{channel: value}``; raises ``SensorError`` on failure."""

    def capture(self) -> object:
        """The raw reading of a window edge, for ``decode``; by default ``read()`` itself."""
        return self.read()

    def capture_tick(self) -> object:
        """The raw reading of a tick between the edges; by default ``capture()``.

        A sensor whose readings cannot resolve short intervals, or cost too
        much to take at every tick, may return less here (the previous values
        of slow metrics, or ``None``), which its ``decode`` turns into the
        previous values rather than reading again too soon.
        """
        return self.capture()

    def decode(self, raw: object) -> dict[str, float | None]:
        """``{channel: value}`` of a raw reading, called in capture order; by default the reading itself.

        Raises ``SensorError`` when the reading cannot be decoded.
        """
        return raw

    def refresh(self) -> None:
        """Slow housekeeping that a read would otherwise do itself when it falls due (listing child
        processes, walking page tables); by default nothing.

        The recorder calls it outside its lock when a thread takes its ticks,
        before each of them (and ``before_window()`` before the window), so
        that a synchronous window edge never waits for it.  Raises ``SensorError`` (or
        ``OSError``) on failure; the recorder then carries on and the next
        read retries.
        """

    def before_window(self) -> None:
        """Bring up to date, right before a window's ``start`` sample, whatever the window's readings
        depend on, even if not yet due; by default ``refresh()``.

        The process sensor lists this process's descendants here, so that each
        one running when the window starts is read at its ``start`` sample and
        counted from there.  The recorder calls it outside its lock; raises
        ``SensorError`` (or ``OSError``) on failure, after which the recorder
        carries on.
        """
        self.refresh()

    def close(self) -> None:
        """Release what the sensor holds (library handles, open files); by default nothing.  Idempotent."""

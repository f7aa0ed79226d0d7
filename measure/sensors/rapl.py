"""CPU package and DRAM energy from RAPL, through Linux's powercap sysfs.

Zones ``<root>/intel-rapl:<s>`` named ``package-<n>`` (Intel; AMD Zen uses the
same interface since Linux 5.8) give domains ``package-<n>``; their sub-zones
``intel-rapl:<s>:<j>`` named ``dram`` give ``dram-<n>``.  Overlapping zones are
never read: ``psys`` (the platform, contains the packages), the ``core`` and
``uncore`` sub-zones (inside their package) and ``intel-rapl-mmio`` (a second
interface to the same package counter) are ignored.

Channel ``<domain>.energy_j`` is the raw counter ``energy_uj`` / 1e6: it wraps
back to 0 at the domain's ``counter_wrap_j`` (``max_energy_range_uj`` / 1e6),
which whoever takes differences must handle.  Files are opened and read on
every ``read`` (a few microseconds each).

Faults degrade the zone they hit: a zone whose name or counter cannot be read
when the sensor opens is left out and reported in ``unavailable``
(``{"rapl:<domain>": reason}``, ``rapl:<zone directory>`` where its name is
unreadable); when no zone can be read the sensor is ``Unavailable``, with the
permission fix where that is the cause.  Mid-run, a counter that cannot be read
is null and ``read`` raises ``SensorError`` carrying the other zones' values.
"""
from __future__ import annotations

import os
import re
from typing import Callable

from .base import MEASURED, Domain, Sensor, SensorError, Unavailable

NAME = "rapl"
DEFAULT_ROOT = "/sys/class/powercap"
_ZONE = re.compile(r"intel-rapl:(\d+)(?::(\d+))?")


class RaplSensor(Sensor):
    """The package and DRAM counters found by ``probe``; files are opened per read, nothing to close."""

    name = NAME

    def __init__(self, domains: tuple[Domain, ...], counters: list[tuple[str, str]], opener: Callable,
                 unavailable: dict[str, str]):
        self._counters = counters  # (channel, path of energy_uj)
        self._opener = opener
        self.domains = domains
        self.channels = tuple(channel for channel, _ in counters)
        self.unavailable = unavailable

    def read(self) -> dict[str, float | None]:
        """Every counter in J; ``SensorError`` with the counters read when any fails."""
        values, errors = {}, []
        for channel, path in self._counters:
            try:
                values[channel] = int(_read(path, self._opener)) / 1e6
            except (OSError, ValueError) as err:
                errors.append(f"{channel}: {err}")
        if errors:
            raise SensorError("; ".join(errors), values)
        return values


def probe(root: str = DEFAULT_ROOT, *, opener: Callable[[str, int], int] = os.open) -> RaplSensor | Unavailable:
    """Find the package and DRAM zones under ``root`` and check their counters read.

    ``opener`` opens a file like ``os.open`` (tests inject failures through it).
    """
    if not os.path.isdir(root):
        return Unavailable(NAME, f"no RAPL powercap interface at {root} (virtual machine or unsupported CPU)")
    try:
        zones, failures = _zones(root, opener)
    except OSError as err:
        return Unavailable(NAME, f"cannot read RAPL under {root}: {err}")
    domains, counters = [], []
    for domain_name, zone in zones:
        zone_dir = os.path.join(root, zone)
        energy_uj = os.path.join(zone_dir, "energy_uj")
        try:
            int(_read(energy_uj, opener))
            wrap_uj = int(_read(os.path.join(zone_dir, "max_energy_range_uj"), opener))
        except (OSError, ValueError) as err:
            failures[domain_name] = err
            continue
        channel = f"{domain_name}.energy_j"
        domains.append(Domain(domain_name, NAME, MEASURED, (channel,), counter_wrap_j=wrap_uj / 1e6,
                              details={"zone": zone}))
        counters.append((channel, energy_uj))
    if domains:
        return RaplSensor(tuple(domains), counters, opener,
                          {f"{NAME}:{part}": _why(err, root) for part, err in failures.items()})
    if failures:
        return Unavailable(NAME, _why(next(iter(failures.values())), root))
    return Unavailable(NAME, f"no RAPL package zone under {root}")


def _why(err: Exception, root: str) -> str:
    """One line saying why a zone cannot be read, with the fix for a permission error."""
    if isinstance(err, PermissionError):
        return (f"cannot read {err.filename}: RAPL counters are root-only since the CVE-2020-8694 fix; "
                f"run as root or `sudo chmod -R a+r {root}/intel-rapl` (undone at reboot)")
    return f"cannot read RAPL under {root}: {err}"


def _zones(root: str, opener) -> tuple[list[tuple[str, str]], dict[str, Exception]]:
    """``(domain name, zone directory)`` for every package and DRAM zone, in zone order, and
    ``{zone directory: error}`` for the zones whose name cannot be read.  Raises OSError when ``root``
    cannot be listed."""
    zones = sorted(
        (tuple(int(i) for i in m.groups() if i is not None), m.group(0))
        for m in map(_ZONE.fullmatch, os.listdir(root))
        if m
    )
    names, failures = {}, {}
    for _, zone in zones:
        try:
            names[zone] = _read(os.path.join(root, zone, "name"), opener).decode().strip()
        except OSError as err:
            failures[zone] = err
    found = []
    for key, zone in zones:
        name = names.get(zone, "")
        if len(key) == 1 and name.startswith("package-"):
            found.append((name, zone))
        elif len(key) == 2 and name == "dram":
            parent = names.get(f"intel-rapl:{key[0]}", "")
            if parent.startswith("package-"):
                found.append(("dram-" + parent.removeprefix("package-"), zone))
    return found, failures


def _read(path: str, opener) -> bytes:
    fd = opener(path, os.O_RDONLY)
    try:
        return os.read(fd, 64)
    finally:
        os.close(fd)

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
every ``read`` (a few microseconds each); an OSError then raises SensorError.
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

    def __init__(self, domains: tuple[Domain, ...], counters: list[tuple[str, str]], opener: Callable):
        self._counters = counters  # (channel, path of energy_uj)
        self._opener = opener
        self.domains = domains
        self.channels = tuple(channel for channel, _ in counters)

    def read(self) -> dict[str, float | None]:
        values = {}
        for channel, path in self._counters:
            try:
                values[channel] = int(_read(path, self._opener)) / 1e6
            except (OSError, ValueError) as err:
                raise SensorError(f"{channel}: {err}") from err
        return values


def probe(root: str = DEFAULT_ROOT, *, opener: Callable[[str, int], int] = os.open) -> RaplSensor | Unavailable:
    """Find the package and DRAM zones under ``root`` and check their counters read.

    ``opener`` opens a file like ``os.open`` (tests inject failures through it).
    """
    if not os.path.isdir(root):
        return Unavailable(NAME, f"no RAPL powercap interface at {root} (virtual machine or unsupported CPU)")
    domains, counters = [], []
    try:
        for domain_name, zone in _zones(root, opener):
            zone_dir = os.path.join(root, zone)
            energy_uj = os.path.join(zone_dir, "energy_uj")
            int(_read(energy_uj, opener))
            wrap_uj = int(_read(os.path.join(zone_dir, "max_energy_range_uj"), opener))
            channel = f"{domain_name}.energy_j"
            domains.append(
                Domain(domain_name, NAME, MEASURED, (channel,), counter_wrap_j=wrap_uj / 1e6, details={"zone": zone})
            )
            counters.append((channel, energy_uj))
    except PermissionError as err:
        return Unavailable(
            NAME,
            f"cannot read {err.filename}: RAPL counters are root-only since the CVE-2020-8694 fix; "
            f"run as root or `sudo chmod -R a+r {root}/intel-rapl` (undone at reboot)",
        )
    except (OSError, ValueError) as err:
        return Unavailable(NAME, f"cannot read RAPL under {root}: {err}")
    if not domains:
        return Unavailable(NAME, f"no RAPL package zone under {root}")
    return RaplSensor(tuple(domains), counters, opener)


def _zones(root: str, opener) -> list[tuple[str, str]]:
    """``(domain name, zone directory)`` for every package and DRAM zone, in zone order."""
    zones = sorted(
        (tuple(int(i) for i in m.groups() if i is not None), m.group(0))
        for m in map(_ZONE.fullmatch, os.listdir(root))
        if m
    )
    names = {zone: _read(os.path.join(root, zone, "name"), opener).decode().strip() for _, zone in zones}
    found = []
    for key, zone in zones:
        name = names[zone]
        if len(key) == 1 and name.startswith("package-"):
            found.append((name, zone))
        elif len(key) == 2 and name == "dram":
            parent = names.get(f"intel-rapl:{key[0]}", "")
            if parent.startswith("package-"):
                found.append(("dram-" + parent.removeprefix("package-"), zone))
    return found


def _read(path: str, opener) -> bytes:
    fd = opener(path, os.O_RDONLY)
    try:
        return os.read(fd, 64)
    finally:
        os.close(fd)

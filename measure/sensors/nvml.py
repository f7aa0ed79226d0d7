"""NVIDIA GPUs through NVML (module ``pynvml`` of the nvidia-ml-py package).

One domain per device, ``gpu<i>`` with ``i`` the NVML index (NVML ignores
``CUDA_VISIBLE_DEVICES``: match devices by the ``uuid`` in the domain).
Channels, each from one NVML call:

- ``energy_j``: nvmlDeviceGetTotalEnergyConsumption (Volta and newer), mJ / 1000;
- ``power_w``: field NVML_FI_DEV_POWER_INSTANT where the driver has it, else
  nvmlDeviceGetPowerUsage (a 1 s average on Ampere and newer), mW / 1000; the
  domain's ``power_field`` says ``instant`` or ``average``;
- ``sm_util_pct``: nvmlDeviceGetUtilizationRates().gpu;
- ``mem_used_mib``: nvmlDeviceGetMemoryInfo().used, bytes / 2**20;
- ``proc_mem_mib``: nvmlDeviceGetComputeRunningProcesses, usedGpuMemory summed
  over this process and its descendants, bytes / 2**20; ``None`` when the
  driver does not report a process's memory;
- ``sm_clock_mhz``: nvmlDeviceGetClockInfo(NVML_CLOCK_SM);
- ``temp_c``: nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU).

Faults degrade the metric or the device they hit, never the whole sensor:

- a metric whose call raises any NVMLError when the sensor opens (the energy
  counter before Volta: NVMLError_NotSupported; the per-process listing on a
  driver without ``nvmlDeviceGetComputeRunningProcesses_v3``:
  NVMLError_FunctionNotFound) is left out of the device's channels; the
  domain's ``unsupported`` maps it to the error;
- a device whose handle, name or UUID cannot be read when the sensor opens, or
  none of whose metrics answers, is left out and reported in ``unavailable``
  (``{"nvml:gpu<i>": reason}``); the other devices are sampled;
- mid-run, a call that raises an NVMLError leaves that channel null, and
  NVMLError_GpuIsLost the rest of its device's channels too (they are not
  called again in that read); ``read`` then raises ``SensorError`` carrying
  the values of every other channel.

Older drivers report host PIDs to a process in a container's own PID namespace
(``pid_namespace: "separate"``): none matches and ``proc_mem_mib`` reads 0.

The recorder's ticks (``capture_tick``) read ``energy_j`` and ``power_w``
every time and the other metrics at most every ``SLOW_INTERVAL_S`` (0.1 s),
repeating their last values (and failures) in between: NVML refreshes
utilisation over its own sample period (1/6 s to 1 s), clocks and temperature
move slowly, and listing the compute processes is the slowest call of all.
``read()`` (the window's edges) reads everything.

Nothing touches NVML at import: ``probe`` calls ``nvmlInit``, ``close`` the
matching ``nvmlShutdown``.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import suppress
from typing import Callable

import psutil

from .base import MEASURED, Domain, Sensor, SensorError, Unavailable

NAME = "nvml"
_MIB = 2**20
# Members of the nvmlValue_t union, indexed by nvmlValueType_t.
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")
# PROC_PID_INIT_INO: the inode of the host's (initial) PID namespace.
_HOST_PID_NS = "pid:[4026531836]"
FAST_METRICS = ("energy_j", "power_w")  # read at every tick
SLOW_INTERVAL_S = 0.1  # at ticks, the other metrics are read at most this often


Reader = tuple[str, Callable[[], float | None]]  # (channel, the call that reads it)


class NvmlSensor(Sensor):
    """Every NVIDIA GPU NVML sees; opened by ``probe``."""

    name = NAME

    def __init__(self, nvml, domains: tuple[Domain, ...], devices: list[list[Reader]],
                 unavailable: dict[str, str]):
        self._nvml = nvml
        self._devices = devices  # per device, its channels' readers
        self._fast_devices = [[(c, r) for c, r in readers if c.rsplit(".", 1)[1] in FAST_METRICS]
                              for readers in devices]  # per device, those read at every tick
        self._last: dict[str, float | None] = {}  # the last full read: values read
        self._last_errors: dict[str, str] = {}  # and channels failed, with their error
        self._read_at = -math.inf
        self._open = True
        self.domains = domains
        self.channels = tuple(channel for readers in devices for channel, _ in readers)
        self.unavailable = unavailable

    def read(self) -> dict[str, float | None]:
        """Every metric of every device; ``SensorError`` with the channels read when any fails."""
        self._read_at = time.monotonic()
        self._last, self._last_errors = self._values(fast=False)
        return _reading(self._last, self._last_errors)

    def capture_tick(self) -> dict[str, float | None]:
        """Energy and power now; the other metrics too if ``SLOW_INTERVAL_S`` has passed, else their last
        values and failures."""
        if time.monotonic() - self._read_at >= SLOW_INTERVAL_S:
            return self.read()
        fast, fast_errors = self._values(fast=True)
        if not (fast_errors or self._last_errors):
            return {**self._last, **fast}
        values = {c: v for c, v in self._last.items() if c not in fast_errors}
        values.update(fast)
        errors = {c: e for c, e in self._last_errors.items() if c not in fast}
        errors.update(fast_errors)
        return _reading(values, errors)

    def _values(self, fast: bool) -> tuple[dict[str, float | None], dict[str, str]]:
        """``({channel: value}, {channel: error})`` of every device's metrics, or of its fast ones only.

        A lost device fails every channel, those not read now included (their last values are void)."""
        values, errors = {}, {}
        for readers, fast_readers in zip(self._devices, self._fast_devices):
            for channel, reader in fast_readers if fast else readers:
                try:
                    values[channel] = reader()
                except self._nvml.NVMLError as err:
                    errors[channel] = _describe(err)
                    if isinstance(err, self._nvml.NVMLError_GpuIsLost):  # its other calls would fail too
                        errors.update((other, errors[channel]) for other, _ in readers if other not in values)
                        break
        return values, errors

    def close(self) -> None:
        if self._open:
            self._open = False
            with suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()


def _reading(values: dict[str, float | None], errors: dict[str, str]) -> dict[str, float | None]:
    """``values``, or ``SensorError`` carrying them when a channel failed."""
    if errors:
        channel, error = next(iter(errors.items()))
        more = f" (and {len(errors) - 1} more channel(s))" if len(errors) > 1 else ""
        raise SensorError(f"{channel}: {error}{more}", values)
    return values


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


def probe(nvml=None) -> NvmlSensor | Unavailable:
    """Open every GPU that answers, or say why none does.  ``nvml``: a stand-in for ``pynvml``."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return Unavailable(NAME, "nvidia-ml-py (module pynvml) is not installed")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as err:
        return Unavailable(NAME, f"nvmlInit failed: {err}")
    try:
        count = nvml.nvmlDeviceGetCount()
        if not count:
            reason = "NVML found no GPU"
        else:
            sensor = _open(nvml, count)
            if sensor.domains:
                return sensor
            reason = "no GPU could be opened: " + "; ".join(
                f"{part.removeprefix(NAME + ':')}: {why}" for part, why in sensor.unavailable.items())
    except nvml.NVMLError as err:
        reason = f"NVML: {err}"
    with suppress(nvml.NVMLError):
        nvml.nvmlShutdown()
    return Unavailable(NAME, reason)


def _open(nv, count: int) -> NvmlSensor:
    shared = {
        "driver_version": _driver_version(nv),
        "pid_namespace": {_HOST_PID_NS: "host", None: "unknown"}.get(_pid_namespace(), "separate"),
    }
    ours = _OurPids()
    domains, devices, unavailable = [], [], {}
    for index in range(count):
        try:
            domain, readers = _open_device(nv, index, shared, ours)
        except nv.NVMLError as err:
            unavailable[f"{NAME}:gpu{index}"] = _describe(err)
            continue
        if not readers:
            unavailable[f"{NAME}:gpu{index}"] = "no metric answered: " + "; ".join(
                f"{metric}: {why}" for metric, why in domain.details["unsupported"].items())
            continue
        domains.append(domain)
        devices.append(readers)
    return NvmlSensor(nv, tuple(domains), devices, unavailable)


def _driver_version(nv) -> str | None:
    try:
        return nv.nvmlSystemGetDriverVersion()
    except nv.NVMLError:
        return None


def _open_device(nv, index: int, shared: dict, ours: _OurPids) -> tuple[Domain, list[Reader]]:
    """The device's domain and its metrics' readers; the metrics that fail are left out, with their error.

    Raises NVMLError when the device itself cannot be opened (its handle, name or UUID)."""
    handle = nv.nvmlDeviceGetHandleByIndex(index)
    details = {"index": index, "device_name": nv.nvmlDeviceGetName(handle), "uuid": nv.nvmlDeviceGetUUID(handle)}
    power_field = "instant"
    try:
        _instant_power_mw(nv, handle)
    except nv.NVMLError:
        power_field = "average"
    readers, unsupported = [], {}
    for metric, reader in _metric_readers(nv, handle, power_field, ours).items():
        try:
            reader()
        except nv.NVMLError as err:
            unsupported[metric] = _describe(err)
            continue
        readers.append((f"gpu{index}.{metric}", reader))
    details.update(power_field=None if "power_w" in unsupported else power_field, unsupported=unsupported, **shared)
    domain = Domain(f"gpu{index}", NAME, MEASURED, tuple(channel for channel, _ in readers), details=details)
    return domain, readers


def _metric_readers(nv, h, power_field: str, ours: _OurPids) -> dict[str, Callable[[], float | None]]:
    if power_field == "instant":
        power_mw = lambda: _instant_power_mw(nv, h)  # noqa: E731
    else:
        power_mw = lambda: nv.nvmlDeviceGetPowerUsage(h)  # noqa: E731

    def proc_mem_mib():
        used = [p.usedGpuMemory for p in nv.nvmlDeviceGetComputeRunningProcesses(h) if p.pid in ours]
        return None if None in used else sum(used) / _MIB

    return {
        "energy_j": lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h) / 1000,
        "power_w": lambda: power_mw() / 1000,
        "sm_util_pct": lambda: float(nv.nvmlDeviceGetUtilizationRates(h).gpu),
        "mem_used_mib": lambda: nv.nvmlDeviceGetMemoryInfo(h).used / _MIB,
        "proc_mem_mib": proc_mem_mib,
        "sm_clock_mhz": lambda: float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
        "temp_c": lambda: float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
    }


def _instant_power_mw(nv, handle) -> float:
    (value,) = nv.nvmlDeviceGetFieldValues(handle, [nv.NVML_FI_DEV_POWER_INSTANT])
    if value.nvmlReturn != nv.NVML_SUCCESS:
        raise nv.NVMLError(value.nvmlReturn)
    return getattr(value.value, _VALUE_MEMBERS[value.valueType])


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


class _OurPids:
    """``pid in ours``: is ``pid`` this process or one of its descendants (cached per pid)."""

    def __init__(self):
        self._root = os.getpid()
        self._known: dict[int, bool] = {self._root: True}

    def __contains__(self, pid: int) -> bool:
        if pid not in self._known:
            try:
                self._known[pid] = any(p.pid == self._root for p in psutil.Process(pid).parents())
            except psutil.Error:
                self._known[pid] = False
        return self._known[pid]

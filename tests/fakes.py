"""Stand-ins for the hardware interfaces: an NVML module and a powercap tree.

``FakeNVML`` has the ``pynvml`` names the sensors call, with pynvml's own
constants, error classes and ctypes structs, and NVML's units (energy mJ, power
mW, memory bytes).  Errors are raised as pynvml raises them: ``NVMLError(code)``,
which pynvml's factory turns into the code's subclass (``NVMLError_GpuIsLost``,
``NVMLError_FunctionNotFound``, ...).  Counters are plain attributes of
``FakeGPU`` that a test sets.  ``make_powercap`` builds a ``intel-rapl:N/{name,energy_uj,
max_energy_range_uj}`` tree like Linux's ``/sys/class/powercap``.  ``ManualClock`` stands for
a sensor module's ``time``, so that a test of rate-limited reads does not depend on the machine's speed.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pynvml

_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED


@dataclass
class FakeGPU:
    """One device.  ``None`` makes a metric unsupported (NVMLError_NotSupported); ``errors`` makes a
    function fail at every call with that NVML return code (``NVML_ERROR_NO_PERMISSION``, ...);
    ``fail_after`` loses the GPU after that many calls of a function."""

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    energy_mj: int | None = 0
    power_mw: int = 70_000  # nvmlDeviceGetPowerUsage: 1 s average
    instant_power_mw: int | None = 70_000  # NVML_FI_DEV_POWER_INSTANT
    sm_util_pct: int = 0
    mem_total_bytes: int = 80 * 2**30
    mem_used_bytes: int = 2**29
    sm_clock_mhz: int = 1980
    temp_c: int = 35
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, usedGpuMemory bytes)
    fail_after: dict[str, int] = field(default_factory=dict)  # function -> calls that succeed before GPU-lost
    errors: dict[str, int] = field(default_factory=dict)  # function -> NVML return code of its every call
    calls: Counter = field(default_factory=Counter)


class FakeNVML:
    """A module-like object answering like ``pynvml`` for the given GPUs."""

    def __init__(self, gpus: list[FakeGPU], *, library_missing: bool = False, driver_version: str = "550.54.15",
                 missing_functions: frozenset[str] = frozenset()):
        """``missing_functions``: pynvml functions whose C symbol this driver's library lacks (an older
        driver): each call raises NVMLError_FunctionNotFound, as pynvml's ``_nvmlGetFunctionPointer`` does."""
        for name in dir(pynvml):
            if name.startswith(("NVML_", "NVMLError")):
                setattr(self, name, getattr(pynvml, name))
        self.gpus = gpus
        self.library_missing = library_missing
        self.missing_functions = missing_functions
        self.driver_version = driver_version
        self.init_count = 0

    # library
    def nvmlInit(self):
        if self.library_missing:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        self.init_count += 1

    def nvmlShutdown(self):
        self._check_init()
        self.init_count -= 1

    def nvmlSystemGetDriverVersion(self):
        self._check_init()
        return self.driver_version

    def nvmlDeviceGetCount(self):
        self._check_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        self._check_init()
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._call(self.gpus[index], "nvmlDeviceGetHandleByIndex")  # stands for the opaque c_nvmlDevice_t

    # devices
    def nvmlDeviceGetName(self, h):
        return self._call(h, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(self, h):
        return self._call(h, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        return self._value(h, "nvmlDeviceGetTotalEnergyConsumption", "energy_mj")

    def nvmlDeviceGetPowerUsage(self, h):
        return self._value(h, "nvmlDeviceGetPowerUsage", "power_mw")

    def nvmlDeviceGetFieldValues(self, h, fieldIds):
        gpu = self._call(h, "nvmlDeviceGetFieldValues")
        values = (pynvml.c_nvmlFieldValue_t * len(fieldIds))()
        for value, field_id in zip(values, fieldIds):
            value.fieldId = field_id
            if field_id == pynvml.NVML_FI_DEV_POWER_INSTANT and gpu.instant_power_mw is not None:
                value.nvmlReturn = pynvml.NVML_SUCCESS
                value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                value.value.uiVal = gpu.instant_power_mw
            else:  # as the driver answers for a field it does not know
                value.nvmlReturn = _NOT_SUPPORTED
        return values

    def nvmlDeviceGetUtilizationRates(self, h):
        gpu = self._call(h, "nvmlDeviceGetUtilizationRates")
        return pynvml.c_nvmlUtilization_t(gpu=gpu.sm_util_pct, memory=0)

    def nvmlDeviceGetMemoryInfo(self, h):
        gpu = self._call(h, "nvmlDeviceGetMemoryInfo")
        return pynvml.c_nvmlMemory_t(
            total=gpu.mem_total_bytes, free=gpu.mem_total_bytes - gpu.mem_used_bytes, used=gpu.mem_used_bytes
        )

    def nvmlDeviceGetClockInfo(self, h, type):
        assert type == pynvml.NVML_CLOCK_SM
        return self._value(h, "nvmlDeviceGetClockInfo", "sm_clock_mhz")

    def nvmlDeviceGetTemperature(self, h, sensor):
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._value(h, "nvmlDeviceGetTemperature", "temp_c")

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        gpu = self._call(h, "nvmlDeviceGetComputeRunningProcesses")
        return [
            pynvml.nvmlFriendlyObject(
                {"pid": pid, "usedGpuMemory": used, "gpuInstanceId": 0xFFFFFFFF, "computeInstanceId": 0xFFFFFFFF}
            )
            for pid, used in gpu.processes
        ]

    def _check_init(self):
        if self.init_count <= 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _call(self, gpu: FakeGPU, function: str) -> FakeGPU:
        if function in self.missing_functions:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        self._check_init()
        gpu.calls[function] += 1
        if function in gpu.fail_after and gpu.calls[function] > gpu.fail_after[function]:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if function in gpu.errors:
            raise pynvml.NVMLError(gpu.errors[function])
        return gpu

    def _value(self, h, function: str, attribute: str):
        value = getattr(self._call(h, function), attribute)
        if value is None:
            raise pynvml.NVMLError(_NOT_SUPPORTED)
        return value


class ManualClock:
    """The ``time`` module as a sensor module sees it (``monkeypatch.setattr(module, "time", clock)``), except
    that ``monotonic()`` only moves when the test calls ``advance``; every other function is the real one."""

    def __init__(self, start_s: float = 0.0):
        self.now_s = start_s

    def monotonic(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds

    def __getattr__(self, name: str):
        return getattr(time, name)


@dataclass
class FakePowercap:
    """A powercap tree: ``root`` to pass to the sensor, ``set_uj`` to move a counter."""

    root: Path
    zones: dict[str, Path]  # zone name (package-0, dram-0, core-0, psys, ...) -> zone directory

    def set_uj(self, zone: str, energy_uj: int) -> None:
        """Write ``energy_uj`` in place, as the kernel's counter changes under an open path."""
        with open(self.zones[zone] / "energy_uj", "r+") as f:
            f.truncate(0)
            f.write(f"{energy_uj}\n")


def make_powercap(
    tmp_path: Path,
    *,
    sockets: int = 1,
    dram: bool = True,
    core: bool = True,
    uncore: bool = False,
    psys: bool = False,
    mmio: bool = False,
    max_range_uj: int = 262_143_328_850,
    dram_max_range_uj: int = 65_712_999_613,
    readable: bool = True,
) -> FakePowercap:
    """Build ``tmp_path/powercap`` with ``sockets`` packages and the chosen sub-zones.

    Sub-zones are numbered as Linux does (core, uncore, dram in that order).
    ``psys`` adds the platform zone after the packages, ``mmio`` the
    ``intel-rapl-mmio:0`` duplicate of package 0.  ``readable=False`` gives
    every ``energy_uj`` mode 000 (root-only since CVE-2020-8694; root itself
    still reads it, file modes do not bind root).
    """
    root = tmp_path / "powercap"
    (root / "intel-rapl").mkdir(parents=True)
    (root / "intel-rapl" / "enabled").write_text("1\n")
    zones: dict[str, Path] = {}

    def zone(directory: str, name: str, max_uj: int, key: str) -> None:
        path = root / directory
        path.mkdir()
        (path / "name").write_text(f"{name}\n")
        (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
        (path / "energy_uj").write_text("0\n")
        if not readable:
            (path / "energy_uj").chmod(0)
        zones[key] = path

    for s in range(sockets):
        zone(f"intel-rapl:{s}", f"package-{s}", max_range_uj, f"package-{s}")
        subzones = [("core", max_range_uj, core), ("uncore", max_range_uj, uncore), ("dram", dram_max_range_uj, dram)]
        for j, (name, max_uj, _) in enumerate(z for z in subzones if z[2]):
            zone(f"intel-rapl:{s}:{j}", name, max_uj, f"{name}-{s}")
    if psys:
        zone(f"intel-rapl:{sockets}", "psys", max_range_uj, "psys")
    if mmio:
        zone("intel-rapl-mmio:0", "package-0", max_range_uj, "mmio-package-0")
    return FakePowercap(root, zones)

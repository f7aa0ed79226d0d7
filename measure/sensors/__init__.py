"""Sensor backends and the policy choosing which ones a run samples.

``open_sensors`` opens NVML (when ``gpu``), RAPL when its counters can be read,
the process tree always, and the CPU estimate only when RAPL gives no package
domain, so a measured and an estimated CPU power never appear together.
"""
from __future__ import annotations

from . import estimate, nvml, process, rapl
from .base import ESTIMATED, MEASURED, Domain, Sensor, SensorError, Unavailable

__all__ = ["open_sensors", "Sensor", "Domain", "Unavailable", "SensorError", "MEASURED", "ESTIMATED"]


def open_sensors(
    *,
    gpu: bool = True,
    rapl_root: str = rapl.DEFAULT_ROOT,
    cpu_tdp_w: float | None = None,
    nvml_module=None,
) -> tuple[list[Sensor], dict[str, str]]:
    """The opened sensors and ``{name: reason}`` for what could not be opened: whole sensors (``"rapl"``)
    and parts of opened ones (``"nvml:gpu1"``, see ``Sensor.unavailable``).

    ``cpu_tdp_w`` only matters for the estimate (see ``estimate``); an invalid
    value raises ValueError.  ``nvml_module`` replaces ``pynvml`` (tests).
    """
    opened: list[Sensor] = []
    unavailable: dict[str, str] = {}

    def keep(result: Sensor | Unavailable) -> Sensor | None:
        if isinstance(result, Unavailable):
            unavailable[result.sensor] = result.reason
            return None
        opened.append(result)
        unavailable.update(result.unavailable)
        return result

    try:
        if gpu:
            keep(nvml.probe(nvml_module))
        else:
            unavailable[nvml.NAME] = "not requested (gpu=False)"
        cpu = keep(rapl.probe(rapl_root))
        if cpu is None or not any(d.name.startswith("package-") for d in cpu.domains):
            keep(estimate.probe(cpu_tdp_w))
        keep(process.probe())
    except BaseException:
        for sensor in opened:
            sensor.close()
        raise
    return opened, unavailable

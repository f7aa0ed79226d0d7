"""The machine a run is measured on, for ``meta.json``'s ``host``."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Sequence

import torch

from .sensors.base import Sensor


def host_info(device: torch.device, sensors: Sequence[Sensor]) -> dict:
    """``{hostname, platform, python, cpu_model, logical_cpus, gpus, torch, torchvision, transformers}``;
    ``gpus``: ``[{domain, name, driver, uuid}]`` of the NVML devices (on a GPU without NVML, the CUDA
    device's name alone); the packages' versions as ``package_version`` reads them."""
    gpus = [
        {"domain": d.name, "name": d.details.get("device_name"), "driver": d.details.get("driver_version"),
         "uuid": d.details.get("uuid")}
        for s in sensors for d in s.domains if d.sensor == "nvml"
    ]
    if device.type == "cuda" and not gpus:
        gpus = [{"domain": None, "name": torch.cuda.get_device_name(device), "driver": None, "uuid": None}]
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "gpus": gpus,
        **{name: package_version(name) for name in ("torch", "torchvision", "transformers")},
    }


def package_version(name: str) -> str | None:
    """The version of package ``name``: its ``__version__`` where it is imported (with its build tag, such as
    ``+cu130``), else its installed metadata's, without importing it (a measuring window around code that uses
    neither torchvision nor transformers loads neither); None where it is not installed."""
    version = getattr(sys.modules.get(name), "__version__", None)
    if version is not None:
        return str(version)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"

"""Fixtures exposing the hardware stand-ins of ``tests/fakes.py``."""
from __future__ import annotations

import functools

import pytest
from fakes import FakeGPU, FakeNVML, make_powercap


@pytest.fixture
def powercap(tmp_path):
    """``powercap(sockets=2, dram=False, ...)``: a fake powercap tree under ``tmp_path``."""
    return functools.partial(make_powercap, tmp_path)


@pytest.fixture
def fake_nvml():
    """``fake_nvml(FakeGPU(...), ...)``: a stand-in pynvml module with those GPUs."""

    def build(*gpus: FakeGPU, **options) -> FakeNVML:
        return FakeNVML(list(gpus), **options)

    return build

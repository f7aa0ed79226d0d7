"""Fixtures exposing the hardware stand-ins of ``tests/fakes.py``, and a local Slurm cluster."""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

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


@pytest.fixture(scope="session")
def slurm_conf():
    """A single-node Slurm cluster for the session, from ``scripts/slurm-local.sh``: its ``SLURM_CONF``.

    Skips where Slurm cannot run (not root, packages not installable). A cluster
    already up is used and left up; one started here is stopped at the end.
    """
    script = Path(__file__).parent.parent / "scripts" / "slurm-local.sh"
    was_up = subprocess.run([script, "status"], capture_output=True).returncode == 0
    up = subprocess.run([script, "up"], capture_output=True, text=True, timeout=900)
    if up.returncode != 0 and not was_up:  # stop what did start
        subprocess.run([script, "down"], capture_output=True, timeout=300)
    if up.returncode == 3:
        pytest.skip(f"no local Slurm cluster: {up.stderr.strip()}")
    assert up.returncode == 0, f"scripts/slurm-local.sh up failed:\n{up.stderr}"
    yield up.stdout.strip().removeprefix("export SLURM_CONF=")
    if not was_up:
        down = subprocess.run([script, "down"], capture_output=True, text=True, timeout=300)
        if down.returncode != 0:  # once more: it stops only what still runs
            down = subprocess.run([script, "down"], capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, f"scripts/slurm-local.sh down failed twice:\n{down.stdout}{down.stderr}"
        left = subprocess.run([script, "status"], capture_output=True, text=True)
        assert "running" not in left.stdout, f"scripts/slurm-local.sh down left daemons running:\n{left.stdout}"

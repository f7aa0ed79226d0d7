"""Faults injected into real sweeps: a sensor lost mid-run, out of memory at one size, a full or read-only disk."""
from __future__ import annotations

import dataclasses
import errno
import itertools
import json
import math
import os
import warnings
from pathlib import Path

import pytest
import torch
from fakes import FakeGPU, FakeNVML, make_powercap

import measure.sweep
from analysis import AnalysisWarning, load_study
from measure import runtree
from measure.__main__ import main
from measure.plan import Plan
from measure.runtree import read_status
from measure.sweep import run_study
from measure.sensors import nvml, rapl

READS_BEFORE_GPU_LOST = 4
RAPL_FAILED_READS = range(2, 4)  # reads of energy_uj (the probe's is read 0)
CONFIG = "batch1-fp32-eager"


def small_plan(sizes=(8,), runs=1, **overrides) -> Plan:
    settings = dict(iterations=20, runs=runs, warmup=1, device="cpu", period_s=0.01, idle_s=0)
    settings.update(overrides)
    return Plan("resnet50", list(sizes), **settings)


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    """One run sampled by a GPU that is lost after a few reads and a RAPL counter that fails three reads."""
    tmp = tmp_path_factory.mktemp("faults")
    gpu = FakeGPU(energy_mj=None,  # no energy counter (pre-Volta): its energy is integrated from power
                  # lost on the power reading, which every sample takes (the probe reads it twice)
                  fail_after={"nvmlDeviceGetFieldValues": 2 + READS_BEFORE_GPU_LOST})
    powercap = make_powercap(tmp, dram=False, core=False)
    reads = itertools.count()

    def opener(path, flags):
        if path.endswith("energy_uj"):
            read = next(reads)
            if read in RAPL_FAILED_READS:
                raise OSError(errno.EIO, "Input/output error", path)
            powercap.set_uj("package-0", 1000 * read)  # the counter moves 1 mJ per read
        return os.open(path, flags)

    sensors = [nvml.probe(FakeNVML([gpu])), rapl.probe(str(powercap.root), opener=opener)]
    out = run_study(small_plan(), tmp / "tree", sensors=(sensors, {}), progress=False)
    for sensor in sensors:
        sensor.close()
    return out / CONFIG / "input_8" / "run_0"


def read_meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())


def test_failed_sensor_reads_are_gaps_and_the_run_completes(faulty_run):
    meta = read_meta(faulty_run)
    assert meta["status"] == "complete" and meta["window"]["gap_samples"] > 0
    assert meta["window"]["first_error"].startswith("rapl at t=")  # the first failed read, RAPL's
    assert "Input/output error" in meta["window"]["first_error"]
    lines = [json.loads(line) for line in (faulty_run / "power_metrics.json").read_text().splitlines()]
    assert len(lines) > READS_BEFORE_GPU_LOST + 1, "the window is too short to lose the GPU inside it"
    gpu_lost = ["gpu0" in line["gap"].split(";") for line in lines]
    assert gpu_lost == [False] * READS_BEFORE_GPU_LOST + [True] * (len(lines) - READS_BEFORE_GPU_LOST)
    assert all(line["gpu0.power_w"] is None for line, lost in zip(lines, gpu_lost) if lost)
    rapl_failed = [i for i, line in enumerate(lines) if "package-0" in line["gap"].split(";")]
    assert rapl_failed == [r - 1 for r in RAPL_FAILED_READS]


def test_the_analysis_reports_gaps_and_never_integrates_across_them(faulty_run):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnalysisWarning)
        study = load_study(faulty_run)
    messages = [str(w.message) for w in caught]
    assert any(f"{faulty_run}: gpu0: " in m and "missing in the window; not integrated across gaps" in m
               for m in messages), messages
    energies = study.quantities.set_index(["domain", "quantity"])["value"]
    assert math.isnan(energies["gpu0", "energy_j"]) and energies["gpu0", "gap_samples"] > 0
    # a cumulative counter needs only the window's edges: exact across its gaps, which are still counted
    lines = [json.loads(line) for line in (faulty_run / "power_metrics.json").read_text().splitlines()]
    assert energies["cpu_package", "energy_j"] == pytest.approx(
        lines[-1]["package-0.energy_j"] - lines[0]["package-0.energy_j"])
    assert energies["cpu_package", "gap_samples"] == len(RAPL_FAILED_READS)


class OutOfMemoryAt(torch.nn.Module):
    """The model, except that an input of ``side`` pixels runs out of GPU memory."""

    def __init__(self, inner: torch.nn.Module, side: int):
        super().__init__()
        self.inner, self.side = inner, side

    def forward(self, x):
        if x.shape[-1] == self.side:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 15.77 GiB total)")
        return self.inner(x)


def test_out_of_memory_fails_that_point_and_the_sweep_goes_on(tmp_path, monkeypatch):
    def load_model(name, task="forward"):
        loaded = real_load_model(name, task)
        loaded.module = OutOfMemoryAt(loaded.module, 16)
        return loaded

    real_load_model = measure.sweep.load_model
    monkeypatch.setattr(measure.sweep, "load_model", load_model)
    out = run_study(small_plan(sizes=(16, 8), iterations=3), tmp_path / "oom", progress=False)
    failed, complete = read_meta(out / CONFIG / "input_16" / "run_0"), read_meta(out / CONFIG / "input_8" / "run_0")
    assert failed["status"] == "failed"
    assert failed["reason"].startswith("OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB")
    assert complete["status"] == "complete"
    with pytest.warns(AnalysisWarning, match=r"1 incomplete run\(s\) left out.*input_16/run_0 \(failed, no samples\)"):
        assert load_study(out).runs["input_size"].tolist() == [8]


def test_a_failed_run_makes_the_command_exit_1_with_its_reason(tmp_path, monkeypatch, capsys):
    def load_model(name, task="forward"):
        loaded = real_load_model(name, task)
        return dataclasses.replace(loaded, module=OutOfMemoryAt(loaded.module, 16))

    real_load_model = measure.sweep.load_model
    monkeypatch.setattr(measure.sweep, "load_model", load_model)
    argv = ["run", "resnet50", "--sizes", "16", "8", "--runs", "1", "--iters", "2", "--warmup", "0", "--device",
            "cpu", "--idle-seconds", "0", "--no-progress", "--out", str(tmp_path / "oom")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "done in " in captured.out and ": 1 runs complete, 1 failed, 0 skipped" in captured.out
    assert captured.err.splitlines()[-1].startswith(
        "error: 1 run(s) failed (first: batch1-fp32-eager/input_16/run_0: OutOfMemoryError: CUDA out of memory.")
    assert "Traceback" not in captured.err


SWEEP = ["run", "resnet50", "--sizes", "8", "--runs", "2", "--iters", "3", "--warmup", "0", "--device", "cpu",
         "--idle-seconds", "0.1", "--period", "0.02", "--no-progress"]


def fail_nth(monkeypatch, target: str, nth: int, error: OSError, where: str) -> None:
    """Make the ``nth`` atomic write of a file named ``target`` fail with ``error``.

    ``where="create"``: creating the temporary file fails (a read-only file
    system answers EROFS there); ``where="sync"``: its data cannot be written
    out (a full disk answers ENOSPC at write or fsync).
    """
    count = itertools.count(1)
    real_mkstemp, real_fsync = runtree.tempfile.mkstemp, os.fsync

    def mkstemp(prefix, suffix, dir):
        if where == "create" and prefix == f".{target}." and next(count) == nth:
            raise error
        return real_mkstemp(prefix=prefix, suffix=suffix, dir=dir)

    def fsync(fd):
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        if where == "sync" and name.startswith(f".{target}.") and next(count) == nth:
            raise error
        real_fsync(fd)

    monkeypatch.setattr(runtree.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(runtree.os, "fsync", fsync)


@pytest.mark.parametrize("target, nth, code, where", [
    ("latency.csv", 2, errno.ENOSPC, "sync"),  # run 1's latencies
    ("meta.json", 4, errno.ENOSPC, "sync"),  # run 1's final meta: every other file of the run is in place
    ("meta.json", 3, errno.EROFS, "create"),  # the file system turns read-only as run 1 starts
])
def test_a_full_or_read_only_disk_is_one_line_and_no_half_run_looks_complete(
        tmp_path, monkeypatch, capsys, target, nth, code, where):
    """Root ignores file modes, so the disk's answers are injected where the writer meets them."""
    fail_nth(monkeypatch, target, nth, OSError(code, os.strerror(code)), where)
    out = tmp_path / "tree"
    assert main([*SWEEP, "--out", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out}/{CONFIG}/input_8/run_1/{target}: {os.strerror(code)}; "), err
    assert "--resume" in err[0]
    run0, run1 = out / CONFIG / "input_8" / "run_0", out / CONFIG / "input_8" / "run_1"
    assert read_meta(run0)["status"] == "complete"
    assert sorted(p.name for p in run0.iterdir()) == ["latency.csv", "meta.json", "power_metrics.json"]
    assert read_status(run1) in (None, "running")
    assert not list(out.rglob("*.tmp"))  # the failed write removed its temporary file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)  # run 1 is left out
        assert load_study(out).runs["run"].tolist() == [0]


def test_a_read_only_output_folder_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    """Root ignores file modes: ``os.access`` is made to answer as it does on a read-only mount, even for root."""
    out = tmp_path / "ro"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(runtree.os, "access", lambda path, mode: mode != os.W_OK and real_access(path, mode))
    assert main([*SWEEP, "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: output folder {out} is not writable"]
    assert not any(out.iterdir())

"""kill -9 at any moment of a sweep keeps every complete run intact; --resume redoes exactly the others.

A real sweep (``python -m measure run``) is killed with SIGKILL at three
moments found by watching its tree, resumed after each kill, and finally
completed. After every kill: each run that says ``complete`` has all its files
and reads back; the interrupted run does not say ``complete``; the loader keeps
the complete runs only. At the end every run is complete and the runs complete
before a kill are byte for byte what they were.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from analysis import AnalysisWarning, load_study
from measure.plan import Plan
from measure.runtree import MetaError, read_meta, read_status
from measure.sweep import run_study

SWEEP = ["resnet50", "--sizes", "8", "16", "--iters", "12", "--runs", "2", "--warmup", "1", "--device", "cpu",
         "--idle-seconds", "0.1", "--period", "0.01", "--no-progress"]
CONFIG = "batch1-fp32-eager"
CELLS = {f"{CONFIG}/input_8/run_0", f"{CONFIG}/input_8/run_1", f"{CONFIG}/input_16/run_0", f"{CONFIG}/input_16/run_1"}


def run_folders(tree: Path) -> dict[str, Path]:
    return {p.relative_to(tree).as_posix(): p for p in tree.glob("*/input_*/run_*")}


def status(folder: Path) -> str | None:
    return read_status(folder)


def identity(path: Path) -> tuple[int, int] | None:
    """Inode and size of ``path``, None while it is absent (the sweep may delete it as we look)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size


def complete_files(tree: Path) -> dict[str, bytes]:
    """Every file of every complete run, by path."""
    return {f"{name}/{f.name}": f.read_bytes() for name, folder in run_folders(tree).items()
            if status(folder) == "complete" for f in folder.iterdir()}


def sweep(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "measure", "run", *SWEEP, "--out", str(out), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(process: subprocess.Popen, moment, timeout_s: float = 240) -> None:
    """SIGKILL ``process`` as soon as ``moment()`` is true (polled every few ms)."""
    deadline = time.monotonic() + timeout_s
    while not moment():
        assert process.poll() is None, f"the sweep ended before the moment came: {process.stderr.read()}"
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.003)
    process.send_signal(signal.SIGKILL)
    process.wait()


def check_tree_after_kill(tree: Path) -> int:
    """Invariants of a killed tree; the number of complete runs."""
    complete = 0
    for name, folder in run_folders(tree).items():
        try:
            meta = read_meta(folder)
        except MetaError:
            meta = None  # killed before its first meta.json was in place
        if meta is None or meta.status != "complete":
            assert meta is None or meta.status == "running", name  # recognisably interrupted
            continue
        complete += 1
        assert {f.name for f in folder.iterdir()} == {"power_metrics.json", "latency.csv", "meta.json"}, name
        latencies = (folder / "latency.csv").read_text().splitlines()
        assert latencies[0] == "latency_s" and len(latencies) == 1 + meta.iterations
        marks = [json.loads(line)["mark"] for line in (folder / "power_metrics.json").read_text().splitlines()]
        assert marks[0] == "start" and marks[-1] == "end"
    if complete:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AnalysisWarning)
            study = load_study(tree)
        assert len(study.runs) == complete and set(study.runs["status"]) == {"complete"}
        # other work on the machine may refuse the idle baseline or load a window: facts of the machine, not the tree
        facts = ("incomplete run", "machine was busy", "other processes kept")
        assert all(any(fact in str(w.message) for fact in facts) for w in caught), [str(w.message) for w in caught]
    return complete


def test_kill_minus_nine_at_three_moments_then_resume(tmp_path):
    out = tmp_path / "tree"

    # 1. right after the first run is complete
    process = sweep(out)
    kill_when(process, lambda: any(status(f) == "complete" for f in run_folders(out).values()))
    assert check_tree_after_kill(out) >= 1
    kept = complete_files(out)

    # 2. mid-window: a run's power_metrics.json is growing
    process = sweep(out, "--resume")
    sizes: dict[tuple[Path, int], int] = {}

    def growing() -> bool:
        for folder in run_folders(out).values():
            samples = identity(folder / "power_metrics.json")
            if samples and status(folder) == "running" and not (folder / "latency.csv").exists():
                inode, size = samples
                if sizes.setdefault((folder, inode), size) < size:
                    return True
        return False

    kill_when(process, growing)
    (interrupted,) = [f for f in run_folders(out).values() if status(f) == "running"]
    lines = (interrupted / "power_metrics.json").read_text().splitlines()
    assert json.loads(lines[0])["mark"] == "start"
    assert all(json.loads(line) for line in lines)  # flushed line by line: no half line
    check_tree_after_kill(out)
    assert {k: v for k, v in complete_files(out).items() if k in kept} == kept
    kept = complete_files(out)

    # 3. right after a meta.json is written (a run starts, or one ends)
    process = sweep(out, "--resume")
    before = {f: identity(f / "meta.json") for f in run_folders(out).values()}
    kill_when(process, lambda: any(identity(f / "meta.json") not in (None, before.get(f))
                                   for f in run_folders(out).values()))
    check_tree_after_kill(out)
    assert {k: v for k, v in complete_files(out).items() if k in kept} == kept
    kept = complete_files(out)

    # what a kill inside an atomic write leaves: a temporary file next to its target, never read
    redo = [f for f in run_folders(out).values() if status(f) != "complete"]
    for folder in redo:
        (folder / ".meta.json.k1ll3d.tmp").write_text('{"status": "comp')
        (folder / ".latency.csv.k1ll3d.tmp").write_text("latency_s\n0.1\n")
    check_tree_after_kill(out)

    # 4. resume to the end
    finished = subprocess.run([sys.executable, "-m", "measure", "run", *SWEEP, "--out", str(out), "--resume"],
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert set(run_folders(out)) == CELLS
    assert check_tree_after_kill(out) == len(CELLS)
    assert {k: v for k, v in complete_files(out).items() if k in kept} == kept  # complete runs untouched
    for folder in redo:
        assert sorted(p.name for p in folder.iterdir()) == ["latency.csv", "meta.json", "power_metrics.json"]
    assert json.loads((out / "study.json").read_text())["plan"]["sizes"] == [8, 16]


def test_resume_with_another_plan_is_refused(tmp_path):
    out = tmp_path / "tree"
    plan = Plan("resnet50", [8], iterations=2, runs=1, warmup=0, device="cpu", period_s=0.05, idle_s=0)
    run_study(plan, out, progress=False)
    other = Plan("resnet50", [8], iterations=3, runs=1, warmup=0, device="cpu", period_s=0.05, idle_s=0)
    with pytest.raises(ValueError, match=r"started with another plan \(iterations: 2 there, 3 now\)"):
        run_study(other, out, resume=True, progress=False)


def test_a_precision_sweep_resumes_with_its_runs_and_iterations(tmp_path):
    plan = Plan("resnet50", [8], iterations=1, runs=3, warmup=1, device="cpu", period_s=0.02, idle_s=0,
                precision=1e-9, max_runs=3, min_window_s=0.02)
    never = lambda folders: (False, "not precise enough")  # noqa: E731 - the cap stops every point
    out = run_study(plan, tmp_path / "p", stop_rule=never, progress=False)
    first, last = out / CONFIG / "input_8" / "run_0", out / CONFIG / "input_8" / "run_2"
    samples = (first / "power_metrics.json").read_bytes()
    meta = json.loads((last / "meta.json").read_text())
    (last / "meta.json").write_text(json.dumps({**meta, "status": "running"}))  # as a kill leaves it
    os.remove(last / "latency.csv")

    run_study(plan, out, resume=True, stop_rule=never, progress=False)
    assert (first / "power_metrics.json").read_bytes() == samples
    metas = [read_meta(out / CONFIG / "input_8" / f"run_{k}") for k in range(3)]
    assert [m.status for m in metas] == ["complete"] * 3
    assert {m.iterations for m in metas} == {meta["iterations"]}
    assert all(m.get("stop_reason").startswith("cap reached: 3 runs") for m in metas)

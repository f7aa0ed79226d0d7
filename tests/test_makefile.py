"""The Makefile's targets, wired as the README says: checked with ``make -n`` (nothing runs)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def planned(*args: str) -> list[str]:
    """The commands ``make -n ARGS`` would run, the install step's (if any) left out."""
    done = subprocess.run(["make", "-n", "-C", str(ROOT), "--no-print-directory", *args], capture_output=True,
                          text=True, check=True)
    return [line for line in done.stdout.splitlines() if "pip install" not in line and "-m venv" not in line
            and "ipykernel install" not in line and not line.startswith("touch")]


def test_measure_and_analysis_run_the_clis_from_the_virtual_environment():
    assert planned("measure", "ARGS=run resnet50 --quick") == [".venv/bin/python -m measure run resnet50 --quick"]
    assert planned("analysis", "ARGS=summarize runs/resnet50") == [".venv/bin/python -m analysis summarize runs/resnet50"]
    assert planned("measure") == [".venv/bin/python -m measure --help"]


def test_study_runs_the_notebooks_in_the_profile_asked_for():
    assert planned("study") == [".venv/bin/python scripts/run_study.py --profile quick --results results"]
    assert planned("study", "STUDY_PROFILE=full", "RESULTS=out") == [
        ".venv/bin/python scripts/run_study.py --profile full --results out"]


def test_test_runs_the_notebooks_under_nbval_in_the_quick_profile():
    commands = planned("test")
    assert commands[0] == ".venv/bin/python -m pytest tests"
    assert commands[1].startswith("STUDY_PROFILE=quick .venv/bin/python -m pytest --nbval-lax --nbval-current-env "
                                  "--nbval-sanitize-with notebooks/sanitize.cfg notebooks")


def test_bench_installs_the_peers_and_runs_the_overhead_benchmark():
    done = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), "--no-print-directory", "bench"], capture_output=True,
                          text=True, check=True)
    assert ".venv/bin/python -m pip install --quiet -e '.[dev,bench]'" in done.stdout.splitlines()
    assert planned("bench", "BENCH_ARGS=--ablation") == [".venv/bin/python benchmarks/overhead.py --ablation"]

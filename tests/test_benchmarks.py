"""Smoke tests of the benchmark scripts: a tiny configuration runs and ends with sane key=value figures."""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str) -> dict[str, str]:
    """Run ``benchmarks/<name>`` with ``args``; its last line as a dict."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    pairs = dict(pair.split("=", 1) for pair in last.split())
    assert pairs, f"no key=value pairs on the last line: {last!r}"
    return pairs


def positive(value: str) -> bool:
    return 0 < float(value) < float("inf")


def ratio_or_unavailable(value: str) -> bool:
    return value == "unavailable" or positive(value)


def test_overhead_tiny_run():
    keys = run_script("overhead.py", "--rounds", "1", "--iters", "3", "--size", "8", "--device", "cpu")
    for period in ("0.1", "0.01"):
        assert positive(keys[f"overhead_ratio_p{period}"])  # one round of 10 ms blocks: noise, not a measurement
        low, high = map(float, keys[f"overhead_ratio_p{period}_ci95"].split(".."))
        assert low <= high and float(keys[f"overhead_ratio_p{period}_halfwidth"]) == pytest.approx((high - low) / 2,
                                                                                                  abs=1e-4)
        assert positive(keys[f"recorder_cpu_ratio_p{period}"])
        assert 0 <= float(keys[f"recorder_cpu_s_per_s_p{period}"]) < 1
        assert keys[f"goal_met_p{period}"] == "undecided"  # one round decides nothing
    assert ratio_or_unavailable(keys["codecarbon_ratio"])
    assert ratio_or_unavailable(keys["zeus_ratio"])
    assert keys["device"] == "cpu" and keys["rounds"] == "1"
    assert keys["precision_met"] == "false"  # one round is no CI, however narrow its bootstrap


def test_overhead_ablation_varies_one_thing_at_a_time():
    keys = run_script("overhead.py", "--rounds", "1", "--iters", "2", "--size", "8", "--device", "cpu", "--threads",
                      "1", "--ablation")
    for name in ("timer_ignored", "handler_empty", "handler_clocks", "thread_empty", "edges_only",
                 "ticks_no_sensors", "estimate_only", "process_only"):
        assert positive(keys[f"{name}_ratio"]), name
    for source in ("", "_signal", "_thread"):
        assert positive(keys[f"overhead_ratio_p0.01{source}"]), source
    assert "overhead_ratio_p0.1" not in keys and "codecarbon_ratio" not in keys and keys["threads"] == "1"
    # the timer and the handlers start no thread: no CPU of a thread of their own
    assert float(keys["timer_ignored_cpu_s_per_s"]) == float(keys["handler_empty_cpu_s_per_s"]) \
        == float(keys["handler_clocks_cpu_s_per_s"]) == 0


def test_integration_accuracy_tiny_run():
    keys = run_script("integration_accuracy.py", "--reps", "30", "--window", "5")
    assert 0 < float(keys["counter_error_pct"]) <= float(keys["counter_error_p95_pct"]) < 5  # 0.1 s / 5 s = 2 % at most
    assert keys["counter_window_for_0.1pct_median_s"] == "29" and keys["counter_window_for_0.1pct_p95_s"] == "78"
    for period in ("0.01", "0.05", "0.1", "0.5", "1", "2"):
        assert 0 <= float(keys[f"ours_p{period}_error_pct"]) < float(keys[f"aipm_p{period}_error_pct"])
        assert 0 <= float(keys[f"counter_p{period}_error_pct"]) < float(keys[f"aipm_p{period}_error_pct"])
    assert keys["ours_beats_aipm_all_periods"] == "true"
    assert keys["counter_beats_aipm_all_periods"] in ("true", "false")
    # aligned on the updates, the counter is far closer than its plain difference (2.9 % median at 1 s, 0.6 % at 5 s)
    assert 0 < float(keys["counter_aligned_p0.01_error_pct"]) < float(keys["counter_error_pct"]) / 5
    assert keys["counter_goal_met"] in ("true", "false")
    # with late ticks the analysis falls back to the plain difference where it cannot place an update
    assert 0 <= float(keys["counter_stalled_aligned_share"]) <= 1
    assert 0 < float(keys["counter_stalled_error_pct"]) <= float(keys["counter_stalled_error_p95_pct"])



@pytest.fixture
def overhead(monkeypatch):
    """benchmarks/overhead.py as a module."""
    spec = importlib.util.spec_from_file_location("overhead_script", BENCHMARKS / "overhead.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_overhead_makes_a_peer_only_when_asked_for(overhead):
    made = []

    def peer():
        made.append("peer")
        return "cannot run here"

    everything = {"ours_p0.1": object(), "codecarbon": peer}
    measurers, unavailable = overhead.chosen(argparse.Namespace(only=["ours_p0.1"], ablation=False), everything)
    assert len(measurers) == 1 and not unavailable and not made  # not asked for: never built, never imported
    with pytest.raises(SystemExit, match="none of the configurations"):
        overhead.chosen(argparse.Namespace(only=["codecarbon"], ablation=False), everything)
    assert made == ["peer"]


def test_overhead_counts_what_a_tool_runs_between_two_inferences(overhead):
    """A block's time per inference is its cycle, the tool's work between two inferences (our loop ticks)
    included: a tool that sleeps 2 ms there costs every inference at least that."""

    class Between(overhead.NoMeasurement):
        name = "sleeper"

        def between(self) -> None:
            time.sleep(0.002)

    block = overhead.run_block(lambda inputs: None, None, 20, lambda: None, Between())
    assert block.latency_s >= 0.002 and block.mean_s >= 0.002 and block.wall_s >= 20 * 0.002

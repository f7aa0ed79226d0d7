"""Latency overhead and CPU cost of measuring energy during inference.

    python benchmarks/overhead.py [--rounds 80] [--iters 40] [--size 64] [--device auto]

Method. ResNet50 (batch 1, ``eval()``, ``torch.inference_mode()``, torch on
every core) runs the project's own timed loop (``measure.sweep.timed_loop``,
synchronised after each inference on a GPU) in blocks of ``--iters``
inferences, each after a short untimed warm-up.  Every round measures, for
each measuring configuration X in a shuffled order, a pair of blocks: one
with no measurement and one under X, in alternating order (A/B, then B/A).
Blocks are short (about half a second on a 2-core CPU) and pairs many, so
that the two blocks of a pair mostly share the load other programs put on a
shared machine.  A block's figure is its mean
per-inference latency (a sampler that delays only the inferences it overlaps
shows in the mean, not in the median); X's ratio in a round is its block's
over the paired unmeasured block.  Reported per configuration: the median
ratio over rounds, its interquartile range and a bootstrap 95 % CI of the
median.

Configurations:

- ``ours_p<period>``: ``measure.recorder.Recorder`` over every sensor that
  ``open_sensors`` finds, with the tick source the sweep uses on the device
  (``measure.sweep.tick_source``: a timer signal in the measuring thread on
  the CPU, a thread on a GPU), started right before the loop and stopped right
  after it, as ``measure.sweep`` does, writing to a temporary file;
- ``ours_p0.01_thread`` (CPU only): the same at 0.01 s with a sampling thread,
  to show what the signal saves;
- ``codecarbon``: ``OfflineEmissionsTracker`` (country set, no network,
  ``measure_power_secs=1``, quiet, nothing saved), started and stopped likewise;
- ``zeus``: ``ZeusMonitor`` ``begin_window``/``end_window`` around the loop,
  reported unavailable, with the reason, where it cannot start or finds
  nothing to measure.

CPU cost inside the window ("CPU s/s"), over the loops' wall seconds, both
summed over all rounds: the CPU seconds of the threads the tool started (our
``power-recorder`` thread: its waits, housekeeping and ticks; CodeCarbon's
timer threads, a new one per measurement) from its start to right before it
stops (see ``ThreadLedger``), plus, for our signal ticks, which run in the
measuring thread, the CPU seconds they took (``Window.tick_cpu_s``, read from
that thread's CPU clock around each tick: the raw captures, and any batch
written).
The wall time of each tool's ``stop`` ("stop s/s", outside the timed loop) is
reported beside it: ours decodes and writes the ticks' lines there; CodeCarbon
takes a last measurement and computes its emissions.  Work a tool does in the
caller's thread before the loop (our synchronous ``start`` sample, Zeus's
counter read) is not counted.

The last line holds ``key=value`` pairs.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.stats import bootstrap_median_ci  # noqa: E402
from measure.models import load_model  # noqa: E402
from measure.host import cpu_model  # noqa: E402
from measure.sweep import resolve_device, synchronizer, tick_source, timed_loop  # noqa: E402
from measure.recorder import Recorder  # noqa: E402
from measure.sensors import open_sensors  # noqa: E402

PERIODS_S = (0.1, 0.01)
GOALS = {0.1: 1.005, 0.01: 1.01}
WARMUP = 3


class ThreadLedger:
    """CPU seconds of the Python threads started from now on, those that already ended included.

    Wraps ``threading.Thread._bootstrap_inner``, which runs every thread's
    ``run`` (``threading.Timer``'s too: CodeCarbon starts one per measurement),
    so that each thread is listed as it starts and notes its own
    ``time.thread_time()`` as it ends; a thread still running is read through
    its CPU-time clock.  Both have nanosecond resolution.
    """

    def __init__(self):
        self.started: list[threading.Thread] = []
        self.ended: dict[threading.Thread, float] = {}
        inner = threading.Thread._bootstrap_inner

        def bootstrap_inner(thread: threading.Thread) -> None:
            self.started.append(thread)
            try:
                inner(thread)
            finally:
                self.ended[thread] = time.thread_time()

        threading.Thread._bootstrap_inner = bootstrap_inner

    def cpu_s(self, since: int) -> float:
        """CPU seconds of the threads started after the first ``since``."""
        total = 0.0
        for thread in self.started[since:]:
            if thread in self.ended:
                total += self.ended[thread]
            elif thread.is_alive():
                running = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
                total += self.ended.get(thread, running)  # if it ended meanwhile, the clock read may be stale
        return total


LEDGER = ThreadLedger()


def timed(stop) -> float:
    """Wall seconds ``stop()`` took."""
    start = time.perf_counter()
    stop()
    return time.perf_counter() - start


class ThreadsOf:
    """Start and stop a measuring tool; the CPU time of the threads it started until it stops, and
    the wall time of its stop."""

    def __init__(self, start, stop):
        self._start, self._stop = start, stop
        self._since = 0

    def begin(self) -> None:
        self._since = len(LEDGER.started)
        self._start()

    def end(self) -> tuple[float, float]:
        cpu = LEDGER.cpu_s(self._since)
        return cpu, timed(self._stop)


class NoMeasurement:
    name = "none"

    def begin(self) -> None:
        pass

    def end(self) -> tuple[float, float]:
        return 0.0, 0.0


class OurRecorder(ThreadsOf):
    """Our recorder: the CPU time of its sampling thread (all of it: waits, housekeeping, ticks), or of
    its signal ticks (measured by the recorder itself in the measuring thread)."""

    def __init__(self, sensors: list, folder: Path, period_s: float, ticks: str, suffix: str = ""):
        self.name = f"ours_p{period_s:g}{suffix}"
        self._arguments = (sensors, folder / f"{self.name}.json", period_s)
        self._ticks = ticks
        self._recorder: Recorder | None = None
        self._window = None
        self.ticks_used: set[str] = set()
        super().__init__(self._start_recorder, self._stop_recorder)

    def _start_recorder(self) -> None:
        self._recorder = Recorder(*self._arguments, ticks=self._ticks)
        self._recorder.start()

    def _stop_recorder(self) -> None:
        self._window = self._recorder.stop()
        self.ticks_used.add(self._window.ticks)

    def end(self) -> tuple[float, float]:
        thread_cpu_s, stop_s = super().end()
        return thread_cpu_s + (self._window.tick_cpu_s if self._window.ticks == "signal" else 0.0), stop_s


class CodeCarbon(ThreadsOf):
    name = "codecarbon"

    def __init__(self, tracker_class):
        self._tracker_class = tracker_class
        self._tracker = None
        super().__init__(self._start_tracker, lambda: self._tracker.stop())

    def _start_tracker(self) -> None:
        self._tracker = self._tracker_class(country_iso_code="FRA", measure_power_secs=1, log_level="error",
                                            save_to_file=False)
        self._tracker.start()


class Zeus(ThreadsOf):
    name = "zeus"

    def __init__(self, monitor):
        super().__init__(lambda: monitor.begin_window("bench"), lambda: monitor.end_window("bench"))


def open_codecarbon() -> CodeCarbon | str:
    """The CodeCarbon configuration, or why it cannot run here."""
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    try:
        # amdsmi, imported by codecarbon, prints to stdout when ROCm is absent
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            from codecarbon import OfflineEmissionsTracker
    except ImportError as err:
        return f"not installed ({err}); pip install -e '.[bench]'"
    return CodeCarbon(OfflineEmissionsTracker)


def open_zeus() -> Zeus | str:
    """The Zeus configuration, or why it cannot start (or would measure nothing) here."""
    logging.getLogger("zeus").setLevel(logging.ERROR)
    try:
        from zeus.monitor import ZeusMonitor
    except ImportError as err:
        return f"not installed ({err}); pip install -e '.[bench]'"
    try:
        monitor = ZeusMonitor()
    except Exception as err:  # noqa: BLE001 - any failure to start is the finding
        return f"ZeusMonitor() failed: {type(err).__name__}: {err}"
    if not (monitor.gpu_indices or monitor.cpu_indices or monitor.soc_is_present):
        return "ZeusMonitor starts but finds nothing to measure (no GPU through NVML/AMDSMI, no readable RAPL)"
    return Zeus(monitor)


@dataclass
class Tally:
    """Per configuration: one ratio per round, and CPU and wall seconds summed over its blocks."""

    ratios: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    stop_s: float = 0.0
    wall_s: float = 0.0


def run_block(module, inputs, iters: int, sync, measurer) -> tuple[float, float, float, float]:
    """Mean latency (s), measuring CPU seconds, stop seconds and wall seconds of one block under ``measurer``."""
    timed_loop(module, inputs, WARMUP, sync)
    sync()
    measurer.begin()
    start = time.perf_counter()
    try:
        latencies = timed_loop(module, inputs, iters, sync)
    finally:
        wall_s = time.perf_counter() - start
        cpu_s, stop_s = measurer.end()
    return float(latencies.mean()), cpu_s, stop_s, wall_s


def run_rounds(module, inputs, sync, measurers: list, rounds: int, iters: int) -> tuple[dict, list]:
    """Interleaved paired blocks; per-configuration tallies and every baseline block's latency."""
    rng = np.random.default_rng(0)
    baseline = NoMeasurement()
    tallies = {m.name: Tally() for m in measurers}
    base_latencies = []
    for r in range(rounds):
        for i, k in enumerate(rng.permutation(len(measurers))):
            measurer = measurers[k]
            pair = (baseline, measurer) if (r + i) % 2 == 0 else (measurer, baseline)
            results = {m.name: run_block(module, inputs, iters, sync, m) for m in pair}
            base_latency = results[baseline.name][0]
            latency, cpu_s, stop_s, wall_s = results[measurer.name]
            tally = tallies[measurer.name]
            tally.ratios.append(latency / base_latency)
            tally.cpu_s += cpu_s
            tally.stop_s += stop_s
            tally.wall_s += wall_s
            base_latencies.append(base_latency)
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return tallies, base_latencies


def describe(ratios: list[float]) -> dict:
    """Median, IQR and bootstrap 95 % CI of the median of the per-round ratios."""
    values = np.asarray(ratios)
    low, high = bootstrap_median_ci(values[:, None])
    q1, q3 = np.quantile(values, [0.25, 0.75])
    return {"median": float(np.median(values)), "q1": q1, "q3": q3, "ci": (float(low[0]), float(high[0]))}


def report(tallies: dict, measurers: list, unavailable: dict[str, str]) -> dict[str, str]:
    """Print the table; the key=value figures."""
    keys: dict[str, str] = {}
    print(f"\n{'configuration':<18} {'median ratio':>12} {'IQR':>17} {'bootstrap 95% CI':>19} {'CPU s/s':>9} "
          f"{'stop s/s':>9}  ticks")
    for m in measurers:
        tally = tallies[m.name]
        d = describe(tally.ratios)
        cpu, stop = tally.cpu_s / tally.wall_s, tally.stop_s / tally.wall_s
        ticks = ", ".join(sorted(getattr(m, "ticks_used", ["-"])))
        print(f"{m.name:<18} {d['median']:>12.4f} {d['q1']:>8.4f}..{d['q3']:<7.4f} "
              f"{d['ci'][0]:>9.4f}..{d['ci'][1]:<8.4f} {cpu:>9.5f} {stop:>9.5f}  {ticks}")
        ours = m.name.startswith("ours_")
        ratio_key, cpu_key, stop_key = (
            ("overhead_ratio_", "recorder_cpu_s_per_s_", "recorder_stop_s_per_s_") if ours
            else (f"{m.name}_ratio", f"{m.name}_cpu_s_per_s", f"{m.name}_stop_s_per_s"))
        suffix = m.name.removeprefix("ours_") if ours else ""
        keys[ratio_key + suffix] = f"{d['median']:.4f}"
        keys[f"{ratio_key}{suffix}_ci95"] = f"{d['ci'][0]:.4f}..{d['ci'][1]:.4f}"
        keys[cpu_key + suffix] = f"{cpu:.5f}"
        keys[stop_key + suffix] = f"{stop:.5f}"
    for name, reason in unavailable.items():
        print(f"{name:<18} cannot run here: {reason}")
        keys[f"{name}_ratio"] = "unavailable"
    for period, goal in GOALS.items():
        d = describe(tallies[f"ours_p{period:g}"].ratios)
        verdict = "met" if d["median"] <= goal else "NOT met"
        certain = "" if d["ci"][1] <= goal or d["ci"][0] > goal else " (the CI straddles the goal: noise)"
        print(f"goal at {period:g} s: median ratio <= {goal}: {verdict}{certain}")
        keys[f"goal_met_p{period:g}"] = str(d["median"] <= goal).lower()
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=80, help="rounds of paired blocks (default 80)")
    parser.add_argument("--iters", type=int, default=40, help="timed inferences per block (default 40)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:<i> or auto (default)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    loaded = load_model("resnet50")
    loaded.module.to(device)
    module, inputs = loaded, loaded.inputs(args.size, 1, device)
    sync = synchronizer(device)
    sensors, sensors_missing = open_sensors(gpu=device.type == "cuda")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.platform()}")
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'no GPU used'}), "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"resnet50 at {args.size} px, batch 1; {args.rounds} rounds x {args.iters} inferences per block")
    print(f"our sensors: {', '.join(s.name for s in sensors)}; not opened: "
          + "; ".join(f"{k}: {v}" for k, v in sensors_missing.items()))

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        measurers = [OurRecorder(sensors, Path(folder), p, tick_source(device)) for p in PERIODS_S]
        if tick_source(device) != "thread":
            measurers.append(OurRecorder(sensors, Path(folder), 0.01, "thread", suffix="_thread"))
        unavailable = {}
        for name, opener in (("codecarbon", open_codecarbon), ("zeus", open_zeus)):
            tool = opener()
            if isinstance(tool, str):
                unavailable[name] = tool
            else:
                measurers.append(tool)
        with torch.inference_mode():
            tallies, base_latencies = run_rounds(module, inputs, sync, measurers, args.rounds, args.iters)
    for sensor in sensors:
        sensor.close()

    print(f"unmeasured mean latency per inference: median {np.median(base_latencies) * 1e3:.3f} ms "
          f"over {len(base_latencies)} blocks")
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {os.getloadavg()}")
    keys = report(tallies, measurers, unavailable)
    keys["device"] = device.type
    print(" ".join(f"{k}={v}" for k, v in keys.items()))


if __name__ == "__main__":
    main()

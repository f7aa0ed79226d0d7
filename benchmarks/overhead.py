"""Latency overhead and CPU cost of measuring energy during inference.

    python benchmarks/overhead.py [--minutes 9] [--halfwidth 0.0025] [--iters 40] [--size 64] [--device auto]
                                  [--threads N] [--ablation | --only NAME ...] [--rounds N]

Method. ResNet50 (batch 1, ``eval()``, ``torch.inference_mode()``, torch on
every core unless ``--threads``) runs the project's own timed loop
(``measure.sweep.timed_loop``, synchronised after each inference on a GPU)
in blocks of ``--iters`` inferences, each after a short untimed warm-up.
Between two inferences the loop calls what the tool runs there (our
recorder's ``poll()``, its loop ticks; nothing for the others and for the
unmeasured block) and notes the clock, so that an inference's time is its
cycle: from the clock noted after the one before to the clock noted after
it, the tool's work between the two included.
Every round runs one unmeasured block and one block under each measuring
configuration, in a shuffled order; a configuration's ratio in a round is its
block's per-inference time over the round's unmeasured block, each block's
time the mean of its cycles without the slowest and the fastest 10 %
(``TRIM``): on a shared machine a few inferences of a block are preempted by
other programs (their latencies are skewed, a tenth of them 13 % above the
median, a hundredth 36 %), and trimming them makes a round's ratio about
half as noisy.  A tool whose cost lands on the cycles it overlaps still
shows: at 0.01 s every cycle holds a tick, at 0.1 s one in seven, each
costing far less than the spread trimmed.  A rare long stall of a tool would
be trimmed away, so the ratio of plain means is reported beside it, with
its CI.  Blocks are short (about half a second on a 2-core CPU)
and rounds many, so that the blocks of a round mostly share whatever load
other programs put on a shared machine; one unmeasured block per round,
rather than one per configuration, leaves more of the time to the measured
ones.  Reported per configuration: the median ratio over rounds, its
interquartile range, a bootstrap 95 % CI of the median and its half-width; the
same median and CI from the blocks' plain means;
beside it the same for the ratio of the process's CPU time per inference
(every thread: torch's, the tool's), which a neighbour's load moves less
than the wall time.

Rounds go on until the CI of every ``ours_*`` configuration is at most
``--halfwidth`` wide on either side (checked every 10 rounds from the 30th), or
until the next round would pass ``--minutes``; ``--rounds`` fixes their
number instead.

Configurations, by default:

- ``ours_p<period>`` at 0.1 s and 0.01 s: ``measure.recorder.Recorder`` over
  every sensor that ``open_sensors`` finds, with the tick source the sweep
  uses on the device (``measure.sweep.tick_source``: on the CPU the loop's
  ticks, taken by ``poll()`` between two inferences; a thread on a GPU),
  started right before the
  loop and stopped right after it, as ``measure.sweep`` does, writing to a
  temporary file;
- ``codecarbon``: ``OfflineEmissionsTracker`` (country set, no network,
  ``measure_power_secs=1``, quiet, nothing saved), started and stopped likewise;
- ``zeus``: ``ZeusMonitor`` ``begin_window``/``end_window`` around the loop.

The peers come with the ``bench`` extra (``make bench`` installs it); each
is reported unavailable, with the reason, where it is not installed, cannot
start or finds nothing to measure.

``--ablation``: where the recorder's cost at 0.01 s goes, one thing varied at
a time (each at 0.01 s): ``timer_ignored`` (the interval timer firing with
``SIGALRM`` ignored: the timer's interrupts alone, no signal delivered),
``handler_empty`` (a Python ``SIGALRM`` handler that returns at once:
delivery and the interpreter's call), ``handler_clocks`` (a handler that
appends the clocks a tick notes, ``perf_counter``, ``time`` and
``process_time``, to a list: the least a tick can do), ``thread_empty`` (a thread that wakes
every period and does nothing), ``edges_only`` (the recorder with every
sensor, no tick inside the block), ``ticks_no_sensors`` (the recorder's
ticks reading nothing), one sensor alone (``<sensor>_only``), ``ours_p0.01``
(each with the sweep's tick source: on the CPU the loop's), and
``ours_p0.01_signal`` and ``ours_p0.01_thread`` (every sensor, ticks by the
timer signal, or by a sampling thread).  ``--only`` picks configurations by name from
both lists.

CPU cost inside the window ("tool CPU s/s"), over the loops' wall seconds,
both summed over all rounds: the CPU seconds of the threads the tool started
(our ``power-recorder`` thread: its waits, housekeeping and ticks;
CodeCarbon's timer threads, a new one per measurement) from its start to
right before it stops (see ``ThreadLedger``), plus, for our loop or signal
ticks, which run in the measuring thread, the CPU seconds they took
(``Window.tick_cpu_s``).  The wall time of each tool's ``stop`` ("stop s/s",
outside the timed loop) is reported beside it.  Work a tool does in the
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
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.stats import bootstrap_median_ci  # noqa: E402
from measure.host import cpu_model  # noqa: E402
from measure.models import load_model  # noqa: E402
from measure.recorder import Recorder  # noqa: E402
from measure.sensors import open_sensors  # noqa: E402
from measure.sweep import resolve_device, synchronizer, tick_source, timed_loop  # noqa: E402

PERIODS_S = (0.1, 0.01)
GOALS = {0.1: 1.005, 0.01: 1.01}
ABLATION_PERIOD_S = 0.01
WARMUP = 2
TRIM = 0.1  # the share of a block's slowest, and of its fastest, inferences left out of its mean latency
CHECK_EVERY, MIN_ROUNDS = 10, 30


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

    ticks = "-"

    def __init__(self, name: str, start, stop):
        self.name = name
        self._start, self._stop = start, stop
        self._since = 0

    def begin(self) -> None:
        self._since = len(LEDGER.started)
        self._start()

    def between(self) -> None:
        """What runs between two inferences of a block: nothing (our recorder: its loop ticks)."""

    def end(self) -> tuple[float, float]:
        try:
            cpu = LEDGER.cpu_s(self._since)
        finally:
            stop_s = timed(self._stop)  # whatever happened: no tool is left running into the next block
        return cpu, stop_s


class NoMeasurement:
    name = "none"

    def begin(self) -> None:
        pass

    def between(self) -> None:
        pass

    def end(self) -> tuple[float, float]:
        return 0.0, 0.0


class OurRecorder(ThreadsOf):
    """Our recorder: the CPU time of its sampling thread (all of it: waits, housekeeping, ticks), or of
    its loop or signal ticks (measured by the recorder itself in the measuring thread)."""

    def __init__(self, name: str, sensors: list, folder: Path, period_s: float, ticks: str):
        self._arguments = (sensors, folder / f"{name}.json", period_s)
        self._ticks = ticks
        self._recorder: Recorder | None = None
        self._window = None
        self.ticks_used: set[str] = set()
        super().__init__(name, self._start_recorder, self._stop_recorder)

    @property
    def ticks(self) -> str:
        return ", ".join(sorted(self.ticks_used))

    def _start_recorder(self) -> None:
        self._recorder = Recorder(*self._arguments, ticks=self._ticks)
        self._recorder.start()

    def _stop_recorder(self) -> None:
        self._window = self._recorder.stop()
        self.ticks_used.add(self._window.ticks)

    def end(self) -> tuple[float, float]:
        thread_cpu_s, stop_s = super().end()
        in_thread = self._window.ticks in ("signal", "loop")
        return thread_cpu_s + (self._window.tick_cpu_s if in_thread else 0.0), stop_s

    def between(self) -> None:
        self._recorder.poll()


class EmptyTicks(ThreadsOf):
    """Ticks that do nothing, or next to nothing, every ``period_s``: the interval timer with ``SIGALRM``
    ignored (``timer``), a Python handler that returns (``handler``) or that appends the clocks to a list
    (``clocks``), or a thread that wakes and waits again (``thread``)."""

    def __init__(self, name: str, kind: str, period_s: float):
        self._kind, self._period_s = kind, period_s
        self._previous = None
        self._stopping = threading.Event()
        super().__init__(name, self._arm, self._disarm)
        self.ticks = kind

    def _arm(self) -> None:
        if self._kind == "thread":
            self._stopping = threading.Event()  # a new one per block: an old thread never sees it cleared
            threading.Thread(target=self._wake, args=(self._stopping,), name="empty-ticks", daemon=True).start()
            return
        handlers = {"timer": signal.SIG_IGN, "handler": _return, "clocks": _clocks}
        self._previous = signal.signal(signal.SIGALRM, handlers[self._kind])
        try:
            signal.siginterrupt(signal.SIGALRM, False)  # as the recorder: interrupted system calls restart
            signal.setitimer(signal.ITIMER_REAL, self._period_s, self._period_s)
        except BaseException:
            signal.signal(signal.SIGALRM, self._previous)
            raise

    def _wake(self, stopping: threading.Event) -> None:
        while not stopping.wait(self._period_s):
            pass

    def _disarm(self) -> None:
        if self._kind == "thread":
            self._stopping.set()
            return
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, self._previous)


def _return(signum, frame) -> None:
    """A signal handler that does nothing."""


CLOCKS: deque = deque(maxlen=1000)


def _clocks(signum, frame, note=CLOCKS.append, perf_counter=time.perf_counter, wall=time.time,
            cpu=time.process_time) -> None:
    """A signal handler that notes three clocks (a tick notes its own and reads the sensors) and nothing else."""
    note((perf_counter(), wall(), cpu()))


def codecarbon() -> ThreadsOf | str:
    """The CodeCarbon configuration, or why it cannot run here."""
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    try:
        # amdsmi, imported by codecarbon, prints to stdout when ROCm is absent
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            from codecarbon import OfflineEmissionsTracker
    except ImportError as err:
        return f"not installed ({err}); make bench installs it"
    tracker = None

    def start() -> None:
        nonlocal tracker
        tracker = OfflineEmissionsTracker(country_iso_code="FRA", measure_power_secs=1, log_level="error",
                                          save_to_file=False)
        tracker.start()

    return ThreadsOf("codecarbon", start, lambda: tracker.stop())


def zeus() -> ThreadsOf | str:
    """The Zeus configuration, or why it cannot start (or would measure nothing) here."""
    logging.getLogger("zeus").setLevel(logging.ERROR)
    try:
        from zeus.monitor import ZeusMonitor
    except ImportError as err:
        return f"not installed ({err}); make bench installs it"
    try:
        monitor = ZeusMonitor()
    except Exception as err:  # noqa: BLE001 - any failure to start is the finding
        return f"ZeusMonitor() failed: {type(err).__name__}: {err}"
    if not (monitor.gpu_indices or monitor.cpu_indices or monitor.soc_is_present):
        return "ZeusMonitor starts but finds nothing to measure (no GPU through NVML/AMDSMI, no readable RAPL)"
    return ThreadsOf("zeus", lambda: monitor.begin_window("bench"), lambda: monitor.end_window("bench"))


def configurations(sensors: list, folder: Path, device: torch.device) -> dict[str, object]:
    """Every configuration by name, default ones first: a measurer, or why it cannot run here (text); the
    peers as functions that give one, called only for a run that asks for them (``chosen``): a peer not
    asked for is not even imported."""
    ticks = tick_source(device, polled=True)
    p = ABLATION_PERIOD_S
    found = {f"ours_p{period:g}": OurRecorder(f"ours_p{period:g}", sensors, folder, period, ticks)
             for period in PERIODS_S}
    found["codecarbon"], found["zeus"] = codecarbon, zeus
    found.update({
        "timer_ignored": EmptyTicks("timer_ignored", "timer", p),
        "handler_empty": EmptyTicks("handler_empty", "handler", p),
        "handler_clocks": EmptyTicks("handler_clocks", "clocks", p),
        "thread_empty": EmptyTicks("thread_empty", "thread", p),
        "edges_only": OurRecorder("edges_only", sensors, folder, 3600.0, ticks),
        "ticks_no_sensors": OurRecorder("ticks_no_sensors", [], folder, p, ticks),
        **{f"{s.name}_only": OurRecorder(f"{s.name}_only", [s], folder, p, ticks) for s in sensors},
        "ours_p0.01_signal": OurRecorder("ours_p0.01_signal", sensors, folder, p, "signal"),
        "ours_p0.01_thread": OurRecorder("ours_p0.01_thread", sensors, folder, p, "thread"),
    })
    return found


DEFAULT = ("ours_p0.1", "ours_p0.01", "codecarbon", "zeus")


@dataclass
class Tally:
    """Per configuration: one latency ratio (trimmed and plain means) and one CPU ratio per round, and CPU and
    wall seconds over its blocks."""

    ratios: list[float] = field(default_factory=list)
    mean_ratios: list[float] = field(default_factory=list)
    cpu_ratios: list[float] = field(default_factory=list)
    tool_cpu_s: float = 0.0
    stop_s: float = 0.0
    wall_s: float = 0.0


@dataclass
class Block:
    latency_s: float    # trimmed mean per inference (TRIM)
    mean_s: float       # plain mean per inference
    cpu_s: float        # the process's CPU seconds per inference, every thread
    tool_cpu_s: float   # the measuring tool's CPU seconds inside the block
    stop_s: float
    wall_s: float


def run_block(module, inputs, iters: int, sync, measurer) -> Block:
    """One block of ``iters`` timed inferences under ``measurer``."""
    timed_loop(module, inputs, WARMUP, sync)
    sync()
    measurer.begin()
    ends = []

    def between(tool=measurer.between, note=ends.append, clock=time.perf_counter) -> None:
        tool()
        note(clock())

    cpu, start = time.process_time(), time.perf_counter()
    try:
        timed_loop(module, inputs, iters, sync, between)
    finally:
        wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
        tool_cpu_s, stop_s = measurer.end()
    cycles = np.diff([start, *ends])  # each inference with what ran after it
    return Block(float(stats.trim_mean(cycles, TRIM)), float(cycles.mean()), cpu_s / iters, tool_cpu_s,
                 stop_s, wall_s)


def watched_names(measurers: list) -> list[str]:
    """The configurations whose precision decides when the rounds stop: ours, else all."""
    return [m.name for m in measurers if m.name.startswith("ours_")] or [m.name for m in measurers]


def run_rounds(module, inputs, sync, measurers: list, iters: int, rounds: int | None, minutes: float,
               halfwidth: float) -> tuple[dict, list, str]:
    """Rounds of one unmeasured block and one block per measurer, shuffled; per-configuration tallies, every
    unmeasured block's latency, and why the rounds stopped."""
    rng = np.random.default_rng(0)
    baseline = NoMeasurement()
    tallies = {m.name: Tally() for m in measurers}
    base_latencies = []
    watched = watched_names(measurers)
    began, r = time.monotonic(), 0
    while True:
        round_began = time.monotonic()
        everyone = [*measurers, baseline]
        blocks = {everyone[k].name: run_block(module, inputs, iters, sync, everyone[k])
                  for k in rng.permutation(len(everyone))}
        base = blocks[baseline.name]
        for m in measurers:
            block, tally = blocks[m.name], tallies[m.name]
            tally.ratios.append(block.latency_s / base.latency_s)
            tally.mean_ratios.append(block.mean_s / base.mean_s)
            tally.cpu_ratios.append(block.cpu_s / base.cpu_s)
            tally.tool_cpu_s += block.tool_cpu_s
            tally.stop_s += block.stop_s
            tally.wall_s += block.wall_s
        base_latencies.append(base.latency_s)
        r += 1
        now = time.monotonic()
        print(f"  round {r} done, {(now - began) / 60:.1f} min", file=sys.stderr, flush=True)
        if rounds is not None:
            if r == rounds:
                return tallies, base_latencies, f"{rounds} rounds asked for"
            continue
        if r >= MIN_ROUNDS and r % CHECK_EVERY == 0 and max(describe(tallies[n].ratios)["half"]
                                                             for n in watched) <= halfwidth:
            return tallies, base_latencies, f"every CI of {', '.join(watched)} within +-{halfwidth:.2%}"
        if now - began + (now - round_began) > minutes * 60:
            return tallies, base_latencies, f"{minutes:g} min spent"


def describe(ratios: list[float]) -> dict:
    """Median, IQR, bootstrap 95 % CI of the median and its half-width, of per-round ratios."""
    values = np.asarray(ratios)
    low, high = bootstrap_median_ci(values[:, None])
    q1, q3 = np.quantile(values, [0.25, 0.75])
    return {"median": float(np.median(values)), "q1": q1, "q3": q3, "ci": (float(low[0]), float(high[0])),
            "half": float(high[0] - low[0]) / 2}


def key_prefix(name: str) -> tuple[str, str]:
    """How the key=value line names a configuration's figures: ``overhead_ratio_p0.1`` for ours, else
    ``codecarbon_ratio``; (the ratio's key, the stem of the other keys)."""
    if name.startswith("ours_"):
        suffix = name.removeprefix("ours_")
        return f"overhead_ratio_{suffix}", f"recorder_{{}}_{suffix}"
    return f"{name}_ratio", f"{name}_{{}}"


def report(tallies: dict, measurers: list, unavailable: dict[str, str], halfwidth: float) -> dict[str, str]:
    """Print the table and the goals' verdicts; the key=value figures."""
    keys: dict[str, str] = {}
    print(f"\n{'configuration':<19} {'median ratio':>12} {'IQR':>15} {'bootstrap 95% CI':>17} {'+-':>6} "
          f"{'plain-mean ratio':>16} {'its 95% CI':>15} {'CPU ratio':>9} {'CPU 95% CI':>15} {'tool CPU s/s':>12} "
          f"{'stop s/s':>9}  ticks")
    for m in measurers:
        tally = tallies[m.name]
        d, p, c = describe(tally.ratios), describe(tally.mean_ratios), describe(tally.cpu_ratios)
        cpu, stop = tally.tool_cpu_s / tally.wall_s, tally.stop_s / tally.wall_s
        print(f"{m.name:<19} {d['median']:>12.4f} {d['q1']:>7.4f}..{d['q3']:<6.4f} "
              f"{d['ci'][0]:>8.4f}..{d['ci'][1]:<7.4f} {d['half']:>6.2%} {p['median']:>16.4f} "
              f"{p['ci'][0]:>7.4f}..{p['ci'][1]:<6.4f} {c['median']:>9.4f} "
              f"{c['ci'][0]:>7.4f}..{c['ci'][1]:<6.4f} {cpu:>12.5f} {stop:>9.5f}  {m.ticks}")
        ratio_key, stem = key_prefix(m.name)
        keys[ratio_key] = f"{d['median']:.4f}"
        keys[f"{ratio_key}_ci95"] = f"{d['ci'][0]:.4f}..{d['ci'][1]:.4f}"
        keys[f"{ratio_key}_halfwidth"] = f"{d['half']:.4f}"
        keys[f"{ratio_key}_plain_mean"] = f"{p['median']:.4f}"
        keys[f"{ratio_key}_plain_mean_ci95"] = f"{p['ci'][0]:.4f}..{p['ci'][1]:.4f}"
        keys[stem.format("cpu_ratio")] = f"{c['median']:.4f}"
        keys[stem.format("cpu_ratio") + "_ci95"] = f"{c['ci'][0]:.4f}..{c['ci'][1]:.4f}"
        keys[stem.format("cpu_s_per_s")] = f"{cpu:.5f}"
        keys[stem.format("stop_s_per_s")] = f"{stop:.5f}"
    for name, reason in unavailable.items():
        print(f"{name:<19} cannot run here: {reason}")
        keys[f"{name}_ratio"] = "unavailable"
    rounds = len(next(iter(tallies.values())).ratios)
    too_few = f" (only {rounds} rounds: not a measurement)" if rounds < MIN_ROUNDS else ""
    for period, goal in GOALS.items():
        name = f"ours_p{period:g}"
        if name not in tallies:
            continue
        d = describe(tallies[name].ratios)
        verdict = "met" if d["median"] <= goal else "NOT met"
        certain = ("" if d["ci"][1] <= goal or d["ci"][0] > goal
                   else " (the CI straddles the goal: not decided at this precision)")
        print(f"goal at {period:g} s: median ratio <= {goal}: {verdict}{certain}{too_few}")
        keys[f"goal_met_p{period:g}"] = ("undecided" if certain or too_few else str(d["median"] <= goal).lower())
    watched = watched_names(measurers)
    widest = max(describe(tallies[name].ratios)["half"] for name in watched)
    met = widest <= halfwidth and not too_few  # a bootstrap over a handful of rounds is no CI
    print(f"precision: the widest CI of {', '.join(watched)} is +-{widest:.2%} (goal +-{halfwidth:.2%}): "
          f"{'met' if met else 'NOT met'}{too_few}")
    keys["precision_met"] = str(met).lower()
    return keys


def chosen(args: argparse.Namespace, everything: dict[str, object]) -> tuple[list, dict[str, str]]:
    """The measurers of this run, and why the others asked for cannot run here."""
    if args.only:
        names = args.only
    elif args.ablation:
        names = [n for n in everything if n not in DEFAULT or n == "ours_p0.01"]
    else:
        names = list(DEFAULT)
    unknown = sorted(set(names) - set(everything))
    if unknown:
        raise SystemExit(f"error: unknown configuration(s) {', '.join(unknown)}; known: {', '.join(everything)}")
    made = {n: everything[n]() if callable(everything[n]) else everything[n] for n in names}  # a peer, now
    measurers = [m for m in made.values() if not isinstance(m, str)]
    unavailable = {n: m for n, m in made.items() if isinstance(m, str)}
    if not measurers:
        raise SystemExit("error: none of the configurations asked for can run here: "
                         + "; ".join(f"{n}: {why}" for n, why in unavailable.items()))
    return measurers, unavailable


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=9.0,
                        help="time budget of the whole run, loading the model included (default 9)")
    parser.add_argument("--halfwidth", type=float, default=0.0025,
                        help="stop once every ours_* CI is this close to its median (default 0.0025)")
    parser.add_argument("--rounds", type=at_least_one, help="this many rounds, whatever their precision")
    parser.add_argument("--iters", type=at_least_one, default=40, help="timed inferences per block (default 40)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:<i> or auto (default)")
    parser.add_argument("--threads", type=int, help="torch threads (default: every CPU this process may use)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--ablation", action="store_true", help="where the cost at 0.01 s goes (see the docstring)")
    which.add_argument("--only", nargs="+", metavar="NAME", help="these configurations only")
    args = parser.parse_args()

    started = time.monotonic()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    loaded = load_model("resnet50")
    loaded.module.to(device)
    module, inputs = loaded, loaded.inputs(args.size, 1, device)
    sync = synchronizer(device)
    sensors, sensors_missing = open_sensors(gpu=device.type == "cuda")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.platform()}")
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'no GPU used'}), "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"our sensors: {', '.join(s.name for s in sensors)}; not opened: "
          + "; ".join(f"{k}: {v}" for k, v in sensors_missing.items()))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        measurers, unavailable = chosen(args, configurations(sensors, Path(folder), device))
        print(f"resnet50 at {args.size} px, batch 1; blocks of {args.iters} inferences; "
              f"configurations: {', '.join(m.name for m in measurers)}")
        budget = args.minutes - (time.monotonic() - started) / 60
        with torch.inference_mode():
            tallies, base_latencies, why = run_rounds(module, inputs, sync, measurers, args.iters, args.rounds,
                                                      budget, args.halfwidth)
    for sensor in sensors:
        sensor.close()
    minutes = (time.monotonic() - started) / 60
    print(f"{len(base_latencies)} rounds in {minutes:.1f} min in all (stopped: {why}); unmeasured mean latency per "
          f"inference: median {np.median(base_latencies) * 1e3:.3f} ms")
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {os.getloadavg()}")
    keys = report(tallies, measurers, unavailable, args.halfwidth)
    keys.update(rounds=str(len(base_latencies)), minutes=f"{minutes:.1f}", threads=str(torch.get_num_threads()),
                device=device.type)
    print(" ".join(f"{k}={v}" for k, v in keys.items()))


if __name__ == "__main__":
    main()

"""The recorder's file format, window edges and gap handling."""
from __future__ import annotations

import json
import signal
import sys
import threading
import time

import pytest

from measure.recorder import Recorder, signal_ticks_refusal
from measure.sensors.base import Domain, MEASURED, Sensor, SensorError


class RampCounter(Sensor):
    """A sensor whose energy counter grows at ``power_w`` with real time (like RAPL/NVML)."""

    def __init__(self, power_w: float = 50.0, fail_after: int | None = None, name: str = "ramp", domain: str = "dev0"):
        self.name = name
        self.domain = domain
        self.power_w = power_w
        self.fail_after = fail_after
        self.reads = 0
        self.opened = time.perf_counter()
        self.domains = (Domain(domain, name, MEASURED, (f"{domain}.energy_j", f"{domain}.power_w")),)
        self.channels = self.domains[0].channels
        self.threads: set[str] = set()

    def read(self):
        self.reads += 1
        self.threads.add(threading.current_thread().name)
        if self.fail_after is not None and self.reads > self.fail_after:
            raise SensorError("device lost")
        energy_j = (time.perf_counter() - self.opened) * self.power_w
        return {f"{self.domain}.energy_j": energy_j, f"{self.domain}.power_w": self.power_w}


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for_reads(sensor, reads: int, timeout_s: float = 60.0) -> None:
    """Let the ticks run until ``sensor`` has been read ``reads`` times, however loaded the machine."""
    deadline = time.monotonic() + timeout_s
    while sensor.reads < reads:
        assert time.monotonic() < deadline, f"{sensor.reads} reads in {timeout_s} s"
        time.sleep(0.005)


# "loop" without polls: its backstop timer takes every tick (the polled ticks have tests of their own)
TICKS = pytest.mark.parametrize("ticks", ["thread", "signal", "loop"])


@TICKS
def test_window_edges_are_synchronous_and_ticks_fill_between(tmp_path, ticks):
    sensor = RampCounter()
    recorder = Recorder([sensor], tmp_path / "power_metrics.json", period_s=0.01, ticks=ticks)
    starting = time.perf_counter()
    recorder.start()
    started = time.perf_counter()
    time.sleep(0.2)
    wait_for_reads(sensor, 3)
    stopping = time.perf_counter()
    window = recorder.stop()
    stopped = time.perf_counter()
    lines = read_lines(tmp_path / "power_metrics.json")

    assert lines[0]["mark"] == "start" and lines[0]["t_s"] == 0.0
    assert lines[-1]["mark"] == "end"
    assert {line["mark"] for line in lines[1:-1]} == {"tick"}
    assert lines[-1]["t_s"] == pytest.approx(window.duration_s, abs=1e-6)
    assert window.samples == len(lines)
    assert 1 <= len(lines) - 2 <= window.duration_s / 0.01 + 1  # on the 10 ms grid, never more often
    times = [line["t_s"] for line in lines]
    assert times == sorted(times)
    # the edges are read by start() and stop() themselves: the counter difference is the energy over the window
    energy = lines[-1]["dev0.energy_j"] - lines[0]["dev0.energy_j"]
    assert sensor.power_w * (stopping - started) <= energy <= sensor.power_w * (stopped - starting)
    assert stopping - started <= window.duration_s <= stopped - starting
    assert window.ticks == ticks
    assert 0 < window.tick_cpu_s < window.duration_s
    expected_threads = {"MainThread"} if ticks != "thread" else {"MainThread", "power-recorder"}
    assert sensor.threads == expected_threads


@TICKS
def test_every_line_has_the_same_keys_and_utc_time(tmp_path, ticks):
    with Recorder([RampCounter()], tmp_path / "p.json", period_s=0.005, ticks=ticks) as recorder:
        time.sleep(0.05)
    lines = read_lines(tmp_path / "p.json")
    assert {tuple(line) for line in lines} == {("t_s", "utc", "mark", "gap", "dev0.energy_j", "dev0.power_w")}
    assert all(line["utc"].endswith("Z") for line in lines)
    assert recorder.path.read_text().endswith("\n")


@TICKS
def test_no_tick_is_written_after_the_end_sample(tmp_path, ticks):
    for _ in range(20):
        recorder = Recorder([RampCounter()], tmp_path / "p.json", period_s=0.001, ticks=ticks)
        recorder.start()
        time.sleep(0.003)
        recorder.stop()
        marks = [line["mark"] for line in read_lines(tmp_path / "p.json")]
        assert marks[-1] == "end" and marks.count("end") == 1


@TICKS
def test_a_failing_read_is_a_gap_and_the_window_completes(tmp_path, ticks):
    sensor = RampCounter(fail_after=3)
    recorder = Recorder([sensor, RampCounter(name="other", domain="dev1")], tmp_path / "p.json", period_s=0.005,
                        ticks=ticks)
    recorder.start()
    wait_for_reads(sensor, 6)
    window = recorder.stop()
    lines = read_lines(tmp_path / "p.json")
    gaps = [line for line in lines if line["gap"]]
    assert gaps and all(line["gap"] == "dev0" for line in gaps)  # the domain that lost every channel
    assert all(line["dev0.energy_j"] is None and line["dev1.energy_j"] > 0 for line in gaps)
    assert window.gap_samples == len(gaps)
    assert window.first_error.startswith("ramp at t=") and "device lost" in window.first_error
    assert lines[-1]["mark"] == "end"


@TICKS
def test_a_partial_read_leaves_only_the_lost_channels_null_and_names_them(tmp_path, ticks):
    class TwoDevices(RampCounter):
        """Device dev1 is lost after the start sample, and dev0's power reading fails at every tick."""

        def __init__(self):
            super().__init__()
            self.domains = (*self.domains, Domain("dev1", self.name, MEASURED, ("dev1.energy_j", "dev1.power_w")))
            self.channels = tuple(c for d in self.domains for c in d.channels)

        def read(self):
            values = {**super().read(), "dev1.energy_j": 2.0, "dev1.power_w": 20.0}
            if self.reads == 1:
                return values
            raise SensorError("dev1 lost", {"dev0.energy_j": values["dev0.energy_j"]})

    sensor = TwoDevices()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=0.005, ticks=ticks)
    recorder.start()
    wait_for_reads(sensor, 3)
    window = recorder.stop()
    start, *rest = read_lines(tmp_path / "p.json")
    assert start["gap"] == "" and start["dev1.power_w"] == 20.0
    assert rest and all(line["gap"] == "dev0.power_w;dev1" for line in rest)
    assert all(line["dev0.energy_j"] > 0 and line["dev0.power_w"] is None and line["dev1.energy_j"] is None
               for line in rest)
    assert window.gap_samples == len(rest) and window.first_error.endswith("dev1 lost")


@TICKS
def test_the_start_line_at_once_and_ticks_in_batches_while_recording(tmp_path, ticks):
    recorder = Recorder([RampCounter()], tmp_path / "p.json", period_s=0.005, ticks=ticks, flush_every=2)
    recorder.start()
    assert json.loads((tmp_path / "p.json").read_bytes().split(b"\n")[0])["mark"] == "start"  # by start() itself
    deadline = time.monotonic() + 60

    def lines_written():
        return (tmp_path / "p.json").read_bytes().count(b"\n")

    while lines_written() < 3 and time.monotonic() < deadline:  # however loaded the machine
        time.sleep(0.005)
    written_mid_run = lines_written()
    recorder.stop()
    assert written_mid_run >= 3 and (written_mid_run - 1) % 2 == 0  # whole batches of two ticks


@TICKS
def test_ticks_capture_in_the_window_and_decode_after_it_in_capture_order(tmp_path, ticks):
    class Split(RampCounter):
        """A sensor with a stateful decoder: each value is the difference from the previous reading."""

        def __init__(self):
            super().__init__()
            self.decoded: list[tuple[int, float]] = []
            self.last = 0

        def capture(self):
            self.reads += 1
            return self.reads

        def decode(self, raw):
            self.decoded.append((raw, time.perf_counter()))
            step, self.last = raw - self.last, raw
            return {"dev0.energy_j": float(raw), "dev0.power_w": float(step)}

    sensor = Split()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=0.005, ticks=ticks)
    recorder.start()
    time.sleep(0.05)
    stopping = time.perf_counter()
    recorder.stop()
    lines = read_lines(tmp_path / "p.json")
    assert [raw for raw, _ in sensor.decoded] == list(range(1, len(lines) + 1))  # capture order
    assert all(at > stopping for _, at in sensor.decoded[1:])  # nothing but the start decoded in the window
    assert [line["dev0.power_w"] for line in lines] == [1.0] * len(lines)


@TICKS
@pytest.mark.parametrize("slow_by", ["spinning", "sleeping"])
def test_a_read_slower_than_the_period_skips_ticks_and_never_nests(tmp_path, ticks, slow_by):
    """Every read takes three periods, in Python bytecodes or in a C call (a signal tick can fire inside
    either): due ticks are skipped, reads never overlap, and the lines stay in time order."""
    period_s, read_s = 0.004, 0.012

    class Slow(RampCounter):
        def __init__(self):
            super().__init__()
            self.active = 0
            self.spans: list[tuple[float, float]] = []  # (began, ended) of every read

        def read(self):
            self.active += 1
            began = time.perf_counter()
            try:
                assert self.active == 1, "a read nested in another"
                if slow_by == "sleeping":
                    time.sleep(read_s)
                while time.perf_counter() - began < read_s:
                    pass
                return super().read()
            finally:
                self.spans.append((began, time.perf_counter()))
                self.active -= 1

    sensor = Slow()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=period_s, ticks=ticks)
    recorder.start()
    time.sleep(0.25)
    wait_for_reads(sensor, 3)
    window = recorder.stop()  # no RecursionError, no read error raised from a tick
    lines = read_lines(tmp_path / "p.json")
    marks = [line["mark"] for line in lines]
    times = [line["t_s"] for line in lines]
    assert marks[0] == "start" and marks[-1] == "end" and set(marks[1:-1]) == {"tick"}
    assert all(a < b for a, b in zip(times, times[1:]))  # strictly increasing
    assert not any(line["gap"] for line in lines) and window.gap_samples == 0
    spans = sorted(sensor.spans)
    assert len(spans) == len(lines)
    assert all(ended <= began for (_, ended), (began, _) in zip(spans, spans[1:]))  # one read at a time, end included
    # ticks were skipped, not queued: at most one per read duration, far fewer than one per period
    assert 2 <= len(lines) - 2 <= window.duration_s / read_s + 1 < window.duration_s / period_s / 2


def test_signal_ticks_restore_the_previous_handler_and_disarm_the_timer(tmp_path):
    before = signal.getsignal(signal.SIGALRM)
    with Recorder([RampCounter()], tmp_path / "p.json", period_s=0.005, ticks="signal"):
        assert signal.getsignal(signal.SIGALRM) is not before
        time.sleep(0.02)
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_signal_ticks_fall_back_to_the_thread_where_they_cannot_run(tmp_path):
    windows = {}

    def record(name):
        sensor = RampCounter()
        recorder = Recorder([sensor], tmp_path / f"{name}.json", period_s=0.005, ticks="signal")
        recorder.start()
        wait_for_reads(sensor, 3)
        windows[name] = recorder.stop()

    worker = threading.Thread(target=record, args=("worker",))
    worker.start()
    worker.join()
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    try:
        assert signal_ticks_refusal() == "SIGALRM already has a handler"
        record("taken")
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert windows["worker"].ticks == "thread (signal refused: not in the main thread)"
    assert windows["taken"].ticks == "thread (signal refused: SIGALRM already has a handler)"
    for name, window in windows.items():
        assert len(read_lines(tmp_path / f"{name}.json")) == window.samples >= 4


@TICKS
def test_a_sensor_bug_in_a_tick_is_raised_by_stop_not_inside_the_measured_work(tmp_path, ticks):
    class Buggy(RampCounter):
        def read(self):
            if self.reads == 1:  # the first tick, after the start sample; ticks stop there, the end read works
                self.reads += 1
                raise TypeError("a bug in a sensor")
            return super().read()

    sensor = Buggy()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=0.005, ticks=ticks)
    recorder.start()
    wait_for_reads(sensor, 2)  # the measured work goes on undisturbed
    with pytest.raises(TypeError, match="a bug in a sensor"):
        recorder.stop()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert [line["mark"] for line in read_lines(tmp_path / "p.json")] == ["start", "end"]


@TICKS
def test_slow_batches_keep_every_tick_in_capture_order(tmp_path, ticks):
    class SlowDecoder(RampCounter):
        """Each reading numbered as it is captured; decoding takes longer than the sampling period."""

        def capture(self):
            self.reads += 1
            return self.reads

        def decode(self, raw):
            time.sleep(0.003)
            return {"dev0.energy_j": float(raw), "dev0.power_w": 1.0}

    sensor = SlowDecoder()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=0.001, ticks=ticks, flush_every=2)
    recorder.start()
    time.sleep(0.15)
    wait_for_reads(sensor, 12)
    window = recorder.stop()
    numbers = [line["dev0.energy_j"] for line in read_lines(tmp_path / "p.json")]
    assert numbers == [float(n) for n in range(1, sensor.reads + 1)]  # none lost, none out of order
    assert window.samples == len(numbers) > 10


@TICKS
def test_the_edges_capture_and_the_ticks_capture_tick(tmp_path, ticks):
    class Decimated(RampCounter):
        def capture(self):
            return "edge"

        def capture_tick(self):
            return None

        def decode(self, raw):
            return {"dev0.energy_j": 1.0 if raw == "edge" else 0.0, "dev0.power_w": 1.0}

    with Recorder([Decimated()], tmp_path / "p.json", period_s=0.005, ticks=ticks):
        time.sleep(0.03)
    lines = read_lines(tmp_path / "p.json")
    assert [line["dev0.energy_j"] for line in lines] == [1.0] + [0.0] * (len(lines) - 2) + [1.0]


def test_start_twice_or_stop_without_start_is_an_error_that_leaves_nothing_armed(tmp_path):
    recorder = Recorder([RampCounter()], tmp_path / "p.json", period_s=0.005, ticks="signal")
    with pytest.raises(RuntimeError, match="not running"):
        recorder.stop()
    recorder.start()
    with pytest.raises(RuntimeError, match="already running"):
        recorder.start()
    recorder.stop()
    with pytest.raises(RuntimeError, match="not running"):
        recorder.stop()
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_rejects_an_unknown_tick_source(tmp_path):
    with pytest.raises(ValueError, match="ticks"):
        Recorder([], tmp_path / "p.json", ticks="interrupt")


def test_rejects_a_non_positive_period(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        Recorder([], tmp_path / "p.json", period_s=0)


def test_a_failed_batch_write_in_the_thread_is_raised_by_stop(tmp_path):
    import errno

    sensor = RampCounter()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=0.005, flush_every=2)
    recorder.start()
    real_file = recorder._file

    class FullDisk:  # the disk fills up while the thread writes a batch of ticks; the end line still fits
        def write(self, data):
            if "tick" in str(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_file.write(data)

        def flush(self):
            pass

        def close(self):
            real_file.close()

    recorder._file = FullDisk()
    deadline = time.monotonic() + 60
    while recorder._tick_error is None and sensor.reads < 5 and time.monotonic() < deadline:
        time.sleep(0.005)  # until a batch is written to the full disk (the first may have gone before it filled)
    with pytest.raises(OSError, match="No space left"):
        recorder.stop()
    assert read_lines(tmp_path / "p.json")[-1]["mark"] == "end"


def test_an_interrupt_inside_a_signal_tick_leaves_the_recorder_stoppable(tmp_path, monkeypatch):
    """A Ctrl-C handled inside a tick (here at its first clock) never leaves the lock taken: stop() works."""
    sensor = RampCounter()
    interrupted = []

    def thread_time():
        if not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        return 0.0

    monkeypatch.setattr(time, "thread_time", thread_time)  # bound by the handler when it is made, at start()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=60.0, ticks="signal")
    recorder.start()
    tick = signal.getsignal(signal.SIGALRM)
    with pytest.raises(KeyboardInterrupt):
        tick(signal.SIGALRM, None)
    assert recorder._lock.acquire(blocking=False)  # free (else stop() would wait for it forever)
    recorder._lock.release()
    tick(signal.SIGALRM, None)  # the next tick is taken
    window = recorder.stop()
    assert [line["mark"] for line in read_lines(tmp_path / "p.json")] == ["start", "tick", "end"]
    assert window.ticks == "signal"


def test_ticks_nested_in_a_signal_tick_that_writes_a_batch_keep_their_order(tmp_path):
    """A tick that falls due while a tick writes its batch (here from inside the writing) is only captured, and
    written with the next batch: every line in capture order, even with a batch at every tick."""
    class Nesting(RampCounter):
        def capture(self):
            self.reads += 1
            return self.reads

        def decode(self, raw):
            if raw in (2, 3):  # the batch of tick 2, then of tick 3, each written with a tick nested in it
                signal.getsignal(signal.SIGALRM)(signal.SIGALRM, None)
            return {"dev0.energy_j": float(raw), "dev0.power_w": 1.0}

    sensor = Nesting()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=60.0, ticks="signal", flush_every=1)
    recorder.start()
    tick = signal.getsignal(signal.SIGALRM)
    tick(signal.SIGALRM, None)
    tick(signal.SIGALRM, None)
    recorder.stop()
    numbers = [line["dev0.energy_j"] for line in read_lines(tmp_path / "p.json")]
    assert numbers == [float(n) for n in range(1, sensor.reads + 1)] and len(numbers) >= 5


class Marked(RampCounter):
    """Notes, at each tick, whether the measured work was running (``work[0]``) and whether the timer's handler
    took the tick (the ``signum`` its caller got: None from a poll)."""

    def __init__(self, work: list[bool]):
        super().__init__()
        self.work = work
        self.inside: list[bool] = []
        self.by_timer: list[bool] = []

    def capture_tick(self):
        self.inside.append(self.work[0])
        self.by_timer.append(sys._getframe(2).f_locals["signum"] is not None)  # capture_tick < read_all < tick
        return super().capture_tick()


def units(recorder: Recorder, work: list[bool], unit_s: float, count: int) -> int:
    """``count`` units of busy work of ``unit_s`` each, ``recorder.poll()`` between two; the polls made."""
    for _ in range(count):
        work[0] = True
        began = time.perf_counter()
        while time.perf_counter() - began < unit_s:
            pass
        work[0] = False
        recorder.poll()
    return count


def test_loop_ticks_are_taken_between_units_of_work_once_a_grid_point_has_passed(tmp_path, monkeypatch):
    """With the backstop out of reach, every tick is taken by a poll, between two units of work, and at most one
    per grid period: a poll before the next grid point takes nothing."""
    monkeypatch.setattr("measure.recorder.BACKSTOP_PERIODS", 10**6)
    work = [False]
    sensor = Marked(work)
    period_s = 0.01
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=period_s, ticks="loop")
    recorder.start()
    polls = units(recorder, work, 0.001, 150)
    window = recorder.stop()
    lines = read_lines(tmp_path / "p.json")
    ticks = [line["t_s"] for line in lines if line["mark"] == "tick"]
    assert window.ticks == "loop"
    assert len(sensor.inside) == len(ticks) >= 3 and not any(sensor.inside)  # none inside a unit of work
    assert not any(sensor.by_timer)
    assert len(ticks) <= window.duration_s / period_s + 1 < polls  # not one a poll
    cells = [int(t // period_s) for t in ticks]
    assert all(a < b for a, b in zip(cells, cells[1:]))  # one tick at most per grid period
    assert cells[0] >= 1  # none before the first grid point


def test_loop_ticks_fall_back_on_the_timer_inside_a_unit_longer_than_the_backstop(tmp_path):
    """A unit of work without a poll for many periods gets the signal's ticks, never sooner than one and a half
    periods after the last polled tick; polls take the ticks again after it."""
    work = [False]
    sensor = Marked(work)
    period_s = 0.01
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=period_s, ticks="loop")
    recorder.start()
    units(recorder, work, 0.001, 50)
    polled = len(sensor.inside)
    work[0] = True
    began = time.perf_counter()
    while len(sensor.inside) < polled + 3 or time.perf_counter() - began < 5 * period_s:  # ticks, however loaded
        pass
    work[0] = False
    recorder.poll()  # right after a tick of the timer's: none due, the timer goes back behind the polls
    assert signal.getitimer(signal.ITIMER_REAL)[0] > period_s
    long_unit_ticks = len(sensor.inside)
    deadline = time.monotonic() + 60
    while False not in sensor.by_timer[long_unit_ticks:]:  # the polls take the ticks again after the long unit
        assert time.monotonic() < deadline, "the timer kept every tick after the long unit"
        units(recorder, work, 0.001, 1)
    recorder.stop()
    lines = [line for line in read_lines(tmp_path / "p.json") if line["mark"] == "tick"]
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert len(lines) == len(sensor.inside) and polled >= 1 and sum(sensor.inside) >= 3
    assert all(by_timer for by_timer, inside in zip(sensor.by_timer, sensor.inside) if inside)
    times = [0.0, *(line["t_s"] for line in lines)]
    after = [False, *sensor.by_timer]  # the start sample is polled too: the timer is armed past it
    # the timer is moved on at every polled tick: its first tick after one is 1.5 periods after the grid point
    # that follows (the start's: 2.5 periods after it)
    for k in range(1, len(times)):
        if after[k] and not after[k - 1]:
            assert times[k] - times[k - 1] >= (2.5 if k == 1 else 1.5) * period_s


@pytest.mark.parametrize("ticks", ["thread", "signal"])
def test_poll_takes_no_tick_with_other_sources_nor_after_stop(tmp_path, ticks):
    sensor = RampCounter()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=60.0, ticks=ticks)
    recorder.start()
    time.sleep(0.01)
    for _ in range(100):
        recorder.poll()
    recorder.stop()
    recorder.poll()
    assert [line["mark"] for line in read_lines(tmp_path / "p.json")] == ["start", "end"]
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_loop_ticks_fall_back_to_the_thread_outside_the_main_thread_and_poll_does_nothing(tmp_path):
    windows, reads_by_poll = {}, []

    def record():
        sensor = RampCounter()
        recorder = Recorder([sensor], tmp_path / "p.json", period_s=0.005, ticks="loop")
        recorder.start()
        wait_for_reads(sensor, 3)
        with recorder._lock:  # the thread takes no tick meanwhile
            before = sensor.reads
            time.sleep(0.02)
            recorder.poll()
            reads_by_poll.append(sensor.reads - before)
        windows["worker"] = recorder.stop()

    worker = threading.Thread(target=record)
    worker.start()
    worker.join()
    assert windows["worker"].ticks == "thread (loop refused: not in the main thread)"
    assert reads_by_poll == [0]


def test_the_timer_takes_no_tick_that_a_poll_has_just_taken(tmp_path, monkeypatch):
    """A timer that fires while a poll takes a grid point's tick (its handler runs right after) takes no second
    one: one tick at most per grid period, whoever takes it."""
    monkeypatch.setattr("measure.recorder.BACKSTOP_PERIODS", 10**6)
    period_s = 1.0
    recorder = Recorder([RampCounter()], tmp_path / "p.json", period_s=period_s, ticks="loop")
    recorder.start()
    time.sleep(1.05 * period_s)
    recorder.poll()  # takes the first grid point's tick
    signal.getsignal(signal.SIGALRM)(signal.SIGALRM, None)  # the timer's handler, as if it had fired meanwhile
    recorder.stop()
    assert [line["mark"] for line in read_lines(tmp_path / "p.json")] == ["start", "tick", "end"]


@pytest.mark.parametrize("ticks", ["signal", "loop"])
def test_a_period_shorter_than_a_millisecond_falls_back_to_the_thread(tmp_path, ticks):
    sensor = RampCounter()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=0.0001, ticks=ticks)
    recorder.start()
    wait_for_reads(sensor, 5)
    window = recorder.stop()
    assert window.ticks == f"thread ({ticks} refused: a period below 0.001 s)"
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL


def test_an_interrupt_right_after_the_handler_is_installed_leaves_it_restored(tmp_path, monkeypatch):
    real = signal.signal

    def installs_then_interrupted(signum, handler):
        previous = real(signum, handler)
        if handler is not signal.SIG_DFL:
            raise KeyboardInterrupt
        return previous

    monkeypatch.setattr("measure.recorder.signal.signal", installs_then_interrupted)
    recorder = Recorder([RampCounter()], tmp_path / "p.json", period_s=0.005, ticks="loop")
    with pytest.raises(KeyboardInterrupt):
        recorder.start()
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)

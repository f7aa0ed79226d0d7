import errno
import json
import os
import subprocess
import sys
import time

import psutil
import pytest
from fakes import ManualClock

from measure.recorder import Recorder
from measure.sensors import process, procstat
from measure.sensors.base import MEASURED, SensorError


def test_channels_and_domains():
    sensor = process.probe()
    assert sensor.available and sensor.name == "process"
    assert sensor.channels == ("process.cpu_s", "process.cpu_share", "process.rss_mib", "process.uss_mib",
                               "host.busy_cpu_s")
    tree, host = sensor.domains
    assert tree.name == "process" and tree.source == MEASURED
    assert tree.details == {"refresh_s": 1.0}
    assert host.name == "host" and host.source == MEASURED and host.channels == ("host.busy_cpu_s",)
    assert host.details == {"logical_cpus": psutil.cpu_count(), "min_interval_s": 0.05}
    assert sensor.unavailable == {}


class FailingProcStat:
    """``procstat.ProcStatTimes`` whose reads fail with EIO after ``reads`` of them (never, by default)."""

    def __init__(self, reads: int = -1):
        self.real, self.reads = procstat.ProcStatTimes(), reads

    def __call__(self):
        return self.parse(self.raw())

    def raw(self):
        if self.reads == 0:
            raise OSError(errno.EIO, "Input/output error")
        self.reads -= 1
        return self.real.raw()

    def parse(self, raw):
        return self.real.parse(raw)

    def close(self):
        self.real.close()


def test_without_proc_stat_at_open_the_host_domain_is_left_out_and_reported():
    sensor = process.probe(proc_stat=lambda: FailingProcStat(reads=0))
    assert [d.name for d in sensor.domains] == ["process"]
    assert sensor.channels == ("process.cpu_s", "process.cpu_share", "process.rss_mib", "process.uss_mib")
    assert sensor.unavailable == {"process:host": "cannot read /proc/stat: [Errno 5] Input/output error"}
    assert sensor.read()["process.rss_mib"] > 10


def test_proc_stat_failing_mid_run_nulls_only_the_host_channel():
    sensor = process.probe(proc_stat=lambda: FailingProcStat(reads=2))  # the probe's check and the open's
    with pytest.raises(SensorError, match="/proc/stat: .*Input/output error") as caught:
        sensor.read()
    assert set(caught.value.values) == set(process.CHANNELS)


def test_host_busy_cpu_s_is_the_machine_busy_time_and_grows_at_least_by_this_process_cpu_time():
    sensor = process.probe()
    before = procstat.busy_total(psutil.cpu_times())[0]
    first, own_before = sensor.read()["host.busy_cpu_s"], time.process_time()
    after = procstat.busy_total(psutil.cpu_times())[0]
    assert before - 0.01 <= first <= after + 0.01
    _spin_cpu(0.2)
    own_s = time.process_time() - own_before
    second = sensor.read()["host.busy_cpu_s"]
    assert second - first >= own_s - TOLERANCE_S  # the machine's busy time holds this process's


def test_ticks_read_proc_stat_at_most_every_min_interval_and_the_edges_always(monkeypatch):
    clock = ManualClock()
    monkeypatch.setattr(process, "time", clock)
    sensor = process.probe()
    edge = sensor.capture()
    clock.advance(procstat.MIN_INTERVAL_S / 2)
    tick = sensor.capture_tick()
    assert tick[6] is edge[6]  # the bytes read at the edge, repeated
    time.sleep(procstat.SAME_READ_S)  # reads closer than this are one instant's, whoever made them
    edge = sensor.capture()
    assert edge[6] is not tick[6]  # an edge reads again at once
    clock.advance(procstat.MIN_INTERVAL_S)
    time.sleep(procstat.SAME_READ_S)
    assert sensor.capture_tick()[6] is not edge[6]


def test_cpu_s_is_cumulative_and_its_growth_over_time_is_the_share():
    sensor = process.probe()
    first = _bracketed(sensor.read)
    _spin_cpu(0.2)
    second = _bracketed(sensor.read)
    grown_s = second[0]["process.cpu_s"] - first[0]["process.cpu_s"]
    (_, (w0, c0), (w1, c1)), (_, (w2, c2), (w3, c3)) = first, second
    assert c2 - c1 <= grown_s <= c3 - c0  # this process's own CPU time, to the nanosecond
    assert second[0]["process.cpu_share"] * (w2 - w1) <= grown_s <= second[0]["process.cpu_share"] * (w3 - w0)
    assert first[0]["process.cpu_s"] >= c0  # this process's own time counts since it began


def test_a_descendant_found_gone_before_its_reap_shows_counts_once_when_it_does():
    """Readings as the kernel can hand them out: the child is read, then found gone while its parent's
    reaped time (read first, in the same capture) does not hold it yet; the next capture shows the reap."""
    sensor = process.probe()
    now, own_s, own_reaped_s, statm, _, uss, stat = sensor.capture()
    child = psutil.Process()  # any process stands for the child: only its identity is used

    def reading(t, reaped_s, child_counters):
        return now + t, own_s, own_reaped_s + reaped_s, statm, [(child, child_counters)], uss, stat

    counted = [sensor.decode(raw)["process.cpu_s"] for raw in (
        reading(0.0, 0.0, (5.0, 1.0, 0)),  # first reading: 6 s run before, not counted
        reading(1.0, 0.0, (5.5, 1.0, 0)),  # ran 0.5 s
        reading(2.0, 0.0, None),  # gone: exited and reaped, its time not yet seen in its parent's
        reading(3.0, 6.8, None),  # the reap shows: 6.8 s, of which 6.5 already read
        reading(4.0, 7.0, None),  # another child, never listed, reaped: 0.2 s
    )]
    steps = [b - a for a, b in zip(counted, counted[1:])]
    assert steps == pytest.approx([0.5, 0.0, 0.3, 0.2])


def test_memory_in_sane_ranges():
    sensor = process.probe(refresh_s=0)
    values = sensor.read()
    rss_mib = psutil.Process().memory_info().rss / 2**20
    assert values["process.rss_mib"] == pytest.approx(rss_mib, rel=0.2)
    assert 5 < values["process.rss_mib"] < 64 * 1024
    assert values["process.uss_mib"] is not None
    assert 1 < values["process.uss_mib"] <= values["process.rss_mib"]


def _bracketed(take):
    """``take()``, with the monotonic clock and this process's CPU time just before and just after it."""
    before = time.monotonic(), time.process_time()
    result = take()
    return result, before, (time.monotonic(), time.process_time())


def _share_bounds(first, second):
    """The least and most CPU share this process can have had between two bracketed readings."""
    (_, (w0, c0), (w1, c1)), (_, (w2, c2), (w3, c3)) = first, second
    return (c2 - c1) / (w3 - w0), (c3 - c0) / (w2 - w1)


def _spin_cpu(seconds):
    """Keep a core busy until this process has run ``seconds`` of CPU time, however loaded the machine."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_share_is_this_process_cpu_time_per_second_busy_or_sleeping():
    sensor = process.probe()
    start = _bracketed(sensor.read)
    time.sleep(0.3)
    slept = _bracketed(sensor.read)
    _spin_cpu(0.2)
    spun = _bracketed(sensor.read)
    for (values, _, _), (low, high) in ((slept, _share_bounds(start, slept)), (spun, _share_bounds(slept, spun))):
        assert low <= values["process.cpu_share"] <= high
    assert slept[0]["process.cpu_share"] < spun[0]["process.cpu_share"]


def test_captures_decoded_after_the_fact_measure_the_busy_stretch():
    sensor = process.probe()
    start = _bracketed(sensor.capture)
    time.sleep(0.3)
    slept = _bracketed(sensor.capture)
    _spin_cpu(0.2)
    spun = _bracketed(sensor.capture)
    values = [sensor.decode(raw) for raw, _, _ in (start, slept, spun)]  # decoded later, in capture order
    assert _share_bounds(start, slept)[0] <= values[1]["process.cpu_share"] <= _share_bounds(start, slept)[1]
    assert _share_bounds(slept, spun)[0] <= values[2]["process.cpu_share"] <= _share_bounds(slept, spun)[1]
    assert values[2]["process.rss_mib"] > 10


def test_ticks_read_memory_at_most_every_memory_interval_but_the_cpu_clock_every_time(monkeypatch):
    clock = ManualClock()
    monkeypatch.setattr(process, "time", clock)
    sensor = process.probe()
    edge = sensor.capture()
    tick = sensor.capture_tick()
    _spin_cpu(0.01)
    clock.advance(process.MEMORY_INTERVAL_S / 2)
    later_tick = sensor.capture_tick()
    assert tick[3] is edge[3] and later_tick[3] is edge[3]  # the statm bytes read at the edge, repeated
    assert later_tick[1] > tick[1] > edge[1] - 1e-9  # this process's CPU clock, read each time
    clock.advance(process.MEMORY_INTERVAL_S / 2)
    assert sensor.capture_tick()[3] is not edge[3]
    assert all(sensor.decode(raw)["process.rss_mib"] > 10 for raw in (edge, tick, later_tick))


# The tree's CPU time over a recorder's window, with real child processes: the window's CPU time of the
# tree is compared with what the test reads of the child and of itself around the window, never with the
# machine's speed or load.

SPIN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass"
# "loop" without polls: its backstop timer takes every tick (the polled ticks have tests of their own)
TICKS = pytest.mark.parametrize("ticks", ["thread", "signal", "loop"])
TOLERANCE_S = 0.03  # clock ticks (10 ms) of the readings compared


def _spinning_child(seconds: float) -> subprocess.Popen:
    """A child that keeps a core busy until it has run ``seconds`` of CPU time, then exits."""
    return subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=seconds)])


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _until(condition, timeout_s=60.0):
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "the machine is too loaded to run this test"
        time.sleep(0.01)


def _window_cpu_s(path) -> float:
    """The tree's CPU seconds between the window's edges, from its cumulative counter; checks that its CPU
    share integrates to the same."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["mark"] == "start" and lines[-1]["mark"] == "end" and not any(line["gap"] for line in lines)
    cpu_s = [line["process.cpu_s"] for line in lines]
    assert cpu_s == sorted(cpu_s)
    integrated_s = sum(b["process.cpu_share"] * (b["t_s"] - a["t_s"]) for a, b in zip(lines, lines[1:]))
    assert integrated_s == pytest.approx(cpu_s[-1] - cpu_s[0], abs=0.01)
    return cpu_s[-1] - cpu_s[0]


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _record_beside(child: subprocess.Popen, sensor, path, ticks: str, seconds: float):
    """Record ``sensor`` for ``seconds`` while ``child`` runs.  The child's CPU time over the window, read
    by the test just inside the window's edges and just outside them, and this process's just outside."""
    child_outside, own_before = _cpu_s(child.pid), _own_cpu_s()
    recorder = Recorder([sensor], path, period_s=0.02, ticks=ticks)
    recorder.start()
    child_inside = _cpu_s(child.pid)
    time.sleep(seconds)
    child_inside = _cpu_s(child.pid) - child_inside
    window = recorder.stop()
    return child_inside, _cpu_s(child.pid) - child_outside, _own_cpu_s() - own_before, window


@TICKS
def test_a_child_started_right_before_the_window_is_counted_from_the_window_start(tmp_path, ticks):
    sensor = process.probe()
    child = _spinning_child(60)
    try:
        child_inside, child_outside, own_s, window = _record_beside(child, sensor, tmp_path / "p.json", ticks, 1.0)
    finally:
        child.kill()
        child.wait()
        sensor.close()
    counted_s = _window_cpu_s(tmp_path / "p.json")
    assert child_inside - TOLERANCE_S <= counted_s <= child_outside + own_s + TOLERANCE_S
    assert counted_s <= window.duration_s * psutil.cpu_count()


@TICKS
def test_what_a_child_ran_before_the_window_is_not_counted(tmp_path, ticks):
    sensor = process.probe(refresh_s=0.5)  # listed at open, before the child starts; thread ticks list again
    child = _spinning_child(60)
    try:
        _until(lambda: _cpu_s(child.pid) >= 0.2)  # the child ran 0.2 s of CPU before the window
        # a listing falls due inside the window
        child_inside, child_outside, own_s, _ = _record_beside(child, sensor, tmp_path / "p.json", ticks, 1.0)
    finally:
        child.kill()
        child.wait()
        sensor.close()
    counted_s = _window_cpu_s(tmp_path / "p.json")
    assert child_inside - TOLERANCE_S <= counted_s <= child_outside + own_s + TOLERANCE_S


@TICKS
def test_a_child_reaped_inside_the_window_counts_once_from_the_window_start(tmp_path, ticks):
    sensor = process.probe()
    child = _spinning_child(0.6)
    _until(lambda: _cpu_s(child.pid) >= 0.1)  # what it runs before the window is not counted
    reaped_before, child_outside, own_before = os.times(), _cpu_s(child.pid), _own_cpu_s()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=0.02, ticks=ticks)
    recorder.start()
    child_inside = _cpu_s(child.pid)  # running, or exited and not yet reaped
    child.wait()  # it exits and is reaped inside the window: its time moves to this process's children_*
    time.sleep(0.1)
    recorder.stop()
    reaped_after, own_s = os.times(), _own_cpu_s() - own_before
    sensor.close()
    child_s = reaped_after.children_user + reaped_after.children_system \
        - reaped_before.children_user - reaped_before.children_system
    counted_s = _window_cpu_s(tmp_path / "p.json")
    assert child_s - child_inside - TOLERANCE_S <= counted_s <= child_s - child_outside + own_s + TOLERANCE_S


@TICKS
def test_a_child_that_exited_before_the_window_and_is_reaped_in_it_adds_nothing(tmp_path, ticks):
    sensor = process.probe()
    child = _spinning_child(0.2)
    _until(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE)  # exited, not yet reaped
    own_before = _own_cpu_s()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=0.02, ticks=ticks)
    recorder.start()
    child.wait()
    time.sleep(0.1)
    recorder.stop()
    own_window_s = _own_cpu_s() - own_before
    sensor.close()
    assert child.returncode == 0
    assert _window_cpu_s(tmp_path / "p.json") <= own_window_s + TOLERANCE_S


def test_vanished_child_is_not_an_error():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        sensor = process.probe(refresh_s=3600)  # lists the child once, at open
        with_child = sensor.read()["process.rss_mib"]
    finally:
        child.stdin.close()
        child.wait()
    without_child = sensor.read()["process.rss_mib"]  # still listed, gone
    assert without_child == pytest.approx(psutil.Process().memory_info().rss / 2**20, rel=0.2)
    assert with_child > without_child + 1

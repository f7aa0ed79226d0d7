import os
import subprocess
import sys
import time

import psutil
import pytest

from measure.sensors import process
from measure.sensors.base import MEASURED


def _busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_channels_and_domain():
    sensor = process.probe()
    assert sensor.available and sensor.name == "process"
    assert sensor.channels == ("process.cpu_share", "process.rss_mb", "process.uss_mb")
    (domain,) = sensor.domains
    assert domain.name == "process" and domain.source == MEASURED
    assert domain.details == {"refresh_s": 1.0}


def test_memory_in_sane_ranges():
    sensor = process.probe(refresh_s=0)
    values = sensor.read()
    rss_mb = psutil.Process().memory_info().rss / 2**20
    assert values["process.rss_mb"] == pytest.approx(rss_mb, rel=0.2)
    assert 5 < values["process.rss_mb"] < 64 * 1024
    assert values["process.uss_mb"] is not None
    assert 1 < values["process.uss_mb"] <= values["process.rss_mb"]


def test_cpu_share_rises_while_busy_and_falls_while_sleeping():
    sensor = process.probe()
    sensor.read()
    time.sleep(0.3)
    idle = sensor.read()["process.cpu_share"]
    _busy(0.3)
    busy = sensor.read()["process.cpu_share"]
    assert 0 <= idle < 0.2
    assert 0.5 < busy < 1.3  # other work may share the cores


def test_captures_decoded_after_the_fact_measure_the_busy_stretch():
    sensor = process.probe()
    sensor.read()
    time.sleep(0.3)
    after_sleep = sensor.capture()
    _busy(0.3)
    after_busy = sensor.capture()
    idle, busy = sensor.decode(after_sleep), sensor.decode(after_busy)  # decoded later, in capture order
    assert 0 <= idle["process.cpu_share"] < 0.2
    assert 0.5 < busy["process.cpu_share"] < 1.3
    assert busy["process.rss_mb"] > 10


def test_ticks_read_memory_at_most_every_memory_interval_but_the_cpu_clock_every_time():
    sensor = process.probe()
    edge = sensor.capture()
    tick = sensor.capture_tick()
    _busy(0.02)
    later_tick = sensor.capture_tick()
    assert tick[3] is edge[3] and later_tick[3] is edge[3]  # the statm bytes read at the edge, repeated
    assert later_tick[1] > tick[1] > edge[1] - 1e-9  # this process's CPU clock, read each time
    time.sleep(process.MEMORY_INTERVAL_S + 0.01)
    assert sensor.capture_tick()[3] is not edge[3]
    assert all(sensor.decode(raw)["process.rss_mb"] > 10 for raw in (edge, tick, later_tick))


def test_cpu_share_integrates_to_the_cpu_time_of_running_and_exited_children():
    spin = "import time\nend = time.time() + 0.6\nwhile time.time() < end: pass"
    before = os.times()
    sensor = process.probe(refresh_s=0)
    sensor.read()
    last = time.monotonic()
    cpu_s = 0.0

    def read_and_integrate():
        nonlocal last, cpu_s
        share = sensor.read()["process.cpu_share"]
        now = time.monotonic()
        cpu_s += share * (now - last)
        last = now
        return share

    child = subprocess.Popen([sys.executable, "-c", spin])
    time.sleep(0.3)
    read_and_integrate()  # lists the running child
    time.sleep(0.3)
    running = read_and_integrate()
    child.wait()  # reaped: its time moves into our children_* times
    time.sleep(0.3)
    read_and_integrate()

    after = os.times()
    child_cpu_s = after.children_user + after.children_system - before.children_user - before.children_system
    assert child_cpu_s > 0.3
    assert running > 0.3  # one busy child, on a machine that may have as few as 2 cores
    own_cpu_s = after.user + after.system - before.user - before.system
    assert child_cpu_s - 0.01 <= cpu_s <= child_cpu_s + own_cpu_s + 0.05


def test_vanished_child_is_not_an_error():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        sensor = process.probe(refresh_s=3600)  # lists the child once, at open
        with_child = sensor.read()["process.rss_mb"]
    finally:
        child.stdin.close()
        child.wait()
    without_child = sensor.read()["process.rss_mb"]  # still listed, gone
    assert without_child == pytest.approx(psutil.Process().memory_info().rss / 2**20, rel=0.2)
    assert with_child > without_child + 1

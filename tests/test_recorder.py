"""The recorder's file format, window edges and gap handling."""
from __future__ import annotations

import json
import threading
import time

import pytest

from measure.recorder import Recorder
from measure.sensors.base import Domain, MEASURED, SensorError


class RampCounter:
    """A sensor whose energy counter grows at ``power_w`` with real time (like RAPL/NVML)."""

    available = True

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

    def close(self):
        pass


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_window_edges_are_synchronous_and_ticks_fill_between(tmp_path):
    sensor = RampCounter()
    recorder = Recorder([sensor], tmp_path / "power_metrics.json", period_s=0.01)
    recorder.start()
    time.sleep(0.2)
    window = recorder.stop()
    lines = read_lines(tmp_path / "power_metrics.json")

    assert lines[0]["mark"] == "start" and lines[0]["t_s"] == 0.0
    assert lines[-1]["mark"] == "end"
    assert {line["mark"] for line in lines[1:-1]} == {"tick"}
    assert lines[-1]["t_s"] == pytest.approx(window.duration_s, abs=1e-6)
    assert window.samples == len(lines)
    assert 10 <= len(lines) - 2 <= 21  # about one tick per 10 ms over 0.2 s
    times = [line["t_s"] for line in lines]
    assert times == sorted(times)
    # the counter difference between the edges is the energy over exactly the window
    energy = lines[-1]["dev0.energy_j"] - lines[0]["dev0.energy_j"]
    assert energy == pytest.approx(sensor.power_w * window.duration_s, rel=0.02)
    assert "power-recorder" in sensor.threads and "MainThread" in sensor.threads


def test_every_line_has_the_same_keys_and_utc_time(tmp_path):
    with Recorder([RampCounter()], tmp_path / "p.json", period_s=0.005) as recorder:
        time.sleep(0.05)
    lines = read_lines(tmp_path / "p.json")
    assert {tuple(line) for line in lines} == {("t_s", "utc", "mark", "gap", "dev0.energy_j", "dev0.power_w")}
    assert all(line["utc"].endswith("Z") for line in lines)
    assert recorder.path.read_text().endswith("\n")


def test_no_tick_is_written_after_the_end_sample(tmp_path):
    for _ in range(20):
        recorder = Recorder([RampCounter()], tmp_path / "p.json", period_s=0.001)
        recorder.start()
        time.sleep(0.003)
        recorder.stop()
        marks = [line["mark"] for line in read_lines(tmp_path / "p.json")]
        assert marks[-1] == "end" and marks.count("end") == 1


def test_a_failing_read_is_a_gap_and_the_window_completes(tmp_path):
    sensor = RampCounter(fail_after=3)
    recorder = Recorder([sensor, RampCounter(name="other", domain="dev1")], tmp_path / "p.json", period_s=0.005)
    recorder.start()
    time.sleep(0.05)
    window = recorder.stop()
    lines = read_lines(tmp_path / "p.json")
    gaps = [line for line in lines if line["gap"]]
    assert gaps and all(line["gap"] == "ramp" for line in gaps)
    assert all(line["dev0.energy_j"] is None and line["dev1.energy_j"] > 0 for line in gaps)
    assert window.gap_samples == len(gaps)
    assert window.first_error.startswith("ramp at t=") and "device lost" in window.first_error
    assert lines[-1]["mark"] == "end"


def test_file_is_flushed_while_recording(tmp_path):
    recorder = Recorder([RampCounter()], tmp_path / "p.json", period_s=0.005)
    recorder.start()
    time.sleep(0.05)
    written_mid_run = read_lines(tmp_path / "p.json")
    recorder.stop()
    assert len(written_mid_run) >= 3


def test_rejects_a_non_positive_period(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        Recorder([], tmp_path / "p.json", period_s=0)


def test_a_failed_write_in_the_thread_is_raised_by_stop(tmp_path):
    import errno

    recorder = Recorder([RampCounter()], tmp_path / "p.json", period_s=0.005)
    recorder.start()
    real_file = recorder._file

    class FullDisk:  # the disk fills up while the thread writes a tick; the end line still fits
        def write(self, data):
            if "tick" in str(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_file.write(data)

        def flush(self):
            pass

        def close(self):
            real_file.close()

    recorder._file = FullDisk()
    time.sleep(0.03)
    with pytest.raises(OSError, match="No space left"):
        recorder.stop()
    assert not recorder._thread.is_alive()
    assert read_lines(tmp_path / "p.json")[-1]["mark"] == "end"

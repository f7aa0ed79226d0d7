import time
from collections import namedtuple

import pytest
from fakes import FakeGPU, ManualClock

from measure.sensors import Sensor, estimate, open_sensors, procstat
from measure.sensors.base import ESTIMATED

# psutil.cpu_times() on Linux (guest time is already counted in user time)
CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")


class ScriptedCpuTimes:
    """``psutil.cpu_times`` replaying the records a test appends."""

    def __init__(self, *records):
        self.records = list(records)

    def __call__(self):
        return self.records.pop(0)


def times(busy, idle, iowait=0.0, guest=0.0):
    """Busy time split over user/system/irq/softirq; ``guest`` is part of user, as Linux reports it."""
    return CpuTimes(busy * 0.6, 0.0, busy * 0.3, idle, iowait, busy * 0.05, busy * 0.05, 0.0, guest, 0.0)


def test_formula_exact_with_scripted_cpu_times():
    cpu_times = ScriptedCpuTimes(times(busy=100, idle=900), times(busy=130, idle=910, guest=20), times(busy=130, idle=950, guest=20))
    sensor = estimate.probe(200.0, cpu_times=cpu_times, min_interval_s=0)

    first = sensor.read()  # 30 s busy of 40 s: load 0.75 (guest time not counted twice)
    assert first["cpu_estimated.load"] == pytest.approx(0.75)
    assert first["cpu_estimated.power_w"] == pytest.approx(200 * (0.3 + 0.7 * 0.75))
    second = sensor.read()  # fully idle
    assert second == pytest.approx({"cpu_estimated.load": 0.0, "cpu_estimated.power_w": 60.0})


def test_captures_decoded_later_give_what_reads_give():
    records = (times(busy=100, idle=900), times(busy=130, idle=910), times(busy=130, idle=950))
    read = estimate.probe(200.0, cpu_times=ScriptedCpuTimes(*records), min_interval_s=0)
    split = estimate.probe(200.0, cpu_times=ScriptedCpuTimes(*records), min_interval_s=0)
    captured = [split.capture(), split.capture()]  # both taken before any is decoded
    assert [split.decode(raw) for raw in captured] == [read.read(), read.read()]


def test_ticks_closer_than_the_minimum_interval_repeat_the_last_values_without_reading(monkeypatch):
    clock = ManualClock()
    monkeypatch.setattr(estimate, "time", clock)
    cpu_times = ScriptedCpuTimes(times(10, 10), times(20, 10), times(20, 30), times(40, 30))
    sensor = estimate.probe(100.0, cpu_times=cpu_times, min_interval_s=0.05)
    assert sensor.capture_tick() is None  # at once after opening: /proc/stat is not read
    assert sensor.read() == {"cpu_estimated.power_w": 100.0, "cpu_estimated.load": 1.0}  # an edge always reads
    assert sensor.capture_tick() is None
    assert sensor.decode(None) == {"cpu_estimated.power_w": 100.0, "cpu_estimated.load": 1.0}
    assert len(cpu_times.records) == 2
    clock.advance(0.05)
    assert sensor.decode(sensor.capture_tick())["cpu_estimated.load"] == 0.0
    assert sensor.decode(sensor.capture())["cpu_estimated.load"] == 1.0  # at once, but an edge
    assert sensor.domains[0].details["min_interval_s"] == 0.05


def test_iowait_counts_as_idle():
    sensor = estimate.probe(100.0, cpu_times=ScriptedCpuTimes(times(10, 10), times(20, 20, iowait=10)), min_interval_s=0)
    assert sensor.read()["cpu_estimated.load"] == pytest.approx(10 / 30)


def test_reads_within_one_clock_tick_repeat_the_last_values():
    cpu_times = ScriptedCpuTimes(times(10, 10), times(10, 10), times(20, 10), times(20, 10), times(20, 30))
    sensor = estimate.probe(100.0, cpu_times=cpu_times, min_interval_s=0)
    assert sensor.read() == {"cpu_estimated.power_w": None, "cpu_estimated.load": None}
    assert sensor.read() == {"cpu_estimated.power_w": 100.0, "cpu_estimated.load": 1.0}
    assert sensor.read() == {"cpu_estimated.power_w": 100.0, "cpu_estimated.load": 1.0}
    assert sensor.read()["cpu_estimated.load"] == 0.0


def test_domain_is_labelled_estimated_with_its_model():
    sensor = estimate.probe(150.0, cpu_times=ScriptedCpuTimes(times(1, 1)), min_interval_s=0)
    assert sensor.name == "estimate" and sensor.available
    assert sensor.channels == ("cpu_estimated.power_w", "cpu_estimated.load")
    (domain,) = sensor.domains
    assert domain.name == "cpu_estimated" and domain.source == ESTIMATED
    assert domain.details["tdp_w"] == 150.0
    assert domain.details["tdp_source"] == "argument"
    assert domain.details["idle_fraction"] == 0.3
    assert domain.details["model"] == estimate.MODEL


def test_tdp_from_environment_then_default(monkeypatch):
    monkeypatch.setenv("MEASURE_CPU_TDP_W", "95")
    sensor = estimate.probe(cpu_times=ScriptedCpuTimes(times(1, 1)), min_interval_s=0)
    assert sensor.tdp_w == 95.0
    assert sensor.domains[0].details["tdp_source"] == "environment variable MEASURE_CPU_TDP_W"
    assert estimate.probe(40, cpu_times=ScriptedCpuTimes(times(1, 1)), min_interval_s=0).tdp_w == 40.0  # argument wins

    monkeypatch.delenv("MEASURE_CPU_TDP_W")
    assert estimate.probe(cpu_times=ScriptedCpuTimes(times(1, 1)), logical_cpus=16).tdp_w == 64.0
    assert estimate.probe(cpu_times=ScriptedCpuTimes(times(1, 1)), logical_cpus=256).tdp_w == 500.0


@pytest.mark.parametrize("bad", ["0", "-5", "watts", "nan", "inf"])
def test_invalid_tdp_raises(monkeypatch, bad):
    monkeypatch.setenv("MEASURE_CPU_TDP_W", bad)
    with pytest.raises(ValueError, match="MEASURE_CPU_TDP_W"):
        estimate.probe()


def test_real_cpu_times_give_a_load_in_range():
    sensor = estimate.probe(100.0)
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:
        pass
    values = sensor.read()
    assert 0.0 < values["cpu_estimated.load"] <= 1.0
    assert 30.0 < values["cpu_estimated.power_w"] <= 100.0


def test_proc_stat_times_are_psutils_record_from_raw_bytes():
    import psutil

    times = procstat.ProcStatTimes()
    try:
        raw = times.raw()
        reference = psutil.cpu_times()
        parsed = times.parse(raw)
    finally:
        times.close()
    assert isinstance(raw, bytes) and raw.startswith(b"cpu ")
    assert type(parsed) is type(reference)
    assert parsed == pytest.approx(reference, abs=0.5)  # read a moment apart, in 10 ms ticks


def test_reads_of_proc_stat_at_one_instant_regenerate_it_once(monkeypatch):
    """The estimate and the process sensor read /proc/stat at the same tick: one read serves both."""
    reads = []
    pread = procstat.os.pread
    monkeypatch.setattr(procstat.os, "pread", lambda *args: reads.append(args) or pread(*args))
    now = [time.monotonic() + 10.0]
    monkeypatch.setattr(procstat.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(procstat.ProcStatTimes, "_last", procstat.ProcStatTimes._last)  # restored after the test
    estimate_times, process_times = procstat.ProcStatTimes(), procstat.ProcStatTimes()
    try:
        first = estimate_times.raw()
        now[0] += procstat.SAME_READ_S / 2
        assert process_times.raw() == first and len(reads) == 1
        now[0] += procstat.SAME_READ_S
        process_times.raw()
        assert len(reads) == 2
    finally:
        estimate_times.close()
        process_times.close()


# open_sensors: the estimate only where RAPL gives no package counter


def test_open_sensors_prefers_rapl_to_the_estimate(powercap, fake_nvml):
    module = fake_nvml(FakeGPU())
    sensors, unavailable = open_sensors(rapl_root=str(powercap(sockets=2).root), cpu_tdp_w=100, nvml_module=module)
    assert [s.name for s in sensors] == ["nvml", "rapl", "process"]
    assert all(isinstance(s, Sensor) and s.available for s in sensors)
    assert unavailable == {}
    channels = [c for s in sensors for c in s.channels]
    assert len(channels) == len(set(channels))
    assert not any(c.startswith("cpu_estimated.") for c in channels)
    for sensor in sensors:
        sensor.close()
    assert module.init_count == 0


def test_open_sensors_estimates_without_rapl(tmp_path, fake_nvml):
    sensors, unavailable = open_sensors(
        rapl_root=str(tmp_path / "none"), cpu_tdp_w=100, nvml_module=fake_nvml(library_missing=True)
    )
    assert [s.name for s in sensors] == ["estimate", "process"]
    assert sensors[0].domains[0].source == ESTIMATED
    assert sensors[0].tdp_w == 100.0
    assert unavailable == {
        "nvml": "nvmlInit failed: NVML Shared Library Not Found",
        "rapl": f"no RAPL powercap interface at {tmp_path / 'none'} (virtual machine or unsupported CPU)",
    }


def test_open_sensors_estimates_where_rapl_reads_no_package_zone(powercap):
    tree = powercap(sockets=1, dram=True)
    (tree.zones["package-0"] / "energy_uj").write_text("not a number\n")
    sensors, unavailable = open_sensors(gpu=False, rapl_root=str(tree.root), cpu_tdp_w=100)
    assert [s.name for s in sensors] == ["rapl", "estimate", "process"]
    assert [d.name for d in sensors[0].domains] == ["dram-0"]
    assert set(unavailable) == {"nvml", "rapl:package-0"}
    for sensor in sensors:
        sensor.close()


def test_open_sensors_without_gpu(tmp_path):
    sensors, unavailable = open_sensors(gpu=False, rapl_root=str(tmp_path))
    assert [s.name for s in sensors] == ["estimate", "process"]
    assert unavailable["nvml"] == "not requested (gpu=False)"
    assert unavailable["rapl"] == f"no RAPL package zone under {tmp_path}"


def test_open_sensors_closes_what_it_opened_on_a_bad_tdp(tmp_path, fake_nvml):
    module = fake_nvml(FakeGPU())
    with pytest.raises(ValueError):
        open_sensors(rapl_root=str(tmp_path / "none"), cpu_tdp_w=-1, nvml_module=module)
    assert module.init_count == 0

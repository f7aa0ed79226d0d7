import os
import subprocess
import sys

import pynvml
import pytest
from fakes import FakeGPU, ManualClock

from measure.sensors import nvml, open_sensors
from measure.sensors.base import MEASURED, SensorError, Unavailable

MIB = 2**20


def test_reads_every_channel_in_its_unit(fake_nvml):
    gpu = FakeGPU(
        energy_mj=123_456_789,
        instant_power_mw=312_500,
        power_mw=250_000,
        sm_util_pct=87,
        mem_used_bytes=3 * 2**30,
        sm_clock_mhz=1755,
        temp_c=61,
        processes=[(os.getpid(), 1536 * MIB)],
    )
    module = fake_nvml(gpu)
    sensor = nvml.probe(module)

    assert sensor.available and sensor.name == "nvml"
    assert sensor.channels == tuple(f"gpu0.{m}" for m in (
        "energy_j", "power_w", "sm_util_pct", "mem_used_mib", "proc_mem_mib", "sm_clock_mhz", "temp_c"))
    assert sensor.read() == {
        "gpu0.energy_j": 123_456.789,
        "gpu0.power_w": 312.5,
        "gpu0.sm_util_pct": 87.0,
        "gpu0.mem_used_mib": 3072.0,
        "gpu0.proc_mem_mib": 1536.0,
        "gpu0.sm_clock_mhz": 1755.0,
        "gpu0.temp_c": 61.0,
    }
    gpu.energy_mj += 2_500  # the test drives the counter
    assert sensor.read()["gpu0.energy_j"] == 123_459.289

    (domain,) = sensor.domains
    assert domain.name == "gpu0" and domain.source == MEASURED and domain.counter_wrap_j is None
    assert domain.details["power_field"] == "instant"
    assert domain.details["device_name"] == gpu.name
    assert domain.details["uuid"] == gpu.uuid
    assert domain.details["driver_version"] == "550.54.15"
    assert domain.details["index"] == 0
    assert domain.details["unsupported"] == {}
    assert domain.details["pid_namespace"] in ("host", "separate")


def test_gpu_without_energy_counter_and_without_instant_power(fake_nvml):
    volta = FakeGPU(energy_mj=10_000, instant_power_mw=None, power_mw=200_000)
    pascal = FakeGPU(name="Tesla P100-PCIE-16GB", energy_mj=None, instant_power_mw=None, power_mw=31_000)
    sensor = nvml.probe(fake_nvml(volta, pascal))

    assert "gpu0.energy_j" in sensor.channels
    assert "gpu1.energy_j" not in sensor.channels
    assert "gpu1.power_w" in sensor.channels
    values = sensor.read()
    assert values["gpu0.energy_j"] == 10.0
    assert values["gpu0.power_w"] == 200.0
    assert values["gpu1.power_w"] == 31.0
    assert set(values) == set(sensor.channels)
    d0, d1 = sensor.domains
    assert d0.details["power_field"] == "average" and d0.details["unsupported"] == {}
    assert d1.details["power_field"] == "average"
    assert d1.details["unsupported"] == {"energy_j": "NVMLError_NotSupported: Not Supported"}
    assert d1.channels == tuple(c for c in sensor.channels if c.startswith("gpu1."))


def test_instant_power_is_read_once_per_device_per_read(fake_nvml):
    gpus = [FakeGPU(instant_power_mw=100_000), FakeGPU(instant_power_mw=200_000)]
    sensor = nvml.probe(fake_nvml(*gpus))
    before = [g.calls["nvmlDeviceGetFieldValues"] for g in gpus]
    values = sensor.read()
    assert [values["gpu0.power_w"], values["gpu1.power_w"]] == [100.0, 200.0]
    assert [g.calls["nvmlDeviceGetFieldValues"] - b for g, b in zip(gpus, before)] == [1, 1]
    assert all(g.calls["nvmlDeviceGetPowerUsage"] == 0 for g in gpus)


def test_ticks_read_energy_and_power_every_time_and_the_slow_metrics_at_most_every_slow_interval(
        fake_nvml, monkeypatch):
    clock = ManualClock()
    monkeypatch.setattr(nvml, "time", clock)
    gpu = FakeGPU(energy_mj=1_000_000, instant_power_mw=100_000, temp_c=50, processes=[(os.getpid(), 512 * MIB)])
    sensor = nvml.probe(fake_nvml(gpu))
    edge = sensor.read()
    gpu.energy_mj, gpu.instant_power_mw, gpu.temp_c = 1_000_500, 300_000, 70
    before = dict(gpu.calls)
    tick = sensor.capture_tick()
    assert tick["gpu0.energy_j"] == 1000.5 and tick["gpu0.power_w"] == 300.0  # read now
    assert tick["gpu0.temp_c"] == 50.0 and tick["gpu0.proc_mem_mib"] == edge["gpu0.proc_mem_mib"] == 512.0  # repeated
    assert set(tick) == set(sensor.channels)
    assert gpu.calls["nvmlDeviceGetTemperature"] == before["nvmlDeviceGetTemperature"]
    assert gpu.calls["nvmlDeviceGetComputeRunningProcesses"] == before["nvmlDeviceGetComputeRunningProcesses"]
    clock.advance(nvml.SLOW_INTERVAL_S / 2)
    assert sensor.capture_tick()["gpu0.temp_c"] == 50.0
    clock.advance(nvml.SLOW_INTERVAL_S / 2)
    assert sensor.capture_tick()["gpu0.temp_c"] == 70.0
    assert sensor.read()["gpu0.temp_c"] == 70.0  # an edge reads everything, always


def test_a_driver_without_the_process_listing_still_gives_energy_and_power(fake_nvml):
    """pynvml raises NVMLError_FunctionNotFound for a function the driver's library lacks (here
    nvmlDeviceGetComputeRunningProcesses_v3, which pynvml's nvmlDeviceGetComputeRunningProcesses calls)."""
    gpu = FakeGPU(energy_mj=5_000, instant_power_mw=90_000)
    sensor = nvml.probe(fake_nvml(gpu, missing_functions=frozenset({"nvmlDeviceGetComputeRunningProcesses"})))
    assert not isinstance(sensor, Unavailable)
    assert "gpu0.proc_mem_mib" not in sensor.channels
    assert sensor.domains[0].details["unsupported"] == {
        "proc_mem_mib": "NVMLError_FunctionNotFound: Function Not Found"}
    values = sensor.read()
    assert values["gpu0.energy_j"] == 5.0 and values["gpu0.power_w"] == 90.0


def test_any_nvml_error_at_open_drops_only_that_metric(fake_nvml):
    gpu = FakeGPU(errors={"nvmlDeviceGetTemperature": pynvml.NVML_ERROR_NO_PERMISSION,
                          "nvmlDeviceGetClockInfo": pynvml.NVML_ERROR_UNKNOWN})
    sensor = nvml.probe(fake_nvml(gpu))
    assert sensor.domains[0].details["unsupported"] == {
        "sm_clock_mhz": "NVMLError_Unknown: Unknown Error",
        "temp_c": "NVMLError_NoPermission: Insufficient Permissions",
    }
    assert sensor.channels == tuple(f"gpu0.{m}" for m in ("energy_j", "power_w", "sm_util_pct", "mem_used_mib",
                                                          "proc_mem_mib"))


def test_a_device_that_fails_to_open_is_reported_and_the_others_are_sampled(fake_nvml, powercap):
    lost = FakeGPU(uuid="GPU-lost", fail_after={"nvmlDeviceGetUUID": 0})
    barred = FakeGPU(uuid="GPU-barred", errors={"nvmlDeviceGetHandleByIndex": pynvml.NVML_ERROR_NO_PERMISSION})
    mute = FakeGPU(uuid="GPU-mute", errors={f: pynvml.NVML_ERROR_UNKNOWN for f in (
        "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage", "nvmlDeviceGetFieldValues",
        "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetComputeRunningProcesses",
        "nvmlDeviceGetClockInfo", "nvmlDeviceGetTemperature")})
    module = fake_nvml(lost, FakeGPU(uuid="GPU-fine", energy_mj=7_000), barred, mute)
    sensor = nvml.probe(module)
    assert [d.name for d in sensor.domains] == ["gpu1"] and sensor.domains[0].details["uuid"] == "GPU-fine"
    assert sensor.read()["gpu1.energy_j"] == 7.0
    assert set(sensor.unavailable) == {"nvml:gpu0", "nvml:gpu2", "nvml:gpu3"}
    assert sensor.unavailable["nvml:gpu0"] == "NVMLError_GpuIsLost: GPU is lost"
    assert sensor.unavailable["nvml:gpu2"] == "NVMLError_NoPermission: Insufficient Permissions"
    assert sensor.unavailable["nvml:gpu3"].startswith("no metric answered: energy_j: NVMLError_Unknown")
    sensor.close()

    sensors, unavailable = open_sensors(rapl_root=str(powercap().root), nvml_module=module)
    assert unavailable == dict(sensor.unavailable)  # surfaced with the sensors that could not be opened
    for opened in sensors:
        opened.close()
    assert module.init_count == 0


def test_a_device_lost_mid_run_nulls_only_its_channels(fake_nvml):
    fine, lost = FakeGPU(energy_mj=1_000), FakeGPU(energy_mj=2_000)
    sensor = nvml.probe(fake_nvml(fine, lost))
    sensor.read()
    lost.fail_after = {"nvmlDeviceGetTotalEnergyConsumption": 0}  # the first call of a read
    calls = sum(lost.calls.values())
    with pytest.raises(SensorError, match=r"^gpu1\.energy_j: NVMLError_GpuIsLost: GPU is lost \(and 6 more") as caught:
        sensor.read()
    assert set(caught.value.values) == {c for c in sensor.channels if c.startswith("gpu0.")}
    assert caught.value.values["gpu0.energy_j"] == 1.0
    assert sum(lost.calls.values()) == calls + 1  # its other metrics are not asked in that read
    with pytest.raises(SensorError) as tick:
        sensor.capture_tick()
    assert set(tick.value.values) == set(caught.value.values)


def test_a_metric_failing_mid_run_nulls_only_that_channel_and_ticks_repeat_the_failure(fake_nvml, monkeypatch):
    clock = ManualClock()
    monkeypatch.setattr(nvml, "time", clock)
    gpu = FakeGPU(energy_mj=1_000, temp_c=40)
    sensor = nvml.probe(fake_nvml(gpu))
    sensor.read()
    gpu.errors = {"nvmlDeviceGetTemperature": pynvml.NVML_ERROR_UNKNOWN}
    with pytest.raises(SensorError, match=r"^gpu0\.temp_c: NVMLError_Unknown: Unknown Error$") as caught:
        sensor.read()
    assert set(caught.value.values) == set(sensor.channels) - {"gpu0.temp_c"}
    gpu.energy_mj = 3_000
    with pytest.raises(SensorError) as tick:  # within SLOW_INTERVAL_S: temperature not asked, its failure repeated
        sensor.capture_tick()
    assert tick.value.values["gpu0.energy_j"] == 3.0 and "gpu0.temp_c" not in tick.value.values
    gpu.errors = {}
    clock.advance(nvml.SLOW_INTERVAL_S)
    assert sensor.capture_tick()["gpu0.temp_c"] == 40.0


def test_call_failing_mid_run_raises_sensor_error(fake_nvml):
    gpu = FakeGPU(fail_after={"nvmlDeviceGetTemperature": 3})  # probe's check + two reads
    sensor = nvml.probe(fake_nvml(gpu))
    sensor.read()
    sensor.read()
    with pytest.raises(SensorError, match=r"gpu0\.temp_c: NVMLError_GpuIsLost: GPU is lost") as caught:
        sensor.read()
    assert set(caught.value.values) == set(sensor.channels) - {"gpu0.temp_c"}


def test_library_missing_is_unavailable_with_a_reason(fake_nvml):
    result = nvml.probe(fake_nvml(FakeGPU(), library_missing=True))
    assert isinstance(result, Unavailable)
    assert result.sensor == "nvml"
    assert result.reason == "nvmlInit failed: NVML Shared Library Not Found"


def test_no_gpu_is_unavailable_and_shuts_nvml_down(fake_nvml):
    module = fake_nvml()
    result = nvml.probe(module)
    assert result == Unavailable("nvml", "NVML found no GPU")
    assert module.init_count == 0


def test_no_device_that_opens_is_unavailable_and_shuts_nvml_down(fake_nvml):
    module = fake_nvml(FakeGPU(fail_after={"nvmlDeviceGetName": 0}),
                       FakeGPU(errors={"nvmlDeviceGetHandleByIndex": pynvml.NVML_ERROR_UNKNOWN}))
    result = nvml.probe(module)
    assert result == Unavailable("nvml", "no GPU could be opened: gpu0: NVMLError_GpuIsLost: GPU is lost; "
                                         "gpu1: NVMLError_Unknown: Unknown Error")
    assert module.init_count == 0


def test_a_failing_count_is_unavailable(fake_nvml):
    module = fake_nvml(FakeGPU())

    def driver_gone():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    module.nvmlDeviceGetCount = driver_gone
    assert nvml.probe(module) == Unavailable("nvml", "NVML: Driver Not Loaded")
    assert module.init_count == 0


def test_close_shuts_nvml_down_once(fake_nvml):
    module = fake_nvml(FakeGPU())
    sensor = nvml.probe(module)
    assert module.init_count == 1
    sensor.close()
    sensor.close()
    assert module.init_count == 0


def test_import_does_not_touch_nvml():
    code = "import sys, measure.sensors; print('pynvml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_real_pynvml_without_a_driver_is_unavailable():
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        result = nvml.probe()
        assert isinstance(result, Unavailable)
        assert result.reason.startswith("nvmlInit failed: ")
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")


def test_process_memory_counts_this_process_tree_only(fake_nvml):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        gpu = FakeGPU(
            processes=[
                (os.getpid(), 1000 * MIB),
                (child.pid, 24 * MIB),
                (os.getppid(), 4096 * MIB),  # our parent: not ours
                (2**22 + 12345, 8192 * MIB),  # no such pid here (another PID namespace)
            ]
        )
        sensor = nvml.probe(fake_nvml(gpu))
        assert sensor.read()["gpu0.proc_mem_mib"] == 1024.0
        gpu.processes = [(os.getppid(), 4096 * MIB)]
        assert sensor.read()["gpu0.proc_mem_mib"] == 0.0
        gpu.processes = [(os.getpid(), 1000 * MIB), (child.pid, None)]  # driver cannot tell
        assert sensor.read()["gpu0.proc_mem_mib"] is None
    finally:
        child.kill()
        child.wait()

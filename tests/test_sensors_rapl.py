import errno
import os
import shutil

import pytest

from measure.sensors import rapl
from measure.sensors.base import MEASURED, SensorError, Unavailable


def test_packages_and_dram_of_several_sockets(powercap):
    tree = powercap(sockets=2, dram=True, core=True, uncore=True)
    tree.set_uj("package-0", 1_500_000)
    tree.set_uj("package-1", 2_250_000)
    tree.set_uj("dram-0", 10)
    tree.set_uj("dram-1", 3_000_000)
    tree.set_uj("core-0", 999_000_000)

    sensor = rapl.probe(str(tree.root))

    assert sensor.available and sensor.name == "rapl"
    assert sensor.channels == ("package-0.energy_j", "dram-0.energy_j", "package-1.energy_j", "dram-1.energy_j")
    assert sensor.read() == {
        "package-0.energy_j": 1.5,
        "dram-0.energy_j": 1e-5,
        "package-1.energy_j": 2.25,
        "dram-1.energy_j": 3.0,
    }
    domains = {d.name: d for d in sensor.domains}
    assert domains["package-1"].details == {"zone": "intel-rapl:1"}
    assert domains["dram-1"].details == {"zone": "intel-rapl:1:2"}  # after core and uncore
    assert all(d.source == MEASURED and d.sensor == "rapl" for d in sensor.domains)
    sensor.close()


def test_returns_raw_counters_across_a_wrap(powercap):
    tree = powercap(max_range_uj=262_143_328_850, dram_max_range_uj=65_712_999_613)
    sensor = rapl.probe(str(tree.root))
    wraps = {d.name: d.counter_wrap_j for d in sensor.domains}
    assert wraps == {"package-0": 262_143.328_850, "dram-0": 65_712.999_613}

    tree.set_uj("package-0", 262_143_000_000)
    assert sensor.read()["package-0.energy_j"] == 262_143.0
    tree.set_uj("package-0", 1_000_000)  # wrapped: the sensor reports the raw value
    assert sensor.read()["package-0.energy_j"] == 1.0


def test_missing_dram_gives_package_only(powercap):
    tree = powercap(sockets=1, dram=False)
    sensor = rapl.probe(str(tree.root))
    assert sensor.channels == ("package-0.energy_j",)
    assert [d.name for d in sensor.domains] == ["package-0"]


def test_psys_core_uncore_and_mmio_are_never_read(powercap):
    tree = powercap(sockets=1, dram=True, core=True, uncore=True, psys=True, mmio=True)
    tree.set_uj("psys", 7_000_000)
    sensor = rapl.probe(str(tree.root))
    assert sensor.channels == ("package-0.energy_j", "dram-0.energy_j")
    assert set(tree.zones) == {"package-0", "core-0", "uncore-0", "dram-0", "psys", "mmio-package-0"}


def test_no_powercap_directory(tmp_path):
    result = rapl.probe(str(tmp_path / "absent"))
    assert isinstance(result, Unavailable)
    assert result.sensor == "rapl"
    assert result.reason == f"no RAPL powercap interface at {tmp_path / 'absent'} (virtual machine or unsupported CPU)"


def test_powercap_without_a_package_zone(powercap):
    tree = powercap(sockets=0, psys=True)
    result = rapl.probe(str(tree.root))
    assert isinstance(result, Unavailable)
    assert result.reason == f"no RAPL package zone under {tree.root}"


def _permission_checks(message, root):
    assert "energy_uj" in message
    assert "CVE-2020-8694" in message
    assert f"sudo chmod -R a+r {root}/intel-rapl" in message
    assert "reboot" in message


def test_root_only_counter_through_the_opener(powercap):
    """As the kernel does for a 0400 root file opened by another user: open fails with EACCES."""
    tree = powercap(sockets=2)

    def opener(path, flags):
        if path.endswith("energy_uj"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return os.open(path, flags)

    result = rapl.probe(str(tree.root), opener=opener)
    assert isinstance(result, Unavailable)
    _permission_checks(result.reason, tree.root)


@pytest.mark.skipif(os.geteuid() == 0, reason="file modes do not bind root")
def test_root_only_counter_by_file_mode(powercap):
    tree = powercap(readable=False)
    result = rapl.probe(str(tree.root))
    assert isinstance(result, Unavailable)
    _permission_checks(result.reason, tree.root)


def test_read_failing_mid_run_raises_sensor_error(powercap):
    tree = powercap(sockets=2)
    sensor = rapl.probe(str(tree.root))
    sensor.read()
    counter = tree.zones["package-1"] / "energy_uj"
    counter.unlink()
    with pytest.raises(SensorError, match="package-1.energy_j"):
        sensor.read()
    shutil.rmtree(tree.zones["package-1"])
    counter.parent.mkdir()
    counter.mkdir()  # a path that opens but cannot be read
    with pytest.raises(SensorError, match="package-1.energy_j"):
        sensor.read()


def test_garbage_counter_makes_probe_unavailable(powercap):
    tree = powercap(dram=False)
    (tree.zones["package-0"] / "energy_uj").write_text("not a number\n")
    result = rapl.probe(str(tree.root))
    assert isinstance(result, Unavailable)
    assert result.reason.startswith(f"cannot read RAPL under {tree.root}:")


def test_a_zone_that_cannot_be_read_at_open_is_reported_and_the_others_are_sampled(powercap):
    tree = powercap(sockets=2)
    (tree.zones["package-1"] / "energy_uj").write_text("not a number\n")
    (tree.zones["dram-0"] / "name").unlink()  # its kind unknown: never read
    tree.set_uj("package-0", 2_000_000)
    sensor = rapl.probe(str(tree.root))
    assert [d.name for d in sensor.domains] == ["package-0", "dram-1"]
    assert sensor.read() == {"package-0.energy_j": 2.0, "dram-1.energy_j": 0.0}
    assert set(sensor.unavailable) == {"rapl:package-1", "rapl:intel-rapl:0:1"}
    assert sensor.unavailable["rapl:package-1"].startswith(f"cannot read RAPL under {tree.root}: invalid literal")
    assert "No such file or directory" in sensor.unavailable["rapl:intel-rapl:0:1"]


def test_a_zone_failing_mid_run_nulls_only_its_channel(powercap):
    tree = powercap(sockets=2, dram=False)
    sensor = rapl.probe(str(tree.root))
    tree.set_uj("package-0", 3_000_000)
    (tree.zones["package-1"] / "energy_uj").unlink()
    with pytest.raises(SensorError, match=r"^package-1\.energy_j: .*No such file") as caught:
        sensor.read()
    assert caught.value.values == {"package-0.energy_j": 3.0}

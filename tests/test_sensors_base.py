"""The defaults of the ``Sensor`` base class: a sensor that only reads."""
import pytest

from measure.sensors.base import MEASURED, Domain, Sensor


class Constant(Sensor):
    name = "constant"

    def __init__(self):
        self.domains = (Domain("dev0", self.name, MEASURED, ("dev0.power_w",)),)
        self.channels = self.domains[0].channels
        self.reads = 0

    def read(self):
        self.reads += 1
        return {"dev0.power_w": float(self.reads)}


def test_a_sensor_that_only_reads_captures_by_reading_and_decodes_to_the_reading_itself():
    sensor = Constant()
    assert sensor.capture() == {"dev0.power_w": 1.0}
    assert sensor.capture_tick() == {"dev0.power_w": 2.0}
    raw = sensor.capture()
    assert sensor.decode(raw) is raw
    assert sensor.refresh() is None and sensor.close() is None and sensor.reads == 3
    assert sensor.available


def test_a_sensor_must_read():
    class Mute(Sensor):
        name = "mute"

    with pytest.raises(TypeError, match="read"):
        Mute()

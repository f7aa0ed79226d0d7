"""The NVML phase test's arithmetic, on a counter simulated like NVML's (the test itself needs a GPU)."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import nvml_phase  # noqa: E402


def test_updates_and_period_of_a_counter_moving_every_100_ms():
    t = np.arange(0.0, 1.5, 0.001)
    readings = np.floor((t + 0.037) / 0.1) * 10.0  # updates 37 ms before each tenth of a second
    updates = nvml_phase.update_times(t, readings)
    assert nvml_phase.update_period(updates) == pytest.approx(0.1, abs=0.002)
    assert updates[0] == pytest.approx(0.063, abs=0.0015)
    with pytest.raises(ValueError, match="fewer than 3 times"):
        nvml_phase.update_period(updates[:2])


@pytest.mark.parametrize("phase", [0.0, 0.25, 0.5, 0.75])
def test_the_busy_part_starts_at_its_phase_after_an_update(phase):
    start = nvml_phase.next_start(last_update_s=10.063, period_s=0.1, phase=phase, now_s=11.0)
    assert start >= 11.0 and start - 11.0 < 0.1 + 1e-9
    offset = ((start - 10.063) / 0.1 - phase) % 1  # a whole number of periods after the phase's instant
    assert min(offset, 1 - offset) < 1e-9


def test_a_counter_that_sees_a_quarter_of_each_period_is_phase_dependent():
    # a square wave of 25 ms busy at 400 W, idle at 100 W, each 100 ms; a counter whose power covers only the
    # first 25 ms of each period sees the busy part at phase 0 and never at the other phases
    seen = {0.0: 400.0, 0.25: 100.0, 0.5: 100.0, 0.75: 100.0}
    energies = {phase: watts * 0.1 * 60 for phase, watts in seen.items()}
    table = nvml_phase.phase_table(energies, cycles=60)
    assert table["energy_per_cycle_j"]["0.00"] == pytest.approx(40.0)
    assert table["max_over_min"] == pytest.approx(4.0) and table["phase_dependent"]
    flat = nvml_phase.phase_table({phase: 1000.0 for phase in seen}, cycles=60)
    assert flat["max_over_min"] == 1.0 and not flat["phase_dependent"]

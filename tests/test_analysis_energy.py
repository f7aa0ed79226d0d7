"""Exact answers for the energy integrals: trapezoids, wrap-aware counters, windows, domain sums."""
import numpy as np
import pandas as pd
import pytest

from analysis.energy import (aligned_counter_energy, counter_energy, counter_glitches, interval_mean_energy,
                             trapezoid_energy, window, window_seconds)
from analysis.tables import combine_baselines, combine_domains, energy_domain

NAN = np.nan


def runs_of(*lengths):
    return np.repeat(np.arange(len(lengths)), lengths)


def test_trapezoid_constant_power_on_an_irregular_grid():
    t = np.array([0.0, 0.3, 1.1, 4.0, 10.0])
    energy, problems = trapezoid_energy(runs_of(5), t, np.full(5, 50.0), 1)
    assert energy == pytest.approx([500.0], rel=1e-12)
    assert problems.tolist() == [None]


def test_trapezoid_steps_are_linear_between_samples():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    energy, _ = trapezoid_energy(runs_of(4), t, np.array([10.0, 10.0, 30.0, 30.0]), 1)
    assert energy == pytest.approx([10.0 + 20.0 + 30.0])


def test_trapezoid_is_exact_for_a_ramp():
    t = np.array([0.0, 0.5, 3.0, 4.0])
    energy, _ = trapezoid_energy(runs_of(4), t, 2.0 * t, 1)  # integral of 2t over [0, 4]
    assert energy == pytest.approx([16.0], rel=1e-12)


def test_trapezoid_keeps_runs_and_segments_apart():
    run = runs_of(3, 4)
    t = np.array([0.0, 1.0, 2.0, 0.0, 1.0, 5.0, 6.0])
    segment = np.array([0, 0, 0, 0, 0, 1, 1])
    power = np.array([1.0, 1.0, 1.0, 10.0, 10.0, 20.0, 20.0])
    energy, _ = trapezoid_energy(run, t, power, 2, segment)
    assert energy == pytest.approx([2.0, 10.0 + 20.0])  # 1 s..5 s lies between segments: not integrated
    assert window_seconds(run, t, 2, segment) == pytest.approx([2.0, 2.0])
    assert window_seconds(run, t, 2) == pytest.approx([2.0, 6.0])


def test_trapezoid_refuses_to_cross_a_gap():
    energy, problems = trapezoid_energy(runs_of(3, 3), np.tile([0.0, 1.0, 2.0], 2),
                                        np.array([5.0, NAN, 5.0, 5.0, 5.0, 5.0]), 2)
    assert np.isnan(energy[0]) and energy[1] == pytest.approx(10.0)
    assert "1 power reading(s) missing" in problems[0] and problems[1] is None


def test_trapezoid_of_a_single_sample_is_nan_not_zero():
    energy, problems = trapezoid_energy(runs_of(1), np.array([0.0]), np.array([5.0]), 1)
    assert np.isnan(energy[0]) and "fewer than two samples" in problems[0]


def test_counter_difference_without_wrap():
    energy, problems = counter_energy(runs_of(3), np.array([1000.0, 1010.0, 1025.5]), np.array([NAN]), 1)
    assert energy == pytest.approx([25.5])
    assert problems.tolist() == [None]


def test_counter_that_wraps_once():
    energy, _ = counter_energy(runs_of(4), np.array([90.0, 95.0, 5.0, 20.0]), np.array([100.0]), 1)
    assert energy == pytest.approx([30.0])


def test_counter_that_wraps_several_times():
    # 4 J per step for 9 steps from 7 J, wrapping at 10 J: 36 J in all
    counter = (7.0 + 4.0 * np.arange(10)) % 10.0
    energy, _ = counter_energy(runs_of(10), counter, np.array([10.0]), 1)
    assert energy == pytest.approx([36.0])


def test_counters_of_several_runs_wrap_independently():
    counter = np.array([90.0, 10.0, 50.0, 60.0, 70.0, 5.0, 6.0])
    energy, _ = counter_energy(runs_of(3, 2, 2), counter, np.array([100.0, 100.0, 100.0]), 3)
    assert energy == pytest.approx([60.0, 10.0, 1.0])  # run 1 → run 2 drop is not a wrap


def test_counter_going_backwards_without_a_wrap_value_is_nan():
    energy, problems = counter_energy(runs_of(3, 2), np.array([10.0, 5.0, 8.0, 1.0, 2.0]), np.array([NAN, NAN]), 2)
    assert np.isnan(energy[0]) and "backwards 1 time(s)" in problems[0]
    assert energy[1] == pytest.approx(1.0)


def test_counter_gap_inside_the_window_costs_nothing_but_an_edge_gap_is_nan():
    energy, problems = counter_energy(runs_of(4, 3), np.array([70.0, NAN, 90.0, 5.0, 1.0, 2.0, NAN]),
                                      np.array([100.0, 100.0]), 2)
    assert energy[0] == pytest.approx(35.0)  # 70 → 90 → (wrap) 105
    assert np.isnan(energy[1]) and "edge" in problems[1]


def test_counter_with_one_sample_is_nan_not_zero():
    energy, problems = counter_energy(runs_of(1), np.array([5.0]), np.array([NAN]), 1)
    assert np.isnan(energy[0]) and "fewer than two samples" in problems[0]


def test_window_cuts_samples_outside_start_and_end():
    t = np.array([-0.5, 0.0, 1.0, 2.0, 2.5])
    mark = np.array(["tick", "start", "tick", "end", "tick"])
    win = window(runs_of(5), t, mark == "start", mark == "end", 1)
    assert win.mask.tolist() == [False, True, True, True, False]
    power = np.array([1000.0, 10.0, 10.0, 10.0, 1000.0])
    energy, _ = trapezoid_energy(runs_of(5)[win.mask], t[win.mask], power[win.mask], 1)
    assert energy == pytest.approx([20.0])
    assert win.has_start.all() and win.has_end.all()


def test_window_without_an_end_sample_runs_to_the_last_sample_and_says_so():
    t = np.array([0.0, 1.0, 2.0, 0.0, 3.0])
    mark = np.array(["start", "tick", "tick", "start", "end"])
    win = window(runs_of(3, 2), t, mark == "start", mark == "end", 2)
    assert win.t_end.tolist() == [2.0, 3.0]
    assert win.has_end.tolist() == [False, True] and win.has_start.tolist() == [True, True]


@pytest.mark.parametrize("sensor, reported", [("package-0", "cpu_package"), ("package-1", "cpu_package"),
                                              ("dram-0", "dram"), ("gpu1", "gpu1"), ("cpu_estimated", "cpu_estimated")])
def test_energy_domain(sensor, reported):
    assert energy_domain(sensor) == reported


def energy_rows(run, domain, energy_j, gaps, source, method):
    rows = pd.DataFrame({"run_id": run, "domain": domain, "quantity": "energy_j", "value": energy_j,
                         "source": source, "method": method, "note": None})
    return pd.concat([rows, rows.assign(quantity="gap_samples", value=gaps)], ignore_index=True)


def test_combine_domains_sums_sockets_and_devices():
    rows = energy_rows([0, 0, 0, 0, 0, 1, 1], ["package-0", "package-1", "gpu", "gpu1", "cpu_estimated", "gpu", "gpu1"],
                       [10.0, 20.0, 100.0, 50.0, 7.0, 100.0, NAN], [0, 1, 2, 0, 0, 0, 3],
                       ["measured"] * 4 + ["estimated"] + ["measured"] * 2,
                       ["counter", "counter", "counter", "trapezoid", "trapezoid", "counter", "counter"])
    out = combine_domains(rows).set_index(["run_id", "domain", "quantity"])
    assert out.loc[(0, "cpu_package", "energy_j"), "value"] == 30.0
    assert out.loc[(0, "cpu_package", "gap_samples"), "value"] == 1
    assert out.loc[(0, "gpu_node", "energy_j"), "value"] == 150.0  # the node total, apart from the model's gpu
    assert out.loc[(0, "gpu_node", "energy_j"), "method"] == "mixed"
    assert out.loc[(0, "gpu", "energy_j"), "value"] == 100.0
    assert out.loc[(0, "cpu_estimated", "energy_j"), "source"] == "estimated"
    assert np.isnan(out.loc[(1, "gpu_node", "energy_j"), "value"])  # a NaN member makes the sum NaN, never partial
    assert sorted(out.loc[0].index.get_level_values("domain").unique()) == [
        "cpu_estimated", "cpu_package", "gpu", "gpu1", "gpu_node"]


def test_combine_baselines_sums_like_the_energies():
    baselines = pd.DataFrame({"run_id": [0, 0, 0, 0, 1, 1], "domain": ["package-0", "package-1", "gpu0", "gpu1",
                                                                        "gpu0", "gpu1"],
                              "idle_power_w": [1.0, 2.0, 30.0, NAN, 30.0, 20.0], "note": None})
    out = combine_baselines(baselines, pd.Series({0: "gpu0", 1: "gpu0"})).set_index(["run_id", "domain"])
    assert out.loc[(0, "cpu_package"), "idle_power_w"] == 3.0
    assert out.loc[(0, "gpu"), "idle_power_w"] == 30.0 and np.isnan(out.loc[(0, "gpu1"), "idle_power_w"])
    assert out.loc[(1, "gpu1"), "idle_power_w"] == 20.0


def test_combine_domains_keeps_a_total_gpu_domain_of_its_own():
    rows = energy_rows([0, 0, 0], ["gpu_node", "gpu0", "gpu1"], [9.0, 4.0, 3.0], [0, 0, 0], ["measured"] * 3,
                       ["trapezoid"] * 3)
    out = combine_domains(rows).query("quantity == 'energy_j'").set_index("domain")["value"]
    assert out.to_dict() == {"gpu_node": 9.0, "gpu0": 4.0, "gpu1": 3.0}


RAPL_WRAP_J = 262143.328850  # a package counter's max_energy_range_uj / 1e6


def test_a_lone_near_zero_reading_is_a_glitch_not_a_wrap():
    # the counter: 200000, 200004, 0.2, 200012 J; counted as a wrap it gave 262,155 J
    counter = np.array([200000.0, 200004.0, 0.2, 200012.0])
    assert counter_glitches(runs_of(4), counter, np.array([RAPL_WRAP_J])).tolist() == [False, False, True, False]
    energy, problems = counter_energy(runs_of(4), counter, np.array([RAPL_WRAP_J]), 1)
    assert energy == pytest.approx([200012.0 - 200000.0]) and problems.tolist() == [None]


@pytest.mark.parametrize("reading", [300000.0, RAPL_WRAP_J, -3.0])
def test_a_reading_outside_the_counters_range_is_never_data(reading):
    counter = np.array([200000.0, 200004.0, reading, 200012.0])
    assert counter_glitches(runs_of(4), counter, np.array([RAPL_WRAP_J])).tolist() == [False, False, True, False]
    energy, _ = counter_energy(runs_of(4), counter, np.array([RAPL_WRAP_J]), 1)
    assert energy == pytest.approx([12.0])


def test_a_real_wrap_continues_from_near_zero():
    counter = np.array([262130.0, 262138.0, 3.0, 11.0])
    assert not counter_glitches(runs_of(4), counter, np.array([RAPL_WRAP_J])).any()
    energy, _ = counter_energy(runs_of(4), counter, np.array([RAPL_WRAP_J]), 1)
    assert energy == pytest.approx([11.0 + RAPL_WRAP_J - 262130.0], rel=1e-12)


def test_a_lone_backward_reading_is_dropped_and_the_rest_used():
    # RAPL wraps at 100 J: 45 → 44 is not a wrap (that would add 99 J) but a lone glitch; 60 → 2 is a wrap
    energy, problems = counter_energy(runs_of(5, 3), np.array([40.0, 45.0, 44.0, 50.0, 55.0, 50.0, 60.0, 2.0]),
                                      np.array([100.0, 100.0]), 2)
    assert energy == pytest.approx([15.0, 52.0]) and problems.tolist() == [None, None]
    # a counter that never wraps (NVML's): a lone low or high reading is dropped the same way
    for glitch in (5.0, 50.0):
        energy, _ = counter_energy(runs_of(5), np.array([10.0, 11.0, glitch, 13.0, 14.0]), np.array([NAN]), 1)
        assert energy == pytest.approx([4.0])


def test_a_counter_that_really_goes_backwards_is_nan_with_its_reason():
    # two readings in a row off the sequence are not a lone glitch
    energy, problems = counter_energy(runs_of(5), np.array([40.0, 50.0, 49.0, 48.0, 55.0]), np.array([100.0]), 1)
    assert np.isnan(energy[0]) and "not a wrap, and not a lone glitch" in problems[0]
    # a counter without a wrap value that restarts from a lower value (a driver reload)
    energy, problems = counter_energy(runs_of(6), np.array([1000.0, 1010.0, 1020.0, 5.0, 15.0, 25.0]),
                                      np.array([NAN]), 1)
    assert np.isnan(energy[0]) and "went backwards 1 time(s) but has no wrap value" in problems[0]


def test_a_glitch_at_the_last_reading_leaves_the_edge_unknown():
    counter = np.array([200000.0, 200004.0, 200008.0, 200012.0, 0.2])
    assert counter_glitches(runs_of(5), counter, np.array([RAPL_WRAP_J])).tolist() == [False] * 4 + [True]
    energy, problems = counter_energy(runs_of(5), counter, np.array([RAPL_WRAP_J]), 1)
    assert np.isnan(energy[0]) and problems[0] == "counter reading missing at a window edge"


def test_interval_means_stand_for_the_interval_ending_at_their_sample():
    # 10 W over the 0.5 s before the first reading, 20 W over the next 1 s, 30 W over 2 s; the last reading
    # follows a clock jump (its interval unknown): not integrated
    energy, problems, covered = interval_mean_energy(runs_of(4, 2), np.array([0.5, 1.0, 2.0, NAN, 1.0, 1.0]),
                                                     np.array([10.0, 20.0, 30.0, 99.0, 5.0, NAN]), 2)
    assert energy[0] == pytest.approx(5.0 + 20.0 + 60.0) and covered[0] == pytest.approx(3.5)
    assert np.isnan(energy[1]) and "1 power reading(s) missing" in problems[1]


# a counter that updates every 100 ms, like NVML's, sampled faster than it updates

def stepped_counter(energy_at, t_abs, update_s=0.1, phase_s=0.0):
    """What such a counter reads at ``t_abs``: the energy at its last update."""
    return energy_at(phase_s + np.floor((t_abs - phase_s) / update_s) * update_s)


def test_aligned_counter_is_exact_for_constant_power_where_the_plain_difference_is_not():
    start, duration = 3.0437, 5.03  # the window starts 43.7 ms after an update and ends 73.7 ms after one
    t = np.r_[np.arange(0.0, duration, 0.01), duration]
    counter = stepped_counter(lambda x: 150.0 * x, start + t)
    run = np.zeros(len(t), dtype=int)
    energy, aligned = aligned_counter_energy(run, t, counter, 1)
    plain, _ = counter_energy(run, counter, np.array([NAN]), 1)
    assert aligned[0]
    assert energy[0] == pytest.approx(150.0 * duration, rel=1e-9)
    assert abs(plain[0] / (150.0 * duration) - 1) > 5e-3  # 43.7 ms stale at the start, 73.7 ms at the end


def test_aligned_counter_follows_a_step_in_power():
    def energy_at(x):  # 100 W, then 300 W from t = 4.02 s
        return 100.0 * np.minimum(x, 4.02) + 300.0 * np.maximum(x - 4.02, 0.0)

    start, duration = 2.0, 4.0
    t = np.r_[np.arange(0.0, duration, 0.01), duration]
    counter = stepped_counter(energy_at, start + t, phase_s=0.071)
    truth = energy_at(start + duration) - energy_at(start)
    energy, aligned = aligned_counter_energy(np.zeros(len(t), dtype=int), t, counter, 1)
    plain, _ = counter_energy(np.zeros(len(t), dtype=int), counter, np.array([NAN]), 1)
    assert aligned[0]
    # each update is placed within half a sampling period (5 ms) of where it is; the plain difference is stale
    # by 29 ms at each edge, at 100 W then 300 W
    assert abs(energy[0] - truth) <= 300.0 * 0.005 * 2
    assert abs(plain[0] - truth) == pytest.approx(300.0 * 0.029 - 100.0 * 0.029, abs=1e-6)
    assert abs(plain[0] - truth) > 5 * abs(energy[0] - truth)


def test_aligned_counter_keeps_runs_apart():
    t = np.r_[np.arange(0.0, 2.0, 0.01), 2.0]
    counters = [stepped_counter(lambda x: w * x, s + t) for w, s in ((50.0, 0.013), (200.0, 7.055))]
    energy, aligned = aligned_counter_energy(runs_of(len(t), len(t)), np.r_[t, t], np.r_[counters[0], counters[1]], 2)
    assert aligned.all()
    assert energy == pytest.approx([100.0, 400.0], rel=1e-9)


@pytest.mark.parametrize("case", ["changes at every sample", "too few changes", "a missing reading", "a backward step",
                                  "a late sample at the first update", "a late sample at the last update"])
def test_aligned_counter_leaves_other_runs_to_the_plain_difference(case):
    t = np.r_[np.arange(0.0, 2.0, 0.01), 2.0]
    counter = stepped_counter(lambda x: 100.0 * x, 1.0 + t)
    if case == "changes at every sample":  # a RAPL-like counter: updated about every millisecond
        counter = 100.0 * (1.0 + t)
    elif case == "too few changes":
        t, counter = t[:25], counter[:25]
    elif case == "a missing reading":
        counter[50] = NAN
    elif case == "a backward step":
        counter[120:] -= 20.0  # more than one update's worth
    else:  # a tick put off by 0.6 s (a long C call) across the first or the last update used
        late = (t > 0.02) & (t < 0.62) if case.endswith("first update") else (t > 1.35) & (t < 1.95)
        t, counter = t[~late], counter[~late]
    energy, aligned = aligned_counter_energy(np.zeros(len(t), dtype=int), t, counter, 1)
    assert not aligned[0] and np.isnan(energy[0])

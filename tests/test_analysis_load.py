"""Loading our run trees: exact energies, tables' shapes, and every kind of bad input."""
import json
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import analysis.load
from analysis import AnalysisWarning, NoUsableRuns, load_study
from treegen import WRAP_J, write_run, write_tree

pytestmark = pytest.mark.filterwarnings("error::analysis.AnalysisWarning")  # a clean tree warns of nothing

DURATION, ITERATIONS = 2.0, 100


def energy(study, domain, column="energy_per_inference_j", run=0, input_size=64):
    rows = study.energies
    pick = (rows["domain"] == domain) & (rows["run"] == run) & (rows["input_size"] == input_size)
    assert pick.sum() == 1
    return rows.loc[pick, column].item()


def load_warned(root, *expected, **options):
    """Load ``root``; every regex of ``expected`` must match one of the AnalysisWarnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load_study(root, **options)
    messages = [str(w.message) for w in caught if issubclass(w.category, AnalysisWarning)]
    for pattern in expected:
        assert any(re.search(pattern, m) for m in messages), (pattern, messages)
    return study


def lines_of(folder):
    return (folder / "power_metrics.json").read_text().splitlines(keepends=True)


def rewrite(folder, lines):
    (folder / "power_metrics.json").write_text("".join(lines))


def edit_line(folder, index, **changes):
    lines = lines_of(folder)
    sample = json.loads(lines[index])
    sample.update(changes)
    lines[index] = json.dumps(sample) + "\n"
    rewrite(folder, lines)


def test_energies_of_a_clean_run_are_exact(tmp_path):
    write_run(tmp_path, iterations=ITERATIONS, duration_s=DURATION)
    study = load_study(tmp_path)
    for domain, watts in [("gpu0", 100.0), ("gpu", 100.0), ("cpu_package", 40.0), ("dram", 5.0),
                          ("cpu_estimated", 30.0)]:
        assert energy(study, domain, "energy_j") == pytest.approx(watts * DURATION, rel=1e-9)
        assert energy(study, domain) == pytest.approx(watts * DURATION / ITERATIONS, rel=1e-9)
        assert energy(study, domain, "mean_power_w") == pytest.approx(watts, rel=1e-9)
    methods = study.energies.set_index("domain")["method"].to_dict()
    assert methods == {"cpu_estimated": "trapezoid", "cpu_package": "counter", "dram": "counter",
                       "gpu": "counter", "gpu0": "counter"}
    sources = study.energies.set_index("domain")["source"].to_dict()
    assert sources["cpu_estimated"] == "estimated" and sources["gpu"] == "measured"
    assert study.energies["gaps"].tolist() == [0] * 5
    assert study.energies["dynamic_energy_per_inference_j"].isna().all()  # no idle baseline recorded


def test_tables_have_the_documented_columns(tmp_path):
    write_run(tmp_path)
    study = load_study(tmp_path)
    assert list(study.energies.columns) == [
        "model", "input_size", "run", "domain", "source", "method", "energy_j", "energy_per_inference_j",
        "idle_power_w", "dynamic_energy_per_inference_j", "mean_power_w", "gaps"]
    assert list(study.latencies.columns) == ["model", "input_size", "run", "iteration", "latency_s"]
    assert list(study.runs.columns[:24]) == [
        "model", "input_size", "run", "status", "weights", "device", "hardware_gpu", "hardware_cpu", "iterations",
        "warmup", "window_s", "period_s", "params", "flops_per_inference", "latency_median_s", "latency_mean_s",
        "sm_util_mean_pct", "gpu_mem_peak_mb", "gpu_proc_mem_peak_mb", "rss_peak_mb", "cpu_share_mean",
        "task", "format", "folder"]
    per_domain = ["energy_per_inference_j", "dynamic_energy_per_inference_j", "mean_power_w",
                  "energy_per_gflop_j", "source", "method"]
    domains = ["gpu", "cpu_estimated", "cpu_package", "dram", "gpu0"]
    assert list(study.runs.columns[24:]) == [f"{d}_{q}" for d in domains for q in per_domain]
    assert list(study.samples.columns) == ["model", "input_size", "run", "t_s", "utc", "mark", "domain", "metric",
                                           "value"]


def test_runs_table_values(tmp_path):
    write_run(tmp_path, latency_s=np.linspace(0.01, 0.03, ITERATIONS), flops_per_inference=4e9)
    run = load_study(tmp_path).runs.iloc[0]
    assert (run["model"], run["input_size"], run["run"], run["status"]) == ("resnet50", 64, 0, "complete")
    assert (run["device"], run["hardware_gpu"], run["hardware_cpu"]) == ("cuda:0", "Synthetic GPU", "Synthetic CPU")
    assert run["iterations"] == ITERATIONS and run["window_s"] == pytest.approx(DURATION)
    assert run["latency_median_s"] == pytest.approx(0.02) and run["latency_mean_s"] == pytest.approx(0.02)
    assert (run["sm_util_mean_pct"], run["gpu_mem_peak_mb"], run["gpu_proc_mem_peak_mb"]) == (90.0, 2000.0, 1500.0)
    assert (run["rss_peak_mb"], run["cpu_share_mean"]) == (1000.0, 1.0)
    assert run["gpu_energy_per_gflop_j"] == pytest.approx(100.0 * DURATION / ITERATIONS / 4.0)
    assert (run["gpu_source"], run["gpu_method"]) == ("measured", "counter")
    assert run["folder"] == "input_64/run_0" and run["format"] == "ours"


def test_latencies_table(tmp_path):
    write_run(tmp_path, iterations=5, latency_s=[0.1, 0.2, 0.3, 0.4, 0.5])
    latencies = load_study(tmp_path).latencies
    assert latencies["iteration"].tolist() == [0, 1, 2, 3, 4]
    assert latencies["latency_s"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_tree_of_models_sizes_and_runs_in_natural_order(tmp_path):
    write_tree(tmp_path, models=("alexnet", "bert"), input_sizes=(8, 16, 128), runs=2,
               power_w=lambda model, size, run: {"gpu0": size + run})
    study = load_study(tmp_path)
    assert list(study.runs[["model", "input_size", "run"]].itertuples(index=False, name=None)) == [
        (m, s, r) for m in ("alexnet", "bert") for s in (8, 16, 128) for r in (0, 1)]
    assert study.runs["gpu0_mean_power_w"].tolist() == pytest.approx([s + r for _ in "ab" for s in (8, 16, 128)
                                                                      for r in (0, 1)])


def test_two_gpus_are_kept_and_summed(tmp_path):
    write_run(tmp_path, power_w={"gpu0": 100.0, "gpu1": 50.0})
    study = load_study(tmp_path)
    assert energy(study, "gpu", "energy_j") == pytest.approx(150.0 * DURATION)
    assert energy(study, "gpu1", "energy_j") == pytest.approx(50.0 * DURATION)
    assert study.runs.loc[0, "sm_util_mean_pct"] == 90.0  # of the run's device only


def test_two_sockets_sum_into_cpu_package(tmp_path):
    write_run(tmp_path, power_w={"package-0": 40.0, "package-1": 35.0, "dram-0": 3.0, "dram-1": 4.0})
    study = load_study(tmp_path)
    assert energy(study, "cpu_package", "energy_j") == pytest.approx(75.0 * DURATION)
    assert energy(study, "dram", "energy_j") == pytest.approx(7.0 * DURATION)


def test_rapl_counter_wrapping_in_the_window(tmp_path):
    write_run(tmp_path, counter_start_j={"package-0": WRAP_J["package"] - 10.0, "dram-0": WRAP_J["dram"] - 1.0})
    raw = [json.loads(line)["package-0.energy_j"] for line in lines_of(tmp_path / "input_64" / "run_0")]
    assert min(raw) < 100.0 < max(raw)  # the file really wraps
    study = load_study(tmp_path)
    assert energy(study, "cpu_package", "energy_j") == pytest.approx(40.0 * DURATION, rel=1e-9)
    assert energy(study, "dram", "energy_j") == pytest.approx(5.0 * DURATION, rel=1e-9)


def test_gpu_without_counter_is_integrated(tmp_path):
    write_run(tmp_path, gpu_counter=False)
    study = load_study(tmp_path)
    assert energy(study, "gpu0", "method") == "trapezoid"
    assert energy(study, "gpu0", "energy_j") == pytest.approx(100.0 * DURATION)


def test_idle_baseline_gives_dynamic_energy(tmp_path):
    write_run(tmp_path, idle_power_w={"gpu0": 20.0, "package-0": 15.0, "dram": 2.0})
    study = load_study(tmp_path)
    assert energy(study, "gpu0", "idle_power_w") == 20.0
    assert energy(study, "gpu0", "dynamic_energy_per_inference_j") == pytest.approx(80.0 * DURATION / ITERATIONS)
    assert energy(study, "cpu_package", "dynamic_energy_per_inference_j") == pytest.approx(25.0 * DURATION / 100)
    assert energy(study, "dram", "idle_power_w") == 2.0  # a baseline given for the summed domain itself
    assert math.isnan(energy(study, "cpu_estimated", "dynamic_energy_per_inference_j"))


def test_samples_outside_the_window_are_not_integrated(tmp_path):
    folder = write_run(tmp_path)
    lines = lines_of(folder)
    before, after = json.loads(lines[0]), json.loads(lines[-1])
    before.update({"t_s": -0.5, "mark": "tick", "cpu_estimated.power_w": 1000.0})
    after.update({"t_s": DURATION + 0.5, "mark": "tick", "cpu_estimated.power_w": 1000.0})
    rewrite(folder, [json.dumps(before) + "\n", *lines, json.dumps(after) + "\n"])
    study = load_study(tmp_path)
    assert energy(study, "cpu_estimated", "energy_j") == pytest.approx(30.0 * DURATION)
    assert study.runs.loc[0, "window_s"] == pytest.approx(DURATION)


def test_incomplete_runs_are_left_out_or_flagged(tmp_path):
    write_run(tmp_path, run=0)
    write_run(tmp_path, run=1, status="failed")
    study = load_warned(tmp_path, r"1 incomplete run\(s\) left out.*run_1 \(failed\)")
    assert study.runs["run"].tolist() == [0]
    assert set(study.energies["run"]) == {0}
    kept = load_study(tmp_path, include_incomplete=True)
    assert kept.runs["status"].tolist() == ["complete", "failed"]


def test_samples_table_is_long(tmp_path):
    write_run(tmp_path, samples=11, power_w={"gpu0": 100.0})
    samples = load_study(tmp_path).samples
    assert len(samples) == 11 * (7 + 3)  # gpu0: 7 channels, process: 3
    power = samples[(samples["domain"] == "gpu0") & (samples["metric"] == "power_w")]
    assert power["value"].tolist() == [100.0] * 11
    assert power["mark"].tolist() == ["start"] + ["tick"] * 9 + ["end"]
    assert power["t_s"].tolist() == pytest.approx(np.linspace(0, DURATION, 11))
    assert power["utc"].iloc[0] == "2025-01-01T12:00:00.000000Z"


def test_chunked_parallel_parsing_gives_the_same_tables(tmp_path, monkeypatch):
    write_tree(tmp_path, input_sizes=(16, 32, 64), runs=4, power_w=lambda m, s, r: {"gpu0": s + r, "package-0": 9.0})
    whole = load_study(tmp_path)
    monkeypatch.setattr(analysis.load, "CHUNK_BYTES", 1)  # one file per chunk
    chunked = load_study(tmp_path)
    pd.testing.assert_frame_equal(whole.runs, chunked.runs)
    pd.testing.assert_frame_equal(whole.energies, chunked.energies)


def test_runs_with_different_sensors_load_together(tmp_path):
    write_run(tmp_path, run=0, power_w={"gpu0": 100.0})
    write_run(tmp_path, run=1, power_w={"gpu0": 100.0, "cpu_estimated": 30.0})
    study = load_study(tmp_path)
    assert sorted(study.energies.loc[study.energies["run"] == 1, "domain"]) == ["cpu_estimated", "gpu", "gpu0"]
    assert math.isnan(study.runs.loc[0, "cpu_estimated_energy_per_inference_j"])


# ---------------------------------------------------------------- bad input

def test_truncated_last_line_uses_the_sound_part(tmp_path):
    folder = write_run(tmp_path)
    lines = lines_of(folder)
    rewrite(folder, lines[:-1] + [lines[-1][:40]])  # crashed while writing the end sample
    study = load_warned(tmp_path, re.escape("1 unreadable line(s) skipped (line 21 (truncated last line))"),
                        "no 'end' sample, the window is incomplete")
    assert energy(study, "gpu0", "energy_j") == pytest.approx(100.0 * 1.9)  # up to the last sound sample
    assert math.isnan(energy(study, "gpu0"))  # window incomplete: no per-inference figure


def test_garbage_line_is_skipped_and_other_runs_are_untouched(tmp_path):
    write_run(tmp_path, run=0)
    folder = write_run(tmp_path, run=1)
    clean = load_study(tmp_path)
    lines = lines_of(folder)
    rewrite(folder, lines[:5] + ["<<garbage>>\n"] + lines[5:])
    study = load_warned(tmp_path, r"run_1.*1 unreadable line\(s\) skipped \(line 6\); the rest used")
    pd.testing.assert_frame_equal(study.energies, clean.energies)


def test_empty_file_skips_its_run(tmp_path):
    write_run(tmp_path, run=0)
    folder = write_run(tmp_path, run=1)
    rewrite(folder, [])
    study = load_warned(tmp_path, r"run_1.*power_metrics.json: empty; run skipped")
    assert study.runs["run"].tolist() == [0]


def test_nothing_usable_raises_one_line(tmp_path):
    rewrite(write_run(tmp_path), [])
    with pytest.warns(AnalysisWarning, match="empty"), pytest.raises(NoUsableRuns) as error:
        load_study(tmp_path)
    assert "\n" not in str(error.value)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(NoUsableRuns, match="no usable run folder"):
        load_study(tmp_path / "nothing")
    with pytest.raises(NoUsableRuns, match="not a folder"):
        load_study(tmp_path / "absent")


def test_missing_latency_file(tmp_path):
    folder = write_run(tmp_path)
    (folder / "latency.csv").unlink()
    study = load_warned(tmp_path, "no latency.csv; latency unknown")
    assert math.isnan(study.runs.loc[0, "latency_median_s"])
    assert energy(study, "gpu0") == pytest.approx(100.0 * DURATION / ITERATIONS)  # iterations from meta.json


def test_short_latency_file_and_bad_values(tmp_path):
    folder = write_run(tmp_path, iterations=4, latency_s=[0.1, 0.2, 0.3, 0.4])
    (folder / "latency.csv").write_text("latency_s\n0.1\nabc\n0.3\n")
    study = load_warned(tmp_path, re.escape("1 unreadable or negative latency value(s) skipped"),
                        "2 latencies for 4 iterations")
    assert study.runs.loc[0, "latency_median_s"] == pytest.approx(0.2)
    assert energy(study, "gpu0", run=0) == pytest.approx(100.0 * DURATION / 4)


def test_run_without_meta_is_skipped(tmp_path):
    write_run(tmp_path, run=0)
    (write_run(tmp_path, run=1) / "meta.json").unlink()
    study = load_warned(tmp_path, r"run_1.*our sample format but no meta.json; run skipped")
    assert study.runs["run"].tolist() == [0]


def test_unreadable_meta_is_skipped(tmp_path):
    write_run(tmp_path, run=0)
    (write_run(tmp_path, run=1) / "meta.json").write_text("{not json")
    assert load_warned(tmp_path, r"run_1.*meta.json: unreadable; run skipped").runs["run"].tolist() == [0]


def test_complete_meta_without_samples_is_reported(tmp_path):
    write_run(tmp_path, run=0)
    (write_run(tmp_path, run=1) / "power_metrics.json").unlink()
    study = load_warned(tmp_path, r"run_1.*marked complete but power_metrics.json is missing")
    assert study.runs["run"].tolist() == [0]


@pytest.mark.parametrize("bad", [float("nan"), -5.0, None])
def test_missing_or_impossible_power_leaves_that_domain_nan(tmp_path, bad):
    folder = write_run(tmp_path)
    edit_line(folder, 7, **{"cpu_estimated.power_w": bad})
    study = load_warned(tmp_path, r"cpu_estimated: 1 power reading.s. missing in the window; not integrated "
                                  "across gaps; its energy left NaN")
    assert math.isnan(energy(study, "cpu_estimated", "energy_j"))
    assert energy(study, "cpu_estimated", "gaps") == 1
    assert energy(study, "gpu0", "energy_j") == pytest.approx(100.0 * DURATION)  # the rest is used


def test_negative_reading_is_named(tmp_path):
    edit_line(write_run(tmp_path), 3, **{"cpu_estimated.power_w": -1.0})
    load_warned(tmp_path, r"run_0: 1 negative or infinite cpu_estimated.power_w reading.s. treated as missing")


def test_counter_gap_inside_the_window_is_counted_but_harmless(tmp_path):
    folder = write_run(tmp_path)
    edit_line(folder, 10, gap="nvml", **{f"gpu0.{m}": None for m in ("energy_j", "power_w", "sm_util_pct")})
    study = load_study(tmp_path)
    assert energy(study, "gpu0", "energy_j") == pytest.approx(100.0 * DURATION)
    assert energy(study, "gpu0", "gaps") == 1 and energy(study, "gpu", "gaps") == 1


def test_counter_gap_at_the_end_sample_is_nan(tmp_path):
    folder = write_run(tmp_path)
    edit_line(folder, -1, gap="nvml", **{"gpu0.energy_j": None})
    study = load_warned(tmp_path, "gpu0: counter reading missing at a window edge; its energy left NaN")
    assert math.isnan(energy(study, "gpu0")) and math.isnan(energy(study, "gpu"))


def test_counter_going_backwards_without_wrap_is_nan(tmp_path):
    folder = write_run(tmp_path)
    edit_line(folder, 10, **{"gpu0.energy_j": 5.0})
    study = load_warned(tmp_path, "gpu0: counter went backwards 1 time.s. but has no wrap value")
    assert math.isnan(energy(study, "gpu0", "energy_j"))
    assert energy(study, "cpu_package", "energy_j") == pytest.approx(40.0 * DURATION)


def test_a_counter_sampled_faster_than_it_updates_is_aligned_on_its_updates(tmp_path):
    folder = write_run(tmp_path, power_w={"gpu0": 100.0}, duration_s=3.0, samples=301, iterations=300)
    lines = [json.loads(line) for line in (folder / "power_metrics.json").read_text().splitlines()]
    for line in lines:  # as NVML's counter: updated every 100 ms, here 37 ms before the window starts
        line["gpu0.energy_j"] = 1000.0 + 100.0 * (math.floor((line["t_s"] + 0.037) / 0.1) * 0.1 - 0.037)
    (folder / "power_metrics.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    energies = load_study(tmp_path).energies.set_index("domain")
    assert energies.loc["gpu0", "method"] == "counter_aligned"
    assert energies.loc["gpu0", "energy_j"] == pytest.approx(300.0, rel=1e-6)

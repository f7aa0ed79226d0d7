"""Loading our run trees: exact energies, tables' shapes, and every kind of bad input."""
import json
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import analysis.readers.ours
from analysis import AnalysisWarning, NoUsableRuns, load_study
from treegen import WRAP_J, write_idle, write_run, write_tree

pytestmark = pytest.mark.filterwarnings("error::analysis.AnalysisWarning")  # a clean tree warns of nothing

DURATION, ITERATIONS = 2.0, 100


def energy(study, domain, column="energy_per_inference_j", run=0, input_size=64):
    """One per-run figure: the value of ``column`` (a quantity, or ``source``/``method``) of a run's domain."""
    rows = study.quantities
    quantity = "energy_j" if column in ("source", "method", "note") else column
    pick = ((rows["domain"] == domain) & (rows["quantity"] == quantity) & (rows["run"] == run)
            & (rows["input_size"] == input_size))
    assert pick.sum() == 1
    return rows.loc[pick, "value" if quantity == column else column].item()


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
    for domain, watts in [("gpu", 100.0), ("cpu_package", 40.0), ("dram", 5.0), ("cpu_estimated", 30.0)]:
        assert energy(study, domain, "energy_j") == pytest.approx(watts * DURATION, rel=1e-9)
        assert energy(study, domain) == pytest.approx(watts * DURATION / ITERATIONS, rel=1e-9)
        assert energy(study, domain, "energy_per_sample_j") == pytest.approx(watts * DURATION / ITERATIONS)
        assert energy(study, domain, "mean_power_w") == pytest.approx(watts, rel=1e-9)
    rows = study.select("energy_j")
    assert dict(zip(rows["domain"], rows["method"])) == {"cpu_estimated": "trapezoid", "cpu_package": "counter",
                                                          "dram": "counter", "gpu": "counter"}
    sources = dict(zip(rows["domain"], rows["source"]))
    assert sources["cpu_estimated"] == "estimated" and sources["gpu"] == "measured"
    assert study.select("gap_samples")["value"].tolist() == [0] * 4
    dynamic = study.quantities[study.quantities["quantity"] == "dynamic_energy_per_inference_j"]
    assert dynamic["value"].isna().all()  # no idle baseline recorded, and the reason says so
    assert set(dynamic["note"]) == {"no idle baseline recorded"}


def test_tables_have_the_documented_columns(tmp_path):
    write_run(tmp_path)
    study = load_study(tmp_path)
    identity = ["label", "model", "task", "input_size", "batch_size", "dtype", "execution", "threads", "device",
                "run"]
    assert study.dimensions == identity[:-1] and study.identity == identity
    assert list(study.runs.columns) == [
        "run_id", *identity, "status", "weights", "gpu_domain", "hardware_gpu", "hardware_cpu", "iterations",
        "warmup", "period_s", "window_s", "params", "flops_per_inference", "logical_cpus", "order", "format",
        "folder", "window_complete"]
    assert list(study.quantities.columns) == ["run_id", *identity, "domain", "quantity", "value", "unit", "source",
                                              "method", "note"]
    assert list(study.latencies.columns) == [*identity, "iteration", "latency_s"]
    assert list(study.samples.columns) == [*identity, "t_s", "utc", "mark", "domain", "metric", "value"]
    per_domain = {q for q in study.quantities.loc[study.quantities["domain"] == "gpu", "quantity"]}
    assert per_domain == {"energy_j", "energy_per_inference_j", "energy_per_sample_j", "mean_power_w",
                          "idle_power_w", "dynamic_energy_per_inference_j", "energy_per_gflop_j", "gap_samples",
                          "sm_util_mean_pct", "mem_used_peak_mib", "proc_mem_peak_mib"}
    units = study.quantities.drop_duplicates("quantity").set_index("quantity")["unit"]
    assert (units["energy_j"], units["mean_power_w"], units["latency_median_s"], units["rss_peak_mib"]) == \
        ("J", "W", "s", "MiB")


def test_runs_table_values(tmp_path):
    write_run(tmp_path, latency_s=np.linspace(0.01, 0.03, ITERATIONS), flops_per_inference=4e9)
    study = load_study(tmp_path)
    run = study.runs.iloc[0]
    assert (run["model"], run["input_size"], run["run"], run["status"]) == ("resnet50", 64, 0, "complete")
    assert (run["device"], run["hardware_gpu"], run["hardware_cpu"]) == ("cuda:0", "Synthetic GPU", "Synthetic CPU")
    assert (run["batch_size"], run["dtype"], run["execution"], run["threads"]) == (1, "fp32", "eager", 8)
    assert run["iterations"] == ITERATIONS and run["window_s"] == pytest.approx(DURATION)
    assert energy(study, "clock", "latency_median_s") == pytest.approx(0.02)
    assert energy(study, "clock", "latency_mean_s") == pytest.approx(0.02)
    assert energy(study, "clock", "latency_count") == ITERATIONS
    assert (energy(study, "gpu", "sm_util_mean_pct"), energy(study, "gpu", "mem_used_peak_mib"),
            energy(study, "gpu", "proc_mem_peak_mib")) == (90.0, 2000.0, 1500.0)
    assert (energy(study, "process", "rss_peak_mib"), energy(study, "process", "cpu_share_mean")) == (1000.0, 1.0)
    assert energy(study, "gpu", "energy_per_gflop_j") == pytest.approx(100.0 * DURATION / ITERATIONS / 4.0)
    assert (energy(study, "gpu", "source"), energy(study, "gpu", "method")) == ("measured", "counter")
    assert run["folder"] == "input_64/run_0" and run["format"] == "ours" and run["label"] == tmp_path.name
    wide = study.wide().iloc[0]
    assert wide["gpu_energy_per_inference_j"] == pytest.approx(2.0) and wide["latency_median_s"] == pytest.approx(0.02)
    assert (wide["gpu_source"], wide["gpu_method"]) == ("measured", "counter")


def test_batch_size_gives_energy_per_sample_and_adds_no_column_name(tmp_path):
    write_run(tmp_path / "b1", batch_size=1)
    write_run(tmp_path / "b8", batch_size=8, identity={"new_knob": "x"})
    study = load_study([tmp_path / "b1", tmp_path / "b8"])
    assert sorted(study.runs["batch_size"]) == [1, 8] and "new_knob" in study.dimensions
    per_sample = study.select("energy_per_sample_j", "gpu").set_index("batch_size")["value"]
    assert per_sample[8] == pytest.approx(per_sample[1] / 8)
    assert set(study.quantities["quantity"]) == set(load_study(tmp_path / "b1").quantities["quantity"])


def test_schema_1_trees_load_as_batch_1_fp32_eager(tmp_path):
    write_run(tmp_path, schema=1, device="cpu", power_w={"cpu_estimated": 30.0}, threads=2)
    study = load_study(tmp_path)
    run = study.runs.iloc[0]
    assert (run["batch_size"], run["dtype"], run["execution"], run["threads"]) == (1, "fp32", "eager", 2)
    assert energy(study, "process", "rss_peak_mib") == 1000.0  # rss_mb of schema 1, read as MiB
    assert energy(study, "cpu_estimated", "energy_j") == pytest.approx(30.0 * DURATION)


def test_a_newer_schema_is_refused_in_one_line(tmp_path):
    write_run(tmp_path, run=0)
    folder = write_run(tmp_path, run=1)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "schema": 99}))
    study = load_warned(tmp_path, r"run_1.*schema 99, newer than this package reads.*upgrade")
    assert study.runs["run"].tolist() == [0]


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
    assert study.wide()["gpu_mean_power_w"].tolist() == pytest.approx([s + r for _ in "ab" for s in (8, 16, 128)
                                                                       for r in (0, 1)])


def test_the_gpu_figure_is_the_models_device_and_the_node_total_is_apart(tmp_path):
    # the model on cuda:0 (gpu0: 2 J per inference), another job on gpu1 (5 J)
    write_run(tmp_path, power_w={"gpu0": 100.0, "gpu1": 250.0}, device="cuda:0")
    study = load_study(tmp_path)
    assert energy(study, "gpu") == pytest.approx(2.0)
    assert energy(study, "gpu1") == pytest.approx(5.0)
    assert energy(study, "gpu_node") == pytest.approx(7.0)
    assert energy(study, "gpu", "sm_util_mean_pct") == 90.0  # of the run's device only
    assert "gpu0" not in set(study.quantities["domain"])


def test_a_gpu_not_matched_to_the_model_is_attributed_to_no_run(tmp_path):
    write_run(tmp_path, power_w={"gpu0": 100.0, "gpu1": 250.0}, device="cuda:0", gpu_domain=None)
    study = load_study(tmp_path)
    assert "gpu" not in set(study.quantities["domain"])
    assert energy(study, "gpu0") == pytest.approx(2.0) and energy(study, "gpu_node") == pytest.approx(7.0)


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
    assert energy(study, "gpu", "method") == "trapezoid"
    assert energy(study, "gpu", "energy_j") == pytest.approx(100.0 * DURATION)


def test_idle_baseline_of_a_schema_1_tree_gives_dynamic_energy(tmp_path):
    write_run(tmp_path, idle_power_w={"gpu0": 20.0, "package-0": 15.0, "dram": 2.0}, schema=1)
    study = load_study(tmp_path)
    assert energy(study, "gpu", "idle_power_w") == 20.0
    assert energy(study, "gpu", "dynamic_energy_per_inference_j") == pytest.approx(80.0 * DURATION / ITERATIONS)
    assert energy(study, "cpu_package", "dynamic_energy_per_inference_j") == pytest.approx(25.0 * DURATION / 100)
    assert energy(study, "dram", "idle_power_w") == 2.0  # a baseline given for the summed domain itself
    assert math.isnan(energy(study, "cpu_estimated", "dynamic_energy_per_inference_j"))


def test_idle_recording_gives_the_baseline_at_load_time(tmp_path):
    write_run(tmp_path, idle_power_w={"gpu0": 20.0, "package-0": 15.0, "dram-0": 2.0})
    study = load_study(tmp_path)
    assert energy(study, "gpu", "idle_power_w") == pytest.approx(20.0)
    assert energy(study, "cpu_package", "idle_power_w") == pytest.approx(15.0)
    assert energy(study, "gpu", "dynamic_energy_per_inference_j") == pytest.approx(80.0 * DURATION / ITERATIONS)


def test_an_idle_recording_of_a_busy_machine_is_not_a_baseline(tmp_path):
    write_run(tmp_path, idle_power_w={"gpu0": 20.0})
    folder = write_run(tmp_path, run=1)
    recording = write_idle(tmp_path, {"gpu0": 20.0}, name="idle_busy.json",
                           extra={"host.busy_cpu_s": list(np.linspace(100.0, 104.0, 11)),  # 4 of 8 CPUs busy 1 s
                                  "process.cpu_s": list(np.linspace(5.0, 5.1, 11))})  # by other work
    meta = json.loads((folder / "meta.json").read_text())
    meta["idle"] = {"recording": recording}
    meta["sensors"]["host"] = {"sensor": "process", "source": "measured", "channels": ["host.busy_cpu_s"],
                               "counter_wrap_j": None, "logical_cpus": 8}
    (folder / "meta.json").write_text(json.dumps(meta))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load_study(tmp_path, cache=False)
    said = [str(w.message) for w in caught if re.search(r"idle_busy.json|idle: other processes", str(w.message))]
    assert len(said) == 1, said  # the busy recording, said once (not again as a window other work shared)
    assert re.search(r"idle_busy.json: idle baseline recorded while the machine was busy \(CPU load 50%", said[0])
    assert energy(study, "gpu", "idle_power_w", run=0) == pytest.approx(20.0)
    assert math.isnan(energy(study, "gpu", "dynamic_energy_per_inference_j", run=1))
    dynamic = study.quantities.query("run == 1 and domain == 'gpu' and quantity == 'dynamic_energy_per_inference_j'")
    assert "machine was busy" in dynamic["note"].item()


def test_a_stored_estimate_baseline_at_full_load_is_not_used(tmp_path):
    write_run(tmp_path, schema=1, device="cpu", power_w={"cpu_estimated": 30.0},
              idle_power_w={"cpu_estimated": 30.0})  # the estimate's TDP is 30 W in these trees: load 100 %
    folder = tmp_path / "input_64" / "run_0"
    meta = json.loads((folder / "meta.json").read_text())
    meta["sensors"]["cpu_estimated"].update({"sensor": "estimate", "tdp_w": 30.0, "idle_fraction": 0.3})
    (folder / "meta.json").write_text(json.dumps(meta))
    study = load_warned(tmp_path, r"estimated CPU load 100% of all CPUs\); not used")
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
    assert set(study.quantities["run"]) == {0}
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
    monkeypatch.setattr(analysis.readers.ours, "CHUNK_BYTES", 1)  # one file per chunk
    chunked = load_study(tmp_path)
    pd.testing.assert_frame_equal(whole.runs, chunked.runs)
    pd.testing.assert_frame_equal(whole.quantities, chunked.quantities)


def test_runs_with_different_sensors_load_together(tmp_path):
    write_run(tmp_path, run=0, power_w={"gpu0": 100.0})
    write_run(tmp_path, run=1, power_w={"gpu0": 100.0, "cpu_estimated": 30.0})
    study = load_study(tmp_path)
    assert sorted(study.select("energy_j").query("run == 1")["domain"]) == ["cpu_estimated", "gpu"]
    assert math.isnan(study.wide().loc[0, "cpu_estimated_energy_per_inference_j"])


# ---------------------------------------------------------------- bad input

def test_truncated_last_line_uses_the_sound_part(tmp_path):
    folder = write_run(tmp_path)
    lines = lines_of(folder)
    rewrite(folder, lines[:-1] + [lines[-1][:40]])  # crashed while writing the end sample
    study = load_warned(tmp_path, re.escape("1 unreadable line(s) skipped (line 21 (truncated last line))"),
                        "no 'end' sample, the window is incomplete")
    assert energy(study, "gpu", "energy_j") == pytest.approx(100.0 * 1.9)  # up to the last sound sample
    assert math.isnan(energy(study, "gpu"))  # window incomplete: no per-inference figure


def test_garbage_line_is_skipped_and_other_runs_are_untouched(tmp_path):
    write_run(tmp_path, run=0)
    folder = write_run(tmp_path, run=1)
    clean = load_study(tmp_path)
    lines = lines_of(folder)
    rewrite(folder, lines[:5] + ["<<garbage>>\n"] + lines[5:])
    study = load_warned(tmp_path, r"run_1.*1 unreadable line\(s\) skipped \(line 6\); the rest used")
    pd.testing.assert_frame_equal(study.quantities, clean.quantities)


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
    assert math.isnan(energy(study, "clock", "latency_median_s"))
    assert energy(study, "gpu") == pytest.approx(100.0 * DURATION / ITERATIONS)  # iterations from meta.json


def test_short_latency_file_and_bad_values(tmp_path):
    folder = write_run(tmp_path, iterations=4, latency_s=[0.1, 0.2, 0.3, 0.4])
    (folder / "latency.csv").write_text("latency_s\n0.1\nabc\n0.3\n")
    study = load_warned(tmp_path, re.escape("1 unreadable or negative latency value(s) skipped"),
                        "2 latencies for 4 iterations")
    assert energy(study, "clock", "latency_median_s") == pytest.approx(0.2)
    assert energy(study, "gpu", run=0) == pytest.approx(100.0 * DURATION / 4)


def test_run_without_meta_is_skipped(tmp_path):
    write_run(tmp_path, run=0)
    (write_run(tmp_path, run=1) / "meta.json").unlink()
    study = load_warned(tmp_path, r"run_1.*our sample format but no meta.json; run skipped")
    assert study.runs["run"].tolist() == [0]


def test_unreadable_meta_is_skipped(tmp_path):
    write_run(tmp_path, run=0)
    (write_run(tmp_path, run=1) / "meta.json").write_text("{not json")
    assert load_warned(tmp_path, r"run_1.*meta.json: not valid JSON; run skipped").runs["run"].tolist() == [0]


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
    assert energy(study, "cpu_estimated", "gap_samples") == 1
    assert energy(study, "gpu", "energy_j") == pytest.approx(100.0 * DURATION)  # the rest is used


def test_negative_reading_is_named(tmp_path):
    edit_line(write_run(tmp_path), 3, **{"cpu_estimated.power_w": -1.0})
    load_warned(tmp_path, r"run_0: 1 negative or infinite cpu_estimated.power_w reading.s. treated as missing")


def test_counter_gap_inside_the_window_is_counted_but_harmless(tmp_path):
    folder = write_run(tmp_path)
    edit_line(folder, 10, gap="nvml", **{f"gpu0.{m}": None for m in ("energy_j", "power_w", "sm_util_pct")})
    study = load_study(tmp_path)
    assert energy(study, "gpu", "energy_j") == pytest.approx(100.0 * DURATION)
    assert energy(study, "gpu", "gap_samples") == 1


def test_counter_gap_at_the_end_sample_is_nan(tmp_path):
    folder = write_run(tmp_path)
    edit_line(folder, -1, gap="nvml", **{"gpu0.energy_j": None})
    study = load_warned(tmp_path, "gpu0: counter reading missing at a window edge; its energy left NaN")
    assert math.isnan(energy(study, "gpu"))
    assert "counter reading missing at a window edge" in energy(study, "gpu", "note")


def set_channel(folder, channel, values):
    """Rewrite ``channel`` on every line of a run's samples."""
    lines = [json.loads(line) for line in lines_of(folder)]
    for line, value in zip(lines, values, strict=True):
        line[channel] = value
    rewrite(folder, [json.dumps(line) + "\n" for line in lines])


@pytest.mark.parametrize("glitch", [0.2, 300000.0])
def test_a_lone_rapl_reading_near_zero_or_above_the_wrap_is_dropped_not_counted_as_a_wrap(tmp_path, glitch):
    folder = write_run(tmp_path, power_w={"package-0": 40.0}, samples=4, duration_s=0.3)
    set_channel(folder, "package-0.energy_j", [200000.0, 200004.0, glitch, 200012.0])  # wraps at 262143.33 J
    study = load_warned(tmp_path, r"package-0: 1 counter reading.s. outside its range or breaking its sequence "
                                  r"dropped as glitches \(t_s = 0.2\)")
    assert energy(study, "cpu_package", "energy_j") == pytest.approx(12.0)  # not 262,155 J
    assert (energy(study, "cpu_package", "method"), energy(study, "cpu_package", "gap_samples")) == ("counter", 1)


def test_a_lone_nvml_glitch_is_dropped_but_a_counter_that_restarts_lower_is_nan(tmp_path):
    write_run(tmp_path, run=0)
    edit_line(tmp_path / "input_64" / "run_0", 10, **{"gpu0.energy_j": 5.0})
    folder = write_run(tmp_path, run=1)
    counter = [json.loads(line)["gpu0.energy_j"] for line in lines_of(folder)]
    set_channel(folder, "gpu0.energy_j", counter[:10] + [c - 150.0 for c in counter[10:]])  # a driver reload
    study = load_warned(tmp_path, r"run_0: gpu0: 1 counter reading.s. .* dropped as glitches \(t_s = 1\)",
                        r"run_1: gpu0: counter went backwards 1 time.s. but has no wrap value .not a lone glitch.; "
                        "its energy left NaN")
    assert energy(study, "gpu", "energy_j", run=0) == pytest.approx(100.0 * DURATION)
    assert math.isnan(energy(study, "gpu", "energy_j", run=1))
    assert energy(study, "cpu_package", "energy_j", run=1) == pytest.approx(40.0 * DURATION)


@pytest.mark.parametrize("moved_j", [0.0, 30.0])
def test_nvml_counter_over_a_window_shorter_than_its_update_falls_back_to_power(tmp_path, moved_j):
    # 30 ms at 300 W: the counter, which moves every ~100 ms, reads the same value at both edges (or moved
    # once, by a whole update's worth); the power readings give 300 W x 0.03 s
    folder = write_run(tmp_path, power_w={"gpu0": 300.0}, samples=2, duration_s=0.03, iterations=3)
    set_channel(folder, "gpu0.energy_j", [5000.0, 5000.0 + moved_j])
    study = load_warned(tmp_path, r"gpu0: the 0.03 s window is shorter than the counter's update period \(0.1 s\); "
                                  "its energy integrated from its power readings instead")
    assert energy(study, "gpu", "energy_j") == pytest.approx(300.0 * 0.03)
    assert energy(study, "gpu", "method") == "trapezoid (counter did not resolve the window)"
    assert "shorter than the counter's update period" in energy(study, "gpu", "note")


def test_a_counter_that_did_not_resolve_the_window_without_sound_power_readings_is_nan(tmp_path):
    folder = write_run(tmp_path, power_w={"gpu0": 300.0}, samples=2, duration_s=0.03, iterations=3)
    set_channel(folder, "gpu0.energy_j", [5000.0, 5000.0])
    set_channel(folder, "gpu0.power_w", [300.0, None])
    study = load_warned(tmp_path, r"gpu0: the 0.03 s window is shorter than the counter's update period \(0.1 s\), "
                                  r"and its power readings cannot replace it \(1 power reading.s. missing")
    assert math.isnan(energy(study, "gpu", "energy_j"))  # never 0 J
    assert "cannot replace it" in energy(study, "gpu", "note")


def test_a_counter_that_does_not_move_while_its_device_draws_power_is_never_zero(tmp_path):
    folder = write_run(tmp_path, power_w={"gpu0": 100.0, "package-0": 40.0})
    set_channel(folder, "gpu0.energy_j", [7000.0] * 21)  # stuck for 2 s while the power readings say 100 W
    set_channel(folder, "package-0.energy_j", [900.0] * 21)  # stuck while this process kept a CPU busy
    study = load_warned(tmp_path, r"gpu0: counter did not move over the 2 s window while its power readings show up "
                                  "to 100 W; its energy integrated from its power readings instead",
                        r"package-0: counter did not move over the 2 s window while this process used 1 CPUs; "
                        "its energy left NaN")
    assert energy(study, "gpu", "energy_j") == pytest.approx(100.0 * DURATION)
    assert energy(study, "gpu", "method") == "trapezoid (counter did not resolve the window)"
    assert math.isnan(energy(study, "cpu_package", "energy_j"))
    assert "did not move" in energy(study, "cpu_package", "note")


def test_a_sample_out_of_time_order_is_dropped(tmp_path):
    folder = write_run(tmp_path)
    edit_line(folder, 10, t_s=0.05, **{"cpu_estimated.power_w": 1000.0})  # the sample of 1.0 s says 0.05 s
    study = load_warned(tmp_path, r"run_0: 1 sample.s. out of time order dropped \(t_s = 0.05\)")
    assert energy(study, "cpu_estimated", "energy_j") == pytest.approx(30.0 * DURATION)
    assert energy(study, "gpu", "energy_j") == pytest.approx(100.0 * DURATION)


@pytest.mark.parametrize("odd", ["abc", True, [1.0], {"w": 1.0}])
def test_a_value_of_the_wrong_type_is_missing_with_a_warning(tmp_path, odd):
    folder = write_run(tmp_path)
    edit_line(folder, 7, **{"cpu_estimated.power_w": odd})
    study = load_warned(tmp_path, r"run_0.*1 value.s. not a number read as missing \(cpu_estimated.power_w at line 8\)",
                        "cpu_estimated: 1 power reading.s. missing in the window")
    assert math.isnan(energy(study, "cpu_estimated", "energy_j"))
    assert energy(study, "gpu", "energy_j") == pytest.approx(100.0 * DURATION)  # the rest of the run is used


def test_a_counter_sampled_faster_than_it_updates_is_aligned_on_its_updates(tmp_path):
    folder = write_run(tmp_path, power_w={"gpu0": 100.0}, duration_s=3.0, samples=301, iterations=300)
    lines = [json.loads(line) for line in (folder / "power_metrics.json").read_text().splitlines()]
    for line in lines:  # as NVML's counter: updated every 100 ms, here 37 ms before the window starts
        line["gpu0.energy_j"] = 1000.0 + 100.0 * (math.floor((line["t_s"] + 0.037) / 0.1) * 0.1 - 0.037)
    (folder / "power_metrics.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    study = load_study(tmp_path)
    assert energy(study, "gpu", "method", input_size=64) == "counter_aligned"
    assert energy(study, "gpu", "energy_j") == pytest.approx(300.0, rel=1e-6)


def with_cpu_counters(folder, busy_per_s, own_per_s, cpus=8):
    """Add the machine's and this process tree's cumulative CPU seconds to a run, growing at these rates."""
    lines = [json.loads(line) for line in lines_of(folder)]
    for line in lines:
        line["host.busy_cpu_s"] = 1000.0 + busy_per_s * line["t_s"]
        line["process.cpu_s"] = 50.0 + own_per_s * line["t_s"]
    rewrite(folder, [json.dumps(line) + "\n" for line in lines])
    meta = json.loads((folder / "meta.json").read_text())
    meta["sensors"]["host"] = {"sensor": "process", "source": "measured", "channels": ["host.busy_cpu_s"],
                               "counter_wrap_j": None, "logical_cpus": cpus}
    (folder / "meta.json").write_text(json.dumps(meta))


def test_other_work_on_the_machine_is_measured_and_warned_about(tmp_path):
    with_cpu_counters(write_run(tmp_path, run=0), busy_per_s=1.2, own_per_s=1.0)  # 0.2 of 8 CPUs: 2.5 %
    with_cpu_counters(write_run(tmp_path, run=1), busy_per_s=5.0, own_per_s=1.0)  # 4 of 8 CPUs: 50 %
    study = load_warned(tmp_path, r"run_1: other processes kept 50% of the machine's CPUs busy during the window")
    assert energy(study, "host", "other_cpu_load", run=0) == pytest.approx(0.025)
    assert energy(study, "host", "other_cpu_load", run=1) == pytest.approx(0.5)


def test_other_work_during_several_windows_is_one_warning_with_its_range(tmp_path):
    for run, busy_per_s in enumerate((5.0, 3.0, 1.2)):  # 50 %, 25 % and 2.5 % of 8 CPUs
        with_cpu_counters(write_run(tmp_path, run=run), busy_per_s=busy_per_s, own_per_s=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_study(tmp_path)
    said = [str(w.message) for w in caught if "other processes kept" in str(w.message)]
    assert len(said) == 1, said
    assert re.search(r"run_0 and 1 other run\(s\): other processes kept 25% to 50% of the machine's CPUs busy "
                     r"during their windows", said[0])


def test_a_cpu_estimate_over_a_window_shorter_than_a_clock_tick_is_noted(tmp_path):
    """/proc/stat counts CPU time in 10 ms ticks: over a 4 ms window the estimate's load is that of the
    readings around it. The figure stays (the model's power times the window), with the note."""
    write_run(tmp_path / "short", power_w={"cpu_estimated": 30.0}, duration_s=0.004, samples=2, iterations=1,
              device="cpu", gpu_domain=None)
    write_run(tmp_path / "long", power_w={"cpu_estimated": 30.0}, duration_s=0.5, samples=6, iterations=1,
              device="cpu", gpu_domain=None)
    rows = load_study(tmp_path, cache=False).quantities.query("domain == 'cpu_estimated' and quantity == 'energy_j'")
    short, long = (rows[rows["label"] == label].iloc[0] for label in ("short", "long"))
    assert short["value"] == pytest.approx(30.0 * 0.004) and long["value"] == pytest.approx(30.0 * 0.5)
    assert short["note"] == ("the 0.004 s window is shorter than /proc/stat's 0.01 s clock tick: the estimate's "
                             "load is that of the readings around it")
    assert pd.isna(long["note"])

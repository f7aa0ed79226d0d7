"""analysis.findings: the numbers the study notebooks quote, computed from synthetic studies with known answers."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from treegen import write_run

from analysis import export, findings, load_study, summarize

CPU_ONLY = {"cpu_estimated": 30.0}
GPU_RAPL = {"gpu0": 100.0, "package-0": 40.0, "dram-0": 5.0}


def study_of(tmp_path, sizes=(64, 128), runs=3, power_w=CPU_ONLY, device="cpu", latency=lambda size, run: None,
             iterations=100):
    for size in sizes:
        for run in range(runs):
            write_run(tmp_path, "resnet50", size, run, power_w=power_w, device=device, iterations=iterations,
                      latency_s=latency(size, run))
    return load_study(tmp_path)


def summary_of(sizes, latencies, model="bert"):
    """A long summary holding only the median latency of each size."""
    return pd.DataFrame({"model": model, "input_size": sizes, "domain": "clock", "quantity": "latency_median_s",
                         "median": latencies})


def test_headline_keeps_latency_and_energies_with_their_source(tmp_path):
    study = study_of(tmp_path)
    table = export.headline(summarize(study), ["cpu_estimated"])
    assert list(table.columns) == [
        "model", "input_size", "runs", "latency_s median", "latency_s 95% CI",
        "cpu_estimated_energy_per_inference_j median", "cpu_estimated_energy_per_inference_j 95% CI",
        "cpu_estimated source"]
    assert table["cpu_estimated_energy_per_inference_j median"].tolist() == [0.6, 0.6]  # 30 W x 2 s / 100
    assert table["cpu_estimated source"].tolist() == ["estimated", "estimated"]
    assert table["latency_s 95% CI"].str.endswith("(n < 5)").all()  # 3 runs: the CI is marked unreliable


def test_side_by_side_sets_medians_side_by_side(tmp_path):
    committed = summarize(study_of(tmp_path / "a", sizes=(64, 128)))
    fresh = summarize(study_of(tmp_path / "b", sizes=(128, 256), power_w={"cpu_estimated": 60.0}))
    table = findings.side_by_side(committed, fresh).set_index("input_size")
    assert table.index.tolist() == [64, 128, 256]
    energy = "cpu_estimated_energy_per_inference_j"
    assert table.at[128, f"{energy} committed"] == pytest.approx(0.6)
    assert table.at[128, f"{energy} fresh"] == pytest.approx(1.2)
    assert table.at[128, f"{energy} fresh/committed"] == pytest.approx(2.0)
    assert np.isnan(table.at[64, f"{energy} fresh"]) and np.isnan(table.at[256, f"{energy} committed"])
    assert table.at[128, "n_runs committed"] == 3


def test_side_by_side_never_compares_different_domains(tmp_path):
    committed = summarize(study_of(tmp_path / "a"))
    fresh = summarize(study_of(tmp_path / "b", power_w=GPU_RAPL, device="cuda:0"))
    table = findings.side_by_side(committed, fresh)
    assert table["cpu_estimated_energy_per_inference_j fresh"].isna().all()
    assert table["cpu_package_energy_per_inference_j committed"].isna().all()
    assert table["cpu_package_energy_per_inference_j fresh/committed"].isna().all()


def test_key_numbers_are_json_and_labelled(tmp_path):
    study = study_of(tmp_path, sizes=(64, 128))
    numbers = findings.key_numbers(study, summarize(study))
    text = json.dumps(findings.jsonable(numbers), allow_nan=False)
    back = json.loads(text)
    assert back["sizes"] == [64, 128]
    assert back["n_runs"] == {"64": 3, "128": 3}
    assert back["sources"] == {"cpu_estimated": "estimated"}
    assert back["device"] == "cpu" and back["hardware_gpu"] == "none"
    assert back["energy_per_inference_j"]["cpu_estimated"]["64"] == pytest.approx(0.6)
    assert back["latency_median_s"]["128"] == pytest.approx(0.02)


def test_efficiency_per_gflop(tmp_path):
    study = study_of(tmp_path, sizes=(64,))  # 4 GFLOP, 0.02 s and 0.6 J per inference
    row = findings.efficiency(study, summarize(study), "cpu_estimated").iloc[0]
    assert row["gflop"] == pytest.approx(4.0)
    assert row["ms_per_gflop"] == pytest.approx(5.0)
    assert row["j_per_gflop"] == pytest.approx(0.15)
    assert "energy_j" not in findings.efficiency(study, summarize(study))


def test_spread_over_runs():
    table = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, np.nan]})
    row = findings.spread(table, ["x"]).iloc[0]
    assert row["n"] == 4 and row["median"] == 2.5
    assert row["iqr_over_median"] == pytest.approx(1.5 / 2.5)
    assert row["max_over_min"] == 4.0


def test_jsonable():
    value = {"a": float("nan"), "b": np.float64(1.5), "c": [np.int64(2), float("inf")], 3: np.bool_(True)}
    assert findings.jsonable(value) == {"a": None, "b": 1.5, "c": [2, None], "3": True}


# ---------------------------------------------------------------- warm-up

def latencies_of(values_per_run):
    return pd.DataFrame([{"model": "alexnet", "input_size": 224, "run": r, "iteration": i, "latency_s": v}
                         for r, values in enumerate(values_per_run) for i, v in enumerate(values)])


def test_warmup_counts_the_slow_first_iterations():
    values = [0.05, 0.03, 0.02, 0.015] + [0.01] * 46
    result = findings.warmup(latencies_of([values, values]))
    assert result["first_s"] == 0.05 and result["steady_s"] == 0.01
    assert result["first_over_steady"] == pytest.approx(5.0)
    assert result["warm_after"] == 4
    assert result["runs"] == 2 and result["iterations"] == 50


def test_warmup_ignores_an_isolated_slow_iteration():
    values = [0.01] * 50
    values[10] = 0.5  # another process took the CPU for a moment
    assert findings.warmup(latencies_of([values]))["warm_after"] == 0
    assert findings.warmup(latencies_of([[0.5] * 50]))["warm_after"] == 0
    assert findings.warmup(latencies_of([[0.5, 0.01] * 25]))["warm_after"] is None  # never 5 warm in a row


# ---------------------------------------------------------------- the seed's BERT observations

SIZES = list(range(50, 501, 50))


def test_a_linear_latency_has_no_jump():
    summary = summary_of(SIZES, [0.01 + 0.001 * n for n in SIZES])
    steps = findings.latency_steps(summary)
    assert steps["slope_vs_median"].to_numpy() == pytest.approx(1.0)
    result = findings.latency_jump(summary)
    assert result["holds"] is False
    assert result["verdict"].startswith("does not hold")
    assert (result["largest_relative_from"], result["largest_relative_to"]) == (50, 100)


def test_a_jump_between_300_and_350_tokens_is_found():
    latency = [0.001 * n + (0.2 if n >= 350 else 0.0) for n in SIZES]
    result = findings.latency_jump(summary_of(SIZES, latency))
    assert result["holds"] is True
    assert (result["steepest_from"], result["steepest_to"]) == (300, 350)
    assert result["slope_vs_median"] == pytest.approx(5.0)
    assert result["verdict"].startswith("holds")


def test_a_jump_elsewhere_does_not_confirm_the_seed():
    latency = [0.001 * n + (0.2 if n >= 150 else 0.0) for n in SIZES]
    result = findings.latency_jump(summary_of(SIZES, latency))
    assert result["holds"] is False and (result["steepest_from"], result["steepest_to"]) == (100, 150)


def test_a_sweep_that_misses_the_region_is_not_testable():
    assert findings.latency_jump(summary_of([50, 100, 200], [1.0, 2.0, 3.0]))["holds"] is None
    assert findings.latency_jump(summary_of([50, 100], [1.0, 2.0]))["verdict"].startswith("not testable")


def test_cpu_energy_following_latency_is_not_testable_on_a_cpu_run(tmp_path):
    study = study_of(tmp_path, sizes=(50, 100, 150), latency=lambda size, run: size / 1000)
    result = findings.cpu_follows_latency(study)
    assert result["holds"] is None
    assert result["verdict"].startswith("not testable as stated")
    assert "estimated" in result["verdict"]
    assert result["domain"] == "cpu_estimated" and result["n"] == 9


def test_cpu_energy_following_latency_on_a_gpu_run(tmp_path):
    # the CPU package draws more power on longer inputs, and the latency grows with them: rho = 1
    for size in (50, 100, 150):
        for run in range(3):
            write_run(tmp_path, "bert", size, run, power_w={"gpu0": 100.0, "package-0": 10.0 * size + run},
                      device="cuda:0", latency_s=size / 1000 + run / 1e5)
    result = findings.cpu_follows_latency(load_study(tmp_path))
    assert result["domain"] == "cpu_package" and result["source"] == "measured"
    assert result["holds"] is True and result["rho"] == pytest.approx(1.0)
    assert result["verdict"].startswith("holds")


def test_a_constant_cpu_energy_cannot_follow_anything(tmp_path):
    study = study_of(tmp_path, sizes=(50, 100, 150), power_w=GPU_RAPL, device="cuda:0",
                     latency=lambda size, run: size / 1000 + run / 1e5)
    result = findings.cpu_follows_latency(study)
    assert result["holds"] is None and math.isnan(result["rho"])
    assert result["verdict"].startswith("not testable")
    assert findings.spearman_pair(study.wide(), "input_size", "latency_median_s")["rho"] > 0.9  # sizes tie over runs


def test_spearman_pair_needs_three_runs_that_vary():
    runs = pd.DataFrame({"x": [1, 2, np.nan, 4], "y": [1.0, 2.0, 3.0, np.nan]})
    assert math.isnan(findings.spearman_pair(runs, "x", "y")["rho"])
    runs = pd.DataFrame({"x": [1, 2, 3, 4], "y": [1.0, 3.0, 2.0, 4.0]})
    assert findings.spearman_pair(runs, "x", "y") == pytest.approx({"rho": 0.8, "p": 0.2, "n": 4})



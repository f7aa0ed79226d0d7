"""Generation runs in the analysis: energy per phase at the boundary, figures per token and request, token timings."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from treegen import PHASE_POWER_W, write_generation_run, write_run

from analysis import AnalysisWarning, compare, load_study, summarize
from analysis.phases import CLOCK_QUANTITIES, ENERGY_QUANTITIES, QUANTITIES
from analysis.reduce import UNRESOLVED_METHOD


def values(study, run=0) -> dict[tuple[str, str], float]:
    rows = study.quantities[study.quantities["run"] == run]
    return {(d, q): v for d, q, v in zip(rows["domain"], rows["quantity"], rows["value"])}


def row(study, domain, quantity, run=0) -> pd.Series:
    rows = study.quantities
    found = rows[(rows["run"] == run) & (rows["domain"] == domain) & (rows["quantity"] == quantity)]
    assert len(found) == 1, (domain, quantity)
    return found.iloc[0]


def test_phase_energies_add_up_to_the_window_and_each_is_power_times_duration(tmp_path):
    write_generation_run(tmp_path, phase_s={"prefill": 0.4, "decode": 1.6})
    study = load_study(tmp_path)
    got = values(study)
    for domain, sensor in (("gpu", "gpu0"), ("cpu_package", "package-0"), ("cpu_estimated", "cpu_estimated")):
        prefill_j = PHASE_POWER_W["prefill"][sensor] * 0.4
        decode_j = PHASE_POWER_W["decode"][sensor] * 1.6
        assert got[domain, "prefill_energy_j"] == pytest.approx(prefill_j, rel=1e-9)
        assert got[domain, "decode_energy_j"] == pytest.approx(decode_j, rel=1e-9)
        assert got[domain, "prefill_energy_j"] + got[domain, "decode_energy_j"] == pytest.approx(
            got[domain, "energy_j"], rel=1e-12)
        assert got[domain, "prefill_mean_power_w"] == pytest.approx(PHASE_POWER_W["prefill"][sensor], rel=1e-9)
        assert got[domain, "decode_mean_power_w"] == pytest.approx(PHASE_POWER_W["decode"][sensor], rel=1e-9)
    # counters give the phases by difference between the synchronous samples; the estimate has powers only
    assert row(study, "gpu", "prefill_energy_j")["method"] == "counter"
    assert row(study, "cpu_package", "decode_energy_j")["method"] == "counter"
    assert row(study, "cpu_estimated", "prefill_energy_j")["method"] == "trapezoid"
    assert {row(study, d, "decode_energy_j")["source"] for d in ("gpu", "cpu_estimated")} == {"measured", "estimated"}


def test_figures_per_token_and_per_request(tmp_path):
    batch, prompt, new = 4, 32, 8
    write_generation_run(tmp_path, input_size=prompt, batch_size=batch, new_tokens=new)
    got = values(load_study(tmp_path))
    prefill_j, decode_j = 300.0 * 0.4, 150.0 * 1.6  # the GPU's
    window_j = prefill_j + decode_j
    expected = {
        "prefill_energy_per_token_j": prefill_j / (batch * prompt),
        "decode_energy_per_token_j": decode_j / (batch * (new - 1)),
        "energy_per_request_j": window_j / batch,
        "energy_per_output_token_j": window_j / (batch * new),
        "prefill_energy_share": prefill_j / window_j,
    }
    for quantity, value in expected.items():
        assert got["gpu", quantity] == pytest.approx(value, rel=1e-9), quantity
    assert got["gpu", "energy_per_request_j"] == pytest.approx(got["gpu", "energy_per_sample_j"], rel=1e-12)
    assert got["clock", "latency_count"] == 1  # one request per window


def test_a_prefill_shorter_than_nvmls_update_is_taken_from_power_readings_and_said(tmp_path):
    write_generation_run(tmp_path, phase_s={"prefill": 0.05, "decode": 1.6})
    with pytest.warns(AnalysisWarning, match=r"\(prefill phase\): gpu0: the 0.05 s window is shorter than the "
                                             r"counter's update period \(0.1 s\); its energy integrated from"):
        study = load_study(tmp_path)
    prefill = row(study, "gpu", "prefill_energy_j")
    assert prefill["method"] == UNRESOLVED_METHOD and "shorter than the counter's update period" in prefill["note"]
    assert prefill["value"] == pytest.approx(300.0 * 0.05, rel=1e-9)  # constant power over the phase
    assert row(study, "gpu", "prefill_energy_per_token_j")["method"] == UNRESOLVED_METHOD
    decode = row(study, "gpu", "decode_energy_j")
    assert decode["method"] == "counter" and decode["value"] == pytest.approx(150.0 * 1.6, rel=1e-9)
    assert row(study, "gpu", "prefill_energy_share")["method"] == "mixed"
    # RAPL has no update period of its own here: its counter gives the short phase
    assert row(study, "cpu_package", "prefill_energy_j")["method"] == "counter"


def test_a_short_phase_without_power_readings_is_nan_with_the_reason_never_zero(tmp_path):
    write_generation_run(tmp_path, phase_s={"prefill": 0.05, "decode": 1.6}, gpu_power=False)
    with pytest.warns(AnalysisWarning, match="prefill phase"):
        study = load_study(tmp_path)
    for quantity in ("prefill_energy_j", "prefill_energy_per_token_j", "prefill_mean_power_w", "prefill_energy_share"):
        found = row(study, "gpu", quantity)
        assert np.isnan(found["value"]) and "shorter than the counter's update period" in found["note"], quantity
    assert row(study, "gpu", "decode_energy_j")["value"] == pytest.approx(150.0 * 1.6, rel=1e-9)
    assert row(study, "gpu", "energy_per_request_j")["value"] == pytest.approx((300 * 0.05 + 150 * 1.6) / 2, rel=1e-9)


def test_a_window_that_does_not_delimit_its_phases_leaves_them_nan_with_the_reason(tmp_path):
    write_generation_run(tmp_path, split=False)
    with pytest.warns(AnalysisWarning, match="do not delimit its phases prefill, decode: synchronous samples "
                                             "start, end where start, split, end were expected"):
        study = load_study(tmp_path)
    for domain in ("gpu", "cpu_package", "cpu_estimated"):
        for quantity in ("prefill_energy_j", "decode_energy_per_token_j"):
            found = row(study, domain, quantity)
            assert np.isnan(found["value"]) and "do not delimit its phases" in found["note"]
        assert row(study, domain, "energy_per_request_j")["value"] > 0  # the window itself is sound


def test_token_timings(tmp_path):
    latency = [0.5, 0.1, 0.2, 0.3, 0.4]  # the prefill, then four decode steps
    write_generation_run(tmp_path, input_size=32, batch_size=2, new_tokens=5, token_latency_s=latency)
    got = values(load_study(tmp_path))
    steps = np.array(latency[1:])
    assert got["clock", "ttft_s"] == pytest.approx(0.5)
    assert got["clock", "itl_median_s"] == pytest.approx(np.median(steps))
    assert got["clock", "itl_p90_s"] == pytest.approx(np.quantile(steps, 0.9))
    assert got["clock", "itl_mean_s"] == pytest.approx(steps.mean())
    assert got["clock", "output_tokens_per_s"] == pytest.approx(2 * 5 / sum(latency))
    assert got["clock", "prefill_tokens_per_s"] == pytest.approx(2 * 32 / 0.5)
    assert got["clock", "decode_tokens_per_s"] == pytest.approx(2 * 4 / steps.sum())
    assert got["clock", "latency_median_s"] == pytest.approx(sum(latency))  # the request's


def test_without_tokens_csv_the_token_timings_are_nan_with_the_reason(tmp_path):
    write_generation_run(tmp_path, tokens=False)
    with pytest.warns(AnalysisWarning, match="no tokens.csv"):
        study = load_study(tmp_path)
    ttft = row(study, "clock", "ttft_s")
    assert np.isnan(ttft["value"]) and "tokens.csv" in ttft["note"]
    assert row(study, "gpu", "decode_energy_j")["value"] > 0


def test_every_figure_has_its_unit_and_forward_runs_get_none(tmp_path):
    write_generation_run(tmp_path / "gen")
    write_run(tmp_path / "fwd", model="resnet50")
    study = load_study([tmp_path / "gen", tmp_path / "fwd"])
    rows = study.quantities[study.quantities["quantity"].isin(QUANTITIES)]
    assert set(rows["label"]) == {"gen"}
    units = dict(zip(rows["quantity"], rows["unit"]))
    assert units == {**ENERGY_QUANTITIES, **CLOCK_QUANTITIES}
    assert set(rows.loc[rows["quantity"].isin(CLOCK_QUANTITIES), "domain"]) == {"clock"}
    assert "new_tokens" in study.dimensions


def test_the_split_line_is_read_by_the_fast_parser(tmp_path, recwarn, monkeypatch):
    from analysis.readers import ours

    def slow_path(*_):
        raise AssertionError("a generation file went through the line-by-line parser")

    folder = write_generation_run(tmp_path)
    monkeypatch.setattr(ours, "_parse_lines", slow_path)
    study = load_study(tmp_path)
    assert not [w for w in recwarn if issubclass(w.category, AnalysisWarning)]  # no line skipped
    marks = study.samples.drop_duplicates("t_s")["mark"].astype(str).tolist()
    assert marks.count("split") == 1 and marks[0] == "start" and marks[-1] == "end"
    split = next(json.loads(line) for line in (folder / "power_metrics.json").read_text().splitlines()
                 if json.loads(line)["mark"] == "split")
    assert study.samples.loc[study.samples["mark"] == "split", "t_s"].unique().tolist() == [split["t_s"]]


def test_summaries_and_comparisons_take_the_generation_figures_unchanged(tmp_path):
    for batch in (1, 4):
        for run in range(3):
            power = {phase: {d: w * (1 + 0.01 * run) * (1 if batch == 1 else 1.5) for d, w in powers.items()}
                     for phase, powers in PHASE_POWER_W.items()}
            write_generation_run(tmp_path / f"batch{batch}", run=run, batch_size=batch, phase_power_w=power)
    study = load_study(tmp_path)
    summary = summarize(study)
    decode = summary[(summary["quantity"] == "decode_energy_per_token_j") & (summary["domain"] == "gpu")]
    assert list(decode["batch_size"]) == [1, 4] and (decode["n"] == 3).all() and (decode["unit"] == "J").all()
    one = 150.0 * 1.01 * 1.6 / 7  # the median run's (power x 1.01), one sequence, 7 decode tokens
    assert decode["median"].tolist() == pytest.approx([one, one * 1.5 / 4])
    assert (decode["ci_low"] <= decode["median"]).all() and (decode["median"] <= decode["ci_high"]).all()
    table = compare(study, baseline={"batch_size": 1}, quantities=["decode_energy_per_token_j", "ttft_s"])
    gpu = table[(table["domain"] == "gpu")].iloc[0]
    assert gpu["ratio"] == pytest.approx(1.5 / 4) and gpu["verdict"].startswith("lower")


def test_the_tables_to_read_take_the_generation_figures_of_a_generation_study(tmp_path):
    from analysis import export
    from analysis.phases import HEADLINE_CLOCK, HEADLINE_ENERGY

    write_generation_run(tmp_path / "generation")
    write_run(tmp_path / "forward", "resnet50", 64, 0)
    generation, forward = load_study(tmp_path / "generation"), load_study(tmp_path / "forward")
    assert export.headline_quantities(generation) == {"clock": HEADLINE_CLOCK, "energy": HEADLINE_ENERGY}
    assert export.headline_quantities(forward) == {"clock": ("latency_median_s",),
                                                   "energy": ("energy_per_inference_j",)}
    assert set(QUANTITIES) <= set(export.summary_quantities(generation))
    assert export.summary_quantities(forward) == export.SEED_QUANTITIES


def test_the_committed_generation_study():
    """data/generation/ as scripts/cpu_study.sh wrote it: the cpu-study preset's grid, phases that add up to
    every window, the estimate labelled, and token timings for every run."""
    from pathlib import Path

    from measure.plan import GENERATION_PRESETS

    preset = GENERATION_PRESETS["cpu-study"]
    folder = Path(__file__).resolve().parents[1] / "data" / "generation"
    with pytest.warns(AnalysisWarning):  # a shared machine: other work during the windows is said
        study = load_study(folder / "tree")
    runs = study.runs
    assert len(runs) == len(preset.sizes) * len(preset.batch_sizes) * preset.runs
    assert sorted(runs["input_size"].unique()) == list(preset.sizes)
    assert sorted(runs["batch_size"].unique()) == list(preset.batch_sizes)
    assert set(runs["new_tokens"]) == set(preset.new_tokens) and set(runs["task"]) == {"generate"}
    rows = study.quantities.set_index(["run_id", "domain", "quantity"])["value"]
    for run_id in runs["run_id"]:
        assert rows[run_id, "cpu_estimated", "prefill_energy_j"] + rows[run_id, "cpu_estimated", "decode_energy_j"] \
            == pytest.approx(rows[run_id, "cpu_estimated", "energy_j"], rel=1e-9)
        assert rows[run_id, "clock", "ttft_s"] > 0 and rows[run_id, "clock", "itl_p90_s"] > 0
    energy = study.select("decode_energy_per_token_j")
    assert set(energy["source"]) == {"estimated"} and set(energy["domain"]) == {"cpu_estimated"}
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "scripts/cpu_study.sh generation" in readme and "python -m measure run hf:gpt2 --task generate" in readme
    assert "**estimated**" in readme


def test_generation_trends_from_synthetic_runs(tmp_path):
    from analysis import findings

    for prompt in (32, 512):
        for batch in (1, 4):
            for run in range(5):
                # decode power grows with the prompt and with the batch, less than the batch: per token it falls
                scale = (1.5 if prompt == 512 else 1.0) * (2.0 if batch == 4 else 1.0) * (1 + 0.001 * run)
                power = {"prefill": {"gpu0": 200.0}, "decode": {"gpu0": 100.0 * scale}}
                write_generation_run(tmp_path / f"b{batch}", input_size=prompt, run=run, batch_size=batch,
                                     phase_power_w=power)
    trends = findings.generation_trends(load_study(tmp_path), "gpu")
    assert (trends["source"], trends["method"]) == ("measured", "counter")
    for row in trends["context"]:
        energy = row["decode_energy_per_token_j"]
        assert energy["ratio"] == pytest.approx(1.5) and energy["verdict"] == "higher" and energy["ci_reliable"]
        assert (energy["input_size_from"], energy["input_size_to"], energy["runs"]) == (32, 512, [5, 5])
    for row in trends["batch"]:
        assert row["ratio"] == pytest.approx(2.0 / 4) and row["verdict"] == "lower"
    shares = {(r["input_size"], r["batch_size"]): r["share"] for r in trends["prefill_share"]}
    assert shares[32, 1] == pytest.approx(200 * 0.4 / (200 * 0.4 + 100 * 1.002 * 1.6), rel=1e-6)
    costs = {(r["input_size"], r["batch_size"]): r["ratio"] for r in trends["decode_over_prefill"]}
    assert costs[32, 1] == pytest.approx((100 * 1.002 * 1.6 / 7) / (200 * 0.4 / 32), rel=1e-6)
    with pytest.raises(ValueError, match="no decode energy per token in dram"):
        findings.generation_trends(load_study(tmp_path), "dram")

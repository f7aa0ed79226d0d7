"""Summaries over runs (median, IQR, bootstrap CI of the median) and Spearman correlations."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import json
import warnings

from analysis import MIN_RUNS_FOR_CI, AnalysisWarning, bootstrap_median_ci, load_study, spearman, summarize
from treegen import write_run, write_tree


def study_of(tmp_path, latencies, energies_j, methods=None) -> "analysis.Study":
    """A study of one model at input sizes 32 (5 runs) and 64 (3 runs): run k's median latency and GPU energy
    per inference as given (NaN: its counter breaks), its GPU without a counter where ``methods`` says trapezoid."""
    sizes = [32] * 5 + [64] * 3
    for i, (size, latency, joules) in enumerate(zip(sizes, latencies, energies_j)):
        run = i if size == 32 else i - 5
        trapezoid = methods is not None and methods[i] == "trapezoid"
        folder = write_run(tmp_path, input_size=size, run=run, latency_s=latency, iterations=100, duration_s=2.0,
                           power_w={"gpu0": (joules if joules == joules else 1.0) * 100 / 2.0},
                           gpu_counter=not trapezoid)
        if joules != joules:  # NaN: the counter goes backwards (restarts lower), so the run's energy is unknown
            lines = [json.loads(line) for line in (folder / "power_metrics.json").read_text().splitlines()]
            for line in lines[5:]:
                line["gpu0.energy_j"] -= 500.0
            (folder / "power_metrics.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        return load_study(tmp_path)


@pytest.fixture
def study(tmp_path):
    return study_of(tmp_path, [1.0, 2.0, 3.0, 4.0, 100.0, 7.0, 7.0, 7.0], [0.5, np.nan, 0.5, 0.5, 0.5, 1.0, 2.0, 3.0],
                    methods=["counter"] * 7 + ["trapezoid"])


def row(summary, size, quantity, domain="gpu"):
    pick = summary[(summary["input_size"] == size) & (summary["quantity"] == quantity)
                   & (summary["domain"] == domain)]
    assert len(pick) == 1
    return pick.iloc[0]


def test_summary_medians_and_iqr(study):
    summary = summarize(study)
    assert row(summary, 32, "latency_median_s", "clock")["median"] == pytest.approx(3.0)
    assert row(summary, 32, "latency_median_s", "clock")["iqr"] == pytest.approx(2.0)  # 4 - 2 (linear quartiles)
    assert row(summary, 32, "energy_per_inference_j")["median"] == pytest.approx(0.5)  # NaN ignored
    assert row(summary, 64, "energy_per_inference_j")["iqr"] == pytest.approx(1.0)
    assert row(summary, 32, "energy_per_inference_j")["method"] == "counter"
    assert row(summary, 64, "energy_per_inference_j")["method"] == "mixed"
    assert row(summary, 64, "energy_per_inference_j")["source"] == "measured"
    assert row(summary, 32, "energy_per_inference_j")["unit"] == "J"


def test_n_is_counted_per_quantity_and_few_runs_mark_the_ci(study):
    summary = summarize(study)
    assert row(summary, 32, "latency_median_s", "clock")["n"] == 5
    assert row(summary, 32, "energy_per_inference_j")["n"] == 4  # one run's energy is unknown
    assert not row(summary, 32, "energy_per_inference_j")["ci_reliable"]  # 4 < MIN_RUNS_FOR_CI
    assert row(summary, 32, "latency_median_s", "clock")["ci_reliable"] and MIN_RUNS_FOR_CI == 5


def test_summary_is_long_and_never_summarises_a_constant(study):
    summary = summarize(study)
    assert list(summary.columns) == ["model", "input_size", "domain", "quantity", "n", "median", "iqr", "ci_low",
                                     "ci_high", "ci_reliable", "unit", "source", "method"]
    constants = {"iterations", "warmup", "period_s", "params", "flops_per_inference", "run", "window_s"}
    assert not constants & set(summary["quantity"]) and not constants & set(summary.columns)
    assert not {"gap_samples", "latency_count"} & set(summary["quantity"])  # diagnostics, summarised on request
    assert set(summarize(study, quantities=["gap_samples"])["quantity"]) == {"gap_samples"}


def test_summary_groups_by_any_dimension(study):
    summary = summarize(study, by=["model"])
    assert row(summary.assign(input_size=0), 0, "latency_median_s", "clock")["n"] == 8
    with pytest.raises(ValueError, match="cannot group by colour"):
        summarize(study, by=["colour"])


def test_ci_of_a_constant_is_the_constant_and_bounds_the_median(study):
    summary = summarize(study)
    latency_64 = row(summary, 64, "latency_median_s", "clock")
    assert (latency_64["ci_low"], latency_64["ci_high"]) == pytest.approx((7.0, 7.0))
    energy_32 = row(summary, 32, "energy_per_inference_j")
    assert (energy_32["ci_low"], energy_32["ci_high"]) == pytest.approx((0.5, 0.5))
    latency_32 = row(summary, 32, "latency_median_s", "clock")
    assert 1.0 <= latency_32["ci_low"] <= 3.0 <= latency_32["ci_high"] <= 100.0


def test_bootstrap_is_seeded(study):
    pd.testing.assert_frame_equal(summarize(study, seed=3), summarize(study, seed=3))


def test_bootstrap_agrees_with_a_plain_resampling():
    values = np.random.default_rng(1).normal(10.0, 2.0, size=(41, 2))
    values[::7, 1] = np.nan
    low, high = bootstrap_median_ci(values, n_boot=20000, rng=np.random.default_rng(2))
    rng = np.random.default_rng(3)
    for column in range(2):
        sound = values[~np.isnan(values[:, column]), column]
        draws = rng.choice(values[:, column], size=(20000, len(values)))
        medians = np.nanmedian(draws, axis=1)
        plain_low, plain_high = np.quantile(medians, [0.025, 0.975])
        assert low[column] == pytest.approx(plain_low, abs=0.1)
        assert high[column] == pytest.approx(plain_high, abs=0.1)
        assert low[column] < np.median(sound) < high[column]


def test_bootstrap_of_an_all_nan_column_is_nan():
    low, high = bootstrap_median_ci(np.array([[1.0, np.nan], [2.0, np.nan], [3.0, np.nan]]))
    assert np.isnan(low[1]) and np.isnan(high[1]) and 1.0 <= low[0] <= high[0] <= 3.0


def test_summary_of_a_study_has_exact_medians(tmp_path):
    write_tree(tmp_path, input_sizes=(32, 64), runs=3, power_w=lambda m, size, run: {"gpu0": size + 10.0 * run})
    summary = summarize(load_study(tmp_path))
    energy = summary[(summary["domain"] == "gpu") & (summary["quantity"] == "energy_per_inference_j")]
    # energy per inference = P * 2 s / 100; P = size + {0, 10, 20}: median at run 1
    assert energy["median"].tolist() == pytest.approx([0.84, 1.48])
    assert energy["iqr"].tolist() == pytest.approx([0.2, 0.2])
    assert energy["n"].tolist() == [3, 3]
    assert energy["source"].tolist() == ["measured", "measured"]


def test_spearman_matches_scipy_and_is_symmetric():
    runs = pd.DataFrame({"input_size": [1, 2, 3, 4, 5, 6], "latency_median_s": [1.0, 2.0, 2.5, 4.0, 8.0, 9.0],
                         "gpu_energy_per_inference_j": [6.0, 5.0, 4.0, 3.5, 2.0, 1.0],
                         "process_rss_peak_mib": [3.0, 1.0, 2.0, 6.0, 5.0, 4.0]})
    rho, p = spearman(runs)
    assert list(rho.columns) == ["input_size", "latency_median_s", "gpu_energy_per_inference_j", "process_rss_peak_mib"]
    assert rho.loc["input_size", "latency_median_s"] == pytest.approx(1.0)
    assert rho.loc["input_size", "gpu_energy_per_inference_j"] == pytest.approx(-1.0)
    expected = stats.spearmanr(runs["input_size"], runs["process_rss_peak_mib"])
    assert rho.loc["process_rss_peak_mib", "input_size"] == pytest.approx(expected.statistic)
    assert p.loc["input_size", "process_rss_peak_mib"] == pytest.approx(expected.pvalue)
    assert np.allclose(rho.to_numpy(), rho.to_numpy().T) and np.allclose(np.diag(rho), 1.0)


def test_spearman_drops_constant_columns_and_uses_complete_pairs():
    runs = pd.DataFrame({"input_size": [1, 2, 3, 4, 5], "latency_median_s": [1.0, 2.0, np.nan, 4.0, 5.0],
                         "gpu_sm_util_mean_pct": [90.0] * 5, "gpu_mem_used_peak_mib": [np.nan] * 5})
    with pytest.warns(AnalysisWarning, match="left out: gpu_sm_util_mean_pct, gpu_mem_used_peak_mib"):
        rho, p = spearman(runs)
    assert list(rho.columns) == ["input_size", "latency_median_s"]
    assert rho.loc["input_size", "latency_median_s"] == pytest.approx(1.0)  # over the 4 complete runs
    assert p.loc["input_size", "latency_median_s"] == pytest.approx(stats.spearmanr([1, 2, 4, 5], [1, 2, 4, 5]).pvalue)


def test_spearman_on_named_columns(tmp_path):
    write_tree(tmp_path, input_sizes=(16, 32, 64), runs=2, power_w=lambda m, size, run: {"gpu0": float(size + run)})
    rho, _ = spearman(load_study(tmp_path), columns=["input_size", "gpu_mean_power_w"])
    assert rho.loc["input_size", "gpu_mean_power_w"] == pytest.approx(stats.spearmanr(
        [16, 16, 32, 32, 64, 64], [16, 17, 32, 33, 64, 65]).statistic)

"""Summaries over runs (median, IQR, bootstrap CI of the median) and Spearman correlations."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import AnalysisWarning, bootstrap_median_ci, load_study, spearman, summarize
from treegen import write_tree


def runs_table():
    return pd.DataFrame({
        "model": ["a"] * 5 + ["b"] * 3,
        "input_size": [32] * 5 + [64] * 3,
        "run": [0, 1, 2, 3, 4, 0, 1, 2],
        "latency_median_s": [1.0, 2.0, 3.0, 4.0, 100.0, 7.0, 7.0, 7.0],
        "gpu_energy_per_inference_j": [0.5, np.nan, 0.5, 0.5, 0.5, 1.0, 2.0, 3.0],
        "gpu_source": ["measured"] * 8,
        "gpu_method": ["counter"] * 7 + ["trapezoid"],
        "device": ["cuda:0"] * 8,
    })


def test_summary_medians_and_iqr():
    summary = summarize(runs_table()).set_index("model")
    assert summary["n_runs"].to_dict() == {"a": 5, "b": 3}
    assert summary.loc["a", "latency_median_s_median"] == 3.0
    assert summary.loc["a", "latency_median_s_iqr"] == 2.0  # 4 - 2 (linear quartiles)
    assert summary.loc["a", "gpu_energy_per_inference_j_median"] == 0.5  # NaN ignored
    assert summary.loc["b", "gpu_energy_per_inference_j_iqr"] == 1.0
    assert summary.loc["a", "gpu_method"] == "counter" and summary.loc["b", "gpu_method"] == "mixed"
    assert summary.loc["b", "gpu_source"] == "measured"
    assert "device_median" not in summary and "run_median" not in summary


def test_summary_columns_follow_the_quantities():
    columns = list(summarize(runs_table()).columns)
    quantity = ["median", "iqr", "ci_low", "ci_high"]
    assert columns == ["model", "input_size", "n_runs",
                       *[f"latency_median_s_{q}" for q in quantity],
                       *[f"gpu_energy_per_inference_j_{q}" for q in quantity], "gpu_source", "gpu_method"]


def test_ci_of_a_constant_is_the_constant_and_bounds_the_median():
    summary = summarize(runs_table()).set_index("model")
    assert summary.loc["b", ["latency_median_s_ci_low", "latency_median_s_ci_high"]].tolist() == [7.0, 7.0]
    assert summary.loc["a", ["gpu_energy_per_inference_j_ci_low", "gpu_energy_per_inference_j_ci_high"]].tolist() \
        == [0.5, 0.5]
    low, high = summary.loc["a", ["latency_median_s_ci_low", "latency_median_s_ci_high"]]
    assert 1.0 <= low <= 3.0 <= high <= 100.0


def test_bootstrap_is_seeded():
    first, second = summarize(runs_table(), seed=3), summarize(runs_table(), seed=3)
    pd.testing.assert_frame_equal(first, second)


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
    summary = summarize(load_study(tmp_path)).set_index("input_size")
    # energy per inference = P * 2 s / 100; P = size + {0, 10, 20}: median at run 1
    assert summary["gpu_energy_per_inference_j_median"].tolist() == pytest.approx([0.84, 1.48])
    assert summary["gpu_energy_per_inference_j_iqr"].tolist() == pytest.approx([0.2, 0.2])
    assert summary["n_runs"].tolist() == [3, 3]
    assert summary["gpu0_source"].tolist() == ["measured", "measured"]


def test_spearman_matches_scipy_and_is_symmetric():
    runs = pd.DataFrame({"input_size": [1, 2, 3, 4, 5, 6], "latency_median_s": [1.0, 2.0, 2.5, 4.0, 8.0, 9.0],
                         "gpu_energy_per_inference_j": [6.0, 5.0, 4.0, 3.5, 2.0, 1.0],
                         "rss_peak_mb": [3.0, 1.0, 2.0, 6.0, 5.0, 4.0]})
    rho, p = spearman(runs)
    assert list(rho.columns) == ["input_size", "latency_median_s", "gpu_energy_per_inference_j", "rss_peak_mb"]
    assert rho.loc["input_size", "latency_median_s"] == pytest.approx(1.0)
    assert rho.loc["input_size", "gpu_energy_per_inference_j"] == pytest.approx(-1.0)
    expected = stats.spearmanr(runs["input_size"], runs["rss_peak_mb"])
    assert rho.loc["rss_peak_mb", "input_size"] == pytest.approx(expected.statistic)
    assert p.loc["input_size", "rss_peak_mb"] == pytest.approx(expected.pvalue)
    assert np.allclose(rho.to_numpy(), rho.to_numpy().T) and np.allclose(np.diag(rho), 1.0)


def test_spearman_drops_constant_columns_and_uses_complete_pairs():
    runs = pd.DataFrame({"input_size": [1, 2, 3, 4, 5], "latency_median_s": [1.0, 2.0, np.nan, 4.0, 5.0],
                         "sm_util_mean_pct": [90.0] * 5, "gpu_mem_peak_mb": [np.nan] * 5})
    with pytest.warns(AnalysisWarning, match="left out: sm_util_mean_pct, gpu_mem_peak_mb"):
        rho, p = spearman(runs)
    assert list(rho.columns) == ["input_size", "latency_median_s"]
    assert rho.loc["input_size", "latency_median_s"] == pytest.approx(1.0)  # over the 4 complete runs
    assert p.loc["input_size", "latency_median_s"] == pytest.approx(stats.spearmanr([1, 2, 4, 5], [1, 2, 4, 5]).pvalue)


def test_spearman_on_named_columns(tmp_path):
    write_tree(tmp_path, input_sizes=(16, 32, 64), runs=2, power_w=lambda m, size, run: {"gpu0": float(size + run)})
    rho, _ = spearman(load_study(tmp_path), columns=["input_size", "gpu0_mean_power_w"])
    assert rho.loc["input_size", "gpu0_mean_power_w"] == pytest.approx(stats.spearmanr(
        [16, 16, 32, 32, 64, 64], [16, 17, 32, 33, 64, 65]).statistic)

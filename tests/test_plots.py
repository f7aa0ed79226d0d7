"""Figures of the tidy tables: labels, sources, scales, titles and refusals."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from analysis import plots  # noqa: E402

GPU_NAME = "NVIDIA H200"
CPU_NAME = "Intel(R) Xeon(R) Platinum 8468"
RUNS = 3


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def make_runs(sizes=(64, 224, 1024), gpu=True, model="alexnet") -> pd.DataFrame:
    """`runs` as docs/tables.md describes it: one row per (model, input size, run)."""
    rows = []
    for size in sizes:
        for run in range(RUNS):
            scale = (size / 64) ** 2
            row = {
                "model": model, "input_size": size, "run": run, "status": "complete",
                "weights": "pretrained", "device": "cuda:0" if gpu else "cpu",
                "hardware_gpu": GPU_NAME if gpu else np.nan, "hardware_cpu": CPU_NAME,
                "iterations": 100, "warmup": 10, "window_s": 2.0, "period_s": 0.05,
                "params": 61_100_840, "flops_per_inference": 1.4e9 * scale,
                "latency_median_s": 0.001 * scale * (1 + 0.05 * run),
                "latency_mean_s": 0.0011 * scale * (1 + 0.05 * run),
                "rss_peak_mb": 1500.0 + run, "cpu_share_mean": 1.0,
                "cpu_estimated_energy_per_inference_j": 0.02 * scale,
                "cpu_estimated_dynamic_energy_per_inference_j": 0.01 * scale,
                "cpu_estimated_mean_power_w": 40.0,
                "cpu_estimated_energy_per_gflop_j": 0.01,
                "cpu_estimated_source": "estimated", "cpu_estimated_method": "trapezoid",
            }
            if gpu:
                row.update({
                    "sm_util_mean_pct": min(99.0, 20 * scale ** 0.3 + run),
                    "gpu_mem_peak_mb": 2000.0 + 10 * scale, "gpu_proc_mem_peak_mb": 700.0 + 10 * scale,
                    "gpu_energy_per_inference_j": 0.1 * scale * (1 + 0.02 * run),
                    "gpu_dynamic_energy_per_inference_j": 0.05 * scale,
                    "gpu_mean_power_w": 90.0 + 5 * scale ** 0.3 + run,
                    "gpu_energy_per_gflop_j": 0.07, "gpu_source": "measured", "gpu_method": "counter",
                })
            else:
                row.update({"sm_util_mean_pct": np.nan, "gpu_mem_peak_mb": np.nan, "gpu_proc_mem_peak_mb": np.nan})
            rows.append(row)
    return pd.DataFrame(rows)


def make_energies(runs: pd.DataFrame) -> pd.DataFrame:
    """`energies` (long, one row per run and domain) from the wide columns of `runs`."""
    domains = [c[: -len("_source")] for c in runs.columns if c.endswith("_source")]
    rows = []
    for _, r in runs.iterrows():
        for d in domains:
            rows.append({
                "model": r["model"], "input_size": r["input_size"], "run": r["run"], "domain": d,
                "source": r[f"{d}_source"], "method": r[f"{d}_method"],
                "energy_j": r[f"{d}_energy_per_inference_j"] * 100,
                "energy_per_inference_j": r[f"{d}_energy_per_inference_j"],
                "idle_power_w": 30.0,
                "dynamic_energy_per_inference_j": r[f"{d}_dynamic_energy_per_inference_j"],
                "mean_power_w": r[f"{d}_mean_power_w"], "gaps": 0,
            })
    return pd.DataFrame(rows)


def make_latencies(sizes=(224,), iterations=60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        for run in range(RUNS):
            for i in range(iterations):
                slow = 0.01 if i < 3 else 0.0  # the first timed iterations are slower
                rows.append({"model": "alexnet", "input_size": size, "run": run, "iteration": i,
                             "latency_s": 0.002 + slow + rng.normal(0, 1e-4)})
    return pd.DataFrame(rows)


def data_lines(ax) -> list:
    """The drawn lines (seaborn also adds empty proxy lines for its legend)."""
    return [line for line in ax.get_lines() if len(line.get_xdata())]


def suptitle(fig) -> str:
    return fig._suptitle.get_text()


def test_energy_vs_size_labels_each_domain_with_its_source():
    runs = make_runs()
    fig = plots.energy_vs_size(make_energies(runs), runs=runs)
    (ax,) = fig.axes
    label = ax.get_ylabel()
    assert "(J" in label and "measured" in label and "estimated" in label and "legend" in label
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(legend) == ["cpu_estimated (estimated)", "gpu (measured)"]
    assert len(data_lines(ax)) == 2  # one line per domain
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2  # one IQR band per domain
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"  # 64..1024 px, energies span decades
    assert "px" in ax.get_xlabel()
    title = suptitle(fig)
    assert "alexnet" in title and GPU_NAME in title and CPU_NAME in title and "cuda:0" in title


def test_energy_vs_size_single_estimated_domain_never_says_measured():
    runs = make_runs()
    fig = plots.energy_vs_size(make_energies(runs), domains=["cpu_estimated"], runs=runs)
    label = fig.axes[0].get_ylabel()
    assert label == "Energy per inference (J, estimated)"
    assert len(data_lines(fig.axes[0])) == 1


def test_energy_vs_size_linear_when_within_a_decade_and_dynamic():
    runs = make_runs(sizes=(200, 224, 256))
    fig = plots.energy_vs_size(make_energies(runs), domains=["gpu"], dynamic=True, runs=runs)
    (ax,) = fig.axes
    assert ax.get_xscale() == "linear" and ax.get_yscale() == "linear"
    assert ax.get_ylabel() == "Dynamic energy per inference (above idle) (J, measured)"


def test_energy_vs_size_takes_hardware_from_the_rows_when_present():
    runs = make_runs()
    energies = make_energies(runs).merge(runs[["model", "input_size", "run", "device", "hardware_gpu"]])
    assert GPU_NAME in suptitle(plots.energy_vs_size(energies))


def test_energy_vs_size_refuses_without_hardware_or_source_or_values():
    runs = make_runs()
    energies = make_energies(runs)
    with pytest.raises(ValueError, match="hardware"):
        plots.energy_vs_size(energies)
    with pytest.raises(ValueError, match="source"):
        plots.energy_vs_size(energies.drop(columns="source"), runs=runs)
    with pytest.raises(ValueError, match="idle baseline"):
        plots.energy_vs_size(energies.assign(dynamic_energy_per_inference_j=np.nan), dynamic=True, runs=runs)
    with pytest.raises(ValueError, match="dram"):
        plots.energy_vs_size(energies, domains=["dram"], runs=runs)


def test_energy_vs_size_hides_per_device_gpus_behind_their_sum():
    runs = make_runs()
    energies = make_energies(runs)
    energies = pd.concat([energies, energies[energies["domain"] == "gpu"].assign(domain="gpu0")])
    fig = plots.energy_vs_size(energies, runs=runs)
    assert len(data_lines(fig.axes[0])) == 2
    fig = plots.energy_vs_size(energies, domains=["gpu0", "gpu", "cpu_estimated"], runs=runs)
    assert len(data_lines(fig.axes[0])) == 3


def test_cpu_only_energy_figure_is_estimated_and_names_the_cpu():
    runs = make_runs(gpu=False)
    fig = plots.energy_vs_size(make_energies(runs), runs=runs)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "Energy per inference (J, estimated)"
    assert "measured" not in ax.get_ylabel()
    title = suptitle(fig)
    assert CPU_NAME in title and "on cpu" in title and "GPU" not in title


def test_latency_vs_size():
    fig = plots.latency_vs_size(make_runs())
    (ax,) = fig.axes
    assert ax.get_ylabel().endswith("(s)")
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(data_lines(ax)) == 1
    assert GPU_NAME in suptitle(fig) and "alexnet" in suptitle(fig)
    fig = plots.latency_vs_size(make_runs(sizes=(200, 256), model="bert"))
    assert fig.axes[0].get_xscale() == "linear"
    assert "tokens" in fig.axes[0].get_xlabel()


def test_latency_vs_size_refuses_several_models():
    runs = pd.concat([make_runs(), make_runs(model="resnet50")])
    with pytest.raises(ValueError, match="several models"):
        plots.latency_vs_size(runs)


def test_sm_util_vs_latency():
    fig = plots.sm_util_vs_latency(make_runs())
    (ax,) = fig.axes
    assert ax.get_ylabel() == "SM utilisation, run mean (%)"
    assert ax.get_xlabel().endswith("(s)")
    assert len(ax.collections[0].get_offsets()) == 3 * RUNS
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["64", "224", "1024"]
    assert GPU_NAME in suptitle(fig)


@pytest.mark.parametrize("drop", [False, True])
def test_gpu_figures_refuse_cpu_only_runs(drop):
    runs = make_runs(gpu=False)
    if drop:
        runs = runs.drop(columns=["sm_util_mean_pct", "gpu_mem_peak_mb", "gpu_proc_mem_peak_mb"])
    state = "missing" if drop else "empty"
    with pytest.raises(ValueError, match=rf"no GPU measurements in these runs \(sm_util_mean_pct is {state}\)"):
        plots.sm_util_vs_latency(runs)
    with pytest.raises(ValueError, match="no GPU"):
        plots.gpu_power_vs_sm_util(runs)


def test_gpu_power_vs_sm_util_from_runs_and_from_energies():
    runs = make_runs()
    for fig in (plots.gpu_power_vs_sm_util(runs), plots.gpu_power_vs_sm_util(make_energies(runs), runs=runs)):
        (ax,) = fig.axes
        assert ax.get_ylabel() == "gpu power, run mean (W, measured)"
        assert ax.get_xlabel() == "SM utilisation, run mean (%)"
        assert len(ax.collections[0].get_offsets()) == 3 * RUNS
        assert GPU_NAME in suptitle(fig)


def test_gpu_power_from_energies_needs_the_runs():
    with pytest.raises(ValueError, match="runs="):
        plots.gpu_power_vs_sm_util(make_energies(make_runs()))


def test_gpu_power_refuses_an_unknown_source():
    runs = make_runs().assign(gpu_source=np.nan)
    with pytest.raises(ValueError, match="source"):
        plots.gpu_power_vs_sm_util(runs)


def test_memory_vs_size_draws_what_was_recorded():
    fig = plots.memory_vs_size(make_runs())
    (ax,) = fig.axes
    assert ax.get_ylabel() == "Peak memory (MiB)"
    assert len(data_lines(ax)) == 3
    fig = plots.memory_vs_size(make_runs(gpu=False))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["host RSS, this process tree"]
    with pytest.raises(ValueError, match="no memory"):
        plots.memory_vs_size(make_runs(gpu=False).drop(columns="rss_peak_mb"))


def test_spearman_heatmap_annotations_and_significance():
    runs = make_runs()
    cols = ["input_size", "latency_median_s", "gpu_energy_per_inference_j"]
    rho = pd.DataFrame([[1.0, 0.9, -0.3], [0.9, 1.0, 0.2], [-0.3, 0.2, 1.0]], index=cols, columns=cols)
    p = pd.DataFrame([[0.0, 0.001, 0.4], [0.001, 0.0, 0.05], [0.4, 0.05, 0.0]], index=cols, columns=cols)
    fig = plots.spearman_heatmap(rho, p, runs=runs)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["1.00", "0.90", "-0.30\nns", "0.90", "1.00", "0.20\nns", "-0.30\nns", "0.20\nns", "1.00"]
    mesh = ax.collections[0]
    assert mesh.norm.vmin == -1 and mesh.norm.vmax == 1
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert "gpu_energy_per_inference_j (measured)" in ticks and "input_size" in ticks
    assert GPU_NAME in suptitle(fig) and "p ≥ 0.05" in suptitle(fig)
    with pytest.raises(ValueError, match="runs="):
        plots.spearman_heatmap(rho, p)


def test_spearman_heatmap_without_p_and_with_nan():
    rho = pd.DataFrame([[1.0, np.nan], [np.nan, 1.0]], index=["a", "b"], columns=["a", "b"])
    fig = plots.spearman_heatmap(rho, runs=make_runs())
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["1.00", "1.00", "n/a", "n/a"]
    assert "not given" in suptitle(fig)


def test_latency_distribution():
    runs = make_runs(sizes=(224,))
    fig = plots.latency_distribution(make_latencies(), runs=runs)
    ax_run, ax_all = fig.axes[:2]
    assert ax_run.get_ylabel() == "Latency per inference (s)"
    assert ax_all.get_xlabel() == "Latency per inference (s)"
    assert [t.get_text() for t in ax_run.get_xticklabels()] == ["0", "1", "2"]
    assert "224" in suptitle(fig) and GPU_NAME in suptitle(fig)
    with pytest.raises(ValueError, match="single"):
        plots.latency_distribution(make_latencies(sizes=(64, 224)), runs=runs)
    with pytest.raises(ValueError, match="runs="):
        plots.latency_distribution(make_latencies())


def test_energy_distribution_one_panel_per_domain_with_its_source():
    runs = make_runs(sizes=(224,))
    fig = plots.energy_distribution(make_energies(runs), runs=runs)
    labels = sorted(ax.get_xlabel() for ax in fig.axes)
    assert labels == ["Energy per inference (J, estimated)", "Energy per inference (J, measured)"]
    assert GPU_NAME in suptitle(fig)
    with pytest.raises(ValueError, match="single"):
        plots.energy_distribution(make_energies(make_runs()), runs=runs)


def test_warmup_effect():
    runs = make_runs(sizes=(224,))
    fig = plots.warmup_effect(make_latencies(), first=20, runs=runs)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "Latency per inference (s)"
    assert len(data_lines(ax)) == 1
    x = data_lines(ax)[0].get_xdata()
    assert x.min() == 0 and x.max() == 19
    assert "after 10 untimed warm-up" in suptitle(fig) and GPU_NAME in suptitle(fig)


def test_shared_helpers():
    assert plots.source_label(["measured", np.nan, "measured"]) == "measured"
    assert plots.source_label(["estimated", "measured"]) == "measured and estimated"
    with pytest.raises(ValueError):
        plots.source_label([np.nan])
    with pytest.raises(ValueError):
        plots.source_label(["guessed"])
    assert plots.spans_decade([64, 640]) and not plots.spans_decade([64, 639])
    assert not plots.spans_decade([-1, 100])  # negative dynamic energies stay linear


def test_figures_are_not_registered_with_pyplot(tmp_path):
    before = plt.get_fignums()
    fig = plots.latency_vs_size(make_runs())
    assert plt.get_fignums() == before
    fig.savefig(tmp_path / "latency.png")
    assert (tmp_path / "latency.png").stat().st_size > 0

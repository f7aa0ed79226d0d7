"""Figures of a Study: labels, sources, hardware, configurations, scales, captions, footers and refusals.

The studies are synthetic trees (``treegen``) whose energies and latencies are known exactly, so each
test asserts on the values drawn (artists, labels, data), never on pixels.

Ported from the figures of the wide tables, with these rules changed on purpose (each test says where):
a ``Study`` always carries its runs, so the refusals for a missing ``runs=`` are gone and the hardware
always comes from the runs; a study without hardware (AIPowerMeter's) is labelled "hardware not
recorded" instead of refused; several models, or several input sizes in a distribution, are
configurations (lines, strips) instead of refusals, and only pixels and tokens on one axis are refused;
the decade rule of the scales became one rule per quantity (tokens linear, pixels log2 from 16x, values
log from 100x).
"""
from __future__ import annotations

import json
import struct
import warnings
from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator  # noqa: E402
from treegen import write_run  # noqa: E402

from analysis import AnalysisWarning, MIN_RUNS_FOR_CI, compare, load_study, plots, spearman  # noqa: E402

GPU_NAME = "Synthetic GPU"  # treegen's host
CPU_NAME = "Synthetic CPU"
RUNS = 3
SIZES = (32, 64, 128, 512)
ITERATIONS = 100
DURATION_S = 2.0


def gpu_energy_j(size: int, run: int) -> float:
    """The GPU energy per inference of a run of ``gpu_study``: 10 W per pixel of side, 10 % more per run."""
    return 10.0 * size * (1 + 0.1 * run) * DURATION_S / ITERATIONS


def latency_s(size: int) -> float:
    return 1e-3 * (size / 32) ** 2


def load(paths, labels=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        return load_study(paths, labels)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """The trees of this module, written once."""
    root = tmp_path_factory.mktemp("trees")
    for size in SIZES:  # the model's GPU, another GPU, RAPL; idle baselines
        for run in range(RUNS):
            write_run(root / "gpu", "resnet50", size, run, latency_s=latency_s(size),
                      power_w={"gpu0": 10.0 * size * (1 + 0.1 * run), "gpu1": 50.0, "package-0": 40.0,
                               "dram-0": 5.0},
                      idle_power_w={"gpu0": 30.0, "gpu1": 30.0, "package-0": 10.0, "dram-0": 1.0})
    for label in ("committed", "fresh"):  # a GPU measured, the CPU estimated
        for size in SIZES:
            for run in range(RUNS):
                write_run(root / label, "resnet50", size, run, latency_s=latency_s(size),
                          power_w={"gpu0": 10.0 * size * (1 + 0.1 * run), "cpu_estimated": 30.0})
    for size in range(50, 550, 50):  # BERT on a CPU, one run per point
        write_run(root / "bert", "bert", size, 0, device="cpu", power_w={"cpu_estimated": 8.0},
                  gpu_extra=(), latency_s=1e-4 * size, identity={"task": "nlp"})
    for run in range(6):  # one point measured six times; the first timed inferences are slow
        write_run(root / "point", "alexnet", 224, run, power_w={"gpu0": 100.0 + run, "cpu_estimated": 30.0},
                  latency_s=[0.01] * 3 + [0.002 * (1 + 0.01 * run)] * (ITERATIONS - 3))
    for size in (8, 16, 32, 64, 128, 256, 512):  # tokens in powers of two: small sizes crowd a linear axis
        write_run(root / "pow2", "bert", size, 0, device="cpu", power_w={"cpu_estimated": 8.0}, gpu_extra=(),
                  identity={"task": "nlp"})
    for dtype in ("fp32", "bf16"):  # a batch sweep in two dtypes
        for batch in (1, 4, 16):
            for run in range(2):
                write_run(root / "batch" / f"{dtype}_{batch}", "resnet50", 224, run, batch_size=batch, dtype=dtype,
                          power_w={"gpu0": 100.0 * batch ** 0.5 * (2 if dtype == "fp32" else 1)})
    return root


@pytest.fixture(scope="module")
def gpu_study(trees):
    return load(trees / "gpu", ["gpu"])


@pytest.fixture(scope="module")
def mixed_study(trees):
    return load(trees / "committed", ["committed"])


@pytest.fixture(scope="module")
def two_labels(trees):
    return load([trees / "committed", trees / "fresh"], ["committed", "fresh"])


@pytest.fixture(scope="module")
def bert_study(trees):
    return load(trees / "bert", ["bert"])


@pytest.fixture(scope="module")
def point_study(trees):
    return load(trees / "point", ["point"])


@pytest.fixture(scope="module")
def batch_study(trees):
    folders = [trees / "batch" / f"{d}_{b}" for d in ("fp32", "bf16") for b in (1, 4, 16)]
    return load(folders, ["sweep"] * len(folders))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def subset(study, **where):
    """The study restricted to the runs whose columns take the given values."""
    keep = np.ones(len(study.runs), dtype=bool)
    for column, value in where.items():
        keep &= study.runs[column].isin(value if isinstance(value, (list, tuple)) else [value]).to_numpy()
    runs = study.runs[keep].reset_index(drop=True)
    quantities = study.quantities[study.quantities["run_id"].isin(runs["run_id"])].reset_index(drop=True)
    return replace(study, runs=runs, quantities=quantities)


def with_values(study, domain, quantity, **columns):
    """The study with the long rows of (domain, quantity) changed (``value=np.nan``, ``source=None``...)."""
    q = study.quantities.astype({"source": object, "domain": object, "quantity": object})
    rows = (q["domain"] == domain) & (q["quantity"] == quantity)
    for column, value in columns.items():
        q.loc[rows, column] = value
    return replace(study, quantities=q)


def data_lines(ax) -> list:
    """The lines that draw data (not the reference lines), with a legend entry or not."""
    return [line for line in ax.get_lines() if len(line.get_xdata()) and line.get_gid() is None
            and line.get_label() != "_reference"]


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def suptitle(fig) -> str:
    return fig._suptitle.get_text()


def bands(ax) -> int:
    return sum(isinstance(c, PolyCollection) for c in ax.collections)


# --------------------------------------------------------------------------- energy against a dimension


def test_energy_vs_labels_each_domain_with_its_source(mixed_study):
    fig = plots.energy_vs(mixed_study)
    (ax,) = fig.axes
    label = ax.get_ylabel()
    assert "(J" in label and "measured" in label and "estimated" in label and "legend" in label
    assert GPU_NAME in label and CPU_NAME in label  # the axis names the hardware
    assert legend_texts(ax) == ["GPU (measured)", "CPU (estimated)"]  # each entry carries its source
    lines = data_lines(ax)
    assert len(lines) == 2 and bands(ax) == 2  # one line and one IQR band per domain
    assert [line.get_linestyle() for line in lines] == ["-", "--"]  # the estimate is dashed
    np.testing.assert_allclose(lines[0].get_xdata(), SIZES)
    np.testing.assert_allclose(lines[0].get_ydata(), [gpu_energy_j(s, 1) for s in SIZES])  # median of 3 runs
    np.testing.assert_allclose(lines[1].get_ydata(), 30.0 * DURATION_S / ITERATIONS)
    # 32..512 px spans 16x: log2; energies 0.6..112 J span more than 100x: log
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2 and ax.get_yscale() == "log"
    assert "px" in ax.get_xlabel()
    title = suptitle(fig)
    assert "resnet50" in title and GPU_NAME in title and CPU_NAME in title and "cuda:0" in title
    assert "(random weights)" in title and "median over 3 runs" in title and "interquartile" in title


def test_energy_band_is_the_interquartile_range(gpu_study):
    fig = plots.energy_vs(gpu_study, domains=["gpu"])
    (band,) = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    y = band.get_paths()[0].vertices[:, 1]
    runs = [gpu_energy_j(512, r) for r in range(RUNS)]
    assert np.isclose(y, np.quantile(runs, 0.25)).any() and np.isclose(y, np.quantile(runs, 0.75)).any()


def test_energy_vs_single_estimated_domain_never_says_measured(mixed_study):
    fig = plots.energy_vs(mixed_study, domains=["cpu_estimated"])
    (ax,) = fig.axes
    assert ax.get_ylabel() == f"Energy per inference (J, estimated)\n{CPU_NAME}"
    assert len(data_lines(ax)) == 1 and legend_texts(ax) == ["CPU (estimated)"]


def test_energy_vs_dynamic_and_linear_within_16x(gpu_study):
    """Was "linear within a decade": pixels now go log2 from 16x, values log from 100x."""
    fig = plots.energy_vs(subset(gpu_study, input_size=[32, 64, 128]), domains=["gpu"],
                          quantity="dynamic_energy_per_inference_j")
    (ax,) = fig.axes
    assert ax.get_xscale() == "linear" and ax.get_yscale() == "linear"  # 4x in size, 6x in energy
    assert ax.get_ylabel() == f"Dynamic energy per inference (above idle) (J, measured)\n{GPU_NAME}"
    idle_j = 30.0 * DURATION_S / ITERATIONS
    np.testing.assert_allclose(data_lines(ax)[0].get_ydata(), [gpu_energy_j(s, 1) - idle_j for s in (32, 64, 128)])


def test_energy_vs_default_domains_leave_out_other_gpus_and_the_node(gpu_study):
    fig = plots.energy_vs(gpu_study)
    assert legend_texts(fig.axes[0]) == ["GPU (measured)", "CPU package (measured)", "DRAM (measured)"]
    fig = plots.energy_vs(gpu_study, domains=["gpu", "gpu1", "gpu_node"])
    assert legend_texts(fig.axes[0]) == ["GPU (measured)", "GPU 1 (not the model's) (measured)",
                                         "all GPUs of the node (measured)"]
    assert len(data_lines(fig.axes[0])) == 3


def test_cpu_only_energy_figure_is_estimated_and_names_the_cpu(bert_study):
    fig = plots.energy_vs(bert_study)
    (ax,) = fig.axes
    assert ax.get_ylabel() == f"Energy per inference (J, estimated)\n{CPU_NAME}"
    title = suptitle(fig)
    assert CPU_NAME in title and "on cpu" in title and "GPU" not in title


def test_energy_vs_refuses_what_is_not_there(gpu_study, mixed_study):
    with pytest.raises(ValueError, match="source"):  # an energy without its source is not drawn
        plots.energy_vs(with_values(mixed_study, "gpu", "energy_per_inference_j", source=None), domains=["gpu"])
    with pytest.raises(ValueError, match="unknown energy source"):
        plots.energy_vs(with_values(mixed_study, "gpu", "energy_per_inference_j", source="guessed"))
    with pytest.raises(ValueError, match=r"dynamic_energy_per_inference_j of gpu is all NaN \(no idle baseline"):
        plots.energy_vs(mixed_study, quantity="dynamic_energy_per_inference_j")
    with pytest.raises(ValueError, match="energy_per_inference_j of dram is missing"):
        plots.energy_vs(mixed_study, domains=["gpu", "dram"])
    with pytest.raises(ValueError, match="is all NaN"):  # no sensor is never drawn as zero
        plots.energy_vs(with_values(gpu_study, "gpu", "energy_per_inference_j", value=np.nan), domains=["gpu"])
    with pytest.raises(ValueError, match="not an energy quantity"):
        plots.energy_vs(gpu_study, quantity="latency_median_s")
    with pytest.raises(ValueError, match="not numeric"):
        plots.energy_vs(gpu_study, x="dtype")


# --------------------------------------------------------------------------- configurations


def test_hue_by_configuration_one_line_per_label_and_domain(two_labels):
    fig = plots.energy_vs(two_labels)
    ax = fig.axes[0]
    assert legend_texts(ax) == ["committed · GPU (measured)", "committed · CPU (estimated)",
                                "fresh · GPU (measured)", "fresh · CPU (estimated)"]
    lines = data_lines(ax)
    assert len(lines) == 4 and bands(ax) == 4
    # colour = configuration, marker = domain, dashes = estimated
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert lines[0].get_marker() == lines[2].get_marker() != lines[1].get_marker()
    assert [line.get_linestyle() for line in lines] == ["-", "--", "-", "--"]
    assert legend_texts(plots.energy_vs(two_labels, hue="label").axes[0]) == legend_texts(ax)


def test_batch_sweep_hue_and_refusal_to_pool(batch_study):
    fig = plots.energy_vs(batch_study, x="batch_size", domains=["gpu"])
    (ax,) = fig.axes
    assert legend_texts(ax) == ["bf16 · GPU (measured)", "fp32 · GPU (measured)"]
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2  # batch size: always log2
    assert ax.get_xlabel() == "Batch size (inputs per inference)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4", "16"]
    np.testing.assert_allclose(data_lines(ax)[1].get_ydata(), [2 * 100.0 * b ** 0.5 * 0.02 for b in (1, 4, 16)])
    assert "Energy per inference vs batch size" in suptitle(fig)
    lines = plots.latency_vs(batch_study, x="batch_size", hue=["dtype"])
    assert legend_texts(lines.axes[0]) == ["bf16", "fp32"]
    with pytest.raises(ValueError, match="dtype varies within a line"):  # a line never pools configurations
        plots.energy_vs(batch_study, x="input_size", hue="batch_size")
    with pytest.raises(ValueError, match="not a dimension"):
        plots.energy_vs(batch_study, hue="colour")
    with pytest.raises(ValueError, match="already shows it"):
        plots.energy_vs(batch_study, x="batch_size", hue=["batch_size", "dtype"])


def test_a_long_legend_goes_beside_the_axes(batch_study):
    fig = plots.latency_vs(batch_study)  # six configurations (dtype x batch size) at one input size
    ax = fig.axes[0]
    assert legend_texts(ax) == [f"batch {b}, {d}" for b in (1, 4, 16) for d in ("bf16", "fp32")]
    fig.draw_without_rendering()
    assert ax.get_legend().get_window_extent().x0 > ax.get_window_extent().x1  # never over the data


# --------------------------------------------------------------------------- scales and ticks


def test_bert_tokens_get_a_linear_axis_with_readable_ticks(bert_study):
    """The old rule took any decade for a log axis, which made BERT's linear growth from 50 to 500
    tokens look accelerating; tokens are now always linear, ticked at the measured sizes."""
    fig = plots.latency_vs(bert_study)
    (ax,) = fig.axes
    assert ax.get_xscale() == "linear" and ax.get_yscale() == "linear"
    assert ax.get_xlabel() == "Input size (tokens)"
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(s) for s in range(50, 550, 50)]
    np.testing.assert_allclose(data_lines(ax)[0].get_ydata(), [1e-4 * s for s in range(50, 550, 50)])
    assert "one run per point: no band" in suptitle(fig) and bands(ax) == 0


def test_scale_rule_is_the_same_for_a_subset(two_labels):
    """Committed and fresh figures, or one label alone, get the same axes."""
    whole = plots.energy_vs(two_labels).axes[0]
    for label in ("committed", "fresh"):
        alone = plots.energy_vs(subset(two_labels, label=label)).axes[0]
        assert (alone.get_xscale(), alone.get_yscale()) == (whole.get_xscale(), whole.get_yscale()) == ("log", "log")
        assert list(alone.get_xticks()) == list(whole.get_xticks()) == list(SIZES)
    assert plots.x_scale("input_size", [8, 4096], "px") == plots.x_scale("input_size", [8, 128], "px") == "log2"
    assert plots.x_scale("input_size", [50, 500], "tokens") == plots.x_scale("input_size", [200, 256], "px") \
        == "linear"


def test_sizes_that_would_collide_get_a_locator(gpu_study, trees):
    ax = plots.latency_vs(gpu_study).axes[0]
    assert isinstance(ax.xaxis.get_major_locator(), FixedLocator)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["32", "64", "128", "512"]
    ax = plots.latency_vs(load(trees / "pow2", ["pow2"])).axes[0]  # 8, 16, 32 tokens crowd a linear axis
    assert ax.get_xscale() == "linear" and isinstance(ax.xaxis.get_major_locator(), MaxNLocator)


def test_axes_name_hardware_without_trademarks():
    assert plots._short_hardware("Intel(R) Xeon(R) Platinum 8468") == "Intel Xeon Platinum 8468"
    assert plots._short_hardware("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz") == "Intel Core i7-8700"
    assert plots._short_hardware("AMD EPYC 7763 64-Core Processor") == "AMD EPYC 7763 64-Core"
    label = plots._source_axis_label("Energy per inference", "J", ["measured", "estimated"],
                                     ["NVIDIA H200", "Intel(R) Xeon(R) Platinum 8468"])
    assert label == "Energy per inference (J)\nmeasured + estimated: see legend\nNVIDIA H200 + Intel Xeon Platinum 8468"


def test_shared_helpers():
    assert plots.source_label(["measured", np.nan, "measured"]) == "measured"
    assert plots.source_label(["estimated", "measured"]) == "measured and estimated"
    with pytest.raises(ValueError):
        plots.source_label([np.nan])
    with pytest.raises(ValueError):
        plots.source_label(["guessed"])
    # the value rule is now 100x (it was one decade): a 10x spread reads better on a linear axis
    assert plots.value_scale([1, 100]) == "log" and plots.value_scale([1, 99]) == "linear"
    assert plots.value_scale([-1, 1000]) == "linear"  # negative dynamic energies stay linear
    assert plots.x_scale("batch_size", [1, 2]) == "log2" and plots.x_scale("threads", [1, 64]) == "linear"


# --------------------------------------------------------------------------- latency, memory, utilisation


def test_latency_vs(gpu_study):
    fig = plots.latency_vs(gpu_study)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "Latency per inference, run median (s)"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"  # 16x in size, 256x in latency
    assert len(data_lines(ax)) == 1 and ax.get_legend() is None  # one configuration: no legend
    np.testing.assert_allclose(data_lines(ax)[0].get_ydata(), [latency_s(s) for s in SIZES])
    assert GPU_NAME in suptitle(fig) and "resnet50" in suptitle(fig)
    assert plots.latency_vs(gpu_study, quantity="latency_p99_s").axes[0].get_ylabel() == \
        "Latency per inference, run 99th percentile (s)"


def test_latency_vs_refuses_pixels_and_tokens_on_one_axis(trees):
    """Several models used to be refused; they are now configurations, unless their sizes differ in unit."""
    with pytest.raises(ValueError, match="px and tokens"):
        plots.latency_vs(load([trees / "gpu", trees / "bert"], ["gpu", "bert"]))


def test_sm_util_vs_latency(gpu_study):
    fig = plots.sm_util_vs_latency(gpu_study)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "SM utilisation, run mean (%)"
    assert ax.get_xlabel() == "Latency per inference, run median (s)"
    assert len(ax.collections[0].get_offsets()) == len(SIZES) * RUNS  # one point per run
    assert legend_texts(ax) == ["32", "64", "128", "512"]
    assert ax.get_legend().get_title().get_text() == "Input size (image side, px)"
    assert GPU_NAME in suptitle(fig) and "one point per run" in suptitle(fig)


def test_gpu_figures_refuse_cpu_only_runs(bert_study, gpu_study):
    with pytest.raises(ValueError, match=r"no GPU measurement: sm_util_mean_pct of gpu is missing"):
        plots.sm_util_vs_latency(bert_study)
    with pytest.raises(ValueError, match="no GPU"):
        plots.gpu_power_vs_sm_util(bert_study)
    with pytest.raises(ValueError, match="sm_util_mean_pct of gpu is all NaN"):
        plots.sm_util_vs_latency(with_values(gpu_study, "gpu", "sm_util_mean_pct", value=np.nan))


def test_gpu_power_vs_sm_util(gpu_study):
    fig = plots.gpu_power_vs_sm_util(gpu_study)
    (ax,) = fig.axes
    assert ax.get_ylabel() == f"GPU mean power (W, measured)\n{GPU_NAME}"
    assert ax.get_xlabel() == "SM utilisation, run mean (%)"
    offsets = ax.collections[0].get_offsets()
    assert len(offsets) == len(SIZES) * RUNS
    assert sorted(offsets[:, 1]) == pytest.approx(sorted(10.0 * s * (1 + 0.1 * r) for s in SIZES for r in range(RUNS)))
    assert GPU_NAME in suptitle(fig)
    with pytest.raises(ValueError, match="source"):
        plots.gpu_power_vs_sm_util(with_values(gpu_study, "gpu", "mean_power_w", source=None))


def test_memory_vs_draws_what_was_recorded(gpu_study, bert_study):
    fig = plots.memory_vs(gpu_study)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "Peak memory (MiB)"
    assert legend_texts(ax) == list(plots.MEMORY_ITEMS.values())
    assert len(data_lines(ax)) == 3
    assert legend_texts(plots.memory_vs(bert_study).axes[0]) == ["host RSS, this process tree"]
    with pytest.raises(ValueError, match="no memory measurement: .*rss_peak_mib of process is all NaN"):
        plots.memory_vs(with_values(bert_study, "process", "rss_peak_mib", value=np.nan))


# --------------------------------------------------------------------------- correlations


def test_spearman_heatmap_annotations_significance_and_readable_labels(gpu_study):
    cols = ["input_size", "latency_median_s", "gpu_energy_per_inference_j"]
    rho = pd.DataFrame([[1.0, 0.9, -0.3], [0.9, 1.0, 0.2], [-0.3, 0.2, 1.0]], index=cols, columns=cols)
    p = pd.DataFrame([[0.0, 0.001, 0.4], [0.001, 0.0, 0.05], [0.4, 0.05, 0.0]], index=cols, columns=cols)
    fig = plots.spearman_heatmap(rho, p, gpu_study)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["1.00", "0.90", "-0.30\nns", "0.90", "1.00", "0.20\nns", "-0.30\nns", "0.20\nns", "1.00"]
    mesh = ax.collections[0]
    assert mesh.norm.vmin == -1 and mesh.norm.vmax == 1
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["input size (px)", "latency (median)", "GPU energy / inference (measured)"]
    assert GPU_NAME in suptitle(fig) and "p ≥ 0.05" in suptitle(fig)


def test_spearman_heatmap_of_a_study_names_every_column(gpu_study):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)  # constant columns left out
        rho, p = spearman(gpu_study)
    ax = plots.spearman_heatmap(rho, p, gpu_study).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["input size (px)", "latency (median)", "GPU energy / inference (measured)",
                      "all GPUs of the node energy / inference (measured)"]  # the constant columns left out
    names = plots.variable_labels(gpu_study)
    assert names["dram_energy_per_inference_j"] == "DRAM energy / inference (measured)"
    assert names["gpu_sm_util_mean_pct"] == "GPU SM utilisation (mean)"
    assert names["process_rss_peak_mib"] == "host RSS (peak)" and names["batch_size"] == "batch size"


def test_spearman_heatmap_without_p_and_with_nan(gpu_study):
    rho = pd.DataFrame([[1.0, np.nan], [np.nan, 1.0]], index=["a", "b"], columns=["a", "b"])
    fig = plots.spearman_heatmap(rho, None, gpu_study)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["1.00", "1.00", "n/a", "n/a"]
    assert "not given" in suptitle(fig)
    with pytest.raises(ValueError, match="empty"):
        plots.spearman_heatmap(pd.DataFrame(), None, gpu_study)


# --------------------------------------------------------------------------- one point over runs


def test_latency_distribution_is_a_strip_of_runs_with_the_median(point_study, gpu_study):
    fig = plots.latency_distribution(point_study)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "Latency per inference, run median (s)"
    dots = np.asarray(ax.collections[0].get_offsets())
    assert sorted(dots[:, 1]) == pytest.approx([0.002 * (1 + 0.01 * r) for r in range(6)])  # one dot per run
    median = [c for c in ax.collections if c.get_label() == "median over runs"][0]
    assert median.get_segments()[0][0, 1] == pytest.approx(np.median(dots[:, 1]))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["6 runs"]
    assert "224 px" in suptitle(fig) and GPU_NAME in suptitle(fig) and "one run each" in suptitle(fig)
    # several input sizes used to be refused; each is now a strip
    ticks = [t.get_text() for t in plots.latency_distribution(gpu_study).axes[0].get_xticklabels()]
    assert ticks == [f"{s} px\n(3 runs)" for s in SIZES]


def test_energy_distribution_one_panel_per_domain_with_its_source(point_study):
    fig = plots.energy_distribution(point_study)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == [f"Energy per inference (J, measured)\n{GPU_NAME}",
                      f"Energy per inference (J, estimated)\n{CPU_NAME}"]
    assert [ax.get_title() for ax in fig.axes] == ["GPU (measured)", "CPU (estimated)"]
    gpu_dots = fig.axes[0].collections[0].get_offsets()[:, 1]
    assert sorted(gpu_dots) == pytest.approx([(100.0 + r) * DURATION_S / ITERATIONS for r in range(6)])
    assert GPU_NAME in suptitle(fig) and "cpu_estimated = " in plots.footer(fig)


def test_warmup_effect(point_study):
    fig = plots.warmup_effect(point_study, first=20)
    (ax,) = fig.axes
    assert ax.get_ylabel() == "Latency per inference (s)"
    (line,) = data_lines(ax)
    x, y = line.get_xdata(), line.get_ydata()
    assert x.min() == 0 and x.max() == 19
    assert y[:3] == pytest.approx([0.01] * 3) and y[5] == pytest.approx(np.median([0.002 * (1 + 0.01 * r)
                                                                                  for r in range(6)]))
    assert bands(ax) == 1
    title = suptitle(fig)
    assert "after 10 untimed warm-up" in title and GPU_NAME in title and "median over 6 runs" in title


def test_warmup_effect_of_one_run_says_one_run(point_study):
    fig = plots.warmup_effect(subset(point_study, run=0), first=20)
    title = suptitle(fig)
    assert "one run: no band" in title and "median" not in title and "interquartile" not in title
    assert bands(fig.axes[0]) == 0


# --------------------------------------------------------------------------- forest plot


def comparison() -> pd.DataFrame:
    """``stats.compare``'s shape: bf16 against fp32, one row per (domain, quantity)."""
    return pd.DataFrame({
        "dtype": ["bf16", "bf16", "bf16"], "baseline": ["fp32"] * 3,
        "domain": ["gpu", "cpu_estimated", "clock"],
        "quantity": ["energy_per_inference_j", "energy_per_inference_j", "latency_median_s"],
        "ratio": [0.5, 1.02, 0.8], "ci_low": [0.45, 0.9, 0.6], "ci_high": [0.56, 1.1, 1.3],
        "verdict": ["lower", "no difference shown", "no difference shown"],
        "source": ["measured", "estimated", "measured"], "n": [10, 10, 3], "n_baseline": [10, 10, 3],
    })


def test_forest_plot_rows_line_at_one_verdicts_and_unreliable_cis(batch_study):
    fig = plots.forest(comparison(), batch_study)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "GPU energy / inference (measured)", "CPU energy / inference (estimated)", "latency (median)"]
    assert "bf16 vs fp32" in suptitle(fig)  # one comparison: named once, in the title
    assert len([line for line in ax.get_lines() if list(line.get_xdata()) == [1, 1]]) == 1  # the line at 1
    assert ax.get_xscale() == "log"
    points = [line for line in ax.get_lines() if line.get_gid() == "ratio"]
    assert [(p.get_xdata()[0], p.get_ydata()[0]) for p in points] == [(0.5, 0), (1.02, 1), (0.8, 2)]
    bars = [c for c in ax.collections if c.get_gid() == "ci"]
    np.testing.assert_allclose(bars[0].get_segments()[0][:, 0], [0.45, 0.56])
    # the CI from 3 runs is dashed and hollow; the others solid and filled
    assert [p.get_markerfacecolor() == "white" for p in points] == [False, False, True]
    assert [b.get_linestyle()[0][1] is not None for b in bars] == [False, False, True]
    assert f"CI from < {MIN_RUNS_FOR_CI} runs: unreliable" in legend_texts(ax)
    verdicts = [t.get_text().split("\n")[0] for t in ax.texts]
    assert verdicts == ["lower", "no difference shown", "no difference shown"]
    assert "cpu_estimated = " in plots.footer(fig)  # an estimate is drawn


def test_forest_plot_of_several_comparisons_and_refusals(batch_study):
    table = pd.concat([comparison(), comparison().assign(dtype="fp16", ci_reliable=True)], ignore_index=True)
    ax = plots.forest(table, batch_study).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "bf16 vs fp32\nGPU energy / inference (measured)" and labels[3].startswith("fp16 vs fp32")
    assert f"CI from < {MIN_RUNS_FOR_CI} runs: unreliable" in legend_texts(ax)  # the bf16 latency row
    with pytest.raises(ValueError, match="ci_high"):
        plots.forest(comparison().drop(columns="ci_high"), batch_study)
    with pytest.raises(ValueError, match="no ratio"):
        plots.forest(comparison().assign(ratio=np.nan), batch_study)


def test_forest_plot_names_the_rows_of_compares_own_table(batch_study):
    table = compare(subset(batch_study, dtype="fp32"), baseline={"batch_size": 1}, by=["batch_size"])
    labels = [t.get_text().split("\n")[0] for t in plots.forest(table, batch_study).axes[0].get_yticklabels()]
    assert set(labels) == {"batch_size=4 vs batch_size=1", "batch_size=16 vs batch_size=1"}  # never two alike
    table = compare(batch_study, baseline={"dtype": "fp32"}, by=["dtype"])
    labels = [t.get_text().split("\n")[0] for t in plots.forest(table, batch_study).axes[0].get_yticklabels()]
    assert {"batch 1, dtype=bf16 vs dtype=fp32", "batch 16, dtype=bf16 vs dtype=fp32"} <= set(labels)


# --------------------------------------------------------------------------- footer, formats, AIPowerMeter


def test_footer_says_labels_dates_threads_and_the_estimate(two_labels, gpu_study):
    sensors = [{**s, "cpu_estimated": {**s["cpu_estimated"], "tdp_w": 8.0, "idle_fraction": 0.3,
                                       "tdp_source": "default: 4 W x 2 logical CPUs"}} for s in two_labels.info["sensors"]]
    study = replace(two_labels, info=two_labels.info.assign(sensors=sensors))
    text = plots.footer(plots.energy_vs(study))
    assert "data: committed (measured 2025-01-01 UTC), fresh (measured 2025-01-01 UTC)" in text
    assert "torch threads: 8" in text
    assert "cpu_estimated = TDP × (0.3 + 0.7 × CPU load), TDP = 8 W (default: 4 W × 2 logical CPUs)" in text
    text = plots.footer(plots.energy_vs(study, domains=["gpu"]))  # no estimate drawn, none explained
    assert "cpu_estimated" not in text and "committed" in text
    assert "TDP not recorded" in plots.footer_text(gpu_study, estimated=True)


def test_save_writes_png_svg_and_pdf_at_paper_size(tmp_path, gpu_study):
    paths = plots.save(plots.latency_vs(gpu_study), tmp_path / "figures" / "latency")
    assert [p.name for p in paths] == ["latency.png", "latency.svg", "latency.pdf"]
    width, height = struct.unpack(">II", paths[0].read_bytes()[16:24])  # the PNG header
    assert (width, height) == (1280, 960)
    assert paths[1].read_text().lstrip().startswith("<?xml") and paths[2].read_bytes().startswith(b"%PDF")
    again = plots.save(plots.latency_vs(gpu_study), tmp_path / "again")
    assert again[1].read_bytes() == paths[1].read_bytes()  # no date: same figure, same bytes


def test_aipowermeter_study_says_hardware_not_recorded(tmp_path):
    folder = tmp_path / "resnet50" / "input_64" / "run_0"
    folder.mkdir(parents=True)
    lines = [json.dumps({"date": f"2021-12-08 13:55:{s:02d}.000000", "metrics": {"cpu": {"intel_power": 30.0}}})
             for s in range(0, 10, 2)]
    (folder / "power_metrics.json").write_text("\n".join(lines) + "\n")
    np.savetxt(folder / "latency.csv", np.full(50, 0.01))
    study = load(tmp_path, ["aipm"])
    fig = plots.energy_distribution(study)
    assert fig.axes[0].get_ylabel() == "Energy per inference (J, measured)\nhardware not recorded"
    assert "resnet50 (hardware not recorded)" in suptitle(fig)
    assert "measured" not in plots.footer(fig)  # no date recorded: none claimed


def test_figures_are_not_registered_with_pyplot(tmp_path, gpu_study):
    before = plt.get_fignums()
    fig = plots.latency_vs(gpu_study)
    assert plt.get_fignums() == before
    fig.savefig(tmp_path / "latency.png")
    assert (tmp_path / "latency.png").stat().st_size > 0

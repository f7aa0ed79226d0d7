"""Several trees in one study, summaries by any dimension, and comparisons with a bootstrap CI of the ratio."""
import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisWarning, Study, load_study, summarize
from analysis.comparison import COMPARISON_COLUMNS, compare
from analysis.stats import bootstrap_ratio_ci
from measure import runtree
from treegen import write_run

pytestmark = pytest.mark.filterwarnings("error::analysis.AnalysisWarning")  # clean inputs warn of nothing

NOISE = 1.0 + np.random.default_rng(7).normal(0.0, 0.03, size=8)  # run-to-run noise of the synthetic runs


def write_side(root, scale, noise=NOISE, **options):
    """One run per value of ``noise`` at input size 64: the GPU draws ``100 W * scale * noise[k]`` (2 s, 100
    inferences: ``2 J * scale * noise[k]`` per inference), the estimated CPU 30 W, each inference
    ``0.02 s * noise[k]``."""
    for k, factor in enumerate(noise):
        write_run(root, run=k, power_w={"gpu0": 100.0 * scale * factor, "cpu_estimated": 30.0},
                  latency_s=0.02 * factor, **options)
    return root


def rows(table, domain="gpu", quantity="energy_per_inference_j"):
    return table[(table["domain"] == domain) & (table["quantity"] == quantity)].reset_index(drop=True)


@pytest.fixture
def fp32_bf16(tmp_path):
    """Two trees of one model: bf16's GPU energy is exactly 0.70 x fp32's (the same noise, in another order)."""
    write_side(tmp_path / "fp32", 1.0)
    write_side(tmp_path / "bf16", 0.70, noise=NOISE[::-1], dtype="bf16")
    return tmp_path


def memory_study(values, *, dimension="label", source="measured", order="sequential", extra=None):
    """A study held in memory, its GPU energies per inference (J) given: ``values[v]`` lists those of the runs
    whose ``dimension`` is ``v`` (with another dimension than ``label``, every run is of one label, as in one
    sweep), or maps values of the added dimension ``extra`` to such lists; ``source`` is a string or
    ``{v: source}``; ``order`` is the sweep's."""
    runs, quantities = [], []
    for value, per in values.items():
        for key, energies in (per.items() if extra else [(None, per)]):
            for k, energy in enumerate(energies):
                identity = {"label": "sweep", "model": "m", "task": "vision", "input_size": 64, "batch_size": 1,
                            "dtype": "fp32", "execution": "eager", "threads": 1, "device": "cuda:0",
                            dimension: value, **({extra: key} if extra else {}), "run": k}
                run_id = len(runs)
                runs.append({"run_id": run_id, **identity, "order": order, "hardware_gpu": "GPU X",
                             "hardware_cpu": "CPU Y"})
                quantities.append({"run_id": run_id, **identity, "domain": "gpu",
                                   "quantity": "energy_per_inference_j", "value": energy, "unit": "J",
                                   "source": source if isinstance(source, str) else source[value],
                                   "method": "counter", "note": None})
    return Study(runs=pd.DataFrame(runs), quantities=pd.DataFrame(quantities), info=pd.DataFrame())


# loading several trees

def test_two_trees_of_one_model_in_a_parent_folder_are_two_labels(tmp_path):
    write_run(tmp_path / "quick_a", power_w={"gpu0": 100.0})
    write_run(tmp_path / "quick_b", power_w={"gpu0": 300.0})  # the same identity and run
    study = load_study(tmp_path)
    assert study.runs["label"].tolist() == ["quick_a", "quick_b"]
    assert study.varying() == ["label"]
    assert rows(study.quantities, quantity="mean_power_w")["value"].tolist() == [100.0, 300.0]


def test_trees_given_one_by_one_take_their_folder_names_or_the_labels_given(tmp_path):
    write_run(tmp_path / "x" / "resnet50")
    write_run(tmp_path / "y")
    assert load_study([tmp_path / "x" / "resnet50", tmp_path / "y"]).runs["label"].tolist() == ["resnet50", "y"]
    study = load_study([tmp_path / "x" / "resnet50", tmp_path / "y"], labels=["before", "after"])
    assert study.runs["label"].tolist() == ["before", "after"]
    assert study.dimensions[:2] == ["label", "model"]


def test_a_wrong_number_of_labels_is_one_line_error(tmp_path):
    write_run(tmp_path / "a")
    write_run(tmp_path / "b")
    with pytest.raises(ValueError, match=r"^1 labels for 2 trees: give one label per tree$"):
        load_study([tmp_path / "a", tmp_path / "b"], labels=["only"])


def test_two_trees_of_one_name_need_labels(tmp_path):
    write_run(tmp_path / "x" / "resnet50")
    write_run(tmp_path / "y" / "resnet50")
    with pytest.raises(ValueError, match="would both be labelled 'resnet50': name the trees with labels"):
        load_study([tmp_path / "x" / "resnet50", tmp_path / "y" / "resnet50"])
    with pytest.raises(ValueError, match="given twice"):
        load_study([tmp_path / "x", tmp_path / "x"])
    study = load_study([tmp_path / "x" / "resnet50", tmp_path / "y" / "resnet50"], labels=["x", "y"])
    assert study.runs["label"].tolist() == ["x", "y"]


def test_a_duplicate_inside_one_tree_keeps_its_warning(tmp_path):
    folder = write_run(tmp_path / "tree")
    shutil.copytree(folder, tmp_path / "tree" / "z_copy" / "input_64" / "run_0")
    with pytest.warns(AnalysisWarning, match="same identity and run as .*duplicate skipped"):
        study = load_study(tmp_path / "tree")
    assert study.runs["folder"].tolist() == ["input_64/run_0"]


# summaries by any dimension

def test_summary_defaults_to_every_dimension_that_varies(fp32_bf16):
    summary = summarize(load_study(fp32_bf16))
    assert list(summary.columns[:4]) == ["label", "model", "input_size", "dtype"]
    energy = rows(summary)
    assert energy[["label", "dtype", "n"]].values.tolist() == [["bf16", "bf16", 8], ["fp32", "fp32", 8]]
    assert energy["median"].tolist() == pytest.approx([0.7 * 2 * np.median(NOISE), 2 * np.median(NOISE)])


@pytest.mark.parametrize("by", [["label"], ["dtype"], ["model"]])
def test_summary_by_the_label_or_any_dimension(fp32_bf16, by):
    summary = summarize(load_study(fp32_bf16), by=by)
    energy = rows(summary)
    assert list(summary.columns[: len(by)]) == by
    assert energy["n"].tolist() == ([16] if by == ["model"] else [8, 8])


def test_summary_by_a_dimension_a_tree_adds(tmp_path):
    for k, prompt in enumerate(["short", "long", "short", "long"]):
        write_run(tmp_path, run=k, identity={"prompt": prompt}, power_w={"gpu0": 100.0 if prompt == "short" else 200.0})
    summary = summarize(load_study(tmp_path), by=["prompt"])
    assert rows(summary)[["prompt", "n", "median"]].values.tolist() == [["long", 2, 4.0], ["short", 2, 2.0]]


# compare: the ratio, its CI and the verdict

def test_a_known_ratio_is_inside_its_ci_and_lower(fp32_bf16):
    table = compare(load_study(fp32_bf16), baseline="fp32")
    assert list(table.columns) == ["model", "input_size", *COMPARISON_COLUMNS]
    gpu = rows(table).iloc[0]
    assert (gpu["configuration"], gpu["baseline"]) == ("dtype=bf16", "dtype=fp32")
    assert gpu["ratio"] == pytest.approx(0.70)
    assert gpu["ci_low"] < 0.70 < gpu["ci_high"] < 1.0 and gpu["ci_high"] - gpu["ci_low"] < 0.1
    assert (gpu["n"], gpu["n_baseline"], gpu["ci_reliable"], gpu["paired"]) == (8, 8, True, False)
    assert (gpu["verdict"], gpu["source"], gpu["hardware"], gpu["unit"]) == ("lower", "measured", "Synthetic GPU", "J")
    assert gpu["median_baseline"] == pytest.approx(2.0 * np.median(NOISE))
    cpu = rows(table, "cpu_estimated").iloc[0]
    assert (cpu["ratio"], cpu["ci_low"], cpu["ci_high"]) == (pytest.approx(1.0),) * 3
    assert (cpu["verdict"], cpu["source"], cpu["hardware"]) == ("no difference shown", "estimated", "Synthetic CPU")
    latency = rows(table, "clock", "latency_median_s").iloc[0]
    assert latency["ratio"] == pytest.approx(1.0) and latency["verdict"] == "no difference shown"
    assert set(zip(table["domain"], table["quantity"])) == {
        (d, q) for d in ("gpu", "cpu_estimated") for q in ("energy_per_inference_j", "energy_per_sample_j")
    } | {("clock", "latency_median_s")}


def test_the_other_way_round_is_higher_and_a_label_or_dimension_names_the_same_baseline(fp32_bf16):
    study = load_study(fp32_bf16)
    higher = rows(compare(study, baseline="bf16")).iloc[0]
    assert higher["ratio"] == pytest.approx(1 / 0.70) and higher["verdict"] == "higher"
    assert higher["ci_low"] > 1.0
    pd.testing.assert_frame_equal(compare(study, baseline="fp32"), compare(study, baseline={"dtype": "fp32"}))
    pd.testing.assert_frame_equal(compare(study), compare(study, baseline="bf16"))  # the first tree loaded


def test_each_input_size_is_compared_with_the_same_size(tmp_path):
    for size, scale in [(32, 0.5), (64, 0.9)]:
        write_side(tmp_path / "a", 1.0, input_size=size)
        write_side(tmp_path / "b", scale, noise=NOISE[::-1], input_size=size)
    table = rows(compare(load_study(tmp_path), baseline="a"))
    assert table[["input_size", "configuration", "baseline"]].values.tolist() == [
        [32, "label=b", "label=a"], [64, "label=b", "label=a"]]
    assert table["ratio"].tolist() == pytest.approx([0.5, 0.9])
    assert table["verdict"].tolist() == ["lower", "lower"]


def test_equal_configurations_give_a_ci_containing_1_about_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    repetitions = 200
    values = {label: {r: list(rng.lognormal(0.0, 0.05, size=10)) for r in range(repetitions)} for label in "ab"}
    study = memory_study(values, extra="repetition")
    table = compare(study, baseline="a", by=["label"], n_boot=1000)
    assert len(table) == repetitions and set(table["repetition"]) == set(range(repetitions))
    contains = ((table["ci_low"] <= 1.0) & (1.0 <= table["ci_high"])).sum()
    assert 176 <= contains <= 199  # 88 % to 99.5 %: about 95 %, neither too narrow nor never wrong
    assert (table["verdict"] == "no difference shown").sum() == contains


def test_paired_runs_cancel_a_shared_drift():
    drift = np.linspace(1.0, 1.6, 10)  # the machine warms up: run k of both sides shares it
    rng = np.random.default_rng(3)
    values = {"fp32": drift * rng.normal(1.0, 0.01, 10), "bf16": 0.8 * drift * rng.normal(1.0, 0.01, 10)}
    study = memory_study(values, dimension="dtype", order="interleave")  # one sweep, run k of both together
    paired = compare(study, baseline={"dtype": "fp32"}).iloc[0]
    unpaired = compare(study, baseline={"dtype": "fp32"}, paired=False).iloc[0]
    assert paired["paired"] and not unpaired["paired"] and paired["configuration"] == "dtype=bf16"
    assert paired["ci_low"] < 0.8 < paired["ci_high"] and unpaired["ci_low"] < 0.8 < unpaired["ci_high"]
    assert paired["ci_high"] - paired["ci_low"] < 0.25 * (unpaired["ci_high"] - unpaired["ci_low"])
    assert paired["verdict"] == "lower"
    sequential = memory_study(values, dimension="dtype", order="sequential")
    assert not compare(sequential, baseline={"dtype": "fp32"}).iloc[0]["paired"]  # not interleaved: unpaired
    assert compare(sequential, baseline={"dtype": "fp32"}, paired=True).iloc[0]["ci_low"] == paired["ci_low"]


def one_sweep(root, order):
    """Two dtypes measured by one sweep (one tree: one study.json at its root), meta.json saying ``order``."""
    write_side(root / "fp32", 1.0)
    write_side(root / "bf16", 0.70, noise=NOISE[::-1], dtype="bf16")
    for config in ("fp32", "bf16"):
        (root / config / runtree.STUDY_FILE).unlink()
        for meta in (root / config).glob("input_*/run_*/meta.json"):
            meta.write_text(json.dumps({**json.loads(meta.read_text()), "order": order}))
    runtree.write_json(root / runtree.STUDY_FILE, {"schema": runtree.SCHEMA, "plan": {"model": "resnet50"}})
    return load_study(root)


@pytest.mark.parametrize("order, paired", [("interleave", True), ("sequential", False), ("shuffle", False)])
def test_runs_of_an_interleaved_sweep_are_paired(tmp_path, order, paired):
    study = one_sweep(tmp_path / "sweep", order)
    assert study.runs["order"].unique().tolist() == [order] and study.runs["label"].nunique() == 1
    gpu = rows(compare(study, baseline={"dtype": "fp32"})).iloc[0]
    assert gpu["paired"] == paired and gpu["ratio"] == pytest.approx(0.70) and gpu["verdict"] == "lower"


def test_mixing_measured_and_estimated_figures_is_flagged():
    study = memory_study({"a": [1.0, 1.1, 0.9, 1.0, 1.05], "b": [2.0, 2.1, 1.9, 2.0, 2.05]},
                         source={"a": "measured", "b": "estimated"})
    row = compare(study, baseline="a").iloc[0]
    assert row["source"] == "mixed" and row["verdict"] == "higher (estimated vs measured)"


def test_few_runs_are_marked_and_a_domain_on_one_side_only_is_named(tmp_path):
    write_side(tmp_path / "a", 1.0, noise=NOISE[:3])
    write_side(tmp_path / "b", 0.5, noise=NOISE[:1])
    for k, factor in enumerate(NOISE[:3]):  # c ran on the CPU: no GPU figure
        write_run(tmp_path / "c", run=k, power_w={"cpu_estimated": 30.0}, device="cpu", latency_s=0.02 * factor)
    table = compare(load_study(tmp_path), baseline="a")
    b, c = rows(table).iloc[0], rows(table).iloc[1]
    assert (b["n"], b["n_baseline"], b["ci_reliable"], b["verdict"]) == (1, 3, False, "too few runs for a CI")
    assert b["ratio"] == pytest.approx(0.5 * NOISE[0] / np.median(NOISE[:3])) and np.isnan(b["ci_low"])
    assert (c["n"], c["verdict"], c["configuration"]) == (0, "not on both sides", "label=c, device=cpu")
    latency = rows(table, "clock", "latency_median_s").iloc[1]
    assert latency["hardware"] == "Synthetic CPU vs Synthetic GPU" and not latency["ci_reliable"]


def test_the_configuration_names_the_dimension_that_tells_the_labels_apart(fp32_bf16, tmp_path):
    assert set(compare(load_study(fp32_bf16))["configuration"]) == {"dtype=fp32"}
    write_side(tmp_path / "both" / "x", 1.0, noise=NOISE[:2], threads=1)
    write_side(tmp_path / "both" / "y", 1.0, noise=NOISE[:2], threads=8)
    write_side(tmp_path / "both" / "z", 1.0, noise=NOISE[:2], threads=8)
    table = compare(load_study(tmp_path / "both"), baseline="x")
    assert set(table["configuration"]) == {"label=y, threads=8", "label=z, threads=8"}


def test_a_dimension_left_out_of_by_and_within_is_pooled_with_a_warning(tmp_path):
    for label in ("a", "b"):
        write_side(tmp_path / label, 1.0, noise=NOISE[:3], dtype="fp32")
        write_side(tmp_path / f"{label}16", 0.5, noise=NOISE[:3], dtype="bf16")
    study = load_study(tmp_path)
    with pytest.warns(AnalysisWarning, match=r"differ in label \(a, a16, b, b16\) are pooled"):
        table = compare(study, baseline={"dtype": "fp32"}, by=["dtype"], within=["model", "input_size"])
    assert rows(table)[["n", "n_baseline"]].values.tolist() == [[6, 6]]
    with pytest.raises(ValueError, match="cannot pair .*a run index appears twice"), pytest.warns(AnalysisWarning):
        compare(study, baseline={"dtype": "fp32"}, by=["dtype"], within=["model", "input_size"], paired=True)


def test_the_same_seed_gives_the_same_cis(fp32_bf16):
    study = load_study(fp32_bf16)
    first = compare(study, baseline="fp32", seed=5)
    pd.testing.assert_frame_equal(first, compare(study, baseline="fp32", seed=5))
    other = compare(study, baseline="fp32", seed=6)
    assert not first[["ci_low", "ci_high"]].equals(other[["ci_low", "ci_high"]])
    assert first.drop(columns=["ci_low", "ci_high"]).equals(other.drop(columns=["ci_low", "ci_high"]))
    # a row's CI does not depend on what else is compared
    alone = compare(study, baseline="fp32", seed=5, quantities=["energy_per_inference_j"], domains=["gpu"])
    assert alone["ci_low"].item() == rows(first)["ci_low"].item()


@pytest.mark.parametrize("options, message", [
    ({"baseline": "fp16"}, "unknown baseline label=fp16: label takes bf16, fp32"),
    ({"baseline": {"dtype": "fp16"}}, "unknown baseline dtype=fp16: dtype takes bf16, fp32"),
    ({"baseline": {"colour": "red"}}, "unknown dimension colour"),
    ({"by": ["colour"]}, "unknown dimension colour"),
    ({"by": ["dtype"], "within": ["dtype"]}, "dtype: both compared"),
    ({"baseline": {"model": "resnet50"}, "by": ["label"]}, "matches 2 configurations"),
])
def test_bad_requests_are_one_line_errors(fp32_bf16, options, message):
    with pytest.raises(ValueError, match=message):
        compare(load_study(fp32_bf16), **options)


def test_one_configuration_is_nothing_to_compare(tmp_path):
    write_side(tmp_path / "a", 1.0, noise=NOISE[:2])
    with pytest.raises(ValueError, match="nothing to compare: no dimension but the input size varies"):
        compare(load_study(tmp_path))


# the bootstrap of the ratio

def test_ratio_ci_agrees_with_a_plain_resampling():
    rng = np.random.default_rng(4)
    a, b = rng.lognormal(0.0, 0.1, 15), rng.lognormal(0.3, 0.1, 12)
    low, high = bootstrap_ratio_ci(a, b, n_boot=20000, rng=np.random.default_rng(5))
    draws = np.random.default_rng(6)
    ratios = (np.median(draws.choice(a, size=(20000, len(a))), axis=1)
              / np.median(draws.choice(b, size=(20000, len(b))), axis=1))
    assert (low, high) == pytest.approx(tuple(np.quantile(ratios, [0.025, 0.975])), abs=0.01)
    assert low < np.median(a) / np.median(b) < high


def test_ratio_ci_needs_two_values_a_side_and_pairs_of_one_length():
    assert np.isnan(bootstrap_ratio_ci([1.0], [1.0, 2.0])).all()
    with pytest.raises(ValueError, match="paired bootstrap of 2 and 3 values"):
        bootstrap_ratio_ci([1.0, 2.0], [1.0, 2.0, 3.0], paired=True)

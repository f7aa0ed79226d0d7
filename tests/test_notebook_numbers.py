"""The committed results in data/ that the study notebooks read: sound, labelled, as documented.

The key numbers are computed through ``analysis.report`` from ``data/<study>/``
exactly as the notebooks compute them; the sizes and run counts are those of
``scripts/cpu_study.sh``, which produced the data.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisWarning, load_study, report, summarize

DATA = Path(__file__).resolve().parents[1] / "data"
SIZES = {  # as scripts/cpu_study.sh measures them
    "alexnet": [224],
    "resnet50": [8, 32, 64, 128, 256, 512, 1024],
    "bert": list(range(50, 501, 50)),
}
RUNS = 10
MAX_MB = 5


@pytest.fixture(scope="module", params=sorted(SIZES))
def committed(request):
    name = request.param
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnalysisWarning)  # the committed data load without a problem
        study = load_study(DATA / name / "tree")
    summary = pd.read_csv(DATA / name / "summary.csv")
    return name, study, summary, report.key_numbers(study.runs, summary)


def test_the_files_are_there_and_small(committed):
    name = committed[0]
    folder = DATA / name
    for part in ("tree/study.json", "summary.csv", "runs.csv", "README.md"):
        assert (folder / part).is_file(), part
    size_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
    assert size_mb < MAX_MB


def test_readme_says_how_where_and_the_source(committed):
    name, study = committed[:2]
    text = (DATA / name / "README.md").read_text(encoding="utf-8")
    assert f"scripts/cpu_study.sh {name}" in text and f"python -m measure run {name}" in text
    assert study.runs["hardware_cpu"].iloc[0] in text
    for source in report.key_numbers(study.runs, committed[2])["sources"].values():
        assert f"**{source}**" in text


def test_sizes_and_runs_as_documented(committed):
    name, study, _, numbers = committed
    assert numbers["model"] == name
    assert numbers["sizes"] == SIZES[name]
    assert set(numbers["n_runs"].values()) == {RUNS}
    assert (study.runs["status"] == "complete").all()
    assert len(pd.read_csv(DATA / name / "runs.csv")) == len(study.runs) == RUNS * len(SIZES[name])


def test_every_energy_is_positive_and_labelled(committed):
    _, study, _, numbers = committed
    assert numbers["sources"], "no energy domain at all"
    for domain, source in numbers["sources"].items():
        assert source in ("measured", "estimated"), domain
        values = study.runs[f"{domain}_energy_per_inference_j"]
        assert np.isfinite(values).all() and (values > 0).all(), domain
        assert all(v > 0 for v in numbers["energy_per_inference_j"][domain].values())
    assert all(v > 0 for v in numbers["latency_median_s"].values())


def test_sources_match_the_sensors_found(committed):
    _, study, _, numbers = committed
    missing = report.unavailable(report.read_metadata(study))
    on_cpu = numbers["device"] == "cpu"
    if on_cpu:
        assert report.gpu_domain(study.runs) is None and numbers["hardware_gpu"] == "none"
    if "rapl" in missing:
        assert numbers["sources"].get("cpu_estimated") == "estimated" and "cpu_package" not in numbers["sources"]
    else:
        assert numbers["sources"].get("cpu_package") == "measured"


def test_the_summary_is_that_of_the_tree(committed):
    _, study, summary, _ = committed
    again = summarize(study)
    columns = [c for c in summary.columns if c.endswith("_median")]
    pd.testing.assert_frame_equal(summary[["input_size", "n_runs", *columns]],
                                  again[["input_size", "n_runs", *columns]], check_dtype=False)


def test_key_numbers_are_strict_json(committed):
    json.dumps(report.jsonable(committed[3]), allow_nan=False)


def test_more_work_costs_more_time_and_energy(committed):
    name, study, summary, _ = committed
    if len(SIZES[name]) == 1:
        pytest.skip("a single input size")
    cpu = report.cpu_domain(study.runs)
    for column in ("latency_median_s", f"{cpu}_energy_per_inference_j"):
        assert report.spearman_pair(study.runs, "input_size", column)["rho"] > 0.8, column
        medians = summary[f"{column}_median"].to_numpy()
        assert medians[-1] > 2 * medians[0], column


def test_resnet50_latency_increases_with_size():
    summary = pd.read_csv(DATA / "resnet50" / "summary.csv")
    latency = summary.set_index("input_size")["latency_median_s_median"]
    assert (np.diff(latency.to_numpy()) > 0).all(), latency
    assert latency.loc[1024] > 20 * latency.loc[8]


def test_alexnet_cold_runs():
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnalysisWarning)
        cold = load_study(DATA / "alexnet" / "cold")
    assert len(cold.runs) == 3 and (cold.runs["warmup"] == 0).all()
    numbers = report.warmup(cold.latencies)
    assert numbers["iterations"] == 100 and numbers["steady_s"] > 0
    assert numbers["warm_after"] is not None and numbers["warm_after"] < 50


def test_bert_verdicts_are_computed():
    study = load_study(DATA / "bert" / "tree")
    summary = pd.read_csv(DATA / "bert" / "summary.csv")
    jump = report.latency_jump(summary)
    assert jump["holds"] in (True, False) and 50 <= jump["steepest_from"] < jump["steepest_to"] <= 500
    follows = report.cpu_follows_latency(study.runs)
    if (study.runs["device"] == "cpu").all():
        assert follows["holds"] is None and follows["verdict"].startswith("not testable")
    assert math.isfinite(follows["rho"])

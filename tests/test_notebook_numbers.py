"""The committed results in data/ that the study notebooks read, and the prose the notebooks render from them.

The key numbers are computed through ``analysis.findings`` from ``data/<study>/`` as the notebooks compute
them; the sizes and run counts are those of ``scripts/cpu_study.sh``, which produced the data. The prose
checks read the findings each committed notebook rendered (its Markdown outputs, tagged with their key by
``StudyNotebook.say``), recompute the numbers they quote from ``data/`` with plain pandas and numpy, and
require each number, formatted as the text formats it, to be there: a finding typed by hand, or computed
wrongly, fails here.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import AnalysisWarning, export, findings, load_study, metadata, summarize

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
SIZES = {  # as scripts/cpu_study.sh measures them
    "alexnet": [224],
    "resnet50": [8, 32, 64, 128, 256, 512, 1024],
    "bert": list(range(50, 501, 50)),
}
RUNS = 10
MAX_MB = 5
BUSY_IDLE = "idle baseline recorded while the machine was busy"  # refused on a shared machine, as it must be
OTHER_WORK = "other processes kept"  # said of the windows that other work shared (runs that record it)
BATCH_MODELS = {"resnet50": "resnet50", "distilbert": "hf:distilbert"}  # tree folder: model


def load(path, allowed=(BUSY_IDLE,)):
    """The study of ``path``; every warning but those saying one of ``allowed`` is an error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnalysisWarning)
        study = load_study(path, labels=["committed"])
    problems = [str(w.message) for w in caught if not any(said in str(w.message) for said in allowed)]
    assert not problems, problems
    return study


@pytest.fixture(scope="module", params=sorted(SIZES))
def committed(request):
    name = request.param
    study = load(DATA / name / "tree")
    summary = summarize(study)
    return name, study, summary, findings.key_numbers(study, summary)


def findings_text(name: str, key: str = "findings") -> str:
    """The Markdown that ``notebooks/<name>.ipynb`` rendered under ``key``, line breaks as spaces."""
    notebook = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    texts = ["".join(output["data"]["text/markdown"]) for cell in notebook["cells"]
             for output in cell.get("outputs", [])
             if output.get("output_type") == "display_data" and output.get("metadata", {}).get("key") == key]
    assert len(texts) == 1, f"{name}: {len(texts)} outputs rendered under {key!r}"
    return " ".join(texts[0].split())


def per_run(study, column):
    return study.wide().set_index("input_size")[column]


# --------------------------------------------------------------------------- the committed data


def test_the_files_are_there_and_small(committed):
    name = committed[0]
    folder = DATA / name
    for part in ("tree/study.json", "summary.csv", "runs.csv", "README.md"):
        assert (folder / part).is_file(), part
    size_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
    assert size_mb < MAX_MB


def test_readme_says_how_where_and_the_source(committed):
    name, study, _, numbers = committed
    text = (DATA / name / "README.md").read_text(encoding="utf-8")
    assert f"scripts/cpu_study.sh {name}" in text and f"python -m measure run {name}" in text
    assert f"python -m analysis summarize data/{name}/tree -o data/{name}/summary.csv" in text
    assert study.runs["hardware_cpu"].iloc[0] in text
    for source in numbers["sources"].values():
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
    wide = study.wide()
    for domain, source in numbers["sources"].items():
        assert source in ("measured", "estimated"), domain
        values = wide[f"{domain}_energy_per_inference_j"]
        assert np.isfinite(values).all() and (values > 0).all(), domain
        assert all(v > 0 for v in numbers["energy_per_inference_j"][domain].values())
    assert all(v > 0 for v in numbers["latency_median_s"].values())


def test_sources_match_the_sensors_found(committed):
    _, study, _, numbers = committed
    missing = metadata.unavailable(study)
    if numbers["device"] == "cpu":
        assert not metadata.has_gpu(study) and numbers["hardware_gpu"] == "none"
    if "rapl" in missing:
        assert numbers["sources"].get("cpu_estimated") == "estimated" and "cpu_package" not in numbers["sources"]
    else:
        assert numbers["sources"].get("cpu_package") == "measured"


def test_the_csvs_are_those_of_the_tree(committed):
    name, study, summary, _ = committed
    written = pd.read_csv(DATA / name / "summary.csv")
    again = export.wide_summary(summary, study)
    columns = [c for c in again.columns if c.endswith("_median") or c in ("input_size", "n_runs")]
    pd.testing.assert_frame_equal(written[columns], again[columns], check_dtype=False)
    assert not [c for c in written.columns if c.split("_")[0] in ("iterations", "warmup", "params") and
                c.endswith(("_median", "_iqr"))]  # no statistic of a constant
    runs = pd.read_csv(DATA / name / "runs.csv")
    recorded = {f"{d}_{q}" if d != "clock" else q for d, q in zip(study.quantities["domain"],
                                                                   study.quantities["quantity"])}
    per_quantity = [c for c in runs.columns if c not in study.runs.columns and not c.endswith(("_source", "_method"))]
    assert per_quantity and set(per_quantity) <= recorded  # one column per quantity the runs have, no other


def test_key_numbers_are_strict_json(committed):
    json.dumps(findings.jsonable(committed[3]), allow_nan=False)


def test_more_work_costs_more_time_and_energy(committed):
    name, study, _, _ = committed
    if len(SIZES[name]) == 1:
        pytest.skip("a single input size")
    cpu = metadata.cpu_domain(study)
    written = pd.read_csv(DATA / name / "summary.csv")
    for column in ("latency_median_s", f"{cpu}_energy_per_inference_j"):
        assert findings.spearman_pair(study.wide(), "input_size", column)["rho"] > 0.8, column
        medians = written[f"{column}_median"].to_numpy()
        assert medians[-1] > 2 * medians[0], column


def test_resnet50_latency_increases_with_size():
    latency = pd.read_csv(DATA / "resnet50" / "summary.csv").set_index("input_size")["latency_median_s_median"]
    assert (np.diff(latency.to_numpy()) > 0).all(), latency
    assert latency.loc[1024] > 20 * latency.loc[8]


def test_alexnet_cold_runs():
    cold = load(DATA / "alexnet" / "cold")
    assert len(cold.runs) == 3 and (cold.runs["warmup"] == 0).all()
    numbers = findings.warmup(cold.latencies)
    assert numbers["iterations"] == 100 and numbers["steady_s"] > 0
    assert numbers["warm_after"] is not None and numbers["warm_after"] < 50


def test_bert_verdicts_are_computed():
    study = load(DATA / "bert" / "tree")
    jump = findings.latency_jump(summarize(study))
    assert jump["holds"] in (True, False) and 50 <= jump["steepest_from"] < jump["steepest_to"] <= 500
    follows = findings.cpu_follows_latency(study)
    if (study.runs["device"] == "cpu").all():
        assert follows["holds"] is None and follows["verdict"].startswith("not testable")
    assert math.isfinite(follows["rho"])


# --------------------------------------------------------------------------- batch_precision's committed data


@pytest.fixture(scope="module")
def batch_studies():
    return {folder: load(DATA / "batch_precision" / "tree" / folder) for folder in BATCH_MODELS}


def test_batch_precision_grid_runs_and_windows(batch_studies):
    for folder, study in batch_studies.items():
        runs = study.runs
        assert set(runs["model"]) == {BATCH_MODELS[folder]} and set(runs["input_size"]) == {64}
        assert sorted(runs["batch_size"].unique()) == [1, 4, 16] and set(runs["dtype"]) == {"fp32", "bf16"}
        assert (runs["status"] == "complete").all() and set(runs["order"]) == {"interleave"}
        per_point = runs.groupby(["batch_size", "dtype"])["run"].nunique()
        assert len(per_point) == 6 and (per_point >= 5).all()  # a CI of the median needs 5 runs
        assert (runs["window_s"] >= 1.0).all(), folder  # sound windows for a 0.1 s sampling period
        assert set(metadata.energy_sources(study)["source"]) == {"estimated"}


def test_batch_precision_files_and_readme(batch_studies):
    folder = DATA / "batch_precision"
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert "scripts/cpu_study.sh batch_precision" in text and "**estimated**" in text
    for tree_folder, model in BATCH_MODELS.items():
        assert (f"python -m measure run {model} --sizes 64 --batch-sizes 1 4 16 --dtypes fp32 bf16 --iters auto"
                in text), model
        assert f"data/batch_precision/tree/{tree_folder}" in text
    assert batch_studies["resnet50"].runs["hardware_cpu"].iloc[0] in text and "2 logical CPUs" in text
    summary = pd.read_csv(folder / "summary.csv")
    runs = pd.read_csv(folder / "runs.csv")
    assert len(summary) == 12 and len(runs) == sum(len(s.runs) for s in batch_studies.values())
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20 < MAX_MB


# --------------------------------------------------------------------------- the prose against the data


def test_alexnet_findings_quote_the_data():
    text = findings_text("alexnet")
    study, cold = load(DATA / "alexnet" / "tree"), load(DATA / "alexnet" / "cold")
    run_latency = per_run(study, "latency_median_s")
    latencies = study.latencies["latency_s"]
    energy = per_run(study, "cpu_estimated_energy_per_inference_j")
    per_iteration = cold.latencies.groupby("iteration")["latency_s"].median()
    steady = per_iteration.iloc[len(per_iteration) // 2:].median()
    expected = [
        f"takes {1e3 * run_latency.median():.1f} ms at 224 px",
        f"within {100 * (run_latency.max() / run_latency.min() - 1):.0f} % of each other",
        f"over all {len(latencies)} timed inferences the 99th percentile is "
        f"{latencies.quantile(0.99) / latencies.median():.3f}× the median",
        f"the slowest inference {latencies.max() / latencies.min():.2f}× the fastest",
        f"Energy per inference: {energy.median():.3g} J, estimated",
        f"{per_iteration.iloc[0] / steady:.2f}× the steady {1e3 * steady:.1f} ms",
        f"In the {cold.runs['run'].nunique()} committed cold runs",
    ]
    for part in expected:
        assert part in text, part
    assert "within 7 %" in text and "1.067×" in text and "1.40×" in text  # the corrected figures
    for wrong in ("1.15×", "2.4× the fastest", "within about 5 %"):
        assert wrong not in text


def test_resnet50_findings_quote_the_data():
    text = findings_text("resnet50")
    wide = load(DATA / "resnet50" / "tree").wide()
    median = wide.groupby("input_size").median(numeric_only=True)
    rho = stats.spearmanr(wide["input_size"], wide["latency_median_s"])[0]
    energy = median["cpu_estimated_energy_per_inference_j"]
    rss = median["process_rss_peak_mib"]
    expected = [
        f"From {1e3 * median.at[8, 'latency_median_s']:.1f} ms at 8 px to {median.at[1024, 'latency_median_s']:.2f} s "
        f"at 1024 px",
        f"Spearman ρ(size, latency) = {rho:.3f} over {len(wide)} runs",
        f"from {energy[8]:.3g} J at 8 px to {energy[1024]:.3g} J at 1024 px",
        f"from {rss[8]:.0f} MiB at 8 px to {rss[1024]:.0f} MiB at 1024 px",
        f"{wide['cpu_estimated_mean_power_w'].min():.2f} W in the calmest run",
        "No GPU data.",
    ]
    for part in expected:
        assert part in text, part


def test_bert_findings_quote_the_data():
    text = findings_text("bert")
    wide = load(DATA / "bert" / "tree").wide()
    latency = wide.groupby("input_size")["latency_median_s"].median()
    slopes = np.diff(latency.to_numpy()) / np.diff(latency.index.to_numpy())
    steepest = int(np.argmax(slopes))
    rho = stats.spearmanr(wide["latency_median_s"], wide["cpu_estimated_energy_per_inference_j"])[0]
    expected = [
        f"From {latency[50]:.2f} s at 50 tokens to {latency[500]:.2f} s at 500",
        f"about {1e3 * np.median(slopes):.2f} ms per token",
        f"the steepest step, {latency.index[steepest]} to {latency.index[steepest + 1]} tokens, is "
        f"{slopes[steepest] / np.median(slopes):.2f}×",
        f"= {rho:.2f} over {len(wide)} runs",
        "cannot be tested here as the seed stated it",
    ]
    for part in expected:
        assert part in text, part


@pytest.mark.parametrize("folder", sorted(BATCH_MODELS))
def test_batch_precision_findings_quote_the_data(folder):
    text = findings_text("batch_precision", f"findings_{folder}")
    wide = load(DATA / "batch_precision" / "tree" / folder).wide()
    energy = wide.groupby(["batch_size", "dtype"])["cpu_estimated_energy_per_sample_j"].median()
    (best_batch, best_dtype), base = energy.idxmin(), energy[(1, "fp32")]
    expected = [f"**{BATCH_MODELS[folder]} at 64 ",
                f"The cheapest configuration** is batch {best_batch}, {best_dtype}: {energy.min():.3g} J per sample",
                f"{energy.min() / base:.2f}× the {base:.3g} J of batch 1, fp32"]
    for batch in (1, 4, 16):
        expected.append(f"batch {batch}: {energy[(batch, 'bf16')] / energy[(batch, 'fp32')]:.3g}× [")
    for dtype in ("fp32", "bf16"):
        for batch in (4, 16):
            expected.append(f"batch {batch} ({dtype}): {energy[(batch, dtype)] / energy[(1, dtype)]:.3g}× [")
    for part in expected:
        assert part in text, part


# --------------------------------------------------------------------------- generation's committed data and prose


@pytest.fixture(scope="module")
def generation():
    return load(DATA / "generation" / "tree", allowed=(BUSY_IDLE, OTHER_WORK))


def test_generation_files_and_summary_are_those_of_the_tree(generation):
    folder = DATA / "generation"
    for part in ("tree/study.json", "summary.csv", "runs.csv", "README.md"):
        assert (folder / part).is_file(), part
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20 < MAX_MB
    written = pd.read_csv(folder / "summary.csv")
    again = export.wide_summary(summarize(generation), generation, quantities=export.summary_quantities(generation))
    columns = [c for c in again.columns if c.endswith("_median") or c in ("input_size", "batch_size", "n_runs")]
    assert {"ttft_s_median", "cpu_estimated_decode_energy_per_token_j_median"} <= set(columns)
    pd.testing.assert_frame_equal(written[columns], again[columns], check_dtype=False)
    assert len(pd.read_csv(folder / "runs.csv")) == len(generation.runs) == 30


def verdicts_follow_their_intervals(text: str) -> int:
    """Check every ``ratio× [low, high] ..., verdict`` quoted in ``text``: ``higher`` only above 1, ``lower`` only
    below, ``no difference shown`` only across; how many were checked."""
    quoted = re.findall(r"× \[([\d.e+-]+), ([\d.e+-]+)\](?: \(n < 5\))?, (higher|lower|no difference shown)", text)
    for low, high, verdict in quoted:
        low, high = float(low), float(high)
        assert {"higher": low >= 1, "lower": high <= 1, "no difference shown": low <= 1 <= high}[verdict], (
            low, high, verdict)
    return len(quoted)


def test_generation_findings_quote_the_data(generation):
    text = findings_text("generation")
    wide = generation.wide()
    median = wide.groupby(["input_size", "batch_size"]).median(numeric_only=True)
    decode, itl = median["cpu_estimated_decode_energy_per_token_j"], median["itl_median_s"]
    share = median["cpu_estimated_prefill_energy_share"]
    cost = decode / median["cpu_estimated_prefill_energy_per_token_j"]
    expected = []
    for batch in (1, 4):
        expected += [f"At batch {batch}, the decode energy per generated token goes from {decode[32, batch]:.3g} J with "
                     f"32-token prompts to {decode[512, batch]:.3g} J with 512-token ones "
                     f"({decode[512, batch] / decode[32, batch]:.3g}× [",
                     f"the median ITL from {1e3 * itl[32, batch]:.3g} ms to {1e3 * itl[512, batch]:.3g} ms "
                     f"({itl[512, batch] / itl[32, batch]:.3g}× ["]
    for prompt in (32, 128, 512):
        expected.append(f"With {prompt}-token prompts, decoding 4 sequences together instead of 1 takes the energy per "
                        f"generated token from {decode[prompt, 1]:.3g} J to {decode[prompt, 4]:.3g} J "
                        f"({decode[prompt, 4] / decode[prompt, 1]:.3g}× [")
    (low_prompt, low_batch), (high_prompt, high_batch) = share.idxmin(), share.idxmax()
    expected += [f"The prefill takes {share.min():.0%} of a request's energy with {low_prompt}-token prompts at batch "
                 f"{low_batch}, and {share.max():.0%} with {high_prompt}-token prompts at batch {high_batch}",
                 f"a generated token costs {cost.min():.3g} to {cost.max():.3g} times as much as a prompt token",
                 "The CPU energy is **estimated** (method trapezoid)",
                 f"at a median power of {wide['cpu_estimated_mean_power_w'].median():.2g} W over the windows",
                 f"other processes kept {wide['host_other_cpu_load'].median():.0%} of the machine's CPUs busy"]
    for part in expected:
        assert part in text, part
    assert verdicts_follow_their_intervals(text) == 2 * 2 + 3  # context (energy, ITL) per batch; batch per prompt
    assert (low_prompt, high_prompt) == (32, 512) and cost.max() > 1  # a generated token costs more than a prompt one

"""analysis.notebook: parameters, paths, warnings, figures, prose, the duration guard, on synthetic trees.

Ported from the notebook plumbing of the deleted ``analysis.report`` (``figure_png``, ``display_path``,
``short_warnings``), with one rule changed on purpose: ``short_warnings`` is a context that restores
``warnings`` on exit instead of replacing ``warnings.formatwarning`` for the whole process.
"""
from __future__ import annotations

import io
import json
import math
import warnings

import matplotlib
import pandas as pd

matplotlib.use("Agg")

import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from treegen import PHASE_POWER_W, write_generation_run, write_run  # noqa: E402

from analysis import AnalysisWarning, load_study, notebook  # noqa: E402
from analysis.phases import HEADLINE_ENERGY  # noqa: E402
from analysis.notebook import StudyNotebook  # noqa: E402
from measure.plan import Config, Plan  # noqa: E402

CPU_ONLY = {"cpu_estimated": 6.0}
ESTIMATE = {"tdp_w": 8.0, "tdp_source": "MEASURE_CPU_TDP_W", "idle_fraction": 0.3}


def tree(root, sizes=(64, 128), runs=3, latency=0.01, power_w=CPU_ONLY, device="cpu", batch_sizes=(1,),
         model="resnet50", hardware=None, threads=1):
    """A synthetic tree of ``model`` on ``device`` (one tree per batch size, ``root/batch<b>``): ``latency`` s
    per inference at 64 px, scaled by image area and batch; the CPU estimate's model is ``ESTIMATE``."""
    for size in sizes:
        for batch in batch_sizes:
            for run in range(runs):
                folder = write_run(root / f"batch{batch}", model, size, run, power_w=power_w, device=device,
                                   batch_size=batch, latency_s=latency * (size / 64) ** 2 * batch, threads=threads)
                meta = json.loads((folder / "meta.json").read_text())
                meta["host"]["cpu_model"] = hardware or meta["host"]["cpu_model"]
                if "cpu_estimated" in meta["sensors"]:
                    meta["sensors"]["cpu_estimated"].update(ESTIMATE)
                (folder / "meta.json").write_text(json.dumps(meta))
    return root


def generation_tree(root, prompts=(32, 128), runs=3, power_scale=1.0):
    """A synthetic generation tree of hf:gpt2 at batch 1 (8 new tokens): ``PHASE_POWER_W`` × ``power_scale`` per
    phase, each run 1 % above the previous one."""
    for prompt in prompts:
        for run in range(runs):
            power = {phase: {domain: watts * power_scale * (1 + 0.01 * run) for domain, watts in powers.items()}
                     for phase, powers in PHASE_POWER_W.items()}
            write_generation_run(root, input_size=prompt, run=run, batch_size=1, phase_power_w=power)
    return root


def study_of(*roots, labels=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        return load_study(list(roots), labels=labels)


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("STUDY_PROFILE", "STUDY_DEVICE", "STUDY_RESULTS", "STUDY_THREADS", "STUDY_FRESH"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --------------------------------------------------------------------------- parameters


def test_parameters_default_to_a_short_fresh_run(clean_env):
    assert notebook.profile() == "quick"
    assert notebook.device() == "auto"
    assert notebook.threads("quick") == 1 and notebook.threads("full") == 0
    assert notebook.fresh("quick") is True
    assert notebook.fresh("full") is False  # hours of measuring are never the default
    assert notebook.results("bert") == notebook.ROOT / "results" / "bert"


def test_parameters_come_from_the_environment(clean_env, tmp_path):
    clean_env.setenv("STUDY_PROFILE", "full")
    clean_env.setenv("STUDY_DEVICE", "cuda:1")
    clean_env.setenv("STUDY_RESULTS", str(tmp_path))
    clean_env.setenv("STUDY_THREADS", "4")
    clean_env.setenv("STUDY_FRESH", "1")
    assert (notebook.profile(), notebook.device(), notebook.results("bert")) == ("full", "cuda:1", tmp_path / "bert")
    assert notebook.threads("full") == 4
    assert notebook.fresh("full") is True
    clean_env.setenv("STUDY_FRESH", "no")
    assert notebook.fresh("quick") is False


@pytest.mark.parametrize("name, value", [("STUDY_PROFILE", "long"), ("STUDY_FRESH", "maybe"),
                                         ("STUDY_THREADS", "two")])
def test_a_bad_parameter_is_one_line_naming_it(clean_env, name, value):
    clean_env.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        {"STUDY_PROFILE": notebook.profile, "STUDY_FRESH": lambda: notebook.fresh("quick"),
         "STUDY_THREADS": lambda: notebook.threads("quick")}[name]()


# --------------------------------------------------------------------------- paths, figures, warnings


def test_figure_png_and_display_path(tmp_path, monkeypatch):
    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1])
    assert notebook.figure_png(fig, dpi=50).startswith(b"\x89PNG")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert notebook.display_path(tmp_path / "results" / "bert", tmp_path) == "results/bert"
    assert notebook.display_path(tmp_path / "results" / "bert", ".") == "…/" + "/".join(
        (tmp_path / "results" / "bert").parts[-3:])  # outside the checkout and the folder: no absolute path
    assert notebook.display_path(notebook.ROOT / "data" / "bert", notebook.ROOT / "notebooks") == "../data/bert"


def test_short_warnings_drop_the_file_but_keep_the_warning():
    formatwarning, showwarning = warnings.formatwarning, warnings.showwarning
    stream = io.StringIO()
    where = notebook.ROOT / "data" / "bert" / "tree" / "idle" / "idle.json"
    with notebook.short_warnings(stream):
        warnings.warn(f"{where}: idle baseline recorded while the machine was busy", AnalysisWarning)
        warnings.warn("no GPU", UserWarning)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("AnalysisWarning: ") and lines[0].endswith(": idle baseline recorded while the "
                                                                          "machine was busy")
    assert str(notebook.ROOT) not in lines[0] and "data/bert/tree/idle/idle.json" in lines[0]
    assert lines[1:] == ["UserWarning: no GPU"]  # one line each: no source line
    assert (warnings.formatwarning, warnings.showwarning) == (formatwarning, showwarning)  # nothing global


def test_short_warnings_show_an_analysis_warning_every_time_and_hide_tqdms_widget_note():
    from tqdm import TqdmWarning

    stream = io.StringIO()
    with notebook.short_warnings(stream):
        for _ in range(2):
            warnings.warn("same problem", AnalysisWarning)
        warnings.warn_explicit("IProgress not found. Please update jupyter and ipywidgets.", TqdmWarning,
                               "auto.py", 21, module="tqdm.auto")
    assert stream.getvalue() == "AnalysisWarning: same problem\n" * 2


def test_show_saves_png_svg_and_pdf(tmp_path):
    nb = StudyNotebook("x", "quick", "cpu", tmp_path, 0, False)
    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1])
    paths = nb.show(fig, "line")
    assert [p.name for p in paths] == ["line.png", "line.svg", "line.pdf"]
    assert all(p.stat().st_size > 0 for p in paths)


# --------------------------------------------------------------------------- prose and numbers


def test_say_renders_values_and_write_numbers_keeps_them(tmp_path):
    nb = StudyNotebook("x", "quick", "cpu", tmp_path, 0, False)
    nb.say("findings", "The median is {ms:.1f} ms over {n} runs.", ms=17.04, n=10)
    nb.numbers["committed"] = {"energy_j": math.nan}
    document = json.loads(nb.write_numbers().read_text())
    assert document["texts"] == {"findings": "The median is 17.0 ms over 10 runs."}
    assert document["numbers"]["prose"]["findings"] == {"ms": 17.04, "n": 10}
    assert document["numbers"]["committed"] == {"energy_j": None}  # strict JSON
    assert (document["study"], document["profile"]) == ("x", "quick")


def test_ratio_text_says_the_ci_its_reliability_and_the_verdict():
    row = {"ratio": 0.61234, "ci_low": 0.58, "ci_high": 0.641, "ci_reliable": True, "verdict": "lower"}
    assert notebook.ratio_text(row) == "0.612× [0.58, 0.641], lower"
    assert notebook.ratio_text({**row, "ci_reliable": False}) == "0.612× [0.58, 0.641] (n < 5), lower"
    assert notebook.ratio_text({**row, "ratio": math.nan, "verdict": "not on both sides"}) == "not on both sides"


@pytest.mark.parametrize("seconds, text", [(40.2, "40 s"), (185, "3 min"), (7800, "2 h 10 min"),
                                           (3 * 86400 + 4 * 3600, "3 days 4 h"), (math.inf, "an unknown time")])
def test_duration_text(seconds, text):
    assert notebook.duration_text(seconds) == text


def test_protocol_table_of_plans_and_studies(tmp_path):
    study = study_of(tree(tmp_path, sizes=(64, 128), runs=2))
    table = notebook.protocol_table({"seed": Plan.from_preset("resnet50", "seed"), "data": study})
    lines = table.splitlines()
    assert lines[0] == "| | seed | data |"
    assert "| input sizes | 8, 32, 64, 128, 256, 512, 1024, 2048, 4096 | 64, 128 |" in lines
    assert "| timed inferences per run | 5000 (1000 at 4096) | 100 |" in lines  # the exceptions named
    auto = Plan.from_preset("hf:distilbert", "quick", size_unit="tokens")
    assert "| timed inferences per run | as many as fill 0.5 s |" in notebook.protocol_table({"q": auto}).splitlines()
    assert "| runs per point | 10 | 2 |" in lines


def test_protocol_table_of_the_generate_task_speaks_of_prompts_and_requests(tmp_path):
    plan = Plan.from_preset("hf:gpt2", "quick", task="generate", new_tokens=[32])
    lines = notebook.protocol_table({"plan": plan, "data": study_of(generation_tree(tmp_path, runs=2))}).splitlines()
    assert "| prompt tokens | 16, 64, 256 | 32, 128 |" in lines
    assert "| new tokens per request | 32 | 8 |" in lines
    assert "| timed requests per run | 1 | 1 |" in lines and "| untimed warm-up requests per run | 1 | 1 |" in lines
    assert "| runs per point | 3 | 2 |" in lines and not [line for line in lines if "inferences" in line]


def test_data_values_say_where_the_energy_comes_from(tmp_path):
    cpu = notebook.data_values(study_of(tree(tmp_path / "cpu")))
    assert "CPU energy is **estimated**: TDP 8 W (MEASURE_CPU_TDP_W) × (0.3 + 0.7 × machine-wide CPU load)" \
        in cpu["energy"] and "none is claimed" in cpu["energy"]
    assert (cpu["runs"], cpu["device"], cpu["gpus"], cpu["threads"]) == (6, "cpu", "Synthetic GPU (driver 550)", "1")
    gpu = notebook.data_values(study_of(tree(tmp_path / "gpu", power_w={"gpu0": 100.0, "package-0": 40.0},
                                             device="cuda:0")))
    assert "GPU the model ran on is **measured**" in gpu["energy"] and "none is claimed" not in gpu["energy"]


def test_the_estimate_model_gives_the_machine_load_of_a_power(tmp_path):
    study = study_of(tree(tmp_path / "cpu"))
    assert notebook.cpu_estimate(study) == ESTIMATE
    assert notebook.estimate_load(study, 5.2) == pytest.approx(0.5)  # 8 W x (0.3 + 0.7 x 0.5)
    assert notebook.estimate_load(study, 8.0) == pytest.approx(1.0)
    gpu = study_of(tree(tmp_path / "gpu", power_w={"gpu0": 100.0}, device="cuda:0"))
    assert notebook.cpu_estimate(gpu) is None and math.isnan(notebook.estimate_load(gpu, 5.0))


# --------------------------------------------------------------------------- fresh against committed


def test_compare_fresh_says_ratios_and_background_load_on_the_same_hardware(tmp_path):
    committed = tree(tmp_path / "committed", latency=0.01, runs=5)
    fresh = tree(tmp_path / "fresh", latency=0.02, runs=5, power_w={"cpu_estimated": 8.0})
    nb = StudyNotebook("x", "quick", "cpu", tmp_path / "out", 0, False)
    table = nb.compare_fresh(study_of(committed, fresh, labels=["committed", "fresh"]))
    assert (tmp_path / "out" / "fresh_comparison.csv").is_file()
    latency = table[table["quantity"] == "latency_median_s"]
    assert latency["ratio"].tolist() == pytest.approx([2.0, 2.0])
    text = " ".join(nb.texts["fresh"].split())  # as Markdown reads it: line breaks are spaces
    assert "At the 2 point(s) measured both times (5 fresh runs per point against 5 committed)" in text
    assert "against the committed one is 2× to 2× (higher at 2 of 2 points)" in text
    assert "energy per inference (estimated): " in text and "6 W in the committed runs and 8 W" in text
    assert "background load" in text and "(n < 5)" not in text


def test_compare_fresh_says_when_the_hardware_differs_and_when_runs_are_few(tmp_path):
    committed = tree(tmp_path / "committed", runs=5)
    fresh = tree(tmp_path / "fresh", runs=3, sizes=(64,), hardware="Other CPU", threads=2)
    nb = StudyNotebook("x", "quick", "cpu", tmp_path / "out", 0, False)
    nb.compare_fresh(study_of(committed, fresh, labels=["committed", "fresh"]))
    text = " ".join(nb.texts["fresh"].split())  # as Markdown reads it: line breaks are spaces
    assert "The hardware differs (Other CPU vs Synthetic CPU)" in text and "background load" not in text
    assert "With 3 runs on one side" in text and "(n < 5)" in text
    assert "different torch threads (committed: 1, fresh: 2)" in text


def test_compare_fresh_of_generation_runs_quotes_their_figures_per_token(tmp_path):
    committed = generation_tree(tmp_path / "committed", runs=5)
    fresh = generation_tree(tmp_path / "fresh", runs=5, power_scale=2.0)  # the same times at twice the power
    nb = StudyNotebook("generation", "quick", "cpu", tmp_path / "out", 0, False)
    table = nb.compare_fresh(study_of(committed, fresh, labels=["committed", "fresh"]))
    assert set(table["quantity"]) == {"ttft_s", "itl_median_s", *HEADLINE_ENERGY, "mean_power_w"}
    decode = table[(table["quantity"] == "decode_energy_per_token_j") & (table["domain"] == "gpu")]
    assert decode["ratio"].tolist() == pytest.approx([2.0, 2.0])
    text = " ".join(nb.texts["fresh"].split())
    assert "At the 2 point(s) measured both times (5 fresh runs per point against 5 committed)" in text
    assert "the fresh time to first token against the committed one is 1× to 1× (no difference shown at 2 of 2" in text
    assert "; its median inter-token latency: 1× to 1×" in text
    assert "; its GPU decode energy per generated token (measured): 2× to 2× (higher at 2 of 2 points)" in text
    assert "; its CPU package prefill energy per prompt token (measured): 2× to 2×" in text
    assert "latency per inference" not in text and "energy per inference" not in text


def test_the_fresh_summary_of_a_generation_tree_carries_its_figures(tmp_path):
    nb = StudyNotebook("generation", "quick", "cpu", tmp_path / "out", 0, True)
    generation_tree(tmp_path / "out" / "tree")
    nb.measured.add("tree")  # as measure() leaves it
    summary, runs = nb.write_tables()
    columns = set(pd.read_csv(summary).columns)
    assert {"ttft_s_median", "itl_median_s_median", "gpu_decode_energy_per_token_j_median",
            "gpu_prefill_energy_share_median", "latency_median_s_median"} <= columns
    assert len(pd.read_csv(runs)) == 6


def test_compare_fresh_without_a_fresh_run(tmp_path, capsys):
    nb = StudyNotebook("x", "quick", "cpu", tmp_path / "out", 0, False)
    assert nb.compare_fresh(study_of(tree(tmp_path / "committed"), labels=["committed"])) is None
    assert "no fresh measurement" in capsys.readouterr().out


# --------------------------------------------------------------------------- no long measurement by accident


def test_the_latency_model_scales_the_reference_by_area_and_batch(tmp_path):
    reference = study_of(tree(tmp_path, sizes=(64,), latency=0.01, batch_sizes=(1,)))
    plan = Plan.from_preset("resnet50", "quick", device="cpu", sizes=[64, 128], batch_sizes=[1, 4])
    latencies, source = notebook.latency_model(plan, reference)
    assert source == "the committed data"
    assert latencies[Config(1), 64] == pytest.approx(0.01)
    assert latencies[Config(1), 128] == pytest.approx(0.04)  # 4x the pixels
    assert latencies[Config(4), 128] == pytest.approx(0.16)  # 4 inputs per inference


def test_expected_seconds_counts_idle_warmup_timed_inferences_and_overhead():
    plan = Plan.from_preset("alexnet", "quick", device="cpu")  # 5 runs of 5 + 40 inferences, 1 s idle
    latencies = {(Config(), 224): 0.02}
    assert notebook.expected_seconds(plan, latencies) == pytest.approx(1.0 + 5 * (45 * 0.02 + notebook.RUN_OVERHEAD_S))
    plan.iterations, plan.min_window_s = None, 2.0  # as many as fill 2 s: 100
    assert notebook.expected_seconds(plan, latencies) == pytest.approx(1.0 + 5 * (105 * 0.02 + notebook.RUN_OVERHEAD_S))


def test_a_full_run_is_never_started_without_asking_and_warns_on_a_cpu(tmp_path, monkeypatch, capsys):
    import measure.sweep

    monkeypatch.setattr(measure.sweep, "run_study", lambda *a, **k: pytest.fail("a measurement started"))
    reference = study_of(tree(tmp_path / "data", sizes=(64,), latency=0.01))
    nb = StudyNotebook("resnet50", "full", "cpu", tmp_path / "out", 0, fresh=False)
    plan = nb.plan()
    assert (plan.sizes[-1], plan.iterations) == (4096, 5000)  # the seed's protocol
    with warnings.catch_warnings(record=True):  # short_warnings shows it on stderr
        assert nb.measure(plan, reference=reference) is None
    out, err = capsys.readouterr()
    assert "no fresh measurement (FRESH is off): resnet50 would take about" in out
    assert "STUDY_FRESH=1" in out
    assert err.startswith("UserWarning: the full profile on a CPU: measuring resnet50 would take about")
    assert "days" in err  # 4096 px at 5000 inferences per run on a CPU
    assert not (tmp_path / "out" / "tree").exists()


def test_a_fresh_run_says_how_long_it_should_take_then_measures(tmp_path, monkeypatch, capsys):
    import measure.sweep

    started = []

    def run_study(plan, out, **options):  # writes a synthetic tree instead of measuring
        started.append((plan, out, options))
        tree(out, sizes=(64,))

    monkeypatch.setattr(measure.sweep, "run_study", run_study)
    reference = study_of(tree(tmp_path / "data", sizes=(32, 64, 128, 224), latency=0.01))
    nb = StudyNotebook("resnet50", "quick", "cpu", tmp_path / "out", 0, fresh=True)
    assert nb.measure(nb.plan(), reference=reference) == tmp_path / "out" / "tree"
    out, err = capsys.readouterr()
    assert "measuring resnet50: 4 x 1 point(s) x 3 run(s) on cpu" in out
    assert "expected about" in out and "(latencies from the committed data)" in out
    assert err == ""  # the quick profile does not warn
    (plan, tree_out, options), = started
    assert tree_out == tmp_path / "out" / "tree" and options == {"progress": False}
    assert nb.measured == {"tree"}
    assert "; tables " in out  # the fresh tree's summary and per-run table, as data/<study>/ holds them
    summary = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert len(summary) == 2 and summary[0].startswith("model,input_size,n_runs,iterations,")
    assert len((tmp_path / "out" / "runs.csv").read_text().splitlines()) == 1 + 3

def test_a_previous_fresh_tree_is_replaced_but_never_another_folder(tmp_path, monkeypatch):
    import measure.sweep

    monkeypatch.setattr(measure.sweep, "run_study", lambda plan, out, **k: tree(out, sizes=(224,), model="alexnet"))
    nb = StudyNotebook("alexnet", "quick", "cpu", tmp_path / "out", 0, fresh=True)
    reference = study_of(tree(tmp_path / "data", sizes=(224,), model="alexnet"))
    (tmp_path / "out" / "tree").mkdir(parents=True)
    (tmp_path / "out" / "tree" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a run tree"):
        nb.measure(nb.plan(), reference=reference)
    assert (tmp_path / "out" / "tree" / "notes.txt").is_file()
    (tmp_path / "out" / "tree" / "notes.txt").unlink()
    (tmp_path / "out" / "tree" / "study.json").write_text("{}")
    (tmp_path / "out" / "tree" / "old").mkdir()
    nb.measure(nb.plan(), reference=reference)
    assert not (tmp_path / "out" / "tree" / "old").exists()  # the previous fresh tree went
    assert (tmp_path / "out" / "tree" / "batch1").is_dir()


def test_load_reads_committed_and_fresh_as_one_labelled_study(tmp_path):
    tree(tmp_path / "data" / "tree", sizes=(64,))
    tree(tmp_path / "out" / "tree", sizes=(64,), latency=0.02)
    nb = StudyNotebook("x", "quick", "cpu", tmp_path / "out", 0, True, data=tmp_path / "data")
    committed, study = nb.load()
    assert study is committed and set(committed.runs["label"]) == {"committed"}
    nb.measured.add("tree")
    committed, study = nb.load()
    assert sorted(study.runs["label"].unique()) == ["committed", "fresh"]
    assert set(nb.fresh_study().runs["label"]) == {"fresh"}


def test_cold_runs_are_measured_one_new_process_each(tmp_path, capsys):
    nb = StudyNotebook("alexnet", "quick", "cpu", tmp_path / "out", 0, fresh=True)
    plan = nb.plan(sizes=[64], iterations=2, warmup=0, runs=2, idle_s=0.2)
    reference = study_of(tree(tmp_path / "data", sizes=(64,), model="alexnet"))
    tree_out = nb.measure(plan, "cold", reference=reference, processes=2)
    idle = sorted(p.name for p in (tree_out / "idle").iterdir())
    assert len(idle) == 2 and len({name.rsplit("_", 1)[1] for name in idle}) == 2  # two process ids
    fresh = nb.fresh_study("cold")
    assert sorted(fresh.runs["run"]) == [0, 1] and (fresh.runs["status"] == "complete").all()
    assert (tmp_path / "out" / "cold_summary.csv").is_file() and (tmp_path / "out" / "cold_runs.csv").is_file()
    assert all(line.split(": ", 1)[0].endswith("Warning") for line in capsys.readouterr().err.splitlines())

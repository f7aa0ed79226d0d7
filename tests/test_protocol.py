"""The protocol end to end on the CPU: real torch models, small inputs, a valid run tree."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis import load_study
from measure.models import ModelError
from measure import protocol
from measure.protocol import Plan, run_study
from measure.runtree import RunTreeError

pytestmark = pytest.mark.filterwarnings("ignore::analysis.AnalysisWarning")


def small_plan(model="resnet50", sizes=(8, 16), **overrides) -> Plan:
    settings = dict(iterations=4, runs=2, warmup=1, device="cpu", period_s=0.02, idle_s=0.2)
    settings.update(overrides)
    plan = Plan(model, list(sizes), **settings)
    plan.validate()
    return plan


def read_meta(folder):
    return json.loads((folder / "meta.json").read_text())


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return run_study(small_plan(), tmp_path_factory.mktemp("study") / "resnet50", progress=False)


def test_tree_layout_and_files(tree):
    runs = sorted(p.relative_to(tree).as_posix() for p in tree.glob("input_*/run_*"))
    assert runs == ["input_16/run_0", "input_16/run_1", "input_8/run_0", "input_8/run_1"]
    for folder in tree.glob("input_*/run_*"):
        assert sorted(p.name for p in folder.iterdir()) == ["latency.csv", "meta.json", "power_metrics.json"]
        latencies = pd.read_csv(folder / "latency.csv")
        assert list(latencies.columns) == ["latency_s"] and len(latencies) == 4
        assert (latencies["latency_s"] > 0).all()
    assert json.loads((tree / "study.json").read_text())["plan"]["model"] == "resnet50"


def test_meta_describes_the_run(tree):
    meta = read_meta(tree / "input_16" / "run_1")
    assert meta["status"] == "complete" and meta["reason"] is None
    assert (meta["model"], meta["task"], meta["input_size"], meta["run"]) == ("resnet50", "vision", 16, 1)
    assert meta["input_shape"] == [1, 3, 16, 16]
    assert (meta["iterations"], meta["warmup"], meta["device"]) == (4, 1, "cpu")
    assert meta["params"] == 25_557_032  # torchvision's ResNet50
    assert meta["flops_per_inference"] > 0
    assert meta["weights"] in ("pretrained", "random")
    assert (meta["weights_notice"] is None) == (meta["weights"] == "pretrained")
    assert meta["host"]["torch"] and meta["host"]["cpu_model"]
    # every sensor used says where its figures come from; missing ones say why
    assert {d["source"] for d in meta["sensors"].values()} <= {"measured", "estimated"}
    assert "process" in meta["sensors"]
    for name, reason in meta["unavailable"].items():
        assert isinstance(reason, str) and reason, name


def test_cpu_energy_is_estimated_only_without_rapl(tree):
    meta = read_meta(tree / "input_8" / "run_0")
    if "rapl" in meta["unavailable"]:
        assert meta["sensors"]["cpu_estimated"]["source"] == "estimated"
        assert meta["idle_power_w"]["cpu_estimated"]["source"] == "estimated"
    else:
        assert "cpu_estimated" not in meta["sensors"]


def test_window_matches_the_timed_loop(tree):
    for folder in tree.glob("input_*/run_*"):
        lines = [json.loads(line) for line in (folder / "power_metrics.json").read_text().splitlines()]
        assert lines[0]["mark"] == "start" and lines[-1]["mark"] == "end"
        window_s = lines[-1]["t_s"]
        busy_s = pd.read_csv(folder / "latency.csv")["latency_s"].sum()
        assert busy_s <= window_s <= busy_s + 0.05  # the window is the loop, give or take the clock reads
        assert read_meta(folder)["window"]["duration_s"] == pytest.approx(window_s, abs=1e-5)


def test_the_analysis_reads_the_tree(tree):
    study = load_study(tree)
    assert len(study.runs) == 4 and set(study.runs["status"]) == {"complete"}
    assert len(study.latencies) == 16
    energies = study.energies.set_index(["input_size", "run", "domain"])
    if "cpu_estimated" in study.energies["domain"].values:
        row = energies.loc[(8, 0, "cpu_estimated")]
        assert row["source"] == "estimated" and row["energy_per_inference_j"] > 0


def test_a_size_too_small_fails_that_point_and_the_sweep_goes_on(tmp_path):
    out = run_study(small_plan("alexnet", sizes=(32, 64), runs=1, iterations=2, idle_s=0), tmp_path / "a",
                    progress=False)
    failed, complete = read_meta(out / "input_32" / "run_0"), read_meta(out / "input_64" / "run_0")
    assert failed["status"] == "failed" and "at least 63 px" in failed["reason"]
    assert complete["status"] == "complete"
    assert not (out / "input_32" / "run_0" / "latency.csv").exists()


def test_no_valid_size_is_an_error(tmp_path):
    with pytest.raises(ModelError, match="at most 510 tokens"):
        run_study(small_plan("bert", sizes=(600,)), tmp_path / "b", progress=False)


def test_an_existing_tree_needs_resume(tree):
    with pytest.raises(RunTreeError, match="--resume"):
        run_study(small_plan(), tree, progress=False)


def test_resume_redoes_only_incomplete_runs(tmp_path):
    out = run_study(small_plan(sizes=(8,), idle_s=0), tmp_path / "r", progress=False)
    kept, redo = out / "input_8" / "run_0", out / "input_8" / "run_1"
    meta = read_meta(redo)
    meta["status"] = "running"
    (redo / "meta.json").write_text(json.dumps(meta))
    before = (kept / "power_metrics.json").stat().st_mtime_ns, (redo / "power_metrics.json").stat().st_mtime_ns
    run_study(small_plan(sizes=(8,), idle_s=0), out, resume=True, progress=False)
    assert (kept / "power_metrics.json").stat().st_mtime_ns == before[0]
    assert (redo / "power_metrics.json").stat().st_mtime_ns != before[1]
    assert read_meta(redo)["status"] == "complete"


def test_precision_mode_stops_when_the_interval_is_narrow_enough(tmp_path, monkeypatch):
    # the tracked values are fixed so that the stop does not depend on this machine's noise:
    # the CI of the median of 1.0, 1.002, 0.998 is within ±0.5 %, that of the first two is not computed
    values = iter([1.0, 1.002, 0.998, 5.0, 5.0, 5.0])
    monkeypatch.setattr(protocol, "precision_quantity", lambda session, folder: ("latency", next(values)))
    plan = small_plan(sizes=(8,), runs=3, precision=0.005, max_runs=6, min_window_s=0.05, idle_s=0)
    out = run_study(plan, tmp_path / "p", progress=False)
    metas = [read_meta(folder) for folder in sorted((out / "input_8").iterdir())]
    assert len(metas) == 3
    assert all(m["stop_reason"].startswith("precision reached") for m in metas)
    # iterations were sized once, from a few timed inferences, to fill a 0.05 s window
    assert len({m["iterations"] for m in metas}) == 1 and metas[0]["iterations"] > 1


def test_precision_mode_stops_at_the_cap(tmp_path):
    plan = small_plan(sizes=(8,), runs=3, precision=1e-9, max_runs=3, min_window_s=0.02, idle_s=0)
    out = run_study(plan, tmp_path / "c", progress=False)
    metas = [read_meta(folder) for folder in sorted((out / "input_8").iterdir())]
    assert len(metas) == 3 and all(m["stop_reason"].startswith("cap reached: 3 runs") for m in metas)


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "measure", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_cli_help_documents_every_option():
    result = cli("run", "--help")
    assert result.returncode == 0
    for option in ("--sizes", "--iters", "--iters-at", "--runs", "--warmup", "--out", "--device", "--period",
                   "--idle-seconds", "--quick", "--resume", "--shard", "--precision", "--max-runs", "--min-window"):
        assert option in result.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "vgg"], "invalid choice: 'vgg'"),
    (["run", "resnet50", "--runs", "0"], "must be at least 1"),
    (["run", "resnet50", "--sizes", "-5"], "must be at least 1"),
    (["run", "bert", "--sizes", "600", "--idle-seconds", "0.1"], "at most 510 tokens"),
    (["run", "resnet50", "--device", "tpu"], "unknown device"),
])
def test_cli_bad_input_is_one_line_without_traceback(args, message, tmp_path):
    result = cli(*args, "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("meta.json"))


def test_cli_refuses_a_folder_that_is_not_a_run_tree(tmp_path):
    (tmp_path / "notes.txt").write_text("my notes")
    result = cli("run", "resnet50", "--quick", "--out", str(tmp_path))
    assert result.returncode == 2 and "is not a run tree" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_latencies_are_positive_and_finite(tree):
    study = load_study(tree)
    assert np.isfinite(study.latencies["latency_s"]).all() and (study.latencies["latency_s"] > 0).all()

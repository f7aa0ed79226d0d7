"""The sweep end to end on the CPU: real torch models, small inputs, a valid run tree of schema 2."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import FakeGPU, FakeNVML

from analysis import load_study
from measure import sweep
from measure.models import ModelError, user_model
from measure.plan import Plan, PlanError
from measure.runtree import RunTreeError
from measure.sensors import nvml
from measure.sweep import iterations_for_window, nvml_domain_of, run_study

pytestmark = pytest.mark.filterwarnings("ignore::analysis.AnalysisWarning")
CONFIG = "batch1-fp32-eager"  # the folder of the default configuration


def small_plan(model="resnet50", sizes=(8, 16), **overrides) -> Plan:
    settings = dict(iterations=4, runs=2, warmup=1, device="cpu", period_s=0.02, idle_s=0.2)
    settings.update(overrides)
    plan = Plan(model, list(sizes), **settings)
    plan.validate()
    return plan


def read_meta(folder):
    return json.loads((folder / "meta.json").read_text())


class Tiny(torch.nn.Module):
    """A small convolutional net: fast, and compiled in seconds."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


class Watched(Tiny):
    """``Tiny``, noting in ``calls`` at each call the clock, its weights' dtype, its input's dtype and whether
    autocast is on (a deep copy notes in the same list: a builtin method is copied as itself)."""

    def __init__(self, calls: list):
        super().__init__()
        self.note = calls.append

    def forward(self, x):
        self.note((time.perf_counter(), self.conv.weight.dtype, x.dtype, torch.is_autocast_enabled("cpu")))
        return super().forward(x)


def images(size: int, batch_size: int) -> torch.Tensor:
    return torch.randn(batch_size, 3, size, size)


def tiny(module=None, name="tiny"):
    return user_model(module if module is not None else Tiny(), images, name=name)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return run_study(small_plan(), tmp_path_factory.mktemp("study") / "resnet50", progress=False)


def test_tree_layout_and_files(tree):
    runs = sorted(p.relative_to(tree).as_posix() for p in tree.glob("*/input_*/run_*"))
    assert runs == [f"{CONFIG}/input_16/run_0", f"{CONFIG}/input_16/run_1", f"{CONFIG}/input_8/run_0",
                    f"{CONFIG}/input_8/run_1"]
    for folder in tree.glob("*/input_*/run_*"):
        assert sorted(p.name for p in folder.iterdir()) == ["latency.csv", "meta.json", "power_metrics.json"]
        latencies = pd.read_csv(folder / "latency.csv")
        assert list(latencies.columns) == ["latency_s"] and len(latencies) == 4
        assert (latencies["latency_s"] > 0).all()
    study = json.loads((tree / "study.json").read_text())
    assert study["schema"] == 2 and study["plan"]["model"] == "resnet50" and study["plan"]["device"] == "cpu"
    assert len(list((tree / "idle").iterdir())) == 1


def test_meta_describes_the_run(tree):
    meta = read_meta(tree / CONFIG / "input_16" / "run_1")
    assert meta["schema"] == 2 and meta["status"] == "complete" and meta["reason"] is None
    assert meta["identity"] == {"model": "resnet50", "task": "vision", "input_size": 16, "batch_size": 1,
                                "dtype": "fp32", "execution": "eager", "threads": torch.get_num_threads(),
                                "device": "cpu"}
    assert meta["run"] == 1 and meta["input_shape"] == [1, 3, 16, 16]
    assert (meta["iterations"], meta["warmup"]) == (4, 1)
    assert (meta["dtype_mode"], meta["compile_s"], meta["order"], meta["seed"]) == ("cast", None, "sequential", None)
    assert meta["params"] == 25_557_032  # torchvision's ResNet50
    assert meta["flops_per_inference"] > 0 and "flops_note" not in meta
    assert meta["weights"] in ("pretrained", "random")
    assert (meta["weights_notice"] is None) == (meta["weights"] == "pretrained")
    assert meta["host"]["torch"] and meta["host"]["cpu_model"]
    assert meta["gpu_domain"] is None and "gpu_domain_note" not in meta  # on the CPU there is none to match
    assert meta["stop_reason"] == "fixed protocol: 2 runs"
    # on the CPU the timed loop takes the ticks between two inferences; the idle recording has no loop
    assert meta["window"]["ticks"] == "loop"
    # every sensor used says where its figures come from; missing ones say why
    assert {d["source"] for d in meta["sensors"].values()} <= {"measured", "estimated"}
    assert "process" in meta["sensors"]
    for name, reason in meta["unavailable"].items():
        assert isinstance(reason, str) and reason, name
    # the idle recording is named, not turned into power here
    assert meta["idle"]["seconds"] == 0.2 and (tree / meta["idle"]["recording"]).is_file()
    assert "idle_power_w" not in meta


def test_cpu_energy_is_estimated_only_without_rapl(tree):
    meta = read_meta(tree / CONFIG / "input_8" / "run_0")
    idle = [json.loads(line) for line in (tree / meta["idle"]["recording"]).read_text().splitlines()]
    assert idle[0]["mark"] == "start" and idle[-1]["mark"] == "end"
    assert {line["mark"] for line in idle[1:-1]} == {"tick"}  # the timer's, every period_s of the 0.2 s
    if "rapl" in meta["unavailable"]:
        assert meta["sensors"]["cpu_estimated"]["source"] == "estimated"
        assert "cpu_estimated.power_w" in idle[0]  # the baseline's evidence carries the estimate too
    else:
        assert "cpu_estimated" not in meta["sensors"]


def test_window_matches_the_timed_loop(tree):
    for folder in tree.glob("*/input_*/run_*"):
        lines = [json.loads(line) for line in (folder / "power_metrics.json").read_text().splitlines()]
        assert lines[0]["mark"] == "start" and lines[-1]["mark"] == "end" and lines[0]["t_s"] == 0.0
        window_s = lines[-1]["t_s"]
        busy_s = pd.read_csv(folder / "latency.csv")["latency_s"].sum()
        assert busy_s <= window_s  # the loop lies inside the window
        assert read_meta(folder)["window"]["duration_s"] == pytest.approx(window_s, abs=1e-5)


def test_the_window_holds_the_timed_loop_and_nothing_else(tmp_path, monkeypatch):
    """Every call of the model is stamped; between the recorder's start and stop lie exactly the timed ones, and
    the loop polls for a tick after each (on the CPU the loop takes the ticks)."""
    edges, polls = [], []

    class Edges(sweep.Recorder):
        def start(self):
            super().start()
            edges.append(time.perf_counter())

        def stop(self):
            edges.append(time.perf_counter())
            return super().stop()

        def poll(self):
            polls.append(time.perf_counter())
            super().poll()

    monkeypatch.setattr(sweep, "Recorder", Edges)
    calls = []
    run_study(small_plan("tiny", sizes=(8,), iterations=5, warmup=3, idle_s=0), tmp_path / "t",
              model=tiny(Watched(calls)), progress=False)
    stamps = [call[0] for call in calls]
    assert len(edges) == 4 and len(stamps) == 2 * (3 + 5) + 1  # warm-up and timed calls of 2 runs, FLOPs counted once
    for start, stop in (edges[:2], edges[2:]):
        inside = [t for t in stamps if start <= t <= stop]
        polled = [t for t in polls if start <= t <= stop]
        assert len(inside) == len(polled) == 5
        assert all(call < poll for call, poll in zip(inside, polled))  # each poll after its inference
        assert all(poll < call for poll, call in zip(polled, inside[1:]))  # and before the next
    assert len(polls) == 10  # none outside the windows


def test_the_analysis_reads_the_tree(tree):
    study = load_study(tree)
    assert len(study.runs) == 4 and set(study.runs["status"]) == {"complete"}
    assert len(study.latencies) == 16
    energies = study.select("energy_per_inference_j").set_index(["input_size", "run", "domain"])
    if "cpu_estimated" in set(energies.index.get_level_values("domain")):
        row = energies.loc[(8, 0, "cpu_estimated")]
        assert row["source"] == "estimated" and row["value"] > 0


def test_every_size_is_checked_before_anything_runs(tmp_path):
    with pytest.raises(ModelError, match="alexnet needs an input of at least 63 px, got 32"):
        run_study(small_plan("alexnet", sizes=(32, 64), runs=1, iterations=2, idle_s=0), tmp_path / "a",
                  progress=False)
    assert not any(tmp_path.iterdir())


def test_no_valid_size_is_an_error(tmp_path):
    with pytest.raises(ModelError, match="at most 510 tokens"):
        run_study(small_plan("bert", sizes=(600,)), tmp_path / "b", progress=False)


def test_an_existing_tree_needs_resume(tree):
    with pytest.raises(RunTreeError, match=r"already holds runs \(first: batch1-fp32-eager/input_8/run_0\); pass "
                                           r"resume=True to complete it, overwrite=True to start again"):
        run_study(small_plan(), tree, progress=False)


def test_resume_redoes_only_incomplete_runs(tmp_path):
    out = run_study(small_plan(sizes=(8,), idle_s=0), tmp_path / "r", progress=False)
    kept, redo = out / CONFIG / "input_8" / "run_0", out / CONFIG / "input_8" / "run_1"
    meta = read_meta(redo)
    meta["status"] = "running"
    (redo / "meta.json").write_text(json.dumps(meta))
    before = (kept / "power_metrics.json").stat().st_mtime_ns, (redo / "power_metrics.json").stat().st_mtime_ns
    run_study(small_plan(sizes=(8,), idle_s=0), out, resume=True, progress=False)
    assert (kept / "power_metrics.json").stat().st_mtime_ns == before[0]
    assert (redo / "power_metrics.json").stat().st_mtime_ns != before[1]
    assert read_meta(redo)["status"] == "complete"


def test_a_failed_start_leaves_nothing_behind(tmp_path, monkeypatch):
    """Interrupted while recording the idle power, before any run: no study.json holds the folder."""
    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep.time, "sleep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(small_plan("tiny", sizes=(8,)), tmp_path / "new" / "tree", model=tiny(), progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    other = small_plan("tiny", sizes=(8,), runs=1, iterations=3, idle_s=0)  # another plan is welcome there now
    assert read_meta(run_study(other, tmp_path / "new" / "tree", model=tiny(), progress=False)
                     / CONFIG / "input_8" / "run_0")["status"] == "complete"


def test_overwrite_starts_a_tree_again(tmp_path):
    out = run_study(small_plan("tiny", sizes=(8, 12), runs=1, iterations=2), tmp_path / "o", model=tiny(),
                    progress=False)
    (out / "notes.txt").write_text("mine")
    again = small_plan("tiny", sizes=(8,), runs=1, iterations=3, idle_s=0)
    with pytest.raises(RunTreeError, match="started with another plan"):
        run_study(again, out, resume=True, model=tiny(), progress=False)
    with pytest.raises(PlanError, match="overwrite=True starts the tree again and resume=True completes it"):
        run_study(again, out, resume=True, overwrite=True, model=tiny(), progress=False)
    run_study(again, out, overwrite=True, model=tiny(), progress=False)
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/input_*/run_*")) == [f"{CONFIG}/input_8/run_0"]
    assert read_meta(out / CONFIG / "input_8" / "run_0")["iterations"] == 3
    assert json.loads((out / "study.json").read_text())["plan"]["iterations"] == 3
    assert not (out / "idle").exists() and (out / "notes.txt").read_text() == "mine"


def test_a_grid_of_batch_sizes_and_threads(tmp_path):
    threads = torch.get_num_threads()
    plan = small_plan("tiny", sizes=(8,), runs=1, iterations=2, idle_s=0, batch_sizes=[1, 3], threads=[1, 2])
    out = run_study(plan, tmp_path / "g", model=tiny(), progress=False)
    assert torch.get_num_threads() == threads  # restored after the study
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["batch1-fp32-eager-threads1", "batch1-fp32-eager-threads2", "batch3-fp32-eager-threads1",
                       "batch3-fp32-eager-threads2"]
    for name in folders:
        meta = read_meta(out / name / "input_8" / "run_0")
        batch, threads_used = int(name[5]), int(name[-1])
        assert meta["status"] == "complete"
        assert (meta["identity"]["batch_size"], meta["identity"]["threads"]) == (batch, threads_used)
        assert meta["input_shape"] == [batch, 3, 8, 8]


def test_an_unsupported_dtype_fails_its_point_and_never_leaks_into_the_next(tmp_path):
    class Inverse(torch.nn.Module):
        """``torch.linalg.inv``, which the CPU lacks in half precision."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.eye(4))
            self.dtypes = []

        def forward(self, x):
            self.dtypes.append(self.weight.dtype)
            return torch.linalg.inv(x + self.weight)

    module = Inverse()
    model = user_model(module, lambda size, batch: torch.eye(4).repeat(batch, 1, 1) * size, name="inverse")
    plan = small_plan("inverse", sizes=(2,), runs=1, iterations=3, idle_s=0, dtypes=["fp16", "fp32"])
    out = run_study(plan, tmp_path / "d", model=model, progress=False)
    failed, complete = read_meta(out / "batch1-fp16-eager" / "input_2" / "run_0"), read_meta(
        out / CONFIG / "input_2" / "run_0")
    assert failed["status"] == "failed" and "Low precision dtypes not supported" in failed["reason"]
    assert complete["status"] == "complete" and complete["identity"]["dtype"] == "fp32"
    assert module.weight.dtype == torch.float32  # the model as loaded was never cast
    assert module.dtypes == [torch.float32] * (1 + 3 + 1)  # the fp16 copy ran apart; this one stayed fp32


def test_dtype_by_cast_and_by_autocast(tmp_path):
    calls = {"cast": [], "autocast": []}
    modules = {mode: Watched(seen) for mode, seen in calls.items()}
    for mode, module in modules.items():
        plan = small_plan("tiny", sizes=(8,), runs=1, iterations=2, warmup=0, idle_s=0, dtypes=["bf16"],
                          dtype_mode=mode)
        meta = read_meta(run_study(plan, tmp_path / mode, model=tiny(module), progress=False)
                         / "batch1-bf16-eager" / "input_8" / "run_0")
        assert meta["status"] == "complete" and meta["dtype_mode"] == mode
    assert {call[1:] for call in calls["cast"]} == {(torch.bfloat16, torch.bfloat16, False)}
    assert {call[1:] for call in calls["autocast"]} == {(torch.float32, torch.float32, True)}
    assert modules["cast"].conv.weight.dtype == torch.float32  # a copy was cast


def test_compiled_execution_compiles_before_the_window(tmp_path):
    plan = small_plan("tiny", sizes=(8, 12), runs=2, iterations=3, idle_s=0, executions=["compiled"])
    out = run_study(plan, tmp_path / "c", model=tiny(), progress=False)
    metas = {(size, run): read_meta(out / "batch1-fp32-compiled" / f"input_{size}" / f"run_{run}")
             for size in (8, 12) for run in (0, 1)}
    assert {m["status"] for m in metas.values()} == {"complete"}, [m["reason"] for m in metas.values()]
    assert all(m["compile_s"] > 0 and m["flops_per_inference"] > 0 for m in metas.values())


def test_a_compilation_that_fails_is_a_failed_point(tmp_path, monkeypatch):
    def compile(module, **options):
        def compiled(*args, **kwargs):  # torch.compile is lazy: the first call compiles
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found in torch._inductor.config.cpp.cxx")
        return compiled

    monkeypatch.setattr(torch, "compile", compile)
    plan = small_plan("tiny", sizes=(8,), runs=1, iterations=2, idle_s=0, executions=["eager", "compiled"])
    out = run_study(plan, tmp_path / "f", model=tiny(), progress=False)
    assert read_meta(out / CONFIG / "input_8" / "run_0")["status"] == "complete"
    failed = read_meta(out / "batch1-fp32-compiled" / "input_8" / "run_0")
    assert failed["status"] == "failed" and failed["reason"].startswith("RuntimeError: InvalidCxxCompiler")


def test_a_compilation_inside_the_window_fails_the_run(tmp_path, monkeypatch):
    counts = iter(range(100))
    monkeypatch.setattr(sweep.knobs, "compilations", lambda: next(counts))  # as if every read saw a new one
    plan = small_plan("tiny", sizes=(8,), runs=1, iterations=2, idle_s=0, executions=["compiled"])
    meta = read_meta(run_study(plan, tmp_path / "w", model=tiny(), progress=False)
                     / "batch1-fp32-compiled" / "input_8" / "run_0")
    assert meta["status"] == "failed" and meta["reason"] == "ConfigError: torch.compile compiled inside the measured window"


def test_the_order_is_followed_and_recorded(tmp_path):
    plan = small_plan("tiny", sizes=(8, 12), runs=2, iterations=2, idle_s=0, order="interleave")
    out = run_study(plan, tmp_path / "i", model=tiny(), progress=False)
    metas = [read_meta(folder) for folder in out.glob("*/input_*/run_*")]
    by_start = [(m["identity"]["input_size"], m["run"]) for m in sorted(metas, key=lambda m: m["window"]["start_utc"])]
    assert by_start == [(8, 0), (12, 0), (8, 1), (12, 1)]
    assert {m["order"] for m in metas} == {"interleave"}
    assert json.loads((out / "study.json").read_text())["plan"]["order"] == "interleave"


def test_iterations_fill_the_window():
    assert iterations_for_window(np.array([0.01, 0.02, 0.04]), 0.05) == 3
    assert iterations_for_window(np.array([1.0]), 0.05) == 1


def test_a_stop_rule_goes_with_a_precision_only(tmp_path):
    with pytest.raises(PlanError, match="needs a stop_rule"):
        run_study(small_plan(precision=0.01), tmp_path / "s", progress=False)
    with pytest.raises(PlanError, match="needs a stop_rule"):
        run_study(small_plan(), tmp_path / "s", stop_rule=lambda folders: (True, "stop"), progress=False)
    assert not (tmp_path / "s").exists()


def test_precision_mode_stops_when_the_rule_says_so(tmp_path):
    seen = []

    def rule(folders):
        seen.append([folder.name for folder in folders])
        return (True, "precision reached: enough") if len(folders) == 3 else (False, "not yet")

    plan = small_plan("tiny", sizes=(8,), runs=3, precision=0.005, max_runs=6, min_window_s=0.05, idle_s=0)
    out = run_study(plan, tmp_path / "p", model=tiny(), stop_rule=rule, progress=False)
    metas = [read_meta(folder) for folder in sorted((out / CONFIG / "input_8").iterdir())]
    assert seen == [["run_0"], ["run_0", "run_1"], ["run_0", "run_1", "run_2"]]  # complete runs, in order
    assert len(metas) == 3 and all(m["stop_reason"] == "precision reached: enough" for m in metas)
    # iterations were sized once, from a few timed inferences, and kept by every run of the point
    assert len({m["iterations"] for m in metas}) == 1 and metas[0]["iterations"] >= 1


def test_precision_mode_stops_at_the_cap(tmp_path):
    plan = small_plan("tiny", sizes=(8,), runs=3, precision=1e-9, max_runs=3, min_window_s=0.02, idle_s=0)
    out = run_study(plan, tmp_path / "c", model=tiny(), stop_rule=lambda folders: (False, "±9 %"), progress=False)
    metas = [read_meta(folder) for folder in sorted((out / CONFIG / "input_8").iterdir())]
    assert len(metas) == 3 and all(m["stop_reason"] == "cap reached: 3 runs without stopping (±9 %)" for m in metas)


def test_the_gpu_domain_is_matched_by_uuid_or_left_null_with_a_note():
    sensor = nvml.probe(FakeNVML([FakeGPU(uuid="GPU-aaaa-1111"), FakeGPU(uuid="GPU-bbbb-2222")]))
    try:
        assert nvml_domain_of("bbbb-2222", [sensor]) == ("gpu1", None)
        for uuid in ("cccc-3333", ""):
            domain, note = nvml_domain_of(uuid, [sensor])
            assert domain is None and "matches no NVML device" in note and "no GPU energy is attributed" in note
            assert "gpu0 GPU-aaaa-1111" in note
    finally:
        sensor.close()
    assert nvml_domain_of("aaaa", [])[0] is None


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "measure", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_cli_help_documents_every_option():
    result = cli("run", "--help")
    assert result.returncode == 0
    for option in ("--sizes", "--iters", "--iters-at", "--runs", "--warmup", "--out", "--device", "--period",
                   "--idle-seconds", "--quick", "--preset", "--resume", "--overwrite", "--shard", "--precision",
                   "--max-runs", "--min-window", "--batch-sizes", "--dtypes", "--dtype-mode", "--compile",
                   "--threads", "--order", "--seed", "--no-progress", "--executor"):
        assert option in result.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "vgg"], "unknown model 'vgg'"),
    (["run", "resnet50", "--runs", "0"], "must be at least 1"),
    (["run", "resnet50", "--sizes", "-5"], "must be at least 1"),
    (["run", "bert", "--sizes", "600", "--idle-seconds", "0.1"], "at most 510 tokens"),
    (["run", "bert", "--sizes", "50", "600", "--idle-seconds", "0.1"], "at most 510 tokens"),
    (["run", "resnet50", "--device", "tpu"], "unknown device"),
])
def test_cli_bad_input_is_one_line_without_traceback(args, message, tmp_path):
    result = cli(*args, "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_folder_that_is_not_a_run_tree(tmp_path):
    (tmp_path / "notes.txt").write_text("my notes")
    result = cli("run", "resnet50", "--quick", "--out", str(tmp_path))
    assert result.returncode == 2 and "is not a run tree" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_latencies_are_positive_and_finite(tree):
    study = load_study(tree)
    assert np.isfinite(study.latencies["latency_s"]).all() and (study.latencies["latency_s"] > 0).all()


def test_a_failed_start_in_a_relative_folder_removes_only_what_it_created(tmp_path, monkeypatch):
    def interrupted(seconds):
        raise KeyboardInterrupt

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr(sweep.time, "sleep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(small_plan("tiny", sizes=(8,)), "tree", model=tiny(), progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["work"] and not any((tmp_path / "work").iterdir())

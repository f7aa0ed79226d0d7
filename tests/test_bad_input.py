"""A corpus of bad input for ``python -m measure run``, ``python -m analysis summarize`` and the loader.

Every case ends in one ``error:`` line with a non-zero exit where nothing useful
was done, or in a warning naming the file at fault; never in a traceback; and
nothing is written outside ``--out`` (``-o`` for the analysis). Policies the
corpus pins down: a run found twice in a tree (same model, input size and run)
is kept once, the first folder in walk order, with a warning naming both; files
of other names are ignored without a word.
"""
from __future__ import annotations

import json
import shutil
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from treegen import write_run

import analysis.__main__
import measure.__main__
from analysis import AnalysisWarning, load_study
from measure.plan import Plan

COMMON = ["--sizes", "8", "--iters", "2", "--runs", "1", "--device", "cpu", "--idle-seconds", "0.1", "--no-progress"]


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def call(main, argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as leaving:  # argparse's usage errors
        return leaving.code


# ---------------------------------------------------------------- python -m measure run

def a_file(out: Path) -> None:
    out.write_text("not a folder")


def foreign_files(out: Path) -> None:
    out.mkdir()
    (out / "thesis.tex").write_text("\\documentclass{article}")


def a_tree_of_another_plan(out: Path) -> None:
    out.mkdir()
    plan = Plan.from_preset("resnet50", sizes=[8], iterations=5, runs=1, device="cpu", idle_s=0.1)
    (out / "study.json").write_text(json.dumps({"schema": 2, "plan": plan.record()}))


def a_tree_with_runs(out: Path) -> None:
    out.mkdir()
    plan = Plan.from_preset("resnet50", sizes=[8], iterations=2, runs=1, device="cpu", idle_s=0.1)
    (out / "study.json").write_text(json.dumps({"schema": 2, "plan": plan.record()}))
    (out / "batch1-fp32-eager" / "input_8" / "run_0").mkdir(parents=True)


def a_tree_of_an_older_version(out: Path) -> None:
    (out / "input_8" / "run_0").mkdir(parents=True)


def inside_a_file(out: Path) -> None:
    out.write_text("a file")


MEASURE_CASES = [  # (model, options, what the --out path is made, the error's words)
    ("resnet50", ["--sizes", "0"], None, "must be at least 1"),
    ("resnet50", ["--sizes", "eight"], None, "not an integer: 'eight'"),
    ("resnet50", ["--sizes", "8", "8"], None, "--sizes lists 8 more than once"),
    ("resnet50", ["--iters", "-5"], None, "must be at least 1, got -5"),
    ("resnet50", ["--runs", "0"], None, "must be at least 1, got 0"),
    ("resnet50", ["--warmup", "-1"], None, "must be at least 0, got -1"),
    ("vgg16", [], None, "unknown model 'vgg16'; use alexnet, resnet50, bert, torchvision:<name>"),
    ("torchvision:nosuchnet", [], None, "nosuchnet"),
    ("resnet50", ["--device", "tpu"], None, "unknown device 'tpu'"),
    ("resnet50", ["--device", "cuda:7"], None, "asked for, but"),
    ("resnet50", ["--period", "0"], None, "must be a positive number, got 0"),
    ("resnet50", ["--idle-seconds", "inf"], None, "must be a non-negative number, got inf"),
    ("resnet50", ["--idle-seconds", "-1"], None, "must be a non-negative number, got -1"),
    ("resnet50", ["--batch-sizes", "0"], None, "must be at least 1, got 0"),
    ("resnet50", ["--threads", "2", "2"], None, "--threads lists 2 more than once"),
    ("resnet50", ["--dtypes", "fp8"], None, "invalid choice: 'fp8'"),
    ("resnet50", ["--compile", "jit"], None, "invalid choice: 'jit'"),
    ("resnet50", ["--order", "random"], None, "invalid choice: 'random'"),
    ("resnet50", ["--quick", "--preset", "seed"], None, "--quick is --preset quick"),
    ("resnet50", ["--precision", "0.05", "--runs", "5", "--max-runs", "4"], None,
     "--max-runs must be at least --runs and 3 with --precision, got 4"),
    ("resnet50", ["--iters-at", "4096"], None, "expected SIZE=N"),
    ("resnet50", ["--iters-at", "99=5"], None, "--iters-at names size(s) 99 that --sizes does not list"),
    ("resnet50", ["--precision", "2"], None, "relative half-width"),
    ("resnet50", ["--shard", "2/2"], None, "expected i/n"),
    ("resnet50", ["--shard", "0/0"], None, "expected i/n"),
    ("resnet50", ["--shard", "one/2"], None, "expected i/n"),
    ("resnet50", ["--shard", "0/2", "--precision", "0.1"], None, "cannot be split into shards"),
    ("bert", ["--sizes", "600"], None, "at most 510 tokens"),
    ("bert", ["--sizes", "50", "600"], None, "at most 510 tokens"),  # every size is checked before anything runs
    ("resnet50", [], a_file, "exists and is not a folder"),
    ("resnet50", [], foreign_files, "is not empty and is not a run tree"),
    ("resnet50", [], inside_a_file, "cannot create output folder"),
    ("resnet50", ["--resume"], a_tree_of_another_plan, "started with another plan (--iters: 5 there, 2 now)"),
    ("resnet50", [], a_tree_with_runs,
     "already holds runs (first: batch1-fp32-eager/input_8/run_0); pass --resume to complete it, --overwrite"),
    ("resnet50", [], a_tree_of_an_older_version, "was written by an older version of this package"),
    ("resnet50", ["--resume"], a_tree_of_an_older_version, "was written by an older version of this package"),
    ("resnet50", ["--resume", "--overwrite"], None, "--overwrite starts the tree again and --resume completes it"),
    ("resnet50", ["--overwrite", "--shard", "0/2"], None, "--overwrite cannot go with --shard"),
    ("resnet50", ["--tasks", "2"], None, "--tasks goes with --executor"),
    ("resnet50", ["--executor", "local", "--shard", "0/2"], None, "--shard goes without --executor"),
    ("resnet50", ["--executor", "local", "--tasks", "3"], None, "--tasks must be between 1 and the sweep's 1"),
    ("resnet50", ["--executor", "local", "--sizes", "8", "16", "--tasks", "2", "--precision", "0.1"], None,
     "it runs as a single task"),
    ("resnet50", ["--executor", "local", "--slurm-extra", "=5"], None, "expected an sbatch option"),
]


@pytest.mark.parametrize("model, options, make_out, message", MEASURE_CASES,
                         ids=lambda v: v.__name__ if callable(v) else None)
def test_measure_run_bad_input(model, options, make_out, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "sub" if make_out is inside_a_file else tmp_path / "out"
    if make_out:
        make_out(tmp_path / "out")
    before = snapshot(tmp_path)
    code = call(measure.__main__.main, ["run", model, *COMMON, *options, "--out", str(out)])
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and message in errors[0], stderr
    assert snapshot(tmp_path) == before  # nothing written, in --out or elsewhere


# ---------------------------------------------------------------- python -m analysis summarize and the loader

def rewrite_samples(folder: Path, line: int, **changes) -> Path:
    path = folder / "power_metrics.json"
    lines = path.read_text().splitlines()
    lines[line] = json.dumps({**json.loads(lines[line]), **changes})
    path.write_text("\n".join(lines) + "\n")
    return path


def rewrite_meta(folder: Path, **changes) -> Path:
    path = folder / "meta.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return path


def truncated_line(tree):
    path = write_run(tree) / "power_metrics.json"
    path.write_bytes(path.read_bytes()[:-40])
    return path, "(truncated last line)); the rest used"


def empty_samples(tree):
    write_run(tree, run=1)
    path = write_run(tree) / "power_metrics.json"
    path.write_text("")
    return path, "empty; run skipped"


def garbage_lines(tree):
    path = write_run(tree) / "power_metrics.json"
    path.write_bytes(path.read_bytes() + b"\x00\xff\xfe garbage {{{\n")
    return path, "1 unreadable line(s) skipped"


def unknown_mark(tree):
    return rewrite_samples(write_run(tree), 4, mark="pause"), "1 unreadable line(s) skipped (line 5)"


def nan_power(tree):
    folder = write_run(tree, gpu_counter=False)
    (folder / "power_metrics.json").write_text((folder / "power_metrics.json").read_text().replace(
        '"gpu0.power_w": 100.0', '"gpu0.power_w": NaN', 1))
    return folder, "gpu0: 1 power reading(s) missing in the window; not integrated across gaps"


def negative_power(tree):
    folder = write_run(tree, gpu_counter=False)
    rewrite_samples(folder, 5, **{"gpu0.power_w": -80.0})
    return folder, "1 negative or infinite gpu0.power_w reading(s) treated as missing"


def counter_backwards(tree):
    folder = write_run(tree)
    rewrite_samples(folder, 10, **{"gpu0.energy_j": 5.0})  # a lone reading: a glitch, dropped, the rest used
    return folder, "gpu0: 1 counter reading(s) outside its range or breaking its sequence dropped as glitches"


def missing_meta(tree):
    folder = write_run(tree)
    (folder / "meta.json").unlink()
    return folder / "power_metrics.json", "holds our sample format but no meta.json; run skipped"


def duplicated_run(tree):
    """The same run twice inside one tree (a copy made by hand): counted once."""
    shutil.copytree(write_run(tree), tree / "copy" / "input_64" / "run_0")
    return tree / "copy" / "input_64" / "run_0", "duplicate skipped (the first is kept)"


def aipowermeter_markers_only(tree):
    folder = tree / "alexnet" / "input_224" / "run_0"
    folder.mkdir(parents=True)
    (folder / "power_metrics.json").write_text('"END OF RECORDING SEGMENT"\n' * 3)
    return folder / "power_metrics.json", "no sample; run skipped"


def malformed_sensors(tree):
    return rewrite_meta(write_run(tree), sensors=["gpu0"]), "malformed sensors; run skipped"


def malformed_input_size(tree):
    folder = write_run(tree)
    identity = json.loads((folder / "meta.json").read_text())["identity"]
    return rewrite_meta(folder, identity={**identity, "input_size": "large"}), \
        "malformed identity.input_size; run skipped"


def malformed_idle_power(tree):
    return rewrite_meta(write_run(tree), idle_power_w={"gpu0": "hot"}), "malformed idle_power_w; run skipped"


def unreadable_meta(tree):
    path = write_run(tree) / "meta.json"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    return path, "unreadable (not UTF-8 text); run skipped"


def empty_latency(tree):
    path = write_run(tree) / "latency.csv"
    path.write_text("latency_s\n")
    return path, "no latency value; latency unknown"


def garbage_latency(tree):
    folder = write_run(tree)
    (folder / "latency.csv").write_text("latency_s\n0.01\nfast\n-1\n")
    return folder, "2 unreadable or negative latency value(s) skipped"


def incomplete_only(tree):
    write_run(tree, status="running")
    return tree, "1 incomplete run(s) left out"


def tree_is_a_file(tree):
    tree.write_text("")
    return tree, "not a folder"


def foreign_and_leftover_files(tree):
    folder = write_run(tree)
    (tree / "README.txt").write_text("my sweep")
    (tree / "notes").mkdir()
    (tree / "notes" / "meta.json").write_text("{}")
    (folder / ".meta.json.k1ll3d.tmp").write_text('{"status": "compl')  # left by a kill inside an atomic write
    return None, None


ANALYSIS_CASES = [  # (make the tree: the file to name and the words, or None, None for silence; exit status)
    (truncated_line, 0), (empty_samples, 0), (garbage_lines, 0), (unknown_mark, 0), (nan_power, 0),
    (negative_power, 0), (counter_backwards, 0), (missing_meta, 1), (duplicated_run, 0),
    (aipowermeter_markers_only, 1), (malformed_sensors, 1), (malformed_input_size, 1), (malformed_idle_power, 1),
    (unreadable_meta, 1), (empty_latency, 0), (garbage_latency, 0), (incomplete_only, 1), (tree_is_a_file, 1),
    (foreign_and_leftover_files, 0),
]


@pytest.mark.parametrize("make, status", ANALYSIS_CASES, ids=lambda v: v.__name__ if callable(v) else None)
def test_summarize_bad_input(make, status, tmp_path, capsys):
    tree = tmp_path / "tree"
    named, words = make(tree)
    before = snapshot(tmp_path)
    code = call(analysis.__main__.main, ["summarize", str(tree), "-o", str(tmp_path / "summary.csv")])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == status, captured.err
    assert all(line.startswith(("warning: ", "error: ")) for line in lines), captured.err
    if named is None:
        assert lines == []
    else:
        assert [line for line in lines if f"{named}" in line and words in line], captured.err
    written = set(snapshot(tmp_path)) - set(before)
    if status:
        assert len([line for line in lines if line.startswith("error: ")]) == 1 and captured.out == ""
        assert written == set()
    else:
        assert written == {"summary.csv"}


def test_summarize_into_a_missing_folder_is_one_error_line(tmp_path, capsys):
    write_run(tmp_path / "tree")
    assert analysis.__main__.main(["summarize", str(tmp_path / "tree"), "-o", str(tmp_path / "no" / "s.csv")]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and f"{tmp_path / 'no'}" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


def test_a_duplicated_run_is_kept_once_from_the_first_folder(tmp_path):
    write_run(tmp_path / "a", power_w={"gpu0": 100.0})
    copy = write_run(tmp_path / "b", power_w={"gpu0": 300.0})
    (tmp_path / "b" / "study.json").unlink()  # b is a folder of the tree a parent holds, not a tree of its own
    (tmp_path / "a" / "study.json").rename(tmp_path / "study.json")
    with pytest.warns(AnalysisWarning, match="b/input_64/run_0: same identity and run as .*a/input_64/run_0"):
        study = load_study(tmp_path)
    assert study.runs["folder"].tolist() == ["a/input_64/run_0"] and copy.exists()
    assert study.wide()["gpu_mean_power_w"].tolist() == pytest.approx([100.0])


def test_the_same_run_in_two_trees_is_two_runs_of_two_labels(tmp_path):
    write_run(tmp_path / "a", power_w={"gpu0": 100.0})
    write_run(tmp_path / "b", power_w={"gpu0": 300.0})
    study = load_study(tmp_path)
    assert study.runs["label"].tolist() == ["a", "b"]
    assert study.wide()["gpu_mean_power_w"].tolist() == pytest.approx([100.0, 300.0])


def test_a_killed_run_loads_as_incomplete_when_asked(tmp_path):
    """What kill -9 leaves mid-window: meta 'running', a cut last sample line, no latency.csv."""
    folder = write_run(tmp_path, status="running")
    (folder / "latency.csv").unlink()
    samples = folder / "power_metrics.json"
    samples.write_bytes(samples.read_bytes()[:-30])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnalysisWarning)
        study = load_study(tmp_path, include_incomplete=True)
    messages = " | ".join(str(w.message) for w in caught)
    assert "truncated last line" in messages and "no latency.csv" in messages and "no 'end' sample" in messages
    assert study.runs["status"].tolist() == ["running"]
    assert math.isnan(study.wide().at[0, "gpu_energy_per_inference_j"])


@pytest.mark.parametrize("argv", [
    ["measure", "run", "resnet50", "--runs", "0"],
    ["analysis", "summarize", "."],
])
def test_no_traceback_from_the_processes(argv, tmp_path):
    (tmp_path / "power_metrics.json").write_bytes(b"\x00\x01 not json\n")
    result = subprocess.run([sys.executable, "-m", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "error:" in line]) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["power_metrics.json"]

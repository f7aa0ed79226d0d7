"""Sweeps split into shards: submitit's local executor, concurrent shard processes, a Slurm job array.

Each way must give the tree a direct run gives: the same cells, all complete,
the same ``study.json`` and the same metadata but for what differs from one
process to the next (times, host, the idle baseline measured by each process).
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from submitit.core.utils import DelayedSubmission

from measure.__main__ import main
from measure.executors import Shard
from measure.plan import Cell, Config, Plan
from measure.runtree import read_meta
from measure.sweep import Start, prepare, run_study

OPTIONS = ["--sizes", "8", "16", "--iters", "3", "--runs", "1", "--warmup", "1", "--device", "cpu",
           "--period", "0.02", "--idle-seconds", "0.1", "--no-progress"]
PER_PROCESS = ("window", "host", "idle")  # idle: each process records its own


def plan_of_options() -> Plan:
    return Plan.from_preset("resnet50", sizes=[8, 16], iterations=3, runs=1, warmup=1, device="cpu", period_s=0.02,
                            idle_s=0.1)


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    return run_study(plan_of_options(), tmp_path_factory.mktemp("direct") / "tree", progress=False)


def metas(tree: Path) -> dict[str, dict]:
    return {folder.relative_to(tree).as_posix(): {k: v for k, v in read_meta(folder).to_document().items()
                                                  if k not in PER_PROCESS}
            for folder in tree.glob("*/input_*/run_*")}


def assert_same_tree(tree: Path, direct: Path, processes: int) -> None:
    assert metas(tree) == metas(direct) and {m["status"] for m in metas(tree).values()} == {"complete"}
    assert (tree / "study.json").read_bytes() == (direct / "study.json").read_bytes()
    assert len(list((tree / "idle").iterdir())) == processes  # one idle recording per process, none overwritten
    assert not list(tree.rglob("*.tmp"))


def test_local_executor_gives_the_tree_of_a_direct_run(direct, tmp_path, capsys):
    out = tmp_path / "tree"
    assert main(["run", "resnet50", *OPTIONS, "--out", str(out), "--executor", "local", "--tasks", "2", "--wait"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("submitted 2 task(s) (local), job id(s): ")
    assert printed[1] == f"submitit logs: {out / 'submitit'}"
    assert [line.split(": ", 1)[1] for line in printed[2:4]] == ["1 complete", "1 complete"]
    assert_same_tree(out, direct, processes=2)


def test_two_concurrent_shard_processes_share_one_tree(direct, tmp_path):
    out = tmp_path / "tree"
    shards = [subprocess.Popen([sys.executable, "-m", "measure", "run", "resnet50", *OPTIONS, "--out", str(out),
                                "--shard", f"{i}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in range(2)]
    for shard in shards:
        _, err = shard.communicate(timeout=300)
        assert shard.returncode == 0, err
    assert_same_tree(out, direct, processes=2)


def test_a_shard_starting_while_another_writes_study_json_joins_the_tree(tmp_path):
    out = tmp_path / "tree"
    out.mkdir()
    (out / ".study.json.r4ce.tmp").write_text("{")  # the other shard, between its write and its rename
    prepared = prepare(plan_of_options(), out, shard=(1, 2))
    assert (prepared.out, prepared.todo) == (out, [Cell(Config(), 16, 0)])
    Start(plan_of_options(), out).begin()  # what its first run does
    assert json.loads((out / "study.json").read_text())["plan"]["sizes"] == [8, 16]


def test_a_failed_task_is_reported_with_its_reason_and_log(tmp_path, capsys):
    out = tmp_path / "tree"
    assert main(["run", "resnet50", *OPTIONS, "--device", "cuda:99", "--out", str(out), "--executor", "local",
                 "--wait"]) == 1
    captured = capsys.readouterr()
    task = captured.out.splitlines()[2]
    assert task.startswith("task 0/1 (job ") and ") failed: ValueError: device 'cuda:99' asked for, but" in task
    assert task.endswith("_0_log.err") and Path(task.rsplit("log: ", 1)[1]).is_file()
    assert captured.err.splitlines() == ["error: 1 task(s) left runs not complete; retry them with this command "
                                         "and --resume"]


def test_slurm_job_array_with_gpu_options(tmp_path, monkeypatch, capsys):
    """sbatch and srun are stand-ins: the job array's script is kept, nothing runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", "exit 0"), ("sbatch", f'cp "$1" {tmp_path}/job.sh; echo "Submitted batch job 4242"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "tree"
    assert main(["run", "resnet50", *OPTIONS, "--runs", "2", "--out", str(out), "--executor", "slurm",
                 "--tasks", "3", "--slurm-partition", "gpu", "--gpus-per-task", "1", "--cpus-per-task", "8",
                 "--timeout-min", "30", "--array-parallelism", "2", "--slurm-extra", "account=energy",
                 "--slurm-extra", "exclusive"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        "submitted 3 task(s) (slurm), job id(s): 4242_0 4242_1 4242_2", f"submitit logs: {out / 'submitit'}"]
    script = (tmp_path / "job.sh").read_text().splitlines()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --time=30", "#SBATCH --array=0-2%2", "#SBATCH --account=energy", "#SBATCH --exclusive",
                 "#SBATCH --job-name=measure-resnet50", f"#SBATCH --output={out / 'submitit'}/%A_%a_0_log.out"):
        assert line in script
    plan = Plan.from_preset("resnet50", sizes=[8, 16], iterations=3, runs=2, warmup=1, device="cpu", period_s=0.02,
                            idle_s=0.1)
    for i in range(3):  # every task resumes its own shard of the one plan into the one tree
        task = DelayedSubmission.load(out / "submitit" / f"4242_{i}_submitted.pkl")
        assert isinstance(task.function, Shard) and task.args == (plan, out, i, 3)
    assert json.loads((out / "study.json").read_text())["plan"]["runs"] == 2  # the plan is recorded at submission

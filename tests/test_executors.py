"""Sweeps split into shards: submitit's local executor, concurrent shard processes, Slurm options.

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

from measure.__main__ import main
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


def test_slurm_options_the_local_cluster_cannot_honour(tmp_path, monkeypatch):
    """GPUs, accounts and whole nodes (tests/test_slurm.py runs the rest on a real cluster): sbatch and srun are
    stand-ins, the job array's script is kept, nothing runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", "exit 0"), ("sbatch", f'cp "$1" {tmp_path}/job.sh; echo "Submitted batch job 4242"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert main(["run", "resnet50", *OPTIONS, "--runs", "2", "--out", str(tmp_path / "tree"), "--executor", "slurm",
                 "--tasks", "3", "--gpus-per-task", "1", "--array-parallelism", "2", "--slurm-extra", "account=energy",
                 "--slurm-extra", "exclusive"]) == 0
    script = (tmp_path / "job.sh").read_text().splitlines()
    for line in ("#SBATCH --gpus-per-node=1", "#SBATCH --array=0-2%2", "#SBATCH --account=energy",
                 "#SBATCH --exclusive"):
        assert line in script
    assert json.loads((tmp_path / "tree" / "study.json").read_text())["plan"]["runs"] == 2  # recorded at submission


def test_the_slurm_executor_on_a_machine_without_slurm_is_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch or srun there
    out = tmp_path / "tree"
    assert main(["run", "resnet50", *OPTIONS, "--out", str(out), "--executor", "slurm"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --executor slurm needs Slurm (sbatch, srun) on this machine; run it on a login node"]
    assert not out.exists()

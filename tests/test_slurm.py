"""Sweeps as Slurm job arrays on a real single-node cluster (``scripts/slurm-local.sh``), through the CLI.

Each test submits ``python -m measure run ... --executor slurm`` as a user
would, and reads back the run tree, submitit's logs and Slurm's accounting
(``sacct``). Time limits are not waited for: a test sends the task the signal
that Slurm sends before a time limit, with ``scancel --signal``, at a moment
it chooses.
"""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import measure
from measure.__main__ import main
from measure.runtree import read_meta, read_status

pytestmark = pytest.mark.slurm

QUICK = ["alexnet", "--quick", "--iters", "3", "--warmup", "1", "--idle-seconds", "0.2", "--period", "0.05"]
# runs long enough that a task signalled as the first one ends is still measuring
SLOW = ["alexnet", "--quick", "--device", "cpu", "--runs", "4", "--iters", "10", "--warmup", "1",
        "--idle-seconds", "0.2", "--period", "0.05"]
CONFIG = "batch1-fp32-eager"  # the folder of the default configuration
PER_PROCESS = ("window", "host", "idle")
PACKAGE_ROOT = Path(measure.__file__).parent.parent


@pytest.fixture
def env(slurm_conf) -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": slurm_conf}


def measure_run(env: dict[str, str], *options: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "measure", "run", *map(str, options)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=900)


@pytest.fixture
def start_run(env):
    """``start_run(*options)``: ``python -m measure run`` in the background, killed at the test's end if still there."""
    started = []

    def start(*options: str | Path) -> subprocess.Popen:
        started.append(subprocess.Popen([sys.executable, "-m", "measure", "run", *map(str, options)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def job_ids(stdout: str) -> list[str]:
    """The job ids that ``--executor`` printed on its first line."""
    return stdout.splitlines()[0].split("job id(s): ")[1].split()


def sacct(env: dict[str, str], job: str, fields: str, *options: str, tasks: int = 1) -> list[list[str]]:
    """Slurm's accounting of ``job`` (an array's ``tasks`` one by one) once it has ended: ``fields`` per record.

    A task's result is written before its job ends, so ``--wait`` may return
    while Slurm still says ``RUNNING`` or ``COMPLETING``; and slurmdbd learns
    of an array's tasks apart (``123_0``, ``123_1``) some time after it has
    recorded the array as one job (``123``).
    """
    deadline = time.monotonic() + 120
    while True:
        lines = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", job,
                                "--format", f"State,JobID,{fields}", *options], capture_output=True, text=True,
                               env=env, check=True).stdout.splitlines()
        records = [line.split("|") for line in lines]
        ended = not {state for state, *_ in records} & {"PENDING", "RUNNING", "COMPLETING"}
        if ended and len({job_id for _, job_id, *_ in records}) == tasks:
            return [fields for _, _, *fields in records]
        assert time.monotonic() < deadline, f"job {job} has not ended: {records}"
        time.sleep(0.5)


def metas(tree: Path) -> dict[str, dict]:
    return {folder.relative_to(tree).as_posix():
            {k: v for k, v in read_meta(folder).to_document().items() if k not in PER_PROCESS}
            for folder in tree.glob("*/input_*/run_*")}


def complete_files(tree: Path) -> dict[str, bytes]:
    """Every file of every complete run, by path."""
    return {f.relative_to(tree).as_posix(): f.read_bytes() for folder in tree.glob("*/input_*/run_*")
            if read_status(folder) == "complete" for f in folder.iterdir()}


def job_once_first_run_is_complete(sweep: subprocess.Popen, out: Path) -> str:
    """Wait until run 0 of the sweep into ``out`` is complete; the id of its (single) job."""
    deadline = time.monotonic() + 600
    while read_status(out / CONFIG / "input_224" / "run_0") != "complete":
        assert sweep.poll() is None, f"the sweep ended first: {sweep.communicate()}"
        assert time.monotonic() < deadline, "run 0 never completed"
        time.sleep(0.05)
    return next((out / "submitit").glob("*_submitted.pkl")).name.split("_")[0]


def test_a_job_array_gives_the_tree_of_a_direct_run(env, tmp_path):
    direct, out = tmp_path / "direct", tmp_path / "tree"
    assert main(["run", *QUICK, "--device", "cpu", "--runs", "2", "--out", str(direct), "--no-progress"]) == 0
    done = measure_run(env, *QUICK, "--device", "cpu", "--runs", "2", "--out", out, "--executor", "slurm",
                       "--tasks", "2", "--slurm-partition", "local", "--cpus-per-task", "1", "--timeout-min", "5",
                       "--wait")
    assert done.returncode == 0, done.stderr
    jobs = job_ids(done.stdout)
    assert [line.split(": ", 1)[1] for line in done.stdout.splitlines()[2:4]] == ["1 complete", "1 complete"]
    assert metas(out) == metas(direct) and {m["status"] for m in metas(out).values()} == {"complete"}
    assert (out / "study.json").read_bytes() == (direct / "study.json").read_bytes()
    assert len(list((out / "idle").iterdir())) == 2  # one idle recording per task
    assert not list(out.rglob("*.tmp"))
    array = jobs[0].split("_")[0]
    assert sorted(sacct(env, array, "JobID,State,JobName,Partition,Timelimit,ReqCPUS", tasks=len(jobs))) == [
        [job, "COMPLETED", "measure-alexnet", "local", "00:05:00", "1"] for job in jobs]
    summary = subprocess.run([sys.executable, "-m", "analysis", "summarize", str(out)], capture_output=True,
                             text=True, timeout=300)
    assert summary.returncode == 0, summary.stderr
    rows = list(csv.DictReader(summary.stdout.splitlines()))
    assert [(row["model"], row["input_size"], row["n_runs"]) for row in rows] == [("alexnet", "224", "2")]


def test_a_task_signalled_before_its_time_limit_is_requeued_and_resumes_its_shard(env, start_run, tmp_path):
    out = tmp_path / "tree"
    sweep = start_run(*SLOW, "--out", out, "--executor", "slurm", "--timeout-min", "5", "--wait")
    job = job_once_first_run_is_complete(sweep, out)
    before = complete_files(out)
    script = (out / "submitit" / f"{job}_submission.sh").read_text()
    signal, delay_s = re.search(r"^#SBATCH --signal=(\w+)@(\d+)$", script, re.MULTILINE).groups()
    assert delay_s == "75"  # a quarter of the 5-minute limit
    # what slurmctld does at that delay before the limit: the signal to the job's steps, not to its batch shell
    subprocess.run(["scancel", f"--signal={signal}", job], env=env, check=True)
    stdout, stderr = sweep.communicate(timeout=900)
    assert sweep.returncode == 0, stderr
    assert f"task 0/1 (job {job}): 4 complete" in stdout.splitlines()
    after = complete_files(out)
    assert {name: after[name] for name in before} == before  # complete runs kept byte for byte
    assert {m["status"] for m in metas(out).values()} == {"complete"} and len(metas(out)) == 4
    log = "".join((out / "submitit" / f"{job}_0_log.{stream}").read_text() for stream in ("out", "err"))
    assert f"Caught signal SIG{signal} on " in log and "this job is timed-out" in log and f"Requeued job {job}" in log
    assert sacct(env, job, "State", "--duplicates") == [["REQUEUED"], ["COMPLETED"]]


def test_a_cancelled_task_is_reported_with_its_state_and_resume_completes_the_tree(env, start_run, tmp_path):
    """Task 1 is cancelled while it waits for task 0 (one task at a time), so it never writes a result.

    Not before task 0 has started: a task cancelled before any of its array
    has started leaves no record in sacct, and submitit would wait for it
    forever.
    """
    out = tmp_path / "tree"
    options = [*QUICK, "--device", "cpu", "--runs", "2", "--out", out, "--executor", "slurm", "--tasks", "2",
               "--array-parallelism", "1", "--wait"]
    sweep = start_run(*options)
    deadline = time.monotonic() + 300
    while len(pickles := sorted((out / "submitit").glob("*_submitted.pkl"))) < 2:
        assert sweep.poll() is None, f"the sweep ended first: {sweep.communicate()}"
        assert time.monotonic() < deadline, "the tasks were never submitted"
        time.sleep(0.2)
    jobs = [pickle.name.removesuffix("_submitted.pkl") for pickle in pickles]
    while subprocess.run(["squeue", "--noheader", "--jobs", jobs[0], "--format", "%T"], capture_output=True,
                         text=True, env=env).stdout.strip() != "RUNNING":
        assert time.monotonic() < deadline, "task 0 never started"
        time.sleep(0.2)
    subprocess.run(["scancel", jobs[1]], env=env, check=True)
    stdout, stderr = sweep.communicate(timeout=900)
    assert sweep.returncode == 1
    assert job_ids(stdout) == jobs
    tasks = stdout.splitlines()[2:4]
    assert tasks[0] == f"task 0/2 (job {jobs[0]}): 1 complete"
    assert re.fullmatch(rf"task 1/2 \(job {jobs[1]}\) failed: ended without a result, in state CANCELLED by \d+; "
                        rf"log: {re.escape(str(out / 'submitit' / jobs[1]))}_0_log.err", tasks[1])
    assert stderr.splitlines()[-1] == ("error: 1 task(s) left runs not complete; retry them with this command "
                                       "and --resume")
    before = complete_files(out)
    resumed = measure_run(env, *options, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert [line.split(": ", 1)[1] for line in resumed.stdout.splitlines()[2:4]] == ["1 complete", "1 complete"]
    after = complete_files(out)
    assert {name: after[name] for name in before} == before and len(before) == 3  # task 0's run, kept
    assert {m["status"] for m in metas(out).values()} == {"complete"} and len(metas(out)) == 2


def test_tasks_failing_on_their_node_are_reported_with_the_reason_and_log(env, tmp_path):
    out = tmp_path / "tree"
    failed = measure_run(env, *QUICK, "--device", "cuda", "--runs", "2", "--out", out, "--executor", "slurm",
                         "--tasks", "2", "--wait")
    assert failed.returncode == 1
    jobs = job_ids(failed.stdout)
    for index, (job, line) in enumerate(zip(jobs, failed.stdout.splitlines()[2:4])):
        reason, log = re.fullmatch(rf"task {index}/2 \(job {job}\) failed: (.*); log: (.*)", line).groups()
        assert reason.startswith("ValueError: device 'cuda' asked for, but ")
        assert log == str(out / "submitit" / f"{job}_0_log.err") and reason in Path(log).read_text()
    assert failed.stderr.splitlines()[-1] == ("error: 2 task(s) left runs not complete; retry them with this "
                                              "command and --resume")
    records = sacct(env, jobs[0].split("_")[0], "JobID,State", tasks=len(jobs))
    assert sorted(records) == [[job, "FAILED"] for job in jobs]


def test_a_site_that_starts_jobs_in_a_clean_environment_still_runs_this_package(env, tmp_path):
    """``SBATCH_EXPORT=NONE``: the job gets the node's login environment, without this process's variables."""
    out = tmp_path / "tree"
    done = measure_run({**env, "SBATCH_EXPORT": "NONE"}, *QUICK, "--device", "cpu", "--runs", "1", "--out", out,
                       "--executor", "slurm", "--wait", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    job = job_ids(done.stdout)[0]
    log = (out / "submitit" / f"{job}_0_log.out").read_text()
    assert f"shard 0/1 of {out}, measured by the package in {PACKAGE_ROOT}\n" in log


def test_options_the_cluster_refuses_are_one_error_line(env, tmp_path):
    refused = measure_run(env, *QUICK, "--device", "cpu", "--out", tmp_path / "tree", "--executor", "slurm",
                          "--slurm-partition", "nosuch")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == ("error: sbatch refused the tasks: invalid partition specified: "
                                               "nosuch; Batch job submission failed: Invalid partition name "
                                               "specified")

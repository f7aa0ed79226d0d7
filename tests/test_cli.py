"""``python -m measure``: what it says before and after a sweep, --resume from study.json, and every error
path ending in one ``error:`` line and a non-zero status, never a traceback (interrupts at any moment,
bad environment variables, a failed submission, output the terminal cannot encode, usage errors)."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import measure.__main__ as cli
from measure import sweep
from measure.models import user_model
from measure.plan import Plan
from measure.sensors import rapl

TINY = ["--sizes", "8", "--iters", "2", "--runs", "2", "--warmup", "0", "--idle-seconds", "0", "--period", "0.05",
        "--no-progress"]
CONFIG = "batch1-fp32-eager"
RAPL_READABLE = not isinstance(rapl.probe(), rapl.Unavailable)  # the CPU estimate, and its TDP, only without it


def python_m_measure(*args: str, env: dict | None = None, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "measure", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})}, **options)


def one_error_line(stderr: str) -> str:
    """The ``error:`` line that ends ``stderr``, checking it is the only one and that no traceback came."""
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and stderr.splitlines()[-1] == errors[0] and "Traceback" not in stderr, stderr
    return errors[0]


# ---------------------------------------------------------------- what it says

def test_a_sweep_says_what_it_will_do_and_what_it_did(tmp_path, capsys):
    out = tmp_path / "tree"
    assert cli.main(["run", "resnet50", *TINY, "--device", "cpu", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    heads = [line.split(" ", 1)[0] for line in lines]
    assert heads[:2] == ["model", "device"] and lines[0].startswith("model    resnet50 (vision, 25,557,032 parameters)")
    assert "sensors" in heads and "plan" in heads and "tree" in heads
    assert f"plan     1 size(s) x 1 configuration(s) x 2 run(s) = 2 runs, order sequential" in lines
    assert lines[heads.index("tree")] == f"tree     {out}"
    done = next(line for line in lines if line.startswith("done in "))
    assert done.endswith(": 2 runs complete, 0 failed, 0 skipped (complete before)")
    assert f"run tree: {out}" in lines
    table = lines[lines.index("medians over complete runs (energy per inference = one forward pass):") + 1:]
    assert table[0].split()[:4] == ["input_size", "runs", "latency_s", "median"]
    assert table[1].split()[:2] == ["8", "2"] and float(table[1].split()[2]) > 0
    assert "(n < 5)" in table[1]  # two runs: the CI is marked unreliable
    if not RAPL_READABLE:  # the estimate is labelled, with what it is estimated from
        assert "cpu_estimated_energy_per_inference_j median" in table[0] and "cpu_estimated source" in table[0]
        assert table[1].split()[-1] == "estimated"
        assert any("cpu_estimated: estimated (estimate), from TDP" in line and "MEASURE_CPU_TDP_W" in line
                   for line in lines)
    meta = json.loads((out / CONFIG / "input_8" / "run_0" / "meta.json").read_text())
    assert meta["idle"] == {"recording": None, "seconds": 0.0} and not (out / "idle").exists()  # --idle-seconds 0


def test_an_unmatched_gpu_is_said_on_the_terminal(tmp_path, monkeypatch, capsys):
    note = "the CUDA device (UUID 1234) matches no NVML device (NVML: none); no GPU energy is attributed to its runs"
    monkeypatch.setattr(sweep, "gpu_domain", lambda device, sensors: (None, note))
    plan = Plan("tiny", [8], iterations=1, runs=1, warmup=0, device="cpu")
    model = user_model(torch.nn.Identity(), lambda size, batch: torch.zeros(batch, size), name="tiny")
    cli.print_start(plan, tmp_path, sweep.prepare(plan, tmp_path), model, torch.device("cpu"), [], {})
    assert capsys.readouterr().err == f"warning: {note}\n"


@pytest.mark.skipif(RAPL_READABLE, reason="RAPL measures the CPU here: no estimate, no TDP")
def test_sensors_shows_the_tdp_in_use(monkeypatch, capsys):
    monkeypatch.setenv("MEASURE_CPU_TDP_W", "35")
    assert cli.main(["sensors"]) == 0
    assert "TDP 35 W (environment variable MEASURE_CPU_TDP_W); set MEASURE_CPU_TDP_W to this CPU's TDP in watts" \
        in capsys.readouterr().out


def test_precision_makes_runs_a_minimum(capsys):
    args = cli.build_parser().parse_args(["run", "resnet50", "--precision", "0.05", "--max-runs", "6"])
    plan, out = cli.resolve_plan(args)
    assert (plan.precision, plan.runs, plan.max_runs, out) == (0.05, 3, 6, Path("runs/resnet50"))
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--help"])
    assert "with --precision the minimum number of runs" in " ".join(capsys.readouterr().out.split())


# ---------------------------------------------------------------- --resume reads the plan

def test_resume_alone_reads_the_plan_and_checks_the_options_given(tmp_path, capsys):
    out = tmp_path / "tree"
    assert cli.main(["run", "resnet50", *TINY, "--device", "auto", "--out", str(out)]) == 0
    resolved = json.loads((out / "study.json").read_text())["plan"]["device"]
    assert resolved in ("cpu", "cuda:0")  # the device auto resolved to
    redo = out / CONFIG / "input_8" / "run_1"
    (redo / "meta.json").unlink()
    capsys.readouterr()

    assert cli.main(["run", "--resume", "--out", str(out)]) == 0  # no MODEL, no options: all from study.json
    assert any(line.endswith(": 1 runs complete, 0 failed, 1 skipped (complete before)")
               for line in capsys.readouterr().out.splitlines())
    for device in (resolved, "auto"):  # the device as recorded, or as given first
        assert cli.main(["run", "resnet50", "--resume", "--out", str(out), "--device", device]) == 0
        assert capsys.readouterr().out == f"nothing to do: the 2 runs of {out} are complete\n"

    assert cli.main(["run", "--resume", "--out", str(out), "--idle-seconds", "3", "--period", "0.5"]) == 2
    assert capsys.readouterr().err == (f"error: {out} was started with another plan (--period: 0.05 there, 0.5 now; "
                                       "--idle-seconds: 0.0 there, 3.0 now); give the same options to complete it, "
                                       "choose another --out, or pass --overwrite to start again\n")
    assert cli.main(["run", "bert", "--resume", "--out", str(out)]) == 2
    assert "(MODEL: 'resnet50' there, 'bert' now)" in capsys.readouterr().err
    assert cli.main(["run", "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "holds no study.json to --resume; give MODEL" in capsys.readouterr().err


# ---------------------------------------------------------------- every error path: one line, no traceback

@pytest.mark.skipif(RAPL_READABLE, reason="with RAPL the CPU estimate, and its TDP, are not used")
@pytest.mark.parametrize("command", [["run", "resnet50", *TINY, "--device", "cpu"], ["sensors"]])
def test_a_bad_environment_variable(command, tmp_path):
    done = python_m_measure(*command, *(["--out", str(tmp_path / "o")] if command[0] == "run" else []),
                   env={"MEASURE_CPU_TDP_W": "abc"})
    assert done.returncode == 2
    assert "CPU TDP must be a positive number of watts, got 'abc'" in one_error_line(done.stderr)
    assert not (tmp_path / "o").exists()


def test_a_failed_submission(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", "exit 0"),
                       ("sbatch", 'echo "sbatch: error: invalid partition specified: gpu" >&2; exit 1')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    out = tmp_path / "tree"
    done = python_m_measure("run", "resnet50", *TINY, "--device", "cpu", "--out", str(out), "--executor", "slurm",
                   "--slurm-partition", "gpu", env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 2  # sbatch refused the options given (README: exit status 2, sbatch's reason)
    line = one_error_line(done.stderr)
    assert line.startswith("error: sbatch refused the tasks: ") and "invalid partition specified: gpu" in line
    assert not out.exists()  # nothing holds the folder: the next attempt starts afresh


def mapped(pid: int, library: str) -> bool:
    """Whether the process has mapped a shared library whose path holds ``library`` (it is being imported)."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def printed(path: Path, text: str) -> bool:
    return text in path.read_text()


@pytest.mark.parametrize("moment", ["importing torch", "loading the model", "recording the idle power",
                                    "in a run"])
def test_an_interrupt_at_any_moment(moment, tmp_path):
    """SIGINT (Ctrl-C) when the process reaches a moment, found by watching it, not by timing it."""
    out, stdout = tmp_path / "tree", tmp_path / "stdout"
    argv = [sys.executable, "-m", "measure", "run", "resnet50", "--sizes", "8", "--iters", "100000", "--runs", "1",
            "--warmup", "0", "--idle-seconds", "600", "--device", "cpu", "--out", str(out)]
    if moment == "in a run":
        argv[argv.index("--idle-seconds") + 1] = "0"
    with open(stdout, "w") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.PIPE, text=True)
    reached = {
        "importing torch": lambda: mapped(process.pid, "libtorch"),
        "loading the model": lambda: mapped(process.pid, "torchvision"),
        "recording the idle power": lambda: printed(stdout, f"tree     {out}"),
        "in a run": lambda: (out / CONFIG / "input_8" / "run_0" / "power_metrics.json").exists(),
    }[moment]
    deadline = time.monotonic() + 300
    while not reached():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, f"{moment} never came"
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert one_error_line(stderr) == cli.INTERRUPTED
    if moment == "in a run":  # the interrupted run is left as interrupted, for --resume
        meta = json.loads((out / CONFIG / "input_8" / "run_0" / "meta.json").read_text())
        assert meta["status"] == "running" and (out / "study.json").exists()
    else:  # nothing was started: nothing holds the folder
        assert not out.exists()


def test_output_the_terminal_cannot_encode(tmp_path):
    out = tmp_path / "résumé"
    done = python_m_measure("run", "resnet50", *TINY, "--device", "cpu", "--out", str(out), env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"run tree: {tmp_path}/r\\xe9sum\\xe9" in done.stdout.splitlines()
    (tmp_path / "fichier-é").write_text("")
    done = python_m_measure("run", "resnet50", *TINY, "--device", "cpu", "--out", str(tmp_path / "fichier-é"),
                   env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 2 and "fichier-\\xe9 exists and is not a folder" in one_error_line(done.stderr)


def test_usage_errors_exit_2(tmp_path):
    done = python_m_measure("run", "resnet50", "--runs", "zero", cwd=tmp_path)
    assert done.returncode == 2 and "argument --runs: not an integer: 'zero'" in one_error_line(done.stderr)
    assert list(tmp_path.iterdir()) == []


def test_a_precision_sweep_with_the_analysis_rule(tmp_path, capsys):
    out = tmp_path / "tree"
    assert cli.main(["run", "resnet50", "--sizes", "8", "--precision", "0.9", "--max-runs", "4", "--min-window",
                     "0.05", "--warmup", "1", "--idle-seconds", "0", "--device", "cpu", "--no-progress",
                     "--out", str(out)]) == 0
    metas = [json.loads(p.read_text()) for p in sorted(out.glob(f"{CONFIG}/input_8/run_*/meta.json"))]
    assert 3 <= len(metas) <= 4 and len({m["stop_reason"] for m in metas}) == 1
    tracked = "cpu_package energy per inference (measured)" if RAPL_READABLE else "latency (no measured energy sensor)"
    assert tracked in metas[0]["stop_reason"]
    assert metas[0]["stop_reason"].startswith(("precision reached: 95 % CI of the median", "cap reached: 4 runs"))
    assert "plan     1 size(s) x 1 configuration(s) x 3 to 4 runs, until the median is known to ±90.0%" in \
        capsys.readouterr().out

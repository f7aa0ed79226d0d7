"""``python -m analysis summarize``: CSV out, one-line warnings and errors, no tracebacks."""
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from treegen import write_tree

PROJECT = Path(__file__).parents[1]
REFERENCE = Path(__file__).parents[2] / "shared" / "reference" / "aipowermeter"


@pytest.fixture
def tree(tmp_path):
    write_tree(tmp_path / "tree", input_sizes=(32, 64), runs=3,
               power_w=lambda model, size, run: {"gpu0": size + 10.0 * run, "package-0": 40.0})
    return tmp_path / "tree"


def test_summary_csv_file(tree, tmp_path, capsys):
    assert main(["summarize", str(tree), "-o", str(tmp_path / "s.csv"), "--runs-csv", str(tmp_path / "r.csv")]) == 0
    summary = pd.read_csv(tmp_path / "s.csv")
    assert summary["input_size"].tolist() == [32, 64] and summary["n_runs"].tolist() == [3, 3]
    assert summary["gpu_energy_per_inference_j_n"].tolist() == [3, 3]
    assert summary["iterations"].tolist() == [100, 100]  # a constant, as it is
    assert not [c for c in summary.columns if c.startswith(("iterations_", "warmup_", "params_", "period_s_"))]
    assert summary["gpu_energy_per_inference_j_median"].tolist() == pytest.approx([0.84, 1.48])
    assert summary["cpu_package_energy_per_inference_j_median"].tolist() == pytest.approx([0.8, 0.8])
    assert len(pd.read_csv(tmp_path / "r.csv")) == 6
    assert capsys.readouterr().out == ""


def test_summary_to_stdout(tree, capsys):
    assert main(["summarize", str(tree)]) == 0  # not a terminal: CSV
    printed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert printed["gpu_mean_power_w_median"].tolist() == pytest.approx([42.0, 74.0])


def test_long_summary(tree, capsys):
    assert main(["summarize", str(tree), "--long"]) == 0
    printed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    power = printed[(printed["domain"] == "gpu") & (printed["quantity"] == "mean_power_w")]
    assert power["median"].tolist() == pytest.approx([42.0, 74.0]) and set(power["unit"]) == {"W"}


def test_summary_on_a_terminal_is_a_table_to_read(tree, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["summarize", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "gpu_energy_per_inference_j median" in out and "measured" in out and "(n < 5)" in out
    assert "," not in out.splitlines()[0]  # not CSV


def test_warnings_are_one_line_each(tree, capsys):
    (tree / "resnet50" / "input_64" / "run_2" / "latency.csv").unlink()
    assert main(["summarize", str(tree), "-o", "/dev/null"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "run_2: no latency.csv" in err[0]


@pytest.mark.parametrize("make", ["absent", "empty folder", "empty file"])
def test_bad_tree_is_one_error_line_and_status_1(tmp_path, make):
    target = tmp_path / "t"
    if make != "absent":
        target.mkdir()
    if make == "empty file":
        (target / "power_metrics.json").write_text("")
    run = subprocess.run([sys.executable, "-m", "analysis", "summarize", str(target)], cwd=PROJECT,
                         capture_output=True, text=True)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert run.returncode == 1 and run.stdout == ""
    assert len(errors) == 1 and "Traceback" not in run.stderr


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="AIPowerMeter reference files not available")
def test_aipowermeter_copy_with_made_up_latencies(tmp_path, capsys):
    folder = tmp_path / "alexnet" / "input_224" / "run_0"
    folder.mkdir(parents=True)
    shutil.copy(REFERENCE / "example_data" / "power_metrics.json", folder)
    np.savetxt(folder / "latency.csv", np.full(250, 0.004))
    assert main(["summarize", str(tmp_path), "-o", str(tmp_path / "s.csv")]) == 0
    summary = pd.read_csv(tmp_path / "s.csv")
    assert summary[["model", "input_size", "n_runs"]].values.tolist() == [["alexnet", 224, 1]]
    assert summary.loc[0, "latency_median_s_median"] == pytest.approx(0.004)
    assert summary.loc[0, "gpu_node_energy_per_inference_j_median"] > 0
    assert summary.loc[0, "gpu_node_source"] == "measured"
    assert capsys.readouterr().err == ""

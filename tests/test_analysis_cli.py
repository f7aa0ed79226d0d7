"""``python -m analysis summarize|compare|export``: CSV, parquet and tables to read out, one-line warnings and
errors, no tracebacks."""
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import load_study, summarize
from analysis.__main__ import main
from treegen import write_run, write_tree

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


# several trees: summarize by label, compare, export

@pytest.fixture
def two_trees(tmp_path):
    """fp32 and bf16 trees of three runs; bf16's GPU energy is 0.70 x fp32's, run for run in another order."""
    noise = [1.0, 1.02, 0.97]
    for k in range(3):
        write_run(tmp_path / "fp32", run=k, power_w={"gpu0": 100.0 * noise[k]})
        write_run(tmp_path / "bf16", run=k, dtype="bf16", power_w={"gpu0": 70.0 * noise[2 - k]})
    return tmp_path


def test_summarize_by_label(two_trees, capsys):
    assert main(["summarize", str(two_trees), "--by", "label", "--long"]) == 0
    printed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    energy = printed[(printed["domain"] == "gpu") & (printed["quantity"] == "energy_per_inference_j")]
    assert energy[["label", "n", "median"]].values.tolist() == [["bf16", 3, 1.4], ["fp32", 3, 2.0]]


def test_compare_on_a_terminal_is_a_table_grouped_by_point(two_trees, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["compare", str(two_trees / "fp32"), str(two_trees / "bf16")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["configuration", "baseline", "domain", "quantity", "runs", "median", "baseline",
                                "median", "ratio", "95%", "CI", "of", "ratio", "verdict", "source", "hardware"]
    assert lines[1] == "model=resnet50, input_size=64"
    gpu = next(line for line in lines if " gpu " in line and "energy_per_inference_j" in line)
    assert gpu.split()[:9] == ["dtype=bf16", "dtype=fp32", "gpu", "energy_per_inference_j", "3", "vs", "3", "1.4",
                               "J"]
    assert " 0.7  [" in gpu and "(n < 5)  lower  " in gpu and gpu.endswith("measured  Synthetic GPU")
    header_at = lines[0].index("verdict")
    assert all(line[header_at:].startswith(("lower", "no difference shown")) for line in lines[2:])  # aligned


def test_compare_piped_is_the_long_csv(two_trees, capsys):
    assert main(["compare", str(two_trees), "--baseline", "fp32"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns) == ["model", "input_size", "configuration", "baseline", "domain", "quantity", "n",
                                   "n_baseline", "median", "median_baseline", "ratio", "ci_low", "ci_high",
                                   "ci_reliable", "paired", "verdict", "source", "hardware", "unit"]
    gpu = table[(table["domain"] == "gpu") & (table["quantity"] == "energy_per_inference_j")].iloc[0]
    assert gpu["ratio"] == pytest.approx(0.7) and gpu["verdict"] == "lower" and not gpu["ci_reliable"]


def test_compare_to_a_file_against_dimension_values_and_labels(two_trees, tmp_path, capsys):
    out = tmp_path / "cmp.csv"
    assert main(["compare", str(two_trees / "fp32"), str(two_trees / "bf16"), "--labels", "a", "b",
                 "--baseline", "dtype=bf16", "-o", str(out)]) == 0
    table = pd.read_csv(out)
    gpu = table[(table["domain"] == "gpu") & (table["quantity"] == "energy_per_inference_j")].iloc[0]
    assert (gpu["configuration"], gpu["baseline"], gpu["verdict"]) == ("dtype=fp32", "dtype=bf16", "higher")
    assert gpu["ratio"] == pytest.approx(1 / 0.7)
    assert capsys.readouterr().out == ""
    assert main(["compare", str(two_trees / "fp32"), str(two_trees / "bf16"), "--labels", "a", "b",
                 "--baseline", "a", "--by", "label", "--unpaired", "-o", str(out)]) == 0
    assert set(pd.read_csv(out)["configuration"]) == {"label=b"}


@pytest.mark.parametrize("arguments, message", [
    (["compare", "{tree}", "--baseline", "fp16"], "unknown baseline label=fp16: label takes bf16, fp32"),
    (["compare", "{tree}", "--baseline", "dtype=fp16"], "unknown baseline dtype=fp16"),
    (["compare", "{tree}", "--by", "colour"], "unknown dimension colour (dimensions: label, model"),
    (["summarize", "{tree}", "--by", "colour"], "cannot group by colour"),
    (["compare", "{tree}/fp32", "{tree}/bf16", "--labels", "a"], "1 labels for 2 trees"),
    (["compare", "{tree}/fp32/input_64"], "nothing to compare"),
    (["compare", "{tree}/fp32/idle"], "idle: no usable run folder"),
    (["compare", "{tree}", "-o", "{tree}/absent/cmp.csv"], "Cannot save file into a non-existent directory"),
    (["export", "{tree}", "-o", "{tree}/fp32/study.json"], "study.json: File exists"),
])
def test_compare_and_export_failures_are_one_error_line(two_trees, capsys, arguments, message):
    (two_trees / "fp32" / "idle").mkdir()
    assert main([a.format(tree=two_trees) for a in arguments]) == 1
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 1 and captured.err.startswith("error: ")
    assert message in captured.err and captured.out == ""


def test_parquet_without_pyarrow_says_to_install_it(two_trees, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    assert main(["export", str(two_trees), "--format", "parquet", "-o", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == "error: parquet needs pyarrow: pip install 'pyarrow>=14'\n"
    assert not (tmp_path / "out").exists()


def test_a_failing_compare_prints_no_traceback(two_trees):
    run = subprocess.run([sys.executable, "-m", "analysis", "compare", str(two_trees), "--within", "colour"],
                         cwd=PROJECT, capture_output=True, text=True)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith("error: unknown dimension colour") and "Traceback" not in run.stderr


def test_export_csv_writes_the_tidy_tables(two_trees, tmp_path, capsys):
    out = tmp_path / "tables"
    assert main(["export", str(two_trees), "-o", str(out)]) == 0
    names = ["runs.csv", "quantities.csv", "summary.csv"]
    assert capsys.readouterr().out.splitlines() == [str(out / n) for n in names]
    runs, quantities, summary = (pd.read_csv(out / n) for n in names)
    assert len(runs) == 6 and {"label", "window_s", "hardware_gpu", "order"} <= set(runs.columns)
    assert {"value", "unit", "source", "method"} <= set(quantities.columns)
    energy = summary[(summary["domain"] == "gpu") & (summary["quantity"] == "energy_per_inference_j")]
    assert energy[["label", "median", "unit", "source"]].values.tolist() == [
        ["bf16", 1.4, "J", "measured"], ["fp32", 2.0, "J", "measured"]]


def test_export_parquet_reads_back_equal(two_trees, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    out = tmp_path / "tables"
    assert main(["export", str(two_trees), "--format", "parquet", "-o", str(out), "--by", "dtype"]) == 0
    study = load_study(two_trees)
    for name, table in [("runs", study.runs), ("quantities", study.quantities),
                        ("summary", summarize(study, by=["dtype"]))]:
        back = pd.read_parquet(out / f"{name}.parquet")
        pd.testing.assert_frame_equal(back, table)
    assert isinstance(back["source"].dtype, pd.CategoricalDtype)

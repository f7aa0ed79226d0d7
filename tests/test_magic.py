"""``%%energy`` (``measure.magic``): in a real Jupyter kernel, and its argument errors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from IPython.core.error import UsageError
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from measure import runtree
from measure.magic import EnergyMagics

ROOT = Path(__file__).resolve().parent.parent
INFERENCES = 20

SETUP = """\
import json, signal, threading
import torch
import measure
from measure import runtree
net = torch.nn.Linear(64, 64)
x = torch.randn(8, 64)
alarm_handler = signal.getsignal(signal.SIGALRM)"""

MEASURED = f"""\
%%energy tiny linear --inferences {INFERENCES} --save measured
with torch.inference_mode():
    for _ in range({INFERENCES}):
        net(x)"""

INTERRUPTED = """\
%%energy interrupted --save interrupted --name never
import os, time
os.kill(os.getpid(), signal.SIGINT)  # what the notebook's interrupt button sends the kernel
time.sleep(60)"""

STATE = """\
print(json.dumps({
    "measure": measure.__file__,
    "energy": _energy.energy[["domain", "source", "energy_j", "energy_per_inference_j"]].values.tolist(),
    "activity": sorted(set(_energy.activity["domain"])),
    "ticks": runtree.read_meta("measured").window["ticks"],
    "interrupted": [runtree.read_meta("interrupted").status, runtree.read_meta("interrupted").reason],
    "never_set": "never" not in globals(),
    "alarm_handler_restored": signal.getsignal(signal.SIGALRM) is alarm_handler,
    "timer": list(signal.getitimer(signal.ITIMER_REAL)),
    "recorder_threads": [t.name for t in threading.enumerate() if t.name == "power-recorder"],
    "after": [runtree.read_meta("after").status, after.energy["source"].tolist()],
}))"""


def outputs_of(cell) -> dict:
    """A cell's outputs by kind: its display (``text/plain``, ``text/html``), its stdout, its error."""
    found = {}
    for output in cell.outputs:
        if output.output_type == "display_data":
            found.update(output.data)
        elif output.output_type == "stream":
            found[output.name] = found.get(output.name, "") + output.text
        elif output.output_type == "error":
            found["error"] = (output.ename, output.evalue)
    return found


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook, executed top to bottom in a fresh kernel that imports this checkout."""
    folder = tmp_path_factory.mktemp("notebook")
    cells = [new_code_cell("%load_ext measure"), new_code_cell(SETUP), new_code_cell(MEASURED),
             new_code_cell(INTERRUPTED, metadata={"tags": ["raises-exception"]}),
             new_code_cell("%%energy --inferences many\nnet(x)", metadata={"tags": ["raises-exception"]}),
             new_code_cell("%%energy after --save after --name after\nnet(x)"),
             new_code_cell("%%energy --save /proc/measure-window\nnet(x)", metadata={"tags": ["raises-exception"]}),
             new_code_cell('%%energy quoted --save "my runs/quoted" --name quoted\nnet(x)'),
             new_code_cell(STATE)]
    notebook = new_notebook(cells=cells)
    client = NotebookClient(notebook, timeout=600, startup_timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    client.execute(env={**os.environ, "PYTHONPATH": str(ROOT)})
    nbformat.validate(notebook)
    return notebook, json.loads(outputs_of(notebook.cells[-1])["stdout"]), folder


def test_the_kernel_runs_this_checkout(executed):
    _, state, _ = executed
    assert Path(state["measure"]).resolve() == ROOT / "measure" / "__init__.py"


def test_the_cell_output_shows_each_energy_with_its_source(executed):
    notebook, state, folder = executed
    shown = outputs_of(notebook.cells[2])
    text, page = shown["text/plain"], shown["text/html"]
    assert text.splitlines()[0].startswith(f"tiny linear: ") and f"{INFERENCES} inferences on cpu" in text
    assert state["energy"], "no energy domain reported"
    for domain, source, energy_j, per_inference_j in state["energy"]:
        assert source in ("measured", "estimated")
        line = next(line for line in text.splitlines() if line.split()[:1] == [domain])
        assert source in line.split()
        assert f"<td>{domain}</td>" in page and f"<td>{source}</td>" in page
        assert energy_j > 0 and per_inference_j == pytest.approx(energy_j / INFERENCES)
    if any(source == "estimated" for _, source, _, _ in state["energy"]):
        assert "MEASURE_CPU_TDP_W" in text and "MEASURE_CPU_TDP_W" in page
    assert "process" in state["activity"]
    assert (folder / "measured" / "meta.json").exists()


def test_signal_ticks_run_in_the_kernels_main_thread(executed):
    _, state, _ = executed
    assert state["ticks"] == "signal"


def test_an_interrupted_cell_leaves_no_recorder_armed_and_its_folder_failed(executed):
    notebook, state, _ = executed
    assert outputs_of(notebook.cells[3])["error"][0] == "KeyboardInterrupt"
    assert state["interrupted"] == ["failed", "KeyboardInterrupt"]
    assert state["never_set"]  # an interrupted cell stores no report
    assert state["alarm_handler_restored"] and state["timer"] == [0.0, 0.0] and state["recorder_threads"] == []
    assert state["after"][0] == "complete" and state["after"][1]  # the next window ran at once


def test_an_argument_error_in_the_kernel_is_one_line(executed):
    notebook, _, _ = executed
    shown = outputs_of(notebook.cells[4])
    assert shown == {"stderr": "UsageError: argument -n/--inferences: invalid int value: 'many'\n"}


def test_a_save_folder_that_cannot_be_created_is_one_line_and_quotes_are_the_shells(executed):
    notebook, _, folder = executed
    error = outputs_of(notebook.cells[6])
    assert list(error) == ["stderr"] and error["stderr"].count("\n") == 1
    assert error["stderr"].startswith("UsageError: cannot create output folder /proc/measure-window: ")
    assert runtree.read_meta(folder / "my runs" / "quoted").identity["model"] == "quoted"


@pytest.mark.parametrize("line, message", [
    ("--inferences x", "argument -n/--inferences: invalid int value: 'x'"),
    ("--inferences 0", "inferences must be a positive integer, got 0"),
    ("--period -1", "the sampling period must be a finite positive number of seconds, got -1.0"),
    ("--device tpu", "unknown device 'tpu'; use cpu, cuda, cuda:<i> or auto"),
    ("--name 2x", "--name must be a Python name, got '2x'"),
    ("--name class", "--name must be a Python name, got 'class'"),
    ("--bogus", "unrecognized arguments: --bogus"),
    ("--period inf", "the sampling period must be a finite positive number of seconds, got inf"),
    ('--save "runs/unclosed', "cannot split the options: No closing quotation"),
])
def test_argument_errors_are_one_line_usage_errors(line, message):
    with pytest.raises(UsageError) as error:
        EnergyMagics(shell=None).energy(line, "pass")  # refused before the cell or the shell is touched
    assert str(error.value) == message


def test_a_save_folder_that_is_not_a_window_is_refused(tmp_path):
    (tmp_path / "data.csv").write_text("x\n")
    with pytest.raises(UsageError, match=r"^save folder .* is not empty and holds no earlier window; choose another"):
        EnergyMagics(shell=None).energy(f"--save {tmp_path}", "pass")

"""The measuring window around any code (``measure.window``): what it records, what it reports, interruptions."""
from __future__ import annotations

import importlib.metadata
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

import measure
from analysis import AnalysisWarning, load_study
from measure import runtree
from measure.window import LATENCIES_NOTE, Measurement, window
from treegen import write_run

ROOT = Path(__file__).resolve().parent.parent
INFERENCES = 30


def tiny_work(inferences: int = INFERENCES) -> None:
    net = torch.nn.Linear(64, 64)
    x = torch.randn(8, 64)
    with torch.inference_mode():
        for _ in range(inferences):
            net(x)


def recorder_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "power-recorder"]


def cpu_domain(w: Measurement) -> tuple[str, str]:
    """The CPU's energy domain this machine gives, and its source: RAPL's package, else the estimate."""
    if any(name.startswith("package-") for name in w.sensors):
        return "cpu_package", "measured"
    return "cpu_estimated", "estimated"


def test_a_window_reports_each_energy_with_its_source_and_saves_a_run_the_analysis_reads(tmp_path):
    with measure.window("tiny linear", inferences=INFERENCES, save=tmp_path / "w") as w:
        tiny_work()

    assert w.status == runtree.COMPLETE and w.reason is None
    assert w.duration_s > 0 and w.window.samples >= 2
    energy = w.result.energy.set_index("domain")
    domain, source = cpu_domain(w)
    row = energy.loc[domain]
    assert row["source"] == source
    assert row["energy_j"] > 0 and math.isfinite(row["energy_j"])
    assert row["energy_per_inference_j"] == pytest.approx(row["energy_j"] / INFERENCES)
    assert row["mean_power_w"] == pytest.approx(row["energy_j"] / w.duration_s, rel=1e-3)  # t_s: to the µs
    assert row["hardware"]
    assert set(energy["source"]) <= {"measured", "estimated"}
    # the process tree is sampled, and its activity reported beside the energies (it has no energy of its own)
    assert w.sensors["process"]["source"] == "measured"
    assert "process" in set(w.result.activity["domain"])
    assert "process" not in energy.index
    if source == "estimated":
        assert any("MEASURE_CPU_TDP_W" in note and f"TDP {w.sensors[domain]['tdp_w']:g} W" in note
                   for note in w.result.notes)
    assert not any(runtree.LATENCY_FILE in note for note in w.result.notes)  # a window never times each inference

    folder = tmp_path / "w"
    assert w.folder == folder and w.result.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == [runtree.META_FILE, runtree.SAMPLES_FILE]
    meta = runtree.read_meta(folder)
    assert (meta.status, meta.iterations, meta.get("latencies")) == (runtree.COMPLETE, INFERENCES, LATENCIES_NOTE)
    assert dict(meta.identity) == {"model": "tiny linear", "task": "custom", "input_size": None,
                                   "threads": torch.get_num_threads(), "device": "cpu"}
    assert meta.window["duration_s"] == w.duration_s and meta.sensors == w.sensors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)  # no latency.csv; other work on a loaded machine
        study = load_study(folder)
    assert study.runs[["model", "task", "iterations", "status"]].values.tolist() == \
        [["tiny linear", "custom", INFERENCES, "complete"]]
    again = study.select("energy_j", domain)
    assert again["value"].tolist() == [row["energy_j"]] and again["source"].tolist() == [source]


def test_a_window_without_inferences_lives_in_a_temporary_folder(tmp_path):
    with measure.window("no count") as w:
        folder = w.folder
        assert (folder / runtree.META_FILE).exists() and runtree.read_status(folder) == runtree.RUNNING
        tiny_work(5)

    assert not folder.exists() and w.folder is None and w.result.folder is None
    energy = w.result.energy.set_index("domain")
    domain, _ = cpu_domain(w)
    assert energy.loc[domain, "energy_j"] > 0
    assert math.isnan(energy.loc[domain, "energy_per_inference_j"])  # unknown, never 0
    assert "energy_per_inference_j" not in w.result.shown().columns
    assert w.synchronized == ("every CUDA device with a context of this process" if torch.cuda.is_available()
                              else "none (no CUDA device)")


def test_the_core_window_records_and_computes_nothing(tmp_path):
    with window("core", save=tmp_path / "w") as w:
        tiny_work(3)
    assert w.status == runtree.COMPLETE and w.result is None
    assert runtree.read_meta(tmp_path / "w").iterations is None  # a custom run may leave them unknown


def test_a_report_function_passed_in_sees_the_complete_folder(tmp_path):
    seen = []

    def report(m: Measurement) -> str:
        seen.append((m.status, runtree.read_status(m.folder), (m.folder / runtree.SAMPLES_FILE).exists()))
        return "reported"

    with window("reported", report=report) as w:
        pass
    assert seen == [(runtree.COMPLETE, runtree.COMPLETE, True)] and w.result == "reported"


def test_keyboard_interrupt_ends_the_window_and_marks_the_saved_folder_failed(tmp_path):
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(KeyboardInterrupt):
        with measure.window("interrupted", inferences=10, save=tmp_path / "w") as w:
            tiny_work(3)
            signal.raise_signal(signal.SIGINT)  # what Jupyter's interrupt sends the kernel
            time.sleep(60)

    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert recorder_threads() == []
    assert (w.status, w.reason, w.result) == (runtree.FAILED, "KeyboardInterrupt", None)
    meta = runtree.read_meta(tmp_path / "w")
    assert (meta.status, meta.reason) == (runtree.FAILED, "KeyboardInterrupt")
    assert meta.window["duration_s"] == w.duration_s > 0
    assert not list((tmp_path / "w").glob(".*.tmp"))

    # the next window starts at once, with the same tick source as the first, into the same folder
    with measure.window("after", save=tmp_path / "w") as after:
        tiny_work(3)
    assert after.status == runtree.COMPLETE and after.window.ticks == w.window.ticks
    assert runtree.read_meta(tmp_path / "w").status == runtree.COMPLETE


def test_an_interrupted_window_in_a_temporary_folder_leaves_nothing():
    with pytest.raises(KeyboardInterrupt):
        with window("gone") as w:
            folder = w.folder
            raise KeyboardInterrupt
    assert not folder.exists() and w.folder is None and w.status == runtree.FAILED


def test_thread_ticks_are_stopped_by_an_interrupt_too(tmp_path):
    """Outside the main thread the signal cannot be used: the recorder's thread ticks, and is joined."""
    outcome = {}

    def measure_in_a_thread():
        try:
            with window("threaded", save=tmp_path / "w", period_s=0.01) as w:
                outcome["measurement"] = w
                outcome["threads"] = recorder_threads()
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            outcome["raised"] = True

    worker = threading.Thread(target=measure_in_a_thread)
    worker.start()
    worker.join()
    w = outcome["measurement"]
    assert outcome["raised"] and outcome["threads"] == ["power-recorder"]
    assert w.window.ticks == "thread (signal refused: not in the main thread)"
    assert recorder_threads() == []
    assert runtree.read_meta(tmp_path / "w").status == runtree.FAILED


def test_an_error_in_the_block_is_the_failure_reason(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with window("broken", save=tmp_path / "w"):
            1 / 0
    assert runtree.read_meta(tmp_path / "w").reason == "ZeroDivisionError: division by zero"


@pytest.mark.parametrize("options, message", [
    ({"label": " "}, "the label must be a non-empty string"),
    ({"inferences": 0}, "inferences must be a positive integer, got 0"),
    ({"inferences": 2.5}, "inferences must be a positive integer"),
    ({"period_s": 0}, "the sampling period must be a finite positive number of seconds"),
    ({"period_s": math.inf}, "the sampling period must be a finite positive number of seconds, got inf"),
    ({"device": "cuda:7"}, "device 'cuda:7' asked for, but"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
])
def test_bad_arguments_are_refused_in_one_line_before_anything_opens(tmp_path, options, message):
    options = {"label": "x", "save": tmp_path / "w", **options}
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        window(options.pop("label"), **options)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "w").exists()


def test_save_refuses_a_folder_holding_anything_but_an_earlier_window(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty and holds no earlier window"):
        window("x", save=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    swept = write_run(tmp_path / "sweep", identity={"task": "custom"})  # a sweep's run of the user's own model
    with pytest.raises(ValueError, match="is not empty and holds no earlier window"):
        window("x", save=swept)


def test_save_refuses_a_file_and_says_in_one_line_a_folder_it_cannot_create(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ValueError, match="^output path .*file exists and is not a folder$"):
        window("x", save=tmp_path / "file")

    def refused(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refused)
    measuring = window("x", save=tmp_path / "new")  # its ancestors allow it: refused only when created
    with pytest.raises(runtree.RunTreeError, match=r"^cannot create output folder .*new: Permission denied$"):
        with measuring:
            pass
    assert recorder_threads() == [] and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_window_too_short_for_a_counter_gives_no_zero_and_says_why_once():
    with measure.window("empty") as w:
        pass
    energy = w.result.energy
    assert not (energy["energy_j"] == 0).any()  # a figure or NaN, never 0 J
    unresolved = energy[energy["method"].str.contains("did not resolve") | energy["energy_j"].isna()]
    assert unresolved["note"].notna().all()
    for note in unresolved["note"]:
        assert not any(note in line for line in w.result.notes)  # in the table beside its figure, not again


def test_the_edges_synchronise_every_cuda_device_holding_a_context_or_the_one_given(monkeypatch):
    from measure.window import _edges

    synchronised = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch._C, "_cuda_hasPrimaryContext", lambda index: index != 1, raising=False)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronised.append(device))

    sync, said = _edges(torch.device("cuda", 0), every_device=True)
    sync()
    assert synchronised == [0, 2] and said == "every CUDA device with a context of this process"
    synchronised.clear()
    sync, said = _edges(torch.device("cuda", 1), every_device=False)
    sync()
    assert synchronised == [torch.device("cuda", 1)] and said == "cuda:1"
    synchronised.clear()
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # no CUDA work in this process yet
    _edges(torch.device("cuda", 0), every_device=True)[0]()
    assert synchronised == []


def test_importing_the_package_loads_neither_torch_nor_the_analysis():
    code = ("import sys, measure, measure.runtree; "
            "print(sorted(m for m in ('torch', 'analysis', 'IPython', 'measure.magic') if m in sys.modules)); "
            "print(measure.window.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.split("\n")
    assert out[:2] == ["[]", "measure"]  # and measure.window is the function reporting energies


def test_a_window_loads_neither_torchvision_nor_transformers_and_records_their_versions(tmp_path):
    code = ("import sys, measure; from measure import runtree\n"
            f"with measure.window('x', save={str(tmp_path / 'w')!r}):\n    pass\n"
            "print(sorted(m for m in ('torchvision', 'transformers') if m in sys.modules))\n"
            f"print(runtree.read_meta({str(tmp_path / 'w')!r}).host['transformers'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.split("\n")
    assert out[0] == "[]"  # their import takes seconds, and memory the window's process figures would count
    assert out[1] == importlib.metadata.version("transformers")

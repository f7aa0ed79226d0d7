"""AIPowerMeter's files (the seed study's tool), checked against an independent reading of them.

The independent reading follows what AIPowerMeter's code (``deep_learning_power_measure``) writes:
- a line's ``date`` is ``datetime.now()`` when the line is saved (``parsers.JsonParser.save_power_metrics``),
  after the sampling interval;
- RAPL powers (``intel_power``, ``total_dram_power``, ``psys_power``, ``total_cpu_power``, ``uncore_power``) are
  ``RAPLDifference.average_power``: the energy counted between two RAPL samples taken around the sampling
  sleep, over its duration (``rapl_power.get_diff_power_draw``), and the NVML release's GPU powers
  (``nvidia_power``, ``per_gpu_nvidia_power``) are ``(s2 - s1) / (t2 - t1)`` of the energy counter
  (``gpu_power.get_diff_gpu_sample``): means over the interval that ends at the line, which the next
  sampling interval follows; so each stands for the time since the previous line, and a recording's
  first line for one sampling period (the file's median interval, the lower one);
- nvidia-smi's ``power_draw`` (``nvidia_draw_absolute``, ``per_gpu_power_draw``) is read once per line: a
  point reading, integrated with trapezoids.
The synthetic files under ``tests/fixtures/aipowermeter`` (the 2021 CPU-only release, the 2023 nvidia-smi
release with two GPUs and two recordings, the 2026 NVML release) always run; the published reference files
run where ``../shared`` holds them.
"""
import json
import re
import shutil
import statistics
import subprocess
import sys
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import AnalysisWarning, load_study, summarize
from analysis.__main__ import main
from treegen import write_run

PROJECT = Path(__file__).parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "aipowermeter"
CPU_2021 = FIXTURES / "resnet" / "input_32" / "run_0"  # RAPL only, 5 lines 2 s apart
SMI_2023 = FIXTURES / "alexnet" / "input_224" / "run_0"  # two GPUs (the process on GPU 1), two recordings
NVML_2026 = FIXTURES / "bert" / "input_50" / "run_0"  # GPU powers from NVML's energy counter
REFERENCE = Path(__file__).parents[2] / "shared" / "reference" / "aipowermeter"
REFERENCE_FILES = ["example_data", "example_data/test", "example_data/train", "measure_power"]
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason="AIPowerMeter reference files not available")
MIB = 2**20
# AIPowerMeter key (under metrics) -> our domain, and whether it is a mean over the interval ending at the line
CHANNELS = {("cpu", "intel_power"): ("cpu_package", True), ("cpu", "total_dram_power"): ("dram", True),
            ("cpu", "psys_power"): ("psys", True), ("cpu", "total_cpu_power"): ("cpu_core", True),
            ("gpu", "nvidia_draw_absolute"): ("gpu_node", False), ("gpu", "per_gpu_power_draw", "0"): ("gpu0", False),
            ("gpu", "per_gpu_power_draw", "1"): ("gpu1", False), ("gpu", "nvidia_power"): ("gpu_node", True),
            ("gpu", "per_gpu_nvidia_power", "0"): ("gpu0", True), ("gpu", "per_gpu_nvidia_power", "1"): ("gpu1", True)}


def recordings(path: Path) -> list[list[tuple[datetime, dict]]]:
    """The recordings of a ``power_metrics.json``: lists of (date, metrics), split at END OF RECORDING SEGMENT."""
    found = [[]]
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record == "END OF RECORDING SEGMENT":
            found.append([])
        else:
            found[-1].append((datetime.fromisoformat(record["date"]), record["metrics"]))
    return [r for r in found if r]


def expected_energy(path: Path, *keys: str) -> tuple[float, float]:
    """AIPowerMeter's reading under ``metrics[keys...]`` integrated as what it is: ``(joules, seconds covered)``."""
    interval_mean = CHANNELS[keys][1]
    found = recordings(path)
    steps = [(b[0] - a[0]).total_seconds() for r in found for a, b in zip(r, r[1:])]
    period = statistics.median_low([s for s in steps if s > 0])
    joules = seconds = 0.0
    for recording in found:
        times = [(date - found[0][0][0]).total_seconds() for date, _ in recording]
        watts = []
        for _, metrics in recording:
            value = metrics
            for key in keys:
                value = value[key]
            watts.append(value)
        if interval_mean:  # each value over the interval before its line; the first over one period
            joules += watts[0] * period + sum(w * (t1 - t0) for w, t0, t1 in zip(watts[1:], times, times[1:]))
            seconds += period + times[-1] - times[0]
        else:
            joules += sum((t1 - t0) * (w0 + w1) / 2 for t0, t1, w0, w1 in zip(times, times[1:], watts, watts[1:]))
            seconds += times[-1] - times[0]
    return joules, seconds


def present_keys(path: Path) -> list[tuple[str, ...]]:
    """The power keys of ``CHANNELS`` every line of ``path`` holds (psys where the machine has it)."""
    lines = [m for r in recordings(path) for _, m in r]

    def holds(metrics, keys):
        for key in keys:
            if not isinstance(metrics, dict) or key not in metrics:
                return False
            metrics = metrics[key]
        return metrics != -1

    return [keys for keys in CHANNELS if all(holds(m, keys) for m in lines)]


def place(tmp_path, source, *parts, latencies=None):
    """Copy the ``power_metrics.json`` of ``source`` (a folder or a file) to ``tmp_path/parts/``."""
    folder = tmp_path.joinpath(*parts)
    folder.mkdir(parents=True)
    shutil.copy(source / "power_metrics.json" if source.is_dir() else source, folder / "power_metrics.json")
    if latencies is not None:
        np.savetxt(folder / "latency.csv", np.asarray(latencies))
    return folder


def lines_of(source):
    return (source / "power_metrics.json").read_text().splitlines()


def write_lines(tmp_path, lines, *parts):
    folder = tmp_path.joinpath(*(parts or ("m", "input_1", "run_0")))
    folder.mkdir(parents=True)
    (folder / "power_metrics.json").write_text("".join(line + "\n" for line in lines))
    return folder


def load_warned(root, *expected, **options):
    """Load ``root``; every regex of ``expected`` must match one of the AnalysisWarnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load_study(root, **options)
    messages = [str(w.message) for w in caught if issubclass(w.category, AnalysisWarning)]
    for pattern in expected:
        assert any(re.search(pattern, m) for m in messages), (pattern, messages)
    return study


def figures(study, domain, run_id=0):
    """One run's figures of ``domain``: ``{quantity: value}``, with its energy's ``source``, ``method``, ``note``."""
    rows = study.quantities[(study.quantities["domain"] == domain) & (study.quantities["run_id"] == run_id)]
    out = dict(zip(rows["quantity"], rows["value"]))
    energy = rows[rows["quantity"] == "energy_j"]
    if len(energy):
        out.update(energy.iloc[0][["source", "method", "note"]].to_dict())
    return out


def energy_domains(study, run_id=0):
    rows = study.select("energy_j")
    return sorted(rows.loc[rows["run_id"] == run_id, "domain"].astype(str))


def line(date: str, watts: float, gpu: float | None = None) -> str:
    metrics = {"cpu": {"per_process_mem_use_abs": {"7": 1048576}, "intel_power": watts}}
    if gpu is not None:
        metrics["gpu"] = {"nvidia_draw_absolute": gpu, "per_gpu_power_draw": {"0": gpu}}
    return json.dumps({"date": date, "metrics": metrics})


# ---------------------------------------------------------------- the three releases

def test_the_2021_release_rapl_values_are_means_over_the_interval_before_each_line():
    study = load_study(FIXTURES / "resnet")
    run = study.runs.iloc[0]
    assert (run["model"], run["input_size"], run["run"], run["iterations"]) == ("resnet", 32, 0, 10)
    assert run["window_s"] == pytest.approx(10.0)  # 8 s from the first line to the last, and the 2 s before it
    # 30, 32, 34, 36 and 38 W, each over the 2 s before its line: 340 J (trapezoids of points said 272 J)
    package = figures(study, "cpu_package")
    assert (package["energy_j"], package["method"], package["source"]) == (pytest.approx(340.0), "interval_mean",
                                                                            "measured")
    assert package["energy_per_inference_j"] == pytest.approx(34.0) and package["mean_power_w"] == pytest.approx(34.0)
    assert figures(study, "psys")["energy_j"] == pytest.approx(340.0 + 14.0 * 10)  # its own domain, never added
    assert figures(study, "cpu_core")["energy_j"] == pytest.approx(340.0 - 3.0 * 10)
    assert figures(study, "cpu_uncore")["energy_j"] == pytest.approx(0.5 * 10)  # written as [0.5]
    assert energy_domains(study) == ["cpu_core", "cpu_package", "cpu_uncore", "psys"]
    process = figures(study, "process")
    assert (process["pss_peak_mib"], process["uss_peak_mib"]) == (pytest.approx(44.0), pytest.approx(22.0))
    assert process["cpu_busy_share_mean"] == pytest.approx(0.99)
    units = study.quantities.drop_duplicates("quantity").set_index("quantity")["unit"]
    assert units["cpu_busy_share_mean"] == "fraction of busy CPU time" and units["pss_peak_mib"] == "MiB"


def test_the_2023_release_gpu_of_the_process_two_recordings_and_point_readings():
    study = load_study(FIXTURES / "alexnet")
    run = study.runs.iloc[0]
    assert run["gpu_domain"] == "gpu1"  # the only GPU holding the process's memory
    assert energy_domains(study) == ["cpu_package", "dram", "gpu", "gpu0", "gpu_node"]  # no psys (-1)
    # RAPL, means over the interval before each line; the first line of each recording over one period (0.5 s):
    # 60*0.5 + 62*0.5 + 64*0.6 + 66*0.5, then 70 W over 3 * 0.5 s
    package = figures(study, "cpu_package")
    assert package["energy_j"] == pytest.approx(132.4 + 105.0) and package["method"] == "interval_mean"
    assert figures(study, "dram")["energy_j"] == pytest.approx(12.0 * 3.6)
    assert run["window_s"] == pytest.approx(3.6) and package["mean_power_w"] == pytest.approx(237.4 / 3.6)
    # nvidia-smi's point readings: trapezoids within each recording, never across the pause between them
    gpu = figures(study, "gpu")
    assert (gpu["energy_j"], gpu["method"]) == (pytest.approx(184.0 + 90.0), "trapezoid")
    assert gpu["mean_power_w"] == pytest.approx(274.0 / 2.6)  # over the 1.6 s + 1.0 s its readings span
    assert figures(study, "gpu0")["energy_j"] == pytest.approx(20.0 * 2.6)
    assert figures(study, "gpu_node")["energy_j"] == pytest.approx(274.0 + 52.0)
    assert gpu["energy_per_inference_j"] == pytest.approx(274.0 / 20)
    assert gpu["proc_mem_peak_mib"] == pytest.approx(1821376512 / MIB) and gpu["proc_sm_util_mean_pct"] == 40.0
    assert figures(study, "gpu0")["proc_mem_peak_mib"] == 0.0


def test_the_2026_release_nvml_powers_are_interval_means():
    study = load_study(FIXTURES / "bert")
    run = study.runs.iloc[0]
    assert run["iterations"] == 12  # latency.json
    assert run["gpu_domain"] is None  # no per-process GPU memory in this release: no GPU is guessed
    assert energy_domains(study) == ["cpu_core", "cpu_package", "dram", "gpu0", "gpu1", "gpu_node"]
    gpu0 = figures(study, "gpu0")
    assert (gpu0["energy_j"], gpu0["method"]) == (pytest.approx(150.0 + 160.0 + 170.0 + 180.0), "interval_mean")
    assert figures(study, "gpu_node")["energy_j"] == pytest.approx(660.0 + 4 * 40.0)
    assert gpu0["sm_util_mean_pct"] == 80.0 and gpu0["mem_used_peak_mib"] == pytest.approx(2048.0)
    assert figures(study, "cpu_package")["energy_j"] == pytest.approx(50.0 * 4)


@pytest.mark.parametrize("source", [CPU_2021, SMI_2023, NVML_2026], ids=["2021", "2023", "2026"])
def test_fixtures_agree_with_the_independent_reading(tmp_path, source):
    check_against_independent_reading(tmp_path, source / "power_metrics.json")


@needs_reference
@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_reference_files_agree_with_the_independent_reading(tmp_path, name):
    check_against_independent_reading(tmp_path, REFERENCE / name / "power_metrics.json")


def check_against_independent_reading(tmp_path, path):
    place(tmp_path, path, "m", "input_1", "run_0", latencies=np.full(100, 0.01))
    study = load_study(tmp_path / "m")
    keys = present_keys(path)
    assert keys
    gpu = study.runs.loc[0, "gpu_domain"]
    for key in keys:
        domain, interval_mean = CHANNELS[key]
        joules, seconds = expected_energy(path, *key)
        got = figures(study, "gpu" if domain == gpu else domain)
        assert got["energy_j"] == pytest.approx(joules, rel=1e-9), key
        assert got["mean_power_w"] == pytest.approx(joules / seconds, rel=1e-9), key
        assert (got["method"], got["source"], got["gap_samples"]) == (
            "interval_mean" if interval_mean else "trapezoid", "measured", 0)


# ---------------------------------------------------------------- timestamps

def test_a_daylight_saving_jump_ends_a_segment_and_is_not_integrated(tmp_path):
    # 50 W; the clock goes from 01:59:59 to 03:00:00 one second later: trapezoids across it gave 180,100 J
    write_lines(tmp_path, [line("2021-03-28 01:59:59", 50.0), line("2021-03-28 03:00:00", 50.0),
                           line("2021-03-28 03:00:01", 50.0)])
    study = load_warned(tmp_path, r"input_1/run_0/power_metrics.json: the date steps back or jumps by more than 4 "
                                  r"sampling periods \(1 s\) at line 2 \(\+3601 s\): a new segment starts there")
    # the first line stands for the second before it, the last for the second before it; the line after the
    # jump stands for an interval of unknown length: 100 J over 2 s
    assert figures(study, "cpu_package")["energy_j"] == pytest.approx(100.0)
    assert study.runs.loc[0, "window_s"] == pytest.approx(2.0)


def test_a_step_back_and_an_unrecorded_pause_end_segments(tmp_path):
    dates = ["10:00:00", "10:00:01", "10:00:02", "09:59:03", "09:59:04", "10:05:04", "10:05:05"]
    write_lines(tmp_path, [line(f"2023-10-29 {d}", 50.0, gpu=100.0) for d in dates])
    study = load_warned(tmp_path, r"at line 4 \(-59 s\), line 6 \(\+360 s\)")
    # RAPL: lines 1-3 (1 s each, the first over one period), 5 and 7; lines 4 and 6 follow a break
    assert figures(study, "cpu_package")["energy_j"] == pytest.approx(50.0 * 5)
    # nvidia-smi points: 2 s, then 1 s, then 1 s of trapezoids
    assert figures(study, "gpu_node")["energy_j"] == pytest.approx(100.0 * 4)
    assert figures(study, "gpu_node")["mean_power_w"] == pytest.approx(100.0)


# ---------------------------------------------------------------- bad values, gaps

def test_a_null_per_process_gpu_memory_is_one_warning_line_not_a_traceback(tmp_path):
    folder = place(tmp_path, SMI_2023, "alexnet", "input_224", "run_0", latencies=np.full(20, 0.05))
    lines = [json.loads(text) for text in lines_of(SMI_2023)]
    lines[1]["metrics"]["gpu"]["per_gpu_attributable_mem_use"] = {"0": {"4242": None}}  # nvidia-smi's "N/A"
    (folder / "power_metrics.json").write_text("".join(json.dumps(v) + "\n" for v in lines))
    run = subprocess.run([sys.executable, "-m", "analysis", "summarize", str(tmp_path), "--long"], cwd=PROJECT,
                         capture_output=True, text=True)
    assert run.returncode == 0 and "Traceback" not in run.stderr
    assert run.stderr.splitlines() == [
        f"warning: {folder / 'power_metrics.json'}: 1 value(s) null or not a number read as missing "
        "(metrics.gpu.per_gpu_attributable_mem_use (GPU 0) at line 2)",
        f"warning: {folder / 'power_metrics.json'}: 1 line(s) lack readings that other lines have, read as missing "
        "(line 2: gpu1.proc_mem_mib)"]
    study = load_warned(tmp_path, "null or not a number")
    assert study.runs.loc[0, "gpu_domain"] is None  # GPU 0 might hold the process's memory: none is guessed
    assert figures(study, "gpu1")["energy_j"] == pytest.approx(274.0)  # the rest of the run is used
    assert figures(study, "gpu1")["proc_mem_peak_mib"] == pytest.approx(1821376512 / MIB)


@pytest.mark.parametrize("bad", [None, "N/A", True, [1, 2]])
def test_a_value_that_is_not_a_number_is_missing_and_the_rest_is_used(tmp_path, bad):
    folder = place(tmp_path, CPU_2021, "resnet", "input_32", "run_0", latencies=[1.0])
    lines = [json.loads(text) for text in lines_of(CPU_2021)]
    lines[2]["metrics"]["cpu"]["intel_power"] = bad
    lines[3]["metrics"]["cpu"]["per_process_mem_use_abs"] = {"16809": bad}
    (folder / "power_metrics.json").write_text("".join(json.dumps(v) + "\n" for v in lines))
    study = load_warned(tmp_path, r"2 value\(s\) null or not a number read as missing \(metrics.cpu.intel_power at "
                                  r"line 3, metrics.cpu.per_process_mem_use_abs at line 4\)",
                        r"cpu_package: 1 power reading\(s\) missing in the window; not integrated across gaps")
    assert np.isnan(figures(study, "cpu_package")["energy_j"]) and figures(study, "cpu_package")["gap_samples"] == 1
    assert figures(study, "psys")["energy_j"] == pytest.approx(480.0)
    assert figures(study, "process")["pss_peak_mib"] == pytest.approx(44.0)  # line 5's; line 4's is unknown


def test_a_line_without_its_gpu_block_and_an_unreadable_line_are_the_same_gap(tmp_path):
    lines = lines_of(SMI_2023)
    no_gpu = json.loads(lines[1])
    del no_gpu["metrics"]["gpu"]
    write_lines(tmp_path, [lines[0], json.dumps(no_gpu), *lines[2:]], "a", "input_1", "run_0")
    write_lines(tmp_path, [lines[0], lines[1][:70], *lines[2:]], "b", "input_1", "run_0")
    study = load_warned(tmp_path, r"a/input_1/run_0/power_metrics.json: 1 line\(s\) lack readings that other lines "
                                  r"have, read as missing \(line 2: gpu_node.power_w, gpu0.power_w, gpu1.power_w",
                        r"b/input_1/run_0/power_metrics.json: 1 unreadable line\(s\) between readable ones \(line 2\): "
                        "their readings missing, a gap that is never bridged")
    # the process's GPU is not named either: on that line any GPU might have held its memory
    assert study.runs["gpu_domain"].isna().all()
    for run_id in (0, 1):
        for domain in ("gpu0", "gpu1", "gpu_node"):
            got = figures(study, domain, run_id)
            assert np.isnan(got["energy_j"]) and got["gap_samples"] == 1 and "not integrated across gaps" in got["note"]
    assert figures(study, "cpu_package", 0)["energy_j"] == pytest.approx(237.4)  # the line kept its cpu block
    assert np.isnan(figures(study, "cpu_package", 1)["energy_j"])  # the unreadable line lost it too


def test_a_zero_mean_power_is_a_counter_that_did_not_move_not_data(tmp_path):
    folder = place(tmp_path, NVML_2026, "bert", "input_50", "run_0")
    lines = [json.loads(text) if text.startswith("{") else text for text in lines_of(NVML_2026)]
    lines[1]["metrics"]["gpu"]["per_gpu_nvidia_power"]["1"] = 0.0  # NVML's counter did not move over the interval
    (folder / "power_metrics.json").write_text("".join((json.dumps(v) if isinstance(v, dict) else v) + "\n"
                                                       for v in lines))
    study = load_warned(tmp_path, r"1 zero \(the counter under it did not move\) gpu1.interval_power_w reading\(s\) "
                                  "treated as missing")
    gpu1 = figures(study, "gpu1")
    assert np.isnan(gpu1["energy_j"]) and "1 power reading(s) missing" in gpu1["note"]
    assert figures(study, "gpu_node")["energy_j"] == pytest.approx(820.0)  # the node total of its own reading
    assert figures(study, "gpu0")["energy_j"] == pytest.approx(660.0)


def test_truncated_last_line_uses_the_rest(tmp_path):
    lines = lines_of(CPU_2021)
    folder = write_lines(tmp_path, lines[:-1])
    (folder / "power_metrics.json").write_text("".join(text + "\n" for text in lines[:-1]) + lines[-1][:50])
    study = load_warned(tmp_path, re.escape("1 unreadable line(s) skipped (line 5 (truncated last line)); the rest"))
    assert figures(study, "cpu_package")["energy_j"] == pytest.approx(30.0 * 2 + 32.0 * 2 + 34.0 * 2 + 36.0 * 2)


# ---------------------------------------------------------------- identity, latencies

def test_recordings_without_an_input_size_are_runs_of_their_own(tmp_path):
    place(tmp_path, CPU_2021, "study", "vgg", "train", latencies=[1.0])
    place(tmp_path, SMI_2023, "study", "vgg", "test", latencies=[1.0])
    place(tmp_path, CPU_2021, "study", "vgg", "7", latencies=[1.0])
    place(tmp_path, CPU_2021, "study", "vgg", "run_8", latencies=[1.0])
    study = load_study(tmp_path / "study")
    identity = study.runs[["model", "recording", "run"]].astype(object).where(study.runs.notna(), None)
    assert identity.values.tolist() == [["vgg", None, 7], ["vgg", None, 8], ["vgg", "vgg/test", 0],
                                        ["vgg", "vgg/train", 0]]
    assert study.runs["input_size"].isna().all()
    points = summarize(study).query("domain == 'cpu_package' and quantity == 'energy_j'")
    assert sorted(points["n"]) == [1, 1, 2]  # the two numbered runs of vgg pooled, each recording apart
    named = load_study(tmp_path / "study", model="vgg16")
    assert set(named.runs["model"]) == {"vgg16"} and len(named.runs) == 4


def test_without_latencies_energy_per_inference_is_nan_never_zero(tmp_path):
    place(tmp_path, CPU_2021, "resnet", "input_32", "run_0")
    study = load_warned(tmp_path, "no latency.csv.*iterations unknown: energies per inference left NaN")
    assert np.isnan(figures(study, "cpu_package")["energy_per_inference_j"])
    assert figures(study, "cpu_package")["energy_j"] == pytest.approx(340.0)


def test_ours_and_theirs_in_one_tree(tmp_path):
    write_run(tmp_path / "ours", power_w={"gpu0": 100.0})
    place(tmp_path, SMI_2023, "theirs", "input_224", "run_0", latencies=np.full(4, 0.1))
    study = load_study(tmp_path)
    assert study.runs[["model", "format"]].values.tolist() == [["resnet50", "ours"], ["theirs", "aipowermeter"]]
    wide = study.wide()
    assert wide["gpu_energy_per_inference_j"].tolist() == pytest.approx([2.0, 274.0 / 4])
    assert wide["gpu_node_energy_per_inference_j"].notna().tolist() == [False, True]


# ---------------------------------------------------------------- the published files

@needs_reference
def test_summarize_on_every_reference_file_gives_the_corrected_energies(tmp_path, capsys):
    assert main(["summarize", str(REFERENCE), "--long", "-o", str(tmp_path / "summary.csv")]) == 0
    summary = pd.read_csv(tmp_path / "summary.csv")
    energies = summary[summary["quantity"] == "energy_j"].set_index(["recording", "domain"])
    checked = 0
    for name in REFERENCE_FILES:
        path = REFERENCE / name / "power_metrics.json"
        gpu = "gpu1" if name == "example_data" else None  # where the process's memory is
        for key in present_keys(path):
            domain, interval_mean = CHANNELS[key]
            row = energies.loc[(name, "gpu" if domain == gpu else domain)]
            assert row["median"] == pytest.approx(expected_energy(path, *key)[0], rel=1e-9), (name, key)
            assert row["n"] == 1 and row["method"] == ("interval_mean" if interval_mean else "trapezoid")
            checked += 1
    assert checked == 16
    warned = capsys.readouterr().err.splitlines()
    assert len(warned) == 4 and all("no latency.csv" in w for w in warned)


@pytest.mark.parametrize("text", ['{"a": 1.5e-7, "b": [0.1, -0.0]}', "NaN", "1e400", str(2**70), '"\\ud800"', '"x"'])
def test_a_line_decodes_to_the_values_json_gives(text):
    from analysis.readers.aipowermeter import _loads

    got, expected = _loads(text.encode()), json.loads(text)
    if isinstance(expected, int) and expected >= 2**64:  # beyond 64 bits: the nearest float, as every reading
        assert got == float(expected) and isinstance(got, float)
    elif isinstance(expected, float) and np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == expected and type(got) is type(expected)


def test_numbers_only_json_reads_are_read_as_json_reads_them(tmp_path):
    """A memory beyond 64 bits and an infinite power (numbers orjson declines) are read, not unreadable lines."""
    lines = [line(f"2023-05-01 10:00:0{k}.000000", 20.0 + k) for k in range(4)]
    lines[1] = lines[1].replace('"7": 1048576', f'"7": {2**70}')
    lines[2] = lines[2].replace('"intel_power": 22.0', '"intel_power": 1e400')
    write_lines(tmp_path, lines)
    study = load_warned(tmp_path, r"1 negative or infinite cpu_package.interval_power_w reading\(s\) treated as missing",
                        cache=False)
    assert figures(study, "process")["pss_peak_mib"] == pytest.approx(2**70 / MIB)
    assert figures(study, "cpu_package")["gap_samples"] == 1  # the infinite power, not an unreadable line

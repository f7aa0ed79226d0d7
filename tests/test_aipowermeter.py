"""AIPowerMeter's files (the seed study's tool), checked against an independent reading of them."""
import json
import math
import re
import shutil
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from analysis import AnalysisWarning, load_study
from treegen import write_run

REFERENCE = Path(__file__).parents[2] / "shared" / "reference" / "aipowermeter"
NVML_2023 = REFERENCE / "example_data" / "power_metrics.json"  # CPU, DRAM and two GPUs
SEGMENTED_2023 = REFERENCE / "example_data" / "train" / "power_metrics.json"  # CPU and DRAM, two segments
NVIDIA_SMI_2021 = REFERENCE / "measure_power" / "power_metrics.json"  # CPU only

pytestmark = pytest.mark.skipif(not REFERENCE.is_dir(), reason="AIPowerMeter reference files not available")


def expected_energy(path, *keys):
    """Trapezoid of the power under ``metrics[keys...]`` within each recording segment, in J, and seconds."""
    segments, current, first = [], [], None
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record == "END OF RECORDING SEGMENT":
            segments.append(current)
            current = []
            continue
        value = record["metrics"]
        for key in keys:
            value = value[key]
        first = first or datetime.fromisoformat(record["date"])
        current.append(((datetime.fromisoformat(record["date"]) - first).total_seconds(), value))
    segments.append(current)
    joules = sum((t1 - t0) * (p0 + p1) / 2 for s in segments for (t0, p0), (t1, p1) in zip(s, s[1:]))
    seconds = sum(s[-1][0] - s[0][0] for s in segments if s)
    return joules, seconds


def place(tmp_path, source, *parts, latencies=None):
    """Copy a reference file to ``tmp_path/parts/power_metrics.json`` with made-up latencies."""
    folder = tmp_path.joinpath(*parts)
    folder.mkdir(parents=True)
    shutil.copy(source, folder / "power_metrics.json")
    if latencies is not None:
        np.savetxt(folder / "latency.csv", np.asarray(latencies))
    return folder


def domain_row(study, domain):
    """One run's figures of ``domain``: ``{quantity: value}``, with its ``source`` and ``method``."""
    rows = study.quantities[study.quantities["domain"] == domain]
    assert rows["run_id"].nunique() == 1
    labels = rows.iloc[0] if (rows["quantity"] != "energy_j").all() else rows[rows["quantity"] == "energy_j"].iloc[0]
    return {**dict(zip(rows["quantity"], rows["value"])), "source": labels["source"], "method": labels["method"]}


def figure(study, quantity, domain="clock"):
    return domain_row(study, domain)[quantity] if domain != "clock" else \
        study.quantities.query("domain == 'clock' and quantity == @quantity")["value"].item()


def energy_domains(study):
    return sorted(study.select("energy_j")["domain"].astype(str))


def test_nvml_era_file_with_two_gpus(tmp_path):
    place(tmp_path, NVML_2023, "alexnet", "input_224", "run_3", latencies=np.full(400, 0.02))
    study = load_study(tmp_path)
    run = study.runs.iloc[0]
    assert (run["model"], run["input_size"], run["run"], run["iterations"]) == ("alexnet", 224, 3, 400)
    assert run["format"] == "aipowermeter" and figure(study, "latency_median_s") == pytest.approx(0.02)
    assert energy_domains(study) == ["cpu_package", "dram", "gpu0", "gpu1", "gpu_node"]
    for domain, keys in [("cpu_package", ("cpu", "intel_power")), ("dram", ("cpu", "total_dram_power")),
                         ("gpu_node", ("gpu", "nvidia_draw_absolute")), ("gpu0", ("gpu", "per_gpu_power_draw", "0")),
                         ("gpu1", ("gpu", "per_gpu_power_draw", "1"))]:
        joules, seconds = expected_energy(NVML_2023, *keys)
        row = domain_row(study, domain)
        assert (row["source"], row["method"], row["gap_samples"]) == ("measured", "trapezoid", 0)
        assert row["energy_j"] == pytest.approx(joules, rel=1e-9)
        assert row["energy_per_inference_j"] == pytest.approx(joules / 400, rel=1e-9)
        assert row["mean_power_w"] == pytest.approx(joules / seconds, rel=1e-9)
    assert domain_row(study, "gpu_node")["energy_j"] == pytest.approx(
        domain_row(study, "gpu0")["energy_j"] + domain_row(study, "gpu1")["energy_j"], rel=1e-3)
    assert domain_row(study, "gpu_node")["proc_mem_peak_mib"] == pytest.approx(1821376512 / 2**20)
    assert domain_row(study, "process")["rss_peak_mib"] > 4000  # the three processes' resident memory, in MiB


def test_segments_are_integrated_apart(tmp_path):
    place(tmp_path, SEGMENTED_2023, "bert", "input_50", "run_0", latencies=np.full(1000, 0.01))
    study = load_study(tmp_path)
    joules, seconds = expected_energy(SEGMENTED_2023, "cpu", "intel_power")
    row = domain_row(study, "cpu_package")
    assert row["energy_j"] == pytest.approx(joules, rel=1e-9)
    assert study.runs.loc[0, "window_s"] == pytest.approx(seconds, rel=1e-9)
    recording = [json.loads(line) for line in SEGMENTED_2023.read_text().splitlines()]
    dates = [datetime.fromisoformat(r["date"]) for r in recording if isinstance(r, dict)]
    assert seconds < (dates[-1] - dates[0]).total_seconds() - 4  # the pause between the segments is not counted
    assert energy_domains(study) == ["cpu_package", "dram"]


def test_nvidia_smi_era_file_has_cpu_only(tmp_path):
    place(tmp_path, NVIDIA_SMI_2021, "resnet", "input_32", "run_1", latencies=np.full(10, 1.5))
    study = load_study(tmp_path)
    joules, _ = expected_energy(NVIDIA_SMI_2021, "cpu", "intel_power")
    assert energy_domains(study) == ["cpu_package"]
    assert domain_row(study, "cpu_package")["energy_per_inference_j"] == pytest.approx(joules / 10, rel=1e-9)


def test_latency_json_gives_the_iterations(tmp_path):
    folder = place(tmp_path, NVIDIA_SMI_2021, "resnet", "input_32", "run_0")
    (folder / "latency.json").write_text(json.dumps([0.5] * 8))
    study = load_study(tmp_path)
    assert study.runs.loc[0, "iterations"] == 8
    assert study.latencies["latency_s"].tolist() == [0.5] * 8


def test_without_latencies_energy_per_inference_is_nan_never_zero(tmp_path):
    place(tmp_path, NVIDIA_SMI_2021, "resnet", "input_32", "run_0")
    with pytest.warns(AnalysisWarning, match="no latency.csv.*iterations unknown: energies per inference left NaN"):
        study = load_study(tmp_path)
    row = domain_row(study, "cpu_package")
    assert math.isnan(row["energy_per_inference_j"])
    assert row["energy_j"] == pytest.approx(expected_energy(NVIDIA_SMI_2021, "cpu", "intel_power")[0])


def test_identity_from_folder_names_or_model_argument(tmp_path):
    place(tmp_path, NVIDIA_SMI_2021, "study", "vgg", "train", latencies=[1.0])
    place(tmp_path, NVIDIA_SMI_2021, "study", "vgg", "7", latencies=[1.0])
    study = load_study(tmp_path / "study")
    assert study.runs[["model", "run"]].values.tolist() == [["vgg", 7], ["vgg", "train"]]
    assert study.runs["input_size"].isna().all()
    named = load_study(tmp_path / "study", model="vgg16")
    assert set(named.runs["model"]) == {"vgg16"}


def test_reference_folder_as_published(tmp_path):
    shutil.copytree(REFERENCE, tmp_path / "aipowermeter")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load_study(tmp_path / "aipowermeter")
    assert len(study.runs) == 4 and set(study.runs["format"]) == {"aipowermeter"}
    assert sum("no latency.csv" in str(w.message) for w in caught) == 4


def test_truncated_last_line_uses_the_rest(tmp_path):
    folder = place(tmp_path, NVIDIA_SMI_2021, "resnet", "input_32", "run_0", latencies=[1.0])
    lines = (folder / "power_metrics.json").read_text().splitlines(keepends=True)
    (folder / "power_metrics.json").write_text("".join(lines[:-1]) + lines[-1][:50])
    with pytest.warns(AnalysisWarning, match=re.escape("1 unreadable line(s) skipped (line 13 (truncated last")):
        study = load_study(tmp_path)
    recorded = [json.loads(line) for line in lines[:-1]]
    t = [(datetime.fromisoformat(r["date"]) - datetime.fromisoformat(recorded[0]["date"])).total_seconds()
         for r in recorded]
    p = [r["metrics"]["cpu"]["intel_power"] for r in recorded]
    assert domain_row(study, "cpu_package")["energy_j"] == pytest.approx(np.trapezoid(p, t), rel=1e-9)


def test_ours_and_theirs_in_one_tree(tmp_path):
    write_run(tmp_path / "ours", power_w={"gpu0": 100.0})
    place(tmp_path, NVML_2023, "theirs", "input_224", "run_0", latencies=np.full(4, 0.1))
    study = load_study(tmp_path)
    assert study.runs[["model", "format"]].values.tolist() == [["resnet50", "ours"], ["theirs", "aipowermeter"]]
    wide = study.wide()
    assert wide["gpu_energy_per_inference_j"].notna().tolist() == [True, False]  # theirs: node total only
    assert wide["gpu_node_energy_per_inference_j"].notna().tolist() == [False, True]


def test_nvml_key_schema_reads_like_the_nvidia_smi_one(tmp_path):
    """Newer AIPowerMeter releases name the GPU powers after NVML (nvidia_power, per_gpu_nvidia_power)."""
    renamed = NVML_2023.read_text().replace('"nvidia_draw_absolute"', '"nvidia_power"')
    renamed = renamed.replace('"per_gpu_power_draw"', '"per_gpu_nvidia_power"')
    source = tmp_path / "renamed.json"
    source.write_text(renamed)
    place(tmp_path, source, "alexnet", "input_224", "run_0", latencies=np.full(400, 0.02))
    study = load_study(tmp_path / "alexnet")
    for domain, keys in [("gpu_node", ("gpu", "nvidia_power")), ("gpu1", ("gpu", "per_gpu_nvidia_power", "1"))]:
        joules, _ = expected_energy(source, *keys)
        assert domain_row(study, domain)["energy_j"] == pytest.approx(joules, rel=1e-9)

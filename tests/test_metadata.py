"""analysis.metadata: what a study ran on, from synthetic studies with known answers."""
from __future__ import annotations

import json

import pytest
from treegen import write_run

from analysis import load_study, metadata

CPU_ONLY = {"cpu_estimated": 30.0}
GPU_RAPL = {"gpu0": 100.0, "package-0": 40.0, "dram-0": 5.0}


def study_of(tmp_path, sizes=(64, 128), runs=3, power_w=CPU_ONLY, device="cpu", iterations=100, **options):
    for size in sizes:
        for run in range(runs):
            write_run(tmp_path, "resnet50", size, run, power_w=power_w, device=device, iterations=iterations,
                      **options)
    return load_study(tmp_path)


def edit_meta(folder, **changes):
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(changes)
    (folder / "meta.json").write_text(json.dumps(meta))


def test_hardware_and_sensors_come_from_the_metadata(tmp_path):
    write_run(tmp_path, run=0, power_w=CPU_ONLY, device="cpu")
    edit_meta(write_run(tmp_path, run=1, power_w=CPU_ONLY, device="cpu"),
              unavailable={"rapl": "no RAPL powercap interface"})
    study = load_study(tmp_path)
    hardware = metadata.hardware(study).set_index("item")["value"]
    assert hardware["device"] == "cpu"
    assert hardware["CPU"] == "Synthetic CPU"
    assert hardware["logical CPUs"] == "8"
    assert hardware["torch threads"] == "8"
    assert "synthetic" not in " ".join(hardware)  # the host name is left out
    sensors = metadata.sensors(study)
    assert sensors.to_dict("records") == [
        {"sensor": "estimate", "domain": "cpu_estimated", "source": "estimated",
         "detail": "; tdp_w = None (None), idle_fraction = None"},
        {"sensor": "rapl", "domain": "", "source": "unavailable", "detail": "no RAPL powercap interface"},
    ]
    assert metadata.unavailable(study) == {"rapl": "no RAPL powercap interface"}


def test_hardware_says_none_without_gpus(tmp_path):
    folder = write_run(tmp_path, power_w=CPU_ONLY, device="cpu")
    edit_meta(folder, host={"cpu_model": "X", "gpus": []})
    assert metadata.hardware(load_study(tmp_path)).set_index("item").at["GPUs", "value"] == "none"


def test_sensors_are_listed_measured_first_then_estimated_then_unavailable(tmp_path):
    folder = write_run(tmp_path, power_w=CPU_ONLY, device="cpu")
    edit_meta(folder, sensors={"cpu_estimated": {"sensor": "estimate", "source": "estimated", "model": "m",
                                                 "tdp_w": 8, "channels": ["cpu_estimated.power_w"]},
                               "gpu0": {"sensor": "nvml", "source": "measured", "channels": ["gpu0.energy_j"]}},
              unavailable={"rapl": "no powercap"})
    table = metadata.sensors(load_study(tmp_path))
    assert table["source"].tolist() == ["measured", "estimated", "unavailable"]
    assert table.at[0, "detail"] == "energy_j"


def test_domains_of_a_cpu_only_study(tmp_path):
    study = study_of(tmp_path)
    assert metadata.energy_domains(study) == ["cpu_estimated"]
    assert metadata.headline_domains(study) == ["cpu_estimated"]
    assert metadata.cpu_domain(study) == "cpu_estimated"
    assert not metadata.has_gpu(study)
    sources = metadata.energy_sources(study)
    assert sources[["domain", "source", "method", "runs"]].values.tolist() == [
        ["cpu_estimated", "estimated", "trapezoid", 6]]


def test_domains_of_a_gpu_study_with_rapl(tmp_path):
    study = study_of(tmp_path, power_w=GPU_RAPL, device="cuda:0")
    assert metadata.energy_domains(study) == ["gpu", "cpu_package", "dram"]
    assert metadata.cpu_domain(study) == "cpu_package"
    assert metadata.has_gpu(study)
    sources = metadata.energy_sources(study).set_index("domain")
    assert set(sources["source"]) == {"measured"}
    assert sources.at["gpu", "method"] == "counter"
    assert sources.at["gpu", "what"] == "GPU the model ran on"


def test_node_totals_and_other_gpus_are_never_headlines(tmp_path):
    study = study_of(tmp_path, power_w={"gpu0": 100.0, "gpu1": 50.0, "package-0": 40.0}, device="cuda:0")
    assert metadata.energy_domains(study) == ["gpu", "cpu_package", "gpu1", "gpu_node"]
    assert metadata.headline_domains(study) == ["gpu", "cpu_package"]
    assert metadata.describe_domain("gpu1") == "GPU 1 of the node (not the model's)"
    assert metadata.describe_domain("gpu_node") == "all GPUs of the node (node total)"


def test_protocol_per_size(tmp_path):
    table = metadata.protocol(study_of(tmp_path, sizes=(32, 64), runs=2, iterations=50))
    assert table["input_size"].tolist() == [32, 64]
    assert table["runs"].tolist() == [2, 2]
    assert table["iterations"].tolist() == ["50", "50"]
    assert table["window_s_median"].tolist() == [2.0, 2.0]


def test_protocol_per_configuration(tmp_path):
    write_run(tmp_path / "a", batch_size=1)
    write_run(tmp_path / "b", batch_size=8)
    table = metadata.protocol(load_study(tmp_path))
    assert table[["batch_size", "input_size", "runs"]].values.tolist() == [[1, 64, 1], [8, 64, 1]]

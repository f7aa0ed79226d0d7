"""The precision stop rule: what it tracks comes from the runs' metadata, and a renamed column is an error."""
from __future__ import annotations

import json

import pytest
from treegen import write_run

import analysis.precision
from analysis.precision import TrackingError, Tracked, precision_rule, tracked_values

pytestmark = pytest.mark.filterwarnings("ignore::analysis.AnalysisWarning")


def run(tmp_path, power_w, device="cpu", run=0, gpu_domain=None, iterations=100, latency_s=0.01):
    folder = write_run(tmp_path, run=run, power_w=power_w, device=device, iterations=iterations, latency_s=latency_s)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "gpu_domain": gpu_domain}))
    return folder


@pytest.mark.parametrize("power_w, device, gpu_domain, tracked, value", [
    ({"package-0": 40.0, "dram-0": 5.0}, "cpu", None, Tracked("cpu_package", "energy_per_inference_j"), 0.8),
    ({"cpu_estimated": 30.0}, "cpu", None, Tracked(None, "latency_median_s"), 0.01),  # an estimate is not tracked
    ({"gpu0": 100.0, "gpu1": 300.0, "package-0": 40.0}, "cuda:0", "gpu1",
     Tracked("gpu1", "energy_per_inference_j"), 6.0),  # the GPU the model ran on, found by UUID
    ({"gpu0": 100.0, "package-0": 40.0}, "cuda:0", None, Tracked(None, "latency_median_s"), 0.01),  # none matched
])
def test_the_tracked_quantity_follows_the_device_the_model_ran_on(tmp_path, power_w, device, gpu_domain, tracked,
                                                                    value):
    folder = run(tmp_path, power_w, device, gpu_domain=gpu_domain)  # 2 s windows of 100 inferences
    assert tracked_values([folder]) == (tracked, [pytest.approx(value)])


@pytest.mark.parametrize("power_w, quantity", [
    ({"package-0": 40.0}, "energy_per_inference_j"),
    ({"cpu_estimated": 30.0}, "latency_median_s"),
])
def test_a_renamed_quantity_is_an_error_not_a_silent_switch(tmp_path, monkeypatch, power_w, quantity):
    folder = run(tmp_path, power_w)
    real = analysis.precision.load_study

    def renamed(path):
        study = real(path)
        names = study.quantities["quantity"].astype(str).replace(quantity, f"{quantity}_v2")
        study.quantities = study.quantities.assign(quantity=names)
        return study

    monkeypatch.setattr(analysis.precision, "load_study", renamed)
    with pytest.raises(TrackingError, match=f"gives no {quantity} quantity"):
        tracked_values([folder])
    with pytest.raises(TrackingError, match=f"gives no {quantity} quantity"):
        precision_rule(0.01, 3)([folder])


def test_a_renamed_column_is_an_error(tmp_path, monkeypatch):
    folder = run(tmp_path, {"package-0": 40.0})
    real = analysis.precision.load_study

    def renamed(path):
        study = real(path)
        study.quantities = study.quantities.rename(columns={"value": "value_v2"})
        return study

    monkeypatch.setattr(analysis.precision, "load_study", renamed)
    with pytest.raises(TrackingError, match="has no value column"):
        tracked_values([folder])


def test_a_missing_domain_is_an_error(tmp_path, monkeypatch):
    folder = run(tmp_path, {"package-0": 40.0})
    real = analysis.precision.load_study

    def without_package(path):
        study = real(path)
        study.quantities = study.quantities[study.quantities["domain"] != "cpu_package"]
        return study

    monkeypatch.setattr(analysis.precision, "load_study", without_package)
    with pytest.raises(TrackingError, match="gives no energy_per_inference_j quantity for domain cpu_package"):
        tracked_values([folder])


def test_the_rule_stops_once_the_interval_is_narrow_enough(tmp_path, monkeypatch):
    # the CI of the median of 1.0, 1.002 and 0.998 is within ±0.5 %; the first two are too few to judge
    values = {0: 1.0, 1: 1.002, 2: 0.998}
    folders = [run(tmp_path, {"package-0": 40.0}, run=k) for k in values]
    monkeypatch.setattr(analysis.precision, "run_value", lambda folder, tracked: values[int(folder.name[4:])])
    rule = precision_rule(0.005, min_runs=2)
    assert rule(folders[:1]) == (False, "1 of at least 3 runs of cpu_package energy per inference (measured)")
    assert rule(folders[:2])[0] is False
    stop, reason = rule(folders)
    assert stop and reason.startswith("precision reached: 95 % CI of the median cpu_package energy per inference "
                                      "(measured) within ±") and reason.endswith("(target ±0.5%) after 3 runs")
    stop, reason = precision_rule(0.0001, min_runs=3)(folders)
    assert not stop and reason.startswith("95 % CI of the median")


def test_runs_of_one_point_must_track_the_same_quantity(tmp_path):
    folders = [run(tmp_path / "a", {"package-0": 40.0}), run(tmp_path / "b", {"cpu_estimated": 30.0}, run=1)]
    with pytest.raises(TrackingError, match="track different quantities"):
        precision_rule(0.01, 3)(folders)

"""The committed run trees load to the same per-run figures as the first release of the analysis computed.

``tests/fixtures/committed_runs_v1.csv`` holds the per-run latency, estimated CPU
energy per inference and mean power of ``data/<study>/tree`` as the first
release wrote them to ``data/<study>/runs.csv``, before the analysis was
restructured into long tables; any later change of the analysis must give
the same figures.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

from analysis import AnalysisWarning, load_study

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = pd.read_csv(ROOT / "tests" / "fixtures" / "committed_runs_v1.csv")


@pytest.mark.parametrize("study", sorted(REFERENCE["study"].unique()))
def test_committed_trees_give_the_first_releases_per_run_figures(study):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)  # the busy idle baseline of one tree is refused, as it must
        wide = load_study(ROOT / "data" / study / "tree").wide()
    expected = REFERENCE[REFERENCE["study"] == study].set_index(["input_size", "run"]).sort_index()
    got = wide.set_index(["input_size", "run"]).sort_index()
    assert got.index.equals(expected.index)
    for column in ("latency_median_s", "cpu_estimated_energy_per_inference_j", "cpu_estimated_mean_power_w"):
        pd.testing.assert_series_equal(got[column], expected[column], check_names=False, rtol=1e-9)

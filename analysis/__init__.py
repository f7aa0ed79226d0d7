"""Analysis of run trees: tidy tables, energies over exact windows, summaries over runs.

    study = load_study("results/resnet50")     # ours or AIPowerMeter's, any depth
    table = summarize(study)                   # one row per (model, input size)
    rho, p = spearman(study)

See docs/tables.md for the tables and their columns.
"""
from .energy import aligned_counter_energy, combine_domains, counter_energy, energy_domain, trapezoid_energy, window, window_seconds
from .load import AnalysisWarning, NoUsableRuns, Study, load_study, recording_power
from .stats import bootstrap_median_ci, spearman, summarize
from . import report  # notebook-level helpers: hardware, sources, comparisons, key numbers

__all__ = [
    "AnalysisWarning", "NoUsableRuns", "Study", "load_study", "recording_power",
    "summarize", "spearman", "bootstrap_median_ci",
    "counter_energy", "aligned_counter_energy", "trapezoid_energy", "window", "window_seconds", "energy_domain", "combine_domains",
]

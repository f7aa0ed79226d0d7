"""Analysis of run trees: per-run quantities over exact windows, summaries over runs, figures.

    study = load_study("runs/resnet50")        # ours or AIPowerMeter's, any depth; or a list of trees
    summary = summarize(study)                 # long: one row per (point, domain, quantity)
    table = compare(study, baseline="fp32")    # long: each configuration against the baseline, ratio and CI
    wide = export.wide_summary(summary, study) # the seed's CSV: one row per point
    rho, p = spearman(study)

See docs/tables.md for the tables and their columns, docs/architecture.md for the modules.
"""
from . import export, findings, metadata
from .comparison import compare
from .problems import AnalysisWarning, NoUsableRuns
from .stats import MIN_RUNS_FOR_CI, bootstrap_median_ci, bootstrap_ratio_ci, spearman, summarize
from .tables import Study, load_study

__all__ = [
    "AnalysisWarning", "NoUsableRuns", "Study", "load_study", "summarize", "compare", "spearman",
    "bootstrap_median_ci", "bootstrap_ratio_ci", "MIN_RUNS_FOR_CI", "export", "findings", "metadata",
]

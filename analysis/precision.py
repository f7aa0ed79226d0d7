"""The precision stopping rule of a sweep: add runs until the median is known to ±target.

    rule = precision_rule(0.01, min_runs=3)
    run_study(plan, out, stop_rule=rule)          # measure.sweep: rule(folders) -> (stop, reason)

What is tracked is decided from each run's ``meta.json``, never from the
columns the analysis happens to produce: the *measured* energy per inference
of the domain of the device the model ran on (the run's ``gpu_domain`` on a
GPU, the RAPL CPU package on the CPU), else, where no sensor measures it (an
estimate is a model, not a measurement to converge), the run's median
latency. The value is then selected from ``load_study``'s tables by that
explicit (domain, quantity): if the tables lack it, ``TrackingError`` is
raised rather than anything else being tracked.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from measure import runtree

from . import AnalysisWarning, bootstrap_median_ci, load_study

MEASURED = "measured"
CPU_PACKAGE = "cpu_package"  # the analysis's sum of the RAPL package-<socket> domains
ENERGY = "energy_per_inference_j"
LATENCY = "latency_median_s"
MIN_RUNS = 3  # fewer runs give no confidence interval worth the name


class TrackingError(RuntimeError):
    """The analysis's tables lack the quantity a rule tracks (one line)."""


@dataclass(frozen=True)
class Tracked:
    """What a point's precision is judged on: ``quantity`` of energy ``domain`` (None: of the run)."""

    domain: str | None
    quantity: str

    @property
    def reported(self) -> str:
        """The analysis's domain of this figure: ``gpu`` for the GPU the model ran on, ``clock`` for latency."""
        if self.domain is None:
            return "clock"
        return "gpu" if self.domain.startswith("gpu") else self.domain

    @property
    def label(self) -> str:
        if self.domain is None:
            return "latency (no measured energy sensor)"
        return f"{self.domain} energy per inference (measured)"


def tracked_for(meta: runtree.Meta) -> Tracked:
    """What to track for a run, from its metadata: device, ``gpu_domain`` and sensors."""
    sensors = meta.sensors
    if str(meta.identity.get("device")).startswith("cuda"):
        domain = meta.get("gpu_domain")
        if domain and (sensors.get(domain) or {}).get("source") == MEASURED:
            return Tracked(domain, ENERGY)
    elif any(name.startswith("package-") and about.get("sensor") == "rapl" and about.get("source") == MEASURED
             for name, about in sensors.items()):
        return Tracked(CPU_PACKAGE, ENERGY)
    return Tracked(None, LATENCY)


def run_value(folder: Path, tracked: Tracked) -> float:
    """The tracked quantity of one complete run; ``TrackingError`` if the analysis does not give it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        table = load_study(folder).quantities
    missing = [column for column in ("domain", "quantity", "value", "source") if column not in table.columns]
    if missing:
        raise TrackingError(f"{folder}: the analysis's table has no {', '.join(missing)} column; "
                            f"cannot track {tracked.label}")
    rows = table[(table["domain"] == tracked.reported) & (table["quantity"] == tracked.quantity)]
    if rows.empty:
        raise TrackingError(f"{folder}: the analysis gives no {tracked.quantity} quantity for domain "
                            f"{tracked.reported}; cannot track {tracked.label}")
    if tracked.domain is not None and set(rows["source"]) != {MEASURED}:
        raise TrackingError(f"{folder}: the analysis gives no measured {tracked.quantity} for domain "
                            f"{tracked.reported}")
    values = rows["value"].to_numpy(dtype=float)
    if len(values) != 1 or not np.isfinite(values[0]):
        raise TrackingError(f"{folder}: {tracked.label} is {values.tolist()}, not one finite value")
    return float(values[0])


def relative_half_width(values: Sequence[float]) -> float:
    """The larger distance from the median to the bounds of its bootstrap 95 % CI, relative to the median."""
    values = np.asarray(values, dtype=float)
    median = float(np.median(values))
    (low,), (high,) = bootstrap_median_ci(values[:, None])
    return max(median - low, high - median) / abs(median) if median else np.inf


def tracked_values(folders: Sequence[Path]) -> tuple[Tracked, list[float]]:
    """What the complete runs of one point track, and its value in each (``TrackingError`` if they disagree)."""
    tracked = _one({tracked_for(runtree.read_meta(folder)) for folder in folders}, folders)
    return tracked, [run_value(folder, tracked) for folder in folders]


def _one(tracked: set[Tracked], folders: Sequence[Path]) -> Tracked:
    if len(tracked) != 1:
        raise TrackingError(f"the runs of {Path(folders[0]).parent} track different quantities: "
                            f"{', '.join(sorted(t.label for t in tracked))}")
    return next(iter(tracked))


def precision_rule(target_rel: float, min_runs: int) -> Callable[[Sequence[Path]], tuple[bool, str]]:
    """A stop rule for ``measure.sweep.run_study``: stop once at least ``min_runs`` (and 3) runs are complete
    and the 95 % CI of the median of the tracked quantity is within ±``target_rel`` of it."""
    least = max(min_runs, MIN_RUNS)
    known: dict[Path, tuple[Tracked, float]] = {}  # a complete run's value never changes

    def rule(folders: Sequence[Path]) -> tuple[bool, str]:
        for folder in folders:
            if folder not in known:
                tracked = tracked_for(runtree.read_meta(folder))
                known[folder] = tracked, run_value(folder, tracked)
        label = _one({known[folder][0] for folder in folders}, folders).label
        if len(folders) < least:
            return False, f"{len(folders)} of at least {least} runs of {label}"
        half = relative_half_width([known[folder][1] for folder in folders])
        text = (f"95 % CI of the median {label} within ±{half:.2%} (target ±{target_rel:.1%}) "
                f"after {len(folders)} runs")
        return (True, f"precision reached: {text}") if half <= target_rel else (False, text)

    return rule

"""What the study notebooks say about a study, computed rather than typed.

The notebooks narrate; the logic they would otherwise carry in cells lives
here: the hardware and sensors a study ran on (from its run metadata), which
energy figures are measured and which estimated, the protocol actually run,
a side-by-side comparison of two summaries (committed vs fresh), the key
numbers a test can check, and the two checks of the seed's BERT observations.

Every function takes the tables of ``load_study`` / ``summarize`` (or the
``meta.json`` documents returned by ``read_metadata``, the one reader here)
and returns a DataFrame, a dict or bytes; nothing is printed or shown.
"""
from __future__ import annotations

import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from measure import runtree

from .load import Study

SOURCE_SUFFIX = "_source"
ENERGY_SUFFIX = "_energy_per_inference_j"
# What each energy domain of the tables is, for the reader.
DOMAIN_TEXT = {
    "gpu": "GPU board (sum over the GPUs)",
    "cpu_package": "CPU package (RAPL, sum over sockets)",
    "dram": "DRAM (RAPL, sum over sockets)",
    "cpu_estimated": "CPU package, modelled from TDP x machine-wide CPU load",
}
# The seed's BERT observation: a latency jump near 300-350 tokens.
SEED_JUMP_REGION = (300, 350)


# ---------------------------------------------------------------- run metadata

def read_metadata(study: Study) -> list[dict]:
    """The ``meta.json`` document of every run of ``study`` (in the order of ``study.runs``), its identity
    flattened into it (``model``, ``device``, ...); an empty dict for a run without a usable one."""
    metas = []
    for folder in study.runs["folder"]:
        try:
            meta = runtree.read_meta(Path(study.root) / folder)
        except runtree.MetaError:
            metas.append({})
            continue
        metas.append({**meta.fields, **meta.identity})
    return metas


def _distinct(values: Iterable) -> list:
    out = []
    for value in values:
        if value not in out and value not in (None, "", []):
            out.append(value)
    return out


def _joined(values: Iterable) -> str:
    found = [str(v) for v in _distinct(values)]
    return " / ".join(found) if found else "none"


def hardware(metas: Sequence[dict]) -> pd.DataFrame:
    """The machine the runs were measured on: one row per item (``item``, ``value``).

    Device, CPU model and logical CPUs, GPUs (``none`` when there are none),
    torch threads, the library versions and the weights; the host name is left out.
    """
    hosts = [m.get("host") or {} for m in metas]
    gpus = [f"{g.get('name')} (driver {g.get('driver')})" for h in hosts for g in h.get("gpus") or []]
    rows = [
        ("device", _joined(m.get("device") for m in metas)),
        ("CPU", _joined(h.get("cpu_model") for h in hosts)),
        ("logical CPUs", _joined(h.get("logical_cpus") for h in hosts)),
        ("torch threads", _joined(h.get("torch_threads") for h in hosts)),
        ("GPUs", _joined(gpus)),
        ("platform", _joined(h.get("platform") for h in hosts)),
        ("python / torch / torchvision / transformers", _joined(
            f"{h.get('python')} / {h.get('torch')} / {h.get('torchvision')} / {h.get('transformers')}"
            for h in hosts)),
        ("weights", _joined(m.get("weights") for m in metas)),
    ]
    return pd.DataFrame(rows, columns=["item", "value"])


def sensors(metas: Sequence[dict]) -> pd.DataFrame:
    """Every sensor domain sampled, and every sensor that could not be opened with the reason.

    Columns ``sensor, domain, source, detail``: ``source`` is ``measured``,
    ``estimated`` or ``unavailable``; ``detail`` holds the channels, the
    estimate's model and TDP, or the reason a sensor is missing.
    """
    rows: list[tuple] = []
    for meta in metas:
        for domain, info in (meta.get("sensors") or {}).items():
            detail = ", ".join(c.split(".", 1)[-1] for c in info.get("channels") or [])
            if info.get("sensor") == "estimate":
                detail = (f"{info.get('model', '')}; tdp_w = {info.get('tdp_w')} ({info.get('tdp_source')}), "
                          f"idle_fraction = {info.get('idle_fraction')}")
            rows.append((info.get("sensor"), domain, info.get("source"), detail))
        for sensor, reason in (meta.get("unavailable") or {}).items():
            rows.append((sensor, "", "unavailable", reason))
    table = pd.DataFrame(rows, columns=["sensor", "domain", "source", "detail"]).drop_duplicates()
    order = {"measured": 0, "estimated": 1, "unavailable": 2}
    return (table.sort_values(["source", "sensor", "domain"], key=lambda c: c.map(order) if c.name == "source" else c)
            .reset_index(drop=True))


def unavailable(metas: Sequence[dict]) -> dict[str, str]:
    """``{sensor: reason}`` for every sensor that could not be opened in any of the runs."""
    found: dict[str, str] = {}
    for meta in metas:
        for sensor, reason in (meta.get("unavailable") or {}).items():
            found.setdefault(sensor, reason)
    return found


# ---------------------------------------------------------------- runs and summaries

def energy_domains(runs: pd.DataFrame) -> list[str]:
    """Domains with at least one energy per inference in ``runs`` (``gpu`` first, per-GPU ``gpu<i>`` left out
    when their sum is there)."""
    found = [c[: -len(ENERGY_SUFFIX)] for c in runs.columns
             if c.endswith(ENERGY_SUFFIX) and not c.endswith("dynamic" + ENERGY_SUFFIX) and runs[c].notna().any()]
    if "gpu" in found:
        found = [d for d in found if not (d.startswith("gpu") and d != "gpu")]
    return sorted(found, key=lambda d: (not d.startswith("gpu"), d))


def gpu_domain(runs: pd.DataFrame) -> str | None:
    """``gpu`` (or the single ``gpu<i>``) when the runs hold GPU energies, else None."""
    gpus = [d for d in energy_domains(runs) if d.startswith("gpu")]
    return gpus[0] if gpus else None


def cpu_domain(runs: pd.DataFrame) -> str | None:
    """``cpu_package`` (RAPL, measured) when the runs hold it, else ``cpu_estimated``, else None."""
    domains = energy_domains(runs)
    return next((d for d in ("cpu_package", "cpu_estimated") if d in domains), None)


def has_gpu_data(runs: pd.DataFrame) -> bool:
    """True when the runs hold GPU energies or GPU utilisation (a study measured on a GPU)."""
    return gpu_domain(runs) is not None or bool(runs.get("sm_util_mean_pct", pd.Series(dtype=float)).notna().any())


def energy_sources(runs: pd.DataFrame) -> pd.DataFrame:
    """Where every energy figure comes from: ``domain, what, source, method, runs``."""
    rows = []
    for domain in energy_domains(runs):
        known = runs[runs[domain + ENERGY_SUFFIX].notna()]
        for (source, method), group in known.groupby([domain + SOURCE_SUFFIX, f"{domain}_method"], dropna=False):
            what = DOMAIN_TEXT.get(domain, f"GPU {domain[3:]}" if domain.startswith("gpu") else domain)
            rows.append((domain, what, source, method, len(group)))
    return pd.DataFrame(rows, columns=["domain", "what", "source", "method", "runs"])


def protocol(runs: pd.DataFrame) -> pd.DataFrame:
    """The protocol actually run, per input size: runs, timed iterations, untimed warm-up,
    sampling period and the median window (s)."""
    groups = runs.groupby("input_size")
    table = pd.DataFrame({
        "runs": groups["run"].nunique(),
        "iterations": groups["iterations"].agg(lambda s: _joined(int(v) for v in s)),
        "warmup": groups["warmup"].agg(lambda s: _joined(int(v) for v in s if pd.notna(v))),
        "period_s": groups["period_s"].agg(lambda s: _joined(s)),
        "window_s_median": groups["window_s"].median().round(2),
    })
    return table.reset_index()


def headline(summary: pd.DataFrame, sig: int = 3) -> pd.DataFrame:
    """The few columns of a summary a reader wants, rounded to ``sig`` significant digits:
    input size, runs, latency and each domain's energy per inference (median and 95 % CI)
    with its source."""
    domains = [c[: -len(ENERGY_SUFFIX + "_median")] for c in summary.columns
               if c.endswith(ENERGY_SUFFIX + "_median") and "dynamic" not in c and summary[c].notna().any()]
    if "gpu" in domains:
        domains = [d for d in domains if not (d.startswith("gpu") and d != "gpu")]
    out = summary[["input_size", "n_runs"]].copy()
    columns = [("latency_median_s", "latency_s")] + [(d + ENERGY_SUFFIX, f"{d}_energy_per_inference_j")
                                                     for d in domains]
    for quantity, name in columns:
        out[f"{name} median"] = summary[f"{quantity}_median"].map(lambda v: _round(v, sig))
        out[f"{name} 95% CI"] = [f"[{_round(lo, sig)}, {_round(hi, sig)}]" for lo, hi in
                                 zip(summary[f"{quantity}_ci_low"], summary[f"{quantity}_ci_high"])]
    for d in domains:
        out[f"{d} source"] = summary[d + SOURCE_SUFFIX]
    return out


def _round(value: float, sig: int = 3) -> float:
    """``value`` rounded to ``sig`` significant digits (NaN stays NaN)."""
    if value is None or not np.isfinite(value) or value == 0:
        return value
    return round(float(value), sig - 1 - int(math.floor(math.log10(abs(value)))))


def spread(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """How much each column varies over the rows (runs or inferences): ``quantity, n,
    median, iqr_over_median, max_over_min, p99_over_median``."""
    rows = []
    for column in columns:
        v = table[column].dropna()
        median = v.median()
        rows.append((column, len(v), median, (v.quantile(0.75) - v.quantile(0.25)) / median,
                     v.max() / v.min(), v.quantile(0.99) / median))
    return pd.DataFrame(rows, columns=["quantity", "n", "median", "iqr_over_median", "max_over_min",
                                       "p99_over_median"])


def efficiency(summary: pd.DataFrame, domain: str | None = None) -> pd.DataFrame:
    """Work, time and energy per input size: ``input_size, gflop`` (per inference),
    ``latency_s``, ``ms_per_gflop`` and, for an energy ``domain``, ``energy_j`` and ``j_per_gflop``
    (medians over runs)."""
    gflop = summary["flops_per_inference_median"] / 1e9
    out = pd.DataFrame({"input_size": summary["input_size"], "gflop": gflop,
                        "latency_s": summary["latency_median_s_median"],
                        "ms_per_gflop": 1e3 * summary["latency_median_s_median"] / gflop})
    if domain is not None:
        out["energy_j"] = summary[f"{domain}{ENERGY_SUFFIX}_median"]
        out["j_per_gflop"] = out["energy_j"] / gflop
    return out


def compare(committed: pd.DataFrame, fresh: pd.DataFrame, quantities: Sequence[str] | None = None,
            labels: tuple[str, str] = ("committed", "fresh")) -> pd.DataFrame:
    """Two summaries side by side, one row per input size of either.

    For every quantity ``q`` (default: latency and the energies per inference of
    the domains either holds): the two medians and their ratio ``fresh / committed``;
    plus each side's number of runs. An energy domain present on one side only
    is NaN on the other, never compared to another domain.
    """
    a, b = labels
    if quantities is None:
        quantities = ["latency_median_s"] + [
            d + ENERGY_SUFFIX for d in _distinct(
                c[: -len(ENERGY_SUFFIX + "_median")] for s in (committed, fresh) for c in s.columns
                if c.endswith(ENERGY_SUFFIX + "_median") and "dynamic" not in c and s[c].notna().any())]
    keys = ["model", "input_size"]

    def side(summary: pd.DataFrame, label: str) -> pd.DataFrame:
        table = summary[keys + ["n_runs"]].rename(columns={"n_runs": f"n_runs {label}"})
        for q in quantities:
            column = f"{q}_median"
            table[f"{q} {label}"] = summary[column] if column in summary else np.nan
        return table

    out = side(committed, a).merge(side(fresh, b), on=keys, how="outer").sort_values(keys)
    for q in quantities:
        out[f"{q} {b}/{a}"] = out[f"{q} {b}"] / out[f"{q} {a}"]
    return out.reset_index(drop=True)


def key_numbers(runs: pd.DataFrame, summary: pd.DataFrame) -> dict:
    """The numbers a study is summed up by, JSON-ready: model, device, hardware, sizes,
    runs and iterations per size, energy sources and per-size medians of latency and
    of each domain's energy per inference."""
    domains = energy_domains(runs)
    by_size = summary.set_index("input_size")
    return {
        "model": _joined(runs["model"]),
        "device": _joined(runs["device"]),
        "hardware_cpu": _joined(runs["hardware_cpu"]),
        "hardware_gpu": _joined(runs["hardware_gpu"]),
        "weights": _joined(runs["weights"]),
        "sizes": [int(s) for s in by_size.index],
        "n_runs": {str(int(s)): int(n) for s, n in by_size["n_runs"].items()},
        "iterations": {str(int(s)): int(v) for s, v in runs.groupby("input_size")["iterations"].median().items()},
        "sources": {d: _joined(runs[d + SOURCE_SUFFIX]) for d in domains},
        "latency_median_s": _per_size(by_size["latency_median_s_median"]),
        "energy_per_inference_j": {d: _per_size(by_size[f"{d}{ENERGY_SUFFIX}_median"]) for d in domains},
    }


def jsonable(value):
    """``value`` with NaN and infinities as None and numpy scalars as Python ones, for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _per_size(column: pd.Series) -> dict:
    return {str(int(s)): (None if pd.isna(v) else float(v)) for s, v in column.items()}


# ---------------------------------------------------------------- one point: warm-up

def warmup(latencies: pd.DataFrame, tolerance: float = 0.10, steady_from: float = 0.5, window: int = 5) -> dict:
    """The warm-up effect of cold runs (their ``latencies``, timed from the first inference).

    Per iteration the median over runs is taken. ``steady_s`` is the median over
    the iterations from ``steady_from`` (a share of the run) on; ``first_s`` the
    first iteration's latency; ``warm_after`` the first iteration from which
    ``window`` consecutive iterations are all within ``tolerance`` above
    ``steady_s`` (so one slow iteration later on, another process taking the
    CPU for a moment, does not count as warm-up); None if there is none.
    """
    per_iteration = latencies.groupby("iteration")["latency_s"].median().sort_index()
    n = len(per_iteration)
    steady = float(per_iteration.iloc[int(n * steady_from):].median())
    slow = (per_iteration > steady * (1 + tolerance)).astype(int)
    all_warm = slow.rolling(window).sum().shift(-(window - 1)).to_numpy() == 0
    warm = np.flatnonzero(all_warm)
    return {
        "iterations": n,
        "runs": int(latencies["run"].nunique()),
        "first_s": float(per_iteration.iloc[0]),
        "steady_s": steady,
        "first_over_steady": float(per_iteration.iloc[0] / steady),
        "warm_after": int(warm[0]) if warm.size else None,
        "tolerance": tolerance,
    }


# ---------------------------------------------------------------- sweeps: the seed's BERT observations

def latency_steps(summary: pd.DataFrame, column: str = "latency_median_s_median") -> pd.DataFrame:
    """Steps of the median latency between consecutive input sizes.

    ``relative_step`` = L(to) / L(from) − 1; ``slope_s_per_unit`` = ΔL / Δsize; ``slope_vs_median``
    = that slope over the median slope of the sweep (about 1 everywhere for a
    latency linear in the size, well above 1 on a jump).
    """
    table = summary.sort_values("input_size")[["input_size", column]].dropna()
    size, latency = table["input_size"].to_numpy(dtype=float), table[column].to_numpy(dtype=float)
    slope = np.diff(latency) / np.diff(size)
    median_slope = float(np.median(slope)) if slope.size else np.nan
    return pd.DataFrame({
        "from": size[:-1].astype(int), "to": size[1:].astype(int),
        "latency_from_s": latency[:-1], "latency_to_s": latency[1:],
        "relative_step": latency[1:] / latency[:-1] - 1,
        "slope_s_per_unit": slope,
        "slope_vs_median": slope / median_slope if median_slope > 0 else np.nan,
    })


def latency_jump(summary: pd.DataFrame, region: tuple[int, int] = SEED_JUMP_REGION, factor: float = 2.0) -> dict:
    """Does the latency jump near ``region``? Computed on the medians of a sweep.

    The steepest segment is the one with the largest slope ΔL/Δsize; the
    observation holds when that segment overlaps ``region`` and its slope is at
    least ``factor`` times the sweep's median slope. The largest *relative*
    step is given too (it favours small sizes, where one step doubles the input).
    """
    steps = latency_steps(summary)
    if len(steps) < 2:
        return {"holds": None, "verdict": "not testable: fewer than three input sizes", "steps": len(steps)}
    steep = steps.loc[steps["slope_s_per_unit"].idxmax()]
    relative = steps.loc[steps["relative_step"].idxmax()]
    in_region = bool(steep["from"] < region[1] and steep["to"] > region[0])
    covers = bool(steps["from"].min() < region[1] and steps["to"].max() > region[0])
    ratio = float(steep["slope_vs_median"])
    if not covers:
        holds, verdict = None, f"not testable: the sweep does not reach {region[0]}-{region[1]}"
    else:
        holds = in_region and ratio >= factor
        where = f"between {int(steep['from'])} and {int(steep['to'])}"
        verdict = (f"{'holds' if holds else 'does not hold'}: the steepest latency step is {where} "
                   f"({ratio:.2f} x the median slope; a jump needs >= {factor:g} x within "
                   f"{region[0]}-{region[1]})")
    return {
        "holds": holds, "verdict": verdict,
        "steepest_from": int(steep["from"]), "steepest_to": int(steep["to"]), "slope_vs_median": ratio,
        "largest_relative_from": int(relative["from"]), "largest_relative_to": int(relative["to"]),
        "largest_relative_step": float(relative["relative_step"]),
    }


def spearman_pair(runs: pd.DataFrame, x: str, y: str) -> dict:
    """Spearman's ρ and p between two columns of ``runs`` over the runs where both are known."""
    both = runs[[x, y]].dropna()
    if len(both) < 3 or both[x].nunique() < 2 or both[y].nunique() < 2:
        return {"rho": np.nan, "p": np.nan, "n": len(both)}
    rho, p = stats.spearmanr(both[x], both[y])
    return {"rho": float(rho), "p": float(p), "n": len(both)}


def cpu_follows_latency(runs: pd.DataFrame, threshold: float = 0.8) -> dict:
    """The seed's second BERT observation: CPU energy per inference follows latency
    although the work runs on the GPU. ρ is computed over the runs; the verdict
    says when the data cannot test it (no GPU run, or an estimated CPU energy,
    which is TDP x load x time and follows latency by construction)."""
    domain = cpu_domain(runs)
    if domain is None:
        return {"rho": np.nan, "p": np.nan, "n": 0, "domain": None, "holds": None,
                "verdict": "not testable: no CPU energy in these runs"}
    result = spearman_pair(runs, "latency_median_s", domain + ENERGY_SUFFIX)
    source = _joined(runs[domain + SOURCE_SUFFIX])
    on_gpu = runs["device"].astype(str).str.startswith("cuda").all()
    follows = bool(np.isfinite(result["rho"]) and result["rho"] >= threshold and result["p"] < 0.05)
    text = (f"Spearman rho(latency, {domain} energy per inference) = {result['rho']:.2f} "
            f"(p = {result['p']:.2g}, {result['n']} runs)")
    if not on_gpu:
        holds = None
        verdict = (f"not testable as stated: the work ran on the CPU, not on a GPU; {text}"
                   + ("; the CPU energy is estimated (TDP x load x time), so it follows latency by construction"
                      if source == "estimated" else ""))
    elif not np.isfinite(result["rho"]):
        holds = None
        verdict = f"not testable: fewer than 3 runs with both values, or one of them constant; {text}"
    else:
        holds = follows
        verdict = f"{'holds' if follows else 'does not hold'} (threshold rho >= {threshold:g}): {text}" + (
            "; caution: this CPU energy is estimated (TDP x load x time)" if source == "estimated" else "")
    return {**result, "domain": domain, "source": source, "holds": holds, "verdict": verdict}


# ---------------------------------------------------------------- notebook plumbing

def figure_png(fig, dpi: int = 72) -> bytes:
    """The figure as PNG bytes at ``dpi`` (moderate, so committed notebooks stay small)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def display_path(path: str | Path, start: str | Path = ".") -> str:
    """``path`` relative to ``start`` (the notebook's folder), for printing without absolute paths."""
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def short_warnings() -> None:
    """Show warnings as ``Category: message`` (without the file and line of the
    code that raised them, which would print this machine's paths). Nothing is silenced."""
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"{category.__name__}: {message}\n"

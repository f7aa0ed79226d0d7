"""What the studies conclude, computed rather than typed: each function returns the numbers a notebook's
prose quotes (a dict or a small DataFrame), from a ``Study`` and its long summary (``stats.summarize``)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .metadata import cpu_domain, energy_domains, joined
from .tables import Study

# The seed's BERT observation: a latency jump near 300-350 tokens.
SEED_JUMP_REGION = (300, 350)


def medians(summary: pd.DataFrame, quantity: str, domain: str = "clock", by: str = "input_size") -> pd.Series:
    """The medians of one (domain, quantity) of a long summary, indexed by ``by`` (sorted)."""
    rows = summary[(summary["quantity"] == quantity) & (summary["domain"] == domain)]
    return rows.set_index(by)["median"].sort_index()


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


def efficiency(study: Study, summary: pd.DataFrame, domain: str | None = None) -> pd.DataFrame:
    """Work, time and energy per input size: ``input_size, gflop`` (per inference), ``latency_s``,
    ``ms_per_gflop`` and, for an energy ``domain``, ``energy_j`` and ``j_per_gflop`` (medians over runs)."""
    gflop = study.runs.groupby("input_size")["flops_per_inference"].median() / 1e9
    latency = medians(summary, "latency_median_s")
    out = pd.DataFrame({"gflop": gflop, "latency_s": latency})
    out["ms_per_gflop"] = 1e3 * out["latency_s"] / out["gflop"]
    if domain is not None:
        out["energy_j"] = medians(summary, "energy_per_inference_j", domain)
        out["j_per_gflop"] = out["energy_j"] / out["gflop"]
    return out.rename_axis("input_size").reset_index()


def side_by_side(first: pd.DataFrame, second: pd.DataFrame, quantities: Sequence[tuple[str, str]] | None = None,
                 labels: tuple[str, str] = ("committed", "fresh")) -> pd.DataFrame:
    """Two long summaries side by side, one row per input size of either: for every (domain, quantity)
    (default: latency and each energy domain's energy per inference) the two medians, their ratio
    ``second / first`` and each side's runs. A domain present on one side only is NaN on the other."""
    a, b = labels
    if quantities is None:
        domains = [d for d in dict.fromkeys([*first["domain"], *second["domain"]])
                   if ((first["domain"] == d) & (first["quantity"] == "energy_per_inference_j")).any()
                   or ((second["domain"] == d) & (second["quantity"] == "energy_per_inference_j")).any()]
        quantities = [("clock", "latency_median_s")] + [(str(d), "energy_per_inference_j") for d in domains]

    def side(summary: pd.DataFrame, label: str) -> pd.DataFrame:
        table = pd.DataFrame({f"n_runs {label}": summary.groupby("input_size")["n"].max()})
        for domain, quantity in quantities:
            table[f"{_name(domain, quantity)} {label}"] = medians(summary, quantity, domain)
        return table

    out = side(first, a).join(side(second, b), how="outer")
    for domain, quantity in quantities:
        name = _name(domain, quantity)
        out[f"{name} {b}/{a}"] = out[f"{name} {b}"] / out[f"{name} {a}"]
    return out.rename_axis("input_size").reset_index()


def _name(domain: str, quantity: str) -> str:
    return quantity if domain == "clock" else f"{domain}_{quantity}"


def key_numbers(study: Study, summary: pd.DataFrame) -> dict:
    """The numbers a study is summed up by, JSON-ready: model, device, hardware, sizes, runs and
    iterations per size, energy sources and per-size medians of latency and of each domain's energy
    per inference."""
    runs = study.runs
    domains = energy_domains(study)
    sources = study.select("energy_per_inference_j")
    return {
        "model": joined(runs["model"]),
        "device": joined(runs["device"]),
        "hardware_cpu": joined(runs["hardware_cpu"]),
        "hardware_gpu": joined(runs["hardware_gpu"]),
        "weights": joined(runs["weights"]),
        "sizes": [int(s) for s in sorted(runs["input_size"].unique())],
        "n_runs": {str(int(s)): int(n) for s, n in runs.groupby("input_size")["run"].nunique().items()},
        "iterations": {str(int(s)): int(v) for s, v in runs.groupby("input_size")["iterations"].median().items()},
        "sources": {d: joined(sources.loc[sources["domain"] == d, "source"]) for d in domains},
        "latency_median_s": _per_size(medians(summary, "latency_median_s")),
        "energy_per_inference_j": {d: _per_size(medians(summary, "energy_per_inference_j", d)) for d in domains},
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

def latency_steps(summary: pd.DataFrame) -> pd.DataFrame:
    """Steps of the median latency between consecutive input sizes.

    ``relative_step`` = L(to) / L(from) − 1; ``slope_s_per_unit`` = ΔL / Δsize; ``slope_vs_median``
    = that slope over the median slope of the sweep (about 1 everywhere for a
    latency linear in the size, well above 1 on a jump).
    """
    latency = medians(summary, "latency_median_s").dropna()
    size, value = latency.index.to_numpy(dtype=float), latency.to_numpy(dtype=float)
    slope = np.diff(value) / np.diff(size)
    median_slope = float(np.median(slope)) if slope.size else np.nan
    return pd.DataFrame({
        "from": size[:-1].astype(int), "to": size[1:].astype(int),
        "latency_from_s": value[:-1], "latency_to_s": value[1:],
        "relative_step": value[1:] / value[:-1] - 1,
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
    """Spearman's ρ and p between two columns of a wide runs table over the runs where both are known."""
    both = runs[[x, y]].dropna()
    if len(both) < 3 or both[x].nunique() < 2 or both[y].nunique() < 2:
        return {"rho": np.nan, "p": np.nan, "n": len(both)}
    from scipy import stats  # on first use: importing the package stays light

    rho, p = stats.spearmanr(both[x], both[y])
    return {"rho": float(rho), "p": float(p), "n": len(both)}


def cpu_follows_latency(study: Study, threshold: float = 0.8) -> dict:
    """The seed's second BERT observation: CPU energy per inference follows latency
    although the work runs on the GPU. ρ is computed over the runs; the verdict
    says when the data cannot test it (no GPU run, or an estimated CPU energy,
    which is TDP x load x time and follows latency by construction)."""
    domain = cpu_domain(study)
    if domain is None:
        return {"rho": np.nan, "p": np.nan, "n": 0, "domain": None, "holds": None,
                "verdict": "not testable: no CPU energy in these runs"}
    runs = study.wide(["latency_median_s", "energy_per_inference_j"])
    result = spearman_pair(runs, "latency_median_s", f"{domain}_energy_per_inference_j")
    source = joined(study.select("energy_per_inference_j", domain)["source"])
    on_gpu = study.runs["device"].astype(str).str.startswith("cuda").all()
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


# ---------------------------------------------------------------- generation: context, batch size, phases

def generation_trends(study: Study, domain: str, seed: int = 0) -> dict:
    """What a generation study (``analysis.phases``) shows in energy ``domain``, for a notebook's prose.

    ``context``: per batch size, the decode energy per token and the median
    inter-token latency at the longest prompt over the shortest; ``batch``: per
    prompt length, the decode energy per token at the largest batch over the
    smallest; each a dict of the two medians over runs, their ratio and its
    percentile-bootstrap 95 % CI (``stats.bootstrap_ratio_ci``, NaN with fewer
    than two runs a side), whether that CI comes from enough runs to trust
    (``ci_reliable``: ``MIN_RUNS_FOR_CI`` a side), the runs of each side and
    ``verdict`` (``higher``, ``lower`` or ``no difference shown``, as
    ``comparison.compare`` says it). ``prefill_share``: the median
    prefill share of the request's energy at every point (``input_size``,
    ``batch_size``, ``share``); ``decode_over_prefill``: at every point, the
    median decode energy per token over the median prefill energy per prompt
    token (``ratio``). ``source`` and ``method`` of the domain's decode energy.
    Raises ``ValueError`` when the study holds no decode energy per token in
    ``domain``.
    """
    from .stats import MIN_RUNS_FOR_CI, bootstrap_ratio_ci

    rows = study.select(["decode_energy_per_token_j", "prefill_energy_per_token_j", "itl_median_s",
                         "prefill_energy_share"], [domain, "clock"])
    decode = rows[(rows["domain"] == domain) & (rows["quantity"] == "decode_energy_per_token_j")]
    if decode.empty:
        raise ValueError(f"no decode energy per token in {domain}: not a generation study, or no such domain")
    rng = np.random.default_rng(seed)

    def ratio(quantity: str, where: str, fixed: object, vary: str, low: object, high: object) -> dict:
        values = rows[(rows["quantity"] == quantity) & (rows[where] == fixed)]
        a, b = (values.loc[values[vary] == v, "value"].to_numpy() for v in (low, high))
        low_ci, high_ci = bootstrap_ratio_ci(b, a, rng=rng) if len(a) and len(b) else (np.nan, np.nan)
        verdict = ("higher" if low_ci > 1 else "lower" if high_ci < 1 else
                   "no difference shown" if np.isfinite(low_ci) else "too few runs for a CI")
        return {where: fixed, f"{vary}_from": low, f"{vary}_to": high, "median_from": float(np.median(a)),
                "median_to": float(np.median(b)), "ratio": float(np.median(b) / np.median(a)),
                "ci_low": low_ci, "ci_high": high_ci, "ci_reliable": min(len(a), len(b)) >= MIN_RUNS_FOR_CI,
                "runs": [len(a), len(b)], "verdict": verdict}

    prompts, batches = sorted(decode["input_size"].unique()), sorted(decode["batch_size"].unique())
    context = [{"decode_energy_per_token_j": ratio("decode_energy_per_token_j", "batch_size", b, "input_size",
                                                   prompts[0], prompts[-1]),
                "itl_median_s": ratio("itl_median_s", "batch_size", b, "input_size", prompts[0], prompts[-1])}
               for b in batches] if len(prompts) > 1 else []
    batch = [ratio("decode_energy_per_token_j", "input_size", n, "batch_size", batches[0], batches[-1])
             for n in prompts] if len(batches) > 1 else []
    point = ["input_size", "batch_size"]
    median = rows[rows["domain"] == domain].groupby([*point, "quantity"])["value"].median().unstack("quantity")
    shares = median["prefill_energy_share"].rename("share").reset_index()
    costs = (median["decode_energy_per_token_j"] / median["prefill_energy_per_token_j"]).rename("ratio").reset_index()
    return {"domain": domain, "source": joined(decode["source"]), "method": joined(decode["method"]),
            "context": context, "batch": batch, "prefill_share": shares.to_dict("records"),
            "decode_over_prefill": costs.to_dict("records")}

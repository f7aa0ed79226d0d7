"""Comparisons of configurations: the ratio of medians to a baseline, with a bootstrap 95 % CI.

    compare(study)                                   # every varying dimension, the first tree as baseline
    compare(study, baseline="fp32")                  # a label
    compare(study, baseline={"dtype": "fp32"})       # dimension values

A *configuration* is one combination of values of the compared dimensions
(``by``); the *groups* are the values of the grouping dimensions (``within``:
``model`` and ``input_size`` and every other dimension that varies
independently of ``by``), so that each configuration is compared with the
baseline of its own group (same model, same input size, ...). One row per
(group, configuration other than the baseline, domain, quantity): the runs and
median of each side, ``ratio`` = median / baseline median, and the percentile
bootstrap CI of that ratio (``stats.bootstrap_ratio_ci``), paired where the
runs were interleaved. The method and the columns: docs/tables.md,
"compare".
"""
from __future__ import annotations

import zlib
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .metadata import distinct, headline_domains
from .problems import warn
from .stats import MIN_RUNS_FOR_CI, agreed, bootstrap_ratio_ci
from .tables import Study

DEFAULT_QUANTITIES = ("energy_per_inference_j", "energy_per_sample_j", "latency_median_s")
COMPARISON_COLUMNS = ["configuration", "baseline", "domain", "quantity", "n", "n_baseline", "median",
                      "median_baseline", "ratio", "ci_low", "ci_high", "ci_reliable", "paired", "verdict", "source",
                      "hardware", "unit"]
# compared only when asked (by=) or when nothing else varies; grouped otherwise
GROUPING = ("model", "task", "input_size")
INTERLEAVED = "interleave"  # the sweep order (meta.json's ``order``) whose run k of every point ran together


def compare(study: Study, baseline: str | Mapping[str, object] | None = None, by: Sequence[str] | None = None, *,
            within: Sequence[str] | None = None, quantities: Sequence[str] = DEFAULT_QUANTITIES,
            domains: Sequence[str] | None = None, paired: bool | None = None, n_boot: int = 2000,
            confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Each configuration against the baseline of its group: a long table, ``within`` columns then
    ``COMPARISON_COLUMNS`` (docs/tables.md, "compare"), one row per (group, configuration other than the
    baseline, domain, quantity) either side has. ``median`` and ``median_baseline`` are in ``unit``;
    ``ratio`` = median / median_baseline; ``ci_low``, ``ci_high``: its percentile bootstrap CI at
    ``confidence`` from ``n_boot`` resamples (``stats.bootstrap_ratio_ci``); ``verdict``: ``lower`` /
    ``higher`` when the CI is below / above 1, ``no difference shown`` when it holds 1, the two sources
    added when they differ (``lower (estimated vs measured)``).

    ``by``: the compared dimensions (default: every dimension that varies but
    ``model``, ``task`` and ``input_size``, and ``label`` too when the others
    tell the labels apart; ``model`` when nothing else varies). ``within``: the
    grouping dimensions (default: ``model`` and ``input_size`` and every other
    dimension that varies and is not set by ``by``); any other dimension that
    varies is pooled, with a warning. ``baseline``: a label, a mapping of
    dimension values (``{"dtype": "fp32"}``), or None for the configuration of
    the first run loaded (the first tree given); in each group it must name
    exactly one whole configuration. ``quantities`` are compared in each of
    ``domains`` where they exist (default: the headline energy domains, then
    ``clock``, the latencies). ``paired``: True pairs run ``k`` of each side,
    False never, None when both sides are one sweep whose ``meta.json`` says
    ``order: interleave`` and hold the same run indices. ``seed``: the rows of
    one configuration of one group draw from a generator seeded by ``seed``
    and their names (group, configuration, baseline), so a CI does not depend
    on what else is compared.

    Raises ``ValueError`` (one line) for an unknown dimension or baseline, a
    baseline matching several configurations or part of one, runs that cannot
    be paired when ``paired=True``, or nothing to compare.
    """
    quantities = [quantities] if isinstance(quantities, str) else list(quantities)
    domains = [domains] if isinstance(domains, str) else domains
    runs = study.runs
    by = _compared(study, by)
    within = _grouping(study, by, within)
    names = pd.Series([_text(by, values) for values in runs[by].itertuples(index=False, name=None)],
                      index=runs["run_id"].to_numpy())
    chosen, wanted = _baseline_runs(study, baseline, names)
    group_of = runs.groupby(within, sort=True, dropna=False).ngroup() if within else pd.Series(0, index=runs.index)
    runs = runs.assign(group=group_of.to_numpy(), configuration=names.to_numpy(), chosen=chosen.to_numpy())
    domains = list(domains) if domains is not None else [*headline_domains(study), "clock"]
    rows = study.select(quantities, domains)
    keyed = runs.set_index("run_id")
    rows = rows.assign(group=keyed["group"].reindex(rows["run_id"]).to_numpy(),
                       configuration=keyed["configuration"].reindex(rows["run_id"]).to_numpy())
    values = dict(iter(rows.groupby(["group", "configuration", "domain", "quantity"], observed=True, sort=False)))
    figures = [(d, q) for q in quantities for d in domains]
    options = {"paired": paired, "n_boot": n_boot, "confidence": confidence, "seed": seed}
    parts, missing = [], []
    for number, group in runs.groupby("group", sort=True):
        point = tuple(group[within].iloc[0])
        where = _text(within, point)
        base = _baseline_of(group["configuration"].to_numpy(), group["chosen"].to_numpy(), wanted, where)
        if base is None:
            missing.append(where)
            continue
        for row in _compare_group(group, base, figures, {k[1:]: v for k, v in values.items() if k[0] == number},
                                  where, **options):
            parts.append({**dict(zip(within, point)), **row})
    if not parts:
        raise ValueError(f"nothing to compare: {_nothing_why(names, missing, wanted, within)}")
    if missing:
        warn(f"compare: no baseline ({wanted}) at {'; '.join(missing)}: the configurations there are not compared")
    table = pd.DataFrame(parts, columns=[*within, *COMPARISON_COLUMNS])
    table[["n", "n_baseline"]] = table[["n", "n_baseline"]].astype(int)
    return table


def _compare_group(runs: pd.DataFrame, base: str, figures: list[tuple[str, str]], values: dict[tuple, pd.DataFrame],
                   where: str, *, paired: bool | None, n_boot: int, confidence: float, seed: int) -> list[dict]:
    """The rows of one group: each configuration of its ``runs`` but ``base`` against ``base``, for every
    (domain, quantity) of ``figures`` either side has; ``values[(configuration, domain, quantity)]``: the long
    rows of a side."""
    out = []
    base_runs = runs[runs["configuration"] == base]
    for configuration in dict.fromkeys(runs["configuration"]):
        if configuration == base:
            continue
        side_runs = runs[runs["configuration"] == configuration]
        pairs = _pairing(side_runs, base_runs, paired, f"{configuration} and {base} at {where}")
        for domain, quantity in figures:
            side, against = values.get((configuration, domain, quantity)), values.get((base, domain, quantity))
            if side is None and against is None:
                continue
            rng = np.random.default_rng([seed, zlib.crc32(repr((where, configuration, base)).encode())])
            row = _ratio(_or_empty(side, against), _or_empty(against, side), pairs, n_boot=n_boot,
                         confidence=confidence, rng=rng)
            out.append({"configuration": configuration, "baseline": base, "domain": domain, "quantity": quantity,
                        **row, "hardware": _hardware(side_runs, base_runs, domain)})
    return out


def _or_empty(rows: pd.DataFrame | None, like: pd.DataFrame) -> pd.DataFrame:
    """``rows``, or none of the rows of ``like`` when it is None."""
    return like.iloc[:0] if rows is None else rows


def _compared(study: Study, by: Sequence[str] | None) -> list[str]:
    """The compared dimensions: ``by`` checked, or the default."""
    if by is not None:
        by = list(by)
        _check_dimensions(study, by)
        if not by:
            raise ValueError("by names no dimension to compare")
        return by
    varying = study.varying()
    by = [d for d in varying if d not in GROUPING] or [d for d in varying if d == "model"]
    if not by:
        raise ValueError("nothing to compare: no dimension but the input size varies "
                         "(name the dimensions to compare, e.g. by=['input_size'])")
    others = [d for d in by if d != "label"]
    if "label" in by and others and _sets(study.runs, others, "label"):
        by.remove("label")
    return by


def _grouping(study: Study, by: list[str], within: Sequence[str] | None) -> list[str]:
    """The grouping dimensions: ``within`` checked, or the default; warns of the dimensions pooled."""
    varying = study.varying()
    if within is None:
        within = [d for d in study.dimensions if d not in by and (
            d == "input_size" or (d == "model" and d not in varying)
            or (d in varying and not _sets(study.runs, by, d)))]
    else:
        within = list(within)
        _check_dimensions(study, within)
        both = [d for d in within if d in by]
        if both:
            raise ValueError(f"{', '.join(both)}: both compared (by) and grouped (within)")
    pooled = [d for d in varying if d not in by and d not in within and not _sets(study.runs, [*by, *within], d)]
    if pooled:
        warn("compare: runs that differ in " + "; ".join(
            f"{d} ({', '.join(map(str, distinct(study.runs[d])))})" for d in pooled)
             + " are pooled in each configuration (group by them with within=)", stacklevel=4)
    return within


def _check_dimensions(study: Study, names: list[str]) -> None:
    unknown = [d for d in names if d not in study.dimensions]
    if unknown:
        raise ValueError(f"unknown dimension {', '.join(unknown)} (dimensions: {', '.join(study.dimensions)})")


def _sets(runs: pd.DataFrame, keys: list[str], column: str) -> bool:
    """True when the values of ``keys`` set that of ``column`` (one value of ``column`` for each of theirs)."""
    if not keys:
        return runs[column].nunique(dropna=False) <= 1
    return bool((runs.groupby(keys, dropna=False)[column].nunique(dropna=False) <= 1).all())


def _text(names: Sequence[str], values: Sequence[object]) -> str:
    """``dtype=bf16, threads=8``: dimension values to read."""
    return ", ".join(f"{name}={value}" for name, value in zip(names, values))


def _baseline_runs(study: Study, baseline: str | Mapping[str, object] | None,
                   names: pd.Series) -> tuple[pd.Series, str]:
    """Whether each run (by run id, like ``names``) is one the baseline names, and the baseline as asked,
    to read."""
    runs = study.runs
    if baseline is None:
        return names == names.iloc[0], names.iloc[0]
    wanted = {"label": baseline} if isinstance(baseline, str) else dict(baseline)
    _check_dimensions(study, list(wanted))
    chosen = np.ones(len(runs), dtype=bool)
    for dimension, value in wanted.items():
        chosen &= runs[dimension].astype(str).to_numpy() == str(value)
    text = _text(list(wanted), list(wanted.values()))
    if not chosen.any():
        raise ValueError(f"unknown baseline {text}: " + "; ".join(
            f"{d} takes {', '.join(map(str, distinct(runs[d])))}" for d in wanted))
    return pd.Series(chosen, index=names.index), text


def _baseline_of(names: np.ndarray, chosen: np.ndarray, wanted: str, where: str) -> str | None:
    """The one configuration among a group's runs (their configurations ``names``, whether the baseline names
    them ``chosen``) that the baseline names, None if none; raises if several or part of one."""
    found = list(dict.fromkeys(names[chosen]))
    if len(found) > 1:
        raise ValueError(f"baseline {wanted} matches {len(found)} configurations at {where} ({'; '.join(found)}): "
                         f"name it with more dimension values")
    if found and not chosen[names == found[0]].all():
        raise ValueError(f"baseline {wanted} is only part of configuration {found[0]} at {where}: "
                         f"compare by the dimensions it names")
    return found[0] if found else None


def _pairing(side: pd.DataFrame, base: pd.DataFrame, paired: bool | None, what: str) -> bool:
    """Whether the runs of two sides are compared in pairs of one run index (see ``compare``)."""
    runs_a, runs_b = set(side["run"]), set(base["run"])
    unique = len(runs_a) == len(side) and len(runs_b) == len(base)
    if paired is True and not unique:
        raise ValueError(f"cannot pair {what}: a run index appears twice on one side (runs pooled over a "
                         f"dimension); group by it with within=")
    if paired is not None:
        return paired
    one_sweep = "order" in side and {*side["order"], *base["order"]} == {INTERLEAVED} \
        and len({*side["label"], *base["label"]}) == 1
    return bool(unique and one_sweep and runs_a == runs_b)


def _ratio(side: pd.DataFrame, against: pd.DataFrame, paired: bool, *, n_boot: int, confidence: float,
           rng: np.random.Generator) -> dict:
    """The comparison of one quantity (long rows of each side): the runs and median of each side, the ratio,
    its CI and verdict."""
    a, b = side["value"].to_numpy(dtype=float), against["value"].to_numpy(dtype=float)
    if paired:
        _, i, j = np.intersect1d(side["run"].to_numpy(), against["run"].to_numpy(), return_indices=True)
        a, b = a[i], b[j]
        sound = ~np.isnan(a) & ~np.isnan(b)
        a, b = a[sound], b[sound]
    else:
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    sources = (agreed(side["source"]), agreed(against["source"]))
    row = {"n": len(a), "n_baseline": len(b), "median": np.median(a) if len(a) else np.nan,
           "median_baseline": np.median(b) if len(b) else np.nan, "ratio": np.nan, "ci_low": np.nan,
           "ci_high": np.nan, "ci_reliable": min(len(a), len(b)) >= MIN_RUNS_FOR_CI, "paired": paired,
           "source": agreed(sources), "unit": agreed([*side["unit"], *against["unit"]])}
    if not len(a) or not len(b):
        return {**row, "verdict": "not on both sides"}
    if (a <= 0).any() or (b <= 0).any():
        return {**row, "verdict": "no ratio: values not all positive"}
    low, high = bootstrap_ratio_ci(a, b, paired=paired, n_boot=n_boot, confidence=confidence, rng=rng)
    row.update(ratio=row["median"] / row["median_baseline"], ci_low=low, ci_high=high)
    if np.isnan(low):
        return {**row, "verdict": "too few runs for a CI"}
    verdict = "lower" if high < 1 else "higher" if low > 1 else "no difference shown"
    if sources[0] != sources[1]:
        verdict += f" ({sources[0]} vs {sources[1]})"
    return {**row, "verdict": verdict}


def _hardware(side: pd.DataFrame, base: pd.DataFrame, domain: str) -> str | None:
    """The hardware behind a domain's figures: a GPU domain's GPU, the CPU for the others, the model's device
    for latencies; ``A vs B`` when the sides differ."""
    def of(runs: pd.DataFrame) -> str | None:
        on_gpu = runs["device"].astype(str).str.startswith("cuda") if domain == "clock" else \
            pd.Series(domain.startswith("gpu"), index=runs.index)
        found = distinct(np.where(on_gpu, runs["hardware_gpu"], runs["hardware_cpu"]))
        return " / ".join(map(str, found)) or None

    a, b = of(side), of(base)
    return a if a == b else f"{a or 'unknown'} vs {b or 'unknown'}"


def _nothing_why(names: pd.Series, missing: list[str], wanted: str, within: list[str]) -> str:
    configurations = list(dict.fromkeys(names))
    if len(configurations) == 1:
        return f"one configuration only ({configurations[0]})"
    if not missing:
        return f"no group holds a configuration besides the baseline (grouped by {', '.join(within)})"
    return f"no group holds both the baseline ({wanted}) and another configuration (grouped by {', '.join(within)})"

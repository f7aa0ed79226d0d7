"""What a study ran on: hardware, sensors, where each energy figure comes from, the protocol run.

Every function takes a ``Study`` (its records keep what each run's
``meta.json`` says) and returns a small DataFrame or dict; nothing is printed.
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd

from measure import runtree

from .tables import Study

# What each reported energy domain is, for the reader.
DOMAIN_TEXT = {
    "gpu": "GPU the model ran on",
    "gpu_node": "all GPUs of the node (node total)",
    "cpu_package": "CPU package (RAPL, sum over sockets)",
    "dram": "DRAM (RAPL, sum over sockets)",
    "cpu_estimated": "CPU package, modelled from TDP x machine-wide CPU load",
}


def describe_domain(domain: str) -> str:
    """What an energy domain measures, in words (``gpu1``: another GPU of the node)."""
    if domain in DOMAIN_TEXT:
        return DOMAIN_TEXT[domain]
    if domain.startswith("gpu"):
        return f"GPU {domain[3:]} of the node (not the model's)"
    return domain


def distinct(values: Iterable) -> list:
    """Distinct values in order, without None, NaN, empty strings or empty lists."""
    out = []
    for value in values:
        if value is None or value != value or value in ("", []):  # value != value: NaN
            continue
        if value not in out:
            out.append(value)
    return out


def joined(values: Iterable) -> str:
    """The distinct values as ``a / b``, or ``none``."""
    found = [str(v) for v in distinct(values)]
    return " / ".join(found) if found else "none"


def hardware(study: Study) -> pd.DataFrame:
    """The machine the runs were measured on: one row per item (``item``, ``value``).

    Device, CPU model and logical CPUs, GPUs (``none`` when there are none),
    torch threads, the platform, the library versions and the weights; the host
    name is left out.
    """
    info, runs = study.info.loc[study.runs["run_id"]], study.runs
    hosts = [h or {} for h in info["host"]]
    gpus = [f"{g.get('name')} (driver {g.get('driver')})" for h in hosts for g in h.get("gpus") or []]
    rows = [
        ("device", joined(runs["device"])),
        ("CPU", joined(h.get("cpu_model") for h in hosts)),
        ("logical CPUs", joined(h.get("logical_cpus") for h in hosts)),
        ("torch threads", joined(runs["threads"])),
        ("GPUs", joined(gpus)),
        ("platform", joined(h.get("platform") for h in hosts)),
        ("python / torch / torchvision / transformers", joined(
            f"{h.get('python')} / {h.get('torch')} / {h.get('torchvision')} / {h.get('transformers')}"
            for h in hosts if h)),
        ("weights", joined(runs["weights"])),
    ]
    return pd.DataFrame(rows, columns=["item", "value"])


def sensors(study: Study) -> pd.DataFrame:
    """Every sensor domain sampled, and every sensor that could not be opened with the reason.

    Columns ``sensor, domain, source, detail``: ``source`` is ``measured``,
    ``estimated`` or ``unavailable``; ``detail`` holds the channels, the
    estimate's model and TDP, or the reason a sensor is missing.
    """
    info = study.info.loc[study.runs["run_id"]]
    rows: list[tuple] = []
    for described, missing in zip(info["sensors"], info["unavailable"]):
        for domain, about in (described or {}).items():
            detail = ", ".join(c.split(".", 1)[-1] for c in about.get("channels") or [])
            if about.get("sensor") == "estimate":
                detail = (f"{about.get('model', '')}; tdp_w = {about.get('tdp_w')} ({about.get('tdp_source')}), "
                          f"idle_fraction = {about.get('idle_fraction')}")
            rows.append((about.get("sensor"), domain, about.get("source"), detail))
        for sensor, reason in (missing or {}).items():
            rows.append((sensor, "", "unavailable", reason))
    table = pd.DataFrame(rows, columns=["sensor", "domain", "source", "detail"]).drop_duplicates()
    order = {"measured": 0, "estimated": 1, "unavailable": 2}
    return (table.sort_values(["source", "sensor", "domain"], key=lambda c: c.map(order) if c.name == "source" else c)
            .reset_index(drop=True))


def unavailable(study: Study) -> dict[str, str]:
    """``{sensor: reason}`` for every sensor that could not be opened in any of the runs."""
    found: dict[str, str] = {}
    for missing in study.info.loc[study.runs["run_id"], "unavailable"]:
        for sensor, reason in (missing or {}).items():
            found.setdefault(sensor, reason)
    return found


def energy_domains(study: Study) -> list[str]:
    """Reported domains with at least one energy per inference: the model's GPU first, node totals and other
    GPUs last."""
    found = distinct(study.select("energy_per_inference_j")["domain"])
    rank = {"gpu": 0, "cpu_package": 1, "dram": 2, "cpu_estimated": 3, "gpu_node": 6}
    return sorted(map(str, found), key=lambda d: (rank.get(d, 5 if d.startswith("gpu") else 4), d))


def headline_domains(study: Study) -> list[str]:
    """The domains a headline reports: the model's GPU and the CPU's (measured or estimated) and DRAM;
    never node totals or other GPUs."""
    return [d for d in energy_domains(study) if d in ("gpu", "cpu_package", "dram", "cpu_estimated")]


def cpu_domain(study: Study) -> str | None:
    """``cpu_package`` (RAPL, measured) when the runs hold it, else ``cpu_estimated``, else None."""
    domains = energy_domains(study)
    return next((d for d in ("cpu_package", "cpu_estimated") if d in domains), None)


def has_gpu(study: Study) -> bool:
    """True when the runs hold energy or utilisation of the GPU the model ran on."""
    return not study.select(["energy_per_inference_j", "sm_util_mean_pct"], "gpu").empty


def energy_sources(study: Study) -> pd.DataFrame:
    """Where every energy figure comes from: ``domain, what, source, method, runs``."""
    rows = study.select("energy_per_inference_j")
    table = (rows.groupby(["domain", "source", "method"], observed=True, dropna=False).size()
             .rename("runs").reset_index())
    table = table[table["runs"] > 0]
    table.insert(1, "what", table["domain"].map(lambda d: describe_domain(str(d))))
    order = {d: i for i, d in enumerate(energy_domains(study))}
    return table.sort_values("domain", key=lambda c: c.map(order)).reset_index(drop=True)


def window_dates(study: Study) -> pd.Series:
    """The UTC date (``YYYY-MM-DD``) each run's window started, from its ``meta.json``, indexed by ``run_id``;
    None where none is recorded (AIPowerMeter's files, a ``meta.json`` gone since loading)."""
    dates = []
    for path in study.info.loc[study.runs["run_id"], "path"]:
        try:
            start = runtree.read_meta(path).window.get("start_utc")
        except runtree.MetaError:
            start = None
        dates.append(start[:10] if isinstance(start, str) else None)
    return pd.Series(dates, index=study.runs["run_id"].to_numpy(), name="date", dtype=object)


def protocol(study: Study) -> pd.DataFrame:
    """The protocol actually run, per point: runs, timed iterations, untimed warm-up, sampling period
    and the median window (s)."""
    by = [d for d in study.dimensions if d in study.varying() or d == "input_size"]
    groups = study.runs.groupby(by, dropna=False)
    table = pd.DataFrame({
        "runs": groups["run"].nunique(),
        "iterations": groups["iterations"].agg(lambda s: joined(int(v) for v in s if pd.notna(v))),
        "warmup": groups["warmup"].agg(lambda s: joined(int(v) for v in s if pd.notna(v))),
        "period_s": groups["period_s"].agg(joined),
        "window_s_median": groups["window_s"].median().round(2),
    })
    return table.reset_index()

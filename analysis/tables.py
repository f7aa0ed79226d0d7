"""Run trees -> a ``Study``: one row per run, and per-run quantities in long form (docs/tables.md).

    study = load_study("runs/resnet50")                  # ours or AIPowerMeter's, any depth
    study = load_study(["runs/fp32", "runs/bf16"])       # several trees, one label each
    study.runs        # one row per run: label, dimensions, run, constants
    study.quantities  # one row per (run, domain, quantity): value, unit, source, method, note

Reported domains: ``gpu`` is the GPU the model ran on (the run's
``gpu_domain``); another GPU of the node keeps its name (``gpu1``) and the sum
over every GPU of the node is ``gpu_node``, a separate, labelled total;
``cpu_package`` and ``dram`` sum RAPL's sockets; ``cpu_estimated`` is the
labelled CPU estimate; ``process`` this process tree; ``clock`` the latencies.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from functools import cached_property, wraps
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import chunks, idle, parallel, phases, readers, reduce, study_cache
from .cache import Cache
from .problems import NoUsableRuns, captured, reissue, warn

# quantities derived per (run, energy domain), with their units
ENERGY_QUANTITIES = {
    "energy_j": "J", "energy_per_inference_j": "J", "energy_per_sample_j": "J", "mean_power_w": "W",
    "idle_power_w": "W", "dynamic_energy_per_inference_j": "J", "energy_per_gflop_j": "J/GFLOP",
    "gap_samples": "samples",
}
RUN_CONSTANTS = ["status", "weights", "gpu_domain", "hardware_gpu", "hardware_cpu", "iterations", "warmup",
                 "period_s", "window_s", "params", "flops_per_inference", "logical_cpus", "order", "format", "folder"]
LONG_COLUMNS = ["domain", "quantity", "value", "unit", "source", "method", "note"]
LABELS = chunks.LABELS  # categories in the quantities table


@dataclass(eq=False)
class Study:
    """The tables of one or several run trees (docs/tables.md).

    ``runs``: one row per run (identity columns ``dimensions``, then ``run``
    and its constants). ``quantities``: one row per (run, domain, quantity),
    long form. ``latencies`` and ``samples`` are read again from the files on
    first use, so loading never holds every sample or latency in memory.
    """

    runs: pd.DataFrame
    quantities: pd.DataFrame
    info: pd.DataFrame  # the readers' records, for lazy reads

    @property
    def dimensions(self) -> list[str]:
        """The identity columns of a run (``label``, ``model``, ..., ``device``, and any a tree adds)."""
        return list(self.runs.columns[1: self.runs.columns.get_loc("run")])

    @property
    def identity(self) -> list[str]:
        """``dimensions`` and ``run``: the columns that name one run."""
        return [*self.dimensions, "run"]

    def varying(self) -> list[str]:
        """The dimensions that take more than one value in this study."""
        return [d for d in self.dimensions if self.runs[d].nunique(dropna=False) > 1]

    def select(self, quantity: str | Sequence[str], domains: str | Sequence[str] | None = None) -> pd.DataFrame:
        """The long rows of ``quantity`` (one or several) in ``domains`` (default: all) that have a value."""
        names = [quantity] if isinstance(quantity, str) else list(quantity)
        rows = self.quantities[self.quantities["quantity"].isin(names) & self.quantities["value"].notna()]
        if domains is not None:
            rows = rows[rows["domain"].isin([domains] if isinstance(domains, str) else list(domains))]
        return rows.reset_index(drop=True)

    @cached_property
    def latencies(self) -> pd.DataFrame:
        """One row per timed inference: identity, ``iteration``, ``latency_s``."""
        with_ids = self.info.loc[self.runs["run_id"]]
        values = readers.latencies(with_ids)
        ids = values.index.to_numpy()
        starts = np.flatnonzero(np.diff(ids, prepend=-1))
        counts = np.diff(np.r_[starts, len(ids)])
        keyed = self.runs.set_index("run_id")
        table = pd.DataFrame({c: np.repeat(keyed.loc[ids[starts], c].to_numpy(), counts) for c in self.identity})
        table["iteration"] = np.arange(len(ids)) - np.repeat(starts, counts)
        table["latency_s"] = values.to_numpy()
        return table

    @cached_property
    def samples(self) -> pd.DataFrame:
        """One row per sample and channel: identity, ``t_s, utc, mark, domain, metric, value``."""
        with_ids = self.info.loc[self.runs["run_id"]]
        keyed = self.runs.set_index("run_id")
        parts = [_long_samples(frame, keyed, self.identity) for frame in readers.sample_frames(with_ids, text=True)]
        return pd.concat(parts, ignore_index=True)

    def wide(self, quantities: Sequence[str] | None = None) -> pd.DataFrame:
        """The runs table with one column per (domain, quantity), ``<domain>_<quantity>``, and
        ``<domain>_source`` / ``<domain>_method`` for energy domains: a wide export for tools that
        want one row per run (Spearman, spreadsheets). Default: every quantity."""
        rows = self.quantities if quantities is None else self.quantities[
            self.quantities["quantity"].isin(list(quantities))]
        values = rows.pivot_table(index="run_id", columns=["domain", "quantity"], values="value", aggfunc="first",
                                  dropna=False, observed=True)
        recorded = set(zip(rows["domain"], rows["quantity"]))  # dropna=False pairs every domain with every quantity
        values = values[[pair for pair in values.columns if pair in recorded]]
        values.columns = [wide_name(d, q) for d, q in values.columns]
        energy = rows[rows["quantity"] == "energy_j"]
        labels = energy.pivot_table(index="run_id", columns="domain", values=["source", "method"],
                                    aggfunc="first", observed=True)
        labels.columns = [f"{d}_{what}" for what, d in labels.columns]
        return self.runs.join(values.join(labels), on="run_id")


def wide_name(domain: str, quantity: str) -> str:
    """The column of (domain, quantity) in a wide table: ``<domain>_<quantity>``, the quantity alone for
    the ``clock`` (latencies)."""
    return quantity if domain == "clock" else f"{domain}_{quantity}"


def _without_cycle_collection(function: Callable) -> Callable:
    """``function`` run with Python's cyclic garbage collector off (then as it was): a load makes a few
    objects per run that live on (records, paths, messages), which each full collection walks again, and
    next to no cycles (a load of 20,000 runs: 0.15-0.25 s less, the same peak memory)."""
    @wraps(function)
    def paused(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()
    return paused


@_without_cycle_collection
def load_study(paths: str | Path | Sequence[str | Path], labels: Sequence[str] | None = None, *,
               model: str | None = None, include_incomplete: bool = False, cache: bool = True,
               workers: int | None = None, progress: bool = True) -> Study:
    """Read every run under ``paths`` (a tree, a folder of trees, or a list of them) into a ``Study``.

    Only ``complete`` runs are kept unless ``include_incomplete`` (their
    ``status`` column says what they are). ``labels`` names the trees (default:
    each tree's folder name); ``model`` names the model of AIPowerMeter runs
    (default: a folder name from their path). ``cache``: keep what reading each
    complete run gave, and read it back while the run's files are unchanged
    (``analysis.cache``), and keep the tables of the whole load, read back
    while no file it read has changed (``analysis.study_cache``); False: read
    every run, keep nothing. ``workers``: the
    processes that read the runs not in the cache (default: every CPU this
    process may use; 1: none, all in this process). ``progress``: a progress
    bar on stderr when reading takes more than a couple of seconds.
    Problems in the input are ``AnalysisWarning``s naming the file (the same
    from the cache); raises ``NoUsableRuns`` when no run is left.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    with parallel.Workers(workers, progress) as pool:
        walks = readers.walk_trees(paths, labels, lambda function, chunks_: pool.map(
            function, chunks_, sizes=[len(c) for c in chunks_], desc="listing folders", unit="folder"))
        kept = study_cache.Kept(paths, walks, labels, model, include_incomplete) if cache and paths else None
        found = kept.read() if kept else None
        if found is not None:
            tables, messages = found
            reissue(messages)
            return Study(**tables)
        try:
            with captured() as messages:  # kept with the tables, issued again when they are read back
                tables = _load(paths, walks, labels, model, include_incomplete, cache, pool)
        finally:
            reissue(messages)
    if kept:
        kept.write(tables, messages)
    return Study(**tables)


def _load(paths: list[Path], walks: list[readers.Walk], labels: Sequence[str] | None, model: str | None,
          include_incomplete: bool, cache: bool, pool: parallel.Workers) -> dict[str, pd.DataFrame]:
    """``load_study``'s tables (``runs``, ``quantities``, ``info``) from the trees of ``paths``, walked; what
    is read, read by ``pool``."""
    store = Cache(paths) if cache else None

    def mapper(function, chunks_):
        return pool.map(function, chunks_, sizes=[len(c) for c in chunks_], desc="reading meta.json")
    info = readers.discover(paths, labels, model=model, include_incomplete=include_incomplete, store=store,
                            mapper=mapper, walks=walks)
    kept, found = store.reductions(info) if store else (chunks.combine([]), np.zeros(len(info), dtype=bool))
    todo = chunks.split(info[~found])
    computed = list(pool.map(chunks.reduce_chunk, todo, sizes=[len(c) for c in todo], desc="reading runs"))
    reduced = chunks.combine([kept, *computed])
    for run in info.index:  # in run order, whether just read or from the cache
        reissue(reduced.messages.get(run, []))
    reissue(reduced.loose)
    reduce.warn_other_load(reduced.rows, info["path"])
    windows = reduced.windows
    if windows.empty:
        if store:
            store.store(info, computed)
        raise NoUsableRuns(f"{', '.join(map(str, paths))}: no run with a readable {readers.SAMPLES_FILE}")
    info = info.loc[windows.index]
    info["gpu_domain"] = info["gpu_domain"].where(info["gpu_domain"].notna(), windows["gpu_domain"])
    baselines = idle.baselines(info, store.idle_power(idle.recording_power) if store else None)
    if store:
        store.store(info, computed)
    rows, phase_rows = reduced.rows, reduced.phases
    del store, kept, computed, todo, reduced  # at scale, memory holds each thing once
    runs = _runs_table(info, windows, rows)
    quantities = _quantities(rows, runs, baselines)
    del rows
    quantities = chunks.concat_rows([quantities, phases.quantities(quantities, phase_rows, runs, info)])
    return {"runs": runs, "quantities": _with_identity(quantities, runs), "info": info}


def _runs_table(info: pd.DataFrame, windows: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    counted = rows[rows["quantity"] == "latency_count"]
    counts = pd.Series(counted["value"].to_numpy(), index=counted["run_id"].to_numpy()).reindex(
        info.index, fill_value=0).astype(int)
    iterations = pd.to_numeric(info["iterations"], errors="coerce").astype(float)
    unknown = iterations.isna().to_numpy()  # AIPowerMeter's: as many as the latencies
    iterations[unknown] = counts[unknown].where(counts[unknown] > 0)
    for run in info.index[~unknown & (counts != iterations) & (counts > 0)]:
        warn(f"{info.at[run, 'path'] / readers.files.LATENCY_CSV}: {counts[run]} latencies for "
             f"{iterations[run]:g} iterations; latency statistics from those present")
    identity = list(info.columns[: info.columns.get_loc("run") + 1])
    runs = info[identity].copy()
    for column in RUN_CONSTANTS:
        runs[column] = windows[column] if column == "window_s" else info[column]
    runs["iterations"] = iterations
    numeric = ["iterations", "warmup", "period_s", "window_s", "params", "flops_per_inference", "logical_cpus"]
    runs[numeric] = runs[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    runs["window_complete"] = windows["window_complete"]
    runs.insert(0, "run_id", info.index)
    return runs.reset_index(drop=True)


def _quantities(rows: pd.DataFrame, runs: pd.DataFrame, baselines: pd.DataFrame) -> pd.DataFrame:
    """Sensor-domain rows -> reported domains, with the derived energy quantities."""
    keyed = runs.set_index("run_id")
    rows = rows.assign(domain=pd.Categorical(_reported(rows["run_id"], rows["domain"], keyed["gpu_domain"])))
    per_domain = rows["quantity"].isin(["energy_j", "gap_samples", "window_s"])  # window_s: seconds an energy covers
    energy = combine_domains(rows[per_domain])
    others = rows[~per_domain]
    derived = _derived(energy, keyed, combine_baselines(baselines, keyed["gpu_domain"]))
    return chunks.concat_rows([derived, others])


def _reported(run_id: pd.Series, domain: pd.Series, gpu_domain: pd.Series) -> np.ndarray:
    """The reported domain of each sensor domain: the run's own GPU is ``gpu``; sockets keep theirs until summed."""
    own = gpu_domain.reindex(run_id).to_numpy()
    names = domain.to_numpy(dtype=object)
    return np.where(names == own, "gpu", names)


def energy_domain(domain: str) -> str:
    """The reported domain of a sensor domain's energy: sockets are summed (``package-1`` -> ``cpu_package``)."""
    if domain.startswith("package-"):
        return "cpu_package"
    if domain.startswith("dram-"):
        return "dram"
    return domain


def combine_domains(rows: pd.DataFrame) -> pd.DataFrame:
    """Long rows (``run_id, domain, quantity, value, source, method, note``) of ``energy_j``,
    ``gap_samples`` and ``window_s`` (the seconds an energy covers) summed into reported domains: sockets
    into ``cpu_package``/``dram``, and every GPU of a run with two or more into ``gpu_node`` (unless the run
    has a node total of its own, as AIPowerMeter's files do). A sum with a NaN member is NaN, never a
    partial sum; its ``window_s`` is its members' longest; ``method`` is ``mixed`` when its members differ;
    notes are joined."""
    rows = rows.assign(domain=rows["domain"].map(energy_domain))
    gpus = rows["domain"].str.fullmatch(r"gpu\d*")
    per_run = rows[gpus & (rows["quantity"] == "energy_j")].groupby("run_id", observed=True)["domain"].nunique()
    has_node = rows.loc[rows["domain"] == "gpu_node", "run_id"].unique()
    several = per_run.index[(per_run >= 2) & ~per_run.index.isin(has_node)]
    node = rows[gpus & rows["run_id"].isin(several)].assign(domain="gpu_node")
    rows = pd.concat([rows, node], ignore_index=True)
    grouped = rows.groupby(["run_id", "domain", "quantity"], sort=False, observed=True)
    out = grouped["value"].sum(min_count=1).to_frame()
    out.loc[grouped["value"].count() < grouped.size(), "value"] = np.nan
    longest = out.index.get_level_values("quantity") == "window_s"
    out.loc[longest, "value"] = grouped["value"].max()[longest]
    out["source"] = grouped["source"].first()
    out["method"] = grouped["method"].first().where(grouped["method"].nunique() <= 1, "mixed")
    noted = rows[rows["note"].notna()].groupby(["run_id", "domain", "quantity"], sort=False, observed=True)["note"]
    out["note"] = noted.agg("; ".join).reindex(out.index)  # only where a member has a note: few groups
    return out.reset_index()


def combine_baselines(baselines: pd.DataFrame, gpu_domain: pd.Series) -> pd.DataFrame:
    """Idle power per (run id, reported domain) from ``idle.baselines`` rows (``run_id, domain, idle_power_w,
    note``), summed like the energies (a NaN member makes the sum NaN); a baseline given for a summed domain
    itself (``cpu_package``, ``dram``, ``gpu_node``) wins. ``gpu_domain``: the GPU each run id ran on."""
    if baselines.empty:
        return pd.DataFrame(columns=["run_id", "domain", "idle_power_w", "note"])
    b = baselines.assign(domain=_reported(baselines["run_id"], baselines["domain"], gpu_domain))
    direct = b[b["domain"].isin(["cpu_package", "dram", "gpu_node"])]
    summed = b[~b["domain"].isin(["cpu_package", "dram", "gpu_node"])].assign(
        domain=lambda d: d["domain"].map(energy_domain))
    grouped = summed.groupby(["run_id", "domain"], sort=False, observed=True)
    totals = grouped["idle_power_w"].sum(min_count=1).to_frame()
    totals.loc[grouped["idle_power_w"].count() < grouped.size(), "idle_power_w"] = np.nan
    totals["note"] = grouped["note"].agg(lambda notes: "; ".join(n for n in notes if isinstance(n, str)) or None)
    totals = totals.reset_index()
    keep = ~totals.set_index(["run_id", "domain"]).index.isin(direct.set_index(["run_id", "domain"]).index)
    return pd.concat([totals[keep], direct], ignore_index=True)


def _derived(energy: pd.DataFrame, runs: pd.DataFrame, baselines: pd.DataFrame) -> pd.DataFrame:
    """The energy quantities of each (run, reported domain) from its energy and its run's constants."""
    table = energy.pivot_table(index=["run_id", "domain"], columns="quantity", values="value", aggfunc="first",
                               dropna=False, observed=True).reindex(columns=["energy_j", "gap_samples", "window_s"])
    labels = energy[energy["quantity"] == "energy_j"].set_index(["run_id", "domain"])[["source", "method", "note"]]
    table = table.join(labels).reset_index()
    table = table.merge(baselines.rename(columns={"note": "idle_note"}), on=["run_id", "domain"], how="left")
    of_run = runs.loc[table["run_id"]]
    complete = of_run["window_complete"].to_numpy(dtype=bool)
    iterations = np.where(complete & (of_run["iterations"].to_numpy() > 0), of_run["iterations"].to_numpy(), np.nan)
    window_s = table["window_s"].fillna(of_run["window_s"].set_axis(table.index)).to_numpy(dtype=float)
    batch = pd.to_numeric(of_run["batch_size"], errors="coerce").to_numpy(dtype=float)
    gflop = of_run["flops_per_inference"].to_numpy() / 1e9
    energy_j, idle_w = table["energy_j"].to_numpy(dtype=float), table["idle_power_w"].to_numpy(dtype=float)
    per_inference = energy_j / iterations
    values = {
        "energy_j": energy_j, "energy_per_inference_j": per_inference, "energy_per_sample_j": per_inference / batch,
        "mean_power_w": energy_j / window_s, "idle_power_w": idle_w,
        "dynamic_energy_per_inference_j": (energy_j - idle_w * window_s) / iterations,
        "energy_per_gflop_j": per_inference / gflop, "gap_samples": table["gap_samples"].to_numpy(dtype=float),
    }
    notes = table["note"].to_numpy(dtype=object)
    idle_notes = table["idle_note"].to_numpy(dtype=object)
    no_idle = np.where(pd.isna(idle_w), np.where(pd.isna(idle_notes), "no idle baseline recorded", idle_notes), None)
    with_idle = np.where(pd.isna(notes), no_idle, notes)
    names, units = list(ENERGY_QUANTITIES), list(dict.fromkeys(ENERGY_QUANTITIES.values()))
    each = np.repeat(np.arange(len(names)), len(table))  # quantity after quantity, every (run, domain) in each

    def tiled(column: str) -> pd.Categorical:  # the labels categorised once, their codes repeated
        labels = pd.Categorical(table[column].to_numpy(dtype=object))
        return pd.Categorical.from_codes(np.tile(labels.codes, len(names)), dtype=labels.dtype)

    return pd.DataFrame(copy=False, data={  # new arrays each: not copied again into blocks
        "run_id": np.tile(table["run_id"].to_numpy(), len(names)), "domain": tiled("domain"),
        "quantity": pd.Categorical.from_codes(each, names),
        "value": np.concatenate([values[q] for q in names]),
        "unit": pd.Categorical.from_codes(np.array([units.index(u) for u in ENERGY_QUANTITIES.values()])[each], units),
        "source": tiled("source"), "method": tiled("method"),
        "note": pd.Series(np.concatenate([with_idle if q in ("idle_power_w", "dynamic_energy_per_inference_j")
                                          else notes for q in names]), dtype=object)})


def _with_identity(rows: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Long rows with their run's identity columns in front, strings as categories, in run order."""
    identity = list(runs.columns[: runs.columns.get_loc("run") + 1])  # run_id first
    position = pd.Index(runs["run_id"]).get_indexer(rows["run_id"])
    order = np.argsort(position, kind="stable")
    at = position[order]
    out = {column: _repeated(runs[column], at) for column in identity}
    for column in LONG_COLUMNS:
        values = rows[column]
        if column in LABELS:
            out[column] = _sorted_categories(values.astype("category").array.take(order))
        elif column == "value":
            out[column] = values.to_numpy(dtype=float)[order]
        else:
            out[column] = pd.array(values.to_numpy()[order], dtype="str")
    return pd.DataFrame(out, copy=False)  # new arrays each: not copied again into blocks


def _repeated(values: pd.Series, at: np.ndarray) -> pd.Series | pd.Categorical:
    """``values`` (a column of the runs table) at the positions ``at``: text as categories (each run's text
    categorised once, its codes repeated); anything else (numbers, a column mixing text and numbers, one with
    no value) as it is."""
    present = values.dropna()
    if not len(present) or not (pd.api.types.is_string_dtype(values.dtype)
                                and all(isinstance(v, str) for v in present.unique())):
        return values.iloc[at].reset_index(drop=True)
    labels = _sorted_categories(pd.Categorical(values.to_numpy(dtype=object)))
    return pd.Categorical.from_codes(labels.codes[at], dtype=labels.dtype)


def _sorted_categories(values: pd.Categorical) -> pd.Categorical:
    """``values`` with the categories ``astype("category")`` would give them: those present, sorted."""
    codes = values.codes
    used = np.bincount(codes[codes >= 0], minlength=len(values.categories)) > 0  # no sort of every row
    present = values.categories[used]
    categories = pd.Index(sorted(present), dtype=values.categories.dtype)
    recoded = np.full(len(used) + 1, -1, dtype=np.int64)  # the last stands for a missing value's code, -1
    recoded[:-1][used] = categories.get_indexer(present)
    return pd.Categorical.from_codes(recoded[codes], dtype=pd.CategoricalDtype(categories))


def _long_samples(frame: pd.DataFrame, runs: pd.DataFrame, identity: list[str]) -> pd.DataFrame:
    """A wide sample frame as long rows: one per sample and channel."""
    channels = [c for c in frame.columns if "." in c]
    k = len(channels)
    domain, metric = zip(*(c.rsplit(".", 1) for c in channels))
    long = runs.loc[np.repeat(frame["run"].to_numpy(), k), identity].reset_index(drop=True)
    long["t_s"] = np.repeat(frame["t_s"].to_numpy(), k)
    long["utc"] = np.repeat(frame["utc"].to_numpy(), k) if "utc" in frame else None
    long["mark"] = pd.Categorical(np.repeat(frame["mark"].to_numpy(), k), categories=list(readers.ours.MARKS))
    long["domain"] = pd.Categorical(np.tile(domain, len(frame)))
    long["metric"] = pd.Categorical(np.tile(metric, len(frame)))
    long["value"] = frame[channels].to_numpy(dtype=float).ravel()
    return long

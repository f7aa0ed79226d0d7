"""Generation runs: the energy of each phase, measured at its boundary, and the figures per token and request.

A generation run (``measure.generation``) names its phases in ``meta.json``
(``phases``: ``prefill``, ``decode``); its window's synchronous samples
delimit them: ``start``, one ``split`` between two phases, ``end``. Each phase
is reduced exactly as a window is (``reduce.samples``, on the samples from the
phase's opening sample to its closing one, those two marked as its edges), so
the rules are the same: a counter's difference between the edges (aligned on
its updates where it can be), checked readings, and a phase shorter than the
counter's update period (NVML's ~0.1 s) or over which it did not move is taken
from the domain's power readings (method ``trapezoid (counter did not resolve
the window)``, the note says why) or is NaN, never 0 J. With a counter at both
edges of both phases, prefill + decode is the window's energy exactly.

Where: ``samples`` (each phase's energies per sensor domain) and ``clock``
(the token timings) run with a chunk of runs (``analysis.chunks``: in a worker
process, their rows kept in the cache); ``quantities`` sums the phases into
reported domains and derives the energy figures when the tables are assembled.

The figures of a run of batch ``B``, prompt ``N`` tokens and ``M`` new tokens
(long rows of ``Study.quantities``; ``ENERGY_QUANTITIES`` per energy domain,
``CLOCK_QUANTITIES`` in the ``clock`` domain, from ``tokens.csv``):

- ``prefill_energy_j``, ``decode_energy_j``: each phase's energy;
- ``prefill_energy_per_token_j``: prefill / (B·N), per prompt token;
- ``decode_energy_per_token_j``: decode / (B·(M−1)), per token of the decode phase;
- ``energy_per_request_j``: the window's / B (one request is one sequence);
- ``energy_per_output_token_j``: the window's / (B·M), the whole request per new token;
- ``prefill_energy_share``: prefill / (prefill + decode);
- ``prefill_mean_power_w``, ``decode_mean_power_w``: each phase's energy over its duration;
- ``ttft_s``: the prefill step, prompt to first token; ``itl_median_s``, ``itl_p90_s``, ``itl_mean_s``: over
  the M−1 decode steps; ``output_tokens_per_s``: B·M / the request's latency; ``prefill_tokens_per_s``:
  B·N / TTFT; ``decode_tokens_per_s``: B·(M−1) / the decode steps' time.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import readers, reduce
from .problems import warn

EDGE_MARKS = ("start", "split", "end")
# energy-bearing channels, and the evidence reduce.samples weighs for a counter that did not move
KEPT_METRICS = (".energy_j", ".power_w", ".interval_power_w", "cpu_estimated.load", "process.cpu_share")
ENERGY_QUANTITIES = {
    "prefill_energy_j": "J", "decode_energy_j": "J", "prefill_energy_per_token_j": "J",
    "decode_energy_per_token_j": "J", "energy_per_request_j": "J", "energy_per_output_token_j": "J",
    "prefill_energy_share": "fraction", "prefill_mean_power_w": "W", "decode_mean_power_w": "W",
}
CLOCK_QUANTITIES = {
    "ttft_s": "s", "itl_median_s": "s", "itl_p90_s": "s", "itl_mean_s": "s", "output_tokens_per_s": "tokens/s",
    "prefill_tokens_per_s": "tokens/s", "decode_tokens_per_s": "tokens/s",
}
QUANTITIES = (*ENERGY_QUANTITIES, *CLOCK_QUANTITIES)
# what a table to read shows of a generation study (export.headline's clock and energy quantities)
HEADLINE_CLOCK = ("ttft_s", "itl_median_s")
HEADLINE_ENERGY = ("energy_per_output_token_j", "prefill_energy_per_token_j", "decode_energy_per_token_j")
PHASE_COLUMNS = ["run_id", "phase", "domain", "quantity", "value", "unit", "source", "method", "note"]


def phased(info: pd.DataFrame) -> pd.Series:
    """Per run of ``info``: whether it names phases (a generation run)."""
    return info["phases"].map(lambda phases: isinstance(phases, list) and len(phases) > 0)


def generating(study) -> bool:
    """Whether a ``Study`` holds generation runs."""
    return bool(phased(study.info).any())


def samples(frame: pd.DataFrame, info: pd.DataFrame) -> pd.DataFrame:
    """The energy of each phase of the generation runs in one wide sample ``frame`` (``reduce.samples``'s
    input), per sensor domain: ``PHASE_COLUMNS`` rows of ``energy_j``, ``window_s`` (the phase's seconds)
    and ``gap_samples`` (``quantities`` sums them into reported domains, as a window's). A run whose samples
    do not delimit its phases (not one ``split`` between each two, no ``start`` or ``end``) gets one row per
    phase with domain None, value NaN and the reason, and a warning. Empty for a frame without generation
    runs."""
    runs = frame["run"].unique()
    runs = runs[phased(info.loc[runs]).to_numpy()]
    if not len(runs):
        return pd.DataFrame(columns=PHASE_COLUMNS)
    kept = [c for c in frame.columns if "." not in c or c.endswith(KEPT_METRICS)]
    parts, pieces, undelimited = [], [], []
    for run_id, run in frame.loc[frame["run"].isin(runs), kept].groupby("run", sort=False):
        run = run.sort_values("t_s", kind="stable")
        phases = info.at[run_id, "phases"]
        marks = run["mark"].astype(str).to_numpy()
        edges = np.flatnonzero(np.isin(marks, EDGE_MARKS))
        expected = ["start", *["split"] * (len(phases) - 1), "end"]
        if list(marks[edges]) != expected:
            why = (f"its samples do not delimit its phases {', '.join(phases)}: synchronous samples "
                   f"{', '.join(marks[edges]) or 'none'} where {', '.join(expected)} were expected")
            warn(f"{info.at[run_id, 'path']}: {why}; its phase energies left NaN")
            undelimited += [{"run_id": run_id, "phase": phase, "domain": None, "quantity": "energy_j",
                             "value": np.nan, "unit": "J", "source": None, "method": None, "note": why}
                            for phase in phases]
            continue
        for phase, first, last in zip(phases, edges[:-1], edges[1:]):
            piece = run.iloc[first:last + 1].copy()
            piece["mark"] = ["start", *["tick"] * (last - first - 1), "end"]
            piece["run"] = len(pieces)
            parts.append(piece)
            pieces.append({"run_id": run_id, "phase": phase, "path": f"{info.at[run_id, 'path']} ({phase} phase)",
                           **{c: info.at[run_id, c] for c in ("sensors", "gpu_domain", "device")}})
    rows = [pd.DataFrame(undelimited, columns=PHASE_COLUMNS)] if undelimited else []
    if parts:
        rows.append(_reduced(pd.concat(parts, ignore_index=True), pd.DataFrame(pieces)))
    return pd.concat(rows, ignore_index=True)


def _reduced(frame: pd.DataFrame, pieces: pd.DataFrame) -> pd.DataFrame:
    """``reduce.samples`` of the phases (each one a run of ``frame``, described by ``pieces``) as
    ``PHASE_COLUMNS`` rows of each phase's energy, seconds and gaps per sensor domain."""
    frame["mark"] = pd.Categorical(frame["mark"], categories=list(readers.ours.MARKS))
    rows, _ = reduce.samples(frame, pieces)
    rows = rows[rows["quantity"].isin(["energy_j", "gap_samples", "window_s"])]
    piece = rows["run_id"].to_numpy()
    rows = rows.assign(run_id=pieces["run_id"].to_numpy()[piece], phase=pieces["phase"].to_numpy()[piece])
    return rows[PHASE_COLUMNS]


def _combined(phase_rows: pd.DataFrame, gpu_domain: pd.Series) -> pd.DataFrame:
    """``samples``' rows with each phase's sensor domains summed into reported domains, as a window's are
    (``tables.combine_domains``; ``gpu_domain``: the GPU each run id ran on, reported as ``gpu``)."""
    from .tables import _reported, combine_domains  # tables calls this module: imported when used

    undelimited = phase_rows[phase_rows["domain"].isna()]
    delimited = phase_rows[phase_rows["domain"].notna()]
    if delimited.empty:
        return undelimited
    piece, pieces = pd.factorize(pd.MultiIndex.from_arrays(
        [delimited["run_id"].to_numpy(), delimited["phase"].to_numpy(dtype=object)]))
    run_of, phase_of = pieces.get_level_values(0).to_numpy(), pieces.get_level_values(1).to_numpy()
    rows = delimited.assign(run_id=piece)
    rows = rows.assign(domain=_reported(rows["run_id"], rows["domain"],
                                        pd.Series(gpu_domain.reindex(run_of).to_numpy())))
    combined = combine_domains(rows)
    at = combined["run_id"].to_numpy()
    combined = combined.assign(run_id=run_of[at], phase=phase_of[at])
    return pd.concat([undelimited, combined], ignore_index=True) if len(undelimited) else combined


def quantities(window_rows: pd.DataFrame, phase_rows: pd.DataFrame, runs: pd.DataFrame,
               info: pd.DataFrame) -> pd.DataFrame:
    """The energy figures (``ENERGY_QUANTITIES``, the module's docstring) of the runs of ``runs`` that name
    phases, as long rows (``run_id, domain, quantity, value, unit, source, method, note``).

    ``window_rows``: the study's quantities so far (their ``energy_j`` per
    reported domain is the window's); ``phase_rows``: ``samples``' rows;
    ``runs``: the runs table (``batch_size``, ``input_size``, ``new_tokens``,
    ``window_complete``, ``gpu_domain``); ``info``: the readers' records. A
    figure that cannot be computed is NaN with the reason in ``note``. The
    ``CLOCK_QUANTITIES`` are read with each run's samples (``clock``).
    """
    generation = runs[phased(info.loc[runs["run_id"]]).to_numpy()].set_index("run_id")
    if generation.empty:
        return pd.DataFrame(columns=[*reduce.ROW_COLUMNS[:5], "source", "method", "note"])
    mine = phase_rows[phase_rows["run_id"].isin(generation.index)].astype(  # labels as text, not categories
        {c: object for c in PHASE_COLUMNS if c not in ("run_id", "value")})
    return _energy_rows(window_rows, _combined(mine, generation["gpu_domain"]), generation)


def clock(info: pd.DataFrame) -> pd.DataFrame:
    """The ``CLOCK_QUANTITIES`` of the runs of ``info`` (the readers' records) that name phases, from their
    ``tokens.csv``, as long rows (``reduce.ROW_COLUMNS``, domain ``clock``); NaN with the reason for a run
    without token timings, and a warning for a file missing, unreadable or holding another number of tokens
    than the run's ``new_tokens``. Empty when no run names phases."""
    generation = info[phased(info).to_numpy()]
    if generation.empty:
        return pd.DataFrame(columns=reduce.ROW_COLUMNS)
    return _clock_rows(readers.tokens(generation), generation, info["path"])


def _energy_rows(window_rows: pd.DataFrame, phase_rows: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``ENERGY_QUANTITIES`` per (generation run, energy domain of its window)."""
    window = window_rows[(window_rows["quantity"] == "energy_j") & window_rows["run_id"].isin(runs.index)]
    table = window[["run_id", "domain", "value", "source", "method", "note"]].rename(
        columns={"value": "window_j", "method": "window_method", "note": "window_note"})
    lost = phase_rows[phase_rows["domain"].isna()]
    for phase in ("prefill", "decode"):
        mine = phase_rows[(phase_rows["phase"] == phase) & phase_rows["domain"].notna()]
        values = mine.pivot_table(index=["run_id", "domain"], columns="quantity", values="value", aggfunc="first",
                                  dropna=False, observed=True).reindex(columns=["energy_j", "window_s"])
        labels = mine[mine["quantity"] == "energy_j"].set_index(["run_id", "domain"])[["method", "note"]]
        found = values.join(labels).rename(columns=lambda c: f"{phase}_{c}").reset_index()
        table = table.merge(found, on=["run_id", "domain"], how="left")
        why = lost[lost["phase"] == phase].set_index("run_id")["note"].astype(object)
        table[f"{phase}_note"] = table[f"{phase}_note"].astype(object)
        missing = table[f"{phase}_energy_j"].isna() & table[f"{phase}_note"].isna()
        table.loc[missing, f"{phase}_note"] = table.loc[missing, "run_id"].map(why).astype(object).fillna(
            f"no {phase} phase energy for this domain")
    of_run = runs.loc[table["run_id"]]
    batch, prompt = of_run["batch_size"].to_numpy(dtype=float), of_run["input_size"].to_numpy(dtype=float)
    new = pd.to_numeric(of_run["new_tokens"], errors="coerce").to_numpy(dtype=float)
    complete = of_run["window_complete"].to_numpy(dtype=bool)
    window_j = np.where(complete, table["window_j"].to_numpy(dtype=float), np.nan)
    prefill_j, decode_j = (table[f"{p}_energy_j"].to_numpy(dtype=float) for p in ("prefill", "decode"))
    values = {
        "prefill_energy_j": prefill_j, "decode_energy_j": decode_j,
        "prefill_energy_per_token_j": prefill_j / (batch * prompt),
        "decode_energy_per_token_j": decode_j / (batch * (new - 1)),
        "energy_per_request_j": window_j / batch, "energy_per_output_token_j": window_j / (batch * new),
        "prefill_energy_share": prefill_j / (prefill_j + decode_j),
        "prefill_mean_power_w": prefill_j / table["prefill_window_s"].to_numpy(dtype=float),
        "decode_mean_power_w": decode_j / table["decode_window_s"].to_numpy(dtype=float),
    }
    incomplete = np.where(complete, None, "the window is incomplete (no start or end sample)")
    both = table["prefill_method"].where(table["prefill_method"] == table["decode_method"], "mixed")
    labels = {"prefill": (table["prefill_method"], table["prefill_note"]),
              "decode": (table["decode_method"], table["decode_note"]),
              "both": (both, _joined(table["prefill_note"], table["decode_note"])),
              "window": (table["window_method"], table["window_note"].where(complete, incomplete))}
    parts = []
    for quantity, unit in ENERGY_QUANTITIES.items():
        method, note = labels[_basis(quantity)]
        parts.append(pd.DataFrame({"run_id": table["run_id"], "domain": table["domain"], "quantity": quantity,
                                   "value": values[quantity], "unit": unit, "source": table["source"],
                                   "method": method, "note": note}))
    return pd.concat(parts, ignore_index=True)


def _basis(quantity: str) -> str:
    """What an energy quantity is computed from: one phase, both, or the whole window."""
    if quantity == "prefill_energy_share":
        return "both"
    return next((phase for phase in ("prefill", "decode") if quantity.startswith(phase)), "window")


def _joined(a: pd.Series, b: pd.Series) -> pd.Series:
    """Two columns of notes joined with ``; `` where both have one (None where neither has)."""
    return pd.Series([("; ".join(n for n in (x, y) if isinstance(n, str)) or None) for x, y in zip(a, b)],
                     index=a.index, dtype=object)


def _clock_rows(tokens: pd.DataFrame, runs: pd.DataFrame, paths: pd.Series) -> pd.DataFrame:
    """``CLOCK_QUANTITIES`` per generation run, from its tokens (token 0 from the prefill, then the decode
    steps; ``paths``: run id -> folder, for warnings); NaN with the reason for a run without them."""
    tokens = tokens.sort_values(["run_id", "token"], kind="stable")
    groups = tokens.groupby("run_id")
    first = tokens[tokens["token"] == 0].groupby("run_id")["latency_s"].first()
    steps = tokens[tokens["token"] > 0].groupby("run_id")["latency_s"]
    count = groups.size().reindex(runs.index)
    batch = runs["batch_size"].astype(float)
    new = pd.to_numeric(runs["new_tokens"], errors="coerce").astype(float)
    for run_id in runs.index[count.notna() & (count != new)]:
        warn(f"{paths[run_id]}: {int(count[run_id])} tokens in tokens.csv for {new[run_id]:g} new tokens; "
             "token timings from those present")
    values = {
        "ttft_s": first, "itl_median_s": steps.median(), "itl_p90_s": steps.quantile(0.9),
        "itl_mean_s": steps.mean(), "output_tokens_per_s": batch * count / groups["t_s"].last(),
        "prefill_tokens_per_s": batch * runs["input_size"].astype(float) / first,
        "decode_tokens_per_s": batch * steps.size() / steps.sum(),
    }
    note = pd.Series(np.where(count.isna(), "no token timings (tokens.csv missing or unreadable)", None),
                     index=runs.index, dtype=object)
    return pd.concat([pd.DataFrame({"run_id": runs.index, "domain": "clock", "quantity": quantity,
                                    "value": values[quantity].reindex(runs.index).to_numpy(dtype=float),
                                    "unit": unit, "source": "measured", "method": "perf_counter",
                                    "note": note.to_numpy()})
                      for quantity, unit in CLOCK_QUANTITIES.items()], ignore_index=True)

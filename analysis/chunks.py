"""Per-run reductions of chunks of runs: each chunk's files read and reduced in one go, here or in a worker.

A chunk is a few runs whose sample files add up to about ``CHUNK_BYTES``, so
that memory holds one chunk's samples and latencies at a time (per worker),
whatever the number of samples per run. What a run's reduction raised is
captured and attributed to it (the messages name its folder), so that the
cache can keep it and a cached load issue it again.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from pandas.api.types import union_categoricals

from . import phases, readers, reduce
from .problems import Message, captured

CHUNK_BYTES = 32 << 20
WINDOW_COLUMNS = ["window_s", "window_complete", "gpu_domain"]
LABELS = ["domain", "quantity", "unit", "source", "method"]  # categories in the rows


@dataclass
class Reductions:
    """The per-run reductions of some runs (ids of the ``info`` table).

    ``rows``: ``reduce.ROW_COLUMNS`` (energies per sensor domain with the
    seconds they cover, window statistics, latency statistics and
    ``latency_count``, a generation run's token timings; ``LABELS`` as
    categories); ``windows``: indexed by run id, ``WINDOW_COLUMNS``, one row
    per run whose samples could be read (the others are left out);
    ``phases``: ``phases.PHASE_COLUMNS``, the energy of each phase of the
    generation runs per sensor domain (``LABELS`` as categories);
    ``messages``: per run id, the warnings reading and
    reducing it raised, in order; ``loose``: warnings that named no run of the
    chunk (none is expected).
    """

    rows: pd.DataFrame
    windows: pd.DataFrame
    phases: pd.DataFrame
    messages: dict[int, list[Message]] = field(default_factory=dict)
    loose: list[Message] = field(default_factory=list)


def split(info: pd.DataFrame) -> list[pd.DataFrame]:
    """``info`` in consecutive chunks of runs whose sample files add up to about ``CHUNK_BYTES``."""
    items = [(run, path / readers.SAMPLES_FILE) for run, path in zip(info.index, info["path"])]
    batches = readers.files.batches(items, CHUNK_BYTES)
    return [info.loc[[run for run, _ in batch]] for batch in batches]


def reduce_chunk(info: pd.DataFrame) -> Reductions:
    """Read and reduce the runs of ``info`` (a chunk of the readers' records): their samples
    (``reduce.samples``, and ``phases.samples`` for generation runs) then, for the runs with samples, their
    latencies (``reduce.latencies``) and a generation run's token timings (``phases.clock``)."""
    with captured() as messages:
        parts, windows, phase_parts = [], [], []
        for frame in readers.sample_frames(info):
            rows, window = reduce.samples(frame, info)
            parts.append(rows)
            windows.append(window)
            phase_parts.append(phases.samples(frame, info))
        windows = pd.concat(windows).sort_index() if windows else pd.DataFrame(columns=WINDOW_COLUMNS)
        if len(windows):
            sampled = info.loc[windows.index]
            parts.append(reduce.latencies(readers.latencies(sampled), sampled.index))
            parts.append(phases.clock(sampled))
    reductions = Reductions(concat_rows(parts), windows[WINDOW_COLUMNS],
                            concat_rows(phase_parts, phases.PHASE_COLUMNS))
    folders = {str(path): run for run, path in zip(info.index, info["path"])}
    for message in messages:
        run = _run_named(message[1], folders)
        if run is None:
            reductions.loose.append(message)
        else:
            reductions.messages.setdefault(run, []).append(message)
    return reductions


def _run_named(message: str, folders: dict[str, int]) -> int | None:
    """The run whose folder the message starts with (the longest such folder), or None: the folder followed
    by ``/`` (one of its files), ``:`` or `` (`` (one of its phases: ``<folder> (prefill phase):``)."""
    named = [f for f in folders if message.startswith(f) and (message[len(f):len(f) + 1] in ("/", ":")
                                                              or message[len(f):len(f) + 2] == " (")]
    return folders[max(named, key=len)] if named else None


def combine(parts: list[Reductions]) -> Reductions:
    """Several ``Reductions`` as one (rows and phases in the order given, windows by run id)."""
    windows = [p.windows for p in parts if len(p.windows)]
    windows = pd.concat(windows).sort_index() if windows else pd.DataFrame(columns=WINDOW_COLUMNS)
    gpu = windows["gpu_domain"].astype(object)
    windows["gpu_domain"] = gpu.where(gpu.notna(), None)  # as one frame of runs with and without gives it
    return Reductions(concat_rows([p.rows for p in parts]), windows,
                      concat_rows([p.phases for p in parts], phases.PHASE_COLUMNS),
                      {run: m for p in parts for run, m in p.messages.items()}, [m for p in parts for m in p.loose])


def concat_rows(rows: list[pd.DataFrame], columns: list[str] = reduce.ROW_COLUMNS) -> pd.DataFrame:
    """Long rows (``columns``: ``reduce.ROW_COLUMNS``, or ``phases.PHASE_COLUMNS``) end to end, their labels
    (``LABELS``) as one categorical each, the union of the parts' categories (``pd.concat`` would make them
    objects)."""
    rows = [r for r in rows if len(r)]
    if not rows:
        return pd.DataFrame(columns=columns).astype({c: "category" for c in LABELS})
    return pd.DataFrame({c: union_categoricals([_text_categories(r[c]) for r in rows]) if c in LABELS
                         else pd.concat([r[c] for r in rows], ignore_index=True) for c in columns},
                        copy=False)  # new arrays each: not copied again into blocks


def _text_categories(values: pd.Series) -> pd.Categorical:
    """Labels as a categorical of text, even when every one is None (``union_categoricals`` wants the
    categories of every part of one type)."""
    found = values.astype("category").array
    return found if len(found.categories) else pd.Categorical([None] * len(found), categories=pd.Index([], dtype=str))


"""Chunks of work done in worker processes, results in order, with a progress bar when it takes a while.

    with Workers(workers=None) as pool:                  # None: every CPU this process may use
        results = list(pool.map(function, chunks, sizes=[len(c) for c in chunks], desc="reading runs"))

Processes rather than threads: reducing a chunk is mostly pandas and numpy
calls that hold the GIL (parsing is about half of it), so threads add little
on two cores and nothing beyond (benchmarks/README.md). Workers are forked
where the platform can, so that they start at once with the package imported.
"""
from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import sys
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

from tqdm import tqdm

PROGRESS_AFTER_S = 2.0  # a progress bar appears once work has taken this long
AHEAD = 2  # chunks submitted per worker ahead of the one being collected: bounds the results waiting
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
KEEP_BLOCKS_B = 32 << 20  # above a chunk's samples stripped and joined (about 27 MB of a 32 MB chunk)
KEEP_FREE_B = 1 << 30


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, as a Slurm allocation sets it), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Workers:
    """Up to ``workers`` processes (default ``available_cpus()``; 1: everything in this process), started on
    first use and stopped when the context ends. ``progress``: whether a bar may be shown (stderr)."""

    def __init__(self, workers: int | None = None, progress: bool = True):
        if workers is not None and workers < 1:
            raise ValueError(f"workers={workers}: give a number of processes of at least 1 (1: no worker process)")
        self.workers = available_cpus() if workers is None else workers
        self.progress = progress
        self._pool: Executor | None = None

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def map(self, function: Callable, chunks: Sequence, sizes: Iterable[int] | None = None, desc: str = "",
            unit: str = "run") -> Iterator:
        """``function(chunk)`` for each chunk, in order: in the workers when there are several chunks, else here.
        ``sizes``: the units (``unit``) of each chunk, for the progress bar (default 1 per chunk)."""
        sizes = [1] * len(chunks) if sizes is None else list(sizes)
        bar = tqdm(total=sum(sizes), desc=desc, unit=unit, delay=PROGRESS_AFTER_S, file=sys.stderr,
                   disable=not self.progress, leave=False)
        with bar:
            if self.workers == 1 or len(chunks) < 2:
                for chunk, size in zip(chunks, sizes):
                    yield function(chunk)
                    bar.update(size)
                return
            pool = self._start()
            waiting: deque = deque()
            for chunk, size in zip(chunks, sizes):
                waiting.append((pool.submit(function, chunk), size))
                while len(waiting) > AHEAD * self.workers:
                    yield self._collect(waiting, bar)
            while waiting:
                yield self._collect(waiting, bar)

    @staticmethod
    def _collect(waiting: deque, bar: tqdm):
        future, size = waiting.popleft()
        result = future.result()
        bar.update(size)
        return result

    def _start(self) -> Executor:
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=_worker)
        return self._pool


def _worker() -> None:
    """How a worker manages memory.

    - Garbage collection: a forked worker inherits the caller's objects, never walked again by its
      collections (``gc.freeze``: a fifth less CPU on 2,000 AIPowerMeter runs), and ``load_study``'s paused
      collector, which collects again what the worker makes, for its life.
    - Freed memory is kept for the next chunk (glibc's ``mallopt``, where there is one): blocks up to
      ``KEEP_BLOCKS_B`` come from the heap, which is not given back to the system until ``KEEP_FREE_B`` of it
      are free. By default glibc maps each large block anew and gives the heap back after each chunk, and the
      next chunk faults every page in again (2,000 runs of ours: 250,000 page faults, 0.6 s of system time,
      against 70,000 and 0.3 s). A worker's peak memory is the same; it holds it until the load ends.
    """
    gc.freeze()
    gc.enable()
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (Windows: CDLL(None) is a TypeError)
        return
    mallopt(M_TRIM_THRESHOLD, KEEP_FREE_B)
    mallopt(M_MMAP_THRESHOLD, KEEP_BLOCKS_B)

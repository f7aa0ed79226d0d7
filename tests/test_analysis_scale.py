"""Loading at scale: the same tables and warnings in worker processes as in one, samples and latencies read a
chunk of runs at a time, bootstrap CIs without a resamples x groups matrix, a light import, the benchmark."""
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis.chunks
import analysis.readers
from analysis import AnalysisWarning, bootstrap_median_ci, load_study
from analysis.parallel import Workers
from treegen import write_run, write_tree

ROOT = Path(__file__).resolve().parents[1]


def load(root, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load_study(root, cache=False, **options)
    return study, [str(w.message) for w in caught if issubclass(w.category, AnalysisWarning)]


def test_worker_processes_give_the_same_tables_and_warnings_as_one(tmp_path, monkeypatch):
    write_tree(tmp_path, input_sizes=(16, 32, 64), runs=3, power_w=lambda m, s, r: {"gpu0": s + r, "package-0": 9.0},
               idle_power_w={"gpu0": 10.0, "package-0": 2.0})
    folder = tmp_path / "resnet50" / "input_32" / "run_1"
    lines = (folder / "power_metrics.json").read_text().splitlines(keepends=True)
    (folder / "power_metrics.json").write_text("".join(lines[:-1]) + lines[-1][:40])  # a run with a problem
    serial, said = load(tmp_path, workers=1)
    monkeypatch.setattr(analysis.chunks, "CHUNK_BYTES", 1)  # one run per chunk
    monkeypatch.setattr(analysis.readers, "RECORDS_PER_CHUNK", 2)
    monkeypatch.setattr(analysis.readers, "PARALLEL_WALK", 2)  # the runs' folders listed by the workers too
    parallel, said_in_parallel = load(tmp_path, workers=2)
    assert any("no 'end' sample" in m for m in said)
    assert said_in_parallel == said
    for table in ("runs", "quantities"):
        pd.testing.assert_frame_equal(getattr(serial, table), getattr(parallel, table))
    pd.testing.assert_frame_equal(serial.info, parallel.info)


def test_workers_keep_the_order_of_the_chunks():
    with Workers(2, progress=False) as pool:
        assert list(pool.map(np.square, list(range(20)))) == [k * k for k in range(20)]
    with pytest.raises(ValueError, match="workers=0"):
        Workers(0)


def _collector_state(_) -> tuple[bool, bool]:
    import gc
    return gc.isenabled(), gc.get_freeze_count() > 0


def test_a_worker_collects_what_it_makes_and_not_what_it_inherited():
    with Workers(2, progress=False) as pool:
        assert list(pool.map(_collector_state, [0, 1])) == [(True, True)] * 2


@pytest.mark.parametrize("missing", [OSError, AttributeError, TypeError])  # no libc; no mallopt; Windows
def test_a_worker_starts_where_there_is_no_glibc(monkeypatch, missing):
    import ctypes
    import gc

    import analysis.parallel

    def no_glibc(name):
        raise missing("no glibc here")

    monkeypatch.setattr(ctypes, "CDLL", no_glibc)
    try:
        analysis.parallel._worker()  # no error: the worker runs with glibc's defaults, or none
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_one_batch_of_sample_files_is_parsed_without_a_thread_and_several_with_them(tmp_path, monkeypatch):
    write_tree(tmp_path, input_sizes=(16,), runs=3)
    items = [(run, path) for run, path in enumerate(sorted(tmp_path.rglob(analysis.readers.SAMPLES_FILE)))]
    threads = []
    pool = analysis.readers.ours.ThreadPoolExecutor
    monkeypatch.setattr(analysis.readers.ours, "ThreadPoolExecutor",
                        lambda **kw: threads.append(kw) or pool(**kw))
    one = pd.concat(analysis.readers.ours.frames(items), ignore_index=True)
    assert threads == []  # a chunk of load_study's: parsed in the calling thread
    monkeypatch.setattr(analysis.readers.ours, "CHUNK_BYTES", 1)  # a batch per file
    several = pd.concat(analysis.readers.ours.frames(items), ignore_index=True)
    assert len(threads) == 1
    pd.testing.assert_frame_equal(one, several)


def test_samples_and_latencies_are_read_a_chunk_of_runs_at_a_time(tmp_path, monkeypatch):
    write_tree(tmp_path, input_sizes=(16, 32), runs=3)
    calls = {"samples": [], "latencies": []}
    sample_frames, latencies = analysis.readers.sample_frames, analysis.readers.latencies
    monkeypatch.setattr(analysis.readers, "sample_frames",
                        lambda info, **kw: calls["samples"].append(len(info)) or sample_frames(info, **kw))
    monkeypatch.setattr(analysis.readers, "latencies",
                        lambda info: calls["latencies"].append(len(info)) or latencies(info))
    monkeypatch.setattr(analysis.chunks, "CHUNK_BYTES", 1)
    study, _ = load(tmp_path, workers=1)
    assert calls == {"samples": [1] * 6, "latencies": [1] * 6}  # never the whole study's at once
    assert study.select("latency_count")["value"].tolist() == [100.0] * 6


def test_a_sample_file_spaced_otherwise_reads_the_same(tmp_path):
    write_run(tmp_path / "spaced", power_w={"gpu0": 100.0, "package-0": 40.0})
    folder = write_run(tmp_path / "compact", power_w={"gpu0": 100.0, "package-0": 40.0})
    samples = folder / "power_metrics.json"
    samples.write_text("".join(json.dumps(json.loads(line), separators=(",", ":")) + "\n"
                               for line in samples.read_text().splitlines()))
    spaced, compact = load(tmp_path / "spaced")[0], load(tmp_path / "compact")[0]
    pd.testing.assert_frame_equal(spaced.quantities.drop(columns="label"), compact.quantities.drop(columns="label"))


@pytest.mark.parametrize("odd", ["blank line", "second start", "start not first"])
def test_each_row_of_files_read_together_belongs_to_its_own_run(tmp_path, odd):
    """Files read in one go are cut where each begins; a file whose lines do not say where (a second start
    line, no start line first) is counted line by line. The rows match the files read line by line."""
    paths = [write_run(tmp_path / f"r{k}", power_w={"gpu0": 100.0 + k}, samples=30) / "power_metrics.json"
             for k in range(3)]
    lines = paths[1].read_text().splitlines(keepends=True)
    if odd == "blank line":
        lines.insert(10, "\n")
    elif odd == "second start":
        lines.insert(10, lines[0])
    else:  # as many start lines as files, one not where its file begins
        lines = lines[1:10] + lines[:1] + lines[10:]
    paths[1].write_text("".join(lines))
    items = list(enumerate(paths))
    together = pd.concat(analysis.readers.ours.frames(items), ignore_index=True)
    one_by_one = pd.concat([analysis.readers.ours._parse_lines(run, path, path.read_bytes(), False)
                            for run, path in items], ignore_index=True)
    assert together["run"].value_counts().sort_index().tolist() == [30, 31 if odd == "second start" else 30, 30]
    pd.testing.assert_frame_equal(together[one_by_one.columns].astype({"mark": object}),
                                  one_by_one.astype({"mark": object}), check_dtype=False)


def test_a_line_left_blank_once_stripped_is_warned_of_as_unreadable(tmp_path):
    paths = [write_run(tmp_path / f"r{k}", power_w={"gpu0": 100.0}, samples=30) / "power_metrics.json"
             for k in range(2)]
    lines = paths[1].read_text().splitlines(keepends=True)
    paths[1].write_text("".join(lines[:10] + ["{}\n"] + lines[10:]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = pd.concat(analysis.readers.ours.frames(list(enumerate(paths))), ignore_index=True)
    assert any("1 unreadable line(s) skipped (line 11)" in str(w.message) for w in caught)
    assert frame["run"].value_counts().sort_index().tolist() == [30, 30]


def reference_median_ci(values, n_boot=2000, confidence=0.95, rng=None):
    """The bootstrap as it was computed before: every resample's median of every column, then np.quantile."""
    rng = rng if rng is not None else np.random.default_rng(0)
    values = np.sort(np.asarray(values, dtype=float), axis=0)
    n, q = values.shape
    positions = np.sort(rng.integers(0, n, size=(n_boot, n)), axis=1)
    distinct, column_of = np.unique((~np.isnan(values)).sum(axis=0), return_inverse=True)
    k = (positions[:, :, None] < distinct).sum(axis=1)[:, column_of]
    lo, hi = np.maximum((k - 1) // 2, 0), k // 2
    columns = np.arange(q)
    medians = 0.5 * (values[np.take_along_axis(positions, lo, axis=1), columns]
                     + values[np.take_along_axis(positions, hi, axis=1), columns])
    medians[k == 0] = np.nan
    alpha = (1 - confidence) / 2
    low, high = np.quantile(medians, [alpha, 1 - alpha], axis=0)
    for c in np.flatnonzero(np.isnan(low) & ~np.isnan(medians).all(axis=0)):
        low[c], high[c] = np.quantile(medians[~np.isnan(medians[:, c]), c], [alpha, 1 - alpha])
    return low, high


def test_bootstrap_of_distinct_medians_gives_the_cis_of_every_resample_bit_for_bit():
    draw = np.random.default_rng(1)
    for trial in range(200):
        n, q = int(draw.integers(1, 25)), int(draw.integers(1, 40))
        values = draw.lognormal(size=(n, q))
        if trial % 3 == 0:
            values = np.round(values, 1)  # ties
        values[draw.random((n, q)) < draw.random() * 0.6] = np.nan
        n_boot, confidence = int(draw.choice([1, 2, 7, 100, 2000])), float(draw.choice([0.5, 0.9, 0.95, 0.99]))
        ours = bootstrap_median_ci(values, n_boot=n_boot, confidence=confidence, rng=np.random.default_rng(trial))
        before = reference_median_ci(values, n_boot=n_boot, confidence=confidence, rng=np.random.default_rng(trial))
        for a, b in zip(ours, before):
            np.testing.assert_array_equal(a, b)


def test_importing_the_package_imports_neither_torch_nor_scipy_nor_matplotlib():
    code = ("import sys, analysis; print(sorted(m for m in ('torch', 'scipy', 'matplotlib') "
            "if any(k == m or k.startswith(m + '.') for k in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.stdout.strip() == "[]"


def test_analysis_speed_benchmark_tiny_run(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "analysis_speed.py"), "--runs", "40",
                           "--samples", "20", "--aipm-samples", "5", "--latencies", "10"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    keys = dict(pair.split("=", 1) for pair in done.stdout.strip().splitlines()[-1].split())
    for prefix in ("ours_40", "aipm_40"):
        assert int(keys[f"{prefix}_runs"]) == 40 and float(keys[f"{prefix}_peak_mb"]) > 0
        assert float(keys[f"{prefix}_first_s"]) > 0 and float(keys[f"{prefix}_cached_s"]) > 0
        assert re.fullmatch(r"[\d.]+/[\d.]+/[\d.]+", keys[f"{prefix}_first_s_per_1000_runs"])


def _varied_tree(root: Path) -> None:
    """Runs at several depths, two studies (one nested), names in natural order, a folder without samples that
    failed and one marked complete, a link to a folder, the analysis cache's folder."""
    write_tree(root / "a", models=("alexnet", "resnet50"), input_sizes=(8, 16, 128), runs=2)
    (root / "a" / "study.json").write_text("{}")
    write_tree(root / "b", input_sizes=(32,), runs=11)
    (root / "b" / "nested" / "study.json").parent.mkdir()
    (root / "b" / "nested" / "study.json").write_text("{}")
    write_tree(root / "b" / "nested", input_sizes=(64,), runs=3)
    shallow = write_run(root / "c", run=0)
    meta = json.loads((shallow / "meta.json").read_text())
    for name, status in (("failed", "failed"), ("lost", "complete")):
        (root / "c" / name).mkdir()
        (root / "c" / name / "meta.json").write_text(json.dumps({**meta, "status": status}))
    (root / "link").symlink_to(root / "b", target_is_directory=True)
    write_run(root / "a" / ".analysis_cache", run=0)


@pytest.mark.parametrize("wide", [1, 2, 3, 5, 40])
def test_a_tree_walked_in_parallel_below_a_depth_gives_the_walk_of_one_process(tmp_path, monkeypatch, wide):
    """Whatever the depth from which subtrees are handed to the mapper, and however they are grouped, the walk
    is the same: the same runs in the same order with the same trees and keys, the same folders without samples
    and the same warnings."""
    _varied_tree(tmp_path)

    def walk(mapper=map):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            walks = analysis.readers.walk_trees([tmp_path], mapper=mapper)
        return walks, [str(w.message) for w in caught]

    alone, said = walk()
    assert sum(isinstance(entry, str) for entry in alone[0].entries) == 1 and len(said) == 1
    assert [run.relpath for run in alone[0].runs][:3] == ["a/alexnet/input_8/run_0", "a/alexnet/input_8/run_1",
                                                          "a/alexnet/input_16/run_0"]
    assert len({run.tree for run in alone[0].runs}) == 5  # each model's folder holds a study.json (treegen)
    monkeypatch.setattr(analysis.readers, "PARALLEL_WALK", wide)
    monkeypatch.setattr(analysis.readers, "SUBTREES_PER_TASK", 2)
    handed = []

    def mapper(function, tasks):
        handed.extend(tasks)
        return pool.map(function, tasks)

    with Workers(2, progress=False) as pool:
        walked, said_walking = walk(mapper)
    assert walked == alone and said_walking == said
    assert bool(handed) == (wide < 40)  # no depth of this tree holds 40 folders: all listed in this process

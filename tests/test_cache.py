"""The per-run cache: a second load reads nothing but the cache, gives the same tables and the same warnings,
and never serves a run whose files changed, a cache of other code, or a cache it cannot read."""
import json
import os
import re
import shutil
import warnings

import pandas as pd
import pytest

import analysis.cache
import analysis.chunks
import analysis.idle
import analysis.readers.ours
import analysis.study_cache
from analysis import AnalysisWarning, load_study
from analysis.phases import QUANTITIES
from test_analysis_load import with_cpu_counters
from treegen import write_generation_run, write_run, write_tree

DURATION = 2.0


@pytest.fixture(autouse=True)
def settled(monkeypatch, tmp_path):
    """Runs written a moment ago count as settled (the cache keeps them), the user's cache folder is the
    test's own, and no whole load is read back (analysis.study_cache, tested in test_study_cache.py): each
    load goes through the per-run cache."""
    monkeypatch.setattr(analysis.cache, "RACY_S", 0.0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.setattr(analysis.study_cache.Kept, "read", lambda self: None)


@pytest.fixture
def reads(monkeypatch):
    """How many meta.json files, chunks of runs and idle recordings were read."""
    counts = {"meta": 0, "chunks": 0, "idle": 0}

    def counting(name, function):
        def counted(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)
        return counted

    monkeypatch.setattr(analysis.readers.ours, "records", counting("meta", analysis.readers.ours.records))
    monkeypatch.setattr(analysis.chunks, "reduce_chunk", counting("chunks", analysis.chunks.reduce_chunk))
    monkeypatch.setattr(analysis.idle, "recording_power", counting("idle", analysis.idle.recording_power))
    return counts


def load(root, **options):
    """``load_study(root, workers=1)`` and the messages of the AnalysisWarnings it raised, in order."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load_study(root, **{"workers": 1, **options})
    return study, [str(w.message) for w in caught if issubclass(w.category, AnalysisWarning)]


def assert_same(a, b):
    for table in ("runs", "quantities"):
        pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table))
    pd.testing.assert_frame_equal(a.info.drop(columns="messages"), b.info.drop(columns="messages"))


def gpu_energy(study, run=0):
    rows = study.select("energy_j", "gpu")
    return rows.loc[rows["run"] == run, "value"].item()


def test_a_second_load_reads_only_the_cache_and_gives_the_same_tables(tmp_path, reads):
    write_tree(tmp_path, input_sizes=(16, 32), runs=3, power_w=lambda m, s, r: {"gpu0": s + r, "package-0": 9.0},
               idle_power_w={"gpu0": 10.0, "package-0": 2.0})
    fresh, _ = load(tmp_path, cache=False)
    reads.update(meta=0, chunks=0, idle=0)
    first, _ = load(tmp_path)
    assert reads == {"meta": 1, "chunks": 1, "idle": 1}
    assert list((tmp_path / ".analysis_cache").iterdir()) == [tmp_path / ".analysis_cache" / analysis.cache.tag()]
    second, _ = load(tmp_path)
    assert reads == {"meta": 1, "chunks": 1, "idle": 1}  # nothing read again
    assert_same(fresh, first)
    assert_same(fresh, second)


def test_warnings_of_a_run_are_issued_again_from_the_cache(tmp_path, reads):
    folder = write_run(tmp_path, run=0, idle_power_w={"gpu0": 10.0, "cpu_estimated": 5.0})  # its load: busy
    lines = (folder / "power_metrics.json").read_text().splitlines(keepends=True)
    (folder / "power_metrics.json").write_text("".join(lines[:-1]) + lines[-1][:40])  # truncated last line
    write_run(tmp_path, run=1, schema=1, gpu_domain=None)  # an early tree: its GPU guessed from its device, with a warning
    first, said = load(tmp_path)
    for pattern in ("1 unreadable line", "no 'end' sample", "no gpu_domain recorded", "machine was busy"):
        assert any(re.search(pattern, m) for m in said), (pattern, said)
    again, said_again = load(tmp_path)
    assert reads["chunks"] == 1 and reads["meta"] == 1 and reads["idle"] == 1  # all from the cache
    assert said_again == said
    assert_same(first, again)


def test_a_run_whose_samples_changed_is_read_again(tmp_path):
    folder = write_run(tmp_path, power_w={"gpu0": 100.0}, gpu_counter=False, duration_s=DURATION)
    samples = folder / "power_metrics.json"
    before = os.stat(samples)
    assert gpu_energy(load(tmp_path)[0]) == pytest.approx(100.0 * DURATION)
    data = samples.read_bytes()
    samples.write_bytes(data.replace(b'"gpu0.power_w": 100.0', b'"gpu0.power_w": 300.0'))  # same size
    os.utime(samples, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    assert os.stat(samples).st_size == before.st_size
    assert gpu_energy(load(tmp_path)[0]) == pytest.approx(300.0 * DURATION)
    samples.write_bytes(data)  # back as it was, with its old mtime: its ctime still says it changed
    os.utime(samples, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert gpu_energy(load(tmp_path)[0]) == pytest.approx(100.0 * DURATION)


def test_a_resumed_run_is_read_again(tmp_path):
    write_run(tmp_path, power_w={"gpu0": 100.0})
    assert gpu_energy(load(tmp_path)[0]) == pytest.approx(100.0 * DURATION)
    shutil.rmtree(tmp_path / "input_64" / "run_0")  # what --resume does with an interrupted run, then measures it
    write_run(tmp_path, power_w={"gpu0": 250.0})
    assert gpu_energy(load(tmp_path)[0]) == pytest.approx(250.0 * DURATION)


def test_a_changed_meta_json_changes_the_record(tmp_path):
    folder = write_run(tmp_path)
    assert load(tmp_path)[0].runs["weights"].item() == "random"
    meta = json.loads((folder / "meta.json").read_text())
    meta["weights"] = "pretrained"
    (folder / "meta.json").write_text(json.dumps(meta))
    assert load(tmp_path)[0].runs["weights"].item() == "pretrained"


def test_runs_that_changed_just_before_the_load_are_not_kept(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(analysis.cache, "RACY_S", 3600.0)  # every file changed "just now"
    write_run(tmp_path)
    load(tmp_path)
    load(tmp_path)
    assert reads["chunks"] == 2 and not (tmp_path / ".analysis_cache").exists()


def test_a_cache_of_other_code_or_a_damaged_one_is_ignored(tmp_path, reads, monkeypatch):
    write_run(tmp_path)
    first, _ = load(tmp_path)
    monkeypatch.setattr(analysis.cache, "REDUCTION_VERSION", analysis.cache.REDUCTION_VERSION + 1)
    analysis.cache.tag.cache_clear()
    try:
        load(tmp_path)
        assert reads["chunks"] == 2  # another version's cache is not read, and is replaced
        assert [p.name for p in (tmp_path / ".analysis_cache").iterdir()] == [analysis.cache.tag()]
        for shard in (tmp_path / ".analysis_cache" / analysis.cache.tag()).glob("*.parquet"):
            shard.write_bytes(b"not parquet")
        damaged, said = load(tmp_path)
        assert reads["chunks"] == 3 and not said
        assert_same(first, damaged)
    finally:
        analysis.cache.tag.cache_clear()


def test_an_unreadable_idle_recording_is_warned_about_each_time(tmp_path, reads):
    write_run(tmp_path, idle_power_w={"gpu0": 10.0})
    (tmp_path / "idle" / "idle_synthetic.json").write_text("")  # an empty recording
    first, said = load(tmp_path)
    assert any("no readable idle recording" in m for m in said)
    again, said_again = load(tmp_path)
    assert said_again == said and reads["chunks"] == 1
    assert_same(first, again)


def test_runs_whose_rows_are_gone_are_read_again_and_kept_again(tmp_path, reads):
    write_tree(tmp_path, input_sizes=(16, 32), runs=2)
    first, _ = load(tmp_path)
    for rows in (tmp_path / ".analysis_cache" / analysis.cache.tag()).glob("rows-*.parquet"):
        rows.unlink()  # another load merging the shards, say
    again, said = load(tmp_path)
    assert reads["chunks"] == 2 and reads["meta"] == 1 and not said  # records from the cache, runs read again
    assert_same(first, again)
    load(tmp_path)
    assert reads["chunks"] == 2


def test_cache_false_reads_everything_and_writes_nothing(tmp_path, reads):
    write_run(tmp_path)
    load(tmp_path)
    load(tmp_path, cache=False)
    assert reads["chunks"] == 2
    shutil.rmtree(tmp_path / ".analysis_cache")
    load(tmp_path, cache=False)
    assert not (tmp_path / ".analysis_cache").exists()


def test_a_tree_that_cannot_hold_the_cache_has_it_in_the_users_cache_folder(tmp_path, reads):
    tree = tmp_path / "tree"
    write_run(tree)
    (tree / ".analysis_cache").write_text("a file where the cache folder would go")
    load(tree)
    load(tree)
    assert reads["chunks"] == 1
    assert len(list((tmp_path / "user-cache" / "inference-energy").glob(f"*/{analysis.cache.tag()}/*.parquet"))) == 2


def test_a_cache_that_cannot_be_written_anywhere_is_one_warning(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    write_run(tree)
    (tree / ".analysis_cache").write_text("not a folder")
    (tmp_path / "nowhere").write_text("not a folder either")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "nowhere"))
    study, said = load(tree)
    assert len(study.runs) == 1
    assert len(said) == 1 and "analysis cache not written" in said[0]


def test_the_cache_folder_is_never_walked(tmp_path):
    folder = write_run(tmp_path)
    load(tmp_path)
    shutil.copytree(folder, tmp_path / ".analysis_cache" / "input_64" / "run_0")  # a run-like folder inside
    assert len(load(tmp_path)[0].runs) == 1


def test_many_loads_merge_their_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(analysis.cache, "MAX_SHARDS", 2)
    for run in range(4):  # each load adds one run, so writes one shard
        write_run(tmp_path, run=run, power_w={"gpu0": 100.0 + run})
        study, _ = load(tmp_path)
    assert len(list((tmp_path / ".analysis_cache" / analysis.cache.tag()).glob("entries-*.parquet"))) <= 2
    assert [gpu_energy(study, run) for run in range(4)] == pytest.approx([(100.0 + r) * DURATION for r in range(4)])
    assert_same(load(tmp_path, cache=False)[0], load(tmp_path)[0])


def test_a_moved_tree_keeps_its_cache(tmp_path, reads):
    write_tree(tmp_path / "a", input_sizes=(16, 32), runs=2)
    first, _ = load(tmp_path / "a")
    (tmp_path / "a").rename(tmp_path / "b")
    moved, _ = load(tmp_path / "b")
    assert reads["chunks"] == 1
    assert moved.info["path"].map(str).str.startswith(str(tmp_path / "b")).all()
    pd.testing.assert_frame_equal(first.quantities.drop(columns="label"), moved.quantities.drop(columns="label"))


def test_a_generation_tree_gives_the_same_phase_figures_in_workers_and_from_the_cache(tmp_path, monkeypatch):
    for run in range(2):  # a prefill shorter than NVML's update: taken from the power readings, with a warning
        write_generation_run(tmp_path, input_size=32, run=run, phase_s={"prefill": 0.05, "decode": 1.6})
    write_generation_run(tmp_path, input_size=64, run=0, split=False)  # phases not delimited: NaN, a warning
    write_generation_run(tmp_path, input_size=64, run=1, tokens=False)  # no token timings: NaN, a warning
    serial, said = load(tmp_path, cache=False)
    for pattern in (r"run_0 \(prefill phase\): gpu0: the 0.05 s window is shorter", "do not delimit its phases",
                    "no tokens.csv"):
        assert any(re.search(pattern, m) for m in said), (pattern, said)
    figures = serial.quantities[serial.quantities["quantity"].isin(QUANTITIES)]
    assert set(figures["quantity"]) == set(QUANTITIES) and figures["value"].notna().sum() > len(figures) / 2
    monkeypatch.setattr(analysis.chunks, "CHUNK_BYTES", 1)  # a chunk per run, read by two worker processes
    parallel, said_in_parallel = load(tmp_path, workers=2)  # and kept in the cache

    def read_again(info):
        raise AssertionError(f"runs {list(info.index)} read again")
    monkeypatch.setattr(analysis.chunks, "reduce_chunk", read_again)
    cached, said_from_cache = load(tmp_path)
    assert said_in_parallel == said and said_from_cache == said
    assert_same(serial, parallel)
    assert_same(serial, cached)


def test_other_work_is_one_warning_over_runs_read_and_runs_from_the_cache(tmp_path):
    for run, busy_per_s in enumerate((5.0, 3.0)):  # 50 % and 25 % of 8 CPUs
        with_cpu_counters(write_run(tmp_path, run=run), busy_per_s=busy_per_s, own_per_s=1.0)
    load(tmp_path)
    samples = tmp_path / "input_64" / "run_0" / "power_metrics.json"
    before = os.stat(samples)
    os.utime(samples, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # run_0 read again, run_1 from the cache
    said = [m for m in load(tmp_path)[1] if "other processes kept" in m]
    assert len(said) == 1 and re.search(r"run_0 and 1 other run\(s\): other processes kept 25% to 50%", said[0])

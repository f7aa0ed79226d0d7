"""Whole loads kept: a second load of an unchanged tree reads its tables back, with the same warnings; any
change to a file the load read (a run's, an incomplete folder's status, an idle recording), another argument
or other code gives a load done again, never the tables kept."""
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

import analysis.cache
import analysis.chunks
import analysis.readers.ours
import analysis.study_cache as kept
from analysis import AnalysisWarning, NoUsableRuns, load_study
from test_aipowermeter import SMI_2023, place
from test_cache import gpu_energy, load
from treegen import write_generation_run, write_idle, write_run, write_tree

DURATION = 2.0


@pytest.fixture(autouse=True)
def settled(monkeypatch, tmp_path):
    """Files written a moment ago count as settled, and the user's cache folder is the test's own."""
    monkeypatch.setattr(analysis.cache, "RACY_S", 0.0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))


@pytest.fixture
def reads(monkeypatch):
    """How many meta.json chunks and chunks of runs were read, and how many kept loads read back."""
    counts = {"meta": 0, "chunks": 0, "kept": 0}

    def counting(name, function, found=lambda result: True):
        def counted(*args, **kwargs):
            result = function(*args, **kwargs)
            counts[name] += bool(found(result))
            return result
        return counted

    monkeypatch.setattr(analysis.readers.ours, "records", counting("meta", analysis.readers.ours.records))
    monkeypatch.setattr(analysis.chunks, "reduce_chunk", counting("chunks", analysis.chunks.reduce_chunk))
    monkeypatch.setattr(kept.Kept, "read", counting("kept", kept.Kept.read, lambda result: result is not None))
    return counts


def assert_same(a, b):
    for table in ("runs", "quantities", "info"):
        pd.testing.assert_frame_equal(getattr(a, table), getattr(b, table))


def loads_kept(root):
    return sorted(p.name for p in (root / ".analysis_cache" / analysis.cache.tag() / kept.FOLDER).iterdir())


def test_a_second_load_reads_the_tables_back_with_the_same_warnings(tmp_path, reads):
    write_tree(tmp_path, input_sizes=(16, 32), runs=3, power_w=lambda m, s, r: {"gpu0": s + r, "package-0": 9.0},
               idle_power_w={"gpu0": 10.0, "package-0": 2.0})
    write_run(tmp_path / "resnet50", input_size=48, status="failed")  # one warning: an incomplete run left out
    fresh, said = load(tmp_path, cache=False)
    assert len(said) == 1
    first, said_first = load(tmp_path)
    assert reads == {"meta": 2, "chunks": 2, "kept": 0}
    second, said_second = load(tmp_path)
    assert reads == {"meta": 2, "chunks": 2, "kept": 1}  # nothing read but the tables kept
    assert said_first == said_second == said
    assert_same(fresh, first)
    assert_same(fresh, second)
    assert len(loads_kept(tmp_path)) == 1


def test_a_generation_tree_and_its_phases_are_read_back_the_same(tmp_path, reads):
    for run in range(2):
        write_generation_run(tmp_path, run=run)
    first, said = load(tmp_path)
    second, said_again = load(tmp_path)
    assert reads["kept"] == 1 and said_again == said
    assert_same(first, second)
    assert isinstance(second.info["phases"].iloc[0], list) and isinstance(second.info["path"].iloc[0], Path)


def test_a_run_whose_samples_changed_gives_its_new_energy(tmp_path, reads):
    folder = write_run(tmp_path, power_w={"gpu0": 100.0}, gpu_counter=False, duration_s=DURATION)
    samples = folder / "power_metrics.json"
    before = os.stat(samples)
    assert gpu_energy(load(tmp_path)[0]) == pytest.approx(100.0 * DURATION)
    samples.write_bytes(samples.read_bytes().replace(b'"gpu0.power_w": 100.0', b'"gpu0.power_w": 300.0'))
    os.utime(samples, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime: its ctime moved
    assert gpu_energy(load(tmp_path)[0]) == pytest.approx(300.0 * DURATION)
    assert reads["kept"] == 0
    assert gpu_energy(load(tmp_path)[0]) == pytest.approx(300.0 * DURATION)
    assert reads["kept"] == 1


def test_a_run_added_removed_or_resumed_gives_new_tables(tmp_path, reads):
    write_run(tmp_path, run=0, power_w={"gpu0": 100.0})
    assert len(load(tmp_path)[0].runs) == 1
    write_run(tmp_path, run=1, power_w={"gpu0": 100.0})
    assert len(load(tmp_path)[0].runs) == 2
    shutil.rmtree(tmp_path / "input_64" / "run_1")
    assert len(load(tmp_path)[0].runs) == 1
    shutil.rmtree(tmp_path / "input_64" / "run_0")  # what --resume does with an interrupted run, then measures it
    write_run(tmp_path, run=0, power_w={"gpu0": 250.0})
    assert gpu_energy(load(tmp_path)[0]) == pytest.approx(250.0 * DURATION)
    assert reads["kept"] == 1  # the third load: the tree of the first again


def test_an_incomplete_folder_that_changes_status_gives_a_new_load(tmp_path, reads):
    write_run(tmp_path, run=0)
    failed = tmp_path / "input_64" / "run_1"
    failed.mkdir(parents=True)
    meta = json.loads((tmp_path / "input_64" / "run_0" / "meta.json").read_text())
    (failed / "meta.json").write_text(json.dumps({**meta, "run": 1, "status": "failed"}))
    said = load(tmp_path)[1]
    assert any("run_1 (failed, no samples)" in m for m in said)
    (failed / "meta.json").write_text(json.dumps({**meta, "run": 1, "status": "running"}))
    said = load(tmp_path)[1]
    assert reads["kept"] == 0 and any("run_1 (running, no samples)" in m for m in said)


def test_a_changed_idle_recording_gives_its_new_baseline(tmp_path, reads):
    write_run(tmp_path, idle_power_w={"gpu0": 10.0})
    rows = load(tmp_path)[0].select("idle_power_w", "gpu")
    assert rows["value"].item() == pytest.approx(10.0)
    write_idle(tmp_path, {"gpu0": 30.0})
    rows = load(tmp_path)[0].select("idle_power_w", "gpu")
    assert reads["kept"] == 0 and rows["value"].item() == pytest.approx(30.0)


def test_other_arguments_and_other_code_are_other_loads(tmp_path, reads, monkeypatch):
    write_run(tmp_path)
    assert load(tmp_path)[0].runs["label"].item() == tmp_path.name
    assert load(tmp_path, labels=["mine"])[0].runs["label"].item() == "mine"
    assert reads["kept"] == 0
    with monkeypatch.context() as changed:
        changed.setattr(kept, "SOURCES", (*kept.SOURCES, "stats.py"))  # the code, changed
        load(tmp_path)
    assert reads["kept"] == 0
    load(tmp_path, labels=["mine"])
    assert reads["kept"] == 1


def test_a_load_whose_files_changed_just_before_it_is_not_kept(tmp_path, reads, monkeypatch):
    write_run(tmp_path)
    monkeypatch.setattr(analysis.cache, "RACY_S", 3600.0)  # every file changed "just now"
    load(tmp_path)
    load(tmp_path)
    assert reads["kept"] == 0 and reads["chunks"] == 2


def test_a_damaged_load_is_done_again(tmp_path, reads):
    write_tree(tmp_path, input_sizes=(16,), runs=2)
    first, said = load(tmp_path)
    (name,) = loads_kept(tmp_path)
    folder = tmp_path / ".analysis_cache" / analysis.cache.tag() / kept.FOLDER / name
    (folder / "quantities.parquet").write_bytes(b"not parquet")
    again, said_again = load(tmp_path)
    assert reads["kept"] == 0 and said_again == said
    assert_same(first, again)


def test_at_most_kept_loads_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(kept, "KEPT", 2)
    write_run(tmp_path)
    for label in "abc":
        load(tmp_path, labels=[label])
    assert len(loads_kept(tmp_path)) == 2


def test_warnings_before_a_load_fails_are_still_issued(tmp_path):
    write_run(tmp_path, status="failed")
    with pytest.warns(AnalysisWarning, match="incomplete run"), pytest.raises(NoUsableRuns):
        load_study(tmp_path, workers=1)


def test_values_json_would_change_come_back_as_they_were():
    frame = pd.DataFrame({"path": [Path("/a/b"), Path("c")], "mixed": [("x", 1), {"k": [1.5, None, Path("d")]}],
                          "text": pd.array(["u", None], dtype="str"), "n": [1, 2]}, index=[3, 7])
    back = kept._decoded(kept._encoded(frame))
    pd.testing.assert_frame_equal(back, frame)
    assert back.at[3, "mixed"] == ("x", 1) and isinstance(back.at[7, "mixed"]["k"][2], Path)
    for unkept in ({1: "a key that is not text"}, object()):
        with pytest.raises(TypeError):
            kept._encoded(pd.DataFrame({"x": [unkept]}))


def test_an_aipowermeter_tree_with_a_run_named_by_text_is_kept_and_read_back(tmp_path, reads):
    for run in ("run_1", "warm"):  # runs 1 and "warm": numbers and text in one identity column
        place(tmp_path, SMI_2023, "m", "input_8", run, latencies=[0.01] * 5)
    first, said = load(tmp_path)
    assert sorted(first.runs["run"], key=str) == [1, "warm"]
    second, said_again = load(tmp_path)
    assert reads["kept"] == 1 and said_again == said
    assert_same(first, second)
    assert first.quantities["task"].isna().all()  # AIPowerMeter's runs name no task: no value, as it was
    assert isinstance(second.runs.index, pd.RangeIndex) and isinstance(second.quantities.index, pd.RangeIndex)


def test_each_run_of_a_read_back_table_has_its_own_lists(tmp_path, reads):
    for run in range(2):
        write_generation_run(tmp_path, run=run)
    load(tmp_path)
    info = load(tmp_path)[0].info
    assert reads["kept"] == 1
    assert info["phases"].iloc[0] == info["phases"].iloc[1] and info["phases"].iloc[0] is not info["phases"].iloc[1]
    assert info["messages"].iloc[0] is not info["messages"].iloc[1]
    assert info["sensors"].iloc[0] is info["sensors"].iloc[1]  # equal mappings are one object, as in a load


def test_a_copy_found_stale_is_replaced(tmp_path, reads):
    write_run(tmp_path, idle_power_w={"gpu0": 10.0})
    load(tmp_path)
    write_idle(tmp_path, {"gpu0": 30.0})
    load(tmp_path)  # the idle recording changed: done again, and kept in place of the stale copy
    rows = load(tmp_path)[0].select("idle_power_w", "gpu")
    assert reads["kept"] == 1 and rows["value"].item() == pytest.approx(30.0)
    assert len(loads_kept(tmp_path)) == 1


def test_a_load_with_a_missing_idle_recording_is_not_kept(tmp_path, reads):
    write_run(tmp_path, idle_power_w={"gpu0": 10.0})
    (tmp_path / "idle" / "idle_synthetic.json").unlink()  # gone: it may have gone after a load read it
    for _ in range(2):
        rows = load(tmp_path)[0].select("idle_power_w", "gpu")
    assert reads["kept"] == 0 and rows.empty


def test_an_idle_recording_named_with_colons_is_kept(tmp_path, reads):
    folder = write_run(tmp_path, idle_power_w={"gpu0": 10.0})
    recording = write_idle(tmp_path, {"gpu0": 20.0}, name="idle_2024-01-01T12:00:00.json")
    meta = json.loads((folder / "meta.json").read_text())
    meta["idle"] = {"recording": recording}
    (folder / "meta.json").write_text(json.dumps(meta))
    load(tmp_path)
    rows = load(tmp_path)[0].select("idle_power_w", "gpu")
    assert reads["kept"] == 1 and rows["value"].item() == pytest.approx(20.0)


def test_damaged_warnings_of_a_kept_load_are_a_load_done_again(tmp_path, reads):
    write_run(tmp_path, status="failed")
    write_run(tmp_path, run=1)
    first, said = load(tmp_path)
    (name,) = loads_kept(tmp_path)
    about = tmp_path / ".analysis_cache" / analysis.cache.tag() / kept.FOLDER / name / "about.json"
    about.write_text(json.dumps({**json.loads(about.read_text()), "messages": [["AnalysisWarning"]]}))
    again, said_again = load(tmp_path)
    assert reads["kept"] == 0 and said_again == said
    assert_same(first, again)


def test_no_path_is_no_usable_run():
    with pytest.raises(NoUsableRuns):
        load_study([])


def test_a_temporary_folder_left_by_a_killed_load_is_removed(tmp_path):
    write_run(tmp_path)
    load(tmp_path)
    folder = tmp_path / ".analysis_cache" / analysis.cache.tag() / kept.FOLDER
    (folder / ".left.tmp").mkdir()
    (folder / ".writing.tmp").mkdir()
    old = time.time() - 2 * kept.ABANDONED_S
    os.utime(folder / ".left.tmp", (old, old))
    load(tmp_path, labels=["another load"])
    assert not (folder / ".left.tmp").exists() and (folder / ".writing.tmp").exists()  # that one may be writing


def test_only_analysis_warnings_are_said_again(tmp_path, reads, monkeypatch):
    reduce_chunk = analysis.chunks.reduce_chunk

    def deprecated(*args, **kwargs):
        warnings.warn("a library's deprecation", DeprecationWarning)
        return reduce_chunk(*args, **kwargs)

    monkeypatch.setattr(analysis.chunks, "reduce_chunk", deprecated)
    write_run(tmp_path, status="failed")
    write_run(tmp_path, run=1)
    with warnings.catch_warnings(record=True) as first:
        warnings.simplefilter("always")
        load_study(tmp_path, workers=1)
    with warnings.catch_warnings(record=True) as second:
        warnings.simplefilter("always")
        load_study(tmp_path, workers=1)
    assert reads["kept"] == 1
    assert [w.category for w in first] == [AnalysisWarning, DeprecationWarning]
    assert [(w.category, str(w.message)) for w in second] == [(AnalysisWarning, str(first[0].message))]


def test_columns_of_text_or_no_value_come_back_through_parquet_as_they_were(tmp_path):
    """Text columns skip JSON: each such column, even one holding no value at all, comes back from the file as
    it was; NaN beside text, or a subclass of ``str``, goes the JSON way."""
    class Name(str):
        pass

    frame = pd.DataFrame({
        "none": pd.Series([None] * 3, dtype=object), "text": pd.Series(["a", None, "b"], dtype=object),
        "nan": pd.Series(["a", float("nan"), None], dtype=object), "sub": pd.Series([Name("x")] * 3, dtype=object)})
    with pytest.raises(TypeError):  # a str of another type is not kept, rather than changed
        kept._encoded(frame)
    frame = frame.drop(columns="sub")
    encoded = kept._encoded(frame)
    assert json.loads(encoded.schema.metadata[kept.KINDS]) == {"none": "text", "text": "text", "nan": "json"}
    kept.pq.write_table(encoded, tmp_path / "t.parquet")
    back = kept._decoded(kept.pq.read_table(tmp_path / "t.parquet"))
    pd.testing.assert_frame_equal(back, frame)
    assert back["nan"].iloc[1] != back["nan"].iloc[1] and back["nan"].iloc[2] is None  # NaN and None, each kept
    named = pd.DataFrame({"folder": pd.Series(["a\udcff", None], dtype=object)})  # a name's byte not UTF-8
    kept.pq.write_table(kept._encoded(named), tmp_path / "n.parquet")
    pd.testing.assert_frame_equal(kept._decoded(kept.pq.read_table(tmp_path / "n.parquet")), named)

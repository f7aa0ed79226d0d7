"""The generate task on the measuring side: the recorder's split sample, the decoding loop against
``model.generate``, the window of one request, the sweep's tree, the plan, config overrides and the CLI."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch
from test_recorder import RampCounter, read_lines, wait_for_reads

import measure.__main__ as cli
from analysis import load_study
from measure import generation, hf_models, runtree, sweep
from measure.models import ModelError, ModelInputs, load_model
from measure.plan import GENERATION_PRESETS, Plan, PlanError
from measure.recorder import Recorder

pytestmark = pytest.mark.filterwarnings("ignore::analysis.AnalysisWarning")
# a GPT-2 small enough for seconds per run on a loaded CPU, with its specials inside its vocabulary
TINY = "hf:gpt2:n_layer=1,n_head=2,n_embd=32,n_positions=64,vocab_size=512,bos_token_id=0,eos_token_id=0"
# "loop" without polls: its backstop timer takes every tick (the polled ticks have tests of their own)
TICKS = pytest.mark.parametrize("ticks", ["thread", "signal", "loop"])


# ---------------------------------------------------------------- the recorder's split sample

@TICKS
def test_a_split_is_a_synchronous_full_sample_between_the_edges(tmp_path, ticks):
    class Decimated(RampCounter):
        """Full reads (the edges', the split's) say 1, the ticks' cheaper reads 0."""

        def capture(self):
            self.reads += 1
            return "full"

        def capture_tick(self):
            self.reads += 1
            return "tick"

        def decode(self, raw):
            return {"dev0.energy_j": 1.0 if raw == "full" else 0.0, "dev0.power_w": 1.0}

    sensor = Decimated()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=0.005, ticks=ticks)
    recorder.start()
    wait_for_reads(sensor, 3)
    before = time.perf_counter()
    split_s = recorder.split()
    after = time.perf_counter()
    assert (tmp_path / "p.json").read_bytes().count(b"\n") == 1  # nothing written at the boundary but the start
    wait_for_reads(sensor, sensor.reads + 2)
    window = recorder.stop()
    lines = read_lines(tmp_path / "p.json")
    marks = [line["mark"] for line in lines]
    assert marks[0] == "start" and marks[-1] == "end" and marks.count("split") == 1
    split = lines[marks.index("split")]
    assert split["t_s"] == round(split_s, 6) and 0 < split_s < window.duration_s
    assert "tick" in marks[1:marks.index("split")] and "tick" in marks[marks.index("split"):]
    assert [line["dev0.energy_j"] for line in lines if line["mark"] != "tick"] == [1.0, 1.0, 1.0]
    assert {line["dev0.energy_j"] for line in lines if line["mark"] == "tick"} == {0.0}
    times = [line["t_s"] for line in lines]
    assert times == sorted(times) and len(set(times)) == len(times) and window.samples == len(lines)
    assert after - before < window.duration_s


@TICKS
def test_no_tick_is_captured_inside_a_split(tmp_path, ticks):
    """Reads three periods long, splits one after the other: no read ever nests in another."""

    class Slow(RampCounter):
        def __init__(self):
            super().__init__()
            self.active = 0

        def read(self):
            self.active += 1
            try:
                assert self.active == 1, "a read nested in another"
                began = time.perf_counter()
                while time.perf_counter() - began < 0.012:
                    pass
                return super().read()
            finally:
                self.active -= 1

    sensor = Slow()
    recorder = Recorder([sensor], tmp_path / "p.json", period_s=0.004, ticks=ticks)
    recorder.start()
    splits = [recorder.split() for _ in range(5)]
    wait_for_reads(sensor, 8)
    recorder.stop()  # a read that nested would have raised from its tick here
    lines = read_lines(tmp_path / "p.json")
    assert [line["t_s"] for line in lines if line["mark"] == "split"] == [round(t, 6) for t in splits]
    times = [line["t_s"] for line in lines]
    assert all(a < b for a, b in zip(times, times[1:]))


def test_a_split_outside_a_window_is_an_error(tmp_path):
    recorder = Recorder([RampCounter()], tmp_path / "p.json", period_s=0.01)
    with pytest.raises(RuntimeError, match="not running"):
        recorder.split()


# ---------------------------------------------------------------- the decoding loop

def random_gpt2(eos_token_id: int, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=300, initializer_range=0.5,
                        bos_token_id=eos_token_id, eos_token_id=eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config).eval()


def test_the_loop_gives_the_tokens_of_generate_with_end_of_sequence_disabled():
    prompt = torch.randint(0, 300, (3, 7), generator=torch.Generator().manual_seed(1))
    new = 12
    with torch.inference_mode():
        free = generation.generate(generation.Decoder(random_gpt2(eos_token_id=299)), prompt, new, lambda: None)
    eos = int(free.tokens[0, 2])  # a token greedy decoding picks: made the end of sequence, it must be avoided
    model = random_gpt2(eos_token_id=eos)
    with torch.inference_mode():
        ours = generation.generate(generation.Decoder(model), prompt, new, lambda: None)
        reference = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                   min_new_tokens=new, max_new_tokens=new, pad_token_id=eos)
    assert ours.tokens.shape == (3, new) and ours.tokens.dtype == torch.int64
    assert torch.equal(ours.tokens, reference[:, prompt.shape[1]:])
    assert eos not in ours.tokens[0] and not torch.equal(ours.tokens, free.tokens)  # the suppression mattered
    assert len(set(ours.tokens[0].tolist())) > 3  # a sequence that varies, so the comparison means something


def test_every_token_is_timed_after_a_synchronisation_the_boundary_after_the_first_and_polls_between():
    model = random_gpt2(eos_token_id=299)
    forwards, events = [], []
    model.register_forward_pre_hook(lambda *_: forwards.append(time.perf_counter()))
    new = 6

    def sync():
        events.append(("sync", len(forwards)))

    with torch.inference_mode():
        out = generation.generate(generation.Decoder(model), torch.zeros(2, 5, dtype=torch.long), new, sync,
                                  boundary=lambda: events.append(("boundary", len(forwards))),
                                  end=lambda: events.append(("end", len(forwards))),
                                  between=lambda: events.append(("between", len(forwards))))
    steps = [event for k in range(2, new) for event in (("sync", k), ("between", k))]  # a loop tick's place
    assert events == [("sync", 1), ("boundary", 1), *steps, ("sync", new), ("end", new)]
    assert len(forwards) == new and (out.latency_s > 0).all() and out.t_s[0] == out.latency_s[0]
    assert (np.diff(out.t_s) >= out.latency_s[1:] - 1e-9).all() and out.request_s == out.t_s[-1]
    # the cache: 2 layers x keys and values x batch 2 x 2 heads x (5 + 6 - 1 positions) x 16 dims x 4 bytes
    assert out.cache_type == "DynamicCache" and out.cache_mib == pytest.approx(2 * 2 * 2 * 2 * 10 * 16 * 4 / 2**20)


def test_the_window_holds_one_request_with_its_boundary(tmp_path):
    model = random_gpt2(eos_token_id=299)
    stamps = []
    model.register_forward_pre_hook(lambda *_: stamps.append(time.perf_counter()))
    recorder = Recorder([RampCounter()], tmp_path / "p.json", period_s=0.01)
    edges = []
    start, stop = recorder.start, recorder.stop
    recorder.start = lambda: (start(), edges.append(time.perf_counter()))
    recorder.stop = lambda: (edges.append(time.perf_counter()), stop())[1]
    polls, poll = [], recorder.poll
    recorder.poll = lambda: (polls.append(time.perf_counter()), poll())
    inputs = ModelInputs((), {"input_ids": torch.zeros(2, 5, dtype=torch.long)})
    with torch.inference_mode():
        measured = generation.measure_window(generation.Decoder(model), inputs, 4, 2, lambda: None, recorder)
    assert len(stamps) == 3 * 4 and len(edges) == 2
    # the loop polls for a tick between two decode steps of the measured request: after the second and third token
    assert len(polls) == 2 and stamps[-3] < polls[0] < stamps[-2] < polls[1] < stamps[-1]
    inside = [t for t in stamps if edges[0] <= t <= edges[1]]
    assert inside == stamps[-4:]  # the warm-up requests before the window, the measured one inside
    marks = [line["mark"] for line in read_lines(tmp_path / "p.json")]
    assert marks[0] == "start" and marks[-1] == "end" and marks.count("split") == 1
    assert 0 < measured.split_s < measured.window.duration_s
    assert measured.generated.t_s[0] <= measured.split_s  # the split follows the first token


# ---------------------------------------------------------------- a sweep of the generate task

@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    plan = Plan.from_preset(TINY, "quick", task="generate", sizes=[4, 12], new_tokens=[3], batch_sizes=[1, 2],
                            runs=2, idle_s=0.2, period_s=0.02, device="cpu")
    return sweep.run_study(plan, tmp_path_factory.mktemp("generation") / "tree", progress=False)


def test_the_tree_of_a_generation_sweep(tree):
    runs = sorted(p.relative_to(tree).as_posix() for p in tree.glob("*/input_*/run_*"))
    assert runs == [f"batch{b}-fp32-eager-new3/input_{n}/run_{k}" for b in (1, 2) for n in (12, 4) for k in (0, 1)]
    folder = tree / "batch2-fp32-eager-new3" / "input_12" / "run_1"
    assert sorted(p.name for p in folder.iterdir()) == ["latency.csv", "meta.json", "power_metrics.json",
                                                         "tokens.csv"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["iterations"] == 1
    assert meta["identity"] == {"model": TINY, "task": "generate", "input_size": 12, "batch_size": 2,
                                "dtype": "fp32", "execution": "eager", "threads": torch.get_num_threads(),
                                "device": "cpu", "new_tokens": 3}
    assert meta["input_shape"] == [2, 12] and meta["phases"] == ["prefill", "decode"]
    about = meta["generation"]
    assert (about["prompt_tokens"], about["new_tokens"], about["kv_cache"]) == (12, 3, "DynamicCache")
    assert about["kv_cache_mib"] == pytest.approx(2 * 2 * 2 * (12 + 3 - 1) * 16 * 4 / 2**20)  # 1 layer, 2 heads
    assert len(about["output_ids"]) == 3 and about["decoding"] == "greedy, end of sequence suppressed"
    tokens = pd.read_csv(folder / "tokens.csv")
    assert list(tokens.columns) == ["token", "t_s", "latency_s"] and tokens["token"].tolist() == [0, 1, 2]
    assert (tokens["latency_s"] > 0).all() and tokens["t_s"].is_monotonic_increasing
    latency = pd.read_csv(folder / "latency.csv")["latency_s"].tolist()
    assert latency == [pytest.approx(tokens["t_s"].iloc[-1], abs=1e-8)]
    lines = [json.loads(line) for line in (folder / "power_metrics.json").read_text().splitlines()]
    split = next(line for line in lines if line["mark"] == "split")
    assert split["t_s"] == pytest.approx(about["split_s"], abs=1e-6) and lines[-1]["t_s"] > split["t_s"]
    prefill_flops = 2 * 12 * 2 * 32 * 512  # at least the head's projection of the last positions
    assert meta["flops_per_inference"] > prefill_flops


def test_a_generation_sweep_loads_with_phases_that_add_up(tree):
    study = load_study(tree)
    assert len(study.runs) == 8 and "new_tokens" in study.dimensions
    rows = study.quantities.set_index(["run_id", "domain", "quantity"])["value"]
    for run_id in study.runs["run_id"]:
        window_j = rows[run_id, "cpu_estimated", "energy_j"]
        assert rows[run_id, "cpu_estimated", "prefill_energy_j"] + rows[run_id, "cpu_estimated", "decode_energy_j"] \
            == pytest.approx(window_j, rel=1e-9)
        assert rows[run_id, "clock", "ttft_s"] > 0 and rows[run_id, "clock", "itl_median_s"] > 0


def test_the_output_is_the_same_in_every_run_of_a_point(tree):
    outputs = {json.dumps(json.loads((folder / "meta.json").read_text())["generation"]["output_ids"])
               for folder in tree.glob("batch1-fp32-eager-new3/input_12/run_*")}
    assert len(outputs) == 1


# ---------------------------------------------------------------- the plan, the model, the command line

def test_generation_presets_and_configurations():
    assert set(GENERATION_PRESETS) == {"seed", "quick", "cpu-study", "gpu-study"}
    plan = Plan.from_preset("hf:gpt2", task="generate")
    assert (plan.sizes, plan.new_tokens, plan.batch_sizes, plan.iterations) == ([32, 128, 512], [64], [1, 8], 1)
    assert [c.name for c in plan.configs()] == ["batch1-fp32-eager-new64", "batch8-fp32-eager-new64"]
    gpu = Plan.from_preset("hf:gpt2", "gpu-study", task="generate")
    assert gpu.period_s == 0.02 and gpu.new_tokens == [128]
    assert Plan.from_preset("hf:gpt2", quick=True, task="generate", new_tokens=[4, 8]).configs()[1].name == \
        "batch1-fp32-eager-new8"


@pytest.mark.parametrize("overrides, api, command_line", [
    (dict(new_tokens=[1]), "new_tokens must be integers of at least 2", "--new-tokens must be integers of at least 2"),
    (dict(iterations=5), "iterations must be 1 and iterations_at empty", "--iters must be 1 and --iters-at empty"),
    (dict(executions=["compiled"]), "the generate task runs eager only", "the generate --task runs eager only"),
    (dict(task="forward", new_tokens=[8]), "new_tokens goes with the generate task",
     "--new-tokens goes with the generate --task"),
    (dict(task="decode"), "task must be one of forward, generate", "--task must be one of forward, generate"),
])
def test_generation_plans_are_checked_in_the_callers_vocabulary(overrides, api, command_line):
    settings = {"task": "generate", **overrides}
    with pytest.raises(PlanError, match=api):
        Plan.from_preset("hf:gpt2", size_unit="tokens", **settings)
    with pytest.raises(PlanError, match=command_line):
        Plan.from_preset("hf:gpt2", size_unit="tokens", names=cli.OPTIONS, **settings)


def test_a_plan_recorded_before_the_generate_task_resumes_unchanged():
    plan = Plan.from_preset("resnet50", quick=True)
    old = {key: value for key, value in plan.record().items() if key not in ("task", "new_tokens")}
    assert plan.differences(old) == [] and Plan.from_record(old) == plan
    assert Plan.from_preset("hf:gpt2", task="generate").differences(old)[0][0] == "model"


def test_prompts_and_new_tokens_must_fit_the_positions():
    model = load_model(TINY, "generate")
    assert (model.task, model.min_size, model.max_size) == ("generate", 2, 64)
    assert model.inputs(4, 2, "cpu").kwargs["input_ids"].tolist() == [[0, 511, 511, 511]] * 2  # bos, then fillers
    generation.check_lengths(model, [60], [5])  # 60 + 5 - 1 = 64 positions
    with pytest.raises(ModelError, match="has 64 positions: a prompt of 60 tokens and 6 new tokens need 65"):
        generation.check_lengths(model, [8, 60], [6])
    with pytest.raises(ModelError, match="was not loaded for generation"):
        generation.check_lengths(load_model(TINY), [8], [4])
    with pytest.raises(ModelError, match="the generate task needs a text decoder"):
        load_model("hf:distilbert", "generate")
    with pytest.raises(ModelError, match="the generate task runs Hugging Face decoders"):
        load_model("resnet50", "generate")


def test_config_overrides_in_a_models_name():
    assert hf_models.split_name("gpt2:n_layer=2,n_embd=64,scale_attn_weights=false,layer_norm_epsilon=1e-6") == (
        "gpt2", {"n_layer": 2, "n_embd": 64, "scale_attn_weights": False, "layer_norm_epsilon": 1e-6})
    assert hf_models.split_name("openai-community/gpt2") == ("openai-community/gpt2", {})
    model = load_model("hf:gpt2:n_layer=1,n_head=2,n_embd=32")
    assert model.module.config.n_layer == 1 and model.weights == "random"
    assert "GPT2Config() with n_layer=1, n_head=2, n_embd=32" in model.weights_notice
    with pytest.raises(ModelError, match="GPT2Config has no 'n_layers' to set"):
        load_model("hf:gpt2:n_layers=1")
    with pytest.raises(ModelError, match="n_layer=two is not an integer, a decimal number, true or false"):
        load_model("hf:gpt2:n_layer=two")
    with pytest.raises(ModelError, match="cannot be built with n_head=5, n_embd=32: ValueError"):
        load_model("hf:gpt2:n_head=5,n_embd=32")


def test_the_command_line_runs_a_generation_sweep(tmp_path, capsys):
    out = tmp_path / "tree"
    assert cli.main(["run", TINY, "--task", "generate", "--prompt-tokens", "6", "--new-tokens", "3", "--runs", "2",
                     "--batch-sizes", "1", "--warmup", "0", "--idle-seconds", "0", "--period", "0.05", "--device", "cpu", "--out", str(out),
                     "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"model    {TINY} (generate, ")
    assert "plan     1 prompt length(s) x 1 configuration(s) x 2 run(s) = 2 runs, order sequential" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("medians over complete runs; energy per "
                                                                       "output token"))
    assert lines[header + 1].split()[:4] == ["input_size", "runs", "ttft_s", "median"]
    assert "decode_energy_per_token_j median" in lines[header + 1] and lines[header + 2].split()[:2] == ["6", "2"]
    assert sorted(p.name for p in (out / "batch1-fp32-eager-new3" / "input_6" / "run_0").iterdir()) == [
        "latency.csv", "meta.json", "power_metrics.json", "tokens.csv"]


@pytest.mark.parametrize("args, message", [
    (["--prompt-tokens", "8"], "--prompt-tokens go with --task generate"),
    (["--task", "generate", "--prompt-tokens", "8", "--sizes", "8"], "give them or --sizes, not both"),
    (["--task", "generate", "--iters", "5"], "--iters must be 1"),
    (["--task", "generate", "--prompt-tokens", "64", "--new-tokens", "8"], "has 64 positions"),
])
def test_the_command_line_refuses_what_generation_cannot_run(args, message, tmp_path, capsys):
    assert cli.main(["run", TINY, *args, "--device", "cpu", "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and message in error[0]
    assert not (tmp_path / "o").exists()


def test_new_tokens_below_two_are_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", TINY, "--task", "generate", "--new-tokens", "1", "--out", str(tmp_path / "o")])
    assert exited.value.code == 2 and "must be at least 2" in capsys.readouterr().err


def test_a_generation_tree_resumes_from_its_study_json(tree, tmp_path, capsys):
    assert cli.main(["run", "--resume", "--out", str(tree), "--device", "cpu"]) == 0
    assert "nothing to do: the 8 runs of" in capsys.readouterr().out
    record = runtree.read_study(tree)["plan"]
    assert (record["task"], record["new_tokens"]) == ("generate", [3])


def test_dtypes_and_a_precision_sweep_of_the_generate_task(tmp_path):
    plan = Plan.from_preset(TINY, "quick", task="generate", sizes=[8], new_tokens=[4], batch_sizes=[2],
                            dtypes=["fp32", "bf16"], idle_s=0, device="cpu", precision=0.5, max_runs=3)
    out = sweep.run_study(plan, tmp_path / "t", progress=False, stop_rule=lambda folders: (len(folders) >= 2,
                                                                                            "two runs"))
    metas = {folder.relative_to(out).as_posix(): json.loads((folder / "meta.json").read_text())
             for folder in out.glob("*/input_8/run_*")}
    assert sorted(metas) == [f"batch2-{d}-eager-new4/input_8/run_{k}" for d in ("bf16", "fp32") for k in (0, 1)]
    assert all(m["status"] == "complete" and m["iterations"] == 1 and m["stop_reason"] == "two runs"
               for m in metas.values())
    cache = {m["identity"]["dtype"]: m["generation"]["kv_cache_mib"] for m in metas.values()}
    assert cache["bf16"] == pytest.approx(cache["fp32"] / 2)  # the cast model's cache is in its dtype

"""The plan: presets, validation in the caller's vocabulary, the grid of configurations, cell order and shards."""
from __future__ import annotations

import pytest

from measure.__main__ import OPTIONS
from measure.plan import MIN_PRECISION_RUNS, PRESETS, Cell, Config, Plan, PlanError


def test_batch_presets_are_a_grid_of_batch_size_and_dtype_in_interleaved_order():
    plan = Plan.from_preset("resnet50", "gpu-batch")
    assert (plan.sizes, plan.batch_sizes, plan.dtypes, plan.order) == ([224], [1, 8, 32, 128],
                                                                        ["fp32", "bf16", "fp16"], "interleave")
    assert plan.iterations is None and plan.min_window_s == 1.0 and plan.runs == 5
    cells = plan.cells()
    assert len(cells) == 4 * 3 * 5 and {c.run for c in cells[:12]} == {0}  # run 0 of every configuration first


def test_models_without_a_preset_take_the_generic_protocol_of_their_unit():
    plan = Plan.from_preset("torchvision:mobilenet_v3_small", quick=True, size_unit="px")
    assert plan.sizes == [32, 64, 128, 224] and plan.iterations is None and plan.min_window_s == 0.5
    assert Plan.from_preset("hf:distilbert", size_unit="tokens").sizes == [32, 64, 128, 256, 512]
    with pytest.raises(PlanError, match="preset 'cpu-study' has no protocol for 'hf:gpt2'"):
        Plan.from_preset("hf:gpt2", "cpu-study", size_unit="tokens")


def test_presets_are_named_once_for_every_model():
    assert set(PRESETS) == {"seed", "quick", "cpu-study", "gpu-study", "gpu-batch", "cpu-batch"}
    for name, preset in PRESETS.items():
        assert set(preset) == ({"resnet50"} if name.endswith("-batch") else {"alexnet", "resnet50", "bert"})
    seed = Plan.from_preset("resnet50")
    assert seed.sizes == [8, 32, 64, 128, 256, 512, 1024, 2048, 4096] and seed.iterations == 5000
    assert seed.iterations_for(4096) == 1000 and (seed.runs, seed.warmup, seed.idle_s) == (10, 50, 5.0)
    cpu = Plan.from_preset("resnet50", "cpu-study")
    assert cpu.sizes == [8, 32, 64, 128, 256, 512, 1024]
    assert [cpu.iterations_for(s) for s in cpu.sizes] == [100, 100, 80, 60, 30, 8, 3]
    bert = Plan.from_preset("bert", "cpu-study")
    assert [bert.iterations_for(s) for s in (50, 100, 150, 500)] == [20, 12, 8, 8] and bert.warmup == 2
    gpu = Plan.from_preset("resnet50", "gpu-study")
    assert (gpu.iterations, gpu.iterations_for(4096), gpu.warmup, gpu.period_s) == (400, 100, 20, 0.02)
    assert Plan.from_preset("alexnet", quick=True) == Plan.from_preset("alexnet", "quick")


def test_from_preset_refuses_unknown_keywords_and_presets_in_one_line():
    with pytest.raises(PlanError, match=r"^Plan.from_preset\(\) got unknown keyword\(s\) iters, quik; it takes "):
        Plan.from_preset("resnet50", iters=5, quik=True)
    with pytest.raises(PlanError, match="unknown preset 'fast'; choose from seed, quick, cpu-study, gpu-study"):
        Plan.from_preset("resnet50", "fast")
    with pytest.raises(PlanError, match="preset 'seed' has no protocol for 'vgg'"):
        Plan.from_preset("vgg")


def test_overrides_of_iterations():
    # an explicit count applies to every size; a per-size count adds to those of the preset
    assert Plan.from_preset("resnet50", iterations=7).iterations_at == {}
    plan = Plan.from_preset("resnet50", sizes=[8, 4096], iterations_at={8: 3})
    assert plan.iterations_at == {8: 3, 4096: 1000}
    assert Plan.from_preset("resnet50", sizes=[8]).iterations_at == {}  # the preset's other sizes are dropped


def test_a_precision_makes_runs_a_minimum_of_three_by_default():
    plan = Plan.from_preset("resnet50", precision=0.05, max_runs=6)  # not refused for a silent 10 runs
    assert (plan.runs, plan.max_runs) == (MIN_PRECISION_RUNS, 6)
    assert Plan.from_preset("resnet50", precision=0.05, runs=5).runs == 5
    with pytest.raises(PlanError, match="max_runs must be at least runs and 3 with precision, got 4"):
        Plan.from_preset("resnet50", precision=0.05, runs=5, max_runs=4)


def test_idle_seconds_may_be_zero():
    assert Plan.from_preset("resnet50", idle_s=0).idle_s == 0
    with pytest.raises(PlanError, match="idle_s must be 0 or more seconds"):
        Plan.from_preset("resnet50", idle_s=-1)


@pytest.mark.parametrize("overrides, api, cli", [
    (dict(sizes=[8, 8]), "sizes lists 8 more than once", "--sizes lists 8 more than once"),
    (dict(sizes=[8], iterations_at={99: 5}), "iterations_at names size(s) 99 that sizes does not list",
     "--iters-at names size(s) 99 that --sizes does not list"),
    (dict(dtypes=["fp8"]), "dtypes must be among fp32, fp16, bf16", "--dtypes must be among fp32, fp16, bf16"),
    (dict(executions=["jit"]), "executions must be among eager, compiled", "--compile must be among eager, compiled"),
    (dict(batch_sizes=[0]), "batch_sizes must be positive integers", "--batch-sizes must be positive integers"),
    (dict(threads=[2, 2]), "threads lists 2 more than once", "--threads lists 2 more than once"),
    (dict(period_s=0), "period_s must be a positive number", "--period must be a positive number"),
    (dict(order="random"), "order must be one of sequential, interleave, shuffle", "--order must be one of"),
    (dict(precision=2), "precision is a relative half-width", "--precision is a relative half-width"),
])
def test_validation_names_fields_in_the_callers_vocabulary(overrides, api, cli):
    with pytest.raises(PlanError) as raised:
        Plan.from_preset("resnet50", **overrides)
    assert api in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(PlanError) as raised:
        Plan.from_preset("resnet50", names=OPTIONS, **overrides)
    assert cli in str(raised.value)


def grid(**overrides) -> Plan:
    settings = dict(sizes=[8, 16], iterations=2, runs=2, warmup=0, batch_sizes=[1, 4], dtypes=["fp32", "bf16"])
    settings.update(overrides)
    return Plan("resnet50", **settings)


def test_the_grid_has_one_named_configuration_per_combination():
    plan = grid(threads=[1, 2])
    names = [config.name for config in plan.configs()]
    assert len(names) == 8 and len(set(names)) == 8
    assert names[:3] == ["batch1-fp32-eager-threads1", "batch1-fp32-eager-threads2", "batch1-bf16-eager-threads1"]
    assert Config().name == "batch1-fp32-eager"  # threads not set: not in the name
    assert str(Cell(Config(8, "fp16", "compiled"), 64, 2)) == "batch8-fp16-compiled/input_64/run_2"


def test_cell_orders():
    plan = grid()
    points = plan.points()
    sequential = plan.cells()
    assert sequential[:2] == [Cell(*points[0], 0), Cell(*points[0], 1)]  # a point's runs follow each other
    interleave = grid(order="interleave").cells()
    assert [cell.run for cell in interleave] == [0] * len(points) + [1] * len(points)
    assert [(c.config, c.size) for c in interleave[:len(points)]] == points
    shuffle = grid(order="shuffle", seed=3).cells()
    assert sorted(shuffle, key=str) == sorted(sequential, key=str) and shuffle != sequential
    assert shuffle == grid(order="shuffle", seed=3).cells() != grid(order="shuffle", seed=4).cells()


@pytest.mark.parametrize("order", ["sequential", "interleave", "shuffle"])
def test_shards_split_the_ordered_cells(order):
    plan = grid(order=order)
    shards = [plan.cells((i, 3)) for i in range(3)]
    assert sorted(sum(shards, []), key=str) == sorted(plan.cells(), key=str)
    assert shards[1] == plan.cells()[1::3]


def test_adaptive_cells_follow_the_order_and_drop_stopped_points():
    plan = grid(batch_sizes=[1], dtypes=["fp32"], max_runs=3, order="interleave")
    active = set(plan.points())
    seen = []
    for cell in plan.adaptive_cells(active):
        seen.append((cell.size, cell.run))
        if cell.size == 8 and cell.run == 0:
            active.discard((cell.config, 8))  # this point stops after its first run
    assert seen == [(8, 0), (16, 0), (16, 1), (16, 2)]
    sequential = grid(batch_sizes=[1], dtypes=["fp32"], max_runs=2)
    assert [(c.size, c.run) for c in sequential.adaptive_cells(set(sequential.points()))] == [
        (8, 0), (8, 1), (16, 0), (16, 1)]


def test_a_plan_is_recorded_and_read_back():
    plan = grid(threads=[2], order="shuffle", seed=5, iterations_at={8: 3})
    record = plan.record()
    assert record["iterations_at"] == {"8": 3}  # as JSON holds it
    assert Plan.from_record(record) == plan
    assert plan.differences(record) == []
    assert plan.differences({**record, "runs": 5}) == [("runs", 5, 2)]
    with pytest.raises(PlanError, match=r"field\(s\) this version does not know: colour"):
        Plan.from_record({**record, "colour": "red"})


def test_devices_are_compared_as_they_resolve():
    record = grid(device="cpu").record()
    assert grid(device="auto").differences(record, same_device=lambda a, b: {a, b} <= {"cpu", "auto"}) == []
    assert grid(device="cuda").differences(record) == [("device", "cpu", "cuda")]

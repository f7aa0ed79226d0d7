"""A sweep's shards as jobs, through submitit: a Slurm job array, or local processes.

Task ``i`` of ``n`` runs ``run_study(plan, out, resume=True, shard=(i, n))``
into the one run tree ``out``, which must be on storage every node sees. The
tasks write different cells; what they share (``study.json``, ``idle/``) is
written atomically or under unique names. A task that times out is requeued by
submitit and resumes where it stopped; one that fails is retried by submitting
the same sweep again with ``--resume``. submitit keeps its scripts, pickles and
logs in ``out/submitit/``.
"""
from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from . import runtree
from .plan import Plan
from .sweep import Start, StopRule, load_checked, prepare, run_study

LOG_FOLDER = "submitit"
CLUSTERS = ("slurm", "local")


@dataclass
class Resources:
    """What each task asks for; ``extra`` holds any other sbatch option (``{"account": "proj"}``, ``{"exclusive": True}``)."""

    timeout_min: int = 60
    partition: str | None = None
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    array_parallelism: int | None = None
    extra: dict[str, str | bool] = field(default_factory=dict)


class Shard(submitit.helpers.Checkpointable):
    """One task: its share of the sweep, resuming; on a timeout submitit requeues the same call.
    ``stop_rule``: that of a plan with a precision (see ``sweep.run_study``)."""

    def __init__(self, stop_rule: StopRule | None = None):
        self.stop_rule = stop_rule

    def __call__(self, plan: Plan, out: Path, index: int, count: int) -> dict[str, int]:
        """Measure shard ``index`` of ``count``; how many of its cells ended in each status."""
        run_study(plan, out, resume=True, shard=(index, count), stop_rule=self.stop_rule, progress=False)
        return dict(Counter(runtree.read_status(cell.folder(out)) or "missing" for cell in plan.cells((index, count))))


def submit(plan: Plan, out: Path, *, cluster: str, tasks: int, resume: bool, resources: Resources,
           overwrite: bool = False, stop_rule: StopRule | None = None) -> list[submitit.Job]:
    """Submit the sweep as ``tasks`` jobs (one shard each) after the checks a direct run makes first.

    The plan is recorded in ``study.json`` (with ``overwrite``, after the old
    runs are removed); a submission that fails removes what it wrote.
    """
    cells = len(plan.cells())
    if not 1 <= tasks <= cells:
        raise ValueError(f"--tasks must be between 1 and the sweep's {cells} (size, run) cells, got {tasks}")
    if plan.precision is not None and tasks > 1:
        raise ValueError("--precision decides the number of runs as it goes; it runs as a single task")
    if cluster == "slurm" and shutil.which("srun") is None:
        raise ValueError("--executor slurm needs Slurm (sbatch, srun) on this machine; run it on a login node")
    load_checked(plan)
    out = prepare(plan, out, resume=resume, overwrite=overwrite).out
    start = Start(plan, out, overwrite=overwrite)  # the device is resolved by each task, on its node
    logs_before = (out / LOG_FOLDER).exists()
    start.begin()
    try:
        executor = submitit.AutoExecutor(folder=out / LOG_FOLDER, cluster=cluster)
        executor.update_parameters(
            name=f"measure-{plan.model}", timeout_min=resources.timeout_min, gpus_per_node=resources.gpus_per_task,
            cpus_per_task=resources.cpus_per_task, slurm_partition=resources.partition,
            slurm_array_parallelism=resources.array_parallelism, slurm_additional_parameters=resources.extra or None)
        return executor.map_array(Shard(stop_rule), [plan] * tasks, [out] * tasks, range(tasks), [tasks] * tasks)
    except BaseException:
        if not logs_before:
            shutil.rmtree(out / LOG_FOLDER, ignore_errors=True)
        start.undo()
        raise


def outcome(job: submitit.Job) -> tuple[dict[str, int] | None, str | None]:
    """Wait for ``job``: its cells' statuses, or the one line that says why it failed."""
    error = job.exception()
    if error is None:
        return job.result(), None
    lines = [line for line in str(error).splitlines() if line.strip()]
    dashes = [i for i, line in enumerate(lines) if set(line.strip()) == {"-"}]
    # submitit frames the task's traceback between two dashed lines: its last line is the exception
    return None, lines[dashes[1] - 1] if len(dashes) > 1 else lines[0]

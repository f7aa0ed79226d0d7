"""A sweep's shards as jobs, through submitit: a Slurm job array, or local processes.

Task ``i`` of ``n`` runs ``run_study(plan, out, resume=True, shard=(i, n))``
into the one run tree ``out``, which must be on storage every node sees. The
tasks write different cells; what they share (``study.json``, ``idle/``) is
written atomically or under unique names. A task that times out is requeued by
submitit and resumes where it stopped; one that fails is retried by submitting
the same sweep again with ``--resume``. submitit keeps its scripts, pickles and
logs in ``out/submitit/``.

Each task runs the submitting interpreter (submitit's choice) on this very
package, whatever environment the cluster gives the job (see ``job_setup``).
"""
from __future__ import annotations

import shlex
import shutil
import site
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import submitit

from . import runtree
from .plan import Plan
from .sweep import Start, StopRule, load_checked, prepare, run_study

LOG_FOLDER = "submitit"
CLUSTERS = ("slurm", "local")
PACKAGE_ROOT = Path(__file__).parent.parent  # the folder that holds this package, as the submitting process sees it


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
        print(f"shard {index}/{count} of {out}, measured by the package in {PACKAGE_ROOT}", flush=True)
        run_study(plan, out, resume=True, shard=(index, count), stop_rule=self.stop_rule, progress=False)
        return dict(Counter(runtree.read_status(cell.folder(out)) or "missing" for cell in plan.cells((index, count))))


def job_setup() -> tuple[list[str], list[str]]:
    """What the batch script needs so that each task imports this package: its setup lines and srun's options.

    A site may start jobs with a clean environment (``sbatch --export=NONE``,
    often as ``SBATCH_EXPORT=NONE``); srun then passes it on to the task,
    dropping submitit's own variables too, unless told ``--export=ALL``. A
    package found through ``PYTHONPATH`` or the working folder rather than
    installed in the interpreter is put first on the task's ``PYTHONPATH``, so
    that no other copy (an installed one, another checkout) is imported instead.
    """
    installed = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), site.getusersitepackages()}
    if str(PACKAGE_ROOT) in installed:
        return [], ["--export=ALL"]
    return [f"export PYTHONPATH={shlex.quote(str(PACKAGE_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"], ["--export=ALL"]


def signal_delay_s(timeout_min: int) -> int:
    """When Slurm signals a task to requeue, in seconds before its time limit: 90, at most a quarter of the limit.

    slurmctld checks time limits every 30 s and sends the signal at the first
    check less than this delay plus 30 s before the end: with 90 s, a task
    limited to 2 minutes or less would be signalled, and requeued, as soon as it
    started, every time.
    """
    return min(90, timeout_min * 15)



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
        setup, srun_args = job_setup()
        executor.update_parameters(
            name=f"measure-{plan.model}", timeout_min=resources.timeout_min, gpus_per_node=resources.gpus_per_task,
            cpus_per_task=resources.cpus_per_task, slurm_partition=resources.partition,
            slurm_array_parallelism=resources.array_parallelism, slurm_additional_parameters=resources.extra or None,
            slurm_signal_delay_s=signal_delay_s(resources.timeout_min), slurm_setup=setup, slurm_srun_args=srun_args)
        return executor.map_array(Shard(stop_rule), [plan] * tasks, [out] * tasks, range(tasks), [tasks] * tasks)
    except BaseException as error:
        if not logs_before:
            shutil.rmtree(out / LOG_FOLDER, ignore_errors=True)
        start.undo()
        if isinstance(error, submitit.core.utils.FailedJobError):  # sbatch said no: a partition, account, option
            reasons = [line.removeprefix("sbatch: error: ") for line in str(error).splitlines() if line.strip()]
            raise ValueError(f"sbatch refused the tasks: {'; '.join(reasons)}") from None
        raise


def outcome(job: submitit.Job) -> tuple[dict[str, int] | None, str | None]:
    """Wait for ``job``: its cells' statuses, or the one line that says why it failed."""
    error = job.exception()
    if error is None:
        return job.result(), None
    if not isinstance(error, submitit.core.utils.FailedJobError):  # no result: cancelled, killed, or broken early
        return None, f"ended without a result, in state {job.state}"
    lines = [line for line in str(error).splitlines() if line.strip()]
    dashes = [i for i, line in enumerate(lines) if set(line.strip()) == {"-"}]
    # submitit frames the task's traceback between two dashed lines: its last line is the exception
    return None, lines[dashes[1] - 1] if len(dashes) > 1 else lines[0]

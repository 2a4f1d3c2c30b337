"""The SLURM backend through submitit: one job array per grid, each task a :class:`CellJob` that
trains one cell under its lock, and requeues itself on preemption or timeout (the engine then
resumes from the checkpoint)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError
from reproduce.experiments.cells import CellState, inspect_run
from reproduce.experiments.locks import LOCK_DIR, STALE_AFTER_S, CellLock
from reproduce.experiments.runner import RunOptions, decide
from reproduce.recipes.grids import Cell, Grid

__all__ = ["SUBMITIT_DIR", "TORCH_VARS", "export_rank", "CellJob", "SlurmOptions",
           "slurm_executor", "slurm_parameters", "submit_slurm", "submitit_folder"]

SUBMITIT_DIR = ".submitit"


#: torchrun's variables, which a task's rank is exported as (torch's env:// initialisation)
TORCH_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def export_rank() -> int:
    """This task's global rank. In a submitit job, its SLURM layout exported as torchrun's
    variables (several tasks) so the engine's process group forms; outside one (a direct call),
    torchrun's ``RANK`` if set.

    submitit's ``export()`` refuses to overwrite variables already set (say, inherited from the
    shell that submitted); they are accepted when they agree with SLURM's layout and refused with
    one line when they do not (else every task trains alone as rank 0, the same cell N times).
    """
    import submitit

    try:
        job = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job
        return int(os.environ.get("RANK", "0"))
    want = {"RANK": str(job.global_rank), "WORLD_SIZE": str(job.num_tasks),
            "LOCAL_RANK": str(job.local_rank),
            "LOCAL_WORLD_SIZE": str(job.num_tasks // max(1, job.num_nodes))}
    dist_env = None
    if job.num_tasks > 1:
        from submitit.helpers import TorchDistributedEnvironment

        dist_env = TorchDistributedEnvironment()  # MASTER_PORT: the one set, else the job's
        want.update(MASTER_ADDR=dist_env.master_addr, MASTER_PORT=str(dist_env.master_port))
    clash = [f"{k}={os.environ[k]} (SLURM's task layout says {v})" for k, v in want.items()
             if os.environ.get(k, v) != v]
    if clash:
        raise SrvError(f"SLURM task {job.job_id} rank {job.global_rank}: {', '.join(clash)} "
                       f"already set in the environment; unset {' '.join(TORCH_VARS)} in the "
                       f"shell that runs srv ablate --backend slurm (sbatch passes them on)")
    if dist_env is not None:
        dist_env.export(set_cuda_visible_devices=False, overwrite=True)  # only equal values
    return int(job.global_rank)


class CellJob:
    """The callable a SLURM array task runs: train one cell under its lock.

    It has a ``checkpoint`` method, so submitit requeues it on preemption or timeout; the
    requeued task calls the engine again, which resumes from ``last.pt``. With several tasks per
    cell (one per GPU) submitit's environment is exported as torchrun's variables (RANK,
    WORLD_SIZE, MASTER_ADDR, ...: :func:`export_rank`); every rank joins the process group
    first, then rank 0 takes the lock and tells every rank whether the cell is theirs, so all
    of them train or all of them end as ``skipped`` (no rank waits for a rank 0 that left).
    """

    def __init__(self, runs_root: str, stale_after_s: float = STALE_AFTER_S) -> None:
        self.runs_root = str(Path(runs_root).resolve())
        self.stale_after_s = stale_after_s
        self._lock: CellLock | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"runs_root": self.runs_root, "stale_after_s": self.stale_after_s, "_lock": None}

    def _locked_elsewhere(self, lock_path: Path, what: str, rank: int, device: str) -> bool:
        """Rank 0 takes the cell's lock; every rank learns whether it could (one decision)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        info = None
        if world > 1:  # join the group first: rank 0 always comes, whatever the lock says
            from reproduce.utils.distributed import init_distributed

            info = init_distributed(device)
        locked = False
        if rank == 0:
            self._lock = CellLock(lock_path, stale_after_s=self.stale_after_s, what=what)
            locked = not self._lock.acquire()
        if info is not None:
            from reproduce.utils.distributed import broadcast_flag, cleanup

            locked = broadcast_flag(locked, info)
            if locked:
                cleanup()
        return locked

    def __call__(self, cell_dict: dict[str, Any], retry_diverged: bool = False
                 ) -> dict[str, Any]:
        from reproduce.training.config import resolve_config

        cell = Cell.from_dict(cell_dict)
        cfg = resolve_config(cell.model, cell.recipe, {**cell.override_dict, "seed": cell.seed})
        runs_root = Path(self.runs_root)
        run_dir = runs_root / cfg.run_name
        rank = export_rank()
        try:
            if self._locked_elsewhere(runs_root / LOCK_DIR / f"{cfg.run_name}.lock",
                                      cell.describe(), rank, cfg.recipe.device):
                return {"cell": cell.describe(), "status": "skipped", "run_dir": str(run_dir),
                        "reason": "locked by another worker"}
            from reproduce.training.engine import train

            status, _ = inspect_run(run_dir)
            out = train(cfg, runs_root=runs_root,
                        restart=retry_diverged and status == "diverged", progress=False)
            return {"cell": cell.describe(), "status": out.status, "run_dir": str(out.run_dir),
                    "reason": out.reason}
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue the same cell; the engine resumes it from its last checkpoint."""
        import submitit

        if self._lock is not None:
            self._lock.release()
            self._lock = None
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


@dataclass
class SlurmOptions:
    partition: str | None = None
    account: str | None = None
    timeout_min: int = 24 * 60
    gpus_per_task_node: int = 1  # GPUs (= tasks) per node of a cell
    nodes: int = 1  # nodes per cell (a cell's world size: nodes x gpus_per_task_node)
    cpus_per_task: int = 10
    mem_gb: int | None = None
    parallelism: int = 16
    max_num_timeout: int = 10
    cluster: str | None = None  # None: SLURM (refused without sbatch); local or debug: tests
    extra: dict[str, Any] = field(default_factory=dict)


def submitit_folder(grid: Grid, runs_root: Path | str) -> Path:
    """Where submitit keeps a grid's job scripts and logs: ``<runs_root>/.submitit/<grid>/``
    (on SLURM one folder per job id below it)."""
    return Path(runs_root).resolve() / SUBMITIT_DIR / grid.name


#: srun stops a cell's other tasks as soon as one exits with an error (a failed rank), whatever
#: the cluster's KillOnBadExit; without it they would wait in a collective until it times out
SRUN_ARGS = ("--kill-on-bad-exit=1",)

#: what --slurm-cluster local / debug run instead of SLURM, for the dry run to name
_EXECUTORS = {"local": "submitit's local executor (--slurm-cluster local): every task a "
                       "process on this machine, no SLURM",
              "debug": "submitit's debug executor (--slurm-cluster debug): the tasks one "
                       "after another inside this process, no SLURM"}


def slurm_executor(slurm: SlurmOptions, check: bool = True) -> tuple[str, str]:
    """The submitit cluster a submission uses and a phrase naming it: ``--slurm-cluster`` when
    given, else SLURM, which needs ``sbatch`` and ``srun`` on PATH. Without them submitit would
    quietly run every task on this machine (its local executor): ``check`` refuses that."""
    import shutil

    if slurm.cluster:
        return slurm.cluster, _EXECUTORS.get(slurm.cluster, f"submitit's {slurm.cluster} executor")
    sbatch, missing = shutil.which("sbatch"), [t for t in ("sbatch", "srun") if not shutil.which(t)]
    if not missing:
        return "slurm", f"submitit's SLURM executor (sbatch: {sbatch})"
    if check:
        raise SrvError(f"--backend slurm: no {' or '.join(missing)} on PATH here, and submitit "
                       f"would train every cell on this machine instead: run srv ablate where "
                       f"SLURM is (a login node; some clusters need 'module load slurm'), or "
                       f"give --slurm-cluster local to run the job array here on purpose")
    return "slurm", (f"submitit's SLURM executor, but no {' or '.join(missing)} on PATH here: the "
                     f"launch itself stops on this machine (--slurm-cluster local runs it here)")


def slurm_parameters(grid: Grid, slurm: SlurmOptions, cluster: str = "slurm"
                     ) -> dict[str, Any]:
    """submitit's ``update_parameters`` for the grid's array: per cell ``nodes`` nodes x
    ``gpus_per_task_node`` tasks (one per GPU) with ``cpus_per_task`` CPUs each, srun run with
    :data:`SRUN_ARGS`; on submitit's ``local`` / ``debug`` clusters (tests, no SLURM) only what
    they take."""
    params: dict[str, Any] = dict(
        name=f"srv-{grid.name}", timeout_min=slurm.timeout_min, nodes=slurm.nodes,
        tasks_per_node=slurm.gpus_per_task_node, cpus_per_task=slurm.cpus_per_task,
        slurm_array_parallelism=slurm.parallelism,
    )
    if cluster == "slurm":
        params["gpus_per_node"] = slurm.gpus_per_task_node
        if slurm.partition:
            params["slurm_partition"] = slurm.partition
        if slurm.account:
            params["slurm_account"] = slurm.account
        if slurm.mem_gb:
            params["mem_gb"] = slurm.mem_gb
        extra = dict(slurm.extra)
        srun = [*SRUN_ARGS, *extra.pop("slurm_srun_args", [])]
        params.update(extra, slurm_srun_args=srun)
        return params
    if cluster == "local":
        return {"name": params["name"], "timeout_min": slurm.timeout_min, "tasks_per_node": 1}
    return {"name": params["name"], "timeout_min": slurm.timeout_min}  # debug: in-process


def submit_slurm(grid: Grid, states: Sequence[CellState], runs_root: Path | str,
                 options: RunOptions, slurm: SlurmOptions) -> list[Any]:
    """Submit the cells that need training as one job array; returns the submitit jobs.

    The submitit folder is ``<runs_root>/.submitit/<grid>/``: it must be on a file system the
    compute nodes share (so must ``runs_root``).
    """
    import submitit

    # sbatch (and submitit's local executor) pass this shell's environment on: every task would
    # inherit another launch's rank (MASTER_PORT is fine: submitit keeps a set one)
    inherited = [k for k in TORCH_VARS if k in os.environ and k != "MASTER_PORT"]
    if inherited:
        raise SrvError(f"{', '.join(inherited)} set in this shell would reach every SLURM task "
                       f"(sbatch passes the environment on) and clash with its rank: unset "
                       f"{' '.join(inherited)} and submit again")
    runs_root = Path(runs_root).resolve()
    todo = [s for s in states if decide(s, options) != "skip"]
    if not todo:
        return []
    cluster, _ = slurm_executor(slurm)
    folder = submitit_folder(grid, runs_root)
    # SLURM: one folder per job, submitit puts each job's id for %j in every path it writes;
    # its local executor would make a folder literally named %j, so it gets the grid's folder
    ex = submitit.AutoExecutor(folder=folder / "%j" if cluster == "slurm" else folder,
                               cluster=cluster, slurm_max_num_timeout=slurm.max_num_timeout)
    ex.update_parameters(**slurm_parameters(grid, slurm, cluster))
    job = CellJob(str(runs_root), stale_after_s=options.stale_after_s)
    cells = [s.cell.to_dict() for s in todo]
    flags = [options.retry_diverged] * len(cells)
    return list(ex.map_array(job, cells, flags))

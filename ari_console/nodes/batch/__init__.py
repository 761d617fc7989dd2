"""How the console gets a slot on a node: one class per batch system, chosen once from a registry.

Every batch system answers the same protocol (:class:`BatchSystem`): submit a
job for an attempt, the states of many jobs at once, cancel one, the name of
the job's output file, find an attempt whose handle was never stored, check
that the node's batch commands work. Each translates its own state names in
one table copied from its documentation (``Slurm.TRANSLATE``, ``Pbs.TRANSLATE``)
and starts the runner from a submit template. The shape follows Parsl's
``providers/`` (a provider per scheduler behind submit / status / cancel); the
transport (``nodes/transport.py``) stays ours and small.

A handle is a small dict stored with the attempt, enough for a new console to
find the job again: ``{"batch": "none", "pid": 123}``,
``{"batch": "slurm", "job_id": "42"}``, ``{"batch": "pbs", "job_id": "42.server"}``.
"""

from __future__ import annotations

from .base import (FINAL_STATES, JOB_NAME_PREFIX, SPEC_VERSION, STATUS_VERSION, BatchSystem, CheckResult, JobRequest,
                   JobState, SpecRejected, job_name, mem_mb, read_status, status_from_json, walltime_hms)
from .none import NoBatch, reconcile_none
from .pbs import Pbs
from .slurm import Slurm

BATCH_SYSTEMS: dict[str, BatchSystem] = {system.name: system for system in (NoBatch(), Slurm(), Pbs())}


def batch_system(name: str) -> BatchSystem:
    """The batch system called ``name`` (config and handles say ``none``, ``slurm`` or ``pbs``).

    >>> batch_system("slurm").output_file({"batch": "slurm", "job_id": "42"})
    'batch-42.out'
    """
    try:
        return BATCH_SYSTEMS[name]
    except KeyError:
        raise ValueError(f"unknown batch system {name!r} — use one of {', '.join(BATCH_SYSTEMS)}") from None


def reconcile_batch(status: dict | None, batch_state: str | None, batch: str,
                    exit_status: str | None = None, output_tail: str = "") -> JobState:
    """One attempt's state from the runner's status and the batch system's word on its job.

    >>> reconcile_batch({"state": "running", "stage": "image"}, "TIMEOUT", "slurm").category
    'walltime'
    """
    attrs = {"job_state": batch_state} if batch_state else {}
    if exit_status is not None:
        attrs["Exit_status"] = exit_status
    return batch_system(batch).reconcile(status, attrs, output_tail)


__all__ = ["BATCH_SYSTEMS", "FINAL_STATES", "JOB_NAME_PREFIX", "SPEC_VERSION", "STATUS_VERSION", "BatchSystem",
           "CheckResult", "JobRequest", "JobState", "NoBatch", "Pbs", "Slurm", "SpecRejected", "batch_system", "job_name",
           "mem_mb", "read_status", "reconcile_batch",
           "reconcile_none", "status_from_json", "walltime_hms"]

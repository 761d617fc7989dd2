"""Batch system ``pbs`` (PBS Pro / OpenPBS, Torque): qsub a job script, ``qstat -fx`` for the states, qdel.

State letters are the ``job_state`` values of ``qstat -f`` as the PBS Professional
Reference Guide lists them (Job States), plus Torque's ``C`` (completed). A
finished job's cause comes from its ``Exit_status`` (PBS Pro's JOB_EXEC_KILL_*
codes) or the words PBS wrote into the job's output.
"""

from __future__ import annotations

import re

from ..transport import Transport, command_line, sh_quote
from .base import CheckResult, JobRequest, QueuedBatch, mem_mb, walltime_hms

# qstat job_state -> (attempt state, failure category); finished states are read from the exit status.
TRANSLATE: dict[str, tuple[str, str | None]] = {
    "Q": ("pending", None),   # queued, eligible to run
    "H": ("pending", None),   # held
    "W": ("pending", None),   # waiting for its execution time
    "T": ("pending", None),   # being moved to a new location
    "M": ("pending", None),   # moved to another server
    "R": ("running", None),   # running
    "E": ("running", None),   # exiting after having run
    "B": ("running", None),   # array job: at least one subjob running
    "S": ("running", None),   # suspended (keeps its resources)
    "U": ("running", None),   # suspended while its workstation is busy
}
FINISHED_STATES = ("F", "X", "C")  # finished; subjob finished; Torque's completed

# PBS Pro's JOB_EXEC_KILL_WALLTIME, and JOB_EXEC_KILL_MEM / _VMEM exit codes.
WALLTIME_EXITS = {-29}
MEMORY_EXITS = {-27, -26}

# The job script qsub runs; resources are on the qsub command line.
SUBMIT_TEMPLATE = """#!/bin/sh
cd {work_dir} || exit 1
exec {runner_command}
"""


def qsub_argv(req: JobRequest, script_path: str) -> list[str]:
    """The ``qsub`` command that starts the job script for ``req``."""
    argv = ["qsub", "-N", req.job_name, "-j", "oe", "-o", f"{req.work_dir}/batch.out",
            "-l", f"select=1:ncpus={req.cpus}" + (f":mem={mem_mb(req.mem_gb)}mb" if req.mem_gb else "")]
    if req.walltime_h:
        argv += ["-l", f"walltime={walltime_hms(req.walltime_h)}"]
    if req.partition:
        argv += ["-q", req.partition]
    if req.account:
        argv += ["-A", req.account]
    return argv + [script_path]


def job_script(req: JobRequest) -> str:
    return SUBMIT_TEMPLATE.format(work_dir=sh_quote(req.work_dir),
                                  runner_command=command_line([req.python, req.runner, req.spec_path]))


class Pbs(QueuedBatch):
    """PBS: one ``qstat -fx`` for all the campaign's jobs on the node, finished ones included."""

    name = "pbs"
    TRANSLATE = TRANSLATE

    SCRIPT_NAME = "job.pbs"

    def job_script(self, req: JobRequest) -> str:
        return job_script(req)

    def submit_argv(self, req: JobRequest, script_path: str) -> list[str]:
        return qsub_argv(req, script_path)

    def job_attributes(self, transport: Transport, campaign: str, job_ids: list[str],
                       since: float) -> dict[str, dict[str, str]]:
        ids = sorted(set(job_ids))
        if not ids:
            return {}
        # qstat exits non-zero when one id is unknown (purged from history) but still prints the others.
        return parse_qstat_f(transport.run(["qstat", "-fx", *ids], timeout=30).stdout)

    def translate(self, attrs: dict[str, str], output_tail: str = "") -> tuple[str | None, str | None]:
        """(attempt state, category) of a job from its qstat attributes.

        >>> Pbs().translate({"job_state": "R"}), Pbs().translate({"job_state": "F", "Exit_status": "-29"})
        (('running', None), ('failed', 'walltime'))
        """
        state = (attrs.get("job_state") or "").upper()
        if state in FINISHED_STATES:
            raw = attrs.get("Exit_status") or attrs.get("exit_status")
            code = int(raw) if raw and raw.lstrip("-").isdigit() else None
            return _exit_outcome(code, output_tail)
        return TRANSLATE.get(state, (None, None))

    def cancel(self, transport: Transport, handle: dict, force: bool = False) -> None:
        transport.run(["qdel", str(handle["job_id"])], timeout=30)

    def output_file(self, handle: dict) -> str | None:
        return "batch.out"

    def check(self, transport: Transport) -> CheckResult:
        r = transport.run(["qstat", "-B"], timeout=30)
        return CheckResult(r.ok, "pbs server answers" if r.ok else r.stderr.strip()[:160],
                           "make qsub/qstat work for this user on the node")

    def status_command(self, handle: dict, ended: bool) -> str | None:
        job = handle.get("job_id")
        return None if not job else (f"qstat -xf {job}" if ended else f"qstat -f {job}")


def parse_qstat_f(text: str) -> dict[str, dict[str, str]]:
    """job id -> attributes (job_state, Exit_status, resources_used.walltime, ...) from ``qstat -f``.

    >>> parse_qstat_f("Job Id: 7.srv\\n    job_state = R\\n    queue = workq\\n")
    {'7.srv': {'job_state': 'R', 'queue': 'workq'}}
    """
    jobs: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    key = None
    for raw in text.splitlines():
        if raw.startswith("Job Id:"):
            current = jobs.setdefault(raw.split(":", 1)[1].strip(), {})
            key = None
        elif current is not None and " = " in raw:
            key, value = raw.strip().split(" = ", 1)
            current[key] = value
        elif current is not None and key and raw.startswith("\t"):
            current[key] += raw.strip()
    return jobs


def _exit_outcome(code: int | None, text: str) -> tuple[str, str | None]:
    if code == 0:
        return "succeeded", None
    if re.search(r"walltime \S+ exceeded limit", text) or code in WALLTIME_EXITS:
        return "failed", "walltime"
    if re.search(r"\b(p?v?mem) \S+ exceeded limit", text) or code in MEMORY_EXITS:
        return "failed", "memory"
    if code is None:
        return "lost", "node_lost"
    return "failed", None

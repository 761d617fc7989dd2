"""Batch system ``slurm``: sbatch a job script, squeue / sacct for the states, scancel.

State names are Slurm's long job state names (``squeue -o %T``, ``sacct -o State``),
as the squeue(1) manual lists them under JOB STATE CODES.
"""

from __future__ import annotations

import datetime as _dt
import re

from ..transport import Transport, command_line, sh_quote
from .base import CheckResult, JobRequest, QueuedBatch, job_name, mem_mb, walltime_hms

# Slurm's job states (squeue(1), JOB STATE CODES) -> (attempt state, failure category).
TRANSLATE: dict[str, tuple[str, str | None]] = {
    "PENDING": ("pending", None), "CONFIGURING": ("pending", None), "REQUEUED": ("pending", None),
    "REQUEUE_FED": ("pending", None), "REQUEUE_HOLD": ("pending", None), "RESV_DEL_HOLD": ("pending", None),
    "RUNNING": ("running", None), "COMPLETING": ("running", None), "SUSPENDED": ("running", None),
    "STOPPED": ("running", None), "SIGNALING": ("running", None), "STAGE_OUT": ("running", None),
    "RESIZING": ("running", None),
    "COMPLETED": ("succeeded", None), "FAILED": ("failed", None), "SPECIAL_EXIT": ("failed", None),
    "TIMEOUT": ("failed", "walltime"), "DEADLINE": ("failed", "walltime"),
    "OUT_OF_MEMORY": ("failed", "memory"), "NODE_FAIL": ("lost", "node_lost"),
    "BOOT_FAIL": ("lost", "node_lost"), "PREEMPTED": ("lost", "node_lost"), "REVOKED": ("lost", "node_lost"),
    "CANCELLED": ("cancelled", None),
}

# The job script: #SBATCH lines from the request, then the runner in the attempt's work dir.
SUBMIT_TEMPLATE = """#!/bin/sh
{directives}
cd {work_dir} || exit 1
exec {runner_command}
"""


def sbatch_options(req: JobRequest) -> list[str]:
    """The ``#SBATCH`` options of ``req``'s job.

    >>> sbatch_options(JobRequest("a-1", "demo", "/s/a-1", "/s/a-1/spec.json", "python3", "/r.py", 8, 2))[:3]
    ['--job-name=ari-demo', '--chdir=/s/a-1', '--output=/s/a-1/batch-%j.out']
    """
    options = [f"--job-name={req.job_name}", f"--chdir={req.work_dir}", f"--output={req.work_dir}/batch-%j.out",
               f"--cpus-per-task={req.cpus}", f"--comment={req.attempt}"]
    if req.walltime_h:
        options.append(f"--time={walltime_hms(req.walltime_h)}")
    if req.mem_gb:
        options.append(f"--mem={mem_mb(req.mem_gb)}M")
    for flag, value in (("partition", req.partition), ("account", req.account), ("qos", req.qos)):
        if value:
            options.append(f"--{flag}={value}")
    return options


def job_script(req: JobRequest) -> str:
    """The job script sbatch runs for ``req`` (SUBMIT_TEMPLATE filled in)."""
    return SUBMIT_TEMPLATE.format(directives="\n".join(f"#SBATCH {o}" for o in sbatch_options(req)),
                                  work_dir=sh_quote(req.work_dir),
                                  runner_command=command_line([req.python, req.runner, req.spec_path]))


class Slurm(QueuedBatch):
    """Slurm: jobs named after the campaign, so one squeue answers for all of them."""

    name = "slurm"
    TRANSLATE = TRANSLATE

    SCRIPT_NAME = "job.sbatch"

    def job_script(self, req: JobRequest) -> str:
        return job_script(req)

    def submit_argv(self, req: JobRequest, script_path: str) -> list[str]:
        return ["sbatch", "--parsable", script_path]

    def job_id_of(self, stdout: str) -> str | None:
        """``42`` of sbatch --parsable's ``42`` or ``42;cluster``."""
        job_id = stdout.strip().split(";")[0]
        return job_id if job_id.isdigit() else None

    def job_attributes(self, transport: Transport, campaign: str, job_ids: list[str],
                       since: float) -> dict[str, dict[str, str]]:
        """One squeue for the campaign's jobs, then sacct (or scontrol) for those no longer queued."""
        wanted = set(job_ids)
        if not wanted:
            return {}
        name = job_name(campaign)
        result = transport.run(["squeue", "-h", f"--name={name}", "-o", "%i|%T"], timeout=30)
        if not result.ok:
            raise RuntimeError(f"{transport.name}: squeue failed: {result.stderr.strip()[:200]}")
        states = {j: s for j, s in parse_squeue(result.stdout).items() if j in wanted}
        missing = wanted - set(states)
        if missing:
            acct = transport.run(["sacct", "-X", "-n", "-P", f"--name={name}", f"--starttime={_slurm_time(since)}",
                                  "-o", "JobID,State"], timeout=30)
            if acct.ok and acct.stdout.strip():
                states.update({j: s for j, s in parse_sacct(acct.stdout).items() if j in missing})
            still = wanted - set(states)
            if still:
                ctl = transport.run_script(
                    " ; ".join(command_line(["scontrol", "-o", "show", "job", j]) + " 2>/dev/null"
                               for j in sorted(still)) + " ; true", timeout=30)
                states.update(parse_scontrol(ctl.stdout))
        return {j: {"job_state": s} for j, s in states.items()}

    def cancel(self, transport: Transport, handle: dict, force: bool = False) -> None:
        """TERM to the batch script and its children (``--full``), so the runner records where it stopped;
        ``force``: KILL to all of them, for a runner that no longer answers (scancel(1): ``--signal`` names
        the signal, ``--full`` reaches the batch step's children too)."""
        signal = "KILL" if force else "TERM"
        transport.run(["scancel", f"--signal={signal}", "--full", str(handle["job_id"])], timeout=30)

    def output_file(self, handle: dict) -> str | None:
        return f"batch-{handle['job_id']}.out"

    def find(self, transport: Transport, campaign: str, attempt: str, work_dir: str) -> dict | None:
        """The job whose comment is the attempt's name (sbatch --comment)."""
        r = transport.run(["squeue", "-h", f"--name={job_name(campaign)}", "-t", "all", "-o", "%i|%k|%Z"], timeout=30)
        for line in r.stdout.splitlines():
            job, comment, chdir = (line.split("|") + ["", ""])[:3]
            # Another campaign of the same name numbers its attempts alike: the work dir tells them apart.
            if comment.strip() == attempt and chdir.strip() in ("", work_dir):
                return {"batch": self.name, "job_id": job.strip()}
        return None

    def check(self, transport: Transport) -> CheckResult:
        r = transport.run(["sinfo", "-h", "-o", "%P %a"], timeout=30)
        return CheckResult(r.ok, f"slurm partitions: {r.stdout.split()[:4]}" if r.ok else r.stderr.strip()[:160],
                           "make sbatch/sinfo work for this user on the node (SLURM_CONF via env = { SLURM_CONF = ... })")

    def status_command(self, handle: dict, ended: bool) -> str | None:
        job = handle.get("job_id")
        return None if not job else (f"sacct -j {job}" if ended else f"squeue -j {job}")


def parse_squeue(text: str) -> dict[str, str]:
    """job id -> state from ``squeue -h -o %i|%T``.

    >>> parse_squeue("41|RUNNING\\n42|PENDING\\n")
    {'41': 'RUNNING', '42': 'PENDING'}
    """
    jobs = {}
    for line in text.splitlines():
        if "|" in line:
            job, state = line.strip().split("|", 1)
            jobs[job.strip()] = state.strip().split()[0]
    return jobs


def parse_sacct(text: str) -> dict[str, str]:
    """job id -> final state from ``sacct -X -n -P -o JobID,State``.

    >>> parse_sacct("41|TIMEOUT\\n42|CANCELLED by 0\\n")
    {'41': 'TIMEOUT', '42': 'CANCELLED'}
    """
    return parse_squeue(text)


def parse_scontrol(text: str) -> dict[str, str]:
    """job id -> state from ``scontrol -o show job`` lines."""
    jobs = {}
    for line in text.splitlines():
        job = re.search(r"\bJobId=(\d+)", line)
        state = re.search(r"\bJobState=(\w+)", line)
        if job and state:
            jobs[job.group(1)] = state.group(1)
    return jobs


def _slurm_time(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(max(0.0, epoch - 3600)).strftime("%Y-%m-%dT%H:%M:%S")

"""How the console gets a slot on a node: batch systems none, slurm and pbs.

Each batch system turns a job spec already written on the node into a running,
detached runner, and answers, for many attempts at once, in what state their
jobs are. The runner's own ``status.json`` is the first truth; the batch system
adds what only it knows (pending in a queue, killed for time or memory, node
failure), and says when a job vanished without a word (lost).

A handle is a small dict stored with the attempt, enough for a new console to
find the job again: ``{"batch": "none", "pid": 123}``,
``{"batch": "slurm", "job_id": "42"}``, ``{"batch": "pbs", "job_id": "42.server"}``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Iterable

from .transport import Transport, command_line, sh_quote

JOB_NAME_PREFIX = "ari-"
FINAL_STATES = ("succeeded", "failed", "cancelled", "lost")


@dataclass(frozen=True)
class JobRequest:
    """What a batch system needs to start one attempt's runner."""

    attempt: str          # attempt name, e.g. "a-000123"
    campaign: str         # jobs of one campaign share a name so one query finds them all
    work_dir: str
    spec_path: str
    python: str
    runner: str           # path of remote/runner.py on the node
    mem_gb: float | None
    walltime_h: float | None
    cpus: int = 1
    partition: str | None = None
    account: str | None = None
    qos: str | None = None

    @property
    def job_name(self) -> str:
        return job_name(self.campaign)


@dataclass(frozen=True)
class JobState:
    """One attempt's state as the node tells it.

    ``state`` is pending, running, succeeded, failed, cancelled or lost;
    ``category`` is the cause when the runner or the batch system knows it.
    """

    state: str
    stage: str | None = None
    category: str | None = None
    exit_code: int | None = None
    peak_mem_gb: float | None = None
    heartbeat_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    message: str | None = None
    batch_state: str | None = None
    status: dict | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def job_name(campaign: str) -> str:
    """The batch job name of a campaign's jobs (safe for Slurm and PBS: 15 chars max for PBS).

    A name too long for that keeps its start and ends in a hash of the whole
    name, so two campaigns that begin alike never share (and poll) each other's jobs.

    >>> job_name("demo"), job_name("Cycle 4 re-imaging"), job_name("Cycle 4 re-imaging, band 7")
    ('ari-demo', 'ari-Cycle-aab87', 'ari-Cycle-b180f')
    """
    name = JOB_NAME_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "", campaign)
    if len(name) <= 15:
        return name
    return name[:9] + "-" + hashlib.sha256(campaign.encode()).hexdigest()[:5]


def walltime_hms(hours: float) -> str:
    """Hours as Slurm/PBS ``HH:MM:SS`` (rounded up to the minute, at least one minute).

    >>> walltime_hms(48), walltime_hms(0.01)
    ('48:00:00', '00:01:00')
    """
    minutes = max(1, int(-(-hours * 60 // 1)))
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def mem_mb(gb: float) -> int:
    """GB (as in the config: 2**30 bytes, like the runner) as whole MiB for --mem."""
    return max(1, int(round(gb * 1024)))


def status_from_json(status: dict) -> JobState:
    """A JobState from the runner's ``status.json``."""
    peak = status.get("peak_rss_gb")
    return JobState(
        state=status.get("state") or "running",
        stage=status.get("stage"),
        category=status.get("category"),
        exit_code=status.get("exit_code"),
        peak_mem_gb=peak,
        heartbeat_at=status.get("heartbeat_at"),
        started_at=status.get("started_at"),
        ended_at=status.get("ended_at"),
        message=status.get("message"),
        status=status,
    )


def read_status(transport: Transport, work_dir: str) -> dict | None:
    """The runner's ``status.json`` in ``work_dir``, or None while there is none."""
    try:
        return json.loads(transport.read_file(f"{work_dir}/status.json"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# -- none: a detached process ---------------------------------------------------

def none_launch(transport: Transport, req: JobRequest) -> dict:
    """Start the runner detached (setsid + nohup) and return its handle."""
    script = (f"cd {sh_quote(req.work_dir)} && "
              f"{command_line([req.python, req.runner, '--detach', req.spec_path])}")
    result = transport.run_script(script, timeout=60)
    pid = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if not result.ok or not pid.isdigit():
        raise RuntimeError(f"{transport.name}: runner did not start: {(result.stderr or result.stdout).strip()[:300]}")
    return {"batch": "none", "pid": int(pid)}


def none_alive(transport: Transport, pids: Iterable[int]) -> set[int]:
    """Which of ``pids`` are runners still alive on the node (one command for all)."""
    pids = sorted(set(int(p) for p in pids))
    if not pids:
        return set()
    script = ("for p in " + " ".join(str(p) for p in pids) + "; do "
              "tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -q runner.py && echo $p; done; true")
    result = transport.run_script(script, timeout=30)
    return {int(x) for x in result.stdout.split() if x.isdigit()}


def none_cancel(transport: Transport, handle: dict, force: bool = False) -> None:
    """SIGTERM the runner; it stops its children, records the stage and exits.

    ``force``: for a runner that no longer answers (stopped or hung), SIGKILL its
    whole process group instead (it leads its own session, so the group is its pid).
    """
    pid = int(handle["pid"])
    script = (f"kill -KILL -- -{pid} 2>/dev/null; kill -KILL {pid} 2>/dev/null; true" if force
              else f"kill -TERM {pid} 2>/dev/null; true")
    transport.run_script(script, timeout=30)


def reconcile_none(status: dict | None, alive: bool) -> JobState:
    """The state of a detached runner from its status file and whether its pid lives.

    >>> reconcile_none({"state": "running", "stage": "image"}, alive=False).state
    'lost'
    """
    if status and status.get("state") in ("succeeded", "failed", "cancelled"):
        return status_from_json(status)
    if alive:
        return status_from_json(status) if status else JobState(state="running", stage="starting")
    stage = status.get("stage") if status else None
    return JobState(state="lost", stage=stage, category="node_lost",
                    message="the runner is gone without a final status (killed, or the node rebooted)",
                    status=status)


# -- slurm -----------------------------------------------------------------------

SLURM_MAP = {
    "PENDING": ("pending", None), "CONFIGURING": ("pending", None), "REQUEUED": ("pending", None),
    "RUNNING": ("running", None), "COMPLETING": ("running", None), "SUSPENDED": ("running", None),
    "COMPLETED": ("succeeded", None), "FAILED": ("failed", None),
    "TIMEOUT": ("failed", "walltime"), "DEADLINE": ("failed", "walltime"),
    "OUT_OF_MEMORY": ("failed", "memory"), "NODE_FAIL": ("lost", "node_lost"),
    "BOOT_FAIL": ("lost", "node_lost"), "PREEMPTED": ("lost", "node_lost"),
    "CANCELLED": ("cancelled", None),
}


def slurm_argv(req: JobRequest) -> list[str]:
    """The ``sbatch`` command that starts the runner for ``req``."""
    argv = ["sbatch", "--parsable", f"--job-name={req.job_name}", f"--chdir={req.work_dir}",
            f"--output={req.work_dir}/batch-%j.out", f"--cpus-per-task={req.cpus}",
            f"--comment={req.attempt}"]
    if req.walltime_h:
        argv.append(f"--time={walltime_hms(req.walltime_h)}")
    if req.mem_gb:
        argv.append(f"--mem={mem_mb(req.mem_gb)}M")
    for flag, value in (("partition", req.partition), ("account", req.account), ("qos", req.qos)):
        if value:
            argv.append(f"--{flag}={value}")
    argv += ["--wrap", command_line(["exec", req.python, req.runner, req.spec_path])]
    return argv


def slurm_launch(transport: Transport, req: JobRequest) -> dict:
    result = transport.run(slurm_argv(req), timeout=60)
    job_id = result.stdout.strip().split(";")[0]
    if not result.ok or not job_id.isdigit():
        raise RuntimeError(f"{transport.name}: sbatch failed: {(result.stderr or result.stdout).strip()[:300]}")
    return {"batch": "slurm", "job_id": job_id}


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


def slurm_states(transport: Transport, campaign: str, job_ids: Iterable[str], since: float) -> dict[str, str]:
    """Batch states of a campaign's jobs: one squeue, then sacct (or scontrol) for the rest."""
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
        start = _slurm_time(since)
        acct = transport.run(["sacct", "-X", "-n", "-P", f"--name={name}", f"--starttime={start}",
                              "-o", "JobID,State"], timeout=30)
        if acct.ok and acct.stdout.strip():
            states.update({j: s for j, s in parse_sacct(acct.stdout).items() if j in missing})
        still = wanted - set(states)
        if still:
            ctl = transport.run_script(
                " ; ".join(command_line(["scontrol", "-o", "show", "job", j]) + " 2>/dev/null" for j in sorted(still))
                + " ; true", timeout=30)
            states.update(parse_scontrol(ctl.stdout))
    return states


def _slurm_time(epoch: float) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(max(0.0, epoch - 3600)).strftime("%Y-%m-%dT%H:%M:%S")


def slurm_cancel(transport: Transport, handle: dict) -> None:
    transport.run(["scancel", "--signal=TERM", "--full", str(handle["job_id"])], timeout=30)


# -- pbs ---------------------------------------------------------------------------

PBS_MAP = {"Q": ("pending", None), "H": ("pending", None), "W": ("pending", None), "T": ("pending", None),
           "R": ("running", None), "E": ("running", None), "B": ("running", None)}


def pbs_argv(req: JobRequest, script_path: str) -> list[str]:
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


def pbs_script(req: JobRequest) -> str:
    return ("#!/bin/sh\n"
            f"cd {sh_quote(req.work_dir)} || exit 1\n"
            f"exec {command_line([req.python, req.runner, req.spec_path])}\n")


def pbs_launch(transport: Transport, req: JobRequest) -> dict:
    script_path = f"{req.work_dir}/job.pbs"
    transport.write_file(script_path, pbs_script(req).encode(), mode=0o755)
    result = transport.run(pbs_argv(req, script_path), timeout=60)
    job_id = result.stdout.strip()
    if not result.ok or not job_id:
        raise RuntimeError(f"{transport.name}: qsub failed: {(result.stderr or result.stdout).strip()[:300]}")
    return {"batch": "pbs", "job_id": job_id}


def parse_qstat_f(text: str) -> dict[str, dict[str, str]]:
    """job id -> attributes (job_state, Exit_status, resources_used.walltime, ...) from ``qstat -f``."""
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


def pbs_states(transport: Transport, job_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """``qstat -fx`` attributes of the given jobs (finished ones too), one call."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    result = transport.run(["qstat", "-fx", *ids], timeout=30)
    return parse_qstat_f(result.stdout)


def pbs_cancel(transport: Transport, handle: dict) -> None:
    transport.run(["qdel", str(handle["job_id"])], timeout=30)


# -- reconciling batch state with the runner's status -------------------------------

def reconcile_batch(status: dict | None, batch_state: str | None, batch: str,
                    exit_status: str | None = None, output_tail: str = "") -> JobState:
    """One attempt's state from the runner's status and the batch system's word on its job.

    >>> reconcile_batch({"state": "running", "stage": "image"}, "TIMEOUT", "slurm").category
    'walltime'
    >>> reconcile_batch(None, None, "slurm", output_tail="*** JOB 7 CANCELLED AT x DUE TO TIME LIMIT ***").category
    'walltime'
    """
    if batch == "pbs" and batch_state:
        state, category = PBS_MAP.get(batch_state, (None, None))
        if batch_state == "F":
            code = int(exit_status) if exit_status and exit_status.lstrip("-").isdigit() else None
            state, category = _pbs_exit(code, output_tail)
    else:
        state, category = SLURM_MAP.get((batch_state or "").upper(), (None, None))
    runner_final = status is not None and status.get("state") in ("succeeded", "failed", "cancelled")
    if category is None:
        category = _category_from_output(output_tail)
        if category and state is None:
            state = "lost" if category == "node_lost" else "failed"
    if runner_final:
        js = status_from_json(status)
        if js.state != "succeeded" and category and not js.category:
            return _with(js, category=category, batch_state=batch_state)
        if js.state == "cancelled" and category in ("walltime", "memory"):
            return _with(js, state="failed", category=category, batch_state=batch_state)
        return _with(js, batch_state=batch_state)
    if state == "pending":
        return JobState(state="pending", batch_state=batch_state)
    if state == "running":
        base = status_from_json(status) if status else JobState(state="running", stage="starting")
        return _with(base, state="running", batch_state=batch_state)
    # The job is over (or unknown to the batch system) and the runner left no final word.
    if state is None or (state == "succeeded" and not runner_final):
        state = "lost" if state is None else "failed"
        category = category or ("node_lost" if state == "lost" else None)
    stage = status.get("stage") if status else None
    return JobState(state=state, stage=stage, category=category, batch_state=batch_state, status=status,
                    message="the job ended without the runner's final status")


def _category_from_output(text: str) -> str | None:
    """The cause a batch system wrote into a job's output, if any.

    >>> _category_from_output("slurmstepd: error: *** JOB 7 ON vm CANCELLED AT 2026-11-25T10:00:00 DUE TO TIME LIMIT ***")
    'walltime'
    """
    if "DUE TO TIME LIMIT" in text or re.search(r"walltime \S+ exceeded limit", text):
        return "walltime"
    if re.search(r"oom[-_ ]kill|Exceeded job memory limit|OUT_OF_MEMORY|\bp?v?mem \S+ exceeded limit", text, re.I):
        return "memory"
    if "DUE TO NODE FAILURE" in text:
        return "node_lost"
    return None


# PBS Pro's JOB_EXEC_KILL_WALLTIME / _MEM / _VMEM exit codes.
PBS_WALLTIME_EXITS = {-29}
PBS_MEMORY_EXITS = {-27, -26}


def _pbs_exit(code: int | None, text: str) -> tuple[str, str | None]:
    if code == 0:
        return "succeeded", None
    if re.search(r"walltime \S+ exceeded limit", text) or code in PBS_WALLTIME_EXITS:
        return "failed", "walltime"
    if re.search(r"\b(p?v?mem) \S+ exceeded limit", text) or code in PBS_MEMORY_EXITS:
        return "failed", "memory"
    if code is None:
        return "lost", "node_lost"
    return "failed", None


def _with(js: JobState, **changes) -> JobState:
    from dataclasses import replace

    return replace(js, **changes)

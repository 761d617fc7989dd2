"""The protocol every batch system answers, and what they share.

Each batch system turns a job spec already written on the node into a running,
detached runner, and answers, for many attempts at once, in what state their
jobs are. The runner's own ``status.json`` is the first truth; the batch system
adds what only it knows (pending in a queue, killed for time or memory, node
failure), and says when a job vanished without a word (lost).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import NamedTuple

from ..transport import Transport, sh_quote

JOB_NAME_PREFIX = "ari-"
FINAL_STATES = ("succeeded", "failed", "cancelled", "lost")
# The formats the console and remote/runner.py share (runner.SPEC_VERSION, runner.STATUS_VERSION).
SPEC_VERSION = 1    # the job spec the console writes
STATUS_VERSION = 1  # the newest status.json the console reads


class SpecRejected(Exception):
    """The runner refused the job spec (its exit 2, ``ari-runner: ...``): the console sent it wrong, not the node's fault."""


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
    peak_scratch_gb: float | None = None  # the most disk its work dir used, measured after each stage
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
    """GB (10**9 bytes, as everywhere in the console and the runner) as whole MiB for Slurm's ``--mem``
    and PBS's ``mem=...mb`` (both 2**20 bytes), rounded up so the batch system never kills below the budget.

    >>> mem_mb(16), mem_mb(0.2), mem_mb(0)
    (15259, 191, 1)
    """
    return max(1, -int(-gb * 1e9 // 2**20))


def status_from_json(status: dict) -> JobState:
    """A JobState from the runner's ``status.json``."""
    peak = status.get("peak_rss_gb")
    version = status.get("status_version", 1)
    newer = (f"status.json format {version} is newer than this console reads ({STATUS_VERSION}) — update the console"
             if isinstance(version, int) and version > STATUS_VERSION else None)
    return JobState(
        state=status.get("state") or "running",
        stage=status.get("stage"),
        category=status.get("category"),
        exit_code=status.get("exit_code"),
        peak_mem_gb=peak,
        peak_scratch_gb=_peak_scratch_gb(status),
        heartbeat_at=status.get("heartbeat_at"),
        started_at=status.get("started_at"),
        ended_at=status.get("ended_at"),
        message=newer or status.get("message"),
        status=status,
    )


def _peak_scratch_gb(status: dict) -> float | None:
    """The runner's peak scratch use in GB (10**9 bytes), from its exact byte count where given
    (``peak_scratch_gb`` is rounded to 1 MB); None before the first stage ended or from an older runner.

    >>> _peak_scratch_gb({"peak_scratch_bytes": 120 * 2**20, "peak_scratch_gb": 0.126}), _peak_scratch_gb({})
    (0.12582912, None)
    """
    if status.get("peak_scratch_bytes"):
        return round(status["peak_scratch_bytes"] / 1e9, 9)
    return status.get("peak_scratch_gb") or None


def read_status(transport: Transport, work_dir: str) -> dict | None:
    """The runner's ``status.json`` in ``work_dir``, or None while there is none."""
    try:
        return json.loads(transport.read_file(f"{work_dir}/status.json"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class CheckResult(NamedTuple):
    """What ``ari nodes check`` says of a node's batch system: ok, what it saw, the fix."""

    ok: bool
    detail: str
    fix: str


class BatchSystem:
    """One batch system: how a job for an attempt is submitted, watched, found and stopped."""

    name: str = ""
    TRANSLATE: dict[str, tuple[str, str | None]] = {}  # its state -> (attempt state, failure category)

    def submit(self, transport: Transport, req: JobRequest) -> dict:
        """Start the runner for ``req``; the handle (``{"batch": name, ...}``)."""
        raise NotImplementedError

    def states(self, transport: Transport, campaign: str, handles: list[dict], since: float) -> dict[str, JobState]:
        """The state of every given job (handles of this system), by work dir: a few commands for all."""
        raise NotImplementedError

    def cancel(self, transport: Transport, handle: dict, force: bool = False) -> None:
        """Stop a job; the runner gets SIGTERM and records its stage (``force``: kill a hung one)."""
        raise NotImplementedError

    def output_file(self, handle: dict) -> str | None:
        """The name (in the work dir) of the file the batch system writes the job's output to."""
        return None

    def output_tail(self, transport: Transport, handle: dict, limit: int = 65536) -> str:
        """The end of the job's output file ('' when there is none)."""
        name = self.output_file(handle)
        if name is None:
            return ""
        path = f"{handle['work_dir']}/{name}"
        return transport.run_script(f"tail -c {limit} {sh_quote(path)} 2>/dev/null; true").stdout

    def find(self, transport: Transport, campaign: str, attempt: str, work_dir: str) -> dict | None:
        """The handle of an attempt launched but never recorded, when this system still knows its job."""
        return None

    def check(self, transport: Transport) -> CheckResult | None:
        """Whether the node's batch commands work (None: nothing to check)."""
        return None

    def status_command(self, handle: dict, ended: bool) -> str | None:
        """The command an operator types on the node to see the job as the batch system does."""
        return None


class QueuedBatch(BatchSystem):
    """A batch system with a queue (Slurm, PBS): a job script submitted, one query for the states of all
    of a campaign's jobs."""

    SCRIPT_NAME = "job.sh"  # the job script, in the attempt's work dir

    def job_script(self, req: JobRequest) -> str:
        """The job script for ``req`` (the system's SUBMIT_TEMPLATE filled in)."""
        raise NotImplementedError

    def submit_argv(self, req: JobRequest, script_path: str) -> list[str]:
        """The command that submits the job script."""
        raise NotImplementedError

    def job_id_of(self, stdout: str) -> str | None:
        """The job id in what the submit command printed."""
        return stdout.strip() or None

    def submit(self, transport: Transport, req: JobRequest) -> dict:
        script_path = f"{req.work_dir}/{self.SCRIPT_NAME}"
        transport.write_file(script_path, self.job_script(req).encode(), mode=0o755)
        argv = self.submit_argv(req, script_path)
        result = transport.run(argv, timeout=60)
        job_id = self.job_id_of(result.stdout)
        if not result.ok or not job_id:
            raise RuntimeError(f"{transport.name}: {argv[0]} failed: {(result.stderr or result.stdout).strip()[:300]}")
        return {"batch": self.name, "job_id": job_id}

    def job_attributes(self, transport: Transport, campaign: str, job_ids: list[str],
                       since: float) -> dict[str, dict[str, str]]:
        """job id -> attributes (at least ``job_state``) of the given jobs, finished ones too."""
        raise NotImplementedError

    def translate(self, attrs: dict[str, str], output_tail: str = "") -> tuple[str | None, str | None]:
        """(attempt state, category) of a job from its attributes; (None, None) when unknown."""
        return self.TRANSLATE.get((attrs.get("job_state") or "").upper(), (None, None))

    def states(self, transport: Transport, campaign: str, handles: list[dict], since: float) -> dict[str, JobState]:
        # Ask the batch system first, then read the status files: a runner that ends in
        # between has already written its final status, so it is never taken for lost.
        attrs = self.job_attributes(transport, campaign, [h["job_id"] for h in handles], since)
        statuses = {h["work_dir"]: read_status(transport, h["work_dir"]) for h in handles}
        out = {}
        for h in handles:
            a = attrs.get(h["job_id"], {})
            status = statuses[h["work_dir"]]
            tail_text = ""
            runner_done = bool(status and status.get("state") in ("succeeded", "failed", "cancelled"))
            unexplained = runner_done and status.get("state") != "succeeded" and not status.get("category")
            in_queue = self.translate(a)[0] in ("pending", "running")
            if (unexplained or not runner_done) and not in_queue:
                tail_text = self.output_tail(transport, h)  # the batch system's own words on why the job ended
            out[h["work_dir"]] = self.reconcile(status, a, tail_text)
        return out

    def reconcile(self, status: dict | None, attrs: dict[str, str], output_tail: str = "") -> JobState:
        """One attempt's state from the runner's status and the batch system's word on its job."""
        batch_state = attrs.get("job_state")
        state, category = self.translate(attrs, output_tail)
        runner_final = status is not None and status.get("state") in ("succeeded", "failed", "cancelled")
        if category is None:
            category = category_from_output(output_tail)
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


def category_from_output(text: str) -> str | None:
    """The cause a batch system wrote into a job's output, if any.

    >>> category_from_output("slurmstepd: error: *** JOB 7 ON vm CANCELLED AT 2026-11-25T10:00:00 DUE TO TIME LIMIT ***")
    'walltime'
    """
    if "DUE TO TIME LIMIT" in text or re.search(r"walltime \S+ exceeded limit", text):
        return "walltime"
    if re.search(r"oom[-_ ]kill|Exceeded job memory limit|OUT_OF_MEMORY|\bp?v?mem \S+ exceeded limit", text, re.I):
        return "memory"
    if "DUE TO NODE FAILURE" in text:
        return "node_lost"
    return None


def _with(js: JobState, **changes) -> JobState:
    from dataclasses import replace

    return replace(js, **changes)

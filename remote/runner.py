"""The job runner: one attempt of one data set on one node.

    python3 remote/runner.py SPEC.json            # run in the foreground
    python3 remote/runner.py --detach SPEC.json   # setsid + nohup: prints the pid, returns at once

(``--detach`` is ``setsid nohup python3 remote/runner.py SPEC.json >runner.out 2>&1 &``
done in Python; a transport may do either.)

Python stdlib only (this file and procutil: 3.4+, no f-strings, no dataclasses;
download.py needs 3.6, the minimum `ari nodes check` asks of a node), never imports
``ari_console``; the console and the runner meet only in files. Copy the whole
``remote/`` directory to the node (the runner imports ``remote.procutil`` and,
when present, ``remote.download``'s ``fetch`` or ``download`` from the directory
above itself; without it a small built-in downloader is used).

Stages, in order: ``download`` (this file, in a child process) then
``restore``, ``image``, ``export`` (the recipe script, run as a child process
with the recipe's Python). Each stage logs to ``<work_dir>/<stage>.log``; the
runner logs to ``<work_dir>/runner.log``. Each child runs in the runner's
session, and the runner is a child subreaper (prctl), so a grandchild whose
parent exited is still counted and killed with the tree; whatever a stage
leaves running when its process exits is killed before the next stage.

Job spec keys (JSON object)::

    spec_version    1      the spec's format (SPEC_VERSION); absent = 1; a newer one is refused
    attempt_id      "a-000123"                     required, a name for this attempt
    uid             "uid://A001/X1296/X1d3"        required, the MOUS
    work_dir        "/scratch/ari/a-000123"        required, created if missing
    stages          ["download", "restore", "image", "export"]   default: all four
    files           [{"url": ..., "name": ..., "sha256": ..., "size": bytes}]  what download fetches
    download_dir    default <work_dir>/raw
    recipe          {"name": "casa6" | "alma-pipeline",
                     "python": "/opt/casa-6.7/bin/python3",   interpreter with casatasks
                     "casa": "/opt/casa-pipeline/bin/casa",   for alma-pipeline
                     "script": optional explicit path, default remote/recipes/<name>.py,
                     "params": {...}}                         passed to the recipe
    mem_gb          8.0    kill the tree when its RSS passes this (GB = 10**9 bytes); null = no limit
    walltime_h      2.0    kill the tree when this runner has run longer; null = no limit
                           (counted from the runner's start: a restart gets a fresh allowance)
    scratch_dir     default work_dir: the file system checked for free space
    scratch_need_gb {"download": 30.0, "restore": 60.0, ...}   predicted need per stage;
                    download defaults to the size of the files still missing
    env             {"CASASITECONFIG": "..."}   added to every child's environment
    download_attempts 6    tries per file (when remote/download.py takes ``attempts``)
    download_backoff_s 1.0 first wait between tries (when it takes ``backoff_base``)
    heartbeat_s     5.0    how often status.json is rewritten while a stage runs
    reserve_bytes   1048576  scratch the runner holds back (``.ari-reserve``) so that a full disk
                           can still be reported: when a write fails with ENOSPC the runner
                           stops the stage, frees the reserve and writes its final status there
    poll_s          1.0    how often /proc is read for RSS and children are checked

``status.json`` (rewritten atomically: temp + fsync + rename; readers never see
a torn file) has: ``status_version`` (STATUS_VERSION, the format's number),
``attempt_id, uid, state`` (running / succeeded / failed / cancelled), ``stage, pid, pgid, host, started_at, heartbeat_at, ended_at`` (Unix
seconds), ``heartbeat_s, exit_code, category, message, rss_bytes,
peak_rss_bytes, peak_rss_gb, scratch_bytes, peak_scratch_bytes, peak_scratch_gb, limits, stages``
(per stage: state, started_at, ended_at, exit_code, scratch_bytes, and for download
files_fetched / files_skipped).

Scratch use: when a stage ends (succeeded, failed, killed or refused) the runner adds up the
disk blocks of the work dir (and of ``download_dir`` when it lies outside), ``du -s`` done
once per stage, the reserve file left out: the stage's ``scratch_bytes``. ``scratch_bytes``
is the last such sum, ``peak_scratch_bytes`` / ``peak_scratch_gb`` (GB = 10**9 bytes) the
largest: what the console learns the scratch a data set needs from. A stage that filled the
scratch is measured as it died, so a ``disk_full`` attempt's peak is what it had reached.

``category`` is set when the runner knows the cause: ``memory``, ``walltime``,
``disk_full`` (a stage refused for lack of space, a write that failed with ENOSPC, or a
stage that failed while the scratch was full), ``download``, or what the recipe reported in
``<work_dir>/<stage>.failure.json`` (``{"category", "message"}``); else null
(the failure line then says ``category=unknown``) and triage reads the logs. A
stage's own state is running, succeeded, failed, cancelled or refused.
Decisive lines, one line each, in the stage log and in runner.log::

    ari-runner: stage download failed: category=download: <message>
    ari-runner: killed: memory budget 8.0 GB exceeded (rss 8.4 GB)
    ari-runner: killed: walltime 2.0 h exceeded
    ari-runner: refused: scratch has 1.2 GB free, stage restore needs 30.0 GB
    ari-runner: cancelled: SIGTERM during stage image

A runner killed outright (SIGKILL, a node crash) cannot record anything: its
status stays ``running`` and ``heartbeat_at`` stops advancing, which the
console reads as ``node_lost`` after a few ``heartbeat_s``; ``pgid`` (the
runner's process group, its children included) is what to kill then.

Signals: SIGHUP is ignored (the runner and its children outlive the SSH
session). SIGTERM or SIGINT kills the children, records the stage and exits
cleanly: state ``cancelled`` (category null) — unless the walltime is near
(less than max(120 s, 5 % of walltime_h) left, which is how Slurm's
time-limit SIGTERM looks), then state ``failed``, category ``walltime``.

Idempotent: a restarted attempt re-checks every downloaded file's sha256 and
fetches only what is missing or wrong. A second runner on the same work dir
is refused (``runner.lock``, flock).

Exit codes: 0 succeeded, 1 failed, 3 cancelled, 2 bad spec / already running.
"""

import errno
import fcntl
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from remote import procutil  # noqa: E402

ALL_STAGES = ("download", "restore", "image", "export")
RUNNER_CATEGORIES = ("memory", "walltime", "disk_full", "download")
KNOWN_CATEGORIES = ("download", "calibration", "importdata", "makeimlist", "findcont", "uvcontfit",
                    "imaging", "export", "memory", "walltime", "disk_full", "total_power", "node_lost",
                    "unknown")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 3
RESERVE_NAME = ".ari-reserve"
DEFAULT_RESERVE_BYTES = 1 << 20
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
SPEC_VERSION = 1    # the job spec format this runner reads (the console writes it as spec_version)
STATUS_VERSION = 1  # the status.json format this runner writes (status_version)
RECIPES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes")


class SpecError(Exception):
    """The job spec is unusable; the message names the key and the fix."""


# --------------------------------------------------------------------- spec

def load_spec(path: str) -> dict:
    """The job spec at ``path`` with defaults filled in; SpecError if a key is wrong."""
    try:
        with open(path) as fh:
            spec = json.load(fh)
    except (OSError, ValueError) as exc:
        raise SpecError("%s: cannot read the job spec: %s" % (path, exc))
    return normalise_spec(spec, path)


def normalise_spec(spec: dict, origin: str = "spec") -> dict:
    """Check required keys and fill defaults (see the module docstring).

    >>> normalise_spec({"attempt_id": "a1", "uid": "uid://A001/X1/X1", "work_dir": "/tmp/w", "recipe": {"name": "casa6"}})["stages"]
    ['download', 'restore', 'image', 'export']
    """
    version = spec.get("spec_version", 1)
    if not isinstance(version, int) or version < 1 or version > SPEC_VERSION:
        raise SpecError("%s: spec_version %r is newer than this runner reads (%d) — copy the console's "
                        "remote/ to the node again (`ari nodes check` does)" % (origin, version, SPEC_VERSION))
    for key in ("attempt_id", "uid", "work_dir"):
        if not spec.get(key):
            raise SpecError("%s: key %r is missing — add it to the job spec" % (origin, key))
    out = dict(spec)
    out["spec_version"] = version
    out["work_dir"] = os.path.abspath(spec["work_dir"])
    out["stages"] = list(spec.get("stages") or ALL_STAGES)
    for stage in out["stages"]:
        if stage not in ALL_STAGES:
            raise SpecError("%s: stage %r is unknown — use %s" % (origin, stage, ", ".join(ALL_STAGES)))
    out["files"] = list(spec.get("files") or [])
    for item in out["files"]:
        if not item.get("url") or not item.get("name"):
            raise SpecError("%s: every entry of 'files' needs 'url' and 'name', got %r" % (origin, item))
        name = str(item["name"])
        if "/" in name or "\\" in name or name in (".", ".."):
            raise SpecError("%s: file name %r must be a plain file name (no '/', no '..')" % (origin, name))
    out["reserve_bytes"] = int(spec.get("reserve_bytes", DEFAULT_RESERVE_BYTES) or 0)
    out["download_dir"] = os.path.abspath(spec.get("download_dir") or os.path.join(out["work_dir"], "raw"))
    out["scratch_dir"] = os.path.abspath(spec.get("scratch_dir") or out["work_dir"])
    out["recipe"] = dict(spec.get("recipe") or {})
    out["scratch_need_gb"] = dict(spec.get("scratch_need_gb") or {})
    out["env"] = {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
    out["heartbeat_s"] = float(spec.get("heartbeat_s") or 5.0)
    out["poll_s"] = float(spec.get("poll_s") or 1.0)
    for key in ("mem_gb", "walltime_h"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, (int, float)) or value <= 0):
            raise SpecError("%s: %s must be a positive number or null, got %r" % (origin, key, value))
        out[key] = value
    needs_recipe = [s for s in out["stages"] if s != "download"]
    if needs_recipe and not out["recipe"].get("name") and not out["recipe"].get("script"):
        raise SpecError("%s: stages %s need 'recipe': {'name': 'casa6', 'python': ...}" % (origin, needs_recipe))
    return out


def recipe_script(recipe: dict) -> str:
    """The recipe file: ``recipe.script`` or ``remote/recipes/<name with - as _>.py``."""
    if recipe.get("script"):
        return os.path.abspath(recipe["script"])
    return os.path.join(RECIPES_DIR, recipe["name"].replace("-", "_") + ".py")


def recipe_params(spec: dict) -> dict:
    """What the recipe reads (``<work_dir>/recipe_params.json``)."""
    recipe = spec["recipe"]
    return {
        "attempt_id": spec["attempt_id"],
        "uid": spec["uid"],
        "work_dir": spec["work_dir"],
        "download_dir": spec["download_dir"],
        "products_dir": os.path.join(spec["work_dir"], "products"),
        "inputs": [os.path.join(spec["download_dir"], f["name"]) for f in spec["files"]],
        "recipe": recipe.get("name") or os.path.basename(recipe_script(recipe)),
        "casa": recipe.get("casa"),
        "params": recipe.get("params") or {},
    }


def stage_command(spec: dict, stage: str, spec_path: str) -> list:
    """The argv of the child process that runs ``stage``."""
    if stage == "download":
        return [sys.executable, os.path.abspath(__file__), "--download", spec_path]
    python = spec["recipe"].get("python") or sys.executable
    return [python, recipe_script(spec["recipe"]), stage, os.path.join(spec["work_dir"], "recipe_params.json")]


# ------------------------------------------------------------ messages

def failed_line(stage: str, category: str, message: str) -> str:
    """The one-line failure record triage reads.

    >>> failed_line("download", "download", "HTTP 404 for x.tar")
    'ari-runner: stage download failed: category=download: HTTP 404 for x.tar'
    """
    return "ari-runner: stage %s failed: category=%s: %s" % (stage, category, one_line(message))


def memory_line(budget_gb: float, rss_bytes: int) -> str:
    """The line recorded when the tree's RSS passed the budget.

    >>> memory_line(8.0, int(8.4e9))
    'ari-runner: killed: memory budget 8.0 GB exceeded (rss 8.4 GB)'
    """
    return "ari-runner: killed: memory budget %s GB exceeded (rss %s GB)" % (
        procutil.format_amount(budget_gb), procutil.format_measured(rss_bytes / procutil.GB, budget_gb))


def walltime_line(walltime_h: float) -> str:
    """The line recorded when the walltime ran out.

    >>> walltime_line(2)
    'ari-runner: killed: walltime 2.0 h exceeded'
    """
    return "ari-runner: killed: walltime %s h exceeded" % procutil.format_amount(walltime_h)


def refused_line(free: int, stage: str, need_gb: float) -> str:
    """The line recorded when a stage is refused for lack of scratch space.

    >>> refused_line(int(1.2e9), "restore", 30)
    'ari-runner: refused: scratch has 1.2 GB free, stage restore needs 30.0 GB'
    """
    return "ari-runner: refused: scratch has %s GB free, stage %s needs %s GB" % (
        procutil.format_measured(free / procutil.GB), stage, procutil.format_amount(need_gb))


def utc_now() -> str:
    """The current UTC time as ``2026-11-25T16:20:00Z`` for log lines."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def one_line(text: str) -> str:
    """``text`` folded onto one line (newlines become ' | ')."""
    return " | ".join(part.strip() for part in str(text).strip().splitlines() if part.strip()) or "(no message)"


def signal_name(number: int) -> str:
    """A signal's name.

    >>> signal_name(9)
    'SIGKILL'
    """
    try:
        return signal.Signals(number).name
    except (ValueError, AttributeError):
        return "signal %d" % number


# ------------------------------------------------------------- the attempt

class Attempt(object):
    """One running attempt: its spec, its status document and its logs."""

    def __init__(self, spec: dict, spec_path: str):
        self.spec = spec
        self.spec_path = spec_path
        self.work_dir = spec["work_dir"]
        self.started = time.time()
        self.stop_signal = None
        self.child = None
        self.disk_full = None  # the failed write's message once the scratch is full
        self.status = {
            "status_version": STATUS_VERSION, "attempt_id": spec["attempt_id"], "uid": spec["uid"], "state": "running", "stage": None,
            "pid": os.getpid(), "pgid": os.getpgid(0), "host": socket.gethostname(), "started_at": self.started,
            "heartbeat_at": self.started, "ended_at": None, "heartbeat_s": spec["heartbeat_s"],
            "exit_code": None, "category": None, "message": None, "rss_bytes": 0, "peak_rss_bytes": 0,
            "peak_rss_gb": 0.0, "scratch_bytes": 0, "peak_scratch_bytes": 0, "peak_scratch_gb": 0.0,
            "limits": {"mem_gb": spec["mem_gb"], "walltime_h": spec["walltime_h"]},
            "stages": {},
        }

    # -- files
    def path(self, name: str) -> str:
        return os.path.join(self.work_dir, name)

    def write_status(self) -> None:
        """Rewrite status.json atomically, with a fresh heartbeat (on a full scratch: in the reserve)."""
        self.status["heartbeat_at"] = time.time()
        self.guarded("status.json", lambda: procutil.write_json_atomic(self.path("status.json"), self.status))

    def guarded(self, what: str, write) -> None:
        """Run ``write``; on a full scratch stop the stage, free the reserve and write again there."""
        try:
            write()
            return
        except OSError as exc:
            if exc.errno not in FULL_ERRNOS:
                print("ari-runner: cannot write %s: %s" % (what, exc), file=sys.stderr)
                return
            self.disk_full = self.disk_full or "cannot write %s: %s" % (what, exc.strerror)
        if self.child is not None and self.child.poll() is None:
            self.kill_children()  # it would eat the reserve
        self.release_reserve()
        try:
            write()
        except OSError as exc:  # even the reserve is gone: the console sees a stale heartbeat (node_lost)
            print("ari-runner: cannot write %s on a full scratch: %s" % (what, exc), file=sys.stderr)

    def hold_reserve(self) -> None:
        """Hold ``reserve_bytes`` of scratch (real blocks, not a sparse file) for the last words."""
        hold_reserve(self.path(RESERVE_NAME), self.spec["reserve_bytes"])

    def release_reserve(self) -> None:
        try:
            os.remove(self.path(RESERVE_NAME))
        except OSError:
            pass

    def scratch_full(self) -> bool:
        """True when a write failed for space, or the scratch has less free than the reserve."""
        if self.disk_full:
            return True
        try:
            return procutil.free_bytes(self.spec["scratch_dir"]) < max(self.spec["reserve_bytes"], 1 << 16)
        except OSError:
            return False

    def log(self, line: str, stage: str = None) -> None:
        """Append ``line`` to runner.log and, given a stage, to that stage's log.

        Lines are written as they are (no prefix) so both logs carry the exact
        text triage matches; informational lines carry their own UTC time.
        """
        for name in ["runner.log"] + (["%s.log" % stage] if stage else []):
            def append(name=name):
                with open(self.path(name), "a") as fh:
                    fh.write(line + "\n")
            self.guarded(name, append)

    # -- outcome
    def finish(self, state: str, exit_code: int, category=None, message=None) -> int:
        """Record the final state and return the runner's exit code."""
        self.status.update(state=state, exit_code=exit_code, category=category, message=message,
                           ended_at=time.time())
        self.release_reserve()  # the last words need no reserve after them
        self.write_status()
        self.log("ari-runner: attempt %s %s at %s (exit %d)" % (self.spec["attempt_id"], state, utc_now(), exit_code))
        return exit_code

    # -- limits
    def elapsed_h(self) -> float:
        return (time.time() - self.started) / 3600.0

    def walltime_exceeded(self) -> bool:
        limit = self.spec["walltime_h"]
        return limit is not None and self.elapsed_h() >= limit

    def walltime_near(self) -> bool:
        """True when a SIGTERM now looks like a batch system's time-limit kill."""
        limit = self.spec["walltime_h"]
        if limit is None:
            return False
        left_s = (limit - self.elapsed_h()) * 3600.0
        return left_s <= max(120.0, 0.05 * limit * 3600.0)

    def sample_memory(self) -> int:
        """RSS of the whole tree (runner + descendants); keeps the peak."""
        rss = procutil.tree_rss_bytes(os.getpid())
        self.status["rss_bytes"] = rss
        if rss > self.status["peak_rss_bytes"]:
            self.status["peak_rss_bytes"] = rss
            self.status["peak_rss_gb"] = round(rss / procutil.GB, 3)
        return rss

    def measure_scratch(self, record: dict) -> int:
        """The disk the attempt's directories use now (``du -s``, the reserve left out), kept in
        ``record`` (a stage's) and in the status as the last and the peak use."""
        roots = [self.work_dir]
        download = self.spec["download_dir"]
        if not (download + os.sep).startswith(self.work_dir + os.sep):
            roots.append(download)
        used = sum(disk_usage(root, skip=(self.path(RESERVE_NAME),)) for root in roots)
        record["scratch_bytes"] = used
        self.status["scratch_bytes"] = used
        if used > self.status["peak_scratch_bytes"]:
            self.status["peak_scratch_bytes"] = used
            self.status["peak_scratch_gb"] = round(used / procutil.GB, 3)
        return used

    def scratch_need_gb(self, stage: str) -> float:
        """The predicted scratch need of ``stage`` (download: files still missing)."""
        given = self.spec["scratch_need_gb"].get(stage)
        if given is not None:
            return float(given)
        if stage != "download":
            return 0.0
        missing = 0
        for item in self.spec["files"]:
            dest = os.path.join(self.spec["download_dir"], item["name"])
            have = os.path.getsize(dest) if os.path.exists(dest) else 0
            missing += max(0, int(item.get("size") or 0) - have)
        return missing / procutil.GB

    # -- signals
    def on_stop_signal(self, signum, frame) -> None:
        self.stop_signal = signum

    # -- the stages
    def run(self) -> int:
        """Run every stage; the runner's exit code."""
        try:
            self.hold_reserve()
            os.makedirs(self.spec["download_dir"], exist_ok=True)
            procutil.write_json_atomic(self.path("recipe_params.json"), recipe_params(self.spec))
        except OSError as exc:
            if exc.errno not in FULL_ERRNOS:
                raise
            self.release_reserve()
            line = "ari-runner: refused: scratch is full (%s) — free space in %s" % (
                exc.strerror, self.spec["scratch_dir"])
            self.log(line)
            return self.finish("failed", EXIT_FAILED, "disk_full", line)
        self.log("ari-runner: attempt %s of %s started at %s, pid %d, stages %s" % (
            self.spec["attempt_id"], self.spec["uid"], utc_now(), os.getpid(), ",".join(self.spec["stages"])))
        self.write_status()
        for stage in self.spec["stages"]:
            code = self.run_stage(stage)
            if code is not None:
                return code
        return self.finish("succeeded", EXIT_OK)

    def run_stage(self, stage: str):
        """Run one stage; None if it succeeded, else the runner's exit code."""
        self.status["stage"] = stage
        record = {"state": "running", "started_at": time.time(), "ended_at": None, "exit_code": None}
        self.status["stages"][stage] = record
        need = self.scratch_need_gb(stage)
        free = procutil.free_bytes(self.spec["scratch_dir"])
        if need > 0 and free < need * procutil.GB:
            line = refused_line(free, stage, need)
            self.log(line, stage)
            record.update(state="refused", ended_at=time.time())
            self.measure_scratch(record)
            return self.finish("failed", EXIT_FAILED, "disk_full", line)
        if self.stop_signal is not None:
            return self.stopped(stage, record)
        failure_file = self.path("%s.failure.json" % stage)
        for stale in (failure_file, self.path("%s.result.json" % stage)):
            if os.path.exists(stale):
                os.remove(stale)
        self.log("ari-runner: stage %s started at %s" % (stage, utc_now()), stage)
        self.write_status()
        outcome = self.watch(stage, stage_command(self.spec, stage, self.spec_path))
        record["ended_at"] = time.time()
        record["exit_code"] = outcome.get("exit_code")
        self.measure_scratch(record)  # once per stage: a walk of a large tree is not done every poll
        if outcome["kind"] == "ok":
            record["state"] = "succeeded"
            record.update(stage_result(self.path("%s.result.json" % stage)))
            self.log("ari-runner: stage %s succeeded at %s in %.1f s" % (
                stage, utc_now(), record["ended_at"] - record["started_at"]), stage)
            self.write_status()
            return None
        record["state"] = "failed"
        if outcome["kind"] == "memory":
            line = memory_line(self.spec["mem_gb"], outcome["rss"])
            self.log(line, stage)
            return self.finish("failed", EXIT_FAILED, "memory", line)
        if outcome["kind"] == "walltime":
            line = walltime_line(self.spec["walltime_h"])
            self.log(line, stage)
            return self.finish("failed", EXIT_FAILED, "walltime", line)
        if outcome["kind"] == "signal":
            return self.stopped(stage, record)
        if outcome["kind"] == "disk_full" or self.scratch_full():
            line = "ari-runner: stage %s failed: category=disk_full: scratch %s is full (%s)" % (
                stage, self.spec["scratch_dir"], self.disk_full or "%s bytes free" % procutil.free_bytes(
                    self.spec["scratch_dir"]))
            self.release_reserve()
            self.log(line, stage)
            return self.finish("failed", EXIT_FAILED, "disk_full", line)
        category, message = stage_failure(stage, outcome["exit_code"], failure_file)
        if outcome.get("error"):
            message = outcome["error"]
        line = failed_line(stage, category, message)
        self.log(line, stage)
        return self.finish("failed", EXIT_FAILED, category if category != "unknown" else None, one_line(message))

    def stopped(self, stage: str, record: dict) -> int:
        """SIGTERM/SIGINT: walltime if the limit is near, else cancelled."""
        record["state"] = "cancelled"
        record["ended_at"] = record.get("ended_at") or time.time()
        if self.walltime_near():
            line = walltime_line(self.spec["walltime_h"])
            self.log(line, stage)
            return self.finish("failed", EXIT_FAILED, "walltime", line)
        line = "ari-runner: cancelled: %s during stage %s" % (signal_name(self.stop_signal), stage)
        self.log(line, stage)
        return self.finish("cancelled", EXIT_CANCELLED, None, line)

    def watch(self, stage: str, argv: list) -> dict:
        """Start ``argv`` with its output in the stage log and watch it until it ends.

        Returns ``{"kind": "ok" | "exit" | "memory" | "walltime" | "signal", ...}``.
        """
        env = dict(os.environ)
        env.update(self.spec["env"])
        env.update(ARI_STAGE=stage, ARI_WORK_DIR=self.work_dir, ARI_ATTEMPT_ID=self.spec["attempt_id"])
        with open(self.path("%s.log" % stage), "ab") as log:
            try:
                self.child = subprocess.Popen(argv, cwd=self.work_dir, env=env, stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=subprocess.STDOUT, close_fds=True)
            except OSError as exc:
                return {"kind": "exit", "exit_code": 127, "error": "cannot start %s: %s" % (argv[0], exc)}
        last_beat = 0.0
        budget = self.spec["mem_gb"]
        while True:
            code = self.child.poll()
            procutil.reap_orphans(keep=(self.child.pid,))
            rss = self.sample_memory()
            if code is not None:
                self.reap_leftovers()
                return {"kind": "ok" if code == 0 else "exit", "exit_code": code}
            if budget is not None and rss > budget * procutil.GB:
                self.kill_children()
                return {"kind": "memory", "rss": rss, "exit_code": self.child.returncode}
            if self.walltime_exceeded():
                self.kill_children()
                return {"kind": "walltime", "exit_code": self.child.returncode}
            if self.stop_signal is not None:
                self.kill_children()
                return {"kind": "signal", "exit_code": self.child.returncode}
            if time.time() - last_beat >= self.spec["heartbeat_s"]:
                self.write_status()
                last_beat = time.time()
            if self.disk_full:
                self.kill_children()
                return {"kind": "disk_full", "exit_code": self.child.returncode}
            time.sleep(self.spec["poll_s"])

    def kill_children(self) -> None:
        """Kill every descendant of the runner, then reap the direct child and any orphans."""
        procutil.kill_tree(os.getpid(), include_self=False)
        try:
            self.child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        procutil.reap_orphans(keep=(self.child.pid,))

    def reap_leftovers(self) -> None:
        """A stage is over when its process is: kill what it left behind (orphans included)."""
        procutil.reap_orphans(keep=(self.child.pid,))
        if [p for p in procutil.descendants(os.getpid()) if procutil.alive(p)]:
            procutil.kill_tree(os.getpid(), grace_s=1.0, include_self=False)
            procutil.reap_orphans(keep=(self.child.pid,))


def hold_reserve(path: str, size: int) -> None:
    """Make ``path`` a file of ``size`` real bytes (kept if it already is); OSError (ENOSPC) if the disk is full."""
    if size <= 0 or (os.path.isfile(path) and os.path.getsize(path) >= size):
        return
    with open(path, "wb") as fh:
        chunk = b"\0" * min(size, 1 << 16)
        left = size
        while left > 0:
            fh.write(chunk[:left])
            left -= len(chunk)
        fh.flush()
        os.fsync(fh.fileno())


def disk_usage(root: str, skip=()) -> int:
    """Bytes of disk the files under ``root`` take (``du -s``: allocated blocks, each inode once,
    symlinks not followed, paths in ``skip`` left out); 0 when ``root`` is missing.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "a"), "wb") as fh:
    ...     _ = fh.write(b"x" * 100000)
    >>> 100000 <= disk_usage(d) < 200000, disk_usage(os.path.join(d, "missing"))
    (True, 0)
    """
    total, seen = 0, set()
    for top, dirs, files in os.walk(root, onerror=lambda exc: None):
        for name in files + dirs:
            path = os.path.join(top, name)
            if path in skip:
                continue
            try:
                st = os.lstat(path)
            except OSError:  # removed while walking
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


def stage_result(path: str) -> dict:
    """Extra per-stage facts a stage child wrote (e.g. files_fetched), or {}."""
    doc = procutil.read_json(path, {})
    return doc if isinstance(doc, dict) else {}


def stage_failure(stage: str, exit_code, failure_file: str):
    """(category, message) for a stage child that exited non-zero.

    The recipe's own report wins; a download child's failure is always
    ``download``; otherwise the category is ``unknown`` and triage reads the log.
    """
    doc = procutil.read_json(failure_file, None)
    if isinstance(doc, dict) and doc.get("message"):
        category = doc.get("category") if doc.get("category") in KNOWN_CATEGORIES else "unknown"
        if stage == "download":
            category = "download"
        return category, doc["message"]
    if exit_code is not None and exit_code < 0:
        message = "stage process killed by %s" % signal_name(-exit_code)
    else:
        message = "stage process exited with code %s" % exit_code
    return ("download" if stage == "download" else "unknown"), message


# ------------------------------------------------------------- download

def download_fetch():
    """The downloader: ``remote.download.fetch`` (or its ``download``) if installed, else the built-in one."""
    try:
        from remote import download as module  # noqa: PLC0415
    except (ImportError, SyntaxError):  # missing, or too new for this python3
        return builtin_fetch
    return getattr(module, "fetch", None) or getattr(module, "download", None) or builtin_fetch


def call_fetch(fetch, item: dict, dest: str, spec: dict, log) -> None:
    """Call ``fetch(url, dest, sha256=..., log=...)`` with the spec's retry settings where it takes them."""
    kwargs = {"sha256": item.get("sha256"), "log": log}
    try:
        accepted = inspect.signature(fetch).parameters
    except (TypeError, ValueError):
        accepted = {}
    if spec.get("download_attempts") and "attempts" in accepted:
        kwargs["attempts"] = int(spec["download_attempts"])
    if spec.get("download_backoff_s") is not None and "backoff_base" in accepted:
        kwargs["backoff_base"] = float(spec["download_backoff_s"])
    if item.get("size") is not None and "size" in accepted:
        kwargs["size"] = int(item["size"])
    fetch(item["url"], dest, **kwargs)


def builtin_fetch(url: str, dest: str, sha256=None, log=print) -> str:
    """Fetch ``url`` to ``dest`` (via ``dest.part``, 3 tries), verify sha256; the path.

    A fallback for nodes without ``remote/download.py``: no resume, short backoff.
    """
    import urllib.request  # noqa: PLC0415

    part = dest + ".part"
    last = None
    for attempt in range(3):
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
                while True:
                    block = resp.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
            if sha256 and procutil.sha256_file(part) != sha256:
                raise IOError("sha256 mismatch for %s" % url)
            os.replace(part, dest)
            return dest
        except (OSError, IOError) as exc:
            last = exc
            log("ari-runner: fetch %s failed (try %d): %s" % (url, attempt + 1, exc))
            time.sleep(2 ** attempt)
    raise IOError("download of %s failed after 3 tries: %s" % (url, last))


def file_is_complete(dest: str, item: dict) -> bool:
    """True if ``dest`` exists with the expected size and sha256 (when given)."""
    if not os.path.isfile(dest):
        return False
    if item.get("size") is not None and os.path.getsize(dest) != int(item["size"]):
        return False
    if item.get("sha256"):
        return procutil.sha256_file(dest) == item["sha256"]
    return item.get("size") is not None


def download_main(spec_path: str) -> int:
    """The download stage (a child of the runner): fetch what is missing, verify, skip the rest."""
    spec = load_spec(spec_path)
    fetch = download_fetch()
    fetched = skipped = 0

    def say(text):
        print(text, flush=True)

    try:
        for item in spec["files"]:
            dest = os.path.join(spec["download_dir"], item["name"])
            if file_is_complete(dest, item):
                say("ari-runner: %s already downloaded, sha256 ok — skipped" % item["name"])
                skipped += 1
                continue
            say("ari-runner: fetching %s -> %s" % (item["url"], dest))
            call_fetch(fetch, item, dest, spec, say)
            if item.get("sha256") and procutil.sha256_file(dest) != item["sha256"]:
                raise IOError("%s: sha256 mismatch after download" % item["name"])
            fetched += 1
    except Exception as exc:  # any failure here is a download failure
        traceback.print_exc()
        procutil.write_json_atomic(os.path.join(spec["work_dir"], "download.failure.json"),
                                   {"category": "download", "message": "%s: %s" % (type(exc).__name__, exc)})
        return EXIT_FAILED
    procutil.write_json_atomic(os.path.join(spec["work_dir"], "download.result.json"),
                               {"files_fetched": fetched, "files_skipped": skipped})
    say("ari-runner: download done: %d fetched, %d already present" % (fetched, skipped))
    return EXIT_OK


# ------------------------------------------------------------------ main

def detach(spec_path: str) -> int:
    """Start the runner in a new session (setsid), stdio to runner.out, and print its pid."""
    spec = load_spec(spec_path)
    os.makedirs(spec["work_dir"], exist_ok=True)
    try:  # hold the reserve before the runner starts: a launch onto a full disk fails now, visibly
        hold_reserve(os.path.join(spec["work_dir"], RESERVE_NAME), spec["reserve_bytes"])
    except OSError as exc:
        try:
            os.remove(os.path.join(spec["work_dir"], RESERVE_NAME))
        except OSError:
            pass
        print("ari-runner: disk_full: cannot hold %d bytes of scratch in %s (%s) — free space there"
              % (spec["reserve_bytes"], spec["work_dir"], exc.strerror), file=sys.stderr)
        return EXIT_FAILED
    out = open(os.path.join(spec["work_dir"], "runner.out"), "ab")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), os.path.abspath(spec_path)],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True, close_fds=True, cwd=spec["work_dir"])
    print(proc.pid)
    return EXIT_OK


def run_main(spec_path: str) -> int:
    """Run the attempt in the foreground (what ``--detach`` starts)."""
    spec = load_spec(spec_path)
    os.makedirs(spec["work_dir"], exist_ok=True)
    lock = open(os.path.join(spec["work_dir"], "runner.lock"), "a")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print("ari-runner: %s: another runner is active on this work dir — wait for it or kill it"
              % spec["work_dir"], file=sys.stderr)
        return EXIT_USAGE
    attempt = Attempt(spec, os.path.abspath(spec_path))
    procutil.become_subreaper()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, attempt.on_stop_signal)
    signal.signal(signal.SIGINT, attempt.on_stop_signal)
    try:
        return attempt.run()
    except Exception as exc:  # our own bug: record it, never leave "running" behind
        attempt.log("ari-runner: internal error: %s" % one_line(traceback.format_exc()))
        if attempt.child is not None:
            attempt.kill_children()
        return attempt.finish("failed", EXIT_FAILED, None, "runner internal error: %s" % exc)


def main(argv: list) -> int:
    usage = "usage: runner.py [--detach] SPEC.json"
    args = list(argv)
    try:
        if len(args) == 2 and args[0] == "--download":
            return download_main(args[1])
        if len(args) == 2 and args[0] == "--detach":
            return detach(args[1])
        if len(args) == 1 and not args[0].startswith("-"):
            return run_main(args[0])
    except SpecError as exc:
        print("ari-runner: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    print(usage, file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

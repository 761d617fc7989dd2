"""The campaign loop: schedule -> launch -> watch -> record -> retry, and survive restarts.

One engine runs per campaign (``engine.lock`` in the work dir, flock'ed; a
second one is refused naming the holder). Each :meth:`Engine.tick` is one
cheap round:

1. probe nodes that are due (load, memory, scratch; failures mark them stale);
2. poll every active attempt, node by node (a few remote commands per node),
   mirror new log bytes into ``<work_dir>/logs/<uid>/a-<id>/`` (offsets kept in
   SQLite, so a restart continues where the last engine stopped) and record
   state and stage changes;
3. finish attempts that ended: fetch and verify products, compare with QA2 and
   accept; or triage the logs and let the retry policy decide;
4. place queued data sets into free slots (``scheduler.place``) and launch.

All state is in the store, so killing the engine (even ``kill -9``) and
starting another re-attaches every running attempt: nothing is launched twice
(the store refuses a second active attempt of a data set) and nothing is lost.
The retry and drain policies are pure functions at the bottom of this module.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Callable

from . import collector, scheduler, store, triage
from .alma import uid_filename
from .config import Config, Node
from .casa_install import casa_install_key
from .errors import UserError
from .formatting import duration_text, gb_text
from .nodes import NodeUnreachable, connect, ops
from .nodes.batch import BATCH_SYSTEMS, JobState, SpecRejected
from .readmodel import (attention, attention_line, history, hours_run, learned_factors, node_states, review_text,
                        scheduler_queue, stale_probe_s)

LOG_NAMES = ("runner.log", "download.log", "restore.log", "image.log", "export.log")
PROBE_INTERVAL_S = 60.0
NODE_LOST_AFTER_S = 600.0
# A runner whose heartbeat has not moved for this long (console clock, so node clock skew does not matter)
# while its node answers is hung or stopped: its attempt is lost (node_lost) and the job is cancelled.
STALE_HEARTBEAT_S = 900.0
LOG_CHUNK = 4 << 20
# A launch failing this many times in a row on one node drains it (an operator's `ari nodes undrain` resets it).
LAUNCH_FAILURES_DRAIN = 3
BACKUP_INTERVAL_S = 900.0
REFIT_GROWTH = 1.25
"""The engine refits predictions (and plans again) when the attempts ended have grown by this factor."""
PIPELINE_CATEGORIES = ("calibration", "importdata", "makeimlist", "findcont", "uvcontfit", "imaging", "export")
NODE_CATEGORIES = ("node_lost", "disk_full", "download")


class EngineLocked(UserError):
    """Another engine runs this campaign."""


@dataclass
class TickReport:
    """What one tick did (for progress lines and the TUI)."""

    launched: list[tuple[str, str]] = field(default_factory=list)   # (uid, node)
    finished: list[tuple[str, str, str | None]] = field(default_factory=list)  # (uid, state, category)
    polled: int = 0
    probed: int = 0
    errors: list[str] = field(default_factory=list)
    queued: int = 0
    running: int = 0
    blocked: str | None = None  # why queued data sets cannot go anywhere until an operator acts

    @property
    def idle(self) -> bool:
        """Nothing running, and nothing queued that could run without an operator: nothing left to do."""
        return self.running == 0 and (self.queued == 0 or self.blocked is not None)


# -- the lock ------------------------------------------------------------------------

def acquire_lock(path: Path, now: float):
    """An open, flock'ed lock file naming this process; EngineLocked naming the holder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")
    except OSError as exc:
        raise UserError(f"{path}: cannot write the engine's lock file ({exc.strerror}) — the engine needs a "
                        f"writable campaign directory; check the mount (`findmnt -T {path.parent}`)") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        try:
            holder = json.loads(fh.read() or "{}")
        except json.JSONDecodeError:
            holder = {}
        fh.close()
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        raise EngineLocked(f"{path.parent}: the campaign engine already runs ({who}) — stop it first "
                           f"(kill {holder.get('pid', 'PID')}), or watch it with `ari status`") from None
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now}))
    fh.flush()
    return fh


def lock_holder(path: Path) -> dict | None:
    """Who holds the engine lock at ``path`` (``{pid, host, since}``), or None when no engine runs.

    Looks without taking the lock for longer than the look (a shared lock, dropped at once), so
    a watcher (``ari tui`` without ``--engine``) can ask at every refresh.
    """
    try:
        fh = open(path)
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(fh.read() or "{}")
            except json.JSONDecodeError:
                holder = {}
            return holder if isinstance(holder, dict) else {}
        except OSError:
            return None
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


# -- the engine ----------------------------------------------------------------------

class Engine:
    """Runs one campaign: ``tick()`` repeatedly, or ``run()`` until stopped or idle."""

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time,
                 progress: Callable[[str], None] | None = None, policy: str = scheduler.DEFAULT_POLICY,
                 resolve_files: Callable[[dict], list[dict]] | None = None,
                 qa2_dir: Callable[[dict], Path | None] | None = None,
                 adjust_spec: Callable[[dict, Node, dict], dict] | None = None,
                 node_lost_after_s: float = NODE_LOST_AFTER_S, stale_heartbeat_s: float = STALE_HEARTBEAT_S) -> None:
        self.cfg = cfg
        self.node_lost_after_s = node_lost_after_s  # an unreachable node's attempts are lost after this long
        self.stale_heartbeat_s = stale_heartbeat_s  # a heartbeat that has not moved this long: the runner hung
        self.clock = clock
        self.progress = progress or (lambda msg: None)
        self.policy = policy
        self.resolve_files = resolve_files or dataset_files
        self.qa2_dir = qa2_dir or archive_qa2_dir(cfg.campaign.work_dir)
        self.adjust_spec = adjust_spec or (lambda spec, node, ds: spec)
        self.work = cfg.campaign.work_dir
        self._lock = acquire_lock(self.work / "engine.lock", clock())
        try:
            self.db = store.open_db(cfg.campaign.db_path)
            store.verify(self.db)
            if self.db.readonly:
                raise store.db_error(cfg.campaign.db_path, store.sqlite3.OperationalError("readonly database"))
        except UserError:
            self._lock.close()
            raise
        store.sync_nodes(self.db, cfg.nodes, clock())
        self.nodes: dict[str, Node] = {n.name: n for n in cfg.nodes}
        self.transports = {n.name: connect(n) for n in cfg.nodes}
        self.prepared: set[str] = set()
        self.last_probe: dict[str, float] = {}
        self.unreachable_since: dict[str, float] = {}
        self.heartbeats: dict[int, tuple[float, float]] = {}  # attempt id -> (heartbeat_at, when it last moved)
        self.launch_backoff: dict[str, tuple[float, int]] = {}  # node -> (no launch before, launch failures in a row)
        self.plan: scheduler.Plan | None = None  # kept between ticks (see _schedule)
        self._plan_queue: dict[str, scheduler.DataSet] = {}
        self._plan_model: scheduler.Model | None = None
        self._plan_signature: tuple | None = None
        self._plan_until = float("inf")  # a data set's not_before passes: plan again
        self._queue_rev: int | None = None  # the store's revision the kept queue was read at
        self._predicted: dict[str, scheduler.Prediction] = {}  # by the model of the plan
        self._predicted_of: dict[str, scheduler.DataSet] = {}  # the data set each prediction was made of
        self._scratch: dict[str | None, float] = {}  # scratch per GB by array, learned at each refit
        self.node_faults: dict[str, str] = {}  # node -> the kind of fault the operator was last told of
        self.unconfigured_since: dict[str, float] = {}  # removed node -> when this engine first saw it
        self.scratch_short: dict[str, float] = {}  # node -> free GB when a data set's need did not fit
        self.last_backup = -1e18
        for line in store.reconcile(self.db, clock()):
            self.progress(f"reconciled: {line}")
        self._recover_interrupted_launches(clock())

    def _recover_interrupted_launches(self, now: float) -> None:
        """Attempts created by an engine that died before storing the handle: find them, or close them.

        We hold the campaign lock, so nobody else is launching: a pending attempt
        without a handle was left by a crash between the store and the node.
        """
        for a in store.active_attempts(self.db):
            if a["handle"]:
                continue
            node = self.nodes.get(a["node"])
            handle = None
            if node is not None:
                try:
                    handle = ops.find_attempt(node, self.transports[node.name], self.cfg.campaign.name,
                                              f"a-{a['id']:06d}", space=self.space)
                except (NodeUnreachable, UserError, RuntimeError) as exc:
                    self.progress(f"warning: {a['node']}: cannot look for interrupted launch {a['id']}: {exc}")
                    continue  # ask again at the next start; the attempt stays pending
            if handle:
                store.update_attempt(self.db, a["id"], now, state="running", handle=handle,
                                     work_dir=handle["work_dir"], started_at=a["created_at"])
                self.progress(f"re-attached attempt {a['id']} of {a['uid']} found on {a['node']}")
            else:
                # Nothing started (or its node left the config): not a try; the data set is queued again.
                why = "the console stopped before the job was launched" if node is not None else \
                    f"its node {a['node']} is no longer configured"
                store.undo_launch(self.db, a["id"], now, kind="launch-interrupted",
                                  reason="launch interrupted by a console stop (not counted as a try)",
                                  detail={"excerpt": why})

    @property
    def space(self) -> str:
        """This campaign's directory name on every node's scratch (campaigns can share a scratch)."""
        return ops.campaign_space(self.cfg.campaign.name, self.cfg.campaign.db_path)

    def _tell(self, node: str, message: str, now: float, report: TickReport) -> None:
        """Mark ``node`` with a fault and tell the operator once per kind of fault (not at every tick)."""
        kind = fault_kind(message)
        store.set_node_probe(self.db, node, now, error=message)
        if self.node_faults.get(node) == kind:
            return
        self.node_faults[node] = kind
        store.record_event(self.db, "node-fault", now, node=node, new=kind, detail={"error": message})
        report.errors.append(message if message.startswith((node, f'node "{node}"')) else f"{node}: {message}")

    def _healthy(self, node: str) -> None:
        self.node_faults.pop(node, None)

    def close(self) -> None:
        for t in self.transports.values():
            t.close()
        self.db.close()
        self._lock.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # one round -------------------------------------------------------------
    def tick(self, now: float | None = None) -> TickReport:
        """One round of probe, poll, finish, place and launch."""
        now = self.clock() if now is None else now
        report = TickReport()
        self._backup(now)
        self._probe(now, report)
        self._poll(now, report)
        self._schedule(now, report)
        totals = store.counts(self.db)
        report.queued, report.running = totals["queued"], totals["running"]
        if report.queued and not node_states(self.db, self.nodes.values()):
            report.blocked = (f"{report.queued} data set(s) queued but every node is drained or gone — fix the "
                              f"nodes, then `ari nodes undrain NAME` (see `ari nodes list`)")
        return report

    def run(self, stop: Callable[[], bool] = lambda: False, until_idle: bool = False,
            summary_every_s: float = 60.0) -> TickReport:
        """Tick every poll interval until ``stop()`` or, with ``until_idle``, nothing is left.

        Says which running attempts it re-attaches to, and prints a one-line summary
        (totals and what needs a person) every ``summary_every_s`` when nothing else was said.
        """
        active = store.active_attempts(self.db)
        if active:
            self.progress(f"re-attaching to {len(active)} attempt(s) left running: "
                          + ", ".join(f"{a['uid']} on {a['node']}" for a in active[:5])
                          + (", ..." if len(active) > 5 else ""))
        said_at = time.monotonic()
        while True:
            report = self.tick()
            for uid, node in report.launched:
                self.progress(f"launched {uid} on {node}")
            for uid, state, category in report.finished:
                now_state = (store.dataset(self.db, uid) or {}).get("state")
                waits = f" — held for an operator (`ari datasets show {uid}`)" if now_state == "held" else ""
                self.progress(f"{uid}: {state}" + (f" ({category})" if category else "") + waits)
            for err in report.errors:
                self.progress(f"warning: {err}")
            if report.launched or report.finished or report.errors:
                said_at = time.monotonic()
            elif time.monotonic() - said_at >= summary_every_s:
                totals = store.counts(self.db)
                att = attention(self.db, time.time(), max(600.0, 3 * self.cfg.campaign.poll_interval_s))
                self.progress(", ".join(f"{k} {v}" for k, v in totals.items() if v) + f" · {attention_line(att)}")
                said_at = time.monotonic()
            if stop() or (until_idle and report.idle):
                if report.blocked:
                    self.progress(f"stopped: {report.blocked}")
                return report
            deadline = time.monotonic() + self.cfg.campaign.poll_interval_s
            while time.monotonic() < deadline and not stop():
                time.sleep(min(0.2, self.cfg.campaign.poll_interval_s))

    def _backup(self, now: float) -> None:
        """Keep the rolling online backup of ari.db fresh (at start, then every ``BACKUP_INTERVAL_S``)."""
        if now - self.last_backup < BACKUP_INTERVAL_S:
            return
        self.last_backup = now
        try:
            store.backup(self.db)
        except (OSError, store.sqlite3.Error) as exc:
            self.progress(f"warning: backup of {self.cfg.campaign.db_path} failed: {exc}")

    # probing -----------------------------------------------------------------
    def _probe(self, now: float, report: TickReport) -> None:
        from .nodes.probe import probe

        for name, node in self.nodes.items():
            if now - self.last_probe.get(name, -1e18) < PROBE_INTERVAL_S:
                continue
            self.last_probe[name] = now
            try:
                p = probe(self.transports[name], node.scratch_dir)
                store.set_node_probe(self.db, name, now, probe=p.row())
                self.unreachable_since.pop(name, None)
                self._healthy(name)
                if p.scratch_free_gb is not None and p.scratch_free_gb > self.scratch_short.get(name, 1e18):
                    self.scratch_short.pop(name, None)  # space was freed: launches may go there again
                report.probed += 1
            except (NodeUnreachable, ValueError, UserError, RuntimeError) as exc:
                self.unreachable_since.setdefault(name, now)
                self._tell(name, str(exc), now, report)

    def _reachable(self, name: str, now: float) -> bool:
        """Whether new attempts may go to ``name`` at ``now``: it answers, and no recent launch there failed."""
        return (name not in self.unreachable_since and name not in self.scratch_short
                and now >= self.launch_backoff.get(name, (0.0, 0))[0])

    # polling -----------------------------------------------------------------
    def _poll(self, now: float, report: TickReport) -> None:
        by_node: dict[str, list[dict]] = {}
        for a in store.active_attempts(self.db):
            if a["handle"]:
                by_node.setdefault(a["node"], []).append(a)
        for name in set(self.unconfigured_since) - set(by_node):
            self.unconfigured_since.pop(name)
        for name, attempts in by_node.items():
            node = self.nodes.get(name)
            if node is None:
                self._unconfigured(name, attempts, now, report)
                continue
            transport = self.transports[name]
            try:
                states = ops.poll(node, transport, self.cfg.campaign.name, [a["handle"] for a in attempts],
                                  since=min(a["created_at"] for a in attempts))
            except (NodeUnreachable, RuntimeError, UserError, OSError, ValueError) as exc:
                # This node's problem only: marked, told once, the other nodes are polled as usual.
                self.unreachable_since.setdefault(name, now)
                self._tell(name, str(exc), now, report)
                if now - self.unreachable_since[name] >= self.node_lost_after_s:
                    for a in attempts:
                        lost = JobState(state="lost", stage=a["stage"], category="node_lost",
                                        message=f"node {name} unreachable since "
                                                f"{time.strftime('%H:%M', time.localtime(self.unreachable_since[name]))}")
                        self._finish(a, lost, now, report)
                continue
            self.unreachable_since.pop(name, None)
            self._healthy(name)
            for a in attempts:
                js = states.get(a["handle"]["work_dir"])
                if js is None:
                    continue
                report.polled += 1
                try:
                    self._mirror_logs(a, transport)
                except (NodeUnreachable, UserError, OSError) as exc:
                    self._tell(name, str(exc), now, report)
                changes = {"state": "running" if js.state in ("pending", "running") else a["state"],
                           "stage": js.stage or a["stage"], "heartbeat_at": js.heartbeat_at,
                           "peak_mem_gb": js.peak_mem_gb, "peak_scratch_gb": js.peak_scratch_gb}
                if js.state == "pending":
                    changes["state"] = "pending"
                store.update_attempt(self.db, a["id"], now, **{k: v for k, v in changes.items() if v is not None})
                if js.final:
                    self.heartbeats.pop(a["id"], None)
                    self._finish(store.attempt(self.db, a["id"]), js, now, report)
                elif js.state == "running" and self._heartbeat_stale(a["id"], js.heartbeat_at, now):
                    self._give_up_hung(a, node, transport, js, now, report)

    def _unconfigured(self, name: str, attempts: list[dict], now: float, report: TickReport) -> None:
        """Attempts on a node no longer in ari.toml: reported once, lost after the grace period."""
        since = self.unconfigured_since.setdefault(name, now)
        ids = ", ".join(str(a["id"]) for a in attempts)
        if now == since:
            report.errors.append(
                f'{name}: no longer in {self.cfg.path.name}, but attempt(s) {ids} still run there — put the node '
                f"back within {self.node_lost_after_s:g} s to watch them, or they are counted lost and their data sets "
                f"queued again")
            store.record_event(self.db, "node-fault", now, node=name, new="unconfigured", detail={"attempts": ids})
        if now - since < self.node_lost_after_s:
            return
        for a in attempts:
            lost = JobState(state="lost", stage=a["stage"], category="node_lost",
                            message=f"node {name} was removed from {self.cfg.path.name} while attempt {a['id']} "
                                    f"ran there; not watched since")
            self._finish(a, lost, now, report)
        self.unconfigured_since.pop(name, None)

    def _heartbeat_stale(self, attempt_id: int, heartbeat_at: float | None, now: float) -> bool:
        """True when the runner's heartbeat has not moved for ``stale_heartbeat_s`` of console time."""
        if heartbeat_at is None:
            return False
        seen = self.heartbeats.get(attempt_id)
        if seen is None or seen[0] != heartbeat_at:
            self.heartbeats[attempt_id] = (heartbeat_at, now)
            return False
        return now - seen[1] >= self.stale_heartbeat_s

    def _give_up_hung(self, a: dict, node: Node, transport, js: JobState, now: float, report: TickReport) -> None:
        """A runner alive on an answering node but silent: cancel its job and record the attempt lost."""
        silent_min = (now - self.heartbeats.pop(a["id"])[1]) / 60
        try:
            ops.cancel(node, transport, a["handle"], force=True)
        except (NodeUnreachable, RuntimeError, UserError) as exc:
            report.errors.append(f"{node.name}: could not cancel hung attempt {a['id']}: {exc}")
        lost = JobState(state="lost", stage=js.stage or a["stage"], category="node_lost",
                        message=f"heartbeat lost: the runner on {node.name} has been silent for "
                                f"{duration_text(silent_min * 60)} (hung or stopped); its job was killed")
        self._finish(store.attempt(self.db, a["id"]), lost, now, report)

    def mirror_dir(self, a: dict) -> Path:
        return self.work / "logs" / uid_filename(a["uid"]) / f"a-{a['id']:06d}"

    def _mirror_logs(self, a: dict, transport) -> None:
        """Append each log's new bytes to its local mirror; offsets advance only after the write."""
        offsets = store.log_offsets(self.db, a["id"])
        mirror = self.mirror_dir(a)
        names = list(LOG_NAMES)
        handle = a["handle"]
        system = BATCH_SYSTEMS.get(handle.get("batch"))
        output = system.output_file(handle) if system is not None else None
        if output:
            names.append(output)
        for name in names:
            path = f"{handle['work_dir']}/{name}"
            offset = offsets.get(path, 0)
            while True:
                # a log truncated or rotated on the node comes again from 0: the mirror follows it
                start, data = ops.follow(transport, path, offset, LOG_CHUNK)
                if not data and start == offset:
                    break
                mirror.mkdir(parents=True, exist_ok=True)
                local = mirror / name
                with open(local, "r+b" if local.exists() else "wb") as fh:
                    fh.seek(start)
                    fh.write(data)
                    fh.truncate()
                offset = start + len(data)
                store.set_log_offset(self.db, a["id"], path, offset, str(local))
                if len(data) < LOG_CHUNK:
                    break

    # finishing ---------------------------------------------------------------
    def _finish(self, a: dict, js: JobState, now: float, report: TickReport) -> None:
        ds = store.dataset(self.db, a["uid"])
        if js.state == "succeeded":
            try:
                self._deliver(a, ds, now, js)
            except (NodeUnreachable, UserError) as exc:
                # The node cannot be asked now (down, host key changed): fetch at a later tick.
                self._tell(a["node"], str(exc), now, report)
                return
            except (OSError, ValueError) as exc:
                js = JobState(state="failed", stage="export", category="export",
                              message=f"products could not be fetched: {exc}", status=js.status)
            else:
                report.finished.append((a["uid"], "succeeded", None))
                return
        verdict = self._triage(a, js)
        tries = len(store.attempts(self.db, uid=a["uid"]))
        decision = retry_decision(verdict.category, tries, self.cfg.campaign.max_attempts,
                                  a.get("mem_gb") or self._node_value(a["node"], "mem_gb"),
                                  a.get("walltime_h") or self._node_value(a["node"], "walltime_h"),
                                  peak_mem_gb=js.peak_mem_gb, cancelled=js.state == "cancelled", now=now,
                                  backoff_s=self.cfg.campaign.retry_backoff_s)
        with store.decision(self.db, "finish"):  # the attempt's end, the retry policy's answer: at once
            store.update_attempt(self.db, a["id"], now, state=js.state if js.state != "succeeded" else "failed",
                                 ended_at=js.ended_at or now, exit_code=js.exit_code, category=verdict.category,
                                 signature=verdict.signature, decisive_line=verdict.line,
                                 excerpt=verdict.excerpt, status=js.status, stage=js.stage or verdict.stage,
                                 triage_rules=triage.rules_version())
            if decision.overrides:
                store.set_overrides(self.db, a["uid"], now, **decision.overrides)
            store.set_dataset_state(self.db, a["uid"], decision.state, now, reason=decision.reason)
            store.record_event(self.db, "retry-policy", now, uid=a["uid"], attempt_id=a["id"],
                               new=decision.state, detail={"category": verdict.category, "reason": decision.reason})
        if verdict.category == "disk_full":
            free = ((store.node_row(self.db, a["node"]) or {}).get("probe") or {}).get("scratch_free_gb")
            self.scratch_short[a["node"]] = free or 0.0
            self._tell(a["node"], f"scratch {self._node_value(a['node'], 'scratch_dir')} is full "
                                  f"(attempt {a['id']} of {a['uid']}): no launch there until space is freed",
                       now, report)
        report.finished.append((a["uid"], js.state, verdict.category))
        self._maybe_drain(now)

    def _node_value(self, name: str, key: str):
        node = self.nodes.get(name)
        return getattr(node, key) if node else None

    def _triage(self, a: dict, js: JobState) -> triage.Verdict:
        """Classify the attempt's mirrored logs, with the runner's or batch system's category as a hint."""
        logs = []
        for m in store.log_mirrors(self.db, a["id"]):
            path = Path(m["mirror"])
            if path.exists():
                logs.append((path.name, _lines(path)))
        if js.message:
            logs.append(("status", [f"ari-runner: {js.message}"]))
        verdict = triage.classify_many(logs, hint=js.category) if logs else None
        if verdict is not None and not verdict.excerpt and js.message:
            verdict.excerpt = js.message  # the console's own finding (node lost, removed, silent) is the excerpt
        if verdict is None or verdict.category == "unknown":
            if js.category:
                return triage.Verdict(category=js.category, stage=js.stage, line=None,
                                      excerpt=js.message or "", evidence=[], signature=js.category)
        return verdict or triage.Verdict(category="unknown", stage=js.stage, line=None,
                                         excerpt=js.message or "", evidence=[], signature="unknown")

    def _deliver(self, a: dict, ds: dict, now: float, js: JobState | None = None) -> None:
        """Fetch the products named in the manifest, verify their checksums, compare with QA2, accept.

        The fetching happens first; what it decides (products, QA2 verdict, the
        accepted attempt, the attempt's success) is written as one decision.
        """
        transport = self.transports[a["node"]]
        work_dir = a["handle"]["work_dir"]
        manifest = json.loads(transport.read_file(f"{work_dir}/products/manifest.json"))
        dest = self.work / "products" / uid_filename(a["uid"]) / f"a-{a['id']:06d}"
        fetched = []
        for item in manifest.get("products", []):
            name = product_name(item)
            local = dest / Path(name).name
            transport.get(f"{work_dir}/products/{name}", local)
            digest = _sha256(local)
            if item.get("sha256") and digest != item["sha256"]:
                raise ValueError(f"{name}: checksum mismatch after fetch ({digest[:12]} != {item['sha256'][:12]})")
            fetched.append({"path": str(local), "kind": item.get("kind"), "sha256": digest,
                            "size": local.stat().st_size})
        (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
        pairs, qa2_error, qa2_rules, problem = None, None, None, None
        try:
            qa2 = self.qa2_dir(ds)
            if qa2 is None:
                problem = "no QA2 products to compare: unverifiable"
            else:
                from .qa2 import compare_dirs
                from .qa2.compare import rules_version

                pairs = compare_dirs(dest, qa2).as_dict()["pairs"]
                qa2_rules = rules_version()
                problem = qa2_problem(pairs)
        except Exception as exc:  # QA2 images missing or unreadable: no verdict, an operator decides
            qa2_error = f"{type(exc).__name__}: {exc}"
            problem = f"QA2 comparison failed ({qa2_error}): unverifiable"
        uncalibrated = skips_calibration(ds)
        if uncalibrated:
            problem = "; ".join(p for p in ("uncalibrated: an override skipped calibration (caltables=[])", problem)
                                if p)
        with store.decision(self.db, "deliver"):
            store.add_products(self.db, a["id"], a["uid"], fetched)
            if pairs is not None:
                store.save_qa2(self.db, a["uid"], a["id"], pairs, rules_version=qa2_rules)
            if qa2_error:
                store.record_event(self.db, "qa2-unavailable", now, uid=a["uid"], attempt_id=a["id"],
                                   detail={"error": qa2_error})
            if problem:
                store.send_to_review(self.db, a["uid"], a["id"], now, problem, uncalibrated=uncalibrated)
            else:
                store.accept_attempt(self.db, a["uid"], a["id"], now)
            if js is not None:
                store.update_attempt(self.db, a["id"], now, state="succeeded", ended_at=js.ended_at or now,
                                     exit_code=js.exit_code, status=js.status)
        if self.cfg.campaign.clean_scratch:
            try:
                ops.clean_work_dir(transport, work_dir)
            except (NodeUnreachable, RuntimeError, UserError) as exc:  # scratch left as it is: say so, deliver anyway
                store.record_event(self.db, "clean-failed", now, uid=a["uid"], attempt_id=a["id"],
                                   detail={"error": str(exc)})

    def _maybe_drain(self, now: float) -> None:
        recent: dict[str, list[str | None]] = {}
        for a in store.attempts(self.db, states=("succeeded", "failed", "lost")):
            recent.setdefault(a["node"], []).append(a["category"] if a["state"] != "succeeded" else None)
        drained = {n["name"] for n in store.nodes(self.db) if n["drained"]}
        for name, reason in nodes_to_drain(recent).items():
            if name not in drained:
                store.set_drained(self.db, name, True, now, reason)
                self.progress(f"drained node {name}: {reason}")

    # scheduling --------------------------------------------------------------
    def _schedule(self, now: float, report: TickReport) -> None:
        """Launch into free slots from a plan kept between ticks.

        The queue is read, the history fitted and the whole queue planned only
        when the queue changed other than by this engine's launches (an import,
        a retry, an operator's edit), when an attempt ended (refit every
        ``REFIT_GROWTH``-fold growth of the history), or when a data set's
        ``not_before`` passed; otherwise a tick with a free slot only checks
        the store's :func:`~.store.queue_signature` and takes the plan's next pairs.
        """
        states = node_states(self.db, self.nodes.values(), usable=lambda name: self._reachable(name, now))
        if not any(s.free for s in states):
            return  # every slot busy: the queue need not even be read
        signature = store.queue_signature(self.db)
        with collector.paused() as paused:  # a re-plan makes ~10 objects per data set: no collections meanwhile
            if (self.plan is None or self._plan_model is None or now >= self._plan_until
                    or signature[:2] != self._plan_signature[:2] or signature[2] >= self._plan_signature[2]):
                self._read_queue(signature, now)
            if not self._plan_queue:
                return
            replan = scheduler.needs_plan(len(self._plan_queue), states, self.policy, self.plan)
            if replan:  # a new plan counts each running attempt's slot busy for the hours it is expected to take yet
                states = self._running_left(states, now)
            placement = scheduler.place(self._plan_queue.values(), states, now / 3600.0, policy=self.policy,
                                        history=self._plan_model, plan=self.plan,
                                        predictions=self._predictions() if replan else None)
            paused.keep = replan  # the new plan's objects: out of the collector's passes (see collector.paused)
        self.plan = placement.plan
        for bad in placement.unplaceable:
            if self._plan_queue.pop(bad.dataset.uid, None) is not None:
                with store.decision(self.db, "hold"):
                    store.set_dataset_state(self.db, bad.dataset.uid, "held", now,
                                            reason=f"fits no node: {bad.reason}")
        for sds, nstate in placement.pairs:
            self._plan_queue.pop(sds.uid, None)
            if not self._launch(store.dataset(self.db, sds.uid), self.nodes[nstate.name], sds, now, report):
                self._plan_until = now  # not launched (queued again, or waiting for scratch): plan again next tick
        # our own launches and holds changed the queue: that is no reason to plan again
        count, latest, _ = store.queue_signature(self.db)
        self._plan_signature = (count, latest, self._plan_signature[2])

    def _running_left(self, states: list[scheduler.NodeState], now: float) -> list[scheduler.NodeState]:
        """``states`` with their running attempts' expected hours left (:func:`~.scheduler.running_left`, from
        the current model and how long each has run), as the replay gives a plan: never "free at once"."""
        active = store.active_attempts(self.db)
        if not active:
            return states
        rows = [store.dataset(self.db, uid) for uid in dict.fromkeys(a["uid"] for a in active)]
        running = scheduler_queue(self.db, [ds for ds in rows if ds is not None], self._scratch)
        preds = scheduler.predict_all(running, self._plan_model) if running else {}
        hours = self._plan_model.hours if self._plan_model is not None else None
        return scheduler.running_left(states, [(preds[a["uid"]], a["node"], hours_run(a, now))
                                               for a in active if a["uid"] in preds],
                                      hours.pool if hours is not None else ())

    def _predictions(self) -> dict[str, scheduler.Prediction]:
        """The current model's predictions for the planned queue, each made once.

        A re-plan (a node drained, an import, an operator's edit) predicts only the
        data sets that are new or changed since the model was fitted; a refit empties this.
        """
        known, of = self._predicted, self._predicted_of
        if not known:  # after a refit every one is new: predicted in queue order, kept as they come
            made = scheduler.predict_all(self._plan_queue.values(), self._plan_model)
            self._predicted, self._predicted_of = made, dict(self._plan_queue)  # (copies in C: no pair per data set)
            return dict(made)
        fresh = [sds for uid, sds in self._plan_queue.items()
                 if (was := of.get(uid)) is not sds and (was is None or was != sds)]
        if fresh:
            known.update(scheduler.predict_all(fresh, self._plan_model))
            of.update(zip(map(attrgetter("uid"), fresh), fresh))
        if len(known) > 2 * len(self._plan_queue) + 1000:  # launched and gone: forget them now and then
            self._predicted = known = {uid: known[uid] for uid in self._plan_queue}
            self._predicted_of = {uid: of[uid] for uid in self._plan_queue}
        return {uid: known[uid] for uid in self._plan_queue}

    def _read_queue(self, signature: tuple, now: float) -> None:
        """Read the queue and history, refit, and drop the plan (the next place() makes one).

        The queue is read whole at first and when a ``not_before`` passed or a
        launch did not happen; otherwise only the data sets written since the
        last read (an import, a retry, an operator's edit) update the queue kept.
        """
        whole = self._queue_rev is None or now >= self._plan_until
        if whole:
            self._queue_rev, rows = store.queue_changes(self.db, -1)
            self._plan_queue, self._plan_until = {}, float("inf")
        else:
            self._queue_rev, rows = store.queue_changes(self.db, self._queue_rev)
        waiting = []
        for ds in rows:
            self._plan_queue.pop(ds["uid"], None)
            if ds["state"] != "queued":
                continue
            if ds["array"] == "TP":
                store.set_dataset_state(self.db, ds["uid"], "skipped", now,
                                        reason="total power: this console images interferometric data only")
                continue
            not_before = ds["overrides"].get("not_before")
            if not_before and not_before > now:
                self._plan_until = min(self._plan_until, not_before)
                continue
            waiting.append(ds)
        ended = signature[2]
        if self._plan_model is None or ended >= self._plan_signature[2]:
            hist = history(self.db, self.nodes)
            self._plan_model = scheduler.fit_history(hist)
            self._predicted, self._predicted_of = {}, {}
            self._learn_scratch(scheduler.scratch_factors(hist))
            ended = max(ended + 1, math.ceil(ended * REFIT_GROWTH))  # refit when the history has grown so much
        else:
            ended = self._plan_signature[2]
        self._plan_queue.update((sds.uid, sds) for sds in scheduler_queue(self.db, waiting, self._scratch))
        count, latest, _ = store.queue_signature(self.db)
        self._plan_signature = (count, latest, ended)
        self.plan = None

    def _learn_scratch(self, factors: dict[str | None, float]) -> None:
        """Keep the scratch factors finished attempts taught; the data sets kept from earlier reads
        whose factor moved are remade with it (the rest of the queue needs what they showed)."""
        if factors == self._scratch:
            return
        self._scratch = factors
        by_array = learned_factors(factors, {sds.array for sds in self._plan_queue.values()})
        for uid, sds in self._plan_queue.items():
            if sds.scratch_per_gb != by_array[sds.array]:
                self._plan_queue[uid] = sds.with_scratch_per_gb(by_array[sds.array])

    def _launch(self, ds: dict, node: Node, sds: scheduler.DataSet, now: float, report: TickReport) -> bool:
        """Launch ``ds`` on ``node``; True when its job started."""
        transport = self.transports[node.name]
        overrides = ds["overrides"]
        # Overrides are what a node must offer (placement saw to it); an attempt gets the node's slot.
        mem_gb, walltime_h = node.mem_gb, node.walltime_h
        short = self._scratch_shortfall(node, sds)
        if short is not None:
            self.scratch_short[node.name] = short[0]
            self._tell(node.name, f"disk_full: scratch {node.scratch_dir} has {gb_text(short[0])} free, "
                                  f"{ds['uid']} needs {gb_text(short[1])} — free space there (or point scratch_dir "
                                  f"elsewhere); no launch there until a probe shows more", now, report)
            return False
        try:
            attempt_id = store.create_attempt(self.db, ds["uid"], node.name, now, mem_gb=mem_gb, walltime_h=walltime_h)
        except store.AlreadyRunning as exc:
            report.errors.append(str(exc))
            return False
        name = f"a-{attempt_id:06d}"
        store.crash_window("launch")  # the attempt is pending, nothing on the node yet
        try:
            try:
                files = self.resolve_files(ds)
            except ValueError as exc:  # a bad catalogue cell imported by an older console: this data set only
                raise SpecRejected(f"files {exc} — fix the catalogue row, import it again, "
                                   f"then `ari release {ds['uid']}`") from None
            if node.name not in self.prepared:
                ops.copy_remote(transport, node)
                self.prepared.add(node.name)
            spec = {
                "uid": ds["uid"],
                "files": files,
                "recipe": recipe_spec(node, ds["extra"].get("recipe_params"), overrides.get("params"),
                                      sds.casa_version),
                "env": dict(node.env),
                "heartbeat_s": min(5.0, max(1.0, self.cfg.campaign.poll_interval_s)),
            }
            spec = self.adjust_spec(spec, node, ds)
            problem = spec_problem(spec)
            if problem:
                raise SpecRejected(problem)
            handle = ops.launch(node, transport, self.cfg.campaign.name, name, spec,
                                mem_gb=mem_gb, walltime_h=walltime_h, space=self.space)
        except SpecRejected as exc:
            # The console's fault (a bad file entry, a wrong key): the node is fine, the data set
            # waits for an operator; never node_lost, never counted toward draining the node.
            with store.decision(self.db, "hold"):
                store.update_attempt(self.db, attempt_id, now, state="failed", category="unknown",
                                     excerpt=f"job spec rejected (the console's fault, not the node's): {exc}",
                                     ended_at=now)
                store.set_dataset_state(self.db, ds["uid"], "held", now, reason=f"bad job spec: {exc}")
            report.errors.append(f"{ds['uid']}: bad job spec, held: {exc}")
            return False
        except (NodeUnreachable, RuntimeError, OSError, UserError) as exc:
            self._launch_failed(ds["uid"], node, attempt_id, exc, now, report)
            return False
        self.launch_backoff.pop(node.name, None)
        store.update_attempt(self.db, attempt_id, now, state="running", handle=handle,
                             work_dir=handle["work_dir"], started_at=now)
        report.launched.append((ds["uid"], node.name))
        return True

    def _launch_failed(self, uid: str, node: Node, attempt_id: int, exc: Exception, now: float,
                       report: TickReport) -> None:
        """The node's fault, not the data set's: no try is spent; the node waits (doubling) and is
        drained after ``LAUNCH_FAILURES_DRAIN`` failures in a row; the data set may go elsewhere."""
        failures = self.launch_backoff.get(node.name, (0.0, 0))[1] + 1
        wait = self.cfg.campaign.retry_backoff_s * 2 ** min(failures - 1, 6)
        self.launch_backoff[node.name] = (now + wait, failures)
        store.undo_launch(self.db, attempt_id, now, kind="launch-failed",
                          reason=f"launch on {node.name} failed; no launch there for {wait:g} s",
                          detail={"error": str(exc)[:500]})
        in_a_row = store.launch_failures_in_a_row(self.db, node.name)
        if in_a_row >= LAUNCH_FAILURES_DRAIN:
            reason = f"{in_a_row} launches in a row failed, the last: {str(exc)[:200]}"
            store.set_drained(self.db, node.name, True, now, reason)
            self.progress(f"drained node {node.name}: {reason} — fix it, then `ari nodes undrain {node.name}`")
        if fault_kind(str(exc)) == "disk_full":
            self.scratch_short[node.name] = 0.0  # no launch there until a probe shows space again
        if fault_kind(str(exc)) != "other":
            self._tell(node.name, str(exc), now, report)
        else:
            report.errors.append(f"{node.name}: launch of {uid} failed: {exc} (no launch there for {wait:g} s)")

    def _scratch_shortfall(self, node: Node, sds: scheduler.DataSet) -> tuple[float, float] | None:
        """(free GB, needed GB) when the node's last probe shows less scratch free than the data set needs
        (:attr:`~ari_console.scheduler.DataSet.scratch_need_gb`, as placement counted it), else None."""
        need = sds.scratch_need_gb
        if need is None:
            return None
        probe = (store.node_row(self.db, node.name) or {}).get("probe") or {}
        free = probe.get("scratch_free_gb")
        if free is None or free >= need:
            return None
        return free, need


FAULT_KINDS = (
    ("host_key", ("host key",)),
    ("auth", ("refused the key", "authentication")),
    ("dns", ("name or service not known", "name resolution", "nodename nor servname", "no address associated")),
    ("disk_full", ("disk_full", "no space left", "disk quota")),
    ("timeout", ("timed out", "timeout")),
    ("unreachable", ("cannot connect", "connection lost", "unreachable", "refused")),
)


def fault_kind(message: str) -> str:
    """Which kind of node fault a message tells of (the operator is told once per kind).

    >>> fault_kind('node "ws": the host key of h:22 does not match'), fault_kind("x: command timed out after 30 s")
    ('host_key', 'timeout')
    """
    low = message.lower()
    for kind, words in FAULT_KINDS:
        if any(w in low for w in words):
            return kind
    return "other"


def product_name(item: dict) -> str:
    """A manifest entry's file, checked to lie inside the attempt's products/ (ValueError if not).

    >>> product_name({"file": "img.fits"})
    'img.fits'
    """
    name = str(item.get("file") or item.get("name") or item.get("path") or "")
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith("/") or ".." in parts or any(p in ("", ".") for p in parts):
        raise ValueError(f"manifest entry {name!r} is not a file inside products/ — refused")
    return name


def run_headless(cfg: Config, progress: Callable[[str], None], policy: str = scheduler.DEFAULT_POLICY,
                 once: bool = False, until_idle: bool = False, **engine_kw) -> TickReport:
    """``ari run``: tick until Ctrl-C / SIGTERM (or idle); stopping leaves the attempts running."""
    import signal

    stopping: list[bool] = []
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    with Engine(cfg, policy=policy, progress=progress, **engine_kw) as engine:
        progress(f"engine: campaign {cfg.campaign.name}, {len(cfg.nodes)} node(s), tick every "
                 f"{cfg.campaign.poll_interval_s:g} s (Ctrl-C stops the console; jobs go on)")
        report = engine.run(stop=lambda: once or bool(stopping), until_idle=until_idle)
        att = attention(engine.db, time.time(), stale_probe_s(cfg))
    progress(f"engine stopped: {report.queued} queued, {report.running} running")
    for h in att["held"]:
        progress(f"held {h['uid']}: {h['reason']} — {h['fix']}")
    for r in att["review"]:
        progress(f"review {r['uid']}: {review_text(r)} — {r['fix']}")
    for n in att["nodes"]:
        progress(f"node {n['name']}: {n['problem']} — {n['fix']}")
    progress(att["line"])
    return report


# -- helpers -----------------------------------------------------------------------

def spec_problem(spec: dict) -> str | None:
    """What is wrong with a job spec's files before it is sent (the runner refuses the same), or None.

    >>> spec_problem({"files": [{"name": "", "url": ""}]})
    "file entry 1 has no name or no url: {'name': '', 'url': ''}"
    """
    for i, item in enumerate(spec.get("files") or [], 1):
        if not item.get("url") or not item.get("name"):
            return f"file entry {i} has no name or no url: {item!r}"
        if "/" in item["name"] or item["name"] in (".", ".."):
            return f"file entry {i} has a name that is not a file name: {item['name']!r}"
    return None


def _monolithic(path: str | None) -> bool:
    """True for a monolithic CASA executable (``.../bin/casa``), False for a Python or nothing."""
    return bool(path) and Path(path).name.startswith("casa")


def recipe_spec(node: Node, dataset_params: object, override_params: object, casa_version: str | None = None) -> dict:
    """The job spec's ``recipe``: which script, run by which Python, with which CASA and parameters.

    casa6 runs in the node's Python that has casatasks (``casa_path``, else
    ``python``); alma-pipeline is a stdlib script run by ``python`` that drives
    the ``casa`` executable (``casa_path``). A data set that needs a CASA version
    the node lists in ``casa`` runs with that install instead; on a casa6 node an
    install that is a monolithic ``casa`` executable (CASA 4 and 5 have no Python
    with casatasks) is only handed to the recipe, which runs the MOUS's
    ``scriptForPI.py`` with it, while the node's own Python runs the recipe.
    Parameters: the data set's, then the operator's overrides; anything that is
    not a table is ignored.

    >>> node = Node(name="n", recipe="alma-pipeline", python="python3", casa_path="/opt/casa/bin/casa",
    ...             casa={"4.7.2": "/opt/casa-4.7.2/bin/casa"})
    >>> recipe_spec(node, "niter=5", {"robust": 0.5})
    {'name': 'alma-pipeline', 'python': 'python3', 'casa': '/opt/casa/bin/casa', 'params': {'robust': 0.5}}
    >>> recipe_spec(node, {}, {}, casa_version="4.7.2")["casa"]
    '/opt/casa-4.7.2/bin/casa'
    >>> recipe_spec(node, {}, {}, casa_version="4.7.2.1")["casa"]  # the spelling of a manifest
    '/opt/casa-4.7.2/bin/casa'
    >>> six = Node(name="s", recipe="casa6", python="/v/bin/python", casa={"4.7.2": "/opt/casa-4.7.2/bin/casa",
    ...            "6.5.4-9": "/opt/casa-6.5.4/bin/python3"})
    >>> [(r["python"], r["casa"]) for r in (recipe_spec(six, {}, {}, v) for v in ("4.7.2", "6.5.4-9"))]
    [('/v/bin/python', '/opt/casa-4.7.2/bin/casa'), ('/opt/casa-6.5.4/bin/python3', '/opt/casa-6.5.4/bin/python3')]
    """
    installs = node.casa or {}
    install = installs.get(casa_install_key(casa_version, installs) or "") or node.casa_path
    python = node.python
    if node.recipe == "casa6":
        own = node.casa_path if node.casa_path and not _monolithic(node.casa_path) else node.python
        python = own if _monolithic(install) else (install or node.python)
    params = {**(dataset_params if isinstance(dataset_params, dict) else {}),
              **(override_params if isinstance(override_params, dict) else {})}
    return {"name": node.recipe, "python": python, "casa": install, "params": params}


def dataset_files(ds: dict) -> list[dict]:
    """The files an attempt downloads: raw data and the calibration tar (the archive's DataLink
    listing, classified at import), or ``files`` as a catalogue CSV gave them (checked: ValueError
    naming what is wrong)."""
    from .alma import check_files
    from .archive.client import stored_files

    files = ds["extra"].get("files")
    if files:
        return check_files(files)
    return [{"url": f["url"], "name": f["name"], "sha256": f.get("sha256"), "size": f.get("size")}
            for f in stored_files(ds["extra"].get("archive", {}), "inputs")]


def archive_qa2_dir(work: Path) -> Callable[[dict], Path | None]:
    """A ``qa2_dir`` hook: fetch the data set's QA2 products once (verified) into a folder of FITS.

    Each QA2 image the archive lists on its own (the product tar's recursive DataLink
    listing) is fetched alone; a product tar (no listing) is fetched and its FITS unpacked.
    """

    def qa2_dir(ds: dict) -> Path | None:
        from .archive.client import stored_files

        download = _remote_module("download").download
        products = stored_files(ds["extra"].get("archive", {}), "qa2_files")
        if not products:
            return None
        dest = work / "qa2" / uid_filename(ds["uid"])
        for f in products:
            done = dest / (f["name"] + ".fetched")
            if done.exists():
                continue
            local = dest / f["name"]
            download(f["url"], str(local), sha256=f.get("sha256"), size=f.get("size"), log=lambda line: None)
            _unpack_qa2(local, dest / "fits")
            done.touch()
        return dest / "fits" if (dest / "fits").is_dir() else None

    return qa2_dir


def _unpack_qa2(local: Path, fits_dir: Path) -> None:
    """Move a fetched QA2 product into ``fits_dir`` as plain FITS (untar a tar, gunzip a .gz)."""
    import gzip
    import shutil
    import tarfile

    fits_dir.mkdir(parents=True, exist_ok=True)
    name = local.name.lower()
    if tarfile.is_tarfile(local):
        with tarfile.open(local) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.lower().endswith(".fits"):
                    member.name = Path(member.name).name  # flat, and never outside fits_dir
                    tar.extract(member, fits_dir)
        local.unlink()
    elif name.endswith(".fits.gz"):
        with gzip.open(local, "rb") as src, open(fits_dir / local.name[:-3], "wb") as out:
            shutil.copyfileobj(src, out)
        local.unlink()
    elif name.endswith(".fits"):
        local.replace(fits_dir / local.name)


def _remote_module(name: str):
    """A module of ``remote/`` (stdlib only, not installed with the console), loaded from its file."""
    import importlib.util
    import sys

    key = f"ari_remote_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ops.REMOTE_SRC / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _lines(path: Path):
    with open(path, encoding="utf-8", errors="replace") as fh:
        yield from fh


def qa2_problem(pairs: list[dict]) -> str | None:
    """Why a data set's QA2 comparison keeps it from delivery (None when every pair is consistent).

    >>> qa2_problem([{"verdict": "consistent"}]) is None, qa2_problem([])
    (True, 'no pipeline/QA2 image pair to compare: unverifiable')
    """
    if not pairs:
        return "no pipeline/QA2 image pair to compare: unverifiable"
    bad = [p for p in pairs if p.get("verdict") != "consistent"]
    if not bad:
        return None
    first = bad[0]
    return (f"QA2 discrepant in {len(bad)} of {len(pairs)} pairs: {first.get('field')} {first.get('specmode')}"
            f" {first.get('reasons') or ''}").strip()


def skips_calibration(ds: dict) -> bool:
    """True when the data set's recipe parameters (override first) say ``caltables=[]``: imaged uncalibrated.

    >>> skips_calibration({"extra": {}, "overrides": {"params": {"caltables": []}}})
    True
    >>> skips_calibration({"extra": {"recipe_params": {"caltables": []}}, "overrides": {"params": {"caltables": ["a.G"]}}})
    False
    """
    params = {**(ds.get("extra", {}).get("recipe_params") or {}), **(ds.get("overrides", {}).get("params") or {})}
    return params.get("caltables", None) == []


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# -- pure policies ---------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """What to do with a data set after a failed attempt."""

    state: str                      # queued, held, skipped, failed
    reason: str
    overrides: dict = field(default_factory=dict)


RETRY_MEM_FACTOR = 1.5
RETRY_WALLTIME_FACTOR = 2.0


def retry_decision(category: str, tries: int, max_attempts: int, mem_gb: float | None,
                   walltime_h: float | None, peak_mem_gb: float | None = None,
                   cancelled: bool = False, now: float = 0.0, backoff_s: float = 300.0) -> Decision:
    """The retry policy, by failure category.

    >>> retry_decision("memory", 1, 3, mem_gb=8, walltime_h=None).overrides
    {'mem_gb': 12.0, 'node': None}
    >>> retry_decision("uvcontfit", 1, 3, mem_gb=8, walltime_h=None).state
    'held'
    """
    if cancelled:
        return Decision("held", "cancelled by an operator")
    if category == "total_power":
        return Decision("skipped", "total power: this console images interferometric data only")
    if tries >= max_attempts:
        return Decision("failed", f"{category} after {tries} attempts (max_attempts = {max_attempts})")
    if category == "memory":
        need = max(x for x in (mem_gb or 0, peak_mem_gb or 0)) * RETRY_MEM_FACTOR
        return Decision("queued", f"memory: retry on a node with {need:g} GB",
                        {"mem_gb": round(need, 1), "node": None})
    if category == "walltime":
        if walltime_h is None:
            return Decision("held", "walltime without a limit: check the node")
        need = walltime_h * RETRY_WALLTIME_FACTOR
        return Decision("queued", f"walltime: retry where {need:g} h are allowed",
                        {"walltime_h": round(need, 2), "hours": round(need * 0.9, 2), "node": None})
    if category in NODE_CATEGORIES:
        wait = backoff_s * 2 ** (tries - 1)
        return Decision("queued", f"{category}: retry in {wait:g} s", {"not_before": now + wait} if now else {})
    return Decision("held", f"{category}: needs an operator (see the excerpt)")


DRAIN_WINDOW = 5
DRAIN_MIN_FAILURES = 3


def nodes_to_drain(recent: dict[str, list[str | None]]) -> dict[str, str]:
    """Nodes whose recent attempts fail for node reasons more than their peers', with the reason.

    ``recent`` maps node -> categories of its finished attempts, oldest first
    (None for a success).

    >>> nodes_to_drain({"a": ["disk_full"] * 3, "b": [None, None, None]})
    {'a': '3 of its last 3 attempts failed for node reasons (disk_full)'}
    """
    rates = {}
    for name, cats in recent.items():
        window = cats[-DRAIN_WINDOW:]
        bad = [c for c in window if c in NODE_CATEGORIES]
        rates[name] = (len(bad), len(window), bad)
    out = {}
    for name, (bad, total, cats) in rates.items():
        if bad < DRAIN_MIN_FAILURES:
            continue
        peers = [b / t for n, (b, t, _) in rates.items() if n != name and t]
        if peers and bad / total <= max(peers):
            continue
        out[name] = f"{bad} of its last {total} attempts failed for node reasons ({', '.join(sorted(set(cats)))})"
    return out

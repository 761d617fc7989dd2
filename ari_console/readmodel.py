"""The read model: every number a person sees, computed once for the CLI, the console and the report.

The faces (``commands/``, ``tui/``, ``report.py``) format what these functions
return; none of them counts, groups or rates on its own. Reads only: nothing
here writes the store. Imports stay light at the top (the hot read
``ari status --json`` loads this module without typer or rich).
"""

from __future__ import annotations

import bisect
import functools
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from . import store
from .config import Node, load_config
from .formatting import clock_text, duration_text

# Attempt states. A *try* is an attempt that ran the recipe to a verdict: a cancelled attempt
# (an operator's SIGTERM, or a launch the engine closed because it never started) is not one, so
# it neither fails a data set's first try nor counts it as tried.
TRIED_ATTEMPT_STATES = ("succeeded", "failed", "lost")
ENDED_ATTEMPT_STATES = ("succeeded", "failed", "cancelled", "lost")
FAILED_ATTEMPT_STATES = ("failed", "lost")
ACTIVE_ATTEMPT_STATES = ("pending", "running")


# -- success rates -----------------------------------------------------------------

@dataclass(frozen=True)
class SuccessRates:
    """How many data sets were tried, succeeded on their first try, and succeeded at all."""

    tried: int
    first_try_ok: int
    succeeded: int

    @property
    def first_try(self) -> float | None:
        return round(self.first_try_ok / self.tried, 4) if self.tried else None

    @property
    def after_retries(self) -> float | None:
        return round(self.succeeded / self.tried, 4) if self.tried else None


def success_rates(attempts: Iterable[Mapping], succeeded_uids: Iterable[str]) -> SuccessRates:
    """Success first try and after retries over the data sets with at least one try.

    ``attempts`` in id order; a data set's first try is its first attempt that
    was tried (see ``TRIED_ATTEMPT_STATES``), so a launch cancelled before it
    ran leaves the next attempt the first try.

    >>> rows = [dict(uid="a", state="cancelled"), dict(uid="a", state="succeeded"),
    ...         dict(uid="b", state="failed"), dict(uid="b", state="succeeded")]
    >>> r = success_rates(rows, {"a", "b"}); (r.tried, r.first_try, r.after_retries)
    (2, 0.5, 1.0)
    """
    first: dict[str, str] = {}
    for a in attempts:
        if a["state"] in TRIED_ATTEMPT_STATES:
            first.setdefault(a["uid"], a["state"])
    ok = set(succeeded_uids)
    return SuccessRates(len(first), sum(s == "succeeded" for s in first.values()), len(ok & set(first)))


def failures_by_category(attempts: Iterable[Mapping]) -> dict[str, int]:
    """Failed and lost attempts by category (``unknown`` when untriaged), most first."""
    counts = Counter((a.get("category") or "unknown") for a in attempts if a["state"] in FAILED_ATTEMPT_STATES)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def stats(db: store.Database) -> dict:
    """What ``ari stats --json`` prints (and the report and status reuse): success rates, failures
    by category, runtimes of successful attempts per node, attempt-hours."""
    with store.transaction(db):
        rows = store.tried_attempts(db, TRIED_ATTEMPT_STATES)
        succeeded = store.uids_in_state(db, "succeeded")
    rates = success_rates(rows, succeeded)
    runtimes: dict[str, list[float]] = {}
    hours = 0.0
    by_node: dict[str, float] = {}
    for r in rows:
        if r["started_at"] and r["ended_at"]:
            h = (r["ended_at"] - r["started_at"]) / 3600
            hours += h
            by_node[r["node"]] = by_node.get(r["node"], 0.0) + h
            if r["state"] == "succeeded":
                runtimes.setdefault(r["node"], []).append(h)
    return {
        "datasets_tried": rates.tried,
        "success_first_try": rates.first_try,
        "success_after_retries": rates.after_retries,
        "failures_by_category": failures_by_category(rows),
        "runtime_h_by_node": {n: {"count": len(v), "median": _median(v), "max": round(max(v), 4)}
                              for n, v in sorted(runtimes.items())},
        "attempt_hours": round(hours, 4),
        "attempt_hours_by_node": {n: round(h, 4) for n, h in sorted(by_node.items())},
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return round(ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2, 4)


# -- attempts per data set ---------------------------------------------------------------

def latest_attempts(attempts: Iterable[dict]) -> tuple[dict[str, dict], Counter]:
    """The newest attempt of each data set and the number of attempts of each (attempts in id order)."""
    latest: dict[str, dict] = {}
    counts: Counter = Counter()
    for a in attempts:
        latest[a["uid"]] = a
        counts[a["uid"]] += 1
    return latest, counts


# -- the dashboard -------------------------------------------------------------------------

@dataclass(frozen=True)
class Dashboard:
    """The morning view: totals, success rates, failure causes, burn-down."""

    total: int
    totals: dict[str, int]
    unsupervised: tuple[int, int]          # (first try succeeded, data sets tried)
    after_retries: tuple[int, int]         # (succeeded, data sets tried)
    failures: list[tuple[str, int]]        # (category, failed attempts), most first
    burndown: list[int]                    # remaining data sets per time bin, oldest first
    burndown_span: tuple[float, float] = (0.0, 0.0)
    running: int = 0


def dashboard(datasets: Sequence[dict], attempts: Sequence[dict], now: float, bins: int = 40) -> Dashboard:
    """The dashboard of a campaign from its data sets and attempts (in id order)."""
    totals = Counter(d["state"] for d in datasets)
    success_at: dict[str, float] = {}
    for a in attempts:
        if a["state"] == "succeeded":
            t = a.get("ended_at") or now
            success_at[a["uid"]] = min(t, success_at.get(a["uid"], t))
    rates = success_rates(attempts, (d["uid"] for d in datasets if d["state"] == "succeeded"))
    series, span = burndown(datasets, success_at, now, bins)
    return Dashboard(len(datasets), dict(totals), (rates.first_try_ok, rates.tried), (rates.succeeded, rates.tried),
                     list(failures_by_category(attempts).items()), series, span,
                     running=sum(a["state"] in ACTIVE_ATTEMPT_STATES for a in attempts))


def burndown(datasets: Sequence[dict], success_at: Mapping[str, float], now: float,
             bins: int = 40) -> tuple[list[int], tuple[float, float]]:
    """Remaining (not yet succeeded, excluded or skipped) data sets at ``bins`` times up to ``now``.

    A data set counts from its creation until its first successful attempt ended;
    excluded and skipped ones never count.

    >>> burndown([{"uid": "a", "created_at": 0.0, "state": "succeeded"},
    ...           {"uid": "b", "created_at": 0.0, "state": "queued"}], {"a": 5.0}, now=10.0, bins=2)
    ([2, 1], (0.0, 10.0))
    """
    counted = [d for d in datasets if d["state"] not in ("excluded", "skipped")]
    created = sorted(now if d.get("created_at") is None else d["created_at"] for d in counted)
    return burndown_series(created, sorted(success_at.values()), now, bins)


def burndown_series(created: Sequence[float], done: Sequence[float], now: float,
                    bins: int = 40) -> tuple[list[int], tuple[float, float]]:
    """``burndown`` from sorted creation times and sorted first-success times (the console keeps both)."""
    if not created:
        return [], (now, now)
    start = created[0]
    if start >= now:
        return [len(created)], (start, now)
    step = (now - start) / (bins - 1) if bins > 1 else 0.0
    series = []
    for i in range(bins):
        t = start + step * i if i < bins - 1 else now
        series.append(bisect.bisect_right(created, t) - bisect.bisect_right(done, t))
    return series, (start, now)


# -- open failures ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FailureGroup:
    """Open failures with one category (or one category and signature): one cause an operator fixes once."""

    key: str
    category: str
    signature: str
    attempt_ids: tuple[int, ...]
    uids: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.attempt_ids)


def open_failures(datasets: Iterable[Mapping], attempts: Sequence[Mapping]) -> list[dict]:
    """The newest attempt of each data set whose newest attempt failed, unless it succeeded or runs again."""
    latest, counts = latest_attempts(attempts)
    states = {d["uid"]: d["state"] for d in datasets}
    out = []
    for uid, a in latest.items():
        if a["state"] in FAILED_ATTEMPT_STATES and states.get(uid) not in ("succeeded", "running", None):
            out.append({**a, "dataset_state": states[uid], "attempts": counts[uid]})
    return out


def failure_signature(f: Mapping) -> str:
    """A failure's signature, its category when triage found none (the key ``ari triage groups`` and the
    console's triage screen share)."""
    return f.get("signature") or failure_category(f)


def failure_category(f: Mapping) -> str:
    return f.get("category") or "unknown"


def failure_groups(failures: Sequence[Mapping], by: str = "signature") -> list[FailureGroup]:
    """Failures grouped by ``category`` or by ``signature`` (category and signature), biggest group first.

    >>> [g.key for g in failure_groups([{"id": 1, "uid": "a", "category": "memory", "signature": "x"},
    ...     {"id": 2, "uid": "b", "category": "memory", "signature": "y"}, {"id": 3, "uid": "c",
    ...     "category": "walltime"}], by="category")]
    ['memory', 'walltime']
    """
    groups: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for f in failures:
        groups[(failure_category(f), failure_signature(f) if by == "signature" else "")].append(f)
    out = [FailureGroup(f"{cat}: {sig}" if by == "signature" else cat, cat, sig, tuple(x["id"] for x in v),
                        tuple(dict.fromkeys(x["uid"] for x in v)))
           for (cat, sig), v in groups.items()]
    return sorted(out, key=lambda g: (-g.count, g.category, g.signature))


def campaign_failures(db: store.Database) -> list[dict]:
    """The campaign's open failures, read in one transaction."""
    with store.transaction(db):
        return open_failures(store.datasets(db), store.attempts(db))


# -- status and the estimate ------------------------------------------------------------------

STATUS_LISTS = 100
"""Held data sets and QA2 reviews `ari status` lists at most (longest waiting first); it counts all."""


def status_report(config_path: Path) -> dict:
    """What `ari status --json` prints: campaign totals, success rates, nodes, running attempts,
    what needs a person (its lists cut to ``STATUS_LISTS``: the answer stays small at any size)."""
    cfg = load_config(config_path)
    with store.open_db(cfg.campaign.db_path) as db:
        store.sync_nodes(db, cfg.nodes, store.now())
        now = store.now()
        return {"campaign": cfg.campaign.name, **store.status(db),  # rates from each data set's first try
                "attention": attention(db, now, stale_probe_s(cfg), limit=STATUS_LISTS)}


def stale_probe_s(cfg) -> float:
    """How long without a probe before a node counts as stale: three polls, at least ten minutes."""
    return max(600.0, 3 * cfg.campaign.poll_interval_s)


# -- what needs a person ------------------------------------------------------------------------

def attention(db: store.Database, now: float, stale_after_s: float = 600.0, limit: int | None = None) -> dict:
    """What waits for an operator: held data sets (reason, category, fix), QA2 reviews, stale or drained nodes.

    ``{held: [{uid, reason, category, node, excerpt, fix}], review: [{uid, reason, fix, pairs}],
    nodes: [{name, problem, fix}], held_total, review_total, count}``; ``line`` is the one-line
    summary (``attention_line``). ``limit``: list at most that many held data sets and reviews (the
    longest waiting); ``held_total`` and ``review_total`` count them all, ``count`` everything.
    """
    from .triage import fix_for

    with store.transaction(db):
        held = store.newest_attempts_in_state(db, "held", limit)
        review = store.newest_attempts_in_state(db, "review", limit)
        nodes = store.nodes(db)
        pairs: dict[str, list[dict]] = defaultdict(list)
        for p in store.discrepant_qa2_of(db, [r["uid"] for r in review]):
            pairs[p["uid"]].append(p)
        totals = store.counts(db) if limit is not None else {"held": len(held), "review": len(review)}
    out_held = []
    for h in held:
        category = h["category"] or None
        fix = (fix_for(category) if category else "read `ari datasets show UID`, fix the cause") + \
            f"; then `ari release {h['uid']}` (or `ari retry {h['uid']} --mem-gb/--walltime-h/--node`)"
        excerpt = next((ln.strip() for ln in (h["excerpt"] or "").splitlines() if ln.strip()), "")
        out_held.append({"uid": h["uid"], "reason": h["reason"] or (f"{category} failure" if category else "held"),
                         "category": category, "node": h["node"], "excerpt": excerpt, "fix": fix})
    out_review = [{"uid": r["uid"], "reason": r["reason"] or "QA2 discrepant or unverifiable",
                   "fix": f"compare the images, then `ari accept {r['uid']}` or `ari reject {r['uid']}`",
                   "pairs": review_pairs(pairs[r["uid"]], r["attempt_id"])}
                  for r in review]
    out_nodes = []
    for n in nodes:
        at = n.get("probed_at")
        if n.get("drained"):
            out_nodes.append({"name": n["name"], "problem": "drained" + (f": {n['drained_reason']}"
                                                                       if n.get("drained_reason") else ""),
                              "fix": f"`ari nodes undrain {n['name']}` when it may take work again"})
        elif n.get("probe_error") or (at is not None and now - at > stale_after_s):
            problem = f"unreachable: {n['probe_error']}" if n.get("probe_error") else \
                f"no probe for {duration_text(now - at)}"
            out_nodes.append({"name": n["name"], "problem": problem,
                              "fix": f"`ari nodes check {n['name']}` says what is wrong"})
    result = {"held": out_held, "review": out_review, "nodes": out_nodes, "held_total": totals["held"],
              "review_total": totals["review"], "count": totals["held"] + totals["review"] + len(out_nodes)}
    result["line"] = attention_line(result)
    return result


def attention_line(att: Mapping) -> str:
    """One line: what needs a person, or that nothing does (``held_total``/``review_total`` when the
    lists were cut).

    >>> attention_line({"held": [1, 2], "review": [], "nodes": [{"name": "ws1"}], "count": 3})
    'needs a person: 2 held data sets, 1 node (ws1) — see `ari status`'
    """
    if not att["count"]:
        return "nothing needs a person"
    parts = []
    held, review = att.get("held_total", len(att["held"])), att.get("review_total", len(att["review"]))
    if held:
        parts.append(f"{held:,} held data set{'s' if held != 1 else ''}")
    if review:
        parts.append(f"{review:,} QA2 review{'s' if review != 1 else ''}")
    if att["nodes"]:
        names = ", ".join(n["name"] for n in att["nodes"][:3]) + (", ..." if len(att["nodes"]) > 3 else "")
        parts.append(f"{len(att['nodes'])} node{'s' if len(att['nodes']) != 1 else ''} ({names})")
    return "needs a person: " + ", ".join(parts) + " — see `ari status`"


def campaign_estimate(db: store.Database, nodes: Iterable[Node], now: float,
                      policy: str | None = None):
    """``(queue, node states, estimate)`` of the campaign: its queue and history simulated on its nodes.

    What ``ari estimate campaign`` and the report show. A running attempt holds its slot
    for the hours its prediction expects it to take yet; one not started yet (pending), for all
    of them. The estimate is None when nothing is queued or no node can take work.
    """
    from datetime import datetime, timezone

    from . import estimate as est
    from . import scheduler

    policy = policy or scheduler.DEFAULT_POLICY
    by_name = {n.name: n for n in nodes}
    hist = history(db, by_name)
    queue = scheduler_queue(db, store.queue(db), scratch_factors(hist))
    running: dict[str, list[float]] = {}
    active = store.active_attempts(db)
    for a in active:
        running.setdefault(a["node"], []).append(0.0)
    states = node_states(db, by_name.values(), busy_h={k: tuple(v) for k, v in running.items()})
    if not queue or not states:
        return queue, states, None
    ran = [(a["uid"], a["node"], hours_run(a, now)) for a in active]
    rows = {r["uid"]: r for r in store.datasets(db, state="running")} if ran else {}
    attempts_running = [(to_scheduler(rows[uid], 0), node, hours) for uid, node, hours in ran if uid in rows]
    result = est.estimate_campaign(queue, hist, states, datetime.fromtimestamp(now, timezone.utc),
                                   policy=policy, running=attempts_running)
    return queue, states, result


def dataset_detail(db: store.Database, uid: str) -> dict:
    """``ari datasets show UID --json``: the data set, its node inputs, its QA2 products and attempts.

    ``inputs`` are the files sent to the node (``size_bytes`` None when the archive
    gives no size); ``qa2_files`` the QA2 products the console fetches; ``decisions`` what
    operators did to it, oldest first (``{at, action, ...}``: an accept's note, an un-accept's
    attempt, a reject's reason, a retry's node), never lost when a later decision undoes one.
    """
    from .archive.client import stored_files

    ds = store.dataset(db, uid)
    extra = ds.get("extra") or {}
    archive = extra.get("archive", {})
    attempts = store.attempts(db, uid=uid)
    failed = attempts[-1] if attempts and attempts[-1]["state"] in FAILED_ATTEMPT_STATES else None
    if extra.get("files"):  # a catalogue CSV named the files
        listed = extra["files"]
        inputs = [dict(f, semantics=f.get("semantics")) for f in (json.loads(listed) if isinstance(listed, str)
                                                                    else listed)]
    else:
        inputs = stored_files(archive, "inputs")
    return {
        "uid": ds["uid"], "project": ds["project"], "state": ds["state"], "reason": ds.get("reason"),
        "casa_version": ds.get("casa_version"), "size_gb": ds.get("size_gb"),
        "inputs": [{"name": f["name"], "url": f["url"], "semantics": f.get("semantics"),
                    "size_bytes": f["size"] if isinstance(f.get("size"), int) and f["size"] >= 0 else None}
                   for f in inputs],
        "qa2_files": [{"name": f["name"], "url": f["url"]} for f in stored_files(archive, "qa2_files")],
        "targets": archive.get("targets"), "datalink_error": archive.get("datalink_error"),
        "attempts": attempts, "overrides": ds.get("overrides") or {},
        "excerpt": (failed or {}).get("excerpt"), "category": (failed or {}).get("category"),
        "fix": _fix_of(ds, failed), "qa2": store.qa2_results(db, uid),
        "decisions": [{"at": e["ts"], **e["detail"]} for e in store.events(db, uid)
                      if e["kind"] == "operator" and e["detail"]],
    }


def detail_notes(detail: dict) -> list[str]:
    """Overrides, the failure's excerpt and fix, the QA2 verdicts: what `datasets show` and the console's
    detail screen both print under the attempts."""
    lines = []
    if detail["overrides"]:
        lines.append("overrides: " + ", ".join(f"{k}={v}" for k, v in sorted(detail["overrides"].items())))
    if detail["excerpt"]:
        lines.append(f"failure ({detail['category'] or 'unknown'}):")
        lines += [f"  {ln}" for ln in detail["excerpt"].splitlines() if ln.strip()]
    if detail["fix"]:
        lines.append(f"fix: {detail['fix']}")
    for q in detail["qa2"]:
        lines.append(f"QA2 {q.get('field') or ''} spw {q.get('spw') or ''}: {q.get('verdict') or ''} "
                     f"(peak {q.get('peak_ratio')}, flux {q.get('flux_ratio')})")
    lines += [decision_text(d) for d in detail.get("decisions", [])]
    return lines


def decision_text(decision: Mapping) -> str:
    """One operator decision of a data set's history, as `datasets show` and the detail screen list it.

    >>> decision_text({"at": 0.0, "action": "accept", "attempt": 3, "note": "flux calibrator differs"})
    'operator 1970-01-01 00:00 UTC: accept attempt 3 — flux calibrator differs'
    """
    d = dict(decision)
    at, action, attempt = d.pop("at", None), d.pop("action", "?"), d.pop("attempt", None)
    why = d.pop("note", None) or d.pop("reason", None)
    rest = ", ".join(f"{k}={v}" for k, v in sorted(d.items()))
    return f"operator {clock_text(at)}: {action}" + (f" attempt {attempt}" if attempt is not None else "") + \
        (f" ({rest})" if rest else "") + (f" — {why}" if why else "")


def _fix_of(ds: Mapping, failed: Mapping | None) -> str | None:
    """What an operator does about a held or failed data set (None for the others)."""
    if ds["state"] not in ("held", "failed"):
        return None
    from .triage.rules import fix_for

    return (fix_for(failed["category"] or "unknown") if failed else "read the reason") + \
        f"; then `ari release {ds['uid']}` or `ari retry {ds['uid']}` (with --mem-gb, --walltime-h or --node)"


# -- the scheduler's inputs, read from the store (the engine places with them; estimates replay them) --

def node_states(db: store.Database, nodes, usable=lambda name: True,
                busy_h: dict[str, tuple[float, ...]] | None = None) -> list[scheduler.NodeState]:
    """The scheduler's view of the configured nodes: free slots from the store, drained and unusable left out;
    scratch from the node's ``scratch_gb`` or its last probe (:func:`node_scratch_gb`)."""
    from . import scheduler

    rows = {n["name"]: n for n in store.nodes(db)}
    states = []
    for node in nodes:
        row = rows.get(node.name)
        if row is None or row["drained"] or not usable(node.name):
            continue
        states.append(scheduler.NodeState(
            name=node.name, slots=node.slots, mem_gb=node.mem_gb, walltime_h=node.walltime_h, speed=node.speed,
            recipes=(node.recipe,), casa_versions=node.installed_casa_versions, cpus_per_slot=node.cpus_per_slot,
            scratch_gb=node_scratch_gb(node.scratch_gb, row.get("probe")),
            **({"busy_h": busy_h.get(node.name, ())} if busy_h is not None
               else {"free": max(0, node.slots - row["running"])})))
    return states


def node_scratch_gb(configured: float | None, probe: Mapping | None) -> float | None:
    """The most scratch one attempt can have on a node: its ``scratch_gb`` key, else the size of its
    scratch file system as the last probe measured it, rounded down to two significant digits (nodes
    with nearly equal disks stay one class for the scheduler); None when neither is known.

    >>> node_scratch_gb(None, {"scratch_total_gb": 270.55}), node_scratch_gb(500.0, {"scratch_total_gb": 270.5})
    (270.0, 500.0)
    """
    if configured is not None:
        return configured
    total = (probe or {}).get("scratch_total_gb")
    if not total or total <= 0:
        return None
    step = 10.0 ** (math.floor(math.log10(total)) - 1)
    return math.floor(total / step) * step


def hours_run(attempt: dict, now: float) -> float:
    """Wall hours an active attempt has run by ``now``: 0 for one launched but not started yet (pending),
    which so holds its slot for its whole expected hours, in the engine's plans and the live estimate alike."""
    return max(0.0, now - attempt["started_at"]) / 3600 if attempt.get("started_at") else 0.0


def scheduler_queue(db: store.Database, waiting: list[dict],
                    scratch: Mapping[str | None, float] | None = None) -> list[scheduler.DataSet]:
    """Queued store rows as the scheduler's data sets, with their failed tries counted, the scratch
    factor of their array from ``scratch`` (:func:`ari_console.scheduler.scratch_factors` of the
    history; None: the documented default) and the scratch a ``disk_full`` attempt of theirs had used.

    The engine and ``ari estimate`` both read the queue here: their data sets need the same scratch.
    """
    uids = [ds["uid"] for ds in waiting] if len(waiting) <= 2000 else None
    tries = store.failed_tries(db, uids)
    seen = store.disk_full_scratch(db, uids)
    factors = learned_factors(scratch or {}, {ds["array"] for ds in waiting})
    return [to_scheduler(ds, tries.get(ds["uid"], 0), factors[ds["array"]], seen.get(ds["uid"])) for ds in waiting]


def learned_factors(scratch: Mapping[str | None, float], arrays: Iterable[str | None]) -> dict:
    """Per array, its learned scratch factor (its own, else the campaign's), None where it is the documented
    default: a queue nothing taught stays on the scheduler's fast path.

    >>> learned_factors({None: 3.0, "7m": 5.0}, ["12m", "7m"]), learned_factors({}, ["12m"])
    ({'12m': None, '7m': 5.0}, {'12m': None})
    """
    from .scheduler.values import SCRATCH_PER_GB

    out = {}
    for array in arrays:
        factor = scratch.get(array, scratch.get(None))
        out[array] = None if factor is None or factor == SCRATCH_PER_GB else factor
    return out


def scratch_factors(history: Iterable[scheduler.Measured]) -> dict[str | None, float]:
    """The scratch per GB learned from ``history`` (:func:`ari_console.scheduler.scratch_factors`)."""
    from .scheduler.eligibility import scratch_factors as learn

    return learn(history)


def history(db: store.Database, nodes: dict[str, Node]) -> list[scheduler.Measured]:
    """Finished attempts as the scheduler's history (what predictions learn from)."""
    return [m for m in (measured(h, nodes) for h in store.finished_history(db)) if m is not None]


@functools.cache
def _scheduler_dataset() -> type:
    """The scheduler's DataSet class, imported once (``to_scheduler`` runs 100,000 times in a re-plan)."""
    from .scheduler.values import DataSet

    return DataSet


def to_scheduler(ds: dict, tries: int, scratch_per_gb: float | None = None,
                 scratch_seen_gb: float | None = None) -> scheduler.DataSet:
    """A store row as the scheduler's data set (the operator's overrides win over the catalogue's values).

    The archive's metadata (size, array, band, spws, channels, mosaic, execution
    blocks; None where unknown) goes along: what predictions learn from, as in the replay;
    so does the archive's guess of hours and memory, as the prior it is (never explicit).
    """
    o = ds.get("overrides") or {}
    mosaic = ds.get("is_mosaic")
    return _scheduler_dataset()(uid=ds["uid"], size_gb=ds["size_gb"], hours=o.get("hours") or ds.get("hours"),
                             mem_gb=o.get("mem_gb") or ds.get("mem_gb"), array=ds["array"], band=ds["band"],
                             casa_version=o.get("casa_version") or ds.get("casa_version"), attempts=tries,
                             node=o.get("node"), walltime_h=o.get("walltime_h"),
                             n_spw=ds.get("n_spw"), n_chan=ds.get("n_chan"), n_eb=ds.get("n_eb"),
                             is_mosaic=None if mosaic is None else bool(mosaic),
                             prior_hours=ds.get("archive_hours"), prior_mem_gb=ds.get("archive_mem_gb"),
                             scratch_per_gb=scratch_per_gb, scratch_seen_gb=scratch_seen_gb)


def measured(h: dict, nodes: dict[str, Node]) -> scheduler.Measured | None:
    """A finished attempt as the scheduler's measurement; None when it teaches nothing about hours or memory.

    Made as the replay makes its history (:func:`ari_console.estimate.attempt`), with the
    data set's metadata; a memory kill teaches the memory it was killed at (its
    peak, or the limit it ran under when the runner measured none).
    """
    from .estimate import attempt

    node = nodes.get(h["node"])
    if node is None or h["ended_at"] is None or h["started_at"] is None:
        return None
    outcome = "ok" if h["state"] == "succeeded" else (h["category"] or "unknown")
    if outcome not in ("ok", "memory", "walltime"):
        return None
    peak = h["peak_mem_gb"]
    if outcome == "memory":
        peak = max(peak or 0.0, h.get("mem_gb") or node.mem_gb or 0.0) or None
    ds = to_scheduler({**h, "hours": None, "mem_gb": None, "casa_version": None}, 0)
    return attempt(ds, (h["ended_at"] - h["started_at"]) / 3600, node.speed, outcome, peak, h.get("peak_scratch_gb"))


def review_text(review: Mapping) -> str:
    """Why a data set waits for a QA2 decision, with each discrepant image's failing measure (`ari status`, `ari run`).

    >>> review_text({"reason": "QA2 discrepant", "pairs": [{"image": "a.fits", "measure": "flux", "ratio": 1.41,
    ...     "why": "flux ratio 1.410 outside 1 ± 0.050"}]})
    'QA2 discrepant; a.fits: flux ratio 1.41'
    """
    return "; ".join([review["reason"]] + [f"{p['image']}: {p['measure']} ratio {p['ratio']:.3g}"
                                           if p["ratio"] is not None else f"{p['image']}: {p['why']}"
                                           for p in review.get("pairs", [])])


QA2_MEASURES = ("flux", "peak", "rms", "beam")


def review_pairs(rows: Iterable[Mapping], attempt_id: int | None) -> list[dict]:
    """The discrepant pairs a review is about: :func:`discrepant_pairs` of the stored QA2 rows of its
    attempt ``attempt_id`` (and of rows tied to no attempt), as `ari status` and the console's
    attention card show them."""
    return discrepant_pairs(p for p in rows if p.get("attempt_id") in (attempt_id, None))


def discrepant_pairs(pairs: Iterable[Mapping]) -> list[dict]:
    """The discrepant pipeline/QA2 image pairs of a review: image, field, spw, the measure that failed and its ratio.

    The measure is the first one the verdict's reasons name (``measure`` None and ``ratio`` None when
    the pair failed on something else, e.g. a source that moved; ``why`` says what).

    >>> discrepant_pairs([{"pl": "/p/a.image.pbcor.fits", "field": "M100", "spw": "25", "verdict": "discrepant",
    ...     "flux_ratio": 1.41, "detail": {"reasons": "flux ratio 1.410 outside 1 ± 0.050"}}])[0]["measure"]
    'flux'
    """
    out = []
    for p in pairs:
        if p.get("verdict") != "discrepant":
            continue
        why = (p.get("detail") or {}).get("reasons") or ""
        found = sorted((why.find(f"{m} ratio"), m) for m in QA2_MEASURES if f"{m} ratio" in why)
        measure = found[0][1] if found else None
        out.append({"image": Path(p.get("pl") or "").name, "field": p.get("field"), "spw": p.get("spw"),
                    "specmode": p.get("specmode"), "measure": measure, "ratio": p.get(f"{measure}_ratio") if measure else None, "why": why})
    return out

"""One read of the campaign store, turned into everything the screens show.

``load_snapshot`` runs in the console's reader thread (never on the UI thread):
it calls the store's read functions inside one transaction, so all screens see
the same instant, and hands the rows to the pure functions of ``views``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping


from ari_console import readmodel, store

from . import views


@dataclass(frozen=True)
class Eta:
    """The estimator's answer, or why there is none (``text`` is what the dashboard shows)."""

    text: str = "n/a"
    finish_at: float | None = None
    remaining_h: float | None = None
    computed_at: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything the screens show, from one read of the store at ``now``."""

    now: float
    version: int
    queue: views.QueueView
    dashboard: readmodel.Dashboard
    nodes: list[dict]
    node_rows: dict[str, tuple[str, ...]]
    attempts: dict[int, dict]                  # shown attempts by id (active + recent)
    attempt_rows: dict[str, tuple[str, ...]]
    failures: list[dict]
    qa2: list[dict]
    qa2_rows: dict[str, tuple[str, ...]]
    eta: Eta = field(default_factory=Eta)
    load_ms: float = 0.0


def read_store(db: store.Database) -> dict:
    """The raw rows of one consistent read: data sets, attempts, nodes, QA2, history."""
    with store.transaction(db):
        return {"datasets": store.datasets(db), "attempts": store.attempts(db), "nodes": store.nodes(db),
                "qa2": store.qa2_results(db)}


def build_snapshot(raw: dict, now: float, version: int, history: Mapping[str, views.NodeHistory],
                   stale_after_s: float, eta: Eta) -> Snapshot:
    """The Snapshot of raw store rows (pure; ``history`` is updated with new probes first)."""
    for n in raw["nodes"]:
        history.setdefault(n["name"], views.NodeHistory()).add(n)
    attempts = raw["attempts"]
    attempt_rows = views.attempt_rows(attempts, now)
    shown = {int(k) for k in attempt_rows}
    return Snapshot(
        now=now, version=version,
        queue=views.queue_view(raw["datasets"], attempts, now),
        dashboard=readmodel.dashboard(raw["datasets"], attempts, now),
        nodes=raw["nodes"],
        node_rows=views.node_rows(raw["nodes"], history, now, stale_after_s),
        attempts={a["id"]: a for a in attempts if a["id"] in shown},
        attempt_rows=attempt_rows,
        failures=readmodel.open_failures(raw["datasets"], attempts),
        qa2=raw["qa2"], qa2_rows=views.qa2_rows(raw["qa2"]), eta=eta)


def compute_eta(db: store.Database, raw: dict, now: float, node_configs: Mapping[str, object]) -> Eta:
    """The estimator's finish time for the queued data sets on the nodes as they are now.

    Returns ``Eta("n/a ...")`` when there is nothing to estimate or the estimator fails:
    the dashboard never shows a number it could not compute.
    """
    try:
        queue, states, est = readmodel.campaign_estimate(db, node_configs.values(), now)
    except Exception as exc:  # the estimator's failure must not take the console down
        return Eta(f"n/a ({exc.__class__.__name__})", computed_at=now)
    if not queue:
        return Eta("nothing queued", computed_at=now)
    if not raw["nodes"] or not node_configs:
        return Eta("n/a (no node known yet)", computed_at=now)
    if est is None:
        return Eta("n/a (every node drained)", computed_at=now)
    finish = est.finish_at.timestamp()
    text = f"{views.clock_text(finish)} (in {views.human_duration(est.remaining_h * 3600)})"
    if est.band and est.band_h[2] > est.band_h[0]:
        text += f", P10-P90 {views.clock_text(est.band[0].timestamp())} - {views.clock_text(est.band[2].timestamp())}"
    if est.unplaceable:
        text += f"; {len(est.unplaceable)} cannot be placed"
    return Eta(text, finish, est.remaining_h, now)


def timed(fn, *args, **kw):
    """(result, milliseconds) of calling ``fn``."""
    t0 = time.perf_counter()
    result = fn(*args, **kw)
    return result, (time.perf_counter() - t0) * 1000

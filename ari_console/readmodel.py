"""The read model: every number a person sees, computed once for the CLI, the console and the report.

The faces (``commands/``, ``tui/``, ``report.py``) format what these functions
return; none of them counts, groups or rates on its own. Reads only: nothing
here writes the store. Imports stay light at the top (the hot read
``ari status --json`` loads this module without typer or rich).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from . import store
from .config import Node, load_config


def status_report(config_path: Path) -> dict:
    """What `ari status --json` prints: campaign totals, success rates, nodes, running attempts."""
    cfg = load_config(config_path)
    db = store.open_db(cfg.campaign.db_path)
    store.sync_nodes(db, cfg.nodes, store.now())
    return {"campaign": cfg.campaign.name, **store.status(db)}


def campaign_estimate(db: store.Database, nodes: Iterable[Node], now: float,
                      policy: str | None = None):
    """``(queue, node states, estimate)`` of the campaign: its queue and history simulated on its nodes.

    What ``ari estimate campaign`` and the report show. Running attempts count
    as ending soon (their remaining time is unknown). The estimate is None when
    nothing is queued or no node can take work.
    """
    from datetime import datetime, timezone

    from . import estimate as est
    from . import scheduler
    from .engine import history, node_states, scheduler_queue

    policy = policy or scheduler.DEFAULT_POLICY
    by_name = {n.name: n for n in nodes}
    queue = scheduler_queue(db, store.queue(db))
    running: dict[str, list[float]] = {}
    for a in store.active_attempts(db):
        running.setdefault(a["node"], []).append(0.0)
    states = node_states(db, by_name.values(), busy_h={k: tuple(v) for k, v in running.items()})
    if not queue or not states:
        return queue, states, None
    result = est.estimate_campaign(queue, history(db, by_name), states, datetime.fromtimestamp(now, timezone.utc),
                                   policy=policy)
    return queue, states, result

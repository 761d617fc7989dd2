"""One store, one set of numbers: the CLI, the console and the report agree.

The campaign holds the cases that used to disagree: a data set whose first
launch was cancelled before it ran (it then succeeded: its first try did), a
walltime retry that set the hours of the next attempt (the ETA must use them),
and open failures with and without a triage signature (grouped by one key).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from typer.testing import CliRunner

from ari_console import readmodel, store
from ari_console.cli import app
from ari_console.tui import views
from ari_console.tui.snapshot import StoreCopy, build_snapshot, compute_eta
from tests import sample_campaign as sample


def _cases(db, now: float) -> None:
    """Add the three cases to the sample store (with the store's own write functions)."""
    with store.transaction(db, immediate=True):
        queued = [d["uid"] for d in store.datasets(db, state="queued")]
        cancelled_first, walltime_retry = queued[0], queued[1]
        aid = store.create_attempt(db, cancelled_first, "here", now - 7200)
        store.update_attempt(db, aid, now - 7100, state="cancelled", ended_at=now - 7100)
        ok = store.create_attempt(db, cancelled_first, "here", now - 7000)
        store.update_attempt(db, ok, now - 7000, state="running", started_at=now - 7000)
        store.update_attempt(db, ok, now - 3600, state="succeeded", ended_at=now - 3600, stage="export")
        store.accept_attempt(db, cancelled_first, ok, now - 3600)
        hit = store.create_attempt(db, walltime_retry, "hpc", now - 50 * 3600)
        store.update_attempt(db, hit, now - 2 * 3600, state="failed", category="walltime",
                             started_at=now - 50 * 3600, ended_at=now - 2 * 3600)
        store.set_dataset_state(db, walltime_retry, "queued", now - 2 * 3600, reason="walltime failure")
        store.set_overrides(db, walltime_retry, now, walltime_h=96.0, hours=400.0, node=None)
        unsigned = store.create_attempt(db, queued[2], "ws01", now - 5000)
        store.update_attempt(db, unsigned, now - 4000, state="failed", category="runner",
                             started_at=now - 5000, ended_at=now - 4000)
        store.set_dataset_state(db, queued[2], "failed", now - 4000, reason="runner failure")


def test_cli_console_and_report_show_the_same_numbers(tmp_path):
    now = store.now()
    camp = sample.build(tmp_path / "c", n=60, running=3, now=now)
    db = store.open_db(camp.db_path)
    _cases(db, now)
    config = ["-c", str(camp.config.path)]

    def cli(*args):
        result = CliRunner().invoke(app, [*args, *config, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    stats, status, groups, estimate = cli("stats"), cli("status"), cli("triage", "groups"), cli("estimate", "campaign")
    report = cli("report", "--out", str(tmp_path / "report"))

    copy = StoreCopy()
    copy.read(db, now)
    snap = build_snapshot(copy, now, 1, {}, 120.0,
                          compute_eta(db, copy.nodes, now, {n.name: n for n in camp.config.nodes}))
    dash = snap.dashboard

    # success rates: the cancelled launch is not a failed first try, anywhere
    ok, tried = dash.unsupervised
    assert stats["datasets_tried"] == tried == report["success"]["datasets_tried"]
    assert stats["success_first_try"] == round(ok / tried, 4) == status["success_first_try"] \
        == report["success"]["first_try"]
    assert stats["success_after_retries"] == round(dash.after_retries[0] / tried, 4) \
        == status["success_after_retries"] == report["success"]["after_retries"]
    assert views.rate_text(dash.unsupervised) == f"{ok}/{tried} ({100 * ok / tried:.0f}%)"
    assert dict(dash.failures) == stats["failures_by_category"]

    # failure groups: the console's triage screen (by signature) and `ari triage groups`
    console_groups = readmodel.failure_groups(snap.failures, "signature")
    assert [(g["signature"], g["category"], g["count"]) for g in groups] == \
        [(g.signature, g.category, g.count) for g in console_groups]
    assert ("runner", "runner", 1) in [(g["signature"], g["category"], g["count"]) for g in groups]

    # the ETA: the dashboard's finish is `ari estimate campaign`'s and the report's, walltime hours included
    finish = datetime.fromtimestamp(snap.eta.finish_at, timezone.utc).isoformat(timespec="minutes")
    assert finish == estimate["finish"] == report["burndown"]["estimate"]["finish"]
    assert round(snap.eta.remaining_h, 3) == estimate["makespan_h"] >= 400.0 / max(n.speed for n in camp.config.nodes)
    assert estimate["unplaceable"] == 0
    db.close()

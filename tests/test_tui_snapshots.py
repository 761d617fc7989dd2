"""SVG snapshots of each console screen (pytest-textual-snapshot), at a fixed clock.

Update them after a deliberate change with ``pytest tests/test_tui_snapshots.py --snapshot-update``
and look at the report before committing.
"""

from __future__ import annotations

import time

import pytest

from tests import sample_campaign as sample
from ari_console.tui.app import AriApp
from ari_console.tui.widgets.log_view import LogView


@pytest.fixture
def camp(tmp_path):
    return sample.build(tmp_path / "campaign", n=60, running=4)


def make_app(camp, **kw) -> AriApp:
    return AriApp(camp.db_path, camp.config, clock=lambda: sample.NOW, refresh_s=3600, log_poll_s=0.05, **kw)


def settled(until=lambda app: True, keys: tuple[str, ...] = ()):
    """A ``run_before`` that presses ``keys`` and waits until the screen shows the snapshot and ``until``."""

    async def run_before(pilot) -> None:
        app = pilot.app
        for key in keys:
            await pilot.press(key)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            await pilot.pause(0.05)
            if app.snapshot and getattr(app.screen, "shown_version", -2) == app.snapshot.version and until(app):
                # Let the last batch of row updates render, also on a loaded machine (CI, two cores).
                await pilot.wait_for_scheduled_animations()
                await pilot.pause(0.5)
                return
        raise AssertionError("the screen did not settle")

    return run_before


def estimated(app) -> bool:
    """The estimate (made in a child process, about a second) is in the snapshot on screen."""
    return app.snapshot.eta.computed_at is not None


def test_dashboard_snapshot(camp, snap_compare):
    assert snap_compare(make_app(camp), terminal_size=(120, 40), run_before=settled(estimated))


def test_dashboard_snapshot_in_80x24(camp, snap_compare):
    assert snap_compare(make_app(camp), terminal_size=(80, 24), run_before=settled(estimated))


def test_dashboard_snapshot_light_theme(camp, snap_compare):
    assert snap_compare(make_app(camp, theme="ari-light"), terminal_size=(120, 40), run_before=settled(estimated))


def test_queue_snapshot(camp, snap_compare):
    assert snap_compare(make_app(camp), terminal_size=(120, 40),
                        run_before=settled(lambda app: app.screen.query_one("#queue-table").row_count == 60, ("2",)))


def test_queue_filtered_snapshot_in_80x24(camp, snap_compare):
    keys = ("2", "slash", *"state:failed", "enter")
    assert snap_compare(make_app(camp), terminal_size=(80, 24),
                        run_before=settled(lambda app: 0 < app.screen.query_one("#queue-table").row_count < 60, keys))


def test_queue_snapshot_in_80x24(camp, snap_compare):
    """uid, state and failure stay; the columns that matter less leave, the footer keeps ? and q."""
    assert snap_compare(make_app(camp), terminal_size=(80, 24),
                        run_before=settled(lambda app: app.screen.query_one("#queue-table").row_count == 60, ("2",)))


def test_nodes_snapshot_in_80x24(camp, snap_compare):
    assert snap_compare(make_app(camp), terminal_size=(80, 24),
                        run_before=settled(lambda app: app.screen.query_one("#nodes-table").row_count == 4, ("3",)))


def test_live_log_snapshot_in_80x24(camp, snap_compare):
    app = make_app(camp)
    app.pending_log = camp.running_attempt
    assert snap_compare(app, terminal_size=(80, 24), run_before=settled(
        lambda app: app.screen.query(LogView) and app.screen.query_one(LogView).line_count == len(sample.LOG_LINES),
        ("4",)))


def test_triage_snapshot_in_80x24(camp, snap_compare):
    assert snap_compare(make_app(camp), terminal_size=(80, 24),
                        run_before=settled(lambda app: app.screen.query_one("#failures-table").row_count > 0, ("5",)))


def test_qa2_snapshot_in_80x24(camp, snap_compare):
    assert snap_compare(make_app(camp), terminal_size=(80, 24),
                        run_before=settled(lambda app: app.screen.query_one("#qa2-table").row_count == 10, ("6",)))


def test_nodes_snapshot(camp, snap_compare):
    assert snap_compare(make_app(camp), terminal_size=(120, 40),
                        run_before=settled(lambda app: app.screen.query_one("#nodes-table").row_count == 4, ("3",)))


def test_live_log_snapshot(camp, snap_compare):
    app = make_app(camp)
    app.pending_log = camp.running_attempt
    assert snap_compare(app, terminal_size=(120, 40), run_before=settled(
        lambda app: app.screen.query(LogView) and app.screen.query_one(LogView).line_count == len(sample.LOG_LINES),
        ("4",)))


def test_triage_snapshot(camp, snap_compare):
    assert snap_compare(make_app(camp), terminal_size=(120, 40),
                        run_before=settled(lambda app: app.screen.query_one("#failures-table").row_count > 0, ("5",)))


def test_qa2_snapshot(camp, snap_compare):
    assert snap_compare(make_app(camp), terminal_size=(120, 40),
                        run_before=settled(lambda app: app.screen.query_one("#qa2-table").row_count == 10, ("6",)))

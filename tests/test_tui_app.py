"""The console driven with Textual's pilot against a synthetic campaign (no engine needed)."""

from __future__ import annotations

import asyncio
import functools
import socket
import time

import pytest

from ari_console import store
from tests import sample_campaign as sample
from ari_console.tui.app import AriApp
from ari_console.tui.widgets.keyed_table import KeyedTable
from ari_console.tui.widgets.virtual_table import VirtualTable
from ari_console.tui.widgets.log_view import LogView


def async_test(fn):
    """Run an async test with asyncio (no pytest async plugin is installed)."""

    @functools.wraps(fn)
    def run(*args, **kw):
        return asyncio.run(fn(*args, **kw))

    return run


@pytest.fixture
def camp(tmp_path):
    return sample.build(tmp_path, n=60, running=4)


def make_app(camp, **kw) -> AriApp:
    kw.setdefault("refresh_s", 0.2)
    return AriApp(camp.db_path, camp.config, clock=lambda: sample.NOW, log_poll_s=0.05, **kw)


async def settle(app, pilot, until=lambda: True, timeout: float = 15.0) -> None:
    """Wait until the current screen rendered the newest snapshot and ``until()`` holds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        await pilot.pause(0.05)
        snap = app.snapshot
        if snap and getattr(app.screen, "shown_version", -2) == snap.version and until():
            return
    raise AssertionError("the console did not show what was expected in time")


async def wait_for(pilot, cond, timeout: float = 15.0) -> None:
    """Wait until ``cond()`` holds, whatever screen shows (a modal, a pushed screen)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        await pilot.pause(0.05)
        if cond():
            return
    raise AssertionError("not in time")


def table(app, id: str) -> KeyedTable | VirtualTable:
    return app.screen.query_one(f"#{id}", (KeyedTable, VirtualTable))


def drawn_columns(t: KeyedTable | VirtualTable) -> dict[str, int]:
    """The columns a table draws: name -> cells each takes on screen."""
    if isinstance(t, VirtualTable):
        return t.drawn_columns
    return {str(c.key.value): c.get_render_width(t) for c in t.ordered_columns}


def db_state(camp, uid: str) -> str:
    db = store.open_db(camp.db_path, create=False)
    try:
        return store.dataset(db, uid)["state"]
    finally:
        db.close()


@async_test
async def test_number_keys_switch_between_the_six_screens(camp):
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        seen = []
        for key in "234561":
            await pilot.press(key)
            await settle(app, pilot)
            seen.append(type(app.screen).__name__)
        assert seen == ["QueueScreen", "NodesScreen", "LogScreen", "TriageScreen", "Qa2Screen", "DashboardScreen"]


@async_test
async def test_queue_shows_every_data_set_and_slash_filters_by_state_and_regex(camp):
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(app, pilot, lambda: table(app, "queue-table").row_count == 60)
        await pilot.press("slash", *"state:held", "enter")
        await settle(app, pilot, lambda: table(app, "queue-table").row_count < 60)
        held = table(app, "queue-table").shown
        assert held and all(cells[5] == "held" for cells in held.values())
        assert camp.held_uid in held
        await pilot.press("slash", "escape")
        await pilot.press("slash", *"!X1f4/X1", "enter")
        await settle(app, pilot, lambda: camp.held_uid not in table(app, "queue-table").shown)
        shown = table(app, "queue-table").shown
        assert shown and not any("X1f4/X1" in uid for uid in shown)


@async_test
async def test_the_filter_line_stands_where_the_footer_was_and_the_table_keeps_its_size(camp):
    from ari_console.tui.widgets.filter_bar import FilterBar
    from ari_console.tui.widgets.fit_footer import FitFooter
    from textual.widgets._footer import FooterKey

    app = make_app(camp, refresh_s=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(app, pilot, lambda: table(app, "queue-table").row_count == 60)
        await pilot.pause(0.2)
        queue = table(app, "queue-table")
        region, keys = queue.region, list(app.screen.query(FooterKey))
        bar, footer = app.screen.query_one(FilterBar), app.screen.query_one(FitFooter)
        footer_line = footer.region
        await pilot.press("slash")
        await pilot.pause(0.2)
        assert bar.display and not footer.display and bar.region == footer_line
        assert queue.region == region, "opening the line changes no other widget's size"
        await pilot.press(*"state:held")
        await settle(app, pilot, lambda: table(app, "queue-table").row_count < 60)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert footer.display and not bar.display and queue.region == region
        assert "filter /state:held" in str(app.screen.query_one("#status").content)
        assert list(app.screen.query(FooterKey)) == keys, "the footer's keys were not rebuilt for a focus move"
        await pilot.press("slash")
        await pilot.pause(0.2)
        assert bar.text == "state:held", "/ again edits the filter kept"
        await pilot.press("escape")
        await settle(app, pilot, lambda: table(app, "queue-table").row_count == 60)
        assert "filter" not in str(app.screen.query_one("#status").content)
        await pilot.press("slash")
        await pilot.pause(0.2)
        await pilot.click("#queue-table", offset=(5, 5))
        await pilot.pause(0.2)
        assert footer.display and not bar.display and app.focused is queue, "a click elsewhere closes the line"


@async_test
async def test_keys_typed_while_the_queue_filters_render_once_with_the_last_text(camp, monkeypatch):
    """A prepare that takes long (100,000 rows): the keys typed meanwhile make one more, not one each.
    (The keys are typed once the first ETA is shown: its worker wakes the reader, and a snapshot read
    during the burst would rightly be prepared and drawn once more.)"""
    import threading

    from ari_console.tui.screens.queue import QueueScreen

    release, texts = threading.Event(), []
    prepare = QueueScreen.prepare

    def slow_prepare(self, snap, flt):
        texts.append((snap.version, flt.text))
        release.wait(10)
        return prepare(self, snap, flt)

    app = make_app(camp, refresh_s=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(app, pilot, lambda: table(app, "queue-table").row_count == 60)
        await wait_for(pilot, lambda: app.snapshot.eta.computed_at is not None
                       and app.screen.shown_version == app.snapshot.version)
        await pilot.press("slash")
        await pilot.pause(0.2)
        monkeypatch.setattr(QueueScreen, "prepare", slow_prepare)
        app.ui_ms.clear()
        await pilot.press(*"state:held")  # the first key's prepare waits; nine keys follow
        # every key has reached the screen (its filter) and the first prepare is the one waiting: under
        # load the last keys' messages can still be on their way when the pilot's press returns
        await wait_for(pilot, lambda: app.screen.flt.text == "state:held" and [t for _, t in texts] == ["s"])
        release.set()
        await settle(app, pilot, lambda: table(app, "queue-table").row_count < 60)
        await pilot.pause(0.3)
        shown = table(app, "queue-table").shown
        assert shown and all(cells[5] == "held" for cells in shown.values())
        assert [t for _, t in texts] == ["s", "state:held"], texts
        assert texts[0][0] == texts[1][0], f"a snapshot was read during the burst: {texts}"
        assert len(app.ui_ms) == 1, f"{len(app.ui_ms)} renders for one burst of 10 keys"


@async_test
async def test_qa2_slash_filters_pairs_by_verdict_and_the_status_counts_them(camp):
    app = make_app(camp)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.press("6")
        await settle(app, pilot, lambda: table(app, "qa2-table").row_count == 10)
        await pilot.press("slash", *"verdict:discrepant", "enter")
        await settle(app, pilot, lambda: table(app, "qa2-table").row_count < 10)
        shown = table(app, "qa2-table").shown
        assert len(shown) == 2 and all(cells[8] == "discrepant" for cells in shown.values())
        assert "10 pairs · 2 discrepant · 2 shown" in str(app.screen.query_one("#status").content)
        await pilot.press("slash", "escape")
        await settle(app, pilot, lambda: table(app, "qa2-table").row_count == 10)


@async_test
async def test_queue_keeps_rows_by_key_when_a_refresh_changes_one_cell(camp):
    clock = {"now": sample.NOW}
    app = AriApp(camp.db_path, camp.config, clock=lambda: clock["now"], refresh_s=0.2)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(app, pilot, lambda: table(app, "queue-table").row_count == 60)
        t = table(app, "queue-table")
        t.move_cursor(row=10)
        key = t.selected_key
        clock["now"] += 3600
        version = app.snapshot.version
        await settle(app, pilot, lambda: app.snapshot.version > version + 1)
        assert t.selected_key == key, "the cursor stays on the same data set"
        assert t.shown[sample.uid_of(0)][9] == "1h30m"


@async_test
async def test_retrying_a_failed_data_set_from_triage_queues_it_in_the_store(camp):
    assert db_state(camp, camp.failed_uid) == "failed"
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        await settle(app, pilot, lambda: table(app, "failures-table").row_count > 0)
        await pilot.press("slash", *camp.failed_uid.replace("/", "."), "enter")
        await settle(app, pilot, lambda: list(table(app, "failures-table").shown) == [str(camp.failed_attempt)])
        await pilot.press("r")
        end = time.monotonic() + 10
        while db_state(camp, camp.failed_uid) != "queued" and time.monotonic() < end:
            await pilot.pause(0.05)
        assert db_state(camp, camp.failed_uid) == "queued"
        await settle(app, pilot, lambda: table(app, "failures-table").shown.get(str(camp.failed_attempt), ("", ""))[1]
                     == "queued")


@async_test
async def test_retry_on_a_chosen_node_pins_the_data_set_to_it(camp):
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        await pilot.press("slash", *camp.failed_uid.replace("/", "."), "enter")
        await settle(app, pilot, lambda: list(table(app, "failures-table").shown) == [str(camp.failed_attempt)])
        await pilot.press("R")
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "NodePicker"
        await pilot.press("down", "enter")  # nodes by name: here, hpc, pbs1, ws01
        end = time.monotonic() + 10
        while db_state(camp, camp.failed_uid) != "queued" and time.monotonic() < end:
            await pilot.pause(0.05)
        db = store.open_db(camp.db_path, create=False)
        assert store.dataset(db, camp.failed_uid)["overrides"]["node"] == "hpc"
        db.close()


@async_test
async def test_a_mistaken_action_shows_the_one_line_error(camp):
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(app, pilot, lambda: table(app, "queue-table").row_count == 60)
        table(app, "queue-table").move_cursor(row=0)  # a running data set
        await pilot.press("r")
        end = time.monotonic() + 10
        while not app._notifications and time.monotonic() < end:
            await pilot.pause(0.05)
        messages = [n.message for n in app._notifications]
        assert any("is running now" in m for m in messages), messages
        assert db_state(camp, sample.uid_of(0)) == "running"


@async_test
async def test_hold_and_release_from_the_queue(camp):
    db = store.open_db(camp.db_path, create=False)
    uid = store.datasets(db, state="queued")[-1]["uid"]
    db.close()
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await pilot.press("slash", *uid.split("/")[-1] + "$", "enter")
        await settle(app, pilot, lambda: list(table(app, "queue-table").shown) == [uid])
        await pilot.press("h")
        end = time.monotonic() + 10
        while db_state(camp, uid) != "held" and time.monotonic() < end:
            await pilot.pause(0.05)
        assert db_state(camp, uid) == "held"
        await pilot.press("u")
        while db_state(camp, uid) != "queued" and time.monotonic() < end:
            await pilot.pause(0.05)
        assert db_state(camp, uid) == "queued"


@async_test
async def test_nodes_screen_shows_stale_probe_and_drains_a_node(camp):
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await settle(app, pilot, lambda: table(app, "nodes-table").row_count == 4)
        rows = table(app, "nodes-table").shown
        assert rows["ws01"][-1].startswith("stale 10m (ssh: connect")
        assert rows["here"][-1] == "ok"
        t = table(app, "nodes-table")
        t.move_cursor(row=t.get_row_index("pbs1"))
        await pilot.press("d")
        await settle(app, pilot, lambda: t.shown["pbs1"][-1].startswith("drained"))
        await pilot.press("u")
        await settle(app, pilot, lambda: t.shown["pbs1"][-1] == "ok")


@async_test
async def test_live_log_streams_new_lines_as_the_mirror_grows(camp):
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(app, pilot, lambda: table(app, "queue-table").row_count == 60)
        t = table(app, "queue-table")
        t.move_cursor(row=t.get_row_index(sample.uid_of(0)))
        await pilot.press("l")
        await settle(app, pilot, lambda: type(app.screen).__name__ == "LogScreen"
                     and app.screen.query_one(LogView).line_count == len(sample.LOG_LINES))
        view = app.screen.query_one(LogView)
        assert "Error in reading the mask image" in view.lines[5]
        with camp.running_log.open("a") as f:
            f.write("2026-05-28 20:10:00 INFO tclean::::casa Major cycle 3\n")
            f.write("2026-05-28 20:11:00 SEVERE tclean::::casa out of memo")  # no newline yet
        await settle(app, pilot, lambda: view.line_count == len(sample.LOG_LINES) + 1)
        assert view.lines[-1].endswith("Major cycle 3")
        await pilot.press("space")  # pause: nothing new is read
        with camp.running_log.open("a") as f:
            f.write("ry\n")
        await pilot.pause(0.4)
        assert view.line_count == len(sample.LOG_LINES) + 1
        await pilot.press("space")
        await settle(app, pilot, lambda: view.line_count == len(sample.LOG_LINES) + 2)
        assert view.lines[-1].endswith("SEVERE tclean::::casa out of memory")
        await pilot.press("slash", *"SEVERE", "enter")
        await settle(app, pilot, lambda: view.line_count == 2)


@async_test
async def test_live_log_jumps_to_the_decisive_triage_line(camp):
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        await pilot.press("slash", *camp.failed_uid.replace("/", "."), "enter")
        await settle(app, pilot, lambda: list(table(app, "failures-table").shown) == [str(camp.failed_attempt)])
        await pilot.press("l")
        await settle(app, pilot, lambda: type(app.screen).__name__ == "LogScreen"
                     and app.screen.query_one(LogView).line_count == 41)
        view = app.screen.query_one(LogView)
        assert view.highlighter.decisive == 31
        await pilot.press("d")
        await pilot.pause(0.2)
        assert not view.follow
        assert view.scroll_y <= 30 <= view.scroll_y + view.size.height
        assert "uvcontfit" in view.lines[30]


@async_test
async def test_copy_puts_the_shell_command_for_the_attempt_on_the_clipboard(camp):
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(app, pilot, lambda: table(app, "queue-table").row_count == 60)
        t = table(app, "queue-table")
        t.move_cursor(row=t.get_row_index(sample.uid_of(1)))  # running on ws01 (ssh, port 2222)
        await pilot.press("c")
        await pilot.pause(0.1)
        assert app.clipboard.startswith("ssh -p 2222 ari@ws01.example.org 'tail -f /tmp/ari-scratch/")
        assert app.clipboard.endswith("/runner.log'")


@async_test
async def test_ctrl_t_switches_between_the_light_and_dark_themes(camp):
    app = make_app(camp, theme="ari-light")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert app.theme == "ari-light"
        await pilot.press("ctrl+t")
        assert app.theme == "ari-dark"


@async_test
async def test_every_screen_binding_is_also_a_command_in_the_palette(camp):
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        await settle(app, pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for wanted in ("Retry (r)", "Hold (h)", "Release (u)", "Group by (g)", "Filter (/)", "Queue (2)"):
            assert wanted in titles, titles


@async_test
async def test_dashboard_shows_totals_rates_and_an_eta(camp):
    app = make_app(camp)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot, lambda: app.snapshot.eta.finish_at is not None, timeout=60)  # its own worker
        dash = app.snapshot.dashboard
        assert dash.totals["running"] == 4 and dash.total == 60
        assert app.snapshot.eta.finish_at is not None and app.snapshot.eta.finish_at > sample.NOW
        screen = app.export_screenshot().replace("&#160;", " ")
        assert "unsupervised" in screen and "ETA" in screen
        assert app.snapshot.eta.text[:16] in screen  # "2026-05-29 02:50" (wraps at 80 columns)


class OtherEngine:
    """Another process holding the campaign's engine lock, as a running `ari run` does (its real lock)."""

    def __init__(self, camp) -> None:
        import subprocess
        import sys

        path = camp.config.campaign.work_dir / "engine.lock"
        code = ("import sys, time; from pathlib import Path; from ari_console.engine import acquire_lock; "
                "lock = acquire_lock(Path(sys.argv[1]), time.time()); print('locked', flush=True); sys.stdin.read()")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "locked"

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@async_test
async def test_console_only_watches_when_another_engine_holds_the_campaign_lock(camp):
    other = OtherEngine(camp)
    try:
        app = make_app(camp, engine=True)  # asked for an engine, but one runs already
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot, lambda: app.engine_state.startswith("watching;"))
            assert f"engine runs in pid {other.proc.pid} on host {socket.gethostname()}" in app.engine_state
            await settle(app, pilot, lambda: "watching; engine runs in pid" in _screen_text(app))
            assert not app.engine_here
    finally:
        other.stop()


def _screen_text(app) -> str:
    return app.export_screenshot().replace("&#160;", " ")


def _attempt_count(camp) -> int:
    db = store.open_db(camp.db_path, create=False)
    try:
        return len(store.attempts(db))
    finally:
        db.close()


@async_test
async def test_console_opened_to_look_runs_no_engine_and_says_so_in_its_header(camp):
    before = _attempt_count(camp)
    app = make_app(camp)  # as `ari tui` without --engine
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot, lambda: "no engine runs" in _screen_text(app))
        version = app.snapshot.version
        await settle(app, pilot, lambda: app.snapshot.version > version + 3)
        assert not app.engine_here and app.engine_state.startswith("watching; no engine runs")
    assert _attempt_count(camp) == before, "nothing was launched"


@async_test
async def test_watcher_names_the_engine_that_starts_elsewhere_and_still_acts_on_the_store(camp):
    app = make_app(camp)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot, lambda: "no engine runs" in app.engine_state)
        other = OtherEngine(camp)  # `ari run` starts
        try:
            await settle(app, pilot, lambda: f"engine runs in pid {other.proc.pid}" in _screen_text(app))
            await pilot.press("5")  # watch-only actions write the store: retry a failure
            await pilot.press("slash", *camp.failed_uid.replace("/", "."), "enter")
            await settle(app, pilot, lambda: list(table(app, "failures-table").shown) == [str(camp.failed_attempt)])
            await pilot.press("r")
            end = time.monotonic() + 10
            while db_state(camp, camp.failed_uid) != "queued" and time.monotonic() < end:
                await pilot.pause(0.05)
            assert db_state(camp, camp.failed_uid) == "queued"
        finally:
            other.stop()
        await settle(app, pilot, lambda: "no engine runs" in app.engine_state)


def test_engine_reports_of_node_faults_are_left_to_the_node_lines_and_the_rest_are_toasted(camp):
    from ari_console.engine import fault_kind

    app = make_app(camp)
    assert app._node_fault("ws01: ssh: connect to ws01.example.org port 2222: Connection timed out", fault_kind)
    assert app._node_fault('node "hpc": cannot connect (Connection refused)', fault_kind)
    assert not app._node_fault("ws01: launch of uid://A001/X1/X2 failed: bad spec", fault_kind)
    assert not app._node_fault("uid://A001/X1/X2: bad job spec, held: timed out", fault_kind), "not a node's"


def _set_reachable(camp, node: str, reachable: bool, now: float) -> None:
    db = store.open_db(camp.db_path, create=False)
    try:
        if reachable:
            store.set_node_probe(db, node, now, {"load1": 0.5, "cpus": 4, "mem_total_gb": 64.0, "mem_free_gb": 40.0})
        else:
            store.set_node_probe(db, node, now, error=f"ssh: connect to {node}: Connection refused")
    finally:
        db.close()


@async_test
async def test_a_node_unreachable_over_many_refreshes_makes_one_notification_and_one_status_line(camp):
    clock = {"now": sample.NOW}
    app = AriApp(camp.db_path, camp.config, clock=lambda: clock["now"], refresh_s=0.1, log_poll_s=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        told: list[str] = []
        notify = app.notify
        app.notify = lambda message, **kw: (told.append(str(message)), notify(message, **kw))[1]
        toasts = lambda: [m for m in told if "hpc" in m]  # noqa: E731  (kept: toasts expire on screen)
        assert "ws01 unreachable" in _screen_text(app), "a node unreachable at start has its line, no toast"
        _set_reachable(camp, "hpc", False, clock["now"])
        for _ in range(20):  # a weekend of refreshes, in short
            clock["now"] += 60
            version = app.snapshot.version
            await settle(app, pilot, lambda: app.snapshot.version > version)
        assert len(toasts()) == 1 and "hpc unreachable" in toasts()[0]
        assert not [m for m in told if "ws01" in m]
        screen = _screen_text(app)
        assert screen.count("hpc unreachable") == 1 and "Connection refused" in screen
        _set_reachable(camp, "hpc", True, clock["now"])
        await settle(app, pilot, lambda: len(toasts()) == 2)
        assert toasts()[1] == "hpc answers again"
        await settle(app, pilot, lambda: "hpc unreachable" not in _screen_text(app))


def _waiting_in_review(camp, uid: str, reason: str = "QA2 discrepant in 1 of 1 pairs") -> int:
    """A data set whose products wait for a QA2 decision (as the engine leaves it)."""
    db = store.open_db(camp.db_path, create=False)
    try:
        aid = store.create_attempt(db, uid, "ws01", sample.NOW - 3600, mem_gb=8, walltime_h=4)
        store.update_attempt(db, aid, sample.NOW - 60, state="succeeded", ended_at=sample.NOW - 60)
        store.send_to_review(db, uid, aid, sample.NOW - 60, reason)
        return aid
    finally:
        db.conn.close()


async def _select_qa2_pair_of(app, pilot, uid: str) -> None:
    await pilot.press("6")
    await settle(app, pilot, lambda: table(app, "qa2-table").row_count > 0)
    await pilot.press("slash", *uid.split("/")[-1] + "$", "enter")
    await settle(app, pilot, lambda: 0 < table(app, "qa2-table").row_count
                 and all(cells[0] == uid for cells in table(app, "qa2-table").shown.values()))


@async_test
async def test_accepting_on_the_qa2_screen_delivers_the_products_waiting_in_review(camp):
    uid = sample.uid_of(4)  # has QA2 pairs in the sample
    _waiting_in_review(camp, uid)
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await _select_qa2_pair_of(app, pilot, uid)
        await pilot.press("a")
        end = time.monotonic() + 10
        while db_state(camp, uid) != "succeeded" and time.monotonic() < end:
            await pilot.pause(0.05)
        assert db_state(camp, uid) == "succeeded"


@async_test
async def test_rejecting_on_the_qa2_screen_asks_first_and_keeps_the_earlier_delivery(camp):
    uid = sample.uid_of(4)  # delivered before; a re-run of it waits in review
    db = store.open_db(camp.db_path, create=False)
    delivered = store.dataset(db, uid)["accepted_attempt"]
    db.conn.close()
    assert delivered is not None
    _waiting_in_review(camp, uid)
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await _select_qa2_pair_of(app, pilot, uid)
        await pilot.press("r")
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "NodePicker"
        await pilot.press("escape")  # changed my mind: nothing happens
        await pilot.pause(0.3)
        assert db_state(camp, uid) == "review"
        await pilot.press("r")
        await pilot.pause(0.2)
        await pilot.press("enter")  # the first choice: do not deliver these products
        end = time.monotonic() + 10
        while db_state(camp, uid) == "review" and time.monotonic() < end:
            await pilot.pause(0.05)
        db = store.open_db(camp.db_path, create=False)
        row = store.dataset(db, uid)
        db.conn.close()
        assert row["state"] == "succeeded" and row["accepted_attempt"] == delivered
        assert "rejected" in row["reason"]


@async_test
async def test_the_qa2_screen_draws_both_images_of_the_selected_pair_with_their_sources(camp, tmp_path):
    import numpy as np

    from tests.test_qa2_sky import _gauss, _sky_fits

    rng = np.random.default_rng(8)
    pl = _sky_fits(tmp_path / "pl.fits", rng.normal(0, 1e-4, (120, 120)) + _gauss((120, 120), 60, 60, 3, 0.05))
    qa2 = _sky_fits(tmp_path / "qa2.fits", rng.normal(0, 1e-4, (120, 120)) + _gauss((120, 120), 60, 60, 4, 0.04))
    uid = sample.uid_of(4)
    db = store.open_db(camp.db_path, create=False)
    store.save_qa2(db, uid, None, [{"pl": str(pl), "qa2": str(qa2), "field": "FIELD1", "spw": "0",
                                    "specmode": "cont", "flux_ratio": 0.7, "verdict": "discrepant",
                                    "sources": [{"id": 1, "ra_deg": 150.0, "dec_deg": -30.0,
                                                 "verdict": "discrepant"}]}])
    db.conn.close()
    app = make_app(camp)
    async with app.run_test(size=(160, 50)) as pilot:
        await _select_qa2_pair_of(app, pilot, uid)
        sky = app.screen.query_one("#qa2-sky")
        end = time.monotonic() + 10
        while "▀" not in str(sky.content) and time.monotonic() < end:
            await pilot.pause(0.1)
        text = sky.content
        assert "pipeline" in str(text) and "QA2" in str(text) and str(text).count("▀") > 500
        marked = [span for span in text.spans if "red" in str(span.style)]
        assert len(marked) >= 3, "the source in each picture and its id below"


@pytest.mark.parametrize("key, table_id, wanted", [
    ("2", "queue-table", {"uid", "state", "failure"}), ("3", "nodes-table", {"node", "state"}),
    ("5", "groups-table", {"group", "fix"}), ("5", "failures-table", {"uid", "category"}),
    ("6", "qa2-table", {"uid", "verdict", "outside"})])
@async_test
async def test_at_80x24_each_table_keeps_the_columns_that_matter_and_the_footer_keeps_help_and_quit(
        camp, key, table_id, wanted):
    from textual.widgets._footer import FooterKey

    app = make_app(camp)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(key)
        await settle(app, pilot, lambda: table(app, table_id).row_count > 0)
        await pilot.pause(0.2)
        t = table(app, table_id)
        names = set(drawn_columns(t))
        assert wanted <= names, names
        assert sum(drawn_columns(t).values()) <= t.scrollable_content_region.width
        keys = [k for k in app.screen.query(FooterKey) if k.display]
        assert {"question_mark", "q"} <= {k.key for k in keys}
        assert max(k.region.right for k in keys) <= 80, "no key of the footer is cut"
        every = len(next(iter(t.shown.values())))  # a row keeps all its cells, shown or not
        await pilot.resize_terminal(160, 40)  # wider: the columns come back
        await settle(app, pilot, lambda: len(drawn_columns(t)) > len(names) or len(names) == every)


@async_test
async def test_the_attention_card_shows_each_discrepant_pair_of_a_review_with_the_ratio_of_ari_status(camp):
    import json

    from typer.testing import CliRunner

    from ari_console.cli import app as cli

    uid = sample.uid_of(12)  # the sample's QA2 pairs of it: spw 1 (cube) discrepant in flux and peak, 1.42
    _waiting_in_review(camp, uid)
    status = json.loads(CliRunner().invoke(cli, ["-c", str(camp.config.path), "status", "--json"]).stdout)
    [review] = [r for r in status["attention"]["review"] if r["uid"] == uid]
    [pair] = review["pairs"]
    app = make_app(camp)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot, lambda: any(w == "review" and u == uid for w, u, _ in app.snapshot.attention))
        [why] = [why for w, u, why in app.snapshot.attention if u == uid]
        brief = f"{pair['field']} spw{pair['spw']} {pair['specmode']} {pair['measure']} ×{pair['ratio']:.3g}"
        assert brief == "NGC253 spw1 cube flux ×1.42" and why == f"{review['reason']}; {brief}"
        card = str(app.screen.query_one("#attention").render())
        assert f"review {uid}: {review['reason']}; {brief}" in card.replace("\n", " ")


@async_test
async def test_the_attention_card_gives_a_held_data_set_the_fix_ari_status_gives(camp):
    import json

    from typer.testing import CliRunner

    from ari_console.cli import app as cli

    status = json.loads(CliRunner().invoke(cli, ["-c", str(camp.config.path), "status", "--json"]).stdout)
    [held] = [h for h in status["attention"]["held"] if h["uid"] == camp.held_uid]
    fix = held["fix"].split("; then ")[0]
    assert fix.startswith("retry ")  # the category's fix, not the generic "read the detail"
    app = make_app(camp)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot, lambda: any(u == camp.held_uid for _, u, _ in app.snapshot.attention))
        card = str(app.screen.query_one("#attention").render()).splitlines()
        at = card.index(f"held {camp.held_uid}: {held['reason']}")
        assert card[at + 1] == f"  fix: {fix}", "the fix on its own line, whole"


@async_test
async def test_a_big_campaign_shows_the_queue_first_page_then_every_row_and_other_screens_wait(tmp_path):
    camp = sample.build(tmp_path, n=60, running=4)
    seen = []

    class Recording(AriApp):
        def _set_snapshot(self, snap):
            seen.append(snap)
            super()._set_snapshot(snap)

    app = Recording(camp.db_path, camp.config, clock=lambda: sample.NOW, refresh_s=3600, log_poll_s=0.05,
                    first_page_above=0, first_page_rows=10)
    async with app.run_test(size=(120, 40)) as pilot:
        # the first ETA coming back wakes the reader once more: let it, so no read lands in what follows
        await settle(app, pilot, lambda: len(seen) >= 2 and app.eta.computed_at is not None, timeout=120)
        await pilot.pause(0.5)
        page, whole = seen[0], seen[1]
        assert (page.pending, len(page.queue.rows)) == (50, 10) and (whole.pending, len(whole.queue.rows)) == (0, 60)
        assert page.queue.rows == {uid: whole.queue.rows[uid] for uid in page.queue.rows}
        assert app.first_read_where == "child process", "the UI thread draws the page while a child reads the rest"
        dashboard = app.screen
        shown = dashboard.shown_version
        app.snapshot = page  # a first page reaching a screen that shows the campaign's totals: not shown
        await pilot.pause(0.3)
        assert dashboard.shown_version == shown != page.version
        await pilot.press("2")
        await settle(app, pilot, lambda: table(app, "queue-table").row_count == 10)
        assert "10 of 60 data sets · first 10 shown, reading the rest…" in str(app.screen._status)
        app.snapshot = seen[-1]
        await settle(app, pilot, lambda: table(app, "queue-table").row_count == 60)
        assert "reading the rest" not in str(app.screen._status)


@async_test
async def test_a_big_campaign_whose_read_apart_fails_still_shows_the_first_page_then_every_row(tmp_path, monkeypatch):
    """The child process that reads a big campaign fails (``StoreCopy.read_apart`` raises): the first page
    is shown all the same, and the reader reads the whole copy in its own thread."""
    from ari_console.tui.snapshot import ReadApartFailed, StoreCopy

    drawn_before = []

    def failing(*args, **kw):
        drawn_before.append(app._page_drawn.is_set())
        raise ReadApartFailed("the first read failed: no interpreter")

    monkeypatch.setattr(StoreCopy, "read_apart", failing)
    camp = sample.build(tmp_path, n=60, running=4)
    seen = []

    class Recording(AriApp):
        DEFAULT_MODE = "queue"  # open on the queue: the whole read waits until its first page is drawn

        def _set_snapshot(self, snap):
            seen.append(snap)
            super()._set_snapshot(snap)

    app = Recording(camp.db_path, camp.config, clock=lambda: sample.NOW, refresh_s=3600,
                    first_page_above=0, first_page_rows=10)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot, lambda: table(app, "queue-table").row_count == 60)
        assert (seen[0].pending, len(seen[0].queue.rows)) == (50, 10), "the page came first"
        assert drawn_before == [True], "the open queue drew the page before the whole read started"
        assert app.first_read_where == "reader thread (the child failed: the first read failed: no interpreter)"

"""The operator's loop entirely in the console: a failure appears under "Needs a person", Enter shows
why, an override is applied from the console, the retry succeeds (the console runs the engine).

The node is this machine; the recipe is the sleeper stand-in (tests/data/recipes/sleeper.py), made
to fail its image stage by printing a real CASA log (tclean selecting 0 rows of a renumbered spw, from
the shared real logs); triage calls it an imaging failure, which the retry policy holds for an operator,
who gives the spw from the console.
"""

from __future__ import annotations

import time
from pathlib import Path

from ari_console import store
from ari_console.tui.app import AriApp
from ari_console.tui.screens.detail import DatasetScreen
from tests.test_engine import make_campaign, sleeper_spec
from tests.test_tui_app import async_test

UID = "uid://A001/X1/X7"
REAL_LOG = Path(__file__).parent / "data" / "triage" / "real" / "logs" / "kb_tclean_nrows0_parallel_transport.log"  # a copy of the shared real log
DECISIVE = "Parallel transport layer not initialized"


async def _until(pilot, cond, timeout=90.0, what="") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        await pilot.pause(0.2)
        if cond():
            return
    raise AssertionError(f"not in time: {what}")


@async_test
async def test_operator_loop_in_the_console_from_failure_to_success(tmp_path, monkeypatch):
    import ari_console.engine as engine_mod

    cfg = make_campaign(tmp_path, [(UID, "12m", {"sleeper": {"sleep_s": 0.5, "fail_stage": "image",
                                                             "fail_message": REAL_LOG.read_text()}})])
    monkeypatch.setattr(engine_mod.Engine, "__init__", _with_sleeper(engine_mod.Engine.__init__))
    app = AriApp(cfg.campaign.db_path, cfg, engine=True, refresh_s=0.3)
    db = store.open_db(cfg.campaign.db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        # 1. the failure appears under "Needs a person" on the dashboard
        await _until(pilot, lambda: app.snapshot and any(w == "held" and u == UID for w, u, _ in app.snapshot.attention),
                     what="the held data set on the dashboard")
        screen = app.export_screenshot().replace("&#160;", " ")
        assert "Needs a person" in screen and UID in screen
        assert "engine running in this console" in screen  # asked for (--engine): the header says so
        # 2. Enter on its queue row shows why: the decisive line and the fix
        await pilot.press("2")
        await _until(pilot, lambda: UID in app.screen.query_one("#queue-table").shown)
        await pilot.press("enter")
        await _until(pilot, lambda: isinstance(app.screen, DatasetScreen) and "fix:" in app.screen.text,
                     what="the detail screen")
        assert DECISIVE in app.screen.text and "imaging" in app.screen.text
        # 3. the operator gives the spw the tclean selection missed, from the console, 4. and retries
        await pilot.press("o")
        await _until(pilot, lambda: app.screen.query_one("#override-input").has_focus, what="the override line")
        await pilot.press(*"spw=0", "enter")
        await _until(pilot, lambda: (store.dataset(db, UID)["overrides"].get("params") or {}).get("spw") == 0,
                     what="the override in the store")
        await pilot.press("r")
        # the retry succeeds; its products (the sleeper makes no QA2 images) wait for a QA2 decision
        await _until(pilot, lambda: store.dataset(db, UID)["state"] == "review", what="the retry to succeed")
    attempts = store.attempts(db, uid=UID)
    db.conn.close()
    assert [a["state"] for a in attempts] == ["failed", "succeeded"]
    assert DECISIVE in (attempts[0]["excerpt"] or "") and attempts[0]["category"] == "imaging"


def _sleeper_with_overrides(spec, node, ds):
    """The sleeper stand-in: it fails as told until the operator gives the data set an spw."""
    out = sleeper_spec(spec, node, ds)
    if "spw" in ((ds.get("overrides") or {}).get("params") or {}):
        out["recipe"]["params"].pop("fail_stage", None)
    return out


def _with_sleeper(init):
    def patched(self, cfg, *args, **kw):
        kw.setdefault("adjust_spec", _sleeper_with_overrides)
        init(self, cfg, *args, **kw)
    return patched


@async_test
async def test_cancel_from_the_detail_screen_asks_first_then_stops_the_running_attempt_and_holds_it(tmp_path, monkeypatch):
    import ari_console.engine as engine_mod
    from ari_console.tui.screens.detail import ConfirmScreen

    cfg = make_campaign(tmp_path, [(UID, "12m", {"sleeper": {"sleep_s": 120}})])
    monkeypatch.setattr(engine_mod.Engine, "__init__", _with_sleeper(engine_mod.Engine.__init__))
    app = AriApp(cfg.campaign.db_path, cfg, engine=True, refresh_s=0.3)
    db = store.open_db(cfg.campaign.db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: any(a["handle"] and a["state"] == "running" for a in store.active_attempts(db)),
                     what="the attempt running")
        await pilot.press("2")
        await _until(pilot, lambda: UID in app.screen.query_one("#queue-table").shown)
        await pilot.press("enter")
        await _until(pilot, lambda: isinstance(app.screen, DatasetScreen) and "running" in app.screen.text,
                     what="the detail screen")
        await pilot.press("c")
        await _until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("n")  # changed my mind: the attempt goes on
        await pilot.pause(1.0)
        assert store.active_attempts(db) and not [e for e in store.events(db, UID) if e["kind"] == "operator"]
        await pilot.press("c")
        await _until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question again")
        await pilot.press("y")
        await _until(pilot, lambda: store.dataset(db, UID)["state"] == "held", what="the data set held")
    attempts = store.attempts(db, uid=UID)
    actions_done = [e["detail"]["action"] for e in store.events(db, UID) if e["kind"] == "operator"]
    db.conn.close()
    assert [a["state"] for a in attempts] == ["cancelled"] and actions_done == ["cancel"]

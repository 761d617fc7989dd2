"""The data-set detail screen (Enter), its actions, the help screen (? / F1)."""

from __future__ import annotations


import pytest

from ari_console import store
from ari_console.tui.screens.detail import DatasetScreen, HelpScreen, parse_override
from tests import sample_campaign as sample
from tests.test_tui_app import async_test, make_app, settle, table, wait_for


@pytest.fixture
def camp(tmp_path):
    return sample.build(tmp_path, n=60, running=4)


@async_test
async def test_enter_on_a_held_row_shows_why_and_an_override_from_the_console_reaches_the_store(camp):
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(app, pilot, lambda: table(app, "queue-table").row_count == 60)
        t = table(app, "queue-table")
        t.move_cursor(row=t.get_row_index(camp.held_uid))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetScreen) and "fix:" in app.screen.text)
        shown = app.screen.text
        assert camp.held_uid in shown and "held" in shown and "(decisive line of the attempt's log)" in shown
        await pilot.press("o")
        await wait_for(pilot, lambda: app.screen.query_one("#override-input").has_focus)
        await pilot.press(*"mem_gb=48 walltime_h=72", "enter")
        db = store.open_db(camp.db_path)
        await wait_for(pilot, lambda: store.dataset(db, camp.held_uid)["overrides"].get("mem_gb") == 48.0)
        assert store.dataset(db, camp.held_uid)["overrides"]["walltime_h"] == 72.0
        await pilot.press("u")
        await wait_for(pilot, lambda: store.dataset(db, camp.held_uid)["state"] == "queued")
        db.conn.close()


@async_test
async def test_question_mark_lists_every_key_of_the_screen(camp):
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await settle(app, pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        keys = dict(app.screen.rows)
        assert set("sorhulc/1?") <= set(keys), sorted(keys)
        assert keys["s"].startswith("Show one state at a time") and "detail" in keys["enter"]


def test_override_words_become_resources_node_and_recipe_parameters():
    assert parse_override("walltime_h=12 robust=0.5 mask=auto") == {
        "walltime_h": 12.0, "params": {"robust": 0.5, "mask": "auto"}}
    with pytest.raises(ValueError, match="mem_gb must be a number"):
        parse_override("mem_gb=lots")

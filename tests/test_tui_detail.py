"""The data-set detail screen (Enter), its actions, the help screen (? / F1)."""

from __future__ import annotations


import pytest

from ari_console import store
from ari_console.tui.screens.detail import ConfirmScreen, DatasetScreen, HelpScreen, parse_override
from tests import sample_campaign as sample
from tests.test_tui_app import _select_qa2_pair_of, _waiting_in_review, async_test, db_state, make_app, settle, table, wait_for


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


@async_test
async def test_u_on_the_qa2_screen_asks_then_puts_a_delivery_back_in_review_and_the_attention_card_lists_it(camp):
    uid = sample.uid_of(4)  # delivered, with QA2 pairs in the sample
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await _select_qa2_pair_of(app, pilot, uid)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        keys = dict(app.screen.rows)
        assert {"a", "r", "U"} <= set(keys) and "QA2 review again" in keys["U"]
        await pilot.press("escape")
        await pilot.press("U")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")  # changed my mind: still delivered
        await pilot.pause(0.3)
        assert db_state(camp, uid) == "succeeded"
        await pilot.press("U")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: db_state(camp, uid) == "review")
        await pilot.press("1")
        await settle(app, pilot, lambda: any(w == "review" and u == uid for w, u, _ in app.snapshot.attention))
        card = str(app.screen.query_one("#attention").render()).replace("\n", " ")
        assert f"review {uid}: un-accepted by an operator" in card
        await pilot.press("6")  # and it can be accepted again
        await _select_qa2_pair_of(app, pilot, uid)
        await pilot.press("a")
        await wait_for(pilot, lambda: db_state(camp, uid) == "succeeded")


@async_test
async def test_u_on_the_detail_screen_takes_the_delivery_back_and_the_detail_shows_the_decision(camp):
    uid = sample.uid_of(4)
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        app.show_dataset(uid)
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetScreen) and "succeeded" in app.screen.text)
        # the footer composes its keys after the screen's text shows (on a loaded machine, a moment later)
        await wait_for(pilot, lambda: "Un-accept" in " ".join(str(k.render()) for k in app.screen.query("FooterKey")))
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        keys = dict(app.screen.rows)
        assert {"r", "c", "h", "u", "o", "U"} <= set(keys) and "QA2 review again" in keys["U"], sorted(keys)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetScreen))
        await pilot.press("U")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetScreen) and "unaccept attempt" in app.screen.text)
        assert db_state(camp, uid) == "review" and f"{uid} " in app.screen.text
        assert "un-accepted by an operator: from the console" in app.screen.text
        await pilot.press("U")  # a second time: a clear error, nothing changes
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: any("already waits for a QA2 decision" in n.message for n in app._notifications))
        assert db_state(camp, uid) == "review"


def test_override_words_become_resources_node_and_recipe_parameters():
    assert parse_override("walltime_h=12 robust=0.5 mask=auto") == {
        "walltime_h": 12.0, "params": {"robust": 0.5, "mask": "auto"}}
    with pytest.raises(ValueError, match="mem_gb must be a number"):
        parse_override("mem_gb=lots")


@async_test
async def test_enter_on_a_triage_failure_or_a_qa2_pair_opens_that_data_sets_detail(camp):
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        await settle(app, pilot, lambda: table(app, "failures-table").row_count > 0)
        t = table(app, "failures-table")
        failed = app.screen.by_id[int(t.selected_key)]["uid"]
        await pilot.press("enter")  # on the group: into its data sets
        await wait_for(pilot, lambda: app.focused is t)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetScreen) and failed in app.screen.text)
        assert app.screen.uid == failed and "fix:" in app.screen.text
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, DatasetScreen))
        uid = sample.uid_of(4)
        await _select_qa2_pair_of(app, pilot, uid)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetScreen) and "QA2 " in app.screen.text)
        assert app.screen.uid == uid


def _unverifiable_in_review(camp) -> str:
    """A queued data set whose new products had no QA2 image to compare: in review, on no QA2 screen row."""
    with store.open_db(camp.db_path, create=False) as db:
        uid = store.datasets(db, state="queued")[0]["uid"]
        assert not store.qa2_results(db, uid)
    _waiting_in_review(camp, uid, "no QA2 products to compare: unverifiable")
    return uid


@async_test
async def test_a_review_without_qa2_pairs_is_accepted_or_rejected_from_its_detail_screen(camp):
    from ari_console.tui.screens.node_picker import NodePicker

    uid = _unverifiable_in_review(camp)
    app = make_app(camp)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        app.show_dataset(uid)
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetScreen) and "unverifiable" in app.screen.text)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, NodePicker))
        await pilot.press("escape")  # keep it in review
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetScreen))
        assert db_state(camp, uid) == "review"
        await pilot.press("a")
        await wait_for(pilot, lambda: db_state(camp, uid) == "succeeded")
        await wait_for(pilot, lambda: "accept attempt" in app.screen.text)
        await pilot.press("U")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: db_state(camp, uid) == "review")
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetScreen))
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, NodePicker))
        await pilot.press("down", "enter")  # the second choice: re-image
        await wait_for(pilot, lambda: db_state(camp, uid) == "queued")


@async_test
async def test_at_80_columns_the_detail_footer_keeps_whole_keys_and_help(camp):
    app = make_app(camp)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.show_dataset(sample.uid_of(4))
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetScreen) and "succeeded" in app.screen.text)
        await pilot.pause(0.3)
        keys = list(app.screen.query("FooterKey"))
        shown = {k.key for k in keys}
        assert {"escape", "r", "c", "h", "u", "question_mark"} <= shown, shown
        assert max(k.region.right for k in keys) <= 80, "no key of the footer is cut"

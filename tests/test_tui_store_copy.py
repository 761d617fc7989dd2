"""The console's store copy: reading only what changed gives what a full read gives."""

from __future__ import annotations

from ari_console import alma, readmodel, store
from ari_console.tui.snapshot import StoreCopy, build_snapshot, Eta
from tests import sample_campaign as sample


def _snapshot(copy: StoreCopy, now: float, changed=None):
    return build_snapshot(copy, now, 1, {}, 120.0, Eta(), changed)


def _same(a, b) -> None:
    assert a.queue.rows == b.queue.rows
    assert list(a.queue.rows) == list(b.queue.rows), "queue order (oldest first) is kept"
    assert a.dashboard == b.dashboard
    assert sorted(f["id"] for f in a.failures) == sorted(f["id"] for f in b.failures)
    assert a.attempt_rows == b.attempt_rows
    assert a.queue.texts == b.queue.texts, "the `/` filter searches the rows on screen"


def test_a_refresh_that_reads_only_changed_rows_shows_what_a_full_read_shows(tmp_path):
    camp = sample.build(tmp_path, n=60, running=4)
    db = store.open_db(camp.db_path)
    now = sample.NOW
    copy = StoreCopy()
    copy.read(db, now)
    queued = [d["uid"] for d in store.datasets(db, state="queued")]
    running = store.active_attempts(db)
    # what an engine does between two refreshes: launch, fail, hold, reclassify, import
    aid = store.create_attempt(db, queued[0], "here", now + 1)
    store.update_attempt(db, aid, now + 1, state="running", stage="download", started_at=now + 1, heartbeat_at=now + 1)
    store.update_attempt(db, running[0]["id"], now + 2, state="failed", ended_at=now + 2, category="memory",
                         signature="Killed", excerpt="out of memory")
    store.set_dataset_state(db, running[0]["uid"], "held", now + 2, reason="memory failure")
    store.update_attempt(db, camp.failed_attempt, now + 3, category="walltime")  # an ended attempt changes again
    store.update_attempt(db, running[1]["id"], now + 3, state="succeeded", ended_at=now + 3)
    store.set_dataset_state(db, running[1]["uid"], "succeeded", now + 3)
    store.import_datasets(db, [alma.DataSet("uid://A001/X9/X1", "2019.1.00001.S", "12m", 6, 3.0)], "more.csv", now + 4)
    changed = copy.read(db, now + 10)
    assert queued[0] in changed and running[0]["uid"] in changed and "uid://A001/X9/X1" in changed
    fresh = StoreCopy()
    fresh.read(db, now + 10)
    _same(_snapshot(copy, now + 10, changed), _snapshot(fresh, now + 10))
    assert copy.read(db, now + 12) == set(), "nothing written: nothing re-read"
    db.conn.close()


def test_status_success_rates_match_the_full_statistics(tmp_path):
    camp = sample.build(tmp_path, n=120, running=4)
    db = store.open_db(camp.db_path)
    full, fast = readmodel.stats(db), store.status(db)
    assert fast["success_first_try"] == full["success_first_try"] is not None
    assert fast["success_after_retries"] == full["success_after_retries"]
    db.conn.close()


def test_the_eta_made_in_a_child_process_is_the_estimate_of_the_console_and_a_failure_reads_na(tmp_path):
    from ari_console.tui.snapshot import compute_eta, estimate_apart

    camp = sample.build(tmp_path, n=60, running=4)
    configs = {n.name: n for n in camp.config.nodes}
    with store.open_db(camp.db_path) as db:
        nodes = store.nodes(db)
        here = compute_eta(db, nodes, sample.NOW, configs)
    apart = estimate_apart(camp.db_path, nodes, sample.NOW, configs)
    assert apart == here and apart.finish_at is not None
    gone = estimate_apart(tmp_path / "elsewhere" / "ari.db", nodes, sample.NOW, configs)
    assert gone.finish_at is None and gone.text.startswith("n/a (the estimator failed:") and "elsewhere" in gone.text


def test_the_queue_filter_on_kept_search_texts_keeps_the_rows_the_plain_matcher_keeps(tmp_path):
    from ari_console.tui import views

    camp = sample.build(tmp_path, n=120, running=4)
    with store.open_db(camp.db_path) as db:
        copy = StoreCopy()
        copy.read(db, sample.NOW)
    queue = _snapshot(copy, sample.NOW).queue
    names = views.QueueFields.NAMES
    for text in ("X1f4/X1", "x1F4/x2", "!x1f4/X3", "uid://A001", "FAILED", "^failed$", "stale", "2 GB", "state:held", "state:fail X1",
                 "!state:running ws", "memory|walltime", "category:mem !", "project:2016 node:hpc", "X1.", "[", "Ång"):
        flt = views.parse_filter(text, names)
        kept = views.filter_rows(flt, queue.rows, queue.fields, names, queue.texts)
        want = [k for k, cells in queue.rows.items() if views.matches(flt, cells, queue.fields[k])]
        assert list(kept) == want, text
    assert 0 < len(views.filter_rows(views.parse_filter("x1F4/x1"), queue.rows, queue.fields, names, queue.texts)) < 120


def test_the_first_page_shows_the_oldest_rows_exactly_as_the_whole_read_then_does(tmp_path):
    camp = sample.build(tmp_path, n=60, running=4)
    db = store.open_db(camp.db_path)
    page, pending = StoreCopy.first_page(db, sample.NOW, 10)
    whole = StoreCopy()
    whole.read(db, sample.NOW)
    rows = whole.queue_rows(sample.NOW, None)
    assert pending == 50 and len(page.rows) == 10
    assert list(page.rows) == list(rows)[:10], "the page is the queue's first rows, in queue order"
    assert page.rows == {uid: rows[uid] for uid in page.rows}, "its cells do not change when the whole read lands"
    assert page.texts == {uid: whole.texts[uid] for uid in page.rows}
    assert page.totals == whole.totals, "the campaign's totals are exact already"
    snap = build_snapshot(page, sample.NOW, 1, {}, 120.0, Eta(), pending=pending)
    assert snap.pending == 50 and len(snap.queue.rows) == 10
    db.conn.close()


def test_a_first_read_made_in_a_child_process_is_the_copy_a_read_here_makes_and_goes_on_folding(tmp_path, monkeypatch):
    """The console's first read at 100,000 data sets runs in a child (``read_apart``): the copy it hands
    back, in pieces, must be the one ``read`` makes, its repeated strings still one object each, and
    later reads must fold in what changed after it as they do for a copy read here."""
    camp = sample.build(tmp_path, n=60, running=4)
    monkeypatch.setattr(StoreCopy, "PIECE", 7)  # the big mappings come back in several pieces, as at 100,000
    db = store.open_db(camp.db_path)
    now = sample.NOW
    here = StoreCopy()
    here.read(db, now)
    apart = StoreCopy.read_apart(camp.db_path, now)
    assert apart.rev == here.rev is not None
    for name in ("datasets", "latest", "counts", "first", "success_at", "rows", "texts", "widths", "totals",
                 "failures", "open_failures", "waiting", "nodes", "qa2", "qa2_rows", "active", "recent"):
        assert getattr(apart, name) == getattr(here, name), name
    assert list(apart.rows) == list(here.rows), "queue order (oldest first) is kept across pieces"
    states = [cells[5] for cells in apart.rows.values() if cells[5] == "queued"]
    assert len(states) > 1 and all(s is states[0] for s in states), "a repeated cell stays one string"
    _same(_snapshot(apart, now), _snapshot(here, now))
    running = store.active_attempts(db)
    store.update_attempt(db, running[0]["id"], now + 2, state="failed", ended_at=now + 2, category="memory",
                         signature="Killed", excerpt="out of memory")
    store.set_dataset_state(db, running[0]["uid"], "held", now + 2, reason="memory failure")
    changed_here, changed_apart = here.read(db, now + 10), apart.read(db, now + 10)
    assert changed_apart == changed_here and running[0]["uid"] in changed_apart
    _same(_snapshot(apart, now + 10, changed_apart), _snapshot(here, now + 10, changed_here))
    db.conn.close()


def test_a_first_read_apart_that_fails_says_why_and_one_stopped_gives_nothing(tmp_path):
    import threading

    import pytest

    from ari_console.tui.snapshot import ReadApartFailed

    with pytest.raises(ReadApartFailed, match="the first read failed: .*elsewhere"):
        StoreCopy.read_apart(tmp_path / "elsewhere" / "ari.db", sample.NOW)
    camp = sample.build(tmp_path, n=60, running=4)
    stop = threading.Event()
    stop.set()
    assert StoreCopy.read_apart(camp.db_path, sample.NOW, stop=stop) is None

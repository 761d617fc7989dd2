"""The campaign store: schema, idempotent imports, events, and consistent reads under writes."""

import multiprocessing
import sqlite3
import time

import pytest

from ari_console import store
from ari_console.alma import DataSet
from ari_console.config import parse_config
from ari_console.errors import UserError


def ds(n: int, **kw) -> DataSet:
    return DataSet(uid=f"uid://A001/X1296/X{n:x}", project="2016.1.00123.S", **kw)


def test_new_database_is_at_the_current_schema_in_wal_mode(tmp_path):
    db = store.open_db(tmp_path / "ari.db")
    assert store.schema_version(db) == store.SCHEMA_VERSION
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"datasets", "nodes", "attempts", "events", "log_offsets", "products", "qa2_results"} <= set(db.table_names())


def test_reopening_does_not_migrate_again_and_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "ari.db"
    store.import_datasets(store.open_db(path), [ds(1)], "a.csv", now=1.0)
    assert len(store.datasets(store.open_db(path))) == 1
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(UserError, match="newer than this ari-console knows"):
        store.open_db(path)


def test_import_is_idempotent_and_never_resets_state(tmp_path):
    db = store.open_db(tmp_path / "ari.db")
    first = store.import_datasets(db, [ds(1, size_gb=10), ds(2)], "a.csv", now=1.0)
    assert (len(first.added), len(first.updated), len(first.unchanged)) == (2, 0, 0)
    store.set_dataset_state(db, "uid://A001/X1296/X1", "held", now=2.0, reason="operator")
    again = store.import_datasets(db, [ds(1, size_gb=10), ds(2)], "a.csv", now=3.0)
    assert (again.added, again.updated) == ([], [])
    changed = store.import_datasets(db, [ds(1, size_gb=11)], "b.csv", now=4.0)
    assert changed.updated == ["uid://A001/X1296/X1"]
    row = store.dataset(db, "uid://A001/X1296/X1")
    assert (row["state"], row["size_gb"], row["reason"]) == ("held", 11.0, "operator")
    assert [e["kind"] for e in store.events(db, uid="uid://A001/X1296/X1")] == ["imported", "state", "metadata"]


def test_a_failing_import_leaves_nothing_behind(tmp_path):
    db = store.open_db(tmp_path / "ari.db")

    def rows():
        yield ds(1)
        yield ds(2)
        raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError):
        store.import_datasets(db, rows(), "a.csv", now=1.0)
    assert store.datasets(db) == []
    assert store.events(db) == []


def test_state_changes_are_recorded_as_events_and_totals_follow(tmp_path):
    db = store.open_db(tmp_path / "ari.db")
    store.import_datasets(db, [ds(i) for i in range(1, 6)], "a.csv", now=1.0)
    store.set_dataset_state(db, "uid://A001/X1296/X1", "running", now=2.0)
    store.set_dataset_state(db, "uid://A001/X1296/X1", "succeeded", now=3.0)
    store.set_dataset_state(db, "uid://A001/X1296/X2", "held", now=3.0, reason="missing caltable")
    totals = store.status(db)["totals"]
    assert totals["queued"] == 3 and totals["succeeded"] == 1 and totals["held"] == 1
    hist = [(e["old"], e["new"]) for e in store.events(db, uid="uid://A001/X1296/X1") if e["kind"] == "state"]
    assert hist == [("queued", "running"), ("running", "succeeded")]
    with pytest.raises(UserError, match="no such data set"):
        store.set_dataset_state(db, "uid://A001/X9/X9", "held", now=4.0)


def test_nodes_follow_the_config_and_keep_their_drain_state(tmp_path):
    db = store.open_db(tmp_path / "ari.db")
    cfg = parse_config('[[node]]\nname = "a"\n[[node]]\nname = "b"\nslots = 4\n', tmp_path / "ari.toml")
    store.sync_nodes(db, cfg.nodes, now=1.0)
    db.conn.execute("UPDATE nodes SET drained = 1, drained_reason = 'disk' WHERE name = 'a'")
    cfg2 = parse_config('[[node]]\nname = "a"\nslots = 2\n', tmp_path / "ari.toml")
    store.sync_nodes(db, cfg2.nodes, now=2.0)
    rows = store.nodes(db)
    assert [(r["name"], r["slots"], r["drained"]) for r in rows] == [("a", 2, True)]
    assert [r["name"] for r in store.nodes(db, include_removed=True)] == ["a", "b"]


def _writer(path: str, rounds: int) -> None:
    """Move 50 data sets between two states, all at once, ``rounds`` times."""
    db = store.open_db(path)
    for r in range(rounds):
        new = "running" if r % 2 == 0 else "queued"
        with store.transaction(db, immediate=True):
            for i in range(1, 51):
                store.set_dataset_state(db, f"uid://A001/X1296/X{i:x}", new, now=float(r))


def test_readers_never_see_a_half_written_transition(tmp_path):
    path = tmp_path / "ari.db"
    db = store.open_db(path)
    store.import_datasets(db, [ds(i) for i in range(1, 51)], "a.csv", now=0.0)
    proc = multiprocessing.get_context("spawn").Process(target=_writer, args=(str(path), 40))
    proc.start()
    reader = store.open_db(path)
    seen = set()
    deadline = time.time() + 60
    while proc.is_alive() and time.time() < deadline:
        totals = store.status(reader)["totals"]
        seen.add((totals["queued"], totals["running"]))
    proc.join(30)
    assert proc.exitcode == 0
    assert seen <= {(50, 0), (0, 50)}, f"torn reads: {seen - {(50, 0), (0, 50)}}"
    assert len(store.events(reader, limit=100000)) == 50 + 40 * 50


def test_a_data_set_never_gets_two_active_attempts(tmp_path):
    db = store.open_db(tmp_path / "ari.db")
    store.import_datasets(db, [ds(1)], "a.csv", now=0.0)
    first = store.create_attempt(db, "uid://A001/X1296/X1", "n1", now=1.0, mem_gb=8)
    assert store.dataset(db, "uid://A001/X1296/X1")["state"] == "running"
    with pytest.raises(store.AlreadyRunning):
        store.create_attempt(db, "uid://A001/X1296/X1", "n2", now=2.0)
    store.update_attempt(db, first, now=3.0, state="failed", category="memory")
    second = store.create_attempt(db, "uid://A001/X1296/X1", "n2", now=4.0)
    assert [a["id"] for a in store.attempts(db, uid="uid://A001/X1296/X1")] == [first, second]
    assert [a["id"] for a in store.active_attempts(db)] == [second]


def test_attempt_updates_write_only_changes_and_record_transitions(tmp_path):
    db = store.open_db(tmp_path / "ari.db")
    store.import_datasets(db, [ds(1)], "a.csv", now=0.0)
    a = store.create_attempt(db, "uid://A001/X1296/X1", "n1", now=1.0)
    assert store.update_attempt(db, a, now=2.0, state="running", stage="download", handle={"pid": 5})
    assert not store.update_attempt(db, a, now=3.0, state="running", stage="download", handle={"pid": 5})
    assert store.update_attempt(db, a, now=4.0, stage="image", heartbeat_at=4.0)
    assert not store.update_attempt(db, a, now=5.0, stage="image")
    store.update_attempt(db, a, now=6.0, state="failed", category="imaging", signature="tclean failed")
    kinds = [(e["kind"], e["old"], e["new"]) for e in store.events(db, uid="uid://A001/X1296/X1")
             if e["attempt_id"] == a]
    assert kinds == [("attempt", None, "pending"), ("attempt", "pending", "running"), ("stage", None, "download"),
                     ("stage", "download", "image"), ("attempt", "running", "failed")]
    row = store.attempt(db, a)
    assert row["handle"] == {"pid": 5} and row["category"] == "imaging"


def test_accepting_an_attempt_delivers_it_and_qa2_results_come_back_discrepant_first(tmp_path):
    db = store.open_db(tmp_path / "ari.db")
    store.import_datasets(db, [ds(1)], "a.csv", now=0.0)
    a = store.create_attempt(db, "uid://A001/X1296/X1", "n1", now=1.0)
    store.update_attempt(db, a, now=2.0, state="succeeded")
    store.add_products(db, a, "uid://A001/X1296/X1", [{"path": "x.fits", "sha256": "ab", "size": 10}])
    store.accept_attempt(db, "uid://A001/X1296/X1", a, now=3.0)
    store.save_qa2(db, "uid://A001/X1296/X1", a, [
        {"pl": "p1", "qa2": "q1", "field": "F", "spw": [16, 18], "specmode": "cont", "flux_ratio": 1.01,
         "verdict": "consistent"},
        {"pl": "p2", "qa2": "q2", "field": "F", "spw": "17", "specmode": "cube", "flux_ratio": 1.6,
         "verdict": "discrepant", "note": "flux scale"}])
    row = store.dataset(db, "uid://A001/X1296/X1")
    assert (row["state"], row["accepted_attempt"]) == ("succeeded", a)
    results = store.qa2_results(db, "uid://A001/X1296/X1")
    assert [(r["verdict"], r["spw"]) for r in results] == [("discrepant", "17"), ("consistent", "16,18")]
    assert results[0]["detail"] == {"note": "flux scale"}
    assert [p["path"] for p in store.products(db, a)] == ["x.fits"]


def test_a_v1_database_gains_verdict_rule_versions_and_keeps_its_rows(tmp_path):
    path = tmp_path / "ari.db"
    raw = sqlite3.connect(path, isolation_level=None)
    store.MIGRATIONS[0](raw)
    raw.execute("PRAGMA user_version = 1")
    raw.execute("INSERT INTO datasets (uid, project, state, created_at, updated_at) "
                "VALUES ('uid://A001/X1/X1', '2016.1.00123.S', 'queued', 1.0, 1.0)")
    raw.close()
    with store.open_db(path) as db:
        assert store.schema_version(db) == store.SCHEMA_VERSION
        assert [d["uid"] for d in store.datasets(db)] == ["uid://A001/X1/X1"]
        aid = store.create_attempt(db, "uid://A001/X1/X1", "n", 2.0)
        store.update_attempt(db, aid, 3.0, state="failed", category="memory", triage_rules="abc123")
        assert store.attempt(db, aid)["triage_rules"] == "abc123"
        store.save_qa2(db, "uid://A001/X1/X1", aid, [{"field": "f", "verdict": "consistent"}], rules_version="q1")
        assert [r["rules_version"] for r in store.qa2_results(db)] == ["q1"]


def test_the_typed_records_name_every_column_of_their_table(tmp_path):
    with store.open_db(tmp_path / "ari.db") as db:
        for table, record in (("attempts", store.AttemptRow), ("datasets", store.DataSetRow)):
            columns = [r[1] for r in db.conn.execute(f"PRAGMA table_info({table})")]
            assert columns == list(record.__annotations__), table


def _counted(db) -> dict:
    """(state, first outcome) -> data sets, counted the slow way (a scan of every data set)."""
    return {(s, o): n for s, o, n in db.conn.execute(
        "SELECT state, first_outcome, COUNT(*) FROM datasets GROUP BY 1, 2")}


def test_the_status_tally_follows_every_transition_and_an_older_file_gains_it(tmp_path):
    from tests import sample_campaign as sample

    camp = sample.build(tmp_path / "c", n=120, running=5)
    with store.open_db(camp.db_path) as db:
        assert store.tally(db) == _counted(db) and len(store.tally(db)) > 4
        queued = store.datasets(db, state="queued")[0]["uid"]
        aid = store.create_attempt(db, queued, "here", 10.0)  # queued -> running
        assert store.tally(db) == _counted(db)
        store.update_attempt(db, aid, 11.0, state="lost", ended_at=11.0)  # first outcome: lost
        store.set_dataset_state(db, queued, "held", 11.0, reason="node_lost failure")
        assert store.tally(db) == _counted(db)
        assert store.counts(db)["held"] == len(store.datasets(db, state="held"))
        with store.transaction(db, immediate=True):
            for table in ("events", "attempts", "datasets"):  # a data set removed by hand
                db.conn.execute(f"DELETE FROM {table} WHERE uid = ?", (queued,))
        assert store.tally(db) == _counted(db)
        want = store.tally(db)
        # a file from before the tally: the migration counts what is there
        with store.transaction(db, immediate=True):
            for name in ("insert", "delete", "update"):
                db.conn.execute(f"DROP TRIGGER datasets_tally_{name}")
            db.conn.execute("DROP TABLE dataset_tally")
            db.conn.execute("DROP INDEX datasets_state_updated")
            db.conn.execute(f"PRAGMA user_version = {store.MIGRATIONS.index(store._tally)}")
    with store.open_db(camp.db_path) as db:
        assert store.schema_version(db) == store.SCHEMA_VERSION and store.tally(db) == want


def _stats_the_slow_way(db) -> tuple[dict, dict]:
    """(uid -> (attempts, first id, newest id, first success's end), category -> failed or lost attempts),
    aggregated over every attempt."""
    per_uid = {r[0]: tuple(r[1:]) for r in db.conn.execute(
        "SELECT uid, COUNT(*), MIN(id), MAX(id), MIN(CASE WHEN state = 'succeeded' THEN COALESCE(ended_at, created_at)"
        " END) FROM attempts GROUP BY uid")}
    failures = dict(db.conn.execute("SELECT COALESCE(category, 'unknown'), COUNT(*) FROM attempts"
                                    " WHERE state IN ('failed', 'lost') GROUP BY 1"))
    return per_uid, failures


def _stats_kept(db) -> tuple[dict, dict]:
    per_uid = {r[0]: tuple(r[1:]) for r in db.conn.execute("SELECT uid, n, first_id, latest_id, success_at"
                                                           " FROM attempt_stats")}
    return per_uid, store.attempt_summary_failures(db)


def test_the_attempt_stats_follow_launches_failures_reclassification_and_undo_and_an_older_file_gains_them(tmp_path):
    from tests import sample_campaign as sample

    camp = sample.build(tmp_path / "c", n=120, running=5)
    with store.open_db(camp.db_path) as db:
        assert _stats_kept(db) == _stats_the_slow_way(db) and len(_stats_kept(db)[1]) >= 3
        queued = [d["uid"] for d in store.datasets(db, state="queued")]
        aid = store.create_attempt(db, queued[0], "here", 10.0)  # first attempt of a data set
        store.update_attempt(db, aid, 11.0, state="failed", ended_at=11.0, category="memory")
        assert _stats_kept(db) == _stats_the_slow_way(db)
        store.update_attempt(db, aid, 12.0, category="walltime")  # triage reclassifies it
        assert _stats_kept(db) == _stats_the_slow_way(db)
        store.set_dataset_state(db, queued[0], "queued", 12.0)
        second = store.create_attempt(db, queued[0], "hpc", 13.0)
        store.update_attempt(db, second, 14.0, state="succeeded", ended_at=20.0)
        per_uid, failures = _stats_kept(db)
        assert per_uid[queued[0]] == (2, aid, second, 20.0) and (per_uid, failures) == _stats_the_slow_way(db)
        launch = store.create_attempt(db, queued[1], "here", 15.0)
        assert _stats_kept(db)[0][queued[1]] == (1, launch, launch, None)
        store.undo_launch(db, launch, 16.0, kind="launch-failed", reason="ssh refused")  # the attempt goes
        assert queued[1] not in _stats_kept(db)[0] and _stats_kept(db) == _stats_the_slow_way(db)
        want = _stats_kept(db)
        with store.transaction(db, immediate=True):  # a file from before the stats: the migration counts them
            db.conn.execute("DROP TABLE attempt_stats")
            db.conn.execute("DROP TABLE failure_tally")
            db.conn.execute(f"PRAGMA user_version = {store.MIGRATIONS.index(store._attempt_stats)}")
    with store.open_db(camp.db_path) as db:
        assert store.schema_version(db) == store.SCHEMA_VERSION and _stats_kept(db) == want

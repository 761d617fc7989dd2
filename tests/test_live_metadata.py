"""The live campaign learns runtimes from the archive's metadata as the replay does (issue 22).

The store keeps spws, channels per spw, mosaic and execution blocks beside size,
array and band (unknown stays NULL); the engine's inputs (``readmodel.to_scheduler``,
``readmodel.history``) carry them to the same prediction code the replay uses.
"""

import json
import sqlite3

from ari_console import readmodel, scheduler, store
from ari_console.alma import DataSet, read_datasets_csv
from ari_console.config import parse_config
from ari_console.estimate import attempt

CONFIG = '[campaign]\nname = "t"\n[[node]]\nname = "n1"\nslots = 2\nmem_gb = 64\n'


def uid(n: int) -> str:
    return f"uid://A001/X1296/X{n:x}"


def test_a_catalogue_fills_the_metadata_columns_and_unknown_stays_null(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text("uid,project,size_gb,n_spw,n_chan,is_mosaic,n_eb\n"
                    f"{uid(1)},2016.1.00123.S,40,4,1920,false,2\n"
                    f"{uid(2)},2016.1.00123.S,40,,,,\n")
    db = store.open_db(tmp_path / "ari.db")
    store.import_datasets(db, read_datasets_csv(path), "cat.csv", now=1.0)
    rows = {r["uid"]: r for r in store.queue(db)}
    assert (rows[uid(1)]["n_spw"], rows[uid(1)]["n_chan"], rows[uid(1)]["is_mosaic"], rows[uid(1)]["n_eb"]) == \
        (4, 1920, 0, 2)
    assert (rows[uid(2)]["n_spw"], rows[uid(2)]["n_chan"], rows[uid(2)]["is_mosaic"], rows[uid(2)]["n_eb"]) == \
        (None, None, None, None)
    first = readmodel.to_scheduler(rows[uid(1)], 0)
    assert (first.n_spw, first.n_chan, first.is_mosaic, first.n_eb) == (4, 1920, False, 2)
    # a later catalogue that knows more fills what was unknown, and says so in the events
    path.write_text(f"uid,project,size_gb,n_spw,is_mosaic\n{uid(2)},2016.1.00123.S,40,8,T\n")
    result = store.import_datasets(db, read_datasets_csv(path), "cat.csv", now=2.0)
    assert result.updated == [uid(2)]
    second = readmodel.to_scheduler(next(r for r in store.queue(db) if r["uid"] == uid(2)), 0)
    assert (second.n_spw, second.n_chan, second.is_mosaic) == (8, None, True)


def test_an_older_state_file_gains_the_columns_from_what_its_catalogue_kept(tmp_path):
    path = tmp_path / "ari.db"
    raw = sqlite3.connect(path, isolation_level=None)
    for migration in store.MIGRATIONS[:4]:  # the schema before the metadata columns
        migration(raw)
    raw.execute("PRAGMA user_version = 4")
    for n, extra in ((1, {"n_spw": "4", "n_chan": "960", "is_mosaic": "yes", "note": "x"}),
                     (2, {"n_spw": "lots"}), (3, {})):
        raw.execute("INSERT INTO datasets (uid, project, state, extra, created_at, updated_at)"
                    " VALUES (?, '2016.1.00123.S', 'queued', ?, 1, 1)", (uid(n), json.dumps(extra)))
    raw.close()
    db = store.open_db(path)
    assert store.schema_version(db) == store.SCHEMA_VERSION
    rows = {r["uid"]: r for r in store.queue(db)}
    assert (rows[uid(1)]["n_spw"], rows[uid(1)]["n_chan"], rows[uid(1)]["is_mosaic"]) == (4, 960, 1)
    assert rows[uid(2)]["n_spw"] is None and rows[uid(3)]["n_spw"] is None  # unreadable or absent: unknown


def _finish(db, n: int, hours: float, state: str = "succeeded", category: str | None = None,
            peak: float | None = 10.0, mem_gb: float | None = None) -> None:
    a = store.create_attempt(db, uid(n), "n1", now=0.0, mem_gb=mem_gb)
    store.update_attempt(db, a, now=hours * 3600, state=state, category=category, started_at=0.0,
                         ended_at=hours * 3600, peak_mem_gb=peak)


def test_the_engine_predicts_from_channels_and_mosaics_exactly_as_the_replay_does(tmp_path):
    cfg = parse_config(CONFIG, tmp_path / "ari.toml")
    db = store.open_db(tmp_path / "ari.db")
    # Hours grow with the total channels and double for a mosaic; the size says nothing.
    done = [DataSet(uid(n), "2016.1.00123.S", "12m", 6, 40.0, n_spw=4, n_chan=240 * (1 + n % 8),
                    is_mosaic=n % 3 == 0, n_eb=1) for n in range(1, 25)]
    waiting = [DataSet(uid(100), "2016.1.00123.S", "12m", 6, 40.0, n_spw=4, n_chan=240, is_mosaic=False, n_eb=1),
               DataSet(uid(101), "2016.1.00123.S", "12m", 6, 40.0, n_spw=4, n_chan=1920, is_mosaic=True, n_eb=1),
               DataSet(uid(102), "2016.1.00123.S", "12m", 6, 40.0)]  # nothing known beyond size
    store.import_datasets(db, done + waiting, "cat.csv", now=0.0)
    truth = {d.uid: 0.01 * d.n_chan * (2.0 if d.is_mosaic else 1.0) for d in done}
    for n, d in enumerate(done, start=1):
        _finish(db, n, truth[d.uid])
    nodes = {n.name: n for n in cfg.nodes}
    live_hist = readmodel.history(db, nodes)
    live_queue = readmodel.scheduler_queue(db, store.queue(db))
    live = scheduler.predict_all(live_queue, live_hist)
    # the replay's inputs for the same campaign: its DataSets and the history it records
    replay_hist = [attempt(scheduler.DataSet(d.uid, size_gb=d.size_gb, array=d.array, band=d.band, n_spw=d.n_spw,
                                             n_chan=d.n_chan, is_mosaic=d.is_mosaic, n_eb=d.n_eb),
                           truth[d.uid], 1.0, "ok", 10.0) for d in done]
    replay_queue = [scheduler.DataSet(d.uid, size_gb=d.size_gb, array=d.array, band=d.band, n_spw=d.n_spw,
                                      n_chan=d.n_chan, is_mosaic=d.is_mosaic, n_eb=d.n_eb) for d in waiting]
    replay = scheduler.predict_all(replay_queue, replay_hist)
    assert live_hist == replay_hist
    assert {u: (p.median_h, p.hours, p.mem_gb) for u, p in live.items()} == \
        {u: (p.median_h, p.hours, p.mem_gb) for u, p in replay.items()}
    small, big = live[uid(100)], live[uid(101)]
    assert small.source == "history"
    assert abs(small.median_h - 2.4) < 0.3 and abs(big.median_h - 38.4) / 38.4 < 0.15


def test_a_memory_kill_teaches_the_memory_it_ran_under(tmp_path):
    cfg = parse_config(CONFIG, tmp_path / "ari.toml")
    db = store.open_db(tmp_path / "ari.db")
    store.import_datasets(db, [DataSet(uid(1), "2016.1.00123.S", size_gb=40.0)], "cat.csv", now=0.0)
    _finish(db, 1, 3.0, state="failed", category="memory", peak=None, mem_gb=32.0)
    (killed,) = readmodel.history(db, {n.name: n for n in cfg.nodes})
    assert (killed.outcome, killed.peak_mem_gb, killed.hours) == ("memory", 32.0, 3.0)
    pred = scheduler.predict(scheduler.DataSet(uid(1), size_gb=40.0), [killed])
    assert pred.mem_gb > 32.0  # the retry goes where more than 32 GB is


def test_per_spw_obscore_rows_of_two_sources_count_each_window_once():
    from ari_console.archive.client import aggregate_rows, dataset_from_row

    rows = [{"member_ous_uid": uid(1), "proposal_id": "2016.1.00123.S", "obs_id": f"{uid(1)}.source.{src}.spw.{spw}",
             "target_name": src, "frequency_support": window, "is_mosaic": "F", "band_list": "6"}
            for src in ("A", "B") for spw, window in ((25, "[230.0..230.5GHz,488.28kHz,XX YY]"),
                                                      (27, "[232.0..233.875GHz,15625.0kHz,XX YY]"))]
    ds = dataset_from_row(aggregate_rows(rows))
    assert (ds.n_spw, ds.n_chan, ds.is_mosaic, ds.n_eb) == (2, (1024 + 120) // 2, False, None)


def test_a_kept_queue_takes_in_an_import_and_an_operators_edit_without_reading_the_rest(tmp_path):
    from ari_console.config import load_config
    from ari_console.engine import Engine, TickReport

    (tmp_path / "ari.toml").write_text('[campaign]\nname = "t"\n[[node]]\nname = "n1"\nslots = 1\nmem_gb = 64\n')
    cfg = load_config(tmp_path / "ari.toml")
    db = store.open_db(cfg.campaign.db_path)
    store.import_datasets(db, [DataSet(uid(n), "2016.1.00123.S", "12m", 6, 10.0 * n) for n in (1, 2, 3)], "a", 1.0)
    with Engine(cfg) as engine:
        launched = []
        engine._launch = lambda ds, node, sds, now, report: launched.append(sds.uid) or True  # no job: the plan alone
        engine._schedule(10.0, TickReport())
        assert launched == [uid(3)]  # the longest first
        store.import_datasets(db, [DataSet(uid(9), "2016.1.00123.S", "12m", 6, 40.0, n_spw=8, n_chan=3840)],
                              "b", 20.0)
        store.set_overrides(db, uid(1), 20.0, mem_gb=100.0)  # more than any node has
        engine._schedule(30.0, TickReport())
        assert launched == [uid(3), uid(9)]  # the new one, longer for its channels, goes next
        assert store.dataset(db, uid(1))["state"] == "held"  # the edit was seen: it fits no node now
        assert "100 GB" in store.dataset(db, uid(1))["reason"]
        engine._schedule(40.0, TickReport())
        assert launched == [uid(3), uid(9), uid(2)] and set(engine._plan_queue) == set()


def _obscore(n: int, exptime_s: float) -> dict:
    """One obscore row of a single-field band 6 MOUS observed ``exptime_s`` seconds."""
    return {"member_ous_uid": uid(n), "proposal_id": "2016.1.00123.S", "obs_id": uid(n), "target_name": "A",
            "frequency_support": "[230.0..230.5GHz,488.28kHz,XX YY]", "is_mosaic": "F", "band_list": "6",
            "t_exptime": exptime_s, "s_fov": 0.007, "spatial_resolution": 0.5}


def test_the_archives_guess_is_where_a_prediction_starts_and_finished_attempts_move_it(tmp_path):
    """The archive guesses 1.3 h for every data set of a project that really takes ~9 h: before any
    history the guess is placed as it stands (not as an explicit value); after ten finished
    attempts the prediction of one still waiting follows what was measured. An operator's
    hours stay what the operator said."""
    from ari_console.archive.client import dataset_from_row

    cfg = parse_config(CONFIG, tmp_path / "ari.toml")
    nodes = {n.name: n for n in cfg.nodes}
    db = store.open_db(tmp_path / "ari.db")
    store.import_datasets(db, [dataset_from_row(_obscore(n, 3600.0)) for n in range(1, 14)], "archive", now=0.0)
    store.set_overrides(db, uid(13), 1.0, hours=1.5)

    def predicted(n: int) -> scheduler.Prediction:
        row = next(r for r in store.queue(db) if r["uid"] == uid(n))
        assert (row["hours"], row["archive_hours"]) == (None, 1.3)  # a guess, not an explicit value
        return scheduler.predict(readmodel.to_scheduler(row, 0), readmodel.history(db, nodes))

    before = predicted(12)
    assert (before.hours, before.median_h, before.source) == (1.3, 1.3, "archive")
    assert before.sigma > 0  # a forecast knows the guess may be off
    for n in range(1, 11):
        _finish(db, n, 9.0 * (1.1 if n % 2 else 0.9))
        store.set_dataset_state(db, uid(n), "succeeded", 9.0 * 3600)
    after = predicted(12)
    assert after.source == "history" and 7.0 < after.median_h < 11.0 and after.hours > 9.0
    overridden = scheduler.predict(readmodel.to_scheduler(next(r for r in store.queue(db) if r["uid"] == uid(13)), 0),
                                   readmodel.history(db, nodes))
    assert (overridden.hours, overridden.source) == (1.5, "explicit")


def test_an_older_state_file_keeps_the_archives_guesses_as_guesses_and_a_catalogues_hours_as_given(tmp_path):
    path = tmp_path / "ari.db"
    raw = sqlite3.connect(path, isolation_level=None)
    last = store.MIGRATIONS.index(store._archive_guesses)
    for migration in store.MIGRATIONS[:last]:
        migration(raw)
    raw.execute(f"PRAGMA user_version = {last}")
    for n, source in ((1, "archive"), (2, None)):
        raw.execute("INSERT INTO datasets (uid, project, state, hours, mem_gb, extra, created_at, updated_at)"
                    " VALUES (?, '2016.1.00123.S', 'queued', 2.5, 9.0, ?, 1, 1)",
                    (uid(n), json.dumps({"source": source} if source else {})))
    raw.close()
    db = store.open_db(path)
    assert store.schema_version(db) == store.SCHEMA_VERSION
    rows = {r["uid"]: r for r in store.queue(db)}
    assert [rows[uid(1)][k] for k in ("hours", "mem_gb", "archive_hours", "archive_mem_gb")] == [None, None, 2.5, 9.0]
    assert [rows[uid(2)][k] for k in ("hours", "mem_gb", "archive_hours", "archive_mem_gb")] == [2.5, 9.0, None, None]

"""Operator actions from the command line: retry, hold, release, drain — and their mistakes."""

import json
import os
import subprocess
import sys
from pathlib import Path

ARI = str(Path(sys.executable).parent / "ari")


def ari(tmp_path, *args):
    return subprocess.run([ARI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})


def campaign(tmp_path):
    (tmp_path / "ari.toml").write_text('[[node]]\nname = "small"\n[[node]]\nname = "big"\nmem_gb = 64\n')
    (tmp_path / "c.csv").write_text("uid,project\nuid://A001/X1/X1,2016.1.00123.S\nuid://A001/X1/X2,2016.1.00123.S\n")
    assert ari(tmp_path, "datasets", "import", "c.csv").returncode == 0


def states(tmp_path):
    return {d["uid"]: d["state"] for d in json.loads(ari(tmp_path, "datasets", "list", "--json").stdout)}


def test_hold_release_and_retry_on_a_bigger_node_change_the_queue(tmp_path):
    campaign(tmp_path)
    assert ari(tmp_path, "hold", "uid___A001_X1_X1", "--reason", "missing caltable").returncode == 0
    assert states(tmp_path)["uid://A001/X1/X1"] == "held"
    assert ari(tmp_path, "release", "uid://A001/X1/X1").returncode == 0
    assert states(tmp_path)["uid://A001/X1/X1"] == "queued"
    ari(tmp_path, "hold", "uid://A001/X1/X2")
    row = json.loads(ari(tmp_path, "retry", "uid://A001/X1/X2", "--node", "big", "--mem-gb", "48", "--json").stdout)
    assert row["state"] == "queued" and row["overrides"] == {"node": "big", "mem_gb": 48.0}


def test_drain_and_undrain_show_in_the_node_list(tmp_path):
    campaign(tmp_path)
    assert ari(tmp_path, "nodes", "drain", "small", "--reason", "disk errors").returncode == 0
    nodes = {n["name"]: n for n in json.loads(ari(tmp_path, "nodes", "list", "--json").stdout)}
    assert nodes["small"]["drained"] and nodes["small"]["drained_reason"] == "disk errors"
    assert not nodes["big"]["drained"]
    ari(tmp_path, "nodes", "undrain", "small")
    nodes = {n["name"]: n for n in json.loads(ari(tmp_path, "nodes", "list", "--json").stdout)}
    assert not nodes["small"]["drained"]


def test_operator_mistakes_are_one_line_each(tmp_path):
    campaign(tmp_path)
    cases = [
        (("retry", "uid://A001/X9/X9"), "uid://A001/X9/X9: no such data set in this campaign"),
        (("retry", "X1"), '"X1" is not a MOUS uid'),
        (("retry", "uid://A001/X1/X1", "--node", "huge"), 'no node "huge" in this campaign'),
        (("release", "uid://A001/X1/X1"), "is not held (it is queued)"),
        (("nodes", "drain", "nope"), 'no node "nope" in this campaign'),
    ]
    for args, expected in cases:
        proc = ari(tmp_path, *args)
        assert proc.returncode == 2, args
        assert expected in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_overrides_for_the_next_attempt_are_set_merged_and_cleared(tmp_path):
    campaign(tmp_path)
    row = json.loads(ari(tmp_path, "override", "uid://A001/X1/X1", "--mem-gb", "32", "--casa-version", "6.5.4",
                         "--param", "robust=0.5", "--param", "cell=0.1arcsec", "--json").stdout)
    assert row["overrides"] == {"mem_gb": 32.0, "casa_version": "6.5.4", "params": {"robust": 0.5, "cell": "0.1arcsec"}}
    row = json.loads(ari(tmp_path, "override", "uid://A001/X1/X1", "--param", "niter=1000", "--json").stdout)
    assert row["overrides"]["params"] == {"robust": 0.5, "cell": "0.1arcsec", "niter": 1000}
    row = json.loads(ari(tmp_path, "override", "uid://A001/X1/X1", "--clear", "--node", "big", "--json").stdout)
    assert row["overrides"] == {"node": "big"}
    bad = ari(tmp_path, "override", "uid://A001/X1/X1", "--param", "robust")
    assert bad.returncode == 2 and "is not KEY=VALUE" in bad.stderr


def _made_products_waiting_for_review(tmp_path, uid, reason, uncalibrated=False):
    """What the engine leaves after a run whose QA2 was discrepant: a succeeded attempt, the data set in review."""
    import time

    from ari_console import store

    db = store.open_db(tmp_path / "ari.db")
    now = time.time()
    store.sync_nodes(db, [], now)
    attempt = store.create_attempt(db, uid, "small", now, mem_gb=4, walltime_h=1)
    store.update_attempt(db, attempt, now, state="succeeded", ended_at=now)
    store.send_to_review(db, uid, attempt, now, reason, uncalibrated=uncalibrated)
    db.conn.close()
    return attempt


def test_accept_delivers_a_data_set_waiting_in_review_and_says_when_it_is_uncalibrated(tmp_path):
    campaign(tmp_path)
    ari(tmp_path, "hold", "uid://A001/X1/X1")  # not queued: the engine is not running here anyway
    attempt = _made_products_waiting_for_review(tmp_path, "uid://A001/X1/X1", "uncalibrated: caltables=[]",
                                                uncalibrated=True)
    rows = {d["uid"]: d for d in json.loads(ari(tmp_path, "datasets", "list", "--state", "review", "--json").stdout)}
    assert list(rows) == ["uid://A001/X1/X1"] and "uncalibrated" in rows["uid://A001/X1/X1"]["reason"]
    assert "ari reject" in ari(tmp_path, "retry", "uid://A001/X1/X1").stderr
    row = json.loads(ari(tmp_path, "accept", "uid://A001/X1/X1", "--json").stdout)
    assert row["state"] == "succeeded" and row["accepted_attempt"] == attempt
    assert "UNCALIBRATED" in row["reason"]
    proc = ari(tmp_path, "accept", "uid://A001/X1/X1")
    assert proc.returncode == 2 and "not waiting for a QA2 decision" in proc.stderr


def test_reject_holds_the_data_set_or_queues_it_again_keeping_the_rejected_attempt(tmp_path):
    campaign(tmp_path)
    first = _made_products_waiting_for_review(tmp_path, "uid://A001/X1/X1", "QA2 discrepant: flux ratio 1.43")
    row = json.loads(ari(tmp_path, "reject", "uid://A001/X1/X1", "--reason", "wrong flux scale", "--json").stdout)
    assert row["state"] == "held" and row["accepted_attempt"] is None and "wrong flux scale" in row["reason"]
    second = _made_products_waiting_for_review(tmp_path, "uid://A001/X1/X2", "no QA2 products to compare")
    row = json.loads(ari(tmp_path, "reject", "uid://A001/X1/X2", "--retry", "--node", "big", "--json").stdout)
    assert row["state"] == "queued" and row["overrides"] == {"node": "big"}
    listed = json.loads(ari(tmp_path, "attempts", "uid://A001/X1/X2", "--json").stdout)
    assert [a["id"] for a in listed] == [second] and first != second
    proc = ari(tmp_path, "reject", "uid://A001/X1/X2")
    assert proc.returncode == 2 and "not waiting for a QA2 decision" in proc.stderr

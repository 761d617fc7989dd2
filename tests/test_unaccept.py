"""Un-accepting a delivery from the command line: the data set waits in QA2 review again, counted as
such by `ari status`, the report, the demo summary and the console alike; its products, verdicts
and the accept itself stay. And one rule for how long an attempt has run, in the CLI and the console."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from ari_console import store
from ari_console.cli import app
from ari_console.demo.campaign import summary
from ari_console.tui.snapshot import StoreCopy, build_snapshot, compute_eta
from tests import sample_campaign as sample

ARI = str(Path(sys.executable).parent / "ari")


def _cli(camp, *args) -> dict | list:
    result = CliRunner().invoke(app, [*args, "-c", str(camp.config.path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _ari(camp, *args) -> subprocess.CompletedProcess:
    """The installed `ari`, as an operator runs it (exit code and stderr as they are)."""
    return subprocess.run([ARI, *args, "-c", str(camp.config.path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})


def _review_everywhere(camp, tmp_path, now: float) -> dict[str, object]:
    """The number of data sets waiting in review as each place tells it, and the uids each lists."""
    status = _cli(camp, "status")
    report = _cli(camp, "report", "--out", str(tmp_path / "report"))
    listed = [d["uid"] for d in _cli(camp, "datasets", "list", "--state", "review")]
    with store.open_db(camp.db_path) as db:
        demo = summary(db)
        copy = StoreCopy()
        copy.read(db, now)
        snap = build_snapshot(copy, now, 1, {}, 120.0,
                              compute_eta(db, copy.nodes, now, {n.name: n for n in camp.config.nodes}))
    return {
        "counts": {"status": status["totals"]["review"], "attention": status["attention"]["review_total"],
                   "report": report["burndown"]["review"], "coverage": report["coverage"]["review"],
                   "report_attention": len(report["attention"]["review"]), "demo": demo["review"],
                   "console": snap.dashboard.totals.get("review", 0), "console_attention":
                       sum(1 for what, _, _ in snap.attention if what == "review"), "listed": len(listed)},
        "uids": {"status": {r["uid"] for r in status["attention"]["review"]}, "listed": set(listed),
                 "report": {r["uid"] for r in report["attention"]["review"]},
                 "console": {u for what, u, _ in snap.attention if what == "review"}},
        "line": status["attention"]["line"], "delivered": report["coverage"]["with_product"],
    }


def test_an_unaccepted_data_set_waits_in_review_again_everywhere_and_can_be_accepted_again(tmp_path):
    now = store.now()
    camp = sample.build(tmp_path / "c", n=60, running=4, now=now)
    uid = sample.uid_of(4)  # delivered, with QA2 pairs
    with store.open_db(camp.db_path) as db:
        delivered = store.dataset(db, uid)["accepted_attempt"]
        products, verdicts = store.products(db, delivered), store.qa2_results(db, uid)
    assert delivered is not None and verdicts
    before = _review_everywhere(camp, tmp_path, now)
    assert len(set(before["counts"].values())) == 1 and uid not in before["uids"]["status"]

    row = _cli(camp, "unaccept", uid, "--note", "the beam is twice the QA2 one")
    assert row["state"] == "review" and row["accepted_attempt"] is None
    assert row["unaccepted"]["attempt"] == delivered and row["unaccepted"]["restored"] is None
    after = _review_everywhere(camp, tmp_path, now)
    n = before["counts"]["status"] + 1
    assert after["counts"] == {k: n for k in before["counts"]}, "the same number everywhere"
    assert all(uid in uids for uids in after["uids"].values()), after["uids"]
    assert f"{n} QA2 review" in after["line"] and after["delivered"] == before["delivered"] - 1
    [listed] = [r for r in _cli(camp, "status")["attention"]["review"] if r["uid"] == uid]
    assert "un-accepted" in listed["reason"] and "the beam is twice the QA2 one" in listed["reason"]
    assert f"ari accept {uid}" in listed["fix"]

    with store.open_db(camp.db_path) as db:  # nothing of the attempt is lost: products, verdicts, the accept
        assert store.products(db, delivered) == products and store.qa2_results(db, uid) == verdicts
        assert store.review_attempt(db, uid)["id"] == delivered
    decisions = _cli(camp, "datasets", "show", uid)["decisions"]
    assert [d["action"] for d in decisions] == ["unaccept"] and decisions[0]["note"] == "the beam is twice the QA2 one"
    shown = _ari(camp, "datasets", "show", uid)
    assert f"unaccept attempt {delivered} — the beam is twice the QA2 one" in shown.stdout

    again = _cli(camp, "accept", uid, "--note", "the QA2 image was tapered")
    assert again["state"] == "succeeded" and again["accepted_attempt"] == delivered
    assert _review_everywhere(camp, tmp_path, now)["counts"] == before["counts"]
    assert [d["action"] for d in _cli(camp, "datasets", "show", uid)["decisions"]] == ["unaccept", "accept"]


def test_unaccepting_what_is_not_delivered_is_one_line_naming_the_fix(tmp_path):
    camp = sample.build(tmp_path / "c", n=60, running=4, now=store.now())
    with store.open_db(camp.db_path) as db:
        queued = store.datasets(db, state="queued")[0]["uid"]
    proc = _ari(camp, "unaccept", queued)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert f"{queued} is queued, not accepted" in proc.stderr and "ari datasets list --state succeeded" in proc.stderr
    uid = sample.uid_of(4)
    assert _ari(camp, "unaccept", uid).returncode == 0
    twice = _ari(camp, "unaccept", uid)
    assert twice.returncode == 2 and twice.stderr.count("\n") == 1
    assert "already waits for a QA2 decision" in twice.stderr and f"ari accept {uid}" in twice.stderr
    missing = _ari(camp, "unaccept", "uid://A001/X9/X9")
    assert missing.returncode == 2 and "no such data set" in missing.stderr


def test_unaccepting_a_re_run_delivers_the_earlier_attempt_again_until_a_decision(tmp_path):
    now = store.now()
    camp = sample.build(tmp_path / "c", n=60, running=4, now=now)
    uid = sample.uid_of(4)
    with store.open_db(camp.db_path) as db:
        first = store.dataset(db, uid)["accepted_attempt"]
        rerun = store.create_attempt(db, uid, "ws01", now - 3600, mem_gb=8, walltime_h=4)
        store.update_attempt(db, rerun, now - 60, state="succeeded", ended_at=now - 60)
        store.send_to_review(db, uid, rerun, now - 60, "QA2 discrepant in 1 of 1 pairs")
    assert _cli(camp, "accept", uid)["accepted_attempt"] == rerun
    row = _cli(camp, "unaccept", uid)
    assert row["state"] == "review" and row["accepted_attempt"] == first
    assert row["unaccepted"] == {**row["unaccepted"], "attempt": rerun, "restored": first}
    printed = _ari(camp, "reject", uid, "--reason", "re-run no better")
    assert printed.returncode == 0, printed.stderr
    with store.open_db(camp.db_path) as db:
        ds = store.dataset(db, uid)
    assert ds["state"] == "succeeded" and ds["accepted_attempt"] == first


def test_a_running_attempt_shows_the_same_run_time_in_the_cli_and_the_console(tmp_path):
    """To now, not to its last heartbeat (an hour old here), in `datasets show`, `ari attempts` and the console."""
    import asyncio

    from ari_console.tui.app import AriApp
    from ari_console.tui.views import QUEUE_COLUMNS

    now = store.now()
    camp = sample.build(tmp_path / "c", n=20, running=0, now=now)
    with store.open_db(camp.db_path) as db:
        uid = store.datasets(db, state="queued")[0]["uid"]
        aid = store.create_attempt(db, uid, "ws01", now - 3 * 3600 - 310, mem_gb=8, walltime_h=12)
        store.update_attempt(db, aid, now - 3600, state="running", stage="image", started_at=now - 3 * 3600 - 310,
                             heartbeat_at=now - 3600)
    show = _ari(camp, "datasets", "show", uid).stdout
    listed = _ari(camp, "attempts", uid).stdout
    assert "3h05m" in show and "3h05m" in listed and "2h05m" not in show

    app = AriApp(camp.db_path, camp.config, clock=lambda: now, refresh_s=0.2,
                 log_poll_s=0.05)

    async def console() -> tuple[str, str]:
        async with app.run_test(size=(160, 50)) as pilot:
            end = time.monotonic() + 15
            while (app.snapshot is None or str(aid) not in app.snapshot.attempt_rows) and time.monotonic() < end:
                await pilot.pause(0.05)
            elapsed = app.snapshot.attempt_rows[str(aid)][5]
            queue_cell = app.snapshot.queue.rows[uid][QUEUE_COLUMNS.index("elapsed")]
            assert queue_cell == elapsed, "the queue's elapsed column and the attempts table agree"
            app.show_dataset(uid)
            while "3h" not in getattr(app.screen, "text", "") and time.monotonic() < end:
                await pilot.pause(0.05)
            return elapsed, app.screen.text

    elapsed, detail = asyncio.run(console())
    assert elapsed == "3h05m" and "3h05m" in detail


def test_products_made_without_calibration_stay_marked_through_an_unaccept_and_a_new_accept(tmp_path):
    from tests.test_operator import _made_products_waiting_for_review, ari, campaign

    campaign(tmp_path)
    ari(tmp_path, "hold", "uid://A001/X1/X1")
    attempt = _made_products_waiting_for_review(tmp_path, "uid://A001/X1/X1", "uncalibrated: caltables=[]",
                                                uncalibrated=True)
    assert "UNCALIBRATED" in json.loads(ari(tmp_path, "accept", "uid://A001/X1/X1", "--json").stdout)["reason"]
    printed = ari(tmp_path, "unaccept", "uid://A001/X1/X1", "--note", "check the flux scale first")
    assert printed.returncode == 0 and f"attempt {attempt} waits in QA2 review again" in printed.stdout
    again = json.loads(ari(tmp_path, "accept", "uid://A001/X1/X1", "--json").stdout)
    assert again["state"] == "succeeded" and again["accepted_attempt"] == attempt and "UNCALIBRATED" in again["reason"]

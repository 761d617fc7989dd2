"""The engine: schedule, launch, watch, finish, retry, and survive a kill -9.

These tests are about the campaign loop's mechanics, so the job's stages run the
small sleeper recipe (tests/data/recipes/sleeper.py) through the real runner on
real local and SSH nodes; the imaging itself is tested with real CASA elsewhere.
"""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ari_console import actions, store, triage
from ari_console.config import load_config
from ari_console.engine import Engine, EngineLocked, nodes_to_drain, retry_decision

SLEEPER = Path(__file__).parent / "data" / "recipes" / "sleeper.py"
RUN_ENGINE = Path(__file__).parent / "data" / "recipes" / "run_engine_with_sleeper.py"


def start_console(tmp_path):
    """A console process running the campaign (``ari run``'s code, with the sleeper recipe)."""
    return subprocess.Popen([sys.executable, str(RUN_ENGINE), str(tmp_path)], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)


def sleeper_spec(spec, node, ds):
    params = {"sleep_s": 1.0, **ds["extra"].get("sleeper", {})}
    return {**spec, "stages": ["image", "export"], "poll_s": 0.2,
            "recipe": {**spec["recipe"], "script": str(SLEEPER), "python": sys.executable, "params": params}}


def make_campaign(tmp_path, rows, nodes_toml=None):
    nodes_toml = nodes_toml or (f'[[node]]\nname = "local"\nslots = 2\nmem_gb = 4\n'
                                f'scratch_dir = "{tmp_path / "scratch"}"\npython = "{sys.executable}"\n')
    (tmp_path / "ari.toml").write_text(f'[campaign]\nname = "t"\npoll_interval_s = 0.5\nmax_attempts = 3\n{nodes_toml}')
    cfg = load_config(tmp_path / "ari.toml")
    db = store.open_db(cfg.campaign.db_path)
    from ari_console.alma import DataSet
    store.import_datasets(db, [DataSet(uid=u, project="2016.1.00123.S", array=arr, extra=extra, mem_gb=1, hours=0.01)
                               for u, arr, extra in rows], "t.csv", now=time.time())
    db.close()
    return cfg


def run_until_idle(engine, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        report = engine.tick()
        if report.idle:
            return report
        time.sleep(0.5)
    rows = [(d["uid"], d["state"], d["reason"]) for d in store.datasets(engine.db)]
    atts = [(a["id"], a["uid"], a["state"], a["stage"], a["category"]) for a in store.attempts(engine.db)]
    pytest.fail(f"campaign did not finish in time: {rows} {atts} {report.errors}")


def test_campaign_runs_to_the_end_skipping_total_power_and_delivering_products(tmp_path):
    cfg = make_campaign(tmp_path, [("uid://A001/X1/X1", "12m", {}), ("uid://A001/X1/X2", "7m", {}),
                                   ("uid://A001/X1/X3", "TP", {})])
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        run_until_idle(engine)
        db = engine.db
        states = {d["uid"]: d["state"] for d in store.datasets(db)}
        # These data sets have no QA2 images: nothing checked the products, so an operator decides.
        assert states == {"uid://A001/X1/X1": "review", "uid://A001/X1/X2": "review",
                          "uid://A001/X1/X3": "skipped"}
        assert "no QA2 products" in store.dataset(db, "uid://A001/X1/X1")["reason"]
        assert store.dataset(db, "uid://A001/X1/X1")["accepted_attempt"] is None
        assert "total power" in store.dataset(db, "uid://A001/X1/X3")["reason"]
        actions.accept(db, "uid://A001/X1/X1", time.time())
        assert store.dataset(db, "uid://A001/X1/X1")["state"] == "succeeded"
        acc = store.dataset(db, "uid://A001/X1/X1")["accepted_attempt"]
        prods = store.products(db, acc)
        assert len(prods) == 1 and Path(prods[0]["path"]).read_text() == "ok\n"
        mirrors = {Path(m["mirror"]).name: m for m in store.log_mirrors(db, acc)}
        assert "sleeper: stage image done" in Path(mirrors["image.log"]["mirror"]).read_text()
        assert mirrors["image.log"]["offset"] == Path(mirrors["image.log"]["mirror"]).stat().st_size
        # Delivered: the node's scratch keeps the attempt's logs and status, not its data or products.
        left = sorted(p.name for p in Path(store.attempt(db, acc)["work_dir"]).iterdir())
        assert "products" not in left and {"image.log", "status.json"} <= set(left), left
        kinds = [e["kind"] for e in store.events(db, uid="uid://A001/X1/X1")]
        assert kinds.count("attempt") >= 3 and "accepted" in kinds


def test_a_headless_run_says_which_data_set_waits_for_an_operator_and_how_to_read_it(tmp_path):
    uid = "uid://A001/X1/X1"
    bad = {"sleeper": {"fail_stage": "image", "fail_message":
                       "2026-11-25 10:00:00\tSEVERE\tfindcont::::casa\tno continuum found in spw 1"}}
    cfg = make_campaign(tmp_path, [(uid, "12m", bad)])
    lines: list[str] = []
    with Engine(cfg, adjust_spec=sleeper_spec, progress=lines.append) as engine:
        engine.run(stop=lambda: False, until_idle=True)
    assert any(ln.startswith(f"{uid}: failed") and ln.endswith(f"held for an operator (`ari datasets show {uid}`)")
               for ln in lines), lines

def test_a_pipeline_failure_is_triaged_and_held_with_its_excerpt(tmp_path):
    bad = {"sleeper": {"fail_stage": "image", "fail_message":
                       "2026-11-25 10:00:00\tSEVERE\ttclean::::casa\tTask tclean raised an exception of class "
                       "RuntimeError with the following message: Error in making PSF : One or more  of the "
                       "cube section failed in de/gridding."}}
    cfg = make_campaign(tmp_path, [("uid://A001/X1/X1", "12m", bad)])
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        run_until_idle(engine)
        ds = store.dataset(engine.db, "uid://A001/X1/X1")
        (a,) = store.attempts(engine.db, uid="uid://A001/X1/X1")
    assert ds["state"] == "held" and "imaging" in ds["reason"]
    assert a["category"] == "imaging" and "de/gridding" in a["excerpt"] and a["decisive_line"]
    assert a["triage_rules"] == triage.rules_version()  # the verdict names the rules that made it


def test_a_second_engine_on_the_same_campaign_is_refused_naming_the_holder(tmp_path):
    cfg = make_campaign(tmp_path, [])
    with Engine(cfg):
        with pytest.raises(EngineLocked, match=f"pid {os.getpid()}"):
            Engine(cfg)


def test_killed_engine_restarts_without_duplicates_or_lost_events(tmp_path):
    rows = [(f"uid://A001/X1/X{i}", "12m", {"sleeper": {"sleep_s": 4}}) for i in range(1, 5)]
    cfg = make_campaign(tmp_path, rows)
    proc = start_console(tmp_path)
    db = store.open_db(cfg.campaign.db_path)
    deadline = time.time() + 60
    while time.time() < deadline and len(store.active_attempts(db)) < 2:
        time.sleep(0.3)
    running_before = {a["id"]: a["uid"] for a in store.active_attempts(db)}
    assert len(running_before) == 2
    events_before = len(store.events(db, limit=100000))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:  # a new console: the same attempts, re-attached
        report = engine.tick()
        assert {a["id"] for a in store.active_attempts(engine.db)} >= set(running_before) - {
            a["id"] for a in store.attempts(engine.db, states=("succeeded",))}
        run_until_idle(engine)
        attempts = store.attempts(engine.db)
        assert len(events_before and store.events(engine.db, limit=100000)) > events_before
    shown = [(a["id"], a["uid"], a["state"], a["started_at"], a["ended_at"], a["excerpt"]) for a in attempts]
    for uid, _, _ in rows:
        mine = [a for a in attempts if a["uid"] == uid]
        assert [a["state"] for a in mine].count("succeeded") == 1, shown
        ran = sorted((a["started_at"], a["ended_at"]) for a in mine if a["started_at"])
        assert all(prev[1] <= nxt[0] for prev, nxt in zip(ran, ran[1:])), f"{uid} ran twice at once: {shown}"
        extra = [a for a in mine if a["state"] != "succeeded"]
        assert all(a["excerpt"] == "the console stopped before the job was launched" for a in extra), shown
    assert report is not None


def test_ctrl_c_stops_the_console_and_leaves_attempts_running(tmp_path):
    cfg = make_campaign(tmp_path, [("uid://A001/X1/X1", "12m", {"sleeper": {"sleep_s": 6}})])
    proc = start_console(tmp_path)
    db = store.open_db(cfg.campaign.db_path)
    deadline = time.time() + 60
    while time.time() < deadline and not store.active_attempts(db):
        time.sleep(0.3)
    (a,) = store.active_attempts(db)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "engine stopped" in err and "Traceback" not in err
    pid = store.attempt(db, a["id"])["handle"]["pid"]
    os.kill(pid, 0)  # the runner still lives


def test_retry_policy_by_category():
    assert retry_decision("memory", 1, 3, mem_gb=8, walltime_h=None, peak_mem_gb=9).overrides == {"mem_gb": 13.5, "node": None}
    d = retry_decision("walltime", 1, 3, mem_gb=8, walltime_h=2)
    assert d.state == "queued" and d.overrides["walltime_h"] == 4
    assert retry_decision("download", 1, 3, 8, None, now=1000, backoff_s=60).overrides == {"not_before": 1060}
    assert retry_decision("download", 2, 3, 8, None, now=1000, backoff_s=60).overrides == {"not_before": 1120}
    assert retry_decision("total_power", 1, 3, 8, None).state == "skipped"
    assert retry_decision("findcont", 1, 3, 8, None).state == "held"
    assert retry_decision("memory", 3, 3, 8, None).state == "failed"
    assert retry_decision("memory", 1, 3, 8, None, cancelled=True).state == "held"


def test_a_node_failing_for_node_reasons_more_than_its_peers_is_drained():
    recent = {"ws1": ["disk_full", None, "node_lost", "download"], "ws2": [None, "memory", None]}
    assert set(nodes_to_drain(recent)) == {"ws1"}
    assert nodes_to_drain({"a": ["download"] * 3, "b": ["download"] * 3}) == {}


def test_reads_after_a_campaign_show_rates_failures_attempts_and_logs(tmp_path):
    bad = {"sleeper": {"fail_stage": "image", "fail_message": "2026-11-25 10:00:00\tSEVERE\thif_findcont\t"
                       "No continuum ranges found for field NGC1234 spw 17"}}
    cfg = make_campaign(tmp_path, [("uid://A001/X1/X1", "12m", {}), ("uid://A001/X1/X2", "12m", bad)])
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        run_until_idle(engine)
    env = {**os.environ, "COLUMNS": "200"}

    def ari(*args):
        proc = subprocess.run([str(Path(sys.executable).parent / "ari"), *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    stats = json.loads(ari("stats", "--json"))
    assert stats["datasets_tried"] == 2 and stats["success_first_try"] == 0.5
    assert stats["failures_by_category"] == {"findcont": 1}
    assert stats["cpu_hours"] == pytest.approx(stats["attempt_hours"]) and stats["cpu_hours"] > 0  # 1 CPU per slot
    status = json.loads(ari("status", "--json"))
    assert status["totals"]["review"] == 1 and status["totals"]["held"] == 1  # no QA2 images: review
    assert status["success_first_try"] == 0.5
    attempts = json.loads(ari("attempts", "uid___A001_X1_X2", "--json"))
    assert [(a["state"], a["category"]) for a in attempts] == [("failed", "findcont")]
    assert "No continuum ranges found" in ari("logs", "uid://A001/X1/X2", "--name", "image.log")


@pytest.mark.sshd
def test_a_node_whose_sshd_stops_mid_attempt_goes_stale_then_its_attempt_is_lost(sshd_factory, tmp_path):
    server = sshd_factory()
    node = (f'[[node]]\nname = "ws"\ntransport = "ssh"\nhost = "{server.host}"\nport = {server.port}\n'
            f'user = "{server.user}"\nidentity_file = "{server.identity_file}"\nknown_hosts = "{server.known_hosts}"\n'
            f'slots = 1\nmem_gb = 4\nscratch_dir = "{tmp_path / "scratch"}"\npython = "{sys.executable}"\n')
    cfg = make_campaign(tmp_path, [("uid://A001/X1/X1", "12m", {"sleeper": {"sleep_s": 60}})], nodes_toml=node)
    with Engine(cfg, adjust_spec=sleeper_spec, node_lost_after_s=5.0) as engine:
        engine.tick()
        (a,) = store.active_attempts(engine.db)
        server.stop()
        started = time.monotonic()
        report = engine.tick()
        assert time.monotonic() - started < 30 and report.errors  # an answer, not a hang
        row = {n["name"]: n for n in store.nodes(engine.db)}["ws"]
        assert row["probe_error"]  # shown as stale, with the reason
        assert store.attempt(engine.db, a["id"])["state"] == "running"
        time.sleep(5.5)
        engine.tick()
        lost = store.attempt(engine.db, a["id"])
        assert (lost["state"], lost["category"]) == ("lost", "node_lost")
        assert store.dataset(engine.db, "uid://A001/X1/X1")["state"] == "queued"
    server.start()


def test_estimate_on_a_campaign_uses_its_queue_and_nodes(tmp_path):
    rows = [(f"uid://A001/X1/X{i}", "12m", {}) for i in range(1, 7)]
    make_campaign(tmp_path, rows)
    proc = subprocess.run([str(Path(sys.executable).parent / "ari"), "estimate", "campaign", "--json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    est = json.loads(proc.stdout)
    assert est["queued"] == 6 and est["nodes"] == 1 and est["unplaceable"] == 0
    # six data sets of 0.01 h on one node with two slots: three rounds
    assert est["makespan_h"] == pytest.approx(0.03, rel=0.05) and est["lower_bound_h"] <= est["makespan_h"]


def wait_for_launch(engine, timeout=30):
    """Tick until an attempt runs on its node (its handle stored)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not [a for a in store.active_attempts(engine.db) if a["handle"]]:
        engine.tick()
        time.sleep(0.3)


def test_ari_cancel_stops_the_running_attempt_and_the_data_set_is_held(tmp_path):
    from typer.testing import CliRunner

    from ari_console.cli import app

    uid = "uid://A001/X1/X9"
    cfg = make_campaign(tmp_path, [(uid, "12m", {"sleeper": {"sleep_s": 60}})])
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        wait_for_launch(engine)
        result = CliRunner().invoke(app, ["-c", str(tmp_path / "ari.toml"), "cancel", uid, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[0]["node"] == "local"
        deadline = time.time() + 30
        while time.time() < deadline and store.dataset(engine.db, uid)["state"] != "held":
            engine.tick()
            time.sleep(0.3)
        assert store.dataset(engine.db, uid)["state"] == "held"
        assert [a["state"] for a in store.attempts(engine.db, uid=uid)] == ["cancelled"]
        again = CliRunner().invoke(app, ["-c", str(tmp_path / "ari.toml"), "cancel", uid])
        assert "nothing to cancel" in str(again.exception)  # `ari` prints it as one line and exits 2


def test_a_stopped_runner_whose_heartbeat_stalls_is_lost_and_killed(tmp_path):
    uid = "uid://A001/X1/Xa"
    cfg = make_campaign(tmp_path, [(uid, "12m", {"sleeper": {"sleep_s": 120}})])
    with Engine(cfg, adjust_spec=sleeper_spec, stale_heartbeat_s=4.0) as engine:
        wait_for_launch(engine)
        (attempt,) = store.active_attempts(engine.db)
        pid = attempt["handle"]["pid"]
        os.kill(pid, signal.SIGSTOP)  # alive, answering nothing: what a hung runner looks like
        try:
            deadline = time.time() + 120  # ends as soon as the attempt is lost (seconds on a quiet machine)
            while time.time() < deadline and store.attempt(engine.db, attempt["id"])["state"] in ("pending", "running"):
                engine.tick()
                time.sleep(0.5)
            lost = store.attempt(engine.db, attempt["id"])
            assert (lost["state"], lost["category"]) == ("lost", "node_lost"), lost
            assert "heartbeat lost" in lost["excerpt"]
            time.sleep(0.5)
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        finally:  # never leave a stopped runner behind, whatever the test found
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_a_failed_launch_backs_off_the_node_instead_of_burning_attempts(tmp_path):
    uid = "uid://A001/X1/Xb"
    nodes = (f'[[node]]\nname = "broken"\nslots = 1\nmem_gb = 4\n'
             f'scratch_dir = "{tmp_path / "scratch"}"\npython = "/no/such/python3"\n')
    cfg = make_campaign(tmp_path, [(uid, "12m", {})], nodes)
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        first = engine.tick()
        for _ in range(3):
            engine.tick()
        # A launch that never started a job is not a try: no attempt row, the node's event tells it.
        assert store.attempts(engine.db, uid=uid) == []
        failed = [e for e in store.events(engine.db, uid=uid) if e["kind"] == "launch-failed"]
        assert len(failed) == 1 and failed[0]["node"] == "broken" and failed[0]["detail"]["error"]
        assert store.dataset(engine.db, uid)["state"] == "queued"
        assert any("no launch there for" in e for e in first.errors), first.errors


def test_a_spec_the_console_got_wrong_holds_the_data_set_and_never_blames_the_node(tmp_path):
    """An empty file entry (what a DataLink service_def row once became) and a spec the runner refuses."""
    empty, refused = "uid://A001/X1/Xc", "uid://A001/X1/Xd"
    cfg = make_campaign(tmp_path, [(empty, "12m", {"files": [{"name": "", "url": ""}]}), (refused, "12m", {})])

    def bad_stage(spec, node, ds):
        spec = sleeper_spec(spec, node, ds)
        return {**spec, "stages": ["bogus"]} if ds["uid"] == refused else spec

    with Engine(cfg, adjust_spec=bad_stage) as engine:
        reports = [engine.tick() for _ in range(3)]
        for uid in (empty, refused):
            attempts = store.attempts(engine.db, uid=uid)
            assert [(a["state"], a["category"]) for a in attempts] == [("failed", "unknown")], uid
            assert "job spec rejected" in attempts[0]["excerpt"]
            assert store.dataset(engine.db, uid)["state"] == "held"
        assert "stage 'bogus' is unknown" in store.attempts(engine.db, uid=refused)[0]["excerpt"]
        assert not any("no launch there" in e for r in reports for e in r.errors)  # no backoff of the node
        assert not any(n["drained"] for n in store.nodes(engine.db))
        assert nodes_to_drain({"local": ["unknown"] * 5, "other": [None]}) == {}


def test_the_log_mirror_follows_a_log_truncated_or_rotated_on_the_node(tmp_path):
    from ari_console.nodes.transport import LocalTransport

    cfg = make_campaign(tmp_path, [("uid://A001/X1/X1", "12m", {})])
    work = tmp_path / "scratch" / "a1"
    work.mkdir(parents=True)
    with Engine(cfg) as engine:
        aid = store.create_attempt(engine.db, "uid://A001/X1/X1", "local", time.time())
        store.update_attempt(engine.db, aid, time.time(), state="running", work_dir=str(work),
                             handle={"batch": "none", "pid": 1, "work_dir": str(work), "node": "local"})
        log, transport = work / "image.log", LocalTransport()

        def mirrored() -> str:
            engine._mirror_logs(store.attempt(engine.db, aid), transport)
            m = {Path(m["mirror"]).name: m for m in store.log_mirrors(engine.db, aid)}["image.log"]
            assert m["offset"] == Path(m["mirror"]).stat().st_size
            return Path(m["mirror"]).read_text()

        log.write_text("".join(f"first run {i}\n" for i in range(500)))
        assert mirrored() == log.read_text()
        log.write_text("second run 0\n")  # truncated and written again
        assert mirrored() == "second run 0\n"
        log.rename(work / "image.log.1")  # rotated: a new file, already longer than the old one
        log.write_text("".join(f"third run {i}\n" for i in range(600)))
        assert mirrored() == log.read_text()


def test_logs_follow_starts_again_when_the_mirrored_log_was_truncated(tmp_path):
    import threading

    from tests import sample_campaign as sample

    camp = sample.build(tmp_path, n=60, running=4)
    db = store.open_db(camp.db_path)
    uid = store.attempt(db, camp.running_attempt)["uid"]
    db.conn.close()
    ari = Path(sys.executable).parent / "ari"
    proc = subprocess.Popen([str(ari), "-c", str(camp.config.path), "logs", uid, "-f"], stdout=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()

    def printed(text: str) -> bool:
        deadline = time.time() + 20
        while time.time() < deadline and not any(text in ln for ln in lines):
            time.sleep(0.1)
        return any(text in ln for ln in lines)

    try:
        assert printed("Major cycle 2")  # the whole mirror
        camp.running_log.write_text("a new run 1\n")  # shorter than what it printed: truncated
        assert printed("a new run 1")
    finally:
        proc.kill()
        proc.wait()


def test_a_data_set_is_never_placed_where_its_scratch_cannot_fit_and_one_no_scratch_holds_is_held(tmp_path):
    """Node "small" says its scratch holds 1 GB (scratch_gb); "roomy" says nothing, so its scratch is the
    size of its file system as the engine's real probe (df) measures it."""
    from ari_console.alma import DataSet

    py = sys.executable
    nodes = (f'[[node]]\nname = "small"\nslots = 2\nmem_gb = 4\nscratch_gb = 1\nscratch_dir = "{tmp_path / "s1"}"\n'
             f'python = "{py}"\n'
             f'[[node]]\nname = "roomy"\nslots = 1\nmem_gb = 4\nscratch_dir = "{tmp_path / "s2"}"\npython = "{py}"\n')
    cfg = make_campaign(tmp_path, [], nodes)
    db = store.open_db(cfg.campaign.db_path)
    fit = [f"uid://A001/X1/X{i}" for i in range(1, 4)]
    huge = "uid://A001/X1/Xff"  # 100 TB from the archive: 300 TB of scratch, more than any disk here
    store.import_datasets(db, [DataSet(uid=u, project="2016.1.00123.S", array="12m", size_gb=0.5, mem_gb=1,
                                       hours=0.01) for u in fit]
                          + [DataSet(uid=huge, project="2016.1.00123.S", array="12m", size_gb=1e5, mem_gb=1,
                                     hours=0.01)], "t.csv", now=time.time())
    db.close()
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        run_until_idle(engine)
        attempts = store.attempts(engine.db)
        held = store.dataset(engine.db, huge)
        total = store.node_row(engine.db, "roomy")["probe"]["scratch_total_gb"]
    # 0.5 GB of archive needs 1.55 GB of scratch: more than small's 1 GB, so all three ran on roomy
    assert sorted(a["uid"] for a in attempts) == fit and {a["node"] for a in attempts} == {"roomy"}
    assert held["state"] == "held" and not any(a["uid"] == huge for a in attempts)
    assert held["reason"].startswith("fits no node: needs 300,000 GB of scratch; the largest scratch (roomy) has ")
    assert 0.9 * total <= float(held["reason"].rsplit(" has ", 1)[1].split()[0].replace(",", "")) <= total


def test_attempts_teach_the_scratch_a_data_set_needs_and_a_node_too_small_for_it_is_then_refused(tmp_path):
    """Two 5 MB data sets each write 120 MiB into their work dir on the local node: the runner records
    it, the store keeps it, and the scheduler learns ~15 GB of scratch per GB of size (not the documented 3;
    120 MiB = 0.126 GB of 10**9 bytes). A 50 MB data set then needs ~0.8 GB: the node, now configured with 0.5 GB of scratch, is refused,
    where the default factor (0.2 GB) would have placed it there."""
    from ari_console import scheduler
    from ari_console.alma import DataSet
    from ari_console.readmodel import campaign_estimate, history, scheduler_queue, scratch_factors

    py = sys.executable
    node = f'[[node]]\nname = "local"\nslots = 2\nmem_gb = 4\nscratch_dir = "{tmp_path / "scratch"}"\npython = "{py}"\n'
    cfg = make_campaign(tmp_path, [], node)
    db = store.open_db(cfg.campaign.db_path)
    taught = ["uid://A001/X1/X1", "uid://A001/X1/X2"]
    store.import_datasets(db, [DataSet(uid=u, project="2016.1.00123.S", array="12m", size_gb=0.005, mem_gb=1,
                                       hours=0.01, extra={"sleeper": {"write_mb": 120}}) for u in taught],
                          "t.csv", now=time.time())
    db.close()
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        run_until_idle(engine)
        peaks = [a["peak_scratch_gb"] for a in store.attempts(engine.db)]
    assert len(peaks) == 2 and all(120 * 2**20 / 1e9 <= p < 121 * 2**20 / 1e9 for p in peaks), peaks  # MiB written, GB of 10**9 bytes
    # `ari datasets show` and the console's detail screen show it with the one formatter
    from rich.console import Console
    from typer.testing import CliRunner

    from ari_console.cli import app
    from ari_console.formatting import gb_text
    from ari_console.readmodel import dataset_detail
    from ari_console.tui.screens.detail import detail_renderable

    shown = CliRunner().invoke(app, ["datasets", "show", taught[0], "-c", str(tmp_path / "ari.toml")],
                               env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "peak scratch" in shown.output and gb_text(peaks[0]) in shown.output
    as_json = CliRunner().invoke(app, ["datasets", "show", taught[0], "--json", "-c", str(tmp_path / "ari.toml")])
    assert json.loads(as_json.output)["attempts"][0]["peak_scratch_gb"] == peaks[0]
    with store.open_db(cfg.campaign.db_path) as db:
        screen = Console(width=120, file=io.StringIO())
        screen.print(detail_renderable(dataset_detail(db, taught[0])))
    text = screen.file.getvalue()
    assert "peak scratch" in text and gb_text(peaks[0]) in text

    (tmp_path / "ari.toml").write_text((tmp_path / "ari.toml").read_text().replace(
        'name = "local"\n', 'name = "local"\nscratch_gb = 0.5\n'))
    cfg = load_config(tmp_path / "ari.toml")
    big = "uid://A001/X1/X3"
    db = store.open_db(cfg.campaign.db_path)
    store.import_datasets(db, [DataSet(uid=big, project="2016.1.00123.S", array="12m", size_gb=0.05, mem_gb=1,
                                       hours=0.01)], "t.csv", now=time.time())
    factors = scratch_factors(history(db, {n.name: n for n in cfg.nodes}))
    (sds,) = scheduler_queue(db, store.queue(db), factors)
    db.close()
    assert factors[None] == factors["12m"] == sds.scratch_per_gb
    assert (max(peaks) - scheduler.SCRATCH_FLOOR_GB) / 0.005 == pytest.approx(sds.scratch_per_gb)
    assert 0.7 < sds.scratch_need_gb < 0.9  # 0.05 GB x ~15 + 0.05, where the documented 3 would say 0.2
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        estimate_queue, _, _ = campaign_estimate(engine.db, cfg.nodes, time.time())
        assert [q.scratch_need_gb for q in estimate_queue] == [sds.scratch_need_gb]  # ari estimate: the same need
        run_until_idle(engine)
        held = store.dataset(engine.db, big)
        ran = [a["uid"] for a in store.attempts(engine.db)]
    assert big not in ran and held["state"] == "held"
    assert held["reason"].startswith(f"fits no node: needs {sds.scratch_need_gb:g} GB of scratch"), held["reason"]


def test_a_disk_full_attempt_makes_its_retry_need_more_scratch_than_it_had_when_it_died(tmp_path):
    """The runner measured 4 GB in the work dir when the scratch ran full: the data set's next attempt
    needs more than that, whatever its size says (1 GB of archive: 3.05 GB by the default factor)."""
    from ari_console import scheduler
    from ari_console.alma import DataSet
    from ari_console.readmodel import scheduler_queue

    cfg = make_campaign(tmp_path, [])
    db = store.open_db(cfg.campaign.db_path)
    uid, now = "uid://A001/X1/X1", time.time()
    store.import_datasets(db, [DataSet(uid=uid, project="2016.1.00123.S", array="12m", size_gb=1.0)], "t.csv", now=now)
    (before,) = scheduler_queue(db, store.queue(db))
    attempt = store.create_attempt(db, uid, "local", now)
    store.update_attempt(db, attempt, now, state="failed", category="disk_full", peak_scratch_gb=4.0, ended_at=now)
    store.set_dataset_state(db, uid, "queued", now, reason="retry after disk_full")
    (after,) = scheduler_queue(db, store.queue(db))
    db.close()
    assert before.scratch_need_gb == 3.05 and after.scratch_seen_gb == 4.0
    assert after.scratch_need_gb == 4.0 * scheduler.SCRATCH_RETRY_MARGIN
    small = scheduler.NodeState("local", mem_gb=4, scratch_gb=4.5)
    assert scheduler.why_not(after, scheduler.Prediction(0.1, 1.0), small) == "needs 5 GB of scratch, local has 4.5 GB"
    assert scheduler.why_not(before, scheduler.Prediction(0.1, 1.0), small) is None


def test_an_attempt_over_ssh_records_the_scratch_its_recipe_wrote(sshd_factory, tmp_path):
    server = sshd_factory()
    node = (f'[[node]]\nname = "ws"\ntransport = "ssh"\nhost = "{server.host}"\nport = {server.port}\n'
            f'user = "{server.user}"\nidentity_file = "{server.identity_file}"\nknown_hosts = "{server.known_hosts}"\n'
            f'slots = 1\nmem_gb = 4\nscratch_dir = "{tmp_path / "scratch"}"\npython = "{sys.executable}"\n')
    cfg = make_campaign(tmp_path, [("uid://A001/X1/X1", "12m", {"sleeper": {"write_mb": 40}})], nodes_toml=node)
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        run_until_idle(engine)
        (a,) = store.attempts(engine.db)
    assert a["state"] == "succeeded" and 40 * 2**20 / 1e9 <= a["peak_scratch_gb"] < 41 * 2**20 / 1e9


def test_a_running_engine_applies_what_an_attempt_taught_to_the_data_sets_still_queued(tmp_path):
    """One slot, 0.5 GB of scratch. The 5 MB data set runs first and writes 120 MiB; the 50 MB one, queued
    all along (0.2 GB by the documented factor: it fits), needs ~0.8 GB once that attempt ended: held."""
    from ari_console.alma import DataSet

    py = sys.executable
    node = (f'[[node]]\nname = "local"\nslots = 1\nmem_gb = 4\nscratch_gb = 0.5\n'
            f'scratch_dir = "{tmp_path / "scratch"}"\npython = "{py}"\n')
    cfg = make_campaign(tmp_path, [], node)
    small, big = "uid://A001/X1/X1", "uid://A001/X1/X2"
    with store.open_db(cfg.campaign.db_path) as db:
        store.import_datasets(db, [
            DataSet(uid=small, project="2016.1.00123.S", array="12m", size_gb=0.005, mem_gb=1, hours=0.01,
                    extra={"sleeper": {"write_mb": 120}}),
            DataSet(uid=big, project="2016.1.00123.S", array="12m", size_gb=0.05, mem_gb=1, hours=0.001)],
            "t.csv", now=time.time())
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        engine.tick()
        assert [a["uid"] for a in store.active_attempts(engine.db)] == [small]  # the longer one first
        run_until_idle(engine)
        ran = [a["uid"] for a in store.attempts(engine.db)]
        held = store.dataset(engine.db, big)
    assert ran == [small] and held["state"] == "held"
    assert held["reason"].startswith("fits no node: needs 0.8"), held["reason"]  # 120 MiB = 0.126 GB learned


def test_a_new_plan_counts_a_running_attempt_busy_for_the_hours_it_is_expected_to_take_yet(tmp_path):
    """A plan made while an attempt runs does not treat its slot as free: the queue's plan cannot end
    before the running 5 h data set is expected to (its hours given: no spread, as a user set them)."""
    from ari_console.alma import DataSet

    cfg = make_campaign(tmp_path, [])
    db = store.open_db(cfg.campaign.db_path)
    store.import_datasets(db, [DataSet(uid="uid://A001/X1/X1", project="2016.1.00123.S", array="12m",
                                       extra={"sleeper": {"sleep_s": 20}}, mem_gb=1, hours=5.0)], "t.csv", now=time.time())
    db.close()
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        wait_for_launch(engine)
        store.import_datasets(engine.db, [DataSet(uid=f"uid://A001/X1/X{i}", project="2016.1.00123.S", array="12m",
                                                  mem_gb=1, hours=1.0) for i in (2, 3, 4)], "more.csv", now=time.time())
        engine.tick()  # an import: the queue is planned again, one of the three launched into the free slot
        assert engine.plan is not None and engine.plan.remaining == 2
        assert 4.9 < engine.plan.makespan_h < 5.1, engine.plan.makespan_h


def test_a_re_plan_after_a_refit_is_the_plan_made_with_nothing_kept(tmp_path, monkeypatch):
    """The engine's re-plan after a refit (every prediction anew) takes the risk columns from the arrays
    predict_all made (prediction.made_columns) and plans exactly as a plan made with nothing kept, the
    columns read off each prediction: the same sequences, hours, quantiles and predictions."""
    import sys

    import numpy as np

    from ari_console import scheduler
    from ari_console.engine import TickReport
    from benchmarks.bench_engine import STUDY_NODES, _finished, _metadata_queue

    prediction = sys.modules["ari_console.scheduler.prediction"]
    eligibility = sys.modules["ari_console.scheduler.eligibility"]
    (tmp_path / "ari.toml").write_text(f'[campaign]\nname = "t"\n{STUDY_NODES}')
    cfg = load_config(tmp_path / "ari.toml")
    db = store.open_db(cfg.campaign.db_path)
    now = time.time()
    store.sync_nodes(db, cfg.nodes, now)
    queue = _metadata_queue(3000)
    store.import_datasets(db, queue, "t.csv", now)
    _finished(db, [d.uid for d in queue[:400]], now, np.random.default_rng(3))
    db.close()
    asked = []
    place = scheduler.place

    def spy(queue, states, now, **kw):
        asked.append((list(queue), states, now, kw))
        return place(queue, states, now, **kw)

    monkeypatch.setattr(scheduler, "place", spy)
    with Engine(cfg) as engine:
        engine._launch = lambda ds, node, sds, now, report: True
        engine._schedule(now + 1, TickReport())  # read, fit, predict every data set, plan
        planned, states, at, kw = asked[-1]
        made = engine.plan
    preds = kw["predictions"]
    assert prediction.made_columns([preds[ds.uid] for ds in planned]) is not None  # the arrays were there to take
    prediction._MADE[0] = None
    eligibility.forget_settled()
    cold = place(planned, states, at, **{**kw, "predictions": dict(preds), "plan": None}).plan

    def plan_of(plan):
        return ({k: [d.uid for d in v] for k, v in plan.sequence.items()}, plan.makespan_h, plan.variant,
                plan.risk_quantile, plan.suffix_h, [(u.dataset.uid, u.reason) for u in plan.unplaceable],
                dict(plan.predictions))

    assert made.risk_quantile is not None and plan_of(made) == plan_of(cold)

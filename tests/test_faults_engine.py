"""Fault injection, the engine: crashes inside a decision, broken nodes, full disks, shared scratch.

Each case runs a campaign through the real runner on real local, SSH (the sshd
fixture) and Slurm (the Slurm fixture) nodes, injects one fault, lets the
campaign go on, and asserts what an operator relies on (``campaign_is_sound``):
the campaign finishes, no data set is lost, duplicated or stuck, no attempt
ran twice at once, and the fault showed up as its one line. The stages run the
sleeper recipe (tests/data/recipes/sleeper.py): these tests are about the
campaign loop, not imaging.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ari_console.engine as engine_mod
from ari_console import store
from ari_console.alma import DataSet
from ari_console.config import load_config
from ari_console.engine import Engine
from tests.test_engine import RUN_ENGINE, run_until_idle, sleeper_spec

OK = {"sleeper": {"sleep_s": 1.5}}
FAILS = {"sleeper": {"sleep_s": 0.5, "fail_stage": "image", "fail_message":
                     "2026-11-25 10:00:00\tSEVERE\ttclean::::casa\tTask tclean raised an exception of class "
                     "RuntimeError with the following message: Error in making PSF : One or more  of the "
                     "cube section failed in de/gridding."}}


def local_node(name: str, scratch: Path, slots: int = 1, extra: str = "") -> str:
    return (f'[[node]]\nname = "{name}"\nslots = {slots}\nmem_gb = 4\nscratch_dir = "{scratch}"\n'
            f'python = "{sys.executable}"\n{extra}\n')


def ssh_node(name: str, server, scratch: Path) -> str:
    return (f'[[node]]\nname = "{name}"\ntransport = "ssh"\nhost = "{server.host}"\nport = {server.port}\n'
            f'user = "{server.user}"\nidentity_file = "{server.identity_file}"\nknown_hosts = "{server.known_hosts}"\n'
            f'slots = 1\nmem_gb = 4\nscratch_dir = "{scratch}"\npython = "{sys.executable}"\n')


def slurm_node(name: str, slurm, scratch: Path) -> str:
    return (f'[[node]]\nname = "{name}"\nbatch = "slurm"\npartition = "{slurm.partition}"\nslots = 2\nmem_gb = 2\n'
            f'scratch_dir = "{scratch}"\npython = "{sys.executable}"\nenv = {{ SLURM_CONF = "{slurm.conf}" }}\n')


def write_campaign(directory: Path, nodes: str, rows: list[tuple], name: str = "f"):
    """A campaign in ``directory``: ``rows`` are (uid, extra[, size_gb[, mem_gb]])."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ari.toml").write_text(f'[campaign]\nname = "{name}"\npoll_interval_s = 0.5\nmax_attempts = 3\n'
                                        f'retry_backoff_s = 1\n{nodes}')
    cfg = load_config(directory / "ari.toml")
    db = store.open_db(cfg.campaign.db_path)
    store.import_datasets(db, [DataSet(uid=r[0], project="2016.1.00123.S", array="12m", extra=r[1],
                                       size_gb=r[2] if len(r) > 2 else None, mem_gb=r[3] if len(r) > 3 else 1,
                                       hours=0.01) for r in rows], "f.csv", now=time.time())
    db.conn.close()
    return cfg


def tick_until_idle(engine, timeout: float = 120) -> list[str]:
    """Tick ``engine`` until it is idle (or ``timeout``); every error line the ticks reported."""
    errors = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        report = engine.tick()
        errors += report.errors
        if report.idle:
            break
        time.sleep(0.3)
    return errors


DONE = "review"
"""Where a sleeper's data set ends: its products made, no QA2 images to check them, an operator decides."""


def campaign_is_sound(db, expected: dict[str, str]) -> list[dict]:
    """Every data set ended as expected; none stuck, lost or duplicated; no attempt ran twice. The attempts."""
    states = {d["uid"]: d["state"] for d in store.datasets(db)}
    attempts = store.attempts(db)
    shown = [(a["id"], a["uid"], a["node"], a["state"], a["category"], a["excerpt"]) for a in attempts]
    assert states == expected, shown
    assert store.active_attempts(db) == [], shown
    for d in store.datasets(db):
        mine = [a for a in attempts if a["uid"] == d["uid"]]
        won = [a for a in mine if a["state"] == "succeeded"]
        assert len(won) == (1 if d["state"] in ("succeeded", "review") else 0), shown
        if won:  # delivered, or (no QA2 images to check it) its products wait for an operator's decision
            held_for = d["accepted_attempt"] if d["state"] == "succeeded" else store.review_attempt(db, d["uid"])["id"]
            assert held_for == won[0]["id"]
            assert len(store.products(db, won[0]["id"])) == 1
        ran = sorted((a["started_at"], a["ended_at"]) for a in mine if a["started_at"])
        assert all(prev[1] <= nxt[0] for prev, nxt in zip(ran, ran[1:])), f"{d['uid']} ran twice at once: {shown}"
        work_dirs = [a["work_dir"] for a in mine if a["work_dir"]]
        assert len(work_dirs) == len(set(work_dirs)), shown
    return attempts


def node_faults(db, node: str) -> list[dict]:
    return [e for e in store.events(db, limit=100000) if e["kind"] == "node-fault" and e["node"] == node]


def kill_runners(db) -> None:
    """Stop the runners a test left on a node it cut off (their process groups)."""
    for a in store.attempts(db):
        pid = (a["handle"] or {}).get("pid")
        if pid:
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


# -- the engine killed inside each decision --------------------------------------------------------

def engine_killed_in(directory: Path, window: str, timeout: float = 90) -> None:
    """Run ``ari run`` (with the sleeper) until the hook SIGKILLs it inside ``window``."""
    proc = subprocess.Popen([sys.executable, str(RUN_ENGINE), str(directory)], cwd=directory, text=True,
                            stderr=subprocess.PIPE, env={**os.environ, store.KILL_IN_ENV: window})
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the engine never reached the {window} window: {proc.communicate()[1][-2000:]}")
    assert proc.returncode == -signal.SIGKILL, f"the engine ended ({proc.returncode}) outside {window}: {err[-2000:]}"


@pytest.mark.parametrize("window", ["launch", "finish", "deliver", "hold", "launch-failed"])
def test_an_engine_killed_inside_a_decision_leaves_it_whole_and_the_next_engine_finishes(tmp_path, window):
    rows = [("uid://A001/X1/X1", OK)]
    expected = {"uid://A001/X1/X1": DONE}
    nodes = local_node("here", tmp_path / "scratch")
    if window == "finish":
        rows.append(("uid://A001/X1/X2", FAILS))
        expected["uid://A001/X1/X2"] = "held"
    if window == "hold":
        rows.append(("uid://A001/X1/X3", OK, None, 100))  # fits no node: held
        expected["uid://A001/X1/X3"] = "held"
    if window == "launch-failed":
        nodes += local_node("broken", tmp_path / "broken").replace(sys.executable, "/no/such/python3")
        rows.append(("uid://A001/X1/X4", OK))
        expected["uid://A001/X1/X4"] = DONE
    cfg = write_campaign(tmp_path, nodes, rows)
    engine_killed_in(tmp_path, window)

    db = store.open_db(cfg.campaign.db_path)
    half = {d["uid"]: d["state"] for d in store.datasets(db)}
    if window == "deliver":  # the whole delivery rolled back: nothing says delivered, nothing says failed
        (a,) = store.attempts(db)
        assert (a["state"], half["uid://A001/X1/X1"], store.products(db, a["id"])) == ("running", "running", [])
    if window == "finish":
        failing = store.attempts(db, uid="uid://A001/X1/X2")
        assert [a["state"] for a in failing] == ["running"] and half["uid://A001/X1/X2"] == "running"
    if window == "hold":
        assert half["uid://A001/X1/X3"] == "queued"
    db.conn.close()

    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        run_until_idle(engine)
        attempts = campaign_is_sound(engine.db, expected)
        events = store.events(engine.db, limit=100000)
    # Each data set tried exactly as often as it ran: an interrupted or failed launch is not a try.
    assert all(a["node"] == "here" for a in attempts), attempts
    assert len([a for a in attempts if a["uid"] == "uid://A001/X1/X1"]) == 1
    if window in ("launch", "launch-failed"):  # the half-made launch was found undone and cost no try
        assert [e["node"] for e in events if e["kind"] == "launch-interrupted"] == \
            ["here" if window == "launch" else "broken"]


def test_start_up_reconciles_what_a_crash_between_separate_writes_left(tmp_path):
    """State files written by consoles that recorded one decision in several transactions."""
    rows = [("uid://A001/X1/X1", OK), ("uid://A001/X1/X2", OK), ("uid://A001/X1/X3", OK)]
    cfg = write_campaign(tmp_path, local_node("here", tmp_path / "scratch"), rows)
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        run_until_idle(engine)
        db, now = engine.db, time.time()
        first, second, third = (store.attempts(db, uid=u)[0] for u, _ in rows)
        for a in (first, second, third):  # delivered (as a QA2-consistent attempt is)
            store.accept_attempt(db, a["uid"], a["id"], now)
        # 1: delivered, but the attempt not yet marked succeeded when the console died
        db.conn.execute("UPDATE attempts SET state = 'running' WHERE id = ?", (first["id"],))
        # 2: the next console then took the delivered data set for a failure and queued it again
        db.conn.execute("UPDATE attempts SET state = 'failed', category = 'export' WHERE id = ?", (second["id"],))
        store.record_event(db, "retry-policy", now, uid=second["uid"], attempt_id=second["id"], new="queued")
        db.conn.execute("UPDATE datasets SET state = 'queued' WHERE uid = ?", (second["uid"],))
        # 3: the attempt's end recorded, the data set's decision not
        db.conn.execute("UPDATE datasets SET state = 'running', accepted_attempt = NULL WHERE uid = ?",
                        (third["uid"],))
        db.conn.execute("UPDATE attempts SET state = 'failed', category = 'imaging' WHERE id = ?", (third["id"],))
    lines = []
    with Engine(cfg, adjust_spec=sleeper_spec, progress=lines.append) as engine:
        assert any("accepted attempt" in line for line in lines), lines
        assert any("running without an active attempt" in line for line in lines), lines
        run_until_idle(engine)
        attempts = campaign_is_sound(engine.db, {"uid://A001/X1/X1": "succeeded", "uid://A001/X1/X2": "succeeded",
                                                 "uid://A001/X1/X3": DONE})
    assert [a["uid"] for a in attempts].count("uid://A001/X1/X3") == 2  # decided again, ran again
    assert [a["uid"] for a in attempts].count("uid://A001/X1/X2") == 1  # not re-run: it was delivered


# -- per-node faults ------------------------------------------------------------------------------

@pytest.mark.sshd
def test_a_host_key_swapped_mid_run_stays_that_nodes_problem(sshd_factory, tmp_path):
    from ari_console.demo.testbed.sshd import generate_key

    server = sshd_factory()
    rows = [(f"uid://A001/X1/X{i}", {"sleeper": {"sleep_s": 3}}) for i in range(1, 5)]
    cfg = write_campaign(tmp_path, ssh_node("ws", server, tmp_path / "ws") + local_node("here", tmp_path / "s"),
                         rows)
    with Engine(cfg, adjust_spec=sleeper_spec, node_lost_after_s=4.0) as engine:
        deadline = time.time() + 30
        while time.time() < deadline and not any(a["node"] == "ws" and a["handle"]
                                                 for a in store.active_attempts(engine.db)):
            engine.tick()
            time.sleep(0.3)
        # The workstation is reinstalled: same address, new host key.
        server.stop()
        for f in server.directory.glob("host_ed25519*"):
            f.unlink()
        generate_key(server.directory / "host_ed25519", "reinstalled")
        server.start()
        errors = tick_until_idle(engine)
        attempts = campaign_is_sound(engine.db, {u: DONE for u, _ in rows})
        faults = node_faults(engine.db, "ws")
    told = [e for e in errors if "host key" in e]
    assert len(told) == 1 and "\n" not in told[0] and "ssh-keygen" in told[0], errors
    assert [f["new"] for f in faults] == ["host_key"]
    lost = [a for a in attempts if a["node"] == "ws"]
    assert lost and all((a["state"], a["category"]) == ("lost", "node_lost") for a in lost)
    assert all(a["node"] == "here" for a in attempts if a["state"] == "succeeded")


def test_attempts_on_a_node_removed_from_the_config_are_reported_then_lost_and_run_until_idle_returns(tmp_path):
    rows = [("uid://A001/X1/X1", {"sleeper": {"sleep_s": 8}}), ("uid://A001/X1/X2", OK)]
    nodes = local_node("gone", tmp_path / "gone") + local_node("here", tmp_path / "here")
    cfg = write_campaign(tmp_path, nodes, rows)
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        store.set_overrides(engine.db, "uid://A001/X1/X1", time.time(), node="gone")
        deadline = time.time() + 30
        while time.time() < deadline and not [a for a in store.active_attempts(engine.db)
                                              if a["node"] == "gone" and a["handle"]]:
            engine.tick()
            time.sleep(0.3)
        store.set_overrides(engine.db, "uid://A001/X1/X1", time.time(), node=None)
    (tmp_path / "ari.toml").write_text((tmp_path / "ari.toml").read_text().replace(
        local_node("gone", tmp_path / "gone"), ""))
    lines = []
    cfg = load_config(tmp_path / "ari.toml")
    with Engine(cfg, adjust_spec=sleeper_spec, progress=lines.append, node_lost_after_s=3.0) as engine:
        deadline = time.time() + 90
        report = engine.run(stop=lambda: time.time() > deadline, until_idle=True)
        assert report.idle, lines
        attempts = campaign_is_sound(engine.db, {"uid://A001/X1/X1": DONE, "uid://A001/X1/X2": DONE})
        kill_runners(engine.db)
    told = [line for line in lines if "no longer in ari.toml" in line]
    assert len(told) == 1, lines
    (lost,) = [a for a in attempts if a["node"] == "gone"]
    assert (lost["state"], lost["category"]) == ("lost", "node_lost") and "removed" in lost["excerpt"]


# -- a full scratch disk ------------------------------------------------------------------------------

@pytest.fixture
def small_scratch(tmp_path):
    """A 4 MB tmpfs as a node's scratch (we are root); unmounted at the end whatever happens."""
    point = tmp_path / "small"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(point)], check=True)
    yield point
    subprocess.run(["umount", "-l", str(point)], check=False)


def three_small_ones_on_small_and_big(tmp_path, small_scratch, small_extra: str = ""):
    """Three data sets of 0.01 GB (~80 MB of scratch each) run on "small" (two slots, scratch on a 4 MB
    tmpfs) and "big": the engine's error lines, the attempts, small's node faults and its row."""
    rows = [(f"uid://A001/X1/X{i}", OK, 0.01) for i in range(1, 4)]
    nodes = local_node("small", small_scratch, slots=2, extra=small_extra) + local_node("big", tmp_path / "big")
    cfg = write_campaign(tmp_path, nodes, rows)
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        errors = tick_until_idle(engine)
        attempts = campaign_is_sound(engine.db, {u: DONE for u, _, _ in rows})
        return errors, attempts, node_faults(engine.db, "small"), store.node_row(engine.db, "small")


def test_a_scratch_too_small_for_a_data_set_is_disk_full_before_launch_and_the_data_set_goes_elsewhere(
        tmp_path, small_scratch):
    # the operator says small's scratch holds 1 GB (placement allows it); the 4 MB it really has free stops the launch
    errors, attempts, faults, row = three_small_ones_on_small_and_big(tmp_path, small_scratch, "scratch_gb = 1")
    assert [a["node"] for a in attempts] == ["big"] * 3  # never launched where it cannot fit, never a try
    told = [e for e in errors if "disk_full" in e]
    assert len(told) == 1 and str(small_scratch) in told[0] and "needs" in told[0], errors
    assert [f["new"] for f in faults] == ["disk_full"] and "disk_full" in row["probe_error"]


def test_a_scratch_file_system_smaller_than_a_data_set_needs_gets_no_placement_and_no_disk_full(
        tmp_path, small_scratch):
    errors, attempts, faults, row = three_small_ones_on_small_and_big(tmp_path, small_scratch)
    assert [a["node"] for a in attempts] == ["big"] * 3  # the probe's df said it cannot fit: never placed there
    assert not [e for e in errors if "disk_full" in e] and faults == [] and row["probe_error"] is None, errors


def test_a_scratch_that_fills_while_the_runner_works_is_disk_full_reported_from_its_reserve(
        tmp_path, small_scratch):
    uid = "uid://A001/X1/X1"
    nodes = local_node("small", small_scratch) + local_node("big", tmp_path / "big")
    cfg = write_campaign(tmp_path, nodes, [(uid, {"sleeper": {"sleep_s": 8}})])
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        store.set_overrides(engine.db, uid, time.time(), node="small")
        deadline = time.time() + 30
        while time.time() < deadline and not [a for a in store.active_attempts(engine.db) if a["handle"]]:
            engine.tick()
            time.sleep(0.3)
        store.set_overrides(engine.db, uid, time.time(), node=None)
        # Someone else fills the disk while the stage runs.
        subprocess.run(["dd", "if=/dev/zero", f"of={small_scratch / 'filler'}", "bs=64k"], capture_output=True)
        run_until_idle(engine)
        attempts = campaign_is_sound(engine.db, {uid: DONE})
    first, second = attempts
    assert (first["node"], first["state"], first["category"]) == ("small", "failed", "disk_full"), first
    assert "full" in first["excerpt"]
    status = first["status"]
    assert status["state"] == "failed" and status["category"] == "disk_full"  # written on the full disk
    assert (second["node"], second["state"]) == ("big", "succeeded")


# -- campaigns sharing a scratch ------------------------------------------------------------------------

def test_two_campaigns_on_one_scratch_never_share_a_work_dir_or_a_result(tmp_path):
    scratch = tmp_path / "shared-scratch"
    uid_a, uid_b = "uid://A001/X1/Xa", "uid://A001/X1/Xb"
    cfg_a = write_campaign(tmp_path / "a", local_node("here", scratch), [(uid_a, OK)], name="same")
    cfg_b = write_campaign(tmp_path / "b", local_node("here", scratch), [(uid_b, {"sleeper": {"sleep_s": 3}})],
                           name="same")
    with Engine(cfg_a, adjust_spec=sleeper_spec) as a, Engine(cfg_b, adjust_spec=sleeper_spec) as b:
        deadline = time.time() + 90
        while time.time() < deadline:
            ra, rb = a.tick(), b.tick()
            if ra.idle and rb.idle:
                break
            time.sleep(0.3)
        (att_a,) = campaign_is_sound(a.db, {uid_a: DONE})
        (att_b,) = campaign_is_sound(b.db, {uid_b: DONE})
    assert att_a["id"] == att_b["id"] == 1  # both campaigns number their first attempt alike
    assert att_a["work_dir"] != att_b["work_dir"]
    assert att_a["status"]["uid"] == uid_a and att_b["status"]["uid"] == uid_b  # each accepted its own result


# -- Slurm -------------------------------------------------------------------------------------------------

@pytest.mark.slurm
def test_an_engine_killed_inside_delivery_of_a_slurm_job_delivers_it_once_after_restart(tmp_path, slurm):
    uid = "uid://A001/X1/X1"
    cfg = write_campaign(tmp_path, slurm_node("hpc", slurm, tmp_path / "hpc"), [(uid, OK), ("uid://A001/X1/X2", OK)])
    engine_killed_in(tmp_path, "deliver", timeout=120)
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        run_until_idle(engine, timeout=120)
        attempts = campaign_is_sound(engine.db, {uid: DONE, "uid://A001/X1/X2": DONE})
    assert len(attempts) == 2 and all(a["handle"]["batch"] == "slurm" for a in attempts)


@pytest.mark.slurm
def test_the_testbed_slurm_daemons_listen_on_loopback_only(slurm):
    conf = slurm.conf.read_text()
    ports = {int(line.split("=")[1]) for line in conf.splitlines() if line.startswith(("SlurmctldPort=", "SlurmdPort="))}
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.rsplit(":", 1)
            if state == "0A" and int(port, 16) in ports:  # LISTEN
                listening.append(address)
    assert listening and all(a in ("0100007F", "00000000000000000000000001000000") for a in listening), listening


def test_a_launch_onto_a_full_scratch_fails_without_an_attempt_and_the_data_set_runs_elsewhere(
        tmp_path, small_scratch):
    subprocess.run(["dd", "if=/dev/zero", f"of={small_scratch / 'filler'}", "bs=64k"], capture_output=True)
    rows = [(f"uid://A001/X1/X{i}", OK) for i in range(1, 4)]  # sizes unknown: only the launch can tell
    cfg = write_campaign(tmp_path, local_node("small", small_scratch, slots=2) + local_node("big", tmp_path / "big"),
                         rows)
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        errors = tick_until_idle(engine)
        attempts = campaign_is_sound(engine.db, {u: DONE for u, _ in rows})
        failed = [e for e in store.events(engine.db, limit=100000) if e["kind"] == "launch-failed"]
    assert [a["node"] for a in attempts] == ["big"] * 3
    assert failed and all(e["node"] == "small" for e in failed)
    told = [e for e in errors if e.startswith("small")]
    assert len(told) == 1 and "No space left" in told[0], errors


def test_launch_failures_drain_the_node_after_a_bound_and_spend_no_tries(tmp_path):
    uid = "uid://A001/X1/X1"
    broken = local_node("broken", tmp_path / "broken").replace(sys.executable, "/no/such/python3")
    cfg = write_campaign(tmp_path, broken, [(uid, OK)])
    lines = []
    with Engine(cfg, adjust_spec=sleeper_spec, progress=lines.append) as engine:
        deadline = time.time() + 60
        report = engine.run(stop=lambda: time.time() > deadline, until_idle=True)
        row = store.node_row(engine.db, "broken")
        ds = store.dataset(engine.db, uid)
        failed = [e for e in store.events(engine.db, limit=100000) if e["kind"] == "launch-failed"]
        assert store.attempts(engine.db) == []  # no attempt per try: nothing ran
    assert len(failed) == engine_mod.LAUNCH_FAILURES_DRAIN
    assert row["drained"] and "launches in a row failed" in row["drained_reason"]
    # Not stuck in silence: `ari run --until-idle` returns and says what an operator must do.
    assert report.idle and ds["state"] == "queued" and "ari nodes undrain" in report.blocked
    assert any("ari nodes undrain broken" in line for line in lines), lines


@pytest.mark.casa
def test_ari_run_killed_inside_the_delivery_of_real_casa_products_delivers_them_once(tmp_path, archive_service, casa):
    from ari_console.archive.client import queue_candidates, tap_url_of

    uid = "uid://A001/X1296/X1d3"
    (tmp_path / "ari.toml").write_text(
        f'[campaign]\nname = "casa-kill"\narchive_url = "{archive_service.url}"\npoll_interval_s = 1\n'
        f'[[node]]\nname = "local"\nslots = 1\nmem_gb = 8\nscratch_dir = "{tmp_path / "scratch"}"\n'
        f'python = "{sys.executable}"\ncasa_path = "{sys.executable}"\ncasa_versions = ["6.7.0-31"]\n'
        f'env = {{ CASASITECONFIG = "{casa.site_config}" }}\n')
    cfg = load_config(tmp_path / "ari.toml")
    rows, _ = queue_candidates(tap_url_of(cfg.campaign.archive_url), [], [uid])
    with store.open_db(cfg.campaign.db_path) as db:
        store.import_datasets(db, rows, "archive", now=time.time())
    ari = str(Path(sys.executable).parent / "ari")
    proc = subprocess.run([ari, "run", "--until-idle"], cwd=tmp_path, capture_output=True, text=True, timeout=480,
                          env={**os.environ, store.KILL_IN_ENV: "deliver"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    with store.open_db(cfg.campaign.db_path) as db:  # the delivery rolled back whole
        (a,) = store.attempts(db)
        assert (a["state"], store.products(db, a["id"]), store.qa2_results(db, uid)) == ("running", [], [])
    with Engine(cfg) as engine:
        deadline = time.time() + 300
        while time.time() < deadline and not engine.tick().idle:
            time.sleep(1)
        (attempt,) = store.attempts(engine.db)
        assert store.dataset(engine.db, uid)["state"] == "succeeded"
        assert attempt["state"] == "succeeded" and store.dataset(engine.db, uid)["accepted_attempt"] == attempt["id"]
        products = store.products(engine.db, attempt["id"])
        assert any(p["path"].endswith(".cont.I.pbcor.fits") for p in products)
        assert len({p["path"] for p in products}) == len(products)  # delivered once, not twice
        verdicts = [r["verdict"] for r in store.qa2_results(engine.db, uid)]
        assert verdicts and set(verdicts) == {"consistent"}

"""Fault injection, the door: bad input and a broken state file are one line each, never a traceback.

Each case runs the real `ari` command (a subprocess, as an operator would) and
asserts the exit code 2, a single line naming the input, what is wrong and the
fix, and that nothing was half-done. The hanging-command cases use the real
local transport and a real TCP listener that never answers.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ari_console import store
from ari_console.config import load_config
from ari_console.engine import Engine, product_name

ARI = str(Path(sys.executable).parent / "ari")
UID = "uid://A001/X1/X1"


def ari(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([ARI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """The command failed as a user mistake: exit 2, one line on stderr, no traceback, naming ``words``."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def campaign(tmp_path: Path, campaign_extra: str = "", node_extra: str = "") -> Path:
    (tmp_path / "ari.toml").write_text(
        f'[campaign]\nname = "f"\npoll_interval_s = 0.5\n{campaign_extra}'
        f'[[node]]\nname = "here"\nslots = 1\nmem_gb = 4\nscratch_dir = "{tmp_path / "scratch"}"\n'
        f'python = "{sys.executable}"\n{node_extra}')
    return tmp_path / "ari.toml"


# -- the catalogue ------------------------------------------------------------------------

@pytest.mark.parametrize("cell, words", [
    ('"[{""url"": ""https://a/x.tar"", name}]"', ("line 2", "files", "not valid JSON")),
    ('"[{""url"": ""https://a/x.tar"", ""name"": ""../../x""}]"', ("line 2", "files", "../../x", "plain file name")),
    ('"[{""url"": ""https://a/x.tar"", ""name"": ""/abs/x""}]"', ("line 2", "/abs/x")),
])
def test_a_catalogue_cell_that_would_break_a_launch_is_refused_at_import(tmp_path, cell, words):
    campaign(tmp_path)
    (tmp_path / "cat.csv").write_text(f"uid,project,files\n{UID},2016.1.00123.S,{cell}\n")
    one_line_error(ari(tmp_path, "datasets", "import", "cat.csv"), "cat.csv", *words)
    # Nothing half-imported: the campaign has no data set.
    assert ari(tmp_path, "status", "--json").returncode == 0
    assert store.counts(store.open_db(tmp_path / "ari.db"))["queued"] == 0


def test_a_bad_files_cell_already_in_the_state_file_holds_that_data_set_and_the_rest_run(tmp_path):
    from tests.test_engine import run_until_idle, sleeper_spec

    cfg = load_config(campaign(tmp_path))
    db = store.open_db(cfg.campaign.db_path)
    from ari_console.alma import DataSet
    store.import_datasets(db, [DataSet(uid=UID, project="2016.1.00123.S", extra={"files": "[{not json"}, mem_gb=1, hours=0.01),
                               DataSet(uid="uid://A001/X1/X2", project="2016.1.00123.S", mem_gb=1, hours=0.01)], "old.csv", now=time.time())
    db.conn.close()
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        report = run_until_idle(engine)
        assert store.dataset(engine.db, UID)["state"] == "held"
        assert "not valid JSON" in store.dataset(engine.db, UID)["reason"]
        (attempt,) = store.attempts(engine.db, uid=UID)  # one record of why, not one dead attempt per run
        assert attempt["state"] == "failed" and "job spec rejected" in attempt["excerpt"]
        assert store.dataset(engine.db, "uid://A001/X1/X2")["state"] == "review"  # products made; no QA2 images to check them
    assert report.idle


# -- the configuration -------------------------------------------------------------------

@pytest.mark.parametrize("campaign_extra, node_extra, words", [
    ("", "cpus_per_slot = 1\nwalltime_h = nan\n", ('node "here"', "walltime_h", "finite")),
    ("", "speed = -5\n", ("speed", "positive")),
    ("poll_interval_s = 0\n", "", ("poll_interval_s", "at least 0.5")),
    ("retry_backoff_s = inf\n", "", ("retry_backoff_s", "finite")),
])
def test_config_check_refuses_numbers_that_would_crash_or_busy_loop_the_engine(tmp_path, campaign_extra,
                                                                                node_extra, words):
    text = campaign(tmp_path).read_text()
    if "poll_interval_s" in campaign_extra:
        text = text.replace("poll_interval_s = 0.5\n", "")
    (tmp_path / "ari.toml").write_text(text.replace("[[node]]\n", f"{campaign_extra}[[node]]\n") + node_extra)
    one_line_error(ari(tmp_path, "config", "check"), "ari.toml", *words)


def test_relative_paths_resolve_against_the_directory_of_ari_toml_not_the_shell(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "ari.toml").write_text('[[node]]\nname = "here"\nscratch_dir = "scratch"\n'
                                             '[[node]]\nname = "ws"\ntransport = "ssh"\nhost = "h"\n'
                                             'identity_file = "keys/id"\nscratch_dir = "/s"\n')
    os.chdir(tmp_path)
    cfg = load_config(Path("c/ari.toml"))
    assert cfg.node("here").scratch_dir == str(tmp_path / "c" / "scratch")
    assert cfg.node("ws").identity_file == tmp_path / "c" / "keys" / "id"
    (tmp_path / "c" / "ari.toml").write_text('[[node]]\nname = "ws"\ntransport = "ssh"\nhost = "h"\n'
                                             'scratch_dir = "scratch"\n')
    one_line_error(ari(tmp_path, "-c", "c/ari.toml", "config", "check"), "scratch_dir", "absolute")


# -- operator actions ----------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--mem-gb", "-5"], ("--mem-gb", "positive")),
    (["--mem-gb", "nan"], ("--mem-gb", "nan")),
    (["--walltime-h", "0"], ("--walltime-h", "positive")),
    (["--param", "nitre=5"], ('--param "nitre"', 'did you mean "niter"')),
])
def test_override_refuses_values_and_parameters_the_recipe_cannot_use(tmp_path, args, words):
    campaign(tmp_path)
    (tmp_path / "cat.csv").write_text(f"uid,project\n{UID},2016.1.00123.S\n")
    assert ari(tmp_path, "datasets", "import", "cat.csv").returncode == 0
    one_line_error(ari(tmp_path, "override", UID, *args), *words)
    assert store.dataset(store.open_db(tmp_path / "ari.db"), UID)["overrides"] == {}
    ok = ari(tmp_path, "override", UID, "--param", "niter=50", "--mem-gb", "6", "--json")
    assert ok.returncode == 0, ok.stderr


def test_a_manifest_entry_cannot_fetch_a_node_file_from_outside_products():
    assert product_name({"file": "img.pbcor.fits"}) == "img.pbcor.fits"
    assert product_name({"file": "cont/img.fits"}) == "cont/img.fits"
    for bad in ("../spec.json", "/etc/passwd", "a/../../x", "", "./x"):
        with pytest.raises(ValueError, match="inside products/"):
            product_name({"file": bad})


# -- the state file --------------------------------------------------------------------------

def imported(tmp_path: Path) -> Path:
    campaign(tmp_path)
    (tmp_path / "cat.csv").write_text(f"uid,project\n{UID},2016.1.00123.S\n")
    assert ari(tmp_path, "datasets", "import", "cat.csv").returncode == 0
    return tmp_path / "ari.db"


@pytest.mark.parametrize("damage, words", [
    (lambda db: db.write_bytes(b""), ("0 bytes", "not a new campaign")),
    (lambda db: db.write_bytes(b"this is not sqlite at all" * 100), ("damaged", "not a database")),
    (lambda db: db.write_bytes(db.read_bytes()[:5000]), ("damaged",)),
])
def test_a_broken_state_file_is_one_line_naming_it_and_the_backup_to_restore(tmp_path, damage, words):
    db_path = imported(tmp_path)
    with Engine(load_config(tmp_path / "ari.toml")) as engine:
        engine.tick()  # the engine keeps the rolling online backup
    backup = store.backup_path(db_path)
    assert backup.exists()
    for f in (db_path.with_name("ari.db-wal"), db_path.with_name("ari.db-shm")):
        f.unlink(missing_ok=True)
    damage(db_path)
    for args in (["status"], ["status", "--json"], ["datasets", "list"], ["run", "--once"]):
        line = one_line_error(ari(tmp_path, *args), str(db_path), *words)
        assert f"cp {backup} {db_path}" in line
    os.replace(backup, db_path)  # what the line says to do
    proc = ari(tmp_path, "datasets", "list", "--json")
    assert proc.returncode == 0 and UID in proc.stdout


@pytest.fixture
def mount_point(tmp_path):
    """A small tmpfs of our own (we are root); unmounted at the end whatever happens."""
    point = tmp_path / "mnt"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(point)], check=True)
    yield point
    subprocess.run(["umount", "-l", str(point)], check=False)


def test_every_read_works_on_a_read_only_mount_and_writes_say_so_in_one_line(mount_point):
    db_path = imported(mount_point)
    subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
    for args in (["status"], ["status", "--json"], ["datasets", "list"],
                 ["nodes", "list"]):
        proc = ari(mount_point, *args)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (args, proc.stderr)
    one_line_error(ari(mount_point, "hold", UID), str(db_path), "read-only", "check the mount")
    one_line_error(ari(mount_point, "run", "--once"), "Read-only file system", "check the mount")


# -- hangs and leaks -----------------------------------------------------------------------------

def test_a_hanging_batch_command_under_nodes_check_is_a_failed_check_and_leaves_nothing_running(tmp_path):
    """``sinfo`` here is a script that never returns (what a wedged slurmctld makes of the real one)."""
    from ari_console.nodes import connect, ops

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = f"ari-hang-{os.getpid()}-{time.time_ns()}"
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\nsleep 1000 # {marker}\n")
    (bin_dir / "sinfo").chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    (tmp_path / "ari.toml").write_text(
        f'[[node]]\nname = "hpc"\nbatch = "slurm"\nscratch_dir = "{tmp_path / "scratch"}"\n'
        f'python = "{sys.executable}"\nrecipe = "alma-pipeline"\ncasa_path = "/bin/true"\nenv = {{ PATH = "{path}" }}\n')
    node = load_config(tmp_path / "ari.toml").node("hpc")
    started = time.monotonic()
    checks = {c.check: c for c in ops.check_node(node, connect(node), scratch_need_gb=0.0, timeout_s=2)}
    assert time.monotonic() - started < 20
    assert not checks["batch"].ok and "timed out" in checks["batch"].detail and checks["batch"].fix
    time.sleep(0.3)
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert left == [], f"processes left running: {left}"


"""The job runner as a node runs it: a real process tree, real signals, real limits.

The runner starts with ``python -S`` (no site-packages), which proves it needs
only the standard library. Stage children here are small Python scripts that
sleep, allocate memory or write files: they stand in for CASA only where the
runner's behaviour does not depend on what the child computes (the casa6 recipe
is run for real in test_recipe_casa6.py).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "remote" / "runner.py"
# the interpreter that runs the runner: set ARI_RUNNER_PYTHON to an old python3 to check a node's
RUNNER_PYTHON = os.environ.get("ARI_RUNNER_PYTHON", sys.executable)

STAGE_SCRIPT = '''
"""Stand-in recipe for runner tests: does what its params say for each stage."""
import json, os, subprocess, sys, time
stage, params_path = sys.argv[1], sys.argv[2]
params = json.load(open(params_path))
todo = params["params"].get(stage, {})
with open(os.path.join(params["work_dir"], stage + ".pid"), "w") as fh:
    fh.write(str(os.getpid()))
print("stand-in recipe: stage", stage, "inputs", params["inputs"], flush=True)
hold = []
for _ in range(todo.get("children", 0)):
    child = subprocess.Popen([sys.executable, "-c",
        "import time; b = b'x' * (%d * 2**20); time.sleep(60)" % todo["child_mb"]])
if "orphan_mb" in todo:  # a shell that backgrounds a python and exits: the python is orphaned
    code = "import time; b = bytes([1]) * (%d * 1048576); time.sleep(300)" % todo["orphan_mb"]
    pidfile = os.path.join(params["work_dir"], stage + ".orphan")
    subprocess.check_call(["sh", "-c", "%s -c '%s' & echo $! > %s" % (sys.executable, code, pidfile)])
if todo.get("alloc_mb"):
    hold.append(b"x" * (todo["alloc_mb"] * 2**20))
for name in todo.get("remove", []):  # what an earlier stage wrote, deleted (a stage cleaning up)
    os.remove(os.path.join(params["work_dir"], name))
if todo.get("write_mb"):  # real blocks into the work dir, 1 MiB at a time (a full scratch stops it: ENOSPC)
    with open(os.path.join(params["work_dir"], stage + ".data"), "wb") as fh:
        for _ in range(todo["write_mb"]):
            fh.write(os.urandom(2**20))
            fh.flush()
time.sleep(todo.get("sleep", 0))
if todo.get("fail"):
    with open(os.path.join(params["work_dir"], stage + ".failure.json"), "w") as fh:
        json.dump({"category": todo["fail"], "message": todo["message"]}, fh)
    sys.exit(1)
open(os.path.join(params["work_dir"], stage + ".done"), "w").close()
'''


# ------------------------------------------------------------------ helpers

@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    """The stand-in recipe script (see STAGE_SCRIPT)."""
    path = tmp_path / "standin_recipe.py"
    path.write_text(STAGE_SCRIPT)
    return path


def make_spec(tmp_path: Path, recipe: Path, params: dict | None = None, **over) -> Path:
    """Write a job spec for the stand-in recipe with ``params``; keyword arguments override keys."""
    spec = {
        "attempt_id": "a-test", "uid": "uid://A001/X1296/X1d3", "work_dir": str(tmp_path / "work"),
        "stages": ["download", "restore", "image", "export"], "files": [],
        "recipe": {"name": "standin", "script": str(recipe), "python": sys.executable, "params": params or {}},
        "mem_gb": None, "walltime_h": None, "heartbeat_s": 0.2, "poll_s": 0.05,
    }
    spec.update(over)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def run_runner(spec: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the runner in the foreground to its end."""
    return subprocess.run([RUNNER_PYTHON, "-S", str(RUNNER), str(spec)], text=True, capture_output=True,
                          timeout=timeout)


def start_runner(spec: Path) -> subprocess.Popen:
    """Start the runner in its own session, as the transport does."""
    return subprocess.Popen([RUNNER_PYTHON, "-S", str(RUNNER), str(spec)], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def status(work: Path) -> dict:
    return json.loads((work / "status.json").read_text())


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
        except (OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Archive:
    """A loopback HTTP server over a directory that counts the requests per file."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: dict[str, int] = {}
        archive = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                archive.requests[self.path] = archive.requests.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def entry(self, name: str) -> dict:
        data = (self.root / name).read_bytes()
        return {"url": self.url(name), "name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


@pytest.fixture
def archive(tmp_path: Path):
    root = tmp_path / "archive"
    root.mkdir()
    with tarfile.open(root / "uid___A002_X1_X1.asdm.sdm.tar", "w") as tar:  # a real tar: nodes read it through
        info = tarfile.TarInfo("member/raw/uid___A002_X1_X1.asdm.sdm/ASDM.xml")
        info.size = 300_000
        tar.addfile(info, io.BytesIO(os.urandom(info.size)))
    served = Archive(root)
    yield served
    served.server.shutdown()


# -------------------------------------------------------------------- tests

def test_all_stages_run_in_order_and_status_says_succeeded(tmp_path, recipe, archive):
    spec = make_spec(tmp_path, recipe, files=[archive.entry("uid___A002_X1_X1.asdm.sdm.tar")])
    proc = run_runner(spec)
    work = tmp_path / "work"
    assert proc.returncode == 0, proc.stderr
    doc = status(work)
    assert doc["state"] == "succeeded" and doc["exit_code"] == 0 and doc["category"] is None
    times = [(doc["stages"][s]["started_at"], doc["stages"][s]["ended_at"]) for s in ("download", "restore", "image", "export")]
    assert all(start <= end for start, end in times)
    assert all(times[i][1] <= times[i + 1][0] for i in range(3))
    assert doc["peak_rss_bytes"] > 1_000_000
    for stage in ("download", "restore", "image", "export"):
        assert (work / f"{stage}.log").is_file()
    assert "raw/uid___A002_X1_X1.asdm.sdm.tar" in (work / "restore.log").read_text()
    assert (work / "raw" / "uid___A002_X1_X1.asdm.sdm.tar").read_bytes() == (archive.root / "uid___A002_X1_X1.asdm.sdm.tar").read_bytes()
    assert doc["stages"]["download"]["files_fetched"] == 1


def test_restart_after_download_does_not_download_again(tmp_path, recipe, archive):
    entry = archive.entry("uid___A002_X1_X1.asdm.sdm.tar")
    spec = make_spec(tmp_path, recipe, files=[entry], params={"image": {"fail": "imaging", "message": "tclean failed"}})
    assert run_runner(spec).returncode == 1
    assert status(tmp_path / "work")["stage"] == "image"
    spec = make_spec(tmp_path, recipe, files=[entry])
    assert run_runner(spec).returncode == 0
    doc = status(tmp_path / "work")
    assert doc["stages"]["download"]["files_skipped"] == 1
    assert doc["stages"]["download"]["files_fetched"] == 0
    assert archive.requests == {"/uid___A002_X1_X1.asdm.sdm.tar": 1}


def test_corrupt_download_is_fetched_again_on_restart(tmp_path, recipe, archive):
    entry = archive.entry("uid___A002_X1_X1.asdm.sdm.tar")
    raw = tmp_path / "work" / "raw"
    raw.mkdir(parents=True)
    (raw / entry["name"]).write_bytes(b"\0" * entry["size"])
    assert run_runner(make_spec(tmp_path, recipe, files=[entry], stages=["download"])).returncode == 0
    assert hashlib.sha256((raw / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
    assert status(tmp_path / "work")["stages"]["download"]["files_fetched"] == 1


def test_download_with_wrong_checksum_fails_with_category_download(tmp_path, recipe, archive):
    entry = dict(archive.entry("uid___A002_X1_X1.asdm.sdm.tar"), sha256="0" * 64)
    spec = make_spec(tmp_path, recipe, files=[entry], download_attempts=2, download_backoff_s=0.1)
    proc = run_runner(spec, timeout=120)
    work = tmp_path / "work"
    assert proc.returncode == 1
    doc = status(work)
    assert (doc["state"], doc["stage"], doc["category"]) == ("failed", "download", "download")
    pattern = re.compile(r"^ari-runner: stage download failed: category=download: .+$", re.M)
    assert pattern.search((work / "download.log").read_text())
    assert pattern.search((work / "runner.log").read_text())
    assert not (work / "restore.pid").exists()
    assert not (work / "raw" / entry["name"]).exists()


def test_a_missing_file_on_the_archive_fails_download_with_http_404(tmp_path, recipe, archive):
    entry = dict(archive.entry("uid___A002_X1_X1.asdm.sdm.tar"), url=archive.url("nope.tar"))
    proc = run_runner(make_spec(tmp_path, recipe, files=[entry], download_attempts=2, download_backoff_s=0.1))
    work = tmp_path / "work"
    assert proc.returncode == 1
    assert status(work)["category"] == "download"
    failure = [l for l in (work / "runner.log").read_text().splitlines() if "failed: category=download" in l]
    assert len(failure) == 1 and "404" in failure[0]


def test_recipe_failure_category_is_recorded_with_its_message(tmp_path, recipe):
    params = {"restore": {"fail": "calibration", "message": "caltable X.tbl is missing from the auxiliary tar"}}
    spec = make_spec(tmp_path, recipe, params=params)
    assert run_runner(spec).returncode == 1
    work = tmp_path / "work"
    doc = status(work)
    assert (doc["state"], doc["stage"], doc["category"]) == ("failed", "restore", "calibration")
    assert ("ari-runner: stage restore failed: category=calibration: caltable X.tbl is missing from the auxiliary tar"
            in (work / "restore.log").read_text().splitlines())


def test_a_recipe_python_that_does_not_exist_fails_the_stage_saying_so(tmp_path, recipe):
    spec = make_spec(tmp_path, recipe)
    doc = json.loads(spec.read_text())
    doc["recipe"]["python"] = "/nonexistent/bin/python3"
    spec.write_text(json.dumps(doc))
    assert run_runner(spec).returncode == 1
    work = tmp_path / "work"
    assert status(work)["stage"] == "restore"
    assert "category=unknown: cannot start /nonexistent/bin/python3" in (work / "restore.log").read_text()


def test_killing_the_runners_child_fails_the_attempt_at_that_stage(tmp_path, recipe):
    params = {"image": {"sleep": 30}}
    spec = make_spec(tmp_path, recipe, params=params)
    runner = start_runner(spec)
    work = tmp_path / "work"
    child = int(wait_for(lambda: (work / "image.pid").read_text(), what="image stage child"))
    os.kill(child, signal.SIGKILL)
    assert runner.wait(timeout=20) == 1
    doc = status(work)
    assert (doc["state"], doc["stage"], doc["exit_code"]) == ("failed", "image", 1)
    assert doc["stages"]["image"]["exit_code"] == -9
    assert "stage image failed: category=unknown: stage process killed by SIGKILL" in (work / "image.log").read_text()
    assert not (work / "export.pid").exists()


def test_memory_budget_counts_the_whole_tree_and_kills_it(tmp_path, recipe):
    """Two grandchildren of 130 MB each: neither alone passes 0.2 GB, together they do."""
    params = {"image": {"children": 2, "child_mb": 130, "sleep": 60}}
    spec = make_spec(tmp_path, recipe, mem_gb=0.2, params=params)
    started = time.time()
    proc = run_runner(spec)
    work = tmp_path / "work"
    assert proc.returncode == 1
    assert time.time() - started < 30
    doc = status(work)
    assert (doc["state"], doc["stage"], doc["category"]) == ("failed", "image", "memory")
    assert doc["peak_rss_bytes"] > 0.2e9  # GB = 10**9 bytes
    line = re.compile(r"^ari-runner: killed: memory budget 0\.2 GB exceeded \(rss 0\.\d+ GB\)$", re.M)
    assert line.search((work / "image.log").read_text())
    assert not pid_alive(int((work / "image.pid").read_text()))
    leftovers = subprocess.run(["pgrep", "-f", "b'x' \\* \\(130"], capture_output=True, text=True).stdout.split()
    assert leftovers == []


def test_an_orphaned_grandchild_still_counts_against_the_memory_budget(tmp_path, recipe):
    params = {"image": {"orphan_mb": 250, "sleep": 60}}
    proc = run_runner(make_spec(tmp_path, recipe, mem_gb=0.2, params=params))
    work = tmp_path / "work"
    assert proc.returncode == 1
    assert status(work)["category"] == "memory"
    orphan = int((work / "image.orphan").read_text())
    assert not pid_alive(orphan)


def test_what_a_stage_leaves_running_is_killed_when_the_stage_ends(tmp_path, recipe):
    params = {"restore": {"orphan_mb": 1}}
    proc = run_runner(make_spec(tmp_path, recipe, params=params))
    work = tmp_path / "work"
    assert proc.returncode == 0
    orphan = int((work / "restore.orphan").read_text())
    assert not pid_alive(orphan)


def test_walltime_kills_the_tree_and_records_walltime(tmp_path, recipe):
    params = {"restore": {"sleep": 60}}
    spec = make_spec(tmp_path, recipe, walltime_h=0.0005, params=params)
    started = time.time()
    proc = run_runner(spec)
    elapsed = time.time() - started
    work = tmp_path / "work"
    assert proc.returncode == 1
    assert 1.8 <= elapsed < 15
    doc = status(work)
    assert (doc["state"], doc["stage"], doc["category"]) == ("failed", "restore", "walltime")
    assert "ari-runner: killed: walltime 0.0005 h exceeded" in (work / "restore.log").read_text().splitlines()
    assert not pid_alive(int((work / "restore.pid").read_text()))


@pytest.fixture
def small_scratch(tmp_path: Path):
    """A 5 MB tmpfs (we run as root here); unmounted afterwards."""
    mount = tmp_path / "scratch"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_scratch_refuses_the_stage_before_it_starts(tmp_path, recipe, small_scratch):
    work = small_scratch / "work"
    spec = make_spec(tmp_path, recipe, work_dir=str(work), scratch_need_gb={"restore": 0.5})
    proc = run_runner(spec)
    assert proc.returncode == 1
    doc = status(work)
    assert (doc["state"], doc["stage"], doc["category"]) == ("failed", "restore", "disk_full")
    line = re.compile(r"^ari-runner: refused: scratch has 0\.00\d+ GB free, stage restore needs 0\.5 GB$", re.M)
    assert line.search((work / "restore.log").read_text())
    assert not (work / "restore.pid").exists()


def test_each_stage_records_the_scratch_its_work_dir_uses_and_the_attempt_its_peak(tmp_path, recipe):
    """restore writes 30 MiB, image deletes it and writes 10 MiB: the peak is restore's 30, the last use 10."""
    params = {"restore": {"write_mb": 30}, "image": {"remove": ["restore.data"], "write_mb": 10}}
    spec = make_spec(tmp_path, recipe, params, stages=["restore", "image", "export"])
    proc = run_runner(spec)
    assert proc.returncode == 0, proc.stderr
    doc = status(tmp_path / "work")
    mib = 2**20
    stages = doc["stages"]
    assert 30 * mib <= stages["restore"]["scratch_bytes"] < 31 * mib  # logs, spec and status are a few kB
    assert 10 * mib <= stages["image"]["scratch_bytes"] < 11 * mib
    assert stages["export"]["scratch_bytes"] == doc["scratch_bytes"] < 11 * mib
    assert doc["peak_scratch_bytes"] == stages["restore"]["scratch_bytes"]
    assert doc["peak_scratch_gb"] == round(doc["peak_scratch_bytes"] / 1e9, 3)


def test_a_stage_that_fills_the_scratch_records_what_it_had_written_when_it_died(tmp_path, recipe, small_scratch):
    work = small_scratch / "work"
    spec = make_spec(tmp_path, recipe, {"restore": {"write_mb": 20}}, work_dir=str(work), stages=["restore"])
    proc = run_runner(spec)
    assert proc.returncode == 1
    doc = status(work)
    assert (doc["stage"], doc["category"]) == ("restore", "disk_full")
    # 5 MiB of tmpfs, 1 MiB of it the runner's reserve (left out of the count): the stage had ~3 MiB
    assert 2 * 2**20 <= doc["peak_scratch_bytes"] <= 5 * 2**20
    assert doc["stages"]["restore"]["scratch_bytes"] == doc["peak_scratch_bytes"]


def test_download_larger_than_scratch_is_refused_without_fetching(tmp_path, recipe, archive, small_scratch):
    work = small_scratch / "work"
    entry = dict(archive.entry("uid___A002_X1_X1.asdm.sdm.tar"), size=64_000_000)
    proc = run_runner(make_spec(tmp_path, recipe, work_dir=str(work), files=[entry]))
    assert proc.returncode == 1
    doc = status(work)
    assert (doc["stage"], doc["category"]) == ("download", "disk_full")
    assert "stage download needs 0.064 GB" in (work / "runner.log").read_text()
    assert archive.requests == {}


def test_status_json_is_never_torn_while_rewritten_quickly(tmp_path, recipe):
    params = {"restore": {"sleep": 3}}
    spec = make_spec(tmp_path, recipe, heartbeat_s=0.001, poll_s=0.001, stages=["restore"],
                     params=params)
    path = tmp_path / "work" / "status.json"
    parsed, torn, heartbeats = [], [], set()
    done = threading.Event()

    def reader():
        while not done.is_set():
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            try:
                doc = json.loads(text)
                parsed.append(doc["state"])
                heartbeats.add(doc["heartbeat_at"])
            except ValueError:
                torn.append(text)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert run_runner(spec).returncode == 0
    finally:
        done.set()
        thread.join()
    assert torn == []
    assert len(heartbeats) > 20
    assert "running" in parsed and parsed[-1] == "succeeded"


def test_heartbeat_advances_while_a_stage_runs(tmp_path, recipe):
    spec = make_spec(tmp_path, recipe, params={"restore": {"sleep": 3}})
    runner = start_runner(spec)
    work = tmp_path / "work"
    wait_for(lambda: (work / "restore.pid").read_text(), what="restore stage")
    first = status(work)
    time.sleep(1.0)
    second = status(work)
    assert (second["state"], second["stage"], second["pid"]) == ("running", "restore", runner.pid)
    assert second["heartbeat_at"] - first["heartbeat_at"] >= 0.5
    assert second["rss_bytes"] > 0 and second["stages"]["restore"]["ended_at"] is None
    assert runner.wait(timeout=30) == 0


def test_a_runner_killed_outright_leaves_running_with_a_stale_heartbeat(tmp_path, recipe):
    """What the console sees after a node crash: it calls that node_lost and kills the pgid."""
    spec = make_spec(tmp_path, recipe, params={"restore": {"sleep": 30}})
    runner = start_runner(spec)
    work = tmp_path / "work"
    child = int(wait_for(lambda: (work / "restore.pid").read_text(), what="restore stage"))
    runner.kill()
    runner.wait(timeout=10)
    before = status(work)
    time.sleep(1.0)
    after = status(work)
    assert after["state"] == "running" and after["heartbeat_at"] == before["heartbeat_at"]
    os.killpg(after["pgid"], signal.SIGKILL)
    wait_for(lambda: not pid_alive(child), what="orphaned child to die with its process group")


def test_sighup_is_ignored(tmp_path, recipe):
    params = {"restore": {"sleep": 2}}
    spec = make_spec(tmp_path, recipe, params=params)
    runner = start_runner(spec)
    work = tmp_path / "work"
    wait_for(lambda: (work / "restore.pid").read_text(), what="restore stage")
    os.killpg(runner.pid, signal.SIGHUP)
    assert runner.wait(timeout=30) == 0
    assert status(work)["state"] == "succeeded"


def test_sigterm_kills_children_and_records_cancelled_stage(tmp_path, recipe):
    params = {"image": {"sleep": 60}}
    spec = make_spec(tmp_path, recipe, walltime_h=1.0, params=params)
    runner = start_runner(spec)
    work = tmp_path / "work"
    child = int(wait_for(lambda: (work / "image.pid").read_text(), what="image stage"))
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=20) == 3
    doc = status(work)
    assert (doc["state"], doc["stage"], doc["category"]) == ("cancelled", "image", None)
    assert doc["stages"]["image"]["state"] == "cancelled"
    assert "ari-runner: cancelled: SIGTERM during stage image" in (work / "image.log").read_text()
    assert not pid_alive(child)


def test_sigterm_near_the_walltime_is_recorded_as_walltime(tmp_path, recipe):
    """Slurm's time-limit kill is a SIGTERM at the end of the allotted time."""
    params = {"restore": {"sleep": 60}}
    spec = make_spec(tmp_path, recipe, walltime_h=0.02, params=params)
    runner = start_runner(spec)
    work = tmp_path / "work"
    wait_for(lambda: (work / "restore.pid").read_text(), what="restore stage")
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=20) == 1
    doc = status(work)
    assert (doc["state"], doc["stage"], doc["category"]) == ("failed", "restore", "walltime")
    assert "ari-runner: killed: walltime 0.02 h exceeded" in (work / "restore.log").read_text()


def test_detach_returns_at_once_and_the_runner_lives_in_its_own_session(tmp_path, recipe):
    params = {"restore": {"sleep": 1}}
    spec = make_spec(tmp_path, recipe, params=params)
    proc = subprocess.run([RUNNER_PYTHON, "-S", str(RUNNER), "--detach", str(spec)], text=True,
                          capture_output=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.strip())
    assert os.getsid(pid) == pid
    work = tmp_path / "work"
    doc = wait_for(lambda: status(work) if status(work)["state"] != "running" else None, what="detached runner to end")
    assert doc["state"] == "succeeded" and doc["pid"] == pid


def test_a_second_runner_on_the_same_work_dir_is_refused(tmp_path, recipe):
    params = {"restore": {"sleep": 3}}
    spec = make_spec(tmp_path, recipe, params=params)
    first = start_runner(spec)
    wait_for(lambda: (tmp_path / "work" / "restore.pid").read_text(), what="first runner")
    second = run_runner(spec)
    assert second.returncode == 2
    assert "another runner is active" in second.stderr
    assert first.wait(timeout=30) == 0


def test_a_spec_without_work_dir_is_refused_with_the_key_named(tmp_path, recipe):
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"attempt_id": "a1", "uid": "uid://A001/X1/X1"}))
    proc = run_runner(spec)
    assert proc.returncode == 2
    assert "key 'work_dir' is missing" in proc.stderr


def test_runner_needs_only_the_standard_library():
    """``-S -I`` leaves only the stdlib importable: importing the runner must still work."""
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        import remote.runner, remote.procutil
        bad = [m for m in sys.modules if m.split('.')[0] in ('ari_console', 'numpy', 'casatasks', 'casatools')]
        assert not bad, bad
    """)
    proc = subprocess.run([RUNNER_PYTHON, "-S", "-I", "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_status_json_carries_its_format_version_and_a_newer_spec_is_refused(tmp_path, recipe, archive):
    spec = make_spec(tmp_path, recipe, files=[archive.entry("uid___A002_X1_X1.asdm.sdm.tar")])
    assert run_runner(spec).returncode == 0
    from ari_console.nodes.batch import SPEC_VERSION, STATUS_VERSION

    assert status(tmp_path / "work")["status_version"] == STATUS_VERSION
    newer = json.loads(spec.read_text())
    newer["spec_version"] = SPEC_VERSION + 1
    spec.write_text(json.dumps(newer))
    proc = run_runner(spec)
    assert proc.returncode == 2
    assert f"spec_version {SPEC_VERSION + 1} is newer than this runner reads ({SPEC_VERSION})" in proc.stderr
    assert "copy the console's remote/ to the node again" in proc.stderr


def test_the_console_writes_the_spec_version_the_runner_reads():
    from ari_console.nodes.batch import SPEC_VERSION, STATUS_VERSION

    source = RUNNER.read_text()
    assert f"SPEC_VERSION = {SPEC_VERSION} " in source and f"STATUS_VERSION = {STATUS_VERSION} " in source

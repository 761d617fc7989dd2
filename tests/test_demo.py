"""`ari demo`'s campaign: its four real nodes come up, pass `ari nodes check`, and go away.

The whole demo (ten minutes of CASA) is what `make demo` runs; here its parts
that the engine tests do not already cover: the nodes it starts (two sshd, a
Slurm) and the campaign file it writes, checked by the same command an
operator would use, and the clean-up that leaves no daemon behind.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ari_console.demo import campaign as demo
from ari_console.config import load_config
from ari_console.demo.testbed.sshd import processes_with_env

ARI = str(Path(sys.executable).parent / "ari")


@pytest.mark.sshd
@pytest.mark.slurm
@pytest.mark.casa
def test_demo_nodes_pass_every_check_and_leave_nothing_running(tmp_path, casa, monkeypatch):
    monkeypatch.setenv("CASASITECONFIG", str(casa.site_config))
    nodes = demo.start_demo_nodes(tmp_path, progress=lambda msg: None)
    try:
        (tmp_path / "ari.toml").write_text(demo.demo_config(tmp_path, "http://127.0.0.1:9", nodes))
        cfg = load_config(tmp_path / "ari.toml")
        assert [(n.name, n.transport, n.batch) for n in cfg.nodes] == [
            ("local", "local", "none"), ("ws-old", "ssh", "none"), ("big", "ssh", "none"),
            ("cluster", "local", "slurm")]
        proc = subprocess.run([ARI, "nodes", "check", "--json"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600, env={**os.environ, "COLUMNS": "250"})
        checks = json.loads(proc.stdout)
        failed = [(c["node"], c["check"], c["detail"]) for c in checks if not c["ok"]]
        assert proc.returncode == 0 and not failed, failed
        assert {c["node"] for c in checks} == {"local", "ws-old", "big", "cluster"}
        assert any(c["node"] == "cluster" and c["check"] == "batch" for c in checks)
    finally:
        nodes.stop()
    sshd_dirs = [d for d in (tmp_path / "daemons").iterdir() if d.is_dir()]
    assert len(sshd_dirs) == 2
    leftovers = [pid for d in sshd_dirs for pid in processes_with_env(f"ARI_TEST_SSHD={d}")]
    leftovers += processes_with_env(f"SLURM_CONF={nodes.slurm_conf}")
    assert leftovers == [], leftovers


def test_demo_refuses_to_clear_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(demo.UserError, match="not a demo campaign"):
        demo.fresh_directory(tmp_path)
    assert (tmp_path / "thesis.tex").exists()


def test_a_new_demo_kills_what_a_killed_demo_left_running_and_clears_its_directory(tmp_path):
    demo.fresh_directory(tmp_path)
    work = tmp_path / "scratch" / "local" / "a-000001"
    work.mkdir(parents=True)
    (work / "image.log").write_text("still writing\n")
    # What an earlier demo killed with SIGKILL leaves: a runner naming its spec under the demo directory.
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(work / "spec.json")])
    cmdline = Path(f"/proc/{left.pid}/cmdline")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and str(work).encode() not in cmdline.read_bytes():
        time.sleep(0.05)  # until the child has exec'ed (before that it shows the test's own command line)
    try:
        demo.fresh_directory(tmp_path)
        assert left.wait(timeout=10) == -9
    finally:
        left.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == [demo.MARKER]

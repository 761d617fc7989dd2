"""Launch detached, forget, re-attach: the node operations over real sshd and real Slurm."""

import sys
import time
from pathlib import Path

import pytest

from ari_console.config import parse_config
from ari_console.nodes import connect
from ari_console.nodes import ops

SLEEPER = Path(__file__).parent / "data" / "recipes" / "sleeper.py"


def node_config(tmp_path, server=None, batch="none", env=None, **extra):
    keys = {"name": '"n1"', "batch": f'"{batch}"', "scratch_dir": f'"{tmp_path / "scratch"}"',
            "python": f'"{sys.executable}"', "mem_gb": 4, **extra}
    if server is not None:
        keys.update({"transport": '"ssh"', "host": f'"{server.host}"', "port": server.port, "user": f'"{server.user}"',
                     "identity_file": f'"{server.identity_file}"', "known_hosts": f'"{server.known_hosts}"'})
    if env:
        keys["env"] = "{ " + ", ".join(f'{k} = "{v}"' for k, v in env.items()) + " }"
    text = "[[node]]\n" + "\n".join(f"{k} = {v}" for k, v in keys.items()) + "\n"
    return parse_config(text, tmp_path / "ari.toml").nodes[0]


def sleeper_spec(sleep_s: float) -> dict:
    return {"uid": "uid://A001/X1/X2", "stages": ["image", "export"], "heartbeat_s": 1, "poll_s": 0.2,
            "recipe": {"name": "sleeper", "python": sys.executable, "script": str(SLEEPER),
                       "params": {"sleep_s": sleep_s}}}


def wait_final(node, handle, campaign="t", timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        t = connect(node)
        state = ops.poll(node, t, campaign, [handle])[handle["work_dir"]]
        t.close()
        if state.final:
            return state
        time.sleep(1)
    pytest.fail(f"attempt did not finish within {timeout} s: {state}")


@pytest.mark.sshd
def test_job_launched_over_ssh_outlives_the_console_and_a_new_console_sees_it_finish(sshd, tmp_path):
    node = node_config(tmp_path, sshd)
    console = connect(node)
    assert all(c.ok for c in ops.check_node(node, console) if c.check in ("reach", "python", "runner"))
    handle = ops.launch(node, console, "t", "a-000001", sleeper_spec(4))
    console.close()  # the console goes away; the SSH session that started the job is gone
    del console
    new_console = connect(node)
    first = ops.poll(node, new_console, "t", [handle])[handle["work_dir"]]
    assert first.state == "running"
    final = wait_final(node, handle)
    assert final.state == "succeeded" and final.exit_code == 0
    assert (Path(handle["work_dir"]) / "products" / "done.txt").read_text() == "ok\n"
    log = ops.tail(new_console, f"{handle['work_dir']}/image.log", 0)
    assert b"sleeper: stage image done" in log
    assert ops.tail(new_console, f"{handle['work_dir']}/image.log", len(log)) == b""


@pytest.mark.sshd
def test_a_runner_killed_without_a_word_is_reported_lost(sshd, tmp_path):
    import os
    import signal
    node = node_config(tmp_path, sshd)
    t = connect(node)
    ops.copy_remote(t, node)
    handle = ops.launch(node, t, "t", "a-000002", sleeper_spec(60))
    time.sleep(2)
    os.killpg(handle["pid"], signal.SIGKILL)
    final = wait_final(node, handle, timeout=30)
    assert (final.state, final.category) == ("lost", "node_lost")


@pytest.mark.sshd
def test_cancel_stops_a_running_attempt_and_the_runner_records_it(sshd, tmp_path):
    node = node_config(tmp_path, sshd)
    t = connect(node)
    ops.copy_remote(t, node)
    handle = ops.launch(node, t, "t", "a-000003", sleeper_spec(60))
    time.sleep(2)
    ops.cancel(node, t, handle)
    final = wait_final(node, handle, timeout=30)
    assert final.state == "cancelled" and final.stage == "image"


@pytest.mark.slurm
@pytest.mark.sshd
def test_slurm_job_submitted_over_ssh_is_reattached_and_seen_finishing(slurm, sshd, tmp_path):
    node = node_config(tmp_path, sshd, batch="slurm", env={"SLURM_CONF": slurm.conf}, partition='"debug"', mem_gb=1)
    t = connect(node)
    ops.copy_remote(t, node)
    handle = ops.launch(node, t, "t", "a-000004", sleeper_spec(3))
    t.close()
    assert handle["job_id"].isdigit()
    final = wait_final(node, handle)
    assert final.state == "succeeded", final


@pytest.mark.slurm
def test_slurm_time_limit_kill_is_a_walltime_failure(slurm, tmp_path):
    node = node_config(tmp_path, batch="slurm", env={"SLURM_CONF": slurm.conf}, walltime_h=1 / 60, mem_gb=1)
    t = connect(node)
    ops.copy_remote(t, node)
    handle = ops.launch(node, t, "t", "a-000005", sleeper_spec(300))
    final = wait_final(node, handle, timeout=180)
    assert (final.state, final.category) == ("failed", "walltime")

"""SSH as operators have it: ~/.ssh/config (Host aliases, ProxyJump) and errors that name their cause.

Two real loopback sshd from the testbed: a bastion and a cluster node reached through it.
HOME points at a temporary directory holding the ssh config and known_hosts.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from ari_console import store
from ari_console.engine import Engine
from ari_console.nodes.transport import NodeUnreachable, SSHTarget, SSHTransport, resolve_target
from tests.test_engine import make_campaign, run_until_idle, sleeper_spec


def write_ssh_config(home: Path, bastion, cluster, jump: str = "bastion") -> None:
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    (ssh / "config").write_text(
        f"Host bastion\n  HostName {bastion.host}\n  Port {bastion.port}\n  User {bastion.user}\n"
        f"  IdentityFile {bastion.identity_file}\n\n"
        f"Host cluster\n  HostName {cluster.host}\n  Port {cluster.port}\n  User {cluster.user}\n"
        f"  IdentityFile {cluster.identity_file}\n  ProxyJump {jump}\n")
    (ssh / "known_hosts").write_text(bastion.known_hosts.read_text() + cluster.known_hosts.read_text())


@pytest.mark.sshd
def test_a_campaign_whose_only_node_sits_behind_a_proxyjump_host_runs_an_attempt(sshd_factory, tmp_path, monkeypatch):
    bastion, cluster = sshd_factory(), sshd_factory()
    home = tmp_path / "home"
    write_ssh_config(home, bastion, cluster)
    monkeypatch.setenv("HOME", str(home))
    node = (f'[[node]]\nname = "cluster"\ntransport = "ssh"\nhost = "cluster"\nslots = 1\nmem_gb = 4\n'
            f'scratch_dir = "{tmp_path / "scratch"}"\npython = "{sys.executable}"\n')
    (tmp_path / "camp").mkdir()
    cfg = make_campaign(tmp_path / "camp", [("uid://A001/X1/X1", "12m", {})], nodes_toml=node)
    with Engine(cfg, adjust_spec=sleeper_spec) as engine:
        run_until_idle(engine)
        (attempt,) = store.attempts(engine.db)
        assert (attempt["node"], attempt["state"]) == ("cluster", "succeeded")
        assert store.dataset(engine.db, "uid://A001/X1/X1")["state"] == "review"  # products made; the sleeper has no QA2 images
    # the way in is the bastion: without it, the node cannot be reached, and the error says so
    bastion.stop()
    try:
        t = SSHTransport(SSHTarget(name="cluster", host="cluster"))
        with pytest.raises(NodeUnreachable, match=r"jump host bastion: connection refused by 127\.0\.0\.1"):
            t.run(["true"])
    finally:
        bastion.start()


@pytest.mark.sshd
def test_multi_hop_proxyjump_reaches_the_node_through_two_bastions(sshd_factory, tmp_path, monkeypatch):
    bastion, cluster = sshd_factory(), sshd_factory()
    home = tmp_path / "home"
    write_ssh_config(home, bastion, cluster, jump="bastion,bastion")
    monkeypatch.setenv("HOME", str(home))
    resolved = resolve_target(SSHTarget(name="c", host="cluster"))
    assert (resolved.host, resolved.port, resolved.user) == (cluster.host, cluster.port, cluster.user)
    assert resolved.proxy_jump == ("bastion", "bastion")
    t = SSHTransport(SSHTarget(name="c", host="cluster"))
    try:
        assert t.run(["echo", "through two hops"]).stdout == "through two hops\n"
    finally:
        t.close()


def _fake_http_server() -> tuple[int, threading.Event]:
    """A TCP server that answers like a web server, not like sshd (one connection)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    done = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        time.sleep(0.5)
        conn.close()
        srv.close()
        done.set()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], done


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_errors_name_dns_refused_and_no_ssh_each_with_its_fix(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HOME", str(tmp_path))
    cases = [
        (SSHTarget("n", "no-such-host.invalid"), r"cannot resolve the host name 'no-such-host\.invalid'.*HostName"),
        (SSHTarget("n", "127.0.0.1", _free_port()), r"connection refused by 127\.0\.0\.1:\d+ — check that sshd runs"),
    ]
    port, done = _fake_http_server()
    cases.append((SSHTarget("n", "127.0.0.1", port, connect_timeout=5), r"does not speak SSH .* check the port"))
    for target, pattern in cases:
        with pytest.raises(NodeUnreachable, match=pattern):
            SSHTransport(target).run(["true"])
    done.wait(5)
    assert "Traceback" not in capfd.readouterr().err, "paramiko's own traceback is not printed"

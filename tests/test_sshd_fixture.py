"""The sshd fixture starts real OpenSSH servers a client reaches with strict host-key checks."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from tests.fixtures.sshd import SshServer, generate_key

pytestmark = pytest.mark.sshd


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    """Exit status and stdout of ``command`` run over ``client``."""
    _, stdout, _ = client.exec_command(command, timeout=30)
    out = stdout.read().decode()
    return stdout.channel.recv_exit_status(), out


def test_command_over_sshd_returns_its_stdout_and_exit_status(sshd: SshServer) -> None:
    with sshd.client() as client:
        status, out = run(client, "echo hello from $(whoami); exit 3")
    assert (status, out) == (3, f"hello from {sshd.user}\n")


def test_two_servers_answer_on_their_own_ports_with_their_own_host_keys(
        sshd_factory: Callable[..., SshServer]) -> None:
    first, second = sshd_factory(), sshd_factory()
    assert first.port != second.port
    assert first.host_key_pub.split()[1] != second.host_key_pub.split()[1]
    for server in (first, second):
        with server.client() as client:
            assert run(client, "echo $SSH_CONNECTION")[1].split()[-1] == str(server.port)


def test_a_key_not_in_authorized_keys_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    generate_key(tmp_path / "stranger", "stranger")
    with pytest.raises(paramiko.AuthenticationException):
        with sshd.client(key_file=tmp_path / "stranger"):
            pass


def test_a_host_key_other_than_the_known_one_is_rejected(
        sshd_factory: Callable[..., SshServer], sshd: SshServer) -> None:
    impostor = sshd_factory()
    impostor.known_hosts.write_text(sshd.known_hosts.read_text().replace(str(sshd.port), str(impostor.port)))
    with pytest.raises(paramiko.BadHostKeyException):
        with impostor.client():
            pass


def test_env_given_to_the_factory_is_set_in_every_session(sshd_factory: Callable[..., SshServer]) -> None:
    server = sshd_factory(env={"SLURM_CONF": "/some/where/slurm.conf"})
    with server.client() as client:
        assert run(client, "echo $SLURM_CONF")[1] == "/some/where/slurm.conf\n"


def test_openssh_client_reaches_the_server_with_strict_host_key_checking(sshd: SshServer) -> None:
    proc = subprocess.run([*sshd.ssh_args(), "echo", "via openssh"], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (0, "via openssh\n"), proc.stderr


def test_a_stopped_server_refuses_connections_and_drops_open_sessions(
        sshd_factory: Callable[..., SshServer]) -> None:
    server = sshd_factory()
    with server.client() as client:
        _, stdout, _ = client.exec_command("sleep 60")
        server.stop()
        assert stdout.channel.recv_exit_status() != 0
    with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError):
        with server.client():
            pass
    server.start()
    with server.client() as client:
        assert run(client, "echo back")[1] == "back\n"

"""Transports against the real thing: local subprocesses and a real sshd reached with paramiko."""

from pathlib import Path

import pytest

from ari_console.config import parse_config
from ari_console.errors import UserError
from ari_console.nodes import NodeUnreachable, connect, ops
from ari_console.nodes.probe import probe
from ari_console.nodes.transport import LocalTransport, SSHTarget, SSHTransport


def ssh_node(server, **extra):
    keys = {"name": f'"ws{server.port}"', "transport": '"ssh"', "host": f'"{server.host}"', "port": server.port,
            "user": f'"{server.user}"', "identity_file": f'"{server.identity_file}"',
            "known_hosts": f'"{server.known_hosts}"', **extra}
    lines = [f"{k} = {v}" for k, v in keys.items()]
    cfg = parse_config("[[node]]\n" + "\n".join(lines) + "\n", Path("/c/ari.toml"))
    return cfg.nodes[0]


def transports(server):
    return [LocalTransport(), connect(ssh_node(server))]


@pytest.mark.sshd
def test_a_hostile_uid_is_an_argument_never_a_command(sshd, tmp_path):
    for t in transports(sshd):
        target = tmp_path / "pwned"
        result = t.run(["echo", f"uid://A001/X1/X2; touch {target}"])
        assert result.ok and result.stdout.strip() == f"uid://A001/X1/X2; touch {target}"
        assert not target.exists()
        t.close()


@pytest.mark.sshd
def test_files_write_read_and_tail_from_an_offset_over_ssh(sshd, tmp_path):
    t = connect(ssh_node(sshd))
    path = str(tmp_path / "work dir" / "runner.log")
    t.write_file(path, b"line one\nline two\n")
    assert Path(path).read_bytes() == b"line one\nline two\n"
    assert t.read_file(path) == b"line one\nline two\n"
    assert t.read_from(path, 9, 100) == b"line two\n"
    with open(path, "ab") as fh:
        fh.write(b"line three\n")
    assert t.read_from(path, 18, 100) == b"line three\n"
    assert t.read_from(path, 29, 100) == b""
    t.get(path, tmp_path / "copy.log")
    assert (tmp_path / "copy.log").read_bytes() == Path(path).read_bytes()
    t.close()


@pytest.mark.sshd
def test_a_log_tail_follows_growth_truncation_and_rotation_without_losing_a_line(sshd, tmp_path):
    for t in transports(sshd):
        log = tmp_path / f"{t.name}.log"
        path = str(log)
        assert ops.follow(t, path, 0) == (0, b"")  # no file yet
        written, mirror = [], bytearray()

        def write(lines, mode="ab"):
            with open(log, mode) as fh:
                fh.write("".join(f"{x}\n" for x in lines).encode())
            written.extend(lines)

        def catch_up(limit=1 << 20):
            """What the engine's mirror does: write each answer at its start, drop what follows."""
            while True:
                start, data = ops.follow(t, path, len(mirror), limit)
                if not data and start == len(mirror):
                    return
                del mirror[start:]
                mirror.extend(data)

        write([f"line {i} " + "x" * 100 for i in range(30_000)])  # 3.3 MB: several reads of 1 MB
        catch_up()
        assert mirror == log.read_bytes()
        write(["one more"])
        catch_up()
        assert mirror.decode().splitlines()[-2:] == [written[-2], "one more"]
        # truncated in place (same file): read again from its start
        written.clear()
        write(["after truncation 1", "after truncation 2"], mode="wb")
        catch_up()
        assert mirror.decode().splitlines() == written
        # rotated: the old file renamed away (still open on the node's side), a new one started
        write([f"old {i}" for i in range(2000)])
        catch_up()
        log.rename(tmp_path / f"{t.name}.log.1")
        written.clear()
        write(["new file 1"], mode="wb")
        catch_up()
        assert mirror.decode().splitlines() == ["new file 1"]
        write([f"new file {i}" for i in range(2, 500)])
        catch_up(limit=4096)  # small reads: a partial last line comes whole on the next read
        assert mirror.decode().splitlines() == written
        # rotated again, and the new file outgrew the old one before the next read
        log.rename(tmp_path / f"{t.name}.log.2")
        written.clear()
        write([f"newer {i} " + "y" * 40 for i in range(1000)], mode="wb")
        catch_up()
        assert mirror.decode().splitlines() == written
        t.close()


@pytest.mark.sshd
def test_one_connection_is_reused_across_commands(sshd):
    t = connect(ssh_node(sshd))
    first = t.run(["sh", "-c", "echo $PPID"]).stdout
    client = t._client
    for _ in range(5):
        assert t.run(["true"]).ok
    assert t._client is client and first
    t.close()


@pytest.mark.sshd
def test_node_env_reaches_remote_commands(sshd):
    t = connect(ssh_node(sshd, env='{ ARI_TEST_VALUE = "it works" }'))
    assert t.run(["sh", "-c", "echo $ARI_TEST_VALUE"]).stdout.strip() == "it works"
    t.close()


@pytest.mark.sshd
def test_unknown_host_key_is_refused_with_the_command_that_accepts_it(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    node = ssh_node(sshd, known_hosts=f'"{empty}"')
    with pytest.raises(UserError) as info:
        connect(node).run(["true"])
    msg = str(info.value)
    assert f"unknown host key for 127.0.0.1:{sshd.port}" in msg
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in msg
    assert "trust_new_host_keys = true" in msg


@pytest.mark.sshd
def test_trust_new_host_keys_accepts_and_remembers_the_key(sshd, tmp_path):
    kh = tmp_path / "kh"
    t = connect(ssh_node(sshd, known_hosts=f'"{kh}"', trust_new_host_keys="true"))
    assert t.run(["true"]).ok
    t.close()
    assert sshd.host_key_pub.split()[1] in kh.read_text()
    strict = connect(ssh_node(sshd, known_hosts=f'"{kh}"'))
    assert strict.run(["true"]).ok
    strict.close()


@pytest.mark.sshd
def test_a_refused_key_and_a_stopped_sshd_are_unreachable_not_hangs(sshd_factory, tmp_path):
    server = sshd_factory()
    wrong = tmp_path / "wrong_key"
    import subprocess
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    bad = connect(ssh_node(server, identity_file=f'"{wrong}"'))
    with pytest.raises(NodeUnreachable, match="refused the key"):
        bad.run(["true"])
    t = SSHTransport(SSHTarget(name="n", host=server.host, port=server.port, user=server.user,
                               identity_file=server.identity_file, known_hosts=server.known_hosts,
                               connect_timeout=3))
    assert t.run(["true"]).ok
    server.stop()
    with pytest.raises(NodeUnreachable):
        t.run(["true"], timeout=5)
    with pytest.raises(NodeUnreachable, match="next try in"):
        t.run(["true"], timeout=5)
    assert t.backoff.failures >= 1 and t.backoff.last_error


@pytest.mark.sshd
def test_probe_reports_load_cpus_memory_and_scratch_on_both_transports(sshd, tmp_path):
    for t in transports(sshd):
        p = probe(t, str(tmp_path / "scratch"))
        assert p.cpus >= 1 and p.mem_total_gb > 1 and 0 < p.mem_free_gb <= p.mem_total_gb
        assert p.scratch_free_gb is not None and 0 < p.scratch_free_gb <= p.scratch_total_gb
        assert p.load1 >= 0
        t.close()


@pytest.mark.sshd
def test_a_command_that_times_out_over_ssh_is_killed_on_the_node_with_its_children(sshd, tmp_path):
    import os
    import time

    t = connect(ssh_node(sshd))
    pids = tmp_path / "pids"
    with pytest.raises(NodeUnreachable, match="timed out"):  # a hung command: the shell and a child it waits for
        t.run_script(f"sleep 120 & echo $$ $! > {pids}; wait", timeout=2)
    shell, child = (int(p) for p in pids.read_text().split())

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        stat = Path(f"/proc/{pid}/stat").read_text()  # a zombie waiting for its parent is dead too
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    deadline = time.monotonic() + 15
    while (alive(shell) or alive(child)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(shell) and not alive(child)
    assert t.run(["true"]).ok  # the connection stays usable
    t.close()

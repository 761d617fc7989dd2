"""Real OpenSSH servers on free loopback ports: one per node on this machine.

Used by ``ari demo`` (its SSH nodes) and by the tests' fixtures.

Each server has its own temp dir with a generated ed25519 host key, a user
key pair, ``authorized_keys``, ``sshd_config``, a pid file, its stderr log and
a client-side ``known_hosts`` holding exactly its host key, so a client can
check the host key strictly (paramiko ``RejectPolicy``, ``ssh -o
StrictHostKeyChecking=yes``). The login user is the current user
(root on a demo or CI machine).

``sshd_factory(env={...})`` starts another server (several at once = several
nodes); ``env`` becomes ``SetEnv`` lines, so every session on that server sees
those variables (e.g. ``SLURM_CONF``). Sessions also accept ``SLURM_*`` and
``ARI_*`` variables sent by the client. ``server.stop()`` kills the listener
and every session it started (a node lost mid-attempt); ``server.start()``
brings it back on the same port with the same keys.
A missing ``sshd``/``ssh-keygen`` raises ``TestbedError`` naming the Debian package.
"""

from __future__ import annotations

import ctypes
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from .errors import TestbedError

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PRIVSEP_DIR = Path("/run/sshd")
START_TIMEOUT_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it).

    >>> 1024 <= free_port() <= 65535
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def require_program(path: str, package: str) -> str:
    """``path`` if it is an executable, else ``TestbedError`` naming the Debian package."""
    found = path if os.access(path, os.X_OK) else shutil.which(path)
    if not found:
        raise TestbedError(f"{path} is missing — install the Debian package {package} "
                           f"(`make test` and `make demo` do it as root)")
    return found


def generate_key(path: Path, comment: str) -> str:
    """Write an ed25519 key pair at ``path``/``path.pub``; the public key line."""
    keygen = require_program("ssh-keygen", "openssh-client")
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)
    return path.with_suffix(".pub").read_text().strip()


def sshd_config_text(directory: Path, port: int, env: dict[str, str]) -> str:
    """The ``sshd_config`` of one test server living in ``directory``.

    >>> "Port 2222" in sshd_config_text(Path("/t"), 2222, {"SLURM_CONF": "/t/slurm.conf"})
    True
    """
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {directory / 'host_ed25519'}",
        f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "UsePAM no",
        "PrintMotd no",
        "PrintLastLog no",
        "MaxStartups 50:30:100",
        "MaxSessions 50",
        "AcceptEnv LANG LC_* SLURM_* ARI_*",
        f"Subsystem sftp {SFTP_SERVER}",
    ]
    if env:
        lines.append("SetEnv " + " ".join(f'"{k}={v}"' for k, v in env.items()))
    return "\n".join(lines) + "\n"


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def processes_with(needle: bytes, in_file: str) -> list[int]:
    """Pids (other than this one) whose ``/proc/<pid>/<in_file>`` (``environ``, ``cmdline``) holds ``needle``.

    Both files separate their entries with NUL and may lack the last one, so a
    trailing NUL is added before looking.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / in_file).read_bytes() + b"\0":
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def processes_with_env(marker: str) -> list[int]:
    """Pids whose environment contains the exact ``NAME=value`` string ``marker``."""
    return processes_with(marker.encode() + b"\0", "environ")


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to each pid, ignoring the ones already gone."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def die_with_parent() -> None:
    """``preexec_fn`` for daemons: SIGTERM them if the process that started them dies without tearing down (Linux).

    Linux sends it when the *thread* that started the daemon ends, so start them from the main thread.
    """
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float) -> str | None:
    """Wait until ``host:port`` sends an SSH banner; None when it does, else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"sshd exited with code {proc.returncode}"
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return None
        except OSError:
            pass
        time.sleep(0.05)
    return f"port {port} did not answer with an SSH banner within {timeout:.0f} s"


@dataclass
class SshServer:
    """One running sshd: where to reach it and how to log in, checking its host key.

    ``known_hosts`` holds only this server's host key under ``[host]:port``;
    ``identity_file`` is the private key in ``authorized_keys``.
    """

    host: str
    port: int
    user: str
    identity_file: Path
    known_hosts: Path
    host_key_pub: str
    directory: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    started_s: float = 0.0

    @property
    def config(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def log(self) -> Path:
        return self.directory / "sshd.log"

    def ssh_args(self) -> list[str]:
        """Arguments for the OpenSSH client that reach this server non-interactively."""
        return ["ssh", "-p", str(self.port), "-i", str(self.identity_file),
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", f"{self.user}@{self.host}"]

    def client(self, key_file: Path | None = None) -> paramiko.SSHClient:
        """A paramiko client logged in with ``identity_file`` (or ``key_file``); close it, or use ``with``.

        The host key is checked against ``known_hosts`` (``RejectPolicy``): an
        unknown key raises ``SSHException``, a different one ``BadHostKeyException``.
        """
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.host, port=self.port, username=self.user,
                           key_filename=str(key_file or self.identity_file),
                           look_for_keys=False, allow_agent=False, timeout=10)
        except BaseException:
            client.close()
            raise
        return client

    def start(self) -> None:
        """Start (or restart) sshd on this server's port; ``TestbedError`` with its log if it does not come up."""
        t0 = time.monotonic()
        try:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        except PermissionError:
            raise TestbedError(f"sshd needs its privilege separation dir {PRIVSEP_DIR} — run as root")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, env=_sshd_env(self.directory),
                                         preexec_fn=die_with_parent)
        problem = wait_for_port(self.host, self.port, self.proc, START_TIMEOUT_S)
        if problem:
            self.stop()
            raise TestbedError(f"sshd on {self.host}:{self.port} did not start: {problem}\n"
                        f"command: {SSHD} -D -e -f {self.config}\nits stderr:\n{self.log.read_text()[-3000:]}")
        self.started_s = time.monotonic() - t0

    def stop(self) -> None:
        """Kill the listener and every session still attached to it, like a node's sshd going away.

        Processes a session detached (``setsid``/``nohup`` and double fork) keep
        running, as they would on a real node whose sshd stopped.
        """
        if self.proc is None:
            return
        sessions = descendants(self.proc.pid) + processes_with_env(_marker(self.directory))
        kill_pids([self.proc.pid] + sessions)
        self.proc.wait(timeout=10)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _marker(directory: Path) -> str:
    """The environment entry that tags every process of one test sshd."""
    return f"ARI_TEST_SSHD={directory}"


def _sshd_env(directory: Path) -> dict[str, str]:
    name, value = _marker(directory).split("=", 1)
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), name: value}


def make_server(base: Path, env: dict[str, str] | None = None) -> SshServer:
    """Write keys and config for a new server under ``base`` (not started yet)."""
    require_program(SSHD, "openssh-server")
    directory = Path(tempfile.mkdtemp(prefix="sshd-", dir=base))
    host, port, user = "127.0.0.1", free_port(), getpass.getuser()
    host_key_pub = generate_key(directory / "host_ed25519", f"ari-test-host-{port}")
    user_key_pub = generate_key(directory / "id_ed25519", f"ari-test-user-{port}")
    (directory / "authorized_keys").write_text(user_key_pub + "\n")
    known_hosts = directory / "known_hosts"
    key_type, key_b64 = host_key_pub.split()[:2]
    known_hosts.write_text(f"[{host}]:{port} {key_type} {key_b64}\n")
    (directory / "sshd_config").write_text(sshd_config_text(directory, port, env or {}))
    return SshServer(host=host, port=port, user=user, identity_file=directory / "id_ed25519",
                     known_hosts=known_hosts, host_key_pub=host_key_pub, directory=directory, env=dict(env or {}))


def start_server(base: Path, env: dict[str, str] | None = None, attempts: int = 3) -> SshServer:
    """A started server; retries on a fresh port when another process took the one picked."""
    for attempt in range(attempts):
        server = make_server(base, env)
        server_log = server.log
        try:
            server.start()
            return server
        except TestbedError:
            if attempt == attempts - 1 or "Address already in use" not in server_log.read_text():
                raise
    raise AssertionError("unreachable")

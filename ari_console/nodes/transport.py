"""How the console reaches a machine: run a command, move files, read a file from an offset.

Two transports share one small interface: ``LocalTransport`` (subprocess and
plain files) and ``SSHTransport`` (paramiko: one connection per node, reused,
keep-alive, reconnect with backoff; SFTP for files). Commands are argument
lists, joined with ``shlex.join``; a script that needs a shell is built by the
caller from quoted parts (``sh_quote``). A uid or a path can never inject a
command.

Transport failures (refused, timed out, authentication) raise
``NodeUnreachable``; a command that ran and failed returns its exit code.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import paramiko

from ..errors import UserError

DEFAULT_TIMEOUT_S = 30.0
MAX_BACKOFF_S = 300.0


class NodeUnreachable(Exception):
    """The node could not be reached (connection, timeout, authentication)."""


@dataclass(frozen=True)
class CommandResult:
    """What a finished command left: exit code and its output as text."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def sh_quote(value: str | os.PathLike) -> str:
    """``value`` quoted for a POSIX shell.

    >>> sh_quote("uid://A001/X1/X2; rm -rf /")
    "'uid://A001/X1/X2; rm -rf /'"
    """
    return shlex.quote(str(value))


def command_line(argv: Sequence[str | os.PathLike], env: dict[str, str] | None = None) -> str:
    """One shell command line for ``argv`` with ``env`` set, every part quoted.

    >>> command_line(["tail", "-c", "+5", "a b.log"], {"SLURM_CONF": "/etc/s.conf"})
    "env SLURM_CONF=/etc/s.conf tail -c +5 'a b.log'"
    """
    parts = [str(a) for a in argv]
    if env:
        parts = ["env", *(f"{k}={v}" for k, v in sorted(env.items())), *parts]
    return shlex.join(parts)


class Transport(Protocol):
    """What every transport offers."""

    name: str

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult: ...
    def run_script(self, script: str, timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult: ...
    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None: ...
    def read_file(self, path: str) -> bytes: ...
    def read_from(self, path: str, offset: int, limit: int) -> bytes: ...
    def get(self, remote: str, local: Path) -> None: ...
    def close(self) -> None: ...


@dataclass
class Backoff:
    """Per-host backoff: after n failures in a row, wait 2**n seconds (capped) before the next try.

    >>> b = Backoff(clock=lambda: 100.0); b.failed("refused"); b.wait_s()
    2.0
    """

    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    next_try: float = 0.0
    last_ok: float | None = None
    last_error: str | None = None

    def failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self.next_try = self.clock() + min(MAX_BACKOFF_S, 2.0 ** self.failures)

    def succeeded(self) -> None:
        self.failures = 0
        self.next_try = 0.0
        self.last_ok = self.clock()
        self.last_error = None

    def wait_s(self) -> float:
        return max(0.0, self.next_try - self.clock())


# -- local ---------------------------------------------------------------------

@dataclass
class LocalTransport:
    """This machine: subprocess for commands, the file system for files."""

    name: str = "local"
    env: dict[str, str] = field(default_factory=dict)

    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        return self.run_script(command_line(argv), timeout)

    def run_script(self, script: str, timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        """Run ``script`` in its own process group; on timeout the whole group is killed (nothing left running)."""
        proc = subprocess.Popen(["/bin/sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, **self.env}, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            first = script.split()[0] if script.split() else "command"
            raise NodeUnreachable(f"{self.name}: {first} timed out after {timeout:g} s (killed)") from None
        except BaseException:
            kill_group(proc)
            raise
        return CommandResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        os.replace(tmp, target)

    def read_file(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def read_from(self, path: str, offset: int, limit: int) -> bytes:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(limit)

    def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        with open(remote, "rb") as src, open(local, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)

    def close(self) -> None:
        pass


def kill_group(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s process group (it was started with ``start_new_session``) and reap it."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a grandchild in another group keeps the pipes open: stop waiting
        pass


# -- ssh -------------------------------------------------------------------------

@dataclass
class SSHTarget:
    """Where and as whom to connect."""

    name: str
    host: str
    port: int = 22
    user: str | None = None
    identity_file: Path | None = None
    known_hosts: Path | None = None
    trust_new_host_keys: bool = False
    connect_timeout: float = 10.0
    keepalive_s: int = 30


def known_hosts_fix(target: SSHTarget) -> str:
    """The exact command that accepts ``target``'s host key after checking it."""
    kh = target.known_hosts or Path("~/.ssh/known_hosts")
    port = f"-p {target.port} " if target.port != 22 else ""
    return f"ssh-keyscan {port}{sh_quote(target.host)} >> {kh}"


class SSHTransport:
    """One reused paramiko connection to a node, reconnecting with backoff."""

    def __init__(self, target: SSHTarget, env: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self.name = target.name
        self.env = dict(env or {})
        self.backoff = Backoff(clock=clock)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # connection ------------------------------------------------------------
    def _connected(self) -> paramiko.SSHClient:
        client = self._client
        if client is not None and client.get_transport() is not None and client.get_transport().is_active():
            return client
        self.close()
        wait = self.backoff.wait_s()
        if wait > 0:
            raise NodeUnreachable(f"{self.name}: unreachable ({self.backoff.last_error}); next try in {wait:.0f} s")
        try:
            self._client = self._connect()
        except UserError:
            self.backoff.failed("host key refused")
            raise
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self.backoff.failed(_describe(exc))
            raise NodeUnreachable(f"{self.name}: cannot connect to {self.target.host}:{self.target.port}: "
                                  f"{_describe(exc)}") from None
        self.backoff.succeeded()
        return self._client

    def _connect(self) -> paramiko.SSHClient:
        t = self.target
        client = paramiko.SSHClient()
        known = t.known_hosts.expanduser() if t.known_hosts else Path("~/.ssh/known_hosts").expanduser()
        if known.exists():
            client.load_host_keys(str(known))
        if t.trust_new_host_keys:
            known.parent.mkdir(parents=True, exist_ok=True)
            known.touch(exist_ok=True)
            client.load_host_keys(str(known))  # new keys are saved back to this file
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                t.host, port=t.port, username=t.user,
                key_filename=str(t.identity_file.expanduser()) if t.identity_file else None,
                timeout=t.connect_timeout, banner_timeout=t.connect_timeout, auth_timeout=t.connect_timeout,
                allow_agent=True, look_for_keys=t.identity_file is None,
            )
        except paramiko.BadHostKeyException:
            raise UserError(
                f'node "{t.name}": the host key of {t.host}:{t.port} does not match {known} — if the host '
                f"was reinstalled, remove the old key with `ssh-keygen -f {known} -R '[{t.host}]:{t.port}'` "
                f"and accept the new one with `{known_hosts_fix(t)}`") from None
        except paramiko.AuthenticationException:
            key = t.identity_file or "the agent's and ~/.ssh keys"
            raise NodeUnreachable(
                f"{t.name}: {t.user or 'user'}@{t.host}:{t.port} refused the key ({key}) — add its public key "
                f"to ~/.ssh/authorized_keys there, or set identity_file") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise UserError(
                    f'node "{t.name}": unknown host key for {t.host}:{t.port} — check it and accept it with '
                    f"`{known_hosts_fix(t)}`, or set trust_new_host_keys = true") from None
            raise
        if t.trust_new_host_keys:
            client.save_host_keys(str(known))
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(t.keepalive_s)
        return client

    def _sftp_client(self) -> paramiko.SFTPClient:
        client = self._connected()
        if self._sftp is None or self._sftp.get_channel() is None or self._sftp.get_channel().closed:
            self._sftp = client.open_sftp()
            # A node that stops answering mid-transfer must not hang the console: no read waits longer.
            self._sftp.get_channel().settimeout(max(DEFAULT_TIMEOUT_S, self.target.connect_timeout))
        return self._sftp

    def close(self) -> None:
        for thing in (self._sftp, self._client):
            try:
                if thing is not None:
                    thing.close()
            except Exception:  # closing a dead connection may fail; it is gone either way
                pass
        self._sftp = None
        self._client = None

    # commands --------------------------------------------------------------
    def run(self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        return self.run_script(command_line(argv), timeout)

    def run_script(self, script: str, timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        if self.env:
            script = command_line(["/bin/sh", "-c", script], self.env)
        client = self._connected()
        try:
            chan = client.get_transport().open_session(timeout=timeout)
            chan.settimeout(timeout)
            chan.exec_command(script)
            chan.shutdown_write()
            return _collect(chan, time.monotonic() + timeout, self.name)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self.backoff.failed(_describe(exc))
            self.close()
            raise NodeUnreachable(f"{self.name}: connection lost during a command: {_describe(exc)}") from None

    # files -------------------------------------------------------------------
    def _sftp_call(self, what: str, fn):
        try:
            return fn(self._sftp_client())
        except FileNotFoundError:
            raise
        except (OSError, paramiko.SSHException, EOFError) as exc:
            if isinstance(exc, IOError) and getattr(exc, "errno", None) is not None:
                raise
            self.backoff.failed(_describe(exc))
            self.close()
            raise NodeUnreachable(f"{self.name}: connection lost during {what}: {_describe(exc)}") from None

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        parent = str(Path(path).parent)
        self.run(["mkdir", "-p", parent])

        def write(sftp: paramiko.SFTPClient) -> None:
            tmp = path + ".part"
            with sftp.open(tmp, "wb") as fh:
                fh.write(data)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, path)

        self._sftp_call(f"writing {path}", write)

    def read_file(self, path: str) -> bytes:
        def read(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(path, "rb") as fh:
                fh.prefetch()
                return fh.read()

        return self._sftp_call(f"reading {path}", read)

    def read_from(self, path: str, offset: int, limit: int) -> bytes:
        def read(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(path, "rb") as fh:
                fh.seek(offset)
                return fh.read(limit)

        return self._sftp_call(f"reading {path}", read)

    def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self._sftp_call(f"fetching {remote}", lambda sftp: sftp.get(remote, str(local)))


def _collect(chan: paramiko.Channel, deadline: float, name: str) -> CommandResult:
    """Read a channel's stdout and stderr until the command exits or ``deadline`` passes."""
    out, err = bytearray(), bytearray()
    while True:
        progressed = False
        while chan.recv_ready():
            out += chan.recv(65536)
            progressed = True
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            progressed = True
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            break
        if time.monotonic() > deadline:
            chan.close()
            raise NodeUnreachable(f"{name}: command timed out")
        if not progressed:
            time.sleep(0.005)
    rc = chan.recv_exit_status()
    chan.close()
    return CommandResult(rc, out.decode(errors="replace"), err.decode(errors="replace"))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    return str(exc) or exc.__class__.__name__

"""How the console reaches a machine: run a command, move files, read a file from an offset.

Two transports share one small interface: ``LocalTransport`` (subprocess and
plain files) and ``SSHTransport`` (paramiko: one connection per node, reused,
keep-alive, reconnect with backoff; SFTP for files). Commands are argument
lists, joined with ``shlex.join``; a script that needs a shell is built by the
caller from quoted parts (``sh_quote``). A uid or a path can never inject a
command.

Transport failures (refused, timed out, authentication) raise
``NodeUnreachable``; a command that ran and failed returns its exit code.

SSH reads the operator's ``~/.ssh/config`` as ``ssh`` would (paramiko's
``SSHConfig``): ``Host`` aliases, ``HostName``, ``User``, ``Port``,
``IdentityFile``, ``ProxyJump`` (several hops: ``a,b``) and ``ProxyCommand``.
What the node's entry in ``ari.toml`` sets wins over the file. Connection
errors name their cause (DNS, refused, timeout, no SSH banner, key refused),
each with its own fix; paramiko's own logger stays quiet.
"""

from __future__ import annotations

import logging
import math
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
SFTP_WINDOW = 16 << 20
"""Bytes the node may send on the SFTP channel before the console acknowledges them."""
SFTP_REQUEST = 64 << 10
"""Bytes per SFTP read request when the server states no limit: the most every OpenSSH
sftp-server (before 8.7 too) answers in full; paramiko's own is 32 KiB."""
SFTP_REQUEST_MAX = 256 << 10
"""Bytes per read request at most, when the server states a higher limit (limits@openssh.com)."""
MAX_BACKOFF_S = 300.0

# paramiko logs a traceback for a host that does not speak SSH before raising; the console's
# own one-line error says it better
_paramiko_log = logging.getLogger("paramiko")
_paramiko_log.addHandler(logging.NullHandler())
_paramiko_log.propagate = False


class NodeUnreachable(Exception):
    """The node could not be reached (connection, timeout, authentication)."""


class LogRestarted(Exception):
    """``read_from``: the file is shorter than the offset asked for (truncated, or rotated and
    started anew); ``size`` is its size now. The caller reads it again from 0."""

    def __init__(self, path: str, size: int) -> None:
        super().__init__(f"{path}: {size} bytes now, shorter than what was read (truncated or rotated)")
        self.size = size


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
    def read_from(self, path: str, offset: int, limit: int) -> bytes:
        """At most ``limit`` bytes of ``path`` after ``offset`` (b'' when none yet); FileNotFoundError
        when there is no file; LogRestarted when the file is shorter than ``offset``."""
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
    _files: dict[str, int] = field(default_factory=dict, repr=False, compare=False)  # path -> inode last read there

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
            st = os.fstat(fh.fileno())
            seen = self._files.pop(path, st.st_ino)
            self._files[path] = st.st_ino
            while len(self._files) > 1024:
                self._files.pop(next(iter(self._files)))
            if st.st_size < offset or (offset and seen != st.st_ino):  # truncated, or a new file there
                raise LogRestarted(path, st.st_size)
            fh.seek(offset)
            return fh.read(min(limit, st.st_size - offset))

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
    ssh_config: Path | None = None
    """The OpenSSH client config to honour (default ``~/.ssh/config``, when it exists)."""
    proxy_jump: tuple[str, ...] = ()
    proxy_command: str | None = None


def ssh_config_path(target: SSHTarget) -> Path:
    return (target.ssh_config or Path("~/.ssh/config")).expanduser()


def resolve_target(target: SSHTarget) -> SSHTarget:
    """``target`` with what ``~/.ssh/config`` says of its host filled in (the node's own settings win).

    ``host`` may be a ``Host`` alias; the result connects to its ``HostName``.
    """
    from dataclasses import replace

    path = ssh_config_path(target)
    if not path.exists():
        return target
    try:
        found = paramiko.SSHConfig.from_path(str(path)).lookup(target.host)
    except Exception as exc:  # a config paramiko cannot read: say which file
        raise UserError(f"{path}: cannot read it ({exc}) — fix the file or point ssh_config elsewhere") from None
    identity = target.identity_file
    if identity is None and found.get("identityfile"):
        identity = Path(found["identityfile"][0])
    jump = target.proxy_jump
    if not jump and found.get("proxyjump") and found["proxyjump"].lower() != "none":
        jump = tuple(h.strip() for h in found["proxyjump"].split(",") if h.strip())
    command = target.proxy_command
    if command is None and found.get("proxycommand") and found["proxycommand"].lower() != "none":
        command = found["proxycommand"]
    return replace(target, host=found.get("hostname", target.host),
                   port=int(found["port"]) if target.port == 22 and "port" in found else target.port,
                   user=target.user or found.get("user"), identity_file=identity,
                   proxy_jump=jump, proxy_command=command,
                   connect_timeout=float(found["connecttimeout"]) if "connecttimeout" in found
                   else target.connect_timeout)


def jump_target(spec: str, via: SSHTarget) -> SSHTarget:
    """The SSHTarget of one ``ProxyJump`` hop (``[user@]host[:port]``), resolved through the same config."""
    user, _, hostport = spec.rpartition("@")
    host, port = hostport, 22
    if hostport.startswith("["):  # [::1]:2222
        host, _, rest = hostport[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 22
    elif hostport.count(":") == 1:
        host, p = hostport.split(":")
        port = int(p)
    hop = SSHTarget(name=f"{via.name} (jump {spec})", host=host, port=port, user=user or None,
                    known_hosts=via.known_hosts, trust_new_host_keys=via.trust_new_host_keys,
                    connect_timeout=via.connect_timeout, ssh_config=via.ssh_config)
    return resolve_target(hop)


def describe_connect_error(exc: BaseException, t: SSHTarget) -> str:
    """What went wrong reaching ``t`` and what to do, one line (DNS, refused, timeout, banner, other).

    >>> describe_connect_error(ConnectionRefusedError(111, "refused"), SSHTarget("n", "h", 2222))
    'connection refused by h:2222 — check that sshd runs there and listens on port 2222'
    """
    where = f"{t.host}:{t.port}"
    text = str(exc)
    if isinstance(exc, socket.gaierror):
        return (f"cannot resolve the host name {t.host!r} ({exc.strerror or exc}) — check the node's host in "
                f"ari.toml, or its HostName in {ssh_config_path(t)}")
    if isinstance(exc, ConnectionRefusedError) or isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return f"connection refused by {where} — check that sshd runs there and listens on port {t.port}"
    if isinstance(exc, (socket.timeout, TimeoutError)) or "timed out" in text:
        return (f"no answer from {where} within {t.connect_timeout:g} s — check the network and firewalls, "
                f"or reach it through a bastion (ProxyJump in {ssh_config_path(t)})")
    if "protocol banner" in text or "SSH protocol" in text:
        return f"{where} does not speak SSH (no SSH banner) — check the port: is it sshd's?"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot connect to {where}: {exc.strerror or exc} — check the host, port and network"
    return f"cannot connect to {where}: {_describe(exc)}"


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
        self._jumps: list[paramiko.SSHClient] = []
        self._open_logs: dict[str, paramiko.SFTPFile] = {}
        self._read_size = SFTP_REQUEST

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
        except _Unreachable as exc:
            self.backoff.failed(str(exc))
            self.close()
            raise NodeUnreachable(f"{self.name}: {exc}") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self.backoff.failed(_describe(exc))
            self.close()
            raise NodeUnreachable(f"{self.name}: {describe_connect_error(exc, resolve_target(self.target))}") from None
        self.backoff.succeeded()
        return self._client

    def _connect(self) -> paramiko.SSHClient:
        """Connect to the node, through its ProxyJump hops or ProxyCommand when it has them."""
        t = resolve_target(self.target)
        sock = None
        if t.proxy_jump:
            for spec, nxt in zip(t.proxy_jump, [*t.proxy_jump[1:], None]):
                hop = jump_target(spec, t)
                try:
                    client = self._connect_one(hop, sock)
                except (OSError, paramiko.SSHException, EOFError) as exc:
                    raise _Unreachable(f"jump host {spec}: {describe_connect_error(exc, hop)}") from None
                self._jumps.append(client)
                dest = (jump_target(nxt, t).host, jump_target(nxt, t).port) if nxt else (t.host, t.port)
                try:
                    sock = client.get_transport().open_channel("direct-tcpip", dest, ("127.0.0.1", 0),
                                                               timeout=t.connect_timeout)
                except (OSError, paramiko.SSHException, EOFError) as exc:
                    raise _Unreachable(f"jump host {spec} cannot reach {dest[0]}:{dest[1]}: {_describe(exc)}"
                                       " — check the host and port as the jump host sees them") from None
        elif t.proxy_command:
            sock = paramiko.ProxyCommand(t.proxy_command)
        return self._connect_one(t, sock)

    def _connect_one(self, t: SSHTarget, sock) -> paramiko.SSHClient:
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
                allow_agent=True, look_for_keys=t.identity_file is None, sock=sock,
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
            # A wide window: the reads of a log tail stay in flight together instead of waiting
            # for the window to reopen every 2 MB (paramiko's default).
            self._sftp = paramiko.SFTPClient.from_transport(client.get_transport(), window_size=SFTP_WINDOW)
            self._read_size = sftp_read_size(self._sftp)
            self._open_logs = {}
            # A node that stops answering mid-transfer must not hang the console: no read waits longer.
            self._sftp.get_channel().settimeout(max(DEFAULT_TIMEOUT_S, self.target.connect_timeout))
        return self._sftp

    def close(self) -> None:
        for thing in (self._sftp, self._client, *reversed(self._jumps)):
            try:
                if thing is not None:
                    thing.close()
            except Exception:  # closing a dead connection may fail; it is gone either way
                pass
        self._sftp = None
        self._client = None
        self._jumps = []
        self._open_logs = {}

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
            chan.exec_command(killed_after(script, timeout))
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
        """A log's new bytes: one ``stat`` of the path, then the reads, all in flight at once.

        The file stays open between calls (no open and close round trips for a growing log). The
        path is what counts: a file shorter than ``offset`` raises LogRestarted, and so does a kept
        file that ends before the path's size (it was rotated away; the path holds a new file).
        """
        def read(sftp: paramiko.SFTPClient) -> bytes:
            size = sftp.stat(path).st_size
            if size < offset:
                self._forget_log(path)
                raise LogRestarted(path, size)
            end = min(size, offset + limit)
            if end == offset:
                return b""
            kept = path in self._open_logs
            fh = self._open_log(sftp, path)
            try:
                fh.seek(offset)
                fh.MAX_REQUEST_SIZE = self._read_size  # for this file's reads only
                fh.prefetch(end)
                data = fh.read(end - offset)
            except BaseException:
                self._forget_log(path)
                raise
            if len(data) < end - offset and kept:
                self._forget_log(path)
                raise LogRestarted(path, size)
            return data

        return self._sftp_call(f"reading {path}", read)

    def _open_log(self, sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPFile:
        fh = self._open_logs.pop(path, None) or sftp.open(path, "rb")
        self._open_logs[path] = fh  # the newest used last: the least recently used is closed first
        while len(self._open_logs) > 16:
            self._open_logs.pop(next(iter(self._open_logs))).close()
        return fh

    def _forget_log(self, path: str) -> None:
        fh = self._open_logs.pop(path, None)
        if fh is not None:
            try:
                fh.close()
            except (OSError, paramiko.SSHException, EOFError):
                pass

    def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self._sftp_call(f"fetching {remote}", lambda sftp: sftp.get(remote, str(local)))


def sftp_read_size(sftp: paramiko.SFTPClient) -> int:
    """Bytes per read request: what the server says it answers in full (OpenSSH 8.7+ states its
    ``max-read-length`` through the ``limits@openssh.com`` extension), at most ``SFTP_REQUEST_MAX``;
    ``SFTP_REQUEST`` when it states none."""
    from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY

    try:
        kind, msg = sftp._request(CMD_EXTENDED, "limits@openssh.com")
        if kind == CMD_EXTENDED_REPLY:
            msg.get_int64()  # max-packet-length
            stated = msg.get_int64()
            return min(stated, SFTP_REQUEST_MAX) if stated > 0 else SFTP_REQUEST
    except (OSError, paramiko.SFTPError):  # an older server: "unsupported"
        pass
    return SFTP_REQUEST


REMOTE_KILL_GRACE_S = 2.0
"""How long after the console gives up on a command the node kills it (the console's own timeout
must come first, so a command killed on the node is still reported as timed out)."""


def killed_after(script: str, timeout: float, grace: float = REMOTE_KILL_GRACE_S) -> str:
    """``script`` under the node's ``timeout`` (coreutils): ``grace`` seconds after the console stops
    waiting, SIGKILL goes to the command's whole process group on the node (closing an SSH channel
    without a terminal kills nothing there). A runner started with ``--detach`` is in a session of its
    own and lives on. A node without ``timeout`` runs the script as it is.

    >>> killed_after("sleep 9", 5)
    "if command -v timeout >/dev/null 2>&1; then exec timeout -s KILL 7 /bin/sh -c 'sleep 9'; else exec /bin/sh -c 'sleep 9'; fi"
    """
    inner = shlex.quote(script)
    seconds = max(1, math.ceil(timeout + grace))
    return (f"if command -v timeout >/dev/null 2>&1; then exec timeout -s KILL {seconds} /bin/sh -c {inner}; "
            f"else exec /bin/sh -c {inner}; fi")


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
            chan.close()  # the node kills it (killed_after)
            raise NodeUnreachable(f"{name}: command timed out (killed on the node)")
        if not progressed:
            time.sleep(0.005)
    rc = chan.recv_exit_status()
    chan.close()
    return CommandResult(rc, out.decode(errors="replace"), err.decode(errors="replace"))


class _Unreachable(Exception):
    """A connection step failed; the message already says which and what to do."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    return str(exc) or exc.__class__.__name__

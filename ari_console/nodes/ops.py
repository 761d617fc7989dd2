"""Operations on one node: prepare, launch, poll, tail, cancel — any transport times any batch system.

The engine and ``ari nodes check`` call these; they are the only way the
console touches a node. ``remote/`` is copied to ``<scratch_dir>/.ari/remote``
on the node by ``prepare`` and the runner started from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..casa_install import casa_install_key
from ..config import Node
from ..formatting import gb_text
from ..errors import UserError
from . import batch as B
from .probe import probe
from .transport import CommandResult, LogRestarted, NodeUnreachable, Transport, command_line, sh_quote



def remote_source() -> Path:
    """The node's side to copy: the wheel's ``ari_console.remote`` package, else a checkout's ``remote/``."""
    from importlib import resources

    try:
        return Path(str(resources.files("ari_console.remote")))
    except ModuleNotFoundError:  # a source checkout without an install
        return Path(__file__).resolve().parents[2] / "remote"


REMOTE_SRC = remote_source()
MIN_PYTHON = (3, 6)
GONE = "gone"  # the handle of an attempt whose job no batch system knows any more


def remote_root(node: Node) -> str:
    """Where the runner and recipes live on ``node``."""
    return f"{node.scratch_dir.rstrip('/')}/.ari"


def runner_path(node: Node) -> str:
    return f"{remote_root(node)}/remote/runner.py"


def campaign_space(name: str, db_path: str | os.PathLike) -> str:
    """The campaign's directory on a node's scratch: its name and a digest of its state file's path.

    Two campaigns sharing a scratch (the default ``/tmp/ari-scratch``) never
    share a work dir, even with the same name.

    >>> campaign_space("Cycle 4, band 7", "/data/c4/ari.db")[:15]
    'Cycle_4_band_7-'
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "campaign"
    digest = hashlib.sha256(str(Path(db_path).resolve()).encode()).hexdigest()[:8]
    return f"{safe[:40]}-{digest}"


def attempt_dir(node: Node, attempt: str, space: str | None = None) -> str:
    """The work dir of one attempt on ``node`` (inside the campaign's ``space`` when given)."""
    root = node.scratch_dir.rstrip("/")
    return f"{root}/{space}/{attempt}" if space else f"{root}/{attempt}"


@dataclass(frozen=True)
class Check:
    """One line of ``ari nodes check``: what was checked, whether it passed, and the fix."""

    node: str
    check: str
    ok: bool
    detail: str
    fix: str = ""


def copy_remote(transport: Transport, node: Node) -> int:
    """Copy ``remote/`` (runner, download, recipes) to the node; the number of files copied."""
    files = [p for p in sorted(REMOTE_SRC.rglob("*.py")) if "__pycache__" not in p.parts]
    root = remote_root(node)
    for path in files:
        rel = path.relative_to(REMOTE_SRC.parent).as_posix()
        transport.write_file(f"{root}/{rel}", path.read_bytes(), mode=0o755 if path.name == "runner.py" else 0o644)
    return len(files)


def check_node(node: Node, transport: Transport, scratch_need_gb: float = 1.0,
               timeout_s: float | None = None) -> list[Check]:
    """Check a node end to end; one Check per aspect, each failure with its fix. Copies the runner.

    Every command has a timeout (``timeout_s`` caps them all); one that hangs
    is killed with its process group and reported as a failed check.
    """
    checks: list[Check] = []

    def _ask(transport: Transport, argv: list[str], timeout: float) -> CommandResult:
        return ask(transport, argv, timeout if timeout_s is None else min(timeout, timeout_s))

    def add(name: str, ok: bool, detail: str, fix: str = "") -> None:
        checks.append(Check(node.name, name, ok, detail, "" if ok else fix))

    try:
        result = transport.run(["sh", "-c", "echo ok"], timeout=20)
        add("reach", result.ok, f"{node.transport} ok" if result.ok else result.stderr.strip())
    except NodeUnreachable as exc:
        add("reach", False, str(exc), _reach_fix(node, str(exc)))
        return checks
    except UserError as exc:  # an unknown or changed host key: the message holds the fix
        detail, _, fix = str(exc).partition(" — ")
        add("reach", False, detail, fix)
        return checks
    py = _ask(transport, [node.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], timeout=30)
    version = py.stdout.strip()
    ok = py.ok and tuple(int(x) for x in version.split(".")) >= MIN_PYTHON
    add("python", ok, f"{node.python} is Python {version}" if py.ok else f"{node.python}: {py.stderr.strip()[:120]}",
        f'set python = "/path/to/python3" (3.6 or newer) for node "{node.name}" in ari.toml')
    if node.recipe == "casa6":
        casa_py = node.casa_path or node.python
        # CASA writes casa-*.log where it starts: in the node's scratch, never the operator's directory
        where = sh_quote(f"{node.scratch_dir.rstrip('/')}/.ari/check")
        casa = _ask(transport, ["sh", "-c", f"mkdir -p {where} && cd {where} && exec "
                                + command_line([casa_py, "-c", "import casatools; print(casatools.version_string())"])],
                    timeout=120)
        last = (casa.stderr.strip().splitlines() or [""])[-1][:160]
        add("casa", casa.ok, f"casatools {casa.stdout.strip()}" if casa.ok else
            f"{casa_py} cannot import casatools ({last})", f"install CASA 6 there (`{casa_py} -m pip install casatools==6.7.0.31 "
            f"casatasks==6.7.0.31 casadata`) or set casa_path to a Python that has it")
    else:
        casa_bin = node.casa_path or "casa"
        casa = _ask(transport, ["sh", "-c", f"command -v {sh_quote(casa_bin)}"], timeout=30)
        add("casa", casa.ok, f"casa at {casa.stdout.strip()}" if casa.ok else f"{casa_bin} not found",
            'set casa_path = "/path/to/casa-pipeline/bin/casa" for the alma-pipeline recipe')
    for version, path in sorted((node.casa or {}).items()):
        add(f"casa {version}", *check_casa_install(transport, node, version, path))
    try:
        p = probe(transport, node.scratch_dir, **({"timeout": timeout_s} if timeout_s else {}))
        free = p.scratch_free_gb or 0.0
        add("scratch", free >= scratch_need_gb, f"{node.scratch_dir}: {gb_text(free)} free",
            f"free space in {node.scratch_dir} (needs {scratch_need_gb:g} GB) or point scratch_dir elsewhere")
    except (ValueError, NodeUnreachable) as exc:
        add("scratch", False, str(exc), f"make {node.scratch_dir} exist and be writable")
    try:
        batch = B.batch_system(node.batch).check(_Capped(transport, timeout_s) if timeout_s else transport)
    except NodeUnreachable as exc:  # the batch command hung (killed with its process group) or the node went
        batch = (False, str(exc), f"make the batch system answer on {node.name} (its commands did not)")
    if batch is not None:
        add("batch", *batch)
    try:
        n = copy_remote(transport, node)
        add("runner", True, f"{n} files in {remote_root(node)}/remote")
    except (OSError, NodeUnreachable) as exc:
        add("runner", False, str(exc), f"make {node.scratch_dir} writable for {node.user or 'the user'}")
    return checks


class _Capped:
    """A transport whose commands wait at most ``cap`` seconds (``ari nodes check --timeout``-like use)."""

    def __init__(self, transport: Transport, cap: float) -> None:
        self._transport, self._cap = transport, cap

    def run(self, argv, timeout: float = 30.0) -> CommandResult:
        return self._transport.run(argv, timeout=min(timeout, self._cap))

    def run_script(self, script: str, timeout: float = 30.0) -> CommandResult:
        return self._transport.run_script(script, timeout=min(timeout, self._cap))

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def ask(transport: Transport, argv: list[str], timeout: float) -> CommandResult:
    """``transport.run`` for a check: a command that hangs or a connection that drops is a failed check
    (exit 124, the reason as its stderr), not an exception."""
    try:
        return transport.run(argv, timeout=timeout)
    except NodeUnreachable as exc:
        return CommandResult(124, "", f"{argv[0]}: {exc}")


def _reach_fix(node: Node, message: str) -> str:
    if node.transport == "local":
        return "check that /bin/sh runs here"
    if "refused the key" in message:
        return f"append your public key to ~/.ssh/authorized_keys of {node.user or 'the user'}@{node.host}"
    return f"check that sshd runs on {node.host}:{node.port} and the network reaches it"


def write_spec(transport: Transport, work_dir: str, spec: dict) -> str:
    """Write the job spec into the attempt's work dir; its path."""
    path = f"{work_dir}/spec.json"
    transport.write_file(path, json.dumps(spec, indent=1).encode())
    return path


def launch(node: Node, transport: Transport, campaign: str, attempt: str, spec: dict,
           mem_gb: float | None = None, walltime_h: float | None = None, space: str | None = None) -> dict:
    """Start one attempt detached on ``node``; the handle to store.

    ``spec`` is the runner's job spec (see remote/runner.py); its work_dir is
    set here. Memory and walltime default to the node's.
    """
    work_dir = attempt_dir(node, attempt, space)
    spec = {**spec, "spec_version": B.SPEC_VERSION, "attempt_id": attempt, "work_dir": work_dir}
    spec.setdefault("mem_gb", mem_gb or node.mem_gb)
    spec.setdefault("walltime_h", walltime_h or node.walltime_h)
    spec_path = write_spec(transport, work_dir, spec)
    req = B.JobRequest(attempt=attempt, campaign=campaign, work_dir=work_dir, spec_path=spec_path,
                       python=node.python, runner=runner_path(node), mem_gb=mem_gb or node.mem_gb,
                       walltime_h=walltime_h or node.walltime_h, cpus=node.cpus_per_slot,
                       partition=node.partition, account=node.account, qos=node.qos)
    handle = B.batch_system(node.batch).submit(transport, req)
    return {**handle, "work_dir": work_dir, "node": node.name}


def poll(node: Node, transport: Transport, campaign: str, handles: Iterable[dict],
         since: float | None = None) -> dict[str, B.JobState]:
    """The state of every given attempt on ``node``: a few commands for all of them.

    Keys are the work dirs. Raises NodeUnreachable when the node cannot be asked.
    """
    handles = list(handles)
    states: dict[str, B.JobState] = {}
    if not handles:
        return states
    # An attempt found on the node without its job (``find_attempt``): only its status file speaks.
    gone = [h for h in handles if h.get("batch") == GONE]
    for h in gone:
        states[h["work_dir"]] = B.reconcile_none(B.read_status(transport, h["work_dir"]), alive=False)
    handles = [h for h in handles if h.get("batch") != GONE]
    if handles:
        states.update(B.batch_system(node.batch).states(
            transport, campaign, handles, since if since is not None else time.time() - 7 * 86400))
    return states


def find_attempt(node: Node, transport: Transport, campaign: str, attempt: str,
                 space: str | None = None) -> dict | None:
    """The handle of an attempt whose launch was interrupted before its handle was stored, or None.

    Asks the node's batch system (``BatchSystem.find``: a runner process started
    for its spec, a Slurm job carrying its name as comment), then looks for a
    status.json the runner already wrote in the attempt's (deterministic) work dir.
    """
    work_dir = attempt_dir(node, attempt, space)
    system = B.batch_system(node.batch)
    found = system.find(transport, campaign, attempt, work_dir)
    if found is None:
        status = B.read_status(transport, work_dir)
        if status and status.get("pid"):
            found = {"batch": GONE}  # the runner started, but its job is unknown to the batch system now
    return {**found, "work_dir": work_dir, "node": node.name} if found else None


def batch_output_tail(transport: Transport, handle: dict, limit: int = 65536) -> str:
    """The end of the batch system's output file of a job ('' when there is none)."""
    system = B.BATCH_SYSTEMS.get(handle.get("batch"))
    return system.output_tail(transport, handle, limit) if system is not None else ""


def tail(transport: Transport, path: str, offset: int, limit: int = 1 << 20) -> bytes:
    """The bytes of ``path`` after ``offset`` (at most ``limit``); b'' when nothing new, no file yet,
    or a file shorter than ``offset`` (``follow`` reads that one again from its start)."""
    try:
        return transport.read_from(path, offset, limit)
    except (FileNotFoundError, LogRestarted):
        return b""


def follow(transport: Transport, path: str, offset: int, limit: int = 1 << 20) -> tuple[int, bytes]:
    """``(start, data)``: at most ``limit`` bytes of ``path`` from ``start``.

    ``start`` is ``offset``, or 0 when the file is now shorter than ``offset`` (truncated, or
    rotated and started anew): the log is read again from its beginning, so no line is lost.
    """
    try:
        return offset, transport.read_from(path, offset, limit)
    except FileNotFoundError:
        return offset, b""
    except LogRestarted:
        return 0, tail(transport, path, 0, limit)


KEPT_AFTER_CLEAN = ("*.log", "*.out", "status.json", "spec.json")


def clean_work_dir(transport: Transport, work_dir: str) -> None:
    """Remove an attempt's data from the node, keeping its logs and status (``KEPT_AFTER_CLEAN``)."""
    keep = " ".join(f"! -name {sh_quote(k)}" for k in KEPT_AFTER_CLEAN)
    result = transport.run_script(f"cd {sh_quote(work_dir)} && find . -mindepth 1 -maxdepth 1 {keep} "
                                  f"-exec rm -rf {{}} +", timeout=600)
    if not result.ok:
        raise RuntimeError(f"{transport.name}: cleaning {work_dir} failed: {result.stderr.strip()[:200]}")


def cancel(node: Node, transport: Transport, handle: dict, force: bool = False) -> None:
    """Stop an attempt; the runner records the stage it was in (``force``: kill a hung runner outright)."""
    B.batch_system(node.batch).cancel(transport, handle, force=force)


def check_casa_install(transport, node: Node, version: str, path: str) -> tuple[bool, str, str]:
    """(ok, detail, fix) for one install of a node's ``casa`` table: it runs and is that version.

    casa6: the Python imports casatools and reports ``version``; alma-pipeline: the
    executable exists (``casa --version`` would start CASA's whole shell).
    """
    fix = f'fix or remove casa."{version}" = "{path}" of node "{node.name}" in ari.toml'
    if node.recipe == "casa6":
        r = transport.run([path, "-c", "import casatools; print(casatools.version_string())"], timeout=120)
        found = r.stdout.strip()
        if not r.ok:
            return False, f"{path} cannot import casatools", fix
        same = casa_install_key(version, (found,)) is not None
        return same, f"{path}: casatools {found}" + ("" if same else f", not {version}"), fix
    r = transport.run(["sh", "-c", f"command -v {sh_quote(path)}"], timeout=30)
    return r.ok, (f"casa {version} at {r.stdout.strip()}" if r.ok else f"{path} not found"), fix

"""The demo campaign: the CASA-simulated demo archive, imaged on this machine's real nodes.

``ari demo`` builds (or reuses) the demo archive, serves it on a loopback
port, and starts the demo's nodes, all real and all on this machine:

- ``local``: this machine, no batch system;
- ``ws-old``: an old workstation reached over SSH (its own sshd on a loopback
  port): little memory (4 GB), slow (speed 0.6);
- ``big``: a bigger machine reached over SSH (another sshd): 12 GB, two slots;
- ``cluster``: a single-node Slurm (munged, slurmctld, slurmd of its own) with a
  short walltime (3 minutes), believed fast (speed 1.1).

It writes the campaign's ``ari.toml``, imports the demo project codes from the
archive and runs the campaign, in the console (``ari tui``) or headless, until
nothing is left to do. The hard cases take their real paths: the memory hog and
the slow data set are first placed on the small workstation and on the
short-walltime cluster (as a naive placement would: the demo pins them there,
and the slow one's metadata under-predicts it, as in the study), killed there
for memory (the runner's budget) and time (Slurm's ``DUE TO TIME LIMIT``), and
retried where memory and walltime suffice; total power is excluded at import; a
missing calibration table and a line filling its window are held for an
operator; a download that arrives corrupted until the runner gives up fails as
``download`` and is retried after a backoff; a dropped connection resumes; the
QA2 image with the wrong flux scale is flagged ``discrepant``. At the end every
attempt still running is cancelled and every daemon the demo started is stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .. import store
from ..archive.client import queue_candidates, tap_url_of
from ..casa_install import casa_site_config
from ..config import CONFIG_NAME, Config, load_config
from ..errors import UserError

DEMO_PROJECTS = ("2016.1.00123.S", "2017.1.00456.S", "2018.1.00789.S")
LOCAL_NODE, SMALL_NODE, BIG_NODE, CLUSTER_NODE = "local", "ws-old", "big", "cluster"
CLUSTER_WALLTIME_H = 0.05
# The naive placement the demo shows recovering from: case -> node it is first pinned to.
PINNED = {"memory_hog": SMALL_NODE, "walltime_long": CLUSTER_NODE}
# Responses of the corrupted file that arrive corrupted: every try of the runner's first attempt
# (the runner's download_attempts default), so that attempt fails as `download` and the next one succeeds.
CORRUPT_RESPONSES = 6
DEMO_TIMEOUT_S = 1800
MARKER = ".ari-demo"


@dataclass
class SshEndpoint:
    """Where an SSH node of the demo listens and how to log in (a server of ``testbed.sshd``)."""

    host: str
    port: int
    user: str
    identity_file: Path
    known_hosts: Path


@dataclass
class DemoNodes:
    """The daemons behind the demo's nodes: one sshd per SSH node and the Slurm cluster."""

    ssh: dict[str, SshEndpoint]
    slurm_conf: Path
    slurm_partition: str
    stop: Callable[[], None] = field(default=lambda: None, repr=False)


def _toml_str(value: object) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def demo_config(directory: Path, archive_url: str, nodes: DemoNodes) -> str:
    """The demo campaign's ari.toml: a local node, two SSH nodes and a Slurm node, all on this machine.

    >>> nodes = DemoNodes({n: SshEndpoint("127.0.0.1", 2200 + i, "root", Path("/k"), Path("/kh"))
    ...                    for i, n in enumerate((SMALL_NODE, BIG_NODE))}, Path("/s/slurm.conf"), "debug")
    >>> from ari_console.config import parse_config
    >>> cfg = parse_config(demo_config(Path("/d"), "http://127.0.0.1:1", nodes), Path("/d/ari.toml"))
    >>> [(n.name, n.transport, n.batch, n.mem_gb) for n in cfg.nodes]
    [('local', 'local', 'none', 8.0), ('ws-old', 'ssh', 'none', 4.0), ('big', 'ssh', 'none', 12.0), ('cluster', 'local', 'slurm', 8.0)]
    """
    python = sys.executable
    site = casa_site_config()
    casa_env = {"CASASITECONFIG": str(site)} if site else {}

    def env_line(extra: dict[str, str]) -> str:
        items = {**casa_env, **extra}
        return "env = { " + ", ".join(f"{k} = {_toml_str(v)}" for k, v in items.items()) + " }\n" if items else ""

    def common(name: str, extra_env: dict[str, str] | None = None) -> str:
        return (f"python = {_toml_str(python)}\ncasa_path = {_toml_str(python)}\nrecipe = \"casa6\"\n"
                f"casa_versions = [\"6.7.0-31\"]\nscratch_dir = {_toml_str(directory / 'scratch' / name)}\n"
                + env_line(extra_env or {}))

    def ssh(name: str) -> str:
        e = nodes.ssh[name]
        return (f'transport = "ssh"\nhost = "{e.host}"\nport = {e.port}\nuser = {_toml_str(e.user)}\n'
                f"identity_file = {_toml_str(e.identity_file)}\nknown_hosts = {_toml_str(e.known_hosts)}\n")

    return (
        "# The demo campaign (written by `ari demo`): every node runs on this machine.\n"
        f'[campaign]\nname = "demo"\narchive_url = {_toml_str(archive_url)}\npoll_interval_s = 2\n'
        "max_attempts = 3\nretry_backoff_s = 5\n\n"
        f"# This machine, no batch system.\n[[node]]\nname = \"{LOCAL_NODE}\"\nslots = 1\nmem_gb = 8\n"
        f"{common(LOCAL_NODE)}\n"
        f"# An old workstation over SSH: little memory, slow.\n[[node]]\nname = \"{SMALL_NODE}\"\n{ssh(SMALL_NODE)}"
        f"slots = 1\nmem_gb = 4\nspeed = 0.6\n{common(SMALL_NODE)}\n"
        f"# A bigger machine over SSH.\n[[node]]\nname = \"{BIG_NODE}\"\n{ssh(BIG_NODE)}"
        f"slots = 2\nmem_gb = 12\nspeed = 1.0\n{common(BIG_NODE)}\n"
        f"# A Slurm cluster with a short walltime.\n[[node]]\nname = \"{CLUSTER_NODE}\"\nbatch = \"slurm\"\n"
        f"partition = {_toml_str(nodes.slurm_partition)}\nslots = 1\nmem_gb = 8\nspeed = 1.1\n"
        f"walltime_h = {CLUSTER_WALLTIME_H}\n{common(CLUSTER_NODE, {'SLURM_CONF': str(nodes.slurm_conf)})}"
    )


def start_demo_nodes(directory: Path, progress: Callable[[str], None]) -> DemoNodes:
    """Start two sshd servers and a single-node Slurm for the demo; ``.stop()`` stops them all.

    Needs root (slurmd) and the Debian packages openssh-server, slurm-wlm and munge
    (``make demo`` installs them); a missing part is a ``UserError`` naming it.
    """
    from .testbed.slurm import start_slurm, stop_slurm
    from .testbed.sshd import start_server

    if os.geteuid() != 0:
        raise UserError("ari demo: its Slurm node needs root (slurmd runs jobs as their users) — run it as root, "
                        "e.g. `sudo make demo`")
    started: list[Callable[[], None]] = []

    def stop() -> None:
        while started:
            started.pop()()

    try:
        base = directory / "daemons"
        base.mkdir(parents=True, exist_ok=True)
        ssh = {}
        for name in (SMALL_NODE, BIG_NODE):
            server = start_server(base)
            started.append(server.stop)
            ssh[name] = SshEndpoint(server.host, server.port, server.user, server.identity_file,
                                    server.known_hosts)
            progress(f"demo: node {name}: sshd on {server.host}:{server.port}")
        # munged wants every directory above its socket world-searchable: a fresh dir under /tmp.
        slurm_dir = Path(tempfile.mkdtemp(prefix="ari-demo-slurm-"))
        slurm_dir.chmod(0o755)
        started.append(lambda: shutil.rmtree(slurm_dir, ignore_errors=True))
        slurm = start_slurm(slurm_dir)
        started.append(lambda: stop_slurm(slurm))
        progress(f"demo: node {CLUSTER_NODE}: Slurm (slurmctld + slurmd) with SLURM_CONF={slurm.conf}")
    except BaseException:
        stop()
        raise
    return DemoNodes(ssh, slurm.conf, slurm.partition, stop)


def summary(db: store.Database) -> dict:
    """The DESIGN.md demo contract from the campaign's store."""
    rows = store.datasets(db)
    attempts = store.attempts(db)
    per_uid: dict[str, list[dict]] = {}
    failed: dict[str, int] = {}
    for a in attempts:
        per_uid.setdefault(a["uid"], []).append(a)
        if a["state"] in ("failed", "lost"):
            failed[a["category"] or "unknown"] = failed.get(a["category"] or "unknown", 0) + 1
    for d in rows:
        if d["state"] in ("excluded", "skipped") and d["array"] == "TP":
            failed["total_power"] = failed.get("total_power", 0) + 1
    succeeded = [d for d in rows if d["state"] == "succeeded"]
    verdicts = [r["verdict"] for r in store.qa2_results(db)]
    return {
        "datasets": len(rows),
        "succeeded": len(succeeded),
        "failed": dict(sorted(failed.items())),
        "retried_ok": sum(1 for d in succeeded if len(per_uid.get(d["uid"], [])) > 1),
        "qa2": {"consistent": verdicts.count("consistent"), "discrepant": verdicts.count("discrepant")},
        "review": sum(1 for d in rows if d["state"] == "review"),
        "held": {d["uid"]: d["reason"] for d in rows if d["state"] == "held"},
        "kinds": kinds_imaged(db, succeeded),
    }


KINDS = ("pipeline_intents", "two_sessions", "manual", "mosaic", "mtmfs")


def mous_kinds(manifest: dict) -> set[str]:
    """The calibration and imaging kinds a products manifest (casa6 recipe) shows.

    >>> sorted(mous_kinds({"calibration": {"kind": "pipeline", "eb": {
    ...     "a.ms": {"session": "session_1", "calapply": "a.ms.calapply.txt", "flags": "a.ms.flagversions.tgz"},
    ...     "b.ms": {"session": "session_2", "calapply": "b.ms.calapply.txt", "flags": "b.ms.flagversions.tgz"}}},
    ...     "imaging": {"M83": {"gridder": "mosaic", "cont_deconvolver": "hogbom"}}}))
    ['mosaic', 'pipeline_intents', 'two_sessions']
    >>> sorted(mous_kinds({"calibration": {"kind": "manual"}, "imaging": {"x": {"cont_deconvolver": "mtmfs"}}}))
    ['manual', 'mtmfs']
    """
    found = set()
    calibration = manifest.get("calibration") or {}
    ebs = (calibration.get("eb") or {}).values()
    if calibration.get("kind") == "pipeline" and ebs and all(e.get("calapply") and e.get("flags") for e in ebs):
        found.add("pipeline_intents")
    if len({e.get("session") for e in ebs if e.get("session")}) >= 2:
        found.add("two_sessions")
    if calibration.get("kind") == "manual":
        found.add("manual")
    for choice in (manifest.get("imaging") or {}).values():
        if choice.get("gridder") == "mosaic":
            found.add("mosaic")
        if choice.get("cont_deconvolver") == "mtmfs":
            found.add("mtmfs")
    return found


def kinds_imaged(db: store.Database, succeeded: list[dict]) -> dict[str, int]:
    """Per kind, the MOUS of that kind imaged and found QA2-consistent (the accepted attempt's manifest)."""
    counts = {kind: 0 for kind in KINDS}
    for d in succeeded:
        verdicts = {r["verdict"] for r in store.qa2_results(db, d["uid"])}
        if verdicts != {"consistent"} or not d.get("accepted_attempt"):
            continue
        paths = [Path(p["path"]) for p in store.products(db, d["accepted_attempt"])]
        manifests = [p.parent / "manifest.json" for p in paths[:1]]
        for path in manifests:
            try:
                manifest = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for kind in mous_kinds(manifest):
                counts[kind] += 1
    return counts


def kill_leftovers(directory: Path) -> list[int]:
    """Kill what an earlier demo in ``directory`` left running (its runners and recipes); their pids.

    A demo killed outright (SIGKILL, its terminal closed) cannot cancel its
    attempts; their processes name their spec under ``directory``.
    """
    from .testbed.sshd import kill_pids, processes_with

    pids = processes_with(str(directory).encode() + b"/", "cmdline")
    kill_pids(pids)
    return pids


def fresh_directory(directory: Path) -> None:
    """Make ``directory`` an empty demo campaign dir; an earlier demo's is cleared, anything else refused."""
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise UserError(f"{directory}: exists and is not a demo campaign — give another one with --dir")
        kill_leftovers(directory)
        for child in directory.iterdir():  # the marker last, so a clearing cut short can be redone
            if child.name != MARKER:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("written by `ari demo`; the next `ari demo` clears this directory\n")


def corrupted_file_faults(manifest: dict) -> dict:
    """Faults for the demo's service: the corrupt-download case's raw data corrupted ``CORRUPT_RESPONSES`` times."""
    from .archive_service import Fault

    faults = {}
    for entry in (manifest.get("mous") or {}).values():
        for f in entry.get("files", []):
            if f.get("corrupt_once"):
                faults[f["path"]] = Fault(corrupt_once=True, corrupt_times=CORRUPT_RESPONSES)
    return faults


def cancel_running(cfg: Config, progress: Callable[[str], None]) -> int:
    """Cancel every attempt of the campaign still pending or running; how many were."""
    from ..nodes import connect, ops

    db = store.open_db(cfg.campaign.db_path)
    cancelled = 0
    try:
        for a in store.active_attempts(db):
            node = next((n for n in cfg.nodes if n.name == a["node"]), None)
            if node is None or not a["handle"]:
                continue
            transport = connect(node)
            try:
                ops.cancel(node, transport, a["handle"])
                cancelled += 1
            except Exception as exc:  # noqa: BLE001 (a node already gone: nothing left to stop there)
                progress(f"demo: could not cancel attempt {a['id']} on {node.name}: {exc}")
            finally:
                transport.close()
    finally:
        db.close()
    if cancelled:
        progress(f"demo: cancelled {cancelled} attempt(s) still running")
    return cancelled


@contextmanager
def demo_campaign(directory: Path, progress: Callable[[str], None]) -> Iterator[Config]:
    """Archive served, nodes started, ari.toml written, project codes imported: the campaign's config.

    On the way out, attempts still running are cancelled and every daemon stopped.
    """
    from . import archive_build as build, archive_service as service

    fresh_directory(directory)
    progress("demo: building or reusing the CASA-simulated demo archive ...")
    root = build.build_archive(progress=lambda done, total, msg: progress(f"demo archive [{done}/{total}] {msg}"))
    manifest = build.load_manifest(root)
    with ExitStack() as stack:
        running = service.start_service(root, faults=corrupted_file_faults(manifest))
        stack.callback(running.stop)
        progress(f"demo: archive served at {running.url}")
        nodes = start_demo_nodes(directory, progress)
        stack.callback(nodes.stop)
        (directory / CONFIG_NAME).write_text(demo_config(directory, running.url, nodes))
        cfg = load_config(directory / CONFIG_NAME)
        stack.callback(cancel_running, cfg, progress)
        db = store.open_db(cfg.campaign.db_path)
        try:
            rows, excluded = queue_candidates(tap_url_of(running.url), DEMO_PROJECTS)
            result = store.import_datasets(db, rows, source=running.url, now=store.now(), excluded=excluded)
            progress(f"demo: {len(result.added)} MOUS imported, {len(excluded)} excluded by the selection rules")
            for uid, entry in (manifest.get("mous") or {}).items():
                ds = store.dataset(db, uid)
                if entry.get("case") in PINNED and ds and ds["state"] == "queued" and not ds["overrides"]:
                    store.set_overrides(db, uid, store.now(), node=PINNED[entry["case"]])
        finally:
            db.close()
        yield cfg


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP (a closed terminal) end the demo like Ctrl-C: attempts cancelled, daemons stopped."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def run_demo(directory: Path, progress: Callable[[str], None], tui: bool = False,
             theme: str = "ari-dark") -> dict:
    """Run the whole demo campaign in ``directory`` (headless, or in the console); the summary."""
    from ..engine import Engine

    started = time.monotonic()
    stop_on_signals()
    with demo_campaign(directory, progress) as cfg:
        if tui:
            from ..tui.launch import open_console

            open_console(cfg.path, theme=theme, engine=True)
        else:
            deadline = time.monotonic() + DEMO_TIMEOUT_S
            with Engine(cfg, progress=progress) as engine:
                engine.run(stop=lambda: time.monotonic() > deadline, until_idle=True)
        db = store.open_db(cfg.campaign.db_path)
        try:
            result = summary(db)
        finally:
            db.close()
    result["minutes"] = round((time.monotonic() - started) / 60, 1)
    return result

"""The demo campaign: the CASA-simulated demo archive, imaged on this machine.

``ari demo`` builds (or reuses) the demo archive, serves it on a loopback
port, writes a campaign ``ari.toml`` with three nodes on this machine — an "old
workstation" with little memory, a node with a short walltime, and a bigger
one — imports the demo project codes from the archive, and runs the engine
until nothing is left to do. The hard cases of the archive take their real
paths: the memory hog and the slow data set are first placed on the small and
the short-walltime node (as a naive placement would: the demo pins them there) and retried elsewhere
after their failure; total power is excluded at import; a missing calibration
table and a line filling its window are held for an operator; a corrupted and a
dropped download recover; the QA2 image with the wrong flux scale is flagged.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

from . import store
from .archive.client import queue_candidates, tap_url_of
from .config import CONFIG_NAME, load_config

DEMO_PROJECTS = ("2016.1.00123.S", "2017.1.00456.S", "2018.1.00789.S")
SMALL_NODE, SHORT_NODE, BIG_NODE = "ws-old", "short", "big"
SHORT_WALLTIME_H = 0.055
# The naive placement the demo shows recovering from: case -> node it is first pinned to.
PINNED = {"memory_hog": SMALL_NODE, "walltime_long": SHORT_NODE}
DEMO_TIMEOUT_S = 1800


def casa_site_config() -> Path | None:
    """The offline CASA site config of this install (``make`` writes it into the venv), if any."""
    env = os.environ.get("CASASITECONFIG")
    if env and Path(env).is_file():
        return Path(env)
    site = Path(sys.prefix) / "casasiteconfig.py"
    return site if site.is_file() else None


def demo_config(directory: Path, archive_url: str) -> str:
    """The demo campaign's ari.toml: three nodes on this machine."""
    python = sys.executable
    site = casa_site_config()
    env = f'env = {{ CASASITECONFIG = "{site}" }}\n' if site else ""
    common = (f'transport = "local"\nbatch = "none"\npython = "{python}"\ncasa_path = "{python}"\n'
              f'recipe = "casa6"\ncasa_versions = ["6.7.0-31"]\n{env}')
    return (f'# The demo campaign (written by `ari demo`).\n[campaign]\nname = "demo"\n'
            f'archive_url = "{archive_url}"\npoll_interval_s = 2\nmax_attempts = 3\nretry_backoff_s = 5\n\n'
            f'[[node]]\nname = "{SMALL_NODE}"\n{common}slots = 1\nmem_gb = 4\nspeed = 1.0\n'
            f'scratch_dir = "{directory / "scratch" / SMALL_NODE}"\n\n'
            f'[[node]]\nname = "{SHORT_NODE}"\n{common}slots = 1\nmem_gb = 8\nspeed = 1.0\n'
            f'walltime_h = {SHORT_WALLTIME_H}\nscratch_dir = "{directory / "scratch" / SHORT_NODE}"\n\n'
            f'[[node]]\nname = "{BIG_NODE}"\n{common}slots = 2\nmem_gb = 12\nspeed = 1.0\n'
            f'scratch_dir = "{directory / "scratch" / BIG_NODE}"\n')


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
        "held": {d["uid"]: d["reason"] for d in rows if d["state"] == "held"},
    }


def run_demo(directory: Path, progress: Callable[[str], None]) -> dict:
    """Run the whole demo campaign in ``directory``; the summary."""
    from .archive import build, service
    from .engine import Engine

    directory.mkdir(parents=True, exist_ok=True)
    progress("demo: building or reusing the CASA-simulated demo archive ...")
    root = build.build_archive(progress=lambda done, total, msg: progress(f"demo archive [{done}/{total}] {msg}"))
    running = service.start_service(root)
    try:
        progress(f"demo: archive served at {running.url}")
        (directory / CONFIG_NAME).write_text(demo_config(directory, running.url))
        cfg = load_config(directory / CONFIG_NAME)
        db = store.open_db(cfg.campaign.db_path)
        rows, excluded = queue_candidates(tap_url_of(running.url), DEMO_PROJECTS)
        result = store.import_datasets(db, rows, source=running.url, now=store.now(), excluded=excluded)
        progress(f"demo: {len(result.added)} MOUS imported, {len(excluded)} excluded by the selection rules")
        manifest = build.load_manifest(root)
        for uid, entry in (manifest.get("mous") or {}).items():
            ds = store.dataset(db, uid)
            if entry.get("case") in PINNED and ds and ds["state"] == "queued" and not ds["overrides"]:
                store.set_overrides(db, uid, store.now(), node=PINNED[entry["case"]])
        db.conn.close()
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        with Engine(cfg, progress=progress) as engine:
            engine.run(stop=lambda: time.monotonic() > deadline, until_idle=True)
            return summary(engine.db)
    finally:
        running.stop()

"""The demo campaign.

For now (until the demo archive exists) the demo is one real CASA imaging of a
simulated point source, run as a job on the local node: the console writes a
campaign config, queues the data set, starts ``remote/recipes/sim_point.py``
with the node's CASA Python and records the outcome in the store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from . import store
from .alma import DataSet
from .config import CONFIG_NAME, load_config, starter_config

REMOTE = Path(__file__).resolve().parent.parent / "remote"
DEMO_UID = "uid://A001/X0de0/X1"
DEMO_PROJECT = "2016.1.00001.S"
PEAK_TOLERANCE = 0.02  # a noiseless 1 Jy point source must image to within 2 %


def casa_env() -> dict:
    """The environment for a local CASA job: the offline site config when we have one."""
    env = dict(os.environ)
    site = Path(sys.prefix) / "casasiteconfig.py"
    if "CASASITECONFIG" not in env and site.is_file():
        env["CASASITECONFIG"] = str(site)
    return env


def run_demo(directory: Path, progress: Callable[[str], None]) -> dict:
    """Run the demo campaign in ``directory``; the summary of DESIGN.md's demo contract."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / CONFIG_NAME
    if not config_path.exists():
        config_path.write_text(starter_config(name="demo", python=sys.executable,
                                              scratch=str(directory / "scratch"), mem_gb=8))
    cfg = load_config(config_path)
    node = cfg.nodes[0]
    db = store.open_db(cfg.campaign.db_path)
    store.sync_nodes(db, cfg.nodes, store.now())
    store.import_datasets(db, [DataSet(uid=DEMO_UID, project=DEMO_PROJECT, array="12m", band=6)],
                          source="demo", now=store.now())
    work = Path(node.scratch_dir) / "uid___A001_X0de0_X1"
    progress(f"demo: imaging {DEMO_UID} on node {node.name} with CASA ...")
    store.set_dataset_state(db, DEMO_UID, "running", store.now())
    proc = subprocess.run([node.casa_path or node.python, str(REMOTE / "recipes" / "sim_point.py"), str(work)],
                          env=casa_env(), capture_output=True, text=True)
    (work / "job.log").parent.mkdir(parents=True, exist_ok=True)
    (work / "job.log").write_text(proc.stdout + proc.stderr)
    failed: dict[str, int] = {}
    result = {}
    if proc.returncode == 0:
        result = json.loads((work / "result.json").read_text())
        ok = abs(result["peak_jy"] - result["flux_jy_true"]) <= PEAK_TOLERANCE * result["flux_jy_true"]
    else:
        ok = False
    if ok:
        store.set_dataset_state(db, DEMO_UID, "succeeded", store.now())
        progress(f"demo: {DEMO_UID} imaged — peak {result['peak_jy']:.4f} Jy/beam "
                 f"(true {result['flux_jy_true']} Jy) in {result['seconds']} s; {result['fits']}")
    else:
        failed["imaging" if proc.returncode == 0 else "unknown"] = 1
        store.set_dataset_state(db, DEMO_UID, "failed", store.now(), reason=f"see {work / 'job.log'}")
        progress(f"demo: {DEMO_UID} failed — log in {work / 'job.log'}")
    return {"datasets": 1, "succeeded": int(ok), "failed": failed, "retried_ok": 0,
            "qa2": {"consistent": 0, "discrepant": 0}, "peak_jy": result.get("peak_jy"),
            "fits": result.get("fits")}

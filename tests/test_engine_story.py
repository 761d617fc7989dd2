"""Issue 10's campaign with every real part: an SSH workstation, a Slurm node, CASA, the archive.

The memory hog is first pinned to the 4 GB SSH workstation and the slow data set
to a node with a short walltime (as a naive placement would put them); the
runner kills them there (memory budget, walltime), and the retry policy sends
them where memory and walltime suffice, where they succeed. A total-power data
set is skipped before launch; QA2 verdicts are stored for the successes.
"""

import sys
import time

import pytest

from ari_console import store
from ari_console.archive.client import SelectionRules, queue_candidates, tap_url_of
from ari_console.config import load_config
from ari_console.engine import Engine

HOG, SLOW, TP = "uid://A001/X133d/X3a1", "uid://A001/X133d/X3a3", "uid://A001/X12a3/X2e7"


@pytest.mark.casa
@pytest.mark.sshd
@pytest.mark.slurm
def test_memory_and_walltime_failures_are_retried_elsewhere_and_succeed(tmp_path, archive_service, casa, sshd, slurm):
    env = f'env = {{ CASASITECONFIG = "{casa.site_config}", SLURM_CONF = "{slurm.conf}" }}\n'
    common = f'python = "{sys.executable}"\ncasa_path = "{sys.executable}"\ncasa_versions = ["6.7.0-31"]\n{env}'
    (tmp_path / "ari.toml").write_text(
        f'[campaign]\nname = "story"\narchive_url = "{archive_service.url}"\npoll_interval_s = 1\n'
        f'retry_backoff_s = 1\n\n'
        f'[[node]]\nname = "ws-old"\ntransport = "ssh"\nhost = "{sshd.host}"\nport = {sshd.port}\n'
        f'user = "{sshd.user}"\nidentity_file = "{sshd.identity_file}"\nknown_hosts = "{sshd.known_hosts}"\n'
        f'slots = 1\nmem_gb = 4\nscratch_dir = "{tmp_path / "ws"}"\n{common}\n'
        f'[[node]]\nname = "short"\nslots = 1\nmem_gb = 12\nwalltime_h = 0.012\n'
        f'scratch_dir = "{tmp_path / "short"}"\n{common}\n'
        f'[[node]]\nname = "cluster"\nbatch = "slurm"\npartition = "{slurm.partition}"\nslots = 2\nmem_gb = 12\n'
        f'scratch_dir = "{tmp_path / "cluster"}"\n{common}')
    cfg = load_config(tmp_path / "ari.toml")
    db = store.open_db(cfg.campaign.db_path)
    rows, excluded = queue_candidates(tap_url_of(cfg.campaign.archive_url), [], [HOG, SLOW, TP],
                                      SelectionRules(exclude_total_power=False))
    store.import_datasets(db, rows, "archive", now=time.time(), excluded=excluded)
    # The naive placement the retries recover from: the hog on the 4 GB workstation, and the slow one,
    # believed short (an operator's estimate), on the node with a 43 s walltime; it sleeps 3 s per step.
    store.set_overrides(db, HOG, time.time(), node="ws-old")
    store.set_overrides(db, SLOW, time.time(), node="short", hours=0.005, params={"demo_slowdown_s": 3})
    with Engine(cfg) as engine:
        deadline = time.time() + 900
        while time.time() < deadline and not engine.tick().idle:
            time.sleep(1)
        attempts = {uid: [(a["node"], a["state"], a["category"]) for a in store.attempts(engine.db, uid=uid)]
                    for uid in (HOG, SLOW)}
        states = {d["uid"]: d["state"] for d in store.datasets(engine.db)}
        qa2 = {uid: [r["verdict"] for r in store.qa2_results(engine.db, uid)] for uid in (HOG, SLOW)}
    # Both are imaged and QA2-consistent, so both are delivered.
    assert states == {HOG: "succeeded", SLOW: "succeeded", TP: "skipped"}, attempts
    assert attempts[HOG] == [("ws-old", "failed", "memory"), ("cluster", "succeeded", None)]
    (first, second) = attempts[SLOW]
    assert first == ("short", "failed", "walltime") and second[0] != "short" and second[1:] == ("succeeded", None)
    assert all(qa2[uid] and set(qa2[uid]) == {"consistent"} for uid in (HOG, SLOW)), qa2

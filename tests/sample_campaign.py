"""A synthetic campaign for the console's tests, snapshots and benchmark.

Built only with the store's own write functions (the same ones the engine
calls), at fixed times, so every run gives the same database: data sets in
every state, attempts that succeeded, failed (with category, signature,
excerpt and decisive line) and run now, probed and stale nodes, QA2 pairs and
local log mirrors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ari_console import alma, store
from ari_console.config import Config, parse_config

NOW = 1_780_000_000.0  # a fixed "now" (2026-05-28 20:26:40 UTC)
DAY = 86400.0

CONFIG = """\
[campaign]
name = "sample"
work_dir = "."
poll_interval_s = 5

[[node]]
name = "here"
transport = "local"
slots = 2
mem_gb = 16
scratch_dir = "/tmp/ari-scratch"

[[node]]
name = "ws01"
transport = "ssh"
host = "ws01.example.org"
port = 2222
user = "ari"
slots = 1
mem_gb = 24
speed = 0.6

[[node]]
name = "hpc"
transport = "ssh"
batch = "slurm"
host = "login.hpc.example.org"
user = "ari"
slots = 40
mem_gb = 64
walltime_h = 48

[[node]]
name = "pbs1"
transport = "local"
batch = "pbs"
slots = 40
mem_gb = 32
"""

FAILURES = (
    ("uvcontfit", "SEVERE\tuvcontfit::::casa\tFit failed for spw <N>: singular matrix",
     "2026-05-20 10:00:01 SEVERE uvcontfit::::casa Fit failed for spw 3: singular matrix"),
    ("memory", "Killed: out of memory in tclean (peak <N> GB)",
     "runner: attempt killed: out of memory in tclean (peak 23.9 GB)"),
    ("walltime", "slurmstepd: *** JOB <N> CANCELLED DUE TO TIME LIMIT ***",
     "slurmstepd: error: *** JOB 4242 ON n01 CANCELLED AT 2026-05-20T10:00 DUE TO TIME LIMIT ***"),
    ("download", "HTTP Error 503: Service Unavailable for <URL>",
     "download: HTTP Error 503: Service Unavailable for https://almascience.eso.org/dataPortal/x.tar"),
    ("findcont", "SEVERE findcont: no continuum found in spw <N>",
     "2026-05-20 11:00:00 SEVERE findcont::::casa no continuum found in spw 1"),
)

LOG_LINES = [
    "2026-05-28 20:00:00 INFO runner: attempt started on {node}",
    "2026-05-28 20:00:01 INFO download: fetching 3 tarballs (12.3 GB)",
    "2026-05-28 20:05:00 INFO restore: calibration restored",
    "2026-05-28 20:06:00 WARN tclean::::casa Restoring beam is not uniform across channels",
    "2026-05-28 20:07:00 INFO tclean::::casa Major cycle 1",
    "2026-05-28 20:08:00 SEVERE tclean::::casa Error in reading the mask image",
    "2026-05-28 20:09:00 INFO tclean::::casa Major cycle 2",
]


@dataclass(frozen=True)
class SampleCampaign:
    """Where the sample lives and what is in it (ids to drive tests with)."""

    config: Config
    db_path: Path
    running_log: Path
    running_attempt: int
    failed_uid: str
    failed_attempt: int
    held_uid: str


def uid_of(i: int) -> str:
    """The i-th sample uid, canonical: ``uid://A001/X1f4/X0``."""
    return f"uid://A001/X{500 + i // 1000:x}/X{i % 1000:x}"


def sample_datasets(n: int) -> list[alma.DataSet]:
    """``n`` data sets over 7 projects, both arrays, bands 3-7, 1-200 GB."""
    return [alma.DataSet(uid_of(i), f"2016.1.{(i % 7) * 111:05d}.S", ("12m", "7m")[i % 5 == 0], 3 + i % 5,
                         round(1 + (i * 37 % 200) + (i % 10) / 10, 1)) for i in range(n)]


def build(directory: Path, n: int = 60, running: int = 4, now: float = NOW) -> SampleCampaign:
    """Write ``ari.toml``, ``ari.db`` and log mirrors of a sample campaign in ``directory``.

    Of ``n`` data sets: ``running`` run now, then in turns 45% succeed (every
    fifth after a failed first attempt), 12% failed, 3% held, the rest queued.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ari.toml").write_text(CONFIG)
    config = parse_config(CONFIG, (directory / "ari.toml").resolve())
    db_path = config.campaign.db_path
    if db_path.exists():
        db_path.unlink()
    db = store.open_db(db_path)
    t0 = now - 10 * DAY
    names = [nd.name for nd in config.nodes]
    with store.transaction(db, immediate=True):
        store.import_datasets(db, sample_datasets(n), "sample.csv", t0)
        store.sync_nodes(db, config.nodes, t0)
        failed_uid = held_uid = None
        failed_attempt = None
        for i, ds in enumerate(sample_datasets(n)):
            node = names[i % len(names)]
            t = t0 + (i + 1) * (9 * DAY / n)
            if i < running:
                continue
            kind = (i - running) % 20
            if kind < 9:   # succeeded (every fifth after a failed first attempt)
                if i % 5 == 0:
                    _fail(db, ds.uid, node, t - 3600, FAILURES[i % len(FAILURES)], stay="queued")
                aid = _attempt(db, ds.uid, node, t - 3 * 3600, t, "succeeded")
                store.accept_attempt(db, ds.uid, aid, t)
            elif kind < 11 or (kind == 11 and i % 2):  # failed
                aid = _fail(db, ds.uid, node, t, FAILURES[i % len(FAILURES)], stay="failed")
                if failed_uid is None:
                    failed_uid, failed_attempt = ds.uid, aid
            elif kind == 12:  # held after a failure
                _fail(db, ds.uid, node, t, FAILURES[(i + 1) % len(FAILURES)], stay="held")
                held_uid = held_uid or ds.uid
        running_ids = []
        for i in range(running):
            uid = uid_of(i)
            node = names[i % len(names)]
            aid = store.create_attempt(db, uid, node, now - (i + 1) * 1800)
            store.update_attempt(db, aid, now - (i + 1) * 1800, state="running", stage="image",
                                 started_at=now - (i + 1) * 1800, heartbeat_at=now - 20,
                                 work_dir=f"/tmp/ari-scratch/{aid}", handle=_handle(config, node, aid))
            running_ids.append(aid)
        for k, nd in enumerate(config.nodes):
            if nd.name == "ws01":
                store.set_node_probe(db, nd.name, now - 600, _probe(k, 0.9))
                store.set_node_probe(db, nd.name, now, error="ssh: connect to ws01.example.org port 2222: timed out")
            else:
                for j in range(8):
                    store.set_node_probe(db, nd.name, now - (8 - j) * 5, _probe(k + j, 0.3 + 0.08 * j))
        _qa2(db, n)
    logs = directory / "logs"
    running_log = _mirror(db, logs, running_ids[0], names[0], LOG_LINES) if running_ids else logs / "none"
    if failed_attempt is not None:
        lines = [f"2026-05-20 09:{m:02d}:00 INFO casa: step {m}" for m in range(40)]
        lines.insert(30, FAILURES[0][2])
        _mirror(db, logs, failed_attempt, "here", lines)
        store.update_attempt(db, failed_attempt, now, decisive_line=31)
    db.close()
    return SampleCampaign(config, db_path, running_log, running_ids[0] if running_ids else 0,
                          failed_uid or "", failed_attempt or 0, held_uid or "")


def _handle(config: Config, node: str, aid: int) -> dict:
    batch = next(nd.batch for nd in config.nodes if nd.name == node)
    work_dir = f"/tmp/ari-scratch/{aid}"
    if batch == "none":
        return {"batch": "none", "pid": 40000 + aid, "work_dir": work_dir, "node": node}
    return {"batch": batch, "job_id": str(4000 + aid), "work_dir": work_dir, "node": node}


def _attempt(db, uid: str, node: str, start: float, end: float, state: str, **extra) -> int:
    aid = store.create_attempt(db, uid, node, start)
    store.update_attempt(db, aid, start, state="running", stage="download", started_at=start,
                         heartbeat_at=start, work_dir=f"/tmp/ari-scratch/{aid}")
    store.update_attempt(db, aid, end, state=state, stage="export" if state == "succeeded" else "image",
                         ended_at=end, heartbeat_at=end, exit_code=0 if state == "succeeded" else 1,
                         peak_mem_gb=12.0, **extra)
    return aid


def _fail(db, uid: str, node: str, t: float, failure: tuple[str, str, str], stay: str) -> int:
    category, signature, line = failure
    aid = _attempt(db, uid, node, t - 2 * 3600, t, "failed", category=category, signature=signature,
                   excerpt=f"{line}\n(decisive line of the attempt's log)")
    store.set_dataset_state(db, uid, stay, t, reason=f"{category} failure")
    return aid


def _probe(k: int, load: float) -> dict:
    return {"load1": round(load * (2 + k % 3), 2), "load5": 0.5, "load15": 0.4, "cpus": 2 + k % 3,
            "mem_total_gb": 64.0, "mem_free_gb": round(64 * (1 - load / 2), 1),
            "scratch_total_gb": 1000.0, "scratch_free_gb": round(1000 * (1 - load / 3), 1)}


def _qa2(db, n: int) -> None:
    for i in range(0, min(n, 40), 8):
        ratios = [1.0 + 0.01 * (i % 3), 0.97 + 0.01 * (i % 4)]
        if i % 16 == 8:
            ratios[1] = 1.42
        store.save_qa2(db, uid_of(i + 4), None, [
            {"pl": f"pl_{i}_spw{s}.fits", "qa2": f"qa2_{i}_spw{s}.fits", "field": "NGC253", "spw": [s],
             "specmode": "cont" if s == 0 else "cube", "peak_ratio": r, "flux_ratio": r, "rms_ratio": 1.02,
             "beam_ratio": 1.0, "verdict": "consistent" if abs(r - 1) < 0.1 else "discrepant", "snr_min": 40.0,
             "reasons": "" if abs(r - 1) < 0.1 else  # as `ari qa2 compare` words them
             f"flux ratio {r:.3f} outside 1 ± 0.100; peak ratio {r:.3f} outside 1 ± 0.100"}
            for s, r in enumerate(ratios)])


def _mirror(db, logs: Path, aid: int, node: str, lines: list[str]) -> Path:
    path = logs / str(aid) / "runner.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(line.format(node=node) for line in lines) + "\n"
    path.write_text(text)
    store.set_log_offset(db, aid, f"/tmp/ari-scratch/{aid}/runner.log", len(text.encode()), str(path))
    return path

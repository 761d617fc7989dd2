"""PBS: qsub with walltime and memory, qstat -f states mapped, qdel — through a recorded stand-in.

PBS cannot run on this machine, so ``qsub``/``qstat``/``qdel`` are the stand-in
in tests/data/fake_pbs (its docstring says so) replaying real ``qstat -f`` output.
"""

import json
import os
import sys
from pathlib import Path

import pytest

from ari_console.config import parse_config
from ari_console.nodes import connect, ops

FAKE = Path(__file__).parent / "data" / "fake_pbs" / "fakepbs.py"

QSTAT_RUNNING = """Job Id: {job}
    Job_Name = ari-t
    Job_Owner = ari@login01
    resources_used.cput = 00:10:02
    resources_used.mem = 2345678kb
    resources_used.walltime = 00:12:31
    job_state = R
    queue = workq
    exec_host = cn012/0
    Resource_List.walltime = 02:00:00
"""

QSTAT_FINISHED = """Job Id: {job}
    Job_Name = ari-t
    job_state = F
    queue = workq
    Exit_status = {exit}
    resources_used.walltime = 02:00:14
    Resource_List.walltime = 02:00:00
"""


@pytest.fixture
def pbs_node(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("qsub", "qstat", "qdel"):
        (bin_dir / name).symlink_to(FAKE)
    state = tmp_path / "pbs"
    state.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PBS_DIR", str(state))
    text = (f'[[node]]\nname = "pbs1"\nbatch = "pbs"\npartition = "workq"\naccount = "ari"\n'
            f'mem_gb = 16\nwalltime_h = 2\ncpus_per_slot = 4\nscratch_dir = "{tmp_path / "scratch"}"\n'
            f'python = "{sys.executable}"\n')
    node = parse_config(text, tmp_path / "ari.toml").nodes[0]
    return node, state


def test_qsub_asks_for_walltime_memory_cpus_queue_and_account(pbs_node):
    node, state = pbs_node
    t = connect(node)
    handle = ops.launch(node, t, "t", "a-000001", {"uid": "uid://A001/X1/X2"})
    assert handle["job_id"] == "1001.pbs01" and handle["batch"] == "pbs"
    argv = json.loads((state / "qsub.log").read_text())
    joined = " ".join(argv)
    assert "-l walltime=02:00:00" in joined and "select=1:ncpus=4:mem=15259mb" in joined
    assert "-q workq" in joined and "-A ari" in joined and "-N ari-t" in joined
    script = Path(argv[-1]).read_text()
    assert "runner.py" in script and handle["work_dir"] in script


@pytest.mark.parametrize("exit_status, batch_out, expected", [
    ("0", "", ("succeeded", None)),
    ("-29", "", ("failed", "walltime")),
    ("271", "=>> PBS: job killed: walltime 7215 exceeded limit 7200\n", ("failed", "walltime")),
    ("271", "=>> PBS: job killed: mem 17gb exceeded limit 16gb\n", ("failed", "memory")),
])
def test_qstat_states_map_to_attempt_states(pbs_node, exit_status, batch_out, expected):
    node, state = pbs_node
    t = connect(node)
    handle = ops.launch(node, t, "t", "a-000002", {"uid": "uid://A001/X1/X2"})
    job = handle["job_id"]
    (state / f"qstat-{job}.txt").write_text(QSTAT_RUNNING.format(job=job))
    assert ops.poll(node, t, "t", [handle])[handle["work_dir"]].state == "running"
    (state / f"qstat-{job}.txt").write_text(QSTAT_FINISHED.format(job=job, exit=exit_status))
    if batch_out:
        Path(handle["work_dir"], "batch.out").write_text(batch_out)
    if expected[0] == "succeeded":
        Path(handle["work_dir"], "status.json").write_text(json.dumps({"state": "succeeded", "exit_code": 0}))
    final = ops.poll(node, t, "t", [handle])[handle["work_dir"]]
    assert (final.state, final.category) == expected


def test_qdel_cancels_by_job_id(pbs_node):
    node, state = pbs_node
    t = connect(node)
    handle = ops.launch(node, t, "t", "a-000003", {"uid": "uid://A001/X1/X2"})
    ops.cancel(node, t, handle)
    assert (state / "qdel.log").read_text().strip() == handle["job_id"]


def test_a_failure_without_a_cause_takes_the_batch_systems_words():
    from ari_console.nodes.batch import reconcile_batch

    out = "slurmstepd: error: *** JOB 7 ON vm CANCELLED AT 2026-11-25T10:00:00 DUE TO TIME LIMIT ***\n"
    final = reconcile_batch({"state": "failed", "stage": "image", "category": None}, None, "slurm", output_tail=out)
    assert (final.state, final.category, final.stage) == ("failed", "walltime", "image")
    gone = reconcile_batch(None, None, "slurm", output_tail="slurmstepd: error: Exceeded job memory limit\n")
    assert (gone.state, gone.category) == ("failed", "memory")


class CountingTransport:
    """A transport that records every command it runs on the node (files read are not commands)."""

    def __init__(self, inner):
        self.inner = inner
        self.commands: list = []

    def run(self, argv, **kw):
        self.commands.append(list(argv))
        return self.inner.run(argv, **kw)

    def run_script(self, script, **kw):
        self.commands.append(script)
        return self.inner.run_script(script, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_polling_running_pbs_jobs_costs_one_qstat_and_reads_their_state_from_the_pbs_table(pbs_node):
    node, state = pbs_node
    t = connect(node)
    handles = [ops.launch(node, t, "t", f"a-00001{i}", {"uid": "uid://A001/X1/X2"}) for i in range(3)]
    letters = ["R", "Q", "E"]  # running, queued, exiting
    for h, letter in zip(handles, letters):
        (state / f"qstat-{h['job_id']}.txt").write_text(QSTAT_RUNNING.format(job=h["job_id"]).replace(
            "job_state = R", f"job_state = {letter}"))
    counting = CountingTransport(t)
    states = ops.poll(node, counting, "t", handles)
    assert [states[h["work_dir"]].state for h in handles] == ["running", "pending", "running"]
    assert [states[h["work_dir"]].batch_state for h in handles] == letters
    assert counting.commands == [["qstat", "-fx", *sorted(h["job_id"] for h in handles)]]


def test_a_job_purged_from_pbs_history_is_lost_while_the_others_are_still_read(pbs_node):
    node, state = pbs_node
    t = connect(node)
    kept, purged = (ops.launch(node, t, "t", f"a-00002{i}", {"uid": "uid://A001/X1/X2"}) for i in range(2))
    (state / f"qstat-{kept['job_id']}.txt").write_text(QSTAT_RUNNING.format(job=kept["job_id"]))
    states = ops.poll(node, t, "t", [kept, purged])
    assert states[kept["work_dir"]].state == "running"
    assert (states[purged["work_dir"]].state, states[purged["work_dir"]].category) == ("lost", "node_lost")


def test_the_stand_in_refuses_what_qsub_refuses(pbs_node, tmp_path):
    node, state = pbs_node
    t = connect(node)
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    assert t.run(["qsub", "-l", "walltime=2h", str(script)]).ok is False
    assert t.run(["qsub", "-N", "a-name-longer-than-15", str(script)]).ok is False
    assert t.run(["qsub", "-V", str(script)]).ok is False
    assert t.run(["qsub", "-l", "walltime=02:00:00", str(script)]).ok is True
    finished = QSTAT_FINISHED.format(job="1.pbs01", exit="0")
    (state / "qstat-1.pbs01.txt").write_text(finished)
    assert t.run(["qstat", "-f", "1.pbs01"]).rc == 35  # history needs -x
    assert t.run(["qstat", "-fx", "1.pbs01"]).ok

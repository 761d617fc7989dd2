"""The batch-system registry: one class per batch system, the names the config accepts, their state tables."""

import pytest

from ari_console import config
from ari_console.nodes.batch import BATCH_SYSTEMS, JobRequest, batch_system
from ari_console.nodes.batch import slurm as slurm_mod

ATTEMPT_STATES = {"pending", "running", "succeeded", "failed", "cancelled", "lost"}


def test_the_config_accepts_exactly_the_registered_batch_systems():
    assert tuple(BATCH_SYSTEMS) == config.BATCH_SYSTEMS


@pytest.mark.parametrize("name", list(BATCH_SYSTEMS))
def test_every_state_table_maps_to_attempt_states(name):
    for batch_state, (state, _category) in batch_system(name).TRANSLATE.items():
        assert state in ATTEMPT_STATES, (name, batch_state)


def test_an_unknown_batch_system_names_the_known_ones():
    with pytest.raises(ValueError, match="none, slurm, pbs"):
        batch_system("lsf")


def test_the_slurm_job_script_carries_the_request_as_sbatch_lines():
    req = JobRequest(attempt="a-000007", campaign="Cycle 4", work_dir="/scratch/a-000007",
                     spec_path="/scratch/a-000007/spec.json", python="/usr/bin/python3",
                     runner="/scratch/.ari/remote/runner.py", mem_gb=16, walltime_h=48, cpus=4, partition="long")
    script = slurm_mod.job_script(req)
    for line in ("#SBATCH --job-name=ari-Cycle4", "#SBATCH --comment=a-000007", "#SBATCH --time=48:00:00",
                 "#SBATCH --mem=15259M", "#SBATCH --cpus-per-task=4", "#SBATCH --partition=long",
                 "#SBATCH --output=/scratch/a-000007/batch-%j.out"):
        assert line in script.splitlines()
    assert script.splitlines()[-1] == "exec /usr/bin/python3 /scratch/.ari/remote/runner.py /scratch/a-000007/spec.json"


@pytest.mark.slurm
def test_a_forced_slurm_cancel_kills_a_job_that_ignores_term_and_a_plain_one_only_asks(slurm, tmp_path):
    import os
    import time

    from ari_console.nodes.transport import LocalTransport
    from tests.test_slurm_fixture import wait_for_state

    # a hung runner: TERM ignored (by the script and, inherited, by its children)
    job = slurm.sbatch("#!/bin/sh\ntrap '' TERM\necho $$ > pid\nwhile true; do sleep 1; done\n", "--output=out.txt",
                       cwd=tmp_path)
    wait_for_state(slurm, job, "RUNNING")
    deadline = time.monotonic() + 30  # RUNNING comes before the shell has set its trap: wait for its pid file
    while not (tmp_path / "pid").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    batch, transport = batch_system("slurm"), LocalTransport()
    batch.cancel(transport, {"job_id": job})
    time.sleep(3)
    assert slurm.job_fields(job)["JobState"] == "RUNNING"  # asked with TERM: it may finish its stage
    pid = int((tmp_path / "pid").read_text())
    batch.cancel(transport, {"job_id": job}, force=True)
    result = slurm.wait(job, timeout=60)
    assert result.state in ("CANCELLED", "FAILED"), result
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the job's script (pid {pid}) survived a forced cancel")

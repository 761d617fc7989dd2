"""The Slurm fixture is a real single-node Slurm: jobs run, limits bite, and it is reachable over SSH."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.slurm import Slurm
from tests.fixtures.sshd import SshServer

pytestmark = pytest.mark.slurm


def wait_for_state(slurm: Slurm, job_id: str, state: str, timeout: float = 60) -> None:
    """Wait until ``scontrol`` reports ``state`` for the job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = slurm.job_fields(job_id) or {}
        if fields.get("JobState") == state:
            return
        time.sleep(0.2)
    pytest.fail(f"job {job_id} never reached {state}: {fields}")


def test_a_batch_job_completes_with_its_output_and_a_completion_record(slurm: Slurm, tmp_path: Path) -> None:
    job = slurm.sbatch("#!/bin/sh\necho job $SLURM_JOB_ID on $SLURM_JOB_PARTITION\n", "--output=out-%j.txt",
                       cwd=tmp_path)
    result = slurm.wait(job)
    assert (result.state, result.exit_code) == ("COMPLETED", "0:0")
    assert result.output == f"job {job} on {slurm.partition}\n"
    assert result.output_path == tmp_path / f"out-{job}.txt"
    assert slurm.completion_record(job)["JobState"] == "COMPLETED"


def test_a_failing_script_ends_failed_with_its_exit_code(slurm: Slurm, tmp_path: Path) -> None:
    job = slurm.sbatch("#!/bin/sh\necho about to fail\nexit 7\n", "--output=out.txt", cwd=tmp_path)
    result = slurm.wait(job)
    assert (result.state, result.exit_code, result.output) == ("FAILED", "7:0", "about to fail\n")


def test_scancel_stops_a_running_job(slurm: Slurm, tmp_path: Path) -> None:
    job = slurm.sbatch("#!/bin/sh\necho started\nsleep 300\n", "--output=out.txt", cwd=tmp_path)
    wait_for_state(slurm, job, "RUNNING")
    assert slurm.run("squeue", "--noheader", "--format=%i %T", f"--jobs={job}").stdout.split() == [job, "RUNNING"]
    slurm.run("scancel", job)
    result = slurm.wait(job, timeout=30)
    assert result.state == "CANCELLED", result
    assert "CANCELLED AT" in result.output, result


def test_a_job_over_its_memory_request_is_killed(slurm: Slurm, tmp_path: Path) -> None:
    hog = "import time; b = bytearray(300 * 2**20); time.sleep(30)"
    script = f"#!/bin/sh\n{sys.executable} -c '{hog}'\necho survived\n"
    job = slurm.sbatch(script, "--mem=100M", "--output=out.txt", cwd=tmp_path)
    result = slurm.wait(job, timeout=60)
    assert result.state == "FAILED", result
    assert "Exceeded job memory limit" in result.output, result
    assert "survived" not in result.output, result


def test_a_job_past_its_one_minute_limit_is_killed_due_to_time_limit(slurm: Slurm, tmp_path: Path) -> None:
    job = slurm.sbatch("#!/bin/sh\necho started\nsleep 300\necho finished\n", "--time=1", "--output=out.txt",
                       cwd=tmp_path)
    result = slurm.wait(job, timeout=150)
    assert result.state == "TIMEOUT", result
    assert f"*** JOB {job} ON {slurm.node} CANCELLED AT" in result.output, result
    assert "DUE TO TIME LIMIT ***" in result.output, result
    assert "finished" not in result.output, result


def test_sbatch_over_ssh_reaches_the_test_slurm(slurm: Slurm, sshd_factory: Callable[..., SshServer],
                                               tmp_path: Path) -> None:
    node = sshd_factory(env={"SLURM_CONF": str(slurm.conf)})
    (tmp_path / "job.sh").write_text("#!/bin/sh\necho submitted over ssh as $SLURM_JOB_ID\n")
    with node.client() as client:
        _, stdout, stderr = client.exec_command(f"cd {tmp_path} && sbatch --parsable --output=out.txt job.sh",
                                                timeout=30)
        job = stdout.read().decode().strip()
        assert stdout.channel.recv_exit_status() == 0, stderr.read().decode()
    result = slurm.wait(job)
    assert (result.state, result.output) == ("COMPLETED", f"submitted over ssh as {job}\n")

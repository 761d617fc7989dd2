"""A real single-node Slurm on this machine, private to whoever starts it (``ari demo``, the tests).

munged, slurmctld and slurmd run from the Debian packages with everything of
theirs in one temp dir: munge key, socket and log; ``slurm.conf`` on free
ports; state, spool, pid and log files; the job completion log. Nothing of a
system-wide Slurm or munge is used or touched. With ``SLURM_CONF`` pointing
at its config, ``sbatch``/``squeue``/``scancel``/``sinfo`` (run from
tests, or over the sshd fixture with ``SLURM_CONF`` in the session) reach it.

What this Slurm does and does not do (Slurm 22.05, Debian 12):
- no accounting database: ``sacct`` answers "Slurm accounting storage is
  disabled"; final job states come from ``scontrol show job`` while the job
  is younger than ``MinJobAge`` and from the job completion log
  (``jobcomp/filetxt``) after that — ``Slurm.wait`` reads both;
- time limits are checked every 30 s by slurmctld, so a 1-minute job is
  killed 60-90 s after it starts; ``KillWait`` is short;
- memory: ``--mem`` is enforced by polling (``jobacct_gather/linux`` with
  ``OverMemoryKill``, every second), not by cgroups; a job without ``--mem``
  gets ``DefMemPerCPU``.
A missing package raises ``TestbedError`` naming it; slurmd needs root.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TestbedError
from .sshd import die_with_parent, free_port, kill_pids, processes_with_env, require_program

MUNGED = "/usr/sbin/munged"
SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"
PARTITION = "debug"
CLUSTER = "aritest"
MIN_JOB_AGE_S = 30
KILL_WAIT_S = 2
START_TIMEOUT_S = 60.0
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL",
                          "PREEMPTED", "BOOT_FAIL", "DEADLINE"})


@dataclass
class JobResult:
    """How a batch job ended: its final state, ``ExitCode`` (``"0:0"``) and output file text."""

    job_id: str
    state: str
    exit_code: str
    output: str
    output_path: Path | None


@dataclass
class Slurm:
    """The running single-node Slurm: its config, the environment that reaches it, its one partition."""

    directory: Path
    conf: Path
    node: str
    partition: str
    cpus: int
    memory_mb: int
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    started_s: float = 0.0

    @property
    def jobcomp_log(self) -> Path:
        return self.directory / "jobcomp.log"

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm client command (``sbatch``, ``squeue``, ...) against this Slurm."""
        proc = subprocess.run(list(args), env=self.env, text=True, capture_output=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise TestbedError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def sbatch(self, script: str, *options: str, cwd: Path) -> str:
        """Submit ``script`` (its text, with ``#!``) from ``cwd``; the job id.

        Example: ``slurm.sbatch("#!/bin/sh\\necho hi\\n", "--time=1", cwd=tmp_path)`` -> ``"7"``.
        """
        cwd.mkdir(parents=True, exist_ok=True)
        path = cwd / f"job-{time.monotonic_ns()}.sh"
        path.write_text(script)
        proc = subprocess.run(["sbatch", "--parsable", "--chdir", str(cwd), *options, str(path)], env=self.env,
                              text=True, capture_output=True, timeout=30, cwd=cwd)
        if proc.returncode != 0:
            raise TestbedError(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def job_fields(self, job_id: str, patience: float = 30) -> dict[str, str] | None:
        """``scontrol show job`` as a dict, or None once slurmctld has forgotten the job.

        A busy slurmctld that does not answer is asked again for up to ``patience`` s.
        """
        deadline = time.monotonic() + patience
        while True:
            try:
                proc = self.run("scontrol", "show", "job", "-o", job_id, check=False, timeout=10)
            except subprocess.TimeoutExpired:
                problem = "no answer within 10 s"
            else:
                if proc.returncode == 0:
                    return parse_fields(proc.stdout)
                if "Invalid job id" in proc.stderr:
                    return None
                problem = proc.stderr.strip()
            if time.monotonic() > deadline:
                raise TestbedError(f"scontrol show job {job_id} failed for {patience:.0f} s: {problem}\n{self.log_tails()}")
            time.sleep(0.5)

    def completion_record(self, job_id: str) -> dict[str, str] | None:
        """The job's line of the job completion log, parsed, or None when it is not there."""
        if not self.jobcomp_log.exists():
            return None
        for line in self.jobcomp_log.read_text().splitlines():
            fields = parse_fields(line)
            if fields.get("JobId") == job_id:
                return fields
        return None

    def wait(self, job_id: str, timeout: float = 120) -> JobResult:
        """Wait until the job has ended and its processes are gone; its final state and output.

        Raises ``TestbedError``, showing the daemons' log tails, when it has not ended after ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        output_path: Path | None = None
        while time.monotonic() < deadline:
            fields = self.job_fields(job_id)
            if fields is not None and fields.get("StdOut"):
                output_path = Path(fields["StdOut"])
            if fields is None:
                fields = self.completion_record(job_id)
                if fields is None:
                    raise TestbedError(f"job {job_id} is unknown to slurmctld and not in {self.jobcomp_log}")
            state = fields.get("JobState", "")
            if state in FINAL_STATES:
                output = output_path.read_text() if output_path and output_path.exists() else ""
                return JobResult(job_id, state, fields.get("ExitCode", ""), output, output_path)
            time.sleep(0.5)
        raise TestbedError(f"job {job_id} did not end within {timeout:.0f} s: {fields}\n{self.log_tails()}")

    def log_tails(self, chars: int = 2000) -> str:
        """The last ``chars`` of each daemon log, for failure messages."""
        parts = []
        for name in ("munged", "slurmctld", "slurmd"):
            path = self.directory / f"{name}.log"
            text = path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"
            parts.append(f"--- {path}\n{text}")
        return "\n".join(parts)


def parse_fields(text: str) -> dict[str, str]:
    """``Key=value`` pairs separated by spaces (``scontrol -o``, jobcomp lines) as a dict.

    >>> parse_fields("JobId=7 JobState=TIMEOUT Reason=TimeLimit")["JobState"]
    'TIMEOUT'
    """
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", text))


def node_hardware(slurmd: str) -> dict[str, str]:
    """This machine as slurmd sees it (``slurmd -C``): NodeName, CPUs, sockets, cores, RealMemory."""
    proc = subprocess.run([slurmd, "-C"], text=True, capture_output=True, timeout=30)
    if proc.returncode != 0:
        raise TestbedError(f"slurmd -C failed: {proc.stderr.strip()}")
    return parse_fields(proc.stdout.splitlines()[0])


def available_memory_mb() -> int:
    """MemAvailable from /proc/meminfo, in MB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no MemAvailable in /proc/meminfo")


def slurm_conf_text(directory: Path, hardware: dict[str, str], memory_mb: int, ports: tuple[int, int]) -> str:
    """The ``slurm.conf`` of the private cluster: one node ``hardware["NodeName"]``, one partition."""
    node, cpus = hardware["NodeName"], int(hardware["CPUs"])
    shape = " ".join(f"{k}={hardware[k]}" for k in ("Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
                     if k in hardware)
    d = directory
    return f"""\
ClusterName={CLUSTER}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
# Bind to the addresses above (loopback), not every interface: the testbed is private to this machine.
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d / 'munge' / 'munge.socket'}
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'slurmctld.log'}
SlurmdLogFile={d / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={d / 'plugstack.conf'}
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={min(4096, memory_mb // cpus)}
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={d / 'jobcomp.log'}
MinJobAge={MIN_JOB_AGE_S}
KillWait={KILL_WAIT_S}
OverTimeLimit=0
SchedulerParameters=batch_sched_delay=0
InactiveLimit=0
ReturnToService=2
SlurmdTimeout=60
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} {shape} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def start_munged(directory: Path, env: dict[str, str]) -> subprocess.Popen:
    """munged with its own key and socket under ``directory/munge``; waits until it answers."""
    require_program(MUNGED, "munge")
    munge_dir = directory / "munge"
    munge_dir.mkdir(mode=0o755)
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = munge_dir / "munge.socket"
    with (directory / "munged.log").open("ab") as log:
        proc = subprocess.Popen([MUNGED, "--foreground", f"--key-file={key}", f"--socket={sock}",
                                 f"--pid-file={munge_dir / 'munged.pid'}", f"--seed-file={munge_dir / 'munged.seed'}",
                                 f"--log-file={directory / 'munged.log'}"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, preexec_fn=die_with_parent)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        if sock.exists() and _munge_answers(sock):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise TestbedError(f"munged did not start (socket {sock}):\n{(directory / 'munged.log').read_text()[-2000:]}")


def _munge_answers(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as client:
        try:
            client.connect(str(sock))
            return True
        except OSError:
            return False


def start_daemon(program: str, directory: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    """``program -D args`` in the foreground, its stderr into ``directory/<name>.stderr``."""
    name = Path(program).name
    with (directory / f"{name}.stderr").open("ab") as err:
        return subprocess.Popen([program, "-D", *args], stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env,
                                preexec_fn=die_with_parent)


def wait_until_idle(slurm: Slurm, timeout: float) -> None:
    """Wait until ``sinfo`` shows the node idle; fail with the daemons' logs if it does not."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        for name, daemon in slurm.procs.items():
            if daemon.poll() is not None:
                raise TestbedError(f"{name} exited with code {daemon.returncode} while starting\n"
                            f"{_stderr(slurm)}{slurm.log_tails()}")
        sinfo = slurm.run("sinfo", "--noheader", "--Node", "--format=%N %t", check=False)
        seen = (sinfo.stdout + sinfo.stderr).strip()
        if sinfo.returncode == 0 and seen == f"{slurm.node} idle":
            return
        time.sleep(0.2)
    raise TestbedError(f"Slurm node {slurm.node} not idle after {timeout:.0f} s; sinfo says {seen!r}\n{slurm.log_tails()}")


def _stderr(slurm: Slurm) -> str:
    return "".join(f"--- {p}\n{p.read_text()[-1500:]}\n" for p in sorted(slurm.directory.glob("*.stderr")))


def start_slurm(directory: Path) -> Slurm:
    """munged + slurmctld + slurmd on this machine, configured under ``directory``; returns once idle."""
    t0 = time.monotonic()
    for program, package in ((SLURMCTLD, "slurmctld"), (SLURMD, "slurmd"), ("sbatch", "slurm-client")):
        require_program(program, package)
    hardware = node_hardware(SLURMD)
    memory_mb = max(256, min(int(hardware.get("RealMemory", "0")), available_memory_mb()) * 9 // 10)
    conf = directory / "slurm.conf"
    for sub in ("state", "spool"):
        (directory / sub).mkdir()
    (directory / "plugstack.conf").write_text("")
    conf.write_text(slurm_conf_text(directory, hardware, memory_mb, (free_port(), free_port())))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    slurm = Slurm(directory=directory, conf=conf, node=hardware["NodeName"], partition=PARTITION,
                  cpus=int(hardware["CPUs"]), memory_mb=memory_mb, env=env)
    try:
        slurm.procs["munged"] = start_munged(directory, env)
        slurm.procs["slurmctld"] = start_daemon(SLURMCTLD, directory, env, "-c", "-i", "-f", str(conf))
        slurm.procs["slurmd"] = start_daemon(SLURMD, directory, env, "-f", str(conf))
        wait_until_idle(slurm, START_TIMEOUT_S)
    except BaseException:
        stop_slurm(slurm)
        raise
    slurm.started_s = time.monotonic() - t0
    return slurm


def stop_slurm(slurm: Slurm) -> None:
    """Cancel every job, stop the daemons, then kill anything left that carries this SLURM_CONF."""
    if slurm.procs.get("slurmctld") and slurm.procs["slurmctld"].poll() is None:
        jobs = slurm.run("squeue", "--noheader", "--format=%i", check=False).stdout.split()
        if jobs:
            slurm.run("scancel", *jobs, check=False)
            deadline = time.monotonic() + KILL_WAIT_S + 10
            while time.monotonic() < deadline and slurm.run("squeue", "--noheader", check=False).stdout.strip():
                time.sleep(0.2)
    for name in ("slurmd", "slurmctld", "munged"):
        proc = slurm.procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    kill_pids(processes_with_env(f"SLURM_CONF={slurm.conf}"))

"""Batch system ``none``: the runner as a detached process (setsid + nohup) on a workstation."""

from __future__ import annotations

import re
import time
from typing import Iterable

from ..transport import Transport, command_line, sh_quote
from .base import BatchSystem, JobRequest, JobState, SpecRejected, read_status, status_from_json

SUBMIT_TEMPLATE = "cd {work_dir} && {runner_command}"


class NoBatch(BatchSystem):
    """No batch system: the console starts the runner itself and watches its pid."""

    name = "none"

    def submit(self, transport: Transport, req: JobRequest) -> dict:
        script = SUBMIT_TEMPLATE.format(work_dir=sh_quote(req.work_dir), runner_command=command_line(
            [req.python, req.runner, "--detach", req.spec_path]))
        result = transport.run_script(script, timeout=60)
        pid = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        if result.rc == 2 and "ari-runner:" in (result.stderr or ""):
            raise SpecRejected(result.stderr.strip().splitlines()[-1][:300])
        if not result.ok or not pid.isdigit():
            raise RuntimeError(f"{transport.name}: runner did not start: "
                               f"{(result.stderr or result.stdout).strip()[:300]}")
        return {"batch": self.name, "pid": int(pid)}

    def states(self, transport: Transport, campaign: str, handles: list[dict], since: float) -> dict[str, JobState]:
        alive = alive_runners(transport, [h["pid"] for h in handles])
        return {h["work_dir"]: reconcile_none(read_status(transport, h["work_dir"]), h["pid"] in alive)
                for h in handles}

    def cancel(self, transport: Transport, handle: dict, force: bool = False) -> None:
        """SIGTERM the runner; it stops its children, records the stage and exits.

        ``force``: for a runner that no longer answers (stopped or hung), SIGKILL its
        whole process group instead (it leads its own session, so the group is its pid).
        """
        pid = int(handle["pid"])
        script = (f"kill -KILL -- -{pid} 2>/dev/null; kill -KILL {pid} 2>/dev/null; true" if force
                  else f"kill -TERM {pid} 2>/dev/null; true")
        transport.run_script(script, timeout=30)

    def find(self, transport: Transport, campaign: str, attempt: str, work_dir: str) -> dict | None:
        # The runner writes its pid into status.json as it starts; give a just-started one a moment.
        spec = f"{work_dir}/spec.json"
        for _ in range(10):
            status = read_status(transport, work_dir)
            if status and status.get("pid"):
                return {"batch": self.name, "pid": int(status["pid"])}
            # "[r]unner.py" matches the runner's command line but not this shell's, which holds it verbatim.
            pattern = "[r]unner\\.py.*" + re.escape(spec)
            r = transport.run_script(f"pgrep -f -- {sh_quote(pattern)}; true", timeout=30)
            if not r.stdout.strip():
                break
            time.sleep(0.5)
        status = read_status(transport, work_dir)  # it may have written its pid meanwhile
        return {"batch": self.name, "pid": int(status["pid"])} if status and status.get("pid") else None

    def status_command(self, handle: dict, ended: bool) -> str | None:
        return None if ended or not handle.get("pid") else f"ps -o pid,etime,rss,args -p {handle['pid']}"


def alive_runners(transport: Transport, pids: Iterable[int]) -> set[int]:
    """Which of ``pids`` are runners still alive on the node (one command for all)."""
    pids = sorted(set(int(p) for p in pids))
    if not pids:
        return set()
    script = ("for p in " + " ".join(str(p) for p in pids) + "; do "
              "tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -q runner.py && echo $p; done; true")
    result = transport.run_script(script, timeout=30)
    return {int(x) for x in result.stdout.split() if x.isdigit()}


def reconcile_none(status: dict | None, alive: bool) -> JobState:
    """The state of a detached runner from its status file and whether its pid lives.

    >>> reconcile_none({"state": "running", "stage": "image"}, alive=False).state
    'lost'
    """
    if status and status.get("state") in ("succeeded", "failed", "cancelled"):
        return status_from_json(status)
    if alive:
        return status_from_json(status) if status else JobState(state="running", stage="starting")
    stage = status.get("stage") if status else None
    return JobState(state="lost", stage=stage, category="node_lost",
                    message="the runner is gone without a final status (killed, or the node rebooted)",
                    status=status)

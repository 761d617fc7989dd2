"""Load probes: one command per node gives load, CPUs, memory and scratch space."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .transport import Transport, sh_quote

MARK = "--ari-probe--"


@dataclass(frozen=True)
class Probe:
    """A node's load and free resources at one moment."""

    load1: float
    load5: float
    load15: float
    cpus: int
    mem_total_gb: float
    mem_free_gb: float
    scratch_total_gb: float | None
    scratch_free_gb: float | None

    def row(self) -> dict:
        return asdict(self)


def probe_script(scratch_dir: str) -> str:
    """The shell script whose output ``parse_probe`` reads (POSIX sh, coreutils)."""
    d = sh_quote(scratch_dir)
    return (f"cat /proc/loadavg; echo {MARK}; nproc; echo {MARK}; "
            f"grep -E '^(MemTotal|MemAvailable):' /proc/meminfo; echo {MARK}; "
            f"mkdir -p {d} 2>/dev/null; df -Pk {d} | tail -n 1")


def parse_probe(text: str) -> Probe:
    """A Probe from the output of ``probe_script``.

    >>> p = parse_probe("0.50 0.40 0.30 1/200 123\\n--ari-probe--\\n2\\n--ari-probe--\\n"
    ...     "MemTotal: 24000000 kB\\nMemAvailable: 20000000 kB\\n--ari-probe--\\n"
    ...     "/dev/vda 100000000 40000000 60000000 40% /\\n")
    >>> p.load1, p.cpus, round(p.mem_free_gb, 1), round(p.scratch_free_gb, 1)
    (0.5, 2, 20.5, 61.4)
    """
    parts = [p.strip() for p in text.split(MARK)]
    if len(parts) != 4:
        raise ValueError(f"unexpected probe output: {text[:200]!r}")
    load = [float(x) for x in parts[0].split()[:3]]
    cpus = int(parts[1].split()[0])
    mem = {}
    for line in parts[2].splitlines():
        key, value = line.split(":", 1)
        mem[key.strip()] = int(value.split()[0]) * 1024 / 1e9
    fields = parts[3].split()
    total = free = None
    if len(fields) >= 4 and fields[1].isdigit():
        total, free = int(fields[1]) * 1024 / 1e9, int(fields[3]) * 1024 / 1e9
    return Probe(load[0], load[1], load[2], cpus, mem.get("MemTotal", 0.0),
                 mem.get("MemAvailable", 0.0), total, free)


def probe(transport: Transport, scratch_dir: str, timeout: float = 15.0) -> Probe:
    """Probe a node through its transport (raises NodeUnreachable when it cannot)."""
    result = transport.run_script(probe_script(scratch_dir), timeout=timeout)
    if not result.ok:
        raise ValueError(f"{transport.name}: probe failed: {result.stderr.strip()[:200]}")
    return parse_probe(result.stdout)

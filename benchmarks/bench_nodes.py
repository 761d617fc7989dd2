"""Probe latency and log-tail throughput over SSH: one reused connection vs a new one per call.

Starts its own sshd on loopback (as the tests do), then:
- probe: ``probe()`` N times on one SSHTransport, and N times each on a fresh one;
- tail: reads a growing 64 MB log in 1 MB increments with ``ops.follow`` (only new bytes), and
  the same log whole with ``cat`` on the same connection (what ``ssh host cat`` moves), in
  alternating rounds: the tail must move at least half of that (its reads are pipelined: all
  in flight at once, of the size the server says it answers in full, in a 16 MiB window).
"""

import statistics
import tempfile
import time
from pathlib import Path

from ari_console.nodes import ops
from ari_console.nodes.probe import probe
from ari_console.nodes.transport import SSHTarget, SSHTransport

PROBES = 30
LOG_MB = 64
ROUNDS = 3


def _tail_rate(transport: SSHTransport, log: Path, chunk: bytes) -> float:
    """MB/s of ``ops.follow`` reading ``log`` while it grows by ``chunk`` before every call."""
    offset = 0
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        while offset < LOG_MB * 1e6:
            fh.write(chunk)
            fh.flush()
            start, data = ops.follow(transport, str(log), offset)
            offset = start + len(data)
    return offset / 1e6 / (time.perf_counter() - t0)


def _server(base: Path):
    from ari_console.demo.testbed.sshd import start_server

    return start_server(base)


def _transport(server) -> SSHTransport:
    return SSHTransport(SSHTarget(name="bench", host=server.host, port=server.port, user=server.user,
                                  identity_file=server.identity_file, known_hosts=server.known_hosts))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        server = _server(base)
        try:
            reused = _transport(server)
            probe(reused, tmp)  # connect once
            times = []
            for _ in range(PROBES):
                t0 = time.perf_counter()
                probe(reused, tmp)
                times.append(time.perf_counter() - t0)
            fresh_times = []
            for _ in range(PROBES // 3):
                t0 = time.perf_counter()
                t = _transport(server)
                probe(t, tmp)
                t.close()
                fresh_times.append(time.perf_counter() - t0)
            print(f"probe latency: reused connection median {statistics.median(times) * 1e3:.1f} ms, "
                  f"new connection per call median {statistics.median(fresh_times) * 1e3:.1f} ms")

            log = base / "runner.log"
            chunk = (b"2026-11-25 16:12:50\tINFO\ttclean::::casa\t" + b"x" * 80 + b"\n") * 8000
            tails, cats = [], []
            for _ in range(ROUNDS):  # alternating, so both see the same load on a shared machine
                tails.append(_tail_rate(reused, log, chunk))
                t0 = time.perf_counter()
                moved = len(reused.run(["cat", str(log)], timeout=300).stdout)
                cats.append(moved / 1e6 / (time.perf_counter() - t0))
            tail_mb_s, cat_mb_s = statistics.median(tails), statistics.median(cats)
            print(f"tail over ssh (reused connection, {LOG_MB} MB log growing 1 MB per call, only new bytes "
                  f"each call): median {tail_mb_s:.1f} MB/s of {ROUNDS} rounds "
                  f"({', '.join(f'{r:.0f}' for r in tails)}); SFTP reads of {reused._read_size // 1024} KiB")
            print(f"cat over ssh (same connection): median {cat_mb_s:.1f} MB/s -> tail moves "
                  f"{tail_mb_s / cat_mb_s:.0%} of it ({'OK' if tail_mb_s >= cat_mb_s / 2 else 'UNDER'} the target "
                  f"of 50 %)")
            offset = 0
            t0 = time.perf_counter()
            for _ in range(10):
                t = _transport(server)
                data = ops.tail(t, str(log), offset, limit=len(chunk))
                offset += len(data)
                t.close()
            per_call = (time.perf_counter() - t0) / 10
            print(f"tail with a new connection per call: {per_call * 1e3:.0f} ms per 1 MB call "
                  f"({len(chunk) / 1e6 / per_call:.1f} MB/s)")
            reused.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()

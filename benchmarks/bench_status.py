"""`ari status --json` on a campaign of 100,000 data sets with ~10 attempts each.

The campaign is the console benchmark's (``bench_tui``: the sample campaign at
100,000 data sets, 100 running, then nine older failed attempts per data set:
about a million attempts), so its answer grows with the attempt history unless
the status reads only aggregates the store keeps. Prints:

- in process: ``readmodel.status_report`` (what the command prints), median and worst of 10;
- as a subprocess: the installed ``ari status --json`` (interpreter start, imports, the
  read, the JSON), median and worst of 5; target < 200 ms;
- the parts of the in-process answer (totals and rates, nodes, running, attention).

Run: ``.venv/bin/python -m benchmarks.bench_status [--datasets 100000] [--keep DIR]``
(``--keep``: build the campaign in DIR once and reuse it on the next runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ari_console import readmodel, store
from ari_console.config import load_config

TARGET_MS = 200.0


def build(directory: Path, n: int, attempts_each: int) -> Path:
    """The campaign's ari.toml in ``directory``, built there unless a finished build is already in it."""
    from tests import sample_campaign as sample

    from .bench_tui import add_history

    config = directory / "ari.toml"
    done = directory / f".built-{n}-{attempts_each}"
    if done.exists():
        return config
    t0 = time.perf_counter()
    sample.build(directory, n=n, running=100)
    attempts = add_history(directory / "ari.db", attempts_each - 1)
    print(f"built {n:,} data sets, {attempts:,} attempts in {time.perf_counter() - t0:.0f} s", flush=True)
    done.touch()
    return config


def _ms(times: list[float]) -> str:
    return f"median {statistics.median(times) * 1e3:.0f} ms, worst {max(times) * 1e3:.0f} ms"


def measure(config: Path) -> dict:
    """Times of the status answer, in process and as the ``ari`` command, and of its parts."""
    readmodel.status_report(config)  # warm the page cache as a polling script would
    inproc = []
    for _ in range(10):
        t0 = time.perf_counter()
        readmodel.status_report(config)
        inproc.append(time.perf_counter() - t0)
    cfg = load_config(config)
    parts: dict[str, list[float]] = {"store.status (totals, rates, nodes, running)": [], "attention": []}
    with store.open_db(cfg.campaign.db_path) as db:
        for _ in range(5):
            t0 = time.perf_counter()
            store.status(db)
            parts["store.status (totals, rates, nodes, running)"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            readmodel.attention(db, store.now(), limit=readmodel.STATUS_LISTS)
            parts["attention"].append(time.perf_counter() - t0)
    ari = str(Path(sys.executable).parent / "ari")
    # as installed: with compiled bytecode (an environment that forbids writing it would time the compiler)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(config.parent / ".pycache")
    walls, answer = [], None
    for i in range(6):
        t0 = time.perf_counter()
        done = subprocess.run([ari, "status", "--json"], cwd=config.parent, check=True, capture_output=True, env=env)
        if i:  # the first run writes the bytecode
            walls.append(time.perf_counter() - t0)
        answer = json.loads(done.stdout)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
    python_s = time.perf_counter() - t0
    return {"inproc": inproc, "subprocess": walls, "parts": parts, "python_s": python_s, "answer": answer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=100_000)
    parser.add_argument("--attempts-each", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="build the campaign here once and reuse it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_status_") as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        config = build(directory, args.datasets, args.attempts_each)
        with store.open_db(directory / "ari.db") as db:
            attempts = db.conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
        r = measure(config)
        a = r["answer"]
        print(f"campaign: {a['datasets']:,} data sets, {attempts:,} attempts, {len(a['running'])} running, "
              f"{a['attention']['held_total']:,} held ({len(a['attention']['held'])} listed)")
        print(f"`ari status --json` in process (readmodel.status_report): {_ms(r['inproc'])}")
        for name, times in r["parts"].items():
            print(f"  {name}: {_ms(times)}")
        worst = max(r["subprocess"]) * 1e3
        print(f"`ari status --json` as a subprocess: {_ms(r['subprocess'])} "
              f"({'OK' if worst < TARGET_MS else 'OVER TARGET'}, target < {TARGET_MS:.0f} ms; "
              f"a bare `python -c pass` takes {r['python_s'] * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()

"""The console under a big campaign: 10,000 data sets, 100 running attempts.

Measures, with the real app driven by Textual's pilot (headless):
- the reader thread's time per refresh (store read + read model), off the UI thread;
- the UI thread's time per refresh on each screen (rendering a snapshot into widgets),
  target < 50 ms, and the first fill of the 10,000-row queue;
- resident memory over many refreshes with a clock that advances 2 s per refresh
  (``--refreshes 300`` = 10 minutes of refreshing): it must stay flat (Textual's
  DataTable render caches are bounded LRUs that fill first, then stay).

Run: ``.venv/bin/python -m benchmarks.bench_tui [--refreshes 300]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from pathlib import Path

from ari_console import store
from tests import sample_campaign as sample
from ari_console.tui.app import AriApp

TARGET_UI_MS = 50.0


async def _refresh(app: AriApp, pilot, writer=None) -> None:
    """Write like the engine does (heartbeats of running attempts), ask for one store read,
    and wait until the current screen rendered it."""
    if writer is not None:
        writer()
    version = app.snapshot.version if app.snapshot else 0
    app.request_refresh()
    for _ in range(2000):
        await pilot.pause(0.005)
        if app.snapshot and app.snapshot.version > version and app.screen.shown_version > version:
            return
    raise TimeoutError("no refresh within 10 s")


async def run(n: int, running: int, refreshes: int, per_screen: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_tui_"))
    t0 = time.perf_counter()
    camp = sample.build(tmp, n=n, running=running)
    build_s = time.perf_counter() - t0
    clock = {"now": sample.NOW}
    app = AriApp(camp.db_path, camp.config, clock=lambda: clock["now"], refresh_s=3600, eta_every_s=3600)
    db = store.open_db(camp.db_path)
    running_ids = [a["id"] for a in store.active_attempts(db)]

    def beat() -> None:
        """Heartbeats of 10 running attempts: the store changes before every refresh (the worst case)."""
        with store.transaction(db, immediate=True):
            for aid in running_ids[:10]:
                store.update_attempt(db, aid, clock["now"], heartbeat_at=clock["now"])

    out: dict = {"build_s": build_s}
    async with app.run_test(size=(160, 50)) as pilot:
        while app.snapshot is None:
            await pilot.pause(0.05)
        out["reader_first_ms"] = app.snapshot.load_ms
        screens = {}
        reader_ms = []
        for key, name in (("2", "queue"), ("1", "dashboard"), ("3", "nodes"), ("4", "log"), ("5", "triage"),
                          ("6", "qa2")):
            app.ui_ms.clear()
            await pilot.press(key)
            await pilot.pause(0.2)
            if name == "queue":  # the first fill goes in batches of 500 rows per frame
                while app.screen.query_one("#queue-table").row_count < n:
                    await pilot.pause(0.02)
                await pilot.pause(0.1)
            first = list(app.ui_ms)
            app.ui_ms.clear()
            for _ in range(per_screen):
                clock["now"] += 2
                await _refresh(app, pilot, beat)
                reader_ms.append(app.snapshot.load_ms)
            screens[name] = {"first_ms": max(first) if first else 0.0, "refresh_ms": list(app.ui_ms),
                             "first_n": len(first)}
        # the queue with a regex filter on
        await pilot.press("2", "slash", *"X1f", "enter")
        await pilot.pause(0.3)
        app.ui_ms.clear()
        for _ in range(per_screen):
            clock["now"] += 2
            await _refresh(app, pilot, beat)
        screens["queue /X1f"] = {"first_ms": 0.0, "refresh_ms": list(app.ui_ms)}
        await pilot.press("slash", "escape")
        # memory over many refreshes on the queue (RSS: tracemalloc would slow each refresh 5x)
        gc.collect()
        marks = []
        for i in range(refreshes):
            clock["now"] += 2
            await _refresh(app, pilot, beat)
            if i % max(1, refreshes // 6) == 0 or i == refreshes - 1:
                gc.collect()
                marks.append((i, _rss_mb()))
        cache = app.screen.query_one("#queue-table")._cell_render_cache
        out["cell_cache"] = (len(cache), cache.maxsize)
        out.update(screens=screens, reader_ms=reader_ms, memory=marks)
    db.close()
    return out


def _rss_mb() -> float:
    """This process's resident memory in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=10_000)
    parser.add_argument("--running", type=int, default=100)
    parser.add_argument("--refreshes", type=int, default=300, help="refreshes for the memory check (300 = 10 min)")
    parser.add_argument("--per-screen", type=int, default=10)
    args = parser.parse_args()
    r = asyncio.run(run(args.datasets, args.running, args.refreshes, args.per_screen))
    print(f"campaign: {args.datasets:,} data sets, {args.running} running (built in {r['build_s']:.1f} s)")
    print(f"reader thread per refresh (store read when it changed + read model): median "
          f"{statistics.median(r['reader_ms']):.0f} ms, max {max(r['reader_ms']):.0f} ms (off the UI thread)")
    print(f"UI thread per refresh (target < {TARGET_UI_MS:.0f} ms):")
    worst = 0.0
    for name, s in r["screens"].items():
        ms = s["refresh_ms"]
        worst = max(worst, max(ms))
        print(f"  {name:<12} median {statistics.median(ms):6.1f} ms  max {max(ms):6.1f} ms"
              f"  (first render: longest of {s.get('first_n', 0)} steps {s['first_ms']:.0f} ms)")
    print(f"  worst steady-state refresh: {worst:.1f} ms -> {'OK' if worst < TARGET_UI_MS else 'OVER TARGET'}")
    first, last = r["memory"][0][1], r["memory"][-1][1]
    print("resident memory over refreshes (2 s of clock each): "
          + ", ".join(f"#{i}: {mb:.0f} MB" for i, mb in r["memory"]))
    print(f"  growth {last - first:+.1f} MB over {r['memory'][-1][0]} refreshes; the queue table's cell render "
          f"cache (bounded LRU) holds {r['cell_cache'][0]:,} of {r['cell_cache'][1]:,} entries")


if __name__ == "__main__":
    main()

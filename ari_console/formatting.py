"""How sizes and durations read, the same in the CLI, the console and the report.

One formatter per kind of number, so ``ari attempts``, the console's queue and
the report's tables never disagree on how long an attempt ran or how big a data
set is. Durations are compact and exact enough to act on (``3h05m``, not "3
hours"); sizes are decimal (1 GB = 10**9 bytes, the one convention of the whole
project: docs/operator-guide.md, "Sizes"), with three significant digits
(humanize's ``naturalsize``). Unknown values read ``""``; callers that
want a placeholder add it. Pure and light: no typer, rich or Textual here (the
fast ``ari status`` path imports it).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Mapping

from .store import ACTIVE_ATTEMPT_STATES


def duration_text(seconds: float | None) -> str:
    """A duration: ``"45s"``, ``"12m"``, ``"3h05m"``, ``"2d04h"``; ``""`` when unknown.

    >>> duration_text(11100), duration_text(59), duration_text(2 * 86400 + 4 * 3600), duration_text(None)
    ('3h05m', '59s', '2d04h', '')
    """
    if seconds is None:
        return ""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def hours_text(hours: float | None) -> str:
    """A duration given in hours (what estimates and runtimes carry), read like :func:`duration_text`.

    >>> hours_text(0.04), hours_text(26.5), hours_text(None)
    ('2m', '1d02h', '')
    """
    return "" if hours is None else duration_text(hours * 3600)


def size_text(nbytes: float | None) -> str:
    """A size in bytes: ``"778 kB"``, ``"12.3 GB"``, ``"1.5 TB"``; ``""`` when unknown.

    >>> size_text(778_000), size_text(12.34e9), size_text(1.5e12), size_text(None), size_text(0), size_text(1)
    ('778 kB', '12.3 GB', '1.5 TB', '', '0 B', '1 B')
    """
    if nbytes is None:
        return ""
    import humanize

    text = humanize.naturalsize(nbytes, format="%.3g")
    return text.replace(" Bytes", " B").replace(" Byte", " B")  # the unit as short as kB, GB: "0 B", not "0 Bytes"


def gb_text(gb: float | None) -> str:
    """A size given in GB (what the store and the scheduler carry), read like :func:`size_text`.

    >>> gb_text(0.85), gb_text(12.34), gb_text(None)
    ('850 MB', '12.3 GB', '')
    """
    return "" if gb is None else size_text(gb * 1e9)


def free_text(free_gb: float | None, total_gb: float | None) -> str:
    """Free / total (a node's memory or scratch from its probe), both read like :func:`gb_text`,
    the unit written once when they share it.

    >>> free_text(20.48, 24.576), free_text(0.85, 1000), free_text(None, 24)
    ('20.5/24.6 GB', '850 MB/1 TB', '')
    """
    if free_gb is None or not total_gb:
        return ""
    free, total = gb_text(free_gb), gb_text(total_gb)
    number, _, unit = free.partition(" ")
    return f"{number}/{total}" if total.endswith(f" {unit}") else f"{free}/{total}"


DETAIL_ATTEMPT_COLUMNS = ("id", "node", "state", "category", "elapsed", "peak memory", "peak scratch")


def detail_tables(detail: dict, now: float | None = None
                  ) -> tuple[str, list[tuple[str, tuple[str, ...], list[tuple[str, ...]]]]]:
    """``readmodel.dataset_detail`` as a head line and (title, columns, rows) tables: what
    ``ari datasets show UID`` and the console's detail screen both print, cell for cell
    (a running attempt's elapsed time runs to ``now``: :func:`attempt_seconds`).

    >>> head, tables = detail_tables({"uid": "u", "project": "p", "state": "held", "reason": "memory",
    ...     "casa_version": None, "size_gb": 1.5, "inputs": [{"name": "a.tar", "semantics": "raw", "size_bytes": None}],
    ...     "qa2_files": [], "attempts": [{"id": 1, "node": "ws", "state": "failed", "category": "memory",
    ...     "started_at": 0.0, "ended_at": 600.0, "peak_mem_gb": 8.4, "peak_scratch_gb": 4.5}]})
    >>> head
    'u p: held (memory); CASA unknown; 1.5 GB'
    >>> tables[0][2], tables[2][2]
    ([('a.tar', 'raw', 'unknown')], [('1', 'ws', 'failed', 'memory', '10m', '8.4 GB', '4.5 GB')])
    """
    head = f"{detail['uid']} {detail['project']}: {detail['state']}" + \
        (f" ({detail['reason']})" if detail.get("reason") else "") + \
        f"; CASA {detail.get('casa_version') or 'unknown'}" + \
        (f"; {gb_text(detail['size_gb'])}" if detail.get("size_gb") is not None else "")
    files = [(f["name"], f.get("semantics") or "", size_text(f["size_bytes"]) or "unknown") for f in detail["inputs"]]
    qa2 = [(f["name"],) for f in detail["qa2_files"]]
    attempts = [(str(a["id"]), a["node"], a["state"], a.get("category") or "", duration_text(attempt_seconds(a, now)),
                 gb_text(a.get("peak_mem_gb")), gb_text(a.get("peak_scratch_gb"))) for a in detail["attempts"]]
    return head, [("files for the node", ("name", "semantics", "size"), files),
                  ("QA2 products (fetched by the console)", ("name",), qa2),
                  ("attempts", DETAIL_ATTEMPT_COLUMNS, attempts)]


def attempt_seconds(a: Mapping | None, now: float | None = None) -> float | None:
    """How long an attempt has run, the one rule of every screen and command that shows it.

    From its start (its creation while it waits to start) to its end; an attempt that ended
    without a recorded end, to its last heartbeat; an active one (pending, running) to ``now``,
    or to its last heartbeat when no ``now`` is given (a text that does not move). None when
    unknown.

    >>> a = {"state": "running", "created_at": 0.0, "started_at": 60.0, "heartbeat_at": 600.0, "ended_at": None}
    >>> attempt_seconds(a), attempt_seconds(a, now=900.0), attempt_seconds({**a, "state": "lost"}, now=900.0)
    (540.0, 840.0, 540.0)
    """
    if not a:
        return None
    start = a.get("started_at") if a.get("started_at") is not None else a.get("created_at")
    if a.get("state") in ACTIVE_ATTEMPT_STATES and now is not None:
        end = now
    else:
        end = a.get("ended_at") if a.get("ended_at") is not None else a.get("heartbeat_at")
    return None if start is None or end is None else max(0.0, end - start)


def clock_text(ts: float | None) -> str:
    """A UTC time of day with date (ETAs, when an operator decided): ``"2026-12-01 14:00 UTC"``.

    >>> clock_text(0.0), clock_text(None)
    ('1970-01-01 00:00 UTC', '')
    """
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

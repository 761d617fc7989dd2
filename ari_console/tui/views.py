"""How the console shows the read model: cells, durations, sizes, filters, sparklines.

The numbers come from :mod:`ari_console.readmodel` (the same functions the CLI
and the report use); this module only turns them and the store's rows into
what a screen cell shows. Pure functions over lists of dicts and a ``now`` the
caller passes: no SQLite, no clock, no Textual, so everything a screen shows is
tested here without a terminal.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Collection, Iterable, Mapping, Sequence

from ..formatting import attempt_seconds, duration_text, free_text, gb_text
from ..readmodel import ENDED_ATTEMPT_STATES, FAILED_ATTEMPT_STATES, latest_attempts

SPARK = "▁▂▃▄▅▆▇█"

QUEUE_COLUMNS = ("uid", "project", "array", "band", "size", "state", "att", "node", "stage", "elapsed", "failure")


# -- formatting (sizes and durations: ari_console.formatting, the one formatter) ----------


def sparkline(values: Sequence[float], width: int = 12, top: float | None = None) -> str:
    """The last ``width`` values as block characters scaled to ``top`` (default: their maximum).

    >>> sparkline([0, 1, 2, 4], top=4)
    '▁▃▅█'
    """
    values = list(values)[-width:]
    if not values:
        return ""
    hi = top if top else max(values) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, max(0, round(v / hi * (len(SPARK) - 1))))] for v in values)


def bar_chart(values: Sequence[float], top: float, height: int = 3) -> str:
    """``values`` as columns ``height`` rows tall on a fixed axis: 0 is an empty column, ``top`` a full one.

    A burn-down drawn this way cannot look finished while data sets remain (a min-max scale would
    draw the last few held ones at the bottom).

    >>> print(bar_chart([4, 2, 1, 0], top=4, height=2))
    █   
    ██▄ 
    """
    rows = []
    levels = [0 if top <= 0 else round(max(0.0, min(v, top)) / top * height * 8) for v in values]
    for r in range(height - 1, -1, -1):
        cells = [max(0, min(8, lv - r * 8)) for lv in levels]
        rows.append("".join(SPARK[c - 1] if c else " " for c in cells))
    return "\n".join(rows)


# -- what fits on screen (80x24 and up) -----------------------------------------------------

def footer_keys(items: Sequence[tuple[str, int]], width: int, always: Iterable[str] = (),
                first: Iterable[str] = ()) -> set[str]:
    """The footer items (``(name, cells)`` in footer order) that fit in ``width`` cells.

    The ``always`` items are kept (``?`` help lists the keys left out), then the ``first``
    ones, then the others in footer order until one does not fit: the footer is never cut in
    the middle of a key, and what goes is what the screen lists last.

    >>> sorted(footer_keys([("filter", 9), ("retry", 8), ("copy", 11), ("help", 7)], 26, always=["help"]))
    ['filter', 'help', 'retry']
    """
    always, first = set(always), list(first)
    kept = {name for name, _ in items if name in always}
    room = width - sum(cells for name, cells in items if name in kept)
    cells_of = dict(items)
    for name in [*(n for n in first if n in cells_of), *(n for n, _ in items if n not in first)]:
        if name in kept:
            continue
        if cells_of[name] > room:
            break
        kept.add(name)
        room -= cells_of[name]
    return kept


@dataclass(frozen=True)
class Col:
    """A table column as the layout sees it.

    ``drop``: the order in which columns leave a narrow table (0: never; the highest goes
    first). ``shrink``: the narrowest the column may be cut to; None: never cut. ``cut``:
    when in that order it is cut (default: at its ``drop``, before it would leave), so a
    long text that matters can be shortened while short columns of a lower rank stay.
    """

    name: str
    drop: int = 0
    shrink: int | None = None
    cut: int | None = None


def cell_widths(columns: Sequence[str], rows: Collection[Sequence[object]], most: int = 20_000) -> dict[str, int]:
    """The widest cell of each column (its header included), in terminal cells.

    Of more than ``most`` rows, an even sample of ``most`` is measured (a table's columns
    are of a few kinds of text: 100,000 rows add nothing but time).

    >>> cell_widths(("uid", "state"), [("uid://A001/X1/X2", "queued"), ("u", "succeeded")])
    {'uid': 16, 'state': 9}
    """
    widths = {name: len(name) for name in columns}
    if len(rows) > most:
        rows = list(rows)[::len(rows) // most + 1]
    for name, cells in zip(columns, zip(*rows)):  # column by column: C loops, 100,000 rows in milliseconds
        widths[name] = max(widths[name], max(map(len, map(str, cells))))
    return widths


def fit_columns(layout: Sequence[Col], widths: Mapping[str, int], available: int,
                gap: int = 2) -> dict[str, int | None]:
    """The columns a table ``available`` cells wide shows: name -> width (None: as wide as its
    cells), in table order.

    When the cells do not fit, the least important columns go first (highest ``drop``): each
    is cut to its ``shrink`` width if it has one, and dropped if that is not enough; the
    columns that are never dropped are cut last. ``gap``: the cells a column adds to its
    text (the table's padding).

    >>> layout = (Col("uid"), Col("project", 3), Col("stage", 2, shrink=6), Col("state"), Col("failure", shrink=8))
    >>> widths = {"uid": 20, "project": 14, "stage": 20, "state": 9, "failure": 9}
    >>> fit_columns(layout, widths, 90)
    {'uid': None, 'project': None, 'stage': None, 'state': None, 'failure': None}
    >>> fit_columns(layout, widths, 60)
    {'uid': None, 'stage': 14, 'state': None, 'failure': None}
    """
    width = {c.name: max(1, widths.get(c.name, len(c.name))) for c in layout}
    cut: dict[str, int] = {}
    shown = [c.name for c in layout]

    def excess() -> int:
        return sum(cut.get(n, width[n]) + gap for n in shown) - available

    steps = [(c.drop if c.cut is None else c.cut, 1, i, "cut") for i, c in enumerate(layout) if c.shrink is not None]
    steps += [(c.drop, 0, i, "drop") for i, c in enumerate(layout) if c.drop]
    for _, _, i, step in sorted(steps, reverse=True):  # highest rank first; at one rank cut, then drop; rightmost first
        c = layout[i]
        if excess() <= 0:
            break
        if step == "cut" and c.name in shown and width[c.name] > c.shrink:
            cut[c.name] = max(c.shrink, width[c.name] - excess())
        elif step == "drop":
            shown.remove(c.name)
            cut.pop(c.name, None)
    room = -excess()
    for n in [n for n in shown if n in cut]:  # what later drops freed goes back to the cut columns
        grow = max(0, min(room, width[n] - cut[n]))
        cut[n] += grow
        room -= grow
    return {n: cut[n] if n in cut and cut[n] < width[n] else None for n in shown}


# -- filters (`/` everywhere) -----------------------------------------------------

@dataclass(frozen=True)
class RowFilter:
    """A parsed ``/`` filter: ``key:value`` field terms, then a regex; ``!`` in front inverts it all.

    ``error`` is set (and nothing filtered) when the regex does not compile.
    """

    text: str = ""
    fields: tuple[tuple[str, re.Pattern], ...] = ()
    regex: re.Pattern | None = None
    invert: bool = False
    error: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.fields or self.regex) and self.error is None


def parse_filter(text: str, field_names: Iterable[str] = ()) -> RowFilter:
    """A RowFilter from what the user typed after ``/``.

    >>> f = parse_filter("!state:failed X1d", ["state"])
    >>> f.invert, [k for k, _ in f.fields], f.regex.pattern
    (True, ['state'], 'X1d')
    """
    raw = text.strip()
    invert = raw.startswith("!")
    body = raw[1:].strip() if invert else raw
    names = set(field_names)
    terms, rest = [], []
    for word in body.split():
        key, sep, value = word.partition(":")
        if sep and key.lower() in names and value:
            terms.append((key.lower(), value))
        else:
            rest.append(word)
    try:
        fields = tuple((k, re.compile(v, re.I)) for k, v in terms)
        regex = re.compile(" ".join(rest), re.I) if rest else None
    except re.error as exc:
        return RowFilter(text=text, error=f"/{body}: not a regular expression ({exc}) — escape it with \\")
    return RowFilter(text=text, fields=fields, regex=regex, invert=invert)


def matches(flt: RowFilter, cells: Sequence[object], fields: Mapping[str, object] | None = None) -> bool:
    """Whether a row (its shown cells and its filterable fields) passes ``flt``.

    >>> matches(parse_filter("fail"), ("a", "failed")), matches(parse_filter("!fail"), ("a", "failed"))
    (True, False)
    """
    if not flt.active:
        return True
    ok = True
    for key, pattern in flt.fields:
        if not pattern.search(str((fields or {}).get(key) or "")):
            ok = False
            break
    if ok and flt.regex is not None:
        ok = any(flt.regex.search(str(c)) for c in cells)
    return ok != flt.invert


def search_text(cells: Sequence[str]) -> str:
    """A row as the ``/`` filter searches it: its cells joined by newlines (``^``/``$`` at each cell),
    lower case (the filter ignores case).

    >>> search_text(("uid://A001/X1", "Failed")).split()
    ['uid://a001/x1', 'failed']
    """
    return "\n".join(cells).lower()


_REGEX_SYNTAX = frozenset("\\.^$*+?{}[]|()")


def literal_text(pattern: str) -> str | None:
    """The text a regex matches when it is plain text (what an operator types most: part of a uid or
    a project code), lower case; None when it uses regex syntax or is not ASCII.

    >>> literal_text("X1f5/"), literal_text("X1f.5"), literal_text("Ångström")
    ('x1f5/', None, None)
    """
    if not pattern.isascii() or _REGEX_SYNTAX.intersection(pattern):
        return None
    return pattern.lower()


def filter_rows(flt: RowFilter, rows: Mapping[str, tuple], fields: Mapping[str, Mapping] | None = None,
                field_cells: Mapping[str, int] | None = None,
                texts: Mapping[str, str] | None = None) -> dict[str, tuple]:
    """The rows of ``rows`` (key -> cells) that pass ``flt``, in order.

    ``field_cells``: the ``key:value`` fields that are cells of the row (name -> index), read
    from the cells without a dict per row; the regex then searches each row's cells at once
    (``search_text``). ``texts``: each row's ``search_text`` when the caller keeps them (the
    console's store copy does, for the queue): a plain-text filter is then a substring test,
    not a regex, at 100,000 rows a few milliseconds.

    >>> rows = {"a": ("a", "failed"), "b": ("b", "queued")}
    >>> list(filter_rows(parse_filter("state:fail ^a$", ["state"]), rows, field_cells={"state": 1}))
    ['a']
    >>> list(filter_rows(parse_filter("!QUEUED"), rows, field_cells={}, texts={k: search_text(v) for k, v in rows.items()}))
    ['a']
    """
    if not flt.active:
        return dict(rows)
    if field_cells is not None and all(k in field_cells for k, _ in flt.fields):
        terms = [(field_cells[k], pattern.search) for k, pattern in flt.fields]
        invert = flt.invert
        if flt.regex is None:
            return {k: cells for k, cells in rows.items() if all(s(cells[i]) for i, s in terms) != invert}
        needle = literal_text(flt.regex.pattern)
        if texts is None:
            texts = {k: search_text(cells) for k, cells in rows.items()}
        if needle is not None:
            if not terms:  # the common case, typed: one C-level substring test per row
                return {k: cells for k, cells in rows.items() if (needle in texts[k]) != invert}
            return {k: cells for k, cells in rows.items()
                    if (all(s(cells[i]) for i, s in terms) and needle in texts[k]) != invert}
        search = re.compile(flt.regex.pattern, re.I | re.M).search
        return {k: cells for k, cells in rows.items()
                if (all(s(cells[i]) for i, s in terms) and search(texts[k]) is not None) != invert}
    fields = fields or {}
    return {k: cells for k, cells in rows.items() if matches(flt, cells, fields.get(k))}


# -- attempts ----------------------------------------------------------------------

# -- queue ---------------------------------------------------------------------------

class QueueFields(Mapping):
    """The ``key:value`` filter fields of queue rows, read from their cells (no copy per row)."""

    NAMES = {"state": 5, "project": 1, "category": 10, "node": 7, "array": 2}

    def __init__(self, rows: Mapping[str, tuple]) -> None:
        self._rows = rows

    def __getitem__(self, key: str) -> dict:
        cells = self._rows[key]
        return {name: cells[i] for name, i in self.NAMES.items()}

    def __iter__(self):
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


@dataclass(frozen=True)
class QueueView:
    """Every data set as a row: uid -> cells (QUEUE_COLUMNS); ``fields`` are what ``key:value`` filters read."""

    rows: dict[str, tuple[str, ...]]
    texts: Mapping[str, str] | None = None
    """Each row's ``search_text`` (uid -> text) when the maker keeps them (the console's store copy)."""
    widths: Mapping[str, int] | None = None
    """The widest cell of each column over every row (``cell_widths``) when the maker keeps them."""

    @property
    def fields(self) -> QueueFields:
        return QueueFields(self.rows)


def queue_view(datasets: Iterable[dict], attempts: Iterable[dict], now: float,
               heartbeat_stale_s: float = 300.0) -> QueueView:
    """The queue table of a campaign.

    >>> v = queue_view([{"uid": "u1", "project": "p", "array": "12m", "band": 6, "size_gb": 2.0,
    ...                 "state": "running"}], [{"uid": "u1", "node": "ws1", "state": "running",
    ...                 "stage": "image", "started_at": 0.0}], now=90.0)
    >>> v.rows["u1"]
    ('u1', 'p', '12m', '6', '2 GB', 'running', '1', 'ws1', 'image', '1m', '')
    """
    latest, counts = latest_attempts(attempts)
    rows: dict[str, tuple[str, ...]] = {}
    for d in datasets:
        rows[d["uid"]] = queue_row(d, latest.get(d["uid"]), counts.get(d["uid"], 0), now, heartbeat_stale_s)
    return QueueView(rows)


STATE_STYLES = {"failed": "bold red", "held": "bold yellow", "review": "bold magenta", "running": "cyan",
                "succeeded": "green", "excluded": "dim", "skipped": "dim"}


def state_style(state: str) -> str | None:
    """The colour of a data-set state in tables (queued: none). NO_COLOR turns colours off in Textual."""
    return STATE_STYLES.get(state)


QUEUE_DATASET = ("uid", "project", "array", "band", "size_gb", "state")
"""What ``queue_cells`` reads of a data set, in this order."""
QUEUE_ATTEMPT = ("id", "uid", "node", "state", "stage", "created_at", "started_at", "heartbeat_at", "ended_at",
                 "category")
"""What ``queue_cells`` reads of the newest attempt, in this order."""


def queue_row(d: Mapping, a: Mapping | None, count: int, now: float,
              heartbeat_stale_s: float = 300.0) -> tuple[str, ...]:
    """One data set as QUEUE_COLUMNS cells, given its newest attempt ``a`` and its number of attempts."""
    return queue_cells(tuple(d.get(k) for k in QUEUE_DATASET),
                       None if a is None else tuple(a.get(k) for k in QUEUE_ATTEMPT), count, now, heartbeat_stale_s)


_SIZE_TEXTS: dict[float | None, str] = {}
_NUMBER_TEXTS = tuple(str(i) for i in range(1000))


def queue_cells(d: Sequence, a: Sequence | None, count: int, now: float, heartbeat_stale_s: float = 300.0,
                texts: dict[str, str] | None = None) -> tuple[str, ...]:
    """``queue_row`` from tuples: ``d`` starting with ``QUEUE_DATASET``, ``a`` of ``QUEUE_ATTEMPT`` (or None).

    What a console at 100,000 data sets calls once per data set: sizes are formatted once per
    value, and ``texts`` (when given) keeps one copy of each cell that repeats (elapsed times, stages).

    >>> queue_cells(("u1", "p", "12m", 6, 2.0, "failed"), (7, "u1", "ws1", "failed", "image", 0.0, 10.0, 80.0,
    ...             90.0, "memory"), 2, now=100.0)
    ('u1', 'p', '12m', '6', '2 GB', 'failed', '2', 'ws1', 'image', '1m', 'memory')
    """
    uid, project, array, band, size_gb, state = d[0], d[1], d[2], d[3], d[4], d[5]  # ``d`` may carry more fields
    size = _SIZE_TEXTS.get(size_gb)
    if size is None:
        if len(_SIZE_TEXTS) > 100_000:
            _SIZE_TEXTS.clear()
        size = _SIZE_TEXTS[size_gb] = gb_text(size_gb)
    band_text = "" if band is None else _NUMBER_TEXTS[band] if type(band) is int and 0 <= band < 1000 else str(band)
    count_text = _NUMBER_TEXTS[count] if 0 <= count < 1000 else str(count)
    if a is None:
        return uid, project or "", array or "", band_text, size, state, count_text, "", "", "", ""
    _, _, node, a_state, stage, created, started, beat, ended, category = a
    ended_state = a_state in ENDED_ATTEMPT_STATES
    stage = stage or ""
    if not ended_state and beat is not None and now - beat > heartbeat_stale_s:
        stage = f"{stage} (stale {duration_text(now - beat)})"
    start = started if started is not None else created
    # formatting.attempt_seconds's rule, inline (once per data set at 100,000): active to now, ended to its end
    end = now if not ended_state else ended if ended is not None else beat
    elapsed = "" if start is None or end is None else duration_text(end - start)
    if texts is not None:
        stage, elapsed = texts.setdefault(stage, stage), texts.setdefault(elapsed, elapsed)
    return (uid, project or "", array or "", band_text, size, state, count_text, node or "", stage, elapsed,
            (category or "") if a_state in FAILED_ATTEMPT_STATES else "")


QUEUE_LAYOUT = (Col("uid"), Col("project", 6), Col("array", 8), Col("band", 7), Col("size", 5), Col("state"),
                Col("att", 4), Col("node", 2, shrink=6), Col("stage", 3, shrink=8), Col("elapsed", 1),
                Col("failure", shrink=9))
"""What a narrow queue keeps: uid, state and failure always; array, band, project go first."""

_UNITS = {"Byte": 1e-9, "Bytes": 1e-9, "kB": 1e-6, "MB": 1e-3, "GB": 1.0, "TB": 1e3, "PB": 1e6}  # formatting.gb_text's units
_DURATION_PARTS = re.compile(r"(\d+)([dhms])")
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def sort_value(column: str, cell: object) -> object:
    """What a table sorts on for a cell: sizes and durations as numbers, counts as ints, text as text.

    >>> sort_value("size", "850 MB") < sort_value("size", "1.2 TB"), sort_value("elapsed", "3h05m")
    (True, 11100)
    """
    text = str(cell)
    if column == "size":
        number, _, unit = text.partition(" ")
        return float(number) * _UNITS.get(unit, 1.0) if number else -1.0
    if column == "elapsed":
        return sum(int(n) * _SECONDS[u] for n, u in _DURATION_PARTS.findall(text)) if text else -1
    if column in ("att", "band", "id"):
        return int(text) if text.isdigit() else -1
    return text.lower()


def sort_rows(rows: Mapping[str, tuple], columns: Sequence[str], column: str,
              reverse: bool = False) -> dict[str, tuple]:
    """``rows`` ordered on ``column`` (numbers as numbers, see ``sort_value``); ties keep their order.

    >>> list(sort_rows({"a": ("2 GB",), "b": ("850 MB",)}, ("size",), "size"))
    ['b', 'a']
    """
    i = columns.index(column)
    ordered = sorted(rows.items(), key=lambda kv: sort_value(column, kv[1][i]), reverse=reverse)
    return dict(ordered)


# -- dashboard -------------------------------------------------------------------------

def rate_text(pair: tuple[int, int]) -> str:
    """``"12/20 (60%)"``, or ``"n/a"`` when nothing has finished.

    >>> rate_text((1, 2)), rate_text((0, 0))
    ('1/2 (50%)', 'n/a')
    """
    ok, n = pair
    return f"{ok}/{n} ({100 * ok / n:.0f}%)" if n else "n/a"


# -- nodes ------------------------------------------------------------------------------

NODE_COLUMNS = ("node", "via", "slots", "load", "load hist", "mem free", "mem hist", "scratch free",
                "scratch hist", "state")
NODE_LAYOUT = (Col("node"), Col("via", 6), Col("slots", 3), Col("load", 2), Col("load hist", 7), Col("mem free", 4),
               Col("mem hist", 8), Col("scratch free", 5), Col("scratch hist", 9), Col("state", shrink=24, cut=10))
"""A narrow nodes table keeps node and state (its probe error cut) and the probe's numbers before their history."""


@dataclass
class NodeHistory:
    """Recent probe values of one node, kept in memory by the console (bounded)."""

    probed_at: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    mem_used: list[float] = field(default_factory=list)
    scratch_used: list[float] = field(default_factory=list)
    keep: int = 60

    def add(self, node: dict) -> None:
        """Append the node's probe if it is new (one point per probe, not per refresh)."""
        p, at = node.get("probe"), node.get("probed_at")
        if not p or at is None or (self.probed_at and self.probed_at[-1] == at):
            return
        self.probed_at.append(at)
        self.load.append(float(p.get("load1") or 0.0) / max(1, int(p.get("cpus") or 1)))
        self.mem_used.append(_used_fraction(p.get("mem_total_gb"), p.get("mem_free_gb")))
        self.scratch_used.append(_used_fraction(p.get("scratch_total_gb"), p.get("scratch_free_gb")))
        for series in (self.probed_at, self.load, self.mem_used, self.scratch_used):
            del series[:-self.keep]


def _used_fraction(total: float | None, free: float | None) -> float:
    if not total or free is None:
        return 0.0
    return max(0.0, min(1.0, (total - free) / total))


def node_staleness(node: dict, now: float, stale_after_s: float) -> str | None:
    """``"stale 3m"`` when the node's probe failed or is older than ``stale_after_s``; else None.

    >>> node_staleness({"probed_at": 0.0, "probe_error": None}, now=200.0, stale_after_s=60)
    'stale 3m'
    """
    at = node.get("probed_at")
    if at is None:
        return "never probed" if node.get("probe_error") is None else "unreachable"
    if node.get("probe_error") or now - at > stale_after_s:
        return f"stale {duration_text(now - at)}"
    return None


def node_rows(nodes: Sequence[dict], history: Mapping[str, NodeHistory], now: float,
              stale_after_s: float = 120.0) -> dict[str, tuple[str, ...]]:
    """Per node (name -> NODE_COLUMNS cells): slots, load, memory, scratch, sparklines, state."""
    rows = {}
    for n in nodes:
        p = n.get("probe") or {}
        h = history.get(n["name"]) or NodeHistory()
        stale = node_staleness(n, now, stale_after_s)
        state = "drained: " + (n.get("drained_reason") or "") if n.get("drained") else "ok"
        if stale:
            state = f"{stale}" + (f" ({n['probe_error']})" if n.get("probe_error") else "") + \
                ("" if state == "ok" else f"; {state}")
        load = f"{p['load1']:.2f}/{p.get('cpus', '?')}" if "load1" in p else ""
        mem = free_text(p.get("mem_free_gb"), p.get("mem_total_gb"))
        scratch = free_text(p.get("scratch_free_gb"), p.get("scratch_total_gb"))
        rows[n["name"]] = (n["name"], f"{n['transport']}/{n['batch']}", f"{n.get('running', 0)}/{n['slots']}",
                           load, sparkline(h.load, top=1.0), mem, sparkline(h.mem_used, top=1.0), scratch,
                           sparkline(h.scratch_used, top=1.0), state)
    return rows


def unreachable_nodes(nodes: Sequence[dict], now: float) -> dict[str, str]:
    """The nodes whose last probe failed: name -> the one status line the console shows for each.

    >>> unreachable_nodes([{"name": "ws01", "probed_at": 0.0, "probe_error": "ssh: timed out"},
    ...                    {"name": "hpc", "probed_at": 0.0, "probe_error": None}], now=600.0)
    {'ws01': 'ws01 unreachable (last answer 10m ago): ssh: timed out'}
    """
    lines = {}
    for n in nodes:
        if n.get("probe_error"):
            at = n.get("probed_at")
            since = "never answered" if at is None else f"last answer {duration_text(now - at)} ago"
            lines[n["name"]] = f"{n['name']} unreachable ({since}): {n['probe_error']}"
    return lines


def reachability_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """What to toast between two refreshes: (node, message, severity) for each node that became
    unreachable, or answered again; a node that stays unreachable says nothing (its line stays).

    >>> reachability_changes({"ws01": "ws01 unreachable (last answer 1m ago): x"},
    ...                      {"ws01": "ws01 unreachable (last answer 2m ago): x", "hpc": "hpc unreachable ..."})
    [('hpc', 'hpc unreachable ...', 'warning')]
    >>> reachability_changes({"ws01": "ws01 unreachable ..."}, {})
    [('ws01', 'ws01 answers again', 'information')]
    """
    changes = [(name, line, "warning") for name, line in after.items() if name not in before]
    changes += [(name, f"{name} answers again", "information") for name in before if name not in after]
    return changes


def engine_line(holder: Mapping | None, me: tuple[int, str] | None = None) -> str:
    """Whether and where the campaign engine runs (``holder``: the engine lock's owner; ``me``:
    this console's pid and host).

    >>> engine_line({"pid": 4242, "host": "opshost", "since": 0.0})
    'watching; engine runs in pid 4242 on host opshost'
    >>> engine_line(None), engine_line({"pid": 7, "host": "h"}, me=(7, "h"))
    ('watching; no engine runs (--engine starts one)', 'engine running in this console')
    """
    if holder is None:
        return "watching; no engine runs (--engine starts one)"
    if me is not None and (holder.get("pid"), holder.get("host")) == me:
        return "engine running in this console"
    return f"watching; engine runs in pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"


# -- triage -------------------------------------------------------------------------------

TRIAGE_COLUMNS = ("uid", "state", "node", "category", "att", "excerpt")
TRIAGE_LAYOUT = (Col("uid"), Col("state", 3), Col("node", 2, shrink=6), Col("category"), Col("att", 4),
                 Col("excerpt", 1, shrink=16, cut=5))
GROUP_COLUMNS = ("n", "group", "fix")
GROUP_LAYOUT = (Col("n"), Col("group", shrink=16), Col("fix", shrink=24))
"""A failure group and its fix stay side by side at 80 columns (both cut, the fix less)."""


def failure_row(f: dict) -> tuple[str, ...]:
    """One failed attempt as TRIAGE_COLUMNS cells (the excerpt's first non-empty line)."""
    excerpt = next((ln.strip() for ln in (f.get("excerpt") or "").splitlines() if ln.strip()), "")
    return (f["uid"], f.get("dataset_state") or "", f.get("node") or "", f.get("category") or "unknown",
            str(f.get("attempts", 1)), excerpt)


# -- QA2 --------------------------------------------------------------------------------------

QA2_COLUMNS = ("uid", "field", "spw", "specmode", "peak", "flux", "rms", "beam", "verdict", "outside")
QA2_LAYOUT = (Col("uid"), Col("field", 2, shrink=8), Col("spw", 7), Col("specmode", 8), Col("peak", 4), Col("flux", 3),
              Col("rms", 5), Col("beam", 6), Col("verdict"), Col("outside", shrink=12))
"""A narrow QA2 table keeps uid, verdict and what was outside its tolerance."""

_REASON = re.compile(r"^(field total|flux|peak|rms|beam) ratio (\S+)|^(source \S+)|^(no source)")


def qa2_outside(r: Mapping) -> str:
    """What of a QA2 pair was outside its tolerance, shortly: ``"flux 1.420, rms 2.100"``.

    Read from the verdict's reasons (``ari qa2 compare``); a discrepant pair stored without
    them names its ratio farthest from 1.

    >>> qa2_outside({"verdict": "discrepant", "detail": {"reasons": "flux ratio 1.420 outside 1 ± 0.100; "
    ...              "source 2 (both): peak ratio 0.5"}})
    'flux 1.420, source 2'
    >>> qa2_outside({"verdict": "discrepant", "peak_ratio": 1.02, "flux_ratio": 1.42, "rms_ratio": 1.0})
    'flux 1.420'
    """
    reasons = str((r.get("detail") or {}).get("reasons") or "")
    parts = []
    for reason in filter(None, (x.strip() for x in reasons.split(";"))):
        m = _REASON.match(reason)
        if m is None:
            parts.append(" ".join(reason.split()[:3]))
        elif m.group(1):
            parts.append(f"{m.group(1)} {m.group(2)}")
        else:
            parts.append(m.group(3) or m.group(4))
    if parts or r.get("verdict") != "discrepant":
        return ", ".join(dict.fromkeys(parts))
    ratios = [(abs(math.log(x)), name, x) for name in ("flux", "peak", "rms", "beam")
              if isinstance(x := r.get(f"{name}_ratio"), (int, float)) and x > 0]
    worst = max(ratios, key=lambda t: t[0]) if ratios else None  # ties: the first named
    return f"{worst[1]} {worst[2]:.3f}" if worst else ""


def ratio_text(x: float | None) -> str:
    """A ratio with 3 decimals, ``""`` when unknown."""
    return "" if x is None else f"{x:.3f}"


def pair_brief(pair: Mapping) -> str:
    """One discrepant pair of a QA2 review in a few words (a :func:`readmodel.discrepant_pairs` entry):
    where (field, spw, mode), the measure that failed and its ratio pipeline / QA2.

    >>> pair_brief({"image": "a.fits", "field": "NGC253", "spw": "17", "specmode": "cont", "measure": "flux",
    ...             "ratio": 0.5213, "why": "flux ratio 0.521 outside 1 ± 0.100"})
    'NGC253 spw17 cont flux ×0.521'
    """
    spw = pair.get("spw")
    where = " ".join(x for x in (pair.get("field"), f"spw{spw}" if spw not in (None, "") else None,
                                 pair.get("specmode")) if x) or pair.get("image") or "?"
    if pair.get("ratio") is not None:
        return f"{where} {pair['measure']} ×{pair['ratio']:.3g}"
    why = pair.get("why") or "discrepant"
    return f"{where}: {why if len(why) <= 40 else why[:39] + '…'}"


def review_why(reason: str, pairs: Sequence[Mapping], most: int = 3) -> str:
    """A review's reason and its first ``most`` discrepant pairs (:func:`pair_brief`), for the attention card."""
    briefs = [pair_brief(p) for p in pairs[:most]] + ([f"{len(pairs) - most} more"] if len(pairs) > most else [])
    return "; ".join([reason] + ([", ".join(briefs)] if briefs else []))


def qa2_rows(results: Sequence[dict]) -> dict[str, tuple[str, ...]]:
    """QA2 pairs (id -> QA2_COLUMNS cells), discrepant first, as the store orders them."""
    ordered = sorted(results, key=lambda r: (r.get("verdict") == "consistent", r["uid"], r["id"]))
    return {str(r["id"]): (r["uid"], r.get("field") or "", r.get("spw") or "", r.get("specmode") or "",
                           ratio_text(r.get("peak_ratio")), ratio_text(r.get("flux_ratio")),
                           ratio_text(r.get("rms_ratio")), ratio_text(r.get("beam_ratio")),
                           r.get("verdict") or "", qa2_outside(r)) for r in ordered}


# -- attempts list and shell commands ------------------------------------------------------------

ATTEMPT_COLUMNS = ("id", "uid", "node", "state", "stage", "elapsed", "heartbeat")


def attempt_rows(attempts: Sequence[dict], now: float, heartbeat_stale_s: float = 300.0,
                 recent: int = 200) -> dict[str, tuple[str, ...]]:
    """Active attempts and the ``recent`` newest ended ones (id -> ATTEMPT_COLUMNS), newest first.

    An active attempt whose heartbeat is older than ``heartbeat_stale_s`` shows ``stale <age>``.
    """
    active = [a for a in attempts if a["state"] not in ENDED_ATTEMPT_STATES]
    ended = [a for a in attempts if a["state"] in ENDED_ATTEMPT_STATES][-recent:]
    rows = {}
    for a in sorted(active + ended, key=lambda a: -a["id"]):
        hb = a.get("heartbeat_at")
        beat = "" if hb is None else duration_text(now - hb) + " ago"
        if a["state"] not in ENDED_ATTEMPT_STATES and hb is not None and now - hb > heartbeat_stale_s:
            beat = f"stale {duration_text(now - hb)}"
        rows[str(a["id"])] = (str(a["id"]), a["uid"], a["node"], a["state"], a.get("stage") or "",
                              duration_text(attempt_seconds(a, now)), beat)
    return rows


def remote_command(node: Mapping, command: str) -> str:
    """``command`` as run on ``node`` from the operator's shell (through ssh for ssh nodes)."""
    if node.get("transport") != "ssh":
        return command
    target = node.get("host") or node.get("name")
    if node.get("user"):
        target = f"{node['user']}@{target}"
    port = node.get("port") or 22
    return f"ssh -p {port} {target} {shlex.quote(command)}"


def shell_commands(attempt: dict, node: Mapping, log_path: str | None = None) -> list[str]:
    """The shell commands that show by hand what the console shows for ``attempt``.

    ``node`` is the node's config (transport, host, port, user, batch). The log
    defaults to ``<work_dir>/runner.log``.

    >>> shell_commands({"handle": {"batch": "slurm", "job_id": "42"}, "work_dir": "/s/7", "state": "running"},
    ...                {"transport": "ssh", "host": "hpc", "port": 2222, "user": "ari", "batch": "slurm"})
    ["ssh -p 2222 ari@hpc 'tail -f /s/7/runner.log'", "ssh -p 2222 ari@hpc 'squeue -j 42'"]
    """
    handle = attempt.get("handle") or {}
    work_dir = attempt.get("work_dir") or handle.get("work_dir")
    log = log_path or (f"{work_dir.rstrip('/')}/runner.log" if work_dir else None)
    cmds = []
    if log:
        cmds.append(remote_command(node, f"tail -f {shlex.quote(log)}"))
    from ..nodes.batch import BATCH_SYSTEMS

    system = BATCH_SYSTEMS.get(handle.get("batch") or node.get("batch"))
    shown = system.status_command(handle, ended=attempt.get("state") in ENDED_ATTEMPT_STATES) if system else None
    if shown:
        cmds.append(remote_command(node, shown))
    return cmds

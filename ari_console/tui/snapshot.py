"""One read of the campaign store, turned into everything the screens show.

``load_snapshot`` runs in the console's reader thread (never on the UI thread):
it calls the store's read functions inside one transaction, so all screens see
the same instant, and hands the rows to the pure functions of ``views``. A big
campaign's first whole read runs in a child process instead
(``StoreCopy.read_apart``), so the UI thread can draw the queue's first page
meanwhile.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from collections import Counter, defaultdict
from operator import itemgetter
from pathlib import Path
from typing import Iterable, Mapping, Sequence


from ari_console import readmodel, store
from ari_console.formatting import clock_text, duration_text

from . import views


@dataclass(frozen=True)
class Eta:
    """The estimator's answer, or why there is none (``text`` is what the dashboard shows)."""

    text: str = "n/a"
    finish_at: float | None = None
    remaining_h: float | None = None
    computed_at: float | None = None
    computed_at_mono: float = 0.0


@dataclass(frozen=True, repr=False)
class Snapshot:
    """Everything the screens show, from one read of the store at ``now``.

    Its ``repr`` is short: Textual names each worker after the repr of its arguments, and a
    screen starts one per snapshot (the full repr of 100,000 rows took 90 ms of the UI thread).
    """

    now: float
    version: int
    queue: views.QueueView
    dashboard: readmodel.Dashboard
    nodes: list[dict]
    node_rows: dict[str, tuple[str, ...]]
    attempts: dict[int, dict]                  # shown attempts by id (active + recent)
    attempt_rows: dict[str, tuple[str, ...]]
    failures: list[dict]
    qa2: list[dict]
    qa2_rows: dict[str, tuple[str, ...]]
    eta: Eta = field(default_factory=Eta)
    load_ms: float = 0.0
    attention: list[tuple[str, str, str]] = field(default_factory=list)   # (what, which, why): needs a person
    pending: int = 0
    """Data sets not in this snapshot yet: a first page (:meth:`StoreCopy.first_page`) shown while the whole
    copy is read; only the queue shows it (its rows are exact, the campaign's totals are not there yet)."""

    def __repr__(self) -> str:
        return f"Snapshot(version={self.version}, now={self.now}, data_sets={len(self.queue.rows)})"


class ReadApartFailed(Exception):
    """The child process of ``StoreCopy.read_apart`` failed or took too long (the message says which)."""


class StoreCopy:
    """The console's copy of the store, kept up to date by reading only what changed.

    The first ``read`` takes one row per data set with what the store keeps of
    its attempts (count, first and newest attempt, first success: ``attempt_stats``,
    kept by trigger) and the failures per category (``failure_tally``), so opening
    a campaign costs its data sets, not its attempt history; every later read asks
    for the data sets and attempts written after the last revision it saw
    (``store.datasets_since`` / ``attempts_since``) and folds them in, so a
    refresh costs what changed, not the size of the campaign. Queue rows are
    rebuilt only for the data sets that changed and those with an active
    attempt (their elapsed time moves with the clock).

    At 100,000 data sets the copy is most of the console's memory, so each data
    set is one tuple of the fields the screens use (``DATASET_FIELDS``) and its
    newest attempt another (``LATEST_FIELDS``), not a dict each; the strings
    that repeat (states, projects, nodes, stages, categories, queue cells) are
    kept once. Full rows stay only where a screen shows them: active and recent
    attempts, open failures, data sets waiting for an operator. Each queue row's
    ``search_text`` and the widest cell of each column are kept with the rows,
    so a ``/`` filter and the queue's first show measure nothing.
    """

    RECENT = 200
    DATASET_FIELDS = (*views.QUEUE_DATASET, "created_at", "first_outcome")  # the queue's cells read the first ones
    LATEST_FIELDS = views.QUEUE_ATTEMPT

    def __init__(self, heartbeat_stale_s: float = 300.0) -> None:
        self.rev: int | None = None
        self.heartbeat_stale_s = heartbeat_stale_s
        self.datasets: dict[str, tuple] = {}         # uid -> DATASET_FIELDS
        self.latest: dict[str, tuple] = {}           # uid -> its newest attempt's LATEST_FIELDS
        self._strings: dict[str, str] = {}            # one copy of each repeated string
        self.counts: dict[str, int] = {}
        self.first: dict[str, int] = {}               # uid -> first attempt id (failures list in that order)
        self.success_at: dict[str, float] = {}
        self.failures: Counter = Counter()            # failed or lost attempts per category
        self.active: dict[int, dict] = {}             # pending or running attempts by id
        self.recent: dict[int, dict] = {}             # the newest ended attempts by id
        self.totals: Counter = Counter()
        self.rows: dict[str, tuple[str, ...]] = {}
        self.texts: dict[str, str] = {}               # uid -> its row as the `/` filter searches it
        self.widths: dict[str, int] = {}              # the widest cell of each queue column (only grows)
        self.open_failures: dict[str, dict] = {}
        self.waiting: dict[str, dict] = {}            # held (or in QA2 review): waiting for an operator
        self.nodes: list[dict] = []
        self.qa2: list[dict] = []
        self._qa2_mark: tuple | None = None
        self.qa2_rows: dict[str, tuple[str, ...]] = {}  # made when the pairs change, not each refresh
        self.discrepant: dict[str, list[dict]] = {}    # uid -> its discrepant QA2 pairs (the reviews' ratios)
        self._created: list[float] | None = None
        self._done: list[float] | None = None
        self._rates: tuple | None = None
        self._reorder = True
        self._rows_at: float | None = None
        self._attention: list[tuple[str, str, str]] | None = None
        self._failure_list: list[dict] | None = None

    def read(self, db: store.Database, now: float) -> set[str] | None:
        """Fold in what changed since the last read: the uids whose data set or attempts changed
        (None the first time: everything)."""
        with store.transaction(db):
            rev = store.revision(db)
            self.nodes = store.nodes(db)
            mark = store.qa2_mark(db)
            if mark != self._qa2_mark:
                self.qa2, self._qa2_mark = store.qa2_results(db), mark
                self.qa2_rows = views.qa2_rows(self.qa2)
                self.discrepant = defaultdict(list)
                for p in self.qa2:
                    if p.get("verdict") == "discrepant":
                        self.discrepant[p["uid"]].append(p)
                self._attention = None
            if self.rev is None:
                self._first_read(db, now)
                changed = None
            elif rev != self.rev:
                changed = self._fold(store.datasets_since(db, self.rev), store.attempts_since(db, self.rev), db)
            else:
                changed = set()
        self.rev = rev
        return changed

    # -- compact rows ------------------------------------------------------------------

    _DATASET_ROW = itemgetter(*DATASET_FIELDS)
    _LATEST_ROW = itemgetter(*LATEST_FIELDS)

    def _compact_dataset(self, d: Mapping) -> tuple:
        """``DATASET_FIELDS`` of ``d``, its repeated strings kept once."""
        return self._compact_dataset_row(self._DATASET_ROW(d))

    def _compact_dataset_row(self, row: Sequence) -> tuple:
        """The ``DATASET_FIELDS`` values ``row``, its repeated strings kept once."""
        one = self._strings.setdefault
        uid, project, array, band, size, state, created, first = row
        return uid, one(project, project), one(array, array), band, size, one(state, state), created, \
            one(first, first)

    def _compact_attempt(self, a: Mapping) -> tuple:
        """``LATEST_FIELDS`` of ``a``, its repeated strings kept once."""
        return self._compact_attempt_row(self._LATEST_ROW(a))

    def _compact_attempt_row(self, row: Sequence) -> tuple:
        """The ``LATEST_FIELDS`` values ``row``, its repeated strings kept once."""
        one = self._strings.setdefault
        aid, uid, node, state, stage, created, started, beat, ended, category = row
        return aid, uid, one(node, node), one(state, state), one(stage, stage), created, started, beat, ended, \
            one(category, category)

    def dataset(self, uid: str) -> dict | None:
        """The data set ``uid`` as a dict of ``DATASET_FIELDS``."""
        t = self.datasets.get(uid)
        return None if t is None else dict(zip(self.DATASET_FIELDS, t))

    def newest_attempt(self, uid: str) -> dict | None:
        """The newest attempt of ``uid`` as a dict of ``LATEST_FIELDS`` (the active one in full)."""
        t = self.latest.get(uid)
        if t is None:
            return None
        return self.active.get(t[0]) or dict(zip(self.LATEST_FIELDS, t))

    @classmethod
    def first_page(cls, db: store.Database, now: float, limit: int,
                   heartbeat_stale_s: float = 300.0) -> tuple["StoreCopy", int]:
        """A copy of the ``limit`` oldest data sets only (the queue's first page) and the number of data
        sets it leaves out: what the console shows while its whole copy is read (about 1.7 s of CPU
        at 100,000 data sets; the page: milliseconds). Its rows are made as the whole read makes
        them, so they do not change when it lands; a throwaway, never ``read`` again."""
        page = cls(heartbeat_stale_s)
        with store.transaction(db):
            page.nodes = store.nodes(db)
            rows = page._take_summaries(store.dataset_summaries(db, cls.DATASET_FIELDS, cls.LATEST_FIELDS, limit), now)
            page.totals = Counter({k: v for k, v in store.counts(db).items() if v})
        page.rows, page._rows_at, page._reorder = rows, now, False
        page.texts = {uid: views.search_text(r) for uid, r in rows.items()}
        page.widths = views.cell_widths(views.QUEUE_COLUMNS, rows.values(), most=len(rows))
        return page, max(0, sum(page.totals.values()) - len(rows))

    PIECE = 10_000
    """Entries of a big mapping per piece that ``read_apart`` sends from its child."""

    @classmethod
    def read_apart(cls, db_path: Path, now: float, heartbeat_stale_s: float = 300.0,
                   stop: threading.Event | None = None, timeout_s: float = 1800.0) -> "StoreCopy | None":
        """A copy whose first ``read`` ran in a child process: the same copy as ``read(db, now)`` makes
        (its later reads fold in what changed since), or None when ``stop`` was set meanwhile.

        At 100,000 data sets the first read is 1.5 s of CPU. In the console's reader thread it held
        the interpreter lock against the UI thread, which waits for it at each turn of its event loop:
        the queue's first page, ready in milliseconds, reached the screen only when the whole read
        had landed. In a child it runs on another core; the copy comes back in pieces of ``PIECE``
        entries (one pickle stream, so each repeated string stays one object), and the UI thread
        gets the lock between two pieces. Raises ``ReadApartFailed`` when the child fails (the caller
        reads in its own thread instead).
        """
        if stop is not None and stop.is_set():
            return None
        # the copy comes through a file, read a frame at a time: through a pipe, the whole pickle
        # (40 MB at 100,000 data sets) would sit in the console's heap beside the copy it makes
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen([sys.executable, "-c", "from ari_console.tui.snapshot import _copy_child;"
                                     " _copy_child()"], stdin=subprocess.PIPE, stdout=out, stderr=err)
            with proc.stdin:
                proc.stdin.write(pickle.dumps((str(db_path), now, heartbeat_stale_s)))
            end = time.monotonic() + timeout_s
            while True:
                try:
                    proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if (stop is not None and stop.is_set()) or time.monotonic() > end:
                        proc.kill()
                        proc.wait()
                        if stop is not None and stop.is_set():
                            return None
                        raise ReadApartFailed(f"the first read took over {views.duration_text(timeout_s)}") from None
            if proc.returncode != 0:
                err.seek(0)
                last = (err.read().decode(errors="replace").strip().splitlines() or ["no message"])[-1]
                raise ReadApartFailed(f"the first read failed: {last[:200]}")
            out.seek(0)
            copy, pieces, seen = cls(heartbeat_stale_s), pickle.Unpickler(out), set()
            while (piece := pieces.load()) is not None:
                name, value = piece
                if name in seen:  # the next piece of a big mapping
                    getattr(copy, name).update(value)
                else:
                    setattr(copy, name, value)
                    seen.add(name)
                time.sleep(0)  # the UI thread's turn
        return copy

    def _send(self, out) -> None:
        """Pickle this copy's attributes to ``out`` as ``read_apart`` reads them: big mappings in
        pieces of ``PIECE`` entries, then None."""
        pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
        for name, value in vars(self).items():
            if type(value) is dict and len(value) > self.PIECE:
                items = list(value.items())
                for i in range(0, len(items), self.PIECE):
                    pickler.dump((name, dict(items[i:i + self.PIECE])))
            else:
                pickler.dump((name, value))
        pickler.dump(None)

    def _take_summaries(self, summaries: Iterable[tuple], now: float) -> dict[str, tuple[str, ...]]:
        """Keep ``store.dataset_summaries`` rows (oldest first: queue order); their queue rows at ``now``."""
        n = len(self.DATASET_FIELDS)
        compact_dataset, compact_attempt = self._compact_dataset_row, self._compact_attempt_row
        stale, texts, cells = self.heartbeat_stale_s, self._strings, views.queue_cells
        datasets, latest, rows = self.datasets, self.latest, {}
        counts, first, success_at = self.counts, self.first, self.success_at
        for r in summaries:
            d = compact_dataset(r[:n])
            uid, count = d[0], r[n] or 0
            datasets[uid] = d
            a = None
            if count:
                counts[uid], first[uid] = count, r[n + 1]
                if r[n + 2] is not None:
                    success_at[uid] = r[n + 2]
                if r[n + 3] is not None:
                    a = latest[uid] = compact_attempt(r[n + 3:])
            rows[uid] = cells(d, a, count, now, stale, texts)
        return rows

    def _first_read(self, db: store.Database, now: float) -> None:
        """Everything, once: one row per data set with its attempts' tally and newest attempt
        (``store.dataset_summaries``), full rows only where a screen shows them; the queue rows
        are made here (at ``now``)."""
        datasets = self.datasets
        rows = self._take_summaries(store.dataset_summaries(db, self.DATASET_FIELDS, self.LATEST_FIELDS), now)
        self.totals = Counter(d[5] for d in datasets.values())
        self.failures = Counter(store.attempt_summary_failures(db))
        for d in store.datasets_in_states(db, ("held", "review")):
            self._update_waiting(d)
        self.active = {a["id"]: a for a in store.newest_attempts_active(db)}
        for a in store.newest_attempts_open(db, self.FAILURE_FIELDS):
            self.open_failures[a["uid"]] = self._failure(a, datasets[a["uid"]][5], own=True)
        self._failure_list = None
        self.recent = {a["id"]: a for a in store.recent_attempts(db, self.RECENT)}
        self.rows, self._rows_at = rows, now
        self.texts = {uid: views.search_text(r) for uid, r in rows.items()}
        self.widths = views.cell_widths(views.QUEUE_COLUMNS, rows.values(), most=len(rows))
        self._created = self._done = self._rates = None
        self._reorder = False  # read oldest first: already in queue order

    def _fold(self, datasets: list[dict], attempts: list[dict], db: store.Database) -> set[str]:
        """Fold changed rows in; the failure counts are read again from the store's tally when attempts changed."""
        for d in datasets:
            old = self.datasets.get(d["uid"])
            if old is None:
                self._created, self._reorder = None, True
            else:
                self.totals[old[5]] -= 1
            self.totals[d["state"]] += 1
            self.datasets[d["uid"]] = self._compact_dataset(d)
        newest_full: dict[str, dict] = {}
        for a in attempts:
            aid, uid, state = a["id"], a["uid"], a["state"]
            before = self.active.pop(aid, None)
            newest = self.latest.get(uid)
            is_new = before is None and (newest is None or aid > newest[0]) and aid not in self.recent
            if is_new:
                self.counts[uid] = self.counts.get(uid, 0) + 1
            if uid not in self.first or aid < self.first[uid]:
                self.first[uid] = aid
            if newest is None or aid >= newest[0]:
                self.latest[uid] = self._compact_attempt(a)
                newest_full[uid] = a
            if state in store.ACTIVE_ATTEMPT_STATES:
                self.active[aid] = a
                continue
            if state == "succeeded":
                t = a.get("ended_at") or 0.0
                if t < self.success_at.get(uid, float("inf")):
                    self.success_at[uid] = t
                    self._done = None
            self.recent[aid] = a
        if len(self.recent) > self.RECENT:
            for aid in sorted(self.recent)[:-self.RECENT]:
                del self.recent[aid]
        if attempts:  # a dozen rows, exact also when an ended attempt is reclassified
            self.failures = Counter(store.attempt_summary_failures(db))
        changed = {d["uid"] for d in datasets} | {a["uid"] for a in attempts}
        for uid in changed:
            self._update_failure(uid, newest_full.get(uid), db)
        if datasets:  # rates read each data set's first_outcome: a heartbeat does not change them
            self._rates = None
            for d in datasets:
                self._update_waiting(d)
        return changed

    def _update_waiting(self, d: dict) -> None:
        if d["state"] in ("held", "review"):
            self.waiting[d["uid"]] = d
            self._attention = None
        elif self.waiting.pop(d["uid"], None) is not None:
            self._attention = None

    FAILURE_FIELDS = ("id", "uid", "node", "state", "stage", "category", "signature", "decisive_line", "excerpt",
                      "work_dir", "handle", "created_at", "started_at", "ended_at", "exit_code", "peak_mem_gb")
    _FAILURE_SHARED = ("node", "state", "stage", "category", "signature", "excerpt")

    def _failure(self, a: Mapping, dataset_state: str, own: bool = False) -> dict:
        """An open failure as the triage screen shows it: the attempt's ``FAILURE_FIELDS``, the data
        set's state and its number of attempts; the strings that repeat across failures kept once.

        ``own``: ``a`` is a dict of ``FAILURE_FIELDS`` read for this (completed in place).
        """
        f = a if own else {k: a.get(k) for k in self.FAILURE_FIELDS}
        one = self._strings.setdefault
        for k in self._FAILURE_SHARED:
            if f[k] is not None:
                f[k] = one(f[k], f[k])
        f["dataset_state"], f["attempts"] = dataset_state, self.counts.get(a["uid"], 1)
        return f

    def waiting_attention(self) -> list[tuple[str, str, str]]:
        """(state, uid, reason) of the data sets waiting for an operator (kept until one changes); a held
        data set's reason goes on with the fix `ari status` gives (from its newest attempt's category), a QA2
        review's with its discrepant pairs, each measure and ratio as `ari status` gives them."""
        if self._attention is None:
            from ari_console.triage import fix_for

            out = []
            for d in self.waiting.values():
                why = d.get("reason") or d["state"]
                if d["state"] == "held":
                    newest = self.latest.get(d["uid"])
                    category = newest[9] if newest else None
                    why += " — fix: " + (fix_for(category) if category else "read the detail (Enter), fix the cause")
                if d["state"] == "review" and d["uid"] in self.discrepant:
                    newest = self.latest.get(d["uid"])
                    why = views.review_why(why, readmodel.review_pairs(self.discrepant[d["uid"]],
                                                                      newest[0] if newest else None))
                out.append((d["state"], d["uid"], why))
            self._attention = out
        return self._attention

    def failure_list(self) -> list[dict]:
        """The open failures in the order of each data set's first attempt (kept until one changes)."""
        if self._failure_list is None:
            first = self.first
            self._failure_list = sorted(self.open_failures.values(), key=lambda f: first[f["uid"]])
        return self._failure_list

    def _update_failure(self, uid: str, full: dict | None, db: store.Database) -> None:
        """Keep ``open_failures``: the newest attempt failed and the data set neither succeeded nor runs.

        ``full``: the newest attempt's whole row when the caller has it (the excerpt, the
        signature and the work dir are not in the compact copy); else the one kept, else
        read from the store (a data set that changed state under an attempt that had failed).
        """
        a, d = self.latest.get(uid), self.datasets.get(uid)
        if a and d and a[3] in readmodel.FAILED_ATTEMPT_STATES and d[5] not in ("succeeded", "running"):
            if full is None or full["id"] != a[0]:
                kept = self.open_failures.get(uid)
                full = kept if kept is not None and kept["id"] == a[0] else store.attempt(db, a[0])
            if full is None:  # gone from the store meanwhile
                self.open_failures.pop(uid, None)
                self._failure_list = None
                return
            self.open_failures[uid] = self._failure(full, d[5])
            self._failure_list = None
        elif self.open_failures.pop(uid, None) is not None:
            self._failure_list = None

    def queue_rows(self, now: float, changed: set[str] | None) -> dict[str, tuple[str, ...]]:
        """The queue rows at ``now``: rebuilt for ``changed`` data sets (None: all) and active attempts."""
        if changed is None and self._rows_at == now:  # made by the first read, at this instant
            todo: Iterable[str] = ()
        elif changed is None or not self.rows:
            todo = self.datasets
            self.rows, self.texts = {}, {}
        else:
            todo = changed | {a["uid"] for a in self.active.values()}
            self.rows, self.texts = dict(self.rows), dict(self.texts)  # the previous snapshot keeps its own
        stale, texts, datasets, latest, counts = self.heartbeat_stale_s, self._strings, self.datasets, self.latest, \
            self.counts
        if len(texts) > 200_000:  # elapsed times of a long session: start again rather than grow
            texts.clear()
        rows, search, widths = self.rows, self.texts, self.widths
        for uid in todo:
            d = datasets.get(uid)
            if d is not None:
                cells = rows[uid] = views.queue_cells(d, latest.get(uid), counts.get(uid, 0), now, stale, texts)
                search[uid] = views.search_text(cells)
                for name, cell in zip(views.QUEUE_COLUMNS, cells):
                    if len(cell) > widths.get(name, 0):
                        widths[name] = len(cell)
        if self._reorder:  # new data sets: queue order again (oldest first)
            order = sorted(self.datasets.values(), key=lambda d: (d[6] or 0.0, d[0]))
            self.rows = {d[0]: self.rows[d[0]] for d in order}
            self._reorder = False
        return self.rows

    def dashboard(self, now: float, bins: int = 40) -> readmodel.Dashboard:
        """The dashboard from the aggregates (no pass over the attempt history)."""
        if self._created is None:
            self._created = sorted(now if d[6] is None else d[6]
                                   for d in self.datasets.values() if d[5] not in ("excluded", "skipped"))
        if self._done is None:
            self._done = sorted(self.success_at.values())
        if self._rates is None:  # each data set's first try is kept by the store (first_outcome)
            tried = first_ok = ok = 0
            for d in self.datasets.values():
                if d[7]:
                    tried += 1
                    first_ok += d[7] == "succeeded"
                    ok += d[5] == "succeeded"
            self._rates = ((first_ok, tried), (ok, tried))
        series, span = readmodel.burndown_series(self._created, self._done, now, bins)
        return readmodel.Dashboard(len(self.datasets), {k: v for k, v in self.totals.items() if v}, *self._rates,
                               sorted(((k, v) for k, v in self.failures.items() if v), key=lambda kv: (-kv[1], kv[0])),
                               series, span, running=len(self.active))

    def attempt_list(self) -> list[dict]:
        """Active attempts and the newest ended ones, in id order (what the log screen lists)."""
        return sorted([*self.active.values(), *self.recent.values()], key=lambda a: a["id"])


def build_snapshot(copy: StoreCopy, now: float, version: int, history: Mapping[str, views.NodeHistory],
                   stale_after_s: float, eta: Eta, changed: set[str] | None = None, pending: int = 0) -> Snapshot:
    """The Snapshot of the store copy at ``now`` (``history`` is updated with new probes first).

    ``changed``: the data sets whose rows must be rebuilt (None: every one); ``pending``: the data
    sets ``copy`` leaves out (a :meth:`StoreCopy.first_page`).
    """
    for n in copy.nodes:
        history.setdefault(n["name"], views.NodeHistory()).add(n)
    attempts = copy.attempt_list()
    attempt_rows = views.attempt_rows(attempts, now, recent=StoreCopy.RECENT)
    attention = list(copy.waiting_attention())
    for n in copy.nodes:
        stale = views.node_staleness(n, now, stale_after_s)
        if n.get("drained") or stale:
            attention.append(("node", n["name"], ("drained: " + (n.get("drained_reason") or "")) if n.get("drained")
                              else stale + (f" ({n['probe_error']})" if n.get("probe_error") else "")))
    shown = {int(k) for k in attempt_rows}
    return Snapshot(
        now=now, version=version,
        queue=views.QueueView(copy.queue_rows(now, changed), copy.texts, dict(copy.widths)),
        dashboard=copy.dashboard(now),
        nodes=copy.nodes,
        node_rows=views.node_rows(copy.nodes, history, now, stale_after_s),
        attempts={a["id"]: a for a in attempts if a["id"] in shown},
        attempt_rows=attempt_rows,
        failures=copy.failure_list(),
        qa2=copy.qa2, qa2_rows=copy.qa2_rows, eta=eta, attention=attention, pending=pending)


def compute_eta(db: store.Database, nodes: list[dict], now: float, node_configs: Mapping[str, object]) -> Eta:
    """The estimator's finish time for the queued data sets on the nodes as they are now.

    Returns ``Eta("n/a ...")`` when there is nothing to estimate or the estimator fails:
    the dashboard never shows a number it could not compute.
    """
    try:
        queue, states, est = readmodel.campaign_estimate(db, node_configs.values(), now)
    except Exception as exc:  # the estimator's failure must not take the console down
        return Eta(f"n/a ({exc.__class__.__name__})", computed_at=now)
    if not queue:
        return Eta("nothing queued", computed_at=now)
    if not nodes or not node_configs:
        return Eta("n/a (no node known yet)", computed_at=now)
    if est is None:
        return Eta("n/a (every node drained)", computed_at=now)
    finish = est.finish_at.timestamp()
    text = f"{clock_text(finish)} (in {duration_text(est.remaining_h * 3600)})"
    if est.band and est.band_h[2] > est.band_h[0]:
        text += f", P10-P90 {clock_text(est.band[0].timestamp())} - {clock_text(est.band[2].timestamp())}"
    if est.unplaceable:
        text += f"; {len(est.unplaceable)} cannot be placed"
    return Eta(text, finish, est.remaining_h, now)


def estimate_apart(db_path: Path, nodes: list[dict], now: float, node_configs: Mapping[str, object],
                   timeout_s: float = 1800.0) -> Eta:
    """``compute_eta`` in a child process that opens the campaign at ``db_path`` on its own.

    The estimate replays the whole queue through the scheduler and learns from every finished
    attempt: at 100,000 data sets and a million attempts, tens of seconds of CPU and half a
    gigabyte. In a thread of the console it held the interpreter lock against the screens (the
    queue opened and filtered several times slower while it ran) and left its memory to the
    console's process; in a child it runs on another core and gives its memory back when it ends.
    """
    args = pickle.dumps((str(db_path), nodes, now, dict(node_configs)))
    try:
        proc = subprocess.run([sys.executable, "-c", "from ari_console.tui.snapshot import _eta_child; _eta_child()"],
                              input=args, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Eta(f"n/a (the estimate took over {views.duration_text(timeout_s)})", computed_at=now)
    if proc.returncode != 0:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        return Eta(f"n/a (the estimator failed: {last[:120]})", computed_at=now)
    return pickle.loads(proc.stdout)


def _eta_child() -> None:
    """The child of ``estimate_apart``: its arguments pickled on stdin, the Eta pickled on stdout."""
    db_path, nodes, now, node_configs = pickle.load(sys.stdin.buffer)
    out, sys.stdout = sys.stdout, sys.stderr  # whatever the estimate prints must not mix with the answer
    db = store.open_db(db_path, create=False)
    try:
        eta = compute_eta(db, nodes, now, node_configs)
    finally:
        db.close()
    out.buffer.write(pickle.dumps(eta))
    out.flush()


def _copy_child() -> None:
    """The child of ``StoreCopy.read_apart``: its arguments pickled on stdin, the copy's pieces on stdout."""
    db_path, now, heartbeat_stale_s = pickle.load(sys.stdin.buffer)
    out, sys.stdout = sys.stdout, sys.stderr  # whatever the read prints must not mix with the copy
    db = store.open_db(db_path, create=False)
    try:
        copy = StoreCopy(heartbeat_stale_s)
        copy.read(db, now)
    finally:
        db.close()
    copy._send(out.buffer)
    out.flush()


def timed(fn, *args, **kw):
    """(result, milliseconds) of calling ``fn``."""
    t0 = time.perf_counter()
    result = fn(*args, **kw)
    return result, (time.perf_counter() - t0) * 1000

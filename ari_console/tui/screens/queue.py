"""Every data set of the campaign in one table that stays smooth at 100,000 rows.

The table is a ``VirtualTable``: the worker thread filters, sorts and measures
the rows (``prepare``); the UI thread only hands the result over and draws the
lines on screen (``show``).
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding

from ari_console import actions, store

from .. import views
from ..snapshot import Snapshot
from ..widgets.virtual_table import VirtualTable
from .base import AriScreen

STATE_CYCLE = ("", "failed", "running", "queued", "held", "review", "succeeded")


class QueueScreen(AriScreen):
    """The queue: filter (``/``, ``state:``, ``project:``, ``category:``), sort, retry/hold/release."""

    FILTER_FIELDS = ("state", "project", "category", "node", "array")
    SHOWS_FIRST_PAGE = True
    BINDINGS = [
        Binding("s", "cycle_state", "State", tooltip="Show one state at a time: failed, running, queued, ..."),
        Binding("o", "cycle_sort", "Sort", tooltip="Sort by the next column (again: reverse)"),
        Binding("r", "retry", "Retry", tooltip="Queue the selected data set again"),
        Binding("h", "hold", "Hold", tooltip="Keep the selected data set out of scheduling"),
        Binding("u", "release", "Release", tooltip="Let a held data set be scheduled again"),
        Binding("l", "log", "Log", tooltip="Stream the latest attempt's log"),
        Binding("c", "copy", "Copy cmd", tooltip="Copy the shell command that shows the latest attempt by hand"),
        Binding("enter", "detail", "Detail", tooltip="Open the data set's detail: reason, overrides, attempts, excerpt, fix, QA2; act on it"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.state_filter = ""
        self.sort_column: str | None = None
        self.sort_reverse = False

    def compose_body(self) -> ComposeResult:
        yield VirtualTable(views.QUEUE_COLUMNS, styles={"state": views.state_style}, id="queue-table")

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#queue-table", VirtualTable)

    def prepare(self, snap: Snapshot, flt: views.RowFilter) -> tuple[dict[str, tuple], dict[str, int]]:
        """The queue rows that pass the state key and the ``/`` filter, and the widths of all rows' cells (in a
        thread): those the store copy keeps when the snapshot has them, else measured once per snapshot."""
        rows = snap.queue.rows
        if self.state_filter:
            state = self.state_filter
            rows = {k: v for k, v in rows.items() if v[5] == state}
        rows = views.filter_rows(flt, rows, snap.queue.fields, views.QueueFields.NAMES, snap.queue.texts)
        if self.sort_column:
            rows = views.sort_rows(rows, views.QUEUE_COLUMNS, self.sort_column, self.sort_reverse)
        if snap.queue.widths is not None:  # the copy keeps the widths of every row: nothing to measure
            return rows, dict(snap.queue.widths)
        return rows, self.widths_of(snap, views.QUEUE_COLUMNS, snap.queue.rows)

    def show(self, snap: Snapshot, data: tuple[dict[str, tuple], dict[str, int]]) -> None:
        rows, widths = data
        self.fit_table(self.table, views.QUEUE_LAYOUT, widths)
        self.table.sync(rows, [widths[c] for c in views.QUEUE_COLUMNS])
        sort = f" · sorted by {self.sort_column}{' ↓' if self.sort_reverse else ''}" \
            if self.sort_column else ""
        state = f" · state {self.state_filter}" if self.state_filter else ""
        reading = f" · first {len(snap.queue.rows):,} shown, reading the rest…" if snap.pending else ""
        self.set_status(f"{len(rows):,} of {len(snap.queue.rows) + snap.pending:,} data sets{state}{sort}{reading}")

    def _selected_uid(self) -> str | None:
        uid = self.table.selected_key
        if uid is None:
            self.notify("no data set selected", severity="warning")
        return uid

    def action_cycle_state(self) -> None:
        """Show only the next state (after the last: all)."""
        self.state_filter = STATE_CYCLE[(STATE_CYCLE.index(self.state_filter) + 1) % len(STATE_CYCLE)]
        self.filter_changed()

    def action_cycle_sort(self) -> None:
        """Sort by the next column; on the last column, back to the first reversed."""
        cols = views.QUEUE_COLUMNS
        current = self.sort_column
        self.sort_column = cols[(cols.index(current) + 1) % len(cols)] if current else cols[0]
        self.sort_reverse = False
        self.filter_changed()

    @on(VirtualTable.HeaderSelected, "#queue-table")
    def _header(self, event: VirtualTable.HeaderSelected) -> None:
        """Sort on the clicked column (again: reverse)."""
        column = event.column
        self.sort_reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column = column
        self.filter_changed()

    def action_detail(self) -> None:
        if uid := self._selected_uid():
            self.app.show_dataset(uid)

    @on(VirtualTable.RowSelected, "#queue-table")
    def _row_selected(self, event: VirtualTable.RowSelected) -> None:
        self.action_detail()

    def action_retry(self) -> None:
        if uid := self._selected_uid():
            self.app.operate(f"{uid}: queued again", actions.retry, uid)

    def action_hold(self) -> None:
        if uid := self._selected_uid():
            self.app.operate(f"{uid}: held", actions.hold, uid)

    def action_release(self) -> None:
        if uid := self._selected_uid():
            self.app.operate(f"{uid}: released", actions.release, uid)

    def action_log(self) -> None:
        if uid := self._selected_uid():
            self._with_latest_attempt(uid, "log")

    def action_copy(self) -> None:
        if uid := self._selected_uid():
            self._with_latest_attempt(uid, "copy")

    @work(thread=True, exclusive=True, group="latest-attempt")
    def _with_latest_attempt(self, uid: str, what: str) -> None:
        """Look up the newest attempt of ``uid`` in the store (any age), then open its log or copy its command."""
        found = self.app.read_db(store.attempts, uid)
        self.app.call_from_thread(self._latest_attempt_found, uid, found[-1] if found else None, what)

    def _latest_attempt_found(self, uid: str, attempt: dict | None, what: str) -> None:
        if attempt is None:
            self.notify(f"{uid}: no attempt yet", severity="warning")
        elif what == "log":
            self.app.show_log(attempt["id"])
        else:
            self.app.copy_command(views.shell_commands(attempt, self.app.node_config(attempt["node"])))

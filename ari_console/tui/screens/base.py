"""What every console screen shares: header, footer, the ``/`` filter, snapshots flowing down."""

from __future__ import annotations

import time
from typing import Mapping, Sequence

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Header, Static
from textual.worker import Worker, get_current_worker

from ..snapshot import Snapshot
from .. import views
from ..views import RowFilter, parse_filter
from ..widgets.filter_bar import FilterBar
from ..widgets.fit_footer import FitFooter


class AriScreen(Screen):
    """A screen that renders the app's latest Snapshot while it is the current screen.

    Subclasses compose their body in ``compose_body``; ``prepare`` does the slow
    part (filtering thousands of rows) in a thread worker and ``show`` renders
    its result on the UI thread. ``FILTER_FIELDS`` are the ``key:value`` terms
    their ``/`` filter understands.
    """

    BINDINGS = [Binding("slash", "filter", "Filter", key_display="/", tooltip="Regex filter; key:value terms; ! inverts")]
    FILTER_FIELDS: tuple[str, ...] = ()
    AUTO_FOCUS = "KeyedTable, VirtualTable"

    def __init__(self) -> None:
        super().__init__()
        self.flt = RowFilter()
        self.shown_version = -1
        self._fits: dict[str, tuple] = {}  # table id -> (layout, cell widths): refitted on resize
        self._alerts: list[str] = []  # the lines of the alerts shown
        self._measured: dict[tuple, tuple[int, dict[str, int]]] = {}  # columns -> (snapshot version, widths)
        self._preparing: Worker | None = None  # the prepare worker that runs
        self._wanted: tuple[Snapshot, RowFilter] | None = None  # the newest request not yet prepared
        self._status = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield from self.compose_body()
        yield Static("", id="alerts", classes="alerts")
        yield Static("", id="status", classes="status")
        yield FilterBar()
        yield FitFooter()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self._snapshot_changed, init=False)
        self._snapshot_changed(self.app.snapshot)

    def on_screen_resume(self) -> None:
        self._snapshot_changed(self.app.snapshot)

    SHOWS_FIRST_PAGE = False
    """Whether the screen shows a snapshot of the queue's first page only (``Snapshot.pending``)."""

    def _snapshot_changed(self, snap: Snapshot | None) -> None:
        if snap is None or not self.is_current or (snap.pending and not self.SHOWS_FIRST_PAGE):
            return
        self._show_alerts(getattr(self.app, "unreachable", None) or {})
        self._wanted = (snap, self.flt)
        if self._preparing is None or self._preparing.is_finished:
            self._prepare_next()  # else the running prepare starts the newest request when it ends

    def _prepare_next(self) -> None:
        snap, flt = self._wanted
        self._wanted = None
        self._preparing = self._prepare(snap, flt)

    def _show_alerts(self, lines: dict[str, str], most: int = 3) -> None:
        """One line per unreachable node (at most ``most``, then how many more), on every screen."""
        shown = list(lines.values())[:most]
        if len(lines) > most:
            shown.append(f"… {len(lines) - most} more nodes unreachable (3: nodes)")
        if shown == self._alerts:  # unchanged (every filter key passes here): no layout, no drawing
            return
        alerts = self.query_one("#alerts", Static)
        alerts.update(Text("\n".join(shown), no_wrap=True, overflow="ellipsis"), layout=len(shown) != len(self._alerts))
        alerts.display = bool(shown)
        self._alerts = shown

    @work(thread=True, exclusive=True, group="prepare", exit_on_error=False)
    def _prepare(self, snap: Snapshot, flt: RowFilter) -> None:
        """Run ``prepare`` off the UI thread, then ``_prepared`` on it.

        One prepare runs at a time: the keys typed meanwhile (and refreshes) wait as one
        request, the newest, so a burst of keys costs two prepares and one render, not one
        of each per key (threads started per key would compete for the interpreter with the
        UI thread, each to be thrown away).
        """
        data, error = None, None
        try:
            data = self.prepare(snap, flt)
        except Exception as exc:  # our bug, but the console should go on showing the rest
            error = exc
        try:
            if not get_current_worker().is_cancelled:
                self.app.call_from_thread(self._prepared, snap, data, error)
        except RuntimeError:  # the app is closing
            pass

    def _prepared(self, snap: Snapshot, data: object, error: Exception | None) -> None:
        """Show what a prepare made, unless a newer request waits: then prepare that one first."""
        self._preparing = None
        if self._wanted is not None:
            self._prepare_next()
        elif error is not None:
            self.notify(f"{type(self).__name__}: {error!r}", severity="error")
        else:
            self._show(snap, data)

    def _show(self, snap: Snapshot, data: object) -> None:
        t0 = time.thread_time()  # CPU time of the UI thread (other processes' load does not count)
        self.show(snap, data)
        self.shown_version = snap.version
        if snap.pending and hasattr(self.app, "_page_drawn"):  # a first page: the reader waits until it is drawn
            self.call_after_refresh(self.app._page_drawn.set)
        self.app.ui_ms.append((time.thread_time() - t0) * 1000)

    def prepare(self, snap: Snapshot, flt: RowFilter) -> object:
        """The slow part of rendering ``snap`` with filter ``flt`` (runs in a thread: pure, no widgets)."""
        return None

    def show(self, snap: Snapshot, data: object) -> None:
        """Render ``snap`` and what ``prepare`` made of it (UI thread: only renders)."""

    def widths_of(self, snap: Snapshot, columns: Sequence[str], rows: Mapping[str, tuple]) -> dict[str, int]:
        """The widest cell of each column over ``rows``, every row of ``snap`` (not only those the
        filter keeps): measured once per snapshot and table, in the worker, not once per key typed.

        Column widths only grow on a screen (``fit_table``), so a filter's rows would not change
        them: the rows it hides were measured when they were shown.
        """
        key = (snap.version, tuple(columns))
        measured = self._measured.get(key[1])
        if measured is None or measured[0] != key[0]:
            measured = self._measured[key[1]] = (key[0], views.cell_widths(columns, rows.values()))
        return measured[1]

    def fit_table(self, table, layout: Sequence[views.Col], widths: Mapping[str, int]) -> None:
        """Show the columns of ``layout`` that fit ``table``'s width, given the widths of its cells.

        Widths only grow (the widest seen on this screen), so the columns stay put while the
        operator filters; a resize chooses again. Any table with ``show_columns(name -> width)``
        will do; the choice is ``views.fit_columns``.
        """
        seen = self._fits.get(table.id, (None, None, {}))[2]
        widths = {name: max(w, seen.get(name, 0)) for name, w in widths.items()}
        self._fits[table.id] = (table, layout, widths)
        width = table.size.width or self.app.size.width  # before the first layout: the screen's
        available = width - table.styles.scrollbar_size_vertical
        table.show_columns(views.fit_columns(layout, widths, available, gap=2 * table.cell_padding))

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self._refit)

    def _refit(self) -> None:
        for table, layout, widths in list(self._fits.values()):
            self.fit_table(table, layout, widths)

    def set_status(self, text: str) -> None:
        error = f"  [b red]{self.flt.error}[/]" if self.flt.error else ""
        flt = f"  filter /{self.flt.text}" if self.flt.active else ""
        status = f"{text}{flt}{error}"
        if status != self._status:  # one line high, whatever it says: drawn again, not laid out again
            self._status = status
            self.query_one("#status", Static).update(status, layout=False)

    def action_filter(self) -> None:
        """Open the filter line."""
        self.query_one(FilterBar).open()

    @on(FilterBar.Opened)
    def _filter_opened(self) -> None:
        self.query_one(FitFooter).display = False  # the filter line stands in its place

    @on(FilterBar.Closed)
    def _filter_closed(self) -> None:
        footer = self.query_one(FitFooter)
        footer.display = True
        footer.update_keys()

    @on(FilterBar.Changed)
    def _filter(self, event: FilterBar.Changed) -> None:
        self.flt = parse_filter(event.text, self.FILTER_FIELDS)
        self.filter_changed()

    def filter_changed(self) -> None:
        """Re-render with the new ``self.flt`` (default: the whole snapshot again)."""
        self._snapshot_changed(self.app.snapshot)

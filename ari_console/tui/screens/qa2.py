"""Pipeline images against the archive's QA2 images: ratios and verdicts, discrepant first.

The operator decides here what waits in review (``a`` accepts, ``r`` rejects: hold it or
re-image it, chosen in a list that Esc cancels), as ``ari accept`` / ``ari reject`` do; ``U``
takes a delivery back into review (asking first), as ``ari unaccept`` does.

A campaign of 10,000 data sets holds tens of thousands of pairs: the table is a
``VirtualTable`` and the ``/`` filter, the plot's points and the counts are made in the
screen's worker thread (``prepare``), as on the queue; the UI thread hands them over.
"""

from __future__ import annotations

from typing import Sequence

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual_plotext import PlotextPlot

from ari_console import actions

from .. import views
from ..snapshot import Snapshot
from ..widgets.sky_pair import SkyPair
from ..widgets.virtual_table import VirtualTable
from .base import AriScreen
from .detail import choose_reject, confirm_unaccept

QA2_FIELD_CELLS = {"specmode": views.QA2_COLUMNS.index("specmode"), "verdict": views.QA2_COLUMNS.index("verdict")}
"""The ``key:value`` filter fields of a pair that are cells of its row."""


def plot_points(points: Sequence[tuple[float, str]], most: int = 1000) -> tuple[tuple[int, float, str], ...]:
    """The (x, ratio, verdict) points to plot of the pairs' (ratio, verdict), x counting from 1.

    Of more than ``most`` pairs, each run of ``len // most + 1`` consecutive pairs keeps only
    its lowest and highest ratio of each verdict: a plot a hundred cells wide shows the same
    (the outliers included), and drawing 10,000 points on the UI thread would take longer
    than a key press may.

    >>> plot_points([(1.0, "consistent"), (1.4, "discrepant"), (0.9, "consistent")], most=1)
    ((1, 0.9, 'consistent'), (1, 1.0, 'consistent'), (1, 1.4, 'discrepant'))
    """
    if len(points) <= most:
        return tuple((i + 1, r, v) for i, (r, v) in enumerate(points))
    step = len(points) // most + 1
    out = []
    for start in range(0, len(points), step):
        run = points[start:start + step]
        for verdict in sorted({v for _, v in run}, key=str):
            ratios = [r for r, v in run if v == verdict]
            out.extend(sorted({(start + 1, min(ratios), verdict), (start + 1, max(ratios), verdict)}))
    return tuple(out)


class Qa2Screen(AriScreen):
    """The QA2 pairs table and a plot of each pair's flux ratio (pipeline / QA2)."""

    FILTER_FIELDS = ("verdict", "specmode")
    BINDINGS = [
        Binding("a", "accept", "Accept", tooltip="Deliver the selected data set's products waiting in review"),
        Binding("r", "reject", "Reject", tooltip="Refuse the products waiting in review: hold or re-image"),
        Binding("U", "unaccept", "Un-accept", key_display="U",
                tooltip="Take back the selected data set's delivery: it waits in QA2 review again (asks first)"),
        Binding("enter", "detail", "Detail", tooltip="Open the data set of the selected pair: its state, attempts, "
                "every verdict, the operators' decisions"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._plotted: tuple = ()
        self._drawn_key: str | None = None
        self._pairs: tuple[int, dict[str, dict], int] = (-1, {}, 0)  # (snapshot version, id -> pair, discrepant)

    def compose_body(self) -> ComposeResult:
        yield VirtualTable(views.QA2_COLUMNS, id="qa2-table")
        with Horizontal(id="qa2-lower"):
            yield SkyPair("select a pair to see both images", id="qa2-sky")
            yield PlotextPlot(id="qa2-plot")

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#qa2-table", VirtualTable)

    def _pairs_of(self, snap: Snapshot) -> tuple[dict[str, dict], int]:
        """The pairs by row key and how many are discrepant: made once per snapshot, not per key typed."""
        version, by_id, discrepant = self._pairs
        if version != snap.version:
            by_id = {str(r["id"]): r for r in snap.qa2}
            discrepant = sum(1 for r in snap.qa2 if r.get("verdict") == "discrepant")
            self._pairs = (snap.version, by_id, discrepant)
        return by_id, discrepant

    def prepare(self, snap: Snapshot, flt: views.RowFilter) -> tuple:
        """The pairs that pass the filter, their cells' widths, the plot's points and the counts (in a thread)."""
        by_id, discrepant = self._pairs_of(snap)
        rows = views.filter_rows(flt, snap.qa2_rows, field_cells=QA2_FIELD_CELLS)
        points = plot_points([(by_id[k].get("flux_ratio"), by_id[k].get("verdict")) for k in rows
                              if by_id[k].get("flux_ratio") is not None])
        return rows, self.widths_of(snap, views.QA2_COLUMNS, snap.qa2_rows), points, discrepant, len(snap.qa2)

    def show(self, snap: Snapshot, data: tuple) -> None:
        rows, widths, points, discrepant, total = data
        self.fit_table(self.table, views.QA2_LAYOUT, widths)
        self.table.sync(rows, [widths[c] for c in views.QA2_COLUMNS])
        self._follow_selection()
        if points != self._plotted:
            self._plotted = points
            self._plot(points)
        self.set_status(f"{total:,} pairs · {discrepant:,} discrepant · {len(rows):,} shown")

    @on(VirtualTable.RowHighlighted, "#qa2-table")
    def _pair_highlighted(self, event: VirtualTable.RowHighlighted) -> None:
        self._follow_selection()

    def action_detail(self) -> None:
        """Enter: the detail of the pair's data set (its state, attempts, every verdict, the decisions)."""
        if uid := self._selected_uid():
            self.app.show_dataset(uid)

    def _follow_selection(self) -> None:
        """Draw the selected pair's images when the selection changed (after a filter too)."""
        key = self.table.selected_key
        if key == self._drawn_key:
            return
        self._drawn_key = key
        row = self._pair(key)
        if row is not None:
            self._draw_pair(row, key)

    def _pair(self, key: str | None) -> dict | None:
        """The QA2 pair of row ``key`` in the latest snapshot."""
        snap = self.app.snapshot
        return self._pairs_of(snap)[0].get(key) if snap is not None and key is not None else None

    @work(thread=True, group="qa2-sky")
    def _draw_pair(self, row: dict, key: str) -> None:
        """Read both images (a worker: FITS files may be large) and draw them side by side."""
        from pathlib import Path

        from ari_console.qa2 import thumbs

        missing = [f for f in (row.get("pl"), row.get("qa2")) if not f or not Path(f).is_file()]
        if missing:
            self.app.call_from_thread(self._show_sky, key, f"images not on this machine: {', '.join(map(str, missing))}")
            return
        try:
            pictures = thumbs.pair(row["pl"], row["qa2"], (row.get("detail") or {}).get("sources"), 40, 28)
        except Exception as exc:  # an unreadable image: say so in the panel, keep the console
            self.app.call_from_thread(self._show_sky, key, f"cannot draw this pair: {type(exc).__name__}: {exc}")
            return
        self.app.call_from_thread(self._show_sky, key, pictures)

    def _show_sky(self, key: str, what) -> None:
        """Show pictures or a message, unless another pair was selected meanwhile."""
        if key != self._drawn_key:
            return
        sky = self.query_one("#qa2-sky", SkyPair)
        sky.show_message(what) if isinstance(what, str) else sky.show_pair(*what)

    def _selected_uid(self) -> str | None:
        row = self._pair(self.table.selected_key)
        if row is None:
            self.notify("no QA2 pair selected", severity="warning")
            return None
        return row["uid"]

    def action_accept(self) -> None:
        if uid := self._selected_uid():
            self.app.operate(f"{uid}: accepted, products delivered", actions.accept, uid)

    def action_unaccept(self) -> None:
        if uid := self._selected_uid():
            confirm_unaccept(self.app, uid)

    def action_reject(self) -> None:
        if uid := self._selected_uid():
            choose_reject(self.app, uid)

    def _plot(self, points: tuple) -> None:
        plot = self.query_one("#qa2-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("flux ratio (pipeline / QA2) per pair")
        for verdict, color in (("consistent", "green"), ("discrepant", "red")):
            xs = [x for x, _, v in points if v == verdict]
            ys = [r for _, r, v in points if v == verdict]
            if xs:
                plt.scatter(xs, ys, label=verdict, color=color, marker="dot")
        if points:
            plt.hline(1.0, "gray")
        plot.refresh()

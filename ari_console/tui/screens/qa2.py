"""Pipeline images against the archive's QA2 images: ratios and verdicts, discrepant first."""

from __future__ import annotations

from textual.app import ComposeResult
from textual_plotext import PlotextPlot

from .. import views
from ..snapshot import Snapshot
from ..widgets.keyed_table import KeyedTable
from .base import AriScreen


class Qa2Screen(AriScreen):
    """The QA2 pairs table and a plot of each pair's flux ratio (pipeline / QA2)."""

    FILTER_FIELDS = ("verdict", "specmode")

    def __init__(self) -> None:
        super().__init__()
        self._plotted: tuple = ()

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(views.QA2_COLUMNS, id="qa2-table")
        yield PlotextPlot(id="qa2-plot")

    def show(self, snap: Snapshot, data: object = None) -> None:
        fields = {str(r["id"]): {"verdict": r.get("verdict"), "specmode": r.get("specmode")} for r in snap.qa2}
        rows = views.filter_rows(self.flt, snap.qa2_rows, fields)
        self.query_one("#qa2-table", KeyedTable).sync(rows)
        by_id = {str(r["id"]): r for r in snap.qa2}
        points = tuple((by_id[k].get("flux_ratio"), by_id[k].get("verdict")) for k in rows
                       if by_id[k].get("flux_ratio") is not None)
        if points != self._plotted:
            self._plotted = points
            self._plot(points)
        discrepant = sum(1 for r in snap.qa2 if r.get("verdict") == "discrepant")
        self.set_status(f"{len(snap.qa2)} pairs · {discrepant} discrepant · {len(rows)} shown")

    def _plot(self, points: tuple) -> None:
        plot = self.query_one("#qa2-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("flux ratio (pipeline / QA2) per pair")
        for verdict, color in (("consistent", "green"), ("discrepant", "red")):
            xs = [i + 1 for i, (_, v) in enumerate(points) if v == verdict]
            ys = [r for r, v in points if v == verdict]
            if xs:
                plt.scatter(xs, ys, label=verdict, color=color, marker="dot")
        if points:
            plt.hline(1.0, "gray")
        plot.refresh()

"""The machines: slots, load, memory and scratch with recent history, stale probes, drain."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding

from ari_console import actions

from .. import views
from ..snapshot import Snapshot
from ..widgets.keyed_table import KeyedTable
from .base import AriScreen


class NodesScreen(AriScreen):
    """One row per node; a node whose last probe failed or is old shows ``stale <age>``."""

    BINDINGS = [
        Binding("d", "drain", "Drain", tooltip="Place no new attempts on the selected node"),
        Binding("u", "undrain", "Undrain", tooltip="Place attempts on the selected node again"),
        Binding("c", "copy", "Copy cmd", tooltip="Copy a shell command that shows the node's load by hand"),
    ]

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(views.NODE_COLUMNS, id="nodes-table")

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#nodes-table", KeyedTable)

    def show(self, snap: Snapshot, data: object = None) -> None:
        rows = views.filter_rows(self.flt, snap.node_rows)
        self.fit_table(self.table, views.NODE_LAYOUT, views.cell_widths(views.NODE_COLUMNS, rows.values()))
        self.table.sync(rows)
        stale = sum(1 for r in snap.node_rows.values() if r[-1].startswith(("stale", "unreachable", "never")))
        drained = sum(1 for n in snap.nodes if n.get("drained"))
        self.set_status(f"{len(snap.nodes)} nodes · {stale} stale · {drained} drained · "
                        f"history: last {views.NodeHistory().keep} probes")

    def _node(self) -> str | None:
        name = self.table.selected_key
        if name is None:
            self.notify("no node selected", severity="warning")
        return name

    def action_drain(self) -> None:
        if name := self._node():
            self.app.operate(f"{name}: drained", actions.drain, name, reason="drained from the console")

    def action_undrain(self) -> None:
        if name := self._node():
            self.app.operate(f"{name}: undrained", actions.undrain, name)

    def action_copy(self) -> None:
        if name := self._node():
            node = self.app.node_config(name)
            cmd = "uptime; free -g; df -h " + (getattr(_cfg(self.app, name), "scratch_dir", None) or "/tmp")
            self.app.copy_command([views.remote_command(node, cmd)])


def _cfg(app, name: str):
    for n in (app.config.nodes if app.config else ()):
        if n.name == name:
            return n
    return None

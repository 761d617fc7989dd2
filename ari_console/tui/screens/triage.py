"""What failed and why: failures grouped by category or signature; retry, hold, release; Enter on a
failed data set opens its detail."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from ari_console import actions
from ari_console import readmodel
from ari_console.formatting import gb_text
from ari_console.triage.rules import fix_for

from .. import views
from ..snapshot import Snapshot
from ..widgets.keyed_table import KeyedTable
from ..widgets.virtual_table import VirtualTable
from .base import AriScreen
from .node_picker import NodePicker


class TriageScreen(AriScreen):
    """Groups on top, the group's failed data sets below, the selected one's excerpt at the bottom."""

    FILTER_FIELDS = ("category", "node", "state")
    BINDINGS = [
        Binding("g", "toggle_grouping", "Group by", tooltip="Group by category or by triage signature"),
        Binding("r", "retry", "Retry", tooltip="Queue the selected data set again"),
        Binding("R", "retry_on", "Retry on…", tooltip="Queue the selected data set again, pinned to a node"),
        Binding("h", "hold", "Hold", tooltip="Keep the selected data set for an operator"),
        Binding("u", "release", "Release", tooltip="Let a held data set be scheduled again"),
        Binding("l", "log", "Log", tooltip="Open the failed attempt's log at its decisive line"),
        Binding("c", "copy", "Copy cmd", tooltip="Copy the shell command that shows the log by hand"),
        Binding("enter", "detail", "Detail", tooltip="Open the selected data set's detail: reason, overrides, "
                "attempts, excerpt, fix, QA2; act on it there (on a group: go to its data sets)"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.group_by = "category"
        self.group_key: str | None = None
        self.groups: list[readmodel.FailureGroup] = []
        self.by_id: dict[int, dict] = {}

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(views.GROUP_COLUMNS, id="groups-table")
        yield VirtualTable(views.TRIAGE_COLUMNS, id="failures-table")  # one group can hold thousands
        yield Static("", id="excerpt")

    @property
    def groups_table(self) -> KeyedTable:
        return self.query_one("#groups-table", KeyedTable)

    @property
    def failures_table(self) -> VirtualTable:
        return self.query_one("#failures-table", VirtualTable)

    def prepare(self, snap: Snapshot, flt: views.RowFilter) -> tuple[list[dict], list[readmodel.FailureGroup]]:
        """The failures that pass the filter, and their groups (in a thread)."""
        failures = [f for f in snap.failures
                    if views.matches(flt, views.failure_row(f) + (f.get("signature") or "",),
                                     {"category": f.get("category"), "node": f.get("node"),
                                      "state": f.get("dataset_state")})]
        return failures, readmodel.failure_groups(failures, self.group_by)

    def show(self, snap: Snapshot, data: tuple) -> None:
        failures, self.groups = data
        self.by_id = {f["id"]: f for f in failures}
        groups = {g.key: (str(len(g.attempt_ids)), g.key, fix_for(g.category)) for g in self.groups}
        self.fit_table(self.groups_table, views.GROUP_LAYOUT, views.cell_widths(views.GROUP_COLUMNS, groups.values()))
        self.groups_table.sync(groups)
        keys = [g.key for g in self.groups]
        if self.group_key not in keys:
            self.group_key = keys[0] if keys else None
        self._show_group()
        self.set_status(f"{len(failures)} open failures in {len(self.groups)} groups · grouped by {self.group_by}")

    def _show_group(self) -> None:
        group = next((g for g in self.groups if g.key == self.group_key), None)
        ids = group.attempt_ids if group else ()
        rows = {str(i): views.failure_row(self.by_id[i]) for i in ids}
        self.fit_table(self.failures_table, views.TRIAGE_LAYOUT, views.cell_widths(views.TRIAGE_COLUMNS, rows.values()))
        self.failures_table.sync(rows)
        self._show_excerpt()

    def _show_excerpt(self) -> None:
        f = self._selected(quiet=True)
        if f is None:
            self.query_one("#excerpt", Static).update("")
            return
        cmds = views.shell_commands(f, self.app.node_config(f["node"]))
        sig = f.get("signature") or "(no signature)"
        line = f" · line {f['decisive_line']}" if f.get("decisive_line") else ""
        self.query_one("#excerpt", Static).update(
            f"[b]{f['uid']}[/] attempt #{f['id']} on {f['node']} · {f.get('category') or 'unknown'}{line}\n"
            f"[dim]signature:[/] {sig}\n{(f.get('excerpt') or '').rstrip()}\n[dim]{'  ·  '.join(cmds)}[/]")

    @on(DataTable.RowHighlighted, "#groups-table")
    def _group_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value != self.group_key:
            self.group_key = event.row_key.value
            self._show_group()

    @on(VirtualTable.RowHighlighted, "#failures-table")
    def _failure_highlighted(self, event: VirtualTable.RowHighlighted) -> None:
        self._show_excerpt()

    @on(DataTable.RowSelected, "#groups-table")
    def _group_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a group: into its failed data sets (Enter there opens one's detail)."""
        self.failures_table.focus()

    def action_detail(self) -> None:
        if f := self._selected():
            self.app.show_dataset(f["uid"])

    def _selected(self, quiet: bool = False) -> dict | None:
        key = self.failures_table.selected_key
        f = self.by_id.get(int(key)) if key else None
        if f is None and not quiet:
            self.notify("no failed data set selected", severity="warning")
        return f

    def action_toggle_grouping(self) -> None:
        self.group_by = "signature" if self.group_by == "category" else "category"
        self.group_key = None
        self.filter_changed()

    def action_retry(self) -> None:
        if f := self._selected():
            self.app.operate(f"{f['uid']}: queued again", actions.retry, f["uid"])

    def action_retry_on(self) -> None:
        f = self._selected()
        if f is None:
            return
        snap = self.app.snapshot
        nodes = [(n["name"], f"{n['running']}/{n['slots']} slots, {gb_text(n['mem_gb'])}"
                  + (" · drained" if n.get("drained") else "")) for n in (snap.nodes if snap else [])]

        def chosen(node: str | None) -> None:
            if node:
                self.app.operate(f"{f['uid']}: queued again on {node}", actions.retry, f["uid"], node=node)

        self.app.push_screen(NodePicker(f"Retry {f['uid']} on", nodes), chosen)

    def action_hold(self) -> None:
        if f := self._selected():
            self.app.operate(f"{f['uid']}: held", actions.hold, f["uid"])

    def action_release(self) -> None:
        if f := self._selected():
            self.app.operate(f"{f['uid']}: released", actions.release, f["uid"])

    def action_log(self) -> None:
        if f := self._selected():
            self.app.show_log(f["id"])

    def action_copy(self) -> None:
        if f := self._selected():
            self.app.copy_command(views.shell_commands(f, self.app.node_config(f["node"])))

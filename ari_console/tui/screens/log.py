"""The live log: pick an attempt, its log mirror streams as the engine copies it from the node."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from ari_console import store

from .. import views
from ..snapshot import Snapshot
from ..widgets.keyed_table import KeyedTable
from ..widgets.log_view import LogView
from .base import AriScreen


def pick_mirror(mirrors: list[dict], index: int = 0) -> dict | None:
    """The ``index``-th log mirror, counting from ``runner.log`` (the attempt's main log)."""
    if not mirrors:
        return None
    ordered = sorted(mirrors, key=lambda m: (not str(m["path"]).endswith("runner.log"), str(m["path"])))
    return ordered[index % len(ordered)]


class LogScreen(AriScreen):
    """Attempts on top; the selected one's log below (follow, pause, filter, jump to the decisive line)."""

    BINDINGS = [
        Binding("f", "toggle_follow", "Follow", tooltip="Keep the newest line in view"),
        Binding("space", "toggle_pause", "Pause", tooltip="Stop reading new lines (resume: again)"),
        Binding("d", "decisive", "Decisive", tooltip="Jump to the line triage found decisive"),
        Binding("n", "next_file", "Next file", tooltip="Show the attempt's next log file"),
        Binding("c", "copy", "Copy cmd", tooltip="Copy the shell command that tails this log by hand"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.attempt_id: int | None = None
        self.attempt: dict | None = None
        self.mirrors: list[dict] = []
        self.mirror_index = 0

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(views.ATTEMPT_COLUMNS, id="attempts-table")
        yield Static("", id="log-command")
        yield LogView(id="log-view", poll_s=self.app.log_poll_s)
        yield Static("", id="log-status", classes="status")

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#attempts-table", KeyedTable)

    @property
    def log_view(self) -> LogView:
        return self.query_one("#log-view", LogView)

    def show(self, snap: Snapshot, data: object = None) -> None:
        self.table.sync(snap.attempt_rows)
        if self.app.pending_log is not None:
            self.select_attempt(self.app.pending_log)
            self.app.pending_log = None
        elif self.attempt_id is None and snap.attempt_rows:
            self.select_attempt(int(next(iter(snap.attempt_rows))))
        self.set_status(f"{len(snap.attempt_rows)} attempts (active and recent)")

    def select_attempt(self, attempt_id: int) -> None:
        """Stream the log of ``attempt_id`` (its mirrors are looked up off the UI thread)."""
        self.attempt_id = attempt_id
        self.mirror_index = 0
        key = str(attempt_id)
        if key in self.table.shown:
            self.table.move_cursor(row=self.table.get_row_index(key))
        self._load_mirrors(attempt_id)

    @work(thread=True, exclusive=True, group="mirrors")
    def _load_mirrors(self, attempt_id: int) -> None:
        mirrors = self.app.read_db(store.log_mirrors, attempt_id)
        attempt = self.app.read_db(store.attempt, attempt_id)
        self.app.call_from_thread(self._open, attempt_id, attempt, mirrors)

    def _open(self, attempt_id: int, attempt: dict | None, mirrors: list[dict]) -> None:
        if attempt_id != self.attempt_id:
            return
        self.mirrors = mirrors
        self.attempt = attempt
        chosen = pick_mirror(mirrors, self.mirror_index)
        path = self._local(chosen["mirror"]) if chosen and chosen.get("mirror") else None
        self.log_view.open(path, decisive=(attempt or {}).get("decisive_line"))
        cmds = views.shell_commands(attempt, self.app.node_config(attempt["node"]),
                                    chosen["path"] if chosen else None) if attempt else []
        self.query_one("#log-command", Static).update(
            f"[b]#{attempt_id}[/] " + ("  ·  ".join(cmds) if cmds else "") +
            ("" if path else "  [yellow](no log mirrored yet)[/]"))

    def _local(self, mirror: str) -> Path:
        p = Path(mirror)
        if not p.is_absolute() and self.app.config is not None:
            p = self.app.config.campaign.work_dir / p
        return p

    @on(DataTable.RowSelected, "#attempts-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.select_attempt(int(event.row_key.value))

    @on(LogView.Status)
    def _log_status(self, event: LogView.Status) -> None:
        self.query_one("#log-status", Static).update(event.text)

    def filter_changed(self) -> None:
        self.log_view.set_filter(self.flt)

    def action_toggle_follow(self) -> None:
        self.log_view.follow = not self.log_view.follow

    def action_toggle_pause(self) -> None:
        self.log_view.paused = not self.log_view.paused

    def action_decisive(self) -> None:
        if not self.log_view.jump_to_decisive():
            self.notify("this attempt has no decisive triage line", severity="warning")

    def action_next_file(self) -> None:
        if len(self.mirrors) < 2:
            self.notify("this attempt has one log file", severity="warning")
            return
        self.mirror_index += 1
        self._open(self.attempt_id, self.attempt, self.mirrors)

    def action_copy(self) -> None:
        if self.attempt_id is None or not self.attempt:
            self.notify("no attempt selected", severity="warning")
            return
        chosen = pick_mirror(self.mirrors, self.mirror_index)
        self.app.copy_command(views.shell_commands(self.attempt, self.app.node_config(self.attempt["node"]),
                                                   chosen["path"] if chosen else None))

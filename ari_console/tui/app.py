"""``ari tui``: the operations console.

Threads: a *reader* worker reads the store every ``refresh_s`` (its own SQLite
connection; WAL lets it read while the engine writes) and hands a
:class:`~.snapshot.Snapshot` to the UI thread, which only renders it; an
optional *engine* worker runs the campaign engine's ticks (only when asked:
``ari tui --engine``; opened to look, the console watches and its header says
whether and where the engine runs, read from the engine's lock); operator actions
(retry, hold, drain ...) run in short thread workers calling the same
``ari_console.actions`` functions as the CLI. Screens receive data through the
``snapshot`` reactive and send requests up as method calls on the app.

Above ``first_page_above`` data sets the reader first hands over the queue's
first page (one short query), then makes its first whole read in a child
process (``StoreCopy.read_apart``): read in the reader thread, it held the
interpreter lock for seconds and the UI thread, which needs it at each turn of
its event loop, drew the first page only when the whole read had landed.
"""

from __future__ import annotations

import gc
from importlib import resources
import os
import pickle
import socket
import threading
from collections import deque
from dataclasses import replace
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import var
from textual.screen import Screen
from textual.worker import get_current_worker

from ari_console import store
from ari_console.config import Config
from ari_console.errors import UserError

from . import views
from .screens.dashboard import DashboardScreen
from .screens.log import LogScreen
from .screens.nodes import NodesScreen
from .screens.qa2 import Qa2Screen
from .screens.queue import QueueScreen
from .screens.triage import TriageScreen
from .snapshot import Eta, ReadApartFailed, Snapshot, StoreCopy, build_snapshot, estimate_apart

ETA_RETRY_S = 15.0
PAGE_DRAW_WAIT_S = 0.5
"""How long the reader waits for the open queue to draw its first page before it starts the whole read."""
SCREENS = Binding.Group("Screens", compact=True)  # the footer shows 123456 once; ? lists each

HERE = Path(str(resources.files("ari_console.tui")))  # the .tcss files ship beside their modules
DEFAULT_THEMES = ("ari-dark", "ari-light")


def load_themes() -> list:
    """The Theme objects of :mod:`ari_console.tui.themes`."""
    from .themes import THEMES

    return list(THEMES)


def css_paths() -> list[Path]:
    """The app's .tcss, then each screen's and widget's (styles live beside their widget)."""
    return [HERE / "app.tcss", *sorted((HERE / "widgets").glob("*.tcss")), *sorted((HERE / "screens").glob("*.tcss"))]


class AriApp(App):
    """The campaign console: dashboard, queue, nodes, live log, triage, QA2."""

    TITLE = "ari"
    CSS_PATH = css_paths()
    MODES = {"dashboard": DashboardScreen, "queue": QueueScreen, "nodes": NodesScreen,
             "log": LogScreen, "triage": TriageScreen, "qa2": Qa2Screen}
    DEFAULT_MODE = "dashboard"
    # Screens get -narrow/-wide and -short/-tall classes: the .tcss lays out 80x24 without cutting.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]
    BINDINGS = [
        Binding("1", "switch_mode('dashboard')", "Dash", tooltip="Campaign totals, success rates, ETA", group=SCREENS),
        Binding("2", "switch_mode('queue')", "Queue", tooltip="Every data set", group=SCREENS),
        Binding("3", "switch_mode('nodes')", "Nodes", tooltip="Machines, load, drain", group=SCREENS),
        Binding("4", "switch_mode('log')", "Log", tooltip="Stream an attempt's log", group=SCREENS),
        Binding("5", "switch_mode('triage')", "Triage", tooltip="Failures by category or signature", group=SCREENS),
        Binding("6", "switch_mode('qa2')", "QA2", tooltip="Pipeline vs QA2 image ratios", group=SCREENS),
        Binding("ctrl+t", "toggle_theme", "Light/dark", tooltip="Switch between the light and dark theme"),
        Binding("question_mark,f1", "help", "Help", key_display="?", tooltip="Every key of this screen"),
        Binding("q", "quit", "Quit"),
    ]

    snapshot: var[Snapshot | None] = var(None, always_update=True)

    def __init__(self, db_path: Path | str, config: Config | None = None, *,
                 clock: Callable[[], float] = time.time, theme: str = "ari-dark", engine: bool = False,
                 refresh_s: float = 2.0, eta_every_s: float = 300.0, stale_after_s: float | None = None,
                 log_poll_s: float = 0.25, first_page_above: int | None = 20_000, first_page_rows: int = 500) -> None:
        super().__init__()
        self.first_page_above = first_page_above
        """Above this many data sets the queue first shows its ``first_page_rows`` oldest, read by one
        short query, while the whole store copy is read (None: never)."""
        self.first_page_rows = first_page_rows
        self.db_path = Path(db_path)
        self.config = config
        self.clock = clock
        self.run_engine = engine
        self.refresh_s = refresh_s
        self.eta_every_s = eta_every_s
        poll = config.campaign.poll_interval_s if config else 10.0
        self.stale_after_s = stale_after_s if stale_after_s is not None else max(60.0, 3 * poll)
        self.log_poll_s = log_poll_s
        self.node_history: dict[str, views.NodeHistory] = {}
        self.pending_log: int | None = None
        self.engine_state = "watching the store"
        self.engine_here = False
        self.lock_path = (config.campaign.work_dir if config else self.db_path.parent) / "engine.lock"
        self.unreachable: dict[str, str] | None = None
        """Unreachable nodes (name -> the line shown for it) at the last snapshot; None before the first."""
        self.eta = Eta("estimating…")
        self._eta_busy = False
        self._wake_reader = threading.Event()
        self._page_drawn = threading.Event()
        """Set once a screen has drawn a first page (``Snapshot.pending``): the reader waits for it."""
        self._stop = threading.Event()
        self._initial_theme = theme
        self.first_read_where = "reader thread"
        """Where the first whole read of the store ran: a child process above ``first_page_above``."""
        self.ui_ms: deque[float] = deque(maxlen=1000)
        """UI-thread CPU milliseconds of each screen render (the benchmark reads them)."""

    # -- start and stop -------------------------------------------------------------------

    def on_mount(self) -> None:
        for t in load_themes():
            self.register_theme(t)
        self.theme = self._initial_theme if self._initial_theme in self.available_themes else "textual-dark"
        self.sub_title = self._sub_title()
        self._reader()
        if self.run_engine and self.config is not None:
            self._engine()

    def on_unmount(self) -> None:
        self._stop.set()
        self._wake_reader.set()

    def request_refresh(self) -> None:
        """Read the store now instead of at the next interval (after an action)."""
        self._wake_reader.set()

    # -- the reader ---------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="reader", exit_on_error=False)
    def _reader(self) -> None:
        """Read what changed in the store every ``refresh_s`` and pass each Snapshot to the UI thread."""
        worker = get_current_worker()
        db = store.open_db(self.db_path, create=False)
        version, eta_due = 0, 0.0
        copy = StoreCopy()
        try:
            while not worker.is_cancelled and not self._stop.is_set():
                try:
                    t0 = time.perf_counter()
                    now = self.clock()
                    if copy.rev is None and self.first_page_above is not None \
                            and sum(store.counts(db).values()) > self.first_page_above:
                        page, pending = StoreCopy.first_page(db, now, self.first_page_rows, copy.heartbeat_stale_s)
                        version += 1
                        snap = build_snapshot(page, now, version, {}, self.stale_after_s, self.eta, pending=pending)
                        self._page_drawn.clear()
                        self.call_from_thread(self._set_snapshot, _with_load_ms(snap, (time.perf_counter() - t0) * 1000))
                        if getattr(self.screen, "SHOWS_FIRST_PAGE", False):  # the queue is open: let it draw
                            self._page_drawn.wait(PAGE_DRAW_WAIT_S)     # the page before the read takes a core
                        del page, snap
                        t0 = time.perf_counter()
                        copy = self._read_apart(copy, now)
                        if copy is None:  # the console closed meanwhile
                            return
                    changed = copy.read(db, now)  # after a read apart: what changed while it ran
                    if time.monotonic() >= eta_due and not self._eta_busy:
                        self._eta_busy = True
                        self.call_from_thread(self._estimate, copy.nodes, now)  # workers start on the UI thread
                        eta_due = time.monotonic() + self.eta_every_s
                    if self.eta.finish_at is None and self.eta.computed_at is not None:
                        # an estimate that could not be made is tried again soon (nodes appear, a queue fills)
                        eta_due = min(eta_due, self.eta.computed_at_mono + ETA_RETRY_S)
                    version += 1
                    snap = build_snapshot(copy, now, version, self.node_history, self.stale_after_s, self.eta,
                                          changed)
                    snap = _with_load_ms(snap, (time.perf_counter() - t0) * 1000)
                    # whether (and where) an engine runs changes under a watcher: the lock says
                    self.engine_state = views.engine_line(engine_mod_lock_holder(self.lock_path),
                                                          (os.getpid(), socket.gethostname()))
                    self.call_from_thread(self._set_snapshot, snap)
                except RuntimeError:  # the app is closing
                    return
                except Exception as exc:  # a bad read must not stop the console; say it and go on
                    self._notify_from_thread(f"reading {self.db_path.name} failed: {exc}", "error")
                self._wake_reader.wait(self.refresh_s)
                self._wake_reader.clear()
        finally:
            db.close()

    def _read_apart(self, copy: StoreCopy, now: float) -> StoreCopy | None:
        """``copy`` with its first read made in a child process (``StoreCopy.read_apart``: the UI
        thread stays free to draw the first page meanwhile); read here when the child fails."""
        try:
            apart = StoreCopy.read_apart(self.db_path, now, copy.heartbeat_stale_s, stop=self._stop)
        except (ReadApartFailed, OSError, pickle.UnpicklingError, EOFError) as exc:
            self.first_read_where = f"reader thread (the child failed: {exc})"
            return copy  # the same read in this thread: slower to show, same rows
        self.first_read_where = "child process"
        return apart

    @work(thread=True, exclusive=True, group="eta", exit_on_error=False)
    def _estimate(self, nodes: list[dict], now: float) -> None:
        """The ETA off the reader thread (it replays the queue through the scheduler: seconds at 100,000)."""
        try:
            eta = estimate_apart(self.db_path, nodes, now, self._node_configs())  # a child process: see there
            self.eta = replace(eta, computed_at_mono=time.monotonic())
        finally:
            self._eta_busy = False
        self._wake_reader.set()

    def _set_snapshot(self, snap: Snapshot) -> None:
        unreachable = views.unreachable_nodes(snap.nodes, snap.now)
        if self.unreachable is not None:  # a toast only when a node's reachability changes, never per refresh
            for name, text, severity in views.reachability_changes(self.unreachable, unreachable):
                self.notify(text, severity=severity, timeout=8)
        self.unreachable = unreachable
        self.sub_title = self._sub_title()
        first = not snap.pending and (self.snapshot is None or self.snapshot.pending > 0)  # the first whole one
        self.snapshot = snap
        if first:
            # The first read holds most of what the console keeps (10,000 rows and their cells):
            # out of the collector's full passes from now on, which would otherwise scan it all
            # (100 ms and more at 10,000 data sets) at random key presses. What is freed later is
            # freed by reference counting as before (rows are tuples of text, without cycles);
            # only garbage in cycles among these objects stays: a few widgets replaced later (a
            # footer's keys rebuilt on a resize), once, not per refresh (the benchmark's memory
            # over 120 refreshes stays flat).
            gc.freeze()

    def _sub_title(self) -> str:
        name = self.config.campaign.name if self.config else str(self.db_path)
        return f"{name} · {self.engine_state}"

    def _node_configs(self) -> dict[str, object]:
        return {n.name: n for n in self.config.nodes} if self.config else {}

    def node_config(self, name: str) -> Mapping:
        """What the shell commands need of a node: transport, host, port, user, batch."""
        for n in (self.config.nodes if self.config else ()):
            if n.name == name:
                return {"name": n.name, "transport": n.transport, "host": n.host, "port": n.port,
                        "user": n.user, "batch": n.batch}
        for n in (self.snapshot.nodes if self.snapshot else ()):
            if n["name"] == name:
                return n
        return {"name": name, "transport": "local"}

    # -- the engine -------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def _engine(self) -> None:
        """Run engine ticks every poll interval; watch only if the engine is missing or locked elsewhere."""
        worker = get_current_worker()
        try:
            from ari_console import engine as engine_mod
        except ImportError:
            self._engine_note("no engine in this install — watching the store only", "warning")
            return
        try:
            engine = engine_mod.Engine(self.config)
        except engine_mod.EngineLocked:
            self._engine_note(views.engine_line(engine_mod.lock_holder(self.lock_path)), "warning")
            return
        except Exception as exc:
            self._engine_note(f"engine did not start: {exc}", "error")
            return
        self.engine_state = "engine running in this console"
        self.engine_here = True
        said: set[str] = set()
        try:
            while not worker.is_cancelled and not self._stop.is_set():
                try:
                    report = engine.tick(time.time())
                    for uid, state, category in report.finished:
                        if state != "succeeded":
                            self._notify_from_thread(f"{uid}: {state}" + (f" ({category})" if category else ""),
                                                     "warning")
                    for err in report.errors:
                        if err not in said and not self._node_fault(err, engine_mod.fault_kind):
                            self._notify_from_thread(f"engine: {err}", "warning")
                    said = set(report.errors)
                except Exception as exc:  # a failed tick is reported; the next one tries again
                    self._notify_from_thread(f"engine tick failed: {exc}", "error")
                self._wake_reader.set()
                self._stop.wait(self.config.campaign.poll_interval_s)
        finally:
            self.engine_here = False
            engine.close()

    def _node_fault(self, error: str, kind) -> bool:
        """An engine error that is a node's fault: its status line and change toast tell it, not a toast per tick."""
        names = [n.name for n in self.config.nodes] if self.config else []
        return kind(error) != "other" and any(error.startswith((f"{n}:", f'node "{n}"')) for n in names)

    def _engine_note(self, text: str, severity: str) -> None:
        self.engine_state = text
        self._notify_from_thread(text, severity)
        self._wake_reader.set()

    def _notify_from_thread(self, text: str, severity: str = "information") -> None:
        try:
            self.call_from_thread(self.notify, text, severity=severity, timeout=8)
        except RuntimeError:
            pass

    # -- operator actions ---------------------------------------------------------------------------

    def operate(self, label: str, action: Callable, *args, **kw) -> None:
        """Run ``action(db, *args, now=..., **kw)`` (an ``ari_console.actions`` function) off the UI thread.

        A UserError becomes an error notification with its one line; success
        notifies ``label`` and refreshes the screens.
        """
        self._operate(label, action, args, kw)

    @work(thread=True, group="operator", exit_on_error=False)
    def _operate(self, label: str, action: Callable, args: tuple, kw: dict) -> None:
        db = store.open_db(self.db_path, create=False)
        try:
            action(db, *args, now=self.clock(), **kw)
        except UserError as exc:
            self._notify_from_thread(str(exc), "error")
            return
        finally:
            db.close()
        self._notify_from_thread(label)
        self._wake_reader.set()

    def read_db(self, fn: Callable, *args):
        """``fn(db, *args)`` on a fresh connection (call from a thread worker, never the UI thread)."""
        db = store.open_db(self.db_path, create=False)
        try:
            return fn(db, *args)
        finally:
            db.close()

    def show_log(self, attempt_id: int) -> None:
        """Switch to the live log of ``attempt_id``."""
        self.pending_log = attempt_id
        self.switch_mode("log")

    def copy_command(self, commands: Iterable[str]) -> None:
        """Put the first shell command on the clipboard and show all of them."""
        commands = list(commands)
        if not commands:
            self.notify("no command for this row", severity="warning")
            return
        self.copy_to_clipboard(commands[0])
        self.notify("copied: " + "\n".join(commands), timeout=10)

    def action_help(self) -> None:
        """Show every key of the current screen (its own, the shared ones and the app's)."""
        from .screens.detail import HelpScreen

        rows, seen = [], set()
        for key, active in self.screen.active_bindings.items():
            b = active.binding
            if not b.description or (b.action, b.description) in seen:
                continue
            seen.add((b.action, b.description))
            text = b.tooltip or b.description
            if b.action == "select_cursor":  # a table's Enter opens the row (the detail of a data set)
                text = "Open the selected row: a data set's detail (reason, attempts, excerpt, fix, QA2)"
            rows.append((b.key_display or key, text))
        self.push_screen(HelpScreen(rows))

    def show_dataset(self, uid: str) -> None:
        """Open the detail screen of ``uid`` (Enter on a queue or triage row)."""
        from .screens.detail import DatasetScreen

        self.push_screen(DatasetScreen(uid))

    # -- themes and the command palette ------------------------------------------------------------------

    def action_toggle_theme(self) -> None:
        """Switch between the light and the dark theme."""
        dark = self.current_theme.dark
        want = "ari-light" if dark else "ari-dark"
        if want not in self.available_themes:
            want = "textual-light" if dark else "textual-dark"
        self.theme = want

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every key binding of the current screen, in the command palette too."""
        yield from super().get_system_commands(screen)
        seen = set()
        for key, active in screen.active_bindings.items():
            b = active.binding
            if not b.show or not b.description or (b.action, b.description) in seen:
                continue
            seen.add((b.action, b.description))
            node = active.node

            async def run(action: str = b.action, node=node) -> None:
                await self.run_action(action, node)

            yield SystemCommand(f"{b.description} ({b.key_display or key})", b.tooltip or b.description, run)


def engine_mod_lock_holder(path: Path) -> dict | None:
    """The engine lock's holder (None: no engine runs), or None when this install has no engine."""
    try:
        from ari_console.engine import lock_holder
    except ImportError:
        return None
    return lock_holder(path)


def _with_load_ms(snap: Snapshot, ms: float) -> Snapshot:
    return replace(snap, load_ms=ms)

"""One data set in full (Enter on a queue or triage row): what `ari datasets show UID` prints, and the
actions an operator takes on it: retry, cancel, hold, release, override, and at QA2 review accept,
reject and un-accept (a data set whose products have no QA2 pair to compare is not on the QA2 screen)."""

from __future__ import annotations

import io
import shlex

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from ari_console import actions, readmodel
from ari_console.formatting import detail_tables

from ..widgets.fit_footer import FitFooter


def detail_renderable(detail: dict, now: float | None = None) -> Group:
    """The detail of ``readmodel.dataset_detail`` as the console shows it (same content as the CLI)."""
    head, tables = detail_tables(detail, now)
    parts: list = [Text(head, style="bold")]
    for title, columns, rows in tables:
        grid = Table(*columns, title=title, expand=True)
        for row in rows:
            grid.add_row(*row)
        parts.append(grid)
    parts.append(Text("\n".join(readmodel.detail_notes(detail))))
    return Group(*parts)


class DatasetScreen(ModalScreen):
    """A data set's reason, overrides, attempts, failure excerpt, fix and QA2 verdicts."""

    BINDINGS = [
        Binding("escape,enter", "dismiss", "Back"),
        Binding("r", "act('retry')", "Retry", tooltip="Queue it again"),
        Binding("c", "act('cancel')", "Cancel", tooltip="Stop its running attempt (asks first: the work is lost)"),
        Binding("h", "act('hold')", "Hold", tooltip="Keep it out of scheduling"),
        Binding("u", "act('release')", "Release", tooltip="Let a held data set be scheduled again"),
        Binding("o", "override", "Override", tooltip="Memory, walltime, node or recipe parameters for the next attempt"),
        Binding("a", "accept", "Accept", tooltip="Deliver the products waiting in QA2 review"),
        Binding("x", "reject", "Reject", tooltip="Refuse the products waiting in QA2 review: hold or re-image"),
        Binding("U", "unaccept", "Un-accept", key_display="U",
                tooltip="Take back its delivery: the accepted attempt waits in QA2 review again (asks first)"),
        # a modal screen hides the app's keys: its own help key lists this screen's
        Binding("question_mark,f1", "app.help", "Help", key_display="?", tooltip="Every key of this screen"),
    ]

    def __init__(self, uid: str) -> None:
        super().__init__()
        self.uid = uid
        self.text = ""
        """What the screen shows, as plain text (tests read it)."""

    def compose(self) -> ComposeResult:
        with Vertical(id="detail-box"):
            with VerticalScroll():
                yield Static("reading…", id="detail")
            yield Input(placeholder="mem_gb=32 walltime_h=48 node=hpc niter=1000 (Enter applies, Escape drops)",
                        id="override-input", classes="hidden")
        yield FitFooter()  # whole keys at 80 columns, ? help always

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="detail")
    def _load(self) -> None:
        detail = self.app.read_db(readmodel.dataset_detail, self.uid)
        renderable = detail_renderable(detail, self.app.clock())
        console = Console(width=120, record=True, file=io.StringIO())
        console.print(renderable)
        self.text = console.export_text()
        self.app.call_from_thread(self.query_one("#detail", Static).update, renderable)

    def action_act(self, what: str) -> None:
        if what == "cancel":
            self.app.push_screen(ConfirmScreen(f"Stop the running attempt of {self.uid}? Its work so far is lost."),
                                 lambda yes: yes and self._do("cancel"))
            return
        self._do(what)

    def _do(self, what: str) -> None:
        kw = {"config": self.app.config} if what == "cancel" else {}
        self.app.operate(f"{self.uid}: {what} done", getattr(actions, what), self.uid, **kw)
        self.set_timer(0.5, self._load)

    def action_accept(self) -> None:
        self.app.operate(f"{self.uid}: accepted, products delivered", actions.accept, self.uid)
        self.set_timer(0.5, self._load)

    def action_reject(self) -> None:
        choose_reject(self.app, self.uid, then=lambda: self.set_timer(0.5, self._load))

    def action_unaccept(self) -> None:
        confirm_unaccept(self.app, self.uid, then=lambda: self.set_timer(0.5, self._load))

    def action_override(self) -> None:
        box = self.query_one("#override-input", Input)
        box.remove_class("hidden")
        box.focus()
        self.call_after_refresh(box.focus)  # a hidden input takes focus only once laid out

    @on(Input.Submitted, "#override-input")
    def _override(self, event: Input.Submitted) -> None:
        event.input.add_class("hidden")
        try:
            kw = parse_override(event.value)
        except ValueError as exc:
            self.notify(str(exc), severity="error")
            return
        if kw:
            self.app.operate(f"{self.uid}: override {event.value}", actions.override, self.uid, **kw)
            self.set_timer(0.5, self._load)
        event.input.value = ""


def parse_override(text: str) -> dict:
    """``key=value`` words as ``actions.override`` keywords: mem_gb, walltime_h, node; the rest are recipe params.

    >>> parse_override("mem_gb=32 node=hpc niter=1000")
    {'mem_gb': 32.0, 'node': 'hpc', 'params': {'niter': 1000}}
    """
    out: dict = {}
    params: dict = {}
    for word in shlex.split(text):
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ValueError(f"{word!r}: write key=value, e.g. mem_gb=32")
        if key in ("mem_gb", "walltime_h"):
            try:
                out[key] = float(value)
            except ValueError:
                raise ValueError(f"{word!r}: {key} must be a number, e.g. {key}=32") from None
        elif key == "node":
            out["node"] = value
        else:
            for cast in (int, float):
                try:
                    params[key] = cast(value)
                    break
                except ValueError:
                    continue
            else:
                params[key] = value
    if params:
        out["params"] = params
    return out


REJECT_CHOICES = [("hold", "hold it: the products are not delivered"),
                  ("retry", "queue it again: re-image (the rejected attempt stays in the history)")]


def choose_reject(app, uid: str, then=None) -> None:
    """Reject the products waiting in review after a choice, hold or re-image (Esc: keep them in review):
    the QA2 screen's ``r`` and the detail screen's ``x``, as ``ari reject [--retry]``."""
    from .node_picker import NodePicker

    def chosen(choice: str | None) -> None:
        if choice in ("hold", "retry"):
            app.operate(f"{uid}: rejected, " + ("queued again" if choice == "retry" else "held"), actions.reject, uid,
                        retry=choice == "retry", reason="rejected at QA2 review in the console")
            if then is not None:
                then()

    app.push_screen(NodePicker(f"Reject the products of {uid}? (Esc: keep them in review)", REJECT_CHOICES), chosen)


def confirm_unaccept(app, uid: str, then=None) -> None:
    """Ask, then take back ``uid``'s delivery (``actions.unaccept``): the QA2 and detail screens' ``U``."""

    def answered(yes: bool | None) -> None:
        if yes:
            app.operate(f"{uid}: un-accepted, waits in QA2 review again", actions.unaccept, uid,
                        note="from the console")
            if then is not None:
                then()

    app.push_screen(ConfirmScreen(f"Take back the delivery of {uid}? Its products wait in QA2 review again "
                                  "(kept, not deleted)."), answered)


class ConfirmScreen(ModalScreen[bool]):
    """Ask before an action that discards work: y confirms, n or Escape does nothing."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Static(f"{self.question}  [b]y[/]es / [b]n[/]o", id="confirm")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class HelpScreen(ModalScreen):
    """Every key of the screen underneath, with what it does (``?`` or F1)."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def __init__(self, rows: list[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        t = Table("key", "what it does", title="Keys of this screen", expand=True)
        for key, text in self.rows:
            t.add_row(key, text)
        yield VerticalScroll(Static(t), id="help-box")

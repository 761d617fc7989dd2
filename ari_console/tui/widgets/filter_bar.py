"""The ``/`` filter line (k9s style): a regex, ``key:value`` terms, ``!`` to invert.

The line takes the footer's place while the operator types (both are docked at the
bottom, one line high): opening and closing it changes no other widget's size, so the
tables above are not laid out or drawn again, and the footer, hidden meanwhile, does
not rebuild its keys for the input's focus. Enter keeps the filter (the screen's status
line names it), Esc clears it; ``/`` again edits it; a click elsewhere closes the line as
Enter does.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label


class FilterBar(Horizontal):
    """A one-line filter input, hidden until opened; posts ``FilterBar.Changed`` as the user types."""

    class Changed(Message):
        """The filter text changed (``""``: no filter)."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Opened(Message):
        """The line was opened: it stands where the footer was."""

    class Closed(Message):
        """The line was closed: the footer may come back."""

    def __init__(self, placeholder: str = "regex, key:value, ! inverts — Enter keeps, Esc clears", **kw) -> None:
        super().__init__(**kw)
        self._placeholder = placeholder

    def compose(self) -> ComposeResult:
        yield Label("/", id="filter-prompt")
        yield Input(placeholder=self._placeholder, id="filter-input")

    @property
    def text(self) -> str:
        return self.query_one(Input).value

    @property
    def is_open(self) -> bool:
        return self.display

    def open(self) -> None:
        """Show the line and focus its input."""
        if not self.display:
            self.display = True  # ``display``, not a class: a class change restyles the bar's subtree
            self.post_message(self.Opened())
        self.query_one(Input).focus()
        # a hidden input cannot take focus: ask again once the bar is laid out, or the keys typed
        # next would reach the screen's bindings (``5`` of ``X1f5`` switching to the triage screen)
        self.call_after_refresh(self.query_one(Input).focus)

    def close(self, clear: bool = False) -> None:
        """Hide the line (keeping the filter unless ``clear``) and give the focus back to the table."""
        if clear:
            self.query_one(Input).value = ""
        tables = self.screen.query("DataTable, VirtualTable")
        self.screen.set_focus(tables.first() if tables else None)
        if self.display:
            self.display = False
            self.post_message(self.Closed())

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(event.value))

    @on(Input.Blurred)
    def _blurred(self, event: Input.Blurred) -> None:
        """A click elsewhere on the screen closes the line too (the filter stays); the app losing
        the terminal's focus does not (the focus comes back to the input)."""
        event.stop()
        focused = self.screen.focused
        if self.display and focused is not None and focused is not event.input:
            self.display = False
            self.post_message(self.Closed())

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.close()

    def key_escape(self) -> None:
        self.close(clear=True)

"""A modal list of nodes: where to retry a data set."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option


class NodePicker(ModalScreen[str | None]):
    """Pick one node (Enter) or none (Esc); dismisses with the node's name."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, nodes: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.nodes = nodes

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Label(self.title_text, classes="title")
            yield OptionList(*[Option(f"{name}  [dim]{info}[/]", id=name) for name, info in self.nodes])

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)

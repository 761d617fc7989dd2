"""A footer that keeps its keys whole at any width (80 columns included).

Textual's Footer scrolls its keys off the right edge when they do not fit,
cutting ``? Help`` and ``q Quit`` first. This one goes compact on narrow
terminals, groups the screen keys ``1``-``6``, and leaves out the screen's
last keys when they still do not fit (:func:`~ari_console.tui.views.footer_keys`
decides); ``?`` lists every key, the left-out ones included.

Textual's Footer rebuilds its key widgets whenever the focus moves (opening the ``/``
filter moves it to the input and back): some thirty widgets mounted and styled, a few
hundred milliseconds at 10,000 rows. This one rebuilds only when what it would show
changed (:meth:`FitFooter.shown`: the keys, their labels, whether each is enabled, the
width), and not while it is hidden (the filter line stands in its place meanwhile).
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from .. import views

COMPACT_BELOW = 100
"""Terminal columns under which the footer packs its keys (no padding around each key)."""
ALWAYS = ("help", "quit")
FIRST = ("switch_mode",)  # the screen keys (a group): moving between screens comes before a screen's extras
PALETTE_CELLS = 14


class FitFooter(Footer):
    """The footer of every console screen: whole keys only, ``?`` and ``q`` always."""

    DEFAULT_CSS = """
    FitFooter.-compact FooterLabel {
        margin: 0 1 0 0;
    }
    """

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self._composed: tuple | None = None
        """What the last compose showed (``shown()``); None: nothing yet."""

    def on_mount(self) -> None:
        super().on_mount()
        self.compact = self.app.size.width < COMPACT_BELOW

    def bindings_changed(self, screen) -> None:
        """Rebuild the keys only when the screen's shown keys changed (not on every focus move)."""
        self._bindings_ready = True
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            self.call_after_refresh(self.update_keys)

    def update_keys(self) -> None:
        """Rebuild the keys if what they show changed since the last time (and the footer is shown)."""
        if self.display and self.is_attached and self.shown() != self._composed:
            self.call_later(self.recompose)

    def shown(self) -> tuple:
        """What the footer shows: the width, then each shown binding's key, label, action, group and state."""
        return (self.app.size.width, self.compact, tuple(
            (key, binding.description, binding.action, binding.group, enabled, tooltip)
            for key, (_, binding, enabled, tooltip) in self.screen.active_bindings.items() if binding.show))

    def on_resize(self, event: events.Resize) -> None:
        compact = self.app.size.width < COMPACT_BELOW
        if compact != self.compact:
            self.compact = compact
        self.call_after_refresh(self.update_keys)

    def compose(self) -> ComposeResult:
        if self._bindings_ready:
            self._composed = self.shown()
        width = self.app.size.width
        self.show_command_palette = width >= COMPACT_BELOW  # ctrl+p works anyway; its key is in the ? help
        keep = views.footer_keys(self._items(), width - (PALETTE_CELLS if self.show_command_palette else 0),
                                 ALWAYS, FIRST)
        grouped = self._grouped()
        for widget in super().compose():
            if isinstance(widget, FooterKey) and "-command-palette" not in widget.classes \
                    and _name(widget.action, grouped) not in keep:
                continue
            yield widget

    def _grouped(self) -> set[str]:
        """The actions (without arguments) of the screen's binding groups."""
        return {_name(b.action) for _, b, _, _ in self.screen.active_bindings.values() if b.group is not None}

    def _items(self) -> list[tuple[str, int]]:
        """(name, cells) of each footer key in order; a binding group is one item, named by its action."""
        items: dict[str, int] = {}
        pad = 2 if self.compact else 3  # " key desc" and a margin, or " key " and "desc "
        grouped = self._grouped()
        for _, binding, _, _ in self.screen.active_bindings.values():
            if not binding.show:
                continue
            name = _name(binding.action, grouped)
            key = len(self.app.get_key_display(binding))
            if binding.group is not None:  # keys side by side, then the group's label once
                items[name] = items.get(name, len(binding.group.description) + 3) + key
            elif name not in items:
                items[name] = key + len(binding.description) + pad
        return list(items.items())


def _name(action: str, grouped: set[str] | None = None) -> str:
    """A footer item's name: a grouped binding's action without its arguments (``switch_mode('queue')`` ->
    ``switch_mode``: the group is one item), any other's whole (``act('retry')`` and ``act('hold')`` are two
    keys), without the ``app.`` namespace (``app.help``, a modal screen's own help key -> ``help``)."""
    action = action.removeprefix("app.")
    base = action.split("(", 1)[0]
    return base if grouped is None or base in grouped else action

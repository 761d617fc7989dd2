"""A table that holds 100,000 rows and draws only the lines on screen (Textual's Line API).

A DataTable keeps a ``Row`` object and a dict of cells per row, and measures
every new cell: at 100,000 data sets that is seconds to open and a gigabyte of
memory. ``VirtualTable`` keeps what the screen gave it and nothing per row:

- ``sync(rows)`` takes the ordered ``key -> cells`` mapping (cells are plain
  strings) and keeps it as it is, with the list of its keys: the row order;
- ``render_line(y)`` draws line ``y`` of the window from those cells when
  Textual asks for it: the header on line 0, then the rows under the scroll
  position; a column may give each cell a style (the state's colour);
- column widths come from ``measure`` (the widest cell of each column), which
  a screen calls in its worker thread for big tables; they only grow, so a
  refresh never makes the columns jump;
- the cursor follows the key the operator left it on when rows come and go
  or the order changes, and moves to the nearest row when that key leaves.

Keys: up/down, page up/down, home/end; a click on the cursor row (or
``action_select``: a screen binds Enter to what opening a row means there)
posts ``RowSelected``; a click on a header posts ``HeaderSelected``; each move
of the cursor to another key posts ``RowHighlighted``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

PADDING = 1
"""Blank cells on each side of a column."""


def measure(rows: Iterable[Sequence[str]], columns: Sequence[str]) -> list[int]:
    """The widest cell of each column (headers included), in terminal cells.

    >>> measure([("uid://A001/X1", "ok"), ("u2", "failed")], ("uid", "state"))
    [13, 6]
    """
    widths = [cell_len(c) for c in columns]
    for i, column in enumerate(zip(*rows)):
        if i < len(widths):
            # plain ASCII (uids, numbers, states): one character, one cell; count the rest cell by cell
            size = len if "".join(column).isascii() else cell_len
            widths[i] = max(widths[i], max(map(size, column), default=0))
    return widths


class VirtualTable(ScrollView, can_focus=True):
    """Rows by key, drawn line by line: memory and time per refresh follow the window, not the rows."""

    COMPONENT_CLASSES = {"virtual-table--header", "virtual-table--cursor", "virtual-table--even-row"}

    DEFAULT_CSS = """
    VirtualTable {
        height: 1fr;
        background: $surface;
        color: $foreground;
        & > .virtual-table--header { text-style: bold; background: $panel; color: $foreground; }
        &:ansi > .virtual-table--header { background: ansi_bright_blue; color: ansi_default; }
        & > .virtual-table--even-row { background: $surface-lighten-1 50%; }
        &:dark > .virtual-table--even-row { background: $surface-darken-1 40%; }
        & > .virtual-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus {
            background-tint: $foreground 5%;
            & > .virtual-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
        }
    }
    """

    BINDINGS = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
    ]

    class RowHighlighted(Message):
        """The cursor is on another row (``key`` None: the table is empty)."""

        def __init__(self, table: "VirtualTable", key: str | None, row: int) -> None:
            super().__init__()
            self.table, self.key, self.row = table, key, row

        @property
        def control(self) -> "VirtualTable":
            return self.table

    class RowSelected(Message):
        """A click on the cursor row (or ``action_select``)."""

        def __init__(self, table: "VirtualTable", key: str, row: int) -> None:
            super().__init__()
            self.table, self.key, self.row = table, key, row

        @property
        def control(self) -> "VirtualTable":
            return self.table

    class HeaderSelected(Message):
        """A click on the header of ``column``."""

        def __init__(self, table: "VirtualTable", column: str) -> None:
            super().__init__()
            self.table, self.column = table, column

        @property
        def control(self) -> "VirtualTable":
            return self.table

    def __init__(self, columns: Sequence[str], styles: Mapping[str, Callable[[str], str | None]] | None = None,
                 **kw) -> None:
        """``styles``: column -> function of a cell's text giving its style (e.g. the state's colour)."""
        super().__init__(**kw)
        self._column_names = tuple(columns)
        self._styles = {self._column_names.index(name): fn for name, fn in (styles or {}).items()}
        self._style_cache: dict[str, Style | None] = {}
        self._line_styles: tuple[Style, ...] | None = None
        self._rows: Mapping[str, tuple] = {}
        self._keys: list[str] = []
        self._index: dict[str, int] | None = None
        self._widths = [cell_len(c) for c in self._column_names]
        self._cursor = 0
        self._highlighted: str | None = None
        self._visible: list[tuple[int, int | None]] | None = None  # None: every column at its cells' width
        self.filling = False
        """Always False: a sync is complete when it returns (the KeyedTable it replaces filled in steps)."""

    # -- what the screens read ------------------------------------------------------------

    @property
    def shown(self) -> Mapping[str, tuple]:
        """The rows of the table (key -> cells), in table order."""
        return self._rows

    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def cursor_row(self) -> int:
        return self._cursor

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None for an empty table."""
        return self._keys[self._cursor] if 0 <= self._cursor < len(self._keys) else None

    @property
    def column_widths(self) -> tuple[int, ...]:
        return tuple(self._widths)

    def get_row_index(self, key: str) -> int:
        """The row of ``key`` (KeyError when it is not shown)."""
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self._keys)}
        return self._index[key]

    # -- what the screens do ---------------------------------------------------------------

    def sync(self, rows: Mapping[str, tuple], widths: Sequence[int] | None = None) -> int:
        """Show ``rows`` (key -> cells, in their order); the number of rows.

        ``widths``: the columns' widths from ``measure`` (computed here when not given:
        a screen with many rows measures in its worker thread). The mapping is kept as
        it is, not copied: give a new one for each sync.
        """
        selected = self.selected_key
        self._rows = rows
        self._keys = list(rows)
        self._index = None
        if widths is None:
            widths = measure(rows.values(), self._column_names)
        self._widths = [max(a, b) for a, b in zip(self._widths, widths)]
        row = self._cursor
        if selected is not None and not (row < len(self._keys) and self._keys[row] == selected) and selected in rows:
            row = self.get_row_index(selected)  # the order changed under the cursor (no index of 100,000 keys else)
        self.virtual_size = Size(self._total_width(), len(self._keys) + 1)
        self._move(row, scroll=row != self._cursor)
        self.refresh()
        return len(self._keys)

    cell_padding = PADDING

    def show_columns(self, columns: Mapping[str, int | None]) -> None:
        """Draw only ``columns`` (name -> width, None: as wide as its cells), in table order
        (what ``AriScreen.fit_table`` chooses for the table's width)."""
        self._visible = sorted((self._column_names.index(n), w) for n, w in columns.items()
                               if n in self._column_names)
        self.virtual_size = Size(self._total_width(), len(self._keys) + 1)
        self.refresh()

    @property
    def drawn_columns(self) -> dict[str, int]:
        """The columns on screen: name -> cells each takes (padding included), in table order."""
        return {self._column_names[i]: w + 2 * PADDING for i, w in self._layout()}

    def _layout(self) -> list[tuple[int, int]]:
        """(column index, width) of each drawn column."""
        if self._visible is None:
            return list(enumerate(self._widths))
        return [(i, self._widths[i] if w is None else w) for i, w in self._visible]

    def move_cursor(self, row: int) -> None:
        """Put the cursor on ``row`` (clamped to the rows there are) and scroll it into view."""
        self._move(row, scroll=True)

    # -- keys and mouse --------------------------------------------------------------------

    def action_cursor_up(self) -> None:
        self.move_cursor(self._cursor - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self._cursor + 1)

    def action_page_up(self) -> None:
        self.move_cursor(self._cursor - max(1, self._window_rows() - 1))

    def action_page_down(self) -> None:
        self.move_cursor(self._cursor + max(1, self._window_rows() - 1))

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        self.move_cursor(len(self._keys) - 1)

    def action_select(self) -> None:
        if self.selected_key is not None:
            self.post_message(self.RowSelected(self, self.selected_key, self._cursor))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        x = offset.x + round(self.scroll_x)
        if offset.y == 0:
            column = self._column_at(x)
            if column is not None:
                self.post_message(self.HeaderSelected(self, column))
            return
        row = offset.y - 1 + round(self.scroll_y)
        if 0 <= row < len(self._keys):
            if row == self._cursor:
                self.action_select()
            else:
                self.move_cursor(row)

    # -- drawing ---------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the window: the header on line 0, then the rows under the scroll position."""
        scroll_x, scroll_y = round(self.scroll_x), round(self.scroll_y)
        width = self.scrollable_content_region.width
        if self._line_styles is None:
            self._line_styles = self._compute_line_styles()
        base, header, odd, even, cursor = self._line_styles
        if y == 0:
            style = header
            strip = self._line(self._column_names, style, False)
        else:
            row = y - 1 + scroll_y
            if row >= len(self._keys):
                return Strip.blank(width, base)
            style = cursor if row == self._cursor else odd if row % 2 else even  # 0-based, as DataTable
            strip = self._line(self._rows[self._keys[row]], style, row == self._cursor)
        return strip.crop(scroll_x, scroll_x + width).extend_cell_length(width, style)

    def _line(self, cells: Sequence[str], style: Style, cursor: bool) -> Strip:
        segments = []
        pad = " " * PADDING
        for i, w in self._layout():
            text = str(cells[i])
            n = cell_len(text)
            cell = pad + (text + " " * (w - n) if n <= w else _cut(text, w)) + pad
            fn = self._styles.get(i)
            cell_style = self._cell_style(fn(text)) if fn is not None else None
            if cell_style is not None and not cursor:
                segments.append(Segment(cell, style + cell_style))
            else:
                segments.append(Segment(cell, style))
        return Strip(segments, self._total_width())

    def _cell_style(self, name: str | None) -> Style | None:
        if not name:
            return None
        if name not in self._style_cache:
            self._style_cache[name] = Style.parse(name)
        return self._style_cache[name]

    def _compute_line_styles(self) -> tuple[Style, Style, Style, Style, Style]:
        """(base, header, odd row, even row, cursor row): read from the CSS once per style change."""
        base = self.rich_style
        even = base + self.get_component_rich_style("virtual-table--even-row")
        return (base, base + self.get_component_rich_style("virtual-table--header"), base, even,
                base + self.get_component_rich_style("virtual-table--cursor"))

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._line_styles = None
        self.refresh()

    def _on_focus(self, event: events.Focus) -> None:
        self._line_styles = None  # the cursor's colours follow the focus
        super()._on_focus(event)

    def _on_blur(self, event: events.Blur) -> None:
        self._line_styles = None
        super()._on_blur(event)

    # -- helpers ---------------------------------------------------------------------------

    def _total_width(self) -> int:
        layout = self._layout()
        return sum(w for _, w in layout) + 2 * PADDING * len(layout)

    def _column_at(self, x: int) -> str | None:
        edge = 0
        for i, w in self._layout():
            edge += w + 2 * PADDING
            if x < edge:
                return self._column_names[i]
        return None

    def _window_rows(self) -> int:
        """Rows that fit under the header."""
        return max(1, self.scrollable_content_region.height - 1)

    def _move(self, row: int, scroll: bool) -> None:
        row = max(0, min(row, len(self._keys) - 1))
        if row != self._cursor:
            self.refresh()
        self._cursor = row
        if scroll:
            top, window = round(self.scroll_y), self._window_rows()
            if row < top:
                self.scroll_to(y=row, animate=False, immediate=True)
            elif row >= top + window:
                self.scroll_to(y=row - window + 1, animate=False, immediate=True)
        key = self.selected_key
        if key != self._highlighted:
            self._highlighted = key
            self.post_message(self.RowHighlighted(self, key, row))


def _cut(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells, its last cell an ellipsis."""
    if width <= 0:
        return ""
    out, used = [], 0
    for ch in text:
        w = cell_len(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…" + " " * (width - 1 - used)

"""A DataTable kept in step with an ordered dict of rows by row key.

``sync(rows)`` makes the table show ``rows`` in their order: it adds the new
keys, drops the gone ones and updates only the cells that changed, so the
cursor stays on the row the operator left it on. Whatever the number of rows
that leave, the row order is rebuilt once (Textual's ``remove_row`` re-indexes
every row for each removal: 16 ms a row at 10,000 rows), and new rows are
added within a time budget per frame, the rest on the next frames.

Which columns show is the caller's too (``show_columns``, with the widths
``views.fit_columns`` chose for the terminal): ``shown`` keeps every cell of
a row, the table draws the chosen columns.

Sorting is the caller's: it orders ``rows`` (in a thread, see
``AriScreen.prepare``) and the table follows. Column widths are measured from
the cells' text (plain strings), not by rendering every cell.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from rich.cells import cell_len
from rich.text import Text
from textual._two_way_dict import TwoWayDict
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets._data_table import Row
from textual.widgets.data_table import CellKey, RowKey


@dataclass(frozen=True)
class SyncStats:
    """What one sync changed."""

    added: int = 0
    removed: int = 0
    updated: int = 0
    pending: bool = False


class KeyedTable(DataTable):
    """A DataTable whose rows follow an ordered ``key -> cells`` mapping."""

    def __init__(self, columns: Sequence[str], styles: Mapping[str, Callable[[str], str | None]] | None = None,
                 **kw) -> None:
        """``styles``: column -> function of a cell's text giving its style (e.g. the state's colour)."""
        kw.setdefault("cursor_type", "row")
        kw.setdefault("zebra_stripes", True)
        super().__init__(**kw)
        self._column_names = tuple(columns)
        self._visible: dict[str, int | None] = {name: None for name in self._column_names}
        self._styles = dict(styles or {})
        self._shown: dict[str, tuple] = {}
        self._generation = 0
        self.filling = False
        """True while rows of the last sync are still being added (on the next frames)."""

    def on_mount(self) -> None:
        for name, width in self._visible.items():
            self.add_column(name, key=name, width=width)

    def show_columns(self, widths: Mapping[str, int | None]) -> None:
        """Draw only these columns (name -> width; None: as wide as the cells), in this order.

        Rare (a resize, or cells much wider than before): the table is refilled, the cursor
        stays on its row.
        """
        widths = {name: w for name, w in widths.items() if name in self._column_names}
        if list(widths.items()) == list(self._visible.items()):
            return
        self._visible = widths
        if not self.is_mounted:
            return
        rows, selected = self._shown, self.selected_key
        self.clear(columns=True)
        self._shown = {}
        for name, width in widths.items():
            self.add_column(name, key=name, width=width)
        if rows:
            self.sync(rows)
            if selected in self._shown:
                self.move_cursor(row=self.get_row_index(selected))

    @property
    def shown(self) -> Mapping[str, tuple]:
        """The rows on screen (key -> cells), in table order."""
        return self._shown

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None for an empty table."""
        if not self._shown or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        return self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value

    def sync(self, rows: Mapping[str, tuple], budget_ms: float = 15.0) -> SyncStats:
        """Make the table show ``rows`` (key -> cells) in their order, touching only what changed.

        New rows are added for at most ``budget_ms`` per call; the rest follow
        on the next frames (unless a newer sync comes first), so a first fill
        of 100,000 rows never freezes the UI.
        """
        self._generation += 1
        deadline = time.thread_time() + budget_ms / 1000
        selected = self.selected_key
        old = self._shown
        removed = [k for k in old if k not in rows]
        if removed:
            self._drop_rows(removed, [k for k in old if k in rows])
        updated = added = 0
        pending = False
        shown: dict[str, tuple] = {}
        new: list[tuple[str, tuple]] = []
        columns = self._column_names
        for key, cells in rows.items():
            before = old.get(key)
            if before is None:
                if pending:
                    continue
                new.append((key, cells))
                if len(new) == 256:  # add in chunks, and stop when the frame's time is spent
                    self._add_rows(new)
                    added += len(new)
                    new = []
                    pending = time.thread_time() > deadline
            elif before != cells:
                for name, a, b in zip(columns, before, cells):
                    if a != b and name in self._visible:
                        self.update_cell(key, name, self._styled(name, b))
                        updated += 1
            shown[key] = cells
        if new:
            self._add_rows(new)
            added += len(new)
        if removed or added or list(shown) != list(old):
            self._set_order(shown, selected)
        self._shown = shown
        self.filling = pending
        if pending:
            generation = self._generation
            self.set_timer(0.01, lambda: self._continue(rows, generation, budget_ms))
        return SyncStats(added, len(removed), updated, pending)

    def _continue(self, rows: Mapping[str, tuple], generation: int, budget_ms: float) -> None:
        if generation == self._generation:
            t0 = time.thread_time()
            self.sync(rows, budget_ms)
            timings = getattr(self.app, "ui_ms", None)
            if timings is not None:
                timings.append((time.thread_time() - t0) * 1000)

    def _drop_rows(self, keys: list[str], keep: Iterable[str]) -> None:
        """Remove many rows at once (the order is rebuilt after, by ``_set_order``)."""
        if self._updated_cells:
            gone = {RowKey(k) for k in keys}
            self._updated_cells = {c for c in self._updated_cells if c.row_key not in gone}
        if len(keys) > len(self.rows) // 2:  # most rows leave: rebuild from those that stay
            stay = [RowKey(k) for k in keep]
            self.rows = {rk: self.rows[rk] for rk in stay}
            self._data = {rk: self._data[rk] for rk in stay}
        else:
            for key in keys:
                row_key = RowKey(key)
                self._data.pop(row_key, None)
                self.rows.pop(row_key, None)
        if self._new_rows:
            self._new_rows = {rk for rk in self._new_rows if rk in self.rows}

    def _add_rows(self, new: list[tuple[str, tuple]]) -> None:
        """Add rows at once (what ``add_row`` does per row, without re-clamping the cursor each time)."""
        keys = [c.key for c in self.ordered_columns]
        was_empty = not self.rows
        names = self._column_names
        index = [names.index(k.value) for k in keys]
        styled = [(j, names[i]) for j, i in enumerate(index)
                  if names[i] in self._styles or self._visible.get(names[i]) is not None]
        for key, cells in new:
            row_key = RowKey(key)
            cells = [cells[i] for i in index]
            for j, name in styled:
                cells[j] = self._styled(name, cells[j])
            self._data[row_key] = dict(zip(keys, cells))
            self.rows[row_key] = Row(row_key, 1)
            self._new_rows.add(row_key)
        if was_empty and self.show_cursor and self.cursor_type != "none" and self.columns:
            self.call_after_refresh(self._highlight_cursor)

    def _styled(self, column: str, value):
        """A cell as drawn: in its style, and ending in … when its column is cut narrower than it."""
        fn = self._styles.get(column)
        style = fn(value) if fn is not None and isinstance(value, str) else None
        if self._visible.get(column) is not None and isinstance(value, str):
            return Text(value, style=style or "", no_wrap=True, overflow="ellipsis")
        return Text(value, style=style) if style else value

    def _set_order(self, shown: Mapping[str, tuple], selected: str | None) -> None:
        """Index the rows in the order of ``shown``; keep the cursor on ``selected`` when it stays."""
        self._row_locations = TwoWayDict({RowKey(key): index for index, key in enumerate(shown)})
        self._require_update_dimensions = True
        self._update_count += 1
        self.check_idle()
        self.refresh(layout=True)
        if selected is not None and selected in shown:
            row = self._row_locations.get(RowKey(selected))
            if row != self.cursor_row:
                self.cursor_coordinate = Coordinate(row, self.cursor_column)
        else:
            self.cursor_coordinate = self.cursor_coordinate  # clamped to the rows left

    # -- column widths from the text, not from rendering each cell ---------------------

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        columns = self.ordered_columns
        widths = {c.key: c.content_width for c in columns}
        other = []
        for row_key in new_rows:
            data = self._data.get(row_key)
            if data is None:
                continue
            if not all(isinstance(v, (str, Text)) for v in data.values()):
                other.append(row_key)
                continue
            for column_key, value in data.items():
                w = _width(value)
                if w > widths.get(column_key, 0):
                    widths[column_key] = w
        before = [c.content_width for c in columns]
        for c in columns:
            c.content_width = widths[c.key]
        super()._update_dimensions(other)  # measures only the rows with rich cells; sets the virtual size
        if [c.content_width for c in columns] != before:
            # Cells drawn before this idle pass are cached under the current update count at
            # their old widths (DataTable does not count a width change): count one, draw again.
            self._update_count += 1
            self.refresh()

    def _update_column_widths(self, updated_cells: set[CellKey]) -> None:
        plain = set()
        for cell in updated_cells:
            value = self._data.get(cell.row_key, {}).get(cell.column_key)
            if isinstance(value, (str, Text)):
                column = self.columns.get(cell.column_key)
                if column is not None and _width(value) > column.content_width:
                    column.content_width = _width(value)
                    self._require_update_dimensions = True
                plain.add(cell)
        rest = updated_cells - plain
        if rest:
            super()._update_column_widths(rest)
        elif plain:
            self.refresh()


def _width(value: str | Text) -> int:
    """Terminal cells a plain string or a rich Text takes (columns grow to fit; they never shrink)."""
    return value.cell_len if isinstance(value, Text) else cell_len(value)

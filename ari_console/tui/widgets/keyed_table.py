"""A DataTable kept in step with a dict of rows by row key.

``sync(rows)`` adds the new keys, removes the gone ones and updates only the
cells that changed: a 10,000-row table is never cleared and refilled, so the
cursor and scroll position stay where the operator left them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from textual.widgets import DataTable


@dataclass(frozen=True)
class SyncStats:
    """What one sync changed."""

    added: int = 0
    removed: int = 0
    updated: int = 0
    pending: bool = False


class KeyedTable(DataTable):
    """A DataTable whose rows follow a ``key -> cells`` mapping."""


    def __init__(self, columns: Sequence[str], **kw) -> None:
        kw.setdefault("cursor_type", "row")
        kw.setdefault("zebra_stripes", True)
        super().__init__(**kw)
        self._column_names = tuple(columns)
        self._shown: dict[str, tuple] = {}
        self._generation = 0
        self.sort_column: str | None = None
        self.sort_reverse = False
        self.sort_key: Callable[[str, object], object] | None = None

    def on_mount(self) -> None:
        for name in self._column_names:
            self.add_column(name, key=name)

    @property
    def shown(self) -> Mapping[str, tuple]:
        """The rows on screen (key -> cells)."""
        return self._shown

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None for an empty table."""
        if not self._shown or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        return self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value

    def sync(self, rows: Mapping[str, tuple], batch: int = 500) -> SyncStats:
        """Make the table show ``rows`` (key -> cells), touching only what changed.

        At most ``batch`` new rows are added per call; the rest follow on the
        next frames (unless a newer sync comes first), so a first fill of
        10,000 rows never freezes the UI.
        """
        self._generation += 1
        old = self._shown
        removed = [k for k in old if k not in rows]
        for key in removed:
            self.remove_row(key)
        added = updated = 0
        pending = False
        shown: dict[str, tuple] = {}
        columns = self._column_names
        for key, cells in rows.items():
            before = old.get(key)
            if before is None:
                if added >= batch:
                    pending = True
                    continue
                self.add_row(*cells, key=key)
                added += 1
            elif before != cells:
                for name, a, b in zip(columns, before, cells):
                    if a != b:
                        self.update_cell(key, name, b)
                        updated += 1
            shown[key] = cells
        self._shown = shown
        if self.sort_column and (added or updated):
            self._resort()
        if pending:
            generation = self._generation
            self.set_timer(0.02, lambda: self._continue(rows, generation))
        return SyncStats(added, len(removed), updated, pending)

    def _continue(self, rows: Mapping[str, tuple], generation: int) -> None:
        if generation == self._generation:
            t0 = time.perf_counter()
            self.sync(rows)
            timings = getattr(self.app, "ui_ms", None)
            if timings is not None:
                timings.append((time.perf_counter() - t0) * 1000)

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort on ``column`` (again: flip the order); keeps sorting as rows change."""
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        self._resort()

    def _resort(self) -> None:
        column, key_fn = self.sort_column, self.sort_key
        if key_fn is None:
            self.sort(column, reverse=self.sort_reverse)
        else:
            self.sort(column, key=lambda cell: key_fn(column, cell), reverse=self.sort_reverse)

"""Small helpers every command uses: JSON output, tables, one-line errors."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table

from .jsonout import emit_json, plain as _plain  # noqa: F401  (re-exported: commands use clikit.emit_json)

out = Console()
err = Console(stderr=True)


WHOLE_COLUMNS = ("id", "uid", "which", "state")
"""Columns whose cells an operator copies into the next command (a uid, an attempt id) or reads first
(the state): never cut or wrapped; the other columns wrap instead, even at 80 columns."""


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a rich table with ``columns`` and ``rows`` (None shown as '-'), ``WHOLE_COLUMNS`` kept whole."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    t = Table(title=title, header_style="bold")
    for i, col in enumerate(columns):
        if col in WHOLE_COLUMNS:
            t.add_column(col, no_wrap=True, min_width=max([len(col)] + [len(r[i]) for r in cells if i < len(r)]))
        else:
            t.add_column(col)
    for row in cells:
        t.add_row(*row)
    out.print(t)


def warn(message: str) -> None:
    """One line on stderr for a per-item problem that does not stop the batch."""
    err.print(message, markup=False, highlight=False, soft_wrap=True)


class lazy_module:  # noqa: N801 (reads like the module it stands for)
    """A module imported on first attribute access, so `ari` starts without loading every command's engine.

    >>> json_mod = lazy_module("json"); json_mod.dumps([1])
    '[1]'
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._module = None

    def __getattr__(self, attr: str):
        if self._module is None:
            import importlib

            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

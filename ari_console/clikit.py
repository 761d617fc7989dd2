"""Small helpers every command uses: JSON output, tables, one-line errors."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table

from .jsonout import emit_json, plain as _plain  # noqa: F401  (re-exported: commands use clikit.emit_json)

out = Console()
err = Console(stderr=True)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a rich table with ``columns`` and ``rows`` (None shown as '-')."""
    t = Table(title=title, header_style="bold")
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*("-" if v is None else str(v) for v in row))
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

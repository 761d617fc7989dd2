"""The `ari` entry point: the hot read `ari status --json` answers without loading the full CLI.

Scripts and dashboards poll ``ari status --json``; typer and rich alone take
longer to import than the whole answer. This module parses exactly that
command line (with an optional ``-c/--config``) and answers with the same
function the full command uses; every other command line goes to
:mod:`ari_console.cli`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _take_config(args: list[str]) -> tuple[Path | None, list[str]]:
    """``(PATH, rest)`` when ``args`` starts with ``-c PATH`` / ``--config PATH`` / ``--config=PATH``."""
    if len(args) >= 2 and args[0] in ("-c", "--config"):
        return Path(args[1]), args[2:]
    if args and args[0].startswith("--config="):
        return Path(args[0].split("=", 1)[1]), args[1:]
    return None, args


def fast_status_argv(argv: list[str]) -> Path | None:
    """The config path when ``argv`` is ``status --json`` with an optional ``-c PATH`` before or after
    the subcommand or the flag, else None (the full CLI then parses it).

    >>> fast_status_argv(["-c", "x/ari.toml", "status", "--json"]), fast_status_argv(["status"])
    (PosixPath('x/ari.toml'), None)
    >>> fast_status_argv(["status", "-c", "y.toml", "--json"]), fast_status_argv(["status", "--json", "--config=z"])
    (PosixPath('y.toml'), PosixPath('z'))
    """
    config, rest = _take_config(list(argv))
    if rest[:1] != ["status"]:
        return None
    rest, seen_json = rest[1:], False
    while rest:
        if rest[0] == "--json" and not seen_json:
            seen_json, rest = True, rest[1:]
            continue
        given, after = _take_config(rest)
        if given is None:
            return None
        config, rest = given, after
    if not seen_json:
        return None
    return config or Path(os.environ.get("ARI_CONFIG") or "ari.toml")


def main() -> None:
    config = fast_status_argv(sys.argv[1:])
    if config is None:
        from .cli import main as full_cli

        full_cli()
        return
    from .errors import UserError
    from .jsonout import emit_json
    from .readmodel import status_report

    import sqlite3

    try:
        emit_json(status_report(config))
    except UserError as exc:
        sys.stderr.write(f"ari: {exc}\n")
        sys.exit(2)
    except sqlite3.DatabaseError as exc:
        from . import store

        sys.stderr.write(f"ari: {store.db_error(store.last_path(), exc)}\n")
        sys.exit(2)

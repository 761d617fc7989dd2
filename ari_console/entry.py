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


def status_report(config_path: Path) -> dict:
    """What `ari status --json` prints: campaign totals, success rates, nodes, running attempts."""
    from . import store
    from .config import load_config

    cfg = load_config(config_path)
    db = store.open_db(cfg.campaign.db_path)
    store.sync_nodes(db, cfg.nodes, store.now())
    return {"campaign": cfg.campaign.name, **store.status(db)}


def fast_status_argv(argv: list[str]) -> Path | None:
    """The config path when ``argv`` is exactly ``[-c PATH] status --json``, else None.

    >>> fast_status_argv(["-c", "x/ari.toml", "status", "--json"]), fast_status_argv(["status"])
    (PosixPath('x/ari.toml'), None)
    """
    config = Path(os.environ.get("ARI_CONFIG") or "ari.toml")
    rest = list(argv)
    if len(rest) >= 2 and rest[0] in ("-c", "--config"):
        config, rest = Path(rest[1]), rest[2:]
    elif rest and rest[0].startswith("--config="):
        config, rest = Path(rest[0].split("=", 1)[1]), rest[1:]
    return config if rest == ["status", "--json"] else None


def main() -> None:
    config = fast_status_argv(sys.argv[1:])
    if config is None:
        from .cli import main as full_cli

        full_cli()
        return
    from .errors import UserError
    from .jsonout import emit_json

    try:
        emit_json(status_report(config))
    except UserError as exc:
        sys.stderr.write(f"ari: {exc}\n")
        sys.exit(2)

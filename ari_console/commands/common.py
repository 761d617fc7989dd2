"""What every command shares: the campaign it works on, and the options declared once.

The root (:mod:`ari_console.cli`) puts a :class:`Campaign` in the click context
(``ctx.obj``); a command takes ``ctx: typer.Context`` and its own ``config:
ConfigOpt = None`` so ``-c`` works before or after the subcommand
(``ari -c x status`` and ``ari status -c x``). Commands never import ``cli.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..config import CONFIG_NAME

if TYPE_CHECKING:
    from ..config import Config
    from ..store import Database

def _completion_config(ctx) -> Config | None:
    """The campaign's config for shell completion (the command's ``-c``, the root's, else the default), or None."""
    from ..config import load_config

    path = None
    while ctx is not None and path is None:
        path = ctx.params.get("config") or ctx.params.get("config_path")
        ctx = ctx.parent
    try:
        return load_config(Path(path) if path else default_config_path())
    except Exception:  # noqa: BLE001 — completion never fails loudly: a broken config completes nothing
        return None


def complete_uid(ctx: typer.Context, incomplete: str) -> list[str]:
    """Uids of the campaign's data sets that start with what is typed, in the spelling typed
    (``uid://A001/...`` or ``uid___A001_...``); read-only and quiet on any problem."""
    import sqlite3

    cfg = _completion_config(ctx)
    if cfg is None or not cfg.campaign.db_path.is_file():
        return []
    underscored = incomplete.startswith("uid_")
    try:
        conn = sqlite3.connect(f"{cfg.campaign.db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
        try:
            uids = [r[0] for r in conn.execute("SELECT uid FROM datasets ORDER BY uid")]
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    spelled = [u.replace("://", "___").replace("/", "_") if underscored else u for u in uids]
    return [u for u in spelled if u.startswith(incomplete)]


def complete_node(ctx: typer.Context, incomplete: str) -> list[str]:
    """Names of the campaign's nodes that start with what is typed (from ari.toml; quiet on any problem)."""
    cfg = _completion_config(ctx)
    return [n.name for n in cfg.nodes if n.name.startswith(incomplete)] if cfg is not None else []


ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", "-c", metavar="PATH", show_default=False,
    help="The campaign's ari.toml (default: $ARI_CONFIG, else ./ari.toml).")]
JsonOpt = Annotated[bool, typer.Option(
    "--json", metavar="", help="Print JSON (the documented keys) instead of a table.")]
UidArg = Annotated[str, typer.Argument(
    metavar="UID", autocompletion=complete_uid, help="MOUS uid (uid://A001/X1296/X1d3 or uid___A001_X1296_X1d3).")]
NodeArg = Annotated[str, typer.Argument(metavar="NAME", autocompletion=complete_node, help="Node name.")]


def flag(*names: str, help: str) -> typer.models.OptionInfo:  # noqa: A002 (typer's own keyword)
    """A boolean switch shown without a metavar (``--force``, not ``--force <bool>``)."""
    return typer.Option(*names, metavar="", help=help)


@dataclass
class Campaign:
    """The campaign a command works on: its ari.toml, loaded on first use."""

    config_path: Path

    def config(self) -> Config:
        from ..config import load_config

        return load_config(self.config_path)

    def db(self, create: bool = True) -> Database:
        from .. import store

        return store.open_db(self.config().campaign.db_path, create=create)


def default_config_path() -> Path:
    """``$ARI_CONFIG``, else ``./ari.toml``."""
    return Path(os.environ.get("ARI_CONFIG") or CONFIG_NAME)


def campaign(ctx: typer.Context | None, config: Path | None = None) -> Campaign:
    """The campaign of this command line: the command's own ``-c``, else the root's, else the default."""
    if config is not None:
        return Campaign(Path(config))
    root = ctx.find_object(Campaign) if ctx is not None else None
    return root if root is not None else Campaign(default_config_path())


def run_action(camp: Campaign, name: str, *args, **kwargs):
    """Call ``actions.<name>(db, *args, now=..., **kwargs)`` on the campaign's store, nodes synced first."""
    from .. import actions, store

    cfg = camp.config()
    db = store.open_db(cfg.campaign.db_path)
    store.sync_nodes(db, cfg.nodes, store.now())
    return getattr(actions, name)(db, *args, now=store.now(), **kwargs)

"""Open the console on a campaign: what `ari tui` and the demo call (Textual loads only here)."""

from __future__ import annotations

from pathlib import Path

from ..config import load_config
from ..errors import UserError

THEMES = ("ari-dark", "ari-light")


def open_console(config_path: Path, theme: str = "ari-dark", engine: bool = False, refresh: float = 2.0) -> None:
    """Run the console on the campaign of ``config_path`` until the operator quits.

    ``engine``: run the campaign engine inside (``ari tui --engine``); by default the console only
    watches, so opening it to look never launches anything.
    """
    if theme not in THEMES:
        raise UserError(f'--theme "{theme}": unknown theme — use one of {", ".join(THEMES)}')
    if refresh <= 0:
        raise UserError(f"--refresh {refresh:g}: must be a positive number of seconds — write 2")
    cfg = load_config(config_path)
    if not cfg.campaign.db_path.exists():
        raise UserError(f"{cfg.campaign.db_path}: no campaign database yet — run `ari datasets import` first")
    from .. import store

    with store.open_db(cfg.campaign.db_path, create=False) as db:
        store.verify(db)  # a damaged state file is one line now, not an empty dashboard
    import sys

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError("ari tui needs a terminal (stdin and stdout are not one) — run `ari run` to run the "
                        "campaign headless, or `ari status` to look at it")
    from .app import AriApp

    AriApp(cfg.campaign.db_path, cfg, theme=theme, engine=engine, refresh_s=refresh).run()

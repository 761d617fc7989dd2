"""``ari tui``: open the operations console on a campaign."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ari_console.config import CONFIG_NAME, load_config
from ari_console.errors import UserError

THEMES = ("ari-dark", "ari-light")


def tui(
    theme: Annotated[str, typer.Option(help="Colour theme: ari-dark or ari-light (ctrl+t switches).")] = "ari-dark",
    engine: Annotated[bool, typer.Option(help="Run the campaign engine inside the console (unless another "
                                              "process holds the campaign lock; then only watch).")] = True,
    refresh: Annotated[float, typer.Option(help="Seconds between reads of the campaign store.")] = 2.0,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", hidden=True,
                                                   help="The campaign's ari.toml (normally given to `ari`).")] = None,
) -> None:
    """Open the operations console: dashboard, queue, nodes, live log, triage, QA2."""
    open_console(config or _root_config(), theme=theme, engine=engine, refresh=refresh)


def _root_config() -> Path:
    """The --config given to ``ari`` (the root callback keeps it), or ari.toml."""
    try:
        from ari_console.cli import state
    except ImportError:
        return Path(CONFIG_NAME)
    return Path(state.config_path)


def open_console(config_path: Path, theme: str = "ari-dark", engine: bool = True, refresh: float = 2.0) -> None:
    """Run the console on the campaign of ``config_path`` until the operator quits."""
    if theme not in THEMES:
        raise UserError(f'--theme "{theme}": unknown theme — use one of {", ".join(THEMES)}')
    if refresh <= 0:
        raise UserError(f"--refresh {refresh:g}: must be a positive number of seconds — write 2")
    cfg = load_config(config_path)
    if not cfg.campaign.db_path.exists():
        raise UserError(f"{cfg.campaign.db_path}: no campaign database yet — run `ari datasets import` first")
    from ari_console.tui.app import AriApp

    AriApp(cfg.campaign.db_path, cfg, theme=theme, engine=engine, refresh_s=refresh).run()


app = typer.Typer(help="The operations console (Textual TUI).")
app.command(name="tui")(tui)


def main() -> None:
    """``python -m ari_console.commands.tui``: like ``ari tui``, a user mistake is one line and exit 2."""
    import sys

    try:
        app(standalone_mode=True)
    except UserError as exc:
        print(f"ari: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

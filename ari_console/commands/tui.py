"""``ari tui``: open the operations console on a campaign (the console itself: :mod:`ari_console.tui`)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import ConfigOpt, campaign

app = typer.Typer(help="The operations console (Textual TUI).")


@app.command()
def tui(
    ctx: typer.Context,
    theme: Annotated[str, typer.Option(help="Colour theme: ari-dark or ari-light (ctrl+t switches).")] = "ari-dark",
    engine: Annotated[bool, typer.Option(metavar="", help=(
        "Run the campaign engine inside the console. Without it the console only watches (its header says whether "
        "and where an engine runs) and the actions still work; an engine running elsewhere is only watched."))] = False,
    refresh: Annotated[float, typer.Option(metavar="SECONDS",
                                           help="Seconds between reads of the campaign store.")] = 2.0,
    config: ConfigOpt = None,
) -> None:
    """Open the operations console: dashboard, queue, nodes, live log, triage, QA2."""
    from ..tui.launch import open_console

    open_console(campaign(ctx, config).config_path, theme=theme, engine=engine, refresh=refresh)


def main() -> None:
    """``python -m ari_console.commands.tui``: like ``ari tui``, a user mistake is one line and exit 2."""
    import sys

    from ..errors import UserError

    try:
        app(standalone_mode=True)
    except UserError as exc:
        print(f"ari: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""`ari qa2 ...` commands."""

import typer

app = typer.Typer(help="qa2 commands.", no_args_is_help=True)

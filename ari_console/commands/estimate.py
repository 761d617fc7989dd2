"""`ari estimate ...` commands."""

import typer

app = typer.Typer(help="estimate commands.", no_args_is_help=True)

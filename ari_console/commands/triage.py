"""`ari triage ...` commands."""

import typer

app = typer.Typer(help="triage commands.", no_args_is_help=True)

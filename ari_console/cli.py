"""The `ari` command line: a root that mounts one module per command group and passes the campaign down.

Every command lives in :mod:`ari_console.commands` (one module per group, each
with its own ``typer.Typer()``); this module only mounts them, reads the
options that come before the subcommand (``-c/--config``, ``--version``) and
puts the campaign into the click context. Modules under ``commands/`` never
import this one.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from typer.completion import completion_init, install_callback, show_callback

from . import __version__
from .clikit import err
from .commands import actions, archive, campaign, config, datasets, demo, estimate, nodes, qa2, report, triage, tui
from .commands.common import Campaign, ConfigOpt, campaign as resolve_campaign
from .errors import UserError

app = typer.Typer(
    name="ari",
    help="Re-image the ALMA archive in bulk: queue, schedule, launch, triage, compare.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,  # declared on the root below, shown as flags (typer's own show a <bool> placeholder)
)
completion_init()  # the shells `ari --install-completion` and `_ARI_COMPLETE=...` speak


def _help_as_a_flag(get_help_option):
    """typer (0.29) shows its ``--help`` as ``--help <bool>``, as if it took a value: show it as the flag it is."""
    def get(self, ctx):
        option = get_help_option(self, ctx)
        if option is not None:
            option.metavar = ""
        return option
    return get


_CommandBase = next(c for c in typer.core.TyperCommand.__mro__ if "get_help_option" in c.__dict__)
_CommandBase.get_help_option = _help_as_a_flag(_CommandBase.get_help_option)  # every command and group

for root_commands in (campaign.app, actions.app, tui.app, report.app, demo.app):
    app.add_typer(root_commands)  # no name: their commands sit at the root (`ari status`, `ari retry`, ...)
app.add_typer(datasets.app, name="datasets")
app.add_typer(nodes.app, name="nodes")
app.add_typer(config.app, name="config")
app.add_typer(triage.app, name="triage")
app.add_typer(qa2.app, name="qa2")
app.add_typer(estimate.app, name="estimate")
app.add_typer(archive.app, name="archive")


def _print_version(value: bool) -> None:
    if value:
        print(f"ari {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config_path: ConfigOpt = None,
    version: Annotated[Optional[bool], typer.Option(
        "--version", metavar="", callback=_print_version, is_eager=True, help="Print the version and exit.")] = None,
    install_completion: Annotated[Optional[bool], typer.Option(
        "--install-completion", metavar="", callback=install_callback, expose_value=False,
        help="Install completion (commands, uids, node names) for the current shell.")] = None,
    show_completion: Annotated[Optional[bool], typer.Option(
        "--show-completion", metavar="", callback=show_callback, expose_value=False,
        help="Show the completion script for the current shell, to install it by hand.")] = None,
) -> None:
    """ari: the ALMA re-imaging operations console."""
    ctx.obj = resolve_campaign(None, config_path)


def main() -> None:
    """Entry point: user mistakes print one line and exit 2; our bugs keep their traceback."""
    import sqlite3

    try:
        app(standalone_mode=True)
    except UserError as exc:
        err.print(f"ari: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except sqlite3.DatabaseError as exc:  # the state file failed under a command: name it and say what to do
        from . import store

        err.print(f"ari: {store.db_error(store.last_path(), exc)}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


__all__ = ["Campaign", "app", "main"]

if __name__ == "__main__":
    main()

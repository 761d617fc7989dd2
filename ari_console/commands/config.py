"""`ari config ...`: check the campaign's ari.toml, list every key it can hold."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..clikit import emit_json, out, table
from ..config import reference
from .common import ConfigOpt, JsonOpt, campaign, flag

app = typer.Typer(help="The campaign configuration ari.toml.", no_args_is_help=True)


@app.command("check")
def check(ctx: typer.Context, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Validate ari.toml and show what it configures."""
    cfg = campaign(ctx, config).config()
    if as_json:
        emit_json({"path": str(cfg.path), "campaign": cfg.campaign.name,
                   "work_dir": str(cfg.campaign.work_dir), "nodes": [n.name for n in cfg.nodes]})
        return
    out.print(f"{cfg.path}: ok — campaign {cfg.campaign.name!r}, {len(cfg.nodes)} node(s)")


@app.command("reference")
def reference_cmd(
    as_json: JsonOpt = False,
    markdown: Annotated[bool, flag("--markdown", help="Print docs/config.md.")] = False,
) -> None:
    """Every configuration key with its default and meaning."""
    if markdown:
        from ..config import reference_markdown

        sys.stdout.write(reference_markdown())
        return
    rows = reference()
    if as_json:
        emit_json([{"table": t, "key": k, "default": d, "help": h} for t, k, d, h in rows])
        return
    table("ari.toml keys", ["table", "key", "default", "meaning"], rows)

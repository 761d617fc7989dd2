"""`ari nodes ...`: the machines attempts run on (list, check end to end, drain, undrain)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .. import store
from ..clikit import emit_json, out, table
from ..formatting import free_text, gb_text
from .common import ConfigOpt, JsonOpt, NodeArg, campaign, complete_node, run_action

app = typer.Typer(help="The machines attempts run on.", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """The configured nodes with their slots, memory, walltime and state."""
    cfg = campaign(ctx, config).config()
    db = store.open_db(cfg.campaign.db_path)
    store.sync_nodes(db, cfg.nodes, store.now())
    rows = store.nodes(db)
    if as_json:
        emit_json(rows)
        return
    table(f"{len(rows)} nodes", ["name", "transport", "batch", "slots", "running", "mem", "walltime", "speed",
                                 "memory free", "scratch free", "drained"],
          [(r["name"], r["transport"], r["batch"], r["slots"], r["running"], gb_text(r["mem_gb"]),
            f"{r['walltime_h']:g} h" if r["walltime_h"] else "none", f"{r['speed']:g}",
            *_probe_free(r.get("probe") or {}), r["drained_reason"] or "yes" if r["drained"] else "") for r in rows])


def _probe_free(probe: dict) -> tuple[str, str]:
    """Free memory and scratch of the node's last probe, as the console's node table shows them."""
    return (free_text(probe.get("mem_free_gb"), probe.get("mem_total_gb")),
            free_text(probe.get("scratch_free_gb"), probe.get("scratch_total_gb")))


@app.command("check")
def check(
    ctx: typer.Context,
    names: Annotated[Optional[list[str]], typer.Argument(
        metavar="[NAME]...", autocompletion=complete_node, help="Nodes to check (default: all).")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every node end to end (reach, Python, CASA, scratch, batch system) and copy the runner."""
    from ..nodes import connect, ops

    cfg = campaign(ctx, config).config()
    selected = [cfg.node(n) for n in names] if names else list(cfg.nodes)
    checks = []
    for node in selected:
        transport = connect(node)
        try:
            checks += ops.check_node(node, transport)
        finally:
            transport.close()
    if as_json:
        emit_json([c.__dict__ for c in checks])
    else:
        for c in checks:
            mark = "[green]ok  [/]" if c.ok else "[red]FAIL[/]"
            fix = f" — fix: {c.fix}" if c.fix else ""
            out.print(f"{mark} {c.node} {c.check}: ", end="")
            out.print(f"{c.detail}{fix}", markup=False, highlight=False, soft_wrap=True)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command("drain")
def drain(ctx: typer.Context, name: NodeArg, config: ConfigOpt = None,
          reason: Annotated[str, typer.Option(help="Why, shown in the console.")] = "drained by operator",
          as_json: JsonOpt = False) -> None:
    """Place no new attempts on a node (running ones finish)."""
    run_action(campaign(ctx, config), "drain", name, reason=reason)
    emit_json({"node": name, "drained": True, "reason": reason}) if as_json else \
        out.print(f"{name}: drained ({reason})")


@app.command("undrain")
def undrain(ctx: typer.Context, name: NodeArg, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Place attempts on a drained node again."""
    run_action(campaign(ctx, config), "undrain", name)
    emit_json({"node": name, "drained": False, "reason": None}) if as_json else out.print(f"{name}: undrained")

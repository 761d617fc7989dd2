"""Root commands an operator takes on one data set: retry, cancel, override, hold, release, accept, unaccept, reject."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..clikit import emit_json, out
from ..errors import UserError
from .common import ConfigOpt, JsonOpt, UidArg, campaign, complete_node, flag, run_action

app = typer.Typer()

NodeOpt = Annotated[Optional[str], typer.Option(metavar="NAME", autocompletion=complete_node,
                                                 help="Run the next attempt on this node.")]
MemOpt = Annotated[Optional[float], typer.Option(metavar="GB", help="Memory for the next attempt, GB.")]
WalltimeOpt = Annotated[Optional[float], typer.Option(metavar="HOURS", help="Walltime for the next attempt, hours.")]


@app.command()
def retry(ctx: typer.Context, uid: UidArg, node: NodeOpt = None, mem_gb: MemOpt = None,
          walltime_h: WalltimeOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Queue a failed or held data set again, optionally on a chosen node or with more resources."""
    row = run_action(campaign(ctx, config), "retry", uid, node=node, mem_gb=mem_gb, walltime_h=walltime_h)
    emit_json(row) if as_json else out.print(f"{row['uid']}: queued again {row['overrides'] or ''}")


@app.command()
def cancel(ctx: typer.Context, uid: UidArg, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Stop a data set's running attempt on its node; the data set is then held until released."""
    camp = campaign(ctx, config)
    stopped = run_action(camp, "cancel", uid, config=camp.config())
    if as_json:
        emit_json(stopped)
        return
    for s in stopped:
        out.print(f"{s['uid']}: attempt {s['attempt']} on {s['node']} told to stop "
                  f"(held once it has ended; `ari release {s['uid']}` queues it again)", markup=False)


@app.command()
def override(
    ctx: typer.Context,
    uid: UidArg,
    mem_gb: MemOpt = None,
    walltime_h: WalltimeOpt = None,
    node: NodeOpt = None,
    casa_version: Annotated[Optional[str], typer.Option(
        metavar="VERSION", help="CASA version the next attempt needs.")] = None,
    param: Annotated[Optional[list[str]], typer.Option(
        metavar="KEY=VALUE", help="Recipe parameter KEY=VALUE (repeatable).")] = None,
    clear: Annotated[bool, flag("--clear", help="Drop every override first.")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set what the next attempt of a data set uses: memory, walltime, node, CASA version, recipe parameters."""
    from ..actions import parse_params

    row = run_action(campaign(ctx, config), "override", uid, mem_gb=mem_gb, walltime_h=walltime_h, node=node,
                     casa_version=casa_version, params=parse_params(param or []), clear=clear)
    emit_json(row) if as_json else out.print(f"{row['uid']}: overrides {row['overrides'] or 'none'}", markup=False)


@app.command()
def hold(ctx: typer.Context, uid: UidArg,
         reason: Annotated[str, typer.Option(help="Why, shown to other operators.")] = "held by operator",
         config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Keep a data set out of scheduling until released."""
    row = run_action(campaign(ctx, config), "hold", uid, reason=reason)
    emit_json(row) if as_json else out.print(f"{row['uid']}: held ({reason})")


@app.command()
def release(ctx: typer.Context, uid: UidArg, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Let a held data set be scheduled again."""
    row = run_action(campaign(ctx, config), "release", uid)
    emit_json(row) if as_json else out.print(f"{row['uid']}: queued")


@app.command()
def accept(ctx: typer.Context, uid: UidArg,
           note: Annotated[Optional[str], typer.Option(help="Why, kept in the history.")] = None,
           config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Deliver a data set waiting in review (QA2 discrepant or unverifiable): it becomes succeeded."""
    row = run_action(campaign(ctx, config), "accept", uid, note=note)
    emit_json(row) if as_json else out.print(f"{row['uid']}: accepted, attempt {row['accepted_attempt']} delivered")


@app.command()
def unaccept(ctx: typer.Context, uid: UidArg,
             note: Annotated[Optional[str], typer.Option(help="Why, kept in the history.")] = None,
             config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Take back a delivery: the accepted attempt waits in QA2 review again (products, verdicts and the accept kept)."""
    row = run_action(campaign(ctx, config), "unaccept", uid, note=note)
    if as_json:
        emit_json(row)
        return
    took_back = row["unaccepted"]
    restored = took_back["restored"]
    out.print(f"{row['uid']}: un-accepted, attempt {took_back['attempt']} waits in QA2 review again"
              + (f" (attempt {restored} is delivered meanwhile)" if restored else "")
              + f" — `ari accept {row['uid']}` or `ari reject {row['uid']}` decides", markup=False)


@app.command()
def reject(
    ctx: typer.Context,
    uid: UidArg,
    retry: Annotated[bool, flag("--retry", help="Queue it again (re-image) instead of holding it.")] = False,
    reason: Annotated[str, typer.Option(help="Why, kept in the history.")] = "rejected at QA2 review",
    node: NodeOpt = None, mem_gb: MemOpt = None, walltime_h: WalltimeOpt = None,
    config: ConfigOpt = None, as_json: JsonOpt = False,
) -> None:
    """Refuse the products of a data set waiting in review: hold it, or with --retry queue it again."""
    if not retry and (node or mem_gb or walltime_h):
        raise UserError("--node, --mem-gb and --walltime-h apply to the next attempt — add --retry")
    row = run_action(campaign(ctx, config), "reject", uid, retry=retry, reason=reason, node=node, mem_gb=mem_gb,
                     walltime_h=walltime_h)
    emit_json(row) if as_json else out.print(f"{row['uid']}: rejected, now {row['state']}")

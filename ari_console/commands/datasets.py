"""`ari datasets ...`: the campaign's queue of data sets (import from a catalogue or the archive, list)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import alma, store
from ..clikit import emit_json, out, table
from ..errors import UserError
from ..formatting import detail_tables, gb_text
from .common import ConfigOpt, JsonOpt, UidArg, campaign, flag

app = typer.Typer(help="The campaign's queue of data sets (MOUS).", no_args_is_help=True)


@app.command("import")
def import_(
    ctx: typer.Context,
    csv_file: Annotated[Optional[Path], typer.Argument(
        metavar="[CSV_FILE]", help="Catalogue CSV: uid,project[,array,band,size_gb,mem_gb,hours].")] = None,
    project: Annotated[Optional[list[str]], typer.Option(
        "--project", metavar="CODE", help="Query the archive for this project code (repeatable).")] = None,
    mous: Annotated[Optional[list[str]], typer.Option(
        "--mous", metavar="UID", help="Query the archive for this MOUS uid (repeatable).")] = None,
    dry_run: Annotated[bool, flag("--dry-run", help="Show what would be queued; change nothing.")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add data sets to the queue from a catalogue CSV or an archive query (idempotent)."""
    cfg = campaign(ctx, config).config()
    excluded: dict[str, str] = {}
    if csv_file is not None and (project or mous):
        raise UserError("give either a CSV file or --project/--mous, not both — run the import twice")
    if csv_file is not None:
        rows, source = alma.read_datasets_csv(csv_file), str(csv_file)
    elif project or mous:
        from ..archive.client import queue_candidates, rules_from_mapping, tap_url_of

        projects = []
        for code in project or []:
            try:
                projects.append(alma.parse_project(code))
            except ValueError:
                raise UserError(f'--project "{code}" is not a project code — write e.g. 2016.1.00123.S') from None
        rules = rules_from_mapping(cfg.selection, source=f"{cfg.path.name}: [selection]")
        rows, excluded = queue_candidates(tap_url_of(cfg.campaign.archive_url), projects, mous or [], rules,
                                          timeout=cfg.campaign.archive_timeout_s)
        source = cfg.campaign.archive_url
    else:
        raise UserError("nothing to import — give a CSV file, or --project CODE / --mous UID to query the archive")
    take = [d for d in rows if d.uid not in excluded]
    total_gb = sum(d.size_gb or 0 for d in take)
    # the dry run decides every row through the same store function as the import, so it counts the same
    db = store.open_db(cfg.campaign.db_path if cfg.campaign.db_path.exists() or not dry_run else ":memory:")
    result = store.import_datasets(db, rows, source=source, now=store.now(), excluded=excluded, dry_run=dry_run)
    summary = {"file": source, "added": len(result.added), "updated": len(result.updated),
               "unchanged": len(result.unchanged), "size_gb": round(total_gb, 3), "excluded": excluded}
    added, updated = set(result.added), set(result.updated)
    if dry_run:
        queued = [d for d in take if d.uid in added]
        summary.update(dry_run=True, datasets=len(take), new=len(queued),
                       size_gb=round(sum(d.size_gb or 0 for d in queued), 3),
                       size_unknown=sum(1 for d in queued if d.size_gb is None),
                       mous=[{"uid": d.uid, "project": d.project, "new": d.uid in added,
                              "updated": d.uid in updated, "size_gb": d.size_gb} for d in take])
    if as_json:
        emit_json(summary)
        return
    verb = ("would be added", "would be updated", "would stay unchanged") if dry_run else \
        ("added", "updated", "unchanged")
    out.print(f"{source}: {summary['added']} {verb[0]}, {summary['updated']} {verb[1]}, "
              f"{summary['unchanged']} {verb[2]} ({gb_text(summary['size_gb']) or '0 Bytes'} to image"
              + (f", {summary['size_unknown']} of unknown size" if dry_run and summary["size_unknown"] else "")
              + f"); {len(excluded)} excluded", markup=False)
    if dry_run:
        for d in take:
            state = "new" if d.uid in added else "updated" if d.uid in updated else "known"
            out.print(f"  {state:7} {d.uid} {d.project} ({gb_text(d.size_gb) or 'size unknown'})",
                      markup=False)
    _print_excluded(excluded)


def _print_excluded(excluded: dict[str, str]) -> None:
    for uid, reason in excluded.items():
        out.print(f"  excluded {uid}: {reason}", markup=False)


@app.command("show")
def show(
    ctx: typer.Context,
    uid: UidArg,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One data set: state, CASA version, the files its node downloads, the QA2 products the console fetches.

    JSON keys: uid, project, state, reason, casa_version, size_gb, inputs [{name, url, semantics,
    size_bytes}], qa2_files [{name, url}], targets, datalink_error, attempts (each with
    peak_mem_gb and peak_scratch_gb: the most memory and scratch disk it used, null when not measured),
    decisions [{at, action, ...}]: what operators did to it (accept with its note, unaccept, reject, ...).
    """
    from ..actions import canonical_uid
    from ..readmodel import dataset_detail, detail_notes

    cfg = campaign(ctx, config).config()
    if not cfg.campaign.db_path.exists():
        raise UserError(f"{cfg.campaign.db_path}: no campaign state yet — run `ari datasets import` first")
    db = store.open_db(cfg.campaign.db_path)
    detail = dataset_detail(db, canonical_uid(db, uid))
    if as_json:
        emit_json(detail)
        return
    head, tables = detail_tables(detail, now=store.now())
    out.print(head, markup=False, highlight=False)
    for title, columns, rows in tables:
        table(title, list(columns), rows)
    for line in detail_notes(detail):
        out.print(line, markup=False, highlight=False)



@app.command("list")
def list_(
    ctx: typer.Context,
    state_: Annotated[Optional[str], typer.Option("--state", metavar="STATE", help="Only this state.")] = None,
    project: Annotated[Optional[str], typer.Option(metavar="CODE", help="Only this project code.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The queue: every data set with its state."""
    if state_ and state_ not in store.DATASET_STATES:
        raise UserError(f'--state "{state_}" is not a state — use one of {", ".join(store.DATASET_STATES)}')
    if project:
        try:
            project = alma.parse_project(project)
        except ValueError:
            raise UserError(f'--project "{project}" is not a project code — write e.g. 2016.1.00123.S') from None
    cfg = campaign(ctx, config).config()
    rows = (store.datasets(store.open_db(cfg.campaign.db_path), state=state_, project=project)
            if cfg.campaign.db_path.exists() else [])
    if as_json:
        emit_json(rows)
        return
    reasons = any(r["reason"] for r in rows if r["state"] in ("held", "failed", "excluded", "review"))
    table(f"{len(rows)} data sets", ["uid", "project", "array", "band", "size", "state"] + (["reason"] if reasons else []),
          [(r["uid"], r["project"], r["array"], r["band"],
            gb_text(r["size_gb"]) or None, r["state"],
            *([r["reason"] or ""] if reasons else [])) for r in rows])

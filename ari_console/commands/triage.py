"""`ari triage ...` commands: why did an attempt fail, and which failures share a cause."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..clikit import emit_json, lazy_module, table, warn
from ..errors import UserError
from .common import ConfigOpt, JsonOpt, campaign

triage = lazy_module("ari_console.triage")

app = typer.Typer(help="Classify failed attempts from CASA, pipeline, runner and batch-system logs.",
                  no_args_is_help=True)

LogsArg = Annotated[list[Path], typer.Argument(
    help="Log files (plain, .gz, .bz2 or .xz), or data-set uids (the logs of the uid's latest failed attempt).",
    show_default=False)]
HintOpt = Annotated[Optional[str], typer.Option(
    "--hint", metavar="CATEGORY", help="A category the runner already reported in status.json (memory, walltime, disk_full, download).")]


def _check_hint(hint: str | None) -> str | None:
    """``hint`` if it is a failure category, else a UserError naming the choices."""
    if hint is not None and hint not in triage.CATEGORIES:
        raise UserError(f"--hint {hint!r}: not a failure category — use one of {', '.join(triage.CATEGORIES)}")
    return hint


def _verdicts(logs: list[Path], hint: str | None) -> tuple[list[tuple[Path, triage.Verdict]], int]:
    """Each readable log's verdict, and how many logs could not be read (each warned once)."""
    out, failed = [], 0
    for path in logs:
        try:
            out.append((path, triage.classify_file(path, hint=hint)))
        except UserError as exc:
            warn(str(exc))
            failed += 1
    return out, failed


def _row(path: Path | str, v: triage.Verdict) -> dict:
    """The documented JSON keys (file, category, stage, line, excerpt) plus message, fix, signature and rule."""
    return {"file": str(path), "category": v.category, "stage": v.stage, "line": v.line, "excerpt": v.excerpt,
            "message": v.message, "fix": v.fix, "signature": v.signature, "rule": v.rule}


def _uid_arg(arg: Path) -> str | None:
    """The uid a LOG argument spells when it is not a file (a Path folds uid:// into uid:/), else None."""
    from ari_console import alma

    text = str(arg)
    if arg.exists():
        return None
    if text.startswith("uid:/") and not text.startswith("uid://"):
        text = "uid://" + text[len("uid:/"):]
    try:
        alma.parse_uid(text)
    except ValueError:
        return None
    return text


def _uid_verdict(camp, text: str) -> tuple[dict, triage.Verdict]:
    """The verdict over the mirrored logs of the data set's latest failed attempt, and its row.

    A UserError says why there is none (no campaign, no such data set, no failed attempt, no logs).
    """
    from ari_console import actions, store

    cfg = camp.config()
    if not cfg.campaign.db_path.exists():
        raise UserError(f"{cfg.campaign.db_path}: no campaign database yet — give log files instead of {text}")
    with store.open_db(cfg.campaign.db_path, create=False) as db:
        uid = actions.canonical_uid(db, text)
        failed = [a for a in store.attempts(db, uid) if a["state"] in ("failed", "lost")]
        if not failed:
            raise UserError(f"{uid}: no failed attempt in this campaign — see `ari datasets show {uid}`")
        attempt = failed[-1]
        mirrors = [Path(m["mirror"]) for m in store.log_mirrors(db, attempt["id"]) if m["mirror"]]
    logs = [p for p in mirrors if p.is_file()]
    if not logs:
        raise UserError(f"{uid}: attempt {attempt['id']} has no mirrored logs on this machine — "
                        f"read them on its node (`ari logs {uid}`)")
    hint = (attempt.get("status") or {}).get("category")
    verdict = triage.apply_hint(triage.decisive(triage.classify_file(p) for p in logs),
                                hint if hint in triage.CATEGORIES else None)
    row = _row(verdict.source or logs[0], verdict)
    row.update(uid=uid, attempt=attempt["id"])
    return row, verdict


def _table(rows: list[dict]) -> None:
    """The verdicts as a table; the decisive message and the fix are shown whole (they wrap)."""
    from rich.table import Table

    from ari_console.clikit import out

    t = Table(title="triage", header_style="bold", show_lines=True)
    for col in ("file", "category", "stage", "line"):
        t.add_column(col, overflow="fold")
    t.add_column("decisive message", overflow="fold", ratio=3)
    t.add_column("fix", overflow="fold", ratio=2)
    for r in rows:
        t.add_row(*("-" if r[k] is None else str(r[k]) for k in ("file", "category", "stage", "line", "message", "fix")))
    out.print(t)


@app.command()
def classify(
    ctx: typer.Context,
    logs: LogsArg,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    hint: HintOpt = None,
    attempt: Annotated[bool, typer.Option(
        "--attempt", metavar="", help="The logs belong to one attempt: print the one decisive verdict.")] = False,
) -> None:
    """Category, stage, decisive line, excerpt and fix of each failed attempt's log.

    A LOG that is not a file but a data-set uid (``uid://A001/X1296/X1d3`` or
    ``uid___A001_X1296_X1d3``) stands for the logs of that data set's latest failed attempt in
    the campaign, classified together (its row adds ``uid`` and ``attempt``).
    """
    hint = _check_hint(hint)
    uids = {p: _uid_arg(p) for p in logs}
    results, failed = _verdicts([p for p in logs if not uids[p]], None if attempt else hint)
    if attempt and results:
        verdict = triage.apply_hint(triage.decisive(v for _, v in results), hint)
        results = [(Path(verdict.source or results[0][0]), verdict)]
    rows = [_row(p, v) for p, v in results]
    for uid in filter(None, uids.values()):
        try:
            rows.append(_uid_verdict(campaign(ctx, config), uid)[0])
        except UserError as exc:
            warn(str(exc))
            failed += 1
    if as_json:
        emit_json(rows)
    elif rows or not failed:  # every input refused: its lines on stderr say it all, no empty table
        _table(rows)
    if failed:
        raise typer.Exit(1)


def _short(text: str, width: int = 100) -> str:
    """``text`` cut to ``width`` characters."""
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
def rules(as_json: JsonOpt = False) -> None:
    """The classification rules, strongest first (a new failure signature is one row)."""
    rows = sorted(triage.rule_rows(), key=lambda r: -r["priority"])
    if as_json:
        emit_json(rows)
    else:
        table("triage rules", ["name", "category", "priority", "description", "corpus log"],
              [(r["name"], r["category"], r["priority"], r["description"], r["corpus"]) for r in rows])


def _open_failure_groups(camp) -> list[dict]:
    """The campaign's open failures grouped as the console's triage screen groups them by signature."""
    from .. import readmodel, store

    cfg = camp.config()
    if not cfg.campaign.db_path.exists():
        raise UserError(f"{cfg.campaign.db_path}: no campaign database yet — run `ari datasets import` first, "
                        f"or give log files")
    with store.open_db(cfg.campaign.db_path, create=False) as db:
        found = readmodel.failure_groups(readmodel.campaign_failures(db), by="signature")
    return [{"signature": g.signature, "category": g.category, "count": g.count, "example_uids": list(g.uids[:3])}
            for g in found]


@app.command()
def groups(
    ctx: typer.Context,
    logs: Annotated[Optional[list[Path]], typer.Argument(
        help="Log files (plain, .gz, .bz2 or .xz); none: the campaign's open failures.", show_default=False)] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Failed attempts grouped by signature: the few causes an operator fixes once.

    Without logs: the campaign's open failures (each data set's newest attempt, when
    it failed and the data set has not succeeded since), as the console's triage
    screen groups them. With logs: those files, classified now; the uid of each comes
    from its path (``.../uid___A001_X1_X2/...``), else the path.
    """
    failed = False
    if logs:
        results, failed = _verdicts(logs, None)
        rows = [{"signature": g.signature, "category": g.category, "count": g.count, "example_uids": g.example_uids}
                for g in triage.group((triage.uid_from_path(str(p)) or str(p), v) for p, v in results)]
    else:
        rows = _open_failure_groups(campaign(ctx, config))
    for r in rows:
        r["fix"] = triage.fix_for(r["category"])
    if as_json:
        emit_json(rows)
    else:  # the signature and its fix wrap, never cut: the fix is what the operator came for
        table("failure groups", ["count", "category", "signature", "fix", "examples"],
              [(r["count"], r["category"], r["signature"], r["fix"], ", ".join(r["example_uids"])) for r in rows])
    if failed:
        raise typer.Exit(1)

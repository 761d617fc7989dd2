"""Root commands on the campaign as a whole: init, status, run, attempts, stats, logs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import store
from ..clikit import emit_json, err, out, table
from ..config import CONFIG_NAME, load_config, starter_config
from ..errors import UserError
from ..formatting import attempt_seconds, duration_text, hours_text
from .common import ConfigOpt, JsonOpt, UidArg, campaign, complete_uid, flag

app = typer.Typer()


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Campaign directory to create ari.toml in.")] = Path("."),
    name: Annotated[Optional[str], typer.Option(help="Campaign name (default: the directory's name).")] = None,
    force: Annotated[bool, flag("--force", help="Overwrite an existing ari.toml.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a commented starter ari.toml with one local node."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_NAME
    if path.exists() and not force:
        raise UserError(f"{path}: already exists — edit it, or pass --force to overwrite it")
    from ..casa_install import casa_site_config, local_casa_version

    mem_gb = _local_mem_gb()
    site = casa_site_config()
    text = starter_config(
        name=name or directory.resolve().name or "ari",
        python=sys.executable,
        scratch=str((directory.resolve() / "scratch")),
        mem_gb=max(1, round(mem_gb * 0.8)),
        casa_version=local_casa_version(),
        casa_site_config=str(site) if site else None,
    )
    path.write_text(text)
    load_config(path)  # the starter must itself be valid
    steps = ["ari nodes check", "ari datasets import CATALOGUE.csv", "ari run"]
    if as_json:
        emit_json({"config": str(path.resolve()), "next": steps})
        return
    out.print(f"wrote {path} — next: `{steps[0]}` (can each node run the recipe?), then "
              f"`{steps[1]}`, then `{steps[2]}` or `ari tui`")


def _local_mem_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError):
        return 8.0


@app.command()
def status(ctx: typer.Context, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Campaign totals by state, per-node state and running attempts."""
    from ..readmodel import review_text, status_report

    result = status_report(campaign(ctx, config).config_path)
    if as_json:
        emit_json(result)
        return
    totals = result["totals"]
    out.print(f"campaign {result['campaign']}: {result['datasets']} data sets — "
              + ", ".join(f"{k} {v}" for k, v in totals.items() if v))
    table("nodes", ["name", "transport/batch", "slots", "running", "drained"],
          [(n["name"], f"{n['transport']}/{n['batch']}", n["slots"], n["running"],
            "yes" if n["drained"] else "") for n in result["nodes"]])
    att = result["attention"]
    if att["count"]:
        table("needs a person", ["what", "which", "why", "fix"],
              [("held", h["uid"], h["reason"], h["fix"]) for h in att["held"]]
              + [("QA2 review", r["uid"], review_text(r), r["fix"]) for r in att["review"]]
              + [("node", n["name"], n["problem"], n["fix"]) for n in att["nodes"]])
        for what, listed, total in (("held", att["held"], att["held_total"]),
                                    ("review", att["review"], att["review_total"])):
            if total > len(listed):
                out.print(f"... and {total - len(listed):,} more {what} (longest waiting listed first): "
                          f"`ari datasets list --state {what}`")
    out.print(att["line"])


@app.command()
def run(
    ctx: typer.Context,
    config: ConfigOpt = None,
    once: Annotated[bool, flag("--once", help="Do one tick and stop.")] = False,
    until_idle: Annotated[bool, flag("--until-idle", help="Stop when nothing is queued or running.")] = False,
    policy: Annotated[str, typer.Option(metavar="POLICY", help="Placement policy: lpt, greedy or fifo.")] = "lpt",
    as_json: JsonOpt = False,
) -> None:
    """Run the campaign headless: schedule, launch, watch, retry. Ctrl-C stops the console, not the jobs."""
    from ..engine import run_headless
    from ..scheduler import POLICIES

    if policy not in POLICIES:
        raise UserError(f'--policy "{policy}" is not a policy — use one of {", ".join(POLICIES)}')
    camp = campaign(ctx, config)
    report = run_headless(camp.config(), progress=lambda m: err.print(m, markup=False, highlight=False),
                          policy=policy, once=once, until_idle=until_idle)
    if as_json:  # progress stays on stderr; what the run left behind, as `ari status --json` says it
        from ..readmodel import status_report

        emit_json({**status_report(camp.config_path), "stopped": {"queued": report.queued, "running": report.running,
                                                                 "blocked": report.blocked}})


@app.command()
def attempts(
    ctx: typer.Context,
    uid: Annotated[Optional[str], typer.Argument(metavar="[UID]", autocompletion=complete_uid,
                                                          help="Only this data set's attempts.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every attempt (of one data set): node, state, stage, category, times."""
    from ..actions import canonical_uid

    db = campaign(ctx, config).db()
    rows = store.attempts(db, uid=canonical_uid(db, uid) if uid else None)
    now = store.now()
    if as_json:
        emit_json(rows)
        return
    table(f"{len(rows)} attempts", ["id", "uid", "node", "state", "stage", "category", "elapsed", "excerpt"],
          [(a["id"], a["uid"], a["node"], a["state"], a["stage"], a["category"],
            duration_text(attempt_seconds(a, now)),
            next((ln.strip() for ln in (a["excerpt"] or "").splitlines() if ln.strip()), ""))
           for a in rows])


@app.command()
def stats(ctx: typer.Context, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Success rate first try vs after retries, failures by category, runtimes per node, attempt hours."""
    from ..readmodel import stats as campaign_stats

    cfg = campaign(ctx, config).config()
    result = campaign_stats(store.open_db(cfg.campaign.db_path))
    cpus = {n.name: n.cpus_per_slot for n in cfg.nodes}
    result["cpu_hours"] = round(sum(h * cpus.get(n, 1) for n, h in result["attempt_hours_by_node"].items()), 4)
    if as_json:
        emit_json(result)
        return
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    out.print(f"{result['datasets_tried']} data sets tried: {pct(result['success_first_try'])} succeeded "
              f"unsupervised, {pct(result['success_after_retries'])} after retries; "
              f"{result['attempt_hours']:.1f} attempt-hours, {result['cpu_hours']:.1f} CPU-hours")
    table("failures by category", ["category", "attempts"], result["failures_by_category"].items())
    table("runtime of successful attempts", ["node", "count", "median", "max"],
          [(n, v["count"], hours_text(v["median"]), hours_text(v["max"])) for n, v in result["runtime_h_by_node"].items()])


@app.command()
def logs(
    ctx: typer.Context,
    uid: UidArg,
    config: ConfigOpt = None,
    follow: Annotated[bool, flag("--follow", "-f", help="Keep printing new lines as the engine mirrors them.")]
        = False,
    name: Annotated[str, typer.Option(
        help="Which log: runner.log, download.log, restore.log, image.log, export.log.")] = "runner.log",
) -> None:
    """Print the latest attempt's log from the local mirror (the engine copies new bytes every tick)."""
    import time as _time

    from ..actions import canonical_uid

    db = campaign(ctx, config).db()
    uid = canonical_uid(db, uid)
    rows = store.attempts(db, uid=uid)
    if not rows:
        raise UserError(f"{uid} has no attempts yet — it is {store.dataset(db, uid)['state']}")
    mirrors = {Path(m["mirror"]).name: Path(m["mirror"]) for m in store.log_mirrors(db, rows[-1]["id"])}
    if name not in mirrors:
        raise UserError(f"{uid}: attempt {rows[-1]['id']} has no {name} mirrored yet — "
                        f"have: {', '.join(sorted(mirrors)) or 'none'}")
    offset = 0
    while True:
        with open(mirrors[name], "rb") as fh:
            if os.fstat(fh.fileno()).st_size < offset:  # the node's log was truncated or rotated: anew
                offset = 0
            fh.seek(offset)
            data = fh.read()
        if data:
            sys.stdout.write(data.decode(errors="replace"))
            sys.stdout.flush()
            offset += len(data)
        if not follow:
            return
        _time.sleep(1)

"""The `ari` command line: every capability reachable without the TUI, --json on every read."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import humanize
import typer

from . import alma, store
from .clikit import emit_json, err, out, table
from .commands import archive as archive_cmds
from .commands import estimate as estimate_cmds
from .commands import qa2 as qa2_cmds
from .commands import report as report_cmds
from .commands import triage as triage_cmds
from .commands import tui as tui_cmds
from .config import CONFIG_NAME, Config, load_config, reference, starter_config
from .errors import UserError

app = typer.Typer(
    name="ari",
    help="Re-image the ALMA archive in bulk: queue, schedule, launch, triage, compare.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
datasets_app = typer.Typer(help="The campaign's queue of data sets (MOUS).", no_args_is_help=True)
nodes_app = typer.Typer(help="The machines attempts run on.", no_args_is_help=True)
config_app = typer.Typer(help="The campaign configuration ari.toml.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(nodes_app, name="nodes")
app.add_typer(config_app, name="config")
app.add_typer(triage_cmds.app, name="triage")
app.add_typer(qa2_cmds.app, name="qa2")
app.add_typer(estimate_cmds.app, name="estimate")
app.add_typer(archive_cmds.app, name="archive")
app.command(name="tui")(tui_cmds.tui)
app.command(name="report")(report_cmds.report)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (the documented keys) instead of a table.")]
UidArg = Annotated[str, typer.Argument(help="MOUS uid (uid://A001/X1296/X1d3 or uid___A001_X1296_X1d3).")]


class State:
    """Options shared by all commands (set by the root callback)."""

    config_path: Path = Path(CONFIG_NAME)

    def config(self) -> Config:
        return load_config(self.config_path)


state = State()


@app.callback()
def root(
    config: Annotated[Path, typer.Option("--config", "-c", envvar="ARI_CONFIG",
                                         help="The campaign's ari.toml.")] = Path(CONFIG_NAME),
) -> None:
    """ari: the ALMA re-imaging operations console."""
    state.config_path = config


def _db(cfg: Config, create: bool = True):
    return store.open_db(cfg.campaign.db_path, create=create)


# -- init and config ----------------------------------------------------------

@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Campaign directory to create ari.toml in.")] = Path("."),
    name: Annotated[Optional[str], typer.Option(help="Campaign name (default: the directory's name).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing ari.toml.")] = False,
) -> None:
    """Write a commented starter ari.toml with one local node."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_NAME
    if path.exists() and not force:
        raise UserError(f"{path}: already exists — edit it, or pass --force to overwrite it")
    from .casa_install import casa_site_config, local_casa_version

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
    out.print(f"wrote {path} — next: ari datasets import CATALOGUE.csv")


def _local_mem_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError):
        return 8.0


@config_app.command("check")
def config_check(as_json: JsonOpt = False) -> None:
    """Validate ari.toml and show what it configures."""
    cfg = state.config()
    if as_json:
        emit_json({"path": str(cfg.path), "campaign": cfg.campaign.name,
                   "work_dir": str(cfg.campaign.work_dir), "nodes": [n.name for n in cfg.nodes]})
        return
    out.print(f"{cfg.path}: ok — campaign {cfg.campaign.name!r}, {len(cfg.nodes)} node(s)")


@config_app.command("reference")
def config_reference(
    as_json: JsonOpt = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print docs/config.md.")] = False,
) -> None:
    """Every configuration key with its default and meaning."""
    if markdown:
        from .config import reference_markdown

        sys.stdout.write(reference_markdown())
        return
    rows = reference()
    if as_json:
        emit_json([{"table": t, "key": k, "default": d, "help": h} for t, k, d, h in rows])
        return
    table("ari.toml keys", ["table", "key", "default", "meaning"], rows)


# -- data sets ----------------------------------------------------------------

@datasets_app.command("import")
def datasets_import(
    csv_file: Annotated[Optional[Path], typer.Argument(
        help="Catalogue CSV: uid,project[,array,band,size_gb,mem_gb,hours].")] = None,
    project: Annotated[Optional[list[str]], typer.Option(
        "--project", help="Query the archive for this project code (repeatable).")] = None,
    mous: Annotated[Optional[list[str]], typer.Option(
        "--mous", help="Query the archive for this MOUS uid (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be queued; change nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add data sets to the queue from a catalogue CSV or an archive query (idempotent)."""
    cfg = state.config()
    excluded: dict[str, str] = {}
    if csv_file is not None and (project or mous):
        raise UserError("give either a CSV file or --project/--mous, not both — run the import twice")
    if csv_file is not None:
        rows, source = alma.read_datasets_csv(csv_file), str(csv_file)
    elif project or mous:
        from .archive.client import queue_candidates, rules_from_mapping, tap_url_of

        projects = []
        for code in project or []:
            try:
                projects.append(alma.parse_project(code))
            except ValueError:
                raise UserError(f'--project "{code}" is not a project code — write e.g. 2016.1.00123.S') from None
        rules = rules_from_mapping(cfg.selection, source=f"{cfg.path.name}: [selection]")
        rows, excluded = queue_candidates(tap_url_of(cfg.campaign.archive_url), projects, mous or [], rules)
        source = cfg.campaign.archive_url
    else:
        raise UserError("nothing to import — give a CSV file, or --project CODE / --mous UID to query the archive")
    take = [d for d in rows if d.uid not in excluded]
    total_gb = sum(d.size_gb or 0 for d in take)
    if dry_run:
        db = store.open_db(cfg.campaign.db_path) if cfg.campaign.db_path.exists() else None
        known = {d["uid"] for d in store.datasets(db)} if db else set()
        new = [d for d in take if d.uid not in known]
        result = {"dry_run": True, "datasets": len(take), "new": len(new),
                  "size_gb": round(sum(d.size_gb or 0 for d in new), 3), "excluded": excluded}
        if as_json:
            emit_json(result)
        else:
            out.print(f"{source}: {len(take)} data sets, {len(new)} new "
                      f"({humanize.naturalsize(result['size_gb'] * 1e9)}) would be queued; {len(excluded)} excluded")
            for uid, reason in excluded.items():
                out.print(f"  excluded {uid}: {reason}", markup=False)
        return
    db = _db(cfg)
    result = store.import_datasets(db, rows, source=source, now=store.now(), excluded=excluded)
    summary = {"file": source, "added": len(result.added), "updated": len(result.updated),
               "unchanged": len(result.unchanged), "size_gb": round(total_gb, 3), "excluded": excluded}
    if as_json:
        emit_json(summary)
        return
    out.print(f"{source}: {summary['added']} added, {summary['updated']} updated, "
              f"{summary['unchanged']} unchanged ({humanize.naturalsize(total_gb * 1e9)} to image); "
              f"{len(excluded)} excluded")
    for uid, reason in excluded.items():
        out.print(f"  excluded {uid}: {reason}", markup=False)


@datasets_app.command("list")
def datasets_list(
    state_: Annotated[Optional[str], typer.Option("--state", help="Only this state.")] = None,
    project: Annotated[Optional[str], typer.Option(help="Only this project code.")] = None,
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
    cfg = state.config()
    rows = store.datasets(_db(cfg), state=state_, project=project) if cfg.campaign.db_path.exists() else []
    if as_json:
        emit_json(rows)
        return
    table(f"{len(rows)} data sets", ["uid", "project", "array", "band", "size", "state"],
          [(r["uid"], r["project"], r["array"], r["band"],
            humanize.naturalsize(r["size_gb"] * 1e9) if r["size_gb"] is not None else None, r["state"])
           for r in rows])


# -- nodes and status ---------------------------------------------------------

@nodes_app.command("list")
def nodes_list(as_json: JsonOpt = False) -> None:
    """The configured nodes with their slots, memory, walltime and state."""
    cfg = state.config()
    db = _db(cfg)
    store.sync_nodes(db, cfg.nodes, store.now())
    rows = store.nodes(db)
    if as_json:
        emit_json(rows)
        return
    table(f"{len(rows)} nodes", ["name", "transport", "batch", "slots", "running", "mem", "walltime", "speed", "drained"],
          [(r["name"], r["transport"], r["batch"], r["slots"], r["running"], f"{r['mem_gb']:g} GB",
            f"{r['walltime_h']:g} h" if r["walltime_h"] else "none", f"{r['speed']:g}",
            r["drained_reason"] or "yes" if r["drained"] else "") for r in rows])


@nodes_app.command("check")
def nodes_check(
    names: Annotated[Optional[list[str]], typer.Argument(help="Nodes to check (default: all).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every node end to end (reach, Python, CASA, scratch, batch system) and copy the runner."""
    from .nodes import connect, ops

    cfg = state.config()
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


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Campaign totals by state, per-node state and running attempts."""
    from .entry import status_report

    result = status_report(state.config_path)
    if as_json:
        emit_json(result)
        return
    totals = result["totals"]
    out.print(f"campaign {result['campaign']}: {result['datasets']} data sets — "
              + ", ".join(f"{k} {v}" for k, v in totals.items() if v))
    table("nodes", ["name", "transport/batch", "slots", "running", "drained"],
          [(n["name"], f"{n['transport']}/{n['batch']}", n["slots"], n["running"],
            "yes" if n["drained"] else "") for n in result["nodes"]])


# -- the engine ------------------------------------------------------------------

@app.command()
def run(
    once: Annotated[bool, typer.Option(help="Do one tick and stop.")] = False,
    until_idle: Annotated[bool, typer.Option(help="Stop when nothing is queued or running.")] = False,
    policy: Annotated[str, typer.Option(help="Placement policy: lpt, greedy or fifo.")] = "lpt",
) -> None:
    """Run the campaign headless: schedule, launch, watch, retry. Ctrl-C stops the console, not the jobs."""
    from .engine import run_headless
    from .scheduler import POLICIES

    if policy not in POLICIES:
        raise UserError(f'--policy "{policy}" is not a policy — use one of {", ".join(POLICIES)}')
    run_headless(state.config(), progress=lambda m: err.print(m, markup=False, highlight=False),
                 policy=policy, once=once, until_idle=until_idle)


@app.command()
def attempts(
    uid: Annotated[Optional[str], typer.Argument(help="Only this data set's attempts.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every attempt (of one data set): node, state, stage, category, times."""
    from .actions import canonical_uid

    db = _db(state.config())
    rows = store.attempts(db, uid=canonical_uid(db, uid) if uid else None)
    if as_json:
        emit_json(rows)
        return
    table(f"{len(rows)} attempts", ["id", "uid", "node", "state", "stage", "category", "elapsed"],
          [(a["id"], a["uid"], a["node"], a["state"], a["stage"], a["category"],
            humanize.naturaldelta((a["ended_at"] or store.now()) - a["started_at"]) if a["started_at"] else None)
           for a in rows])


@app.command()
def stats(as_json: JsonOpt = False) -> None:
    """Success rate first try vs after retries, failures by category, runtimes per node, attempt hours."""
    cfg = state.config()
    result = store.stats(_db(cfg))
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
    table("runtime of successful attempts (h)", ["node", "count", "median", "max"],
          [(n, v["count"], v["median"], v["max"]) for n, v in result["runtime_h_by_node"].items()])


@app.command()
def logs(
    uid: UidArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines as the engine mirrors them.")] = False,
    name: Annotated[str, typer.Option(help="Which log: runner.log, download.log, restore.log, image.log, export.log.")] = "runner.log",
) -> None:
    """Print the latest attempt's log from the local mirror (the engine copies new bytes every tick)."""
    import time as _time

    from .actions import canonical_uid

    db = _db(state.config())
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
            fh.seek(offset)
            data = fh.read()
        if data:
            sys.stdout.write(data.decode(errors="replace"))
            sys.stdout.flush()
            offset += len(data)
        if not follow:
            return
        _time.sleep(1)


# -- operator actions ----------------------------------------------------------

def _act(fn, *args, **kwargs) -> dict:
    from . import actions

    cfg = state.config()
    db = _db(cfg)
    store.sync_nodes(db, cfg.nodes, store.now())
    return getattr(actions, fn)(db, *args, now=store.now(), **kwargs)


@app.command()
def retry(
    uid: UidArg,
    node: Annotated[Optional[str], typer.Option(help="Run the next attempt on this node.")] = None,
    mem_gb: Annotated[Optional[float], typer.Option(help="Memory for the next attempt, GB.")] = None,
    walltime_h: Annotated[Optional[float], typer.Option(help="Walltime for the next attempt, hours.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue a failed or held data set again, optionally on a chosen node or with more resources."""
    row = _act("retry", uid, node=node, mem_gb=mem_gb, walltime_h=walltime_h)
    emit_json(row) if as_json else out.print(f"{row['uid']}: queued again {row['overrides'] or ''}")


@app.command()
def cancel(uid: UidArg, as_json: JsonOpt = False) -> None:
    """Stop a data set's running attempt on its node; the data set is then held until released."""
    from .nodes import NodeUnreachable, connect, ops

    cfg = state.config()
    stopped = []
    for a in _act("attempts_to_cancel", uid):
        node = cfg.node(a["node"])
        if not a["handle"]:
            raise UserError(f"{a['uid']}: attempt {a['id']} is still being launched on {node.name} — "
                            f"cancel again in a few seconds")
        transport = connect(node)
        try:
            ops.cancel(node, transport, a["handle"])
        except NodeUnreachable as exc:
            raise UserError(f"{a['uid']}: node {node.name} is unreachable ({exc}) — the attempt may still run there; "
                            f"`ari nodes check` says why") from None
        finally:
            transport.close()
        stopped.append({"uid": a["uid"], "attempt": a["id"], "node": node.name})
    if as_json:
        emit_json(stopped)
        return
    for s in stopped:
        out.print(f"{s['uid']}: attempt {s['attempt']} on {s['node']} told to stop "
                  f"(held once it has ended; `ari release {s['uid']}` queues it again)", markup=False)


@app.command()
def override(
    uid: UidArg,
    mem_gb: Annotated[Optional[float], typer.Option(help="Memory the next attempt needs, GB.")] = None,
    walltime_h: Annotated[Optional[float], typer.Option(help="Walltime the next attempt needs, hours.")] = None,
    node: Annotated[Optional[str], typer.Option(help="Run the next attempt on this node.")] = None,
    casa_version: Annotated[Optional[str], typer.Option(help="CASA version the next attempt needs.")] = None,
    param: Annotated[Optional[list[str]], typer.Option(help="Recipe parameter KEY=VALUE (repeatable).")] = None,
    clear: Annotated[bool, typer.Option(help="Drop every override first.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Set what the next attempt of a data set uses: memory, walltime, node, CASA version, recipe parameters."""
    from .actions import parse_params

    row = _act("override", uid, mem_gb=mem_gb, walltime_h=walltime_h, node=node, casa_version=casa_version,
               params=parse_params(param or []), clear=clear)
    emit_json(row) if as_json else out.print(f"{row['uid']}: overrides {row['overrides'] or 'none'}", markup=False)


@app.command()
def hold(uid: UidArg, reason: Annotated[str, typer.Option(help="Why, shown to other operators.")] = "held by operator",
         as_json: JsonOpt = False) -> None:
    """Keep a data set out of scheduling until released."""
    row = _act("hold", uid, reason=reason)
    emit_json(row) if as_json else out.print(f"{row['uid']}: held ({reason})")


@app.command()
def release(uid: UidArg, as_json: JsonOpt = False) -> None:
    """Let a held data set be scheduled again."""
    row = _act("release", uid)
    emit_json(row) if as_json else out.print(f"{row['uid']}: queued")


@nodes_app.command("drain")
def nodes_drain(name: Annotated[str, typer.Argument(help="Node name.")],
                reason: Annotated[str, typer.Option(help="Why, shown in the console.")] = "drained by operator") -> None:
    """Place no new attempts on a node (running ones finish)."""
    _act("drain", name, reason=reason)
    out.print(f"{name}: drained ({reason})")


@nodes_app.command("undrain")
def nodes_undrain(name: Annotated[str, typer.Argument(help="Node name.")]) -> None:
    """Place attempts on a drained node again."""
    _act("undrain", name)
    out.print(f"{name}: undrained")


# -- demo ---------------------------------------------------------------------

@app.command()
def demo(
    headless: Annotated[Optional[bool], typer.Option(
        "--headless/--tui", help="Run without the console, printing progress (default when not on a terminal), "
                                 "or in the console (default on a terminal).")] = None,
    as_json: JsonOpt = False,
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo campaign lives (cleared on each run).")]
        = Path("demo-campaign"),
) -> None:
    """Run the demo campaign on this machine: local, SSH and Slurm nodes image the CASA-simulated archive."""
    from .demo import campaign as demo_mod

    if headless is None:
        headless = as_json or not (sys.stdin.isatty() and sys.stdout.isatty())
    summary = demo_mod.run_demo(directory.resolve(), tui=not headless,
                                progress=lambda msg: err.print(msg, markup=False, highlight=False, soft_wrap=True))
    if as_json:
        emit_json(summary)
        return
    failed = ", ".join(f"{k} {v}" for k, v in summary["failed"].items()) or "none"
    out.print(f"demo: {summary['succeeded']} of {summary['datasets']} data sets imaged "
              f"({summary['retried_ok']} after a retry) in {summary['minutes']} min; failures by category: {failed}; "
              f"QA2: {summary['qa2']['consistent']} consistent, {summary['qa2']['discrepant']} discrepant",
              markup=False, highlight=False, soft_wrap=True)
    for uid, reason in summary["held"].items():
        out.print(f"  held for an operator: {uid}: {reason}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"  look around: ari -c {directory / CONFIG_NAME} tui   (or status, stats, triage groups, report)",
              markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point: user mistakes print one line and exit 2; our bugs keep their traceback."""
    try:
        app(standalone_mode=True)
    except UserError as exc:
        err.print(f"ari: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

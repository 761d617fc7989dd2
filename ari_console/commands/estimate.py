"""`ari estimate ...` commands: replay a workload on a node set, and size a cluster."""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Callable, Iterator

import typer

from .. import clikit
from .. import scheduler as sch
from ..errors import UserError
from ..formatting import gb_text, hours_text
from .common import ConfigOpt, JsonOpt, campaign

est = clikit.lazy_module("ari_console.estimate")

app = typer.Typer(help="Completion time and hardware: simulate a workload on nodes, size a cluster.",
                  no_args_is_help=True)

WorkloadOpt = Annotated[Path, typer.Option(
    "--workload", help="Workload CSV: uid,size_gb,hours,mem_gb (hours on a speed-1.0 node; empty = predict); "
                       "true_hours,true_mem_gb: the hidden truth of the replay; archive metadata columns optional.")]
NodesOpt = Annotated[Path, typer.Option(
    "--nodes", help="Nodes TOML: \\[\\[node]] tables with name, slots, mem_gb, walltime_h, speed (count, class optional).")]
PolicyOpt = Annotated[str, typer.Option("--policy", help=f"Placement policy: {', '.join(sch.POLICIES)}.")]


def _read(path: Path, what: str) -> str:
    """The text of ``path``, or a UserError naming the option and the fix."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file — check the {what} path") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read it ({exc.__class__.__name__}) — give {what} a text file") from None


def _inputs(workload: Path, nodes: Path) -> tuple[list[sch.DataSet], dict, list[sch.NodeState]]:
    """The parsed workload (its data sets, and the hidden truth kept apart from them) and node set."""
    work = est.read_workload(_read(workload, "--workload"), Path(workload).name)
    if work.ignored:
        clikit.warn(f"{Path(workload).name}: ignored columns the estimate does not read: {', '.join(work.ignored)}")
    return work.datasets, work.truth, est.parse_nodes(_read(nodes, "--nodes"), Path(nodes).name)


def _forecast_json(f) -> dict:
    return {"at_h": _h(f.at_h), "done_fraction": f.done_fraction, "p10_h": _h(f.p10_h),
            "p50_h": _h(f.p50_h), "p90_h": _h(f.p90_h)}


def _policy(name: str) -> str:
    """``name`` if it is a policy, else a UserError with the closest one."""
    if name in sch.POLICIES:
        return name
    close = difflib.get_close_matches(name, sch.POLICIES, n=1)
    fix = f"write {close[0]}" if close else f"one of {', '.join(sch.POLICIES)}"
    raise UserError(f'--policy: unknown policy "{name}" — {fix}')


@contextmanager
def _progress(label: str, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing a rich bar on a terminal's stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    disabled = quiet or not clikit.err.is_terminal
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=clikit.err, transient=True, disable=disabled) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextmanager
def _slow_notice(label: str, after_s: float = 1.0) -> Iterator[None]:
    """Say ``label`` on stderr if the work inside takes longer than ``after_s`` (never on stdout,
    so ``--json`` output stays clean), and how long it took when it is done."""
    import threading
    import time

    t0 = time.monotonic()
    said = threading.Event()

    def say() -> None:
        said.set()
        clikit.err.print(f"{label} …", markup=False, highlight=False)

    timer = threading.Timer(after_s, say)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        if said.is_set():
            clikit.err.print(f"estimated in {time.monotonic() - t0:.1f} s", markup=False, highlight=False)


def _h(x: float) -> float:
    return round(float(x), 3)


@app.command()
def simulate(workload: WorkloadOpt, nodes: NodesOpt, policy: PolicyOpt = sch.DEFAULT_POLICY,
             expansion: Annotated[float, typer.Option(
                 help="Scratch disk per GB of data while a data set runs.")] = est.DISK_EXPANSION,
             as_json: JsonOpt = False) -> None:
    """Replay a workload on a node set: makespan, how close to the lower bound, failures, disk."""
    policy = _policy(policy)
    datasets, truth, node_list = _inputs(workload, nodes)
    if expansion != est.DISK_EXPANSION:  # nodes' scratch_gb is checked with the factor the disk peaks count
        datasets = est.with_expansion(datasets, expansion)
    with _progress(f"simulating {len(datasets)} data sets ({policy})", as_json) as progress:
        sim = est.simulate(datasets, node_list, policy, expansion=expansion, progress=progress,
                           actual=truth or None, forecast_at=est.FORECAST_AT)
        bound = est.lower_bound(datasets, node_list, predictions=est.truth_predictions(datasets, truth))
    gap = sim.makespan_h / bound.hours - 1 if bound.hours > 0 else 0.0
    result = {
        "makespan_h": _h(sim.makespan_h),
        "lower_bound_h": _h(bound.hours),
        "policy": policy,
        "jobs": sim.jobs,
        "failures_avoidable": sim.failures_avoidable,
        "completed": sim.completed,
        "gap": round(gap, 5),
        "makespan_days": round(sim.makespan_h / 24, 2),
        "lower_bound_lp_h": _h(bound.lp_h),
        "longest_job_h": _h(bound.longest_h),
        "failures_by_cause": dict(sim.failures_by_cause),
        "gave_up": list(sim.gave_up),
        "unplaceable": [{"uid": u.dataset.uid, "reason": u.reason} for u in sim.unplaceable],
        "no_casa_version": sum(1 for u in sim.unplaceable if u.reason.startswith("needs CASA")),
        "cpu_hours": _h(sim.cpu_hours),
        "wasted_cpu_hours": _h(sim.wasted_cpu_hours),
        "kills": sim.kills,
        "forecasts": [_forecast_json(f) for f in sim.forecasts],
        "hidden_truth": bool(truth),
        "mean_hours_per_dataset": _h(sim.mean_hours),
        "slots": sim.slots,
        "slot_capacity": _h(sim.capacity),
        "no_idle_finish_h": _h(sim.jobs * sim.mean_hours / sim.capacity) if sim.capacity else None,
        "disk_peak_gb": sim.disk_peak_gb,
        "utilisation": sim.utilisation,
        "nodes": len(node_list),
    }
    if as_json:
        clikit.emit_json(result)
        return
    clikit.table(f"estimate simulate: {workload} on {nodes}", ["", "value"], [
        ("policy", policy),
        ("data sets", f"{sim.jobs} ({sim.completed} completed, {len(sim.unplaceable)} unplaceable, "
                      f"{len(sim.gave_up)} given up)"),
        ("makespan", hours_text(sim.makespan_h)
                     + (f" — for {sim.completed} of {sim.jobs}: {len(sim.gave_up)} given up" if sim.gave_up else "")),
        ("lower bound", f"{hours_text(bound.hours)} (LP {hours_text(bound.lp_h)}, longest {hours_text(bound.longest_h)})"
                        + (" from the hidden truth" if truth else "")),
        ("gap to bound", f"{gap:.2%}"),
        ("assumes", f"{hours_text(sim.mean_hours)} per data set at speed 1.0 on {sim.slots} slots "
                    f"(speed-weighted {sim.capacity:,.1f}): "
                    f"{hours_text(sim.jobs * sim.mean_hours / max(sim.capacity, 1e-9))} if no slot ever idled"),
        ("avoidable failures", f"{sim.failures_avoidable} (memory kills {sim.kills['memory']}, "
                               f"walltime kills {sim.kills['walltime']})"),
        ("CPU-hours", f"{sim.cpu_hours:,.0f}, {sim.wasted_cpu_hours:,.0f} on killed attempts "
                      f"({sim.wasted_cpu_hours / max(sim.cpu_hours, 1e-9):.1%})"),
    ])
    if sim.forecasts:
        clikit.table("forecast of the finish during the replay (h from the start)",
                     ["at h", "work done", "P10", "P50", "P90"],
                     [(f"{f.at_h:,.0f}", f"{f.done_fraction:.0%}", f"{f.p10_h:,.0f}", f"{f.p50_h:,.0f}",
                       f"{f.p90_h:,.0f}") for f in sim.forecasts])
    clikit.table("nodes", ["node", "attempts", "busy", "utilisation", "disk peak"], [
        (n.name, n.attempts, hours_text(n.busy_h), f"{n.utilisation:.1%}", gb_text(n.disk_peak_gb))
        for n in sim.nodes])
    for group in est.never_run_groups(sim.unplaceable):  # one line per kind: a queue may hold thousands
        more = f" and {group['count'] - 3:,} more (--json lists them)" if group["count"] > 3 else ""
        clikit.warn(f"{group['count']:,} unplaceable ({group['kind']}: {group['example']}) — {group['fix']}; "
                    f"{', '.join(group['uids'][:3])}{more}")


@app.command()
def plan(deadline: Annotated[str, typer.Option(help="When it must be done: 180d, 26w or hours.")],
         workload: WorkloadOpt, nodes: NodesOpt,
         add_class: Annotated[str, typer.Option(
             "--add-class", help="Node (or class) in the nodes file to add copies of.")],
         policy: PolicyOpt = sch.DEFAULT_POLICY, as_json: JsonOpt = False) -> None:
    """How many more nodes of a class finish the workload by the deadline."""
    policy = _policy(policy)
    deadline_h = est.parse_duration_h(deadline)
    datasets, truth, node_list = _inputs(workload, nodes)
    with _progress(f"sizing {add_class} for {deadline}", as_json) as progress:
        need = est.nodes_needed(datasets, node_list, add_class, deadline_h, policy, progress=progress,
                                actual=truth or None)
    result = {
        "node_class": add_class,
        "add": need.add,
        "deadline_h": _h(deadline_h),
        "makespan_h": None if need.makespan_h == float("inf") else _h(need.makespan_h),
        "lower_bound_h": _h(need.lower_bound_h),
        "nodes_now": len(node_list),
        "policy": policy,
        "reason": need.reason,
        "datasets": len(datasets),
        "never_run": len(need.never_run),  # no node, not even one of the class, can run these: not in the makespan
        "never_run_groups": est.never_run_groups(need.never_run),
        "hidden_truth": bool(truth),
    }
    if as_json:
        clikit.emit_json(result)
    else:
        _print_plan(need, len(datasets), deadline, deadline_h)
        for group in result["never_run_groups"]:
            clikit.warn(f"{group['count']} can never run ({group['kind']}: {group['example']}) — {group['fix']}; "
                        f"e.g. {', '.join(group['uids'][:3])}")
    if need.add is None:  # no count of that class can make it: scripts see it in the exit code
        raise typer.Exit(1)


def _print_plan(need: est.NodesNeeded, jobs: int, deadline: str, deadline_h: float) -> None:
    """The human answer of `plan`."""
    add_class = need.node_class
    answer = (f"add {need.add} × {add_class}" if need.add is not None else f"not reachable: {need.reason}")
    never = len(need.never_run)
    if never:
        answer += f" for the {jobs - never:,} that can run; {never:,} of {jobs:,} can never run (below)"
    clikit.table(f"estimate plan: {jobs:,} data sets by {deadline}", ["", "value"], [
        ("answer", answer),
        ("makespan then", "-" if need.makespan_h == float("inf") else hours_text(need.makespan_h)),
        ("lower bound then", hours_text(need.lower_bound_h)),
        ("deadline", hours_text(deadline_h)),
        *([("can never run", ", ".join(f"{g['count']:,} {g['kind']}" for g in est.never_run_groups(need.never_run)))]
          if never else []),
    ])


@app.command("campaign")
def campaign_cmd(
    ctx: typer.Context,
    policy: PolicyOpt = sch.DEFAULT_POLICY,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """When will this campaign be done? Its queue and history, simulated on its nodes."""
    from .. import store
    from ..readmodel import campaign_estimate

    cfg = campaign(ctx, config).config()
    db = store.open_db(cfg.campaign.db_path, create=False)
    store.sync_nodes(db, cfg.nodes, store.now())
    with _slow_notice("estimating: the campaign's queue and history, and the forecast's draws of the whole queue"):
        queue, states, result = campaign_estimate(db, cfg.nodes, store.now(), policy)
    if result is None:
        note = ("nothing queued: no estimate to make (`ari datasets import` fills the queue)" if not queue
                else "no node can take work (all drained? `ari nodes undrain NAME`): no estimate")
        if as_json:
            clikit.emit_json({"queued": len(queue), "nodes": len(states), "policy": policy, "finish": None,
                              "makespan_h": None, "lower_bound_h": None, "cpu_hours": 0.0, "disk_peak_gb": {},
                              "unplaceable": 0, "no_casa_version": 0, "note": note})
        else:
            clikit.out.print(note, markup=False)
        return
    out = {"queued": len(queue), "nodes": len(states), "policy": policy,
           "finish": result.finish_at.isoformat(timespec="minutes"), "makespan_h": round(result.remaining_h, 3),
           "lower_bound_h": round(result.lower_bound_h, 3), "cpu_hours": round(result.cpu_hours, 2),
           "disk_peak_gb": {k: round(v, 2) for k, v in result.disk_peak_gb.items()},
           "unplaceable": len(result.unplaceable),
           "no_casa_version": sum(1 for u in result.unplaceable if u.reason.startswith("needs CASA")),
           "finish_p10": result.band[0].isoformat(timespec="minutes") if result.band else None,
           "finish_p50": result.band[1].isoformat(timespec="minutes") if result.band else None,
           "finish_p90": result.band[2].isoformat(timespec="minutes") if result.band else None,
           "p10_h": _h(result.band_h[0]), "p50_h": _h(result.band_h[1]), "p90_h": _h(result.band_h[2]),
           "mean_hours_per_dataset": _h(result.mean_hours), "slots": result.slots,
           "slot_capacity": _h(result.simulation.capacity)}
    if as_json:
        clikit.emit_json(out)
        return
    clikit.out.print(f"{out['queued']} queued data sets on {out['nodes']} nodes ({policy}): done by {out['finish']} "
                     f"(makespan {hours_text(out['makespan_h'])}, lower bound {hours_text(out['lower_bound_h'])}); "
                     f"{out['cpu_hours']:.0f} CPU-hours, disk peak {gb_text(max(out['disk_peak_gb'].values(), default=0))} "
                     f"on one node; "
                     f"{out['unplaceable']} fit no node"
                     + (f" ({out['no_casa_version']} for want of the CASA version they need)"
                        if out["no_casa_version"] else ""))
    if result.band:
        clikit.out.print(f"forecast from the predictions' spread: done between {out['finish_p10']} (P10) and "
                         f"{out['finish_p90']} (P90), most likely {out['finish_p50']}; it assumes "
                         f"{hours_text(out['mean_hours_per_dataset'])} per data set at speed 1.0 on {out['slots']} slots",
                         markup=False)

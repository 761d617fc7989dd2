"""Completion time, machines, disk and CPU-hours: a discrete-event replay of a
workload through :func:`ari_console.scheduler.place`, and a lower bound.

Pure: values in, values out. The loaders at the end parse the *text* of a
workload CSV or a nodes TOML (the command module reads the files).

- :func:`simulate` replays data sets on nodes with the same ``place`` the
  engine calls; the workload's hours/memory are the truth (and, being explicit,
  also the predictions). Placements that exceed a node's memory fail at once,
  those that exceed its walltime are killed at the walltime; both count as
  avoidable failures and the data set goes back to the queue (given up after
  ``max_attempts``); each kill is kept (:class:`Kill`: node class, attempt
  number, cause, CPU-hours, when) so waste can be traced to its cause.
- :func:`lower_bound` = max(LP relaxation over node classes, longest single
  data set on its fastest eligible node): no schedule can beat it.
- :func:`nodes_needed` bisects how many nodes of a class meet a deadline.
- :func:`estimate_campaign` answers "when will the campaign be done" from a
  live queue, its history and the nodes' current state.
"""

from __future__ import annotations

import csv
import difflib
import heapq
import io
import math
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from itertools import repeat
from typing import Callable, Iterable, Mapping, Sequence

from . import alma, collector
from . import scheduler as sch
from .casa_install import casa_install_key
from .config import HOURS_UNITS, NUMBER_UNIT, fmt_number, number_fix
from .errors import UserError
from .scheduler import DataSet, Measured, NodeState, Prediction
from .scheduler.eligibility import _NO_PINS, _PINS, settle

DISK_EXPANSION = sch.SCRATCH_PER_GB
"""Scratch disk a running data set holds, per GB of its archive size: the
downloaded tarballs (1x) + the restored calibrated measurement sets (~1.5x) +
images and products (~0.5x); placement checks the same need against a node's
``scratch_gb``."""
MAX_ATTEMPTS = 3
"""Attempts before a data set is given up (as the campaign default)."""


# -- simulation ------------------------------------------------------------------

FORECAST_AT = (0.1, 0.25, 0.5, 0.75, 0.9)
"""Fractions of the work done at which a replay forecasts its finish."""
FORECAST_SAMPLES = 120
"""Draws from the predictions' spread per forecast."""
FORECAST_MODEL_SIGMA = 0.07
"""Log-sd of an error of the waiting work common to the whole queue that neither the fit's
covariance nor a bootstrap of its attempts can see: the fit's form is wrong somewhere, and its
history is not a fair sample of the queue (the quick data sets finish first). On the
hidden-truth generators the waiting work predicted at 10 % done was off by up to ±12 %.
The least such error: where the fit is seen to drift more as its history grows (:func:`model_drift`),
that drift's size is taken instead. Scaled by the share of the work still to do (it shrinks as the
history covers the queue). On 11 generators x 6 seeds at 10 % done, the drift in place of the flat
0.07 where larger put the finish inside P10-P90 in 55 runs instead of 52 (median band 20 -> 25 % of
P50); hypot(0.07, drift) as many, 28 % wide; the drift as a shift of the centre too, 49."""
FORECAST_HOURS_QUANTILE = 1 - max(sch.RISK_RATIOS)
"""The most cautious hours quantile by which a forecast's list schedule keeps a data set off a class whose
walltime it may outrun (0.8), where placement's own risk rule allows it no class (:func:`_placement_masks`): placement takes such risks where a kill would cost little
(:data:`~ari_console.scheduler.RISK_RATIOS`, up to a fifth of the run), and a list schedule that never did
sent every data set whose 95th percentile outran the 48 h walltime to the few 240 h nodes, a bottleneck the
replay never had (``bimodal`` at 10 % done: P50 20-27 % late)."""
DRIFT_MIN_ATTEMPTS = 30
"""Finished attempts each half of a history needs before :func:`model_drift` measures the fit's drift."""
REFIT_GROWTH = 4.0
"""A learning replay refits its predictions whenever its history has grown by this factor."""
REPLAN_GAP_H = 24.0
"""A retry that fits no node at its cautious placement values goes back into the plan at its medians
(as a plan tries such a data set) while the plan is younger than this (hours of the replay); after
that the queue is planned again, which also brings the rest of the plan up to date with what runs."""
MEMORY_KILL_AFTER = 0.5
"""A data set over its node's memory is killed this far into its run (its peak comes late: imaging)."""
BOOTSTRAP_ATTEMPTS = 8000
"""A forecast measures the fit's error by a bootstrap over at most this many attempts
(``most`` of :func:`~ari_console.scheduler.coefficient_draws`)."""
REPLAY_JOBS = 20_000
"""A live estimate replays a queue through placement up to this many data sets (:func:`estimate_campaign`)."""
FORECAST_EXACT_JOBS = 6000
"""A forecast places up to this many data sets one by one (the exact list schedule); a longer queue's
head goes in batches (:func:`_list_finish`). Each placement costs tens of microseconds of numpy,
whatever the draws: 100,000 queued took 12 s of CPU one by one, ~5 s with their draws in batches
(~22,000 placements); 10,000 a fifth less than exact. Up to 6,000 the replays' forecasts (the
calibration's workloads) stay exact: there batching would save little and cost ~1 % of the band."""
FORECAST_RISKY_SHORTER = 2
"""A batch of data sets some draw may kill is this many times shorter than the others: its kills'
retries start where it runs them, ahead of the rest of the schedule, and leave the slots they go to
idle until then (the longer the batch, the later: ``study`` at 100,000 queued, P50 +11 % at full length)."""


@dataclass(frozen=True)
class NodeUse:
    """What one node did in a simulation."""

    name: str
    busy_h: float
    utilisation: float
    disk_peak_gb: float
    attempts: int
    cpu_hours: float


@dataclass(frozen=True)
class Forecast:
    """The finish as known at ``at_h`` hours into a replay (or a campaign), with
    ``done_fraction`` of the work done: P10 / P50 / P90 hours from the start."""

    at_h: float
    done_fraction: float
    p10_h: float
    p50_h: float
    p90_h: float


@dataclass(frozen=True)
class Kill:
    """One killed attempt of a replay: where (the node's class), which attempt of the
    data set it was (1: its first), why, the CPU-hours it wasted and when it ended."""

    node_class: str
    attempt: int
    outcome: str
    cpu_hours: float
    at_h: float


@dataclass(frozen=True)
class SimResult:
    """The outcome of :func:`simulate` (hours from the start).

    ``mean_hours`` is the mean hours per data set at speed 1.0 the replay ran
    on (the truth), ``slots`` the machine slots and ``capacity`` their
    speed-weighted sum, so ``jobs x mean_hours / capacity`` is the finish if
    no slot ever idled: the claim the makespan can be checked against.
    """

    policy: str
    jobs: int
    completed: int
    makespan_h: float
    cpu_hours: float
    failures_avoidable: int
    failures_by_cause: Mapping[str, int]
    gave_up: tuple[str, ...]
    unplaceable: tuple[sch.Unplaceable, ...]
    nodes: tuple[NodeUse, ...]
    plan_makespan_h: float = 0.0
    plan_variant: str = ""
    wasted_cpu_hours: float = 0.0
    forecasts: tuple[Forecast, ...] = ()
    mean_hours: float = 0.0
    slots: int = 0
    capacity: float = 0.0
    refits: int = 0
    killed: tuple["Kill", ...] = ()

    @property
    def disk_peak_gb(self) -> dict[str, float]:
        return {n.name: round(n.disk_peak_gb, 1) for n in self.nodes}

    @property
    def utilisation(self) -> dict[str, float]:
        return {n.name: round(n.utilisation, 4) for n in self.nodes}

    @property
    def waste_by(self) -> dict[tuple[str, int, str], tuple[int, float]]:
        """(node class, attempt number, cause) -> (kills, CPU-hours wasted), most wasteful first.

        >>> SimResult("lpt", 1, 1, 60.0, 80.0, 1, {"walltime": 1}, (), (), (),
        ...           killed=(Kill("mup", 1, "walltime", 20.0, 20.0),)).waste_by
        {('mup', 1, 'walltime'): (1, 20.0)}
        """
        groups: dict[tuple[str, int, str], tuple[int, float]] = {}
        for k in self.killed:
            n, h = groups.get((k.node_class, k.attempt, k.outcome), (0, 0.0))
            groups[(k.node_class, k.attempt, k.outcome)] = (n + 1, h + k.cpu_hours)
        return dict(sorted(groups.items(), key=lambda kv: -kv[1][1]))

    @property
    def kills(self) -> dict[str, int]:
        """Attempts killed for memory and by the walltime."""
        return {k: self.failures_by_cause.get(k, 0) for k in ("memory", "walltime")}


def _truth(ds: DataSet, pred: Prediction, given: tuple[float | None, float | None] = (None, None),
           ) -> tuple[float, float]:
    """(hours, mem) the simulated data set really takes: the hidden truth ``given``,
    else explicit values, else the prediction (its expected hours; its memory quantile,
    so that a replay without truth kills nothing for memory)."""
    hours, mem = given
    return (hours if hours is not None else ds.hours if ds.hours is not None else pred.plan_h,
            mem if mem is not None else ds.mem_gb if ds.mem_gb is not None else pred.mem_gb)


def truth_predictions(datasets: Sequence[DataSet], actual: Mapping[str, tuple[float | None, float | None]],
                      history: Iterable[Measured] | sch.Model = ()) -> dict[str, Prediction]:
    """uid -> the truth a replay runs on, as predictions (for the clairvoyant lower bound)."""
    preds = sch.predict_all(datasets, history)
    return {ds.uid: Prediction(*_truth(ds, preds[ds.uid], actual.get(ds.uid, (None, None))), "truth")
            for ds in datasets}


def _outcome(ds: DataSet, hours: float, mem: float, node: NodeState,
             memory_kill_after: float = MEMORY_KILL_AFTER) -> tuple[str, float]:
    """(outcome, wall hours) of running ``ds`` on ``node``: ok, memory, walltime, recipe."""
    if ds.recipe is not None and ds.recipe not in node.recipes:
        return "recipe", 0.0
    if ds.casa_version is not None and casa_install_key(ds.casa_version, node.casa_versions) is None:
        return "recipe", 0.0
    wall = hours / node.speed
    limit = math.inf if node.walltime_h is None else node.walltime_h
    if mem > node.mem_gb:
        return "memory", min(wall * memory_kill_after, limit)
    if wall > limit:
        return "walltime", limit
    return "ok", wall


def _scratch_held(ds: DataSet, expansion: float) -> float:
    """Scratch ``ds`` holds while it runs: its own ``scratch_gb``, else size x its learned
    ``scratch_per_gb`` (a campaign's history taught it), else size x ``expansion``."""
    if ds.scratch_gb is not None:
        return ds.scratch_gb
    return (ds.size_gb or 0.0) * (expansion if ds.scratch_per_gb is None else ds.scratch_per_gb)


def with_expansion(datasets: Sequence[DataSet], expansion: float) -> list[DataSet]:
    """``datasets`` needing ``expansion`` x their size of scratch where they give no ``scratch_gb``
    (so placement checks nodes' scratch with the factor a replay counts disk with).

    >>> with_expansion([DataSet("a", size_gb=10)], 5.0)[0].scratch_need_gb
    50.0
    """
    return [replace(ds, scratch_gb=ds.size_gb * expansion) if ds.scratch_gb is None and ds.size_gb is not None
            else ds for ds in datasets]


def attempt(ds: DataSet, hours: float, speed: float, outcome: str, peak_mem_gb: float | None = None,
            peak_scratch_gb: float | None = None) -> Measured:
    """The history entry of an attempt of ``ds`` (its metadata with it, for the fits)."""
    return Measured(ds.uid, ds.size_gb, hours, speed, peak_mem_gb, outcome, ds.array, ds.band,
                    ds.n_spw, ds.n_chan, ds.is_mosaic, ds.n_eb, ds.prior_hours, ds.prior_mem_gb, peak_scratch_gb)


@collector.paused()
def simulate(datasets: Sequence[DataSet], nodes: Sequence[NodeState], policy: str = sch.DEFAULT_POLICY,
             history: Iterable[Measured] | sch.Model = (), expansion: float = DISK_EXPANSION,
             max_attempts: int = MAX_ATTEMPTS,
             progress: Callable[[int, int], None] | None = None,
             actual: Mapping[str, tuple[float, float]] | None = None,
             learn: bool | None = None, tuning: sch.Tuning = sch.DEFAULT_TUNING,
             search: sch.Search = sch.DEFAULT_SEARCH,
             refit_growth: float = REFIT_GROWTH, memory_kill_after: float = MEMORY_KILL_AFTER,
             replan_gap_h: float = REPLAN_GAP_H,
             forecast_at: Sequence[float] = (), forecast_samples: int = FORECAST_SAMPLES,
             seed: int = 0, refit: bool = True) -> SimResult:
    """Replay ``datasets`` on ``nodes`` under ``policy``; hours from the start.

    The scheduler sees the predictions; the data sets take their explicit
    hours/memory, or ``actual[uid] = (hours, mem_gb)`` when given (the hidden
    truth of the replay; either may be None), else the prediction.

    With ``learn`` (default: when ``actual`` is given) the replay learns as
    the engine does: predictions start from ``history`` (or the prior) and are
    refitted from the attempts finished so far (and those still running, as
    lower limits) whenever that history has grown by ``refit_growth``; a
    memory kill (``memory_kill_after`` into the run) teaches that the data set
    needs more than the node's memory, a walltime kill that it needs more than
    the walltime, and the retry goes where that floor fits (where none fits at its cautious
    values: at its medians while the plan is younger than ``replan_gap_h`` hours, else the
    queue is planned again). With ``refit``
    False the fit stays the one ``history`` gives (kills still teach their
    floors): a policy that knows each data set's distribution from the start.

    ``forecast_at``: fractions of the work at which to forecast the finish
    from the predictions of that moment (:func:`forecast_finish`).
    Nodes' ``busy_h`` (running attempts) occupy their slots until those hours;
    slots taken (``free`` below ``slots``) with no hours given free at once.
    ``progress(done, total)`` is called now and then with finished data sets.

    >>> r = simulate([DataSet("a", hours=4, mem_gb=8), DataSet("b", hours=2, mem_gb=8)],
    ...              [NodeState("n", slots=1, mem_gb=16, speed=2.0)])
    >>> r.makespan_h, r.completed
    (3.0, 2)
    """
    learn = bool(actual) if learn is None else learn
    hist: list[Measured] = [] if isinstance(history, sch.Model) else list(history)
    model = history if isinstance(history, sch.Model) else sch.fit_history(hist, tuning)
    preds = sch.predict_all(datasets, model, tuning)
    truth = {ds.uid: _truth(ds, preds[ds.uid], (actual or {}).get(ds.uid, (None, None))) for ds in datasets}
    total_work = sum(h for h, _ in truth.values()) or 1.0
    forecast_at = sorted(forecast_at)
    forecasts: list[Forecast] = []
    # one NodeState per (node, free slots), made once: the loop only swaps them
    variants = [[replace(n, free=f, busy_h=()) for f in range(n.slots + 1)] for n in nodes]
    state = [variants[i][n.free or 0] for i, n in enumerate(nodes)]
    free_slots = sum(s.free for s in state if not s.drained)
    index = {n.name: i for i, n in enumerate(nodes)}
    events: list[tuple[float, int, int, DataSet | None, str]] = []
    running: dict[int, tuple[DataSet, float, int]] = {}  # event seq -> (data set, start, node)
    seq = 0
    for i, n in enumerate(nodes):
        occupied = n.slots - (n.free or 0)  # a running attempt without its hours left ends now, as unknown
        for b in (list(n.busy_h) + [0.0] * occupied)[:occupied]:
            events.append((max(0.0, b), seq, i, None, "ok"))
            seq += 1
    heapq.heapify(events)
    queue: dict[str, DataSet] = {ds.uid: ds for ds in datasets}
    parked: dict[str, sch.Unplaceable] = {}  # fit no node on today's predictions
    busy = [0.0] * len(nodes)
    disk = [0.0] * len(nodes)
    disk_peak = [0.0] * len(nodes)
    attempts = [0] * len(nodes)
    failures: dict[str, int] = {}
    wasted = 0.0
    killed: list[Kill] = []
    gave_up: list[str] = []
    last_reported: tuple[sch.Unplaceable, ...] | None = None
    plan = None
    now = planned_at = 0.0
    completed = 0
    done_work = 0.0
    refits = 0
    next_refit = max(tuning.min_history, 1)
    finished = 0
    total = len(datasets)
    while True:
        if queue and free_slots:
            replanning = plan is None and bool(events)
            if replanning:  # tell the planner what is running, and until when
                # what placement can know: the busy hours given, and where the replay has a hidden truth the
                # hours each running attempt is expected to take yet (without one, that is its truth)
                left: dict[int, list[float]] = {}
                import numpy as np

                pool = np.asarray(model.hours.pool if model.hours is not None else (), dtype=float)  # once per plan
                for end, k, i, ds, _ in events:
                    if ds is None or not actual:
                        left.setdefault(i, []).append(end - now)
                    else:
                        start = running[k][1]
                        left.setdefault(i, []).append(sch.hours_left(preds[ds.uid], now - start, nodes[i].speed,
                                                                     nodes[i].walltime_h, pool))
                state = [_with_busy(variants[i][s.free], tuple(left.get(i, ()))) for i, s in enumerate(state)]
            if plan is None:
                planned_at = now
            placement = sch.place(queue.values(), state, now, policy, model, plan, preds, tuning, search)
            if replanning:
                state = [variants[i][s.free] for i, s in enumerate(state)]
            plan = placement.plan
            if placement.unplaceable is not last_reported:  # a new plan: park what fits nowhere
                last_reported = placement.unplaceable
                for u in last_reported:
                    if queue.pop(u.dataset.uid, None) is not None:
                        parked[u.dataset.uid] = u
            for ds, node in placement.pairs:
                i = index[node.name]
                del queue[ds.uid]
                hours, mem = truth[ds.uid]
                outcome, wall = _outcome(ds, hours, mem, nodes[i], memory_kill_after)
                heapq.heappush(events, (now + wall, seq, i, ds, outcome))
                running[seq] = (ds, now, i)
                seq += 1
                busy[i] += wall
                attempts[i] += 1
                disk[i] += _scratch_held(ds, expansion)
                disk_peak[i] = max(disk_peak[i], disk[i])
                state[i] = variants[i][state[i].free - 1]
                free_slots -= 1
        if not events:
            break
        now = events[0][0]
        while events and events[0][0] <= now:
            _, k, i, ds, outcome = heapq.heappop(events)
            running.pop(k, None)
            state[i] = variants[i][state[i].free + 1]
            free_slots += 0 if state[i].drained else 1
            if ds is None:
                continue
            disk[i] -= _scratch_held(ds, expansion)
            node = nodes[i]
            hours, mem = truth[ds.uid]
            if outcome == "ok":
                completed += 1
                done_work += hours
                if learn:
                    hist.append(attempt(ds, hours / node.speed, node.speed, "ok", mem))
                    finished += 1
                if progress is not None and completed % 200 == 0:
                    progress(completed, total)
                continue
            failures[outcome] = failures.get(outcome, 0) + 1
            wall = _outcome(ds, hours, mem, node, memory_kill_after)[1]
            wasted += wall * node.cpus_per_slot
            killed.append(Kill(node.klass, ds.attempts + 1, outcome, wall * node.cpus_per_slot, now))
            again = replace(ds, attempts=ds.attempts + 1)
            if again.attempts >= max_attempts:
                gave_up.append(ds.uid)
                continue
            queue[ds.uid] = again
            taught = None
            if learn and outcome in ("memory", "walltime"):
                lesson = attempt(ds, wall, node.speed, outcome, node.mem_gb if outcome == "memory" else None)
                hist.append(lesson)
                need_h, need_mem = model.own.get(ds.uid, (0.0, 0.0))
                if outcome == "walltime":
                    need_h = max(need_h, wall * node.speed)
                else:
                    need_mem = max(need_mem, node.mem_gb)
                model = replace(model, own={**model.own, ds.uid: (need_h, need_mem)})
                taught = preds[ds.uid] = sch.predict(again, model, tuning)
            if plan is not None:
                young = now - planned_at < replan_gap_h
                margin = tuning.retry_margin if young and taught is not None else None
                put = sch.requeue(plan, again, taught, state, margin)
                lost = None if put is not None or margin is None else sch.fits_nowhere(again, taught, state, margin)
                if lost is not None:  # a plan would only park it: park it and keep the plan
                    del queue[ds.uid]
                    parked[ds.uid] = lost
                    put = plan
                plan = put
        if learn and refit and finished >= next_refit:
            next_refit = max(next_refit + 1, math.ceil(finished * refit_growth))
            model = _refit(hist, running, nodes, now, tuning)
            queue.update({uid: u.dataset for uid, u in parked.items()})
            parked.clear()
            preds.update(sch.predict_all(queue.values(), model, tuning))
            plan = None
            refits += 1
        while forecast_at and done_work / total_work >= forecast_at[0]:
            forecast_at.pop(0)
            risk = tuning if plan is None or plan.risk_quantile is None else replace(
                tuning, hours_quantile=plan.risk_quantile[0], mem_quantile=plan.risk_quantile[1])
            known, known_preds, known_hist = model, preds, hist
            if learn:  # forecast from all that is known now, not from the plan's last refit
                known_hist = _known_history(hist, running, nodes, now)
                known = sch.fit_history(known_hist, tuning)
                known_preds = sch.predict_all(list(queue.values()) + [d for d, _, _ in running.values()], known, tuning)
            draws = sch.coefficient_draws(known_hist, known, forecast_samples, seed + len(forecasts), tuning,
                                           most=BOOTSTRAP_ATTEMPTS)
            forecasts.append(_replay_forecast(now, done_work / total_work, queue, running, known_preds, nodes,
                                              known, risk, forecast_samples, seed + len(forecasts), draws,
                                              drift=model_drift(hist, tuning), search=search))
    unplaceable = list(parked.values())
    if queue:  # nothing could take them (e.g. every node drained)
        unplaceable += [sch.Unplaceable(ds, "no live node took it") for ds in queue.values()]
    if progress is not None:
        progress(total, total)
    makespan = now
    uses = tuple(
        NodeUse(n.name, busy[i], busy[i] / (n.slots * makespan) if makespan > 0 else 0.0,
                disk_peak[i], attempts[i], busy[i] * n.cpus_per_slot)
        for i, n in enumerate(nodes))
    live = [n for n in nodes if not n.drained]
    return SimResult(
        policy=policy, jobs=total, completed=completed, makespan_h=makespan,
        cpu_hours=sum(u.cpu_hours for u in uses), failures_avoidable=sum(failures.values()),
        failures_by_cause=failures, gave_up=tuple(gave_up), unplaceable=tuple(unplaceable), nodes=uses,
        plan_makespan_h=plan.makespan_h if plan is not None else 0.0,
        plan_variant=plan.variant if plan is not None else "",
        wasted_cpu_hours=wasted, forecasts=tuple(forecasts),
        mean_hours=sum(h for h, _ in truth.values()) / total if total else 0.0,
        slots=sum(n.slots for n in live), capacity=sum(n.slots * n.speed for n in live), refits=refits,
        killed=tuple(killed))


def _with_busy(node: NodeState, busy_h: tuple[float, ...]) -> NodeState:
    """``replace(node, busy_h=busy_h)`` for a node whose ``free`` is set (its ``__post_init__`` then
    changes nothing), without the dataclass machinery: a replay tells every node at each plan."""
    new = object.__new__(NodeState)
    values = node.__dict__.copy()  # (its cached spec too: busy hours are no part of it)
    values["busy_h"] = busy_h
    object.__setattr__(new, "__dict__", values)
    return new


def _refit(hist: Sequence[Measured], running: Mapping[int, tuple[DataSet, float, int]],
           nodes: Sequence[NodeState], now: float, tuning: sch.Tuning) -> sch.Model:
    """The model fitted on the replay's history so far, its running attempts as lower limits."""
    return sch.fit_history(_known_history(hist, running, nodes, now), tuning)


def _known_history(hist: Sequence[Measured], running: Mapping[int, tuple[DataSet, float, int]],
                   nodes: Sequence[NodeState], now: float) -> list[Measured]:
    """The replay's history so far with its running attempts as lower limits."""
    return list(hist) + [attempt(d, now - start, nodes[i].speed, "running")
                         for d, start, i in running.values() if now > start]


def _replay_forecast(now: float, done: float, queue: Mapping[str, DataSet],
                     running: Mapping[int, tuple[DataSet, float, int]], preds: Mapping[str, Prediction],
                     nodes: Sequence[NodeState], model: sch.Model,
                     tuning: sch.Tuning, samples: int, seed: int, draws=None, detail: dict | None = None,
                     drift: float = 0.0, search: sch.Search = sch.DEFAULT_SEARCH) -> Forecast:
    """A :class:`Forecast` from inside a replay: what it knows now, nothing of the truth
    (``tuning`` carries the placement quantiles the current plan uses)."""
    waiting = [(ds, preds[ds.uid]) for ds in queue.values()]
    busy = [(preds[ds.uid], (now - start) * nodes[i].speed, nodes[i].name) for ds, start, i in running.values()]
    p10, p50, p90 = forecast_finish(waiting, busy, nodes, samples, seed, tuning=tuning, coefficients=draws,
                                    **_resampled(model, len(waiting) + len(busy)),
                                    model_sigma=max(FORECAST_MODEL_SIGMA, abs(drift)) * (1 - done), detail=detail,
                                    search=search)
    return Forecast(round(now, 3), round(done, 4), round(now + p10, 3), round(now + p50, 3), round(now + p90, 3))


# -- forecasts -------------------------------------------------------------------

def _resampled(model: sch.Model, count: int = 0) -> dict:
    """The residuals a forecast of ``count`` data sets resamples (keywords of :func:`forecast_finish`): the
    hours fit's, its attempts cut short counted as lower limits (:func:`~ari_console.scheduler.survival_residuals`),
    their tail carried past the furthest seen as far as the largest of the history and the ``count`` is
    expected to go (:func:`~ari_console.scheduler.extended_pool`), and how far beyond its fitted median (log
    hours) a draw may go: the furthest any attempt went, carried as far by its own records' gaps
    (:attr:`~ari_console.scheduler.Fit.longest_gap`)."""
    if model.hours is None:
        return dict(residuals=())
    fit = model.hours
    if not fit.pool:
        return dict(residuals=fit.residuals, residual_cap=fit.longest)
    return dict(residuals=sch.extended_pool(fit.pool, fit.pool_tail, count),
                residual_cap=fit.longest + fit.longest_gap * math.log((len(fit.pool) + count) / len(fit.pool)))


def forecast_finish(waiting: Sequence[tuple[DataSet, Prediction]],
                    running: Sequence[tuple[Prediction, float, str]], nodes: Sequence[NodeState],
                    samples: int = FORECAST_SAMPLES, seed: int = 0, residuals: Sequence[float] = (),
                    tuning: sch.Tuning = sch.DEFAULT_TUNING,
                    memory_kill_after: float = MEMORY_KILL_AFTER,
                    coefficients=None, model_sigma: float = 0.0,
                    exact_jobs: int = FORECAST_EXACT_JOBS, detail: dict | None = None,
                    residual_cap: float = math.inf, search: sch.Search | None = sch.DEFAULT_SEARCH,
                    ) -> tuple[float, float, float]:
    """(P10, P50, P90) hours from now until ``waiting`` and ``running`` are done on ``nodes``.

    ``running`` holds (prediction, speed-1.0 hours it has run, node name).
    Each draw is one possible truth: every data set's hours and memory come
    from its prediction's spread — one draw of the fit's coefficient error
    shared by all (a fit that is off is off for every data set: ``coefficients``,
    from :func:`~ari_console.scheduler.coefficient_draws`, else normal draws of the
    fit's covariance), plus one more error of log-sd ``model_sigma`` common to
    every predicted waiting data set (what the fit cannot see: FORECAST_MODEL_SIGMA),
    then each data set's own scatter, resampled from the history's ``residuals``
    (in units of each one's spread) when given (so a skewed or heavy tail is
    kept), cut below at what it is known to need (a running attempt: what it has
    run). A draw's finish is that truth played through a list schedule that knows
    only the predictions (:func:`_list_finish`), each waiting data set only on the
    classes placement's own risk rule allows it now (:func:`_placement_masks`, with
    ``search``'s quantiles and loss ratios; None: not used); where that allows none,
    where placement would send it once the fit has settled (its quantiles around the
    drawn median with the history's scatter, not today's wider spread;
    ``tuning`` holds the quantiles). Deterministic for a given ``seed``.

    No draw finishes before the bound no schedule of *its* truth can beat
    (:func:`_draw_bounds`: the LP over node classes and the longest data set, on the
    draw's hours and the classes they fit): so P10 / P50 / P90 are never below the
    same percentiles of that bound. ``detail``, a dict when given, receives per draw
    (arrays): ``finish``, ``bound``, ``work`` (speed-1.0 hours still to do) and
    ``waste`` (slot-hours lost to killed attempts).

    >>> forecast_finish([(DataSet("a"), Prediction(4.0, 8.0))], [], [NodeState("n", mem_gb=16)])
    (4.0, 4.0, 4.0)
    """
    import numpy as np

    classes = sch.node_classes(nodes)
    if not classes or not (waiting or running):
        return 0.0, 0.0, 0.0
    n = len(classes)
    class_of = {nodes[i].name: ci for ci, c in enumerate(classes) for i in c.members}
    speeds = np.array([c.rep.speed for c in classes])
    mems = np.array([c.rep.mem_gb for c in classes])
    walls = np.array([math.inf if c.rep.walltime_h is None else c.rep.walltime_h for c in classes])
    # per data set: its prediction; the classes allowed whatever the hours (bitmask); the hours it has run
    anything, every = Prediction(0.0, 0.0), (1 << n) - 1
    queue = [ds for ds, _ in waiting]
    entries = [pred for _, pred in waiting]
    fixed = [every if pins == _NO_PINS else
             sum(1 << ci for ci, c in enumerate(classes) if sch.why_not(ds, anything, c.rep) is None)
             for ds, pins in zip(queue, map(_PINS, queue))]
    done = [0.0] * len(waiting)
    if waiting:  # where its scratch fits (a data set that fits nowhere is the plan's unplaceable, not here)
        disk = sch.scratch_masks(queue, classes).tolist()
        fixed = [f & d or f for f, d in zip(fixed, disk)]
    chosen = _placement_masks(waiting, classes, tuning, search) if waiting and search is not None else None
    for pred, ran, name in running:
        if name in class_of:
            entries.append(replace(pred, mem_median_gb=0.0, mem_sigma=0.0, mem_floor_gb=0.0))
            fixed.append(-(1 << class_of[name]))  # negative: placed; its node runs it to the end
            done.append(ran)
    if not entries:
        return 0.0, 0.0, 0.0
    # a waiting data set's classes come from its draws only where placement's own rule allows it none (or
    # none is asked): only there are its placement values per draw wanted (a running one: its node's class)
    drawn = np.zeros(len(entries), dtype=bool)
    drawn[:len(waiting)] = True if chosen is None else chosen == 0
    keep = None if drawn.all() else np.flatnonzero(drawn)
    rng = np.random.default_rng(seed)
    hours, need_h = _draw(rng, samples, [p.median_h or p.plan_h for p in entries], [p.sigma for p in entries],
                          np.maximum([p.floor_h for p in entries], done), [p.shift for p in entries],
                          residuals if len(residuals) >= 30 else (), [p.source == "history" for p in entries],
                          min(tuning.hours_quantile, FORECAST_HOURS_QUANTILE), coefficients, cap=residual_cap,
                          keep=keep)
    curve = next((p.mem_curve for p in entries if p.mem_curve), ())  # the memory fit's own tail, if it has one
    mem, need_mem = _draw(rng, samples, [p.mem_median_gb if p.mem_median_gb is not None else p.mem_gb for p in entries],
                        [p.mem_sigma for p in entries], [p.mem_floor_gb for p in entries],
                        [p.mem_shift for p in entries], _curve_pool(curve), [p.mem_curve is curve for p in entries],
                        tuning.mem_quantile,
                        q_unit=float(sch.curve_unit(curve, 1 - tuning.mem_quantile)) if curve else None, keep=keep)
    if model_sigma > 0:  # the error common to the waiting work that the fit cannot see (FORECAST_MODEL_SIGMA)
        waiting_cols = (np.array(fixed) >= 0) & (np.array([p.sigma for p in entries]) > 0)  # predicted, not given
        common = np.exp(model_sigma * rng.standard_normal(samples))[:, None]
        if waiting_cols.all():
            hours *= common
        elif waiting_cols.any():
            some = np.flatnonzero(waiting_cols)
            hours[:, some] = hours[:, some] * common
    left = hours  # work still to do, speed 1.0 (in the draws' own buffer: 12 M values at 100,000 queued)
    left -= np.array(done)[None, :]
    np.maximum(left, 0.0, out=left)
    del hours
    fixed = np.array(fixed)
    small = np.uint8 if n <= 8 else np.uint16 if n <= 16 else np.int64  # class bitmasks: as few bytes as hold them
    mask = np.zeros(left.shape, dtype=small)
    if chosen is not None:  # the classes placement allows each one now, where it allows any
        mask[:, :len(waiting)] = chosen.astype(small)[None, :]
    if need_h.shape[1]:  # elsewhere the classes its drawn placement values fit
        per_draw = mask if keep is None else np.zeros(need_h.shape, dtype=small)
        for ci in range(n):
            per_draw |= ((need_mem <= mems[ci]) & (need_h / speeds[ci] <= walls[ci])).astype(small) << small(ci)
        if keep is not None:
            mask[:, keep] = per_draw
    del need_h, need_mem
    mask &= np.maximum(fixed, 0).astype(small)[None, :]
    if (fixed < 0).any():  # a running attempt: its node's class alone
        some = np.flatnonzero(fixed < 0)
        mask[:, some] = (-fixed[some]).astype(small)[None, :]
    kinds = np.where(fixed < 0, -fixed, fixed)
    bound = _draw_bounds(left, mem, mask, fixed < 0, kinds, classes)
    work = left.sum(axis=1) if detail is not None else None
    waste = np.zeros(samples) if detail is not None else None
    span = _list_finish(left, mem, mask, fixed < 0, [max(0.0, p.plan_h - d) for p, d in zip(entries, done)],
                        classes, memory_kill_after, kinds, retry_margin=tuning.retry_margin,
                        exact_jobs=exact_jobs, waste=waste, ran=np.array(done, dtype=float))
    span = np.maximum(span, bound)
    if detail is not None:
        detail.update(finish=span, bound=bound, work=work, waste=waste)
    p10, p50, p90 = np.percentile(span, [10, 50, 90])
    return round(float(p10), 4), round(float(p50), 4), round(float(p90), 4)


def _placement_masks(waiting: Sequence[tuple[DataSet, Prediction]], classes: Sequence[sch.NodeClass],
                     tuning: sch.Tuning, search: sch.Search):
    """Per waiting data set (an array), the bitmask of the classes placement lets it run on now: its
    own risk rule (:func:`~ari_console.scheduler.settle_risk` with ``search``'s quantiles and loss
    ratios) on these predictions; 0 where it allows none (tried where its medians fit, or unplaceable).

    >>> c = sch.node_classes([NodeState("small", mem_gb=8), NodeState("big", mem_gb=64)])
    >>> _placement_masks([(DataSet("a"), Prediction(4.0, 16.0)), (DataSet("b"), Prediction(4.0, 4.0))],
    ...                  c, sch.DEFAULT_TUNING, sch.DEFAULT_SEARCH).tolist()
    [2, 3]
    """
    import numpy as np

    queue = [ds for ds, _ in waiting]
    preds = {ds.uid: p for ds, p in waiting}
    placed = None
    if search.relax_quantiles or search.risk_ratios:  # the settled values as arrays (as a plan takes them)
        preds, _, placed = settle(queue, preds, classes, search.relax_quantiles, search.relax_tolerance,
                                  tuning.retry_margin, ratios=search.risk_ratios, lean=True)
    allowed = sch.eligibility(queue, preds, classes, placed)
    return np.array([sum(1 << ci for ci in elig) for _, elig in allowed], dtype=np.int64)


def _list_finish(left, mem, mask, placed, plan_left: Sequence[float], classes: Sequence[sch.NodeClass],
                 memory_kill_after: float, kinds=None, max_attempts: int = MAX_ATTEMPTS,
                 retry_margin: float = sch.RETRY_MARGIN, exact_jobs: int = FORECAST_EXACT_JOBS, waste=None,
                 ran=None):
    """Per draw (rows of ``left``), the finish of a list schedule that knows only the predictions.

    What the replay (and the engine) does, played out on each drawn truth at once: the
    running attempts (``placed``, their class the one bit of ``mask``) finish on their
    slots; the waiting data sets go longest-predicted first (``plan_left``), each to the
    slot of its classes (``mask``, per draw) that would finish it first *by its
    prediction*, and then take their drawn hours there. A data set the prediction
    calls short but whose truth is long starts late and ends late: the straggler a
    fluid bound cannot see. One over the walltime is killed at it (one over the
    node's memory part-way) and runs again, as the retry policy sends it: on the
    first slot to free of the classes its new floor (what the kill taught, x the
    retry margin) allows, and ``kinds`` (per data set, the classes its recipe,
    CASA version and pin allow) — killed again if its truth outruns that one too,
    given up after ``max_attempts``.

    Up to ``exact_jobs`` data sets each is placed on its own, exactly so. Past that the
    bulk of a long queue is placed in batches (:func:`_batches`): consecutive data sets
    of the head of the order that may go to the same classes in every draw go together
    to one slot, by their summed prediction, and run there one after the other (each
    killed one held the slot for what its kill took and goes again from the moment it
    was killed), each batch no longer by prediction than what the tail still to come
    can level; the tail and the running attempts are still placed one by one. A
    schedule's finish is decided by its tail (the slots' ends levelled by the last,
    shortest data sets, and the stragglers among them): the batches only coarsen the
    middle of the schedule (within ~1.5 % of the exact P10/P50/P90 on the hidden-truth
    generators; ``tests/test_estimate_forecast.py``).

    ``waste`` (an array, one value per draw), when given, gains the slot-hours each draw
    lost to killed attempts. ``ran`` (per data set, speed-1.0 hours each running attempt has
    run), when given, lets the walltime kill a running attempt too: one whose drawn hours in
    all outrun its node's walltime holds its slot until then and goes again, whole, as a
    killed one does; without it a running attempt runs to its end.
    """
    import numpy as np

    draws, jobs = left.shape
    kinds = np.full(jobs, (1 << len(classes)) - 1) if kinds is None else np.asarray(kinds)
    slot_class = np.array([ci for ci, c in enumerate(classes) for _ in range(c.slots)])
    speed = np.array([classes[ci].rep.speed for ci in slot_class])
    wall = np.array([math.inf if classes[ci].rep.walltime_h is None else classes[ci].rep.walltime_h
                     for ci in slot_class])
    slot_mem = np.array([classes[ci].rep.mem_gb for ci in slot_class])
    bit = (1 << slot_class)[None, :]
    free = np.zeros((draws, len(slot_class)))
    rows = np.arange(draws)
    fastest = np.array([max((c.rep.speed for ci, c in enumerate(classes) if m >> ci & 1), default=1.0)
                        for m in range(1 << len(classes))]) if len(classes) <= 12 else None
    plan_left = np.asarray(plan_left, dtype=float)
    first = mask[0] if draws else np.zeros(jobs, dtype=np.int64)
    speed_of = fastest[first] if fastest is not None else np.ones(jobs)
    waiting = np.flatnonzero(~placed)
    order = np.concatenate([np.flatnonzero(placed),  # longest-predicted first, ties by position
                            waiting[np.lexsort((waiting, -plan_left[waiting] / speed_of[waiting]))]])
    inf, big = np.inf, 1e12  # big: hours past any schedule's end
    classes_wall = np.array([math.inf if c.rep.walltime_h is None else c.rep.walltime_h for c in classes])
    classes_speed = np.array([c.rep.speed for c in classes])
    classes_mem = np.array([c.rep.mem_gb for c in classes])
    # A draw that may kill a data set: its truth over the walltime or the memory of a class it may go to
    # (a little cautious: the kill test below decides, this only keeps the quick path off it).
    risky = np.zeros(left.shape, dtype=bool)
    for ci in range(len(classes)):
        over = (left > classes_wall[ci] * classes_speed[ci] * (1 - 1e-9)) | (mem > classes_mem[ci])
        risky |= ((mask >> ci) & 1).astype(bool) & over
    if ran is not None:  # a running attempt is at risk where its hours in all outrun its node's walltime
        ran = np.asarray(ran, dtype=float)
        some = np.flatnonzero(placed)
        total = left[:, some] + ran[some][None, :]
        risky[:, some] = False
        for ci in range(len(classes)):
            risky[:, some] |= ((mask[:, some] >> ci) & 1).astype(bool) & (
                total > classes_wall[ci] * classes_speed[ci] * (1 - 1e-9))
        del total
        safe = ~risky.any(axis=0)
    else:
        safe = placed | ~risky.any(axis=0)
    del risky
    units = _batches(order, mask, plan_left, int(placed.sum()), float(sum(c.capacity for c in classes)),
                     classes_speed.tolist(), exact_jobs, safe)
    penalty_of = np.where((np.arange(1 << len(classes))[:, None] & bit) > 0, 0.0, inf) \
        if len(classes) <= 12 else None
    constant = mask.min(axis=0) == mask.max(axis=0)  # the same classes in every draw
    by_job = [np.ascontiguousarray(a.T) for a in (left, mem, mask)]  # one data set's draws side by side
    left, mem, mask = by_job
    reach = mask != 0
    nowhere, everywhere = ~reach.any(axis=1), reach.all(axis=1)  # per data set: a class in no draw, in all
    every = int(np.bitwise_or.reduce(bit[0])) if bit.size else 0
    every_kind = (kinds & every) == every  # per data set, whether its recipe, CASA version and pin allow every slot
    # per data set, the slots they allow (only wanted where some data set is not allowed them all)
    kind_slots = None if every_kind.all() else (kinds[:, None] & bit) > 0
    taught_h, taught_mem = wall * speed * retry_margin, slot_mem * retry_margin  # what a kill on a slot teaches
    # the slots a first retry may take, per slot killed at: by walltime (rows 0..S-1), by memory (S..2S-1)
    by_memory = np.repeat([False, True], len(speed))
    first_h = np.where(by_memory, 0.0, np.tile(taught_h, 2))
    first_mem = np.where(by_memory, np.tile(taught_mem, 2), 0.0)
    first_can = (first_h[:, None] / speed[None, :] <= wall[None, :]) & (first_mem[:, None] <= slot_mem[None, :])

    def again(j, end, active, slot):  # a batch's killed ones (per draw, ``j``), killed in ``active`` at ``end``
        r = rows[active]
        at, who = slot[r], j[r]
        _retry(who, r, end[r], at, mem[who, r] > slot_mem[at], free, speed, wall, slot_mem, kind_slots, taught_h,
               taught_mem, first_can, left, mem, memory_kill_after, max_attempts, waste)

    def again_together(members, killed, over_mem, ends, slot, draws=rows, also=None, attempts=max_attempts):
        """A batch's killed ones (``killed``: members x ``draws``, at ``ends`` on ``slot``), those of a draw
        killed the same way (walltime, memory) together: to the slot free last before the first of them
        (the shortest idle gap), else the first to free after it, of those the kills allow (``also``, per
        draw: what earlier kills allow), one after the other there, each from when it was killed; those
        killed again there go again together the same way, up to ``attempts`` in all."""
        for by_mem in (False, True):
            g = killed & over_mem if by_mem else killed & ~over_mem
            hit = np.flatnonzero(g.any(axis=0))
            if not len(hit):
                continue
            if len(hit) < len(draws):
                g = g[:, hit]
            d = draws[hit]
            ends_d = ends[:, hit]
            can = first_can[slot[hit] + len(speed) * by_mem]
            if also is not None:
                can &= also[hit]
            free_d = free[d]
            idle = np.where(g, ends_d, inf).min(axis=0)[:, None] - free_d
            to = np.where(can, np.where(idle >= 0, idle, big - idle), inf).argmin(axis=1)
            go = can[np.arange(len(d)), to]  # the draws with somewhere to go (else: given up)
            if not go.all():
                d, g, to, can, ends_d, free_d = d[go], g[:, go], to[go], can[go], ends_d[:, go], free_d[go]
                if not len(d):
                    continue
            speed_to, wall_to = speed[to], wall[to]
            at = members[:, None], d[None, :]
            run = left[at] / speed_to
            over2 = mem[at] > slot_mem[to]
            killed2 = ((run > wall_to) | over2) & g
            held = np.where(over2, np.minimum(run * memory_kill_after, wall_to), np.minimum(run, wall_to))
            held *= g
            # each one's end: its held time after the later of the one before and its kill
            done_by = np.cumsum(held, axis=0)
            ends2 = done_by + np.maximum.accumulate(
                np.where(g, np.maximum(ends_d, free_d[np.arange(len(d)), to]), -inf) - (done_by - held), axis=0)
            free[d, to] = ends2[-1]
            if waste is not None:
                waste[d] += (held * killed2).sum(axis=0)
            if attempts > 2 and killed2.any():
                again_together(members, killed2, over2, ends2, to, d, can, attempts - 1)

    del reach
    joined = [u for u in units if len(u) > 1]
    if joined:  # each batch's work per draw, and its predicted hours
        starts = np.cumsum([0] + [len(u) for u in joined[:-1]])
        batch_plan = dict(zip(map(id, joined), np.add.reduceat(plan_left[np.concatenate(joined)], starts)))
        joined = [u for u in joined if safe[u].all()]  # the work per draw only where no draw kills (placed whole)
        starts = np.cumsum([0] + [len(u) for u in joined[:-1]])
        batch_work = dict(zip(map(id, joined), np.add.reduceat(left[np.concatenate(joined)], starts, axis=0))
                          if joined else ())
    del by_job
    for members in units:
        j = members[0]
        if len(members) > 1:
            _place_batch(members, free, rows, speed, wall, slot_mem, penalty_of[mask[j, 0]], left, mem,
                         float(batch_plan[id(members)]), batch_work.get(id(members)), safe[members].all(),
                         memory_kill_after, again, waste, again_together if every_kind[members].all() else None)
            continue
        own = (0.0 if placed[j] else plan_left[j]) / speed  # its predicted hours on each slot
        if safe[j] and constant[j] and penalty_of is not None:  # no draw kills it, the same classes in all
            if mask[j, 0] == 0:  # no class: the plan's unplaceable
                continue
            slot = (free + (own + penalty_of[mask[j, 0]])[None, :]).argmin(axis=1)
            free[rows, slot] = free[rows, slot] + left[j] / speed[slot]
            continue
        if nowhere[j]:  # no class in any draw
            continue
        if penalty_of is not None and constant[j]:  # the same classes in every draw: one row of penalties
            guess = free + (own + penalty_of[mask[j, 0]])
        else:
            guess = free + own[None, :]
            if penalty_of is not None:  # a slot not of its classes in that draw: inf
                guess += penalty_of.take(mask[j], axis=0)
            else:
                guess[(mask[j, :, None] & bit) == 0] = inf
        slot = guess.argmin(axis=1)
        ok = None if everywhere[j] else mask[j] != 0  # the draws it has a class in (None: all)
        speed_at, wall_at = speed[slot], wall[slot]
        run = left[j] / speed_at
        start = free[rows, slot]
        if placed[j]:  # running: killed if its hours in all outrun the walltime, at what is left of it
            killed = (ran is not None) & ((left[j] + (ran[j] if ran is not None else 0.0)) / speed_at > wall_at)
        else:
            over_mem = mem[j] > slot_mem[slot]
            killed = (run > wall_at) | over_mem
        if ok is not None:
            killed &= ok
        if not killed.any():
            if ok is None:
                free[rows, slot] = start + run
            else:
                free[rows[ok], slot[ok]] = (start + run)[ok]
            continue
        # killed: it goes again where what the kill taught allows, and may be killed again there
        if placed[j]:
            lost = np.maximum(wall_at - ran[j] / speed_at, 0.0)
            left[j] = left[j] + ran[j]  # the retry runs it whole
        else:
            lost = np.where(over_mem, np.minimum(run * memory_kill_after, wall_at), wall_at)
        end = start + lost
        if ok is None:
            free[rows, slot] = np.where(killed, end, start + run)
        else:
            free[rows[ok], slot[ok]] = np.where(killed, end, start + run)[ok]
        if waste is not None:
            waste += np.where(killed, lost, 0.0)
        r = np.flatnonzero(killed)
        at = slot[r]
        _retry(j, r, end[r], at, mem[j, r] > slot_mem[at], free, speed, wall, slot_mem,
               None if every_kind[j] else kind_slots, taught_h, taught_mem, first_can, left, mem, memory_kill_after,
               max_attempts, waste)
    return free.max(axis=1)


def _draw_bounds(left, mem, mask, placed, kinds, classes: Sequence[sch.NodeClass]):
    """Per draw (rows of ``left``, hours still to do at speed 1.0), a finish no schedule of that
    draw's truth can beat: max(the LP over node classes, the longest data set on its fastest class).

    A data set counts where the forecast runs it (``mask`` not 0 in that draw), on the classes its
    drawn hours and memory fit and ``kinds`` allow (a running one, ``placed``: its node's class).
    The LP is solved once, on the draws' mean work per group of classes; its dual prices z (per class,
    sum of z x capacity = 1) give every draw a bound at once: sum of each data set's hours x the
    lowest price among its classes (a feasible dual bounds any primal with the same constraints).

    >>> import numpy as np
    >>> c = sch.node_classes([NodeState("n", slots=2, mem_gb=8)])
    >>> _draw_bounds(np.array([[4.0, 2.0], [1.0, 1.0]]), np.ones((2, 2)), np.ones((2, 2), int),
    ...              np.zeros(2, bool), np.ones(2, int), c).tolist()
    [4.0, 1.0]
    """
    import numpy as np
    from scipy.optimize import linprog

    n = len(classes)
    speed = np.array([c.rep.speed for c in classes])
    wall = np.array([math.inf if c.rep.walltime_h is None else c.rep.walltime_h for c in classes])
    mems = np.array([c.rep.mem_gb for c in classes])
    cap = np.array([c.capacity for c in classes])
    small = np.uint8 if n <= 8 else np.uint16 if n <= 16 else np.int64  # class bitmasks, as forecast_finish
    fits = np.zeros(left.shape, dtype=small)
    for ci in range(n):
        fits |= ((mem <= mems[ci]) & (left <= wall[ci] * speed[ci] * (1 + 1e-9))).astype(small) << small(ci)
    fits &= np.asarray(kinds).astype(small)[None, :]
    if placed.any():
        fits[:, placed] = mask[:, placed].astype(small)
    fits[mask == 0] = 0
    if n <= 12:  # every bitmask is its own group: no sort of the draws
        groups, which = np.arange(1 << n), fits
    else:
        groups, which = np.unique(fits, return_inverse=True)
        which = which.reshape(fits.shape)
    del fits
    members = [[ci for ci in range(n) if g >> ci & 1] for g in groups.tolist()]
    fastest = np.array([max((speed[ci] for ci in m), default=0.0) for m in members])
    per = np.take(np.where(fastest > 0, 1.0 / np.where(fastest > 0, fastest, 1.0), 0.0), which)  # (one buffer for both)
    per *= left
    longest = per.max(axis=1)
    mean_work = np.bincount(which.ravel(), weights=left.ravel(), minlength=len(groups)) / len(left)
    var = [(g, ci) for g, m in enumerate(members) if m and mean_work[g] > 0 for ci in m]
    if not var:
        return longest
    a_eq = np.zeros((len(groups), len(var) + 1))
    a_ub = np.zeros((n, len(var) + 1))
    for k, (g, ci) in enumerate(var):
        a_eq[g, k] = 1.0
        a_ub[ci, k] = 1.0
    a_ub[:, -1] = -cap
    used = a_eq[:, :-1].any(axis=1)
    res = linprog(np.r_[np.zeros(len(var)), 1.0], A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq[used],
                  b_eq=mean_work[used], bounds=[(0, None)] * (len(var) + 1), method="highs")
    if res.status != 0:  # cannot happen for a feasible model; the longest data set still bounds it
        return longest
    price = np.maximum(-np.asarray(res.ineqlin.marginals), 0.0)
    price /= max(float(price @ cap), 1e-300)  # dual feasible: sum of price x capacity <= 1
    lowest = np.array([min((price[ci] for ci in m), default=0.0) for m in members])
    np.take(lowest, which, out=per, mode="clip")
    per *= left
    lp = per.sum(axis=1)
    return np.maximum(lp, longest)


def _place_batch(members, free, rows, speed, wall, slot_mem, penalty, left, mem, plan_h: float, work, safe: bool,
                 memory_kill_after: float, retry, waste=None, retry_together=None) -> None:
    """Place a batch of data sets (indexes ``members``, the same classes in every draw: ``penalty``
    inf where a slot is not theirs) on one slot per draw, one after the other, as a single data set
    of ``plan_h`` predicted hours would go; ``work``: their drawn hours summed per draw. One that the
    slot kills holds it for what the kill took and goes again (``retry``) from the moment it was killed."""
    import numpy as np

    slot = (free + (plan_h / speed + penalty)[None, :]).argmin(axis=1)
    start = free[rows, slot]
    if safe:
        free[rows, slot] = start + work / speed[slot]
        return
    wall_at = wall[slot]
    run = left[members] / speed[slot]  # members x draws
    over_mem = mem[members] > slot_mem[slot]
    killed = (run > wall_at) | over_mem
    # what each holds the slot for: its run, or until its kill (over the walltime: the walltime)
    held = np.where(over_mem, np.minimum(run * memory_kill_after, wall_at), np.minimum(run, wall_at))
    ends = start[None, :] + np.cumsum(held, axis=0)
    free[rows, slot] = ends[-1]
    if waste is not None:
        waste += np.where(killed, held, 0.0).sum(axis=0)
    if retry_together is not None:
        if killed.any():
            retry_together(members, killed, over_mem, ends, slot)
        return
    # the killed ones go again in rounds: the first killed of each draw, then the second, ... (so in
    # each draw in the batch's order, as one by one; the draws do not meet)
    nth = np.cumsum(killed, axis=0) * killed
    for k in range(1, int(nth.max() if nth.size else 0) + 1):
        turn = nth == k
        who = turn.argmax(axis=0)
        retry(members[who], ends[who, rows], turn.any(axis=0), slot)


def _retry(j, r, end, at, over, free, speed, wall, slot_mem, kind_slots, taught_h, taught_mem, first_can, left, mem,
           memory_kill_after: float, max_attempts: int, waste=None) -> None:
    """Data set ``j`` (or, per draw of ``r``, an array of them), killed in the draws ``r`` at ``end``
    on the slots ``at`` (``over``: by memory, else by walltime), goes again on the first slot to free
    that what the kill taught allows (see :func:`_list_finish`), and again while it is killed, up to
    ``max_attempts`` in all. Per slot, ``taught_h`` and ``taught_mem``: what a kill there teaches (x the
    retry margin); ``first_can``: the slots a first kill there allows (rows: walltime kills, then memory
    kills); ``kind_slots`` (per data set): the slots its kinds allow, None for all.

    Works on the killed draws alone (a few of them, most calls), its arrays cut to the draws
    still going as they drop out: the same numbers as whole arrays would give."""
    import numpy as np

    ok_kind = None if kind_slots is None else kind_slots[j]
    per_draw = ok_kind is not None and ok_kind.ndim > 1
    left_r, mem_r = left[j, r], mem[j, r]
    can = first_can[at + len(speed) * over]
    if ok_kind is not None:
        can &= ok_kind
    need_h = need_mem = None  # what the kills taught, once it is killed again
    inf = np.inf
    for turn in range(max_attempts - 1):
        if turn:
            can = (need_h[:, None] / speed[None, :] <= wall[None, :]) & (need_mem[:, None] <= slot_mem[None, :])
            if ok_kind is not None:
                can &= ok_kind
        has = can.any(axis=1)
        if not has.all():  # nowhere left to go: those draws stop here
            r, can, end, left_r, mem_r = (a[has] for a in (r, can, end, left_r, mem_r))
            if need_h is None:
                at, over = at[has], over[has]
            else:
                need_h, need_mem = need_h[has], need_mem[has]
            if per_draw:
                ok_kind = ok_kind[has]
            if not len(r):
                break
        later = np.maximum(free[r], end[:, None])
        to = np.where(can, later, inf).argmin(axis=1)
        begin = later[np.arange(len(r)), to]
        wall_to = wall[to]
        run = left_r / speed[to]
        over_mem = mem_r > slot_mem[to]
        again = (run > wall_to) | over_mem
        lost = np.where(over_mem, np.minimum(run * memory_kill_after, wall_to), wall_to)
        free[r, to] = begin + np.where(again, lost, run)
        if waste is not None:
            waste[r] += np.where(again, lost, 0.0)
        if turn == max_attempts - 2 or not again.any():  # its last attempt (a killed one is given up), or none killed
            break
        if need_h is None:
            need_h, need_mem = np.where(over, 0.0, taught_h[at]), np.where(over, taught_mem[at], 0.0)
        need_h = np.where(again & ~over_mem, np.maximum(need_h, taught_h[to]), need_h)
        need_mem = np.where(over_mem, np.maximum(need_mem, taught_mem[to]), need_mem)
        end = begin + lost
        if not again.all():
            r, need_h, need_mem, end, left_r, mem_r = (a[again] for a in (r, need_h, need_mem, end, left_r, mem_r))
            if per_draw:
                ok_kind = ok_kind[again]


def _batches(order, mask, plan_left, placed: int, capacity: float, speeds: Sequence[float],
             exact_jobs: int, safe=None) -> list:
    """The units a forecast's list schedule places, in ``order``: lists of one data set
    (index), or arrays of several that go to one slot together (see :func:`_list_finish`).

    Up to ``exact_jobs`` data sets, each is its own unit. Past that, the head of the
    order is cut into batches of B predicted hours (speed 1.0) each (B chosen so that
    batches and tail make the fewest units), each of data sets with the same classes in
    every draw (``mask``); the ``placed`` first ones (running attempts), the tail and the
    data sets whose classes differ between draws stay single. Those some draw may kill
    (not ``safe``, per data set, when given) go in batches of their own,
    FORECAST_RISKY_SHORTER times shorter.
    The tail is long enough to level what the batches leave uneven: its predicted work
    is at least what the whole capacity does in the time one batch takes on the slowest
    node (B / slowest speed), so every slot can still take from it after the last batch.

    >>> import numpy as np
    >>> _batches(np.arange(3), np.ones((2, 3), int), np.ones(3), 0, 1.0, [1.0], 10)
    [[0], [1], [2]]
    """
    import numpy as np

    if len(order) <= exact_jobs:
        return [[j] for j in order.tolist()]
    waiting = order[placed:]
    work = plan_left[waiting]
    from_end = np.cumsum(work[::-1])
    per_batch = from_end[-1] / max(min(speeds, default=1.0), 1e-9) * capacity

    def tail_for(batches: int) -> int:  # data sets from the end that hold the work to level that many batches
        return min(len(waiting), int(np.searchsorted(from_end, per_batch / batches)) + 1)

    # as few units as can be: more batches, shorter ones, and a shorter tail levels them
    batches = min((b for b in np.unique(np.geomspace(16, max(16, len(waiting)), 48).astype(int))),
                  key=lambda b: b + tail_for(b))
    tail = tail_for(batches)
    batch_h = float(from_end[-1]) / batches
    head = waiting[:max(0, len(waiting) - tail)]
    sub = mask[:, head]
    joinable = (sub.min(axis=0) == sub.max(axis=0)) & (sub[0] != 0) if len(head) else head
    risky_of = (~np.asarray(safe)[head]).tolist() if safe is not None else [False] * len(head)
    units: list = [[j] for j in order[:placed].tolist()]
    open_batches: dict[int, list] = {}  # classes (mask) x at risk -> [its unit, predicted hours so far]
    for j, join, key, h, risky in zip(head.tolist(), np.asarray(joinable).tolist(),
                                      (sub[0] if len(head) else head).tolist(), plan_left[head].tolist(), risky_of):
        if not join:
            units.append([j])
            continue
        key = 2 * key + risky
        batch = open_batches.get(key)
        if batch is None:
            batch = open_batches[key] = [[j], h]
            units.append(batch[0])
        else:
            batch[0].append(j)
            batch[1] += h
        if batch[1] >= (batch_h / FORECAST_RISKY_SHORTER if risky else batch_h):
            del open_batches[key]
    units += [[j] for j in waiting[len(head):].tolist()]
    return [u if len(u) == 1 else np.array(u) for u in units]


def _curve_pool(curve, size: int = 2000) -> tuple[float, ...]:
    """``size`` residual units evenly spread over a residual curve's quantiles (:attr:`Prediction.mem_curve`),
    for :func:`_draw` to resample; () without a curve."""
    import numpy as np

    return tuple(sch.curve_unit(curve, 1 - (np.arange(size) + 0.5) / size).tolist()) if curve else ()


def _draw(rng, samples: int, median, sigma, floor, shift, residuals, resample, q: float, coefficients=None,
          q_unit: float | None = None, cap: float = math.inf, keep=None):
    """(values, what placement would take them for) per draw and data set: draws
    of lognormal predictions, and their ``q`` quantile around the drawn median
    with the scatter alone (see :func:`forecast_finish`); ``q_unit``: that quantile
    in units of the scatter, when the residuals are not a normal's; a resampled residual
    goes no further than ``cap`` above the median (log), whatever its scatter; ``keep``: the columns whose
    quantile is wanted (None: all)."""
    import numpy as np
    from scipy.special import ndtr, ndtri

    median, sigma, floor = (np.asarray(v, dtype=float) for v in (median, sigma, floor))
    lengths = {len(s) for s in shift}
    dim = max(lengths, default=0)
    if len(lengths) == 1 and dim:
        rows = np.array(shift, dtype=float)
    else:
        rows = np.zeros((len(median), dim))
        for j, s in enumerate(shift):
            rows[j, :len(s)] = s
    own = np.sqrt(np.maximum(sigma ** 2 - np.sum(rows ** 2, axis=1), 0.0))
    z = rng.standard_normal((samples, dim))
    if coefficients is not None and dim:  # the fit's error as a bootstrap over its attempts measured it
        z = np.zeros((samples, dim))
        given = np.asarray(coefficients)[:samples, :dim]
        z[:len(given), :given.shape[1]] = given
    mu = z @ rows.T
    mu += np.log(np.maximum(median, 1e-12))[None, :]
    spread = np.maximum(own, 1e-9)
    # Each column is worked out only where its value is kept (a resampled one needs no ndtri, an uncut one
    # no ndtr, one without spread neither): the same numbers, and the same draws from ``rng``, as the whole
    # arrays would give.
    flat = own <= 0
    cut = floor > 0
    u = rng.random(mu.shape)
    resample = np.asarray(resample, dtype=bool) if len(residuals) else np.zeros(len(median), dtype=bool)
    above = np.flatnonzero(resample & cut & ~flat)  # cut below and resampled: from the residuals above the cut
    raw = u[:, above] if len(above) else None  # a copy (fancy indexing): before the cut rescales u
    normal = ~(resample & ~cut) & ~flat  # drawn from the normal (cut below where it is)
    normal[above] = False
    values = np.empty(mu.shape)
    if normal.any():
        some = slice(None) if normal.all() else np.flatnonzero(normal)
        part = u[:, some]  # (a view of u for every column, else a copy)
        if cut[some].any():
            low_at = np.flatnonzero(cut[some])
            cols = np.arange(len(median))[some][low_at]
            with np.errstate(divide="ignore"):
                low = ndtr((np.log(floor[cols])[None, :] - mu[:, cols]) / spread[cols])
            part[:, low_at] = low + part[:, low_at] * (1 - low)
        part = ndtri(np.clip(part, 1e-12, 1 - 1e-12, out=part))
        part *= own[some]
        part += mu[:, some]
        values[:, some] = np.exp(part, out=part)
    del u
    if len(residuals):  # the history's own scatter where nothing cuts it below
        pool = np.asarray(residuals, dtype=float)
        picks = pool.take(rng.integers(0, len(pool), mu.shape))
        use = resample & ~cut & ~flat
        if use.any():
            some = slice(None) if use.all() else np.flatnonzero(use)
            part = picks if isinstance(some, slice) else picks[:, some]
            part *= own[some]
            np.minimum(part, cap, out=part)
            part += mu[:, some]
            np.exp(part, out=part)
            if isinstance(some, slice):  # every column: the picks' buffer is the values
                values = part
            else:
                values[:, some] = part
        del picks
    if raw is not None:  # cut below and resampled: the history's residuals above its floor, in its units
        pool = np.sort(np.asarray(residuals, dtype=float))
        limit = (np.log(floor[above])[None, :] - mu[:, above]) / own[above]
        lo = np.searchsorted(pool, limit)
        pick = np.minimum(lo + (raw * (len(pool) - lo)).astype(int), len(pool) - 1)
        unit = np.where(lo < len(pool), pool[pick], limit)  # past every residual: at its floor
        values[:, above] = np.maximum(np.exp(mu[:, above] + np.minimum(own[above] * unit, cap)), floor[above])
    if flat.any():  # no spread: its median, above what it is known to need
        some = np.flatnonzero(flat)
        values[:, some] = np.maximum(np.exp(mu[:, some]), floor[some])
    settled = mu if keep is None else mu[:, keep]  # (mu is not needed past here: its buffer takes the quantiles)
    settled += (own if keep is None else own[keep]) * (ndtri(q) if q_unit is None else q_unit)
    np.exp(settled, out=settled)
    np.maximum(settled, floor if keep is None else floor[keep], out=settled)
    return values, settled


# -- lower bound -----------------------------------------------------------------

@dataclass(frozen=True)
class Bound:
    """A makespan no schedule can beat: ``hours`` = max(``lp_h``, ``longest_h``)."""

    hours: float
    lp_h: float
    longest_h: float
    longest_uid: str | None


def lower_bound(datasets: Sequence[DataSet], nodes: Sequence[NodeState],
                history: Iterable[Measured] | sch.Model = (),
                predictions: Mapping[str, Prediction] | None = None,
                eligible: Sequence[tuple[DataSet, tuple[int, ...]]] | None = None) -> Bound:
    """The LP relaxation over node classes, and the longest single data set.

    LP: minimise T such that every data set's work (hours at speed 1.0) is
    split over node classes it may run on, and each class's assigned work
    (plus what is running there) is at most slots x speed x T. Data sets no
    node can run are left out (they never run). ``eligible``: ``sch.eligibility`` of
    ``datasets`` on ``sch.node_classes(nodes, pinned)`` when the caller has it already.

    >>> lower_bound([DataSet("a", hours=4, mem_gb=1), DataSet("b", hours=2, mem_gb=1)],
    ...             [NodeState("n", slots=2, mem_gb=8)]).hours
    4.0
    """
    from scipy.optimize import linprog

    preds = dict(predictions) if predictions is not None else sch.predict_all(datasets, history)
    classes = sch.node_classes(nodes, {ds.node for ds in datasets if ds.node})
    speed = [c.rep.speed for c in classes]
    cap = [c.capacity for c in classes]
    running = [sum(sum(nodes[i].busy_h) * nodes[i].speed for i in c.members) for c in classes]
    longest = max((b for n in nodes if not n.drained for b in n.busy_h), default=0.0)
    longest_uid = None
    groups: dict[tuple[int, ...], float] = {}
    for ds, elig in sch.eligibility(datasets, preds, classes) if eligible is None else eligible:
        if not elig:
            continue
        hours = preds[ds.uid].hours
        groups[elig] = groups.get(elig, 0.0) + hours
        single = hours / max(speed[j] for j in elig)
        if single > longest:
            longest, longest_uid = single, ds.uid
    if not groups:
        return Bound(longest, 0.0, longest, longest_uid)
    var = [(g, j) for g in groups for j in g]
    nv = len(var) + 1  # last variable: T
    c = [0.0] * len(var) + [1.0]
    a_eq, b_eq = [], []
    for g, work in groups.items():
        a_eq.append([1.0 if v[0] == g else 0.0 for v in var] + [0.0])
        b_eq.append(work)
    a_ub, b_ub = [], []
    for j in range(len(classes)):
        a_ub.append([1.0 if v[1] == j else 0.0 for v in var] + [-cap[j]])
        b_ub.append(-running[j])
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
                  bounds=[(0, None)] * nv, method="highs")
    if res.status != 0:  # cannot happen for a feasible model; our bug if it does
        raise RuntimeError(f"lower-bound LP failed: {res.message}")
    lp = float(res.x[-1])
    return Bound(max(lp, longest), lp, longest, longest_uid)


# -- how many nodes for a deadline -----------------------------------------------

@dataclass(frozen=True)
class NodesNeeded:
    """How many nodes of ``node_class`` to add so the workload ends by ``deadline_h``.

    ``add`` is None when no number of such nodes can make it (``reason`` says why).
    """

    node_class: str
    deadline_h: float
    add: int | None
    makespan_h: float
    lower_bound_h: float
    reason: str = ""
    never_run: tuple[sch.Unplaceable, ...] = ()
    """Data sets no node can run, not even one of ``node_class``: adding nodes of it never finishes them."""


NEVER_RUN_FIXES = {
    "memory": "add a node with that much memory, or lower the data set's mem_gb if the prediction is too high",
    "walltime": "add a node that allows that walltime (or is faster), or raise a node's walltime_h",
    "disk": "add a node with at least {need} GB of scratch, or give a node a larger scratch_dir disk and set "
            "its scratch_gb",
    "casa": "install that CASA version on a node and list it in the node's casa table",
    "recipe": "give a node that recipe",
    "pinned": "unpin the data set (ari retry UID --node NAME) or add the node it is pinned to",
    "drained": "undrain the node that can run it",
    "other": "read the reason, then change the nodes or the data set",
}
"""Why a data set can never run (the kind of its unplaceable reason) -> what an operator does about it."""


def never_run_kind(reason: str) -> str:
    """The kind of an unplaceable reason (a key of ``NEVER_RUN_FIXES``).

    >>> never_run_kind("needs 900 GB memory; the largest node (hpc) has 512 GB"), never_run_kind("needs CASA 4.7.2, ws has 6.6")
    ('memory', 'casa')
    >>> never_run_kind("needs 3000 GB of scratch; the largest scratch (hpc) has 2000 GB")
    'disk'
    """
    kinds = (("GB memory", "memory"), ("GB of scratch", "disk"), (" h at speed", "walltime"), ("walltime", "walltime"),
             ("needs CASA", "casa"), ("needs recipe", "recipe"), ("pinned", "pinned"), ("only drained", "drained"))
    return next((kind for text, kind in kinds if text in reason), "other")


def never_run_groups(never: Sequence[sch.Unplaceable]) -> list[dict]:
    """Data sets that can never run, grouped by kind, biggest group first: ``{kind, count, example, fix, uids}``.

    >>> g = never_run_groups([sch.Unplaceable(DataSet("a"), "needs 900 GB memory; the largest node (x) has 512 GB")])
    >>> (g[0]["kind"], g[0]["count"], g[0]["fix"].split(",")[0])
    ('memory', 1, 'add a node with that much memory')
    """
    groups: dict[str, list[sch.Unplaceable]] = {}
    for u in never:
        groups.setdefault(never_run_kind(u.reason), []).append(u)
    return [{"kind": kind, "count": len(us), "example": us[0].reason, "fix": _never_run_fix(kind, us),
             "uids": [u.dataset.uid for u in us]}
            for kind, us in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))]


def _never_run_fix(kind: str, group: Sequence[sch.Unplaceable]) -> str:
    """What an operator does about a group of one kind (the scratch a disk fix needs: the group's largest need)."""
    if kind != "disk":
        return NEVER_RUN_FIXES[kind]
    need = max((u.dataset.scratch_need_gb or 0.0 for u in group), default=0.0)
    return NEVER_RUN_FIXES[kind].format(need=f"{math.ceil(need):,}")


def never_runs(datasets: Sequence[DataSet], nodes: Sequence[NodeState], node_class: str,
               predictions: Mapping[str, Prediction]) -> tuple[sch.Unplaceable, ...]:
    """The data sets no node can run even with one more node of ``node_class`` (so with any number of them)."""
    with_class = add_nodes(nodes, node_class, 1)
    found = ((ds, sch.unplaceable_reason(ds, predictions[ds.uid], with_class)) for ds in datasets)
    return tuple(sch.Unplaceable(ds, why) for ds, why in found if why is not None)


def add_nodes(nodes: Sequence[NodeState], node_class: str, count: int) -> list[NodeState]:
    """``nodes`` plus ``count`` copies of the first node of class (or name) ``node_class``."""
    template = next((n for n in nodes if n.klass == node_class or n.name == node_class), None)
    if template is None:
        known = sorted({n.klass for n in nodes})
        close = difflib.get_close_matches(node_class, known, n=1)
        hint = f'did you mean "{close[0]}"?' if close else f"known: {', '.join(known)}"
        raise UserError(f'--add-class: no node or class "{node_class}" in the nodes file — {hint}')
    extra = [replace(template, name=f"{template.klass}+{i}", node_class=template.klass,
                     free=template.slots, busy_h=(), drained=False) for i in range(1, count + 1)]
    return list(nodes) + extra


def nodes_needed(datasets: Sequence[DataSet], nodes: Sequence[NodeState], node_class: str,
                 deadline_h: float, policy: str = sch.DEFAULT_POLICY,
                 history: Iterable[Measured] | sch.Model = (), limit: int = 4096,
                 progress: Callable[[int, int], None] | None = None,
                 actual: Mapping[str, tuple[float | None, float | None]] | None = None) -> NodesNeeded:
    """The fewest nodes of ``node_class`` to add so the simulated makespan <= ``deadline_h``.

    Exponential search then bisection on the count; the lower bound rules a
    count out before any simulation does. The makespan is of what can run at
    all: ``never_run`` holds the data sets no node (nor one of the class) can run.
    ``actual`` is the hidden truth of a workload (as in :func:`simulate`): each
    count is replayed on it, learning as the engine does, and the bound comes
    from it; the predictions never read it.
    """
    model = history if isinstance(history, sch.Model) else sch.fit_history(history)
    preds = truth_predictions(datasets, actual, model) if actual else sch.predict_all(datasets, model)
    never = never_runs(datasets, nodes, node_class, preds)
    memo: dict[int, tuple[bool, float, float]] = {}

    def check(k: int) -> tuple[bool, float, float]:
        if k not in memo:
            ns = add_nodes(nodes, node_class, k)
            lb = lower_bound(datasets, ns, predictions=preds).hours
            if lb > deadline_h:
                memo[k] = (False, math.inf, lb)
            else:
                sim = simulate(datasets, ns, policy, model, actual=actual or None)
                memo[k] = (sim.makespan_h <= deadline_h, sim.makespan_h, lb)
            if progress is not None:
                progress(len(memo), len(memo) + 1)
        return memo[k]

    floor = lower_bound(datasets, add_nodes(nodes, node_class, limit), predictions=preds)
    if floor.hours > deadline_h:
        why = (f"the longest data set alone takes {floor.longest_h:.4g} h"
               if floor.longest_h >= floor.lp_h else
               f"what {node_class} cannot run keeps the other nodes busy {floor.lp_h:.4g} h")
        return NodesNeeded(node_class, deadline_h, None, math.inf, floor.hours,
                           f"even {limit} more {node_class} nodes cannot: {why}", never)
    ok, span, lb = check(0)
    if ok:
        return NodesNeeded(node_class, deadline_h, 0, span, lb, never_run=never)
    lo, hi = 0, 1
    while not check(hi)[0]:
        lo, hi = hi, hi * 2
        if hi > limit:
            _, span, lb = check(lo)
            return NodesNeeded(node_class, deadline_h, None, span, lb,
                               f"the simulation needs more than {limit} more {node_class} nodes", never)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if check(mid)[0]:
            hi = mid
        else:
            lo = mid
    _, span, lb = check(hi)
    return NodesNeeded(node_class, deadline_h, hi, span, lb, never_run=never)


# -- a live campaign ---------------------------------------------------------------

@dataclass(frozen=True)
class CampaignEstimate:
    """When a campaign's queue will be done, on its nodes as they are now.

    ``band`` is the P10 / P50 / P90 finish from the predictions' spread
    (:func:`forecast_finish`, which also counts what the running attempts still
    need), so an operator can say "done between P10 and P90"; ``finish_at`` is
    its P50, so the one finish shown always lies inside the band shown beside
    it (the replay on the expected hours, ``simulation``, when there is no band). ``mean_hours`` (per
    data set, speed 1.0) and ``slots`` are what the answer assumes. ``lower_bound_h`` comes from the
    same draws as the band: the median over the draws of the finish no schedule of that draw's truth
    can beat (:func:`_draw_bounds`), so it is never above the P50 printed beside it.
    """

    finish_at: datetime
    remaining_h: float
    lower_bound_h: float
    cpu_hours: float
    disk_peak_gb: Mapping[str, float]
    unplaceable: tuple[sch.Unplaceable, ...]
    simulation: SimResult = field(repr=False)
    band_h: tuple[float, float, float] = (0.0, 0.0, 0.0)
    band: tuple[datetime, datetime, datetime] | None = None
    mean_hours: float = 0.0
    slots: int = 0


def estimate_campaign(queue: Sequence[DataSet], history: Iterable[Measured], nodes: Sequence[NodeState],
                      now: datetime, policy: str = sch.DEFAULT_POLICY,
                      running: Sequence[tuple[DataSet, str, float]] = (),
                      samples: int = FORECAST_SAMPLES, replay_jobs: int = REPLAY_JOBS) -> CampaignEstimate:
    """Simulate the waiting ``queue`` (predicted from ``history``) on ``nodes``
    (their running attempts in ``busy_h``) starting at ``now``, and forecast
    the finish with its spread; ``running`` holds (data set, node, wall hours
    run) of the attempts running now (the forecast counts what they still need).

    A queue longer than ``replay_jobs`` is not replayed through placement (a
    replay places data sets one by one: 35 s at 100,000): its ``simulation``
    is :func:`fluid_summary` of the predictions, and its finish the forecast's.
    """
    import numpy as np

    history = list(history)
    model = sch.fit_history(history)
    preds = sch.predict_all(list(queue) + [ds for ds, _, _ in running], model)
    long_queue = len(queue) > replay_jobs
    eligible = (sch.eligibility(queue, preds, sch.node_classes(nodes, {ds.node for ds in queue if ds.node}))
                if long_queue else None)
    speed = {n.name: n.speed for n in nodes}
    busy = [(preds[ds.uid], ran * speed.get(name, 1.0), name) for ds, name, ran in running]
    # Work a node is known to hold for a while yet (its busy_h), at its speed, fits where it runs.
    busy += [(sch.Prediction(h * n.speed, 0.0), 0.0, n.name) for n in nodes for h in n.busy_h if h > 0]
    drawn: dict = {}
    band_h = forecast_finish([(ds, preds[ds.uid]) for ds in queue], busy, nodes, samples,
                             **_resampled(model, len(queue) + len(busy)),
                             coefficients=sch.coefficient_draws(history, model, samples, most=BOOTSTRAP_ATTEMPTS),
                             model_sigma=max(FORECAST_MODEL_SIGMA, abs(model_drift(history)))
                             * _still_to_do(history, band_work(queue, preds, busy)),
                             detail=drawn)
    sim = (fluid_summary(queue, nodes, preds, policy, band_h[1], eligible=eligible) if long_queue
           else simulate(queue, sch.running_left(nodes, [(preds[ds.uid], name, ran) for ds, name, ran in running],
                                                 model.hours.pool if model.hours is not None else ()), policy, model))
    remaining_h = band_h[1] if band_h[2] > 0 else sim.makespan_h
    if band_h[2] > 0:  # the bound of the same draws the band comes from: never above its P50
        bound_h = round(float(np.median(drawn["bound"])), 4)
    else:  # no band: the bound of the expected hours the replay ran on
        expected = {u: p.placed_at(p.plan_h, p.mem_gb) for u, p in preds.items()}
        bound_h = lower_bound(queue, nodes, predictions=expected, eligible=eligible).hours
    return CampaignEstimate(now + timedelta(hours=remaining_h), remaining_h, bound_h,
                            sim.cpu_hours, sim.disk_peak_gb, sim.unplaceable, sim, band_h,
                            tuple(now + timedelta(hours=h) for h in band_h),
                            sum(preds[ds.uid].plan_h for ds in queue) / len(queue) if queue else 0.0, sim.slots)


def fluid_summary(queue: Sequence[DataSet], nodes: Sequence[NodeState], preds: Mapping[str, Prediction],
                  policy: str, makespan_h: float, expansion: float = DISK_EXPANSION,
                  eligible: Sequence[tuple[DataSet, tuple[int, ...]]] | None = None) -> SimResult:
    """What a replay of a long ``queue`` would report, from its predictions without placing it:
    the data sets no node can run (as placement finds them), CPU-hours as if every live slot
    were busy until the predicted work is done (each slot's ``cpus_per_slot`` counted), and per
    node the scratch its slots would hold running its largest eligible data sets at once (a
    bound: a replay's peak is at most that). ``makespan_h`` is the finish the caller forecast;
    ``eligible`` as :func:`lower_bound` takes it.

    >>> s = fluid_summary([DataSet("a", size_gb=10)], [NodeState("n", slots=2, mem_gb=64)],
    ...                   {"a": Prediction(4.0, 8.0)}, "lpt", 4.0)
    >>> s.cpu_hours, s.disk_peak_gb, s.completed
    (4.0, {'n': 30.0}, 1)
    """
    import numpy as np

    classes = sch.node_classes(nodes, {ds.node for ds in queue if ds.node})
    unplaceable, runs = [], []
    for ds, elig in sch.eligibility(queue, preds, classes) if eligible is None else eligible:
        why = None if elig else sch.unplaceable_reason(ds, preds[ds.uid], nodes)
        if why is not None:
            unplaceable.append(sch.Unplaceable(ds, why))
        elif elig:
            runs.append((ds, elig))
    live = [n for n in nodes if not n.drained]
    capacity = sum(n.slots * n.speed for n in live)
    cpus = sum(n.slots * n.cpus_per_slot for n in live)
    work = sum(preds[ds.uid].plan_h for ds, _ in runs)
    cpu_hours = work / capacity * cpus if capacity else 0.0
    scratch = np.fromiter(map(_scratch_held, (ds for ds, _ in runs), repeat(expansion)), dtype=float, count=len(runs))
    kinds: dict[tuple[int, ...], int] = {}  # eligible classes -> a row of the table below (few: one array per kind)
    kind = np.fromiter((kinds.setdefault(elig, len(kinds)) for _, elig in runs), dtype=np.intp, count=len(runs))
    table = np.array([[ci in elig for ci in range(len(classes))] for elig in kinds], dtype=bool)
    member = table.reshape(len(kinds), len(classes))[kind]
    uses = []
    for ci, c in enumerate(classes):
        mine = np.sort(scratch[member[:, ci]])
        for i in c.members:
            n = nodes[i]
            share = work / capacity * n.slots * n.speed if capacity else 0.0
            uses.append(NodeUse(n.name, share / n.speed, share / n.speed / (n.slots * makespan_h) if makespan_h > 0
                                else 0.0, float(mine[-n.slots:].sum()), 0, share / n.speed * n.cpus_per_slot))
    uses += [NodeUse(n.name, 0.0, 0.0, 0.0, 0, 0.0) for n in nodes if n.drained]
    return SimResult(policy=policy, jobs=len(queue), completed=len(runs), makespan_h=makespan_h, cpu_hours=cpu_hours,
                     failures_avoidable=0, failures_by_cause={}, gave_up=(), unplaceable=tuple(unplaceable),
                     nodes=tuple(uses), plan_variant="forecast (not replayed)",
                     mean_hours=work / len(runs) if runs else 0.0, slots=sum(n.slots for n in live), capacity=capacity)


def model_drift(history: Sequence[Measured], tuning: sch.Tuning = sch.DEFAULT_TUNING) -> float:
    """How far the fit moved as its history grew: log(hours the later half of the finished attempts
    took / what a fit of all that was known when that half began to finish predicted for it). ``history``
    in the order the attempts ended (a replay's) or began (the store's, by attempt id: nearly the same
    split); 0.0 with fewer than 2 x DRIFT_MIN_ATTEMPTS finished.

    A fit made early is made on the quick data sets (they finish first) and on a form that is
    wrong somewhere; how wrong it was on the attempts that came next is the error it brings to
    the work still to come, which no bootstrap of its own attempts can see. Summed hours, not
    log ratios: the finish is the work's. A young history reads high (a fit on 150 attempts
    predicts means widened by its own uncertainty: -0.25 once on a steady loglinear history of 300,
    under 0.1 from ~600), so early the band is wider than it need be. The mean log ratio to the
    medians instead read -0.09 there, but held the 10 % finish in 54 of 66 replays (52 at 25 %)
    against 55 (56).
    """
    ok = [k for k, m in enumerate(history) if m.outcome == "ok"]
    if len(ok) < 2 * DRIFT_MIN_ATTEMPTS:
        return 0.0
    half = ok[len(ok) // 2]
    model = sch.fit_history(history[:half], tuning)
    later = [history[k] for k in ok[len(ok) // 2:]]
    ds = [DataSet(m.uid, size_gb=m.size_gb, array=m.array, band=m.band, n_spw=m.n_spw, n_chan=m.n_chan,
                  is_mosaic=m.is_mosaic, n_eb=m.n_eb, prior_hours=m.prior_hours, prior_mem_gb=m.prior_mem_gb)
          for m in later]
    preds = sch.predict_all(ds, model, tuning)
    expected = sum(preds[d.uid].plan_h for d in ds)
    took = sum(m.hours * m.speed for m in later)
    return math.log(took / expected) if took > 0 and expected > 0 else 0.0


def band_work(queue: Sequence[DataSet], preds: Mapping[str, Prediction],
              busy: Sequence[tuple[Prediction, float, str]]) -> float:
    """Speed-1.0 hours predicted still to do: the waiting queue and what running attempts still need."""
    return sum(preds[ds.uid].plan_h for ds in queue) + sum(max(0.0, p.plan_h - ran) for p, ran, _ in busy)


def _still_to_do(history: Sequence[Measured], waiting_h: float) -> float:
    """The share of a campaign's work still to do: predicted hours waiting against those finished.

    >>> _still_to_do([Measured("a", 10.0, 3.0, 2.0)], 18.0)
    0.75
    """
    done = sum(m.hours * m.speed for m in history if m.outcome == "ok")
    return waiting_h / (waiting_h + done) if waiting_h + done > 0 else 1.0


# -- loaders (text in, values out; the command reads the files) --------------------

WORKLOAD_COLUMNS = {
    "uid": "str", "size_gb": "float", "hours": "float", "mem_gb": "float",
    "array": "array", "band": "band", "n_spw": "int", "n_chan": "int", "recipe": "str",
    "casa_version": "str", "node": "str", "walltime_h": "float",
    "is_mosaic": "bool", "n_eb": "int", "true_hours": "float", "true_mem_gb": "float", "scratch_gb": "float",
    "archive_hours": "float", "archive_mem_gb": "float", "size_bytes": "float",
    "antenna_arrays": "antennas", "frequency_support": "spectral",
}
"""Columns a workload CSV may have; uid is required, empty cells mean unknown.
``true_hours``/``true_mem_gb`` are the hidden truth of a replay (never predicted from);
``archive_hours``/``archive_mem_gb`` the archive's guesses (a prior the replay learns past);
``size_bytes`` the size as the archive gives it (read where ``size_gb`` is empty or absent);
``antenna_arrays`` and ``frequency_support`` an archive (obscore) row's antennas and spectral windows,
read for ``array`` and for ``n_spw``/``n_chan`` where those are empty or absent."""
COLUMN_ALIASES = {"member_ous_uid": "uid", "mous_uid": "uid", "band_list": "band", "mosaic": "is_mosaic",
                  "nspw": "n_spw", "n_spws": "n_spw", "nchan": "n_chan", "n_chans": "n_chan", "nchans": "n_chan",
                  "n_ebs": "n_eb", "neb": "n_eb"}
"""Other names of a column: an archive query's (``member_ous_uid``, ``band_list``) and the usual short ones."""
TRUTH_COLUMNS = ("true_hours", "true_mem_gb")
_BOOLS = {"true": True, "t": True, "yes": True, "y": True, "1": True,
          "false": False, "f": False, "no": False, "n": False, "0": False}
_NULLS = frozenset(("null", "none", "nan", "na", "n/a", "--", "-"))
"""Cells that mean unknown besides an empty one (what databases, pandas and astropy write for NULL)."""
_UNREAD = (
    ({"runtime", "duration", "elapsed", "time", "minutes", "minute", "mins", "seconds", "secs", "hour", "hrs",
      "hours", "days", "walltime", "wallclock"},
     "give hours at speed 1.0 in hours (or true_hours for the hidden truth), e.g. 90 minutes = 1.5"),
    ({"mem", "memory", "ram", "rss"}, "give memory in GB in mem_gb (or true_mem_gb for the hidden truth)"),
    ({"size", "bytes", "mb", "tb", "kb", "gib", "tib", "mib"},
     "give the size in GB in size_gb, or in bytes in size_bytes"),
    ({"true", "truth", "actual"}, "the hidden truth goes in true_hours (speed 1.0) and true_mem_gb"),
)
"""Words in the name of a column the reader would otherwise ignore that say it holds a quantity the
reader takes under another name or unit: such a column stops with the fix, since ignoring it would
replay without the user's numbers (an archive query's own columns, ``t_min`` or ``em_max``, have none)."""
_OTHER_UNITS = frozenset(("mb", "tb", "kb", "mib", "gib", "tib", "bytes", "min", "mins", "minutes", "s", "sec",
                          "secs", "seconds", "d", "days"))
"""Units in a column's name that the reader's columns are not in."""


@dataclass(frozen=True)
class Workload:
    """A parsed workload: its data sets, per uid the hidden truth (hours, mem_gb) where given,
    and the columns it ignored (not read by the estimate: a project code, a target name ...)."""

    datasets: list[DataSet]
    truth: dict[str, tuple[float | None, float | None]]
    ignored: tuple[str, ...] = ()


def _what(key: str, kind: str) -> str:
    if key.endswith(("_h", "hours")):
        return "a number of hours"
    if key.endswith("_gb"):
        return "a number of GB"
    return "a whole number" if kind == "int" else "a number"


def _number(where: str, key: str, kind: str, value: object) -> float | int:
    """``value`` as a non-negative number (``kind`` int or float), or a UserError with the fix."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UserError(f"{where}{key} must be {_what(key, kind)}, got {value!r}")
    if isinstance(value, str):
        shown = f'"{value}"'
        try:
            value = float(value.strip())
        except ValueError:
            fix = number_fix(value, key)
            hint = f" — write {fix}" if fix else ""
            raise UserError(f"{where}{key} must be {_what(key, kind)}, got {shown}{hint}") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{where}{key} must be zero or more, got {fmt_number(value)}")
    if kind == "int":
        if not float(value).is_integer():
            raise UserError(f"{where}{key} must be a whole number, got {value!r} — write {round(value)}")
        return int(value)
    return float(value)


def parse_workload(text: str, name: str = "workload.csv") -> list[DataSet]:
    """Data sets from a workload CSV (``uid,size_gb,hours,mem_gb``, more columns optional).

    >>> [d.hours for d in parse_workload("uid,size_gb,hours,mem_gb\\na,10,6,8\\nb,20,,\\n")]
    [6.0, None]
    """
    return read_workload(text, name).datasets


def read_workload(text: str, name: str = "workload.csv") -> Workload:
    """A :class:`Workload` from CSV text: the data sets, and the truth columns kept apart from them.

    Read as an archive query or a spreadsheet writes it: columns in any order and case, other
    columns ignored (named in ``ignored``), ``band`` as ``6``, ``Band 6`` or ``ALMA_RB_06``,
    ``array`` as ``12m``, ``7m``, ``TP``, ``ACA`` or ``TM1``, flags as ``T``/``F``, ``yes``, ``1``;
    empty, ``NULL`` or ``NaN`` cells unknown; ``size_bytes``, an obscore row's ``antenna_arrays``
    and ``frequency_support`` where ``size_gb``, ``array``, ``n_spw``/``n_chan`` are missing; a
    byte-order mark, ``#`` comment lines, and ``;`` (numbers then may be ``12,5``) or tab as the
    separator when the header has no comma. Anything else stops at the first bad cell with one
    line naming the file, the line, the column and the fix; a truth column must be filled on
    every row that has no explicit value.

    >>> w = read_workload("uid,size_gb,is_mosaic,true_hours\\na,10,yes,7.5\\n")
    >>> w.datasets[0].is_mosaic, w.datasets[0].hours, w.truth
    (True, None, {'a': (7.5, None)})
    >>> w = read_workload("Band,member_ous_uid,Array,size_bytes,target\\nBand 6,uid___A001_X1_X2,TM1,2.5e9,M83\\n")
    >>> d = w.datasets[0]
    >>> d.uid, d.band, d.array, d.size_gb, w.ignored
    ('uid://A001/X1/X2', 6, '12m', 2.5, ('target',))
    """
    text = text.removeprefix("\ufeff")
    if "\0" in text:
        raise UserError(f"{name}: not a text CSV (it holds NUL bytes) — save it as CSV (UTF-8)")
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    delimiter = "," if "," in first else ";" if ";" in first else "\t" if "\t" in first else ","
    rows = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = next((row for row in rows if any(c.strip() for c in row) and not _comment(row)), None)
    if not header:
        raise UserError(f"{name}: empty file — the first line must be uid,size_gb,hours,mem_gb")
    cols, ignored = _workload_header(header, name, rows.line_num)
    out: list[DataSet] = []
    truth: dict[str, tuple[float | None, float | None]] = {}
    seen: dict[str, int] = {}
    for row in rows:
        line = rows.line_num
        if not row or all(not c.strip() for c in row) or _comment(row):
            continue
        if len(row) > len(cols) and not any(c.strip() for c in row[len(cols):]):
            row = row[:len(cols)]  # a spreadsheet's trailing empty cells
        if len(row) != len(cols):
            raise UserError(f"{name}: line {line}: {len(row)} values for {len(cols)} columns "
                            f"({','.join(h.strip() for h in header)}) — one value per column, empty for unknown")
        values = _workload_row(cols, row, f"{name}: line {line}: ", decimal_comma=delimiter == ";")
        uid = values.get("uid")
        if not uid:
            raise UserError(f"{name}: line {line}: uid is empty — give each data set its uid")
        if uid in seen:
            raise UserError(f'{name}: line {line}: uid "{uid}" is also on line {seen[uid]} — keep one row per '
                            "data set (an archive query's rows are per spw and EB: aggregate them per MOUS)")
        seen[uid] = line
        hidden = (values.pop("true_hours", None), values.pop("true_mem_gb", None))
        _check_truth(cols, values, hidden, f"{name}: line {line}: ")
        for column, field_name in (("archive_hours", "prior_hours"), ("archive_mem_gb", "prior_mem_gb")):
            if column in values:
                values[field_name] = values.pop(column)
        _archive_fills(values)
        if hidden != (None, None):
            truth[uid] = hidden
        out.append(DataSet(**values))
    if not out:
        raise UserError(f"{name}: no data sets, only the header — add one row per data set")
    return Workload(out, truth, ignored)


def _comment(row: list[str]) -> bool:
    return bool(row) and row[0].lstrip().startswith("#")


def _workload_header(header: list[str], name: str, line: int) -> tuple[list[str | None], tuple[str, ...]]:
    """Each header cell's column (None: ignored) and the names ignored, or a UserError with the fix."""
    cols: list[str | None] = []
    ignored: list[str] = []
    for raw in header:
        col = " ".join(raw.strip().lower().split())
        col = COLUMN_ALIASES.get(col, col)
        if col in WORKLOAD_COLUMNS:
            if col in cols:
                raise UserError(f'{name}: line {line}: column "{col}" appears twice — keep one')
            cols.append(col)
            continue
        words = set(re.split(r"[^a-z0-9]+", col))
        close = difflib.get_close_matches(col, WORKLOAD_COLUMNS, n=1, cutoff=0.7)
        if close and not words & _OTHER_UNITS:  # size_tb is not a misspelt size_gb
            raise UserError(f'{name}: line {line}: unknown column "{col}" — did you mean "{close[0]}"?')
        for said, fix in _UNREAD:
            if words & said:
                raise UserError(f'{name}: line {line}: column "{col}" is not read — {fix}')
        cols.append(None)
        if col:
            ignored.append(col)
    if "uid" not in cols:
        raise UserError(f"{name}: line {line}: no uid column — the first line must be uid,size_gb,hours,mem_gb")
    return cols, tuple(ignored)


def _workload_row(cols: list[str | None], row: list[str], where: str, decimal_comma: bool = False
                  ) -> dict[str, object]:
    """The values of one row by column (unknown ones left out), or a UserError naming the cell;
    ``decimal_comma``: numbers may be written ``12,5`` (a spreadsheet's ``;``-separated export)."""
    values: dict[str, object] = {}
    for col, cell in zip(cols, row):
        cell = cell.strip()
        if col is None or not cell or cell.lower() in _NULLS:
            continue
        kind = WORKLOAD_COLUMNS[col]
        if decimal_comma and kind in ("float", "int", "band") and re.fullmatch(r"-?\d+,\d+", cell):
            cell = cell.replace(",", ".")
        if kind == "bool":
            if cell.lower() not in _BOOLS:
                raise UserError(f'{where}{col} must be true or false, got "{cell}" — write true or false')
            values[col] = _BOOLS[cell.lower()]
        elif kind == "band":
            values[col] = _band(where, cell)
        elif kind == "array":
            values[col] = _array(where, cell)
        elif kind in ("antennas", "spectral"):
            values[col] = cell
        elif col == "uid":
            values[col] = alma.parse_uid(cell) if alma.is_uid(cell) else cell
        else:
            values[col] = cell if kind == "str" else _number(where, col, kind, cell)
    return values


def _archive_fills(values: dict[str, object]) -> None:
    """Fill ``size_gb``, ``array``, ``n_spw`` and ``n_chan`` where a row leaves them empty from the
    archive's own columns (``size_bytes``; obscore's ``antenna_arrays``, ``frequency_support``),
    read as the archive client reads them; those columns themselves are dropped."""
    from .archive.client import array_of, spectral_setup

    size_bytes = values.pop("size_bytes", None)
    if values.get("size_gb") is None and size_bytes is not None:
        values["size_gb"] = size_bytes / 1e9
    antennas = values.pop("antenna_arrays", None)
    if values.get("array") is None and antennas:
        values["array"] = array_of(str(antennas))
    support = values.pop("frequency_support", None)
    if support:
        n_spw, n_chan = spectral_setup({"frequency_support": support})
        for key, value in (("n_spw", n_spw), ("n_chan", n_chan)):
            if values.get(key) is None and value is not None:
                values[key] = value


def _band(where: str, cell: str) -> int:
    """The ALMA band of a cell (``6``, ``6.0``, ``Band 6``, ``B6``, ``ALMA_RB_06``; the first of a band list)."""
    word = cell.split()[0] if cell.split()[0].lower() != "band" else cell
    try:
        return alma.parse_band(word[:-2] if word.endswith(".0") else word)
    except ValueError:
        raise UserError(f'{where}band must be an ALMA band 1-10, got "{cell}" — write its number, e.g. 6') from None


def _array(where: str, cell: str) -> str:
    """``12m``, ``7m`` or ``TP`` from the usual spellings of an ALMA array."""
    try:
        return alma.parse_array(cell)
    except ValueError:
        raise UserError(f'{where}array must be 12m, 7m or TP, got "{cell}" — write one of them') from None


def _check_truth(cols: list[str | None], values: Mapping[str, object], hidden: tuple[object, object],
                 where: str) -> None:
    """A UserError when the workload has a truth column and this row has neither its truth nor an
    explicit value: the replay would run it for its prediction, as if the prediction were right."""
    for column, given, explicit in (("true_hours", hidden[0], "hours"), ("true_mem_gb", hidden[1], "mem_gb")):
        if column in cols and given is None and values.get(explicit) is None:
            raise UserError(f"{where}{column} is empty while the column is given — fill it on every row "
                            f"(or {explicit}, a known value); a row without truth would run for its prediction")


NODE_KEYS = ("name", "slots", "mem_gb", "walltime_h", "speed", "count", "class", "recipe",
             "recipes", "casa_versions", "casa", "cpus_per_slot", "drained", "scratch_gb")
"""Keys of a ``[[node]]`` table the estimator reads."""


def _config_only_keys() -> tuple[str, ...]:
    """Keys of an ari.toml node that mean nothing here (so ari.toml works as a nodes file)."""
    from .config import Node
    return tuple(f.name for f in fields(Node) if f.name not in NODE_KEYS)


def parse_nodes(text: str, name: str = "nodes.toml") -> list[NodeState]:
    """Nodes from ``[[node]]`` tables (an ari.toml works too).

    ``count = 16`` makes 16 identical nodes named ``<name>01``..``<name>16``,
    all of class ``class`` (default: the table's name). ``walltime_h`` absent
    means no limit.

    >>> [(n.name, n.klass) for n in parse_nodes('[[node]]\\nname = "ws"\\ncount = 2\\nmem_gb = 24\\n')]
    [('ws01', 'ws'), ('ws02', 'ws')]
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{name}: not valid TOML: {exc} — check quotes and brackets there") from None
    for key in data:
        if key not in ("node", "campaign"):
            close = difflib.get_close_matches(key, ["node"], n=1)
            hint = f'did you mean "{close[0]}"?' if close else "write one [[node]] table per node"
            raise UserError(f'{name}: unknown table "{key}" — {hint}')
    tables = data.get("node", [])
    if isinstance(tables, dict):
        raise UserError(f"{name}: node must be an array of tables — write [[node]], not [node]")
    if not tables:
        raise UserError(f"{name}: no [[node]] tables — add one per node (name, slots, mem_gb, walltime_h, speed)")
    ignored = _config_only_keys()
    known = NODE_KEYS + ignored
    nodes: list[NodeState] = []
    for i, t in enumerate(tables, start=1):
        label = t.get("name")
        where = f'{name}: node "{label}": ' if isinstance(label, str) and label else f"{name}: node #{i}: "
        for key in t:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f'did you mean "{close[0]}"?' if close else f"known keys: {', '.join(NODE_KEYS)}"
                raise UserError(f'{where}unknown key "{key}" — {hint}')
        if not isinstance(label, str) or not label.strip():
            raise UserError(f'{where}name is missing — add name = "node{i}"')
        slots = _number(where, "slots", "int", t.get("slots", 1))
        count = _number(where, "count", "int", t.get("count", 1))
        speed = _number(where, "speed", "float", t.get("speed", 1.0))
        for key, v in (("slots", slots), ("count", count), ("speed", speed)):
            if v == 0:
                raise UserError(f"{where}{key} must be more than 0 — write 1")
        mem = _number(where, "mem_gb", "float", t.get("mem_gb", 8.0))
        wall = t.get("walltime_h")
        wall = None if wall is None else _number(where, "walltime_h", "float", wall)
        wall = None if wall == 0 else wall
        cpus = _number(where, "cpus_per_slot", "int", t.get("cpus_per_slot", 1))
        scratch = None if t.get("scratch_gb") is None else _number(where, "scratch_gb", "float", t["scratch_gb"])
        scratch = scratch or None  # 0 (as absent): not checked
        recipes = _strings(where, "recipes", t["recipes"]) if "recipes" in t else (
            (_string(where, "recipe", t["recipe"]),) if "recipe" in t else ("casa6",))
        versions = _strings(where, "casa_versions", t.get("casa_versions", []))
        if isinstance(t.get("casa"), dict):  # CASA installs by version, as ari.toml's node tables list them
            versions = tuple(dict.fromkeys(tuple(versions) + tuple(str(v) for v in t["casa"])))
        klass = _string(where, "class", t["class"]) if "class" in t else label
        drained = t.get("drained", False)
        if not isinstance(drained, bool):
            raise UserError(f"{where}drained must be true or false, got {drained!r} — write true or false, without quotes")
        names = [label] if count == 1 else [f"{label}{k:0{max(2, len(str(count)))}d}" for k in range(1, count + 1)]
        for n in names:
            if any(x.name == n for x in nodes):
                raise UserError(f'{where}name "{n}" is used twice — give each node its own name')
            nodes.append(NodeState(n, slots, mem, wall, speed, recipes, versions, drained, klass,
                                   cpus_per_slot=cpus, scratch_gb=scratch))
    return nodes


def _string(where: str, key: str, value: object) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise UserError(f"{where}{key} must be a non-empty string, got {value!r} — write it in quotes")


def _strings(where: str, key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise UserError(f'{where}{key} must be a list of strings, got {value!r} — write ["6.5.4"]')


def parse_duration_h(text: str, what: str = "--deadline") -> float:
    """Hours in ``180d``, ``26w``, ``72h`` or a bare number of hours.

    >>> parse_duration_h("180d")
    4320.0
    """
    m = NUMBER_UNIT.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or (unit and unit not in HOURS_UNITS) or float(m.group(1)) <= 0:
        raise UserError(f'{what}: "{text}" is not a duration — write e.g. 180d, 26w or 4320h')
    return float(m.group(1)) * (HOURS_UNITS[unit] if unit else 1.0)

"""Completion time, machines, disk and CPU-hours: a discrete-event replay of a
workload through :func:`ari_console.scheduler.place`, and a lower bound.

Pure: values in, values out. The loaders at the end parse the *text* of a
workload CSV or a nodes TOML (the command module reads the files).

- :func:`simulate` replays data sets on nodes with the same ``place`` the
  engine calls; the workload's hours/memory are the truth (and, being explicit,
  also the predictions). Placements that exceed a node's memory fail at once,
  those that exceed its walltime are killed at the walltime; both count as
  avoidable failures and the data set goes back to the queue (given up after
  ``max_attempts``).
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
from typing import Callable, Iterable, Mapping, Sequence

from . import scheduler as sch
from .errors import UserError
from .scheduler import DataSet, Measured, NodeState, Prediction

DISK_EXPANSION = 3.0
"""Scratch disk a running data set holds, per GB of its archive size: the
downloaded tarballs (1x) + the restored calibrated measurement sets (~1.5x) +
images and products (~0.5x)."""
MAX_ATTEMPTS = 3
"""Attempts before a data set is given up (as the campaign default)."""


# -- simulation ------------------------------------------------------------------

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
class SimResult:
    """The outcome of :func:`simulate` (hours from the start)."""

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

    @property
    def disk_peak_gb(self) -> dict[str, float]:
        return {n.name: round(n.disk_peak_gb, 1) for n in self.nodes}

    @property
    def utilisation(self) -> dict[str, float]:
        return {n.name: round(n.utilisation, 4) for n in self.nodes}


def _truth(ds: DataSet, pred: Prediction) -> tuple[float, float]:
    """(hours, mem) the simulated data set really takes: explicit values, else the prediction."""
    return (ds.hours if ds.hours is not None else pred.hours,
            ds.mem_gb if ds.mem_gb is not None else pred.mem_gb)


def _outcome(ds: DataSet, hours: float, mem: float, node: NodeState) -> tuple[str, float]:
    """(outcome, wall hours) of running ``ds`` on ``node``: ok, memory, walltime, recipe."""
    if ds.recipe is not None and ds.recipe not in node.recipes:
        return "recipe", 0.0
    if ds.casa_version is not None and ds.casa_version not in node.casa_versions:
        return "recipe", 0.0
    if mem > node.mem_gb:
        return "memory", 0.0
    wall = hours / node.speed
    if node.walltime_h is not None and wall > node.walltime_h:
        return "walltime", node.walltime_h
    return "ok", wall


def simulate(datasets: Sequence[DataSet], nodes: Sequence[NodeState], policy: str = sch.DEFAULT_POLICY,
             history: Iterable[Measured] | sch.Model = (), expansion: float = DISK_EXPANSION,
             max_attempts: int = MAX_ATTEMPTS,
             progress: Callable[[int, int], None] | None = None,
             actual: Mapping[str, tuple[float, float]] | None = None) -> SimResult:
    """Replay ``datasets`` on ``nodes`` under ``policy``; hours from the start.

    The scheduler sees the predictions; the data sets take their explicit
    hours/memory, or ``actual[uid] = (hours, mem_gb)`` when given (to replay
    what happens when predictions are wrong), else the prediction.

    Nodes' ``busy_h`` (running attempts) occupy their slots until those hours.
    ``progress(done, total)`` is called now and then with finished data sets.

    >>> r = simulate([DataSet("a", hours=4, mem_gb=8), DataSet("b", hours=2, mem_gb=8)],
    ...              [NodeState("n", slots=1, mem_gb=16, speed=2.0)])
    >>> r.makespan_h, r.completed
    (3.0, 2)
    """
    model = history if isinstance(history, sch.Model) else sch.fit_history(history)
    preds = sch.predict_all(datasets, model)
    # one NodeState per (node, free slots), made once: the loop only swaps them
    variants = [[replace(n, free=f, busy_h=()) for f in range(n.slots + 1)] for n in nodes]
    state = [variants[i][n.free or 0] for i, n in enumerate(nodes)]
    free_slots = sum(s.free for s in state if not s.drained)
    index = {n.name: i for i, n in enumerate(nodes)}
    events: list[tuple[float, int, int, DataSet | None, str]] = []
    seq = 0
    for i, n in enumerate(nodes):
        for b in n.busy_h[: n.slots - (n.free or 0)]:
            events.append((max(0.0, b), seq, i, None, "ok"))
            seq += 1
    heapq.heapify(events)
    queue: dict[str, DataSet] = {ds.uid: ds for ds in datasets}
    busy = [0.0] * len(nodes)
    disk = [0.0] * len(nodes)
    disk_peak = [0.0] * len(nodes)
    attempts = [0] * len(nodes)
    failures: dict[str, int] = {}
    gave_up: list[str] = []
    unplaceable: list[sch.Unplaceable] = []
    last_reported: tuple[sch.Unplaceable, ...] | None = None
    plan = None
    now = 0.0
    completed = 0
    total = len(datasets)
    while True:
        if queue and free_slots:
            replanning = plan is None and bool(events)
            if replanning:  # tell the planner what is running, and until when
                left: dict[int, list[float]] = {}
                for end, _, i, _, _ in events:
                    left.setdefault(i, []).append(end - now)
                state = [replace(variants[i][s.free], busy_h=tuple(left.get(i, ())))
                         for i, s in enumerate(state)]
            placement = sch.place(queue.values(), state, now, policy, model, plan, preds)
            if replanning:
                state = [variants[i][s.free] for i, s in enumerate(state)]
            plan = placement.plan
            if placement.unplaceable is not last_reported:  # a new plan: drop what fits nowhere
                last_reported = placement.unplaceable
                for u in last_reported:
                    if queue.pop(u.dataset.uid, None) is not None:
                        unplaceable.append(u)
            for ds, node in placement.pairs:
                i = index[node.name]
                del queue[ds.uid]
                hours, mem = actual[ds.uid] if actual and ds.uid in actual else _truth(ds, preds[ds.uid])
                outcome, wall = _outcome(ds, hours, mem, nodes[i])
                heapq.heappush(events, (now + wall, seq, i, ds, outcome))
                seq += 1
                busy[i] += wall
                attempts[i] += 1
                disk[i] += (ds.size_gb or 0.0) * expansion
                disk_peak[i] = max(disk_peak[i], disk[i])
                state[i] = variants[i][state[i].free - 1]
                free_slots -= 1
        if not events:
            break
        now = events[0][0]
        while events and events[0][0] <= now:
            _, _, i, ds, outcome = heapq.heappop(events)
            state[i] = variants[i][state[i].free + 1]
            free_slots += 0 if state[i].drained else 1
            if ds is None:
                continue
            disk[i] -= (ds.size_gb or 0.0) * expansion
            if outcome == "ok":
                completed += 1
                if progress is not None and completed % 200 == 0:
                    progress(completed, total)
                continue
            failures[outcome] = failures.get(outcome, 0) + 1
            again = replace(ds, attempts=ds.attempts + 1)
            if again.attempts >= max_attempts:
                gave_up.append(ds.uid)
                continue
            queue[ds.uid] = again
            plan = sch.requeue(plan, again) if plan is not None else None
    if queue:  # nothing could take them (e.g. every node drained)
        unplaceable += [sch.Unplaceable(ds, "no live node took it") for ds in queue.values()]
    if progress is not None:
        progress(total, total)
    makespan = now
    uses = tuple(
        NodeUse(n.name, busy[i], busy[i] / (n.slots * makespan) if makespan > 0 else 0.0,
                disk_peak[i], attempts[i], busy[i] * n.cpus_per_slot)
        for i, n in enumerate(nodes))
    return SimResult(
        policy=policy, jobs=total, completed=completed, makespan_h=makespan,
        cpu_hours=sum(u.cpu_hours for u in uses), failures_avoidable=sum(failures.values()),
        failures_by_cause=failures, gave_up=tuple(gave_up), unplaceable=tuple(unplaceable), nodes=uses,
        plan_makespan_h=plan.makespan_h if plan is not None else 0.0,
        plan_variant=plan.variant if plan is not None else "")


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
                predictions: Mapping[str, Prediction] | None = None) -> Bound:
    """The LP relaxation over node classes, and the longest single data set.

    LP: minimise T such that every data set's work (hours at speed 1.0) is
    split over node classes it may run on, and each class's assigned work
    (plus what is running there) is at most slots x speed x T. Data sets no
    node can run are left out (they never run).

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
    for ds, elig in sch.eligibility(datasets, preds, classes):
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
                 progress: Callable[[int, int], None] | None = None) -> NodesNeeded:
    """The fewest nodes of ``node_class`` to add so the simulated makespan <= ``deadline_h``.

    Exponential search then bisection on the count; the lower bound rules a
    count out before any simulation does.
    """
    model = history if isinstance(history, sch.Model) else sch.fit_history(history)
    preds = sch.predict_all(datasets, model)
    memo: dict[int, tuple[bool, float, float]] = {}

    def check(k: int) -> tuple[bool, float, float]:
        if k not in memo:
            ns = add_nodes(nodes, node_class, k)
            lb = lower_bound(datasets, ns, predictions=preds).hours
            if lb > deadline_h:
                memo[k] = (False, math.inf, lb)
            else:
                sim = simulate(datasets, ns, policy, model)
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
                           f"even {limit} more {node_class} nodes cannot: {why}")
    ok, span, lb = check(0)
    if ok:
        return NodesNeeded(node_class, deadline_h, 0, span, lb)
    lo, hi = 0, 1
    while not check(hi)[0]:
        lo, hi = hi, hi * 2
        if hi > limit:
            _, span, lb = check(lo)
            return NodesNeeded(node_class, deadline_h, None, span, lb,
                               f"the simulation needs more than {limit} more {node_class} nodes")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if check(mid)[0]:
            hi = mid
        else:
            lo = mid
    _, span, lb = check(hi)
    return NodesNeeded(node_class, deadline_h, hi, span, lb)


# -- a live campaign ---------------------------------------------------------------

@dataclass(frozen=True)
class CampaignEstimate:
    """When a campaign's queue will be done, on its nodes as they are now."""

    finish_at: datetime
    remaining_h: float
    lower_bound_h: float
    cpu_hours: float
    disk_peak_gb: Mapping[str, float]
    unplaceable: tuple[sch.Unplaceable, ...]
    simulation: SimResult = field(repr=False)


def estimate_campaign(queue: Sequence[DataSet], history: Iterable[Measured], nodes: Sequence[NodeState],
                      now: datetime, policy: str = sch.DEFAULT_POLICY) -> CampaignEstimate:
    """Simulate the waiting ``queue`` (predicted from ``history``) on ``nodes``
    (their running attempts in ``busy_h``) starting at ``now``."""
    model = sch.fit_history(history)
    sim = simulate(queue, nodes, policy, model)
    bound = lower_bound(queue, nodes, model)
    return CampaignEstimate(now + timedelta(hours=sim.makespan_h), sim.makespan_h, bound.hours,
                            sim.cpu_hours, sim.disk_peak_gb, sim.unplaceable, sim)


# -- loaders (text in, values out; the command reads the files) --------------------

WORKLOAD_COLUMNS = {
    "uid": "str", "size_gb": "float", "hours": "float", "mem_gb": "float",
    "array": "str", "band": "int", "n_spw": "int", "n_chan": "int", "recipe": "str",
    "casa_version": "str", "node": "str", "walltime_h": "float",
}
"""Columns a workload CSV may have; uid is required, empty cells mean unknown."""

_UNIT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.I)
_HOURS = {"h": 1, "hr": 1, "hrs": 1, "hour": 1, "hours": 1, "d": 24, "day": 24, "days": 24,
          "w": 168, "week": 168, "weeks": 168, "m": 1 / 60, "min": 1 / 60}


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _what(key: str, kind: str) -> str:
    if key.endswith("_h") or key == "hours":
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
            m = _UNIT.match(value)
            fix = ""
            if m:
                n, unit = float(m.group(1)), m.group(2).lower()
                if key.endswith("_h") or key == "hours":
                    fix = _fmt(n * _HOURS[unit]) if unit in _HOURS else ""
                elif key.endswith("_gb") and unit in ("g", "gb", "gib"):
                    fix = _fmt(n)
                elif key.endswith("_gb") and unit in ("t", "tb", "tib"):
                    fix = _fmt(n * 1000)
            hint = f" — write {fix}" if fix else ""
            raise UserError(f"{where}{key} must be {_what(key, kind)}, got {shown}{hint}") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{where}{key} must be zero or more, got {_fmt(value)}")
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
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if not header or not any(h.strip() for h in header):
        raise UserError(f"{name}: empty file — the first line must be uid,size_gb,hours,mem_gb")
    cols = [h.strip().lower() for h in header]
    for col in cols:
        if col not in WORKLOAD_COLUMNS:
            close = difflib.get_close_matches(col, WORKLOAD_COLUMNS, n=1)
            hint = f'did you mean "{close[0]}"?' if close else f"known: {', '.join(WORKLOAD_COLUMNS)}"
            raise UserError(f'{name}: line 1: unknown column "{col}" — {hint}')
    if "uid" not in cols:
        raise UserError(f"{name}: line 1: no uid column — the first line must be uid,size_gb,hours,mem_gb")
    out: list[DataSet] = []
    seen: dict[str, int] = {}
    for row in rows:
        line = rows.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(cols):
            raise UserError(f"{name}: line {line}: {len(row)} values for {len(cols)} columns "
                            f"({','.join(cols)}) — one value per column, empty for unknown")
        values: dict[str, object] = {}
        for col, cell in zip(cols, row):
            cell = cell.strip()
            if not cell:
                continue
            kind = WORKLOAD_COLUMNS[col]
            values[col] = cell if kind == "str" else _number(f"{name}: line {line}: ", col, kind, cell)
        uid = values.get("uid")
        if not uid:
            raise UserError(f"{name}: line {line}: uid is empty — give each data set its uid")
        if uid in seen:
            raise UserError(f'{name}: line {line}: uid "{uid}" is also on line {seen[uid]} — keep one row per data set')
        seen[uid] = line
        out.append(DataSet(**values))
    return out


NODE_KEYS = ("name", "slots", "mem_gb", "walltime_h", "speed", "count", "class", "recipe",
             "recipes", "casa_versions", "cpus_per_slot", "drained")
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
        recipes = _strings(where, "recipes", t["recipes"]) if "recipes" in t else (
            (_string(where, "recipe", t["recipe"]),) if "recipe" in t else ("casa6",))
        versions = _strings(where, "casa_versions", t.get("casa_versions", []))
        klass = _string(where, "class", t["class"]) if "class" in t else label
        drained = t.get("drained", False)
        if not isinstance(drained, bool):
            raise UserError(f"{where}drained must be true or false, got {drained!r} — write true or false, without quotes")
        names = [label] if count == 1 else [f"{label}{k:0{max(2, len(str(count)))}d}" for k in range(1, count + 1)]
        for n in names:
            if any(x.name == n for x in nodes):
                raise UserError(f'{where}name "{n}" is used twice — give each node its own name')
            nodes.append(NodeState(n, slots, mem, wall, speed, recipes, versions, drained, klass,
                                   cpus_per_slot=cpus))
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
    m = _UNIT.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or (unit and unit not in _HOURS) or float(m.group(1)) <= 0:
        raise UserError(f'{what}: "{text}" is not a duration — write e.g. 180d, 26w or 4320h')
    return float(m.group(1)) * (_HOURS[unit] if unit else 1.0)

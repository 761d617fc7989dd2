"""Placement policy and runtime/memory prediction (pure: no I/O, no clock).

The engine turns store rows into the values below and asks :func:`place` for
(data set, node) pairs whenever slots are free; :mod:`ari_console.estimate`
replays whole workloads through the very same function.

Values
------
- :class:`DataSet`: one waiting data set as the scheduler sees it (size, the
  optional explicit ``hours``/``mem_gb``, what it needs, operator overrides).
- :class:`Measured`: one finished or failed attempt (the history predictions
  learn from).
- :class:`NodeState`: one node now (slots, free slots, memory per slot,
  walltime, speed, recipes, drained flag, what is running there).
- :class:`Prediction`: hours on a speed-1.0 node and peak memory in GB.

Policies (``policy=`` in :func:`place`)
---------------------------------------
- ``lpt`` (default): a plan over the whole queue. Data sets are taken longest
  first and each goes to the eligible slot where it would *finish* earliest
  (so a long job waits for a fast node rather than crawl on a slow one);
  several orderings are tried (plain longest-first, scarcest-eligibility
  first, longest-first within the capacity split of the LP relaxation) and the
  plan with the shortest makespan is kept. Each node then runs its planned
  sequence; a node that runs dry takes the tail job of the most loaded
  eligible node if it finishes it sooner.
- ``greedy``: online longest-eligible-first, no plan (a textbook baseline).
- ``fifo``: queue order onto whatever slot is free, with **no** checks: the
  way a hand-run cluster loses jobs to memory and walltime (for contrast).

Every policy except ``fifo`` never places a data set where its predicted
memory exceeds the node's, where predicted hours / node speed exceed the
node's walltime, or where the recipe / CASA version it needs is missing. Data
sets no node can run come back in :attr:`Placement.unplaceable` with a reason.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Collection, Iterable, Mapping, Sequence

POLICIES = ("lpt", "greedy", "fifo")
DEFAULT_POLICY = "lpt"

# -- priors (from the 2017 study; see docs/estimate.md) ------------------------
PRIOR_MEDIAN_HOURS = 6.0
"""Median hours per data set on the reference machine (study: median 6 h)."""
PRIOR_MEDIAN_SIZE_GB = 40.0
"""Size of the median data set the prior hours refer to (assumed)."""
PRIOR_SIZE_EXPONENT = 0.9
"""Runtime grows a little slower than linearly with data size (assumed)."""
PRIOR_HOURS_FACTOR = 2.0
"""Conservative factor on the prior hours (lognormal spread ~0.8 -> ~80th pct)."""
PRIOR_MEM_GB = 16.0
"""Peak memory without history or size: study: mostly 4-24 GB."""
PRIOR_MEM_PER_GB = 0.25
"""Extra GB of memory per GB of data above the median size (assumed)."""
REFERENCE_CHANNELS = 4 * 1920
"""Total channels (spw x channels) the prior hours refer to; more channels cost more (sqrt)."""
HOURS_QUANTILE = 0.9
"""Residual quantile added to the history fit of hours (conservative, not the mean)."""
MEM_QUANTILE = 0.95
"""Residual quantile added to the history fit of peak memory."""
MIN_HISTORY = 8
"""Finished attempts needed before the history fit replaces the prior."""
RETRY_MARGIN = 1.25
"""A data set that died for memory/walltime needs at least this times what it used."""


# -- values --------------------------------------------------------------------

@dataclass(frozen=True)
class DataSet:
    """One waiting data set as the scheduler sees it.

    ``hours`` and ``mem_gb`` are explicit values (a workload column or an
    operator's override) and win over any prediction; ``None`` means unknown.
    ``node`` pins the data set to one node; ``walltime_h`` is a wall-clock
    limit the data set needs at least (an operator's override).

    >>> DataSet("uid://A001/X1/X1", size_gb=30.0).hours is None
    True
    """

    uid: str
    size_gb: float | None = None
    hours: float | None = None
    mem_gb: float | None = None
    array: str | None = None
    band: int | None = None
    n_spw: int | None = None
    n_chan: int | None = None
    recipe: str | None = None
    casa_version: str | None = None
    attempts: int = 0
    node: str | None = None
    walltime_h: float | None = None


@dataclass(frozen=True)
class Measured:
    """One attempt from history: wall ``hours`` on a node of ``speed``.

    ``outcome`` is ``ok`` for a finished attempt, or a failure category
    (``memory``, ``walltime``, ...). ``peak_mem_gb`` may be unknown.
    ``array`` (12m, 7m) lets each array get its own fit once it has enough.
    """

    uid: str
    size_gb: float | None
    hours: float
    speed: float = 1.0
    peak_mem_gb: float | None = None
    outcome: str = "ok"
    array: str | None = None


@dataclass(frozen=True)
class NodeState:
    """One node as the scheduler sees it now.

    ``mem_gb`` is per slot; ``walltime_h`` None means no limit; ``free`` is
    the number of free slots (default: all); ``busy_h`` holds the predicted
    remaining wall hours of each running attempt (used by plans and bounds).

    >>> NodeState("ws01", slots=1, mem_gb=24, speed=0.6).free
    1
    """

    name: str
    slots: int = 1
    mem_gb: float = 8.0
    walltime_h: float | None = None
    speed: float = 1.0
    recipes: tuple[str, ...] = ("casa6",)
    casa_versions: tuple[str, ...] = ()
    drained: bool = False
    node_class: str | None = None
    free: int | None = None
    busy_h: tuple[float, ...] = ()
    cpus_per_slot: int = 1

    def __post_init__(self) -> None:
        if self.free is None:
            object.__setattr__(self, "free", max(0, self.slots - len(self.busy_h)))

    @cached_property
    def spec(self) -> tuple:
        """What placement depends on, apart from free slots and running work."""
        return (self.name, self.slots, self.mem_gb, self.walltime_h, self.speed, self.recipes,
                self.casa_versions, self.drained)

    @property
    def klass(self) -> str:
        """The node's class name (its own name when none is given)."""
        return self.node_class or self.name


@dataclass(frozen=True)
class Prediction:
    """Hours on a speed-1.0 node and peak memory (GB), with where they came from."""

    hours: float
    mem_gb: float
    source: str = "prior"


@dataclass(frozen=True)
class Unplaceable:
    """A data set no node can run, and why (one line an operator can act on)."""

    dataset: DataSet
    reason: str


# -- predictions -----------------------------------------------------------------

@dataclass(frozen=True)
class Model:
    """A fit of log(hours) and log(peak memory) against log(size) from history.

    ``None`` coefficients mean too little history: the prior is used.
    """

    hours: tuple[float, float, float] | None = None  # (intercept, slope, residual quantile)
    mem: tuple[float, float, float] | None = None
    own: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # uid -> (min hours, min mem)
    by_array: Mapping[str, "Model"] = field(default_factory=dict)  # array -> its own fit


def _quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank, rounding up: conservative)."""
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[k]


def _loglinear(points: Sequence[tuple[float, float]], q: float) -> tuple[float, float, float] | None:
    """(a, b, r_q) of log y = a + b log x by least squares, r_q the q residual quantile."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x and x > 0 and y and y > 0]
    if len(pts) < MIN_HISTORY:
        return None
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx > 1e-12 else 0.0
    b = min(max(b, 0.0), 2.0)
    a = my - b * mx
    resid = [p[1] - (a + b * p[0]) for p in pts]
    return a, b, max(0.0, _quantile(resid, q))


def fit_history(history: Iterable[Measured]) -> Model:
    """A :class:`Model` from finished attempts (and the lower limits failures imply).

    Hours are normalised to speed 1.0 (wall hours x node speed).

    >>> hist = [Measured(f"u{i}", 10.0 * (i + 1), 2.0 * (i + 1), 1.0, 8.0) for i in range(10)]
    >>> round(math.exp(fit_history(hist).hours[1] * math.log(10)), 1)  # slope ~1
    10.0
    """
    history = list(history)
    ok = [m for m in history if m.outcome == "ok"]
    hours, mem = _fits(ok)
    by_array = {}
    for array in {m.array for m in ok if m.array}:
        h, g = _fits([m for m in ok if m.array == array])
        if h or g:
            by_array[array] = Model(hours=h or hours, mem=g or mem)
    own: dict[str, tuple[float, float]] = {}
    for m in history:
        h, g = own.get(m.uid, (0.0, 0.0))
        if m.outcome == "walltime":
            h = max(h, m.hours * m.speed * RETRY_MARGIN)
        if m.outcome == "memory" and m.peak_mem_gb:
            g = max(g, m.peak_mem_gb * RETRY_MARGIN)
        if m.outcome == "ok":
            h = max(h, m.hours * m.speed)
            g = max(g, m.peak_mem_gb or 0.0)
        own[m.uid] = (h, g)
    return Model(hours=hours, mem=mem, own=own, by_array=by_array)


def _fits(ok: Sequence[Measured]) -> tuple[tuple[float, float, float] | None, tuple[float, float, float] | None]:
    """(hours fit, memory fit) of finished attempts; hours normalised to speed 1.0."""
    hours = _loglinear([(m.size_gb, m.hours * m.speed) for m in ok], HOURS_QUANTILE)
    mem = _loglinear([(m.size_gb, m.peak_mem_gb) for m in ok if m.peak_mem_gb], MEM_QUANTILE)
    return hours, mem


def prior(ds: DataSet) -> Prediction:
    """The study-based prior for a data set without history.

    >>> prior(DataSet("u", size_gb=40.0)).hours  # median size -> 6 h x 2 (conservative)
    12.0
    """
    size = ds.size_gb if ds.size_gb and ds.size_gb > 0 else PRIOR_MEDIAN_SIZE_GB
    hours = PRIOR_MEDIAN_HOURS * PRIOR_HOURS_FACTOR * (size / PRIOR_MEDIAN_SIZE_GB) ** PRIOR_SIZE_EXPONENT
    if ds.n_spw and ds.n_chan:
        hours *= max(0.5, math.sqrt(ds.n_spw * ds.n_chan / REFERENCE_CHANNELS))
    if ds.array == "7m":
        hours *= 0.5  # fewer antennas: ~1/4 of the baselines
    mem = PRIOR_MEM_GB + PRIOR_MEM_PER_GB * max(0.0, size - PRIOR_MEDIAN_SIZE_GB)
    return Prediction(round(hours, 3), round(mem, 3), "prior")


def predict(ds: DataSet, history: Iterable[Measured] | Model = ()) -> Prediction:
    """Hours (speed 1.0) and peak memory for ``ds``: explicit values win, then
    the history fit (a high quantile, not the mean), then the prior; never less
    than what the data set's own failed attempts showed it needs.

    Pass a :class:`Model` (from :func:`fit_history`) when predicting many.

    >>> predict(DataSet("u", size_gb=40.0, hours=3.0, mem_gb=10.0))
    Prediction(hours=3.0, mem_gb=10.0, source='explicit')
    """
    model = history if isinstance(history, Model) else fit_history(history)
    if ds.hours is not None and ds.mem_gb is not None:
        return Prediction(ds.hours, ds.mem_gb, "explicit")
    base = prior(ds)
    hours, mem, source = base.hours, base.mem_gb, "prior"
    fit = model.by_array.get(ds.array, model) if ds.array else model
    if ds.size_gb and ds.size_gb > 0:
        x = math.log(ds.size_gb)
        if fit.hours:
            a, b, r = fit.hours
            hours, source = math.exp(a + b * x + r), "history"
        if fit.mem:
            a, b, r = fit.mem
            mem = math.exp(a + b * x + r)
    own_h, own_m = model.own.get(ds.uid, (0.0, 0.0))
    hours, mem = max(hours, own_h), max(mem, own_m)
    if ds.hours is not None:
        hours, source = ds.hours, "explicit"
    if ds.mem_gb is not None:
        mem = ds.mem_gb
        source = "explicit" if ds.hours is not None else source
    return Prediction(round(hours, 4), round(mem, 4), source)


def predict_all(queue: Iterable[DataSet], history: Iterable[Measured] | Model = ()) -> dict[str, Prediction]:
    """uid -> :func:`predict` for every data set, fitting the history once."""
    model = history if isinstance(history, Model) else fit_history(history)
    return {ds.uid: predict(ds, model) for ds in queue}


# -- eligibility -----------------------------------------------------------------

def why_not(ds: DataSet, pred: Prediction, node: NodeState) -> str | None:
    """Why ``ds`` must not run on ``node`` (an avoidable failure), or None if it may.

    >>> why_not(DataSet("u"), Prediction(5, 30), NodeState("ws", mem_gb=24))
    'needs 30 GB memory, ws has 24 GB'
    """
    if ds.node is not None and ds.node != node.name:
        return f"pinned to {ds.node}"
    if pred.mem_gb > node.mem_gb:
        return f"needs {pred.mem_gb:g} GB memory, {node.name} has {node.mem_gb:g} GB"
    if node.walltime_h is not None:
        wall = pred.hours / node.speed
        if wall > node.walltime_h:
            return (f"needs {wall:.4g} h at speed {node.speed:g}, "
                    f"{node.name} allows {node.walltime_h:g} h")
        if ds.walltime_h is not None and ds.walltime_h > node.walltime_h:
            return f"needs a walltime of {ds.walltime_h:g} h, {node.name} allows {node.walltime_h:g} h"
    if ds.recipe is not None and ds.recipe not in node.recipes:
        return f"needs recipe {ds.recipe}, {node.name} has {', '.join(node.recipes) or 'none'}"
    if ds.casa_version is not None and ds.casa_version not in node.casa_versions:
        return f"needs CASA {ds.casa_version}, {node.name} has {', '.join(node.casa_versions) or 'none listed'}"
    return None


def unplaceable_reason(ds: DataSet, pred: Prediction, nodes: Sequence[NodeState]) -> str | None:
    """Why no node can run ``ds`` (the closest miss), or None if one can.

    >>> unplaceable_reason(DataSet("u"), Prediction(5, 900), [NodeState("hpc", mem_gb=512)])
    'needs 900 GB memory; the largest node (hpc) has 512 GB'
    """
    live = [n for n in nodes if not n.drained]
    if any(why_not(ds, pred, n) is None for n in live):
        return None
    if ds.node is not None and not any(n.name == ds.node for n in nodes):
        return f"pinned to {ds.node}, which is not a node — unpin it or add the node"
    cands = [n for n in nodes if ds.node is None or n.name == ds.node]
    if not cands:
        return "no nodes"
    if any(why_not(ds, pred, n) is None for n in cands):
        drained = ", ".join(n.name for n in cands if why_not(ds, pred, n) is None)
        return f"only drained nodes can run it ({drained})"
    big = max(cands, key=lambda n: n.mem_gb)
    if pred.mem_gb > big.mem_gb:
        return f"needs {pred.mem_gb:g} GB memory; the largest node ({big.name}) has {big.mem_gb:g} GB"
    roomy = [n for n in cands if n.mem_gb >= pred.mem_gb]
    longest = max(roomy, key=lambda n: math.inf if n.walltime_h is None else n.walltime_h * n.speed)
    reason = why_not(ds, pred, longest)
    if reason and "allows" in reason:
        return (f"needs {pred.hours:.4g} h at speed 1.0; no node with {pred.mem_gb:g} GB allows it "
                f"(best: {longest.name}, {longest.walltime_h:g} h at speed {longest.speed:g})")
    return reason or "no node can run it"


# -- placement -------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What a policy worked out for a whole queue, reused by the next :func:`place`.

    ``sequence`` holds, per node, the data sets in planned start order (``lpt``);
    per eligibility group, longest first (``greedy``, with ``groups`` naming
    each node's groups); or, under the key ``""``, the queue order (``fifo``).
    ``cursor`` says how far each sequence is consumed; ``taken`` holds uids
    taken out of order. ``makespan_h`` is the plan's own makespan on the
    predictions, ``variant`` the ordering that won.
    """

    policy: str
    nodes_key: tuple
    sequence: Mapping[str, tuple[DataSet, ...]]
    cursor: Mapping[str, int]
    taken: frozenset[str]
    predictions: Mapping[str, Prediction]
    unplaceable: tuple[Unplaceable, ...]
    remaining: int
    makespan_h: float = 0.0
    variant: str = ""
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # greedy: node -> group keys
    suffix_h: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # lpt: hours left from index


@dataclass(frozen=True)
class Placement:
    """The answer of :func:`place`: pairs to launch now, data sets no node can run,
    and the plan to pass to the next call (valid while the queue changes only by
    the pairs launched)."""

    pairs: tuple[tuple[DataSet, NodeState], ...]
    unplaceable: tuple[Unplaceable, ...]
    plan: Plan


def _nodes_key(nodes: Sequence[NodeState]) -> tuple:
    """What a plan depends on in the node list (not the free slots)."""
    return tuple([n.spec for n in nodes])


@dataclass(frozen=True)
class NodeClass:
    """Interchangeable live nodes (same memory, walltime, speed, software)."""

    key: tuple
    rep: NodeState
    members: tuple[int, ...]  # indexes into the node list
    slots: int

    @property
    def capacity(self) -> float:
        """Work (speed-1.0 hours) the class does per hour."""
        return self.slots * self.rep.speed


def node_classes(nodes: Sequence[NodeState], pinned: Collection[str] = ()) -> list[NodeClass]:
    """Live nodes grouped into classes, least scarce first (small memory, short
    walltime, fast); a node some data set is pinned to is a class of its own."""
    groups: dict[tuple, list[int]] = {}
    for i, n in enumerate(nodes):
        if not n.drained:
            key = (n.mem_gb, n.walltime_h, n.speed, n.recipes, n.casa_versions)
            groups.setdefault(key + ((n.name,) if n.name in pinned else ()), []).append(i)
    out = [NodeClass(k, nodes[m[0]], tuple(m), sum(nodes[i].slots for i in m)) for k, m in groups.items()]
    return sorted(out, key=lambda c: (c.rep.mem_gb, math.inf if c.rep.walltime_h is None else c.rep.walltime_h,
                                      -c.rep.speed))


def eligibility(queue: Iterable[DataSet], preds: Mapping[str, Prediction],
                classes: Sequence[NodeClass]) -> list[tuple[DataSet, tuple[int, ...]]]:
    """(data set, indexes of the classes it may run on) for each data set."""
    cache: dict[tuple, tuple[int, ...]] = {}
    out = []
    for ds in queue:
        p = preds[ds.uid]
        sig = (p.hours, p.mem_gb, ds.node, ds.recipe, ds.casa_version, ds.walltime_h)
        elig = cache.get(sig)
        if elig is None:
            elig = tuple(i for i, c in enumerate(classes) if why_not(ds, p, c.rep) is None)
            cache[sig] = elig
        out.append((ds, elig))
    return out


def make_plan(queue: Collection[DataSet], nodes: Sequence[NodeState], policy: str = DEFAULT_POLICY,
              history: Iterable[Measured] | Model = (),
              predictions: Mapping[str, Prediction] | None = None) -> Plan:
    """A :class:`Plan` for ``queue`` on ``nodes`` under ``policy``.

    ``predictions`` (uid -> Prediction) may be given to skip predicting again.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    model = history if isinstance(history, Model) else fit_history(history)
    preds = dict(predictions) if predictions is not None else {}
    for ds in queue:
        if ds.uid not in preds:
            preds[ds.uid] = predict(ds, model)
    key = _nodes_key(nodes)
    if policy == "fifo":
        seq = tuple(queue)
        return Plan("fifo", key, {"": seq}, {"": 0}, frozenset(), preds, (), len(seq))
    classes = node_classes(nodes, {ds.node for ds in queue if ds.node})
    placeable, bad = [], []
    for ds, elig in eligibility(queue, preds, classes):
        if elig:
            placeable.append((ds, elig))
        else:
            reason = unplaceable_reason(ds, preds[ds.uid], nodes) or "no node can run it"
            bad.append(Unplaceable(ds, reason))
    if policy == "greedy":
        return _greedy_plan(placeable, tuple(bad), nodes, classes, preds, key)
    return _lpt_plan(placeable, tuple(bad), nodes, classes, preds, key)


def _greedy_plan(placeable: list[tuple[DataSet, tuple[int, ...]]], bad: tuple[Unplaceable, ...],
                 nodes: Sequence[NodeState], classes: Sequence[NodeClass],
                 preds: Mapping[str, Prediction], key: tuple) -> Plan:
    """Queue split into eligibility groups, each longest first."""
    groups: dict[str, list[DataSet]] = {}
    members: dict[str, tuple[int, ...]] = {}
    for ds, elig in placeable:
        gk = ",".join(map(str, elig))
        groups.setdefault(gk, []).append(ds)
        members[gk] = elig
    seq = {gk: tuple(sorted(g, key=lambda d: -preds[d.uid].hours)) for gk, g in groups.items()}
    node_groups = {}
    for ci, c in enumerate(classes):
        mine = tuple(gk for gk, elig in members.items() if ci in elig)
        for i in c.members:
            node_groups[nodes[i].name] = mine
    return Plan("greedy", key, seq, {gk: 0 for gk in seq}, frozenset(), preds, bad,
                len(placeable), groups=node_groups)


def _lpt_plan(placeable: list[tuple[DataSet, tuple[int, ...]]], bad: tuple[Unplaceable, ...],
              nodes: Sequence[NodeState], classes: Sequence[NodeClass],
              preds: Mapping[str, Prediction], key: tuple) -> Plan:
    """Earliest-finish list schedules over several orderings; the shortest wins."""
    slot_node: list[str] = []
    ready0: list[float] = []
    class_slots: list[list[int]] = []
    for c in classes:
        ids = []
        for i in c.members:
            n = nodes[i]
            busy = sorted(n.busy_h)[: n.slots]
            for s in range(n.slots):
                ids.append(len(slot_node))
                slot_node.append(n.name)
                ready0.append(max(0.0, busy[s]) if s < len(busy) else 0.0)
        class_slots.append(ids)
    speeds = [c.rep.speed for c in classes]
    jobs = [(ds, preds[ds.uid].hours, elig) for ds, elig in placeable]
    if not jobs:
        return Plan("lpt", key, {}, {}, frozenset(), preds, bad, 0, 0.0, "empty")
    total_cap = sum(c.capacity for c in classes)
    reach: dict[tuple[int, ...], tuple[float, float]] = {}  # elig -> (capacity, fastest speed)
    for _, _, elig in jobs:
        if elig not in reach:
            reach[elig] = (sum(classes[i].capacity for i in elig), max(speeds[i] for i in elig))
    orders = {
        "longest-first": lambda j: -j[1] / reach[j[2]][1],
        "scarcest-first": lambda j: (reach[j[2]][0], -j[1]),
        "long-or-scarce": lambda j: -(j[1] / reach[j[2]][1]) * (total_cap / reach[j[2]][0]),
    }
    best = None
    for name, order in orders.items():
        span, lists = _eft_schedule(sorted(range(len(jobs)), key=lambda k: order(jobs[k])),
                                    jobs, class_slots, speeds, ready0)
        if best is None or span < best[0] - 1e-9:
            best = (span, name, lists)
    _, variant, lists = best
    slot_class = [0] * len(slot_node)
    for ci, ids in enumerate(class_slots):
        for sid in ids:
            slot_class[sid] = ci
    hours = [j[1] for j in jobs]
    makespan = _improve(lists, hours, [j[2] for j in jobs], slot_class, speeds, ready0)
    per_node: dict[str, list[tuple[float, int, DataSet]]] = {}
    for sid, members in enumerate(lists):
        t = ready0[sid]
        speed = speeds[slot_class[sid]]
        for k in sorted(members, key=lambda k: -hours[k]):  # longest first within a slot
            per_node.setdefault(slot_node[sid], []).append((t, k, jobs[k][0]))
            t += hours[k] / speed
    seq = {name: tuple(ds for _, _, ds in sorted(items, key=lambda t: (t[0], t[1])))
           for name, items in per_node.items()}
    suffix = {}
    for name, sq in seq.items():
        acc, sums = 0.0, [0.0]
        for ds in reversed(sq):
            acc += preds[ds.uid].hours
            sums.append(acc)
        suffix[name] = tuple(reversed(sums))
    return Plan("lpt", key, seq, {name: 0 for name in seq}, frozenset(), preds, bad,
                len(placeable), makespan, variant, suffix_h=suffix)


def _eft_schedule(order, jobs, class_slots, speeds, ready0):
    """(makespan, job indexes per slot): each job, in ``order``, onto the eligible
    slot that finishes it first (ties go to the less scarce class, listed first)."""
    heaps = []
    for ids in class_slots:
        h = [(ready0[s], s) for s in ids]
        heapq.heapify(h)
        heaps.append(h)
    lists: list[list[int]] = [[] for _ in ready0]
    makespan = max(ready0) if ready0 else 0.0
    for k in order:
        _, hours, elig = jobs[k]
        best_i, best_f = -1, math.inf
        for i in elig:
            f = heaps[i][0][0] + hours / speeds[i]
            if f < best_f - 1e-9:
                best_i, best_f = i, f
        _, slot = heapq.heappop(heaps[best_i])
        heapq.heappush(heaps[best_i], (best_f, slot))
        lists[slot].append(k)
        if best_f > makespan:
            makespan = best_f
    return makespan, lists


IMPROVE_ROUNDS = 200
"""Most moves/swaps the local search makes on a plan."""
IMPROVE_MIN_GAIN = 1e-4
"""A local-search step must shorten the makespan by at least this fraction."""
IMPROVE_PARTNERS = 12
"""Least loaded slots per node class the local search tries as partners of the latest slot."""


def _improve(lists: list[list[int]], hours: Sequence[float], elig: Sequence[tuple[int, ...]],
             slot_class: Sequence[int], speeds: Sequence[float], ready0: Sequence[float]) -> float:
    """Local search on a plan (in place): repeatedly take the slot that finishes
    last and move one of its data sets to a less loaded slot, or swap it for a
    shorter one there, when that ends both before it; returns the makespan."""
    sp = [speeds[c] for c in slot_class]
    fin = [ready0[s] + sum(hours[k] for k in lists[s]) / sp[s] for s in range(len(lists))]
    by_len = [sorted((hours[k], k) for k in lst) for lst in lists]
    by_class: dict[int, list[int]] = {}
    for sid, c in enumerate(slot_class):
        by_class.setdefault(c, []).append(sid)
    by_class = list(by_class.values())
    for _ in range(IMPROVE_ROUNDS):
        S = max(range(len(fin)), key=fin.__getitem__)
        F, cS, sS = fin[S], slot_class[S], sp[S]
        cands: dict[int, list[tuple[float, int]]] = {}  # class -> distinct (hours, job) of S it may run
        for ci in range(len(by_class)):
            last = None
            row = []
            for a, ka in by_len[S]:
                if a != last and ci in elig[ka]:
                    row.append((a, ka))
                    last = a
            cands[ci] = row
        best = (F - max(1e-6, IMPROVE_MIN_GAIN * F), None)
        for ci, ids in enumerate(by_class):
            if not cands[ci]:
                continue
            for T in heapq.nsmallest(IMPROVE_PARTNERS, (t for t in ids if t != S), key=fin.__getitem__):
                room, sT = F - fin[T], sp[T]
                if room <= 1e-9:
                    break
                d_star = room / (1 / sS + 1 / sT)  # work to shift so both end together
                row_s = cands[ci]
                i = bisect.bisect_left(row_s, (d_star, -1))  # move: a ~ d_star, a < room * sT
                for j in (i - 1, i):
                    if 0 <= j < len(row_s) and row_s[j][0] < room * sT:
                        a = row_s[j][0]
                        new = max(F - a / sS, fin[T] + a / sT)
                        if new < best[0]:
                            best = (new, (T, row_s[j][1], None))
                row_t = by_len[T]
                if not row_t:
                    continue
                for a, ka in row_s:  # swap: b ~ a - d_star, b < a, a - b < room * sT
                    i = bisect.bisect_left(row_t, (a - d_star, -1))
                    for j in (i - 1, i):
                        if 0 <= j < len(row_t):
                            b, kb = row_t[j]
                            if b < a and a - b < room * sT and cS in elig[kb]:
                                new = max(F - (a - b) / sS, fin[T] + (a - b) / sT)
                                if new < best[0]:
                                    best = (new, (T, ka, kb))
        if best[1] is None:
            break
        T, ka, kb = best[1]
        _shift(lists, by_len, fin, hours, sp, S, T, ka)
        if kb is not None:
            _shift(lists, by_len, fin, hours, sp, T, S, kb)
    return max(fin) if fin else 0.0


def _shift(lists, by_len, fin, hours, sp, src: int, dst: int, k: int) -> None:
    """Move data set ``k`` from slot ``src`` to slot ``dst`` (local-search step)."""
    lists[src].remove(k)
    lists[dst].append(k)
    by_len[src].remove((hours[k], k))
    bisect.insort(by_len[dst], (hours[k], k))
    fin[src] -= hours[k] / sp[src]
    fin[dst] += hours[k] / sp[dst]


def place(queue: Collection[DataSet], nodes: Sequence[NodeState], now: float,
          policy: str = DEFAULT_POLICY, history: Iterable[Measured] | Model = (),
          plan: Plan | None = None, predictions: Mapping[str, Prediction] | None = None) -> Placement:
    """Pairs (data set, node) to launch on the free slots of ``nodes`` now.

    ``predictions`` (uid -> Prediction) skip predicting from ``history``.
    ``now`` is the caller's clock in hours (passed in, never read here; the
    current policies plan relative to it and need no absolute time). ``plan`` is the
    :attr:`Placement.plan` of the previous call; pass it back while the queue
    changed only by the pairs launched (and the node list is the same), so a
    long queue is planned once. It is rebuilt when the policy or the nodes
    changed, or when its size does not match the queue.

    >>> nodes = [NodeState("ws", slots=1, mem_gb=24, speed=0.6), NodeState("hpc", slots=1, mem_gb=512)]
    >>> q = [DataSet("small", hours=2, mem_gb=8), DataSet("big", hours=2, mem_gb=200)]
    >>> [(d.uid, n.name) for d, n in place(q, nodes, now=0.0).pairs]
    [('small', 'ws'), ('big', 'hpc')]
    """
    if (plan is None or plan.policy != policy or plan.nodes_key != _nodes_key(nodes)
            or len(queue) not in (plan.remaining, plan.remaining + len(plan.unplaceable))):
        plan = make_plan(queue, nodes, policy, history, predictions)
    if policy == "fifo":
        return _place_fifo(nodes, plan)
    if policy == "greedy":
        return _place_greedy(nodes, plan)
    return _place_lpt(nodes, now, plan)


def requeue(plan: Plan, ds: DataSet, prediction: Prediction | None = None) -> Plan | None:
    """``plan`` with ``ds`` put back at the end of the queue (``fifo`` only; other
    policies return None: plan again)."""
    if plan.policy != "fifo":
        return None
    preds = plan.predictions
    if ds.uid not in preds and prediction is not None:
        preds = {**preds, ds.uid: prediction}
    seq, c = plan.sequence[""], plan.cursor[""]
    return replace(plan, sequence={"": seq[c:] + (ds,)}, cursor={"": 0},
                   predictions=preds, remaining=plan.remaining + 1)


def _place_fifo(nodes: Sequence[NodeState], plan: Plan) -> Placement:
    """Queue order onto free slots in node order; no checks at all (for contrast)."""
    seq, i = plan.sequence[""], plan.cursor[""]
    pairs = []
    for n in nodes:
        if n.drained:
            continue
        for _ in range(n.free or 0):
            if i >= len(seq):
                break
            pairs.append((seq[i], n))
            i += 1
    return Placement(tuple(pairs), (), replace(plan, cursor={"": i}, remaining=plan.remaining - len(pairs)))


def _place_greedy(nodes: Sequence[NodeState], plan: Plan) -> Placement:
    """Each free slot takes the longest data set it may run (fastest nodes first)."""
    cursor = dict(plan.cursor)
    pairs = []
    for n in sorted((n for n in nodes if not n.drained and n.free), key=lambda n: -n.speed):
        for _ in range(n.free or 0):
            best, best_h = None, -1.0
            for gk in plan.groups.get(n.name, ()):
                c = cursor[gk]
                seq = plan.sequence[gk]
                if c < len(seq):
                    h = plan.predictions[seq[c].uid].hours
                    if h > best_h:
                        best, best_h = gk, h
            if best is None:
                break
            pairs.append((plan.sequence[best][cursor[best]], n))
            cursor[best] += 1
    return Placement(tuple(pairs), plan.unplaceable,
                     replace(plan, cursor=cursor, remaining=plan.remaining - len(pairs)))


def _place_lpt(nodes: Sequence[NodeState], now: float, plan: Plan) -> Placement:
    """Each node runs its planned sequence; a dry node takes a tail job it finishes sooner."""
    cursor = dict(plan.cursor)
    taken = plan.taken
    pairs = []
    dry = []
    for n in nodes:
        if n.drained or not n.free:
            continue
        seq = plan.sequence.get(n.name, ())
        c = cursor.get(n.name, 0)
        free = n.free
        while free and c < len(seq):
            ds = seq[c]
            c += 1
            if ds.uid in taken:
                continue
            pairs.append((ds, n))
            free -= 1
        if n.name in cursor:
            cursor[n.name] = c
        if free:
            dry.append((n, free))
    if dry:
        tails = _tails(plan, cursor, taken, {n.name: n for n in nodes})
        for n, free in dry:
            for _ in range(free):
                pick = next((t for t in tails if t[1] != n.name and t[2].uid not in taken
                             and t[3].hours / n.speed < t[0] and why_not(t[2], t[3], n) is None), None)
                if pick is None:
                    break
                taken = taken | {pick[2].uid}
                pairs.append((pick[2], n))
    return Placement(tuple(pairs), plan.unplaceable,
                     replace(plan, cursor=cursor, taken=taken, remaining=plan.remaining - len(pairs)))


def _tails(plan: Plan, cursor: Mapping[str, int], taken: frozenset[str],
           nodes: Mapping[str, NodeState]) -> list[tuple[float, str, DataSet, Prediction]]:
    """(hours until its node would finish it, node, data set, prediction) for the last
    waiting data set of each node, latest first: what a node that ran dry may take."""
    out = []
    for name, seq in plan.sequence.items():
        other = nodes.get(name)
        c = cursor.get(name, 0)
        if other is None or c >= len(seq):
            continue
        k = len(seq) - 1
        while k >= c and seq[k].uid in taken:
            k -= 1
        if k < c:
            continue
        pred = plan.predictions[seq[k].uid]
        wait = (plan.suffix_h[name][c] - plan.suffix_h[name][k]) / (other.speed * other.slots)
        out.append((wait + pred.hours / other.speed, name, seq[k], pred))
    out.sort(key=lambda t: -t[0])
    return out

"""Placement: which waiting data set goes to which free slot now (pure).

:func:`place` is what the engine calls whenever slots are free, and what
:func:`ari_console.estimate.simulate` replays; it returns the pairs to launch
and a :class:`~.values.Plan` to pass back next time, so a long queue is
planned once and then consumed slot by slot.
"""

from __future__ import annotations

from dataclasses import replace
from bisect import bisect_right
from itertools import accumulate, chain, compress, groupby
from operator import attrgetter, itemgetter, not_
from typing import Collection, Iterable, Mapping, Sequence

from .eligibility import (_TRIED, eligibility, node_classes, nodes_key, settle, unplaceable_reason, unplaceable_reasons,
                          why_not)
from .lpt import DEFAULT_SEARCH, Search, lpt_plan
from .prediction import DEFAULT_TUNING, Model, Tuning, fit_history, predict_all, quantiles_above
from .values import DataSet, Measured, NodeClass, NodeState, Placement, Plan, Prediction, Unplaceable

POLICIES = ("lpt", "greedy", "fifo")
_UID, _NODE, _MEDIAN_H, _PLAN_H = attrgetter("uid"), attrgetter("node"), attrgetter("median_h"), attrgetter("plan_h")
DEFAULT_POLICY = "lpt"


def make_plan(queue: Collection[DataSet], nodes: Sequence[NodeState], policy: str = DEFAULT_POLICY,
              history: Iterable[Measured] | Model = (),
              predictions: Mapping[str, Prediction] | None = None,
              tuning: Tuning = DEFAULT_TUNING, search: Search = DEFAULT_SEARCH) -> Plan:
    """A :class:`Plan` for ``queue`` on ``nodes`` under ``policy``.

    ``predictions`` (uid -> Prediction) may be given to skip predicting again.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    model = history if isinstance(history, Model) else fit_history(history, tuning)
    preds = dict(predictions) if predictions is not None else {}
    if not all(map(preds.__contains__, map(_UID, queue))):  # (checked in C: a replay passes them all)
        preds.update(predict_all([ds for ds in queue if ds.uid not in preds], model, tuning))
    key = nodes_key(nodes)
    if policy == "fifo":
        seq = tuple(queue)
        return Plan("fifo", key, {"": seq}, {"": 0}, frozenset(), preds, (), len(seq))
    classes = node_classes(nodes, set(map(_NODE, queue)) - {None, ""})
    risk_q = placed = None
    queue = list(queue)
    if search.relax_quantiles or search.risk_ratios:
        preds, risk_q, placed = settle(queue, preds, classes, search.relax_quantiles, search.relax_tolerance,
                                       tuning.retry_margin, ratios=search.risk_ratios, lean=True)
    tried: list[str] = []
    tried_at: list[int] = []
    pairs = _eligible_or_worth_a_try(queue, preds, classes, tuning, placed, tried, tried_at)
    fits = list(map(bool, map(itemgetter(1), pairs)))  # (maps and compress run in C: 100,000 at a re-plan)
    placeable, keep = list(compress(pairs, fits)), list(compress(range(len(pairs)), fits))
    nowhere = [ds for ds, _ in compress(pairs, map(not_, fits))]
    bad = [Unplaceable(ds, reason or "no node can run it")
           for ds, reason in zip(nowhere, unplaceable_reasons([(ds, preds[ds.uid]) for ds in nowhere], nodes))]
    if policy == "greedy":
        return replace(_greedy_plan(placeable, tuple(bad), nodes, classes, preds, key), risk_quantile=risk_q)
    hours = None
    if placed is not None:  # the plan's hours from settle's column, but for those tried at their medians
        column = placed[2]
        if tried:
            column = column.copy()
            column[tried_at] = [preds[uid].plan_h for uid in tried]
        hours = column[keep].tolist()
    plan = lpt_plan(placeable, tuple(bad), nodes, classes, preds, key, search, hours)
    learned = model.hours.n if model.hours is not None else 0
    return replace(_pilots_first(plan, search.pilots - learned), risk_quantile=risk_q)


def _pilots_first(plan: Plan, count: int) -> Plan:
    """``plan`` with ``count`` pilot data sets moved to the front of their nodes' sequences.

    ``lpt`` starts the longest first, so a young history holds the long data
    sets (as lower limits) and the few short ones that finish early: a fit of
    it extrapolates to the bulk of the queue. Pilots are spread evenly over
    the queue's predicted hours, smallest to largest, and run first on the
    node the plan gave them, shortest first (quick exact answers at the low
    end, the long pilots' lower limits soon after); a node's total work is
    unchanged, so the plan's makespan barely moves while the fit learns from
    the whole range.
    """
    if count <= 0 or not plan.sequence:
        return plan
    import numpy as np

    preds = plan.predictions
    waiting = list(chain.from_iterable(plan.sequence.values()))
    if len(waiting) <= count:
        return plan
    spread = list(map(preds.__getitem__, map(_UID, waiting)))
    hours = list(map(_PLAN_H, spread))
    keys = [m or h for m, h in zip(map(_MEDIAN_H, spread), hours)]
    by_key = np.array(keys, dtype=float).argsort(kind="stable")  # (the order a stable sort on them gives)
    step = len(waiting) / count
    pilots = sorted({int(by_key[int(step * (k + 0.5))]) for k in range(count)})  # positions in ``waiting``
    sequence, suffix = dict(plan.sequence), dict(plan.suffix_h)
    names = list(plan.sequence)
    ends = list(accumulate(map(len, plan.sequence.values())))
    for n, group in groupby(pilots, key=lambda at: bisect_right(ends, at)):  # the pilots of each node
        lo, hi = (ends[n - 1] if n else 0), ends[n]
        first = sorted(group, key=hours.__getitem__)  # shortest first (ties: in the node's order)
        chosen = set(first)
        order = first + [at for at in range(lo, hi) if at not in chosen]
        sequence[names[n]] = tuple(map(waiting.__getitem__, order))
        back = np.array([hours[at] for at in reversed(order)], dtype=float).cumsum()  # summed from the end, in order
        suffix[names[n]] = (*back[::-1].tolist(), 0.0)
    return replace(plan, sequence=sequence, suffix_h=suffix)


def _eligible_or_worth_a_try(queue: Collection[DataSet], preds: dict[str, Prediction],
                             classes: Sequence[NodeClass], tuning: Tuning, placed=None,
                             tried: list[str] | None = None,
                             tried_at: list[int] | None = None) -> list[tuple[DataSet, tuple[int, ...]]]:
    """:func:`eligibility`, except that a data set whose cautious quantiles fit no node but
    whose medians (above what it is known to need) fit one is tried there: a wide spread
    alone never makes a data set unplaceable, a kill that shows it needs more does.
    ``preds`` is updated with the median placement values of those data sets (the mean
    hours when higher; their uids are added to ``tried``, their positions in ``queue`` to
    ``tried_at``). ``placed``: ``preds``' placement values as arrays (:func:`settle`)."""
    out = eligibility(queue, preds, classes, placed)
    nowhere = list(compress(range(len(out)), map(not_, map(itemgetter(1), out))))  # (those that fit no class: in C)
    at = [k for k in nowhere if preds[out[k][0].uid].sigma > 0 or preds[out[k][0].uid].mem_sigma > 0]
    if not at:
        return out
    hopeless = [out[k][0] for k in at]
    for ds, p in zip(hopeless, _medians_tried(hopeless, preds, tuning.retry_margin)):
        preds[ds.uid] = p
    if tried is not None:
        tried.extend(map(_UID, hopeless))
    if tried_at is not None:
        tried_at.extend(at)
    for k, (ds, elig) in zip(at, eligibility(hopeless, preds, classes)):
        out[k] = (ds, elig)
    return out


def _medians_tried(hopeless: Sequence[DataSet], preds: Mapping[str, Prediction], margin: float) -> list[Prediction]:
    """:func:`_at_medians` of the predictions of ``hopeless``, reusing the last plan's where a prediction is
    the same object (each data set's values depend on its own prediction only: the same numbers)."""
    kept = _TRIED[0]
    spread = [preds[ds.uid] for ds in hopeless]
    out: list = [None] * len(spread)
    fresh = []
    for i, (ds, p) in enumerate(zip(hopeless, spread)):
        hit = kept.get(ds.uid)
        if hit is not None and hit[0] is p and hit[1] == margin:
            out[i] = hit[2]
        else:
            fresh.append(i)
    if fresh:
        for i, p in zip(fresh, _at_medians([spread[i] for i in fresh], margin)):
            out[i] = p
    _TRIED[0] = {ds.uid: (p, margin, o) for ds, p, o in zip(hopeless, spread, out)}
    return out


def _at_medians(spread: Sequence[Prediction], margin: float) -> list[Prediction]:
    """``spread`` at the placement values a data set that fits nowhere at its cautious ones is
    tried with: its medians above what it is known to need (the hours no lower than its plan's),
    computed on arrays (a re-plan may try thousands).

    >>> [(p.hours, p.mem_gb) for p in _at_medians([Prediction(9.0, 900.0, sigma=0.5, median_h=4, mem_sigma=1.0,
    ...                                                       mem_median_gb=10, mem_floor_gb=24)], 1.25)]
    [(9.0, 37.011)]
    """
    import numpy as np

    def column(name):
        return np.array([getattr(p, name) for p in spread], dtype=float)

    hours = quantiles_above(np.array([p.median_h or p.hours for p in spread], dtype=float), column("sigma"),
                            column("floor_h"), 0.5, margin).tolist()
    mem = quantiles_above(np.array([p.mem_median_gb or p.mem_gb for p in spread], dtype=float),
                          column("mem_sigma"), column("mem_floor_gb"), 0.5, margin).tolist()
    return [p.placed_at(round(max(h, p.plan_h), 4), round(m, 4)) for p, h, m in zip(spread, hours, mem)]


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
    seq = {gk: tuple(sorted(g, key=lambda d: -preds[d.uid].plan_h)) for gk, g in groups.items()}
    node_groups = {}
    for ci, c in enumerate(classes):
        mine = tuple(gk for gk, elig in members.items() if ci in elig)
        for i in c.members:
            node_groups[nodes[i].name] = mine
    return Plan("greedy", key, seq, {gk: 0 for gk in seq}, frozenset(), preds, bad,
                len(placeable), groups=node_groups)



def place(queue: Collection[DataSet], nodes: Sequence[NodeState], now: float,
          policy: str = DEFAULT_POLICY, history: Iterable[Measured] | Model = (),
          plan: Plan | None = None, predictions: Mapping[str, Prediction] | None = None,
          tuning: Tuning = DEFAULT_TUNING, search: Search = DEFAULT_SEARCH) -> Placement:
    """Pairs (data set, node) to launch on the free slots of ``nodes`` now.

    ``predictions`` (uid -> Prediction) skip predicting from ``history``;
    ``tuning`` and ``search`` are the prediction's and the ``lpt`` search's tunables.
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
    if needs_plan(len(queue), nodes, policy, plan):
        plan = make_plan(queue, nodes, policy, history, predictions, tuning, search)
    if policy == "fifo":
        return _place_fifo(nodes, plan)
    if policy == "greedy":
        return _place_greedy(nodes, plan)
    return _place_lpt(nodes, now, plan)


def needs_plan(queued: int, nodes: Sequence[NodeState], policy: str, plan: Plan | None) -> bool:
    """True when :func:`place` must plan the queue (of ``queued`` data sets) anew,
    rather than take ``plan``'s next pairs.

    >>> needs_plan(3, [NodeState("n")], "lpt", None)
    True
    """
    return (plan is None or plan.policy != policy or plan.nodes_key != nodes_key(nodes)
            or queued not in (plan.remaining, plan.remaining + len(plan.unplaceable)))


def requeue(plan: Plan, ds: DataSet, prediction: Prediction | None = None,
            nodes: Sequence[NodeState] = (), medians_margin: float | None = None) -> Plan | None:
    """``plan`` with ``ds`` (a data set whose attempt failed) put back.

    ``fifo``: at the end of the queue. ``lpt`` (given ``nodes``): next in line
    on the node, among those it may now run on, that would finish it first
    after its planned work (a retried data set is a long or big one: it goes
    early); where it may run on none at its placement values but has a spread and
    ``medians_margin`` is given, at its medians above what it is known to need (what
    a plan tries it at, with that retry margin); one a dry node took out of order off another's
    tail, where it still waits, leaves that place (:func:`_untaken`). ``greedy`` (given ``nodes``): into the
    group of the nodes it may now run on, by its hours. Otherwise None: plan again.
    ``prediction`` is what the failure taught (it replaces the plan's).
    """
    preds = plan.predictions
    if prediction is not None:
        preds = {**preds, ds.uid: prediction}
    if plan.policy == "lpt" and nodes:
        if ds.uid in plan.taken:  # it ran on a node that took it from another's tail, where it still waits
            plan = _untaken(plan, ds.uid)
        put = _requeue_lpt(plan, ds, preds, nodes)
        pred = preds[ds.uid]
        if put is None and medians_margin is not None and (pred.sigma > 0 or pred.mem_sigma > 0):
            put = _requeue_lpt(plan, ds, {**preds, ds.uid: _at_medians([pred], medians_margin)[0]}, nodes)
        return put
    if plan.policy == "greedy" and nodes:
        return _requeue_greedy(plan, ds, preds, nodes)
    if plan.policy != "fifo":
        return None
    seq, c = plan.sequence[""], plan.cursor[""]
    return replace(plan, sequence={"": seq[c:] + (ds,)}, cursor={"": 0},
                   predictions=preds, remaining=plan.remaining + 1)


def fits_nowhere(ds: DataSet, prediction: Prediction, nodes: Sequence[NodeState],
                 margin: float) -> Unplaceable | None:
    """What a plan would make of ``ds`` (a retry whose kill taught ``prediction``) when no node can
    run it at its placement values nor at its medians above what it is known to need (the values a
    plan tries such a data set at, with ``margin``): an :class:`Unplaceable`, else None. A replay
    parks such a retry at once rather than plan its whole queue again to learn the same.

    >>> hpc = NodeState("hpc", mem_gb=512)
    >>> taught = Prediction(5, 650, mem_sigma=0.4, mem_median_gb=600, mem_floor_gb=512)
    >>> fits_nowhere(DataSet("u"), taught, [hpc], 1.25).reason
    'needs more than 512 GB memory (an attempt ran out of it); the largest node (hpc) has 512 GB'
    >>> fits_nowhere(DataSet("u"), Prediction(5, 650, mem_sigma=0.4, mem_median_gb=300, mem_floor_gb=64), [hpc], 1.25)
    """
    if unplaceable_reason(ds, prediction, nodes) is None:
        return None
    if prediction.sigma > 0 or prediction.mem_sigma > 0:
        prediction = _at_medians([prediction], margin)[0]
    reason = unplaceable_reason(ds, prediction, nodes)
    return None if reason is None else Unplaceable(ds, reason)


def _untaken(plan: Plan, uid: str) -> Plan:
    """``plan`` without the copy of ``uid`` still waiting in a sequence after another node took it out of
    order (its retry goes where :func:`_requeue_lpt` puts it), and with ``uid`` no longer taken."""
    for name, seq in plan.sequence.items():
        c = plan.cursor.get(name, 0)
        k = next((k for k in range(len(seq) - 1, c - 1, -1) if seq[k].uid == uid), None)
        if k is not None:
            suffix = plan.suffix_h[name]
            gone = suffix[k] - suffix[k + 1]
            return _advanced(plan, sequence={**plan.sequence, name: seq[:k] + seq[k + 1:]},
                             suffix_h={**plan.suffix_h, name: tuple(h - gone for h in suffix[:k]) + suffix[k + 1:]},
                             taken=plan.taken - {uid})
    return _advanced(plan, taken=plan.taken - {uid})


def _requeue_lpt(plan: Plan, ds: DataSet, preds: Mapping[str, Prediction],
                 nodes: Sequence[NodeState]) -> Plan | None:
    pred = preds[ds.uid]
    best, best_finish = None, None
    allowed: dict[tuple, bool] = {}  # per node spec but the name: why_not reads no name when ds is pinned to none
    for n in nodes:
        if n.drained or n.name not in plan.sequence:
            continue
        if ds.node is None:
            ok = allowed.get(n.spec[1:])
            if ok is None:
                ok = allowed[n.spec[1:]] = why_not(ds, pred, n) is None
        else:
            ok = why_not(ds, pred, n) is None
        if not ok:
            continue
        left = plan.suffix_h[n.name][plan.cursor.get(n.name, 0)]
        finish = left / (n.speed * n.slots) + pred.plan_h / n.speed
        if best_finish is None or finish < best_finish:
            best, best_finish = n, finish
    if best is None:
        return None
    name, c = best.name, plan.cursor.get(best.name, 0)
    seq = (ds,) + plan.sequence[name][c:]
    left = plan.suffix_h[name][c:]  # (the hours after it are summed from the end: they stay)
    return _advanced(plan, sequence={**plan.sequence, name: seq}, cursor={**plan.cursor, name: 0},
                     suffix_h={**plan.suffix_h, name: (left[0] + pred.plan_h,) + left},
                     predictions=preds, remaining=plan.remaining + 1)


def _requeue_greedy(plan: Plan, ds: DataSet, preds: Mapping[str, Prediction],
                    nodes: Sequence[NodeState]) -> Plan | None:
    """``ds`` into the eligibility group of exactly the nodes it may now run on, by its hours."""
    may = frozenset(n.name for n in nodes if not n.drained and why_not(ds, preds[ds.uid], n) is None)
    members: dict[str, set[str]] = {}
    for name, keys in plan.groups.items():
        for key in keys:
            members.setdefault(key, set()).add(name)
    key = next((k for k, names in members.items() if names == may), None)
    if key is None:
        return None
    c, seq = plan.cursor[key], plan.sequence[key]
    hours = preds[ds.uid].plan_h
    at = next((i for i in range(c, len(seq)) if preds[seq[i].uid].plan_h < hours), len(seq))
    return replace(plan, sequence={**plan.sequence, key: seq[:at] + (ds,) + seq[at:]},
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
                    h = plan.predictions[seq[c].uid].plan_h
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
        allowed: dict[tuple, list] = {}  # per class of the dry nodes: the tails it may run, latest first
        for n, free in dry:
            klass = n.spec[1:]  # (what why_not reads of a node, but for its name: the pins, checked below)
            mine = allowed.get(klass)
            if mine is None:
                mine = allowed[klass] = [t for t in tails if _may_take(plan.may_take, klass, t[2], t[3], n)]
            for _ in range(free):
                pick = next((t for t in mine if t[1] != n.name and t[2].uid not in taken
                             and t[3].plan_h / n.speed < t[0]
                             and (t[2].node is None or why_not(t[2], t[3], n) is None)), None)
                if pick is None:
                    break
                taken = taken | {pick[2].uid}
                pairs.append((pick[2], n))
    return Placement(tuple(pairs), plan.unplaceable,
                     _advanced(plan, cursor=cursor, taken=taken, remaining=plan.remaining - len(pairs)))


def _may_take(known: dict, klass: tuple, ds: DataSet, pred: Prediction, node: NodeState) -> bool:
    """Whether ``node`` (of ``klass``) may run ``ds`` at ``pred`` (:func:`why_not`, a pin
    aside: a pinned data set is let through, for the caller to check on the node itself),
    remembered in ``known`` (a plan's :attr:`~.values.Plan.may_take`) while ``ds`` and
    ``pred`` are the same objects."""
    key = (ds.uid, klass)
    hit = known.get(key)
    if hit is not None and hit[0] is ds and hit[1] is pred:
        return hit[2]
    ok = ds.node is not None or why_not(ds, pred, node) is None
    known[key] = (ds, pred, ok)
    return ok


def _advanced(plan: Plan, **changes) -> Plan:
    """``replace(plan, **changes)`` for the fields a placement or a requeue moves on (cursor, taken,
    remaining; sequence, suffix hours, predictions), without the dataclass machinery: a replay takes
    a plan's next pairs thousands of times."""
    new = object.__new__(Plan)
    values = plan.__dict__.copy()
    values.update(changes)
    object.__setattr__(new, "__dict__", values)
    return new


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
        out.append((wait + pred.plan_h / other.speed, name, seq[k], pred))
    out.sort(key=lambda t: -t[0])
    return out

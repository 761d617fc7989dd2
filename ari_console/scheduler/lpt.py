"""The ``lpt`` plan: earliest-finish list schedules, then a local search (pure).

Data sets are taken in one of several orders and each goes to the eligible
slot where it would *finish* earliest; the shortest of those plans is then
improved by moving (or swapping) data sets off the slot that finishes last.
Tunables are fields of :class:`Search`, passed in.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from itertools import chain
from dataclasses import dataclass
from operator import itemgetter
from typing import Mapping, NamedTuple, Sequence

from .values import DataSet, NodeClass, NodeState, Plan, Prediction, Unplaceable

IMPROVE_ROUNDS = 200
"""Most moves/swaps the local search makes on a plan."""
IMPROVE_MIN_GAIN = 1e-4
"""A local-search step must shorten the makespan by at least this fraction."""
IMPROVE_PARTNERS = 12
"""Least loaded slots per node class the local search tries as partners of the latest slot."""
RELAX_QUANTILES = ((0.95, 0.9), (0.95, 0.8), (0.95, 0.7), (0.92, 0.7), (0.9, 0.7), (0.87, 0.7), (0.85, 0.7),
                   (0.82, 0.7), (0.8, 0.7), (0.75, 0.7), (0.7, 0.7))
"""(hours, memory) placement quantiles weighed against the safe ones, kills counted (settle_risk)."""
PILOTS = 60
"""While the hours fit has fewer finished attempts than this, a new plan starts the missing
number of data sets first, spread over the queue's predicted hours (see placement._pilots_first)."""
RISK_RATIOS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2)
"""Expected losses to kills, as a fraction of a data set's work, that placement may accept on a class
(weighed against the quantiles above by settle_risk; a data set affordable nowhere goes where it loses least)."""
RELAX_TOLERANCE = 0.01
"""How far above the best fluid bound (kills counted) a placement choice that wastes less may push it."""
ORDERINGS_DEPTH = 1000
"""Data sets per slot from which a plan schedules the longest-first ordering only (0: always all).
So deep, the orderings' plans end within the local search's step (IMPROVE_MIN_GAIN) of each other
once searched (measured on the study's 52 slots at 30,000-100,000 data sets: longest-first at most
8e-5 longer than the best of three, often equal), while each schedule costs ~90 ms at 100,000."""


@dataclass(frozen=True)
class Search:
    """The plan's tunables: the local search, and how far risk may relax (defaults: the constants above)."""

    rounds: int = IMPROVE_ROUNDS
    min_gain: float = IMPROVE_MIN_GAIN
    partners: int = IMPROVE_PARTNERS
    relax_quantiles: tuple[tuple[float, float], ...] = RELAX_QUANTILES
    relax_tolerance: float = RELAX_TOLERANCE
    risk_ratios: tuple[float, ...] = RISK_RATIOS
    pilots: int = PILOTS
    orderings_depth: int = ORDERINGS_DEPTH


DEFAULT_SEARCH = Search()


class Slots(NamedTuple):
    """Every slot of the live nodes, numbered class by class."""

    node: list[str]             # slot -> node name
    klass: list[int]            # slot -> class index
    ready_h: list[float]        # slot -> hours until its running attempt ends (0: free)
    by_class: list[list[int]]   # class index -> its slots


def _slots(nodes: Sequence[NodeState], classes: Sequence[NodeClass]) -> Slots:
    slots = Slots([], [], [], [])
    for ci, c in enumerate(classes):
        ids = []
        for i in c.members:
            n = nodes[i]
            busy = sorted(n.busy_h)[: n.slots]
            for s in range(n.slots):
                ids.append(len(slots.node))
                slots.node.append(n.name)
                slots.klass.append(ci)
                slots.ready_h.append(max(0.0, busy[s]) if s < len(busy) else 0.0)
        slots.by_class.append(ids)
    return slots


def lpt_plan(placeable: Sequence[tuple[DataSet, tuple[int, ...]]], bad: tuple[Unplaceable, ...],
             nodes: Sequence[NodeState], classes: Sequence[NodeClass],
             preds: Mapping[str, Prediction], key: tuple, search: Search = DEFAULT_SEARCH,
             hours: Sequence[float] | None = None) -> Plan:
    """Earliest-finish list schedules over several orderings; the shortest wins.

    ``hours``: each placeable data set's :attr:`Prediction.plan_h`, when the caller has them as a column.

    Data sets are handled as columns (hours, and an id per distinct set of eligible
    classes), so a re-plan of 100,000 makes few objects; an ordering is dropped as
    soon as its schedule runs past the best one so far (it could not win), and from
    ``search.orderings_depth`` data sets per slot only longest-first is scheduled.
    """
    import numpy as np

    slots = _slots(nodes, classes)
    speeds = [c.rep.speed for c in classes]
    if not placeable:
        return Plan("lpt", key, {}, {}, frozenset(), preds, bad, 0, 0.0, "empty")
    datasets = list(map(itemgetter(0), placeable))
    if hours is None:
        hours = [preds[ds.uid].plan_h for ds in datasets]
    eligs = list(map(itemgetter(1), placeable))
    kinds = {elig: i for i, elig in enumerate(dict.fromkeys(eligs))}  # eligible classes -> their id (first seen first)
    kind = list(map(kinds.__getitem__, eligs))
    total_capacity = sum(c.capacity for c in classes)
    kind_a = np.array(kind, dtype=np.intp)
    hours_a = np.array(hours, dtype=float)
    fastest_a = np.array([max(speeds[i] for i in e) for e in kinds], dtype=float)[kind_a]
    capacity_a = np.array([sum(classes[i].capacity for i in e) for e in kinds], dtype=float)[kind_a]
    orders = {  # stable sorts on arrays: the order sorted() would give with these keys, 100,000 jobs in ms
        "longest-first": lambda: np.argsort(-hours_a / fastest_a, kind="stable"),
        "scarcest-first": lambda: np.lexsort((-hours_a, capacity_a)),
        "long-or-scarce": lambda: np.argsort(-(hours_a / fastest_a) * (total_capacity / capacity_a), kind="stable"),
    }
    if search.orderings_depth and len(placeable) >= search.orderings_depth * len(slots.node):
        orders = {"longest-first": orders["longest-first"]}  # so deep, the orderings end alike (ORDERINGS_DEPTH)
    best_span, variant, best = math.inf, "", ([], [])
    for name, order in orders.items():
        jobs = order().tolist()
        span, went = _eft_slots(jobs, hours, kind, list(kinds), slots, speeds, stop_at=best_span - 1e-9)
        if went is not None and span < best_span - 1e-9:
            best_span, variant, best = span, name, (jobs, went)
    lists = _per_slot(*best, len(slots.ready_h)) if variant else []  # (the winner's lists alone)
    may = _class_mask(kind_a, list(kinds), len(classes))
    makespan = improve(lists, hours, (), slots, speeds, search, may=may)
    seq, suffix = _sequences(lists, hours_a, slots, speeds, datasets)
    return Plan("lpt", key, seq, {name: 0 for name in seq}, frozenset(), preds, bad,
                len(placeable), makespan, variant, suffix_h=suffix)


def _sequences(lists: list[list[int]], hours_a, slots: Slots, speeds: Sequence[float],
               datasets: Sequence[DataSet]) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(node -> its data sets by planned start, then job; node -> the hours from each position on) of the
    jobs per slot ``lists``, each slot running its jobs longest first from when it is ready.

    Every slot and node at once, on arrays: a slot's starts are the running sums of a row of a
    matrix (a row's sum is added up in its order, as one slot's alone would be: the same bits),
    a node's suffix hours likewise, so a replay's dozens of re-plans make few numpy calls per plan."""
    import numpy as np

    counts = np.fromiter(map(len, lists), dtype=np.intp, count=len(lists))
    flat = np.fromiter(chain.from_iterable(lists), dtype=np.intp, count=int(counts.sum()))
    slot_of = np.arange(len(lists)).repeat(counts)
    ks = flat[np.lexsort((-hours_a[flat], slot_of))]  # slot by slot, longest first (ties: in list order)
    first = np.concatenate(([0], counts.cumsum()[:-1]))
    pos = np.arange(len(ks)) - first.repeat(counts)  # each job's place in its slot
    steps = np.zeros((len(lists), int(counts.max(initial=0)) + 1))
    steps[:, 0] = slots.ready_h
    steps[slot_of, pos + 1] = hours_a[ks] / np.array(speeds)[np.array(slots.klass, dtype=np.intp)][slot_of]
    start = steps.cumsum(axis=1)[slot_of, pos]
    names = list(dict.fromkeys(slots.node))  # (the nodes in slot order)
    node_id = np.array([names.index(n) for n in slots.node], dtype=np.intp)[slot_of]
    order = ks[np.lexsort((ks, start, node_id))]  # node by node: by planned start, then job
    per_node = np.bincount(node_id, minlength=len(names))
    width = int(per_node.max(initial=0))
    back = np.zeros((len(names), width + 1))  # per node its hours from the last job back, summed in that order
    ends = per_node.cumsum()
    node_pos = np.arange(len(order)) - (ends - per_node).repeat(per_node)
    back[np.arange(len(names)).repeat(per_node), (per_node.repeat(per_node) - node_pos)] = hours_a[order]
    back = back.cumsum(axis=1)
    jobs = list(map(datasets.__getitem__, order.tolist()))
    seq, suffix = {}, {}
    lo = 0
    for n, (name, hi) in enumerate(zip(names, ends.tolist())):
        seq[name] = tuple(jobs[lo:hi])
        suffix[name] = tuple(back[n, hi - lo::-1].tolist())
        lo = hi
    return seq, suffix


def _eft_schedule(order: Sequence[int], hours: Sequence[float], kind: Sequence[int],
                  kinds: Sequence[tuple[int, ...]], slots: Slots, speeds: Sequence[float],
                  stop_at: float = math.inf) -> tuple[float, list[list[int]] | None]:
    """(makespan, job indexes per slot): each job, in ``order``, onto the eligible
    slot that finishes it first (ties go to the less scarce class, listed first).
    ``kind[k]`` indexes ``kinds``, the classes job ``k`` may run on. Once the
    makespan reaches ``stop_at``: (that makespan, None)."""
    span, went = _eft_slots(order, hours, kind, kinds, slots, speeds, stop_at)
    return span, None if went is None else _per_slot(order, went, len(slots.ready_h))


def _per_slot(order: Sequence[int], went: Sequence[int], count: int) -> list[list[int]]:
    """The job indexes of each of ``count`` slots, in ``order``, job ``order[i]`` on slot ``went[i]``.

    >>> _per_slot([2, 0, 1], [1, 0, 1], 3)
    [[0], [2, 1], []]
    """
    lists: list[list[int]] = [[] for _ in range(count)]
    for k, slot in zip(order, went):
        lists[slot].append(k)
    return lists


def _eft_slots(order: Sequence[int], hours: Sequence[float], kind: Sequence[int],
               kinds: Sequence[tuple[int, ...]], slots: Slots, speeds: Sequence[float],
               stop_at: float = math.inf) -> tuple[float, list[int] | None]:
    """:func:`_eft_schedule` with the slot of each job in ``order`` (a plan makes the
    per-slot lists of its winning ordering only)."""
    heaps = []  # per class: (hours until free, slot)
    for ids in slots.by_class:
        h = [(slots.ready_h[s], s) for s in ids]
        heapq.heapify(h)
        heaps.append(h)
    # per eligibility: (heap, speed) of its first class, and of the others (finite hours: the first is always a candidate)
    options = [((heaps[elig[0]], speeds[elig[0]]), tuple((heaps[ci], speeds[ci]) for ci in elig[1:])) for elig in kinds]
    makespan = max(slots.ready_h) if slots.ready_h else 0.0
    if makespan >= stop_at:
        return makespan, None
    replace_top = heapq.heapreplace
    per_job = list(map(options.__getitem__, kind))
    went: list[int] = []  # the slot of each job, in ``order``
    took = went.append
    for h, ((heap, speed), others) in zip(map(hours.__getitem__, order), map(per_job.__getitem__, order)):
        best_finish = heap[0][0] + h / speed
        for other, speed in others:
            finish = other[0][0] + h / speed
            if finish < best_finish - 1e-9:
                heap, best_finish = other, finish
        slot = heap[0][1]
        replace_top(heap, (best_finish, slot))
        took(slot)
        if best_finish > makespan:
            makespan = best_finish
            if makespan >= stop_at:
                return makespan, None
    return makespan, went


def improve(lists: list[list[int]], hours: Sequence[float], elig: Sequence[tuple[int, ...]],
            slots: Slots, speeds: Sequence[float], search: Search = DEFAULT_SEARCH, may=None) -> float:
    """Local search on a plan (in place): repeatedly take the slot that finishes
    last and move one of its data sets to a less loaded slot, or swap it for a
    shorter one there, when that ends both before it; returns the makespan.

    A step must shorten the makespan by ``search.min_gain`` of it. No step with a
    partner slot can end both slots before the point where moving work evens them
    out (``room / (1/speed + 1/partner speed)`` hours of work), so partners whose
    even point misses that gain, or the best step found so far, are not searched:
    the search stops as soon as no partner can gain enough. The candidates with a
    partner are weighed at once (numpy: every data set of the latest slot against
    the partner's sorted hours); the step taken is the one a scan in order would take.
    """
    import numpy as np

    speed = [speeds[c] for c in slots.klass]
    finish = [slots.ready_h[s] + sum(map(hours.__getitem__, lists[s])) / speed[s] for s in range(len(lists))]
    hours_a = np.asarray(hours, dtype=float)
    if may is None:  # class x job: may run there (lpt_plan passes it, from its eligibility ids)
        kinds: dict[tuple[int, ...], int] = {}
        ids = np.fromiter((kinds.setdefault(e, len(kinds)) for e in elig), dtype=np.intp, count=len(elig))
        may = _class_mask(ids, list(kinds), len(slots.by_class))
    by_len = _sorted_slots(lists, hours_a)  # per slot: (hours, jobs) sorted by (hours, job), padded
    either_side = np.array([-1, 0])  # a search position's neighbours in a padded slot
    for _ in range(search.rounds):
        latest = max(range(len(finish)), key=finish.__getitem__)
        latest_end, latest_class, latest_speed = finish[latest], slots.klass[latest], speed[latest]
        may_latest = may[latest_class]  # (a row: what may run on the latest slot's class)
        best_end = latest_end - max(1e-6, search.min_gain * latest_end)
        slack = 1e-9 * max(1.0, latest_end)  # rounding: a step's end is never this far below its even point
        best_step: tuple[int, int, int | None] | None = None  # (partner slot, job out, job back)
        lat_h, lat_k = by_len[latest]
        lat_h, lat_k = lat_h[1:-1], lat_k[1:-1]
        for ci, ids in enumerate(slots.by_class):
            row_h = row_k = None  # distinct hours (and a job of each) of latest that class ci may run
            partners = [t for t in sorted(ids, key=finish.__getitem__) if t != latest][:search.partners]  # (nsmallest's)
            for partner in partners:
                room, partner_speed = latest_end - finish[partner], speed[partner]
                if room <= 1e-9:
                    break
                balance = room / (1 / latest_speed + 1 / partner_speed)  # work to shift so both end together
                if latest_end - balance / latest_speed - slack >= best_end:
                    break  # even the perfect step gains too little, here and with every later partner (less room)
                if row_h is None:
                    keep = may[ci, lat_k]
                    row_h, row_k = lat_h[keep], lat_k[keep]
                    first = np.empty(len(row_h), dtype=bool)
                    first[:1] = True
                    first[1:] = row_h[1:] != row_h[:-1]
                    row_h, row_k = row_h[first], row_k[first]
                    row_col, row_list = row_h[:, None], row_h.tolist()
                if not row_list:
                    break
                limit = room * partner_speed
                i = bisect_left(row_list, balance)  # move: out ~ balance, out < room * partner_speed
                for j in (i - 1, i):
                    if 0 <= j < len(row_list) and row_list[j] < limit:
                        out = row_list[j]
                        end = max(latest_end - out / latest_speed, finish[partner] + out / partner_speed)
                        if end < best_end:
                            best_end, best_step = end, (partner, int(row_k[j]), None)
                part_h, part_k = by_len[partner]
                if len(part_h) == 2:  # (its padding alone: no job)
                    continue
                # swap: back ~ out - balance, back < out, out - back < room * partner_speed, back may run on latest;
                # the two jobs either side of out - balance (a side past the ends is the padding, never valid)
                pick = part_h.searchsorted(row_h - balance, "left")[:, None] + either_side
                back = part_h[pick]
                shifted = row_col - back
                valid = (back < row_col) & (shifted < limit) & may_latest[part_k[pick]]
                ends = np.where(valid, np.maximum(latest_end - shifted / latest_speed,
                                                  finish[partner] + shifted / partner_speed), np.inf).ravel()
                a = int(ends.argmin())  # the first of the least: what a scan in order keeps (none valid: inf)
                if ends[a] < best_end:
                    best_end = float(ends[a])
                    best_step = (partner, int(row_k[a // 2]), int(part_k[pick.ravel()[a]]))
        if best_step is None:
            break
        partner, k_out, k_back = best_step
        _shift(lists, by_len, finish, hours_a, speed, latest, partner, k_out)
        if k_back is not None:
            _shift(lists, by_len, finish, hours_a, speed, partner, latest, k_back)
    return max(finish) if finish else 0.0


def _class_mask(kind, kinds: Sequence[tuple[int, ...]], n_classes: int):
    """Boolean array (class, job): job ``k`` (of eligibility ``kinds[kind[k]]``) may run on the class."""
    import numpy as np

    table = np.zeros((max(1, len(kinds)), n_classes), dtype=bool)
    for i, elig in enumerate(kinds):
        table[i, list(elig)] = True
    return table[np.asarray(kind, dtype=np.intp)].T.copy()


def _sorted_slots(lists: list[list[int]], hours) -> list:
    """Per slot, (hours, jobs) of its jobs as arrays sorted by (hours, job), padded with (-inf, -1) before
    and (inf, -1) after: a search for a swap partner finds a neighbour on either side, and a padding
    one fails the tests a real one must pass (shorter than the job out, by less than the room). Every
    slot sorted and padded at once (views of two arrays).

    >>> import numpy as np
    >>> [(h.tolist(), k.tolist()) for h, k in _sorted_slots([[0, 1], [], [2]], np.array([3.0, 1.0, 2.0]))]
    [([-inf, 1.0, 3.0, inf], [-1, 1, 0, -1]), ([-inf, inf], [-1, -1]), ([-inf, 2.0, inf], [-1, 2, -1])]
    """
    import numpy as np

    counts = np.fromiter(map(len, lists), dtype=np.intp, count=len(lists))
    flat = np.fromiter(chain.from_iterable(lists), dtype=np.intp, count=int(counts.sum()))
    slot_of = np.arange(len(lists)).repeat(counts)
    ks = flat[np.lexsort((flat, hours[flat], slot_of))]  # slot by slot, by (hours, job)
    width = counts + 2
    ends = width.cumsum()
    starts = ends - width
    at = starts.repeat(counts) + 1 + (np.arange(len(ks)) - (starts - 2 * np.arange(len(lists))).repeat(counts))
    padded_h = np.full(int(ends[-1]) if len(ends) else 0, np.inf)
    padded_k = np.full(len(padded_h), -1, dtype=np.intp)
    padded_h[starts] = -np.inf
    padded_h[at] = hours[ks]
    padded_k[at] = ks
    return [(padded_h[a:b], padded_k[a:b]) for a, b in zip(starts.tolist(), ends.tolist())]


def _shift(lists: list[list[int]], by_len: list, finish: list[float], hours, speed: Sequence[float],
           src: int, dst: int, k: int) -> None:
    """Move data set ``k`` from slot ``src`` to slot ``dst`` (local-search step)."""
    import numpy as np

    h = float(hours[k])
    lists[src].remove(k)
    lists[dst].append(k)
    src_h, src_k = by_len[src]
    at = int((src_k == k).argmax())  # (its one place)
    by_len[src] = (np.concatenate((src_h[:at], src_h[at + 1:])), np.concatenate((src_k[:at], src_k[at + 1:])))
    dst_h, dst_k = by_len[dst]
    lo, hi = dst_h.searchsorted(h, "left"), dst_h.searchsorted(h, "right")
    at = int(lo + dst_k[lo:hi].searchsorted(k))
    by_len[dst] = (np.concatenate((dst_h[:at], [h], dst_h[at:])), np.concatenate((dst_k[:at], [k], dst_k[at:])))
    finish[src] -= h / speed[src]
    finish[dst] += h / speed[dst]

"""Which node classes may run which data set, and why not (pure).

A data set may run on a node when its predicted memory fits the node's,
its predicted hours / node speed fit the walltime, the scratch disk it needs
(:attr:`DataSet.scratch_need_gb`: size x 3, or x the factor finished attempts
taught (:func:`scratch_factors`), or its own ``scratch_gb``) fits the
node's scratch (when the node's is known), and the recipe / CASA version it
needs is there; anything else would be an avoidable failure.
"""

from __future__ import annotations

import math
from itertools import repeat
from operator import attrgetter, is_
from typing import Collection, Iterable, Mapping, Sequence

from ..casa_install import casa_install_key
from .prediction import made_columns
from .values import (SCRATCH_FLOOR_GB, SCRATCH_PER_GB, SCRATCH_RETRY_MARGIN, DataSet, Measured, NodeClass,
                     NodeState, Prediction, placed_all)

SCRATCH_QUANTILE = 0.9
"""The quantile of finished attempts' scratch per GB that a data set's need is counted with."""
SCRATCH_MIN_SAMPLES = 5
"""Finished attempts (with a measured peak) a group needs before its own factor may go below the fallback."""

def why_not(ds: DataSet, pred: Prediction, node: NodeState) -> str | None:
    """Why ``ds`` must not run on ``node`` (an avoidable failure), or None if it may.

    >>> why_not(DataSet("u"), Prediction(5, 30), NodeState("ws", mem_gb=24))
    'needs 30 GB memory, ws has 24 GB'
    """
    if ds.node is not None and ds.node != node.name:
        return f"pinned to {ds.node}"
    if pred.mem_gb > node.mem_gb:
        return f"needs {_gb(pred.mem_gb)} GB memory, {node.name} has {_gb(node.mem_gb)} GB"
    if node.scratch_gb is not None:
        need = ds.scratch_need_gb
        if need is not None and need > node.scratch_gb:
            return f"needs {_gb(need)} GB of scratch, {node.name} has {_gb(node.scratch_gb)} GB"
    if node.walltime_h is not None:
        wall = pred.hours / node.speed
        if wall > node.walltime_h:
            return (f"needs {wall:.4g} h at speed {node.speed:g}, "
                    f"{node.name} allows {node.walltime_h:g} h")
        if ds.walltime_h is not None and ds.walltime_h > node.walltime_h:
            return f"needs a walltime of {ds.walltime_h:g} h, {node.name} allows {node.walltime_h:g} h"
    if ds.recipe is not None and ds.recipe not in node.recipes:
        return f"needs recipe {ds.recipe}, {node.name} has {', '.join(node.recipes) or 'none'}"
    if ds.casa_version is not None and casa_install_key(ds.casa_version, node.casa_versions) is None:
        return f"needs CASA {ds.casa_version}, {node.name} has {', '.join(node.casa_versions) or 'none listed'}"
    return None


def _gb(x: float) -> str:
    """GB in a reason: whole GB with thousands separators from 100 GB, 3 digits below.

    >>> _gb(300000.05), _gb(30.05), _gb(1.0)
    ('300,000', '30.1', '1')
    """
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _specs(nodes: Sequence[NodeState]) -> list[NodeState]:
    """``nodes``, one of each spec but the name (the last of each, in the order each spec first comes):
    :func:`why_not` lets a data set pinned to no node on all nodes of a spec or on none (it reads no
    node's name then), so asking one is enough (a re-plan may find thousands that fit nowhere, each
    asked about every node)."""
    return list({n.spec[1:]: n for n in nodes}.values())


def unplaceable_reason(ds: DataSet, pred: Prediction, nodes: Sequence[NodeState]) -> str | None:
    """Why no node can run ``ds`` (the closest miss), or None if one can.

    >>> unplaceable_reason(DataSet("u"), Prediction(5, 900), [NodeState("hpc", mem_gb=512)])
    'needs 900 GB memory; the largest node (hpc) has 512 GB'

    Where an attempt taught it (a memory kill on the largest node; a walltime kill on the
    longest), the reason says so, rather than quote a quantile above that floor as a need:

    >>> unplaceable_reason(DataSet("u"), Prediction(5, 650, mem_floor_gb=512), [NodeState("hpc", mem_gb=512)])
    'needs more than 512 GB memory (an attempt ran out of it); the largest node (hpc) has 512 GB'
    """
    return unplaceable_reasons([(ds, pred)], nodes)[0]


def unplaceable_reasons(cases: Iterable[tuple[DataSet, Prediction]], nodes: Sequence[NodeState]) -> list[str | None]:
    """:func:`unplaceable_reason` of each (data set, prediction) of ``cases``, the nodes of each
    spec found once for all (a re-plan may find thousands that fit nowhere).

    >>> unplaceable_reasons([(DataSet("u"), Prediction(5, 30)), (DataSet("v"), Prediction(5, 8))],
    ...                     [NodeState("ws", mem_gb=24), NodeState("ws2", mem_gb=24, drained=True)])
    ['needs 30 GB memory; the largest node (ws) has 24 GB', None]
    """
    live = [n for n in nodes if not n.drained]
    live_specs, every_spec = _specs(live), _specs(nodes)
    return [_unplaceable(ds, pred, nodes, live, live_specs, every_spec) for ds, pred in cases]


def _unplaceable(ds: DataSet, pred: Prediction, nodes: Sequence[NodeState], live: Sequence[NodeState],
                 live_specs: Sequence[NodeState], every_spec: Sequence[NodeState]) -> str | None:
    """:func:`unplaceable_reason`, given the live nodes and one node of each spec (live, and of all)."""
    if any(why_not(ds, pred, n) is None for n in (live_specs if ds.node is None else live)):
        return None
    if ds.node is not None and not any(n.name == ds.node for n in nodes):
        return f"pinned to {ds.node}, which is not a node — unpin it or add the node"
    cands = [n for n in nodes if ds.node is None or n.name == ds.node]
    if not cands:
        return "no nodes"
    if any(why_not(ds, pred, n) is None for n in (every_spec if ds.node is None else cands)):
        drained = ", ".join(n.name for n in cands if why_not(ds, pred, n) is None)
        return f"only drained nodes can run it ({drained})"
    big = max(cands, key=lambda n: n.mem_gb)
    if pred.mem_gb > big.mem_gb:
        if pred.mem_floor_gb >= big.mem_gb:
            return (f"needs more than {_gb(pred.mem_floor_gb)} GB memory (an attempt ran out of it); "
                    f"the largest node ({big.name}) has {_gb(big.mem_gb)} GB")
        return f"needs {_gb(pred.mem_gb)} GB memory; the largest node ({big.name}) has {_gb(big.mem_gb)} GB"
    need = ds.scratch_need_gb
    disk = max(cands, key=lambda n: math.inf if n.scratch_gb is None else n.scratch_gb)
    if need is not None and disk.scratch_gb is not None and need > disk.scratch_gb:
        return f"needs {_gb(need)} GB of scratch; the largest scratch ({disk.name}) has {_gb(disk.scratch_gb)} GB"
    roomy = [n for n in cands if n.mem_gb >= pred.mem_gb]
    longest = max(roomy, key=lambda n: math.inf if n.walltime_h is None else n.walltime_h * n.speed)
    reason = why_not(ds, pred, longest)
    if reason and "allows" in reason:
        best = f"(best: {longest.name}, {longest.walltime_h:g} h at speed {longest.speed:g})"
        if longest.walltime_h is not None and pred.floor_h >= longest.walltime_h * longest.speed:
            return (f"needs more than {pred.floor_h:.4g} h at speed 1.0 (an attempt reached a walltime); "
                    f"no node with {_gb(pred.mem_gb)} GB allows more {best}")
        return f"needs {pred.hours:.4g} h at speed 1.0; no node with {_gb(pred.mem_gb)} GB allows it {best}"
    return reason or "no node can run it"



def nodes_key(nodes: Sequence[NodeState]) -> tuple:
    """What a plan depends on in the node list (not the free slots)."""
    return tuple([n.spec for n in nodes])


def node_classes(nodes: Sequence[NodeState], pinned: Collection[str] = ()) -> list[NodeClass]:
    """Live nodes grouped into classes, least scarce first (small memory, short
    walltime, fast); a node some data set is pinned to is a class of its own."""
    groups: dict[tuple, list[int]] = {}
    for i, n in enumerate(nodes):
        if not n.drained:
            key = (n.mem_gb, n.walltime_h, n.speed, n.recipes, n.casa_versions, n.scratch_gb)
            groups.setdefault(key + ((n.name,) if n.name in pinned else ()), []).append(i)
    out = [NodeClass(k, nodes[m[0]], tuple(m), sum(nodes[i].slots for i in m)) for k, m in groups.items()]
    return sorted(out, key=lambda c: (c.rep.mem_gb, math.inf if c.rep.walltime_h is None else c.rep.walltime_h,
                                      -c.rep.speed))


def eligibility(queue: Iterable[DataSet], preds: Mapping[str, Prediction],
                classes: Sequence[NodeClass], placed=None) -> list[tuple[DataSet, tuple[int, ...]]]:
    """(data set, indexes of the classes it may run on) for each data set
    (the test of :func:`why_not`, without making its reasons; on arrays for the
    data sets that only memory and hours constrain). ``placed``: the (hours, memory)
    placement values of ``preds`` for ``queue`` as arrays, when the caller has them
    (:func:`settle`), so that they are not read back from 100,000 predictions; a fourth
    entry, when not None, says that no data set of ``queue`` is pinned and holds their
    :func:`scratch_masks` (settle's, not made again)."""
    import numpy as np

    queue = list(queue)
    hours, mem = placed[:2] if placed is not None else (
        np.array([preds[ds.uid].hours for ds in queue], dtype=float),
        np.array([preds[ds.uid].mem_gb for ds in queue], dtype=float))
    unpinned = placed[3] if placed is not None and len(placed) > 3 else None  # settle's scratch masks: nothing pinned
    scratch = scratch_masks(queue, classes) if unpinned is None else unpinned
    masks = (_fit_masks(hours, mem, classes) & scratch).tolist()
    as_tuple: dict[int, tuple[int, ...]] = {}
    if unpinned is not None or _none_pinned(queue):  # nothing pinned: each mask's classes, made once
        as_tuple = {m: tuple(i for i in range(len(classes)) if m >> i & 1) for m in set(masks)}
        return list(zip(queue, map(as_tuple.__getitem__, masks)))
    out = []
    for ds, m in zip(queue, masks):
        if ds.node is None and ds.recipe is None and ds.casa_version is None and ds.walltime_h is None:
            elig = as_tuple.get(m)
            if elig is None:
                elig = as_tuple[m] = tuple(i for i in range(len(classes)) if m >> i & 1)
        else:
            p = preds[ds.uid]
            elig = tuple(i for i, c in enumerate(classes) if why_not(ds, p, c.rep) is None)
        out.append((ds, elig))
    return out


_PINS = attrgetter("node", "recipe", "casa_version", "walltime_h")
_MEAN_H = attrgetter("mean_h")
_NO_PINS = (None, None, None, None)


def _none_pinned(queue: Sequence[DataSet]) -> bool:
    """Whether no data set of ``queue`` pins a node, recipe, CASA version or walltime (each
    field's values counted in C: no tuple per data set).

    >>> _none_pinned([DataSet("a"), DataSet("b")]), _none_pinned([DataSet("a"), DataSet("b", recipe="casa6")])
    (True, False)
    """
    return all(list(map(attrgetter(name), queue)).count(None) == len(queue)
               for name in ("node", "recipe", "casa_version", "walltime_h"))


def _fit_masks(hours, mem, classes: Sequence[NodeClass]):
    """Per data set, the bitmask of the classes whose memory and walltime its ``hours``/``mem`` fit (arrays)."""
    return _hours_masks(hours, classes) & _mem_masks(mem, classes)


def _hours_masks(hours, classes: Sequence[NodeClass]):
    """Per data set, the bitmask of the classes whose walltime its ``hours`` fit (an array)."""
    import numpy as np

    mask = np.zeros(len(hours), dtype=np.int64)
    for i, c in enumerate(classes):
        wall = math.inf if c.rep.walltime_h is None else c.rep.walltime_h
        mask |= (hours / c.rep.speed <= wall).astype(np.int64) << i
    return mask


def _mem_masks(mem, classes: Sequence[NodeClass]):
    """Per data set, the bitmask of the classes whose memory its ``mem`` fits (an array)."""
    import numpy as np

    mask = np.zeros(len(mem), dtype=np.int64)
    for i, c in enumerate(classes):
        mask |= (mem <= c.rep.mem_gb).astype(np.int64) << i
    return mask


def scratch_masks(queue: Sequence[DataSet], classes: Sequence[NodeClass]):
    """Per data set (an array), the bitmask of the classes whose scratch its need fits (a class or a data set
    whose scratch is unknown fits); all ones when no class knows its scratch."""
    import numpy as np

    every = (1 << len(classes)) - 1
    if all(c.rep.scratch_gb is None for c in classes):
        return np.full(len(queue), every, dtype=np.int64)
    need = _scratch_needs(queue)
    mask = np.zeros(len(queue), dtype=np.int64)
    for i, c in enumerate(classes):
        room = math.inf if c.rep.scratch_gb is None else c.rep.scratch_gb
        mask |= (~(need > room)).astype(np.int64) << i
    return mask


def scratch_factors(history: Iterable[Measured], quantile: float = SCRATCH_QUANTILE,
                    min_samples: int = SCRATCH_MIN_SAMPLES, default: float = SCRATCH_PER_GB) -> dict[str | None, float]:
    """The scratch per GB of size data sets need, learned from finished attempts: per array (key
    None: every array), the ``quantile`` of (peak scratch - :data:`SCRATCH_FLOOR_GB`) / size over the
    succeeded attempts whose peak was measured.

    A group with fewer than ``min_samples`` is floored at its fallback (an array's: the
    whole campaign's; the campaign's: ``default``, the documented :data:`SCRATCH_PER_GB`): a few
    small attempts never shrink the need, a large one raises it at once. Look a data set's factor
    up with ``factors.get(array, factors[None])``.

    >>> h = [Measured("u", size_gb=10, hours=1, peak_scratch_gb=10 * f + 0.05, array="12m") for f in (1, 1.2, 1.4, 1.5, 1.6)]
    >>> f = scratch_factors(h + [Measured("v", size_gb=1, hours=1, peak_scratch_gb=7.05, array="7m")])
    >>> round(f[None], 2), round(f["12m"], 2), round(f["7m"], 2)
    (4.3, 1.56, 7.0)
    """
    groups: dict[str | None, list[float]] = {None: []}
    for m in history:
        if m.outcome != "ok" or not m.peak_scratch_gb or not m.size_gb or m.size_gb <= 0:
            continue
        ratio = max(0.0, m.peak_scratch_gb - SCRATCH_FLOOR_GB) / m.size_gb
        groups[None].append(ratio)
        groups.setdefault(m.array, []).append(ratio)
    pooled = _learned(groups.pop(None), quantile, min_samples, default)
    out = {None: pooled}
    for array, ratios in groups.items():
        if array is not None:
            out[array] = _learned(ratios, quantile, min_samples, pooled)
    return out


def _learned(ratios: list[float], quantile: float, min_samples: int, fallback: float) -> float:
    """The ``quantile`` of ``ratios`` (linear between order statistics), floored at ``fallback`` while
    there are fewer than ``min_samples``; ``fallback`` when there are none.

    >>> _learned([1.0, 2.0], 0.5, 5, 3.0), _learned([1.0, 2.0, 3.0, 4.0, 5.0], 0.5, 5, 3.0), _learned([], 0.9, 5, 3.0)
    (3.0, 3.0, 3.0)
    """
    if not ratios:
        return fallback
    xs = sorted(ratios)
    pos = quantile * (len(xs) - 1)
    lo = math.floor(pos)
    value = xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (pos - lo)
    return value if len(xs) >= min_samples else max(value, fallback)


def _scratch_needs(queue: Sequence[DataSet]):
    """:attr:`DataSet.scratch_need_gb` of each data set as an array (nan: unknown), without a property
    call per data set (a re-plan of 100,000 would spend 50 ms in them).

    >>> _scratch_needs([DataSet("a", size_gb=10), DataSet("b"), DataSet("c", size_gb=1, scratch_gb=7)]).tolist()
    [30.05, nan, 7.0]
    """
    import numpy as np

    try:
        size = np.fromiter(map(attrgetter("size_gb"), queue), dtype=float, count=len(queue))
    except TypeError:  # some sizes unknown (None): nan
        size = np.array([ds.size_gb for ds in queue], dtype=float)
    factor = SCRATCH_PER_GB
    if any(map(attrgetter("scratch_per_gb"), queue)):  # some learned a factor (any() runs in C: cheap when none did)
        factor = np.array(list(map(attrgetter("scratch_per_gb"), queue)), dtype=float)  # None -> nan: the default
        factor[np.isnan(factor)] = SCRATCH_PER_GB
    need = np.round(size * factor + SCRATCH_FLOOR_GB, 3)
    given = list(map(attrgetter("scratch_gb"), queue))
    if set(given) != {None}:  # some data sets say their own need (a set is built in C; the loop only then)
        for i, g in enumerate(given):
            if g is not None:
                need[i] = g
    if any(map(attrgetter("scratch_seen_gb"), queue)):  # a full scratch taught some: their retry needs more
        for i, g in enumerate(map(attrgetter("scratch_seen_gb"), queue)):
            if g:
                need[i] = round(g * SCRATCH_RETRY_MARGIN, 3) if np.isnan(need[i]) else max(
                    need[i], round(g * SCRATCH_RETRY_MARGIN, 3))
    return need


def fluid_bound(work: Mapping[tuple[int, ...], float], capacity: Sequence[float]) -> float:
    """The fluid makespan of ``work`` (eligible classes -> speed-1.0 hours) on classes of
    ``capacity`` (work per hour): the most loaded set of classes, each group only
    where it may run (Hall's condition; the LP relaxation's value). Beyond 12
    classes only the whole and each group's own classes are checked.

    >>> fluid_bound({(0,): 10.0, (0, 1): 10.0}, [1.0, 1.0])
    10.0
    """
    n = len(capacity)
    subsets = range(1, 1 << n) if n <= 12 else [sum(1 << c for c in g) for g in work] + [(1 << n) - 1]
    best = 0.0
    masks = {g: sum(1 << c for c in g) for g in work}
    for inside in subsets:
        within = sum(w for g, w in work.items() if masks[g] & ~inside == 0)
        if within:
            best = max(best, within / sum(capacity[c] for c in range(n) if inside >> c & 1))
    return best


def exceed(median, sigma, floor, limit):
    """P(value > limit | value > floor) for lognormals (arrays); 0 or 1 without a spread.

    >>> [round(float(p), 3) for p in exceed([10.0, 10.0], [0.5, 0.0], [0.0, 0.0], 20.0)]
    [0.083, 0.0]
    """
    import numpy as np
    from scipy.special import ndtr

    median, sigma, floor = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (median, sigma, floor)))
    s = np.maximum(sigma, 1e-9)
    with np.errstate(divide="ignore"):
        log_m = np.log(np.maximum(median, 1e-300))
        above_floor = np.ones(median.shape)
        at = floor > 0  # (few have a floor: the normal's tail only for them)
        above_floor[at] = 1 - ndtr((np.log(np.maximum(floor[at], 1e-300)) - log_m[at]) / s[at])
        above = np.minimum(1 - ndtr((math.log(limit) - log_m) / s), above_floor)
    p = above / np.maximum(above_floor, 1e-300)
    return np.where(sigma > 0, p, (np.maximum(median, floor) > limit).astype(float))


def risk_columns(spread: Sequence[Prediction]):
    """The columns of ``spread`` that risk is computed from, one array each: work (expected
    hours), hours median, memory median, hours sigma, memory sigma, hours tail, memory tail,
    hours floor, memory floor, placement hours, placement memory."""
    import numpy as np

    return np.array([(p.plan_h, p.median_h or p.hours, p.mem_median_gb or p.mem_gb, p.sigma, p.mem_sigma,
                      p.tail[0], p.tail[1], p.floor_h, p.mem_floor_gb, p.hours, p.mem_gb) for p in spread],
                    dtype=float).reshape(len(spread), 11).T  # one pass over 100,000 predictions, not eleven


def kill_risk(columns, classes: Sequence[NodeClass], memory_kill_cost: float = 0.5, curves=()):
    """Per class (rows) and data set (columns, from :func:`risk_columns`): the chance an
    attempt there is killed, and the speed-1.0 hours of work such a kill loses in
    expectation (a walltime kill the whole walltime, a memory kill ``memory_kill_cost``
    of the data set's hours). ``curves`` (:func:`curve_groups`): the data sets whose memory
    chances come from the fit's residual tail rather than the lognormal."""
    import numpy as np

    work, median_h, median_m, sigma_h, sigma_m, tail_h, tail_m, floor_h, floor_m = columns[:9]
    kill_p = np.zeros((len(classes), len(work)))
    kill_cost = np.zeros((len(classes), len(work)))
    for i, c in enumerate(classes):
        wall = c.rep.walltime_h
        p_mem = exceed(median_m, sigma_m * tail_m, floor_m, c.rep.mem_gb)
        for curve, at in curves:
            p_mem[at] = curve_exceed(curve, median_m[at], sigma_m[at], floor_m[at], c.rep.mem_gb)
        p_wall = exceed(median_h, sigma_h * tail_h, floor_h, wall * c.rep.speed) if wall is not None else 0.0
        kill_p[i] = 1 - (1 - p_mem) * (1 - p_wall)
        kill_cost[i] = (p_wall * wall * c.rep.speed if wall is not None else 0.0) + p_mem * memory_kill_cost * work
    return kill_p, kill_cost


def curve_groups(spread: Sequence[Prediction]):
    """(curve, column indexes) per memory residual curve (:attr:`Prediction.mem_curve`) that data sets
    of ``spread`` with a memory spread carry (one: the fit's; none before the fit has one)."""
    import numpy as np

    curves = list(map(attrgetter("mem_curve"), spread))
    if curves.count(()) == len(curves):  # (counted in C) no curve yet
        return []
    ids = np.fromiter(map(id, curves), dtype=np.int64, count=len(curves))
    sigma = np.fromiter(map(attrgetter("mem_sigma"), spread), dtype=float, count=len(curves))
    out = []
    for key, first in zip(*np.unique(ids, return_index=True)):
        curve = curves[first]
        if curve:
            at = np.flatnonzero((ids == key) & (sigma > 0))
            if len(at):
                out.append((curve, at))
    return out


def _one_curve(curve, sigma_m):
    """:func:`curve_groups` of predictions that share one memory ``curve`` (one :func:`~.prediction.predict_all`'s),
    their memory sigmas ``sigma_m`` (an array)."""
    import numpy as np

    at = np.flatnonzero(sigma_m > 0)
    return [(curve, at)] if curve and len(at) else []


def curve_exceed(curve, median, sigma, floor, limit):
    """P(value > limit | value > floor) on a residual curve (arrays; :func:`exceed` with the fit's
    own tail in place of the normal's).

    >>> curve = ((-1.0, 0.0, 1.0), (0.8, 0.6, 0.3))
    >>> [round(float(p), 3) for p in curve_exceed(curve, [10.0, 10.0], [1.0, 1.0], [0.0, 10.0], 10 * math.e ** 0.5)]
    [0.45, 0.75]
    """
    import numpy as np

    from .prediction import curve_above

    median, sigma, floor = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (median, sigma, floor)))
    log_m = np.log(np.maximum(median, 1e-300))
    above = curve_above(curve, (math.log(limit) - log_m) / sigma)
    above_floor = _curve_above_floor(curve, log_m, sigma, floor)
    above = np.where(floor >= limit, above_floor, np.minimum(above, above_floor))
    return above / np.maximum(above_floor, 1e-300)


def curve_quantiles(curve, median, sigma, floor, levels):
    """The ``levels`` quantiles (rows) of values above ``floor`` on a residual curve (arrays, a column
    per data set; :func:`~.prediction.quantiles_above` with the fit's own tail).

    >>> curve = ((-1.0, 0.0, 1.0), (0.8, 0.6, 0.3))
    >>> curve_quantiles(curve, [10.0], [1.0], [0.0], [0.4, 0.55]).round(3).tolist()
    [[10.0], [16.487]]
    """
    import numpy as np

    from .prediction import curve_unit

    median, sigma, floor = (np.asarray(v, dtype=float) for v in (median, sigma, floor))
    log_m = np.log(np.maximum(median, 1e-300))
    above_floor = _curve_above_floor(curve, log_m, sigma, floor)
    levels = np.asarray(levels, dtype=float)[:, None]
    return median * np.exp(sigma * curve_unit(curve, above_floor * (1 - levels)))


def _curve_above_floor(curve, log_m, sigma, floor):
    """P(value > ``floor``) on a residual curve (arrays; 1 where no floor is known), for
    :func:`curve_exceed` and :func:`curve_quantiles` to condition on."""
    import numpy as np

    from .prediction import curve_above

    with np.errstate(divide="ignore"):
        return np.where(floor > 0, curve_above(curve, (np.log(np.maximum(floor, 1e-300)) - log_m) / sigma), 1.0)


def _static_masks(queue: Sequence[DataSet], classes: Sequence[NodeClass], none_pinned: bool | None = None):
    """Per data set (an array), the bitmask of the classes its pins (node, recipe, CASA version,
    walltime) allow, whatever its predictions; all ones for the data sets that pin nothing (the
    common case: one pass in C, :func:`why_not` only for the pinned ones). ``none_pinned``:
    :func:`_none_pinned` of ``queue``, when the caller has it."""
    import numpy as np

    every = (1 << len(classes)) - 1
    out = np.full(len(queue), every, dtype=np.int64)
    if not (_none_pinned(queue) if none_pinned is None else none_pinned):
        pins = list(map(_PINS, queue))
        anything = Prediction(0.0, 0.0)
        for i, (ds, pin) in enumerate(zip(queue, pins)):
            if pin != (None, None, None, None):
                out[i] = sum(1 << k for k, c in enumerate(classes) if why_not(ds, anything, c.rep) is None)
    return out


def _quantile_levels(quantiles: Sequence[tuple[float, float]], margin: float, *sides):
    """Per side (hours, memory: each ``(median, tail sigma, floor, sigma, base)`` arrays), the placement
    values at each level ``quantiles`` names for it: :func:`~.prediction.quantiles_above` where there
    is a spread, the base value elsewhere; each level computed once, all of a side's in one call."""
    import numpy as np
    from scipy.special import ndtri

    from .prediction import quantiles_above

    out = []
    for side, (median, tail_sigma, floor, sigma, base) in enumerate(sides):
        qs = sorted({pair[side] for pair in quantiles})
        if not qs:
            out.append({})
            continue
        levels = np.array(qs)[:, None]
        # without a floor (most data sets) quantiles_above is median x exp(sigma z_q): z_q once per level,
        # not once per data set and level (the same numbers); the floored ones through quantiles_above
        values = np.where(tail_sigma > 0, median * np.exp(tail_sigma * ndtri(np.clip(levels, 1e-12, 1 - 1e-12))),
                          np.where(floor > median, np.maximum(median, floor * margin), median))
        floored = np.flatnonzero(floor > 0)
        if len(floored):
            values[:, floored] = quantiles_above(median[floored], tail_sigma[floored], floor[floored], levels, margin)
        out.append({q: np.where(sigma > 0, row, base) for q, row in zip(qs, values)})
    return out


def _kill_shares(mask, kill_p, kill_cost, capacity: Sequence[float]):
    """Per data set allowed on the classes of its ``mask`` (arrays; ``kill_p``/``kill_cost`` from
    :func:`kill_risk`, a row per class), its runs spread over them by ``capacity``: the expected work
    lost to kills, the share of runs killed, and the classes a killed run goes again (those whose
    kill chance is at most a tenth of the worst allowed one; all of ``mask`` when none is).

    >>> import numpy as np
    >>> lost, killed, safe = _kill_shares(np.array([3, 1]), np.array([[0.0, 0.0], [0.5, 0.5]]),
    ...                                   np.array([[0.0, 0.0], [4.0, 4.0]]), [1.0, 3.0])
    >>> lost.tolist(), killed.tolist(), safe.tolist()
    ([3.0, 0.0], [0.375, 0.0], [1, 1])
    """
    import numpy as np

    inside = np.array([(mask >> i) & 1 for i in range(len(capacity))], dtype=bool)
    share = np.where(inside, np.array(capacity)[:, None], 0.0)
    total = np.maximum(share.sum(axis=0), 1e-12)
    lost = (share * kill_cost).sum(axis=0) / total  # (array methods: numpy's function wrappers cost more)
    killed = (share * kill_p).sum(axis=0) / total
    worst = np.where(inside, kill_p, 0.0).max(axis=0)
    safe = mask.copy()
    for i in range(len(capacity)):
        safe &= ~((inside[i] & (kill_p[i] > 0.1 * worst)).astype(np.int64) << i)
    return lost, killed, np.where(safe > 0, safe, mask)


def _levels_named(quantiles: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """The distinct hours and memory quantiles of ``quantiles``, each side sorted (as :func:`_quantile_levels`)."""
    return sorted({q for q, _ in quantiles}), sorted({q for _, q in quantiles})


def _derive(spread: Sequence[Prediction], classes: Sequence[NodeClass], quantiles: Sequence[tuple[float, float]],
            margin: float, memory_kill_cost: float) -> dict:
    """What :func:`settle` computes from each data set's prediction alone (arrays, the last axis one
    data set each): its :func:`risk_columns`, :func:`kill_risk` per class, its placement values at
    each quantile level (``levels_h``/``levels_m``, a row per level of :func:`_levels_named`), and the
    medians (above its floor) a data set that fits nowhere is tried with (``half_h``/``half_m``)."""
    import numpy as np

    from .prediction import quantiles_above

    made = made_columns(spread)  # a refit's predictions: their columns as predict_all made them
    columns = risk_columns(spread) if made is None else made[0]
    work, median_h, median_m, sigma_h, sigma_m, tail_h, tail_m, floor_h, floor_m, base_h, base_m = columns
    curves = curve_groups(spread) if made is None else _one_curve(made[1], sigma_m)
    kill_p, kill_cost = kill_risk(columns, classes, memory_kill_cost, curves)
    levels = _quantile_levels(quantiles, margin, (median_h, sigma_h * tail_h, floor_h, sigma_h, base_h),
                              (median_m, sigma_m * tail_m, floor_m, sigma_m, base_m))
    rows = [np.array([side[q] for q in qs]).reshape(len(qs), len(spread))
            for side, qs in zip(levels, _levels_named(quantiles))]
    if rows[1].size:
        for curve, at in curves:  # memory quantiles off the fit's own tail
            rows[1][:, at] = curve_quantiles(curve, median_m[at], sigma_m[at], floor_m[at], _levels_named(quantiles)[1])
    return dict(columns=columns, kill_p=kill_p, kill_cost=kill_cost, levels_h=rows[0], levels_m=rows[1],
                half_h=np.where(sigma_h > 0, np.maximum(quantiles_above(median_h, sigma_h, floor_h, 0.5, margin), work),
                                base_h),
                half_m=np.where(sigma_m > 0, quantiles_above(median_m, sigma_m, floor_m, 0.5, margin), base_m))


_KEPT: list = [None]
"""What the last :func:`settle` derived per data set: (key, uid -> row, the predictions, arrays)."""
_PLACED: list = [({}, [], [], (), ())]
"""The predictions the last :func:`settle` moved: (uid -> position, the predictions, them at their
placement values, those values as arrays: hours, memory); the next re-plan reuses those whose prediction and values are the same (the
objects are immutable)."""


_TRIED: list = [{}]
"""uid -> (prediction, margin, it at its medians) of the data sets the last plan tried at their medians
(``placement._medians_tried``): a replay's next re-plan tries most of them again with the same predictions."""


def forget_settled() -> None:
    """Drop what :func:`settle` (and the last plan's data sets tried at their medians) kept from its last
    call (a benchmark measures a cold re-plan)."""
    _KEPT[0] = None
    _PLACED[0] = ({}, [], [], (), ())
    _TRIED[0] = {}


def _per_dataset(uids: Sequence[str], spread: Sequence[Prediction], classes: Sequence[NodeClass],
                 quantiles: Sequence[tuple[float, float]], margin: float, memory_kill_cost: float) -> tuple[dict, bool]:
    """(:func:`_derive` for ``spread``, the predictions of ``uids``; whether the last call's rows were
    reused). A row is reused where its prediction is the same object as the last call's (under the
    same key: class limits, quantiles, margin, kill cost): a replay re-plans a queue that lost its
    launched data sets and gained a few retried ones, an engine re-plans after a drain or an
    import with the predictions it had. Each row depends on its own prediction only, so reused
    rows are the numbers a full pass makes. After a refit (a sample of the predictions is new)
    everything is derived afresh."""
    import numpy as np

    key = (tuple((c.rep.mem_gb, c.rep.walltime_h, c.rep.speed) for c in classes),
           tuple(map(tuple, quantiles)), margin, memory_kill_cost)
    kept = _KEPT[0]
    reuse = kept is not None and kept[0] == key and _same_share(kept[1], kept[2], uids, spread) >= 0.5
    if not reuse:
        out = _derive(spread, classes, quantiles, margin, memory_kill_cost)
    else:
        index, before, arrays = kept[1], kept[2], kept[3]
        take = _kept_rows(index, before, uids, spread)
        missing = np.flatnonzero(take < 0)
        if len(missing):  # rows of the new predictions after the kept ones
            fresh = _derive(list(map(spread.__getitem__, missing.tolist())), classes, quantiles, margin,
                            memory_kill_cost)
            take[missing] = len(before) + np.arange(len(missing))
            arrays = {k: np.concatenate((v, fresh[k]), axis=-1) for k, v in arrays.items()}
        out = {k: np.take(v, take, axis=-1) for k, v in arrays.items()}  # row by row in memory, as made
    _KEPT[0] = (key, dict(zip(uids, range(len(uids)))), list(spread), out)
    return out, reuse


def _kept_rows(index: Mapping[str, int], before: Sequence, uids: Sequence[str], current: Sequence):
    """Per uid (an array), its position ``index`` gave last time where ``before`` there is the
    very object ``current`` holds now, else -1 (maps in C: a re-plan checks thousands).

    >>> a, b = object(), object()
    >>> _kept_rows({"x": 0, "y": 1}, [a, b], ["y", "x", "z"], [b, object(), a]).tolist()
    [1, -1, -1]
    """
    import numpy as np

    at = list(map(index.get, uids, repeat(len(before))))  # a uid not kept: one past the end (None there)
    same = np.fromiter(map(is_, map([*before, None].__getitem__, at), current), dtype=bool, count=len(at))
    return np.where(same, np.array(at, dtype=np.intp).reshape(len(at)), -1)


def _same_share(index: Mapping[str, int], before: Sequence[Prediction], uids: Sequence[str],
                spread: Sequence[Prediction], sample: int = 64) -> float:
    """The share of (up to ``sample``, evenly spread) data sets whose prediction is the object it was."""
    if not uids:
        return 0.0
    picks = range(0, len(uids), max(1, len(uids) // sample))
    same = sum(1 for i in picks if (j := index.get(uids[i])) is not None and before[j] is spread[i])
    return same / len(picks)


def settle_risk(queue: Sequence[DataSet], preds: Mapping[str, Prediction], classes: Sequence[NodeClass],
                quantiles: Sequence[tuple[float, float]], tolerance: float, margin: float,
                memory_kill_cost: float = 0.5, ratios: Sequence[float] = (),
                ) -> tuple[dict[str, Prediction], tuple[float, float] | None]:
    """Predictions whose placement quantiles are as safe as capacity allows, and those
    (hours, memory) quantiles: :func:`settle` without its arrays."""
    return settle(queue, preds, classes, quantiles, tolerance, margin, memory_kill_cost, ratios)[:2]


def settle(queue: Sequence[DataSet], preds: Mapping[str, Prediction], classes: Sequence[NodeClass],
           quantiles: Sequence[tuple[float, float]], tolerance: float, margin: float,
           memory_kill_cost: float = 0.5, ratios: Sequence[float] = (), lean: bool = False):
    """(predictions, quantiles, arrays) of :func:`settle_risk`; the arrays are the settled
    (hours, memory) placement values of every data set of ``queue`` in its order and the hours
    its plan counts on (:attr:`Prediction.plan_h`), then the data sets' :func:`scratch_masks` where
    none is pinned (else None); or None where ``queue`` lacks a prediction or nothing moved:
    :func:`eligibility` takes them as they are.

    ``lean`` (a plan's): a prediction is moved to its settled values only where they change the
    classes it may run on (or it may run on none: its reason names them; or it has no expected
    hours, so that a plan counts its placement hours); elsewhere it keeps
    its own, which every class judges alike (:func:`why_not` checks a node's class limits), so
    the plan is the same, without making a prediction per data set (100,000 at a re-plan).

    High quantiles keep long uncertain data sets off walltime-limited nodes
    and big uncertain ones off small nodes; but when that leaves the roomy
    nodes with more than their share, lower quantiles (``quantiles``, tried
    in turn) may finish sooner even though some attempts get killed. Each
    choice is judged by its fluid bound *with the kills it risks*: a data set
    allowed on a class with a walltime W adds P(hours > W x speed) x W x
    speed of lost work, one allowed where its memory may not fit adds
    P(memory > the node's) x ``memory_kill_cost`` x its hours (a memory kill
    comes part-way), spread over its classes by capacity; the killed share
    runs again where it is safe.

    Beside the quantiles, ``ratios`` are tried: a data set may run on a class
    where a kill's expected loss (in hours of that slot, until an attempt
    there succeeds) is at most that fraction of its work, and where none is
    that cheap, only where the loss is least (an expected-cost comparison: an
    uncertain giant goes to the unlimited small-memory workstations rather
    than the 240 h node when running out of memory there is the smaller
    risk; a class where it is sure to be killed is never the cheapest). A
    threshold on the loss per unit of work, not on the kill chance, keeps
    the long predictable data sets on walltime-limited nodes and sends the
    uncertain ones elsewhere: the same kill chance costs a short data set
    more of its work.

    Of the choices within ``tolerance`` of the best bound, the one that
    loses least to kills in expectation wins (a kill also costs an
    operator's look and a retry's queueing; wasted CPU-hours are a figure
    of their own). None: ``preds`` unchanged.
    """
    import numpy as np

    uids = list(map(attrgetter("uid"), queue))
    whole = preds.keys() >= set(uids)  # (set operations run in C: the filter only when some lack a prediction)
    if not whole:
        queue = [ds for ds in queue if ds.uid in preds]
        uids = list(map(attrgetter("uid"), queue))
    spread = list(map(preds.__getitem__, uids))
    if not any(p.sigma > 0 or p.mem_sigma > 0 for p in spread):
        return dict(preds), None, None
    capacity = [c.capacity for c in classes]
    free = _none_pinned(queue)
    scratch = scratch_masks(queue, classes)
    static = _static_masks(queue, classes, free) & scratch
    unpinned = scratch if free else None  # (for eligibility: nothing pinned)
    derived, reused = _per_dataset(uids, spread, classes, quantiles, margin, memory_kill_cost)
    work, median_h, median_m, sigma_h, sigma_m, tail_h, tail_m, floor_h, floor_m, base_h, base_m = derived["columns"]
    kill_p, kill_cost = derived["kill_p"], derived["kill_cost"]
    limits = [c.rep.walltime_h * c.rep.speed for c in classes if c.rep.walltime_h is not None]
    levels = [dict(zip(qs, rows)) for qs, rows in zip(_levels_named(quantiles), (derived["levels_h"], derived["levels_m"]))]

    def placement_values(q_hours: float | None, q_mem: float | None, ratio: float | None = None):
        if ratio is not None:
            return ratio_values(ratio)
        if q_hours is None:
            return base_h, base_m
        return levels[0][q_hours], levels[1][q_mem]

    # what fits nowhere is tried where its medians fit (as placement._eligible_or_worth_a_try does)
    fallback = static & _fit_masks(derived["half_h"], derived["half_m"], classes)

    speeds = np.array([c.rep.speed for c in classes])[:, None]
    with np.errstate(divide="ignore"):  # the loss to kills until an attempt there succeeds (a sure kill: inf)
        lost_wall = np.where(kill_p < 1 - 1e-6, kill_cost / speeds / np.maximum(1 - kill_p, 1e-6), np.inf)
    allowed = np.array([(static >> i) & 1 for i in range(len(classes))], dtype=bool)
    cheapest = np.min(np.where(allowed, lost_wall, np.inf), axis=0)
    least = allowed & np.isfinite(lost_wall) & (lost_wall <= cheapest * 1.01 + 1e-9)  # where it loses least
    mems = np.array([c.rep.mem_gb for c in classes])[:, None]
    walls = np.array([math.inf if c.rep.walltime_h is None else c.rep.walltime_h * c.rep.speed
                      for c in classes])[:, None]
    beyond = max(limits, default=0.0) * 1.001 + 1.0

    def ratio_values(ratio: float):
        """Placement values that allow a data set on the classes where a kill's expected
        loss is at most ``ratio`` of its work, or else on those where it is least (an
        expected-cost comparison between classes, walltime and memory alike)."""
        mask = allowed & (lost_wall <= ratio * work)
        mask = np.where(mask.any(axis=0), mask, least)
        mem = np.where(mask, mems, np.inf).min(axis=0)
        hours = np.where(mask & limited, walls_below, np.inf).min(axis=0)
        hours = np.where(np.isfinite(hours), hours, unlimited_h)
        hours = np.where(spread_h, hours, base_h)
        mem = np.where(np.isfinite(mem) & spread_m, mem, base_m)
        return hours, mem

    # (what ratio_values reads that no ratio changes)
    limited, walls_below, unlimited_h = np.isfinite(walls), walls - 1e-3, np.maximum(base_h, beyond)
    spread_h, spread_m = sigma_h > 0, sigma_m > 0

    last: list = []  # the mask bound() saw last, its lost, killed and safe, and what it returned
    halves: tuple[dict, dict] = ({}, {})  # id -> (hours / memory array, its masks): choices share quantile rows

    def half(side: int, values, masks_of):
        hit = halves[side].get(id(values))
        if hit is None or hit[0] is not values:
            hit = halves[side][id(values)] = (values, masks_of(values, classes))
        return hit[1]

    def bound(hours, mem) -> tuple[float, float]:
        """The fluid bound of the work, each data set's kills counted: the share of its
        runs that a kill ends is lost, and runs again only where it is safe."""
        mask = static & half(0, hours, _hours_masks) & half(1, mem, _mem_masks)
        mask = np.where(mask == 0, fallback, mask)
        at = (mask != last[0]).nonzero()[0] if last else None
        if at is not None and not len(at):  # every data set allowed the classes it was last time: the same sums
            return last[4]
        if at is None or len(at) > len(mask) // 4:
            lost, killed, safe = _kill_shares(mask, kill_p, kill_cost, capacity)
        else:  # consecutive choices allow most data sets the same classes: only the moved ones' shares are new
            lost, killed, safe = (v.copy() for v in last[1:4])
            lost[at], killed[at], safe[at] = _kill_shares(mask[at], kill_p[:, at], kill_cost[:, at], capacity)
        sums = (np.bincount(mask, weights=(1 - killed) * work + lost, minlength=1 << len(classes))
                + np.bincount(safe, weights=killed * work, minlength=1 << len(classes)))
        totals = {tuple(i for i in range(len(classes)) if m >> i & 1): float(sums[m])
                  for m in sums.nonzero()[0] if m}
        last[:] = mask, lost, killed, safe, (fluid_bound(totals, capacity), float(lost.sum()))
        return last[4]

    choices = [(qh, qm, None) for qh, qm in [(None, None)] + list(quantiles)]
    choices += [(None, None, r) for r in ratios]
    judged = [bound(*placement_values(*c)) for c in choices]
    best = min(b for b, _ in judged)
    pick = min((k for k, (b, _) in enumerate(judged) if b <= best * (1 + tolerance)), key=lambda k: judged[k][1])
    if choices[pick] == (None, None, None):
        return dict(preds), None, (base_h, base_m, work, unpinned) if whole else None
    q_hours, q_mem, ratio = choices[pick]
    hours, mem = placement_values(q_hours, q_mem, ratio)
    if ratio is not None:
        q_hours, q_mem = min(0.999, max(0.5, 1 - ratio)), min(0.999, max(0.5, 1 - ratio / memory_kill_cost))
    hours, mem = hours.round(4), mem.round(4)
    out = dict(preds)
    differs = (hours != base_h) | (mem != base_m)
    if lean:  # its own values where every class judges them as the settled ones
        settled = _fit_masks(hours, mem, classes)
        own = (settled == half(0, base_h, _hours_masks) & half(1, base_m, _mem_masks)) & (settled != 0)
        means = list(map(attrgetter("mean_h"), spread))
        if means.count(None):  # (counted in C) a plan counts these at their placement hours: they move
            own &= np.array([m is not None for m in means], dtype=bool)
        differs &= ~own
    moved = np.flatnonzero(differs).tolist()
    moved_uids = list(map(uids.__getitem__, moved))
    bases = list(map(spread.__getitem__, moved))
    moved_h, moved_m = hours[moved], mem[moved]
    if reused:  # the last plan's placed prediction, where made from the same one at the same values
        index, before, made, made_h, made_m = _PLACED[0]
        at = _kept_rows(index, before, moved_uids, bases)
        same = (at >= 0) & (np.append(made_h, np.nan)[at] == moved_h) & (np.append(made_m, np.nan)[at] == moved_m)
        placed = list(map([*made, None].__getitem__, at.tolist()))
        for i in np.flatnonzero(~same).tolist():
            placed[i] = bases[i].placed_at(float(moved_h[i]), float(moved_m[i]))
    else:
        placed = placed_all(bases, moved_h.tolist(), moved_m.tolist())
    out.update(zip(moved_uids, placed))
    if None in map(_MEAN_H, bases):  # (searched in C) their plan counts the placement hours (plan_h): the column follows
        work = work.copy()
        work[moved] = [p.plan_h for p in placed]
    _PLACED[0] = (dict(zip(moved_uids, range(len(moved)))), bases, placed, moved_h, moved_m)
    return out, (q_hours, q_mem), (hours, mem, work, unpinned) if whole else None

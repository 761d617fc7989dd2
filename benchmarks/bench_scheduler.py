"""Scheduler benchmark: study-shaped workloads on a study-shaped cluster.

Prints, for several seeds and every policy, the makespan, the lower bound
(max of the LP relaxation over node classes and the longest data set), the gap,
avoidable failures and the seconds the simulation took.

Targets (issue 6): the default policy within 3% of the lower bound on 6000
data sets with 0 avoidable failures; 6000 data sets x 31 nodes simulated in
under 2 s. Run: ``.venv/bin/python -m benchmarks.bench_scheduler [seeds...]``.

Hidden truth (issue 22; ``--hidden``): workloads from :mod:`benchmarks.hidden`
(generators with different hidden models) whose runtimes and memory
the scheduler never sees; the replay learns them. Printed per generator and
seed, every policy on the same replay: makespan against the clairvoyant LP
lower bound (target <= 1.10x), CPU-hours wasted on killed attempts (target
<= 3%), kills, data sets completed / given up, the forecast made at 10% of
the work (the actual finish inside P10-P90 and within 10% of P50), and the
CPU seconds of the replay (target < 3 s). Under each ``lpt`` row, the
waste by node class, attempt number and cause (``mup#1 walltime 62
(3.6%)``: first attempts killed by the walltime on the ``mup`` nodes) and
the share wasted in the last fifth of the makespan, so the cause is visible.
Run: ``.venv/bin/python -m benchmarks.bench_scheduler --hidden [seeds...] [models...]``.
Every mode that takes model names also takes the held-out generators of
:mod:`benchmarks.holdout` (``products``, ``mitigated``, ``concat``, ``archive``, ``widecubes``,
``pereb``: never tuned on, run only when named).

The frontier (``--frontier``): what a policy that knows each data set's
predictive distribution from the start (a fit of *every* truth of the
workload: the best this predictor's form can know from the metadata; never
the truth itself) achieves when it allows a data set on a node only if
P(killed there) < p, for p in :data:`FRONTIER_P` (placement quantile 1 - p
against walltime and memory; a kill teaches its floor, the retry goes where
that fits). Per generator and seed, the waste and makespan / bound of each
p, and the best makespan at waste <= 3 %: if no p meets both targets on a
model, the figures show it, and the makespan that model's bound would need.
Run: ``.venv/bin/python -m benchmarks.bench_scheduler --frontier [seeds...] [models...]``.

The LP check (``--lp``): a threshold is one policy; the least waste *any*
placement that knows each data set's distribution can reach at a given
makespan is the value of a linear programme (:func:`least_waste`): each data
set split over the node classes, each class's expected occupation (its
attempts' hours up to the walltime, the killed share's lost hours, the
killed share run again where it is safest) within slots x speed x T, the
expected hours lost to kills minimised. The distribution is the fit of every
truth with the *empirical* residuals of that fit (so a heavy or skewed tail is
kept, not a lognormal's). A relaxation (fluid, retries never killed again,
no single-job limit): what it cannot reach, no schedule with that knowledge
can, *if* the fit's distribution is right. So each split is also run on the
truth (fluid: its true waste, and its true load on the busiest class over
the bound): where the fit is biased (a group it underpredicts), the
"possible" split overloads a class in truth. Printed per generator and seed:
the least expected waste at makespan 1.00-3.00 x the clairvoyant bound, the
least ratio at which 3 % waste is expected, and each split's true
waste / ratio.
Run: ``.venv/bin/python -m benchmarks.bench_scheduler --lp [seeds...] [models...]``.

Forecast calibration (``--calibrate``): the default policy only, on many seeds
per generator; for the forecasts made at 10, 25 and 50 % of the work, how
often the actual finish fell inside P10-P90 (an honest band: ~80 %), the
band's median width (P90 - P10, % of P50) and the distribution of
|actual / P50 - 1| (median, 90th percentile, worst; the target: within 10 %
every time). Then, per generator, the 10 % forecast's errors split by cause
(hours of finish, % of P50, median over the runs): (a) the mean model's bias
on the work still to do (true hours left minus the forecast's mean drawn
hours, over the speed-weighted slots), (b) kills the forecast did not expect
(slot-hours the replay lost to kills after the forecast minus the forecast's
mean lost slot-hours, over the slots), and each miss (finish outside P10-P90)
put down to (a) or (b) when taking that part off the actual finish brings it
inside the band, to both when only both do, else to (c) a spread too narrow
(or a schedule unlike the forecast's). Last, per generator, where the actual
finish fell in each 10 % forecast (below P10, P10-P50, P50-P90, above P90;
an honest band misses on both sides) and actual / P50 - 1 per seed.
Run: ``.venv/bin/python -m benchmarks.bench_scheduler --calibrate [seeds...] [models...]``
(default: seeds 1-8, every generator).

The young fit (``--young``): the default policy only; per generator and seed,
the kills the predictions expected in the first 10 % of the makespan (the sum
of each attempt's kill chance on its node when placed, from its predicted
distribution above what it is known to need) against the kills that came,
their ratio (an honest young fit: ~1), the waste, the makespan ratio, the
forecast's P50 error at 10 % and 25 % of the work, and the expected hours of
the queue (what plans add up) over its true hours when a quarter and half of
the data sets have started. Run:
``.venv/bin/python -m benchmarks.bench_scheduler --young [seeds...] [models...]``
(default: seeds 1-2, every generator).

The live estimate at scale (``--forecast``): what ``ari estimate campaign`` and the
dashboard's ETA compute (:func:`ari_console.estimate.estimate_campaign`: the fit, the
predictions, the lower bound, the P10/P50/P90 forecast, and the replay or, past
``REPLAY_JOBS``, its summary) on 10,000 and 100,000 queued data sets of a hidden-truth
generator with 2,000 finished attempts, on the study's 31 nodes: CPU seconds (targets:
< 0.5 s at 10,000, < 5 s at 100,000) and wall seconds (they grow with the machine's load),
the forecast's part, and the batched forecast's P10/P50/P90 against the exact list
schedule's on the same draws at 10,000.
Run: ``.venv/bin/python -m benchmarks.bench_scheduler --forecast [sizes...] [models...]``
(default: 10000 100000 loglinear).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

from ari_console import scheduler as sch
from ari_console.estimate import lower_bound, simulate, truth_predictions

from . import hidden as hidden_models
from . import holdout as holdout_models

GENERATORS = {**{name: hidden_models.workload for name in hidden_models.MODELS},
              **{name: holdout_models.workload for name in holdout_models.MODELS}}
"""Every hidden-truth generator a mode accepts by name: the twelve tuned on (:mod:`.hidden`, the
default list) and the held-out ones (:mod:`.holdout`, run only when named; never tuned on)."""


def workload(model: str, n: int, seed: int):
    """(data sets, uid -> truth) of generator ``model`` (see :data:`GENERATORS`)."""
    return GENERATORS[model](model, n, seed)

TARGET_GAP = 0.03
TARGET_SECONDS = 2.0
TUNING_SEEDS = (1,)
"""The seed the policy was tuned on; the others are the check."""
TARGET_RATIO = 1.10
TARGET_WASTE = 0.03
TARGET_P50_OFF = 0.10
TARGET_REPLAY_S = 3.0


def study_workload(n: int = 6000, seed: int = 1) -> list[sch.DataSet]:
    """``n`` data sets shaped like the study's: lognormal hours (median ~6 h, long
    tail), memory mostly 4-24 GB with a tail to hundreds of GB, a few that fit
    nowhere (over 512 GB), sizes loosely tied to hours.

    >>> len(study_workload(10, seed=3))
    10
    """
    rng = np.random.default_rng(seed)
    hours = np.exp(rng.normal(np.log(6.0), 0.9, n))
    size = np.clip(hours * np.exp(rng.normal(np.log(6.0), 0.5, n)), 0.5, 3000)
    mem = np.exp(rng.normal(np.log(10.0), 0.55, n))
    tail = rng.random(n) < 0.12  # big cubes / mosaics
    mem[tail] = np.exp(rng.uniform(np.log(24), np.log(480), tail.sum()))
    nowhere = rng.random(n) < 0.003
    mem[nowhere] = rng.uniform(600, 1500, nowhere.sum())
    mem = np.clip(mem, 2.0, None)
    return [sch.DataSet(f"uid://A001/X{seed:x}/X{i:x}", size_gb=round(float(s), 2),
                        hours=round(float(h), 3), mem_gb=round(float(m), 1))
            for i, (s, h, m) in enumerate(zip(size, hours, mem))]


def study_cluster() -> list[sch.NodeState]:
    """31 nodes: 16 old 24 GB workstations (no walltime, speed 0.6), 12 two-slot
    64 GB nodes (48 h walltime), 3 four-slot 512 GB HPC nodes (240 h, speed 1.2)."""
    ws = [sch.NodeState(f"ws{i:02d}", 1, 24.0, None, 0.6, node_class="ws") for i in range(1, 17)]
    mid = [sch.NodeState(f"mup{i:02d}", 2, 64.0, 48.0, 1.0, node_class="mup") for i in range(1, 13)]
    hpc = [sch.NodeState(f"hpc{i:02d}", 4, 512.0, 240.0, 1.2, node_class="hpc") for i in range(1, 4)]
    return ws + mid + hpc


def run(seed: int, n: int = 6000, policies: tuple[str, ...] = sch.POLICIES) -> list[dict]:
    """One row per policy for workload ``seed``."""
    work = study_workload(n, seed)
    nodes = study_cluster()
    bound = lower_bound(work, nodes)
    rows = []
    for policy in policies:
        t0 = time.perf_counter()
        sim = simulate(work, nodes, policy)
        took = time.perf_counter() - t0
        rows.append(dict(seed=seed, policy=policy, makespan_h=sim.makespan_h, bound_h=bound.hours,
                         lp_h=bound.lp_h, longest_h=bound.longest_h,
                         gap=sim.makespan_h / bound.hours - 1, failures=sim.failures_avoidable,
                         unplaceable=len(sim.unplaceable), gave_up=len(sim.gave_up),
                         seconds=took, variant=sim.plan_variant))
    return rows


def hidden(seeds: list[int], models: list[str], n: int = 6000, policies: tuple[str, ...] = sch.POLICIES) -> None:
    """Print the hidden-truth figures (see the module docstring)."""
    nodes = study_cluster()
    print(f"{'model':>9} {'seed':>4} {'policy':>6} {'makespan':>8} {'bound':>7} {'ratio':>6} {'waste':>6} "
          f"{'kills m/w':>9} {'done':>5} {'gave':>4} {'at10%: P10':>10} {'P50':>6} {'P90':>6} {'in':>3} "
          f"{'off':>6} {'cpu s':>5}")
    misses = []
    for model in models:
        for seed in seeds:
            work, truth = workload(model, n, seed)
            bound = lower_bound(work, nodes, predictions=truth_predictions(work, truth)).hours
            for policy in policies:
                t0 = time.process_time()
                sim = simulate(work, nodes, policy, actual=truth, forecast_at=(0.1,))
                took = time.process_time() - t0
                ratio = sim.makespan_h / bound
                waste = sim.wasted_cpu_hours / sim.cpu_hours if sim.cpu_hours else 0.0
                f = sim.forecasts[0] if sim.forecasts else None
                inside = f is not None and f.p10_h <= sim.makespan_h <= f.p90_h
                off = sim.makespan_h / f.p50_h - 1 if f else float("nan")
                k = sim.kills
                print(f"{model:>9} {seed:>4} {policy:>6} {sim.makespan_h:>8.0f} {bound:>7.0f} {ratio:>6.3f} "
                      f"{waste:>6.1%} {k['memory']:>4}/{k['walltime']:<4} {sim.completed:>5} {len(sim.gave_up):>4} "
                      f"{(f.p10_h if f else 0):>10.0f} {(f.p50_h if f else 0):>6.0f} {(f.p90_h if f else 0):>6.0f} "
                      f"{'yes' if inside else 'no':>3} {off:>+6.1%} {took:>5.2f}")
                if policy == sch.DEFAULT_POLICY:
                    print(f"{'':>9} {'':>4} {'':>6} waste by node class, attempt and cause: {waste_breakdown(sim)}")
                    for what, bad in (("makespan", ratio > TARGET_RATIO), ("waste", waste > TARGET_WASTE),
                                      ("forecast band", not inside), ("forecast P50", abs(off) > TARGET_P50_OFF),
                                      ("time", took > TARGET_REPLAY_S)):
                        if bad:
                            misses.append(f"{model}/{seed} {what}")
    print(f"targets ({sch.DEFAULT_POLICY}): makespan <= {TARGET_RATIO:.2f} x bound, waste <= {TARGET_WASTE:.0%}, "
          f"finish inside P10-P90 and within {TARGET_P50_OFF:.0%} of P50 at 10% done, replay < {TARGET_REPLAY_S:g} s "
          f"CPU; missed: {', '.join(misses) or 'none'}")


def waste_breakdown(sim) -> str:
    """The killed attempts of a replay grouped by node class, attempt number and cause:
    ``mup#1 walltime 62 (3.6%)`` = 62 first attempts killed by the walltime on the
    ``mup`` nodes, wasting 3.6 % of all CPU-hours; then the share wasted in the
    last fifth of the makespan (kills that come late make stragglers)."""
    total = sim.cpu_hours or 1.0
    late = sum(k.cpu_hours for k in sim.killed if k.at_h > 0.8 * sim.makespan_h) / total
    parts = [f"{c}#{a} {o} {n} ({h / total:.1%})" for (c, a, o), (n, h) in sim.waste_by.items()]
    return (", ".join(parts) or "none") + f"; in the last fifth {late:.1%}"


FRONTIER_P = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.2)
"""Kill chances a frontier policy accepts on a node (walltime and memory alike)."""


def frontier(seeds: list[int], models: list[str], n: int = 6000) -> None:
    """Print the waste / makespan frontier of the knowing policy (see the module docstring)."""
    from dataclasses import replace

    from ari_console.estimate import attempt

    nodes = study_cluster()
    print(f"{'model':>9} {'seed':>4} " + " ".join(f"{f'p={p:g}':>13}" for p in FRONTIER_P)
          + f" {'best ratio at waste<=3%':>24}")
    print(f"{'':>9} {'':>4} " + " ".join(f"{'waste ratio':>13}" for _ in FRONTIER_P))
    for model in models:
        for seed in seeds:
            work, truth = workload(model, n, seed)
            bound = lower_bound(work, nodes, predictions=truth_predictions(work, truth)).hours
            known = sch.fit_history([attempt(ds, truth[ds.uid][0], 1.0, "ok", truth[ds.uid][1]) for ds in work])
            known = replace(known, own={})  # the distribution of each data set, not its own truth
            cells, best = [], None
            for p in FRONTIER_P:
                tuning = replace(sch.DEFAULT_TUNING, hours_quantile=1 - p, mem_quantile=1 - p)
                search = replace(sch.DEFAULT_SEARCH, relax_quantiles=(), risk_ratios=(), pilots=0)
                sim = simulate(work, nodes, "lpt", history=known, actual=truth, learn=True, refit=False,
                               tuning=tuning, search=search)
                waste = sim.wasted_cpu_hours / sim.cpu_hours
                ratio = sim.makespan_h / bound
                if waste <= TARGET_WASTE and (best is None or ratio < best[0]):
                    best = (ratio, p, waste)
                ok = "*" if waste <= TARGET_WASTE and ratio <= TARGET_RATIO else " "
                cells.append(f"{waste:>5.1%} {ratio:>5.3f}{ok}")
            tail = f"{best[0]:.3f} (p={best[1]:g}, {best[2]:.1%})" if best else "none"
            print(f"{model:>9} {seed:>4} " + " ".join(cells) + f" {tail:>24}", flush=True)
    print(f"* both targets (waste <= {TARGET_WASTE:.0%}, makespan <= {TARGET_RATIO:.2f} x bound)")


LP_RATIOS = (1.0, 1.05, 1.1, 1.15, 1.2, 1.3, 1.5, 2.0, 3.0)
"""Makespans (x the clairvoyant bound) at which :func:`least_waste` is solved."""
LP_RESIDUALS = 200
"""Quantiles of the fit's residuals each data set's distribution is drawn on."""


def knowing_fit(work, truth):
    """The fit of every truth of a workload, without the data sets' own needs: the
    distribution the predictor's form gives each data set when it has seen everything."""
    from dataclasses import replace

    from ari_console.estimate import attempt

    known = sch.fit_history([attempt(ds, truth[ds.uid][0], 1.0, "ok", truth[ds.uid][1]) for ds in work])
    return replace(known, own={})


def kill_table(work, model, classes, draws: int = LP_RESIDUALS):
    """Per class (rows) and data set (columns): the chance an attempt there is killed,
    the speed-1.0 hours it occupies the slot, the hours a kill loses, and each data
    set's expected hours; from ``model``'s predictions with its empirical residuals."""
    preds = sch.predict_all(work, model)
    q = (np.arange(draws) + 0.5) / draws

    def grid(fit, median, sigma):
        res = np.quantile(np.asarray(fit.residuals, dtype=float), q) if fit is not None and len(fit.residuals) else (
            __import__("scipy.stats").stats.norm.ppf(q))
        return median[:, None] * np.exp(sigma[:, None] * res[None, :])

    hours = grid(model.hours, np.array([preds[d.uid].median_h or preds[d.uid].hours for d in work]),
                 np.array([preds[d.uid].sigma for d in work]))
    mem = grid(model.mem, np.array([preds[d.uid].mem_median_gb or preds[d.uid].mem_gb for d in work]),
               np.array([preds[d.uid].mem_sigma for d in work]))
    mean_h = hours.mean(axis=1)
    kill_p, occupied, lost = (np.zeros((len(classes), len(work))) for _ in range(3))
    for i, c in enumerate(classes):
        wall = math.inf if c.rep.walltime_h is None else c.rep.walltime_h * c.rep.speed
        p_h = (hours > wall).mean(axis=1)
        p_m = (mem > c.rep.mem_gb).mean(axis=1)
        kill_p[i] = 1 - (1 - p_h) * (1 - p_m)
        lost[i] = (p_h * wall if math.isfinite(wall) else 0.0) + p_m * 0.5 * mean_h
        occupied[i] = np.minimum(hours, wall).mean(axis=1) * (1 - p_m) + p_m * 0.5 * mean_h
    return kill_p, occupied, lost, mean_h


def least_waste(kill_p, occupied, lost, mean_h, classes, makespan_h: float, truth=None):
    """The least share of CPU-hours lost to kills of any split of the data sets over
    ``classes`` that finishes within ``makespan_h`` (fluid; see the module docstring);
    None if no split does. With ``truth`` ((hours, memory) arrays), also that split
    run on the truth: (expected waste, (true waste, true fluid makespan))."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    k, n = kill_p.shape
    speed = np.array([c.rep.speed for c in classes])
    cap = np.array([c.capacity for c in classes])
    ok = kill_p < 0.99
    ok[np.argmin(np.where(ok, kill_p, 2.0), axis=0), np.arange(n)] |= ~ok.any(axis=0)
    safest = np.argmin(np.where(ok, kill_p, 2.0), axis=0)  # where a killed attempt runs again
    cls, job = np.nonzero(ok)
    m = len(cls)
    cost = lost[cls, job] / speed[cls]
    rows = [np.arange(m) * 0 + job]  # each data set split to a whole
    a_eq = coo_matrix((np.ones(m), (job, np.arange(m))), shape=(n, m))
    load = coo_matrix((occupied[cls, job], (cls, np.arange(m))), shape=(k, m)).toarray()
    retry = kill_p[cls, job] * mean_h[job]
    np.add.at(load, (safest[job], np.arange(m)), retry)
    del rows
    res = linprog(cost, A_ub=load, b_ub=cap * makespan_h, A_eq=a_eq, b_eq=np.ones(n), bounds=(0, 1),
                  method="highs")
    if res.status != 0:
        return None
    x = res.x
    cpu = np.sum(x * occupied[cls, job] / speed[cls]) + np.sum(x * retry / speed[safest[job]])
    expected = float(np.sum(x * cost) / cpu)
    if truth is None:
        return expected
    hours, mem = truth[0][job], truth[1][job]
    wall = np.array([math.inf if c.rep.walltime_h is None else c.rep.walltime_h * c.rep.speed for c in classes])[cls]
    mem_kill = mem > np.array([c.rep.mem_gb for c in classes])[cls]
    wall_kill = ~mem_kill & (hours > wall)
    lost_h = np.where(mem_kill, 0.5 * hours, np.where(wall_kill, wall, 0.0))
    used = np.where(mem_kill | wall_kill, lost_h, hours)
    load = np.bincount(cls, weights=x * used, minlength=k)
    load += np.bincount(safest[job], weights=x * np.where(mem_kill | wall_kill, hours, 0.0), minlength=k)
    wasted = np.sum(x * lost_h / speed[cls])
    total = np.sum(x * used / speed[cls]) + np.sum(x * np.where(mem_kill | wall_kill, hours, 0.0) / speed[safest[job]])
    return expected, (float(wasted / total), float(np.max(load / cap)))


def lp_check(seeds: list[int], models: list[str], n: int = 6000) -> None:
    """Print the least waste reachable per makespan (see the module docstring)."""
    nodes = study_cluster()
    print(f"{'model':>9} {'seed':>4} " + " ".join(f"{f'{r:.2f}x':>7}" for r in LP_RATIOS)
          + f" {'3% needs':>9}")
    for model in models:
        for seed in seeds:
            work, truth = workload(model, n, seed)
            bound = lower_bound(work, nodes, predictions=truth_predictions(work, truth)).hours
            classes = sch.node_classes(nodes)
            table = kill_table(work, knowing_fit(work, truth), classes)
            cells, need, real = [], None, []
            arrays = (np.array([truth[d.uid][0] for d in work]), np.array([truth[d.uid][1] for d in work]))
            for r in LP_RATIOS:
                w = least_waste(*table, classes, r * bound, arrays)
                cells.append(f"{'-':>7}" if w is None else f"{w[0]:>7.1%}")
                if w is not None:
                    real.append(f"{w[1][0]:.1%}/{w[1][1] / bound:.2f}")
                    w = w[0]
                if need is None and w is not None and w <= TARGET_WASTE:
                    need = r
            lo, hi = (LP_RATIOS[LP_RATIOS.index(need) - 1] if need and need > LP_RATIOS[0] else None), need
            while lo is not None and hi - lo > 0.005:  # the least ratio at which 3 % is reachable
                mid = (lo + hi) / 2
                w = least_waste(*table, classes, mid * bound)
                lo, hi = (mid, hi) if w is None or w > TARGET_WASTE else (lo, mid)
            print(f"{model:>9} {seed:>4} " + " ".join(cells) + f" {(f'{hi:.3f}x' if need else '>3x'):>9}"
                  + "   on the truth (waste/ratio): " + " ".join(real), flush=True)
    print(f"least waste of any split knowing each data set's distribution (fluid LP), at makespan = ratio x the "
          f"clairvoyant bound; '3% needs': the least ratio at which waste <= {TARGET_WASTE:.0%} is possible")


CALIBRATE_AT = (0.1, 0.25, 0.5)


def calibrate(seeds: list[int], models: list[str], n: int = 6000) -> None:
    """Print the forecast's calibration per generator (see the module docstring), and
    the data sets' own: at the 10 % forecast, the share of the waiting data sets whose
    true hours fall inside their predicted P10-P90 (an honest spread: ~80 %), over all,
    in the smallest and biggest third by size (a spread too flat over the metadata
    covers the small ones too often and the big ones too rarely), and in the worst
    covered group of size third, band, array or mosaic (mean over the runs)."""
    import ari_console.estimate as estimate_module

    nodes = study_cluster()
    print(f"{'model':>9} {'runs':>4} {'ds in P10-P90 all':>17} {'small':>6} {'big':>6} {'worst':>6} "
          + " ".join(f"{f'at {a:.0%}: in band':>16} {'width':>6} {'|off| med':>9} {'p90':>6} {'worst':>6} {'<=10%':>5}"
                     for a in CALIBRATE_AT))
    causes: dict[str, list[dict]] = {}
    sides: dict[str, list[tuple[int, int, float]]] = {}  # per run at 10 %: seed, side of the band, actual / P50 - 1
    every: dict[float, list[tuple[bool, float, float]]] = {a: [] for a in CALIBRATE_AT}
    every_ds: list[np.ndarray] = []
    replay_forecast = estimate_module._replay_forecast
    for model in models:
        runs: dict[float, list[tuple[bool, float, float]]] = {a: [] for a in CALIBRATE_AT}
        covered: list[np.ndarray] = []  # per run: (all, small third, big third) shares inside P10-P90
        for seed in seeds:
            work, truth = workload(model, n, seed)
            seen: list = []
            first: dict = {}

            def watch(now, done, queue, running, preds, nodes_, *rest, **kw):
                if seen:
                    return replay_forecast(now, done, queue, running, preds, nodes_, *rest, **kw)
                seen.append([(ds, preds[ds.uid]) for ds in queue.values()])
                first.update(now=now, left=sum(truth[u][0] for u in queue) + sum(
                    max(0.0, truth[ds.uid][0] - (now - start) * nodes_[i].speed) for ds, start, i in running.values()))
                return replay_forecast(now, done, queue, running, preds, nodes_, *rest, **kw, detail=first)

            estimate_module._replay_forecast = watch
            try:
                sim = simulate(work, nodes, sch.DEFAULT_POLICY, actual=truth, forecast_at=CALIBRATE_AT)
            finally:
                estimate_module._replay_forecast = replay_forecast
            if seen:
                covered.append(_dataset_coverage(seen[0], truth))
            if first and sim.forecasts:
                causes.setdefault(model, []).append(_miss_causes(sim, sim.forecasts[0], first, nodes))
            for at, f in zip(CALIBRATE_AT, sim.forecasts):
                runs[at].append((f.p10_h <= sim.makespan_h <= f.p90_h, abs(sim.makespan_h / f.p50_h - 1),
                                 (f.p90_h - f.p10_h) / f.p50_h))
            if sim.forecasts:
                sides.setdefault(model, []).append((seed, _side(sim.makespan_h, sim.forecasts[0]),
                                                    sim.makespan_h / sim.forecasts[0].p50_h - 1))
        cells = []
        for at in CALIBRATE_AT:
            every[at] += runs[at]
            cells.append(_calibration_cells(runs[at]))
        every_ds += covered
        print(f"{model:>9} {len(seeds):>4} {_coverage_cells(covered)} " + " ".join(cells), flush=True)
    print(f"{'all':>9} {len(seeds) * len(models):>4} {_coverage_cells(every_ds)} "
          + " ".join(_calibration_cells(every[a]) for a in CALIBRATE_AT))
    print("an honest P10-P90 holds ~80 % of the data sets (in every size third) and the actual finish in ~80 % "
          "of runs; target: within 10 % of P50 in every run")
    print()
    print(f"{'at 10%':>9} {'runs':>4} {'(a) bias':>9} {'(b) kills':>9} {'actual-P50':>10} {'misses':>6} "
          f"{'(a)':>4} {'(b)':>4} {'a+b':>4} {'(c)':>4}")
    for model, rows in list(causes.items()) + [("all", [r for rows in causes.values() for r in rows])]:
        print(f"{model:>9} {len(rows):>4} " + _cause_cells(rows), flush=True)
    print("(a) the mean model's bias on the work left, (b) kills the forecast did not expect: hours of finish, "
          "% of P50, median of the runs; misses (outside P10-P90) by the part whose removal brings the finish "
          "inside the band; (c) neither: the spread too narrow")
    print()
    print(f"{'at 10%':>9} {'<P10':>5} {'P10-50':>6} {'P50-90':>6} {'>P90':>5} {'mean off':>8}  actual / P50 - 1 by seed")
    for model, rows in list(sides.items()) + [("all", [r for rows in sides.values() for r in rows])]:
        count = [sum(s == k for _, s, _ in rows) for k in range(4)]
        print(f"{model:>9} " + " ".join(f"{c:>{w}}" for c, w in zip(count, (5, 6, 6, 5)))
              + f" {np.mean([o for _, _, o in rows]):>+8.1%}  "
              + ("" if model == "all" else " ".join(f"{s}:{o:+.0%}" for s, _, o in rows)), flush=True)
    print("where the actual finish fell in the 10 % forecast (an honest band: ~10 % below P10, ~40 % in each half, "
          "~10 % above P90)")


def _side(actual: float, f) -> int:
    """Where ``actual`` falls in forecast ``f``: 0 below P10, 1 P10-P50, 2 P50-P90, 3 above P90.

    >>> from ari_console.estimate import Forecast
    >>> [_side(x, Forecast(1.0, 0.1, 90.0, 95.0, 100.0)) for x in (80.0, 92.0, 97.0, 120.0)]
    [0, 1, 2, 3]
    """
    return 0 if actual < f.p10_h else 1 if actual <= f.p50_h else 2 if actual <= f.p90_h else 3


def _miss_causes(sim, f, seen: dict, nodes) -> dict:
    """The 10 % forecast ``f`` of replay ``sim`` against what happened (see the module docstring):
    its error and the parts of it from (a) the model's bias and (b) unexpected kills, in hours of finish;
    ``seen``: the truth left at the forecast (``left``, speed-1.0 hours) and the forecast's draws.

    A finish 30 h past P90 with 35 h of kill losses per slot the forecast did not expect is put down to (b):

    >>> from ari_console.estimate import Forecast, Kill, SimResult
    >>> sim = SimResult("lpt", 1, 1, 130.0, 0.0, 0, {}, (), (), (), killed=(Kill("n", 1, "walltime", 70.0, 90.0),))
    >>> nodes = [sch.NodeState("n", slots=2, mem_gb=8)]
    >>> seen = dict(now=10.0, left=180.0, work=[180.0], waste=[0.0])
    >>> r = _miss_causes(sim, Forecast(10.0, 0.1, 90.0, 95.0, 100.0), seen, nodes)
    >>> r["cause"], round(r["bias"] * 95, 1), round(r["kills"] * 95, 1)
    ('b', 0.0, 35.0)
    """
    capacity = sum(n.slots * n.speed for n in nodes if not n.drained)
    slots = sum(n.slots for n in nodes if not n.drained)
    cpus = {n.klass: n.cpus_per_slot for n in nodes}
    # slot-hours of kills after the forecast (an attempt running then: the part after it)
    lost = sum(min(k.cpu_hours / cpus.get(k.node_class, 1), k.at_h - seen["now"]) for k in sim.killed
               if k.at_h > seen["now"])
    bias = (seen["left"] - float(np.mean(seen["work"]))) / capacity
    kills = (lost - float(np.mean(seen["waste"]))) / slots
    actual = sim.makespan_h

    def inside(x: float) -> bool:
        return f.p10_h <= x <= f.p90_h

    cause = ("" if inside(actual) else "a" if inside(actual - bias) else "b" if inside(actual - kills)
             else "a+b" if inside(actual - bias - kills) else "c")
    return dict(bias=bias / f.p50_h, kills=kills / f.p50_h, off=actual / f.p50_h - 1, cause=cause)


def _cause_cells(rows: list[dict]) -> str:
    if not rows:
        return ""
    med = {k: float(np.median([r[k] for r in rows])) for k in ("bias", "kills", "off")}
    count = {c: sum(r["cause"] == c for r in rows) for c in ("a", "b", "a+b", "c")}
    return (f"{med['bias']:>+9.1%} {med['kills']:>+9.1%} {med['off']:>+10.1%} {sum(count.values()):>6} "
            + " ".join(f"{count[c]:>4}" for c in ("a", "b", "a+b", "c")))


def _dataset_coverage(waiting, truth) -> np.ndarray:
    """(all, smallest third, biggest third by size): the share of ``waiting`` (data set,
    prediction) pairs whose true hours lie inside the prediction's P10-P90."""
    preds = [p for _, p in waiting if p.sigma > 0]
    if not preds:
        return np.full(4, np.nan)
    true_h = np.array([truth[ds.uid][0] for ds, p in waiting if p.sigma > 0])
    size = np.array([ds.size_gb or 0.0 for ds, p in waiting if p.sigma > 0])
    median, sigma, floor = (np.array([getattr(p, k) for p in preds]) for k in ("median_h", "sigma", "floor_h"))
    low = sch.quantiles_above(median, sigma, floor, 0.1)
    high = sch.quantiles_above(median, sigma, floor, 0.9)
    inside = (low <= true_h) & (true_h <= high)
    small, big = size <= np.quantile(size, 1 / 3), size >= np.quantile(size, 2 / 3)
    kept = [(ds, p) for ds, p in waiting if p.sigma > 0]
    groups = [small, big] + [np.array([key(ds) == v for ds, _ in kept]) for key, values in _GROUPS
                             for v in values]
    worst = min(float(inside[g].mean()) for g in groups if g.sum() >= 100)
    return np.array([inside.mean(), inside[small].mean(), inside[big].mean(), worst])


_GROUPS = ((lambda d: d.band, (3, 4, 5, 6, 7, 8, 9, 10)), (lambda d: d.array, ("7m", "12m")),
           (lambda d: d.is_mosaic, (True, False)))
"""Groups of the waiting data sets whose coverage is looked at besides the size thirds (the worst one of
at least 100 data sets is printed)."""


def _coverage_cells(covered: list[np.ndarray]) -> str:
    if not covered:
        return f"{'-':>17} {'-':>6} {'-':>6} {'-':>6}"
    a, s, b, w = np.nanmean(np.array(covered), axis=0)
    return f"{a:>17.0%} {s:>6.0%} {b:>6.0%} {w:>6.0%}"


def _calibration_cells(runs: list[tuple[bool, float, float]]) -> str:
    inside = sum(i for i, _, _ in runs)
    off = np.array([o for _, o, _ in runs])
    width = np.median([w for _, _, w in runs])
    return (f"{f'{inside}/{len(runs)} ({inside / len(runs):.0%})':>16} {width:>6.0%} {np.median(off):>9.1%} "
            f"{np.percentile(off, 90):>6.1%} {off.max():>6.1%} {np.mean(off <= TARGET_P50_OFF):>5.0%}")


YOUNG_SHARE = 0.1
"""The first part of the makespan in which kills are counted against the prediction (the young fit)."""


def young(seeds: list[int], models: list[str], n: int = 6000) -> None:
    """Print, per generator and seed, how the young fit's risk compares with what happened
    (the default policy; see the module docstring)."""
    import ari_console.estimate as estimate_module
    from scipy.special import ndtr

    nodes = study_cluster()
    print(f"{'model':>9} {'seed':>4} {'kills<10%: pred':>15} {'actual':>6} {'x':>5} {'waste':>6} {'ratio':>6} "
          f"{'at10% off':>9} {'at25%':>6} {'plan/true 25%':>13} {'50%':>6} {'cpu s':>5}")
    place = sch.place
    for model in models:
        for seed in seeds:
            work, truth = workload(model, n, seed)
            bound = lower_bound(work, nodes, predictions=truth_predictions(work, truth)).hours
            placed: list[tuple[float, float]] = []  # (time, kill probability) of each attempt placed
            remaining: dict[float, float] = {}  # share of data sets left -> predicted / true hours of the queue

            def watch(queue, state, now, policy, model_, plan, preds, *rest):
                out = place(queue, state, now, policy, model_, plan, preds, *rest)
                for ds, node in out.pairs:
                    p = preds[ds.uid]
                    placed.append((now, _kill_probability(p, node, ndtr)))
                left = len(out.pairs) and len(preds)
                for share in (0.75, 0.5):
                    if share not in remaining and left and len(queue) <= share * n:
                        uids = [d.uid for d in queue]
                        true_h = sum(truth[u][0] for u in uids)
                        remaining[share] = sum(preds[u].mean_h for u in uids) / true_h if true_h else 1.0
                return out

            t0 = time.process_time()
            estimate_module.sch.place = watch
            try:
                sim = simulate(work, nodes, sch.DEFAULT_POLICY, actual=truth, forecast_at=(0.1, 0.25))
            finally:
                estimate_module.sch.place = place
            took = time.process_time() - t0
            early = YOUNG_SHARE * sim.makespan_h
            predicted = sum(q for at, q in placed if at <= early)
            actual = sum(1 for k in sim.killed if k.at_h <= early)
            off = [sim.makespan_h / f.p50_h - 1 for f in sim.forecasts]
            print(f"{model:>9} {seed:>4} {predicted:>15.1f} {actual:>6} {actual / max(predicted, 0.1):>5.1f} "
                  f"{sim.wasted_cpu_hours / sim.cpu_hours:>6.1%} {sim.makespan_h / bound:>6.3f} "
                  f"{off[0]:>+9.1%} {off[1]:>+6.1%} {remaining.get(0.75, float('nan')):>13.3f} "
                  f"{remaining.get(0.5, float('nan')):>6.3f} {took:>5.2f}", flush=True)


def _kill_probability(p, node, ndtr) -> float:
    """The chance the prediction ``p`` gives that an attempt on ``node`` is killed (walltime or memory),
    given what the data set is known to need (its spread widened by its tail, or its memory's from the fit's
    residual curve, as placement weighs it)."""
    def above(limit, median, sigma, floor):
        if limit is None or sigma <= 0:
            return float(limit is not None and median > limit)
        z = (math.log(limit) - math.log(median)) / sigma
        low = ndtr((math.log(floor) - math.log(median)) / sigma) if floor > 0 else 0.0
        return max(0.0, (1 - ndtr(z)) / max(1e-12, 1 - low)) if limit > floor else 1.0

    wall = node.walltime_h * node.speed if node.walltime_h else None
    k_h = above(wall, p.median_h, p.sigma * p.tail[0], p.floor_h)
    k_m = above(node.mem_gb, p.mem_median_gb, p.mem_sigma * p.tail[1], p.mem_floor_gb)
    if p.mem_curve and p.mem_sigma > 0:  # the memory fit's own residual tail, as placement weighs it
        k_m = float(sch.curve_exceed(p.mem_curve, [p.mem_median_gb], [p.mem_sigma], [p.mem_floor_gb], node.mem_gb)[0])
    return 1 - (1 - k_h) * (1 - k_m)


TARGET_ESTIMATE_S = {10_000: 0.5, 100_000: 5.0}
FORECAST_HISTORY = 2000


def forecast(sizes: list[int], models: list[str]) -> None:
    """Print the live estimate's figures at scale (see the module docstring)."""
    from datetime import datetime, timezone

    from ari_console import estimate as est

    nodes = study_cluster()
    print(f"{'model':>9} {'queued':>7} {'cpu s':>6} {'wall s':>6} {'forecast cpu s':>14} {'P10 h':>8} {'P50 h':>8} "
          f"{'P90 h':>8} {'target':>7}")
    for model in models:
        for n in sizes:
            work, truth = workload(model, n + FORECAST_HISTORY, 3)
            history = [est.attempt(ds, truth[ds.uid][0], 1.0, "ok", truth[ds.uid][1])
                       for ds in work[:FORECAST_HISTORY]]
            queue = work[FORECAST_HISTORY:]
            t0, w0 = time.process_time(), time.perf_counter()
            result = est.estimate_campaign(queue, history, nodes, datetime.now(timezone.utc))
            took, wall = time.process_time() - t0, time.perf_counter() - w0
            model_ = sch.fit_history(history)
            preds = sch.predict_all(queue, model_)
            inputs = ([(ds, preds[ds.uid]) for ds in queue], [], nodes, est.FORECAST_SAMPLES)
            kw = dict(residuals=model_.hours.residuals, coefficients=sch.coefficient_draws(history, model_, est.FORECAST_SAMPLES),
                      model_sigma=est.FORECAST_MODEL_SIGMA * est._still_to_do(history, est.band_work(queue, preds, [])))
            t1 = time.process_time()
            batched = est.forecast_finish(*inputs, **kw)
            part = time.process_time() - t1
            target = TARGET_ESTIMATE_S.get(n)
            verdict = "" if target is None else ("OK" if took < target else "OVER") + f" <{target:g}"
            print(f"{model:>9} {n:>7} {took:>6.2f} {wall:>6.2f} {part:>14.2f} {result.band_h[0]:>8.0f} "
                  f"{result.band_h[1]:>8.0f} {result.band_h[2]:>8.0f} {verdict:>7}", flush=True)
            if n <= 20_000:
                t1 = time.process_time()
                exact = est.forecast_finish(*inputs, **kw, exact_jobs=len(queue))
                print(f"{'':>9} {'':>7} exact list schedule: {time.process_time() - t1:.2f} s CPU, P10/P50/P90 "
                      f"{exact[0]:.0f} / {exact[1]:.0f} / {exact[2]:.0f} h; batched off by "
                      + " / ".join(f"{b / e - 1:+.2%}" for b, e in zip(batched, exact)), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Print the figures for the seeds given (default: the tuning seed and five others)."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return
    if args and args[0] == "--forecast":
        sizes = [int(a) for a in args[1:] if a.isdigit()] or [10_000, 100_000]
        models = [a for a in args[1:] if not a.isdigit()] or ["loglinear"]
        unknown = [m for m in models if m not in GENERATORS]
        if unknown:
            raise SystemExit(f"--forecast: unknown model {unknown[0]!r} — known: {', '.join(GENERATORS)}")
        forecast(sizes, models)
        return
    if args and args[0] in ("--hidden", "--calibrate", "--young", "--frontier", "--lp"):
        seeds = [int(a) for a in args[1:] if a.isdigit()] or ([1, 2] if args[0] != "--calibrate" else list(range(1, 9)))
        models = [a for a in args[1:] if not a.isdigit()] or list(hidden_models.MODELS)
        unknown = [m for m in models if m not in GENERATORS]
        if unknown:
            raise SystemExit(f"{args[0]}: unknown model {unknown[0]!r} — known: {', '.join(GENERATORS)}")
        {"--hidden": hidden, "--calibrate": calibrate, "--young": young, "--frontier": frontier, "--lp": lp_check}[args[0]](seeds, models)
        return
    seeds = [int(a) for a in args] or [1, 2, 3, 4, 5, 6]
    print(f"{'seed':>4} {'policy':>7} {'makespan_h':>10} {'bound_h':>8} {'gap':>7} "
          f"{'fail':>5} {'unpl':>4} {'s':>5}  plan")
    worst = 0.0
    slowest = 0.0
    for seed in seeds:
        for r in run(seed):
            tag = " (tuning seed)" if seed in TUNING_SEEDS and r["policy"] == sch.DEFAULT_POLICY else ""
            print(f"{r['seed']:>4} {r['policy']:>7} {r['makespan_h']:>10.1f} {r['bound_h']:>8.1f} "
                  f"{r['gap']:>7.2%} {r['failures']:>5} {r['unplaceable']:>4} {r['seconds']:>5.2f}  "
                  f"{r['variant']}{tag}")
            if r["policy"] == sch.DEFAULT_POLICY and seed not in TUNING_SEEDS:
                worst = max(worst, r["gap"])
                slowest = max(slowest, r["seconds"])
    print(f"default policy ({sch.DEFAULT_POLICY}) on unseen seeds: worst gap {worst:.2%} "
          f"(target {TARGET_GAP:.0%}), slowest {slowest:.2f} s (target {TARGET_SECONDS:g} s)")


if __name__ == "__main__":
    main()

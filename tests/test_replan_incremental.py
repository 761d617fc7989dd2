"""A re-plan that reuses what the last one derived plans exactly as one made from nothing.

``settle`` keeps, from one call to the next, what it derived from each prediction (risk
columns, kill chances, placement values per quantile) and the predictions it moved to
their placement values; a replay re-plans a shrinking queue dozens of times, an engine
re-plans 100,000 after a drain or an import with the predictions it had. These tests
compare each warm answer with a cold one (everything kept forgotten) on seeded queues
with hidden truth: predictions with a spread, kills teaching floors, a node drained.
The time it saves is printed by ``benchmarks/bench_engine.py`` and ``bench_scheduler.py``.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np

from ari_console import scheduler as sch
from ari_console.estimate import attempt, simulate
from benchmarks import hidden
from benchmarks.bench_scheduler import study_cluster

eligibility = sys.modules["ari_console.scheduler.eligibility"]  # (the package exports a function of that name)


def fitted(model: str = "pareto", n: int = 1500, seed: int = 4):
    """A queue of ``n`` data sets with archive metadata only, and a model fitted on 300 attempts."""
    work, truth = hidden.workload(model, n + 300, seed)
    history = [attempt(ds, truth[ds.uid][0], 1.0, "ok", truth[ds.uid][1]) for ds in work[:300]]
    return work[300:], sch.fit_history(history), truth


def cramped() -> list[sch.NodeState]:
    """The study's 31 nodes less two of the three big ones: the roomy nodes are scarce, risk is settled."""
    return [n for n in study_cluster() if n.name not in ("hpc02", "hpc03")]


def settle(queue, preds, nodes):
    search, tuning = sch.DEFAULT_SEARCH, sch.DEFAULT_TUNING
    return eligibility.settle(queue, preds, sch.node_classes(nodes), search.relax_quantiles, search.relax_tolerance,
                              tuning.retry_margin, ratios=search.risk_ratios)


def same_settle(warm, cold):
    assert warm[1] == cold[1], f"quantiles {warm[1]} warm, {cold[1]} cold"
    assert warm[0] == cold[0]
    if cold[2] is None:
        assert warm[2] is None
    else:
        for a, b in zip(warm[2], cold[2]):
            assert np.array_equal(a, b)


def plan_of(plan: sch.Plan) -> tuple:
    return ({k: [d.uid for d in v] for k, v in plan.sequence.items()}, plan.makespan_h, plan.variant,
            plan.risk_quantile, [(u.dataset.uid, u.reason) for u in plan.unplaceable], dict(plan.predictions))


def test_settle_after_launches_kills_and_a_drain_is_what_a_cold_settle_gives():
    queue, model, truth = fitted()
    nodes = cramped()
    preds = sch.predict_all(queue, model)
    eligibility.forget_settled()
    first = settle(queue, preds, nodes)
    assert first[1] is not None and len(eligibility._PLACED[0][2]) > 100  # risk was settled, many predictions moved

    # 200 launched, 30 killed by the walltime (their floor taught), a workstation drained
    rest = queue[200:]
    taught = {**preds}
    for ds in rest[:30]:
        own = {**model.own, ds.uid: (taught[ds.uid].plan_h * 2.5, 0.0)}
        taught[ds.uid] = sch.predict(ds, replace(model, own=own))
    drained = [replace(n, drained=True) if n.name == "ws03" else n for n in nodes]
    warm = settle(rest, taught, drained)
    eligibility.forget_settled()
    cold = settle(rest, taught, drained)
    same_settle(warm, cold)
    assert any(warm[0][ds.uid].floor_h > 0 for ds in rest[:30])


def test_settle_after_a_refit_derives_afresh_and_matches_a_cold_one():
    queue, model, truth = fitted("hetero")
    nodes = cramped()
    eligibility.forget_settled()
    settle(queue, sch.predict_all(queue, model), nodes)
    more = [attempt(ds, truth[ds.uid][0], 1.0, "ok", truth[ds.uid][1]) for ds in queue[:400]]
    refit = sch.fit_history(more)
    preds = sch.predict_all(queue[400:], refit)
    warm = settle(queue[400:], preds, nodes)
    eligibility.forget_settled()
    same_settle(warm, settle(queue[400:], preds, nodes))


def test_a_plan_after_a_refit_from_the_predictions_arrays_is_the_plan_read_off_each_prediction():
    """After a refit the risk columns come from the arrays predict_all made its predictions of
    (prediction.made_columns); the plan is the one made reading them off each prediction."""
    prediction = sys.modules["ari_console.scheduler.prediction"]
    queue, model, _ = fitted("hetero", n=3000)
    nodes = cramped()
    preds = sch.predict_all(queue, model)
    eligibility.forget_settled()
    assert prediction.made_columns([preds[ds.uid] for ds in queue]) is not None
    from_arrays = sch.make_plan(queue, nodes, "lpt", model, preds)
    assert from_arrays.risk_quantile is not None  # risk was settled
    prediction._MADE[0] = None  # forgotten: the columns are read off each prediction
    eligibility.forget_settled()
    assert plan_of(sch.make_plan(queue, nodes, "lpt", model, preds)) == plan_of(from_arrays)


def test_make_plan_with_rows_kept_from_another_queue_plans_as_a_cold_one():
    queue, model, _ = fitted("bimodal")
    nodes = cramped()
    preds = sch.predict_all(queue, model)
    for policy in ("lpt", "greedy"):
        eligibility.forget_settled()
        sch.make_plan(queue[:700], nodes, policy, model, preds)  # leaves the rows of another queue behind
        warm = plan_of(sch.make_plan(queue[300:], nodes, policy, model, preds))
        eligibility.forget_settled()
        cold = plan_of(sch.make_plan(queue[300:], nodes, policy, model, preds))
        assert warm == cold, policy


def test_a_replay_gives_the_same_result_whatever_the_last_plan_left_behind():
    work, truth = hidden.workload("outliers", 1200, 6)
    nodes = cramped()

    def replay():
        sim = simulate(work, nodes, actual=truth, forecast_at=(0.1, 0.5))
        return (sim.makespan_h, sim.wasted_cpu_hours, sim.kills, sim.completed, sim.gave_up, sim.refits,
                sim.forecasts, [(k.node_class, k.attempt, k.at_h) for k in sim.killed],
                [(u.name, u.busy_h, u.attempts) for u in sim.nodes])

    eligibility.forget_settled()
    cold = replay()
    assert cold[2]["walltime"] + cold[2]["memory"] > 0 and cold[5] > 0  # kills and refits: re-plans happened
    assert replay() == cold  # warm: the first replay's last plan kept
    other, other_truth = hidden.workload("cubes", 800, 2)
    simulate(other, nodes, actual=other_truth)
    assert replay() == cold


def test_make_plan_equals_its_steps_taken_one_by_one_with_every_prediction_moved():
    """make_plan's shortcuts (settle's columns for eligibility and the plan's hours, predictions
    moved only where their classes change) against the steps as separate calls: settle_risk moving
    every prediction, eligibility and the schedules reading the predictions back. Predictions
    without an expected value (``mean_h`` None: a plan counts their placement hours) included."""
    from ari_console.scheduler import lpt, placement

    queue, model, _ = fitted("heavy", n=900)
    nodes = cramped()
    made = sch.predict_all(queue, model)
    bare = {uid: replace(p, mean_h=None) if i % 3 == 0 else p for i, (uid, p) in enumerate(made.items())}
    search, tuning = sch.DEFAULT_SEARCH, sch.DEFAULT_TUNING
    for preds in (made, bare):
        eligibility.forget_settled()
        plan = sch.make_plan(queue, nodes, "lpt", model, preds)
        classes = sch.node_classes(nodes)
        settled, risk = sch.settle_risk(queue, preds, classes, search.relax_quantiles, search.relax_tolerance,
                                        tuning.retry_margin, ratios=search.risk_ratios)
        assert risk is not None
        both = placement._eligible_or_worth_a_try(queue, settled, classes, tuning)
        bad = tuple(sch.Unplaceable(d, sch.unplaceable_reason(d, settled[d.uid], nodes) or "no node can run it")
                    for d, e in both if not e)
        steps = lpt.lpt_plan([(d, e) for d, e in both if e], bad, nodes, classes, settled,
                             sch.nodes_key(nodes), search)
        steps = placement._pilots_first(steps, search.pilots - model.hours.n)
        assert plan.sequence == steps.sequence and plan.suffix_h == steps.suffix_h
        assert (plan.makespan_h, plan.variant, plan.unplaceable) == (steps.makespan_h, steps.variant, steps.unplaceable)
        for d in queue:  # kept or moved, every node judges its prediction as the settled one
            p = plan.predictions[d.uid]
            assert p == settled[d.uid] or all(
                (sch.why_not(d, p, n) is None) == (sch.why_not(d, settled[d.uid], n) is None) for n in nodes), d.uid


def test_quantile_levels_are_quantiles_above_to_the_last_bit():
    """Settle's levels take the normal quantile once per level for data sets without a floor:
    the numbers must be those quantiles_above gives each data set (floors, no spread, tails)."""
    from ari_console.scheduler.prediction import quantiles_above

    rng = np.random.default_rng(11)
    n = 5000
    median = np.exp(rng.normal(1.5, 1.0, n))
    sigma = np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0.05, 1.2, n))
    tail = sigma * rng.uniform(1.0, 1.5, n)
    floor = np.where(rng.random(n) < 0.2, median * rng.uniform(0.2, 5.0, n), 0.0)
    base = median * 2
    quantiles = [(0.95, 0.9), (0.9, 0.7), (0.7, 0.7), (0.999, 0.5)]
    hours, mem = eligibility._quantile_levels(quantiles, 1.25, (median, tail, floor, sigma, base),
                                              (median * 3, tail, floor * 3, sigma, base))
    for q in {h for h, _ in quantiles}:
        assert np.array_equal(hours[q], np.where(sigma > 0, quantiles_above(median, tail, floor, q, 1.25), base))
    for q in {m for _, m in quantiles}:
        assert np.array_equal(mem[q], np.where(sigma > 0, quantiles_above(median * 3, tail, floor * 3, q, 1.25), base))


def test_exceed_computes_the_floor_tail_only_where_there_is_a_floor_with_the_same_numbers():
    from scipy.special import ndtr

    rng = np.random.default_rng(12)
    n = 5000
    median = np.exp(rng.normal(1.5, 1.0, n))
    sigma = np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0.05, 1.2, n))
    floor = np.where(rng.random(n) < 0.2, median * rng.uniform(0.2, 5.0, n), 0.0)
    for limit in (4.0, 48.0, 288.0):
        s = np.maximum(sigma, 1e-9)
        log_m = np.log(median)
        with np.errstate(divide="ignore"):
            above_floor = np.where(floor > 0, 1 - ndtr((np.log(np.maximum(floor, 1e-300)) - log_m) / s), 1.0)
        above = np.minimum(1 - ndtr((np.log(limit) - log_m) / s), above_floor)
        whole = np.where(sigma > 0, above / np.maximum(above_floor, 1e-300), (np.maximum(median, floor) > limit) * 1.0)
        assert np.array_equal(eligibility.exceed(median, sigma, floor, limit), whole)


def test_data_sets_tried_at_their_medians_are_planned_as_a_cold_plan_plans_them():
    """A plan tries a data set that fits no node at its cautious values at its medians; the next
    re-plan reuses those tries where the prediction is the same object: its plan is a cold one's."""
    work, truth = hidden.workload("study", 1500, 3)
    model = sch.fit_history([attempt(ds, truth[ds.uid][0], 1.0, "ok", truth[ds.uid][1]) for ds in work[:12]])
    queue = work[300:]  # a young fit: a wide memory spread
    nodes = [n for n in study_cluster() if not n.name.startswith("hpc")]  # 64 GB at most: many fit nowhere
    preds = sch.predict_all(queue, model)
    eligibility.forget_settled()
    sch.make_plan(queue, nodes, "lpt", model, preds)
    tried = eligibility._TRIED[0]
    assert len(tried) > 100  # many were tried at their medians
    later = queue[100:]  # 100 launched, one killed: a new prediction (a floor) for one tried before
    uid = next(u for u in tried if u in {d.uid for d in later})
    taught = {**preds, uid: sch.predict(next(d for d in later if d.uid == uid),
                                        replace(model, own={uid: (0.0, 30.0)}))}
    warm = plan_of(sch.make_plan(later, nodes, "lpt", model, taught))
    eligibility.forget_settled()
    assert warm == plan_of(sch.make_plan(later, nodes, "lpt", model, taught))


def test_a_plans_suffix_hours_are_each_nodes_hours_summed_from_its_end_and_pilots_run_first():
    """Every node's suffix hours are its sequence's plan hours summed from the last one back (to the
    last bit: requeues and dry nodes read them), and with a young history its pilots come first on
    their nodes, shortest first."""
    queue, model, _ = fitted("loglinear", n=1500, seed=2)
    nodes = study_cluster()
    preds = sch.predict_all(queue, model)
    for pilots in (0, 400):  # (the fit has 300 attempts: 100 pilots)
        plan = sch.make_plan(queue, nodes, "lpt", model, preds, search=replace(sch.DEFAULT_SEARCH, pilots=pilots))
        assert sum(map(len, plan.sequence.values())) == plan.remaining
        starts = []
        for name, seq in plan.sequence.items():
            hours = [plan.predictions[d.uid].plan_h for d in seq]
            sums, acc = [0.0], 0.0
            for h in reversed(hours):
                acc += h
                sums.append(acc)
            assert plan.suffix_h[name] == tuple(reversed(sums)), name
            first = 0
            while first < len(hours) - 1 and hours[first] <= hours[first + 1]:
                first += 1
            starts.append(hours[:first + 1])
        if pilots:  # pilots first, shortest first: each node's sequence starts with a rising run
            assert sum(map(len, starts)) >= 100
        else:  # longest first: no node's sequence starts with a rise of more than one
            assert sum(map(len, starts)) <= 2 * len(plan.sequence)

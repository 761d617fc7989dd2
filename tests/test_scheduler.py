"""Placement and prediction: what the engine can rely on from scheduler.place."""

from __future__ import annotations

import math
import random

import pytest

from ari_console import scheduler as sch
from ari_console.estimate import simulate
from ari_console.scheduler import DataSet, Measured, NodeState, place, predict


def random_cluster(rng: random.Random) -> list[NodeState]:
    """A small heterogeneous cluster: workstations, walltime-limited nodes, one big node."""
    nodes = [NodeState(f"ws{i}", 1, 24.0, None, rng.choice([0.5, 0.6, 0.8])) for i in range(rng.randint(1, 4))]
    nodes += [NodeState(f"mid{i}", 2, 64.0, rng.choice([12.0, 24.0, 48.0]), 1.0) for i in range(rng.randint(1, 3))]
    nodes.append(NodeState("big", rng.choice([1, 2]), 512.0, 240.0, 1.2))
    return nodes


def random_queue(rng: random.Random, n: int) -> list[DataSet]:
    """Data sets with lognormal hours and a memory tail, some that fit nowhere."""
    out = []
    for i in range(n):
        mem = rng.choice([rng.uniform(2, 24)] * 6 + [rng.uniform(24, 500), rng.uniform(600, 900)])
        out.append(DataSet(f"u{i}", size_gb=rng.uniform(1, 200),
                           hours=round(rng.lognormvariate(math.log(6), 1.0), 3), mem_gb=round(mem, 1)))
    return out


@pytest.mark.parametrize("policy", ["lpt", "greedy"])
@pytest.mark.parametrize("seed", range(8))
def test_never_places_a_data_set_over_node_memory_or_walltime(policy, seed):
    rng = random.Random(seed)
    nodes, queue = random_cluster(rng), random_queue(rng, 60)
    plan, waiting, placed = None, {d.uid: d for d in queue}, 0
    # launch everything, slot by slot, as the engine would
    for _ in range(200):
        result = place(list(waiting.values()), nodes, now=0.0, policy=policy, plan=plan)
        plan = result.plan
        for u in result.unplaceable:
            waiting.pop(u.dataset.uid, None)
        for ds, node in result.pairs:
            assert ds.mem_gb <= node.mem_gb
            assert node.walltime_h is None or ds.hours / node.speed <= node.walltime_h
            del waiting[ds.uid]
            placed += 1
        if not waiting:
            break
    assert placed > 0 and not waiting


def test_keeps_the_big_node_for_the_data_set_only_it_can_run():
    nodes = [NodeState("big", 1, 512.0, None, 1.0), NodeState("ws1", 1, 24.0, None, 0.8),
             NodeState("ws2", 1, 24.0, None, 0.8)]
    queue = [DataSet(f"small{i}", hours=4.0, mem_gb=8.0) for i in range(5)]
    queue.append(DataSet("huge", hours=4.0, mem_gb=300.0))  # last in queue order
    pairs = {ds.uid: node.name for ds, node in place(queue, nodes, now=0.0).pairs}
    assert pairs["huge"] == "big"
    assert sorted(v for k, v in pairs.items() if k != "huge") == ["ws1", "ws2"]


def test_fifo_hands_the_big_node_to_whoever_is_first_for_contrast():
    nodes = [NodeState("big", 1, 512.0, None, 1.0), NodeState("ws1", 1, 24.0, None, 0.8)]
    queue = [DataSet("small", hours=4.0, mem_gb=8.0), DataSet("huge", hours=4.0, mem_gb=300.0)]
    pairs = {ds.uid: node.name for ds, node in place(queue, nodes, now=0.0, policy="fifo").pairs}
    assert pairs == {"small": "big", "huge": "ws1"}


@pytest.mark.parametrize("dataset, words", [
    (DataSet("toobig", hours=5.0, mem_gb=900.0), ["900 GB", "big", "512 GB"]),
    (DataSet("toolong", hours=400.0, mem_gb=100.0), ["400 h", "240 h"]),
    (DataSet("pipeline", hours=5.0, mem_gb=8.0, recipe="alma-pipeline"), ["alma-pipeline"]),
    (DataSet("oldcasa", hours=5.0, mem_gb=8.0, casa_version="4.7.2"), ["CASA 4.7.2"]),
])
def test_data_set_no_node_can_run_comes_back_unplaceable_with_the_reason(dataset, words):
    nodes = [NodeState("ws", 1, 24.0, None, 0.6), NodeState("big", 1, 512.0, 240.0, 1.0)]
    ok = DataSet("fine", hours=5.0, mem_gb=8.0)
    result = place([ok, dataset], nodes, now=0.0)
    assert [u.dataset.uid for u in result.unplaceable] == [dataset.uid]
    for word in words:
        assert word in result.unplaceable[0].reason
    assert dataset.uid not in {d.uid for d, _ in result.pairs}
    assert "fine" in {d.uid for d, _ in result.pairs}


def test_data_set_waits_for_a_fast_node_rather_than_crawl_on_a_slow_one():
    nodes = [NodeState("fast", 1, 64.0, None, 1.0), NodeState("slow", 1, 64.0, None, 0.2)]
    queue = [DataSet("a", hours=10.0, mem_gb=8.0), DataSet("b", hours=10.0, mem_gb=8.0)]
    # on the slow node b would take 50 h; waiting for the fast one ends at 20 h
    pairs = place(queue, nodes, now=0.0).pairs
    assert [n.name for _, n in pairs] == ["fast"]


def test_lpt_beats_fifo_on_nodes_of_different_speeds():
    rng = random.Random(42)
    nodes = [NodeState("slow1", 1, 64.0, None, 0.3), NodeState("slow2", 1, 64.0, None, 0.3),
             NodeState("mid", 2, 64.0, None, 1.0), NodeState("fast", 1, 64.0, None, 2.0)]
    queue = [DataSet(f"u{i}", hours=round(rng.uniform(1.0, 12.0), 2), mem_gb=8.0) for i in range(60)]
    lpt, fifo = simulate(queue, nodes, "lpt"), simulate(queue, nodes, "fifo")
    assert lpt.completed == fifo.completed == 60
    assert lpt.makespan_h < 0.95 * fifo.makespan_h


def test_fifo_loses_data_sets_to_memory_and_walltime_where_lpt_loses_none():
    rng = random.Random(7)
    nodes = [NodeState(f"ws{i}", 1, 24.0, None, 0.5) for i in range(3)]
    nodes += [NodeState("mid", 2, 64.0, 24.0, 1.0), NodeState("big", 1, 512.0, 240.0, 1.5)]
    queue = [DataSet(f"u{i}", hours=round(rng.uniform(1.0, 40.0), 2),
                     mem_gb=rng.choice([8.0, 12.0, 20.0, 40.0, 100.0])) for i in range(80)]
    lpt, fifo = simulate(queue, nodes, "lpt"), simulate(queue, nodes, "fifo")
    assert lpt.failures_avoidable == 0 and lpt.completed == 80
    assert fifo.failures_avoidable > 0 and fifo.completed < 80


def test_pinned_data_set_runs_only_on_its_node():
    nodes = [NodeState("a", 1, 64.0, None, 2.0), NodeState("b", 1, 64.0, None, 0.5)]
    pairs = place([DataSet("x", hours=3.0, mem_gb=4.0, node="b")], nodes, now=0.0).pairs
    assert [(d.uid, n.name) for d, n in pairs] == [("x", "b")]


def test_drained_node_gets_no_new_data_set():
    nodes = [NodeState("a", 1, 64.0, None, 2.0, drained=True), NodeState("b", 1, 64.0, None, 0.5)]
    pairs = place([DataSet("x", hours=3.0, mem_gb=4.0), DataSet("y", hours=3.0, mem_gb=4.0)],
                  nodes, now=0.0).pairs
    assert {n.name for _, n in pairs} == {"b"}


def test_only_free_slots_are_filled():
    nodes = [NodeState("a", slots=4, mem_gb=64.0, free=1)]
    pairs = place([DataSet(f"x{i}", hours=3.0, mem_gb=4.0) for i in range(5)], nodes, now=0.0).pairs
    assert len(pairs) == 1


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="fifo"):
        place([DataSet("x", hours=1.0, mem_gb=1.0)], [NodeState("a")], now=0.0, policy="random")


# -- predictions -----------------------------------------------------------------

def noisy_history(rng: random.Random, n: int = 60) -> list[Measured]:
    """Finished attempts: hours ~ 0.15 x size on nodes of varied speed, lognormal scatter."""
    out = []
    for i in range(n):
        size = rng.uniform(5, 300)
        speed = rng.choice([0.6, 1.0, 1.2])
        hours = 0.15 * size * rng.lognormvariate(0, 0.4)
        out.append(Measured(f"h{i}", size, hours / speed, speed, 0.1 * size * rng.lognormvariate(0, 0.3) + 2))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_history_prediction_is_conservative(seed):
    rng = random.Random(seed)
    history = noisy_history(rng)
    model = sch.fit_history(history)
    hours_covered = mem_covered = 0
    for m in history:
        p = predict(DataSet("new", size_gb=m.size_gb), model)
        assert p.source == "history"
        hours_covered += p.hours >= m.hours * m.speed
        mem_covered += p.mem_gb >= m.peak_mem_gb
    assert hours_covered >= 0.85 * len(history)
    assert mem_covered >= 0.9 * len(history)
    # and it is a quantile, not a wild overestimate: below the largest ratio seen
    worst = max(m.hours * m.speed / m.size_gb for m in history)
    assert predict(DataSet("new", size_gb=100.0), model).hours <= worst * 100.0 * 1.5


def test_each_array_gets_its_own_fit_once_it_has_enough_history():
    rng = random.Random(5)
    history = [Measured(f"a{i}", s, 0.2 * s, 1.0, 10.0, array="12m") for i, s in
               enumerate(rng.uniform(5, 300) for _ in range(20))]
    history += [Measured(f"b{i}", s, 0.02 * s, 1.0, 10.0, array="7m") for i, s in
                enumerate(rng.uniform(5, 300) for _ in range(20))]
    model = sch.fit_history(history)
    twelve = predict(DataSet("x", size_gb=100.0, array="12m"), model).hours
    seven = predict(DataSet("y", size_gb=100.0, array="7m"), model).hours
    assert twelve == pytest.approx(20.0, rel=0.01) and seven == pytest.approx(2.0, rel=0.01)


def test_explicit_hours_and_memory_win_over_history():
    model = sch.fit_history(noisy_history(random.Random(1)))
    p = predict(DataSet("x", size_gb=100.0, hours=2.5, mem_gb=7.0), model)
    assert (p.hours, p.mem_gb, p.source) == (2.5, 7.0, "explicit")


def test_data_set_killed_for_memory_is_predicted_to_need_more():
    history = [Measured("x", 50.0, 1.0, 1.0, 30.0, outcome="memory")]
    assert predict(DataSet("x", size_gb=50.0), history).mem_gb > 30.0
    assert predict(DataSet("other", size_gb=50.0), history).mem_gb < 30.0


def test_data_set_killed_by_walltime_is_predicted_to_run_longer():
    history = [Measured("x", 50.0, 48.0, 0.5, None, outcome="walltime")]
    assert predict(DataSet("x", size_gb=50.0), history).hours > 24.0


def test_prior_without_history_follows_the_study_figures():
    p = predict(DataSet("x", size_gb=sch.PRIOR_MEDIAN_SIZE_GB))
    assert p.source == "prior"
    assert 6.0 <= p.hours <= 24.0  # median 6 h, taken conservatively
    assert 4.0 <= p.mem_gb <= 24.0  # memory mostly 4-24 GB
    assert predict(DataSet("y", size_gb=400.0)).hours > p.hours


# -- learning under unknown runtimes ---------------------------------------------------

def test_young_history_starts_pilots_across_the_predicted_hours_not_only_the_longest():
    queue = [DataSet(f"u{i}", size_gb=1.0 + 4 * i) for i in range(200)]  # the prior ranks them by size
    nodes = [NodeState(f"n{i}", 2, 512.0, None, 1.0) for i in range(30)]
    first = place(queue, nodes, 0.0, search=sch.Search(pilots=60)).pairs
    sizes = sorted(d.size_gb for d, _ in first)
    assert len(first) == 60
    assert sizes[0] < 40 and sizes[-1] > 760  # the smallest and the biggest start: the fit learns the whole range
    assert sum(s < 400 for s in sizes) >= 25
    longest = place(queue, nodes, 0.0, search=sch.Search(pilots=0)).pairs
    assert min(d.size_gb for d, _ in longest) > 500  # without pilots, the 60 longest go first


def test_settled_history_starts_the_longest_first_again():
    hist = [Measured(f"h{i}", 5.0 + i, 0.2 * (5.0 + i), 1.0, 8.0) for i in range(80)]
    queue = [DataSet(f"u{i}", size_gb=1.0 + 4 * i) for i in range(200)]
    nodes = [NodeState(f"n{i}", 2, 512.0, None, 1.0) for i in range(30)]
    first = place(queue, nodes, 0.0, history=hist, search=sch.Search(pilots=60)).pairs
    assert min(d.size_gb for d, _ in first) > 500


def test_big_data_sets_get_a_wider_spread_when_history_shows_they_scatter_more():
    rng = random.Random(3)
    hist = []
    for i in range(300):
        size = rng.lognormvariate(math.log(30), 1.0)
        noise = rng.gauss(0, 0.1 if size < 30 else 0.8)
        hist.append(Measured(f"h{i}", size, 0.2 * size * math.exp(noise), 1.0, 8.0))
    small, big = predict(DataSet("s", size_gb=5.0), hist), predict(DataSet("b", size_gb=200.0), hist)
    assert big.sigma > 2.5 * small.sigma
    pooled = predict(DataSet("b", size_gb=200.0), hist, sch.Tuning(spread_min_history=10_000))
    assert big.hours > pooled.hours  # its placement quantile is the more cautious


def test_risky_quantile_is_refused_when_its_kills_would_only_cost_work_the_cluster_needs():
    """Uncertain ~15 h data sets and a 24 h node that quick data sets keep busy anyway: one in
    five of the long ones sent there would be killed after 24 h and run again, so they stay
    off it; with two roomy slots only, the same kills are worth it."""
    history = [Measured(f"h{i}", 40.0, 15.0 * math.exp(0.9 * ((i * 37) % 21 - 10) / 10), 1.0, 8.0)
               for i in range(100)]
    queue = [DataSet(f"u{i}", size_gb=40.0) for i in range(40)]
    queue += [DataSet(f"q{i}", size_gb=40.0, hours=4.0, mem_gb=4.0) for i in range(80)]
    preds = sch.predict_all(queue, history)
    busy = [NodeState("short", 8, 64.0, 24.0, 1.0), NodeState("long", 30, 64.0, None, 1.0)]
    assert sch.settle_risk(queue, preds, sch.node_classes(busy), sch.RELAX_QUANTILES, sch.RELAX_TOLERANCE,
                           1.25)[1] is None
    cramped = [NodeState("short", 8, 64.0, 24.0, 1.0), NodeState("long", 2, 64.0, None, 1.0)]
    risk = sch.settle_risk(queue, preds, sch.node_classes(cramped), sch.RELAX_QUANTILES, sch.RELAX_TOLERANCE,
                           1.25)[1]
    assert risk is not None and risk[0] < 0.95


def test_settle_risk_computes_each_placement_quantile_once_with_the_same_values():
    """All of a side's levels from one call give, bit for bit, what one call per level gives
    (spread or not, floors above and below the median), so re-plans keep choosing the same."""
    import numpy as np

    from ari_console.scheduler.eligibility import _quantile_levels
    from ari_console.scheduler.prediction import quantiles_above

    rng = np.random.default_rng(22)
    n = 5000
    median, base = rng.lognormal(1.8, 0.8, n), rng.uniform(1, 60, n)
    sigma = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(0.05, 1.5, n))
    floor = np.where(rng.random(n) < 0.3, median * rng.uniform(0.5, 3.0, n), 0.0)
    tail = rng.uniform(1.0, 1.6, n)
    pairs = sch.RELAX_QUANTILES
    hours, mem = _quantile_levels(pairs, 1.25, (median, sigma * tail, floor, sigma, base),
                                  (median * 2, sigma, floor * 2, sigma, base * 2))
    assert sorted(hours) == sorted({h for h, _ in pairs}) and sorted(mem) == sorted({m for _, m in pairs})
    for q in hours:
        one = np.where(sigma > 0, quantiles_above(median, sigma * tail, floor, q, 1.25), base)
        assert np.array_equal(hours[q], one)
    for q in mem:
        one = np.where(sigma > 0, quantiles_above(median * 2, sigma, floor * 2, q, 1.25), base * 2)
        assert np.array_equal(mem[q], one)
    assert _quantile_levels((), 1.25, (median, sigma, floor, sigma, base)) == [{}]


def test_settle_risk_keeps_pins_and_skips_data_sets_without_a_prediction():
    """A data set pinned to a node, a recipe or a walltime is only weighed where its pin allows
    (as why_not says); one without a prediction is left out, the others settle as without it."""
    from ari_console.scheduler.eligibility import _static_masks

    history = [Measured(f"h{i}", 40.0, 15.0 * math.exp(0.9 * ((i * 37) % 21 - 10) / 10), 1.0, 8.0)
               for i in range(100)]
    queue = [DataSet(f"u{i}", size_gb=40.0) for i in range(40)]
    queue += [DataSet(f"q{i}", size_gb=40.0, hours=4.0, mem_gb=4.0) for i in range(80)]
    queue[3] = DataSet("u3", size_gb=40.0, node="long0")
    queue[7] = DataSet("u7", size_gb=40.0, walltime_h=10.0)
    nodes = [NodeState("short", 8, 64.0, 24.0, 1.0), NodeState("long0", 1, 64.0, None, 1.0),
             NodeState("long1", 1, 64.0, None, 1.0)]
    classes = sch.node_classes(nodes, {"long0"})
    masks = _static_masks(queue, classes).tolist()
    anything = sch.Prediction(0.0, 0.0)
    for i in (3, 7):
        assert masks[i] == sum(1 << k for k, c in enumerate(classes) if sch.why_not(queue[i], anything, c.rep) is None)
    assert masks[3] == 1 << next(k for k, c in enumerate(classes) if c.rep.name == "long0")
    assert set(masks[:3]) == {(1 << len(classes)) - 1}
    preds = sch.predict_all(queue, history)
    settled, q = sch.settle_risk(queue, preds, classes, sch.RELAX_QUANTILES, sch.RELAX_TOLERANCE, 1.25,
                                 ratios=sch.RISK_RATIOS)
    assert q is not None and any(settled[d.uid] is not preds[d.uid] for d in queue)
    stray = queue[:50] + [DataSet("nobody", size_gb=40.0)] + queue[50:]
    assert sch.settle_risk(stray, preds, classes, sch.RELAX_QUANTILES, sch.RELAX_TOLERANCE, 1.25,
                           ratios=sch.RISK_RATIOS) == (settled, q)


def test_wide_spread_alone_never_makes_a_data_set_unplaceable():
    """Its 95th percentile outruns every walltime, its median does not: it is tried on the longest one."""
    rng = random.Random(5)
    hist = [Measured(f"h{i}", 40.0, 30.0 * math.exp(rng.gauss(0, 1.2)), 1.0, 8.0) for i in range(80)]
    nodes = [NodeState("mup", 2, 64.0, 48.0, 1.0), NodeState("hpc", 1, 512.0, 100.0, 1.0)]
    assert predict(DataSet("u", size_gb=40.0), hist).hours > 100  # the cautious quantile fits nowhere
    result = place([DataSet("u", size_gb=40.0)], nodes, 0.0, history=hist)
    assert result.unplaceable == () and [(d.uid, n.name) for d, n in result.pairs] == [("u", "hpc")]
    killed = hist + [Measured("u", 100.0, 100.0, 1.0, None, "walltime")]
    result = place([DataSet("u", size_gb=40.0)], nodes, 0.0, history=killed)
    assert result.pairs == () and "100 h" in result.unplaceable[0].reason  # a kill showed it needs more


def _spread(median_h: float, sigma_h: float, median_mem: float, sigma_mem: float) -> sch.Prediction:
    """A history prediction with the given spreads, its placement values at the 95th percentiles."""
    from ari_console.scheduler.prediction import means_above, quantiles_above

    return sch.Prediction(round(float(quantiles_above(median_h, sigma_h, 0.0, 0.95)), 4),
                          round(float(quantiles_above(median_mem, sigma_mem, 0.0, 0.95)), 4), "history",
                          float(means_above(median_h, sigma_h, 0.0)), median_h, sigma_h, 0.0, sigma_mem, 0.0, (),
                          median_mem)


def test_uncertain_giant_goes_where_a_kill_would_cost_least_when_capacity_allows():
    """~150 h, perhaps 600 h: on the 240 h node one attempt in five would be killed after 240 h;
    on the workstations (no walltime) one in eight would run out of memory half-way. Neither
    risk is small, so the giant goes where it loses least (the workstations) while quick data
    sets keep the big node busy anyway; when the workstations' memory is the larger risk, to the big node."""
    queue = [DataSet("giant", size_gb=900.0)] + [DataSet(f"q{i}", size_gb=5.0, hours=4.0, mem_gb=4.0)
                                                 for i in range(400)]
    nodes = [NodeState("hpc", 4, 512.0, 240.0, 1.2), NodeState("ws", 2, 24.0, None, 0.6)]

    def giant_on(median_mem: float) -> list[str]:
        plan = sch.make_plan(queue, nodes, "lpt", predictions={"giant": _spread(150.0, 0.8, median_mem, 0.25)})
        return [name for name, seq in plan.sequence.items() if any(d.uid == "giant" for d in seq)]

    assert giant_on(18.0) == ["ws"]   # P(memory > 24 GB) ~ 12 %: ~20 h lost there in expectation, ~50 h on hpc
    assert giant_on(23.0) == ["hpc"]  # ~43 %: ~75 h lost there


def test_the_scratch_factor_is_learned_from_finished_attempts_and_a_few_small_ones_never_shrink_it():
    from ari_console.scheduler import SCRATCH_MIN_SAMPLES, SCRATCH_PER_GB, scratch_factors

    def done(n, per_gb, array="12m", outcome="ok"):
        return [Measured(f"u{i}", size_gb=10.0, hours=1.0, outcome=outcome, array=array,
                         peak_scratch_gb=10.0 * per_gb + 0.05) for i in range(n)]

    assert scratch_factors([]) == {None: SCRATCH_PER_GB}
    few = scratch_factors(done(SCRATCH_MIN_SAMPLES - 1, 1.5))
    assert few[None] == few["12m"] == SCRATCH_PER_GB  # too few to go below the documented default
    enough = scratch_factors(done(SCRATCH_MIN_SAMPLES, 1.5))
    assert enough[None] == pytest.approx(1.5) and enough["12m"] == pytest.approx(1.5)
    assert scratch_factors(done(1, 6.0))[None] == pytest.approx(6.0)  # one large attempt raises it at once
    # failed attempts and unmeasured ones teach nothing; an array with few attempts falls back on the campaign's
    mixed = scratch_factors(done(SCRATCH_MIN_SAMPLES, 1.5) + done(3, 9.0, outcome="memory")
                            + done(2, 1.0, array="7m") + [Measured("x", size_gb=10.0, hours=1.0)])
    assert mixed["7m"] == pytest.approx(mixed[None]) and 1.0 < mixed[None] <= 1.5
    assert DataSet("a", size_gb=10.0, scratch_per_gb=enough["12m"]).scratch_need_gb == pytest.approx(15.05)


def test_a_version_spelled_as_the_archive_spells_it_runs_on_the_node_that_lists_it_as_scripts_do():
    """The archive says 6.5.4.9 (a pipeline manifest) or 5.1.1 (a manual script); nodes list 6.5.4-9, 5.1.1-5."""
    from ari_console.config import Node
    from ari_console.engine import recipe_spec

    casa = {"6.5.4-9": "/opt/casa-6.5.4-9/bin/casa", "5.1.1-5": "/opt/casa-5.1.1-5/bin/casa"}
    nodes = [NodeState("old", 2, 64.0, None, 1.0, casa_versions=tuple(casa)), NodeState("new", 2, 64.0, None, 1.0)]
    queue = [DataSet("manifest", hours=5.0, mem_gb=8.0, casa_version="6.5.4.9"),
             DataSet("script", hours=5.0, mem_gb=8.0, casa_version="5.1.1"),
             DataSet("other", hours=5.0, mem_gb=8.0, casa_version="6.5.4.10")]
    result = place(queue, nodes, now=0.0)
    assert {d.uid: n.name for d, n in result.pairs} == {"manifest": "old", "script": "old"}
    assert [u.dataset.uid for u in result.unplaceable] == ["other"]
    node = Node(name="old", recipe="alma-pipeline", casa_path="/opt/casa/bin/casa", casa=casa)
    assert recipe_spec(node, {}, {}, casa_version="6.5.4.9")["casa"] == "/opt/casa-6.5.4-9/bin/casa"
    assert recipe_spec(node, {}, {}, casa_version="5.1.1")["casa"] == "/opt/casa-5.1.1-5/bin/casa"


def test_workstations_get_work_when_a_memory_mixture_makes_the_lognormal_too_wide():
    """The study's memory: mostly 4-24 GB, one data set in eight a big cube anywhere from 24 to
    480 GB, nothing in the metadata telling which. One lognormal over the lot says a third would
    run out of memory on a 24 GB workstation and can leave the sixteen workstations idle (the
    plan ~20 % longer); one in six does, and the plan gives them their share of the queue."""
    import numpy as np

    for seed in range(4):
        rng = np.random.default_rng(seed)
        mem = np.exp(rng.normal(math.log(10.0), 0.55, 1500))
        big = rng.random(1500) < 0.12
        mem[big] = np.exp(rng.uniform(math.log(24), math.log(480), big.sum()))
        hours = np.exp(rng.normal(math.log(6.0), 0.44, 1500))
        limit = np.where(rng.random(1500) < 0.3, 24.0, np.where(rng.random(1500) < 0.7, 64.0, 512.0))
        history = [Measured(f"m{i}", 40.0, float(h), 1.0, float(min(m, lim)), outcome="memory" if m > lim else "ok")
                   for i, (h, m, lim) in enumerate(zip(hours, mem, limit))]
        nodes = ([NodeState(f"ws{i}", 1, 24.0, None, 0.6) for i in range(16)]
                 + [NodeState(f"mup{i}", 2, 64.0, 48.0, 1.0) for i in range(12)]
                 + [NodeState(f"hpc{i}", 4, 512.0, 240.0, 1.2) for i in range(3)])
        plan = sch.make_plan([DataSet(f"u{i}", size_gb=40.0) for i in range(600)], nodes, "lpt", history)
        on_ws = sum(len(seq) for name, seq in plan.sequence.items() if name.startswith("ws"))
        assert on_ws > 600 * 0.6 * 16 / (0.6 * 16 + 24 + 1.2 * 12) * 0.8, seed  # ~80 % of their capacity's share

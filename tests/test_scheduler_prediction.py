"""Predictions at queue scale: the vectorised path gives each data set's own numbers."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest

from ari_console import scheduler as sch
from ari_console.scheduler import DataSet, Measured, predict, predict_all
from ari_console.scheduler.prediction import _prior_medians, _prior_medians_of, feature_rows, features, queue_rows
from ari_console.scheduler.values import placed_all


def random_archive_queue(rng: random.Random, n: int) -> list[DataSet]:
    """Data sets with the archive's metadata, each field unknown now and then, a few explicit values."""
    def maybe(p_unknown: float, value):
        return None if rng.random() < p_unknown else value

    return [DataSet(f"u{i}", size_gb=maybe(0.1, rng.choice([0.0, round(math.exp(rng.gauss(3, 1.2)), 2)])),
                    hours=maybe(0.9, round(rng.uniform(1, 30), 3)), mem_gb=maybe(0.9, round(rng.uniform(2, 60), 1)),
                    array=maybe(0.1, rng.choice(["12m", "7m", ""])), band=maybe(0.1, rng.randint(3, 10)),
                    n_spw=maybe(0.2, rng.choice([1, 2, 4, 8])), n_chan=maybe(0.2, rng.choice([128, 960, 3840])),
                    is_mosaic=maybe(0.2, rng.random() < 0.2), n_eb=maybe(0.3, rng.randint(1, 4)),
                    prior_hours=maybe(0.7, round(rng.uniform(0.5, 20), 3)),
                    prior_mem_gb=maybe(0.7, round(rng.uniform(2, 40), 1)))
            for i in range(n)]


def history_of(rng: random.Random, queue: list[DataSet]) -> list[Measured]:
    """Finished attempts of the queue's first data sets, some killed (floors), some still running."""
    return [Measured(d.uid, d.size_gb, rng.lognormvariate(1.8, 0.8), rng.choice([0.6, 1.0, 1.2]),
                     rng.uniform(4, 30), rng.choice(["ok"] * 6 + ["walltime", "memory", "running"]),
                     d.array, d.band, d.n_spw, d.n_chan, d.is_mosaic, d.n_eb, d.prior_hours, d.prior_mem_gb)
            for d in queue]


def close(p: sch.Prediction, q: sch.Prediction) -> bool:
    """Every field of two predictions equal, floats to 1e-12 relative."""
    def same(a, b) -> bool:
        if isinstance(a, tuple):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, float):
            return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
        return a == b

    return all(same(getattr(p, f), getattr(q, f)) for f in p.__dataclass_fields__)


def test_feature_rows_are_the_features_of_each_data_set():
    queue = random_archive_queue(random.Random(1), 500)
    assert np.array_equal(feature_rows(queue), np.array([features(d) for d in queue]), equal_nan=True)
    assert feature_rows([]).shape == (0, len(sch.FEATURES))
    # every value known (each column mapped at once), then one data set lacking one value or with a zero
    rng = random.Random(2)
    known = [DataSet(f"k{i}", size_gb=rng.uniform(1, 90), array=rng.choice(["12m", "7m"]), band=rng.randint(3, 10),
                     n_spw=4, n_chan=rng.choice([128, 3840]), is_mosaic=rng.random() < 0.2, n_eb=rng.randint(1, 3),
                     prior_hours=rng.uniform(1, 9), prior_mem_gb=rng.uniform(2, 40)) for i in range(50)]
    for odd in [{}] + [{name: value} for name in ("size_gb", "array", "band", "n_spw", "n_chan", "is_mosaic", "n_eb",
                                                  "prior_hours", "prior_mem_gb") for value in (None, 0)]:
        queue = known[:-1] + [replace(known[-1], **odd)]
        rows = feature_rows(queue)
        assert rows.tobytes() == np.array([features(d) for d in queue]).tobytes(), odd


def test_a_queue_predicted_again_gets_its_data_sets_own_rows_even_where_one_was_remade():
    queue = random_archive_queue(random.Random(3), 400)
    assert np.array_equal(queue_rows(queue), feature_rows(queue), equal_nan=True)
    # the same uid remade with other metadata (an operator's edit, a retry) and new data sets, shuffled
    again = [replace(d, size_gb=(d.size_gb or 1.0) * 3, n_eb=7) if i % 5 == 0 else d for i, d in enumerate(queue)]
    again = random_archive_queue(random.Random(4), 50) + again[::-1]
    again[0] = replace(again[0], uid="new")
    assert np.array_equal(queue_rows(again), feature_rows(again), equal_nan=True)
    assert np.array_equal(queue_rows(queue[:10]), feature_rows(queue[:10]), equal_nan=True)


def test_a_prediction_behaves_as_the_frozen_value_it_is():
    p = sch.Prediction(5.0, 8.0, mean_h=4.0, sigma=0.3, shift=(0.1, 0.2))
    assert p == sch.Prediction(5.0, 8.0, "prior", 4.0, None, 0.3, shift=(0.1, 0.2))
    assert hash(p) == hash(sch.Prediction(5.0, 8.0, mean_h=4.0, sigma=0.3, shift=(0.1, 0.2)))
    assert p != replace(p, floor_h=1.0) and replace(p, floor_h=1.0).floor_h == 1.0
    assert [f.name for f in __import__("dataclasses").fields(p)][:3] == ["hours", "mem_gb", "source"]
    assert repr(p).startswith("Prediction(hours=5.0, mem_gb=8.0, source='prior', mean_h=4.0")
    with pytest.raises(AttributeError):
        p.hours = 1.0  # type: ignore[misc]
    assert p.plan_h == 4.0 and sch.Prediction(5.0, 8.0).plan_h == 5.0
    many = [p, sch.Prediction(1.0, 2.0, tail=(1.2, 1.1))]
    hours, mem = [9.0, 3.0], [12.0, 4.0]
    assert placed_all(many, hours, mem) == [q.placed_at(h, m) for q, h, m in zip(many, hours, mem)]
    assert placed_all(many, [9.0, 3.0], [12.0, 4.0])[1] == replace(many[1], hours=3.0, mem_gb=4.0)


def test_prior_medians_of_a_queue_are_each_data_sets_own():
    queue = random_archive_queue(random.Random(2), 500)
    hours, mem = _prior_medians_of(queue, sch.DEFAULT_TUNING)
    assert list(zip(hours.tolist(), mem.tolist())) == [_prior_medians(d, sch.DEFAULT_TUNING) for d in queue]


@pytest.mark.parametrize("attempts", [0, 5, 200])
def test_predicting_a_whole_queue_gives_what_predicting_one_at_a_time_gives(attempts):
    """Prior (no history), too short a history, and a fitted one with kills, floors and explicit values."""
    rng = random.Random(attempts)
    queue = random_archive_queue(rng, 400)
    model = sch.fit_history(history_of(rng, queue[:attempts]))
    assert (model.hours is not None) == (attempts >= 200)
    together = predict_all(queue, model)
    alone = {d.uid: predict(d, model) for d in queue}
    assert together.keys() == alone.keys()
    for uid, p in together.items():  # the placement values to the digit; spreads to the last bits a matrix
        q = alone[uid]               # product over one row or many may round differently
        assert (p.hours, p.mem_gb, p.mean_h, p.source, p.tail) == (q.hours, q.mem_gb, q.mean_h, q.source, q.tail)
        assert close(p, q), uid
    sources = {p.source for p in together.values()}
    assert "explicit" in sources
    assert sources - {"explicit"} == ({"history"} if attempts >= 200 else {"prior", "archive"})
    if attempts:
        floored = [d.uid for d in queue[:attempts] if model.own.get(d.uid, (0, 0))[0] > 0 and d.hours is None]
        assert floored and all(together[u].floor_h > 0 for u in floored)


def test_a_fit_learns_how_far_to_trust_the_archives_guess():
    """Two kinds of data set alike in all the metadata but the archive's guess: it says 2 h for
    those that take ~10 h and 4 h for those that take ~4 h. Before eight attempts have finished
    the guesses are placed as they stand; after, each kind is predicted near what it took."""
    def ds(uid: str, guess: float) -> DataSet:
        return DataSet(uid, size_gb=40.0, n_spw=4, n_chan=960, prior_hours=guess, prior_mem_gb=8.0)

    def took(i: int, guess: float, hours: float) -> Measured:
        d = ds(f"h{i}", guess)
        return Measured(d.uid, d.size_gb, hours * (1.1 if i % 2 else 0.9), 1.0, 8.0, "ok", n_spw=4, n_chan=960,
                        prior_hours=guess, prior_mem_gb=8.0)

    young = [took(i, 2.0, 10.0) for i in range(3)] + [took(i + 3, 4.0, 4.0) for i in range(3)]
    slow, quick = predict(ds("a", 2.0), young), predict(ds("b", 4.0), young)
    assert (slow.hours, slow.source, quick.hours) == (2.0, "archive", 4.0)
    grown = young + [took(i + 10, 2.0, 10.0) for i in range(10)] + [took(i + 30, 4.0, 4.0) for i in range(10)]
    slow, quick = predict(ds("a", 2.0), grown), predict(ds("b", 4.0), grown)
    assert slow.source == quick.source == "history"
    assert 8.5 < slow.median_h < 11.5 and 3.4 < quick.median_h < 4.6


@pytest.mark.parametrize("seed", range(5))
def test_a_bootstrap_over_attempts_sees_the_error_of_a_wrong_fit_far_from_its_history(seed):
    """Forty attempts of 5-50 GB data sets, predicted for one of 500 GB. Where hours are a power law
    of size (the fit's own form) the bootstrap's spread there is the fit's covariance's; where they
    curve upwards (a form the fit does not have) it is wider by a fifth or more, as the error is."""
    def spread_far(curved: bool) -> tuple[float, float]:
        rng = random.Random(seed)
        history = []
        for i in range(40):
            size = rng.uniform(5.0, 50.0)
            hours = (size / 10) ** (1 + (size / 50 if curved else 0)) * math.exp(rng.gauss(0, 0.1))
            history.append(Measured(f"h{i}", size, hours, 1.0, 8.0))
        model = sch.fit_history(history)
        shift = np.array(predict(DataSet("far", size_gb=500.0), model).shift)
        normal = np.random.default_rng(0).standard_normal((400, len(shift))) @ shift
        return normal.std(), (sch.coefficient_draws(history, model, 400, seed=0) @ shift).std()

    normal, boot = spread_far(curved=False)
    assert 0.8 < boot / normal < 1.25
    normal, boot = spread_far(curved=True)
    assert boot > 1.2 * normal


def test_no_fit_no_coefficient_draws():
    few = [Measured(f"h{i}", 10.0, 3.0, 1.0, 8.0) for i in range(3)]
    assert sch.coefficient_draws(few, sch.fit_history(few), 10) is None


def power_law_history(n: int) -> list[Measured]:
    """``n`` finished attempts of 10-100 GB data sets whose hours are size / 10 with a lognormal scatter of 0.3
    (the normal's quantiles, shuffled: the same shape of scatter whatever ``n``)."""
    from statistics import NormalDist

    scatter = [NormalDist(0, 0.3).inv_cdf((k + 0.5) / n) for k in range(n)]
    random.Random(n).shuffle(scatter)
    sizes = [10.0 * 10 ** (i / max(1, n - 1)) for i in range(n)]
    return [Measured(f"h{i}", s, s / 10 * math.exp(e), 1.0, 8.0) for i, (s, e) in enumerate(zip(sizes, scatter))]


def test_a_data_set_far_from_the_attempts_seen_gets_a_wider_spread_and_a_longer_placement():
    """Twenty attempts of 10-100 GB data sets: one of 3000 GB (the big ones, early) is predicted with a wider
    spread than one of 30 GB, so placement asks more of a walltime for it than its median alone would."""
    model = sch.fit_history(power_law_history(20))
    inside, far = predict(DataSet("in", size_gb=30.0), model), predict(DataSet("far", size_gb=3000.0), model)
    assert far.sigma > 1.3 * inside.sigma
    assert far.hours / far.median_h > 1.2 * (inside.hours / inside.median_h)


def test_a_young_fit_places_at_a_student_t_quantile_and_it_narrows_as_attempts_come():
    """The same law and scatter from 10 attempts and from 400: the young fit's sigma is itself uncertain,
    so its placement quantile sits further out (a Student t with n - p degrees of freedom)."""
    young, grown = (sch.fit_history(power_law_history(n)).hours for n in (10, 400))
    assert young.tail > 1.08 * grown.tail
    ds = DataSet("mid", size_gb=30.0)
    p_young, p_grown = predict(ds, sch.fit_history(power_law_history(10))), predict(ds, sch.fit_history(
        power_law_history(400)))
    assert p_young.hours / p_young.median_h > p_grown.hours / p_grown.median_h


def test_walltime_kills_of_big_data_sets_teach_every_big_data_set_not_only_themselves():
    """Small data sets finished in 2-6 h whatever their size; six big ones were killed at a 48 h walltime.
    A big data set never tried is then predicted past that walltime and kept off 48 h nodes (the kills,
    lower limits, moved the whole group), while small ones keep their hours."""
    rng = random.Random(3)
    small = [Measured(f"s{i}", rng.uniform(10, 30), rng.uniform(2, 6), 1.0, 8.0, "ok", "12m", 6, 4, 960, False, 1)
             for i in range(40)]
    killed = [Measured(f"b{i}", rng.uniform(280, 320), 48.0, 1.0, None, "walltime", "12m", 6, 4, 960, False, 1)
              for i in range(6)]
    big, little = (DataSet(uid, size_gb=size, array="12m", band=6, n_spw=4, n_chan=960, is_mosaic=False, n_eb=1)
                   for uid, size in (("new-big", 300.0), ("new-small", 20.0)))
    taught, naive = sch.fit_history(small + killed), sch.fit_history(small)
    assert predict(big, taught).median_h > 48.0 > 4 * predict(big, naive).median_h
    assert sch.why_not(big, predict(big, taught), sch.NodeState("mup", mem_gb=64.0, walltime_h=48.0)) is not None
    assert predict(little, taught).median_h < 1.5 * predict(little, naive).median_h


def _memory_history(mem_gb: list[float], limit: float = 64.0) -> list[Measured]:
    """Attempts of like data sets (no metadata tells them apart) with these peak memories, run on
    ``limit`` GB nodes: those over it were killed there (they needed more: censored)."""
    return [Measured(f"m{i}", 40.0, 5.0, 1.0, min(m, limit), outcome="memory" if m > limit else "ok")
            for i, m in enumerate(mem_gb)]


def test_a_memory_mixture_gets_the_kill_chances_that_come_not_a_lognormals():
    """Most data sets small, one in eight a big cube anywhere from 24 to 480 GB: one lognormal
    over the lot is wide and puts far too many over a 24 GB workstation (about a third where one
    in six come); the fit's own residual tail says about what comes, at 24 GB and at 64 GB."""
    from ari_console.scheduler.eligibility import curve_exceed, exceed

    rng = np.random.default_rng(3)
    mem = np.exp(rng.normal(np.log(10.0), 0.55, 2000))
    big = rng.random(2000) < 0.12
    mem[big] = np.exp(rng.uniform(np.log(24), np.log(480), big.sum()))
    p = predict(DataSet("u", size_gb=40.0), _memory_history(mem.tolist()))
    assert p.mem_curve
    for limit in (24.0, 64.0):
        own = float(curve_exceed(p.mem_curve, [p.mem_median_gb], [p.mem_sigma], [0.0], limit)[0])
        assert abs(own - float(np.mean(mem > limit))) < 0.02
    assert float(exceed(p.mem_median_gb, p.mem_sigma * p.tail[1], 0.0, 24.0)[()]) > float(np.mean(mem > 24)) + 0.1
    # killed at 24 GB: the chance it is over 64 GB too is that of the big cubes (~2/3), not the lognormal's
    killed = float(curve_exceed(p.mem_curve, [p.mem_median_gb], [p.mem_sigma], [24.0], 64.0)[0])
    assert abs(killed - float(np.mean(mem > 64) / np.mean(mem > 24))) < 0.06


def test_memory_that_is_lognormal_keeps_the_lognormal():
    """Residuals a normal explains (up to chance) carry no curve: the normal's tail, widened for a
    young fit, is what placement weighs."""
    rng = np.random.default_rng(4)
    p = predict(DataSet("u", size_gb=40.0), _memory_history(np.exp(rng.normal(np.log(10.0), 0.5, 2000)).tolist()))
    assert p.mem_sigma > 0 and p.mem_curve == ()


def test_kill_chances_read_off_two_residual_curves_in_turn_are_each_curves_own():
    from ari_console.scheduler.eligibility import curve_exceed

    light = ((-1.0, 0.0, 1.0), (0.8, 0.5, 0.1))
    heavy = ((-1.0, 0.0, 1.0), (0.9, 0.8, 0.7))
    once = {id(c): curve_exceed(c, [10.0], [1.0], [0.0], 20.0).tolist() for c in (light, heavy)}
    for c in (light, heavy, light, heavy):  # each read right after the other curve's
        assert curve_exceed(c, [10.0], [1.0], [0.0], 20.0).tolist() == once[id(c)]
    assert once[id(light)][0] < once[id(heavy)][0]

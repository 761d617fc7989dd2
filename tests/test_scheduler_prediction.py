"""Predictions at queue scale: the vectorised path gives each data set's own numbers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from ari_console import scheduler as sch
from ari_console.scheduler import DataSet, Measured, predict, predict_all
from ari_console.scheduler.prediction import _prior_medians, _prior_medians_of, feature_rows, features


def random_archive_queue(rng: random.Random, n: int) -> list[DataSet]:
    """Data sets with the archive's metadata, each field unknown now and then, a few explicit values."""
    def maybe(p_unknown: float, value):
        return None if rng.random() < p_unknown else value

    return [DataSet(f"u{i}", size_gb=maybe(0.1, rng.choice([0.0, round(math.exp(rng.gauss(3, 1.2)), 2)])),
                    hours=maybe(0.9, round(rng.uniform(1, 30), 3)), mem_gb=maybe(0.9, round(rng.uniform(2, 60), 1)),
                    array=maybe(0.1, rng.choice(["12m", "7m", ""])), band=maybe(0.1, rng.randint(3, 10)),
                    n_spw=maybe(0.2, rng.choice([1, 2, 4, 8])), n_chan=maybe(0.2, rng.choice([128, 960, 3840])),
                    is_mosaic=maybe(0.2, rng.random() < 0.2), n_eb=maybe(0.3, rng.randint(1, 4)))
            for i in range(n)]


def history_of(rng: random.Random, queue: list[DataSet]) -> list[Measured]:
    """Finished attempts of the queue's first data sets, some killed (floors), some still running."""
    return [Measured(d.uid, d.size_gb, rng.lognormvariate(1.8, 0.8), rng.choice([0.6, 1.0, 1.2]),
                     rng.uniform(4, 30), rng.choice(["ok"] * 6 + ["walltime", "memory", "running"]),
                     d.array, d.band, d.n_spw, d.n_chan, d.is_mosaic, d.n_eb)
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
    assert "explicit" in sources and sources - {"explicit"} == {"history" if attempts >= 200 else "prior"}
    if attempts:
        floored = [d.uid for d in queue[:attempts] if model.own.get(d.uid, (0, 0))[0] > 0 and d.hours is None]
        assert floored and all(together[u].floor_h > 0 for u in floored)

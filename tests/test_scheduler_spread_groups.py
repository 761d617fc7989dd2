"""A scatter that differs by group of data sets: with per-group scatter on (``Tuning.spread_bins``), the fit
follows it where the history is long enough."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ari_console import scheduler as sch
from ari_console.scheduler import DataSet, Measured

GROUPS = sch.Tuning(spread_bins=6)
"""Per-group scatter on (off by default)."""
NOISY_BAND = 7
"""The band whose hours scatter 0.9 in log (the others 0.25): in the middle of the bands, so no straight
line in band number can carry it."""


def band_workload(n: int, seed: int) -> tuple[list[DataSet], np.ndarray]:
    """``n`` data sets of bands 3-10 whose hours are a power law of size, with a lognormal scatter of 0.9 at
    :data:`NOISY_BAND` and 0.25 at the others; (data sets, true hours)."""
    rng = np.random.default_rng(seed)
    size = np.exp(rng.normal(math.log(30.0), 0.8, n))
    band = rng.choice([3, 4, 5, 6, 7, 8, 9, 10], n)
    spread = np.where(band == NOISY_BAND, 0.9, 0.25)
    hours = 6.0 * (size / 30.0) ** 0.8 * np.exp(rng.normal(0.0, 1.0, n) * spread)
    queue = [DataSet(f"s{seed}-{i}", size_gb=float(s), band=int(b), n_spw=4, n_chan=960, array="12m")
             for i, (s, b) in enumerate(zip(size, band))]
    return queue, hours


def history(queue: list[DataSet], hours: np.ndarray) -> list[Measured]:
    return [Measured(d.uid, d.size_gb, float(h), 1.0, 8.0, "ok", d.array, d.band, d.n_spw, d.n_chan)
            for d, h in zip(queue, hours)]


@pytest.mark.parametrize("seed", range(3))
def test_a_noisy_group_gets_a_wider_band_that_holds_its_data_sets(seed):
    """600 attempts teach the fit; on 3000 new data sets the noisy band's P10-P90 is much wider than a quiet
    band's, and it holds 70-90 % of the noisy band's true hours (an honest band holds 80 %), as the quiet
    bands' hold theirs: a scatter pooled over the bands holds ~40 % of the noisy band and ~95 % of
    the quiet ones."""
    queue, hours = band_workload(3600, seed)
    model = sch.fit_history(history(queue[:600], hours[:600]), GROUPS)
    new, truth = queue[600:], hours[600:]
    preds = sch.predict_all(new, model, GROUPS)
    median = np.array([preds[d.uid].median_h for d in new])
    sigma = np.array([preds[d.uid].sigma for d in new])
    p10, p90 = (sch.quantiles_above(median, sigma, 0.0, q) for q in (0.1, 0.9))
    noisy = np.array([d.band == NOISY_BAND for d in new])
    width = p90 / p10
    assert np.median(width[noisy]) > 2.5 * np.median(width[~noisy])
    inside = (p10 <= truth) & (truth <= p90)
    assert 0.70 <= inside[noisy].mean() <= 0.90
    assert 0.70 <= inside[~noisy].mean() <= 0.92


@pytest.mark.parametrize("seed", range(3))
def test_a_group_with_few_attempts_is_drawn_towards_the_pooled_scatter(seed):
    """Only 20 of 600 attempts are of the noisy band (its scatter 3.6 x the others'): a new data set of that
    band is predicted wider than a quiet one, but nearer the pooled scatter than its own (20 squared residuals
    say little about a variance); with 6 attempts, no wider than the rest."""
    queue, hours = band_workload(6000, 10 + seed)
    noisy = np.array([d.band == NOISY_BAND for d in queue])
    probe = [DataSet("n", size_gb=30.0, band=NOISY_BAND, n_spw=4, n_chan=960, array="12m"),
             DataSet("q", size_gb=30.0, band=6, n_spw=4, n_chan=960, array="12m")]

    def ratio(few: int) -> float:
        keep = np.flatnonzero(~noisy)[:600 - few].tolist() + np.flatnonzero(noisy)[:few].tolist()
        preds = sch.predict_all(probe, sch.fit_history(history([queue[i] for i in keep], hours[keep]), GROUPS), GROUPS)
        return preds["n"].sigma / preds["q"].sigma

    assert 1.1 < ratio(20) < 2.5
    assert ratio(6) < 1.3

"""Runtime and memory predictions: the study's prior, then fits of history.

Pure: values in, values out. Every tunable is a field of :class:`Tuning`,
passed in (``tuning=``); the module constants below are only its defaults.

A prediction is a distribution, not a number: log(hours) is normal around a
fit of the archive's metadata (log size, log channels, mosaic, 7 m array, log
execution blocks, band), with the fit's residual spread (itself fitted on the
metadata once the history is long enough: big data sets are often less
predictable than small ones; optionally per group of like data sets,
shrunk towards the pooled scatter where the group has few attempts:
``Tuning.spread_bins``) plus its coefficient uncertainty, and cut below at
what the data set is known to need (a
walltime kill after W h: more than W; a memory kill at P GB: more than P;
an attempt still running after R h: more than R). Placement checks a high
quantile against walltimes and memory; plans add up the expected value;
forecasts draw from the whole distribution.

A young fit (few attempts) is uncertain twice over, and both widen what
placement weighs: its coefficients (a data set far from the attempts seen so
far, such as a big one early in a campaign, gets the wider spread of the
fit's error there: sigma^2 (1 + h), h its leverage) and its sigma (estimated
from n - p degrees of freedom, so the placement quantile is a Student t's,
not a normal's: ``Fit.tail``).

The fit treats attempts killed (by the walltime, or for memory part-way) and
attempts still running as censored (they needed *at least* the hours they
ran), so a history of the quick ones does not teach that everything is quick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from itertools import repeat
from operator import attrgetter, eq, is_, mul
from typing import Iterable, Mapping, Sequence

from .values import DataSet, Measured, NodeState, Prediction, _new_tuple

# -- priors (from the 2017 study; see docs/estimate.md) ------------------------
PRIOR_MEDIAN_HOURS = 6.0
"""Median hours per data set on the reference machine (study: median 6 h)."""
PRIOR_MEDIAN_SIZE_GB = 40.0
"""Size of the median data set the prior hours refer to (assumed)."""
PRIOR_SIZE_EXPONENT = 0.9
"""Runtime grows a little slower than linearly with data size (assumed)."""
PRIOR_HOURS_SIGMA = 0.8
"""Log-sd of hours around the prior (study: lognormal, spread ~0.8)."""
PRIOR_QUANTILE = 0.8
"""Quantile of the prior placement checks (the median x ~2 for hours)."""
PRIOR_MEM_GB = 12.0
"""Median peak memory without history or size (study: mostly 4-24 GB)."""
PRIOR_MEM_PER_GB = 0.2
"""Extra GB of median memory per GB of data above the median size (assumed)."""
PRIOR_MEM_SIGMA = 0.35
"""Log-sd of peak memory around the prior (assumed)."""
PRIOR_SHIFT_SIGMA = 0.4
"""Log-sd of the prior's error common to every data set (the archive may be slower than the study's)."""
MOSAIC_FACTOR = 1.5
"""Prior hours and memory of a mosaic relative to a single field (assumed)."""
REFERENCE_CHANNELS = 4 * 1920
"""Total channels (spw x channels) the prior hours refer to; more channels cost more (sqrt)."""
HOURS_QUANTILE = 0.95
"""Quantile of the fitted hours placement checks against walltimes (conservative, not the mean)."""
MEM_QUANTILE = 0.95
"""Quantile of the fitted peak memory placement checks against node memory."""
MIN_HISTORY = 8
"""Finished attempts needed before the history fit replaces the prior."""
RETRY_MARGIN = 1.25
"""A data set that died for memory/walltime needs at least this times what it used when no spread is known."""
RIDGE = 1e-4
"""Ridge penalty per finished attempt on the fit's slopes (keeps thin histories stable)."""
SPREAD_MIN_HISTORY = 60
"""Finished attempts needed before the scatter is fitted per data set (a function of the metadata)."""
SPREAD_RIDGE = 0.05
"""Ridge penalty per finished attempt on the scatter fit's slopes (a variance is noisier than a mean)."""
SPREAD_RANGE = (0.5, 2.5)
"""The least and most a data set's scatter may differ from the history's pooled one (a factor)."""
SURVIVAL_MIN_HISTORY = 30
"""Exact attempts a fit needs before kill chances come from its residuals' own tail (:attr:`Fit.survival`)."""
SURVIVAL_DEPARTURE = 0.05
"""How far (in chance) the residuals' own tail must depart from the normal's somewhere to replace it."""
SPREAD_ROUNDS = 0
"""(Off by default: on the hidden-truth benchmark it did not make the forecasts better; 1 to use.) Refits of
the scatter with each censored attempt's expected square under a scatter halfway (in log) from the pooled one
to its own: early in a campaign the noisy long data sets are the ones still running, and their
squares at the pooled scatter flatten the fit (all the way to its own feeds back on itself and runs away)."""
SPREAD_BINS = 0
"""(0: off, the line alone; 6 to use: on the hidden-truth benchmark the groups made the data sets' own bands
honest in more groups but not the forecasts better, see docs/estimate.md.) Groups per continuous feature
(and of the fitted log median) the scatter is looked at in: the history's quantiles; a feature with at most
twice this many values (band, array, mosaic) is grouped by value."""

FEATURES = ("log size", "log channels", "mosaic", "7m array", "log execution blocks", "band",
            "log archive hours", "log archive memory")
"""What the fits regress log(hours) and log(peak memory) on; a missing value counts as the history's mean.
The archive's own guesses are features like the rest: the fit learns how far to trust them."""

@dataclass(frozen=True)
class Tuning:
    """The prediction's tunables (defaults: the module constants above)."""

    median_hours: float = PRIOR_MEDIAN_HOURS
    median_size_gb: float = PRIOR_MEDIAN_SIZE_GB
    size_exponent: float = PRIOR_SIZE_EXPONENT
    hours_sigma: float = PRIOR_HOURS_SIGMA
    prior_quantile: float = PRIOR_QUANTILE
    mem_gb: float = PRIOR_MEM_GB
    mem_per_gb: float = PRIOR_MEM_PER_GB
    mem_sigma: float = PRIOR_MEM_SIGMA
    prior_shift_sigma: float = PRIOR_SHIFT_SIGMA
    mosaic_factor: float = MOSAIC_FACTOR
    reference_channels: int = REFERENCE_CHANNELS
    hours_quantile: float = HOURS_QUANTILE
    mem_quantile: float = MEM_QUANTILE
    min_history: int = MIN_HISTORY
    retry_margin: float = RETRY_MARGIN
    ridge: float = RIDGE
    spread_min_history: int = SPREAD_MIN_HISTORY
    spread_ridge: float = SPREAD_RIDGE
    spread_range: tuple[float, float] = SPREAD_RANGE
    spread_bins: int = SPREAD_BINS
    spread_rounds: int = SPREAD_ROUNDS
    survival_min_history: int = SURVIVAL_MIN_HISTORY
    survival_departure: float = SURVIVAL_DEPARTURE


DEFAULT_TUNING = Tuning()


# -- fits ------------------------------------------------------------------------

@dataclass(frozen=True)
class Fit:
    """log(y) = coef . [1, features - center] + normal(0, sigma); ``chol`` is the
    Cholesky factor of the coefficients' covariance (their uncertainty)."""

    coef: tuple[float, ...]
    used: tuple[int, ...]
    center: tuple[float, ...]
    sigma: float
    chol: tuple[tuple[float, ...], ...]
    n: int
    residuals: tuple[float, ...] = ()  # of the history in units of their own spread (censored ones at their
    # expectation): for resampling
    tail: float = 1.0  # how much wider the placement quantile is than the normal's: heavy-tailed residuals, times
    # a Student t's over the normal's (sigma estimated from n - p degrees of freedom)
    spread: tuple[float, ...] = ()  # log(variance / sigma^2) = spread . design row: scatter that grows with the
    # metadata (big data sets less predictable than small ones); () for one scatter for all
    spread_groups: tuple[tuple[int, tuple[float, ...], tuple[float, ...]], ...] = ()  # (column, edges, shifts):
    # the log variance of a data set in group g of a column (a feature, or -1: the fitted log median) departs
    # from the line above by shifts[g], each shrunk towards 0 by how many attempts its group has (_spread)
    survival: tuple[tuple[float, ...], tuple[float, ...]] = ()  # (units, P(unit > each)): the residuals'
    # own tail (Kaplan-Meier, censored ones at their limit), from SURVIVAL_MIN_HISTORY exact attempts; () before
    pool: tuple[float, ...] = ()  # the hours residuals' distribution with the censored attempts as lower limits
    # (:func:`survival_residuals`), as an evenly weighted pool: what forecasts resample
    longest: float = math.inf  # the furthest log(hours / fitted median) seen (a censored attempt: at its limit):
    # no draw from ``pool`` goes further, whatever the data set's scatter
    pool_tail: tuple[float, ...] = ()  # (reach, threshold, mean excess) of the pool's exponential tail and the
    # mean excess of its top TAIL_RECORDS values over the next, in units (:func:`survival_residuals`): how a
    # forecast carries it past the furthest seen (:func:`extended_pool`)
    longest_gap: float = 0.0  # the mean excess of the TAIL_RECORDS furthest log(hours / fitted median) over the
    # next: how far the furthest moves as the history grows (a forecast's cap past ``longest``)


@dataclass(frozen=True)
class Model:
    """Fits of log(hours) and log(peak memory) on the metadata, from history.

    ``None`` fits mean too little history: the prior is used. ``own`` holds,
    per uid, the hours (speed 1.0) and memory its own attempts showed it needs
    at least.
    """

    hours: Fit | None = None
    mem: Fit | None = None
    own: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # uid -> (min hours, min mem)


def features(x: DataSet | Measured) -> list[float]:
    """The metadata of a data set (or of an attempt's data set) as numbers; NaN where unknown.

    >>> features(DataSet("u", size_gb=math.e, n_spw=4, n_chan=1, is_mosaic=True, array="12m"))
    [1.0, 1.3862943611198906, 1.0, 0.0, nan, nan, nan, nan]
    """
    nan = math.nan
    size = x.size_gb
    channels = x.n_spw * x.n_chan if x.n_spw and x.n_chan else None
    return [math.log(size) if size and size > 0 else nan,
            math.log(channels) if channels else nan,
            nan if x.is_mosaic is None else float(bool(x.is_mosaic)),
            nan if not x.array else float(x.array == "7m"),
            math.log(x.n_eb) if x.n_eb else nan,
            float(x.band) if x.band else nan,
            math.log(x.prior_hours) if x.prior_hours and x.prior_hours > 0 else nan,
            math.log(x.prior_mem_gb) if x.prior_mem_gb and x.prior_mem_gb > 0 else nan]


_METADATA = attrgetter("size_gb", "n_spw", "n_chan", "is_mosaic", "array", "n_eb", "band", "prior_hours",
                       "prior_mem_gb")


def feature_rows(items: Sequence[DataSet | Measured]):
    """:func:`features` of many data sets (or attempts) at once, as an (n, 6) array.

    Column by column, with the same arithmetic as :func:`features` (``math.log``,
    not numpy's, whose last bit may differ), so each row equals ``features(x)``;
    about ten times faster on a long queue.

    >>> feature_rows([DataSet("u", size_gb=math.e, n_spw=4, n_chan=1, is_mosaic=True, array="12m")]).tolist()
    [[1.0, 1.3862943611198906, 1.0, 0.0, nan, nan, nan, nan]]
    """
    import numpy as np

    out = np.empty((len(items), len(FEATURES)))
    if not len(items):
        return out
    size, spw, chan, mosaic, array, eb, band, guess_h, guess_m = zip(*map(_METADATA, items))
    log, nan = math.log, math.nan
    # each column in C (map) where no value is missing, the common case; else value by value
    out[:, 0] = _mapped(log, size) or [log(s) if s and s > 0 else nan for s in size]
    out[:, 1] = (_mapped(log, _mapped(mul, spw, chan) or (0,))
                 or [log(w * c) if w and c and w * c else nan for w, c in zip(spw, chan)])
    out[:, 2] = (list(map(bool, mosaic)) if None not in mosaic
                 else [nan if m is None else float(bool(m)) for m in mosaic])
    out[:, 3] = (list(map(eq, array, repeat("7m"))) if all(array)
                 else [float(a == "7m") if a else nan for a in array])
    out[:, 4] = _mapped(log, eb) or [log(e) if e else nan for e in eb]
    out[:, 5] = (all(band) and _mapped(float, band)) or [float(b) if b else nan for b in band]
    for k, guess in ((6, guess_h), (7, guess_m)):
        out[:, k] = (nan if guess.count(None) == len(guess)
                     else _mapped(log, guess) or [log(g) if g and g > 0 else nan for g in guess])
    return out


_ROWS: list = [None]
"""[uid -> row, the data sets (and a None past them), their :func:`feature_rows` (room to grow past them),
the longest queue since] of what :func:`queue_rows` saw; added to in place, at a cost of the call's queue."""


def queue_rows(queue: Sequence[DataSet]):
    """:func:`feature_rows` of ``queue``, a row reused wherever its data set is the very object an
    earlier call saw (a data set's metadata never changes: frozen): a refit predicts a queue whose
    data sets it predicted before. The rows of the data sets not seen are made and kept with the
    others (a queue of a few, such as a replay's retry, is made at once and not kept); all are
    forgotten when they outnumber twice a queue at least half the longest since (launched and gone).

    >>> many = [DataSet(f"u{i}", size_gb=math.e ** (i % 3)) for i in range(100)]
    >>> queue_rows(many[:80])[:4, 0].tolist(), queue_rows(many[::-1])[:4, 0].tolist()
    ([0.0, 1.0, 2.0, 0.0], [0.0, 2.0, 1.0, 0.0])
    """
    import numpy as np

    n = len(queue)
    if n < 64:  # a few (a replay's retry, the running ones): made at once, sooner than looked up
        return feature_rows(queue)
    kept = _ROWS[0]
    if kept is None or (len(kept[1]) > 2 * n + 1000 and 2 * n >= kept[3]):
        rows = feature_rows(queue)
        _ROWS[0] = [dict(zip(map(_UID, queue), range(n))), [*queue, None], rows, n]
        return rows
    index, before, rows, longest = kept
    end = len(before) - 1  # where the None is: a uid not kept points there
    at = list(map(index.get, map(_UID, queue), repeat(end)))
    same = np.fromiter(map(is_, map(before.__getitem__, at), queue), dtype=bool, count=n)
    take = np.array(at, dtype=np.intp).reshape(n)
    if not same.all():
        fresh = np.flatnonzero(~same)
        new = list(map(queue.__getitem__, fresh.tolist()))
        take[fresh] = end + np.arange(len(fresh))
        index.update(zip(map(_UID, new), take[fresh].tolist()))
        before[end:] = [*new, None]
        if end + len(new) > len(rows):  # room for twice as many: a replay adds a few rows a call
            rows = np.concatenate((rows[:end], np.empty((max(end, len(new)) * 2, rows.shape[1]))))
        rows[end:end + len(new)] = feature_rows(new)
        kept[2] = rows
    kept[3] = max(longest, n)
    return rows[take]


def _mapped(f, *columns) -> list | None:
    """``list(map(f, *columns))``, or None where ``f`` refuses a value (a missing one, a log of 0)."""
    try:
        return list(map(f, *columns))
    except (TypeError, ValueError):
        return None


def _design(rows, fit: Fit):
    """The fit's design matrix for feature rows (missing values at the center)."""
    import numpy as np

    sub = rows[:, list(fit.used)] - np.asarray(fit.center)
    sub[np.isnan(sub)] = 0.0
    return np.hstack([np.ones((len(rows), 1)), sub])


def _mills(a):
    """phi(a) / (1 - Phi(a)), the normal's inverse Mills ratio, stable for large a."""
    import numpy as np
    from scipy.special import erfcx

    return np.sqrt(2 / np.pi) / erfcx(a / np.sqrt(2))


def _fit(rows, y, censored, tuning: Tuning, q: float, once=None, settled=None) -> Fit | None:
    """A :class:`Fit` of ``y`` (log values; censored ones are lower limits) on feature ``rows``.

    Ridge least squares, then a few EM steps for the censored values (a Tobit
    fit): each is replaced by its expectation above its limit under the fit.
    ``once`` (a mask): the values its residual curve (:attr:`Fit.survival`) is read from, one per data
    set (a data set killed and run again is in the history twice: counted twice, the big ones would
    look twice as common); None: no curve (the hours fit's tail is its ``pool``, resampled).
    ``settled`` (a mask; the hours fit's): the lower limits its residual pool (:attr:`Fit.pool`) leaves
    out, each data set being one limit at most (:func:`_settled`); None: no pool.
    """
    import numpy as np

    exact = ~censored
    if exact.sum() < tuning.min_history:
        return None
    used = tuple(j for j in range(rows.shape[1])
                 if np.sum(~np.isnan(rows[exact, j])) >= tuning.min_history and np.nanstd(rows[exact, j]) > 1e-9)
    center = tuple(float(np.nanmean(rows[:, j])) for j in used)
    fit = Fit((), used, center, 0.0, (), int(exact.sum()))
    x = _design(rows, fit)
    p = x.shape[1]
    beta, sigma, gram_inv, target = _tobit(x, y, censored, tuning)
    cov = sigma ** 2 * gram_inv
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(p))
    resid = target - x @ beta
    square = resid ** 2
    if censored.any():  # a censored value's expected squared residual above its limit (it is long: often far)
        a = (y[censored] - x[censored] @ beta) / sigma
        square[censored] = sigma ** 2 * (1 + a * _mills(a))
    mu = x @ beta
    spread, groups = _spread(x, rows, mu, square, ~censored, sigma, tuning)
    scale = _scale(x, rows, mu, spread, groups, tuning) if spread else np.ones(len(y))
    for _ in range(tuning.spread_rounds if spread and censored.any() else 0):
        own = sigma * np.sqrt(scale[censored])  # halfway (in log) from the pooled scatter to its own: SPREAD_ROUNDS
        a = (y[censored] - mu[censored]) / own
        square[censored] = own ** 2 * (1 + a * _mills(a))
        spread, groups = _spread(x, rows, mu, square, ~censored, sigma, tuning)
        scale = _scale(x, rows, mu, spread, groups, tuning)
    unit = (resid / (sigma * scale)).round(5)
    seen = int(np.sum(once & exact)) if once is not None else 0
    survival = (_survival(((y - mu) / (sigma * scale))[once], censored[once])
                if once is not None and seen >= tuning.survival_min_history else ())
    if survival and not _unlike_normal(survival, seen, tuning.survival_departure):
        survival = ()
    pool, pool_tail = (), ()
    if settled is not None:  # the hours fit's: what forecasts resample
        keep = ~settled if len(settled) == len(y) else np.ones(len(y), dtype=bool)
        drawn, pool_tail = survival_residuals(np.where(censored, (y - mu) / (sigma * scale), unit)[keep],
                                              censored[keep], fitted=True)
        pool = tuple(np.round(drawn, 5).tolist())
    from scipy.special import ndtri, stdtrit

    tail = max(1.0, float(np.quantile(unit, q)) / float(ndtri(q))) if 0.5 < q < 1 else 1.0
    if 0.5 < q < 1:  # sigma is itself estimated, from n - p degrees of freedom: a Student t's quantile
        tail *= float(stdtrit(max(1.0, float(exact.sum()) - p), q)) / float(ndtri(q))
    return Fit(tuple(float(b) for b in beta), used, center, sigma,
               tuple(tuple(float(v) for v in r) for r in chol), int(exact.sum()), tuple(unit.tolist()), tail, spread,
               groups, survival, pool, float(np.max(y - mu)), pool_tail, _record_gap(y - mu))


def _survival(unit, censored) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(exact units, P(unit > each)) of residuals (in units of their spread; censored ones are lower
    limits): Kaplan-Meier with one more at risk than there are (the largest seen is not the largest
    possible). A mixture (most data sets small, one in eight anywhere up to 50x) is far from one
    lognormal: its chance of exceeding a node's memory is read off what came, not off a normal.

    >>> import numpy as np
    >>> _survival(np.array([-1.0, 0.0, 0.5, 1.0]), np.array([False, False, True, False]))
    ((-1.0, 0.0, 1.0), (0.8, 0.6, 0.3))
    """
    v, c, _, left = _product_limit(unit, censored, extra_at_risk=1)
    exact = ~c
    return tuple(v[exact].round(5).tolist()), tuple(left[exact].round(6).tolist())


def _product_limit(values, censored, extra_at_risk: int = 0):
    """The Kaplan-Meier product of values whose ``censored`` ones are lower limits: (values sorted, at a
    tie the exact one first (it was at risk then), their censored flags, how many were at risk at each
    (plus ``extra_at_risk``), the chance of exceeding each). Shared by the memory fit's curve
    (:func:`_survival`) and the forecast's residual pool (:func:`survival_residuals`).

    >>> import numpy as np
    >>> _product_limit(np.array([1.0, 0.0, 2.0]), np.array([False, True, False]))[3].tolist()
    [1.0, 0.5, 0.0]
    """
    import numpy as np

    order = np.lexsort((censored, values))
    v, c = values[order], censored[order]
    at_risk = len(v) - np.arange(len(v)) + extra_at_risk
    return v, c, at_risk, np.cumprod(np.where(c, 1.0, 1.0 - 1.0 / at_risk))


def _unlike_normal(curve, n: int, departure: float = SURVIVAL_DEPARTURE) -> bool:
    """Whether a residual curve departs from the normal's by more than chance (a Kolmogorov-Smirnov
    test at 1 % over ``n`` exact attempts) and by more than ``departure`` somewhere: a mixture of
    small and huge memories, not a normal's sampling noise.

    >>> import numpy as np
    >>> from scipy.special import ndtr
    >>> z = np.linspace(-2, 2, 101)
    >>> [_unlike_normal((z, ndtr(-z / 2)), n) for n in (1000, 100)], _unlike_normal((z, ndtr(-z)), 1000)
    ([True, False], False)
    """
    import numpy as np
    from scipy.special import ndtr

    units, left = _curve_arrays(curve)
    return float(np.max(np.abs(left - ndtr(-units)))) > max(departure, 1.63 / math.sqrt(max(n, 1)))


_CURVE_KEPT: list = [None]
"""(curve, its arrays) of the last :func:`_curve_arrays` call."""


def _curve_arrays(curve):
    """(units, chances above) of a residual curve as arrays. A fit's curve (a tuple of one point per
    attempt: thousands) is shared by all its predictions and read many times per plan (each node
    class's kill chance, each quantile level): it is converted once, while it is the last one asked
    (kept by identity: the curve is immutable).

    >>> c = ((-1.0, 0.0), (0.8, 0.6))
    >>> _curve_arrays(c)[1].tolist(), _curve_arrays(c)[0] is _curve_arrays(c)[0]
    ([0.8, 0.6], True)
    """
    import numpy as np

    kept = _CURVE_KEPT[0]
    if kept is not None and kept[0] is curve:
        return kept[1]
    arrays = (np.asarray(curve[0]), np.asarray(curve[1]))
    for a in arrays:
        a.flags.writeable = False  # shared by every caller: read only
    _CURVE_KEPT[0] = (curve, arrays)
    return arrays


def curve_above(curve, z):
    """P(unit > ``z``) (an array) on a :attr:`Fit.survival` curve: linear between its points, the
    normal's tail shape beyond its last.

    >>> [round(float(p), 3) for p in curve_above(((-1.0, 0.0, 1.0), (0.8, 0.6, 0.3)), [-2.0, 0.5, 2.0])]
    [1.0, 0.45, 0.043]
    """
    import numpy as np
    from scipy.special import ndtr

    units, left = _curve_arrays(curve)
    z = np.asarray(z, dtype=float)
    inside = np.interp(z, units, left, left=1.0, right=left[-1])
    beyond = left[-1] * ndtr(-z) / max(float(ndtr(-units[-1])), 1e-300)
    return np.where(z > units[-1], np.minimum(beyond, left[-1]), inside)


def curve_unit(curve, above):
    """The unit that is exceeded with chance ``above`` (an array) on a :attr:`Fit.survival` curve
    (:func:`curve_above`'s inverse).

    >>> [round(float(z), 3) for z in curve_unit(((-1.0, 0.0, 1.0), (0.8, 0.6, 0.3)), [0.45, 0.043])]
    [0.5, 2.0]
    """
    import numpy as np
    from scipy.special import ndtr, ndtri

    units, left = _curve_arrays(curve)
    above = np.clip(np.asarray(above, dtype=float), 1e-12, 1.0)
    inside = np.interp(-above, -left, units)
    beyond = -ndtri(np.clip(above / left[-1] * ndtr(-units[-1]), 1e-300, 0.5))
    return np.where(above < left[-1], np.maximum(beyond, units[-1]), inside)


SURVIVAL_TAIL = 0.9
"""The share of the residuals' distribution below the tail :func:`survival_residuals` fits."""
TAIL_RECORDS = 10
"""How many of the furthest residuals tell how far the furthest moves as more come (:func:`_record_gap`)."""


def _record_gap(values, records: int = TAIL_RECORDS) -> float:
    """The mean excess of the ``records`` largest ``values`` over the next largest (0 with fewer values): the
    growth of the largest per e-fold of values seen, as the tail at the very top shows it. An exponential tail's
    mean excess anywhere; less where the top is thinner (a normal's, or a tail bounded above: values heaped
    below a limit show small gaps), so the furthest is carried no further than its own records go.

    >>> _record_gap([0.0, 1.0, 2.0, 4.0], records=2)
    2.0
    """
    import numpy as np

    values = np.asarray(values, dtype=float)
    if len(values) <= records:
        return 0.0
    top = np.partition(values, -records - 1)[-records - 1:]  # the next largest first, then the records
    return float(np.mean(top[1:]) - top[0])


def survival_residuals(values, censored, size: int | None = None, tail: float = SURVIVAL_TAIL, fitted: bool = False):
    """An evenly weighted pool of ``size`` residuals (default: as many as ``values``) of the
    distribution ``values`` come from when the ``censored`` ones are lower limits (attempts killed,
    or still running: they needed at least that much).

    Early in a campaign the attempts that finished are the quick ones, and the long ones are still
    running or were killed at a walltime: taking each of those at its normal expectation just above
    its limit draws a tail that only the long runs show far too rarely. Below the top ``1 - tail``
    the pool follows the product-limit (Kaplan-Meier) estimate, each censored value's share going
    to the values above it. The top is an exponential tail (in the residuals' units: a power law in
    hours) above that quantile, its mean excess fitted by maximum likelihood with censoring: the
    excess above the threshold of every value there over the finished ones among them (a censored
    one is exposure without an event), cut at the furthest value seen (finished, or a censored one's
    limit). A normal's top tenth gives a mean excess of ~0.5; attempts running far past their
    predictions give more. (The product-limit estimate alone heaps the share of every long runner on
    the few long attempts that happened to finish; the exponential tail uncut puts the mean of the
    hours drawn from it in its last few points: 2-5x the truth on ``pareto``.)

    Three finished at -1, 0 and 1, one still running at 2: its quarter lies beyond 1, up to 2:

    >>> import numpy as np
    >>> survival_residuals(np.array([-1.0, 0.0, 1.0, 2.0]), np.array([False, False, False, True]), 8).round(2).tolist()
    [-1.0, -1.0, 0.0, 0.0, 1.0, 1.0, 1.29, 2.0]

    With ``fitted``: (the pool, (reach, threshold, mean excess) of its exponential tail and the mean excess of
    its top values over the next (:func:`_record_gap`); () without a tail).
    """
    import numpy as np

    values = np.asarray(values, dtype=float)
    censored = np.asarray(censored, dtype=bool)
    size = len(values) if size is None else size
    if censored.all() or not len(values):
        return (np.resize(values, size), ()) if fitted else np.resize(values, size)
    v, c, at_risk, after = _product_limit(values, censored)
    before = np.concatenate(([1.0], after[:-1]))
    cdf = np.cumsum(np.where(c, 0.0, before / at_risk))
    reach = min(tail, float(cdf[-1]))  # the estimate reaches no higher than its last finished value
    u = v[min(int(np.searchsorted(cdf, reach * (1 - 1e-12))), len(v) - 1)]
    top = v > u
    excess = float(np.sum(v[top] - u)) / max(int((top & ~c).sum()), 1)
    grid = (np.arange(size) + 0.5) / size
    below = grid <= reach
    pool = np.empty(size)
    pool[below] = v[np.minimum(np.searchsorted(cdf, grid[below]), len(v) - 1)]
    pool[~below] = u - excess * np.log((1 - grid[~below]) / (1 - reach))
    pool = np.minimum(pool, v[-1])  # no further than the furthest seen (a censored one: its limit)
    return (pool, (float(reach), float(u), float(excess), _record_gap(v))) if fitted else pool


def extended_pool(pool: Sequence[float], pool_tail: Sequence[float], count: int) -> tuple[float, ...]:
    """``pool`` (an evenly weighted residual pool, :func:`survival_residuals`) for drawing ``count``
    more values: its exponential tail (``pool_tail``: reach, threshold, mean excess, record gap) carried
    past the furthest value its history saw (``n`` values), on a grid fine enough to reach there, by as
    much as the largest of ``n + count`` values lies beyond the largest of ``n`` if the very top goes on as
    its records do (``record gap x log((n + count) / n)``: an exponential tail's growth); below the tail,
    the pool as it is. A young history has seen the largest of a few hundred; a queue of thousands holds
    larger ones, which a pool cut at the furthest seen never draws (``hetero`` at 10 % done: none over 5.5x
    its median where 31 of the queue took over 7x). Carried by the records' gaps, not the tail's mean
    excess: a top thinner than the exponential, or bounded (outliers heaped below a limit), moves less.

    Four seen, the top quarter a tail of mean excess 0.5 above 1.0, the top value 0.5 above the next,
    four more to draw: up to 1.5 + 0.5 x log(8 / 4):

    >>> [round(x, 2) for x in extended_pool((-1.0, 0.0, 1.0, 1.5), (0.75, 1.0, 0.5, 0.5), 4)]
    [-1.0, -1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.07, 1.24, 1.49, 1.85]
    """
    import numpy as np

    n = len(pool)
    if not n or len(pool_tail) != 4 or count <= 0 or pool_tail[2] <= 0 or pool_tail[3] <= 0:
        return tuple(pool)
    reach, u, excess, gap = pool_tail
    top = max(pool) + gap * np.log((n + count) / n)
    size = 2 * (n + count)
    grid = (np.arange(size) + 0.5) / size
    out = np.asarray(pool, dtype=float)[np.minimum((grid * n).astype(int), n - 1)]
    above = grid > reach
    out[above] = np.minimum(u - excess * np.log((1 - grid[above]) / (1 - reach)), top)
    return tuple(np.round(out, 5).tolist())


def _tobit(x, y, censored, tuning: Tuning):
    """(coefficients, sigma, inverse penalised Gram matrix, targets) of a ridge least-squares fit of
    ``y`` on the design ``x``, censored values replaced by their expectation above their limit (EM)."""
    import numpy as np

    exact = ~censored
    p = x.shape[1]
    penalty = tuning.ridge * len(y) * np.eye(p)
    penalty[0, 0] = 0.0
    gram_inv = np.linalg.inv(x.T @ x + penalty)
    target = y.astype(float).copy()
    # each subset taken once (the loop below reads them 8 times): the same arrays, the same sums
    is_exact, is_cut = np.flatnonzero(exact), np.flatnonzero(censored)
    x_exact, y_exact = x[is_exact], y[is_exact]
    # two copies, as numpy multiplies a matrix by its own transpose another way (syrk, not gemm), whose
    # last bits differ
    beta = np.linalg.lstsq(x[is_exact].T @ x_exact + penalty, x_exact.T @ y_exact, rcond=None)[0]
    resid = y_exact - x_exact @ beta
    sigma = math.sqrt(max(1e-6, float(resid @ resid) / max(1, exact.sum() - p)))
    if len(is_cut):
        x_cut, y_cut = x[is_cut], y[is_cut]
    for _ in range(8 if len(is_cut) else 0):
        mu = x_cut @ beta
        a = (y_cut - mu) / sigma
        lam = _mills(a)
        expected = mu + sigma * lam
        target[is_cut] = expected
        beta = gram_inv @ (x.T @ target)
        mu_new = x @ beta
        extra = sigma ** 2 * (1 + a * lam - lam ** 2) + (expected - mu_new[is_cut]) ** 2
        sse = float(np.sum((y_exact - mu_new[is_exact]) ** 2) + np.sum(extra))
        sigma = math.sqrt(max(1e-6, sse / max(1, len(y) - p)))
    return beta, sigma, gram_inv, target


def _spread(x, rows, mu, square, drawn, sigma: float, tuning: Tuning):
    """(coefficients, group shifts) of log(squared residual / sigma^2) over the history,
    or ((), ()) with too little of it: ``x`` the design rows, ``rows`` the feature rows,
    ``mu`` the fitted log medians, ``square`` the squared residuals, ``drawn`` which of
    them are one draw each (finished attempts: their log is corrected for the mean of
    a log chi-square) rather than an expectation (censored ones).

    First a ridge line on the design rows (a scatter that grows with the metadata, and
    goes on growing beyond the history: the big data sets not yet run), then, for the
    fitted log median and each feature in turn, a shift per group of it
    (:data:`SPREAD_BINS` quantile groups, or one per value) for what the line misses
    (a scatter that is not a straight line in a feature, or lives in one band).
    Empirical Bayes: a group's mean departure from the line over its ``n`` attempts
    has a sampling variance ``v / n`` (``v`` the spread of the departures within
    groups, ~pi^2/2 for a log chi-square) around a true shift of variance ``tau2``
    across groups (what the means scatter beyond their sampling variance, by moments);
    the shift kept is the mean times ``n / (n + v / tau2)``: a group of many attempts
    keeps its own scatter, one of few the pooled line's, and a column whose groups do
    not differ more than chance says (``tau2`` = 0) keeps none."""
    import numpy as np

    if len(square) < tuning.spread_min_history:
        return (), ()
    z = np.log(square / sigma ** 2 + 1e-6) + np.where(drawn, 1.2704, 0.0)  # E[log chi2(1)] = -1.2704
    penalty = tuning.spread_ridge * len(z) * np.eye(x.shape[1])
    penalty[0, 0] = 0.0
    gamma = np.linalg.solve(x.T @ x + penalty, x.T @ z)
    left = z - x @ gamma
    groups = []
    for column in range(-1, rows.shape[1]):
        values = mu if column < 0 else rows[:, column]
        edges = _spread_edges(values, tuning.spread_bins)
        if edges is None:
            continue
        shifts, which = _shrunk_shifts(left, values, edges)
        if shifts is not None:
            groups.append((column, tuple(float(e) for e in edges), tuple(float(v) for v in shifts)))
            left = left - shifts[which]
    groups = tuple(groups)
    scale = _scale(x, rows, mu, gamma, groups, tuning)
    gamma[0] -= math.log(float(np.mean(scale ** 2)))  # the history's mean variance stays sigma^2
    return tuple(float(g) for g in gamma), groups


def _spread_edges(values, bins: int):
    """Inner edges of the groups of ``values`` (NaN: unknown, no group): midpoints between
    the values when there are at most 2 x ``bins`` of them, else the history's quantiles;
    None for a single group."""
    import numpy as np

    known = values[~np.isnan(values)]
    if len(known) == 0:
        return None
    distinct = np.unique(known)
    if len(distinct) < 2:
        return None
    if len(distinct) <= 2 * bins:
        return (distinct[1:] + distinct[:-1]) / 2
    edges = np.unique(np.quantile(known, np.arange(1, bins) / bins))
    return edges if len(edges) else None


def _group_of(values, edges):
    """The group index of each value (len(edges) + 1 groups); unknown values: -1."""
    import numpy as np

    which = np.searchsorted(np.asarray(edges), values, side="right")
    return np.where(np.isnan(values), -1, which)


def _shrunk_shifts(left, values, edges):
    """(shift per group, each attempt's group) of the departures ``left`` by the groups of
    ``values``, shrunk by empirical Bayes (see :func:`_spread`); shifts None when the
    groups differ no more than chance. Unknown values take the last slot: shift 0."""
    import numpy as np

    which = _group_of(values, edges)
    k = len(edges) + 1
    known = which >= 0
    n = np.bincount(which[known], minlength=k).astype(float)
    total = np.bincount(which[known], weights=left[known], minlength=k)
    have = n > 0
    if have.sum() < 2:
        return None, which
    mean = np.where(have, total / np.maximum(n, 1), 0.0)
    within = left[known] - mean[which[known]]
    noise = float(within @ within) / max(1.0, known.sum() - have.sum())  # v: one attempt's variance in its group
    grand = float(np.sum(total)) / float(np.sum(n))
    between = float(np.sum(n[have] * (mean[have] - grand) ** 2)) / float(np.sum(n[have]))
    tau2 = between - noise * float(np.sum(have)) / float(np.sum(n))  # minus the sampling share (moments)
    if tau2 <= 0:
        return None, which
    weight = n / (n + noise / tau2)
    shifts = np.append(weight * (mean - grand), 0.0)  # the last slot: unknown values
    return shifts, np.where(known, which, k)


def _scale(x, rows, mu, spread, groups, tuning: Tuning):
    """Each design row's scatter relative to the pooled sigma (within ``tuning.spread_range``):
    the line ``spread`` plus the shifts of the groups the row is in (:func:`_spread`)."""
    import numpy as np

    low, high = tuning.spread_range
    log_var = x @ np.asarray(spread)
    for column, edges, shifts in groups:
        which = _group_of(mu if column < 0 else rows[:, column], edges)
        log_var = log_var + np.asarray(shifts)[np.where(which < 0, len(shifts) - 1, which)]
    return np.clip(np.exp(0.5 * log_var), low, high)


def fit_history(history: Iterable[Measured], tuning: Tuning = DEFAULT_TUNING) -> Model:
    """A :class:`Model` from attempts: finished ones, and the lower limits kills
    and running attempts imply. Hours are normalised to speed 1.0 (wall hours x node speed).

    >>> hist = [Measured(f"u{i}", 10.0 * (i + 1), 2.0 * (i + 1), 1.0, 8.0) for i in range(10)]
    >>> round(fit_history(hist).hours.coef[1], 2)  # hours grow as size^1
    1.0
    """
    import numpy as np

    history = list(history)
    own: dict[str, tuple[float, float]] = {}
    for m in history:
        h, g = own.get(m.uid, (0.0, 0.0))
        if m.outcome in ("walltime", "running", "memory", "ok"):
            h = max(h, m.hours * m.speed)
        if m.outcome in ("memory", "ok") and m.peak_mem_gb:
            g = max(g, m.peak_mem_gb)
        own[m.uid] = (h, g)
    hours = mem = None
    timed = _hours_data(history)
    if timed is not None:
        hours = _fit(*timed, tuning, tuning.hours_quantile, settled=_settled(history))
    sized = [m for m in history if m.outcome in ("ok", "memory") and m.peak_mem_gb]
    if sized:
        rows = feature_rows(sized)
        y = np.log([m.peak_mem_gb for m in sized])
        mem = _fit(rows, y, np.array([m.outcome == "memory" for m in sized]), tuning, tuning.mem_quantile,
                   _last_word(sized))
    return Model(hours=hours, mem=mem, own=own)


def _last_word(sized: Sequence[Measured]):
    """A mask of ``sized`` (attempts with a peak memory): per data set, the attempt that says most
    about its memory (one that finished, else the kill at the most memory).

    >>> _last_word([Measured("a", 1, 1, 1, 24, "memory"), Measured("b", 1, 1, 1, 8),
    ...             Measured("a", 1, 1, 1, 90)]).tolist()
    [False, True, True]
    """
    import numpy as np

    best: dict[str, int] = {}
    for i, m in enumerate(sized):
        j = best.get(m.uid)
        if j is None or (m.outcome == "ok", m.peak_mem_gb) > (sized[j].outcome == "ok", sized[j].peak_mem_gb):
            best[m.uid] = i
    mask = np.zeros(len(sized), dtype=bool)
    mask[list(best.values())] = True
    return mask


def _settled(history: Sequence[Measured]):
    """Of the attempts :func:`_hours_data` keeps, those cut short (killed, or running) that say less than
    another attempt of their data set: one has finished since (it tells what the data set took), or one
    ran longer (a retry past a walltime kill): one data set is one lower limit, its highest."""
    import numpy as np

    timed = [m for m in history if m.outcome in ("ok", "walltime", "running", "memory") and m.hours > 0]
    finished = {m.uid for m in timed if m.outcome == "ok"}
    best: dict[str, int] = {}
    for k, m in enumerate(timed):
        if m.outcome != "ok" and m.uid not in finished:
            j = best.get(m.uid)
            if j is None or m.hours * m.speed > timed[j].hours * timed[j].speed:
                best[m.uid] = k
    kept = set(best.values())
    return np.array([m.outcome != "ok" and k not in kept for k, m in enumerate(timed)], dtype=bool)


def _hours_data(history: Sequence[Measured]):
    """(feature rows, log hours at speed 1.0, censored) of the attempts that say something about hours."""
    import numpy as np

    timed = [m for m in history if m.outcome in ("ok", "walltime", "running", "memory") and m.hours > 0]
    if not timed:
        return None
    return (feature_rows(timed), np.log([m.hours * m.speed for m in timed]),
            np.array([m.outcome != "ok" for m in timed]))


def coefficient_draws(history: Iterable[Measured], model: Model, samples: int, seed: int = 0,
                      tuning: Tuning = DEFAULT_TUNING, most: int | None = None):
    """Draws of the hours fit's coefficient error from a bootstrap over the attempts, in the
    units of :attr:`Prediction.shift` (``shift @ z`` is a data set's log-hours error under
    draw ``z``), as a (samples, coefficients) array; None without a fit.

    The fit's own covariance assumes its log-linear form is right and its history a
    fair sample of the queue; neither holds early in a campaign (the quick data sets
    finish first, the long ones are still running). Refitting on resampled attempts
    measures the error of the fit as it was made, which is wider where it matters.

    Each draw refits the history (120 draws: 2 s at 18,000 attempts, minutes at a
    million). ``most``: past that many attempts, the bootstrap runs on ``most`` of them
    drawn at random (seeded) and its draws are scaled by sqrt(most / attempts) (an
    m-out-of-n bootstrap: a fit's error shrinks as one over the root of its attempts).

    >>> hist = [Measured(f"u{i}", 10.0 * (i + 1), 2.0 * (i + 1) * (1.1 if i % 2 else 0.9), 1.0, 8.0)
    ...         for i in range(40)]
    >>> coefficient_draws(hist, fit_history(hist), 50).shape, coefficient_draws(hist, fit_history(hist), 30, most=20).shape
    ((50, 2), (30, 2))
    """
    import numpy as np

    history = list(history)
    if most is not None and len(history) > most:
        pick = np.random.default_rng(seed).choice(len(history), most, replace=False)
        draws = coefficient_draws([history[i] for i in np.sort(pick)], model, samples, seed, tuning)
        return None if draws is None else draws * np.sqrt(most / len(history))
    fit = model.hours
    data = _hours_data(history)
    if fit is None or data is None:
        return None
    rows, y, censored = data
    x = _design(rows, fit)
    chol = np.asarray(fit.chol)
    coef = np.asarray(fit.coef)
    rng = np.random.default_rng(seed)
    out = np.zeros((samples, len(coef)))
    for b in range(samples):
        pick = rng.integers(0, len(y), len(y))
        if (~censored[pick]).sum() < tuning.min_history:
            continue
        beta = _tobit(x[pick], y[pick], censored[pick], tuning)[0]
        out[b] = np.linalg.solve(chol, beta - coef)  # chol is lower triangular: chol @ z = the coefficient error
    return out


# -- distributions ------------------------------------------------------------------

FLOOR_STEP = 1.001
"""A quantile above a floor is at least this times the floor (a kill says *more than* it)."""


def quantiles_above(median, sigma, floor, q, margin: float = RETRY_MARGIN):
    """The ``q`` quantiles of lognormals (``median``, ``sigma``) known to exceed
    ``floor`` (arrays, or numbers; without a spread a floor above the median
    counts ``margin`` times).

    >>> [round(float(x), 3) for x in quantiles_above([10.0, 10.0], [0.5, 0.0], [0.0, 20.0], 0.9)]
    [18.98, 25.0]

    A floor so far out that the spread puts no weight above it (a data set that ran out of
    512 GB where like ones need 12) still yields more than the floor, never a quantile of the
    whole distribution below it:

    >>> float(quantiles_above(12.0, 0.35, 512.0, 0.5)) > 512
    True
    """
    import numpy as np
    from scipy.special import ndtr, ndtri

    median, sigma, floor = (np.asarray(v, dtype=float) for v in (median, sigma, floor))
    spread = np.maximum(sigma, 1e-9)
    with np.errstate(divide="ignore"):
        low = np.where(floor > 0, ndtr((np.log(np.maximum(floor, 1e-300)) - np.log(median)) / spread), 0.0)
    p = np.clip(low + np.asarray(q) * (1 - low), 1e-12, 1 - 1e-12)
    spread_q = median * np.exp(sigma * ndtri(p))
    spread_q = np.where(floor > 0, np.maximum(spread_q, floor * FLOOR_STEP), spread_q)  # p saturates far out
    point = np.where(floor > median, np.maximum(median, floor * margin), median)
    return np.where(sigma > 0, spread_q, point)


def means_above(median, sigma, floor, margin: float = RETRY_MARGIN):
    """The expected values of lognormals (``median``, ``sigma``) known to exceed ``floor``.

    >>> [round(float(x), 3) for x in means_above([10.0, 10.0], [0.5, 0.5], [0.0, 30.0])]
    [11.331, 36.277]
    """
    import numpy as np
    from scipy.special import ndtr

    median, sigma, floor = (np.asarray(v, dtype=float) for v in (median, sigma, floor))
    spread = np.maximum(sigma, 1e-9)
    mean = median * np.exp(sigma ** 2 / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(floor > 0, (np.log(np.maximum(floor, 1e-300)) - np.log(median)) / spread, -np.inf)
        tail = 1 - ndtr(a)
        cut = np.where(tail > 1e-9, mean * (1 - ndtr(a - spread)) / np.maximum(tail, 1e-300),
                       floor * (1 + spread / np.maximum(a, 1.0)))
    spread_mean = np.where(floor > 0, np.maximum(floor, cut), mean)
    point = np.where(floor > median, np.maximum(median, floor * margin), median)
    return np.where(sigma > 0, spread_mean, point)


def hours_left(pred: Prediction, ran_h: float, speed: float = 1.0, walltime_h: float | None = None,
               pool: Sequence[float] = ()) -> float:
    """The wall hours a running attempt is expected to take yet, as placement can know it: its
    prediction's mean above what it has run (at ``speed``), less what it has run; no more than its
    walltime leaves. Never the truth: a plan made while attempts run counts their slots busy this long.
    ``pool``: the hours fit's residuals in units of scatter (:attr:`Fit.pool`); where it reaches past
    what the attempt has run, the mean is the pool's above it (a heavy tail's long runners are expected
    to run on), else the lognormal's. (A caller asking for many running attempts passes it as an array:
    the pool holds one value per attempt of the history, and converting it is most of a call's cost.)

    >>> p = Prediction(20.0, 8.0, mean_h=11.3, median_h=10.0, sigma=0.5)
    >>> round(hours_left(p, 0.0), 2), round(hours_left(p, 30.0), 2), hours_left(p, 30.0, walltime_h=32.0)
    (11.33, 6.28, 2.0)
    >>> round(hours_left(p, 30.0, pool=(-1.0, 0.0, 1.0, 4.6)), 1)  # a pool whose tail runs to 100 h
    69.7
    """
    ran = max(ran_h, 0.0) * speed
    total = None
    if pred.sigma > 0 and pred.median_h:
        if len(pool) and ran > 0:
            import numpy as np

            runs = pred.median_h * np.exp(pred.sigma * np.asarray(pool, dtype=float))
            above = runs[runs > max(ran, pred.floor_h)]
            if len(above):
                total = float(above.mean())
        if total is None:
            total = float(means_above(pred.median_h, pred.sigma, max(ran, pred.floor_h)))
    else:
        total = max(pred.mean_h or pred.hours, ran)
    left = max(total / speed - max(ran_h, 0.0), 0.0)
    if walltime_h:
        left = min(left, max(walltime_h - ran_h, 0.0))
    return left


def running_left(nodes: Sequence[NodeState], running: Iterable[tuple[Prediction, str, float]],
                 pool: Sequence[float] = ()) -> list[NodeState]:
    """``nodes`` whose running attempts (``running``: prediction, node name, wall hours run) hold their
    slots for the hours each is expected to take yet (:func:`hours_left`, ``pool`` its): what a plan made while they
    run is told, by the engine, the replay and the live estimate alike. Hours a node already gives
    (``busy_h``) past as many as run on it stay (a taken slot whose attempt has not started: 0, free at once).

    >>> [n.busy_h for n in running_left([NodeState("a", 2, speed=2.0), NodeState("b")], [(Prediction(10.0, 8.0), "a", 1.0)])]
    [(4.0,), ()]
    """
    import numpy as np

    pool = np.asarray(pool, dtype=float)  # once, not per attempt
    left: dict[str, list[float]] = {}
    by_name = {n.name: n for n in nodes}
    for pred, name, ran in running:
        if name in by_name:
            n = by_name[name]
            left.setdefault(name, []).append(hours_left(pred, ran, n.speed, n.walltime_h, pool))
    return [replace(n, busy_h=tuple(left[n.name]) + n.busy_h[len(left[n.name]):]) if n.name in left else n
            for n in nodes]


# -- predictions -----------------------------------------------------------------

def prior(ds: DataSet, tuning: Tuning = DEFAULT_TUNING) -> Prediction:
    """The study-based prior for a data set without history: median hours and
    memory from its metadata, the placement values at the prior's quantile.

    >>> prior(DataSet("u", size_gb=40.0)).hours  # median size -> 6 h, x ~2 at the 80th percentile
    11.7641
    """
    return predict(replace(ds, hours=None, mem_gb=None), Model(), tuning)


def _prior_medians(ds: DataSet, t: Tuning) -> tuple[float, float]:
    """(hours, memory) medians of the prior for one data set: the archive's guess where it
    gives one, else the study's medians scaled by the metadata."""
    size = ds.size_gb if ds.size_gb and ds.size_gb > 0 else t.median_size_gb
    hours = t.median_hours * (size / t.median_size_gb) ** t.size_exponent
    if ds.n_spw and ds.n_chan:
        hours *= max(0.5, math.sqrt(ds.n_spw * ds.n_chan / t.reference_channels))
    if ds.array == "7m":
        hours *= 0.5  # fewer antennas: ~1/4 of the baselines
    mem = t.mem_gb + t.mem_per_gb * max(0.0, size - t.median_size_gb)
    if ds.is_mosaic:
        hours *= t.mosaic_factor
        mem *= t.mosaic_factor
    return (ds.prior_hours if ds.prior_hours and ds.prior_hours > 0 else hours,
            ds.prior_mem_gb if ds.prior_mem_gb and ds.prior_mem_gb > 0 else mem)


def predict(ds: DataSet, history: Iterable[Measured] | Model = (), tuning: Tuning = DEFAULT_TUNING) -> Prediction:
    """Hours (speed 1.0) and peak memory for ``ds``: explicit values win, then
    the history fit (a high quantile, not the mean), then the prior; never less
    than what the data set's own attempts showed it needs.

    Pass a :class:`Model` (from :func:`fit_history`) when predicting many.

    >>> p = predict(DataSet("u", size_gb=40.0, hours=3.0, mem_gb=10.0))
    >>> p.hours, p.mem_gb, p.source
    (3.0, 10.0, 'explicit')

    An explicit value an attempt disproved (it ran out of 16 GB) gives way to what that attempt taught:

    >>> from dataclasses import replace
    >>> known = replace(fit_history([]), own={"u": (0.0, 16.0)})
    >>> p = predict(DataSet("u", size_gb=40.0, hours=3.0, mem_gb=10.0), known)
    >>> p.hours, p.mem_gb, p.mem_floor_gb
    (3.0, 20.0, 16.0)
    """
    return predict_all([ds], history, tuning)[ds.uid]


def predict_all(queue: Iterable[DataSet], history: Iterable[Measured] | Model = (),
                tuning: Tuning = DEFAULT_TUNING) -> dict[str, Prediction]:
    """uid -> :func:`predict` for every data set, fitting the history once and
    evaluating the fits and distributions for all data sets at once.

    Vectorised over the metadata columns (:func:`feature_rows`,
    :func:`_prior_medians_of`): the numbers are those of one data set at a time
    (``tests/test_scheduler.py`` compares them on a random queue), at a tenth
    of the cost: a re-plan predicts 100,000 of them.
    """
    import numpy as np

    t = tuning
    model = history if isinstance(history, Model) else fit_history(history, t)
    queue = list(queue)
    if not queue:
        return {}
    n = len(queue)
    med_h = med_m = None
    if model.hours is None or model.mem is None:  # a fitted history needs no prior
        med_h, med_m = _prior_medians_of(queue, t)
    sig_h, sig_m = np.full(n, t.hours_sigma), np.full(n, t.mem_sigma)
    q_h, q_m = t.prior_quantile, t.prior_quantile
    shifts: list[tuple[float, ...]] = [(t.prior_shift_sigma,)] * n
    mem_shifts: list[tuple[float, ...]] = [()] * n
    source = "prior"
    tail_h = tail_m = 1.0
    curve = ()
    if model.hours is not None or model.mem is not None:
        rows = queue_rows(queue)
        if model.hours is not None:
            log_h, sig_h, shifts = _evaluate(model.hours, rows, t)
            med_h, q_h, source, tail_h = np.exp(log_h), t.hours_quantile, "history", model.hours.tail
        if model.mem is not None:
            log_m, sig_m, mem_shifts = _evaluate(model.mem, rows, t)
            med_m, q_m, tail_m = np.exp(log_m), t.mem_quantile, model.mem.tail
            curve = model.mem.survival
    own_h = np.zeros(n)
    own_m = np.zeros(n)
    if model.own:
        needs = list(map(model.own.get, map(_UID, queue)))  # (looked up in C: most data sets have no attempt)
        for i in [i for i, need in enumerate(needs) if need is not None]:
            own_h[i], own_m[i] = needs[i]
    # The archive's guess is placed as it stands until a fit exists (the archive knows the data set,
    # the study's prior does not); its spread stays the prior's, for forecasts.
    place_h, place_m, sources = sig_h, sig_m, None
    if model.hours is None or model.mem is None:
        guess_h, guess_m = _guessed(queue)
        if model.hours is None and guess_h.any():
            place_h = np.where(guess_h, 0.0, sig_h)
            sources = np.where(guess_h, "archive", source).tolist()
        if model.mem is None and guess_m.any():
            place_m = np.where(guess_m, 0.0, sig_m)
    hours_a = quantiles_above(med_h, place_h * tail_h, own_h, q_h, t.retry_margin).round(4)
    mean_a = means_above(med_h, place_h, own_h, t.retry_margin).round(4)
    mem_a = quantiles_above(med_m, place_m * tail_m, own_m, q_m, t.retry_margin).round(4)
    sig_h, sig_m = np.broadcast_to(sig_h, (n,)), np.broadcast_to(sig_m, (n,))
    columns = (mean_a, np.where(med_h != 0, med_h, hours_a), np.where(med_m != 0, med_m, mem_a), sig_h, sig_m,
               tail_h, tail_m, own_h, own_m, hours_a, mem_a)  # as risk_columns reads them off each prediction
    given_h, given_m = list(map(_GIVEN_H, queue)), list(map(_GIVEN_M, queue))
    explicit = given_h.count(None) != n or given_m.count(None) != n  # (counted in C) rare: explicit values win
    # one tuple per data set, made in C from the columns in the fields' order (Prediction is a named tuple)
    made = list(map(_new_tuple, repeat(Prediction), zip(
        hours_a.tolist(), mem_a.tolist(), repeat(source, n) if sources is None else sources, mean_a.tolist(),
        med_h.tolist(), sig_h.tolist(), _listed(own_h), sig_m.tolist(), _listed(own_m), shifts, med_m.tolist(),
        mem_shifts, repeat((tail_h, tail_m), n), repeat(curve, n))))
    _MADE[0] = None
    if not explicit:  # the arrays hold every prediction's numbers
        table = np.empty((n, len(columns)))
        for k, column in enumerate(columns):
            table[:, k] = column
        table.flags.writeable = False
        _MADE[0] = (made, table.T, curve)  # (laid out as risk_columns makes them: a row per prediction)
    else:  # explicit values win (rare), unless an attempt showed the data set needs more
        for i, (gh, gm, fh, fm) in enumerate(zip(given_h, given_m, own_h.tolist(), own_m.tolist())):
            if gh is not None:
                gh = gh if gh > fh else round(fh * t.retry_margin, 4)
                made[i] = made[i]._replace(hours=gh, mean_h=gh, median_h=gh, sigma=0.0, floor_h=fh,
                                           source="explicit", shift=())
            if gm is not None:
                gm = gm if gm > fm else round(fm * t.retry_margin, 4)
                made[i] = made[i]._replace(mem_gb=gm, mem_sigma=0.0, mem_floor_gb=fm, mem_median_gb=gm, mem_shift=(),
                                           source="explicit" if gh is not None else made[i].source)
    return dict(zip(map(_UID, queue), made))


def _listed(column):
    """``column.tolist()``, or one 0.0 repeated where every value is 0 (most data sets have no attempt
    to need more than: one float, not 100,000 to make and free)."""
    return column.tolist() if column.any() else repeat(0.0, len(column))


_MADE: list = [None]
"""The last :func:`predict_all`'s predictions, their risk columns (:func:`made_columns`) and memory curve."""


def made_columns(spread: Sequence[Prediction]):
    """(risk columns, memory curve) of ``spread`` when it is the very list of predictions the last
    :func:`predict_all` made (every one the same object, in its order: a re-plan after a refit, or of
    an import's new data sets), else None. The columns are those
    :func:`~.eligibility.risk_columns` reads off each prediction, taken from the arrays the
    predictions were made of (the same numbers, without 100,000 tuples); read-only.

    >>> made = predict_all([DataSet("a", size_gb=40.0), DataSet("b", size_gb=80.0)])
    >>> columns, curve = made_columns(list(made.values()))
    >>> columns.shape, made_columns(list(made.values())[::-1])
    ((11, 2), None)
    """
    kept = _MADE[0]
    if kept is None or len(kept[0]) != len(spread) or not all(map(is_, spread, kept[0])):
        return None
    return kept[1], kept[2]


def _prior_medians_of(queue: Sequence[DataSet], t: Tuning):
    """:func:`_prior_medians` of every data set of ``queue``, as two arrays (hours, memory)."""
    import numpy as np

    size, spw, chan, mosaic, array = zip(*map(_PRIOR_METADATA, queue))
    ref = t.median_size_gb
    size = np.array([s if s and s > 0 else ref for s in size], dtype=float)
    hours = t.median_hours * np.array([(s / ref) ** t.size_exponent for s in size.tolist()])
    cube = np.array([w * c if w and c else 0 for w, c in zip(spw, chan)], dtype=float)
    hours = np.where(cube > 0, hours * np.maximum(0.5, np.sqrt(cube / t.reference_channels)), hours)
    hours = np.where(np.array([a == "7m" for a in array]), hours * 0.5, hours)
    mem = t.mem_gb + t.mem_per_gb * np.maximum(0.0, size - ref)
    mosaic = np.array([bool(m) for m in mosaic])
    hours, mem = np.where(mosaic, hours * t.mosaic_factor, hours), np.where(mosaic, mem * t.mosaic_factor, mem)
    guess_h, guess_m = _guessed(queue)
    if guess_h.any():
        hours = np.where(guess_h, [g if g else 0.0 for g in map(_GUESS_H, queue)], hours)
    if guess_m.any():
        mem = np.where(guess_m, [g if g else 0.0 for g in map(_GUESS_M, queue)], mem)
    return hours, mem


def _guessed(queue: Sequence[DataSet]):
    """(has an archive guess of hours, of memory) per data set, as boolean arrays."""
    import numpy as np

    return (np.array([bool(g and g > 0) for g in map(_GUESS_H, queue)], dtype=bool),
            np.array([bool(g and g > 0) for g in map(_GUESS_M, queue)], dtype=bool))


_PRIOR_METADATA = attrgetter("size_gb", "n_spw", "n_chan", "is_mosaic", "array")
_GIVEN_H, _GIVEN_M, _UID = attrgetter("hours"), attrgetter("mem_gb"), attrgetter("uid")
_GUESS_H, _GUESS_M = attrgetter("prior_hours"), attrgetter("prior_mem_gb")


def _evaluate(fit: Fit, rows, tuning: Tuning = DEFAULT_TUNING
              ) -> tuple[Sequence[float], Sequence[float], list[tuple[float, ...]]]:
    """(log medians, predictive log-sds, coefficient-uncertainty rows) of a fit at feature ``rows``."""
    import numpy as np

    x = _design(rows, fit)
    mu = x @ np.asarray(fit.coef)
    rows_l = x @ np.asarray(fit.chol)  # each row . z (z standard normal) draws the fit's error there
    own = fit.sigma * (_scale(x, rows, mu, fit.spread, fit.spread_groups, tuning) if fit.spread else 1.0)
    sigma = np.sqrt(own ** 2 + np.sum(rows_l ** 2, axis=1))
    return mu, sigma, list(zip(*rows_l.round(5).T.tolist()))  # one tuple per row, made by zip: no row lists

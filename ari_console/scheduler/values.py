"""The scheduler's values: data sets, attempts, nodes, predictions and plans.

Frozen dataclasses (and :class:`Prediction`, a named tuple that behaves as one); the
functions that make and use them live in :mod:`.prediction`, :mod:`.eligibility`, :mod:`.lpt` and :mod:`.placement`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from functools import cached_property
from itertools import repeat
from operator import add, itemgetter
from typing import Iterable, Mapping, NamedTuple, Sequence

SCRATCH_PER_GB = 3.0
"""Scratch disk an attempt holds on its node per GB of the data set's archive size: the downloaded
tarballs (1x), the restored calibrated measurement sets (~1.5x), images and products (~0.5x)."""
SCRATCH_FLOOR_GB = 0.05
"""Scratch an attempt holds whatever its size (job spec, logs, status)."""
SCRATCH_RETRY_MARGIN = 1.25
"""A data set whose attempt filled its scratch needs at least this times the scratch that attempt had
used when it died (its ``peak_scratch_gb``): more than it had, so never the same room again."""


@dataclass(frozen=True)
class DataSet:
    """One waiting data set as the scheduler sees it.

    ``hours`` and ``mem_gb`` are explicit values (a workload column or an
    operator's override) and win over any prediction; ``None`` means unknown.
    ``node`` pins the data set to one node; ``walltime_h`` is a wall-clock
    limit the data set needs at least (an operator's override). The archive's
    metadata (size, spws, channels per spw, array, band, mosaic, execution
    blocks) is what predictions learn from. ``scratch_gb`` is the scratch disk
    it needs on its node when known better than its size says (a workload
    column); see :attr:`scratch_need_gb`. ``scratch_per_gb`` is the scratch per GB of size
    finished attempts of like data sets used (:func:`~.eligibility.scratch_factors`; None: the
    documented :data:`SCRATCH_PER_GB`); ``scratch_seen_gb`` the most scratch one of its own
    attempts had used when the scratch ran full (a ``disk_full`` failure: its retry needs more).
    ``prior_hours``/``prior_mem_gb``
    are the archive's own guess: where the prediction starts (placed as it
    stands while there is no history) and a feature the history fit learns
    how far to trust; unlike ``hours``/``mem_gb`` they never win over history.

    >>> DataSet("uid://A001/X1/X1", size_gb=30.0).hours is None
    True
    """

    uid: str
    size_gb: float | None = None
    hours: float | None = None
    mem_gb: float | None = None
    array: str | None = None
    band: int | None = None
    n_spw: int | None = None
    n_chan: int | None = None
    recipe: str | None = None
    casa_version: str | None = None
    attempts: int = 0
    node: str | None = None
    walltime_h: float | None = None
    is_mosaic: bool | None = None
    n_eb: int | None = None
    scratch_gb: float | None = None

    prior_hours: float | None = None
    prior_mem_gb: float | None = None
    scratch_per_gb: float | None = None
    scratch_seen_gb: float | None = None

    @property
    def scratch_need_gb(self) -> float | None:
        """Scratch disk an attempt of it holds on its node (GB): ``scratch_gb`` when given, else its
        size x ``scratch_per_gb`` (learned; default :data:`SCRATCH_PER_GB`) + :data:`SCRATCH_FLOOR_GB`;
        at least ``scratch_seen_gb`` x :data:`SCRATCH_RETRY_MARGIN` after a full scratch; None when
        nothing is known.

        >>> DataSet("u", size_gb=10).scratch_need_gb, DataSet("u", size_gb=10, scratch_gb=12.5).scratch_need_gb
        (30.05, 12.5)
        >>> DataSet("u", size_gb=10, scratch_per_gb=5.0).scratch_need_gb, DataSet("u", size_gb=10, scratch_seen_gb=40).scratch_need_gb
        (50.05, 50.0)
        """
        if self.scratch_gb is not None:
            need = self.scratch_gb
        elif self.size_gb is not None:
            factor = SCRATCH_PER_GB if self.scratch_per_gb is None else self.scratch_per_gb
            need = round(self.size_gb * factor + SCRATCH_FLOOR_GB, 3)
        else:
            need = None
        if self.scratch_seen_gb:
            need = max(need or 0.0, round(self.scratch_seen_gb * SCRATCH_RETRY_MARGIN, 3))
        return need

    def with_scratch_per_gb(self, factor: float | None) -> "DataSet":
        """This data set with another learned scratch factor: ``replace(self, scratch_per_gb=factor)``,
        made without the dataclass machinery (a refit may remake 100,000 of them).

        >>> from dataclasses import replace
        >>> ds = DataSet("u", size_gb=2.0)
        >>> ds.with_scratch_per_gb(4.0) == replace(ds, scratch_per_gb=4.0)
        True
        """
        new = object.__new__(DataSet)
        new.__dict__.update(self.__dict__, scratch_per_gb=factor)
        return new


@dataclass(frozen=True)
class Measured:
    """One attempt from history: wall ``hours`` on a node of ``speed``.

    ``outcome`` is ``ok`` for a finished attempt, a failure category
    (``memory``: killed at ``peak_mem_gb``; ``walltime``: killed after
    ``hours``; ...), or ``running`` for an attempt still running after
    ``hours`` (it needs more: a censored observation). ``peak_mem_gb`` may be
    unknown. The metadata fields are the data set's (what fits learn from).
    """

    uid: str
    size_gb: float | None
    hours: float
    speed: float = 1.0
    peak_mem_gb: float | None = None
    outcome: str = "ok"
    array: str | None = None
    band: int | None = None
    n_spw: int | None = None
    n_chan: int | None = None
    is_mosaic: bool | None = None
    n_eb: int | None = None
    prior_hours: float | None = None
    prior_mem_gb: float | None = None
    peak_scratch_gb: float | None = None  # the most scratch its work dir used (None: not measured)


@dataclass(frozen=True)
class NodeState:
    """One node as the scheduler sees it now.

    ``mem_gb`` is per slot; ``walltime_h`` None means no limit; ``free`` is
    the number of free slots (default: all); ``busy_h`` holds the predicted
    remaining wall hours of each running attempt (used by plans and bounds).
    ``scratch_gb`` is the most scratch disk one attempt can have there (the
    node's ``scratch_gb`` key, or the size of its scratch file system); None:
    unknown, not checked.

    >>> NodeState("ws01", slots=1, mem_gb=24, speed=0.6).free
    1
    """

    name: str
    slots: int = 1
    mem_gb: float = 8.0
    walltime_h: float | None = None
    speed: float = 1.0
    recipes: tuple[str, ...] = ("casa6",)
    casa_versions: tuple[str, ...] = ()
    drained: bool = False
    node_class: str | None = None
    free: int | None = None
    busy_h: tuple[float, ...] = ()
    cpus_per_slot: int = 1
    scratch_gb: float | None = None

    def __post_init__(self) -> None:
        if self.free is None:
            object.__setattr__(self, "free", max(0, self.slots - len(self.busy_h)))

    @cached_property
    def spec(self) -> tuple:
        """What placement depends on, apart from free slots and running work."""
        return (self.name, self.slots, self.mem_gb, self.walltime_h, self.speed, self.recipes,
                self.casa_versions, self.drained, self.scratch_gb)

    @property
    def klass(self) -> str:
        """The node's class name (its own name when none is given)."""
        return self.node_class or self.name


class Prediction(NamedTuple):
    """Hours on a speed-1.0 node and peak memory (GB), with where they came from.

    ``hours`` and ``mem_gb`` are the conservative quantiles placement checks
    against walltimes and memory; ``mean_h`` is the expected hours plans and
    forecasts add up (None: ``hours``). The spread: hours are lognormal with
    median ``median_h`` and log-sd ``sigma``, known to be at least ``floor_h``
    (what a walltime kill or a running attempt taught); memory likewise with
    median ``mem_median_gb``, ``mem_sigma`` and ``mem_floor_gb``. ``shift``
    (``mem_shift``) holds the data set's row of the fit's coefficient
    uncertainty (log-hours per unit of each coefficient draw), so forecasts
    can move all predictions together.

    An immutable record like the other values, kept as a named tuple: a re-plan
    makes and drops 100,000 of them, each one C call (:meth:`placed_at`,
    ``predict_all``) where a frozen dataclass filled a dict field by field.
    It equals, hashes and prints as the frozen dataclass it was, and
    ``dataclasses.replace``/``fields`` take it as one.

    >>> from dataclasses import replace
    >>> p = Prediction(5.0, 8.0, mean_h=4.0)
    >>> p.plan_h, p.sigma, replace(p, sigma=0.5) == Prediction(5.0, 8.0, mean_h=4.0, sigma=0.5)
    (4.0, 0.0, True)
    """

    hours: float
    mem_gb: float
    source: str = "prior"
    mean_h: float | None = None
    median_h: float | None = None
    sigma: float = 0.0
    floor_h: float = 0.0
    mem_sigma: float = 0.0
    mem_floor_gb: float = 0.0
    shift: tuple[float, ...] = ()
    mem_median_gb: float | None = None
    mem_shift: tuple[float, ...] = ()
    tail: tuple[float, float] = (1.0, 1.0)  # placement quantiles use sigma x tail (hours, memory): heavy tails
    mem_curve: tuple = ()  # the memory fit's residual tail (Fit.survival), shared by its predictions: kill chances
    # and memory quantiles are read off it where it is known, off the lognormal (sigma x tail) before

    @property
    def plan_h(self) -> float:
        """The hours a plan counts on: the expected value when there is a spread."""
        return self.hours if self.mean_h is None else self.mean_h

    def placed_at(self, hours: float, mem_gb: float) -> "Prediction":
        """This prediction with other placement values: ``replace(self, hours=..., mem_gb=...)``.

        >>> from dataclasses import replace
        >>> p = Prediction(5.0, 8.0, mean_h=4.0, sigma=0.3)
        >>> p.placed_at(9.0, 12.0) == replace(p, hours=9.0, mem_gb=12.0)
        True
        """
        return _new_tuple(Prediction, (hours, mem_gb, *self[2:]))


_new_tuple = tuple.__new__


def placed_all(bases: Sequence[Prediction], hours: Iterable[float], mem_gb: Iterable[float]) -> list[Prediction]:
    """``[p.placed_at(h, m) for p, h, m in zip(bases, hours, mem_gb)]``, made in C (a re-plan
    after a refit moves most of 100,000 predictions to their settled placement values).

    >>> placed_all([Prediction(5.0, 8.0, sigma=0.3)], [9.0], [12.0]) == [Prediction(9.0, 12.0, sigma=0.3)]
    True
    """
    return list(map(_new_tuple, repeat(Prediction), map(add, zip(hours, mem_gb), map(_PAST_PLACEMENT, bases))))


_PAST_PLACEMENT = itemgetter(slice(2, None))
# dataclasses.replace, fields and asdict take a prediction as the frozen dataclass it was: its fields
Prediction.__dataclass_fields__ = make_dataclass(
    "Prediction", [(name, object, field(default=Prediction._field_defaults[name]))
                   if name in Prediction._field_defaults else (name, object) for name in Prediction._fields],
    frozen=True).__dataclass_fields__


@dataclass(frozen=True)
class Unplaceable:
    """A data set no node can run, and why (one line an operator can act on)."""

    dataset: DataSet
    reason: str


@dataclass(frozen=True)
class Plan:
    """What a policy worked out for a whole queue, reused by the next :func:`~.placement.place`.

    ``sequence`` holds, per node, the data sets in planned start order (``lpt``);
    per eligibility group, longest first (``greedy``, with ``groups`` naming
    each node's groups); or, under the key ``""``, the queue order (``fifo``).
    ``cursor`` says how far each sequence is consumed; ``taken`` holds uids
    taken out of order. ``makespan_h`` is the plan's own makespan on the
    predictions, ``variant`` the ordering that won. ``may_take`` remembers, for the
    plan and the plans placing and requeuing make of it, whether a node class may run
    a data set at its prediction (the dry nodes' scan of the tails, event after event).
    """

    policy: str
    nodes_key: tuple
    sequence: Mapping[str, tuple[DataSet, ...]]
    cursor: Mapping[str, int]
    taken: frozenset[str]
    predictions: Mapping[str, Prediction]
    unplaceable: tuple[Unplaceable, ...]
    remaining: int
    makespan_h: float = 0.0
    variant: str = ""
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # greedy: node -> group keys
    suffix_h: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # lpt: hours left from index
    risk_quantile: tuple[float, float] | None = None  # (hours, memory) quantiles capacity forced, if lower
    may_take: dict = field(default_factory=dict, compare=False, repr=False)  # lpt: which tails a dry class may take


@dataclass(frozen=True)
class Placement:
    """The answer of :func:`~.placement.place`: pairs to launch now, data sets no node can run,
    and the plan to pass to the next call (valid while the queue changes only by
    the pairs launched)."""

    pairs: tuple[tuple[DataSet, NodeState], ...]
    unplaceable: tuple[Unplaceable, ...]
    plan: Plan


@dataclass(frozen=True)
class NodeClass:
    """Interchangeable live nodes (same memory, walltime, speed, software, scratch)."""

    key: tuple
    rep: NodeState
    members: tuple[int, ...]  # indexes into the node list
    slots: int

    @property
    def capacity(self) -> float:
        """Work (speed-1.0 hours) the class does per hour."""
        return self.slots * self.rep.speed

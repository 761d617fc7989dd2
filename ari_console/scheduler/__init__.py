"""Placement policy and runtime/memory prediction (pure: no I/O, no clock).

Rooms: :mod:`.values` (the frozen values below), :mod:`.prediction` (prior,
history fits, :class:`Tuning`), :mod:`.eligibility` (what may run where, and
why not), :mod:`.lpt` (the ``lpt`` plan and its local search, :class:`Search`)
and :mod:`.placement` (:func:`place`, the policies). Every tunable is a
parameter with a default; nothing here reads a clock, a file or a socket.

The engine turns store rows into the values below and asks :func:`place` for
(data set, node) pairs whenever slots are free; :mod:`ari_console.estimate`
replays whole workloads through the very same function.

Values
------
- :class:`DataSet`: one waiting data set as the scheduler sees it (size, the
  optional explicit ``hours``/``mem_gb``, what it needs, operator overrides).
- :class:`Measured`: one finished or failed attempt (the history predictions
  learn from).
- :class:`NodeState`: one node now (slots, free slots, memory per slot,
  walltime, speed, recipes, drained flag, what is running there).
- :class:`Prediction`: hours on a speed-1.0 node and peak memory in GB.

Policies (``policy=`` in :func:`place`)
---------------------------------------
- ``lpt`` (default): a plan over the whole queue. Data sets are taken longest
  first and each goes to the eligible slot where it would *finish* earliest
  (so a long job waits for a fast node rather than crawl on a slow one);
  several orderings are tried (plain longest-first, scarcest-eligibility
  first, longest-first within the capacity split of the LP relaxation) and the
  plan with the shortest makespan is kept (from ``ORDERINGS_DEPTH`` data sets
  per slot only longest-first: so deep they end alike); a local search then
  moves or swaps data sets off the slot that ends last. Each node then runs its planned
  sequence; a node that runs dry takes the tail job of the most loaded
  eligible node if it finishes it sooner.
- ``greedy``: online longest-eligible-first, no plan (a textbook baseline).
- ``fifo``: queue order onto whatever slot is free, with **no** checks: the
  way a hand-run cluster loses jobs to memory and walltime (for contrast).

Every policy except ``fifo`` never places a data set where its predicted
memory exceeds the node's, where predicted hours / node speed exceed the
node's walltime, where the scratch disk it needs (size x ``SCRATCH_PER_GB``, or
x the factor finished attempts taught: ``scratch_factors``) exceeds the node's
known scratch, or where the recipe / CASA version it needs is missing. Data
sets no node can run come back in :attr:`Placement.unplaceable` with a reason.
"""

from .eligibility import (SCRATCH_MIN_SAMPLES, SCRATCH_QUANTILE, curve_exceed, eligibility, fluid_bound, node_classes,
                          nodes_key, scratch_factors, scratch_masks, settle_risk, unplaceable_reason, why_not)
from .lpt import (DEFAULT_SEARCH, IMPROVE_MIN_GAIN, IMPROVE_PARTNERS, IMPROVE_ROUNDS, ORDERINGS_DEPTH, RELAX_QUANTILES,
                  RELAX_TOLERANCE, RISK_RATIOS, Search)
from .placement import DEFAULT_POLICY, POLICIES, fits_nowhere, make_plan, needs_plan, place, requeue
from .prediction import (DEFAULT_TUNING, FEATURES, HOURS_QUANTILE, MEM_QUANTILE, MIN_HISTORY,
                         PRIOR_MEDIAN_HOURS, PRIOR_MEDIAN_SIZE_GB, PRIOR_MEM_GB, PRIOR_MEM_PER_GB, PRIOR_QUANTILE,
                         PRIOR_SIZE_EXPONENT, REFERENCE_CHANNELS, RETRY_MARGIN, Fit, Model, Tuning, coefficient_draws,
                         features,
                         curve_unit, extended_pool, fit_history, hours_left, means_above, predict, predict_all, prior, quantiles_above,
                         running_left,
                         survival_residuals)
from .values import (SCRATCH_FLOOR_GB, SCRATCH_PER_GB, SCRATCH_RETRY_MARGIN, DataSet, Measured, NodeClass,
                     NodeState, Placement, Plan, Prediction, Unplaceable)

__all__ = [
    "DEFAULT_POLICY", "DEFAULT_SEARCH", "DEFAULT_TUNING", "POLICIES", "DataSet", "Fit", "Measured", "Model",
    "NodeClass", "NodeState", "Placement", "Plan", "Prediction", "Search", "Tuning", "Unplaceable",
    "coefficient_draws", "curve_exceed", "curve_unit", "eligibility", "extended_pool", "features", "fit_history", "fluid_bound",
    "fits_nowhere", "hours_left", "make_plan", "means_above", "running_left",
    "node_classes", "needs_plan", "nodes_key", "place", "predict", "predict_all", "prior", "quantiles_above",
    "requeue", "scratch_factors", "scratch_masks", "SCRATCH_MIN_SAMPLES", "SCRATCH_QUANTILE", "settle_risk",
    "survival_residuals", "unplaceable_reason", "why_not",
    "FEATURES", "HOURS_QUANTILE", "MEM_QUANTILE", "MIN_HISTORY", "PRIOR_MEDIAN_HOURS",
    "PRIOR_MEDIAN_SIZE_GB", "PRIOR_MEM_GB", "PRIOR_MEM_PER_GB", "PRIOR_QUANTILE", "PRIOR_SIZE_EXPONENT",
    "REFERENCE_CHANNELS", "RETRY_MARGIN", "IMPROVE_MIN_GAIN", "IMPROVE_PARTNERS", "IMPROVE_ROUNDS", "ORDERINGS_DEPTH",
    "RELAX_QUANTILES", "RELAX_TOLERANCE", "RISK_RATIOS", "SCRATCH_FLOOR_GB", "SCRATCH_PER_GB", "SCRATCH_RETRY_MARGIN",
]

"""Pausing Python's cyclic garbage collector while the scheduler builds plans or replays."""

from __future__ import annotations

import contextlib
import gc
import types


@contextlib.contextmanager
def paused():
    """Python's cyclic garbage collector off for a block or a function (as it was after).

    A re-plan of 100,000 queued data sets allocates about a million objects, a replay of
    6000 millions of short-lived ones; each allocation burst would start a collection that
    walks every live object again (40% of the engine's re-plan's CPU, ~8% of a replay's on
    ``study``). Nothing they make is cyclic garbage (reference counting frees it), so pausing
    loses nothing. As a decorator (``@paused()``) it pauses the collector for each call.

    When the block sets ``keep`` on what it is given (a new plan was made), what is
    alive is moved out of the collector's passes (``gc.freeze``) before it runs again:
    otherwise its next pass walks the new plan's million objects once more (~150 ms at
    100,000 queued) for nothing, since a plan is values without cycles. A plan replaced
    later is still freed by reference counting. The young generations are collected on
    entry (they are small while the collector runs: a millisecond), so what a freeze keeps
    is at most garbage in cycles made inside the block: none by a re-plan, a little by
    another thread meanwhile (the TUI), as with the TUI's own freeze after its first read.
    """
    was = gc.isenabled()
    if was:
        gc.collect(1)
    gc.disable()
    state = types.SimpleNamespace(keep=False)
    try:
        yield state
    finally:
        if state.keep:
            gc.freeze()
        if was:
            gc.enable()

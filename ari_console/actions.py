"""What an operator does to a campaign: retry, hold, release, accept, unaccept, reject, drain, undrain, override.

The CLI and the TUI call these same functions; each is one transaction in the
store and leaves an ``operator`` event (``detail.action`` names it) beside the
state change, so the report can count what people did, apart from what the
engine did; the engine picks the change up on its next tick.
"""

from __future__ import annotations

from typing import Iterable

from . import alma, store
from .errors import UserError


def _record(db: store.Database, action: str, now: float, uid: str | None = None, node: str | None = None,
            **detail) -> None:
    """The ``operator`` event of one action."""
    store.record_event(db, "operator", now, uid=uid, node=node,
                       detail={"action": action, **{k: v for k, v in detail.items() if v is not None}})


def canonical_uid(db: store.Database, text: str) -> str:
    """The campaign's uid for ``text`` (either spelling), or a UserError naming it."""
    try:
        uid = alma.parse_uid(text)
    except ValueError:
        raise UserError(f'"{text}" is not a MOUS uid — write e.g. uid://A001/X1296/X1d3') from None
    if store.dataset(db, uid) is None:
        raise UserError(f"{uid}: no such data set in this campaign — see `ari datasets list`")
    return uid


def retry(db: store.Database, text: str, now: float, node: str | None = None,
          mem_gb: float | None = None, walltime_h: float | None = None) -> dict:
    """Queue a failed, held or skipped data set again (optionally pinned to a node or with more resources)."""
    uid = canonical_uid(db, text)
    row = store.dataset(db, uid)
    if row["state"] == "running":
        raise UserError(f"{uid} is running now — wait for it, or stop it first with `ari cancel {uid}`")
    if row["state"] == "succeeded":
        raise UserError(f"{uid} already succeeded — its accepted attempt stays; nothing to retry")
    if row["state"] == "review":
        raise UserError(f"{uid} waits for a QA2 decision — `ari reject {uid} --retry` re-images it, "
                        f"`ari accept {uid}` delivers it")
    if node is not None and node not in {n["name"] for n in store.nodes(db)}:
        raise UserError(f'no node "{node}" in this campaign — see `ari nodes list`')
    check_amounts(mem_gb=mem_gb, walltime_h=walltime_h)
    given = {k: v for k, v in (("node", node), ("mem_gb", mem_gb), ("walltime_h", walltime_h)) if v is not None}
    with store.transaction(db, immediate=True):
        if given:
            store.set_overrides(db, uid, now, **given)
        store.set_dataset_state(db, uid, "queued", now, reason="operator retry")
        store.record_event(db, "retry", now, uid=uid, detail={"node": node} if node else None)
        _record(db, "retry", now, uid, **given)
    return store.dataset(db, uid)


def _in_review(db: store.Database, text: str) -> tuple[str, dict]:
    """The uid and the attempt waiting for a QA2 decision, or a UserError saying why there is none."""
    uid = canonical_uid(db, text)
    state = store.dataset(db, uid)["state"]
    candidate = store.review_attempt(db, uid)
    if state != "review" or candidate is None:
        raise UserError(f"{uid} is {state}, not waiting for a QA2 decision — `ari datasets list --state review` "
                        "lists those that are")
    return uid, candidate


def accept(db: store.Database, text: str, now: float, note: str | None = None) -> dict:
    """Deliver the products waiting in review (QA2 discrepant or unverifiable): the data set succeeds."""
    uid, candidate = _in_review(db, text)
    with store.transaction(db, immediate=True):
        uncalibrated = bool(candidate["review"].get("uncalibrated"))
        how = "accepted by an operator at QA2 review" + (" — UNCALIBRATED products" if uncalibrated else "")
        store.accept_attempt(db, uid, candidate["id"], now, reason=how + (f": {note}" if note else ""))
        _record(db, "accept", now, uid, attempt=candidate["id"], note=note,
                uncalibrated=True if candidate["review"].get("uncalibrated") else None)
    return store.dataset(db, uid)


def unaccept(db: store.Database, text: str, now: float, note: str | None = None) -> dict:
    """Take back a delivery: the accepted attempt of a succeeded data set waits in QA2 review again.

    Its products and QA2 verdicts stay; the attempt delivered before it (if one was) is delivered
    again until this one is accepted anew. The accept (its time, its reason and note) stays in the
    history beside an ``unaccepted`` event; ``ari accept`` / ``ari reject`` then decide again.
    The data set's row is returned with ``unaccepted: {attempt, accepted_at, was, restored}``.
    """
    uid = canonical_uid(db, text)
    row = store.dataset(db, uid)
    if row["state"] == "review":
        raise UserError(f"{uid} already waits for a QA2 decision — `ari accept {uid}` or `ari reject {uid}` decides it")
    if row["state"] != "succeeded" or row["accepted_attempt"] is None:
        raise UserError(f"{uid} is {row['state']}, not accepted — only a delivered data set can be un-accepted; "
                        "`ari datasets list --state succeeded` lists them")
    reason = "un-accepted by an operator" + (f": {note}" if note else "") + \
        (f" (was: {row['reason']})" if row.get("reason") else "")
    with store.transaction(db, immediate=True):
        took_back = store.unaccept_attempt(db, uid, now, reason=reason, note=note)
        _record(db, "unaccept", now, uid, attempt=took_back["attempt"], note=note,
                restored=took_back["restored"])
    return {**store.dataset(db, uid), "unaccepted": took_back}


def reject(db: store.Database, text: str, now: float, retry: bool = False, reason: str = "rejected at QA2 review",
           node: str | None = None, mem_gb: float | None = None, walltime_h: float | None = None) -> dict:
    """Refuse the products waiting in review; hold the data set, or with ``retry`` queue it again.

    The rejected attempt stays in the history; a data set delivered before keeps its accepted attempt
    (and is ``succeeded`` again when not retried).
    """
    uid, candidate = _in_review(db, text)
    if node is not None and node not in {n["name"] for n in store.nodes(db)}:
        raise UserError(f'no node "{node}" in this campaign — see `ari nodes list`')
    given = {k: v for k, v in (("node", node), ("mem_gb", mem_gb), ("walltime_h", walltime_h)) if v is not None}
    delivered_before = store.dataset(db, uid)["accepted_attempt"] is not None
    with store.transaction(db, immediate=True):
        store.record_event(db, "rejected", now, uid=uid, attempt_id=candidate["id"], detail={"reason": reason})
        _record(db, "reject", now, uid, attempt=candidate["id"], reason=reason, retry=retry or None, **given)
        if retry:
            if given:
                store.set_overrides(db, uid, now, **given)
            store.set_dataset_state(db, uid, "queued", now, reason=f"QA2 rejected, retried: {reason}")
            store.record_event(db, "retry", now, uid=uid, detail={"node": node} if node else None)
        elif delivered_before:
            store.set_dataset_state(db, uid, "succeeded", now, reason=f"re-run rejected: {reason}")
        else:
            store.set_dataset_state(db, uid, "held", now, reason=f"QA2 rejected: {reason}")
    return store.dataset(db, uid)


def hold(db: store.Database, text: str, now: float, reason: str = "held by operator") -> dict:
    """Keep a data set out of scheduling until released (a running attempt goes on)."""
    uid = canonical_uid(db, text)
    if store.dataset(db, uid)["state"] == "succeeded":
        raise UserError(f"{uid} already succeeded — nothing to hold")
    with store.transaction(db, immediate=True):
        store.set_dataset_state(db, uid, "held", now, reason=reason)
        _record(db, "hold", now, uid, reason=reason)
    return store.dataset(db, uid)


def release(db: store.Database, text: str, now: float) -> dict:
    """Let a held data set be scheduled again."""
    uid = canonical_uid(db, text)
    if store.dataset(db, uid)["state"] != "held":
        raise UserError(f"{uid} is not held (it is {store.dataset(db, uid)['state']}) — nothing to release")
    with store.transaction(db, immediate=True):
        store.set_dataset_state(db, uid, "queued", now, reason="released by operator")
        _record(db, "release", now, uid)
    return store.dataset(db, uid)


def attempts_to_cancel(db: store.Database, text: str, now: float) -> list[dict]:
    """The data set's pending or running attempts, each with a ``cancel`` event recorded; UserError if none.

    The caller stops them on their nodes (``nodes.ops.cancel``); the engine sees
    them end as ``cancelled`` and holds the data set until an operator releases it.
    """
    uid = canonical_uid(db, text)
    active = [a for a in store.active_attempts(db) if a["uid"] == uid]
    if not active:
        raise UserError(f"{uid}: no attempt is running (it is {store.dataset(db, uid)['state']}) — nothing to cancel")
    with store.transaction(db, immediate=True):
        for a in active:
            _record(db, "cancel", now, uid, node=a["node"], attempt=a["id"])
    return active


def cancel(db: store.Database, text: str, now: float, config) -> list[dict]:
    """Stop the data set's running attempts on their nodes (``ari cancel`` and the console's ``c``).

    ``[{uid, attempt, node}]`` of the attempts told to stop; the data set is held once they ended.
    """
    from .nodes import NodeUnreachable, connect, ops

    stopped = []
    for a in attempts_to_cancel(db, text, now):
        node = config.node(a["node"])
        if not a["handle"]:
            raise UserError(f"{a['uid']}: attempt {a['id']} is still being launched on {node.name} — "
                            f"cancel again in a few seconds")
        transport = connect(node)
        try:
            ops.cancel(node, transport, a["handle"])
        except NodeUnreachable as exc:
            raise UserError(f"{a['uid']}: node {node.name} is unreachable ({exc}) — the attempt may still run there; "
                            f"`ari nodes check` says why") from None
        finally:
            transport.close()
        stopped.append({"uid": a["uid"], "attempt": a["id"], "node": node.name})
    return stopped


def drain(db: store.Database, node: str, now: float, reason: str = "drained by operator") -> None:
    """Stop placing new attempts on ``node`` (running ones finish)."""
    with store.transaction(db, immediate=True):
        store.set_drained(db, node, True, now, reason)
        _record(db, "drain", now, node=node, reason=reason)


def undrain(db: store.Database, node: str, now: float) -> None:
    """Place attempts on ``node`` again."""
    with store.transaction(db, immediate=True):
        store.set_drained(db, node, False, now)
        _record(db, "undrain", now, node=node)


def override(db: store.Database, text: str, now: float, *, mem_gb: float | None = None,
             walltime_h: float | None = None, node: str | None = None, casa_version: str | None = None,
             params: dict | None = None, clear: bool = False, recipes: Iterable[str] | None = None) -> dict:
    """Set what the next attempt of a data set uses (memory, walltime, node, CASA version, recipe parameters)."""
    uid = canonical_uid(db, text)
    if node is not None and node not in {n["name"] for n in store.nodes(db)}:
        raise UserError(f'no node "{node}" in this campaign — see `ari nodes list`')
    check_amounts(mem_gb=mem_gb, walltime_h=walltime_h)
    check_params(params or {}, recipes)
    with store.transaction(db, immediate=True):
        if clear:
            current = store.dataset(db, uid)["overrides"]
            store.set_overrides(db, uid, now, **{k: None for k in current})
        changes = {k: v for k, v in (("mem_gb", mem_gb), ("walltime_h", walltime_h), ("node", node),
                                      ("casa_version", casa_version)) if v is not None}
        if params:
            changes["params"] = {**store.dataset(db, uid)["overrides"].get("params", {}), **params}
        if changes:
            store.set_overrides(db, uid, now, **changes)
        if clear or changes:
            _record(db, "override", now, uid, cleared=clear or None, **changes)
    return store.dataset(db, uid)


def check_amounts(**amounts: float | None) -> None:
    """Memory and walltime an operator gives: finite and positive, else a UserError naming the option.

    >>> check_amounts(mem_gb=float("nan"))
    Traceback (most recent call last):
    ...
    ari_console.errors.UserError: --mem-gb must be a positive number of GB, got nan — write e.g. --mem-gb 16
    """
    import math

    for key, value in amounts.items():
        if value is None:
            continue
        if not math.isfinite(value) or value <= 0:
            unit, example = ("GB", 16) if key.endswith("_gb") else ("hours", 48)
            option = "--" + key.replace("_", "-")
            raise UserError(f"{option} must be a positive number of {unit}, got {value:g} — write e.g. "
                            f"{option} {example}")


def recipe_parameters(recipe: str) -> set[str]:
    """The parameters a recipe of ``remote/recipes/`` knows: its ``DEFAULTS`` keys and every
    ``params.get("...")`` it reads (read from its source; the recipe is not imported here)."""
    import ast

    from .nodes.ops import REMOTE_SRC

    path = REMOTE_SRC / "recipes" / f"{recipe.replace('-', '_')}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    known: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "DEFAULTS" for t in node.targets) \
                and isinstance(node.value, ast.Dict):
            known |= {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "params" and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            known.add(node.args[0].value)
    return known


def check_params(params: dict, recipes: Iterable[str] | None = None) -> None:
    """``--param`` names the campaign's recipes know (all shipped recipes when not given), else a UserError."""
    import difflib

    from .config import RECIPES

    if not params:
        return
    names = sorted(set(recipes or RECIPES))
    known = set().union(*(recipe_parameters(r) for r in names))
    for key in params:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f'did you mean "{close[0]}"?' if close else f"known: {', '.join(sorted(known))}"
            raise UserError(f'--param "{key}": the {"/".join(names)} recipe has no such parameter — {hint}')


def parse_params(pairs: list[str]) -> dict:
    """``["niter=1000", "robust=0.5", "cell=0.1arcsec"]`` -> values (numbers and booleans as such).

    >>> parse_params(["niter=1000", "cell=0.1arcsec", "pbcor=true"])
    {'niter': 1000, 'cell': '0.1arcsec', 'pbcor': True}
    """
    import json

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f'--param "{pair}" is not KEY=VALUE — write e.g. --param robust=0.5')
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out

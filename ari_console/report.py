"""The campaign report: what an operator hands to their managers.

:func:`collect` reads the campaign through :mod:`ari_console.store` and returns
its numbers (the ``ari report --json`` document) with the series the plots
draw; :func:`write_report` draws the plots (matplotlib, Agg, no pyplot state)
and writes ``report.html``, self-contained: every PNG is embedded as a data
URI and also written beside it, and there is no external CSS or JavaScript.

The computations in between are pure functions of store rows, each with an
example. A plot with nothing to draw says "no data yet" instead of failing.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from . import readmodel, store
from .errors import UserError
from .formatting import gb_text, hours_text
from .scheduler import DEFAULT_POLICY
from .triage import CATEGORIES

PLOTS = {
    "success": "Success rate over time",
    "failures": "Failures by category",
    "runtime": "Runtime of successful attempts by node",
    "qa2": "QA2 flux ratio against SNR",
    "burndown": "Queue burn-down and estimated completion",
}
"""The report's plots, in page order: file stem -> title."""

NO_DATA = "no data yet"
REFERENCE_COVERAGE = {"project": "ARI-L", "share": 0.86, "mous": 3202, "cycles": "2-4"}
"""ARI-L delivered products for 86% of the 3202 processable Cycle 2-4 MOUS (docs: DESIGN.md)."""
STUDY_UNSUPERVISED = 0.5
"""About half of the data sets went through unsupervised at first in the 2017 study."""

FINISHED = readmodel.TRIED_ATTEMPT_STATES  # the attempts `ari stats` counts
REMAINING = ("queued", "running", "held", "review")   # data-set states still to do
EVENT_KINDS = ("imported", "state", "operator")


# -- pure computations -------------------------------------------------------------

def quantile(values: Iterable[float], q: float) -> float | None:
    """The ``q`` quantile of ``values``, linear between ranks (numpy's default); None when empty.

    >>> round(quantile([2, 4, 6, 8, 10], 0.9), 6), quantile([3], 0.5), quantile([], 0.5)
    (9.2, 3.0, None)
    """
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def spread(values: Sequence[float]) -> dict:
    """Count, median and 90th percentile of ``values`` (None when there are none).

    >>> spread([5.0, 12.0, 30.0])
    {'count': 3, 'median': 12.0, 'p90': 26.4}
    """
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {"count": len(values), "median": r(quantile(values, 0.5)), "p90": r(quantile(values, 0.9))}


def success_over_time(attempts: Iterable[Mapping]) -> list[dict]:
    """Cumulative success by the finish time of attempts: after each finished attempt, the share
    of data sets tried so far whose first attempt succeeded, and whose any attempt did.

    >>> rows = [dict(id=1, uid="a", state="failed", ended_at=1.0), dict(id=2, uid="b", state="succeeded", ended_at=2.0),
    ...         dict(id=3, uid="a", state="succeeded", ended_at=3.0)]
    >>> [(p["ts"], p["first_try"], p["after_retries"]) for p in success_over_time(rows)]
    [(1.0, 0.0, 0.0), (2.0, 0.5, 0.5), (3.0, 0.5, 1.0)]
    """
    done = sorted((a for a in attempts if a["state"] in FINISHED and a["ended_at"] is not None),
                  key=lambda a: (a["ended_at"], a["id"]))
    tried: set[str] = set()
    succeeded: set[str] = set()
    first_ok = 0
    points = []
    for a in done:
        if a["uid"] not in tried:
            tried.add(a["uid"])
            first_ok += a["state"] == "succeeded"
        if a["state"] == "succeeded":
            succeeded.add(a["uid"])
        point = {"ts": a["ended_at"], "tried": len(tried), "first_try": first_ok / len(tried),
                 "after_retries": len(succeeded) / len(tried)}
        if points and points[-1]["ts"] == point["ts"]:
            points[-1] = point  # attempts that ended together make one step
        else:
            points.append(point)
    return points


def remaining_over_time(events: Iterable[Mapping]) -> list[tuple[float, int]]:
    """Data sets still to do (queued, running, held or in review) after each import or state change, as steps.

    >>> ev = [dict(ts=0.0, uid="a", kind="imported", new="queued"),
    ...       dict(ts=0.0, uid="b", kind="imported", new="excluded"),
    ...       dict(ts=5.0, uid="a", kind="state", new="running"), dict(ts=9.0, uid="a", kind="state", new="succeeded")]
    >>> remaining_over_time(ev)
    [(0.0, 1), (9.0, 0)]
    """
    state: dict[str, str] = {}
    remaining = 0
    points: list[tuple[float, int]] = []
    for e in events:
        if e["kind"] not in ("imported", "state") or not e["uid"]:
            continue
        remaining -= state.get(e["uid"]) in REMAINING
        state[e["uid"]] = e["new"]
        remaining += e["new"] in REMAINING
        if points and points[-1][0] == e["ts"]:
            points[-1] = (e["ts"], remaining)
        elif not points or points[-1][1] != remaining:
            points.append((e["ts"], remaining))
    return points


def hold_episodes(events: Iterable[Mapping]) -> list[tuple[str, float, float | None]]:
    """Each time a data set was held: (uid, held at, left held at — None while it still is).

    >>> ev = [dict(ts=1.0, uid="a", kind="state", old="queued", new="held"),
    ...       dict(ts=4.0, uid="a", kind="state", old="held", new="queued"),
    ...       dict(ts=5.0, uid="b", kind="state", old="running", new="held")]
    >>> hold_episodes(ev)
    [('a', 1.0, 4.0), ('b', 5.0, None)]
    """
    since: dict[str, float] = {}
    episodes = []
    for e in events:
        if e["kind"] != "state":
            continue
        if e["new"] == "held" and e["uid"] not in since:
            since[e["uid"]] = e["ts"]
        elif e["old"] == "held" and e["uid"] in since:
            episodes.append((e["uid"], since.pop(e["uid"]), e["ts"]))
    return episodes + [(uid, ts, None) for uid, ts in since.items()]


def operator_actions(events: Iterable[Mapping]) -> dict[str, int]:
    """Operator actions by kind (retry, release, hold, override, drain, undrain), from their ``operator`` events.

    ``ari_console.actions`` (what the CLI and the console call) records one per
    action; what the engine does on its own leaves none, so it is not counted.

    >>> ev = [dict(kind="operator", detail={"action": "hold"}), dict(kind="state", detail=None),
    ...       dict(kind="operator", detail={"action": "release"}), dict(kind="operator", detail={"action": "hold"})]
    >>> operator_actions(ev)
    {'hold': 2, 'release': 1}
    """
    counts: dict[str, int] = {}
    for e in events:
        if e["kind"] == "operator":
            action = (e["detail"] or {}).get("action") or "other"
            counts[action] = counts.get(action, 0) + 1
    return counts


def flux_tolerance(snr: float, beams: float = 1.0) -> float:
    """The flux-ratio tolerance the QA2 verdict allows at ``snr`` for a source region of ``beams`` beams.

    Asked of :func:`ari_console.qa2.compare.compare` itself, so the band drawn is the rule applied.

    >>> flux_tolerance(1000.0), round(flux_tolerance(12.0, beams=4.0), 3)
    (0.05, 0.5)
    """
    from .qa2.compare import compare

    m = {"file": "", "peak": 1.0, "flux": 1.0, "rms": 1.0 / snr, "snr": snr,
         "beam_major": 1.0, "beam_minor": 1.0, "region_beams": beams}
    return compare(m, m).flux_tolerance


# -- reading the campaign ------------------------------------------------------------

@dataclass
class ReportData:
    """The report's numbers (the JSON document) and the series its plots draw."""

    numbers: dict
    success: list[dict] = field(default_factory=list)
    remaining: list[tuple[float, int]] = field(default_factory=list)
    runtimes: dict[str, list[float]] = field(default_factory=dict)
    qa2: list[tuple[float, float, str]] = field(default_factory=list)
    now: float = 0.0


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="minutes")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def collect(db: store.Database, cfg, now: float, policy: str = DEFAULT_POLICY) -> ReportData:
    """Everything the report shows, read from one snapshot of the store; ``cfg`` gives the nodes.

    Call :func:`ari_console.store.sync_nodes` first so the estimate sees the configured nodes.
    """
    with store.transaction(db):
        totals = store.counts(db)
        summary = readmodel.stats(db)
        finished = store.attempts(db, states=FINISHED)
        events = store.events_of_kinds(db, EVENT_KINDS)
        delivered = store.deliveries(db)
        disk = store.product_bytes(db)
        pairs = all_pairs = store.qa2_results(db)
        uncalibrated = store.uncalibrated_attempts(db)
        estimate = completion_estimate(db, cfg, now, policy)
        attention = readmodel.attention(db, now, readmodel.stale_probe_s(cfg))

    cpus = {n.name: n.cpus_per_slot for n in cfg.nodes}
    imported = sum(totals.values())
    eligible = imported - totals["excluded"]
    accepted = {d["attempt_id"] for d in delivered}
    pairs = [p for p in pairs if p["attempt_id"] in accepted or p["attempt_id"] is None]
    points = [(p["detail"].get("snr_min"), p["flux_ratio"], p["verdict"]) for p in pairs]
    points = [(s, r, v) for s, r, v in points if _finite(s) and s > 0 and _finite(r)]
    consistent = sum(p["verdict"] == "consistent" for p in pairs)
    by_eye = qa2_by_eye(all_pairs)
    runtimes: dict[str, list[float]] = {}
    for a in finished:
        if a["state"] == "succeeded" and a["started_at"] is not None and a["ended_at"] is not None:
            runtimes.setdefault(a["node"], []).append((a["ended_at"] - a["started_at"]) / 3600)
    failures = {c: 0 for c in CATEGORIES}
    failures.update(summary["failures_by_category"])
    episodes = hold_episodes(events)
    actions = operator_actions(events)
    waits = [(end - start) / 3600 for _, start, end in episodes if end is not None]
    to_product = [(d["ended_at"] - d["created_at"]) / 3600 for d in delivered if d["ended_at"] is not None]
    numbers = {
        "campaign": cfg.campaign.name,
        "generated_at": _iso(now),
        "datasets": {"imported": imported, "excluded": totals["excluded"], "eligible": eligible,
                     "by_state": totals},
        "success": {"datasets_tried": summary["datasets_tried"], "first_try": summary["success_first_try"],
                    "after_retries": summary["success_after_retries"],
                    "reference_unsupervised": STUDY_UNSUPERVISED},
        "failures_by_category": failures,
        "runtime_h_by_node": summary["runtime_h_by_node"],
        "qa2": {"pairs": len(pairs), "consistent": consistent, "discrepant": len(pairs) - consistent,
                "consistent_share": round(consistent / len(pairs), 4) if pairs else None,
                "by_eye": by_eye},
        "burndown": {"remaining": sum(totals[s] for s in REMAINING), "queued": totals["queued"],
                     "running": totals["running"], "held": totals["held"], "review": totals.get("review", 0),
                     "estimate": estimate},
        "attempt_hours": summary["attempt_hours"],
        "cpu_hours": round(sum(h * cpus.get(n, 1) for n, h in summary["attempt_hours_by_node"].items()), 4),
        "disk": {"products_bytes": disk["all"], "products_gb": round(disk["all"] / 1e9, 3),
                 "accepted_products_gb": round(disk["accepted"] / 1e9, 3)},
        "coverage": {"eligible": eligible, "with_product": len(delivered),
                     "share": round(len(delivered) / eligible, 4) if eligible else None,
                     "review": totals.get("review", 0),
                     "uncalibrated": len(accepted & uncalibrated),
                     "reference": REFERENCE_COVERAGE},
        "time_to_product_h": spread(to_product),
        "attention": attention,
        "operator": {"held_datasets": len({uid for uid, _, _ in episodes}), "held_now": totals["held"],
                     "released": len(waits), "hold_to_release_h": spread(waits),
                     "actions": sum(actions.values()), "actions_by_kind": actions},
    }
    return ReportData(numbers, success_over_time(finished), remaining_over_time(events), runtimes, points, now)


BY_EYE_DISCREPANT = 20  # at most this many discrepant pairs get pictures (the worst first)
BY_EYE_CONSISTENT = 3   # and a sample of this many consistent ones


def qa2_by_eye(pairs: Sequence[Mapping], discrepant: int = BY_EYE_DISCREPANT,
               consistent: int = BY_EYE_CONSISTENT) -> list[dict]:
    """The pairs the report shows as pictures with their per-source table: every discrepant
    pair (up to ``discrepant``, furthest flux ratio first) and a sample of consistent ones
    (evenly spread over the list).

    >>> rows = [dict(uid="a", verdict="discrepant", flux_ratio=1.4, detail={}), dict(uid="b", verdict="consistent",
    ...         flux_ratio=1.0, detail={}), dict(uid="c", verdict="consistent", flux_ratio=1.01, detail={})]
    >>> [p["uid"] for p in qa2_by_eye(rows, consistent=1)]
    ['a', 'b']
    """
    def far(p):
        r = p.get("flux_ratio")
        return -abs(math.log(r)) if _finite(r) and r > 0 else -math.inf

    bad = sorted((p for p in pairs if p.get("verdict") == "discrepant"), key=far)[:discrepant]
    good = [p for p in pairs if p.get("verdict") == "consistent"]
    step = max(1, len(good) // consistent) if consistent else 1
    sample = good[::step][:consistent]
    keys = ("uid", "attempt_id", "pl", "qa2", "field", "specmode", "verdict", "flux_ratio", "peak_ratio", "rms_ratio")
    return [{**{k: p.get(k) for k in keys}, "reasons": (p.get("detail") or {}).get("reasons", ""),
             "sources": (p.get("detail") or {}).get("sources", [])} for p in bad + sample]


def draw_pair(entry: Mapping) -> bytes | None:
    """PNG of a pair's two images side by side with their sources marked; None when a file is gone."""
    from .qa2 import thumbs

    if not all(entry.get(k) and Path(entry[k]).is_file() for k in ("pl", "qa2")):
        return None
    try:
        left, right = thumbs.pair(entry["pl"], entry["qa2"], entry.get("sources"), 96, 96)
    except Exception:  # an unreadable image: the table still shows the numbers
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.4), dpi=90, layout="constrained")
    for k, thumb in enumerate((left, right)):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.imshow(thumb.values, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
        for x, y, ident, verdict in thumb.marks:
            ax.plot(x - 0.5, y - 0.5, "+", ms=10, mew=1.5, color="lime" if verdict == "consistent" else "red")
            ax.annotate(str(ident), (x + 1, y - 1), color="white", fontsize=7)
        ax.set_title(thumb.title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def completion_estimate(db: store.Database, cfg, now: float, policy: str = DEFAULT_POLICY) -> dict:
    """When the queue will be done, as `ari estimate campaign` answers it; ``finish`` None and a
    ``note`` saying why when it cannot be estimated."""
    from .readmodel import campaign_estimate

    queue, states, result = campaign_estimate(db, cfg.nodes, now, policy)
    out = {"finish": None, "makespan_h": None, "lower_bound_h": None, "queued": len(queue),
           "nodes": len(states), "policy": policy, "unplaceable": 0, "note": ""}
    if not queue:
        out["note"] = "nothing queued: no estimate to make"
        return out
    if result is None:
        out["note"] = "no node can take work (none configured, or all drained): no estimate"
        return out
    out["unplaceable"] = len(result.unplaceable)
    if len(result.unplaceable) == len(queue):
        out["note"] = f"no queued data set fits any node ({result.unplaceable[0].reason}): no estimate"
        return out
    out.update(finish=result.finish_at.isoformat(timespec="minutes"), makespan_h=round(result.remaining_h, 3),
               lower_bound_h=round(result.lower_bound_h, 3),
               finish_p10=result.band[0].isoformat(timespec="minutes") if result.band else None,
               finish_p90=result.band[2].isoformat(timespec="minutes") if result.band else None)
    if result.unplaceable:
        out["note"] = f"{len(result.unplaceable)} queued data sets fit no node and are not in the estimate"
    return out


# -- plots -------------------------------------------------------------------------------

def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.6), dpi=100, layout="constrained")
    return fig, fig.subplots()


def _no_data(ax, title: str) -> None:
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, NO_DATA, ha="center", va="center", fontsize=18, color="#888888", transform=ax.transAxes)


def _dates(ax) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _plot_success(ax, data: ReportData) -> bool:
    if not data.success:
        return False
    from matplotlib.ticker import PercentFormatter

    xs = [_dt(p["ts"]) for p in data.success]
    ax.step(xs, [p["after_retries"] for p in data.success], where="post", color="#2b8a3e", lw=2,
            label="succeeded (after retries)")
    ax.step(xs, [p["first_try"] for p in data.success], where="post", color="#1c7ed6", lw=2,
            label="succeeded unsupervised (first attempt)")
    ax.axhline(STUDY_UNSUPERVISED, color="#868e96", ls=":", lw=1, label="2017 study: ~50% unsupervised")
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("of data sets tried")
    ax.legend(loc="lower right", fontsize=8)
    _dates(ax)
    return True


def _plot_failures(ax, data: ReportData) -> bool:
    failures = data.numbers["failures_by_category"]
    if not any(failures.values()):
        return False
    from matplotlib.ticker import MaxNLocator

    names = list(failures)
    bars = ax.bar(names, [failures[n] for n in names], color="#e8590c")
    ax.bar_label(bars, labels=[str(v) if v else "" for v in failures.values()], fontsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("failed attempts")
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return True


def _plot_runtime(ax, data: ReportData) -> bool:
    if not data.runtimes:
        return False
    names = sorted(data.runtimes)
    values = [data.runtimes[n] for n in names]
    ax.boxplot(values, widths=0.5, showfliers=False)
    for i, hours in enumerate(values, start=1):
        offsets = [(k / max(len(hours) - 1, 1) - 0.5) * 0.3 if len(hours) > 1 else 0.0 for k in range(len(hours))]
        ax.scatter([i + o for o in offsets], hours, s=14, color="#1c7ed6", alpha=0.7, zorder=3)
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_ylabel("hours")
    ax.set_ylim(bottom=0)
    return True


def _plot_qa2(ax, data: ReportData) -> bool:
    if not data.qa2:
        return False
    import numpy as np

    from .qa2.compare import Rule

    snrs = [s for s, _, _ in data.qa2]
    ratios = [r for _, r, _ in data.qa2]
    detect = Rule().detection_snr
    lo, hi = max(1.0, min(min(snrs), detect) / 1.5), max(max(snrs), detect) * 1.5
    grid = np.geomspace(max(lo, detect), hi, 200)
    tol = np.array([flux_tolerance(float(s)) for s in grid])
    ax.fill_between(grid, 1 - tol, 1 + tol, color="#b2f2bb", alpha=0.7,
                    label="consistent (1-beam source; wider for extended ones)")
    ax.axhline(1.0, color="#2b8a3e", lw=0.8)
    ax.axvspan(lo, detect, color="#e9ecef", label=f"SNR < {detect:g}: flux not judged")
    for verdict, colour, marker in (("consistent", "#2b8a3e", "o"), ("discrepant", "#c92a2a", "x")):
        pts = [(s, r) for s, r, v in data.qa2 if v == verdict]
        if pts:
            ax.scatter(*zip(*pts), color=colour, marker=marker, s=28, zorder=3, label=verdict)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(min(0.4, min(ratios) - 0.1), max(1.6, max(ratios) + 0.1))
    ax.set_xlabel("SNR (the fainter image's)")
    ax.set_ylabel("flux ratio pipeline / QA2")
    ax.legend(loc="upper right", fontsize=7)
    return True


def _plot_burndown(ax, data: ReportData) -> bool:
    if not data.remaining:
        return False
    steps = list(data.remaining) + [(data.now, data.remaining[-1][1])]
    ax.step([_dt(t) for t, _ in steps], [n for _, n in steps], where="post", color="#1c7ed6", lw=2,
            label="remaining (queued, running, held, review)")
    est = data.numbers["burndown"]["estimate"]
    b = data.numbers["burndown"]
    waiting = b["held"] + b["review"]  # what the nodes leave when the queue is done
    if est["finish"]:
        finish = datetime.fromisoformat(est["finish"])
        ax.plot([_dt(data.now), finish], [steps[-1][1], waiting], ls="--", color="#e8590c",
                label=f"estimated ({est['policy']}): done {finish:%Y-%m-%d %H:%M} UTC")
        ax.axvline(finish, color="#e8590c", lw=0.8, ls=":")
        if est.get("finish_p10") and est.get("finish_p90"):
            ax.axvspan(datetime.fromisoformat(est["finish_p10"]), datetime.fromisoformat(est["finish_p90"]),
                       color="#e8590c", alpha=0.12, label="P10-P90 of the finish")
    else:
        ax.text(0.98, 0.95, f"no completion estimate: {est['note']}", transform=ax.transAxes, ha="right", va="top",
                fontsize=8, color="#c92a2a", wrap=True)
    if waiting:  # what no node will finish on its own, apart from the line, so the plot never looks done
        ax.axhspan(0, waiting, color="#fab005", alpha=0.25,
                   label=f"held ({b['held']}) or in QA2 review ({b['review']}) now: wait for a person")
    ax.set_ylim(0, max(data.numbers["datasets"]["eligible"], steps[0][1], 1) * 1.05)  # fixed axis: the total
    ax.set_ylabel("data sets")
    ax.legend(loc="upper right", fontsize=8)
    _dates(ax)
    return True


_DRAW = {"success": _plot_success, "failures": _plot_failures, "runtime": _plot_runtime,
         "qa2": _plot_qa2, "burndown": _plot_burndown}


def draw_plots(data: ReportData) -> dict[str, tuple[bytes, bool]]:
    """Every plot as PNG bytes, and whether it had data (else it says "no data yet")."""
    pngs = {}
    for name, title in PLOTS.items():
        fig, ax = _figure()
        drawn = _DRAW[name](ax, data)
        if drawn:
            ax.set_title(title)
            ax.grid(alpha=0.3)
        else:
            _no_data(ax, title)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        pngs[name] = (buf.getvalue(), drawn)
    return pngs


# -- the page ------------------------------------------------------------------------------

def _get(numbers: Mapping, key: str) -> Any:
    value: Any = numbers
    for part in key.split("."):
        value = value[part]
    return value


def display(value: Any, kind: str) -> str:
    """How the page shows a number: ``pct`` 66.7%, ``h`` (hours) 1d02h, ``gb`` 2 GB, ``num`` 58.0, ``int``, text.

    Durations and sizes read as everywhere else (:mod:`ari_console.formatting`).

    >>> display(0.6667, "pct"), display(26.4, "h"), display(0.04, "h"), display(None, "h"), display(2.0, "gb")
    ('66.7%', '1d02h', '2m', '—', '2 GB')
    """
    if value is None:
        return "—"
    formats = {"pct": lambda v: f"{100 * v:.1f}%", "h": hours_text, "gb": gb_text, "num": lambda v: f"{v:,.1f}"}
    return formats[kind](value) if kind in formats else str(value)


HEADLINES = (
    ("Coverage", "coverage.share", "pct"),
    ("With an accepted product", "coverage.with_product", "int"),
    ("Waiting for a QA2 decision (review)", "coverage.review", "int"),
    ("Delivered uncalibrated (accepted by an operator)", "coverage.uncalibrated", "int"),
    ("Eligible data sets", "coverage.eligible", "int"),
    ("Succeeded unsupervised", "success.first_try", "pct"),
    ("Succeeded after retries", "success.after_retries", "pct"),
    ("Data sets tried", "success.datasets_tried", "int"),
    ("Remaining", "burndown.remaining", "int"),
    ("Estimated completion (UTC)", "burndown.estimate.finish", "text"),
    ("CPU-hours", "cpu_hours", "num"),
    ("Disk used by products", "disk.products_gb", "gb"),
    ("Queue to product, median", "time_to_product_h.median", "h"),
    ("Queue to product, p90", "time_to_product_h.p90", "h"),
    ("QA2 pairs consistent", "qa2.consistent_share", "pct"),
    ("Held data sets", "operator.held_datasets", "int"),
    ("Hold to release, median", "operator.hold_to_release_h.median", "h"),
    ("Operator actions", "operator.actions", "int"),
)
"""The page's headline numbers: label, key in the JSON (dotted), display kind."""

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #212529; background: #fff;
       max-width: 980px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; }
.sub { color: #666; margin-top: 0; }
dl.headline { display: grid; grid-template-columns: repeat(4, 1fr); gap: 0.6em; }
dl.headline div { border: 1px solid #dee2e6; border-radius: 6px; padding: 0.5em 0.7em; background: #f8f9fa; }
dl.headline dt { font-size: 0.8em; color: #555; }
dl.headline dd { margin: 0; font-size: 1.35em; font-weight: 600; }
section.plot img { max-width: 100%; height: auto; border: 1px solid #eee; }
p.empty { color: #888; font-style: italic; }
p.note { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; }
th, td { border-bottom: 1px solid #dee2e6; padding: 0.2em 0.8em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
"""


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td class="n">{e(display(v, "num") if isinstance(v, float) else str(v))}</td>'
        if isinstance(v, (int, float)) else f"<td>{e('—' if v is None else str(v))}</td>" for v in row) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _notes(name: str, n: Mapping) -> str:
    """The sentence under a plot."""
    if name == "success":
        s = n["success"]
        return (f"{display(s['first_try'], 'pct')} of {s['datasets_tried']} data sets tried succeeded on their first "
                f"attempt, {display(s['after_retries'], 'pct')} after retries (cumulative, by attempt finish time).")
    if name == "failures":
        total = sum(n["failures_by_category"].values())
        return f"{total} failed or lost attempts, by the category triage gave them."
    if name == "runtime":
        return "Wall-clock hours of every successful attempt, per node (box: quartiles; dots: attempts)."
    if name == "qa2":
        q = n["qa2"]
        return (f"{q['consistent']} of {q['pairs']} pipeline/QA2 image pairs consistent. The band is the flux "
                f"tolerance of the verdict (docs/qa2.md) for a source of one beam.")
    est = n["burndown"]["estimate"]
    b = n["burndown"]
    text = (f"{b['remaining']} data sets remain ({b['queued']} queued, {b['running']} running, {b['held']} held, "
            f"{b['review']} in QA2 review). ")
    if est["finish"]:
        text += (f"Estimated completion {est['finish']} on {est['nodes']} nodes ({est['policy']}, makespan "
                 f"{hours_text(est['makespan_h'])}, lower bound {hours_text(est['lower_bound_h'])})"
                 + (f"; between {est['finish_p10']} and {est['finish_p90']} (P10-P90)." if est.get("finish_p10")
                    else "."))
    else:
        text += f"No completion estimate: {est['note']}."
    if est["finish"] and est["note"]:
        text += f" {est['note']}."
    if b["held"] or b["review"]:
        text += (" Held data sets and those in QA2 review wait for an operator and are not in the estimate"
                 " (the shaded band; see Needs a person).")
    return text


def render_html(numbers: Mapping, pngs: Mapping[str, tuple[bytes, bool]]) -> str:
    """The self-contained page: headline numbers, every plot as a data URI, the detail tables."""
    e = html.escape
    cards = "".join(
        f'<div><dt>{e(label)}</dt><dd data-key="{key}">{e(display(_get(numbers, key), kind))}</dd></div>'
        for label, key, kind in HEADLINES)
    ref = numbers["coverage"]["reference"]
    cov = numbers["coverage"]
    waiting = f"; {cov['review']} more wait for an operator's QA2 decision (review)" if cov.get("review") else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>ARI campaign report: {e(numbers['campaign'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Campaign {e(numbers['campaign'])}</h1>",
        f'<p class="sub">Re-imaging report, generated {e(numbers["generated_at"])} UTC. '
        f"{numbers['datasets']['imported']} data sets imported, {numbers['datasets']['excluded']} excluded by the "
        f"selection rules.</p>",
        f'<dl class="headline">{cards}</dl>',
        f'<p class="note" id="coverage-reference">Coverage: {cov["with_product"]} of {cov["eligible"]} eligible MOUS '
        f"({e(display(cov['share'], 'pct'))}) have an accepted product"
        f"{waiting}"
        f"; for reference, {ref['project']} delivered "
        f"products for {display(ref['share'], 'pct')} of {ref['mous']:,} Cycle {ref['cycles']} MOUS.</p>",
    ]
    for name, title in PLOTS.items():
        png, drawn = pngs[name]
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        note = f'<p class="note">{e(_notes(name, numbers))}</p>' if drawn else f'<p class="empty">{NO_DATA}</p>'
        if name == "qa2" and not drawn and numbers["qa2"]["pairs"]:
            note += f'<p class="note">{numbers["qa2"]["pairs"]} pairs are stored, none with an SNR to plot.</p>'
        parts.append(f'<section class="plot" id="plot-{name}"><h2>{e(title)}</h2>'
                     f'<img src="{uri}" alt="{e(title)}">{note}</section>')
    failures = [(c, n) for c, n in numbers["failures_by_category"].items() if n]
    parts.append("<h2>Details</h2><h3>Failures by category</h3>"
                 + (_table(["category", "attempts"], failures) if failures else f'<p class="empty">{NO_DATA}</p>'))
    runtimes = numbers["runtime_h_by_node"]
    parts.append("<h3>Runtime of successful attempts</h3>"
                 + (_table(["node", "attempts", "median", "max"],
                           [(k, v["count"], hours_text(v["median"]), hours_text(v["max"])) for k, v in runtimes.items()])
                    if runtimes else f'<p class="empty">{NO_DATA}</p>'))
    t, op, disk = numbers["time_to_product_h"], numbers["operator"], numbers["disk"]
    parts.append("<h3>Time, hardware and operator effort</h3>" + _table(["", "value"], [
        ("queue to accepted product: data sets", t["count"]),
        ("queue to accepted product: median", display(t["median"], "h")),
        ("queue to accepted product: p90", display(t["p90"], "h")),
        ("attempt time", display(numbers["attempt_hours"], "h")),
        ("CPU-hours", numbers["cpu_hours"]),
        ("products on disk (of accepted attempts)",
         f"{display(disk['products_gb'], 'gb')} ({display(disk['accepted_products_gb'], 'gb')})"),
        ("data sets ever held / held now", f"{op['held_datasets']} / {op['held_now']}"),
        ("hold to release: count, median, p90", f"{op['hold_to_release_h']['count']}, "
         f"{display(op['hold_to_release_h']['median'], 'h')}, {display(op['hold_to_release_h']['p90'], 'h')}"),
        ("operator actions", ", ".join(f"{k} {v}" for k, v in op["actions_by_kind"].items()) or "none"),
    ]))
    parts.append(_attention_html(numbers["attention"]))
    parts.append(_by_eye_html(numbers["qa2"].get("by_eye", [])))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _attention_html(att: Mapping) -> str:
    """The "Needs a person" section: every held data set, QA2 review pair and stale or drained node, as tables."""
    e = html.escape
    out = [f'<section id="attention"><h3>Needs a person</h3><p class="note">{e(att["line"])}</p>']
    if att["held"]:
        out.append(f"<h4>Held data sets ({len(att['held'])})</h4>")
        out.append(_table(["uid", "reason", "category", "node", "decisive line", "fix"],
                          [(h["uid"], h["reason"], h["category"], h["node"], h["excerpt"], h["fix"])
                           for h in att["held"]]))
    if att["review"]:
        out.append(f"<h4>Waiting for a QA2 decision ({len(att['review'])})</h4>")
        out.append(_table(["uid", "image", "field", "spw", "measure", "ratio", "why", "fix"],
                          [(r["uid"], p["image"], p["field"], p["spw"], p["measure"], _num(p["ratio"]), p["why"], r["fix"])
                           for r in att["review"] for p in r["pairs"] or [{"image": None, "field": None,
                           "spw": None, "measure": None, "ratio": None, "why": r["reason"]}]]))
    if att["nodes"]:
        out.append(f"<h4>Nodes ({len(att['nodes'])})</h4>")
        out.append(_table(["node", "problem", "fix"], [(n["name"], n["problem"], n["fix"]) for n in att["nodes"]]))
    out.append("</section>")
    return "\n".join(out)


def _by_eye_html(entries: Sequence[Mapping]) -> str:
    """The "QA2 by eye" section: per pair, both images (when on disk) and the per-source table."""
    e = html.escape
    if not entries:
        return f'<h3>QA2 by eye</h3><p class="empty">{NO_DATA}</p>'
    out = ['<section id="qa2-by-eye"><h3>QA2 by eye: every discrepant pair and a sample of consistent ones</h3>']
    for entry in entries:
        png = draw_pair(entry)
        ratio = _num(entry.get("flux_ratio"))
        out.append(f'<div class="pair"><h4>{e(str(entry["uid"]))} {e(str(entry.get("field") or ""))} '
                   f'{e(str(entry.get("specmode") or ""))}: {e(str(entry["verdict"]))}, flux ratio {e(ratio)}</h4>')
        if entry.get("reasons"):
            out.append(f'<p class="note">{e(str(entry["reasons"]))}</p>')
        if png:
            uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            out.append(f'<img src="{uri}" alt="pipeline and QA2 images of {e(str(entry["uid"]))}">')
        else:
            out.append('<p class="empty">images not on this machine</p>')
        rows = [(s.get("id"), s.get("found_in"), _num(s.get("pl_flux")), _num(s.get("qa2_flux")),
                 _num(s.get("flux_ratio")), _num(s.get("offset_arcsec")), _num(s.get("snr")),
                 s.get("verdict") if s.get("covered", True) else "not covered")
                for s in entry.get("sources", []) if s.get("snr", 0) >= 5 or s.get("verdict") == "discrepant"]
        if rows:
            out.append(_table(["source", "found in", "pipeline Jy", "QA2 Jy", "ratio", 'offset "', "snr", "verdict"],
                              rows))
        out.append("</div>")
    out.append("</section>")
    return "\n".join(out)


def _num(x: Any) -> str:
    return f"{x:.4g}" if _finite(x) else "-"


def write_report(db: store.Database, cfg, out_dir: Path, now: float, policy: str = DEFAULT_POLICY) -> dict:
    """Write ``report.html`` and one PNG per plot into ``out_dir``; the numbers with ``plots`` and ``html`` paths."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: is a file — give a directory for the report")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out_dir}: cannot create it ({exc.strerror}) — "
                        "give a directory you can write") from None
    data = collect(db, cfg, now, policy)
    pngs = draw_plots(data)
    numbers = dict(data.numbers)
    numbers["plots"] = {}
    try:
        for name, (png, _) in pngs.items():
            path = out_dir / f"{name}.png"
            path.write_bytes(png)
            numbers["plots"][name] = str(path.resolve())
        page = out_dir / "report.html"
        page.write_text(render_html(numbers, pngs), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--out {out_dir}: cannot write the report ({exc.strerror}) — "
                        "give a directory you can write") from None
    numbers["html"] = str(page.resolve())
    return numbers

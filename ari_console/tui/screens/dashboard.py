"""The morning view: totals, success rates, failures by category, ETA, burn-down."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, Vertical
from textual.widgets import Static

from ... import readmodel
from ...formatting import clock_text
from .. import views
from ..snapshot import Snapshot
from .base import AriScreen

STATE_STYLE = {"queued": "blue", "running": "cyan", "succeeded": "green", "failed": "red", "held": "yellow",
               "excluded": "dim", "skipped": "dim"}


def totals_table(dash: readmodel.Dashboard) -> Table:
    """Data sets per state, with the share of the campaign."""
    t = Table.grid(padding=(0, 2))
    t.add_column(justify="left")
    t.add_column(justify="right")
    t.add_column(justify="right")
    for state in ("queued", "running", "succeeded", "failed", "held", "excluded", "skipped"):
        n = dash.totals.get(state, 0)
        if n or state in ("queued", "running", "succeeded", "failed", "held"):
            share = f"{100 * n / dash.total:.0f}%" if dash.total else ""
            t.add_row(f"[{STATE_STYLE[state]}]{state}[/]", f"{n:,}", share)
    t.add_row("[b]total[/]", f"[b]{dash.total:,}[/]", "")
    return t


def rates_table(dash: readmodel.Dashboard, eta: str) -> Table:
    """Success rates, running attempts and the ETA (whether an engine runs is in every screen's header)."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    t.add_row("unsupervised", views.rate_text(dash.unsupervised))
    t.add_row("after retries", views.rate_text(dash.after_retries))
    t.add_row("attempts active", str(dash.running))
    t.add_row("ETA", eta)
    return t


def failures_table(failures: list[tuple[str, int]]) -> Table:
    """Failed attempts per category, most first."""
    t = Table.grid(padding=(0, 2))
    t.add_column()
    t.add_column(justify="right")
    t.add_column()
    total = sum(n for _, n in failures) or 1
    for category, n in failures:
        bar = "█" * max(1, round(12 * n / total))
        t.add_row(f"[red]{category}[/]", f"{n:,}", f"[red]{bar}[/]")
    if not failures:
        t.add_row("[green]no failures[/]", "")
    return t



def attention_text(att: list[tuple[str, str, str]], most_lines: int = 10) -> Text:
    """The "Needs a person" card: one line per entry, a held data set's fix on a line of its own (the
    card is narrow: on one line the fix was cut), at most ``most_lines``, then how many more.

    >>> attention_text([("held", "u1", "memory failure — fix: retry with more memory"), ("node", "ws", "stale 3m")]).plain.splitlines()
    ['held u1: memory failure', '  fix: retry with more memory', 'node ws: stale 3m']
    """
    lines: list[str] = []
    for shown, (what, which, why) in enumerate(att):
        reason, _, fix = why.partition(" — fix: ")
        entry = [f"{what} {which}: {reason}"] + ([f"  fix: {fix}"] if fix else [])
        if len(lines) + len(entry) > most_lines - (shown < len(att) - 1):
            lines.append(f"… {len(att) - shown} more (ari status)")
            break
        lines += entry
    return Text("\n".join(lines), style="yellow")

class DashboardScreen(AriScreen):
    """Campaign totals, success rates, failures by category, ETA and a burn-down sparkline."""

    FILTER_FIELDS = ()

    def compose_body(self) -> ComposeResult:
        with Grid(id="dash-grid"):
            with Vertical(classes="card"):
                yield Static("Data sets", classes="title")
                yield Static(id="totals")
            with Vertical(classes="card"):
                yield Static("Progress", classes="title")
                yield Static(id="rates")
            with Vertical(classes="card"):
                yield Static("Failed attempts by category", classes="title")
                yield Static(id="failures")
            with Vertical(classes="card", id="attention-card"):
                yield Static("Needs a person", classes="title")
                yield Static(id="attention")
            with Vertical(classes="card", id="burn-card"):
                yield Static("Remaining data sets (burn-down)", classes="title")
                yield Static(id="burndown")
                yield Static(id="burn-axis")

    def show(self, snap: Snapshot, data: object = None) -> None:
        dash = snap.dashboard
        self.query_one("#totals", Static).update(totals_table(dash))
        self.query_one("#rates", Static).update(rates_table(dash, snap.eta.text))
        shown = [(c, n) for c, n in dash.failures if views.matches(self.flt, (c,))]
        self.query_one("#failures", Static).update(failures_table(shown))
        att = snap.attention
        self.query_one("#attention", Static).update(attention_text(att) if att else Text("nothing", style="green"))
        counted = dash.total - dash.totals.get("excluded", 0) - dash.totals.get("skipped", 0)
        self.query_one("#burndown", Static).update(Text(views.bar_chart(dash.burndown, top=counted), style="cyan"))
        start, end = dash.burndown_span
        first, now_left = (dash.burndown[0], dash.burndown[-1]) if dash.burndown else (0, 0)
        waiting = [f"{dash.totals[s]:,} {s}" for s in ("held", "review") if dash.totals.get(s)]
        self.query_one("#burn-axis", Static).update(
            f"[dim]{clock_text(start)} → now:[/] {first:,} → {now_left:,} of {counted:,} left"
            + (f" [yellow]({', '.join(waiting)})[/]" if waiting else ""))
        self.set_status(f"{snap.dashboard.total:,} data sets · as of {clock_text(snap.now)}")

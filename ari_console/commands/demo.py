"""`ari demo`: the demo campaign on this machine (its code lives in :mod:`ari_console.demo`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..clikit import emit_json, err, out
from ..config import CONFIG_NAME
from .common import JsonOpt

app = typer.Typer()


@app.command()
def demo(
    headless: Annotated[Optional[bool], typer.Option(
        "--headless/--tui", metavar="", help="Run without the console, printing progress (default when not on a terminal), "
                                 "or in the console (default on a terminal).")] = None,
    as_json: JsonOpt = False,
    directory: Annotated[Path, typer.Option("--dir", metavar="DIR",
                                            help="Where the demo campaign lives (cleared on each run).")]
        = Path("demo-campaign"),
) -> None:
    """Run the demo campaign on this machine: local, SSH and Slurm nodes image the CASA-simulated archive."""
    from ..demo import campaign as demo_mod

    if headless is None:
        headless = as_json or not (sys.stdin.isatty() and sys.stdout.isatty())
    summary = demo_mod.run_demo(directory.resolve(), tui=not headless,
                                progress=lambda msg: err.print(msg, markup=False, highlight=False, soft_wrap=True))
    if as_json:
        emit_json(summary)
        return
    failed = ", ".join(f"{k} {v}" for k, v in summary["failed"].items()) or "none"
    out.print(f"demo: {summary['succeeded']} of {summary['datasets']} data sets imaged "
              f"({summary['retried_ok']} after a retry) in {summary['minutes']} min; failures by category: {failed}; "
              f"QA2: {summary['qa2']['consistent']} consistent, {summary['qa2']['discrepant']} discrepant; "
              f"{summary['review']} waiting for a QA2 decision (ari accept / ari reject)",
              markup=False, highlight=False, soft_wrap=True)
    for uid, reason in summary["held"].items():
        out.print(f"  held for an operator: {uid}: {reason}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"  look around: ari -c {directory / CONFIG_NAME} tui   (or status, stats, triage groups, report)",
              markup=False, highlight=False, soft_wrap=True)

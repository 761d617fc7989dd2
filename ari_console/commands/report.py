"""`ari report`: the campaign report an operator hands to their managers (HTML with PNG plots, or JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import clikit
from .common import ConfigOpt, JsonOpt, campaign

rep = clikit.lazy_module("ari_console.report")

app = typer.Typer()

OutOpt = Annotated[Optional[Path], typer.Option(
    "--out", metavar="DIR",
    help="Directory for report.html and the PNG plots (default: report/ in the campaign directory).")]


@app.command()
def report(ctx: typer.Context, out: OutOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Write the campaign report: success, failures, runtimes, QA2, burn-down, coverage, effort.

    With --json: the report's numbers (plot paths under plots).
    """
    from .. import store

    cfg = campaign(ctx, config).config()
    db = store.open_db(cfg.campaign.db_path, create=False)
    now = store.now()
    store.sync_nodes(db, cfg.nodes, now)
    result = rep.write_report(db, cfg, out if out is not None else cfg.campaign.work_dir / "report", now)
    if as_json:
        clikit.emit_json(result)
        return
    pct = lambda v: rep.display(v, "pct")  # noqa: E731
    cov, success = result["coverage"], result["success"]
    finish = result["burndown"]["estimate"]["finish"] or "not estimated"
    clikit.out.print(f"wrote {result['html']} ({len(result['plots'])} plots): coverage {pct(cov['share'])} "
                     f"({cov['with_product']} of {cov['eligible']}), {pct(success['first_try'])} unsupervised, "
                     f"{pct(success['after_retries'])} after retries; done by {finish}",
                     markup=False, highlight=False, soft_wrap=True)

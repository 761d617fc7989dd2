"""`ari qa2 ...` commands: measure images, compare pipeline products with QA2 products."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from typing import TYPE_CHECKING

from .. import clikit
from ..errors import UserError
from .common import JsonOpt

if TYPE_CHECKING:  # astropy and scipy load only when a qa2 command runs (keeps `ari` quick to start)
    from ..qa2.compare import Report
    from ..qa2.measure import Measurement

app = typer.Typer(help="Compare re-imaged pipeline products with the archive's QA2 images.",
                  no_args_is_help=True)



def _fits_in(directory: Path, option: str) -> list[str]:
    """The FITS files directly in ``directory``, sorted; a UserError when it is not a directory."""
    from ..qa2 import fits_in

    if not directory.is_dir():
        raise UserError(f"{directory}: {option} is not a directory — give the directory holding the FITS images")
    return fits_in(directory)


def _measure_all(paths: list[str]) -> tuple[dict[str, Measurement], dict[str, str]]:
    """Measure every path; problems become one line each (warned now) instead of stopping."""
    from ..qa2 import measure_all

    return measure_all(paths, clikit.warn)


def _fmt(value: float | None, spec: str = ".4g") -> str | None:
    return None if value is None else format(value, spec)


@app.command()
def measure(
    files: Annotated[list[Path], typer.Argument(help="FITS images (2-D or cubes) to measure.")],
    as_json: JsonOpt = False,
) -> None:
    """Measure peak, rms, integrated flux, beam and SNR of each image (JSON: a list, one object per image)."""
    done, failed = _measure_all([str(f) for f in files])
    rows = [m.as_dict() for m in done.values()]
    for row in rows:
        row.pop("notes", None)
    if as_json:
        clikit.emit_json(rows)
    else:
        units = sorted({r["bunit"] for r in rows}) or ["Jy/beam"]
        clikit.table(f"QA2 measurements (peak, rms in {', '.join(units)}; flux in Jy; beam in arcsec)",
                     ["file", "field", "spw", "mode", "peak", "rms", "flux", "beam", "snr"],
                     [[Path(r["file"]).name, r["field"], r["spw"] or None, r["specmode"], _fmt(r["peak"]),
                       _fmt(r["rms"], ".3g"), _fmt(r["flux"]), f"{r['beam_major']:.2f}x{r['beam_minor']:.2f}",
                       _fmt(r["snr"], ".0f")]
                      for r in rows])
    if failed:
        raise typer.Exit(1)


@app.command()
def compare(
    pl_dir: Annotated[Path, typer.Argument(help="Directory of the pipeline's FITS products.")],
    qa2_dir: Annotated[Path, typer.Argument(help="Directory of the QA2 FITS products.")],
    as_json: JsonOpt = False,
) -> None:
    """Pair pipeline and QA2 images, measure both, and judge each pair consistent or discrepant.

    JSON: the pairs, their verdicts and the orphans.
    """
    from ..qa2 import compare_dirs

    _fits_in(pl_dir, "PL_DIR")  # each a UserError when not a directory
    _fits_in(qa2_dir, "QA2_DIR")
    report = compare_dirs(pl_dir, qa2_dir, clikit.warn)
    if as_json:
        clikit.emit_json(report.as_dict())
    else:
        _print_report(report)
    if report.errors:
        raise typer.Exit(1)


def _print_report(report: Report) -> None:
    """The human view of a comparison: verdicts, which files were paired, then the orphans."""
    clikit.table("pipeline / QA2 ratios",
                 ["field", "mode", "kind", "flux", "peak", "rms", "beam", "verdict", "why"],
                 [[p.field, p.specmode, p.kind, _fmt(p.flux_ratio, ".3f"), _fmt(p.peak_ratio, ".3f"),
                   _fmt(p.rms_ratio, ".3f"), _fmt(p.beam_ratio, ".3f"), p.verdict, p.reasons or None]
                  for p in report.pairs])
    clikit.table("paired files", ["field", "mode", "kind", "pipeline", "QA2"],
                 [[p.field, p.specmode, p.kind, Path(p.pl).name, Path(p.qa2).name] for p in report.pairs])
    rows = [[p.field, p.specmode, s["id"], s["found_in"], _fmt(s["pl_flux"]), _fmt(s["qa2_flux"]),
             _fmt(s["flux_ratio"], ".3f"), _fmt(s["offset_arcsec"], ".2f"), _fmt(s["snr"], ".0f"),
             s["verdict"] if s["covered"] else "not covered", s["reasons"] or None]
            for p in report.pairs for s in p.sources
            if s["found_in"] != "both" or s["verdict"] == "discrepant" or s["snr"] >= 5]
    if rows:
        clikit.table("sources, measured over the same sky in both images (flux in Jy; cubes: line flux)",
                     ["field", "mode", "source", "found in", "pipeline", "QA2", "ratio", "offset\"", "snr",
                      "verdict", "why"], rows)
    for p in report.pairs:
        if p.channels:
            clikit.out.print(f"{p.field} {p.specmode}: {p.channels['explanation']}", markup=False, highlight=False)
    if report.unmatched_pl or report.unmatched_qa2:
        clikit.table("without a partner", ["side", "file"],
                     [["pipeline", Path(f).name] for f in report.unmatched_pl]
                     + [["QA2", Path(f).name] for f in report.unmatched_qa2])

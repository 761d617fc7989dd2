"""`ari archive ...`: build the CASA-simulated demo archive, serve it, query an archive."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import clikit
from ..errors import UserError
from .common import JsonOpt, flag

demo_build = clikit.lazy_module("ari_console.demo.archive_build")
client = clikit.lazy_module("ari_console.archive.client")

app = typer.Typer(help="The ALMA archive: the local demo archive (build, serve) and queries.",
                  no_args_is_help=True)

RootOpt = Annotated[Optional[Path], typer.Option(
    "--root", metavar="DIR", help="Where the demo archive lives (default: ~/.cache/ari-console/demo-archive-v<N>).")]
UrlOpt = Annotated[str, typer.Option("--url", metavar="URL", help="The archive's TAP service URL (the demo: http://127.0.0.1:PORT/tap).")]


CasaPythonOpt = Annotated[Optional[str], typer.Option(
    "--casa-python", help="The Python with casatools/casatasks that builds it (default: this one).")]


def _build_with_progress(root: Path | None, force: bool, quiet: bool, python: str | None = None) -> Path:
    """Build (or reuse) the demo archive, drawing a progress bar on a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    target = Path(root) if root else demo_build.default_root()
    if demo_build.is_built(target) and not force:
        return target
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=clikit.err, disable=quiet or not clikit.err.is_terminal) as bar:
        task = bar.add_task("demo archive: CASA", total=None)

        def progress(done: int, total: int, message: str) -> None:
            bar.update(task, completed=done, total=total, description=f"demo archive: {message}")

        return demo_build.build_archive(target, force=force, python=python, progress=progress)


@app.command()
def build(
    root: RootOpt = None,
    force: Annotated[bool, flag("--force", help="Rebuild even when the cache is current.")] = False,
    casa_python: CasaPythonOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the demo archive with CASA (a few minutes), or reuse the cached build.

    JSON keys: root, recipe_version, built_seconds (this command), casa_build_seconds (the
    build that made the cache), mous, files, bytes.
    """
    started = time.monotonic()
    try:
        path = _build_with_progress(root, force, quiet=as_json, python=casa_python)
    except RuntimeError as exc:
        raise UserError(f"demo archive: the CASA build failed — {str(exc).splitlines()[0]}") from None
    manifest = demo_build.load_manifest(path)
    files = [f for m in manifest["mous"].values() for f in m["files"]]
    summary = {"root": str(path), "recipe_version": manifest["recipe_version"],
               "built_seconds": round(time.monotonic() - started, 1),
               "casa_build_seconds": manifest.get("build_seconds"), "mous": len(manifest["mous"]),
               "files": len(files), "bytes": sum(f["size"] for f in files)}
    if as_json:
        clikit.emit_json(summary)
        return
    clikit.table("demo archive", ["root", "MOUS", "files", "MB", "CASA build s"],
                 [[summary["root"], summary["mous"], summary["files"], round(summary["bytes"] / 1e6, 1),
                   summary["casa_build_seconds"]]])


@app.command()
def serve(
    port: Annotated[int, typer.Option("--port", help="TCP port on 127.0.0.1 (0 = any free port).")] = 8765,
    root: RootOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Serve the demo archive (TAP, DataLink, downloads) in the foreground until Ctrl-C."""
    from ..demo.archive_service import make_server

    path = _build_with_progress(root, force=False, quiet=False)
    try:
        server = make_server(path, host, port, verbose=True)
    except OSError as exc:
        raise UserError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}) — "
                        "pick another port, or --port 0 for any free one") from None
    bound_host, bound_port = server.server_address[:2]
    clikit.out.print(f"demo archive {path}\nTAP: http://{bound_host}:{bound_port}/tap   "
                     f"DataLink: http://{bound_host}:{bound_port}/datalink/sync?ID=...", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command()
def query(
    url: UrlOpt = client.ALMA_TAP_URL,
    project: Annotated[Optional[str], typer.Option("--project", help="A project code, e.g. 2016.1.00123.S.")] = None,
    mous: Annotated[Optional[str], typer.Option("--mous", help="A MOUS uid, e.g. uid://A001/X1296/X1d3.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the MOUS of a project (or one MOUS) in an archive, with whether the default rules take each.

    JSON: a list of {uid, project, array, band, size_gb, mem_gb, hours, casa_version, selected, reason}.
    """
    if bool(project) == bool(mous):
        raise UserError("archive query: give exactly one of --project CODE or --mous UID")
    found = client.query_project(url, project) if project else [client.query_mous(url, mous)]
    selected, excluded = client.select(found, client.SelectionRules())
    reasons = {m.uid: reason for m, reason in excluded}
    rows = [{**{k: m.dataset.row()[k] for k in ("uid", "project", "array", "band", "size_gb")},
             "mem_gb": m.dataset.archive_mem_gb, "hours": m.dataset.archive_hours,  # the archive's guesses
             "casa_version": m.casa_version, "selected": m.uid not in reasons, "reason": reasons.get(m.uid)}
            for m in found]
    if as_json:
        clikit.emit_json(rows)
        return
    clikit.table(project or mous, ["uid", "array", "band", "GB", "mem GB", "hours", "CASA", "taken"],
                 [[r["uid"], r["array"], r["band"], r["size_gb"], r["mem_gb"], r["hours"], r["casa_version"],
                   "yes" if r["selected"] else f"no: {r['reason']}"] for r in rows])

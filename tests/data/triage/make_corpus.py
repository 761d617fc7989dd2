"""Regenerate the real-CASA part of the triage corpus (tests do not run this).

Each scenario provokes one real failure with CASA 6 (casatasks from PyPI) in a
subprocess, like a node's recipe would, and writes what CASA really printed:
the ``casa-*.log`` logger file, followed by the process's stdout/stderr
(SEVERE lines and the Python traceback), into
``tests/data/triage/<category>/casa6_<name>.log``. A sidecar
``<name>.log.expect`` (``line=<1-based line>``) is written by hand after
looking at the output; this script leaves an existing sidecar alone.

Run from the repo root (root needed for the tmpfs scenarios)::

    CASASITECONFIG=.venv/casasiteconfig.py .venv/bin/python tests/data/triage/make_corpus.py [NAME...]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_LINES = 400

MAKE_MS = """
import os, casadata
from casatools import componentlist
from casatasks import simobserve
cl = componentlist(); cl.addcomponent(dir='J2000 10h00m00.0s -30d00m00.0s', flux=1.0, fluxunit='Jy', freq='230GHz', shape='point'); cl.rename('pt.cl'); cl.close()
cfg = os.path.join(os.path.dirname(casadata.__file__), '__data__/alma/simmos/alma.cycle5.1.cfg')
simobserve(project='sim', complist='pt.cl', compwidth='2GHz', comp_nchan=16, direction='J2000 10h00m00.0s -30d00m00.0s', obsmode='int', antennalist=cfg, totaltime='600s', integration='30s', incenter='230GHz', inwidth='2GHz', thermalnoise='', mapsize=['10arcsec','10arcsec'], overwrite=True, graphics='none')
"""


@dataclass
class Scenario:
    """One provoked failure: its category folder, file name, script and optional tmpfs mount."""

    category: str
    name: str
    script: str
    tmpfs: str | None = None  # mount options for ./mnt, e.g. "size=2m" or "ro,size=1m"


SCENARIOS = [
    Scenario("calibration", "applycal_missing_caltable", """
        from casatasks import listobs, applycal
        listobs(vis='uid___A002_Xc1e2be_X1234.ms')
        applycal(vis='uid___A002_Xc1e2be_X1234.ms', field='', gaintable=['uid___A002_Xc1e2be_X1234.ms.hifa_timegaincal.s18_5.spw16.solintint.gpcal.tbl', 'uid___A002_Xc1e2be_X1234.ms.hif_bandpass.tbl'], interp=['linear', 'linear,linear'], calwt=True)
    """),
    Scenario("calibration", "gaincal_bad_refant_then_applycal", """
        from casatasks import gaincal, applycal
        gaincal(vis='uid___A002_Xc1e2be_X1234.ms', caltable='cal.G', solint='int', refant='DV99', gaintype='G', calmode='ap')
        applycal(vis='uid___A002_Xc1e2be_X1234.ms', gaintable=['cal.G'])
    """),
    Scenario("imaging", "tclean_readonly_dir", """
        from casatasks import tclean
        tclean(vis='uid___A002_Xc1e2be_X1234.ms', imagename='mnt/J1000-3000_sci.spw0.cont.I.iter1', imsize=[64, 64], cell='0.2arcsec', specmode='mfs', niter=10, interactive=False)
    """, tmpfs="ro,size=1m"),
    Scenario("imaging", "tclean_bad_spw_selection", """
        from casatasks import tclean
        tclean(vis='uid___A002_Xc1e2be_X1234.ms', imagename='J1000-3000_sci.spw25.cube.I.iter0', spw='25', field='J1000-3000', imsize=[64, 64], cell='0.2arcsec', specmode='cube', niter=0, interactive=False)
    """),
    Scenario("uvcontfit", "uvcontsub_impossible_fitspec_after_caught_tclean_error", """
        from casatasks import tclean, uvcontsub
        try:  # a failure the script recovers from: a misleading earlier SEVERE
            tclean(vis='uid___A002_Xc1e2be_X1234.ms', imagename='J1000-3000_sci.spw0.cont.I.iter0', field='J1000-3000', imsize=[64, 64], cell='0.2arcsec', specmode='mfs', niter=0, interactive=False)
        except RuntimeError as exc:
            print('continuing after:', exc)
        uvcontsub(vis='uid___A002_Xc1e2be_X1234.ms', outputvis='uid___A002_Xc1e2be_X1234.ms.contsub', fitspec='5:0~3', fitorder=1)
    """),
    Scenario("uvcontfit", "uvcontsub_unparsable_fitspec", """
        from casatasks import uvcontsub
        uvcontsub(vis='uid___A002_Xc1e2be_X1234.ms', outputvis='uid___A002_Xc1e2be_X1234.ms.contsub', fitspec='0:2~5;NaN~~', fitorder=1)
    """),
    Scenario("importdata", "importasdm_missing_asdm", """
        from casatasks import importasdm
        importasdm(asdm='uid___A002_Xd0a1f2_X4b2', vis='uid___A002_Xd0a1f2_X4b2.ms', asis='Antenna Station Receiver Source CalAtmosphere CalWVR', bdfflags=True, with_pointing_correction=True, ocorr_mode='ca', lazy=False)
    """),
    Scenario("importdata", "importasdm_corrupt_asdm", """
        import os
        from casatasks import importasdm
        os.makedirs('uid___A002_Xd0a1f2_X4b3', exist_ok=True)
        open('uid___A002_Xd0a1f2_X4b3/ASDM.xml', 'w').write('<?xml version="1.0"?><ASDM><truncated')
        importasdm(asdm='uid___A002_Xd0a1f2_X4b3', vis='uid___A002_Xd0a1f2_X4b3.ms', asis='Antenna Station Receiver Source CalAtmosphere CalWVR', bdfflags=True, ocorr_mode='ca', lazy=False)
    """),
    Scenario("memory", "tclean_huge_imsize_address_space", """
        import resource
        from casatasks import tclean
        resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))
        tclean(vis='uid___A002_Xc1e2be_X1234.ms', imagename='J1000-3000_sci.spw0.mfs.I.iter1', imsize=[40000, 40000], cell='0.001arcsec', specmode='mfs', niter=10, interactive=False)
    """),
    Scenario("memory", "numpy_memoryerror_in_script", """
        import resource
        import numpy as np
        from casatools import table
        from casatasks import applycal
        try:  # a misleading earlier SEVERE the script survives
            applycal(vis='uid___A002_Xc1e2be_X1234.ms', gaintable=['uid___A002_Xc1e2be_X1234.ms.hif_bandpass.tbl'])
        except RuntimeError as exc:
            print('no bandpass table, imaging the uncalibrated data:', exc)
        resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))
        tb = table()
        tb.open('uid___A002_Xc1e2be_X1234.ms')
        nrow = tb.nrows()
        tb.close()
        print('hif_makeimlist: estimating cube sizes for', nrow, 'rows')
        big = np.zeros((nrow, 4096, 4096), dtype=np.complex128)
    """),
    Scenario("disk_full", "tclean_tiny_tmpfs", """
        from casatasks import tclean
        tclean(vis='uid___A002_Xc1e2be_X1234.ms', imagename='mnt/J1000-3000_sci.spw0.cube.I.iter1', imsize=[256, 256], cell='0.05arcsec', specmode='cube', niter=10, interactive=False)
    """, tmpfs="size=2m"),
    Scenario("disk_full", "split_tiny_tmpfs", """
        from casatasks import split
        split(vis='uid___A002_Xc1e2be_X1234.ms', outputvis='mnt/uid___A002_Xc1e2be_X1234.ms.split.cal', datacolumn='data', keepflags=False)
    """, tmpfs="size=1m"),
    Scenario("imaging", "tclean_open_file_limit", """
        import resource
        from casatasks import tclean
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))  # a node with a low `ulimit -n`
        tclean(vis='uid___A002_Xc1e2be_X1234.ms', imagename='J1000-3000_sci.spw0.cube.I.iter1', imsize=[64, 64], cell='0.2arcsec', specmode='cube', niter=10, interactive=False)
    """),
    Scenario("imaging", "makemask_multibeam_cube", """
        from casatasks import tclean, makemask
        tclean(vis='uid___A002_Xc1e2be_X1234.ms', imagename='J1000-3000_sci.spw0.cube.I.iter0', imsize=[32, 32], cell='0.2arcsec', specmode='cube', niter=0, interactive=False)
        # a cube with one beam per plane: the mask copy regrids along the spectral axis and fails
        makemask(mode='copy', inpimage='J1000-3000_sci.spw0.cube.I.iter0.image', inpmask='J1000-3000_sci.spw0.cube.I.iter0.image', output='J1000-3000_sci.spw0.cube.I.mask', overwrite=False)
    """),
    Scenario("export", "exportfits_existing_file", """
        from casatasks import tclean, exportfits
        tclean(vis='uid___A002_Xc1e2be_X1234.ms', imagename='J1000-3000_sci.spw0.mfs.I.iter0', imsize=[32, 32], cell='0.2arcsec', specmode='mfs', niter=0, interactive=False)
        open('member.uid___A001_X1296_X1d3.J1000-3000_sci.spw0.mfs.I.pbcor.fits', 'w').write('x')
        exportfits(imagename='J1000-3000_sci.spw0.mfs.I.iter0.image', fitsimage='member.uid___A001_X1296_X1d3.J1000-3000_sci.spw0.mfs.I.pbcor.fits', overwrite=False)
    """),
    Scenario("export", "exportfits_missing_image", """
        from casatasks import exportfits
        exportfits(imagename='J1000-3000_sci.spw0.mfs.I.iter1.image.pbcor', fitsimage='products/member.uid___A001_X1296_X1d3.J1000-3000_sci.spw0.mfs.I.pbcor.fits', dropdeg=True, overwrite=True)
    """),
]


# Every run converts "now" from UTC, as CASA does on start-up and in most tasks,
# so each log carries the real leap-second SEVERE noise.
PRELUDE = """
from casatools import measures
measures().measure(measures().epoch('utc', 'today'), 'tai')
"""


def run_python(script: str, cwd: Path, env: dict) -> str:
    """Run a dedented script with the current interpreter in ``cwd``; stdout+stderr."""
    path = cwd / "_script.py"
    path.write_text(PRELUDE + textwrap.dedent(script))
    proc = subprocess.run([sys.executable, path.name], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    return proc.stdout


def make_ms(work: Path, env: dict) -> Path:
    """A tiny simulated ALMA MS (16 channels), renamed like a pipeline's ASDM-derived MS."""
    run_python(MAKE_MS, work, env)
    ms = work / "uid___A002_Xc1e2be_X1234.ms"
    shutil.move(str(work / "sim" / "sim.alma.cycle5.1.ms"), ms)
    for log in work.glob("casa-*.log"):
        log.unlink()
    return ms


def run_scenario(sc: Scenario, ms: Path, work: Path, env: dict) -> str:
    """The scenario's casa log followed by its terminal output, trimmed to MAX_LINES."""
    d = work / sc.name
    d.mkdir()
    shutil.copytree(ms, d / ms.name)
    mnt = d / "mnt"
    if sc.tmpfs:
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", sc.tmpfs, "tmpfs", str(mnt)], check=True)
    try:
        terminal = run_python(sc.script, d, env)
    finally:
        if sc.tmpfs:
            subprocess.run(["umount", str(mnt)], check=True)
    logs = sorted(d.glob("casa-*.log"))
    text = "".join(p.read_text(errors="replace") for p in logs) + terminal
    lines = text.replace(str(d) + "/", "/scratch/ari/attempt-0007/").splitlines(keepends=True)
    if len(lines) > MAX_LINES:
        lines = lines[:40] + lines[-(MAX_LINES - 40):]
    return "".join(lines)


def main(names: list[str]) -> None:
    """Regenerate the named scenarios (all when none named)."""
    env = {**os.environ}
    env.setdefault("CASASITECONFIG", str(HERE.parents[2] / ".venv" / "casasiteconfig.py"))
    with tempfile.TemporaryDirectory(prefix="ari-corpus-") as tmp:
        work = Path(tmp)
        ms = make_ms(work, env)
        for sc in SCENARIOS:
            if names and sc.name not in names:
                continue
            out = HERE / sc.category / f"casa6_{sc.name}.log"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(run_scenario(sc, ms, work, env))
            print(f"{out.relative_to(HERE)}: {sum(1 for _ in out.open())} lines")


if __name__ == "__main__":
    main(sys.argv[1:])

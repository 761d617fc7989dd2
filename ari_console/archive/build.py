"""The demo ALMA archive: data sets that CASA really simulated, packed as the archive packs them.

The console never imports CASA: ``build_archive`` writes a spec of every MOUS
and runs ``remote/recipes/demo_build_casa.py`` with the node's CASA Python
(``CASASITECONFIG`` set), which simulates each MOUS with the casatools
simulator on casadata's ALMA 12m/7m/TP configurations, corrupts its gains,
solves the fixing table with ``gaincal``, exports the raw data with
``exportasdm`` and makes the QA2 images with its own ``tclean``. This module
then packs every MOUS the way the ALMA archive delivers it::

    files/<mous file name>/
        <asdm>.asdm.sdm.tar                      raw data (ASDM)
        <PROJECT>_<mous>_auxiliary.tar           calibration/ log/ qa/ script/ README
        <PROJECT>_<mous>_001_of_001.tar          product/ (the QA2 FITS images)
        member.<mous>.README.txt                 the README on its own
    manifest.json                                obscore rows, files + sha256, truth

and caches the result in ``~/.cache/ari-console/demo-archive-v<RECIPE_VERSION>``
(or a given root). The cache is reused while its recipe hash (this catalogue +
the CASA script) matches, and rebuilt otherwise.

Hard cases and the knobs a recipe honours (``hints`` in the manifest, also
``script/demo_hints.json`` in the auxiliary tar):

- total power: ``antenna_arrays`` lists PM antennas only, autocorrelations only;
- missing calibration table: the restore script names a table the tar lacks;
- line over the whole window: the line window has no line-free channel;
- memory: its obscore row describes a long-baseline, wide-band MOUS (a
  ``spatial_resolution`` that makes a ``hints.pipeline_imsize`` image, a line
  window of ``hints.pipeline_nchan`` channels in ``frequency_support``), so the
  client predicts ~94 GB (``client.predicted_memory_gb``); ``hints.demo_alloc_gb``
  asks the recipe to really allocate that much, so a node's memory limit bites;
- walltime: its ``t_exptime`` says many hours (the client predicts ``hints.hours``);
  ``hints.demo_slowdown_s`` asks the recipe to sleep that long during imaging, so
  a short walltime really kills it;
- QA2 disagrees: the QA2 images carry a wrong flux scale (``qa2.flux_scale``);
- corrupted download: the service flips one byte of the raw tar the first time;
- dropped download: the service cuts the connection mid-file the first time.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..alma import parse_uid, uid_filename

RECIPE_VERSION = 1  # bump when the packing (not the catalogue or the CASA script) changes
ROOT = Path(__file__).resolve().parents[2]
CASA_SCRIPT = ROOT / "remote" / "recipes" / "demo_build_casa.py"
MANIFEST = "manifest.json"

# Per band: continuum window, line window (a CO line), QA2 cell (12m, 7m) in arcsec.
_BANDS = {
    3: dict(cont=(100.0, 4, 500.0), line=(115.20, 24, 4.0, "CO_1-0"), cell={"12m": 1.5, "7m": 3.0}),
    6: dict(cont=(232.0, 4, 500.0), line=(230.45, 32, 4.0, "CO_2-1"), cell={"12m": 0.6, "7m": 1.6}),
    7: dict(cont=(343.0, 4, 500.0), line=(345.72, 32, 5.0, "CO_3-2"), cell={"12m": 0.4, "7m": 1.0}),
}
_CONFIGS = {"12m": ("alma.cycle5.1.cfg", 10, "DA"), "7m": ("aca.cycle5.cfg", 8, "CM"),
            "TP": ("aca.tp.cfg", 3, "PM")}
_PRIMARY_BEAM_ARCSEC = {"12m": 6300.0, "7m": 10800.0, "TP": 6300.0}  # FWHM x frequency(GHz)


@dataclass(frozen=True)
class DemoMous:
    """One data set of the demo archive as the catalogue describes it (before CASA builds it)."""

    uid: str
    project: str
    target: str
    ra: str
    dec: str
    band: int
    array: str
    sources: tuple
    line_peak_jy: float = 0.2
    line_fwhm_chan: float = 6.0
    noise_jy: float = 0.005
    qa2_weighting: str = "natural"
    qa2_flux_scale: float = 1.0
    case: str = "normal"
    hints: tuple = ()
    data_rights: str = "Public"
    qa2_status: str = "Pass"
    pol_states: str = "/XX/YY/"
    built: bool = True
    release: str = "2018-03-01T00:00:00"


def _point(flux, dra=0.0, ddec=0.0):
    return dict(shape="point", flux_jy=flux, dra_arcsec=dra, ddec_arcsec=ddec)


def _gauss(flux, major, minor, pa=30.0, dra=0.0, ddec=0.0):
    return dict(shape="gaussian", flux_jy=flux, major_arcsec=major, minor_arcsec=minor, pa_deg=pa,
                dra_arcsec=dra, ddec_arcsec=ddec)


P1, P2, P3 = "2016.1.00123.S", "2017.1.00456.S", "2018.1.00789.S"

CATALOGUE: tuple[DemoMous, ...] = (
    DemoMous("uid://A001/X1296/X1d3", P1, "NGC1234", "10h00m00.0s", "-30d00m00.0s", 6, "12m",
             (_point(0.5), _point(0.05, 6.0, -4.0))),
    DemoMous("uid://A001/X1296/X1d5", P1, "NGC_5678", "10h20m00.0s", "-31d00m00.0s", 6, "12m",
             (_gauss(0.3, 5.0, 3.5),), qa2_weighting="briggs"),
    DemoMous("uid://A001/X1296/X1d7", P1, "J1610-3958", "16h10m00.0s", "-39d58m00.0s", 6, "12m",
             (_point(0.004),), noise_jy=0.02, line_peak_jy=0.05),
    DemoMous("uid://A001/X1296/X1d9", P1, "IRAS16293", "16h32m22.9s", "-24d28m36.0s", 6, "12m",
             (_point(0.8),), case="qa2_discrepant", qa2_flux_scale=1.4),
    DemoMous("uid://A001/X1296/X1db", P1, "HD163296", "17h56m21.3s", "-21d57m22.0s", 6, "12m",
             (_point(0.3), _gauss(0.1, 4.0, 4.0, dra=-3.0)), case="corrupt_download"),
    DemoMous("uid://A001/X12a3/X2e1", P2, "Arp220", "15h34m57.2s", "23d30m11.0s", 3, "7m",
             (_gauss(0.4, 20.0, 12.0),)),
    DemoMous("uid://A001/X12a3/X2e3", P2, "NGC253", "00h47m33.1s", "-25d17m18.0s", 3, "7m",
             (_point(0.3),), line_peak_jy=0.5, line_fwhm_chan=120.0, case="line_whole_window"),
    DemoMous("uid://A001/X12a3/X2e5", P2, "M83", "13h37m00.9s", "-29d51m56.0s", 3, "12m",
             (_point(0.2), _point(0.02, 10.0, 8.0)), case="missing_caltable"),
    DemoMous("uid://A001/X12a3/X2e7", P2, "M83", "13h37m00.9s", "-29d51m56.0s", 3, "TP",
             (_point(0.2),), case="total_power"),
    DemoMous("uid://A001/X133d/X3a1", P3, "Orion_KL", "05h35m14.5s", "-05d22m30.0s", 7, "12m",
             (_point(1.2), _gauss(0.3, 3.0, 2.0, dra=2.0, ddec=2.0)), case="memory_hog",
             hints=(("pipeline_imsize", 2000), ("pipeline_nchan", 3840),
                    ("demo_alloc_gb", 6.0))),
    DemoMous("uid://A001/X133d/X3a3", P3, "W51e2", "19h23m43.9s", "14d30m34.0s", 7, "12m",
             (_point(0.6),), case="walltime_long", hints=(("hours", 30.0), ("demo_slowdown_s", 90))),
    DemoMous("uid://A001/X133d/X3a5", P3, "TW_Hya", "11h01m51.9s", "-34d42m17.0s", 7, "12m",
             (_gauss(0.5, 2.5, 2.0),), case="dropped_download"),
    # Rows the archive lists but a campaign never takes (selection rules exclude them).
    DemoMous("uid://A001/X133d/X3a7", P3, "TW_Hya", "11h01m51.9s", "-34d42m17.0s", 7, "12m",
             (_point(0.5),), data_rights="Proprietary", release="2099-01-01T00:00:00", built=False),
    DemoMous("uid://A001/X133d/X3a9", P3, "3C286", "13h31m08.3s", "30d30m33.0s", 3, "12m",
             (_point(1.0),), pol_states="/XX/XY/YX/YY/", built=False),
    DemoMous("uid://A001/X12a3/X2e9", P2, "Arp220", "15h34m57.2s", "23d30m11.0s", 3, "12m",
             (_point(0.4),), qa2_status="Fail", built=False),
    DemoMous("uid://A001/X12a3/X2eb", P2, "Sun", "00h00m00.0s", "00d00m00.0s", 3, "12m",
             (_point(100.0),), built=False),
)


def asdm_uid(mous: DemoMous) -> str:
    """The uid of the MOUS's one execution block (ASDM), derived from the MOUS uid.

    >>> asdm_uid(CATALOGUE[0])
    'uid://A002/Xc1296/X1d3'
    """
    _, a, b = parse_uid(mous.uid).split("//")[1].split("/")
    return f"uid://A002/Xc{a[1:]}/{b}"


def group_uid(mous: DemoMous) -> str:
    """The group OUS uid (one below the member's serial)."""
    head, serial = parse_uid(mous.uid).rsplit("/X", 1)
    return f"{head}/X{int(serial, 16) - 1:x}"


def science_goal_uid(mous: DemoMous) -> str:
    """The science goal OUS uid (two below the member's serial)."""
    head, serial = parse_uid(mous.uid).rsplit("/X", 1)
    return f"{head}/X{int(serial, 16) - 2:x}"


def qa2_names(mous: DemoMous) -> tuple[str, str]:
    """The QA2 image stems, as analysts name them: continuum and line cube."""
    line = _BANDS[mous.band]["line"][3]
    return f"{mous.target}_cont.manual", f"{mous.target}_{line}.manual.cube"


def casa_spec(mous: DemoMous, index: int) -> dict:
    """The spec the CASA script builds ``mous`` from."""
    band = _BANDS[mous.band]
    config, nant, prefix = _CONFIGS[mous.array]
    cont_freq, cont_nchan, cont_width = band["cont"]
    line_freq, line_nchan, line_width, _ = band["line"]
    cell = band["cell"].get(mous.array, band["cell"]["12m"])
    cont_name, cube_name = qa2_names(mous)
    return {
        "uid": mous.uid, "uid_file": uid_filename(mous.uid), "asdm_file": uid_filename(asdm_uid(mous)),
        "kind": "tp" if mous.array == "TP" else "int", "target": mous.target, "ra": mous.ra, "dec": mous.dec,
        "config": config, "nant": nant, "antenna_prefix": prefix, "refant": "0",
        "date": f"2017/0{1 + index % 9}/1{index % 10}/00:00:00", "track_s": 300, "integration_s": 30,
        "cont": {"freq_ghz": cont_freq, "nchan": cont_nchan, "width_mhz": cont_width},
        "line": {"freq_ghz": line_freq, "nchan": line_nchan, "width_mhz": line_width,
                 "peak_jy": mous.line_peak_jy, "center_chan": (line_nchan - 1) / 2.0,
                 "fwhm_chan": mous.line_fwhm_chan},
        "sources": [dict(s) for s in mous.sources], "noise_jy": mous.noise_jy, "seed": 1000 + index,
        "qa2": {"cell_arcsec": cell, "imsize": 64, "weighting": mous.qa2_weighting, "robust": 0.5,
                "niter": 300, "threshold_mjy": max(1.0, 3000 * mous.noise_jy / 60),
                "flux_scale": mous.qa2_flux_scale, "cont_name": cont_name, "cube_name": cube_name,
                # Few antennas give a PSF with high sidelobes: without these, tclean spends
                # most of its time in major cycles of a handful of minor iterations each.
                "cyclefactor": 0.2, "nmajor": 8},
    }


def recipe_hash(catalogue: tuple[DemoMous, ...] = CATALOGUE) -> str:
    """A hash of everything a build depends on: the catalogue, the CASA script, RECIPE_VERSION."""
    h = hashlib.sha256(str(RECIPE_VERSION).encode())
    h.update(json.dumps([casa_spec(m, i) for i, m in enumerate(catalogue)], sort_keys=True).encode())
    h.update(repr(catalogue).encode())
    h.update(json.dumps([obscore_row(m, None) for m in catalogue], sort_keys=True).encode())
    h.update(CASA_SCRIPT.read_bytes())
    return h.hexdigest()[:16]


def default_root() -> Path:
    """Where the demo archive is cached: ``$XDG_CACHE_HOME/ari-console/demo-archive-v<N>``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ari-console" / f"demo-archive-v{RECIPE_VERSION}"


def is_built(root: Path, catalogue: tuple[DemoMous, ...] = CATALOGUE) -> bool:
    """True when ``root`` holds a complete build of the current recipe (of ``catalogue``)."""
    try:
        manifest = json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("recipe_hash") == recipe_hash(catalogue)


def load_manifest(root: Path) -> dict:
    """The demo archive's manifest (obscore rows, files with sha256, truth per MOUS)."""
    return json.loads((Path(root) / MANIFEST).read_text())


def casa_env() -> dict:
    """The environment for the CASA subprocess: the offline site config when there is one."""
    env = dict(os.environ)
    site = Path(sys.prefix) / "casasiteconfig.py"
    if "CASASITECONFIG" not in env and site.is_file():
        env["CASASITECONFIG"] = str(site)
    return env


def build_archive(root: Path | None = None, force: bool = False, python: str | None = None,
                  progress: Callable[[int, int, str], None] | None = None,
                  catalogue: tuple[DemoMous, ...] = CATALOGUE) -> Path:
    """Build (or reuse) the demo archive in ``root``; its path.

    ``progress(done, total, message)`` is called as CASA starts and finishes each MOUS.
    Concurrent callers wait on a lock and reuse the first one's build. ``catalogue``
    is for tests that build a smaller archive.
    """
    root = Path(root or default_root())
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(root, catalogue) and not force:
            return root
        staging = root.parent / f".{root.name}.building"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        started = time.time()
        results = run_casa_build(staging / "work", python or sys.executable, progress, catalogue)
        manifest = pack_archive(staging, results, catalogue)
        manifest["build_seconds"] = round(time.time() - started, 1)
        shutil.rmtree(staging / "work")
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
        return root


def run_casa_build(work: Path, python: str, progress: Callable[[int, int, str], None] | None,
                   catalogue: tuple[DemoMous, ...] = CATALOGUE) -> dict:
    """Run the CASA script over every buildable MOUS; {uid: result dict}."""
    built = [m for m in catalogue if m.built]
    work.mkdir(parents=True)
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps({"mous": [casa_spec(m, i) for i, m in enumerate(built)]}, indent=1))
    log_path = work / "build.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([python, str(CASA_SCRIPT), str(spec_path), str(work)], cwd=work,
                                env=casa_env(), stdout=subprocess.PIPE, stderr=log, text=True)
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if line.startswith("PROGRESS ") and progress:
                _, done, total, uid, *step = line.split()
                progress(int(done), int(total), f"{uid} {' '.join(step)}")
        code = proc.wait()
    if code != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"the demo archive's CASA build failed (exit {code}); see {log_path}:\n{tail}")
    return {m.uid: json.loads((work / uid_filename(m.uid) / "result.json").read_text()) for m in built}


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def member_path(mous: DemoMous) -> str:
    """The MOUS folder inside the archive's tars, as ALMA delivers it."""
    return (f"{mous.project}/science_goal.{uid_filename(science_goal_uid(mous))}/"
            f"group.{uid_filename(group_uid(mous))}/member.{uid_filename(mous.uid)}")


def _tar_add_text(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1500000000, 0o644
    tar.addfile(info, io.BytesIO(data))


def _tar_add_tree(tar: tarfile.TarFile, source: Path, name: str) -> None:
    def tidy(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.name.endswith("/table.lock"):
            return None  # casacore lock files are not data
        info.mtime, info.uid, info.gid, info.uname, info.gname = 1500000000, 0, 0, "", ""
        return info

    tar.add(source, arcname=name, filter=tidy)


def pack_archive(staging: Path, results: dict, catalogue: tuple[DemoMous, ...] = CATALOGUE) -> dict:
    """Pack every built MOUS into ``staging/files`` and return the manifest."""
    manifest = {"recipe_version": RECIPE_VERSION, "recipe_hash": recipe_hash(catalogue), "mous": {}}
    for index, mous in enumerate(catalogue):
        result = results.get(mous.uid)
        entry = {"obscore": obscore_row(mous, result), "truth": truth(mous, index),
                 "hints": dict(mous.hints), "case": mous.case, "built": mous.built, "files": []}
        if result:
            folder = staging / "files" / uid_filename(mous.uid)
            folder.mkdir(parents=True)
            files = pack_mous(mous, staging / "work" / uid_filename(mous.uid), folder, result)
            entry["files"] = [_file_entry(folder / name, semantics, mous) for name, semantics in files]
            entry["casa_version"] = casa_version_text(result["casa_version"])
            entry["build"] = {k: result[k] for k in ("seconds", "restore_quality", "qa2_images", "raw_format",
                                                    "gains_applied", "line_profile_jy")}
        manifest["mous"][mous.uid] = entry
    return manifest


def _file_entry(path: Path, semantics: str, mous: DemoMous) -> dict:
    faults = {}
    if semantics == "#this" and mous.case == "corrupt_download":
        faults["corrupt_once"] = True
    if semantics == "#this" and mous.case == "dropped_download":
        faults["drop_once_after"] = path.stat().st_size // 3
    return {"name": path.name, "path": f"files/{path.parent.name}/{path.name}", "size": path.stat().st_size,
            "sha256": sha256_file(path), "semantics": semantics, **faults}


def casa_version_text(version_string: str) -> str:
    """``6.7.0.31`` -> ``6.7.0-31`` (the way restore scripts name CASA versions)."""
    parts = version_string.split(".")
    return ".".join(parts[:3]) + (f"-{parts[3]}" if len(parts) > 3 else "")


def pack_mous(mous: DemoMous, work: Path, folder: Path, result: dict) -> list[tuple[str, str]]:
    """The archive files of one MOUS in ``folder``: [(file name, datalink semantics)]."""
    member = member_path(mous)
    asdm = uid_filename(asdm_uid(mous))
    casa = casa_version_text(result["casa_version"])
    readme = readme_text(mous, result, casa)
    files = []
    raw_name = f"{asdm}.asdm.sdm.tar"
    with tarfile.open(folder / raw_name, "w") as tar:
        _tar_add_tree(tar, work / "raw" / result["raw_entry"], f"{member}/raw/{result['raw_entry']}")
    files.append((raw_name, "#this"))
    aux_name = f"{mous.project}_{uid_filename(mous.uid)}_auxiliary.tar"
    with tarfile.open(folder / aux_name, "w") as tar:
        _tar_add_text(tar, f"{member}/README", readme)
        for table in result["caltables"]:
            if mous.case != "missing_caltable":
                _tar_add_tree(tar, work / "calibration" / table, f"{member}/calibration/{table}")
        _tar_add_tree(tar, work / "log", f"{member}/log")
        _tar_add_text(tar, f"{member}/qa/{uid_filename(mous.uid)}.qa2_report.txt", qa2_report(mous, result))
        _tar_add_text(tar, f"{member}/script/scriptForPI.py", restore_script(mous, result, casa))
        _tar_add_text(tar, f"{member}/script/demo_hints.json", json.dumps(dict(mous.hints), indent=1) + "\n")
    files.append((aux_name, "#auxiliary"))
    if result["qa2_images"]:
        product_name = f"{mous.project}_{uid_filename(mous.uid)}_001_of_001.tar"
        with tarfile.open(folder / product_name, "w") as tar:
            for fits in sorted(result["qa2_images"]):
                _tar_add_tree(tar, work / "product" / fits, f"{member}/product/{fits}")
        files.append((product_name, "#derivation"))
    readme_name = f"member.{uid_filename(mous.uid)}.README.txt"
    (folder / readme_name).write_text(readme)
    files.append((readme_name, "#documentation"))
    return files


def readme_text(mous: DemoMous, result: dict, casa: str) -> str:
    """The MOUS README as the archive ships it, naming the CASA version calibration needs."""
    tables = "none (total power)" if not result["caltables"] else ", ".join(result["caltables"])
    raw_note = ("" if result["raw_format"] == "asdm" else
                "Note: the raw data of this total-power MOUS are a measurement set (raw/*.ms), because\n"
                "exportasdm cannot write an ASDM without baselines.\n")
    return (f"This is the README for project {mous.project}, member OUS {mous.uid}\n"
            f"(demo archive of ari-console, simulated with CASA {casa}).\n\n"
            f"Target: {mous.target}   Band: {mous.band}   Array: {mous.array}\n"
            f"ASDM: {asdm_uid(mous)}\n"
            f"Calibration tables: {tables}\n"
            f"The data were calibrated with CASA version {casa}.\n"
            f"To restore the calibrated measurement set, run script/scriptForPI.py with CASA {casa}\n"
            "from the script/ folder, with the raw/ folder (untarred ASDM) beside it.\n\n"
            f"{raw_note}Folders: calibration/ log/ product/ qa/ script/\n")


def qa2_report(mous: DemoMous, result: dict) -> str:
    """The QA2 report text: status and what the QA2 images hold."""
    lines = [f"QA2 report for {mous.uid}", f"QA2 status: {mous.qa2_status}"]
    for name, stats in sorted(result["qa2_images"].items()):
        if "max" in stats:
            lines.append(f"{name}: peak {stats['max']:.5g} Jy/beam, rms {stats['rms']:.3g} Jy/beam")
    return "\n".join(lines) + "\n"


def restore_script(mous: DemoMous, result: dict, casa: str) -> str:
    """A scriptForPI.py that restores the calibrated MS: importasdm + applycal."""
    asdm = uid_filename(asdm_uid(mous))
    tables = [f"../calibration/{t}" for t in result["caltables"]]
    return f'''# scriptForPI.py for {mous.uid} ({mous.project})
# CASA version: {casa}
# Restores the calibrated measurement set from the raw ASDM and the calibration tables.
import os
from casatasks import applycal, importasdm

ASDM = "../raw/{asdm}.asdm.sdm"
VIS = "../calibrated/{asdm}.ms"
GAINTABLES = {tables!r}

os.makedirs("../calibrated", exist_ok=True)
importasdm(asdm=ASDM, vis=VIS, overwrite=True)
for table in GAINTABLES:
    if not os.path.isdir(table):
        raise RuntimeError("calibration table missing: " + table)
if GAINTABLES:
    applycal(vis=VIS, gaintable=GAINTABLES, calwt=False, flagbackup=False)
'''


def _deg(ra: str, dec: str) -> tuple[float, float]:
    """(ra, dec) in degrees from ``10h00m00.0s``, ``-30d00m00.0s``."""
    h, rest = ra.split("h")
    m, s = rest.rstrip("s").split("m")
    ra_deg = 15 * (float(h) + float(m) / 60 + float(s) / 3600)
    d, rest = dec.split("d")
    dm, ds = rest.rstrip("s").split("m")
    sign = -1 if d.strip().startswith("-") else 1
    dec_deg = sign * (abs(float(d)) + float(dm) / 60 + float(ds) / 3600)
    return round(ra_deg, 6), round(dec_deg, 6)


def truth(mous: DemoMous, index: int) -> dict:
    """What was simulated: sources (absolute position, flux at the continuum frequency), the line."""
    spec = casa_spec(mous, index)
    ra0, dec0 = _deg(mous.ra, mous.dec)
    sources = []
    for s in mous.sources:
        dec = dec0 + s["ddec_arcsec"] / 3600
        ra = ra0 + s["dra_arcsec"] / 3600 / math.cos(math.radians(dec0))
        sources.append({**s, "ra_deg": round(ra, 7), "dec_deg": round(dec, 7)})
    return {"sources": sources, "cont": spec["cont"], "line": {**spec["line"], "name": _BANDS[mous.band]["line"][3]},
            "noise_jy_per_visibility": mous.noise_jy, "qa2_flux_scale": mous.qa2_flux_scale}


def obscore_row(mous: DemoMous, result: dict | None) -> dict:
    """The ``ivoa.obscore`` row of ``mous`` with the columns the ALMA archive uses."""
    band = _BANDS[mous.band]
    config, nant, prefix = _CONFIGS[mous.array]
    ra, dec = _deg(mous.ra, mous.dec)
    cont_freq, cont_nchan, cont_width = band["cont"]
    line_freq, line_nchan, line_width, _ = band["line"]
    freq = (cont_freq + line_freq) / 2
    baseline_m = {"12m": 100.0, "7m": 45.0, "TP": 12.0}[mous.array]
    resolution = round(206265 * 0.2998 / freq / baseline_m, 3)
    hints = dict(mous.hints)
    fov_deg = round(_PRIMARY_BEAM_ARCSEC[mous.array] / freq / 3600, 6)
    if "pipeline_imsize" in hints:
        # The metadata of a long-baseline, wide-band MOUS: a pipeline would image it with
        # pipeline_imsize pixels a side (1.2 x the field at 5 pixels per beam) ...
        resolution = round(1.2 * fov_deg * 3600 * 5 / hints["pipeline_imsize"], 5)
    if "pipeline_nchan" in hints:
        # ... and pipeline_nchan channels in its line window.
        line_nchan, line_width = hints["pipeline_nchan"], round(line_nchan * line_width / hints["pipeline_nchan"], 6)
    exptime = hints.get("hours", 0.1) * 3600 * 0.8 if "hours" in hints else 300.0
    pads = {"12m": "A", "7m": "J", "TP": "T70"}[mous.array]
    antennas = " ".join(f"{pads}{i + 1:03d}:{prefix}{i + 1:02d}" if mous.array != "TP"
                        else f"{pads}{i + 1}:{prefix}{i + 1:02d}" for i in range(nant))
    support = (f"[{cont_freq:.2f}..{cont_freq + cont_nchan * cont_width / 1000:.2f}GHz,{cont_width * 1000:.2f}kHz,XX YY] U "
               f"[{line_freq:.2f}..{line_freq + line_nchan * line_width / 1000:.2f}GHz,{line_width * 1000:.2f}kHz,XX YY]")
    t_min = 57754.0 + int(uid_filename(mous.uid).rsplit("_X", 1)[1], 16) % 97 * 30
    row = {
        "obs_publisher_did": f"ADS/JAO.ALMA#{mous.project}", "obs_collection": "ALMA", "facility_name": "JAO",
        "instrument_name": "ALMA", "obs_id": mous.uid, "dataproduct_type": "cube", "calib_level": 2,
        "target_name": mous.target, "s_ra": ra, "s_dec": dec,
        "s_fov": fov_deg,
        "s_resolution": resolution, "spatial_resolution": resolution,
        "spatial_scale_max": round(resolution * 5, 3),
        "t_min": t_min, "t_max": t_min + exptime / 86400, "t_exptime": exptime,
        "t_resolution": 30.0,
        "em_min": round(0.2998 / max(cont_freq, line_freq) / 1e9 * 1e9, 9),
        "em_max": round(0.2998 / min(cont_freq, line_freq) / 1e9 * 1e9, 9),
        "em_res_power": round(line_freq * 1000 / line_width, 1),
        "pol_states": mous.pol_states, "pol_xel": mous.pol_states.count("/") - 1,
        "o_ucd": "phot.flux.density;phys.polarization", "access_format": "application/x-tar",
        "proposal_id": mous.project, "data_rights": mous.data_rights, "gal_longitude": None, "gal_latitude": None,
        "band_list": str(mous.band), "em_resolution": round(0.2998 / line_freq / 1e9 * line_width / line_freq / 1e3, 12),
        "bandwidth": (cont_nchan * cont_width + line_nchan * line_width) * 1e6,
        "antenna_arrays": antennas, "is_mosaic": "F", "obs_release_date": mous.release,
        "spatial_resolution_unit": "arcsec", "frequency_support": support, "frequency": round(freq, 4),
        "velocity_resolution": round(line_width / line_freq * 299792.458 * 1000, 1),
        "obs_creator_name": "Demo, A.", "pub_title": None, "first_author": None,
        "qa2_passed": "T" if mous.qa2_status in ("Pass", "SemiPass") else "F",
        "qa2_status": mous.qa2_status,
        "bib_reference": None, "science_keyword": "Solar physics" if mous.target == "Sun" else "Galaxy structure & evolution",
        "scientific_category": "Sun" if mous.target == "Sun" else "Galaxies",
        "lastModified": "2018-01-01T00:00:00", "pi_userid": "ademo", "pi_name": "Demo, A.",
        "obs_title": f"Demo project {mous.project}", "schedblock_name": f"{mous.target}_a_0{mous.band}_{mous.array}",
        "proposal_abstract": "Simulated with CASA for the ari-console demo archive.",
        "science_observation": "T", "type": "S",
        "scan_intent": "TARGET" if mous.array == "TP" else "TARGET WVR",
        "member_ous_uid": mous.uid, "group_ous_uid": group_uid(mous), "asdm_uid": asdm_uid(mous),
        "cont_sensitivity_bandwidth": round(mous.noise_jy / 60 * 1000, 4),
        "line_sensitivity_10kms": round(mous.noise_jy / 20 * 1000, 4),
        "sensitivity_10kms": round(mous.noise_jy / 20 * 1000, 4),
        "access_url": None,
    }
    return row

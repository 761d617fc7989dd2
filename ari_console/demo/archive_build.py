"""The demo ALMA archive: data sets that CASA really simulated, packed as the archive packs them.

The console never imports CASA: ``build_archive`` writes a spec of every MOUS
and runs ``ari_console/demo/casa_build.py`` with the node's CASA Python
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
- memory: its obscore row predicts a modest memory, as the metadata of a real
  memory failure does: a ``spatial_resolution`` that makes a
  ``hints.pipeline_imsize`` (400) image and a line window of
  ``hints.pipeline_nchan`` (480) channels in ``frequency_support``, so the client
  predicts ~2.5 GB (``client.predicted_memory_gb``: one float cube + 2 GB of
  CASA) and the scheduler places it on a small node (e.g. 4 GB). tclean really
  holds several such cubes (residual, model, psf, pb, weights, grids), and
  ``hints.demo_alloc_gb`` (6 GB) asks the recipe to allocate that much during
  imaging: the small node's memory budget kills it, and the retry with more
  memory (e.g. a 12 GB node) succeeds;
- walltime: its ``t_exptime`` (``hints.exptime_s``, 12 s) makes the client
  predict the floor of ``client.predicted_hours`` (0.05 h + 1.25 x t_exptime =
  0.054 h = 194 s at speed 1), so it is placed on a short-walltime node (e.g.
  0.05 h on a node of speed >= 1.1, or 0.055 h at speed 1);
  ``hints.demo_slowdown_s`` (8 s) asks the casa6 recipe to sleep that long after
  each of its ~21 steps (2 restore, 7 image, 12 export), so the attempt really
  runs ~57 s + ~170 s = ~3.8 min and the short walltime kills it, and the retry
  with more walltime succeeds;
- QA2 disagrees: the QA2 images carry a wrong flux scale (``qa2.flux_scale``),
  and nothing else differs: rms and beam stay within their factor 2;
- corrupted download: the service flips one byte of the raw tar the first time;
- dropped download: the service cuts the connection mid-file the first time.

The QA2 images are made the way QA2 analysts make them (``qa2_plan``): an
aggregate continuum from the line-free channels of both windows, a cube of the
continuum-subtracted (``uvcontsub``) line window, a field of 1.6 primary beams,
a clean mask around the sources and a clean down to 3x the thermal noise; the
simulated MS carries the weights ``importasdm`` gives the archive's data (2 x
channel width x integration time), so QA2 and pipeline weight the windows
alike. The archive tells the pipeline nothing of that depth (a real archive
never does): the casa6 recipe measures the noise itself (on a dirty image of
the Stokes parameter that holds no source) and cleans to 3x it, so both
images are noise-limited and a normal MOUS compares as ``consistent``.
The visibility noise (``noise_jy``, 0.05 Jy in every channel) gives a 0.5 Jy
source a continuum SNR of ~900 and a 0.2 Jy line ~170 in its peak channel.
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
from ..casa_install import casa_version_text

RECIPE_VERSION = 4  # bump when the packing (not the catalogue or the CASA script) changes
CASA_SCRIPT = Path(__file__).resolve().parent / "casa_build.py"
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
    noise_jy: float = 0.05
    qa2_weighting: str = "natural"
    qa2_flux_scale: float = 1.0
    case: str = "normal"
    hints: tuple = ()
    data_rights: str = "Public"
    qa2_status: str = "Pass"
    pol_states: str = "/XX/YY/"
    built: bool = True
    release: str = "2018-03-01T00:00:00"
    calibration: str = "pipeline"  # or "manual": per-EB scriptForCalibration.py run by scriptForPI.py
    sessions: tuple = (1,)  # the session of each EB (one EB per entry)
    pointings: tuple = ((0.0, 0.0),)  # (dra, ddec) arcsec of each pointing; more than one: a mosaic
    bad_antenna: int | None = None  # an antenna whose data are ruined and flagged (Pipeline_Final)

    @property
    def is_mosaic(self) -> bool:
        return len(self.pointings) > 1


def _point(flux, dra=0.0, ddec=0.0):
    return dict(shape="point", flux_jy=flux, dra_arcsec=dra, ddec_arcsec=ddec)


def _gauss(flux, major, minor, pa=30.0, dra=0.0, ddec=0.0):
    return dict(shape="gaussian", flux_jy=flux, major_arcsec=major, minor_arcsec=minor, pa_deg=pa,
                dra_arcsec=dra, ddec_arcsec=ddec)


P1, P2, P3 = "2016.1.00123.S", "2017.1.00456.S", "2018.1.00789.S"

CATALOGUE: tuple[DemoMous, ...] = (
    DemoMous("uid://A001/X1296/X1d3", P1, "NGC1234", "10h00m00.0s", "-30d00m00.0s", 6, "12m",
             (_point(0.5), _point(0.05, 6.0, -4.0)), bad_antenna=3),
    DemoMous("uid://A001/X1296/X1d5", P1, "NGC_5678", "10h20m00.0s", "-31d00m00.0s", 6, "12m",
             (_gauss(0.3, 5.0, 3.5),), qa2_weighting="briggs", calibration="manual", bad_antenna=5),
    DemoMous("uid://A001/X1296/X1d7", P1, "J1610-3958", "16h10m00.0s", "-39d58m00.0s", 6, "12m",
             (_point(0.004),), noise_jy=0.025, line_peak_jy=0.05),
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
             hints=(("pipeline_imsize", 400), ("pipeline_nchan", 480),
                    ("demo_alloc_gb", 6.0))),
    DemoMous("uid://A001/X133d/X3a3", P3, "W51e2", "19h23m43.9s", "14d30m34.0s", 7, "12m",
             (_point(0.6),), case="walltime_long",
             hints=(("exptime_s", 12.0), ("demo_slowdown_s", 8))),
    DemoMous("uid://A001/X133d/X3a5", P3, "TW_Hya", "11h01m51.9s", "-34d42m17.0s", 7, "12m",
             (_gauss(0.5, 2.5, 2.0),), case="dropped_download", sessions=(1, 2)),
    DemoMous("uid://A001/X133d/X3ad", P3, "NGC4038", "12h01m53.0s", "-18d52m10.0s", 6, "12m",
             (_point(0.3, 8.0, 3.0),), pointings=((0.0, 0.0), (-13.0, 0.0), (13.0, 0.0)), line_peak_jy=0.0),
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


def asdm_uids(mous: DemoMous) -> list[str]:
    """The uids of the MOUS's execution blocks, one per entry of ``sessions``.

    >>> asdm_uids(CATALOGUE[0])
    ['uid://A002/Xc1296/X1d3']
    """
    first = asdm_uid(mous)
    head, serial = first.rsplit("/X", 1)
    return [first] + [f"{head}/X{int(serial, 16) + 0x1000 * k:x}" for k in range(1, len(mous.sessions))]


def group_uid(mous: DemoMous) -> str:
    """The group OUS uid (one below the member's serial)."""
    head, serial = parse_uid(mous.uid).rsplit("/X", 1)
    return f"{head}/X{int(serial, 16) - 1:x}"


def science_goal_uid(mous: DemoMous) -> str:
    """The science goal OUS uid (two below the member's serial)."""
    head, serial = parse_uid(mous.uid).rsplit("/X", 1)
    return f"{head}/X{int(serial, 16) - 2:x}"


def qa2_names(mous: DemoMous) -> tuple[str, str]:
    """The QA2 image stems, as analysts name them: aggregate continuum and line cube.

    >>> qa2_names(CATALOGUE[0])
    ('NGC1234_aggregate_cont.manual', 'NGC1234_CO_2-1.manual.cube')
    """
    line = _BANDS[mous.band]["line"][3]
    return f"{mous.target}_aggregate_cont.manual", f"{mous.target}_{line}.manual.cube"


def line_free_channels(nchan: int, center: float, fwhm: float) -> list[int]:
    """The channels of a window farther than 1.5 FWHM from its line's centre (where a QA2 analyst fits).

    >>> line_free_channels(32, 15.5, 6.0)
    [0, 1, 2, 3, 4, 5, 6, 25, 26, 27, 28, 29, 30, 31]
    >>> line_free_channels(24, 11.5, 120.0)
    []
    """
    return [c for c in range(nchan) if abs(c - center) > 1.5 * fwhm]


def channel_ranges(channels: list[int]) -> str:
    """CASA's channel selection for ``channels``.

    >>> channel_ranges([0, 1, 2, 6, 7])
    '0~2;6~7'
    """
    runs: list[list[int]] = []
    for c in sorted(channels):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ";".join(f"{a}~{b}" for a, b in runs)


def thermal_noise_jy(noise_jy: float, nant: int, nint: int, windows: list[tuple[int, float]]) -> float:
    """Expected Stokes I image noise from XX and YY visibilities in ``windows`` [(channels, weight)].

    ``noise_jy`` is the complex noise of one visibility (real and imaginary parts together,
    the same in every channel, as ``add_noise`` writes it); each window's visibilities carry
    the weight ``importasdm`` gives them (2 x channel width x integration time), so a
    weighted mean over windows: sigma sqrt(sum n w^2) / sum n w.

    >>> round(thermal_noise_jy(0.05, 10, 10, [(18, 1.0)]) * 1e3, 3)
    0.278
    >>> round(thermal_noise_jy(0.05, 10, 10, [(4, 125.0), (14, 1.0)]) * 1e3, 3)
    0.573
    """
    per_channel = nant * (nant - 1) // 2 * nint * 2
    total = sum(n * per_channel * w for n, w in windows)
    spread = math.sqrt(sum(n * per_channel * w * w for n, w in windows))
    return noise_jy / math.sqrt(2) * spread / total


def efficient_imsize(n: int) -> int:
    """The smallest even size >= ``n`` with no prime factor above 5 (what tclean images fast).

    >>> efficient_imsize(67), efficient_imsize(49)
    (72, 50)
    """
    size = max(2, n + n % 2)
    while True:
        rest = size
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return size
        size += 2


def clean_mask(sources: list[dict], imsize: int, cell: float, margin_cells: float = 8.0) -> list[str]:
    """The analyst's clean mask: a CRTF circle (in pixels) around each source.

    The radius is the source's major axis plus ``margin_cells`` pixels (~2 beams at the
    QA2 cells); RA grows to the left.

    >>> clean_mask([{"dra_arcsec": 6.0, "ddec_arcsec": -4.0}], 80, 0.6)
    ['circle[[30.0pix, 33.3pix], 8.0pix]']
    """
    circles = []
    for src in sources:
        x = imsize // 2 - src["dra_arcsec"] / cell
        y = imsize // 2 + src["ddec_arcsec"] / cell
        radius = src.get("major_arcsec", 0.0) / cell + margin_cells
        circles.append(f"circle[[{x:.1f}pix, {y:.1f}pix], {radius:.1f}pix]")
    return circles


TRACK_S, INTEGRATION_S = 300, 30
QA2_FIELD_PB = 1.6  # QA2 field side in primary-beam FWHMs (the pipeline images 1.5)
QA2_CLEAN_SIGMA = 3.0  # QA2 analysts clean down to 3x the thermal noise


def qa2_plan(mous: DemoMous, cell: float) -> dict:
    """How the QA2 analyst images ``mous``: line-free channels, field, clean depth, names.

    The analyst's choices differ from the pipeline's (cell, imsize, weighting) but not
    its method: continuum from the line-free channels of both windows (the line window
    left out when it has none), a continuum-subtracted cube (``uvcontsub``, fitting the
    window's edges when no channel is line-free: a pathological MOUS), a field of
    ``QA2_FIELD_PB`` primary beams, and ``tclean`` within a mask around the sources (the
    line sits at the phase centre) down to ``QA2_CLEAN_SIGMA`` times the thermal noise,
    so both images are noise-limited (an unmasked clean that deep diverges on extended
    sources with this few antennas).
    """
    band = _BANDS[mous.band]
    config, nant, _ = _CONFIGS[mous.array]
    cont_freq, cont_nchan, cont_width = band["cont"]
    line_freq, line_nchan, line_width, _ = band["line"]
    free = line_free_channels(line_nchan, (line_nchan - 1) / 2.0, mous.line_fwhm_chan)
    edges = list(range(2)) + list(range(line_nchan - 2, line_nchan))
    fit = free or edges
    nint = TRACK_S // INTEGRATION_S
    cont_noise = thermal_noise_jy(mous.noise_jy, nant, nint, [(cont_nchan, cont_width / line_width), (len(free), 1.0)])
    chan_noise = thermal_noise_jy(mous.noise_jy, nant, nint, [(1, 1.0)])
    # every EB adds its integrations; a mosaic shares them among its pointings
    nint = nint * len(mous.sessions) // len(mous.pointings)
    cont_noise = thermal_noise_jy(mous.noise_jy, nant, nint, [(cont_nchan, cont_width / line_width), (len(free), 1.0)])
    chan_noise = thermal_noise_jy(mous.noise_jy, nant, nint, [(1, 1.0)])
    pb_arcsec = _PRIMARY_BEAM_ARCSEC[mous.array] / ((cont_freq + line_freq) / 2)
    extent = max(math.hypot(dra, ddec) for dra, ddec in mous.pointings)
    cont_name, cube_name = qa2_names(mous)
    imsize = efficient_imsize(math.ceil((QA2_FIELD_PB * pb_arcsec + 2 * extent) / cell))
    line_at_centre = [{"dra_arcsec": 0.0, "ddec_arcsec": 0.0}]
    return {
        "cell_arcsec": cell, "imsize": imsize,
        "cont_mask": clean_mask(list(mous.sources), imsize, cell),
        "cube_mask": clean_mask(line_at_centre, imsize, cell),
        "weighting": mous.qa2_weighting, "robust": 0.5, "niter": 5000,
        "cont_spw": f"0,1:{channel_ranges(free)}" if free else "0",
        "contsub_fitspec": f"1:{channel_ranges(fit)}", "line_free": bool(free),
        "cont_threshold_mjy": round(QA2_CLEAN_SIGMA * cont_noise * 1e3, 4),
        "cube_threshold_mjy": round(QA2_CLEAN_SIGMA * chan_noise * 1e3, 4),
        "cont_noise_mjy": round(cont_noise * 1e3, 4), "cube_noise_mjy": round(chan_noise * 1e3, 4),
        "flux_scale": mous.qa2_flux_scale, "cont_name": cont_name, "cube_name": cube_name,
        # Few antennas give a PSF with high sidelobes: without these, tclean spends
        # most of its time in major cycles of a handful of minor iterations each;
        # minpsffraction keeps a minor cycle from cleaning deeper than the PSF allows
        # (0.2 x cyclefactor alone lets hogbom diverge on noise below the first cycles).
        "cyclefactor": 0.2, "minpsffraction": 0.2, "nmajor": 10,
    }


def casa_spec(mous: DemoMous, index: int) -> dict:
    """The spec the CASA script builds ``mous`` from."""
    band = _BANDS[mous.band]
    config, nant, prefix = _CONFIGS[mous.array]
    cont_freq, cont_nchan, cont_width = band["cont"]
    line_freq, line_nchan, line_width, _ = band["line"]
    cell = band["cell"].get(mous.array, band["cell"]["12m"])
    date = f"2017/0{1 + index % 9}/1{index % 10}"
    ebs = [{"asdm_file": uid_filename(u), "session": session, "date": f"{date}/0{2 * k}:00:00", "seed": 1000 + index + 50 * k}
           for k, (u, session) in enumerate(zip(asdm_uids(mous), mous.sessions))]
    return {
        "ebs": ebs, "calibration": mous.calibration, "pointings": [list(p) for p in mous.pointings],
        "bad_antenna": mous.bad_antenna, "omit_caltables": mous.case == "missing_caltable",
        "uid": mous.uid, "uid_file": uid_filename(mous.uid), "asdm_file": uid_filename(asdm_uid(mous)),
        "kind": "tp" if mous.array == "TP" else "int", "target": mous.target, "ra": mous.ra, "dec": mous.dec,
        "config": config, "nant": nant, "antenna_prefix": prefix, "refant": "0",
        "date": f"2017/0{1 + index % 9}/1{index % 10}/00:00:00", "track_s": TRACK_S,
        "integration_s": INTEGRATION_S,
        "cont": {"freq_ghz": cont_freq, "nchan": cont_nchan, "width_mhz": cont_width},
        "line": {"freq_ghz": line_freq, "nchan": line_nchan, "width_mhz": line_width,
                 "peak_jy": mous.line_peak_jy, "center_chan": (line_nchan - 1) / 2.0,
                 "fwhm_chan": mous.line_fwhm_chan},
        "sources": [dict(s) for s in mous.sources], "noise_jy": mous.noise_jy, "seed": 1000 + index,
        "qa2": qa2_plan(mous, cell),
    }


def recipe_hints(mous: DemoMous) -> dict:
    """The processing hints the archive ships for ``mous`` (``script/demo_hints.json``).

    Only the case's knobs (``demo_alloc_gb``, ``demo_slowdown_s``, ...): no clean
    threshold, as a real archive ships none, so the recipe's own stopping rule images
    every demo MOUS.
    """
    return dict(mous.hints)


def recipe_hash(catalogue: tuple[DemoMous, ...] = CATALOGUE) -> str:
    """A hash of everything a build depends on: the catalogue, the CASA script, RECIPE_VERSION."""
    h = hashlib.sha256(str(RECIPE_VERSION).encode())
    h.update(json.dumps([casa_spec(m, i) for i, m in enumerate(catalogue)], sort_keys=True).encode())
    h.update(repr(catalogue).encode())
    h.update(json.dumps([obscore_rows(m, None) for m in catalogue], sort_keys=True).encode())
    h.update(repr((sorted(CYCLE_1_4_PACKING), sorted(UNKNOWN_SIZES), sorted(SECOND_TARGET.items()))).encode())
    h.update(CASA_SCRIPT.read_bytes())
    return h.hexdigest()[:16]


def default_root() -> Path:
    """Where the demo archive is cached: ``$ARI_DEMO_ARCHIVE`` when set, else
    ``$XDG_CACHE_HOME/ari-console/demo-archive-v<N>``."""
    if os.environ.get("ARI_DEMO_ARCHIVE"):
        return Path(os.environ["ARI_DEMO_ARCHIVE"])
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


# How some MOUS are packed, beside their CASA build (by uid, so catalogue entries stay as they are):
# Cycle 1-4 packing (calibration, scripts, QA and logs inside the product tar, no auxiliary tar),
# DataLink sizes unknown (content_length -1, as recent request-handler answers give), and obscore
# rows that name a second target (the MOUS's secondary source, catalogued as its own source).
CYCLE_1_4_PACKING = frozenset({"uid://A001/X1296/X1d5"})
UNKNOWN_SIZES = frozenset({"uid://A001/X1296/X1d7", "uid://A001/X1296/X1d5"})
SECOND_TARGET = {"uid://A001/X1296/X1d3": "NGC1234_SE"}
ARCHIVE_FOLDERS = ("calibration", "script", "qa", "log")


def pack_archive(staging: Path, results: dict, catalogue: tuple[DemoMous, ...] = CATALOGUE) -> dict:
    """Pack every built MOUS into ``staging/files`` and return the manifest."""
    manifest = {"recipe_version": RECIPE_VERSION, "recipe_hash": recipe_hash(catalogue), "mous": {}}
    for index, mous in enumerate(catalogue):
        result = results.get(mous.uid)
        rows = obscore_rows(mous, result)
        entry = {"obscore": obscore_row(mous, result), "obscore_rows": rows, "truth": truth(mous, index),
                 "hints": recipe_hints(mous), "case": mous.case, "built": mous.built, "files": [],
                 "packing": "cycle1-4" if mous.uid in CYCLE_1_4_PACKING else "standard",
                 "sizes_known": mous.uid not in UNKNOWN_SIZES}
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
    """A file of the manifest: where it is, its size and sha256 (the demo's own record), faults,
    and the members a recursive DataLink document lists one by one."""
    faults = {}
    if semantics == "#progenitor" and mous.case == "corrupt_download":
        # A flipped byte in a tar header: what a node can catch without a checksum (reading the tar through).
        with tarfile.open(path) as tar:
            last = tar.getmembers()[-1]
        faults.update(corrupt_once=True, corrupt_at=last.offset + 10)
    if semantics == "#progenitor" and mous.case == "dropped_download":
        faults["drop_once_after"] = path.stat().st_size // 3
    entry = {"name": path.name, "path": f"files/{path.parent.name}/{path.name}", "size": path.stat().st_size,
             "sha256": sha256_file(path), "semantics": semantics, **faults}
    if path.name.endswith(".tar") and semantics in ("#this", "#auxiliary"):
        entry["members"] = listed_members(path)
    return entry


def listed_members(tar_path: Path) -> list[dict]:
    """The files of a product or auxiliary tar that its DataLink document lists one by one.

    Regular files directly in a member folder's ``product/``, ``calibration/``, ``script/``,
    ``qa/`` or ``log/`` (the contents of calibration tables, which are folders, are not
    listed; the archive lists files). Semantics as the archive gives them: products
    ``#this``, logs ``#documentation``, the rest ``#auxiliary``.
    """
    members = []
    with tarfile.open(tar_path) as tar:
        for info in tar.getmembers():
            parts = info.name.split("/")
            if not info.isfile() or len(parts) != 6:
                continue
            folder = parts[4]
            semantics = "#this" if folder == "product" else "#documentation" if folder == "log" else "#auxiliary"
            members.append({"name": parts[-1], "member": info.name, "size": info.size, "semantics": semantics,
                            "folder": folder})
    return members


def pack_mous(mous: DemoMous, work: Path, folder: Path, result: dict) -> list[tuple[str, str]]:
    """The archive files of one MOUS in ``folder``: [(file name, DataLink semantics)].

    As the ALMA archive delivers a MOUS: one ``<PROJECT>_<asdm>.asdm.sdm.tar`` per
    execution block (``#progenitor``), the ``<PROJECT>_<mous>_auxiliary.tar`` with
    ``calibration/ script/ qa/ log/`` and the README (``#auxiliary``), the
    ``<PROJECT>_<mous>_001_of_001.tar`` with ``product/`` (``#this``), and the README
    (``#documentation``); every tar member under
    ``<project>/science_goal.<uid>/group.<uid>/member.<uid>/``. A Cycle 1-4 style MOUS
    has no auxiliary tar: its product tar carries the calibration, scripts, QA and logs.
    Whatever the CASA build left in the MOUS's ``calibration/``, ``script/``, ``qa/``,
    ``log/`` and ``product/`` folders is packed, so new kinds of files need no change here.
    """
    member = member_path(mous)
    casa = casa_version_text(result["casa_version"])
    files = []
    raws = sorted(p for p in (work / "raw").iterdir()) if (work / "raw").is_dir() else []
    for raw in raws:
        stem = raw.name.split(".")[0]
        raw_name = f"{mous.project}_{stem}.asdm.sdm.tar"
        with tarfile.open(folder / raw_name, "w") as tar:
            _tar_add_tree(tar, raw, f"{member}/raw/{raw.name}")
        files.append((raw_name, "#progenitor"))
    readme = readme_text(mous, result, [name for name, _ in files])
    cycle_1_4 = mous.uid in CYCLE_1_4_PACKING
    # the CASA build leaves the missing-caltable MOUS's session tar without its tables
    missing = set(result["caltables"]) if mous.case == "missing_caltable" and "ebs" not in result else set()

    def add_auxiliary(tar: tarfile.TarFile) -> None:
        _tar_add_text(tar, f"{member}/README", readme)
        for sub in ARCHIVE_FOLDERS:
            for entry in sorted((work / sub).iterdir()) if (work / sub).is_dir() else []:
                if entry.name not in missing:
                    _tar_add_tree(tar, entry, f"{member}/{sub}/{entry.name}")
        written = {p.name for p in (work / "script").iterdir()} if (work / "script").is_dir() else set()
        if not any(n.endswith("scriptForPI.py") for n in written):
            _tar_add_text(tar, f"{member}/script/member.{uid_filename(mous.uid)}.scriptForPI.py",
                          restore_script(mous, result, casa))
        shipped = [p for sub in ARCHIVE_FOLDERS if (work / sub).is_dir() for p in (work / sub).iterdir()]
        if result.get("calibration") != "manual" and not any(p.name.endswith("pipeline_manifest.xml") for p in shipped):
            _tar_add_text(tar, f"{member}/script/{uid_filename(mous.uid)}.pipeline_manifest.xml",
                          pipeline_manifest(mous, result, casa))
        if not (work / "qa").is_dir():
            _tar_add_text(tar, f"{member}/qa/{uid_filename(mous.uid)}.qa2_report.txt", qa2_report(mous, result))
        _tar_add_text(tar, f"{member}/script/demo_hints.json", json.dumps(recipe_hints(mous), indent=1) + "\n")

    if not cycle_1_4:
        aux_name = f"{mous.project}_{uid_filename(mous.uid)}_auxiliary.tar"
        with tarfile.open(folder / aux_name, "w") as tar:
            add_auxiliary(tar)
        files.append((aux_name, "#auxiliary"))
    if result["qa2_images"] or cycle_1_4:
        product_name = f"{mous.project}_{uid_filename(mous.uid)}_001_of_001.tar"
        with tarfile.open(folder / product_name, "w") as tar:
            for fits in sorted(result["qa2_images"]):
                _tar_add_tree(tar, work / "product" / fits, f"{member}/product/{fits}")
            if cycle_1_4:
                add_auxiliary(tar)
        files.append((product_name, "#this"))
    readme_name = f"member.{uid_filename(mous.uid)}.README.txt"
    (folder / readme_name).write_text(readme)
    files.append((readme_name, "#documentation"))
    return files


def pipeline_manifest(mous: DemoMous, result: dict, casa: str) -> str:
    """The ``*pipeline_manifest.xml`` of a pipeline-calibrated MOUS: where the archive states the CASA version."""
    ous = uid_filename(mous.uid)
    tables = "".join(f'    <caltable name="{t}"/>\n' for t in result["caltables"])
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<piperesults name="pipeline-demo">\n'
            f'  <ous name="{ous}">\n    <pipeline_version name="demo"/>\n    <casaversion name="{casa}"/>\n'
            f'{tables}  </ous>\n</piperesults>\n')


def readme_text(mous: DemoMous, result: dict, raw_names: list[str]) -> str:
    """The MOUS README in the archive's form: how-to, data categories, files (no CASA version)."""
    raw_note = ("" if result["raw_format"] == "asdm" else
                "\nNote: the raw data of this total-power MOUS are a measurement set (raw/*.ms), because\n"
                "exportasdm cannot write an ASDM without baselines.\n")
    where = ("product/*001_of_001.tar (Cycle 1-4 packing: calibration, scripts, qa and logs are in it too)"
             if mous.uid in CYCLE_1_4_PACKING else "auxiliary/*auxiliary.tar")
    raw = "".join(f"     raw/{name}\n" for name in raw_names)
    return (f"ALMA Member ObsUnitSet README\n=============================\n"
            f"Project {mous.project}, member OUS {mous.uid} (demo archive of ari-console, simulated with CASA).\n\n"
            "HOW TO\n======\n"
            "* Get the FITS products:\n     untar the product/*001_of_001.tar file, or fetch the files of the\n"
            "     'product' category one by one\n\n"
            "* Create the calibrated measurement sets:\n"
            f"     1) download and untar {where} and the raw *asdm.sdm.tar files\n"
            "     2) use the CASA version named in script/*pipeline_manifest.xml (or, for manually\n"
            "        calibrated data, in the QA2 report and scriptForPI.py)\n"
            "     3) change into the 'script' folder and run scriptForPI.py\n\n"
            "DATA CATEGORIES\n===============\n"
            "* auxiliary          calibration tables, scripts, logs and quality assurance reports\n"
            "* product            FITS products of the science targets\n"
            "* raw                uncalibrated raw data that were used to make the final products\n"
            "* raw (semipass)     uncalibrated raw data that are flawed or incomplete and were not used\n\n"
            "FILES\n=====\n"
            f"raw:\n{raw}\nraw (semipass):\n     none\n{raw_note}")


def qa2_report(mous: DemoMous, result: dict) -> str:
    """The QA2 report text: status and what the QA2 images hold."""
    lines = [f"QA2 report for {mous.uid}", f"QA2 status: {mous.qa2_status}"]
    for name, stats in sorted(result["qa2_images"].items()):
        if "max" in stats:
            lines.append(f"{name}: peak {stats['max']:.5g} Jy/beam, rms {stats['rms']:.3g} Jy/beam")
    return "\n".join(lines) + "\n"


def restore_script(mous: DemoMous, result: dict, casa: str) -> str:
    """The scriptForPI.py of a pipeline-calibrated MOUS: the pipeline's restore, as the archive ships it.

    Run with ``casa --pipeline -c scriptForPI.py`` from ``script/``: it lays out
    ``../calibrated/{rawdata,working}`` (the calibration products and the ASDMs in
    ``rawdata``) and runs the ``*casa_piperestorescript.py`` (``hifa_restoredata`` with
    each EB's session) in ``working``.
    """
    return f'''# scriptForPI.py for {mous.uid} ({mous.project}), pipeline calibration
# CASA version: {casa}
# Run from this script/ folder with the raw/ folder (untarred ASDMs) beside it:
#     casa --pipeline -c scriptForPI.py
# It restores ../calibrated/working/<asdm>.ms with the pipeline's hifa_restoredata.
import glob
import os
import shutil

here = os.path.abspath(os.getcwd())
restore = glob.glob(os.path.join(here, "*casa_piperestorescript.py"))
if not restore:
    raise RuntimeError("no *casa_piperestorescript.py beside scriptForPI.py")
for sub in ("rawdata", "working"):
    os.makedirs(os.path.join("..", "calibrated", sub), exist_ok=True)
for path in glob.glob("../calibration/*"):
    shutil.copy(path, "../calibrated/rawdata")
for asdm in glob.glob("../raw/*.asdm.sdm"):
    link = os.path.join("../calibrated/rawdata", os.path.basename(asdm)[:-len(".asdm.sdm")])
    if not os.path.exists(link):
        os.symlink(os.path.abspath(asdm), link)
os.chdir("../calibrated/working")
try:
    exec(compile(open(restore[0]).read(), restore[0], "exec"))
finally:
    os.chdir(here)
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
    exptime = float(hints.get("exptime_s", TRACK_S))
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
        "antenna_arrays": antennas, "is_mosaic": "T" if mous.is_mosaic else "F", "obs_release_date": mous.release,
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


# The columns of the ALMA archive's ivoa.obscore, in its order (as a real row lists them).
OBSCORE_COLUMNS = (
    "obs_publisher_did", "obs_collection", "facility_name", "instrument_name", "obs_id", "dataproduct_type",
    "calib_level", "target_name", "s_ra", "s_dec", "s_fov", "s_region", "s_resolution", "t_min", "t_max",
    "t_exptime", "t_resolution", "em_min", "em_max", "em_res_power", "pol_states", "o_ucd", "access_url",
    "access_format", "proposal_id", "data_rights", "gal_longitude", "gal_latitude", "band_list", "em_resolution",
    "bandwidth", "antenna_arrays", "is_mosaic", "obs_release_date", "spatial_resolution", "frequency_support",
    "frequency", "velocity_resolution", "obs_creator_name", "pub_title", "first_author", "authors",
    "pub_abstract", "publication_year", "proposal_abstract", "schedblock_name", "proposal_authors",
    "sensitivity_10kms", "cont_sensitivity_bandwidth", "pwv", "group_ous_uid", "member_ous_uid", "asdm_uid",
    "obs_title", "type", "scan_intent", "science_observation", "spatial_scale_max", "qa2_passed",
    "bib_reference", "science_keyword", "scientific_category", "spectral_resolution", "lastModified",
)


def obscore_rows(mous: DemoMous, result: dict | None) -> list[dict]:
    """The MOUS's rows of ``ivoa.obscore`` as the ALMA archive has them: one per source and spw.

    ``obs_id`` is ``<mous uid>.source.<target>.spw.<n>``; each row's
    ``frequency_support`` and ``frequency`` are its own window's; the columns are
    exactly the archive's (``OBSCORE_COLUMNS``: no checksum, no QA2 status beyond
    ``qa2_passed``). A MOUS in ``SECOND_TARGET`` has rows for its secondary source too.
    """
    base = obscore_row(mous, result)
    targets = [(mous.target, base["s_ra"], base["s_dec"])]
    if mous.uid in SECOND_TARGET and len(mous.sources) > 1:
        src = mous.sources[1]
        dec = base["s_dec"] + src["ddec_arcsec"] / 3600
        ra = base["s_ra"] + src["dra_arcsec"] / 3600 / math.cos(math.radians(base["s_dec"]))
        targets.append((SECOND_TARGET[mous.uid], round(ra, 7), round(dec, 7)))
    windows = [w.strip() for w in base["frequency_support"].split(" U ")]
    rows = []
    for name, ra, dec in targets:
        for spw, window in enumerate(windows):
            lo, hi = (float(x) for x in window[1:].split("GHz")[0].split(".."))
            row = {c: base.get(c) for c in OBSCORE_COLUMNS}
            row.update(obs_id=f"{mous.uid}.source.{name}.spw.{spw}", target_name=name, s_ra=ra, s_dec=dec,
                       s_region=f"Circle ICRS {ra:.6f} {dec:.6f} {base['s_fov'] / 2:.6f}",
                       frequency_support=window, frequency=round((lo + hi) / 2, 6),
                       bandwidth=round((hi - lo) * 1e9, 1))
            rows.append(row)
    return rows

"""Recipe ``casa6``: restore calibration, image and export one MOUS with CASA 6 modular tasks.

    PYTHON_WITH_CASATASKS casa6.py STAGE PARAMS.json       STAGE: restore | image | export

The runner starts it once per stage with ``<work_dir>/recipe_params.json``
(keys: attempt_id, uid, work_dir, download_dir, products_dir, inputs, recipe,
casa, params). The module itself is stdlib only; CASA is imported inside the
steps, so tests import the pure parts (continuum heuristic, product size check,
naming) without CASA.

Stages and the steps in each:

- ``restore``: untar every input tar (raw data ``<ASDM>.asdm.sdm.tar``, the
  auxiliary ``..._auxiliary.tar``) into ``restore/`` (nested ``*caltables.tgz``
  each into its own ``<tar>.d/``, ``auxproducts.tgz`` beside it); then restore
  the calibration the way the MOUS was calibrated, finding its inputs by what
  they are, wherever they sit in the tree:

  * manual (``*scriptForPI.py`` with per-EB ``*.scriptForCalibration.py`` or
    ``*.calibration.tgz``, no ``*.calapply.txt``): run ``scriptForPI.py`` from its
    folder with the ASDMs in ``../raw/``, as the archive's README says, under the
    CASA version it or its ``*scriptForCalibration.py`` names (a node's monolithic
    ``casa`` when the job gives one, else this CASA's Python; another version fails
    with the fix); its ``calibrated/calibrated_final.ms``, else ``calibrated.ms``,
    else ``*.split.cal`` are the data (``calibrated_result``);
  * pipeline: ``importasdm`` each ASDM with the arguments the pipeline's restore
    gives it (``IMPORTASDM_ARGS``); restore the final flags (flag version
    ``Pipeline_Final`` of ``<vis>.flagversions.tgz``) before any calibration;
    run ``<vis>.calapply.txt`` line by line, each ``intent`` translated from the
    pipeline's names to CASA's (``casa_intents``: ``TARGET`` ->
    ``*OBSERVE_TARGET*`` ...; lines for intents the EB never observed are
    skipped, an unknown name fails), ``applymode='calflagstrict'`` as the
    pipeline applies them, with gainfield/spwmap/interp as written and each EB's tables from
    its session's ``caltables.tgz`` (``*pipeline_manifest.xml`` names sessions,
    flag and apply files; without one, the files are found by name); an EB
    the pipeline renormalised (``hifa_renorm`` in the manifest) is not: the
    log and the manifest's calibration record say so;
  * ``params.caltables``: names that must all be present, else the stage fails
    naming the missing one, applied with ``interp``; ``[]``: apply none. Without
    any of the above, every table whose ``table.info`` says ``Type =
    Calibration`` is applied, and the log says this is not the archive's recipe.
- ``image``: split the science targets (intent ``OBSERVE_TARGET*``, corrected
  data) -> ``<eb>_targets.ms``; find the continuum channels (heuristic below)
  and write ``cont.dat``; uvcontsub -> ``<eb>_targets_line.ms``; check the
  product size (below); tclean per target: an aggregate continuum image (every
  spw's continuum channels) and one cube per spw (line data), pbcor; a cube's
  edge channels that the data fill only in part (``full_weight_channels``) are
  left out of its products, and the manifest says which. Imaging
  choices (``image_plan``, ``clean_to_noise``), each written with its reason in
  the log and in the manifest's ``imaging``: ``gridder='mosaic'`` (phase centre
  the central pointing) when a target has several pointings or the archive says
  ``is_mosaic``; ``mtmfs`` with ``nterms=2`` for the continuum when its
  fractional bandwidth exceeds ``mtmfs_fraction`` (10 %); cell a fifth of the
  beam (lambda / longest baseline), field 1.5 primary beams plus the pointings'
  extent; Briggs robust 0.5; a threshold of ``threshold_nsigma`` (3) times the
  noise, measured as the robust rms of a dirty image of the Stokes parameter that
  holds no source (Q from XX and YY, V from RR and LL: ``polarisation_noise``),
  so a bright source's sidelobes do not count as noise (without a second
  correlation: the dirty Stokes I image's robust rms, refined in up to
  ``clean_rounds`` (4) rounds from the residual's); auto-multithresh masking (the pipeline's 12 m / 7 m settings),
  falling back to the primary-beam mask when it finds no region around
  significant emission.
- ``export``: exportfits every product with the pipeline's names into
  ``products/`` and write ``products/manifest.json`` (sha256 of every product,
  recipe, CASA version, parameters, continuum ranges, size check, how the
  calibration was restored, the imaging choices).

Continuum heuristic (``continuum_channels``): per spw, the amplitude of every
unflagged visibility is averaged over all baselines, times and correlations
into one value per channel. Channels further than ``cont_nsigma`` (default 3)
robust sigmas (1.4826 x median absolute deviation, floored at 0.1 % of the
median so noise-free data works) from the median are line channels; the clip
repeats on the remaining channels until nothing changes, then each line range
is widened by ``cont_pad`` (default 1) channels; a window of fewer than 8
channels is all continuum (too few for a robust sigma). If fewer than
``cont_min_fraction`` (default 0.1) of the channels are left, the stage fails
with category ``findcont``. ``params.contranges`` (``{"16": "0~2;5~7"}``, keyed
by the original spw id) overrides it per spw. A line wider than its window
leaves no continuum and the clip keeps the line: so with two or more spws, a
spw whose continuum level is more than ``cont_level_ratio_max`` (1.5) times
the median of the other spws' fails the stage with category ``findcont``.

Product size check (``plan_product_size``), after the pipeline's
``hif_checkproductsize``: a cube is nx * ny * nchan * 4 bytes, the product size
is 4 exported FITS (image, pb, pbcor, mask) per image. While a cube passes
``maxcubesize_gb`` (default 40) or the total passes ``maxproductsize_gb``
(default 500): first bin channels (nbin 2, 4 up to ``max_nbin``, default 4),
then shrink the field (imsize in steps of 0.8 down to ``min_imsize_fraction``,
default 0.5, of the planned size); if still too large, fail with category
``imaging`` and the sizes in the message.

Other params: ``field`` (default: the science fields), ``spw`` (original ids,
default every science spw: WVR, channel-average and SQLD spws are skipped), ``imsize`` (default: 1.5 x the primary-beam FWHM), ``cell``
(default: a fifth of lambda / longest baseline), ``max_imsize`` (2048),
``niter`` (1000 per round), ``threshold`` (unset: from the noise), ``weighting``
("briggs"), ``robust`` (0.5), ``is_mosaic`` (the archive's flag), ``fitorder`` (0), ``interp`` ("linear"), ``slowdown_s`` (0: seconds to
sleep after each step, so the demo can exceed a short walltime; alias
``demo_slowdown_s``), ``alloc_gb`` (0: GB to allocate and hold while imaging,
so the demo can exceed a memory budget; alias ``demo_alloc_gb``).

A known failure writes ``<work_dir>/<stage>.failure.json`` ({category, message}),
prints ``ari-recipe: step <step> failed: category=<category>: <message>`` and
exits 1. The CASA log goes to ``<work_dir>/casa-<stage>.log`` and to the
console, so the stage log the runner keeps has it too.
"""

import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from remote.procutil import sha256_file  # noqa: E402  (remote/ is copied whole to the node)

RECIPE = "casa6"
RECIPE_VERSION = "2"
STATE_FILE = "casa6_state.json"
DEFAULTS = {
    "caltables": None, "interp": "linear", "field": None, "spw": None, "imsize": None, "cell": None,
    "max_imsize": 2048, "niter": 1000, "threshold": None, "threshold_nsigma": 3.0, "clean_rounds": 4,
    "mtmfs_fraction": 0.1, "is_mosaic": None, "weighting": "briggs", "robust": 0.5,
    "fitorder": 0, "cont_nsigma": 3.0, "cont_pad": 1, "cont_min_fraction": 0.1, "contranges": {},
    "maxcubesize_gb": 40.0, "maxproductsize_gb": 500.0, "max_nbin": 4, "min_imsize_fraction": 0.5,
    "slowdown_s": 0.0, "alloc_gb": 0.0, "cont_level_ratio_max": 1.5,
}
GB = 1e9
"""Bytes in one GB: decimal, as the runner, the console and the archive count them."""


class RecipeFailure(Exception):
    """A failure the recipe understands: its category (triage's closed list) and message."""

    def __init__(self, category: str, message: str):
        Exception.__init__(self, message)
        self.category = category
        self.message = message


# ------------------------------------------------------------- pure parts

MIN_CLIP_CHANNELS = 8  # fewer channels than this give no robust sigma for the clip


def continuum_channels(spectrum: list, nsigma: float = 3.0, pad: int = 1) -> list:
    """Indices of the continuum channels of an amplitude spectrum (sigma-clipping).

    A line in channels 3-4 (padded by one channel each side):

    >>> continuum_channels([1.0, 1.02, 0.98, 3.0, 3.2, 1.01, 0.99, 1.0])
    [0, 1, 6, 7]

    Fewer than ``MIN_CLIP_CHANNELS`` (8) channels give no robust sigma (the median absolute
    deviation of four values can be almost zero, and a wide window's spectral slope then
    reads as a line): such a window is all continuum, and a line filling it is caught by
    its level against the other spws' (``line_filled_spws``):

    >>> continuum_channels([1.0, 1.0004, 1.0121, 1.0125])
    [0, 1, 2, 3]
    """
    values = [float(v) for v in spectrum]
    keep = [i for i, v in enumerate(values) if v == v]  # drop NaN (fully flagged) channels
    if len(keep) < MIN_CLIP_CHANNELS:
        return keep
    while True:
        sample = sorted(values[i] for i in keep)
        if not sample:
            return []
        median = _median(sample)
        mad = _median(sorted(abs(v - median) for v in sample))
        sigma = max(1.4826 * mad, 1e-3 * abs(median), 1e-12)
        new = [i for i in keep if abs(values[i] - median) <= nsigma * sigma]
        if new == keep:
            break
        keep = new
    line = [i for i in range(len(values)) if i not in set(keep)]
    padded = set()
    for i in line:
        padded.update(range(max(0, i - pad), min(len(values), i + pad + 1)))
    return [i for i in keep if i not in padded]


def _median(sorted_values: list) -> float:
    n = len(sorted_values)
    mid = n // 2
    return sorted_values[mid] if n % 2 else 0.5 * (sorted_values[mid - 1] + sorted_values[mid])


def line_filled_spws(levels: dict, ratio_max: float = 1.5) -> list:
    """``[(spw, ratio)]`` for spws whose "continuum" is far above the other spws' median.

    A line wider than its window leaves no continuum channel, and the clip then
    takes the line itself for continuum: its level stands out against the
    continuum found in the other spws. Needs at least two spws.

    >>> line_filled_spws({16: 0.30, 18: 0.31, 20: 0.79})
    [(20, 2.6)]
    >>> line_filled_spws({16: 0.30})
    []
    """
    out = []
    for spw, level in sorted(levels.items()):
        others = sorted(v for k, v in levels.items() if k != spw)
        if not others:
            continue
        reference = _median(others)
        if reference > 0 and level / reference > ratio_max:
            out.append((spw, round(level / reference, 1)))
    return out


def channel_ranges(channels: list) -> str:
    """CASA channel ranges for a list of channel indices.

    >>> channel_ranges([0, 1, 2, 5, 6, 9])
    '0~2;5~6;9~9'
    """
    ranges, start, prev = [], None, None
    for ch in sorted(channels):
        if start is None:
            start = prev = ch
        elif ch == prev + 1:
            prev = ch
        else:
            ranges.append("%d~%d" % (start, prev))
            start = prev = ch
    if start is not None:
        ranges.append("%d~%d" % (start, prev))
    return ";".join(ranges)


def parse_ranges(text: str) -> list:
    """Channel indices of CASA channel ranges.

    >>> parse_ranges("0~2;5~6")
    [0, 1, 2, 5, 6]
    """
    out = []
    for part in str(text).split(";"):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("~")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def plan_product_size(imsize: int, nchans: list, nfields: int, maxcubesize_gb: float,
                      maxproductsize_gb: float, max_nbin: int = 4, min_imsize_fraction: float = 0.5) -> dict:
    """The hif_checkproductsize-like plan: ``{ok, nbin, imsize, cube_gb, product_gb, mitigations, reason}``.

    >>> plan_product_size(100, [10], 1, 40, 500)["mitigations"]
    []
    >>> p = plan_product_size(1000, [4000], 1, 10, 500)
    >>> (p["ok"], p["nbin"], p["imsize"])
    (True, 2, 1000)
    """
    def sizes(size, nbin):
        cubes = [size * size * int(math.ceil(n / float(nbin))) * 4 / GB for n in nchans]
        cont = size * size * 4 / GB
        cube = max(cubes) if cubes else 0.0
        product = nfields * 4 * (cont + sum(cubes))
        return cube, product

    def fits(size, nbin):
        cube, product = sizes(size, nbin)
        return cube <= maxcubesize_gb and product <= maxproductsize_gb

    nbin, size, mitigations = 1, int(imsize), []
    while not fits(size, nbin) and nbin * 2 <= max_nbin:
        nbin *= 2
    if nbin > 1:
        mitigations.append("binned channels by %d" % nbin)
    floor = max(16, int(imsize * min_imsize_fraction))
    while not fits(size, nbin) and int(size * 0.8) >= floor:
        size = even(int(size * 0.8))
    if size != int(imsize):
        mitigations.append("reduced imsize from %d to %d" % (imsize, size))
    cube, product = sizes(size, nbin)
    ok = fits(size, nbin)
    reason = None
    if not ok:
        reason = ("product size check failed: largest cube %.1f GB (limit %.1f GB), products %.1f GB "
                  "(limit %.1f GB) even with nbin=%d and imsize %d — raise maxcubesize_gb/maxproductsize_gb "
                  "or image fewer spws" % (cube, maxcubesize_gb, product, maxproductsize_gb, nbin, size))
    return {"ok": ok, "nbin": nbin, "imsize": size, "cube_gb": round(cube, 4), "product_gb": round(product, 4),
            "mitigations": mitigations, "reason": reason}


def even(n: int) -> int:
    """``n`` rounded up to an even number (tclean prefers even image sizes)."""
    return n + (n % 2)


def ous_name(uid: str) -> str:
    """The uid as it appears in file names.

    >>> ous_name("uid://A001/X1296/X1d3")
    'uid___A001_X1296_X1d3'
    """
    return uid.replace("uid://", "uid___").replace("/", "_").replace(":", "_")


def product_base(uid: str, field: str, spws: list, specmode: str) -> str:
    """The pipeline's name stem of an image product (without ``.pbcor.fits`` etc.).

    >>> product_base("uid://A001/X1296/X1d3", "NGC1234", [16, 18, 20, 22], "cont")
    'member.uid___A001_X1296_X1d3.NGC1234_sci.spw16_18_20_22.cont.I'
    >>> product_base("uid://A001/X1296/X1d3", "NGC 1234", [17], "cube")
    'member.uid___A001_X1296_X1d3.NGC_1234_sci.spw17.cube.I'
    """
    safe = "".join(c if c.isalnum() or c in "+-_" else "_" for c in field)
    return "member.%s.%s_sci.spw%s.%s.I" % (ous_name(uid), safe, "_".join(str(s) for s in spws), specmode)


def cont_dat_text(ranges: dict) -> str:
    """``cont.dat`` in the pipeline's format from ``{field: {spw: [(f_lo_GHz, f_hi_GHz), ...]}}``."""
    lines = []
    for field, spws in ranges.items():
        lines.append("Field: %s" % field)
        lines.append("")
        for spw, pairs in spws.items():
            lines.append("SpectralWindow: %s" % spw)
            for lo, hi in pairs:
                lines.append("%.6f~%.6fGHz TOPO" % (lo, hi))
            lines.append("")
    return "\n".join(lines) + "\n"


def table_type(path: str):
    """The ``Type`` of a CASA table directory from its ``table.info`` file, or None.

    Measurement sets say ``Measurement Set``, calibration tables ``Calibration``.
    """
    try:
        with open(os.path.join(path, "table.info")) as fh:
            first = fh.readline()
    except OSError:
        return None
    key, _, value = first.partition("=")
    return value.strip() if key.strip() == "Type" else None


# ------------------------------------------------------------ the context

def load_params(path: str) -> dict:
    """The runner's recipe_params.json with DEFAULTS under ``params``."""
    with open(path) as fh:
        doc = json.load(fh)
    merged = dict(DEFAULTS)
    merged.update(archive_hints(doc.get("work_dir") or ""))
    merged.update(doc.get("params") or {})
    doc["params"] = merged
    return doc


def archive_hints(work_dir: str) -> dict:
    """Processing hints the archive ships in the auxiliary tar (``script/*hints.json``), once restored.

    Parameters given in the job spec win over them.
    """
    hints = {}
    pattern = os.path.join(work_dir, "restore", "**", "script", "*hints.json")
    for path in sorted(glob.glob(pattern, recursive=True)):
        try:
            with open(path) as fh:
                hints.update(json.load(fh))
        except (OSError, ValueError):
            continue
    return hints


def write_json(path: str, doc) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_state(job: dict) -> dict:
    path = os.path.join(job["work_dir"], STATE_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as fh:
        return json.load(fh)


def save_state(job: dict, state: dict) -> None:
    write_json(os.path.join(job["work_dir"], STATE_FILE), state)


def say(text: str) -> None:
    print("ari-recipe: %s" % text, flush=True)


def slow_down(job: dict) -> None:
    """Sleep ``slowdown_s`` after a step (the demo's way to outlive a short walltime)."""
    params = job["params"]
    pause = float(params.get("slowdown_s") or params.get("demo_slowdown_s") or 0)
    if pause > 0:
        say("slowdown: sleeping %.1f s" % pause)
        time.sleep(pause)


class Step(object):
    """``with Step("applycal", "calibration", job):`` — turns an exception into a RecipeFailure."""

    def __init__(self, name: str, category: str, job: dict, pause: bool = True):
        self.name, self.category, self.job, self.pause = name, category, job, pause

    def __enter__(self):
        say("step %s started" % self.name)
        self.started = time.time()
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None:
            say("step %s done in %.1f s" % (self.name, time.time() - self.started))
            if self.pause:
                slow_down(self.job)
            return False
        if isinstance(exc, RecipeFailure):
            return False
        traceback.print_exception(kind, exc, tb)
        raise RecipeFailure(self.category, "%s: %s: %s" % (self.name, type(exc).__name__, exc))


# ---------------------------------------------------------------- restore

def extract_inputs(job: dict) -> str:
    """Untar every input tar into ``restore/`` (once); the directory."""
    out = os.path.join(job["work_dir"], "restore")
    os.makedirs(out, exist_ok=True)
    for path in job["inputs"]:
        marker = os.path.join(out, "." + os.path.basename(path) + ".extracted")
        if os.path.exists(marker):
            continue
        if not os.path.exists(path):
            raise RecipeFailure("importdata", "input %s is missing — run the download stage" % path)
        if tarfile.is_tarfile(path):
            say("untar %s" % os.path.basename(path))
            with tarfile.open(path) as tar:
                safe_extract(tar, out)
            extract_nested(out)
        else:
            target = os.path.join(out, os.path.basename(path))
            if not os.path.exists(target):
                shutil.copy(path, target)
        open(marker, "w").close()
    return out


def safe_extract(tar, out: str) -> None:
    """Extract ``tar`` into ``out``, refusing members that escape it."""
    root = os.path.realpath(out)
    for member in tar.getmembers():
        dest = os.path.realpath(os.path.join(out, member.name))
        if dest != root and not dest.startswith(root + os.sep):
            raise RecipeFailure("importdata", "tar member %s escapes the restore directory" % member.name)
    tar.extractall(out)


def nested_tar_wanted(name: str) -> bool:
    """True for the nested tars the restore needs unpacked: ``*caltables.tgz`` and ``*auxproducts.tgz``.

    The rest stay packed: weblogs, logs, calibration plots and QA tars (nothing the
    restore reads), ``*.flagversions.tgz`` (restored per MS, ``restore_final_flags``)
    and ``*.calibration.tgz`` (the manual calibration's scripts unpack them).

    >>> [nested_tar_wanted(n) for n in ("uid___A001_X1_X2.session_1.caltables.tgz", "uid___A001_X1_X2.auxproducts.tgz",
    ...  "uid___A002_X1_X3.calibration.plots.tgz", "uid___A002_X1_X3.calibration.tgz",
    ...  "member.uid___A001_X1_X2.Imaging.log.tgz")]
    [True, True, False, False, False]
    """
    low = name.lower()
    return low.endswith(("caltables.tgz", "caltables.tar.gz", "auxproducts.tgz", "auxproducts.tar.gz"))


def extract_nested(root: str) -> None:
    """Extract the nested tars the restore needs (``nested_tar_wanted``), once.

    ``*caltables.tgz`` go into a folder of their own (``<name>.d/``), so a session's
    tables stay apart from another session's; ``auxproducts.tgz`` beside the tar.
    """
    for dirpath, _dirs, filenames in os.walk(root):
        for name in filenames:
            if not nested_tar_wanted(name):
                continue
            path = os.path.join(dirpath, name)
            marker = os.path.join(dirpath, "." + name + ".extracted")
            if os.path.exists(marker) or not tarfile.is_tarfile(path):
                continue
            dest = os.path.join(dirpath, name + ".d") if "caltables" in name else dirpath
            os.makedirs(dest, exist_ok=True)
            say("untar nested %s" % name)
            with tarfile.open(path) as tar:
                safe_extract(tar, dest)
            open(marker, "w").close()


# The pipeline's intent names (what it writes in ``*.calapply.txt``) -> CASA scan-intent
# patterns, after the obs_mode -> intent table of the pipeline's ALMA state domain
# (``pipeline/domain/state.py``, ``StateALMA``): every intent it maps an obs mode to.
PIPELINE_INTENTS = {
    "TARGET": ["*OBSERVE_TARGET*", "*CALIBRATE_TARGET*"],
    "REFERENCE": ["*OBSERVE_TARGET#OFF_SOURCE*", "*OBSERVE_TARGET.OFF_SOURCE*", "*OBSERVE_TARGET_OFF_SOURCE*"],
    "PHASE": ["*CALIBRATE_PHASE*"],
    "BANDPASS": ["*CALIBRATE_BANDPASS*"],
    "AMPLITUDE": ["*CALIBRATE_FLUX*", "*CALIBRATE_AMPLI*"],
    "CHECK": ["*OBSERVE_CHECK_SOURCE*", "*CALIBRATE_DELAY*"],
    "POLARIZATION": ["*CALIBRATE_POLARIZATION*"],
    "POLANGLE": ["*CALIBRATE_POL_ANGLE*"],
    "POLLEAKAGE": ["*CALIBRATE_POL_LEAKAGE*"],
    "POINTING": ["*CALIBRATE_POINTING*"],
    "FOCUS": ["*CALIBRATE_FOCUS*"],
    "WVR": ["*CALIBRATE_WVR*"],
    "ATMOSPHERE": ["*CALIBRATE_ATMOSPHERE*"],
    "SIDEBAND": ["*CALIBRATE_SIDEBAND_RATIO*"],
    "DIFFGAINREF": ["*CALIBRATE_DIFFGAIN#REFERENCE*"],
    "DIFFGAINSRC": ["*CALIBRATE_DIFFGAIN#ON_SOURCE*"],
}


def casa_intents(intent: str, present=None) -> str:
    """CASA's scan-intent selection for a calapply line's ``intent`` (pipeline names).

    Names CASA already knows (``*OBSERVE_TARGET*``, ``CALIBRATE_PHASE#ON_SOURCE``) pass
    unchanged; with ``present`` (the MS's scan intents) patterns that match none of them
    are dropped, because CASA's selection fails on a pattern that matches nothing. A name
    that is neither the pipeline's nor CASA's fails: skipping its line would leave data
    uncalibrated without a word.

    >>> casa_intents("TARGET,CHECK")
    '*OBSERVE_TARGET*,*CALIBRATE_TARGET*,*OBSERVE_CHECK_SOURCE*,*CALIBRATE_DELAY*'
    >>> casa_intents("TARGET", ["OBSERVE_TARGET#ON_SOURCE"])
    '*OBSERVE_TARGET*'
    >>> casa_intents("PHOTON")
    Traceback (most recent call last):
    ...
    remote.recipes.casa6.RecipeFailure: calapply intent PHOTON is none of the pipeline's intent names (AMPLITUDE, ATMOSPHERE, BANDPASS, CHECK, DIFFGAINREF, DIFFGAINSRC, FOCUS, PHASE, POINTING, POLANGLE, POLARIZATION, POLLEAKAGE, REFERENCE, SIDEBAND, TARGET, WVR) nor a CASA scan intent
    >>> casa_intents("PHASE,TARGET", ["CALIBRATE_PHASE#ON_SOURCE", "OBSERVE_TARGET#ON_SOURCE"])
    '*CALIBRATE_PHASE*,*OBSERVE_TARGET*'
    >>> casa_intents("CHECK", ["OBSERVE_TARGET#ON_SOURCE"])
    ''
    >>> casa_intents("")
    ''
    """
    import fnmatch

    patterns = []
    for name in [part.strip() for part in str(intent or "").split(",") if part.strip()]:
        if name.upper() not in PIPELINE_INTENTS and not re.search(r"[*#.]|^(CALIBRATE|OBSERVE)_", name):
            raise RecipeFailure("calibration", "calapply intent %s is none of the pipeline's intent names (%s) nor a "
                                               "CASA scan intent" % (name, ", ".join(sorted(PIPELINE_INTENTS))))
        for pattern in PIPELINE_INTENTS.get(name.upper(), [name]):
            if pattern not in patterns:
                patterns.append(pattern)
    if present is not None:
        patterns = [p for p in patterns if any(fnmatch.fnmatchcase(i, p) for i in present)]
    return ",".join(patterns)


def parse_calapply(text: str) -> list:
    """The keyword arguments of every ``applycal(...)`` line of an archive ``*.calapply.txt``.

    >>> parse_calapply("applycal(vis='a.ms', gaintable=['a.ms.g.tbl'], interp=['linear'], calwt=[False])")
    [{'vis': 'a.ms', 'gaintable': ['a.ms.g.tbl'], 'interp': ['linear'], 'calwt': [False]}]
    """
    import ast

    calls = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("applycal("):
            continue
        try:
            node = ast.parse(line, mode="eval").body
            calls.append({kw.arg: ast.literal_eval(kw.value) for kw in node.keywords})
        except (SyntaxError, ValueError) as exc:
            raise RecipeFailure("calibration", "cannot read calapply line %r: %s" % (line[:120], exc))
    return calls


def read_pipeline_manifest(root: str):
    """What a ``*pipeline_manifest.xml`` under ``root`` says of each EB, or None without one.

    ``{"ous": uid, "casa_version": str|None, "asdms": {asdm: {"session", "finalflags",
    "applycmds", "caltables"}}}``; ``caltables`` is the session's tar. The manifest of
    the calibration run wins over the imaging one when both are there.
    """
    import xml.etree.ElementTree as ET

    found = sorted(glob.glob(os.path.join(root, "**", "*pipeline_manifest.xml"), recursive=True))
    if len(found) > 1:
        found = [p for p in found if "cal" in os.path.basename(p)] or found
    if not found:
        return None
    try:
        top = ET.parse(found[0]).getroot()
    except ET.ParseError as exc:
        raise RecipeFailure("calibration", "%s is not valid XML: %s" % (os.path.basename(found[0]), exc))
    ous = top.find("ous") if top.tag != "ous" else top
    if ous is None:
        ous = top
    version = ous.find("casaversion")
    out = {"file": found[0], "ous": ous.get("name"), "casa_version": version.get("name") if version is not None else None,
           "asdms": {}}
    for session in ous.iter("session"):
        tar = session.find("caltables")
        for asdm in session.iter("asdm"):
            flags, cmds = asdm.find("finalflags"), asdm.find("applycmds")
            renorm = asdm.find("hifa_renorm")
            out["asdms"][asdm.get("name")] = {
                "session": session.get("name"), "caltables": tar.get("name") if tar is not None else None,
                "finalflags": flags.get("name") if flags is not None else None,
                "applycmds": cmds.get("name") if cmds is not None else None,
                "renorm": dict(renorm.attrib) if renorm is not None else None}
    return out


def renorm_applied(entry: dict) -> bool:
    """True when the pipeline manifest says the calibration renormalised this EB's amplitudes.

    The pipeline's restore repeats that renormalisation (``hifa_renorm`` parameters in the
    manifest, since pipeline 2021.2) after applycal; CASA has no task for it.

    >>> renorm_applied({"renorm": {"apply": "True", "threshold": "None"}}), renorm_applied({"renorm": None})
    (True, False)
    """
    params = entry.get("renorm") or {}
    return str(params.get("apply", "")).strip().lower() == "true"


def manifest_entry(manifest, vis_name: str) -> dict:
    """What the pipeline manifest says of the EB whose MS is ``vis_name`` (it names EBs by MS or ASDM).

    >>> manifest_entry({"asdms": {"uid___A002_X1_X2.ms": {"session": "session_2"}}}, "uid___A002_X1_X2.ms")
    {'session': 'session_2'}
    >>> manifest_entry(None, "a.ms")
    {}
    """
    asdms = (manifest or {}).get("asdms", {})
    stem = vis_name[:-3] if vis_name.endswith(".ms") else vis_name
    return asdms.get(vis_name) or asdms.get(stem) or {}


def find_named(root: str, name: str):
    """The first file or folder called ``name`` under ``root`` (sorted), or None."""
    found = sorted(glob.glob(os.path.join(root, "**", glob.escape(name)), recursive=True))
    return found[0] if found else None


def calapply_for(vis: str, root: str, manifest=None):
    """The ``<eb>.ms.calapply.txt`` shipped for this EB (the manifest's name first), or None."""
    name = os.path.basename(vis)
    entry = manifest_entry(manifest, name)
    return find_named(root, entry.get("applycmds") or name + ".calapply.txt")


def session_tables(root: str, tar_name, caltables: list) -> list:
    """The tables extracted from the session's ``caltables.tgz`` (``<tar>.d/``), else all of them."""
    if not tar_name:
        return list(caltables)
    folders = glob.glob(os.path.join(root, "**", glob.escape(tar_name) + ".d"), recursive=True)
    if not folders:
        raise RecipeFailure("calibration", "the pipeline manifest names %s, which the auxiliary data lack" % tar_name)
    mine = [t for t in caltables if any(t.startswith(f + os.sep) for f in folders)]
    return mine or list(caltables)


# How the pipeline applies a calapply line (its applycal task's default, which the exported
# line does not carry): data without a valid solution are flagged, not passed on uncalibrated.
PIPELINE_APPLYMODE = "calflagstrict"


def applycal_kwargs(call: dict, vis: str, caltables: list, present: list, source: str):
    """The applycal arguments of one calapply line for ``vis``: tables found by name, intents
    translated, ``applymode`` as the pipeline applies it; None when ``vis`` has no scan of its intents.

    >>> kw = applycal_kwargs({"vis": "/lustre/w/x.ms", "field": "", "intent": "PHASE", "spw": "17",
    ...     "antenna": "0~43", "gaintable": ["/lustre/w/x.ms.g.tbl"], "gainfield": ["nearest"], "spwmap": [[]],
    ...     "interp": ["linear,linearflag"], "calwt": [False]}, "/r/x.ms", ["/r/t.d/x.ms.g.tbl"],
    ...     ["CALIBRATE_PHASE#ON_SOURCE"], "x.ms.calapply.txt")
    >>> kw["vis"], kw["gaintable"], kw["intent"], kw["applymode"], kw["flagbackup"]
    ('/r/x.ms', ['/r/t.d/x.ms.g.tbl'], '*CALIBRATE_PHASE*', 'calflagstrict', False)
    >>> applycal_kwargs({"intent": "CHECK", "gaintable": []}, "/r/x.ms", [], ["OBSERVE_TARGET#ON_SOURCE"], "c") is None
    True
    """
    kwargs = dict(call)
    by_name = {os.path.basename(p): p for p in caltables}
    tables = kwargs.get("gaintable") or []
    tables = [tables] if isinstance(tables, str) else tables
    missing = [t for t in tables if os.path.basename(t) not in by_name]
    if missing:
        raise RecipeFailure("calibration", "caltable %s is missing from the auxiliary data (named in %s)" % (
            ", ".join(os.path.basename(t) for t in missing), source))
    kwargs["gaintable"] = [by_name[os.path.basename(t)] for t in tables]
    kwargs["vis"] = vis
    kwargs["flagbackup"] = False
    kwargs.setdefault("applymode", PIPELINE_APPLYMODE)
    if kwargs.get("intent"):
        kwargs["intent"] = casa_intents(kwargs["intent"], present)
        if not kwargs["intent"]:
            return None
    return kwargs


def apply_calapply(vis: str, calapply: str, caltables: list, job: dict) -> list:
    """Run the archive's applycal calls for ``vis`` (``applycal_kwargs``); the tables used."""
    from casatools import msmetadata
    md = msmetadata()
    md.open(vis)
    try:
        present = list(md.intents())
    finally:
        md.close()
    with open(calapply) as fh:
        calls = parse_calapply(fh.read())
    if not calls:
        raise RecipeFailure("calibration", "%s holds no applycal call" % os.path.basename(calapply))
    used = []
    for call in calls:
        kwargs = applycal_kwargs(call, vis, caltables, present, os.path.basename(calapply))
        if kwargs is None:
            say("calapply line for intent %s: %s has no such scans, skipped" % (call["intent"], os.path.basename(vis)))
            continue
        if call.get("intent"):
            say("intent %s -> %s" % (call["intent"], kwargs["intent"]))
        if "applymode" not in call:
            say("applymode %s (the pipeline's; the calapply line names none)" % kwargs["applymode"])
        with Step("applycal %s (calapply)" % os.path.basename(vis), "calibration", job):
            from casatasks import applycal
            applycal(**kwargs)
        used.extend(t for t in kwargs["gaintable"] if t not in used)
    return used


def restore_final_flags(vis: str, root: str, manifest, job: dict, version: str = "Pipeline_Final"):
    """Restore the pipeline's final flags (``<vis>.flagversions.tgz``) before any calibration.

    The tar holds ``<vis>.flagversions/``; it replaces the one importasdm made and
    ``flagmanager`` restores ``version`` from it. Returns the tar's path, or None
    when the archive ships none for this EB. A tar without ``version`` fails.
    """
    name = os.path.basename(vis)
    entry = manifest_entry(manifest, name)
    tgz = find_named(root, entry.get("finalflags") or name + ".flagversions.tgz")
    if not tgz:
        if entry.get("finalflags"):
            raise RecipeFailure("calibration", "the pipeline manifest names %s, which the auxiliary data lack"
                                % entry["finalflags"])
        return None
    target = vis + ".flagversions"
    if os.path.exists(target):
        shutil.rmtree(target)
    with tarfile.open(tgz) as tar:
        safe_extract(tar, os.path.dirname(vis))
    if not os.path.isdir(target):
        raise RecipeFailure("calibration", "%s holds no %s" % (os.path.basename(tgz), os.path.basename(target)))
    from casatasks import flagmanager
    versions = flagmanager(vis=vis, mode="list") or {}
    names = [v.get("name") for v in versions.values() if isinstance(v, dict)]
    if version not in names:
        raise RecipeFailure("calibration", "%s has no flag version %s (it has: %s)" % (
            os.path.basename(tgz), version, ", ".join(n for n in names if n) or "none"))
    with Step("flagmanager restore %s %s" % (version, name), "calibration", job):
        flagmanager(vis=vis, mode="restore", versionname=version)
    return tgz


def find_tables(root: str) -> dict:
    """``{"asdm": [...], "ms": [...], "caltables": [...]}`` found under ``root``."""
    found = {"asdm": [], "ms": [], "caltables": []}
    for dirpath, dirnames, filenames in os.walk(root):
        if "ASDM.xml" in filenames:
            found["asdm"].append(dirpath)
            dirnames[:] = []
            continue
        kind = table_type(dirpath) if "table.dat" in filenames else None
        if kind == "Measurement Set":
            found["ms"].append(dirpath)
            dirnames[:] = []
        elif kind == "Calibration":
            found["caltables"].append(dirpath)
            dirnames[:] = []
    for key in found:
        found[key].sort()
    return found


def choose_caltables(found: list, wanted) -> list:
    """The caltables to apply: every one of ``wanted`` (names), or all found when None."""
    if wanted is None:
        return list(found)
    by_name = {os.path.basename(p): p for p in found}
    missing = [name for name in wanted if os.path.basename(name) not in by_name]
    if missing:
        raise RecipeFailure("calibration", "caltable %s is missing from the auxiliary data (found: %s)" % (
            ", ".join(missing), ", ".join(sorted(by_name)) or "no calibration tables"))
    return [by_name[os.path.basename(name)] for name in wanted]


def caltables_for(vis: str, caltables: list, all_vis: list) -> list:
    """Tables named after this EB (``<eb>.ms.*`` / ``<eb>.*``), plus those named after no EB."""
    stems = [os.path.basename(v)[:-3] if v.endswith(".ms") else os.path.basename(v) for v in all_vis]
    mine = os.path.basename(vis)[:-3] if vis.endswith(".ms") else os.path.basename(vis)
    chosen = []
    for table in caltables:
        name = os.path.basename(table)
        owner = [s for s in stems if name.startswith(s + ".")]
        if not owner or mine in owner:
            chosen.append(table)
    return chosen


def manual_calibration(root: str):
    """The ``scriptForPI.py`` of a manually calibrated MOUS, or None.

    Manual: the archive ships per-EB ``*.scriptForCalibration.py`` or
    ``*.calibration.tgz`` and no pipeline ``*.calapply.txt``.
    """
    pattern = lambda p: glob.glob(os.path.join(root, "**", p), recursive=True)  # noqa: E731
    scripts = sorted(pattern("*scriptForPI.py"))
    if not scripts or pattern("*.calapply.txt"):
        return None
    if pattern("*scriptForCalibration.py") or pattern("*.calibration.tgz"):
        return scripts[0]
    return None


def needed_casa_version(texts: list):
    """The CASA version a restore script or README names, or None.

    The archive's calibration scripts stop unless run by the CASA that wrote them
    (``sys.exit('ERROR: PLEASE USE THE SAME VERSION OF CASA THAT YOU USED FOR GENERATING THE
    SCRIPT: 4.7.2')``); other files say ``CASA version: 6.7.0.31``.

    >>> needed_casa_version(["# CASA version: 6.7.0.31", "x"])
    '6.7.0.31'
    >>> needed_casa_version(["import re", " sys.exit('ERROR: PLEASE USE THE SAME VERSION OF CASA THAT YOU USED "
    ...                      "FOR GENERATING THE SCRIPT: 4.2.2')"])
    '4.2.2'
    >>> needed_casa_version(["run it with CASA 4.7.2-el7 from the script folder"]) is None
    True
    """
    for pattern in (r"VERSION OF CASA[^:\n]*:\s*(\d+\.\d+(?:\.\d+)?)", r"CASA version[:\s]+(\d+\.\d+\.\d+[\w.\-]*)"):
        for text in texts:
            match = re.search(pattern, text, re.I)
            if match:
                return match.group(1).rstrip(".")
    return None


def same_release(needed: str, running: str) -> bool:
    """True when the running CASA is the release ``needed`` names (as far as it names it, up to major.minor.patch).

    >>> same_release("6.7.0", "6.7.0.31"), same_release("4.7.2", "6.7.0.31"), same_release("4.1", "4.1.0")
    (True, False, True)
    """
    wanted = needed.split("-")[0].split(".")[:3]
    return wanted == running.split("-")[0].split(".")[:len(wanted)]


def calibration_script_texts(script: str) -> list:
    """The texts that may name the CASA version a manual MOUS needs: its ``scriptForPI.py``, the
    ``*scriptForCalibration.py`` beside it (where the archive's version check is) and the README."""
    here = os.path.dirname(script)
    member = os.path.dirname(here)
    paths = [script] + sorted(glob.glob(os.path.join(here, "*scriptForCalibration.py")))
    paths += glob.glob(os.path.join(member, "README*")) + glob.glob(os.path.join(member, "*", "*README*"))
    texts = []
    for path in paths:
        with open(path, errors="replace") as fh:
            texts.append(fh.read())
    return texts


def calibrated_result(mss: list) -> list:
    """The MSs a manual restore ends with: ``calibrated_final.ms`` (imaging prep), else ``calibrated.ms``
    (the flux calibration's concatenation), else every ``*.split.cal`` (one per EB), else whatever is there.

    >>> calibrated_result(["c/a.ms.split.cal", "c/b.ms.split.cal", "c/calibrated.ms"])
    ['c/calibrated.ms']
    >>> calibrated_result(["c/a.ms.split.cal", "c/b.ms.split.cal"])
    ['c/a.ms.split.cal', 'c/b.ms.split.cal']
    """
    for name in ("calibrated_final.ms", "calibrated.ms"):
        found = [p for p in mss if os.path.basename(p) == name]
        if found:
            return found
    return [p for p in mss if p.endswith(".split.cal")] or list(mss)


def run_script_for_pi(script: str, asdms: list, job: dict) -> list:
    """Run a manual MOUS's ``scriptForPI.py`` as the archive's README says; the calibrated MSs.

    From its own folder, the untarred ASDMs in ``../raw/`` (linked there when the tars put
    them elsewhere), with the job's ``casa`` (``casa --nogui -c``) when the node gives one,
    else this CASA's Python with the tasks in the script's globals, as ``casa -c`` has them
    (with ``cu`` and ``casalith.version()``, which the archive's CASA 6 scripts check).
    The CASA version the script or README names must be the one running.
    """
    import casatools
    here = os.path.dirname(script)
    member = os.path.dirname(here)
    needed = needed_casa_version(calibration_script_texts(script))
    running = casatools.version_string()
    casa = job.get("casa")
    if casa and not os.path.basename(casa).startswith("casa"):
        casa = None  # the node's casa6 Python (this one), not a monolithic casa executable
    if needed and not casa and not same_release(needed, running):
        raise RecipeFailure("calibration", "%s needs CASA %s; this node runs CASA %s — list that release's casa "
                            "executable in the node's casa table (casa = { \"%s\" = \".../bin/casa\" })" % (
                                os.path.basename(script), needed, running, needed))
    raw = os.path.join(member, "raw")
    os.makedirs(raw, exist_ok=True)
    if os.path.isdir(os.path.join(member, "calibrated")):
        shutil.rmtree(os.path.join(member, "calibrated"))  # the archive's script stops when it exists
    for asdm in asdms:
        link = os.path.join(raw, os.path.basename(asdm.rstrip("/")))
        if not os.path.exists(link):
            os.symlink(os.path.abspath(asdm), link)
    if casa:
        argv = [casa, "--nogui", "--nologger", "--agg", "-c", os.path.basename(script)]
    else:
        runner = ("import sys, runpy, types, casatasks, casatools, casatools.utils\n"
                  "g = {n: getattr(casatasks, n) for n in casatasks.__all__}\n"
                  "g.update({n: getattr(casatools, n) for n in dir(casatools) if not n.startswith('_')})\n"
                  "g['cu'] = casatools.utils.utils()\n"  # what monolithic CASA 6 has, for the scripts' version check
                  "g['casalith'] = types.SimpleNamespace(version=g['cu'].version)\n"
                  "runpy.run_path(sys.argv[1], init_globals=g, run_name='__main__')\n")
        argv = [sys.executable, "-c", runner, os.path.basename(script)]
    say("manual calibration: running %s with CASA %s (needs %s) in %s" % (
        os.path.basename(script), casa or running, needed or "any", os.path.relpath(here, job["work_dir"])))
    with Step("scriptForPI", "calibration", job):
        sys.stdout.flush()
        code = subprocess.call(argv, cwd=here)
        if code != 0:
            raise RecipeFailure("calibration", "%s exited %d — see the restore log" % (os.path.basename(script), code))
    chosen = calibrated_result(find_tables(os.path.join(member, "calibrated"))["ms"])
    if not chosen:
        raise RecipeFailure("calibration", "%s made no calibrated measurement set in %s" % (
            os.path.basename(script), os.path.join(member, "calibrated")))
    return chosen, needed


def import_asdm(asdm: str, job: dict) -> str:
    """``importasdm`` as the pipeline's restore calls it; the MS path (in the work dir)."""
    name = os.path.basename(asdm.rstrip("/"))
    for suffix in (".asdm.sdm", ".sdm", ".asdm"):
        if name.endswith(suffix):
            name = name[:-len(suffix)]
    ms = os.path.join(job["work_dir"], name + ".ms")
    if not os.path.exists(ms):
        with Step("importasdm %s" % name, "importdata", job):
            from casatasks import importasdm
            importasdm(asdm=asdm, vis=ms, **IMPORTASDM_ARGS)
            if not os.path.isdir(ms):
                raise RecipeFailure("importdata", "importasdm wrote no measurement set for %s" % name)
    return ms


# What the pipeline's restore gives importasdm (hifa_restoredata's defaults; the ALMA
# tables it copies as they are, BDF flags on, cross + auto correlations).
IMPORTASDM_ARGS = {
    "ocorr_mode": "ca", "bdfflags": True, "lazy": False, "process_caldevice": False, "savecmds": False,
    "with_pointing_correction": False,
    "asis": "SBSummary ExecBlock Antenna Annotation Station Receiver Source CalAtmosphere CalWVR CalPointing",
}


def stage_restore(job: dict) -> None:
    """Untar; then the MOUS's own calibration: manual (scriptForPI.py) or pipeline (calapply)."""
    params = job["params"]
    root = extract_inputs(job)
    found = find_tables(root)
    if not found["asdm"] and not found["ms"]:
        raise RecipeFailure("importdata", "no ASDM or measurement set found in the inputs (%s)" % (
            ", ".join(os.path.basename(p) for p in job["inputs"]) or "no inputs"))
    state = load_state(job)
    script = manual_calibration(root) if params["caltables"] is None else None
    if script:
        vis, needed = run_script_for_pi(script, found["asdm"], job)
        say("calibration: manual (%s): %s" % (os.path.basename(script), ", ".join(os.path.basename(v) for v in vis)))
        state.update(vis=vis, caltables=[], calibration={"kind": "manual", "script": os.path.relpath(script, root),
                                                          "casa_version_needed": needed})
        save_state(job, state)
        return
    vis = list(found["ms"])
    for asdm in found["asdm"]:
        ms = import_asdm(asdm, job)
        if ms not in vis:  # the same ASDM shipped in two tars (raw tar and the MOUS tar)
            vis.append(ms)
    manifest = read_pipeline_manifest(root) if params["caltables"] is None else None
    caltables = choose_caltables(found["caltables"], params["caltables"])
    if params["caltables"] is None and not caltables:
        raise RecipeFailure("calibration", "no calibration tables in the inputs — pass caltables: [] to image the raw data")
    record = {"kind": "pipeline" if manifest else "tables", "eb": {}}
    for ms in vis:
        name = os.path.basename(ms)
        entry = manifest_entry(manifest, name)
        flags = restore_final_flags(ms, root, manifest, job) if params["caltables"] is None else None
        if flags:
            say("flags of %s restored from %s (Pipeline_Final)" % (name, os.path.basename(flags)))
        calapply = calapply_for(ms, root, manifest) if params["caltables"] is None else None
        if calapply:
            tables = session_tables(root, entry.get("caltables"), found["caltables"])
            used = apply_calapply(ms, calapply, tables, job)
            say("applied %s to %s as %s says%s" % (
                ", ".join(os.path.basename(t) for t in used), name, os.path.basename(calapply),
                " (%s, %s)" % (entry["session"], entry.get("caltables")) if entry.get("session") else ""))
            record["eb"][name] = {"session": entry.get("session"), "calapply": os.path.basename(calapply),
                                  "flags": os.path.basename(flags) if flags else None,
                                  "caltables": [os.path.basename(t) for t in used]}
            if renorm_applied(entry):
                note = ("not applied: the pipeline renormalised these amplitudes (hifa_renorm %s), which casa6 cannot "
                        "repeat — image this MOUS on an alma-pipeline node" % ", ".join(
                            "%s=%s" % kv for kv in sorted(entry["renorm"].items())))
                say("WARNING %s: renormalisation %s" % (name, note))
                record["eb"][name]["renorm"] = note
            continue
        tables = caltables_for(ms, caltables, vis)
        if not tables:
            say("no caltables for %s: imaging its DATA column" % name)
            continue
        if params["caltables"] is None:
            say("no calapply.txt for %s: applying every table it names with interp %s (not the archive's "
                "calibration recipe)" % (name, params["interp"]))
        with Step("applycal %s" % name, "calibration", job):
            from casatasks import applycal
            applycal(vis=ms, gaintable=tables, interp=[params["interp"]] * len(tables), calwt=[False] * len(tables),
                     flagbackup=False)
            if not has_column(ms, "CORRECTED_DATA"):
                raise RecipeFailure("calibration", "applycal left no CORRECTED_DATA in %s" % ms)
        say("applied %s to %s" % (", ".join(os.path.basename(t) for t in tables), name))
        record["eb"][name] = {"caltables": [os.path.basename(t) for t in tables],
                              "flags": os.path.basename(flags) if flags else None}
    state.update(vis=vis, caltables=caltables, calibration=record)
    save_state(job, state)


def has_column(ms: str, column: str) -> bool:
    from casatools import table
    tb = table()
    tb.open(ms)
    try:
        return column in tb.colnames()
    finally:
        tb.close()


# ------------------------------------------------------------------ image

def science_selection(vis: str, params: dict) -> dict:
    """Fields, original spw ids and intents of the science targets of ``vis``."""
    from casatools import msmetadata
    md = msmetadata()
    md.open(vis)
    try:
        intents = md.intents()
        target_intents = [i for i in intents if i.startswith("OBSERVE_TARGET")]
        if params["field"]:
            fields = [f.strip() for f in str(params["field"]).split(",") if f.strip()]
        elif target_intents:
            fields = sorted(set(md.fieldsforintent("OBSERVE_TARGET*", asnames=True)))
        else:
            fields = sorted(set(md.fieldnames()))
        if target_intents:
            spws = sorted(int(s) for s in md.spwsforintent("OBSERVE_TARGET*"))
        else:
            spws = list(range(md.nspw()))
        spws = science_spws(spws, [md.namesforspws(s)[0] for s in spws], [md.nchan(s) for s in spws])
        if params["spw"] is not None:
            wanted = [int(s) for s in str(params["spw"]).split(",")]
            spws = [s for s in spws if s in wanted]
        freqs = {s: [float(f) for f in md.chanfreqs(s)] for s in spws}
        return {"fields": fields, "spws": spws, "intent": "OBSERVE_TARGET*" if target_intents else "", "freqs": freqs}
    finally:
        md.close()


def science_spws(spws: list, names: list, nchans: list) -> list:
    """The spws worth imaging: not WVR, channel-average or square-law detector spws.

    ALMA names them ``WVR#NOMINAL``, ``...#CH_AVG``, ``...#SQLD``; without names a
    1-channel spw next to multi-channel ones is taken as a channel average.

    >>> science_spws([0, 1, 2, 3], ["WVR#NOMINAL", "X#FULL_RES", "X#CH_AVG", ""], [4, 128, 1, 64])
    [1, 3]
    """
    widest = max(nchans) if nchans else 0
    keep = []
    for spw, name, nchan in zip(spws, names, nchans):
        label = (name or "").upper()
        if "WVR" in label or "CH_AVG" in label or "SQLD" in label:
            continue
        if nchan == 1 and widest > 1:
            continue
        keep.append(spw)
    return keep


def amplitude_spectrum(vis: str, spw: int, chunk: int = 20000) -> list:
    """Mean unflagged visibility amplitude per channel of ``spw`` (a split MS: DATA column)."""
    import numpy as np
    from casatools import ms as mstool
    tool = mstool()
    tool.open(vis)
    try:
        tool.selectinit(datadescid=spw)
        tool.iterinit(maxrows=chunk)
        tool.iterorigin()
        total = count = None
        while True:
            rec = tool.getdata(["amplitude", "flag"])
            amp = np.where(rec["flag"], 0.0, rec["amplitude"])
            n = (~rec["flag"]).sum(axis=(0, 2))
            part = amp.sum(axis=(0, 2))
            total = part if total is None else total + part
            count = n if count is None else count + n
            if not tool.iternext():
                break
    finally:
        tool.close()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    return [float(v) for v in mean]


def pb_fwhm_arcsec(freq_hz: float, dish_m: float) -> float:
    """The primary beam FWHM: 1.13 lambda / D, in arcsec."""
    return 1.13 * (299792458.0 / freq_hz) / dish_m * 206264.806


def efficient_size(n: int) -> int:
    """The smallest even size >= ``n`` whose prime factors are 2, 3, 5 or 7 (fast FFTs).

    >>> efficient_size(67), efficient_size(49), efficient_size(1)
    (70, 50, 2)
    """
    size = max(2, n + n % 2)
    while True:
        rest = size
        for p in (2, 3, 5, 7):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return size
        size += 2


def fractional_bandwidth(freqs: list) -> float:
    """(highest - lowest) / centre frequency of the channels ``freqs`` (Hz).

    >>> round(fractional_bandwidth([100e9, 101e9, 115e9]), 3)
    0.14
    """
    lo, hi = min(freqs), max(freqs)
    return (hi - lo) / (0.5 * (hi + lo))


def image_plan(bmax_m: float, dish_m: float, freq_hz: float, extent_arcsec: float, frac_bw: float,
               params: dict) -> dict:
    """Cell, image size, deconvolver and their reasons, from the beam, the primary beam and the band.

    The beam is lambda / longest baseline and the cell a fifth of it (``cell`` overrides);
    the field covers 1.5 primary-beam FWHMs plus the pointings' extent (a mosaic), rounded
    to a fast FFT size (``imsize`` overrides, ``max_imsize`` caps); continuum wider than
    ``mtmfs_fraction`` (10 %) of its frequency is imaged with ``mtmfs`` and two Taylor terms.

    >>> p = image_plan(100.0, 12.0, 230e9, 0.0, 0.05, {"cell": None, "imsize": None, "max_imsize": 2048,
    ...                "mtmfs_fraction": 0.1})
    >>> (p["cell_arcsec"], p["imsize"], p["deconvolver"], p["nterms"])
    (0.54, 72, 'hogbom', 1)
    >>> image_plan(100.0, 12.0, 230e9, 20.0, 0.15, {"cell": 0.5, "imsize": None, "max_imsize": 2048,
    ...            "mtmfs_fraction": 0.1})["deconvolver"]
    'mtmfs'
    """
    beam = (299792458.0 / freq_hz) / max(bmax_m, 1.0) * 206264.806
    pb = pb_fwhm_arcsec(freq_hz, dish_m)
    why = {}
    if params.get("cell"):
        cell = float(str(params["cell"]).replace("arcsec", ""))
        why["cell"] = "given"
    else:
        cell = float("%.2g" % (beam / 5.0))
        why["cell"] = "beam %.3g arcsec (lambda / %.0f m) / 5" % (beam, bmax_m)
    if params.get("imsize"):
        imsize = int(params["imsize"])
        why["imsize"] = "given"
    else:
        field = 1.5 * pb + 2.0 * extent_arcsec
        imsize = efficient_size(int(math.ceil(field / cell)))
        why["imsize"] = "1.5 x primary beam %.1f arcsec%s / cell" % (
            pb, (" + 2 x pointing extent %.1f arcsec" % extent_arcsec) if extent_arcsec else "")
    if imsize > int(params["max_imsize"]):
        imsize = int(params["max_imsize"])
        why["imsize"] += ", capped at max_imsize"
    wide = frac_bw > float(params.get("mtmfs_fraction", 0.1))
    why["deconvolver"] = "fractional bandwidth %.1f %% %s %.0f %%" % (
        100 * frac_bw, ">" if wide else "<=", 100 * float(params.get("mtmfs_fraction", 0.1)))
    return {"cell_arcsec": cell, "imsize": imsize, "beam_arcsec": round(beam, 4), "pb_arcsec": round(pb, 2),
            "deconvolver": "mtmfs" if wide else "hogbom", "nterms": 2 if wide else 1,
            "fractional_bandwidth": round(frac_bw, 4), "why": why}


def target_layout(vis: str, names: list) -> dict:
    """Per target name: its field ids, whether it is a mosaic, the central field, the extent (arcsec)."""
    from casatools import msmetadata
    md = msmetadata()
    md.open(vis)
    try:
        out = {}
        for name in names:
            ids = sorted(int(i) for i in md.fieldsforname(name))
            dirs = []
            for i in ids:
                pc = md.phasecenter(i)
                dirs.append((float(pc["m0"]["value"]), float(pc["m1"]["value"])))
            ra0 = sum(d[0] for d in dirs) / len(dirs)
            dec0 = sum(d[1] for d in dirs) / len(dirs)
            seps = [math.degrees(math.hypot((d[0] - ra0) * math.cos(dec0), d[1] - dec0)) * 3600 for d in dirs]
            centre = ids[seps.index(min(seps))]
            out[name] = {"ids": ids, "mosaic": len(ids) > 1, "phasecenter": centre,
                         "extent_arcsec": round(max(seps), 2)}
        return out
    finally:
        md.close()


def longest_baseline_and_dish(vis: str):
    from casatools import msmetadata, table
    tb = table()
    tb.open(vis)
    try:
        uvw = tb.getcol("UVW")
    finally:
        tb.close()
    bmax = max(float(((uvw[0] ** 2 + uvw[1] ** 2) ** 0.5).max()), 1.0)
    md = msmetadata()
    md.open(vis)
    try:
        dish = float(md.antennadiameter(0)["value"])
    finally:
        md.close()
    return bmax, dish


def image_pixels(image: str):
    """The finite pixels of a CASA image as a flat numpy array (empty when the image is missing)."""
    import numpy as np
    from casatools import image as imagetool
    if not os.path.isdir(image):
        return np.zeros(0)
    ia = imagetool()
    ia.open(image)
    try:
        pix = ia.getchunk()
    finally:
        ia.close()
    return pix[np.isfinite(pix)]


def robust_rms(image: str) -> float:
    """1.4826 x the median absolute deviation of an image's finite pixels (sources barely move it)."""
    import numpy as np
    pix = image_pixels(image)
    pix = pix[pix != 0]
    if pix.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(pix - np.median(pix))))


def channel_weights(sumwt_image: str) -> list:
    """The sum of weights of each channel of a cube (its ``.sumwt`` image, Stokes I)."""
    from casatools import image as imagetool
    ia = imagetool()
    ia.open(sumwt_image)
    try:
        pix = ia.getchunk()
    finally:
        ia.close()
    return [float(v) for v in pix.reshape(-1, pix.shape[-1])[0]]


def full_weight_channels(sumwt: list, fraction: float = 0.5) -> tuple:
    """First and last channel of a cube, leaving out edge channels the data cover only in part.

    tclean's LSRK channel grid is the window's own shifted by the Doppler correction, so an
    edge channel can get only part of the data (its noise several times the others', or
    no PSF at all): such a channel is noise, not a measurement, and a QA2 comparison that
    meets it compares noise levels that say nothing about the image.
    Edge channels whose sum of weights is below ``fraction`` of the median (noise over 1.4
    times the others') are left out.

    >>> full_weight_channels([0.2, 1.0, 1.0, 0.98, 0.4])
    (1, 3)
    >>> full_weight_channels([1.0, 0.1, 1.0]), full_weight_channels([0.0, 0.0])
    ((0, 2), (0, 1))
    """
    ordered = sorted(sumwt)
    median = ordered[len(ordered) // 2] if ordered else 0.0
    good = [i for i, w in enumerate(sumwt) if median > 0 and w >= fraction * median]
    return (good[0], good[-1]) if good else (0, len(sumwt) - 1)


# auto-multithresh settings the ALMA pipeline uses for 12 m and 7 m arrays
AUTOMASK = {
    12.0: dict(sidelobethreshold=2.0, noisethreshold=4.25, lownoisethreshold=1.5, minbeamfrac=0.3,
               negativethreshold=0.0),
    7.0: dict(sidelobethreshold=1.25, noisethreshold=5.0, lownoisethreshold=2.0, minbeamfrac=0.1,
              negativethreshold=0.0),
}


# casacore's Stokes codes of the correlations an MS can hold
CORR_CODES = {5: "RR", 6: "RL", 7: "LR", 8: "LL", 9: "XX", 10: "XY", 11: "YX", 12: "YY"}


def noise_stokes(corrs: list):
    """The Stokes parameter whose image holds only noise for an unpolarised sky, or None.

    Circular feeds give V from RR and LL; linear feeds V from XY and YX when they are
    there, else Q from XX and YY (Q is zero for an unpolarised source, and its noise,
    (XX - YY) / 2, is the noise of I = (XX + YY) / 2 with the same weights); one
    correlation gives none.

    >>> noise_stokes(["XX", "YY"]), noise_stokes(["RR", "LL"]), noise_stokes(["XX", "XY", "YX", "YY"])
    ('Q', 'V', 'V')
    >>> noise_stokes(["XX"]) is None
    True
    """
    have = set(corrs)
    if {"RR", "LL"} <= have:
        return "V"
    if {"XY", "YX"} <= have:
        return "V"
    if {"XX", "YY"} <= have:
        return "Q"
    return None


def correlations(vis: str) -> list:
    """The correlation names (``XX``, ``YY``, ...) of the first polarization setup of ``vis``."""
    from casatools import table
    tb = table()
    tb.open(os.path.join(vis, "POLARIZATION"))
    try:
        codes = tb.getcell("CORR_TYPE", 0)
    finally:
        tb.close()
    return [CORR_CODES.get(int(c), str(c)) for c in codes]


def polarisation_noise(tclean_args: dict, imagename: str, job: dict, label: str):
    """The thermal noise of an image, measured on its noise-only Stokes image: (Jy/beam, why) or None.

    A dirty Stokes Q (or V) image made with the same data, weighting, gridder and
    channels as the Stokes I image has the I image's noise but none of its sources,
    so none of their sidelobes: its robust rms is the noise the clean can reach, where
    the dirty I image's rms is the sidelobes' level for a bright source seen by few
    antennas (80 times the noise for a 0.5 Jy source and ten 12 m antennas). The ALMA
    pipeline takes the same number from a sensitivity calculation on the visibility
    weights, which only a pipeline calibration makes meaningful; this measures it.
    """
    from casatasks import tclean
    vis = tclean_args["vis"][0] if isinstance(tclean_args["vis"], list) else tclean_args["vis"]
    corrs = correlations(vis)
    stokes = noise_stokes(corrs)
    if stokes is None:
        return None
    args = dict(tclean_args, stokes=stokes, usemask="user", mask="", pbcor=False)
    for key in list(AUTOMASK[12.0]) + ["nterms", "reffreq"]:
        args.pop(key, None)
    if args.get("deconvolver") == "mtmfs":
        args["deconvolver"] = "hogbom"
    name = imagename + "_noise" + stokes
    clear_image(name)
    with Step("tclean %s dirty Stokes %s" % (label, stokes), "imaging", job, pause=False):
        tclean(imagename=name, niter=0, **args)
    rms = robust_rms(name + ".residual")
    clear_image(name)
    if rms <= 0:
        return None
    return rms, "robust rms of the dirty Stokes %s image (%s - %s)" % (stokes, corrs[0], corrs[-1])


def clean_to_noise(tclean_args: dict, imagename: str, params: dict, job: dict, label: str) -> dict:
    """tclean with a threshold from the measured noise: dirty images first, then rounds.

    The noise is the robust rms of a dirty image of the Stokes parameter that holds
    only noise (``polarisation_noise``: Q from XX and YY); the clean goes to
    ``threshold_nsigma`` (3) times it in one round. Without two correlations the
    dirty Stokes I image's robust rms is the first estimate, refined in up to
    ``clean_rounds`` rounds from the residual's (a bright source's sidelobes lift the
    dirty image's rms far above the noise: each round cleans deeper while the
    residual's rms keeps falling). Each round cleans within the auto-multithresh mask;
    when it finds no region while the residual still holds emission above the
    threshold (sparse uv coverage: the PSF's sidelobes lift its sidelobe threshold
    above the peak), or stops with emission left above 5 sigma of the residual outside
    its mask (extended sources), the clean falls back to the primary beam mask
    (``pbmask`` 0.2) and says so. A ``threshold`` parameter skips the measuring. The
    result says where the threshold came from, the noise of each estimate, each
    round's residual rms and tclean's stopping reason.
    """
    from casatasks import tclean
    args = dict(tclean_args)
    nsigma = float(params["threshold_nsigma"])
    ext = ".tt0" if args.get("deconvolver") == "mtmfs" else ""
    with Step("tclean %s dirty" % label, "imaging", job, pause=False):
        tclean(imagename=imagename, niter=0, **args)
        require_image(imagename, ext, pbcor=False)
    rounds, mask = [], "auto-multithresh"
    peak = image_peak(imagename + ".residual" + ext)  # the dirty image's peak
    dirty_rms = noise = robust_rms(imagename + ".residual" + ext)
    out = {"dirty_rms_mjy": round(dirty_rms * 1e3, 5)}
    measured = None if params.get("threshold") else polarisation_noise(args, imagename, job, label)
    if params.get("threshold"):
        threshold, noise = str(params["threshold"]), None
        why = "given"
    elif measured:
        noise = measured[0]
        threshold = "%.4gmJy" % (nsigma * noise * 1e3)
        why = "%.3g x %s %.4g mJy/beam (the dirty Stokes I image's rms %.4g mJy/beam is %.3g x that)" % (
            nsigma, measured[1], noise * 1e3, dirty_rms * 1e3, dirty_rms / noise)
        out["noise_mjy"] = round(noise * 1e3, 5)
    else:
        threshold = "%.4gmJy" % (nsigma * noise * 1e3)
        why = "%.3g x dirty-image rms %.4g mJy/beam (no second correlation for a noise-only image)" % (
            nsigma, noise * 1e3)
    say("%s: threshold %s from %s" % (label, threshold, why))
    n = 0
    while n < int(params["clean_rounds"]):
        with Step("tclean %s to %s" % (label, threshold), "imaging", job, pause=False):
            result = tclean(imagename=imagename, niter=int(params["niter"]), threshold=threshold, calcpsf=False,
                            calcres=False, restart=True, pbcor=True, **args)
            require_image(imagename, ext)
        # the noise: measured, else the dirty image's rms, or less when a given threshold says so
        # (an extended source lifts the dirty image's rms)
        sigma = measured[0] if measured else min(dirty_rms, to_jy(threshold) / nsigma)
        left, left_rms = image_peak(imagename + ".residual" + ext), robust_rms(imagename + ".residual" + ext)
        empty = image_peak(imagename + ".mask") == 0 and peak > max(to_jy(threshold), 5.0 * sigma)
        if measured:  # a residual of noise alone has the noise's rms: more is emission the mask left out
            stuck = left > to_jy(threshold) and left_rms > 1.25 * sigma
        else:
            stuck = left > max(to_jy(threshold), 5.0 * min(left_rms, sigma)) and left_rms > to_jy(threshold)
        if mask == "auto-multithresh" and (empty or stuck):
            say("%s: auto-multithresh %s though the residual peaks at %.4g Jy/beam: cleaning within the primary "
                "beam (pbmask 0.2)" % (label, "found no region above its thresholds" if empty else
                                       "stopped with emission left outside its mask", max(peak if empty else left, 0)))
            mask = "pb (auto-multithresh %s)" % ("found no region" if empty else "left emission unmasked")
            for key in list(AUTOMASK[12.0]):
                args.pop(key, None)
            args.update(usemask="pb", pbmask=0.2)
            shutil.rmtree(imagename + ".mask", ignore_errors=True)
            continue
        n += 1
        residual = left_rms
        stop = stop_reason(result)
        rounds.append({"threshold": threshold, "residual_rms_mjy": round(residual * 1e3, 5), "stopcode": stop})
        say("%s: cleaned to %s, residual rms %.4g mJy/beam, tclean stopped: %s" % (
            label, threshold, residual * 1e3, stop))
        if measured or noise is None or residual > noise / 1.5:
            break
        noise = residual
        threshold = "%.4gmJy" % (nsigma * noise * 1e3)
    slow_down(job)  # one step for the demo's slowdown, however many rounds it took
    return dict(out, threshold=threshold, threshold_from=why, rounds=rounds, mask=mask)


# tclean's stopcode (its summary's ``stopcode``) in words, as CASA 6 names them
STOPCODES = {1: "iteration limit", 2: "threshold", 3: "force stop", 4: "no change in peak residual",
             5: "peak residual grew 3x in a major cycle", 6: "peak residual grew 3x from its minimum",
             7: "zero mask", 8: "n-sigma", 9: "nmajor"}


def stop_reason(result) -> str:
    """tclean's stopping reason from its return value (a summary dict in CASA 6), or "unknown".

    >>> stop_reason({"stopcode": 2}), stop_reason({"stopcode": 7, "stopDescription": "zero mask"}), stop_reason(None)
    ('threshold', 'zero mask', 'unknown')
    """
    if isinstance(result, dict) and result.get("stopDescription"):
        return str(result["stopDescription"])
    if isinstance(result, dict) and "stopcode" in result:
        return STOPCODES.get(int(result["stopcode"]), "stopcode %s" % result["stopcode"])
    return "unknown"


def to_jy(quantity: str) -> float:
    """Jy of a CASA flux quantity.

    >>> to_jy("2.5mJy"), to_jy("0.1Jy")
    (0.0025, 0.1)
    """
    text = str(quantity).strip()
    scale = {"uJy": 1e-6, "mJy": 1e-3, "Jy": 1.0}
    for unit in ("uJy", "mJy", "Jy"):
        if text.endswith(unit):
            return float(text[:-len(unit)]) * scale[unit]
    return float(text)


def image_peak(image: str) -> float:
    """The largest absolute pixel of an image (0 when it is missing)."""
    import numpy as np
    pix = image_pixels(image)
    return float(np.abs(pix).max()) if pix.size else 0.0


def stage_image(job: dict) -> None:
    """split -> findcont -> uvcontsub -> checkproductsize -> tclean (cont + cubes) per target."""
    from casatasks import split, uvcontsub
    params = job["params"]
    state = load_state(job)
    if not state.get("vis"):
        raise RecipeFailure("imaging", "nothing restored: run the restore stage first")
    sel = science_selection(state["vis"][0], params)
    if not sel["fields"] or not sel["spws"]:
        raise RecipeFailure("makeimlist", "no science target fields or spws in %s" % state["vis"][0])
    say("science fields %s, spws %s" % (",".join(sel["fields"]), ",".join(str(s) for s in sel["spws"])))
    targets, lines = [], []
    for vis in state["vis"]:
        base = vis[:-3] if vis.endswith(".ms") else vis
        out = base + "_targets.ms"
        if os.path.exists(out):
            shutil.rmtree(out)
        with Step("split %s" % os.path.basename(vis), "imaging", job):
            split(vis=vis, outputvis=out, field=",".join(sel["fields"]), spw=",".join(str(s) for s in sel["spws"]),
                  intent=sel["intent"], datacolumn="corrected" if has_column(vis, "CORRECTED_DATA") else "data")
            if not os.path.isdir(out):
                raise RecipeFailure("imaging", "split wrote no %s" % out)
        targets.append(out)
    # spw i of the split MS is sel["spws"][i] of the original
    contranges, cont_freqs, levels = {}, {}, {}
    with Step("findcont", "findcont", job):
        for i, spw in enumerate(sel["spws"]):
            given = (params["contranges"] or {}).get(str(spw))
            if given:
                chans = parse_ranges(given)
                how = "given"
            else:
                spectrum = amplitude_spectrum(targets[0], i)
                chans = continuum_channels(spectrum, params["cont_nsigma"], int(params["cont_pad"]))
                how = "heuristic"
                nchan = len(spectrum)
                if len(chans) < max(1, params["cont_min_fraction"] * nchan):
                    raise RecipeFailure("findcont", "spw %d: only %d of %d channels look like continuum — "
                                        "pass contranges for it" % (spw, len(chans), nchan))
            if how == "heuristic":
                levels[spw] = sum(spectrum[c] for c in chans) / len(chans)
            contranges[str(spw)] = channel_ranges(chans)
            freqs = sel["freqs"][spw]
            cont_freqs[str(spw)] = [(freqs[int(p.split("~")[0])] / 1e9, freqs[int(p.split("~")[1])] / 1e9)
                                    for p in contranges[str(spw)].split(";")]
            say("spw %d continuum channels (%s): %s" % (spw, how, contranges[str(spw)]))
        odd = line_filled_spws(levels, float(params["cont_level_ratio_max"]))
        if odd:
            raise RecipeFailure("findcont", "; ".join(
                "spw %d: continuum level %.3g Jy is %.1fx that of the other spws — a line likely fills the "
                "window; pass contranges for it" % (spw, levels[spw], ratio) for spw, ratio in odd))
        with open(os.path.join(job["work_dir"], "cont.dat"), "w") as fh:
            fh.write(cont_dat_text({f: cont_freqs for f in sel["fields"]}))
    fitspec = ",".join("%d:%s" % (i, contranges[str(spw)]) for i, spw in enumerate(sel["spws"]))
    for vis in targets:
        out = vis[:-3] + "_line.ms"
        if os.path.exists(out):
            shutil.rmtree(out)
        with Step("uvcontsub %s" % os.path.basename(vis), "uvcontfit", job):
            uvcontsub(vis=vis, outputvis=out, fitspec=fitspec, fitorder=int(params["fitorder"]))
            if not os.path.isdir(out):
                raise RecipeFailure("uvcontfit", "uvcontsub wrote no %s" % out)
        lines.append(out)
    cont_chan_freqs = [sel["freqs"][s][c] for s in sel["spws"] for c in parse_ranges(contranges[str(s)])]
    ref_freq = sum(sel["freqs"][s][len(sel["freqs"][s]) // 2] for s in sel["spws"]) / len(sel["spws"])
    layout = target_layout(targets[0], sel["fields"])
    mosaic_hint = str(params.get("is_mosaic") or "").upper() in ("T", "TRUE", "1")
    bmax, dish = longest_baseline_and_dish(targets[0])
    extent = max(v["extent_arcsec"] for v in layout.values())
    plan_img = image_plan(bmax, dish, ref_freq, extent, fractional_bandwidth(cont_chan_freqs), params)
    cell, imsize = plan_img["cell_arcsec"], plan_img["imsize"]
    nchans = [len(sel["freqs"][s]) for s in sel["spws"]]
    with Step("checkproductsize", "imaging", job):
        plan = plan_product_size(imsize, nchans, len(sel["fields"]), float(params["maxcubesize_gb"]),
                                 float(params["maxproductsize_gb"]), int(params["max_nbin"]),
                                 float(params["min_imsize_fraction"]))
        say("product size: largest cube %.4f GB, products %.4f GB, nbin %d, imsize %d%s" % (
            plan["cube_gb"], plan["product_gb"], plan["nbin"], plan["imsize"],
            (" (" + "; ".join(plan["mitigations"]) + ")") if plan["mitigations"] else ""))
        if not plan["ok"]:
            raise RecipeFailure("imaging", plan["reason"])
    ballast = hold_memory(float(params.get("alloc_gb") or params.get("demo_alloc_gb") or 0))
    imdir = os.path.join(job["work_dir"], "images")
    os.makedirs(imdir, exist_ok=True)
    automask = AUTOMASK[7.0] if dish < 10 else AUTOMASK[12.0]
    common = dict(imsize=[plan["imsize"], plan["imsize"]], cell="%garcsec" % cell, weighting=params["weighting"],
                  robust=float(params["robust"]), interactive=False, usemask="auto-multithresh", **automask)
    images, choices = [], {}
    cont_spw = ",".join("%d:%s" % (i, contranges[str(spw)]) for i, spw in enumerate(sel["spws"]))
    for field in sel["fields"]:
        where = layout[field]
        mosaic = where["mosaic"] or mosaic_hint
        gridding = dict(gridder="mosaic" if mosaic else "standard")
        if mosaic:
            gridding["phasecenter"] = where["phasecenter"]
        choice = {
            "gridder": gridding["gridder"], "phasecenter_field": where["phasecenter"] if mosaic else None,
            "pointings": len(where["ids"]), "cell_arcsec": cell, "imsize": plan["imsize"],
            "weighting": params["weighting"], "robust": float(params["robust"]), "usemask": "auto-multithresh",
            "automask": automask, "cont_deconvolver": plan_img["deconvolver"], "cont_nterms": plan_img["nterms"],
            "fractional_bandwidth": plan_img["fractional_bandwidth"], "beam_arcsec": plan_img["beam_arcsec"],
            "pb_arcsec": plan_img["pb_arcsec"],
            "why": dict(plan_img["why"], gridder=("%d pointings of %s" % (len(where["ids"]), field)) if where["mosaic"]
                        else ("is_mosaic in the archive's metadata" if mosaic else "one pointing")),
        }
        say("imaging %s: gridder %s (%s), cont %s nterms %d (%s), cell %g arcsec (%s), imsize %d (%s), "
            "robust %.1f, auto-multithresh" % (
                field, choice["gridder"], choice["why"]["gridder"], plan_img["deconvolver"], plan_img["nterms"],
                plan_img["why"]["deconvolver"], cell, plan_img["why"]["cell"], plan["imsize"],
                plan_img["why"]["imsize"], float(params["robust"])))
        name = os.path.join(imdir, "%s.cont" % safe_name(field))
        clear_image(name)
        cont_args = dict(common, vis=targets, field=field, spw=cont_spw, specmode="mfs",
                         deconvolver=plan_img["deconvolver"], **gridding)
        if plan_img["nterms"] > 1:
            cont_args.update(nterms=plan_img["nterms"], reffreq="%.6fGHz" % (ref_freq / 1e9))
        choice["cont"] = clean_to_noise(cont_args, name, params, job, "%s cont" % field)
        images.append({"field": field, "spws": sel["spws"], "specmode": "cont", "imagename": name,
                       "nterms": plan_img["nterms"]})
        choice["cubes"] = {}
        for i, spw in enumerate(sel["spws"]):
            name = os.path.join(imdir, "%s.spw%d.cube" % (safe_name(field), spw))
            clear_image(name)
            cube_args = dict(common, vis=lines, field=field, spw=str(i), specmode="cube", width=plan["nbin"],
                             outframe="LSRK", deconvolver="hogbom", **gridding)
            cube = clean_to_noise(cube_args, name, params, job, "%s spw%d cube" % (field, spw))
            sumwt = channel_weights(name + ".sumwt")
            first, last = full_weight_channels(sumwt)
            cube["channels"] = "%d~%d" % (first, last)
            if (first, last) != (0, len(sumwt) - 1):
                median = sorted(sumwt)[len(sumwt) // 2]
                cube["channels_why"] = "edge channels %s hold %s of the median weight: partly outside the window in " \
                    "LSRK" % (",".join(str(c) for c in range(len(sumwt)) if not first <= c <= last),
                              ",".join("%.0f%%" % (100 * sumwt[c] / median) for c in range(len(sumwt))
                                       if not first <= c <= last))
                say("%s spw%d cube: channels %s delivered (%s)" % (field, spw, cube["channels"], cube["channels_why"]))
            choice["cubes"][str(spw)] = cube
            images.append({"field": field, "spws": [spw], "specmode": "cube", "imagename": name, "nterms": 1,
                           "chans": cube["channels"] if (first, last) != (0, len(sumwt) - 1) else None})
        choices[field] = choice
    del ballast
    state.update(targets=targets, lines=lines, contranges=contranges, fields=sel["fields"], spws=sel["spws"],
                 cell_arcsec=cell, size_plan=plan, images=images, imaging=choices)
    save_state(job, state)


def hold_memory(gb: float) -> list:
    """Allocate and touch ``gb`` GB (held until the caller drops it): the demo's memory hog."""
    if gb <= 0:
        return []
    say("demo: holding %.1f GB of memory while imaging (alloc_gb)" % gb)
    chunk = 64 * 2 ** 20
    return [b"\1" * chunk for _ in range(int(math.ceil(gb * GB / chunk)))]


def safe_name(field: str) -> str:
    return "".join(c if c.isalnum() or c in "+-_" else "_" for c in field)


def clear_image(name: str) -> None:
    """Remove what an earlier run of tclean left under ``name``."""
    for path in glob.glob(name + ".*"):
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def require_image(name: str, ext: str = "", pbcor: bool = True) -> None:
    for suffix in (".image" + ext, ".pb" + ext) + ((".image%s.pbcor" % ext,) if pbcor else ()):
        if not os.path.isdir(name + suffix):
            raise RecipeFailure("imaging", "tclean made no %s%s" % (os.path.basename(name), suffix))


# ----------------------------------------------------------------- export

EXPORTS = ((".image.pbcor", ".pbcor.fits"), (".pb", ".pb.fits"), (".image", ".image.fits"), (".mask", ".mask.fits"))
# mtmfs images: the Taylor term 0 images and the spectral index, named as the pipeline names them
EXPORTS_MTMFS = ((".image.tt0.pbcor", ".tt0.pbcor.fits"), (".pb.tt0", ".pb.tt0.fits"), (".image.tt0", ".tt0.fits"),
                 (".mask", ".mask.fits"), (".alpha", ".alpha.fits"))


def stage_export(job: dict) -> None:
    """exportfits every image product with the pipeline's names; write manifest.json."""
    from casatasks import exportfits
    import casatools
    state = load_state(job)
    if not state.get("images"):
        raise RecipeFailure("export", "nothing imaged: run the image stage first")
    out = job["products_dir"]
    os.makedirs(out, exist_ok=True)
    products = []
    for image in state["images"]:
        base = product_base(job["uid"], image["field"], image["spws"], image["specmode"])
        for ext, suffix in (EXPORTS_MTMFS if image.get("nterms", 1) > 1 else EXPORTS):
            source = image["imagename"] + ext
            if not os.path.isdir(source):
                if ext in (".mask", ".alpha"):
                    continue
                raise RecipeFailure("export", "image %s is missing" % source)
            target = os.path.join(out, base + suffix)
            with Step("exportfits %s" % os.path.basename(target), "export", job):
                if image.get("chans"):  # only the channels the data fill (stage_image says why)
                    from casatasks import imsubimage
                    part = source + ".chans"
                    shutil.rmtree(part, ignore_errors=True)
                    imsubimage(imagename=source, outfile=part, chans=image["chans"])
                    source = part
                exportfits(imagename=source, fitsimage=target, overwrite=True, dropdeg=False)
                if source.endswith(".chans"):
                    shutil.rmtree(source, ignore_errors=True)
                if not os.path.isfile(target):
                    raise RecipeFailure("export", "exportfits wrote no %s" % target)
            products.append({"file": os.path.basename(target), "field": image["field"], "spw": image["spws"],
                             "specmode": image["specmode"], "kind": suffix[1:-5]})
    contdat = os.path.join(job["work_dir"], "cont.dat")
    if os.path.exists(contdat):
        shutil.copy(contdat, os.path.join(out, "member.%s.cont.dat" % ous_name(job["uid"])))
        products.append({"file": "member.%s.cont.dat" % ous_name(job["uid"]), "kind": "cont.dat"})
    for item in products:
        path = os.path.join(out, item["file"])
        item["sha256"] = sha256_file(path)
        item["size"] = os.path.getsize(path)
    manifest = {
        "uid": job["uid"], "attempt_id": job["attempt_id"], "recipe": RECIPE, "recipe_version": RECIPE_VERSION,
        "casa_version": casatools.version_string(), "python": sys.version.split()[0],
        "parameters": job["params"], "contranges": state.get("contranges"), "size_plan": state.get("size_plan"),
        "cell_arcsec": state.get("cell_arcsec"), "caltables": [os.path.basename(t) for t in state.get("caltables", [])],
        "calibration": state.get("calibration"), "imaging": state.get("imaging"),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "products": products,
    }
    write_json(os.path.join(out, "manifest.json"), manifest)
    say("exported %d products to %s" % (len(products), out))


# ------------------------------------------------------------------- main

STAGES = {"restore": stage_restore, "image": stage_image, "export": stage_export}


def setup_casa_log(job: dict, stage: str) -> None:
    """CASA's log to ``casa-<stage>.log`` and to the console (the runner's stage log)."""
    from casatasks import casalog
    casalog.setlogfile(os.path.join(job["work_dir"], "casa-%s.log" % stage))
    casalog.showconsole(True)


def main(argv: list) -> int:
    if len(argv) != 2 or argv[0] not in STAGES:
        print("usage: casa6.py restore|image|export PARAMS.json", file=sys.stderr)
        return 2
    stage, params_path = argv
    job = load_params(params_path)
    os.chdir(job["work_dir"])
    try:
        setup_casa_log(job, stage)
        STAGES[stage](job)
    except RecipeFailure as exc:
        say("step failed: category=%s: %s" % (exc.category, exc.message))
        write_json(os.path.join(job["work_dir"], "%s.failure.json" % stage),
                   {"category": exc.category, "message": exc.message})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Recipe ``casa6``: restore calibration, image and export one MOUS with CASA 6 modular tasks.

    PYTHON_WITH_CASATASKS casa6.py STAGE PARAMS.json       STAGE: restore | image | export

The runner starts it once per stage with ``<work_dir>/recipe_params.json``
(keys: attempt_id, uid, work_dir, download_dir, products_dir, inputs, recipe,
casa, params). The module itself is stdlib only; CASA is imported inside the
steps, so tests import the pure parts (continuum heuristic, product size check,
naming) without CASA.

Stages and the steps in each:

- ``restore``: untar every input tar (raw data ``<ASDM>.asdm.sdm.tar``, the
  auxiliary ``..._auxiliary.tar``) into ``restore/``; ``importasdm`` each ASDM
  (a directory with ``ASDM.xml``; a Measurement Set is used as it is); applycal
  with the calibration tables (``params.caltables``: names that must all be
  present, else the stage fails naming the missing one; default: the
  archive's ``<eb>.ms.calapply.txt`` when the auxiliary data has one (its
  applycal calls, with gainfield/spwmap/interp, run as written), else every
  table whose ``table.info`` says ``Type = Calibration``; ``[]``: apply none).
  Nested ``*.tgz`` (``caltables.tgz``, ``auxproducts.tgz``) are extracted too.
- ``image``: split the science targets (intent ``OBSERVE_TARGET*``, corrected
  data) -> ``<eb>_targets.ms``; find the continuum channels (heuristic below)
  and write ``cont.dat``; uvcontsub -> ``<eb>_targets_line.ms``; check the
  product size (below); tclean per field: an aggregate continuum image (mfs,
  every spw's continuum channels) and one cube per spw (line data), pbcor.
- ``export``: exportfits every product with the pipeline's names into
  ``products/`` and write ``products/manifest.json`` (sha256 of every product,
  recipe, CASA version, parameters, continuum ranges, size check).

Continuum heuristic (``continuum_channels``): per spw, the amplitude of every
unflagged visibility is averaged over all baselines, times and correlations
into one value per channel. Channels further than ``cont_nsigma`` (default 3)
robust sigmas (1.4826 x median absolute deviation, floored at 0.1 % of the
median so noise-free data works) from the median are line channels; the clip
repeats on the remaining channels until nothing changes, then each line range
is widened by ``cont_pad`` (default 1) channels. If fewer than
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
``niter`` (500), ``threshold`` ("0mJy"), ``weighting`` ("briggs"), ``robust``
(0.5), ``fitorder`` (0), ``interp`` ("linear"), ``slowdown_s`` (0: seconds to
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
import shutil
import sys
import tarfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from remote.procutil import sha256_file  # noqa: E402  (remote/ is copied whole to the node)

RECIPE = "casa6"
RECIPE_VERSION = "1"
STATE_FILE = "casa6_state.json"
DEFAULTS = {
    "caltables": None, "interp": "linear", "field": None, "spw": None, "imsize": None, "cell": None,
    "max_imsize": 2048, "niter": 500, "threshold": "0mJy", "weighting": "briggs", "robust": 0.5,
    "fitorder": 0, "cont_nsigma": 3.0, "cont_pad": 1, "cont_min_fraction": 0.1, "contranges": {},
    "maxcubesize_gb": 40.0, "maxproductsize_gb": 500.0, "max_nbin": 4, "min_imsize_fraction": 0.5,
    "slowdown_s": 0.0, "alloc_gb": 0.0, "cont_level_ratio_max": 1.5,
}
GB = float(2 ** 30)


class RecipeFailure(Exception):
    """A failure the recipe understands: its category (triage's closed list) and message."""

    def __init__(self, category: str, message: str):
        Exception.__init__(self, message)
        self.category = category
        self.message = message


# ------------------------------------------------------------- pure parts

def continuum_channels(spectrum: list, nsigma: float = 3.0, pad: int = 1) -> list:
    """Indices of the continuum channels of an amplitude spectrum (sigma-clipping).

    A line in channels 3-4 (padded by one channel each side):

    >>> continuum_channels([1.0, 1.02, 0.98, 3.0, 3.2, 1.01, 0.99, 1.0])
    [0, 1, 6, 7]
    """
    values = [float(v) for v in spectrum]
    keep = [i for i, v in enumerate(values) if v == v]  # drop NaN (fully flagged) channels
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


class Step(object):
    """``with Step("applycal", "calibration", job):`` — turns an exception into a RecipeFailure."""

    def __init__(self, name: str, category: str, job: dict):
        self.name, self.category, self.job = name, category, job

    def __enter__(self):
        say("step %s started" % self.name)
        self.started = time.time()
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None:
            say("step %s done in %.1f s" % (self.name, time.time() - self.started))
            params = self.job["params"]
            pause = float(params.get("slowdown_s") or params.get("demo_slowdown_s") or 0)
            if pause > 0:
                say("slowdown: sleeping %.1f s" % pause)
                time.sleep(pause)
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


def extract_nested(root: str) -> None:
    """Extract the ``*.tgz`` / ``*.tar.gz`` the archive nests in its tars (caltables, auxproducts), once."""
    for dirpath, _dirs, filenames in os.walk(root):
        for name in filenames:
            if not (name.endswith(".tgz") or name.endswith(".tar.gz")) or "weblog" in name:
                continue
            path = os.path.join(dirpath, name)
            marker = os.path.join(dirpath, "." + name + ".extracted")
            if os.path.exists(marker) or not tarfile.is_tarfile(path):
                continue
            say("untar nested %s" % name)
            with tarfile.open(path) as tar:
                safe_extract(tar, dirpath)
            open(marker, "w").close()


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


def calapply_for(vis: str, root: str):
    """The ``<eb>.ms.calapply.txt`` shipped for this EB, or None."""
    name = os.path.basename(vis)
    found = glob.glob(os.path.join(root, "**", name + ".calapply.txt"), recursive=True)
    return sorted(found)[0] if found else None


def apply_calapply(vis: str, calapply: str, caltables: list, job: dict) -> list:
    """Run the archive's applycal calls for ``vis`` with the tables found; the tables used."""
    with open(calapply) as fh:
        calls = parse_calapply(fh.read())
    if not calls:
        raise RecipeFailure("calibration", "%s holds no applycal call" % os.path.basename(calapply))
    by_name = {os.path.basename(p): p for p in caltables}
    used = []
    for kwargs in calls:
        tables = kwargs.get("gaintable") or []
        tables = [tables] if isinstance(tables, str) else tables
        missing = [t for t in tables if os.path.basename(t) not in by_name]
        if missing:
            raise RecipeFailure("calibration", "caltable %s is missing from the auxiliary data (named in %s)" % (
                ", ".join(os.path.basename(t) for t in missing), os.path.basename(calapply)))
        kwargs["gaintable"] = [by_name[os.path.basename(t)] for t in tables]
        kwargs["vis"] = vis
        kwargs.setdefault("flagbackup", False)
        with Step("applycal %s (calapply)" % os.path.basename(vis), "calibration", job):
            from casatasks import applycal
            applycal(**kwargs)
        used.extend(kwargs["gaintable"])
    return used


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


def stage_restore(job: dict) -> None:
    """Untar, importasdm, applycal; records the restored MSs in the state file."""
    params = job["params"]
    root = extract_inputs(job)
    found = find_tables(root)
    scripts = glob.glob(os.path.join(root, "**", "*scriptForPI*"), recursive=True)
    if scripts:
        say("archive restore script present (not run): %s" % ", ".join(os.path.basename(s) for s in scripts))
    vis = list(found["ms"])
    for asdm in found["asdm"]:
        name = os.path.basename(asdm.rstrip("/"))
        for suffix in (".asdm.sdm", ".sdm", ".asdm"):
            if name.endswith(suffix):
                name = name[:-len(suffix)]
        ms = os.path.join(job["work_dir"], name + ".ms")
        if ms in vis:  # the same ASDM shipped in two tars (raw tar and the MOUS tar)
            continue
        if not os.path.exists(ms):
            with Step("importasdm %s" % name, "importdata", job):
                from casatasks import importasdm
                importasdm(asdm=asdm, vis=ms)
                if not os.path.isdir(ms):
                    raise RecipeFailure("importdata", "importasdm wrote no measurement set for %s" % name)
        vis.append(ms)
    if not vis:
        raise RecipeFailure("importdata", "no ASDM or measurement set found in the inputs (%s)" % (
            ", ".join(os.path.basename(p) for p in job["inputs"]) or "no inputs"))
    caltables = choose_caltables(found["caltables"], params["caltables"])
    if params["caltables"] is None and not caltables:
        raise RecipeFailure("calibration", "no calibration tables in the inputs — pass caltables: [] to image the raw data")
    for ms in vis:
        calapply = calapply_for(ms, root) if params["caltables"] is None else None
        if calapply:
            used = apply_calapply(ms, calapply, found["caltables"], job)
            say("applied %s to %s as %s says" % (", ".join(os.path.basename(t) for t in used),
                                                  os.path.basename(ms), os.path.basename(calapply)))
            continue
        tables = caltables_for(ms, caltables, vis)
        if not tables:
            say("no caltables for %s: imaging its DATA column" % os.path.basename(ms))
            continue
        with Step("applycal %s" % os.path.basename(ms), "calibration", job):
            from casatasks import applycal
            applycal(vis=ms, gaintable=tables, interp=[params["interp"]] * len(tables), calwt=[False] * len(tables),
                     flagbackup=False)
            if not has_column(ms, "CORRECTED_DATA"):
                raise RecipeFailure("calibration", "applycal left no CORRECTED_DATA in %s" % ms)
        say("applied %s to %s" % (", ".join(os.path.basename(t) for t in tables), os.path.basename(ms)))
    state = load_state(job)
    state.update(vis=vis, caltables=caltables)
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


def auto_cell_and_imsize(vis: str, freq_hz: float, params: dict):
    """(cell arcsec, imsize): a fifth of lambda/Bmax, and 1.5 PB FWHM (or the params)."""
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
    if params["cell"]:
        cell = float(str(params["cell"]).replace("arcsec", ""))
    else:
        beam = (299792458.0 / freq_hz) / bmax * 206264.806
        cell = float("%.2g" % (beam / 5.0))
    if params["imsize"]:
        imsize = int(params["imsize"])
    else:
        imsize = even(int(math.ceil(1.5 * pb_fwhm_arcsec(freq_hz, dish) / cell)))
    return cell, min(imsize, int(params["max_imsize"]))


def stage_image(job: dict) -> None:
    """split -> findcont -> uvcontsub -> checkproductsize -> tclean (cont + cubes) per field."""
    from casatasks import split, tclean, uvcontsub
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
        out = vis[:-3] + "_targets.ms" if vis.endswith(".ms") else vis + "_targets.ms"
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
    ref_freq = sum(sel["freqs"][s][len(sel["freqs"][s]) // 2] for s in sel["spws"]) / len(sel["spws"])
    cell, imsize = auto_cell_and_imsize(targets[0], ref_freq, params)
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
    common = dict(imsize=[plan["imsize"], plan["imsize"]], cell="%garcsec" % cell, niter=int(params["niter"]),
                  threshold=params["threshold"], weighting=params["weighting"], robust=float(params["robust"]),
                  gridder="standard", deconvolver="hogbom", pbcor=True, interactive=False)
    images = []
    cont_spw = ",".join("%d:%s" % (i, contranges[str(spw)]) for i, spw in enumerate(sel["spws"]))
    for field in sel["fields"]:
        name = os.path.join(imdir, "%s.cont" % safe_name(field))
        clear_image(name)
        with Step("tclean %s cont" % field, "imaging", job):
            tclean(vis=targets, imagename=name, field=field, spw=cont_spw, specmode="mfs", **common)
            require_image(name)
        images.append({"field": field, "spws": sel["spws"], "specmode": "cont", "imagename": name})
        for i, spw in enumerate(sel["spws"]):
            name = os.path.join(imdir, "%s.spw%d.cube" % (safe_name(field), spw))
            clear_image(name)
            with Step("tclean %s spw%d cube" % (field, spw), "imaging", job):
                tclean(vis=lines, imagename=name, field=field, spw=str(i), specmode="cube", width=plan["nbin"],
                       outframe="LSRK", **common)
                require_image(name)
            images.append({"field": field, "spws": [spw], "specmode": "cube", "imagename": name})
    del ballast
    state.update(targets=targets, lines=lines, contranges=contranges, fields=sel["fields"], spws=sel["spws"],
                 cell_arcsec=cell, size_plan=plan, images=images)
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


def require_image(name: str) -> None:
    for ext in (".image", ".pb", ".image.pbcor"):
        if not os.path.isdir(name + ext):
            raise RecipeFailure("imaging", "tclean made no %s%s" % (os.path.basename(name), ext))


# ----------------------------------------------------------------- export

EXPORTS = ((".image.pbcor", ".pbcor.fits"), (".pb", ".pb.fits"), (".image", ".image.fits"), (".mask", ".mask.fits"))


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
        for ext, suffix in EXPORTS:
            source = image["imagename"] + ext
            if not os.path.isdir(source):
                if ext == ".mask":
                    continue
                raise RecipeFailure("export", "image %s is missing" % source)
            target = os.path.join(out, base + suffix)
            with Step("exportfits %s" % os.path.basename(target), "export", job):
                exportfits(imagename=source, fitsimage=target, overwrite=True, dropdeg=False)
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

"""The archive client: MOUS by project code or uid over TAP, DataLink (recursive), selection rules.

The ALMA archive runs a TAP service with an ``ivoa.obscore`` table and a
DataLink service; the demo archive's local service speaks the same (both read
with pyvo). What the real archive answers, and how this module reads it:

- ``ivoa.obscore`` has one row per source and spectral window (``obs_id`` like
  ``uid://A001/X1465/X2f66.source.HOPS_56.spw.33``): a MOUS has many rows, which
  ``aggregate_rows`` folds into one (every target, every window of
  ``frequency_support``, mosaic if any row is, the largest field and exposure).
- DataLink on a MOUS uid lists the README (``#documentation``), the product tar
  (``#this``: the QA2 FITS, and in Cycles 1-4 also the calibration and scripts),
  the auxiliary tar (``#auxiliary``: calibration, scripts, logs, QA reports) and
  the raw ASDM tars (``#progenitor``). There is no checksum column and
  ``content_length`` may be missing or -1 (size unknown: kept as None, never
  summed). A row with an empty ``access_url`` and a ``service_def`` is no file:
  it names an ad-hoc DataLink service (a RESOURCE with that ID whose
  ``accessURL`` lists what is inside a tar); ``fetch_listing`` follows those, so
  each product FITS and each auxiliary file is known with its own URL.
- Each file gets a ``kind`` (``classify``): ``raw`` (ASDMs for the node),
  ``calibration`` (calibration tables and scripts), ``qa2`` (QA2 images),
  ``product``, ``qa``, ``documentation``, ``log``, and the two containers
  ``product_tar`` and ``auxiliary_tar``. ``node_inputs`` says what the node
  downloads (raw data + the tar that carries the calibration and scripts, whose
  folder layout ``scriptForPI.py`` needs); ``qa2_inputs`` what the console fetches
  for the QA2 comparison (each FITS on its own when listed, the product tar
  otherwise).
- The CASA version is read where the archive states it (``casa_version_of``):
  ``<casaversion name=...>`` of the ``*pipeline_manifest.xml`` for pipeline
  calibration, the version check of ``scriptForPI.py`` / ``scriptForCalibration.py``
  or the QA2 report for manual calibration; None (unknown) otherwise.

Every request has a timeout (``timeout`` seconds, ``[campaign] archive_timeout_s``);
a service that does not answer in time is a UserError naming it.

>>> rules = SelectionRules()
>>> rules.public_only, rules.exclude_total_power
(True, True)
"""

from __future__ import annotations

import fnmatch
import math
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Iterable
from urllib.parse import parse_qs, urlsplit

from ..alma import DataSet, parse_array, parse_band, parse_project, parse_uid
from ..errors import UserError
from .selection import PRESETS, SelectionRules, rules_from_mapping  # noqa: F401  (the client's names too)

ALMA_TAP_URL = "https://almascience.eso.org/tap"
ALMA_DATALINK_URL = "https://almascience.eso.org/datalink/sync"
DEFAULT_TIMEOUT_S = 60.0
DATALINK_STANDARD = "ivo://ivoa.net/std/DataLink#links"

# Columns the client reads from ivoa.obscore (the ALMA archive has all of them, except qa2_status).
OBSCORE_COLUMNS = (
    "member_ous_uid", "group_ous_uid", "asdm_uid", "proposal_id", "target_name", "s_ra", "s_dec", "s_fov",
    "s_resolution", "spatial_resolution", "band_list", "antenna_arrays", "frequency", "frequency_support",
    "t_exptime", "obs_release_date", "data_rights", "qa2_passed", "scan_intent", "is_mosaic", "pol_states",
    "science_keyword", "scientific_category", "science_observation",
)
OPTIONAL_COLUMNS = ("qa2_status",)

# Project code year -> ALMA cycle (the '.1' call of each year, its DDT '.A' and supplemental calls).
_CYCLE_OF_YEAR = {2011: 0, 2012: 1, 2013: 2, 2015: 3, 2016: 4, 2017: 5, 2018: 6, 2019: 7, 2021: 8,
                  2022: 9, 2023: 10, 2024: 11, 2025: 12}

# What a file is for, by the name patterns the archive uses (lower case, fnmatch).
CALIBRATION_PATTERNS = (
    "*.calibration.tgz", "*.caltables.tgz", "*.calapply.txt", "*.flagversions.tgz", "*.auxproducts.tgz",
    "*scriptforpi.py", "*scriptforcalibration.py", "*scriptforfluxcalibration.py", "*scriptforimaging*.py",
    "*pipeline_manifest.xml", "*.flagtemplate.txt", "*.flagtargetstemplate.txt", "*.antennapos.csv",
    "*.cont.dat", "*.casa_commands.log", "*.calimage.product_rename.txt", "*.hifa_*.xml", "*_auxiliary.tar",
)
QA_PATTERNS = ("*qa2_report*", "*__qa2_part*", "*__textfile.txt", "*.weblog.tgz", "*.calibration.plots.tgz",
               "*.qa2_report.*")
LOG_PATTERNS = ("*.log.tgz", "*.log", "*.casapy.log")
IMAGE_SUFFIXES = (".fits", ".fits.gz")
NOT_AN_IMAGE = (".pb.", ".mask", ".psf.", ".residual.", ".model.", ".sumwt", ".weight", ".alpha")


@dataclass(frozen=True)
class ArchiveFile:
    """One file of a MOUS, as DataLink lists it (``inside``: the tar whose recursive listing lists it)."""

    name: str
    url: str
    size: int | None
    semantics: str
    content_type: str | None = None
    kind: str = "other"
    inside: str | None = None
    sha256: str | None = None
    description: str | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "url": self.url, "size": self.size, "sha256": self.sha256,
                "semantics": self.semantics, "kind": self.kind, "inside": self.inside,
                "content_type": self.content_type}


@dataclass(frozen=True)
class ArchiveMous:
    """A MOUS as the archive describes it: the queue's DataSet plus archive metadata."""

    dataset: DataSet
    obscore: dict
    files: tuple[ArchiveFile, ...] = ()
    casa_version: str | None = None
    datalink_error: str | None = None
    unused_raw: tuple[str, ...] = ()

    @property
    def uid(self) -> str:
        return self.dataset.uid

    @property
    def qa2_status(self) -> str:
        """``Pass``, ``SemiPass`` or ``Fail`` (from qa2_status where the archive has it, else qa2_passed)."""
        status = (self.obscore.get("qa2_status") or "").strip()
        if status:
            return status
        return "Pass" if str(self.obscore.get("qa2_passed", "")).upper() in ("T", "TRUE", "1") else "Fail"

    @property
    def cycle(self) -> int | None:
        """The ALMA cycle of the project (2016.1.x and 2016.A.x -> 4), or None when unknown."""
        year, kind = self.dataset.project.split(".")[:2]
        return 0 if kind == "0" else _CYCLE_OF_YEAR.get(int(year))

    @property
    def inputs(self) -> list[ArchiveFile]:
        """The files the node downloads (raw data and the calibration container)."""
        return node_inputs(self.files, self.unused_raw)

    @property
    def qa2_files(self) -> list[ArchiveFile]:
        """The QA2 products the console fetches for the comparison."""
        return qa2_inputs(self.files)

    @property
    def pipeline_imaged(self) -> bool:
        """True when the archive's QA2 images were made by the imaging pipeline (no ``manual`` image)."""
        images = [f for f in self.files if f.kind == "qa2"]
        return bool(images) and not any("manual" in f.name.lower() for f in images)

    def store_row(self) -> dict:
        """The columns to keep for this MOUS beside the DataSet's own (see the module's report)."""
        row = self.obscore
        return {
            "uid": self.uid, "target": row.get("target_name"), "targets": row.get("targets"),
            "ra_deg": row.get("s_ra"), "dec_deg": row.get("s_dec"),
            "frequency_ghz": row.get("frequency"), "frequency_support": row.get("frequency_support"),
            "release_date": row.get("obs_release_date"),
            "data_rights": row.get("data_rights"), "qa2_status": self.qa2_status,
            "pol_states": row.get("pol_states"), "is_mosaic": row.get("is_mosaic"),
            "casa_version": self.casa_version, "asdm_uid": row.get("asdm_uid"),
            "group_ous_uid": row.get("group_ous_uid"), "obscore_rows": row.get("obscore_rows", 1),
        }


# ---------------------------------------------------------------- metadata -> DataSet

def array_of(antenna_arrays: str, scan_intent: str = "") -> str:
    """``12m``, ``7m`` or ``TP`` from obscore's ``pad:antenna`` list.

    12m antennas are DA/DV, 7m are CM, total-power dishes PM (they sit on 12m pads).

    >>> array_of("A001:DA41 A002:DV02"), array_of("J501:CM01"), array_of("T701:PM01 T702:PM02")
    ('12m', '7m', 'TP')
    """
    names = [a.split(":")[-1].upper() for a in (antenna_arrays or "").split()]
    if names and all(n.startswith("PM") for n in names):
        return "TP"
    if names and all(n.startswith("CM") for n in names):
        return "7m"
    if names:
        return "12m"
    return parse_array("TP" if "total" in (scan_intent or "").lower() else "12m")


def channel_count(frequency_support: str) -> int:
    """The largest channel count of any window in obscore's ``frequency_support``.

    >>> channel_count("[230.40..230.53GHz,4000.00kHz,XX YY] U [232.00..234.00GHz,500000.00kHz,XX YY]")
    32
    """
    return max(window_channels(frequency_support), default=1)


def window_channels(frequency_support: str) -> list[int]:
    """The channel count of each window in obscore's ``frequency_support`` (its span / its resolution).

    >>> window_channels("[230.40..230.53GHz,4000.00kHz,XX YY] U [232.00..234.00GHz,500000.00kHz,XX YY]")
    [32, 4]
    """
    out = []
    for lo, hi, width, unit in re.findall(r"\[([\d.]+)\.\.([\d.]+)GHz,([\d.]+)(kHz|MHz)", frequency_support or ""):
        width_ghz = float(width) / (1e6 if unit == "kHz" else 1e3)
        if width_ghz > 0:
            out.append(max(1, int(round((float(hi) - float(lo)) / width_ghz))))
    return out


def spectral_setup(row: dict) -> tuple[int | None, int | None]:
    """(spectral windows, mean channels per window) of an aggregated obscore row; None when unknown.

    Where the rows are per spw (``obs_id`` ending ``.spw.<n>``) their spw numbers count the
    windows; otherwise the windows of ``frequency_support`` do. The channels are the mean
    over the windows listed, so windows x channels is the MOUS's total.

    >>> spectral_setup({"frequency_support": "[1..2GHz,1000kHz,XX] U [3..4GHz,500kHz,XX]"})
    (2, 1500)
    >>> spectral_setup({"frequency_support": ""})
    (None, None)
    """
    channels = window_channels(row.get("frequency_support") or "")
    if not channels:
        return None, None
    spws = row.get("spw_ids") or ()
    return (len(spws) or len(channels)), int(round(sum(channels) / len(channels)))


def predicted_imsize(fov_deg: float | None, resolution_arcsec: float | None) -> int:
    """The image side in pixels a pipeline makes: 1.2 x the field of view at 5 pixels per beam."""
    if not fov_deg or not resolution_arcsec:
        return 256
    return int(math.ceil(1.2 * fov_deg * 3600 / (resolution_arcsec / 5)))


def predicted_memory_gb(row: dict) -> float:
    """Memory a cube imaging of this MOUS needs: imsize^2 x channels x 6 bytes + 2 GB of CASA."""
    side = predicted_imsize(row.get("s_fov"), row.get("spatial_resolution") or row.get("s_resolution"))
    return round(2.0 + side * side * channel_count(row.get("frequency_support", "")) * 6 / 1e9, 2)


def predicted_hours(row: dict) -> float:
    """Hours of processing on a speed-1.0 node: 1.25 x the observing time plus a few minutes."""
    return round(0.05 + float(row.get("t_exptime") or 0) / 3600 * 1.25, 3)


def dataset_from_row(row: dict, inputs: Iterable[ArchiveFile] | None = None) -> DataSet:
    """The queue's DataSet for one (aggregated) obscore row; its size is what the node downloads.

    The size is None when the files are not known or any of them has no size.
    """
    inputs = list(inputs) if inputs is not None else None
    sizes = [f.size for f in inputs] if inputs else [None]
    size = sum(sizes) / 1e9 if None not in sizes else None
    band = str(row.get("band_list") or "").split()
    n_spw, n_chan = spectral_setup(row)
    mosaic = row.get("is_mosaic")
    # Execution blocks: the raw ASDMs DataLink lists for the node (obscore's asdm_uid names only one per row).
    ebs = sum(f.kind == "raw" for f in inputs) if inputs else 0
    return DataSet(
        uid=parse_uid(row["member_ous_uid"]), project=parse_project(row["proposal_id"]),
        array=array_of(row.get("antenna_arrays", ""), row.get("scan_intent", "")),
        band=parse_band(band[0]) if band else None,
        size_gb=round(size, 6) if size is not None else None,
        archive_mem_gb=predicted_memory_gb(row), archive_hours=predicted_hours(row),  # a prior, not explicit
        extra={"target": row.get("target_name"), "source": "archive"},
        n_spw=n_spw, n_chan=n_chan, n_eb=ebs or None,
        is_mosaic=None if mosaic in (None, "") else str(mosaic).strip().upper() in ("T", "TRUE", "1"),
    )


def aggregate_rows(rows: list[dict]) -> dict:
    """One obscore row for a MOUS from its many (one per source and spw), nothing dropped.

    Targets and frequency windows are united, ``is_mosaic`` is true if any row is
    (None if no row says), the field, exposure and release date are the largest, the
    resolution the finest; ``targets`` lists every target, ``spw_ids`` the spw numbers
    of per-spw rows (``obs_id`` ``<mous>.source.<target>.spw.<n>``), ``obscore_rows``
    counts the rows.

    >>> r = aggregate_rows([
    ...     {"target_name": "A", "frequency_support": "[1..2GHz,1kHz,XX YY]", "is_mosaic": "F", "s_fov": 0.01},
    ...     {"target_name": "B", "frequency_support": "[3..4GHz,1kHz,XX YY]", "is_mosaic": "T", "s_fov": 0.02}])
    >>> r["targets"], r["target_name"], r["frequency_support"], r["is_mosaic"], r["s_fov"]
    (['A', 'B'], 'A B', '[1..2GHz,1kHz,XX YY] U [3..4GHz,1kHz,XX YY]', 'T', 0.02)
    """
    out = dict(rows[0])
    targets = _unique(r.get("target_name") for r in rows)
    out["targets"] = targets
    out["target_name"] = " ".join(targets) if targets else out.get("target_name")
    windows = _unique(w.strip() for r in rows for w in str(r.get("frequency_support") or "").split(" U "))
    out["frequency_support"] = " U ".join(windows)
    for key in ("antenna_arrays", "scan_intent", "science_keyword", "asdm_uid", "band_list"):
        words = _unique(w for r in rows for w in re.split(r"[\s,]+", str(r.get(key) or "")))
        if words:
            out[key] = " ".join(words)
    pols = _unique(p for r in rows for p in str(r.get("pol_states") or "").split("/"))
    if pols:
        out["pol_states"] = "/" + "/".join(pols) + "/"
    flags = [str(r.get("is_mosaic")).upper() for r in rows if r.get("is_mosaic") not in (None, "")]
    out["is_mosaic"] = ("T" if any(f in ("T", "TRUE", "1") for f in flags) else "F") if flags else None
    out["spw_ids"] = _unique(m.group(1) for r in rows for m in [re.search(r"\.spw\.(\w+)$", str(r.get("obs_id") or ""))]
                             if m)
    for key in ("s_fov", "t_exptime", "obs_release_date"):
        values = [r.get(key) for r in rows if r.get(key) is not None]
        if values:
            out[key] = max(values)
    for key in ("s_resolution", "spatial_resolution"):
        values = [r.get(key) for r in rows if r.get(key)]
        if values:
            out[key] = min(values)
    rights = _unique(r.get("data_rights") for r in rows)
    if len(rights) > 1:
        out["data_rights"] = next(r for r in rights if str(r).lower() != "public")
    passed = _unique(str(r.get("qa2_passed")) for r in rows if r.get("qa2_passed") is not None)
    if len(passed) > 1:
        out["qa2_passed"] = "F"
    out["obscore_rows"] = len(rows)
    return out


def _unique(values: Iterable) -> list:
    seen: list = []
    for v in values:
        if v not in (None, "") and v not in seen:
            seen.append(v)
    return seen


# ---------------------------------------------------------------- TAP and DataLink

def _session(timeout: float):
    """A requests session whose every request has ``timeout`` (pyvo passes none of its own)."""
    import requests

    class TimeoutSession(requests.Session):
        def request(self, method, url, **kwargs):  # noqa: ANN001 (requests' signature)
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            return super().request(method, url, **kwargs)

    return TimeoutSession()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _timed_out(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) is a timeout."""
    import requests

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (requests.Timeout, TimeoutError)) or "timed out" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "cause", None)
    return False


def _select(url: str, where: str, timeout: float = DEFAULT_TIMEOUT_S) -> list[dict]:
    """The rows of ivoa.obscore matching ``where``, one aggregated row per MOUS, via pyvo."""
    import pyvo

    adql = f"SELECT * FROM ivoa.obscore WHERE {where}"
    try:
        result = pyvo.dal.TAPService(url, session=_session(timeout)).run_sync(adql)
    except pyvo.dal.DALQueryError as exc:
        raise UserError(f"{url}: the archive refused the query ({_short(exc)}) — this is a bug if it persists") from None
    except (pyvo.dal.DALServiceError, pyvo.dal.DALFormatError, OSError) as exc:
        if _timed_out(exc):
            raise UserError(f"{url}: the archive's TAP service did not answer within {timeout:g} s — "
                            "check the network and the archive's status, or raise [campaign] "
                            "archive_timeout_s") from None
        raise UserError(f"{url}: the archive's TAP service did not answer ({_short(exc)}) — "
                        "check the URL and the network, or use the demo archive") from None
    table = result.to_table()
    by_mous: dict[str, list[dict]] = {}
    for record in table:
        row = {name: _plain(record[name]) for name in table.colnames}
        by_mous.setdefault(row["member_ous_uid"], []).append(row)
    return [aggregate_rows(rows) for rows in by_mous.values()]


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


def _plain(value):
    """A VOTable cell as a plain Python value (masked -> None, bytes -> str, numpy -> builtin)."""
    import numpy as np

    if value is np.ma.masked or value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def datalink_url(tap_url: str) -> str:
    """The DataLink sync endpoint beside a TAP service (``.../tap`` -> ``.../datalink/sync``)."""
    base = tap_url.rstrip("/")
    return (base[: -len("/tap")] if base.endswith("/tap") else base) + "/datalink/sync"


def classify(name: str, semantics: str, inside: str | None = None) -> str:
    """What a DataLink file is for, from its name and semantics (the archive's own patterns).

    >>> classify("2017.1.01185.S_uid___A002_Xd28a9e_X71b8.asdm.sdm.tar", "#progenitor")
    'raw'
    >>> classify("2017.1.01185.S_uid___A001_X12a3_Xe9_001_of_001.tar", "#this")
    'product_tar'
    >>> classify("member.uid___A001_X12a3_Xe9.x_sci.spw0.cube.I.manual.image.pbcor.fits", "#this", "p.tar")
    'qa2'
    >>> classify("member.uid___A001_X12a3_Xe9.x_sci.spw0.cube.I.manual.pb.fits.gz", "#this", "p.tar")
    'product'
    >>> classify("uid___A002_Xd28a9e_X71b8.calibration.tgz", "#auxiliary", "a.tar")
    'calibration'
    >>> classify("uid___A002_Xd28a9e_X71b8.calibration.plots.tgz", "#auxiliary", "a.tar")
    'qa'
    >>> classify("member.uid___A001_X12a3_Xe9.README.txt", "#documentation")
    'documentation'
    """
    low = name.lower()

    def matches(patterns: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatchcase(low, p) for p in patterns)

    if semantics == "#cutout":
        return "cutout"
    if low.endswith((".asdm.sdm.tar", ".asdm.tar")) or (semantics == "#progenitor" and inside is None):
        return "raw"
    if inside is None and low.endswith(".tar"):
        return "auxiliary_tar" if semantics == "#auxiliary" or low.endswith("_auxiliary.tar") else "product_tar"
    if matches(QA_PATTERNS):
        return "qa"
    if matches(LOG_PATTERNS):
        return "log"
    if matches(CALIBRATION_PATTERNS):
        return "calibration"
    if "readme" in low or semantics == "#documentation":
        return "documentation"
    if low.endswith(IMAGE_SUFFIXES) and not any(t in low for t in NOT_AN_IMAGE):
        return "qa2" if semantics in ("#this", "") else "product"
    if semantics == "#this":
        return "product"
    return "auxiliary" if semantics == "#auxiliary" else "other"


def _size(value) -> int | None:
    """A ``content_length`` as bytes; None when absent or negative (the archive's "unknown")."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        return None
    return size if size >= 0 else None


@dataclass
class Listing:
    """What DataLink said about one identifier, recursive listings followed."""

    files: list[ArchiveFile] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _datalink_service(results, service_def: str) -> str | None:
    """The access URL of the ad-hoc DataLink service ``service_def`` in a DataLink answer, if it is one."""
    for resource in results.votable.resources:
        if resource.ID != service_def or resource.type != "meta":
            continue
        params = {p.name: p.value for p in resource.params}
        standard = params.get("standardID") or ""
        if isinstance(standard, bytes):
            standard = standard.decode()
        if str(standard).startswith(DATALINK_STANDARD):
            url = params.get("accessURL")
            return url.decode() if isinstance(url, bytes) else url
    return None


def fetch_listing(url: str, ident: str, timeout: float = DEFAULT_TIMEOUT_S, inside: str | None = None,
                  depth: int = 2, session=None) -> Listing:
    """The files DataLink at ``url`` lists for ``ident``, following ``service_def`` rows ``depth`` levels down.

    A row without an ``access_url`` is never a file; one with an ``error_message`` or
    ``readable`` false is recorded as an error.
    """
    import pyvo

    session = session or _session(timeout)
    listing = Listing()
    try:
        results = pyvo.dal.adhoc.DatalinkQuery(url, id=ident, session=session).execute()
    except (pyvo.dal.DALServiceError, pyvo.dal.DALQueryError, pyvo.dal.DALFormatError, OSError) as exc:
        what = f"no answer within {timeout:g} s" if _timed_out(exc) else _short(exc)
        listing.errors.append(f"DataLink {ident}: {what}")
        return listing
    table = results.to_table()
    for record in table:
        row = {name: _plain(record[name]) for name in table.colnames}
        semantics = row.get("semantics") or ""
        if row.get("error_message"):
            listing.errors.append(f"{row.get('ID') or ident}: {row['error_message']}")
            continue
        if not row.get("access_url"):
            service = row.get("service_def")
            target = _datalink_service(results, service) if service else None
            if target and depth > 0:
                base, query = target.split("?", 1) if "?" in target else (target, "")
                inner_id = (parse_qs(query).get("ID") or [service.split(".", 1)[-1]])[0]
                inner = fetch_listing(base, inner_id, timeout, inside=inner_id, depth=depth - 1, session=session)
                listing.files += inner.files
                listing.errors += inner.errors
            continue
        if row.get("readable") is False:
            listing.errors.append(f"{row['access_url']}: not readable with the current identity")
            continue
        name = urlsplit(row["access_url"]).path.rsplit("/", 1)[-1]
        checksum = str(row.get("checksum") or "")
        kind = classify(name, semantics, inside)
        if kind == "cutout":
            continue
        listing.files.append(ArchiveFile(
            name=name, url=row["access_url"], size=_size(row.get("content_length")), semantics=semantics,
            content_type=row.get("content_type"), kind=kind, inside=inside,
            sha256=checksum.split(":", 1)[1] if checksum.startswith("sha256:") else None,
            description=row.get("description")))
    return listing


def fetch_datalink(tap_url: str, uid: str, timeout: float = DEFAULT_TIMEOUT_S) -> tuple[list[ArchiveFile], str | None]:
    """The files DataLink lists for ``uid`` (recursively) and the service's errors (None when fine)."""
    listing = fetch_listing(datalink_url(tap_url), uid, timeout)
    return listing.files, "; ".join(listing.errors) or None


def node_inputs(files: Iterable[ArchiveFile], unused_raw: Iterable[str] = ()) -> list[ArchiveFile]:
    """What the node downloads: the raw ASDMs it uses, and the tar carrying calibration and scripts.

    That tar is the auxiliary tar; a MOUS without one (Cycles 1-4) has its calibration
    and scripts in the product tar, which then goes instead. Tars go whole, because the
    restore script runs from their ``script/`` folder beside ``calibration/``. Files
    listed inside a tar, QA2 products, READMEs and logs stay in the archive.
    """
    files = [f for f in files if f.inside is None]
    unused = set(unused_raw)
    raw = [f for f in files if f.kind == "raw" and not any(u in f.name for u in unused)]
    calibration = [f for f in files if f.kind == "auxiliary_tar"] or [f for f in files if f.kind == "product_tar"]
    return raw + calibration


def qa2_inputs(files: Iterable[ArchiveFile]) -> list[ArchiveFile]:
    """What the console fetches for the QA2 comparison: each QA2 image on its own, else the product tar."""
    files = list(files)
    return [f for f in files if f.kind == "qa2"] or [f for f in files if f.kind == "product_tar"]


_MANUAL_VERSION = (
    re.compile(r"<casaversion\s+name\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE),
    re.compile(r"USE THE SAME VERSION OF CASA[^:\n]*:\s*(\d+\.\d+\.\d+(?:-\d+)?)", re.IGNORECASE),
    re.compile(r"casa_?version\W{1,6}\^?(\d+\.\d+\.\d+(?:-\d+)?)", re.IGNORECASE),
    re.compile(r"CASA\s+(?:version\s*)?:?\s*v?(\d+\.\d+\.\d+(?:-\d+)?)", re.IGNORECASE),
)


def casa_version_from_text(text: str) -> str | None:
    """The CASA version a pipeline manifest, a restore script or a QA2 report states.

    >>> casa_version_from_text('<casaversion name="6.5.4.9" />')
    '6.5.4.9'
    >>> casa_version_from_text("sys.exit('ERROR: PLEASE USE THE SAME VERSION OF CASA THAT YOU USED: 5.1.1')")
    '5.1.1'
    >>> casa_version_from_text("The data were reduced with CASA 4.7.2")
    '4.7.2'
    >>> casa_version_from_text("This README names none") is None
    True
    """
    for pattern in _MANUAL_VERSION:
        match = pattern.search(text or "")
        if match:
            return match.group(1)
    return None


# Where the archive states the CASA version, best first (pipeline manifest, then manual data's scripts/report).
CASA_VERSION_SOURCES = ("*pipeline_manifest.xml", "*scriptforpi.py", "*scriptforcalibration.py",
                        "*qa2_report.html", "*qa2_report.txt")


def casa_version_of(files: Iterable[ArchiveFile], timeout: float = DEFAULT_TIMEOUT_S) -> str | None:
    """The CASA version of a MOUS from the small files that state it; None when none does."""
    files = list(files)
    for pattern in CASA_VERSION_SOURCES:
        for f in files:
            if fnmatch.fnmatchcase(f.name.lower(), pattern):
                try:
                    version = casa_version_from_text(fetch_text(f.url, timeout))
                except (OSError, urllib.error.URLError, ValueError):
                    continue
                if version:
                    return version
    return None


def unused_raw_data(readme: str) -> list[str]:
    """The ASDMs a README files under "raw (semipass)" (flawed, not used for the products).

    >>> unused_raw_data("raw (semipass)\\n  uid___A002_X1_X2.asdm.sdm.tar\\n\\nraw\\n  uid___A002_X1_X3.asdm.sdm.tar")
    ['uid___A002_X1_X2']
    """
    unused, in_block = [], False
    for line in (readme or "").splitlines():
        low = line.lower()
        if "semipass" in low or "semi-pass" in low:
            in_block = True
        elif not line.strip() or (line[:1].strip() and "uid___" not in line):
            in_block = False
        if in_block or "semipass" in low:
            unused += re.findall(r"uid___A\d+_X[0-9a-fA-F]+_X[0-9a-fA-F]+", line)
    return _unique(unused)


def fetch_text(url: str, timeout: float = DEFAULT_TIMEOUT_S, limit: int = 1 << 20) -> str:
    """A small text file (a README, a manifest, a script) fetched over HTTP."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read(limit).decode("utf-8", "replace")


def describe(tap_url: str, row: dict, with_datalink: bool = True, timeout: float = DEFAULT_TIMEOUT_S) -> ArchiveMous:
    """An ArchiveMous for one aggregated obscore row, with its files and CASA version when asked."""
    files: list[ArchiveFile] = []
    error = casa = None
    unused: list[str] = []
    if with_datalink:
        files, error = fetch_datalink(tap_url, row["member_ous_uid"], timeout)
        readme = next((f for f in files if f.kind == "documentation" and "readme" in f.name.lower()), None)
        if readme:
            try:
                unused = unused_raw_data(fetch_text(readme.url, timeout))
            except (OSError, urllib.error.URLError, ValueError):
                unused = []
        casa = casa_version_of(files, timeout)
    inputs = node_inputs(files, unused) if with_datalink else None
    return ArchiveMous(dataset_from_row(row, inputs), row, tuple(files), casa, error, tuple(unused))


def query_project(tap_url: str, code: str, with_datalink: bool = True,
                  timeout: float = DEFAULT_TIMEOUT_S) -> list[ArchiveMous]:
    """Every MOUS of project ``code`` in the archive at ``tap_url``; UserError when there is none.

    >>> query_project("https://almascience.eso.org/tap", "2016.1.123")
    Traceback (most recent call last):
    ari_console.errors.UserError: 2016.1.123: not a project code — write it like 2016.1.00123.S
    """
    try:
        project = parse_project(code)
    except ValueError:
        raise UserError(f"{code}: not a project code — write it like 2016.1.00123.S") from None
    rows = _select(tap_url, f"proposal_id = {_quote(project)}", timeout)
    if not rows:
        raise UserError(f"{project}: no such project in the archive at {tap_url} — "
                        "check the code (e.g. on the archive's web query page)")
    rows.sort(key=lambda r: r["member_ous_uid"])
    return [describe(tap_url, row, with_datalink, timeout) for row in rows]


def query_mous(tap_url: str, uid: str, with_datalink: bool = True, timeout: float = DEFAULT_TIMEOUT_S) -> ArchiveMous:
    """The MOUS ``uid`` in the archive at ``tap_url``; UserError when it is not there."""
    try:
        canonical = parse_uid(uid)
    except ValueError:
        raise UserError(f"{uid}: not a MOUS uid — write it like uid://A001/X1296/X1d3") from None
    rows = _select(tap_url, f"member_ous_uid = {_quote(canonical)}", timeout)
    if not rows:
        raise UserError(f"{canonical}: no such MOUS in the archive at {tap_url} — check the uid")
    return describe(tap_url, rows[0], with_datalink, timeout)


# ---------------------------------------------------------------- selection rules

def exclusion_reason(mous: ArchiveMous, rules: SelectionRules, today: str | None = None) -> str | None:
    """Why ``rules`` exclude ``mous`` (one short reason), or None when it is selected.

    ``today`` (``YYYY-MM-DD``) lets a public-only rule also check the release date.
    """
    row, ds = mous.obscore, mous.dataset
    if rules.public_only:
        if (row.get("data_rights") or "").lower() != "public":
            return f"proprietary until {str(row.get('obs_release_date') or '?')[:10]}"
        if today and str(row.get("obs_release_date") or "")[:10] > today:
            return f"not released until {str(row['obs_release_date'])[:10]}"
    if rules.qa2_states and mous.qa2_status not in rules.qa2_states:
        return f"QA2 {mous.qa2_status}"
    if rules.exclude_total_power and ds.array == "TP":
        return "total power"
    if rules.exclude_full_stokes and is_full_stokes(row.get("pol_states")):
        return f"full Stokes ({row.get('pol_states')})"
    if rules.exclude_vlbi and (ds.project.endswith(".V") or "vlbi" in (row.get("scan_intent") or "").lower()):
        return "VLBI"
    if rules.exclude_solar and is_solar(row):
        return "solar"
    if rules.cycles is not None and mous.cycle not in rules.cycles:
        return f"cycle {mous.cycle} not in {', '.join(map(str, rules.cycles))}"
    year = int(ds.project.split(".")[0])
    if rules.project_years is not None and year not in rules.project_years:
        return f"project year {year} not in {', '.join(map(str, rules.project_years))}"
    if rules.exclude_pipeline_imaged and mous.pipeline_imaged:
        return "QA2 images made by the imaging pipeline"
    if ds.size_gb is not None:
        if rules.max_size_gb is not None and ds.size_gb > rules.max_size_gb:
            return f"{ds.size_gb:.1f} GB > max_size_gb {rules.max_size_gb:g}"
        if rules.min_size_gb is not None and ds.size_gb < rules.min_size_gb:
            return f"{ds.size_gb:.1f} GB < min_size_gb {rules.min_size_gb:g}"
    return None


def is_full_stokes(pol_states: str | None) -> bool:
    """True for XX/XY/YX/YY (full polarization) products.

    >>> is_full_stokes("/XX/XY/YX/YY/"), is_full_stokes("/XX/YY/")
    (True, False)
    """
    states = {s for s in (pol_states or "").upper().split("/") if s}
    return {"XY", "YX"} <= states or {"Q", "U"} <= states


def is_solar(row: dict) -> bool:
    """True for observations of the Sun (not of solar-system bodies: comets, planets, asteroids).

    >>> is_solar({"target_name": "Sun"}), is_solar({"science_keyword": "Solar system - Comets"})
    (True, False)
    """
    text = " ".join(str(row.get(k) or "") for k in ("target_name", "targets", "science_keyword",
                                                    "scientific_category"))
    text = re.sub(r"solar[\s_-]*system", " ", text, flags=re.IGNORECASE)
    return bool(re.search(r"\bsun\b|\bsolar\b", text, re.IGNORECASE))


def select(mous: Iterable[ArchiveMous], rules: SelectionRules,
           today: str | None = None) -> tuple[list[ArchiveMous], list[tuple[ArchiveMous, str]]]:
    """(selected, [(excluded, reason)]): every MOUS lands in exactly one list."""
    selected, excluded = [], []
    for m in mous:
        reason = exclusion_reason(m, rules, today)
        if reason is None:
            selected.append(m)
        else:
            excluded.append((m, reason))
    return selected, excluded


def selection_summary(selected: list[ArchiveMous], excluded: list[tuple[ArchiveMous, str]]) -> dict:
    """What an import would queue, before anything is downloaded (for ``--dry-run``).

    Keys: ``mous`` (selected count), ``size_gb`` (the raw data and calibration of those
    whose size the archive gives), ``size_unknown`` (how many have no known size),
    ``excluded`` (count), ``reasons`` ({reason: count}), ``uids`` (the selected MOUS).
    """
    sizes = [m.dataset.size_gb for m in selected]
    reasons: dict[str, int] = {}
    for _, reason in excluded:
        key = reason.split(" until ")[0] if reason.startswith(("proprietary", "not released")) else reason
        reasons[key] = reasons.get(key, 0) + 1
    return {"mous": len(selected), "size_gb": round(sum(s for s in sizes if s is not None), 6),
            "size_unknown": sizes.count(None), "excluded": len(excluded), "reasons": reasons,
            "uids": [m.uid for m in selected]}


# ---------------------------------------------------------------- for `ari datasets import`

def tap_url_of(archive_url: str) -> str:
    """The TAP service under an archive base URL (``https://almascience.eso.org`` -> ``.../tap``).

    >>> tap_url_of("http://127.0.0.1:8080/"), tap_url_of("http://x/tap")
    ('http://127.0.0.1:8080/tap', 'http://x/tap')
    """
    url = archive_url.rstrip("/")
    return url if url.endswith("/tap") else url + "/tap"


def queue_candidates(tap_url: str, projects: Iterable[str] = (), mous: Iterable[str] = (),
                     rules: SelectionRules | None = None, today: str | None = None,
                     timeout: float = DEFAULT_TIMEOUT_S) -> tuple[list[DataSet], dict[str, str]]:
    """The data sets to queue for some project codes and MOUS uids, and the excluded ones with their reason.

    Each DataSet carries what the engine needs later in ``extra["archive"]``: the
    archive metadata, every DataLink file (``files``), what the node downloads
    (``inputs``) and which QA2 products the console fetches (``qa2_files``).
    """
    rules = rules or SelectionRules()
    found: dict[str, ArchiveMous] = {}
    for code in projects:
        for m in query_project(tap_url, code, timeout=timeout):
            found[m.uid] = m
    for uid in mous:
        m = query_mous(tap_url, uid, timeout=timeout)
        found[m.uid] = m
    selected, excluded = select(found.values(), rules, today=today)
    reasons = {m.uid: reason for m, reason in excluded}
    return [_queueable(m) for m in list(selected) + [m for m, _ in excluded]], reasons


def stored_files(archive: dict, key: str) -> list[dict]:
    """``inputs`` (for the node) or ``qa2_files`` (for the console) of a stored archive record.

    Records written before these keys existed are read from their ``files``.
    """
    if key in archive:
        return [dict(f) for f in archive[key] if f.get("url") and f.get("name")]
    files = [ArchiveFile(name=f["name"], url=f["url"], size=_size(f.get("size")), semantics=f.get("semantics") or "",
                         kind=f.get("kind") or classify(f["name"], f.get("semantics") or "", f.get("inside")),
                         inside=f.get("inside"), sha256=f.get("sha256"))
             for f in archive.get("files", []) if f.get("url") and f.get("name")]
    chosen = node_inputs(files, archive.get("unused_raw", ())) if key == "inputs" else qa2_inputs(files)
    return [f.as_dict() for f in chosen]


def _queueable(m: ArchiveMous) -> DataSet:
    archive = {**{k: v for k, v in m.store_row().items() if k != "uid"},
               "files": [f.as_dict() for f in m.files],
               "inputs": [f.as_dict() for f in m.inputs],
               "qa2_files": [f.as_dict() for f in m.qa2_files],
               "unused_raw": list(m.unused_raw), "datalink_error": m.datalink_error}
    return replace(m.dataset, casa_version=m.casa_version,
                   extra={**m.dataset.extra, "archive": archive})

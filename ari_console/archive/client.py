"""The archive client: MOUS by project code or uid over TAP (pyvo), DataLink, selection rules.

The ALMA archive runs a TAP service with an ``ivoa.obscore`` table and a
DataLink service; the demo archive's local service speaks the same. Queries
return ``ArchiveMous`` values: the ``DataSet`` the queue stores (uid, project,
array, band, size, predicted memory and hours) plus the archive metadata the
selection rules and the scheduler need. Nothing here writes to the store.

>>> rules = SelectionRules()
>>> rules.public_only, rules.exclude_total_power
(True, True)
"""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from typing import Iterable

from ..alma import DataSet, parse_array, parse_band, parse_project, parse_uid
from ..errors import UserError

ALMA_TAP_URL = "https://almascience.eso.org/tap"
ALMA_DATALINK_URL = "https://almascience.eso.org/datalink/sync"

# Columns the client reads from ivoa.obscore (the ALMA archive has all of them, except qa2_status).
OBSCORE_COLUMNS = (
    "member_ous_uid", "group_ous_uid", "asdm_uid", "proposal_id", "target_name", "s_ra", "s_dec", "s_fov",
    "s_resolution", "spatial_resolution", "band_list", "antenna_arrays", "frequency", "frequency_support",
    "t_exptime", "obs_release_date", "data_rights", "qa2_passed", "scan_intent", "is_mosaic", "pol_states",
    "science_keyword", "scientific_category", "science_observation",
)
OPTIONAL_COLUMNS = ("qa2_status",)

# Project code year.cycle -> ALMA cycle number (the '.1' call of each year).
_CYCLE_OF_YEAR = {2011: 0, 2012: 1, 2013: 2, 2015: 3, 2016: 4, 2017: 5, 2018: 6, 2019: 7, 2021: 8,
                  2022: 9, 2023: 10, 2024: 11, 2025: 12}


@dataclass(frozen=True)
class ArchiveFile:
    """One downloadable file of a MOUS, as DataLink lists it."""

    name: str
    url: str
    size: int
    sha256: str | None
    semantics: str
    content_type: str | None = None


@dataclass(frozen=True)
class ArchiveMous:
    """A MOUS as the archive describes it: the queue's DataSet plus archive metadata."""

    dataset: DataSet
    obscore: dict
    files: tuple[ArchiveFile, ...] = ()
    casa_version: str | None = None
    datalink_error: str | None = None

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
        """The ALMA cycle of the project (2016.1.x -> 4), or None when unknown."""
        year, kind = self.dataset.project.split(".")[:2]
        return _CYCLE_OF_YEAR.get(int(year)) if kind == "1" else (0 if kind == "0" else None)

    def store_row(self) -> dict:
        """The columns to keep for this MOUS beside the DataSet's own (see the module's report)."""
        row = self.obscore
        return {
            "uid": self.uid, "target": row.get("target_name"), "ra_deg": row.get("s_ra"), "dec_deg": row.get("s_dec"),
            "frequency_ghz": row.get("frequency"), "release_date": row.get("obs_release_date"),
            "data_rights": row.get("data_rights"), "qa2_status": self.qa2_status,
            "pol_states": row.get("pol_states"), "is_mosaic": row.get("is_mosaic"),
            "casa_version": self.casa_version, "asdm_uid": row.get("asdm_uid"),
            "group_ous_uid": row.get("group_ous_uid"),
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
    best = 1
    for lo, hi, width, unit in re.findall(r"\[([\d.]+)\.\.([\d.]+)GHz,([\d.]+)(kHz|MHz)", frequency_support or ""):
        width_ghz = float(width) / (1e6 if unit == "kHz" else 1e3)
        best = max(best, int(round((float(hi) - float(lo)) / width_ghz)))
    return best


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


def dataset_from_row(row: dict, files: Iterable[ArchiveFile] = ()) -> DataSet:
    """The queue's DataSet for one obscore row (size from the DataLink files, when known)."""
    files = list(files)
    # What a node downloads: raw data and the auxiliary tar (not the QA2 products, not the README).
    needed = [f for f in files if f.semantics not in ("#derivation", "#documentation")]
    size = sum(f.size for f in needed) / 1e9 if files else None
    band = str(row.get("band_list") or "").split()
    return DataSet(
        uid=parse_uid(row["member_ous_uid"]), project=parse_project(row["proposal_id"]),
        array=array_of(row.get("antenna_arrays", ""), row.get("scan_intent", "")),
        band=parse_band(band[0]) if band else None,
        size_gb=round(size, 6) if size is not None else None,
        mem_gb=predicted_memory_gb(row), hours=predicted_hours(row),
        extra={"target": row.get("target_name"), "source": "archive"},
    )


# ---------------------------------------------------------------- TAP and DataLink

def _tap(url: str):
    import pyvo

    return pyvo.dal.TAPService(url)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _select(url: str, where: str) -> list[dict]:
    """Rows of ivoa.obscore matching ``where``, one dict per MOUS (first row wins), via pyvo."""
    import pyvo

    columns = ", ".join(OBSCORE_COLUMNS)
    adql = f"SELECT {columns} FROM ivoa.obscore WHERE {where}"
    try:
        result = _tap(url).run_sync(adql)
    except (pyvo.dal.DALServiceError, pyvo.dal.DALFormatError) as exc:
        raise UserError(f"{url}: the archive's TAP service did not answer ({_short(exc)}) — "
                        "check the URL and the network, or use the demo archive") from None
    except pyvo.dal.DALQueryError as exc:
        raise UserError(f"{url}: the archive refused the query ({_short(exc)}) — this is a bug if it persists") from None
    table = result.to_table()
    rows: dict[str, dict] = {}
    for record in table:
        row = {name: _plain(record[name]) for name in table.colnames}
        rows.setdefault(row["member_ous_uid"], row)
    return list(rows.values())


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


def _plain(value):
    """A VOTable cell as a plain Python value (masked -> None, bytes -> str, numpy -> builtin)."""
    import numpy as np

    if value is np.ma.masked or value is None:
        return None
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def datalink_url(tap_url: str) -> str:
    """The DataLink sync endpoint beside a TAP service (``.../tap`` -> ``.../datalink/sync``)."""
    base = tap_url.rstrip("/")
    return (base[: -len("/tap")] if base.endswith("/tap") else base) + "/datalink/sync"


def fetch_datalink(tap_url: str, uid: str) -> tuple[list[ArchiveFile], str | None]:
    """The files DataLink lists for ``uid`` and the service's error message (None when fine)."""
    import pyvo

    try:
        results = pyvo.dal.adhoc.DatalinkQuery(datalink_url(tap_url), id=uid).execute()
    except (pyvo.dal.DALServiceError, pyvo.dal.DALQueryError, pyvo.dal.DALFormatError) as exc:
        return [], _short(exc)
    files, errors = [], []
    table = results.to_table()
    for record in table:
        row = {name: _plain(record[name]) for name in table.colnames}
        if row.get("error_message"):
            errors.append(row["error_message"])
            continue
        checksum = row.get("checksum") or ""
        files.append(ArchiveFile(
            name=row["access_url"].rsplit("/", 1)[-1], url=row["access_url"], size=int(row.get("content_length") or 0),
            sha256=checksum.split(":", 1)[1] if checksum.startswith("sha256:") else None,
            semantics=row.get("semantics") or "", content_type=row.get("content_type")))
    return files, "; ".join(errors) or None


def casa_version_from_readme(text: str) -> str | None:
    """The CASA version a README or restore script says calibration needs.

    >>> casa_version_from_readme("The data were calibrated with CASA version 6.7.0-31.")
    '6.7.0-31'
    >>> casa_version_from_readme("# CASA version: 4.7.2")
    '4.7.2'
    """
    match = re.search(r"CASA\s+(?:version)?\s*:?\s*(\d+\.\d+\.\d+(?:[-.]\d+)?)", text or "", re.IGNORECASE)
    return match.group(1) if match else None


def fetch_text(url: str, timeout: float = 30.0, limit: int = 1 << 20) -> str:
    """A small text file (a README) fetched over HTTP."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read(limit).decode("utf-8", "replace")


def describe(tap_url: str, row: dict, with_datalink: bool = True) -> ArchiveMous:
    """An ArchiveMous for one obscore row, with its files and CASA version when asked."""
    files: list[ArchiveFile] = []
    error = casa = None
    if with_datalink:
        files, error = fetch_datalink(tap_url, row["member_ous_uid"])
        readme = next((f for f in files if f.semantics == "#documentation"), None)
        if readme:
            try:
                casa = casa_version_from_readme(fetch_text(readme.url))
            except (OSError, urllib.error.URLError):
                casa = None
    return ArchiveMous(dataset_from_row(row, files), row, tuple(files), casa, error)


def query_project(tap_url: str, code: str, with_datalink: bool = True) -> list[ArchiveMous]:
    """Every MOUS of project ``code`` in the archive at ``tap_url``; UserError when there is none.

    >>> query_project("https://almascience.eso.org/tap", "2016.1.123")
    Traceback (most recent call last):
    ari_console.errors.UserError: 2016.1.123: not a project code — write it like 2016.1.00123.S
    """
    try:
        project = parse_project(code)
    except ValueError:
        raise UserError(f"{code}: not a project code — write it like 2016.1.00123.S") from None
    rows = _select(tap_url, f"proposal_id = {_quote(project)}")
    if not rows:
        raise UserError(f"{project}: no such project in the archive at {tap_url} — "
                        "check the code (e.g. on the archive's web query page)")
    rows.sort(key=lambda r: r["member_ous_uid"])
    return [describe(tap_url, row, with_datalink) for row in rows]


def query_mous(tap_url: str, uid: str, with_datalink: bool = True) -> ArchiveMous:
    """The MOUS ``uid`` in the archive at ``tap_url``; UserError when it is not there."""
    try:
        canonical = parse_uid(uid)
    except ValueError:
        raise UserError(f"{uid}: not a MOUS uid — write it like uid://A001/X1296/X1d3") from None
    rows = _select(tap_url, f"member_ous_uid = {_quote(canonical)}")
    if not rows:
        raise UserError(f"{canonical}: no such MOUS in the archive at {tap_url} — check the uid")
    return describe(tap_url, rows[0], with_datalink)


# ---------------------------------------------------------------- selection rules

@dataclass(frozen=True)
class SelectionRules:
    """Which MOUS a campaign takes; ARI-L's: public, QA2 passed or semi-passed, no TP/full-Stokes/VLBI/solar.

    ``cycles`` (e.g. ``(2, 3, 4)``) and the size limits are off when None.
    """

    public_only: bool = True
    qa2_states: tuple[str, ...] = ("Pass", "SemiPass")
    exclude_full_stokes: bool = True
    exclude_vlbi: bool = True
    exclude_total_power: bool = True
    exclude_solar: bool = True
    cycles: tuple[int, ...] | None = None
    min_size_gb: float | None = None
    max_size_gb: float | None = None


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
    """True for observations of the Sun."""
    text = " ".join(str(row.get(k) or "") for k in ("target_name", "science_keyword", "scientific_category"))
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

    Keys: ``mous`` (selected count), ``size_gb`` (their raw + auxiliary data, None when
    unknown for any), ``excluded`` (count), ``reasons`` ({reason: count}).
    """
    sizes = [m.dataset.size_gb for m in selected]
    reasons: dict[str, int] = {}
    for _, reason in excluded:
        key = reason.split(" until ")[0] if reason.startswith(("proprietary", "not released")) else reason
        reasons[key] = reasons.get(key, 0) + 1
    return {"mous": len(selected), "size_gb": round(sum(sizes), 6) if None not in sizes else None,
            "excluded": len(excluded), "reasons": reasons}


def rules_from_mapping(values: dict, source: str = "ari.toml [selection]") -> SelectionRules:
    """SelectionRules from a config table, or UserError naming the bad key and the fix."""
    known = {f for f in SelectionRules.__dataclass_fields__}
    rules = SelectionRules()
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{source}: unknown key {key!r} — use one of {', '.join(sorted(known))}")
        default = getattr(rules, key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise UserError(f"{source}: {key} must be true or false, got {value!r} — write {key} = true")
        if key in ("min_size_gb", "max_size_gb") and not (isinstance(value, (int, float)) and value >= 0):
            raise UserError(f"{source}: {key} must be a number of GB, got {value!r} — write {key} = 500")
        if key in ("qa2_states", "cycles"):
            if not isinstance(value, (list, tuple)):
                raise UserError(f"{source}: {key} must be a list, got {value!r} — write {key} = [...]")
            value = tuple(value)
        rules = replace(rules, **{key: value})
    return rules


# ---------------------------------------------------------------- for `ari datasets import`

def tap_url_of(archive_url: str) -> str:
    """The TAP service under an archive base URL (``https://almascience.eso.org`` -> ``.../tap``).

    >>> tap_url_of("http://127.0.0.1:8080/"), tap_url_of("http://x/tap")
    ('http://127.0.0.1:8080/tap', 'http://x/tap')
    """
    url = archive_url.rstrip("/")
    return url if url.endswith("/tap") else url + "/tap"


def queue_candidates(tap_url: str, projects: Iterable[str] = (), mous: Iterable[str] = (),
                     rules: SelectionRules | None = None, today: str | None = None
                     ) -> tuple[list[DataSet], dict[str, str]]:
    """The data sets to queue for some project codes and MOUS uids, and the excluded ones with their reason.

    Each DataSet carries what the engine needs later in ``extra["archive"]``:
    the archive metadata and the DataLink files (url, size, sha256, semantics).
    """
    rules = rules or SelectionRules()
    found: dict[str, ArchiveMous] = {}
    for code in projects:
        for m in query_project(tap_url, code):
            found[m.uid] = m
    for uid in mous:
        m = query_mous(tap_url, uid)
        found[m.uid] = m
    selected, excluded = select(found.values(), rules, today=today)
    reasons = {m.uid: reason for m, reason in excluded}
    return [_queueable(m) for m in list(selected) + [m for m, _ in excluded]], reasons


def _queueable(m: ArchiveMous) -> DataSet:
    files = [{"name": f.name, "url": f.url, "size": f.size, "sha256": f.sha256, "semantics": f.semantics}
             for f in m.files]
    archive = {**{k: v for k, v in m.store_row().items() if k != "uid"}, "files": files}
    return replace(m.dataset, casa_version=m.casa_version,
                   extra={**m.dataset.extra, "archive": archive})

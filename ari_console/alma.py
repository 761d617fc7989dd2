"""ALMA identifiers and the data-set catalogue import.

MOUS uids come in two spellings, the archive's ``uid://A001/X1296/X1d3`` and
the file-name form ``uid___A001_X1296_X1d3``; both parse to the first, which is
how the store keys data sets. Project codes look like ``2016.1.00123.S``.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .errors import UserError

_UID = re.compile(
    r"^\s*(?:uid://|uid___)?A(\d{3})[/_]X([0-9a-f]+)[/_]X([0-9a-f]+)\s*$", re.IGNORECASE
)
_PROJECT = re.compile(r"^\s*(\d{4})\.(\d|A)\.(\d{5})\.([A-Z]{1,2})\s*$", re.IGNORECASE)

ARRAYS = ("12m", "7m", "TP")
_ARRAY_ALIASES = {
    "12m": "12m", "12-m": "12m", "12": "12m", "bl": "12m", "12m array": "12m",
    "7m": "7m", "7-m": "7m", "7": "7m", "aca": "7m", "aca 7m": "7m", "7m array": "7m",
    "tp": "TP", "total power": "TP", "totalpower": "TP", "sd": "TP", "single dish": "TP",
    # the 12 m array's configurations as scheduling blocks name them (TM1, TM2), and the antenna
    # name prefixes of 7 m (CM) and total-power (PM) dishes
    "tm1": "12m", "tm2": "12m", "cm": "7m", "pm": "TP",
}
BANDS = range(1, 11)


def parse_uid(text: str) -> str:
    """The canonical MOUS uid for either spelling, or ValueError.

    >>> parse_uid("uid___A001_X1296_X1d3")
    'uid://A001/X1296/X1d3'
    >>> parse_uid("uid://A001/X1296/X1D3")
    'uid://A001/X1296/X1d3'
    """
    match = _UID.match(text or "")
    if not match:
        raise ValueError(f"not a MOUS uid: {text!r}")
    archive, a, b = match.groups()
    # The archive writes the hex parts with lower-case digits after an upper-case X.
    return f"uid://A{archive}/X{a.lower()}/X{b.lower()}"


def uid_filename(uid: str) -> str:
    """The file-name spelling of ``uid`` (as in product names).

    >>> uid_filename("uid://A001/X1296/X1d3")
    'uid___A001_X1296_X1d3'
    """
    return parse_uid(uid).replace("uid://", "uid___").replace("/", "_")


def is_uid(text: str) -> bool:
    """True when ``text`` is a MOUS uid in either spelling."""
    return bool(_UID.match(text or ""))


def parse_project(text: str) -> str:
    """The canonical project code, or ValueError.

    >>> parse_project(" 2016.1.00123.s ")
    '2016.1.00123.S'
    """
    match = _PROJECT.match(text or "")
    if not match:
        raise ValueError(f"not a project code: {text!r}")
    year, cycle, number, kind = match.groups()
    return f"{year}.{cycle.upper()}.{number}.{kind.upper()}"


def parse_array(text: str) -> str:
    """``12m``, ``7m`` or ``TP`` for the usual ways of writing them, or ValueError.

    >>> parse_array("ACA"), parse_array("Total Power"), parse_array("TM2")
    ('7m', 'TP', '12m')
    """
    key = " ".join((text or "").strip().lower().split())
    if key in _ARRAY_ALIASES:
        return _ARRAY_ALIASES[key]
    raise ValueError(f"not an ALMA array: {text!r}")


def parse_band(text: str | int) -> int:
    """The ALMA band number 1-10 from ``6``, ``B6``, ``Band 6`` or ``ALMA_RB_06``.

    >>> parse_band("ALMA_RB_06"), parse_band("band 7")
    (6, 7)
    """
    match = re.fullmatch(r"\s*(?:alma_rb_|band\s*|b)?0*(\d{1,2})\s*", str(text), re.IGNORECASE)
    if match and int(match.group(1)) in BANDS:
        return int(match.group(1))
    raise ValueError(f"not an ALMA band (1-10): {text!r}")


@dataclass(frozen=True)
class DataSet:
    """One MOUS as the queue knows it before any attempt."""

    uid: str
    project: str
    array: str | None = None
    band: int | None = None
    size_gb: float | None = None
    mem_gb: float | None = None
    hours: float | None = None
    extra: dict = field(default_factory=dict, compare=False)
    casa_version: str | None = None
    n_spw: int | None = None
    n_chan: int | None = None
    is_mosaic: bool | None = None
    n_eb: int | None = None
    archive_hours: float | None = None
    archive_mem_gb: float | None = None

    def row(self) -> dict:
        """The columns the store keeps for this data set (None: unknown).

        The archive's metadata runtime predictions learn from: spectral windows
        (``n_spw``), channels per window (``n_chan``, their mean, so
        ``n_spw x n_chan`` is the total), mosaic or not, execution blocks (``n_eb``).
        ``hours``/``mem_gb`` are explicit values (a catalogue's, an operator's: they win
        over any prediction); ``archive_hours``/``archive_mem_gb`` the archive's guess,
        where predictions start and which the history fit learns past.
        """
        return {"uid": self.uid, "project": self.project, "array": self.array, "band": self.band,
                "size_gb": self.size_gb, "mem_gb": self.mem_gb, "hours": self.hours,
                "casa_version": self.casa_version, "n_spw": self.n_spw, "n_chan": self.n_chan,
                "is_mosaic": self.is_mosaic, "n_eb": self.n_eb, "archive_hours": self.archive_hours,
                "archive_mem_gb": self.archive_mem_gb}


CSV_REQUIRED = ("uid", "project")
CSV_OPTIONAL = ("array", "band", "size_gb", "mem_gb", "hours", "n_spw", "n_chan", "is_mosaic", "n_eb")


def _positive(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError(text)
    return value


def _count(text: str) -> int:
    """A whole number of at least 1 (``4`` or ``4.0``), or ValueError."""
    value = float(text)
    if not value >= 1 or not value.is_integer() or value == float("inf"):
        raise ValueError(text)
    return int(value)


def parse_flag(text: str) -> bool:
    """True or false as a catalogue or the archive writes it (``T``, ``yes``, ``1``, ``false`` ...).

    >>> parse_flag("T"), parse_flag("no")
    (True, False)
    """
    key = str(text).strip().lower()
    if key in ("t", "true", "yes", "y", "1"):
        return True
    if key in ("f", "false", "no", "n", "0"):
        return False
    raise ValueError(f"not true or false: {text!r}")


_PARSERS = {
    "uid": (parse_uid, "a MOUS uid like uid://A001/X1296/X1d3"),
    "project": (parse_project, "a project code like 2016.1.00123.S"),
    "array": (parse_array, "12m, 7m or TP"),
    "band": (parse_band, "a band number 1-10"),
    "size_gb": (_positive, "a size in GB, e.g. 12.5"),
    "mem_gb": (_positive, "a memory in GB, e.g. 16"),
    "hours": (_positive, "hours on a speed-1.0 node, e.g. 6"),
    "n_spw": (_count, "a number of spectral windows, e.g. 4"),
    "n_chan": (_count, "channels per spectral window, e.g. 1920"),
    "is_mosaic": (parse_flag, "true or false"),
    "n_eb": (_count, "a number of execution blocks, e.g. 2"),
}


def check_files(files: object) -> list[dict]:
    """The ``files`` of a catalogue row (JSON text or a list) as a list of entries, or ValueError saying why.

    Each entry needs a ``url`` and a plain file ``name`` (no directory, no
    ``..``): the node writes it inside the attempt's download dir, never elsewhere.

    >>> check_files('[{"url": "https://a/x.tar", "name": "x.tar"}]')[0]["name"]
    'x.tar'
    >>> check_files('[{"url": "https://a/x", "name": "../../x"}]')
    Traceback (most recent call last):
    ...
    ValueError: entry 1: name "../../x" must be a plain file name (no "/", no "..")
    """
    if isinstance(files, str):
        try:
            files = json.loads(files)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(files, list):
        raise ValueError(f"must be a JSON list of files, got {type(files).__name__}")
    out = []
    for i, item in enumerate(files, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not item.get("url"):
            raise ValueError(f"entry {i} needs a \"url\" (and a \"name\")")
        name = item.get("name")
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..") \
                or ".." in name.split("/") or "\0" in name:
            raise ValueError(f'entry {i}: name "{name}" must be a plain file name (no "/", no "..")')
        size = item.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float)) or not size >= 0
                                 or size == float("inf")):
            raise ValueError(f"entry {i}: size {size!r} must be a number of bytes")
        out.append(dict(item))
    return out


def read_datasets_csv(path: Path) -> list[DataSet]:
    """Every data set in a catalogue CSV, or a UserError naming every rejected row and why.

    Columns: at least ``uid,project``; optionally ``array,band,size_gb,mem_gb,hours``
    and the archive's metadata ``n_spw,n_chan,is_mosaic,n_eb`` (an empty cell is
    unknown; other columns are kept as ``extra``). The whole file is checked before
    anything is returned, so a caller never half-imports it, and one error names
    all its bad rows (an operator fixes them in one go).
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return list(_parse_rows(path.name, csv.reader(fh)))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file — give the path of a CSV with columns uid,project") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text CSV file — export the catalogue as UTF-8 CSV") from None
    except csv.Error as exc:
        raise UserError(f"{path}: not readable as CSV ({exc}) — check its quoting") from None


class _Rejected(Exception):
    """One catalogue row that cannot be imported: the reason and its fix."""


def _parse_rows(name: str, reader: Iterable[list[str]]) -> Iterator[DataSet]:
    header: list[str] | None = None
    seen: dict[str, int] = {}
    rows: list[DataSet] = []
    rejected: list[str] = []
    for lineno, cells in enumerate(reader, start=1):
        if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [c.strip().lower() for c in cells]
            missing = [c for c in CSV_REQUIRED if c not in header]
            if missing:
                raise UserError(f"{name}: line {lineno}: header lacks {', '.join(missing)} — "
                                f"the first row must name the columns, at least uid,project")
            continue
        try:
            rows.append(_parse_row(header, cells, lineno, seen))
        except _Rejected as exc:
            rejected.append(f"line {lineno}: {exc}")
    if header is None:
        raise UserError(f"{name}: the file is empty — it needs a header row uid,project and one row per MOUS")
    if rejected:
        more = f" ({len(rejected)} rows rejected, nothing imported)" if len(rejected) > 1 else ""
        raise UserError(f"{name}: " + "; ".join(rejected) + more)
    yield from rows


def _parse_row(header: list[str], cells: list[str], lineno: int, seen: dict[str, int]) -> DataSet:
    """One catalogue row as a data set, or _Rejected saying what is wrong and the fix."""
    if len(cells) > len(header):
        raise _Rejected(f"{len(cells)} values for {len(header)} columns — quote values that contain commas")
    values = dict(zip(header, (c.strip() for c in cells)))
    parsed: dict = {}
    for column, (parse, expected) in _PARSERS.items():
        raw = values.get(column, "")
        if raw == "":
            if column in CSV_REQUIRED:
                raise _Rejected(f"{column} is empty — write {expected}")
            continue
        try:
            parsed[column] = parse(raw)
        except ValueError:
            raise _Rejected(f'{column} "{raw}" is not valid — write {expected}') from None
    uid = parsed["uid"]
    if uid in seen:
        raise _Rejected(f"{uid} is already on line {seen[uid]} — keep one row per MOUS")
    seen[uid] = lineno
    extra = {k: v for k, v in values.items() if k not in _PARSERS and v != ""}
    if "files" in extra:
        try:
            check_files(extra["files"])
        except ValueError as exc:
            raise _Rejected(f'files {exc} — write a JSON list like [{{"url": "https://...", "name": "x.tar"}}]') \
                from None
    return DataSet(**parsed, extra=extra)

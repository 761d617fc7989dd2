"""A local ALMA-like archive service: TAP sync (ADQL on ivoa.obscore), DataLink, ranged downloads.

It serves a demo archive built by ``build.py`` (its ``manifest.json`` and
``files/``) over HTTP with the protocols the real ALMA archive speaks, so the
real client code is tested against the same requests:

- ``/tap/sync`` (GET or POST; ``REQUEST=doQuery``, ``LANG=ADQL``, ``QUERY=...``,
  optional ``MAXREC``): the ADQL subset ``SELECT [TOP n] cols|* FROM ivoa.obscore
  [WHERE ...] [ORDER BY col [ASC|DESC]]`` with ``= != <> < <= > >=``, ``LIKE``,
  ``ILIKE``, ``IN (...)``, ``NOT``, ``AND``, ``OR`` and parentheses; a VOTable
  out, or a VOTable with ``QUERY_STATUS=ERROR`` and the reason;
  ``ivoa.obscore`` has the ALMA archive's 64 columns and one row per source and
  spw (``obs_id`` = ``<mous>.source.<target>.spw.<n>``), so a MOUS has many rows;
- ``/datalink/sync?ID=<mous uid>``: the DataLink VOTable as the ALMA archive
  writes it (columns ``ID access_url service_def error_message semantics
  description content_type content_length readable``, no checksum): the README
  ``#documentation``, the product tar ``#this``, the auxiliary tar ``#auxiliary``,
  the raw ASDM tars ``#progenitor``, and for each of the two tars a row with an
  empty ``access_url`` and a ``service_def`` naming a ``RESOURCE type="meta"``
  (``standardID`` DataLink, ``accessURL`` ``.../datalink/sync?ID=<tar name>``);
  ``content_length`` is -1 for a MOUS whose sizes the archive does not know;
- ``/datalink/sync?ID=<tar name>``: the recursive document: each file in the
  tar's ``product/`` (``#this``), ``calibration/ script/ qa/`` (``#auxiliary``)
  and ``log/`` (``#documentation``), downloadable one by one;
- ``/files/<mous>/<name>`` (and ``/files/<mous>/<tar>/<file>`` for a file inside
  a tar): the file, with ``Accept-Ranges``, ``Range`` -> 206 + ``Content-Range``;
  no checksum header, as the archive sends none (``checksum_headers`` adds
  ``Digest: sha-256=<base64>`` and ``X-Checksum-Sha256`` for tests of that path).

Faults the demo needs (from the manifest, or given to ``make_server``): a file
with ``corrupt_once`` has one byte flipped (at its ``corrupt_at``, else its
middle byte: the demo archive puts it in a tar header, which a node detects by
reading the tar through) in the first response that carries that byte (``corrupt_times``: in that many responses, so a runner's own
download retries all fail and the attempt fails as ``download``); one with
``drop_once_after`` has its first response cut (the socket closed) after that
many bytes.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from ..alma import parse_uid, uid_filename

OBSCORE = "ivoa.obscore"
MAX_ROWS = 100000


# ---------------------------------------------------------------- ADQL subset

class AdqlError(ValueError):
    """A query outside the supported ADQL subset, or naming an unknown column/table."""


@dataclass(frozen=True)
class Query:
    """A parsed ``SELECT``: columns (None = all), table, row predicate, order, limit."""

    columns: list[str] | None
    table: str
    where: Callable[[dict], bool]
    order_by: tuple[str, bool] | None = None
    top: int | None = None


_TOKEN = re.compile(r"""\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|
    (?P<op><>|!=|<=|>=|=|<|>)|(?P<punct>[(),*])|(?P<word>[A-Za-z_][A-Za-z0-9_.]*|"[^"]+"))""", re.X)


def tokenize(text: str) -> list[tuple[str, Any]]:
    """ADQL text as (kind, value) tokens; kinds: str, num, op, punct, word.

    >>> tokenize("a = 'x''y'")
    [('word', 'a'), ('op', '='), ('str', "x'y")]
    """
    tokens, pos, text = [], 0, text.strip().rstrip(";")
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise AdqlError(f"cannot parse the query at: {text[pos:pos + 30]!r}")
        pos = match.end()
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "str":
            value = value[1:-1].replace("''", "'")
        elif kind == "num":
            value = float(value) if any(c in value for c in ".eE") else int(value)
        elif kind == "word" and value.startswith('"'):
            value = value[1:-1]
        tokens.append((kind, value))
    return tokens


class _Parser:
    """Recursive descent over the tokens of one SELECT."""

    def __init__(self, tokens: list[tuple[str, Any]], columns: set[str]):
        self.tokens, self.pos, self.known = tokens, 0, columns

    def peek(self, offset: int = 0) -> tuple[str, Any] | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def keyword(self, *words: str) -> bool:
        tok = self.peek()
        if tok and tok[0] == "word" and tok[1].upper() in words:
            self.pos += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            raise AdqlError(f"expected {word} at {self._where()}")

    def expect_punct(self, char: str) -> None:
        tok = self.peek()
        if tok != ("punct", char):
            raise AdqlError(f"expected '{char}' at {self._where()}")
        self.pos += 1

    def _where(self) -> str:
        tok = self.peek()
        return "the end of the query" if tok is None else repr(tok[1])

    def column(self) -> str:
        tok = self.peek()
        if not tok or tok[0] != "word":
            raise AdqlError(f"expected a column name at {self._where()}")
        self.pos += 1
        name = tok[1].split(".")[-1].lower()
        if name not in self.known:
            raise AdqlError(f"unknown column {tok[1]!r} in {OBSCORE}")
        return name

    def select(self) -> Query:
        self.expect_keyword("SELECT")
        top = None
        if self.keyword("TOP"):
            tok = self.peek()
            if not tok or tok[0] != "num":
                raise AdqlError("TOP needs a number")
            top, self.pos = int(tok[1]), self.pos + 1
        if self.peek() == ("punct", "*"):
            self.pos += 1
            columns = None
        else:
            columns = [self.column()]
            while self.peek() == ("punct", ","):
                self.pos += 1
                columns.append(self.column())
        self.expect_keyword("FROM")
        tok = self.peek()
        if not tok or tok[0] != "word":
            raise AdqlError("expected a table name after FROM")
        self.pos += 1
        if tok[1].lower() not in (OBSCORE, "obscore"):
            raise AdqlError(f"unknown table {tok[1]!r}: this service has {OBSCORE}")
        where = (lambda row: True)
        if self.keyword("WHERE"):
            where = self.disjunction()
        order = None
        if self.keyword("ORDER"):
            self.expect_keyword("BY")
            name = self.column()
            descending = self.keyword("DESC")
            if not descending:
                self.keyword("ASC")
            order = (name, descending)
        if self.peek() is not None:
            raise AdqlError(f"unexpected {self._where()}")
        return Query(columns, OBSCORE, where, order, top)

    def disjunction(self) -> Callable[[dict], bool]:
        parts = [self.conjunction()]
        while self.keyword("OR"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda row: any(p(row) for p in parts))

    def conjunction(self) -> Callable[[dict], bool]:
        parts = [self.negation()]
        while self.keyword("AND"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else (lambda row: all(p(row) for p in parts))

    def negation(self) -> Callable[[dict], bool]:
        if self.keyword("NOT"):
            inner = self.negation()
            return lambda row: not inner(row)
        if self.peek() == ("punct", "("):
            self.pos += 1
            inner = self.disjunction()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def literal(self) -> Any:
        tok = self.peek()
        if not tok or tok[0] not in ("str", "num"):
            raise AdqlError(f"expected a quoted string or a number at {self._where()}")
        self.pos += 1
        return tok[1]

    def comparison(self) -> Callable[[dict], bool]:
        name = self.column()
        negate = self.keyword("NOT")
        if self.keyword("LIKE", "ILIKE"):
            fold = self.tokens[self.pos - 1][1].upper() == "ILIKE"
            pattern = like_regex(str(self.literal()), fold)
            test = (lambda row: row.get(name) is not None and bool(pattern.fullmatch(str(row[name]))))
        elif self.keyword("IN"):
            self.expect_punct("(")
            values = [self.literal()]
            while self.peek() == ("punct", ","):
                self.pos += 1
                values.append(self.literal())
            self.expect_punct(")")
            test = (lambda row: any(_equal(row.get(name), v) for v in values))
        elif self.keyword("IS"):
            is_not = self.keyword("NOT")
            self.expect_keyword("NULL")
            return (lambda row: (row.get(name) is None) != is_not)
        else:
            if negate:
                raise AdqlError("NOT must come before LIKE or IN")
            tok = self.peek()
            if not tok or tok[0] != "op":
                raise AdqlError(f"expected an operator after {name} at {self._where()}")
            self.pos += 1
            return _compare(name, tok[1], self.literal())
        return (lambda row: not test(row)) if negate else test


def like_regex(pattern: str, fold: bool = False) -> re.Pattern:
    """The regex of an ADQL LIKE pattern (``%`` any run, ``_`` one character).

    >>> bool(like_regex("2016.1.%").fullmatch("2016.1.00123.S"))
    True
    """
    body = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(body, re.IGNORECASE | re.DOTALL if fold else re.DOTALL)


def _equal(value: Any, literal: Any) -> bool:
    if value is None:
        return False
    if isinstance(literal, (int, float)) and not isinstance(value, str):
        return float(value) == float(literal)
    return str(value) == str(literal)


def _compare(name: str, op: str, literal: Any) -> Callable[[dict], bool]:
    def test(row: dict) -> bool:
        value = row.get(name)
        if value is None:
            return False
        if op == "=":
            return _equal(value, literal)
        if op in ("!=", "<>"):
            return not _equal(value, literal)
        try:
            a, b = (float(value), float(literal)) if isinstance(literal, (int, float)) else (str(value), str(literal))
        except (TypeError, ValueError):
            return False
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]

    return test


def parse_adql(text: str, columns: set[str]) -> Query:
    """Parse one ADQL SELECT on ivoa.obscore, or AdqlError with what is wrong."""
    if not text or not text.strip():
        raise AdqlError("the QUERY parameter is empty")
    return _Parser(tokenize(text), columns).select()


def run_query(query: Query, rows: list[dict], maxrec: int | None = None) -> tuple[list[str], list[dict], bool]:
    """(columns, matching rows, overflowed) for ``query`` over ``rows``."""
    matched = [r for r in rows if query.where(r)]
    if query.order_by:
        name, descending = query.order_by
        present = [r for r in matched if r.get(name) is not None]
        absent = [r for r in matched if r.get(name) is None]
        matched = sorted(present, key=lambda r: r[name], reverse=descending) + absent
    limit = min(x for x in (query.top, maxrec, MAX_ROWS) if x is not None)
    # TOP is what the user asked for; only a cut by MAXREC (or the service's cap) is an overflow.
    overflow = len(matched) > limit and limit != query.top
    columns = query.columns or list(rows[0].keys() if rows else [])
    return columns, matched[:limit], overflow


# ---------------------------------------------------------------- VOTables

def column_types(rows: list[dict]) -> dict[str, type]:
    """Each column's Python type (str, int, float, bool), from its first non-null value."""
    types: dict[str, type] = {}
    for row in rows:
        for name, value in row.items():
            if name not in types or types[name] is type(None):
                types[name] = type(value)
    return {k: (str if v is type(None) else v) for k, v in types.items()}


def votable_bytes(columns: list[str], rows: list[dict], types: dict[str, type], overflow: bool = False,
                  descriptions: dict[str, str] | None = None) -> bytes:
    """A TAP result VOTable (QUERY_STATUS OK, or OVERFLOW when truncated) built with astropy."""
    import numpy as np
    from astropy.io.votable.tree import Info, VOTableFile
    from astropy.table import MaskedColumn, Table

    table = Table()
    for name in columns:
        kind = types.get(name, str)
        values = [r.get(name) for r in rows]
        mask = [v is None for v in values]
        if kind is float:
            data = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
        elif kind is int:
            data = np.array([0 if v is None else int(v) for v in values], dtype=np.int64)
        elif kind is bool:
            data = np.array([bool(v) for v in values], dtype=bool)
        else:
            data = np.array(["" if v is None else str(v) for v in values] or [""], dtype=str)[: len(values)]
        table[name] = MaskedColumn(data, mask=mask, description=(descriptions or {}).get(name))
    votable = VOTableFile.from_table(table)
    resource = votable.resources[0]
    resource.type = "results"
    resource.infos.append(Info(name="QUERY_STATUS", value="OVERFLOW" if overflow else "OK"))
    buffer = io.BytesIO()
    votable.to_xml(buffer)
    return buffer.getvalue()


def error_votable(message: str) -> bytes:
    """A DALI error document: a VOTable whose INFO QUERY_STATUS is ERROR, with ``message``."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n'
            '<RESOURCE type="results">\n'
            f'<INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>\n'
            '</RESOURCE>\n</VOTABLE>\n').encode()


# ---------------------------------------------------------------- the archive behind it

@dataclass
class Fault:
    """A deliberate download problem on one file: a cut once, a flipped byte once or ``corrupt_times`` times."""

    corrupt_once: bool = False
    drop_once_after: int | None = None
    corrupt_times: int = 0
    corrupt_at: int | None = None

    @property
    def corruptions(self) -> int:
        """How many responses get a flipped byte.

        >>> Fault(corrupt_once=True).corruptions, Fault(corrupt_times=6).corruptions
        (1, 6)
        """
        return max(self.corrupt_times, 1 if self.corrupt_once else 0)


@dataclass
class Archive:
    """The served archive: obscore rows, files per MOUS, faults and what has been served."""

    root: Path
    rows: list[dict]
    files: dict[str, list[dict]]
    faults: dict[str, Fault] = field(default_factory=dict)
    checksum_headers: bool = False
    spent: dict[tuple[str, str], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, path: str, kind: str, times: int = 1) -> bool:
        """True the first ``times`` times fault ``kind`` of ``path`` is asked for, False afterwards."""
        with self.lock:
            used = self.spent.get((path, kind), 0)
            if used >= times:
                return False
            self.spent[(path, kind)] = used + 1
            return True


def load_archive(root: Path, faults: dict[str, Fault] | None = None) -> Archive:
    """The archive in ``root`` (a built demo archive); faults from its manifest plus ``faults``."""
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    rows, files, all_faults = [], {}, {}
    for uid, entry in manifest["mous"].items():
        rows += [dict(r) for r in entry.get("obscore_rows") or [entry["obscore"]]]
        files[uid] = [dict(f, sizes_known=entry.get("sizes_known", True)) for f in entry["files"]]
        for f in entry["files"]:
            if f.get("corrupt_once") or f.get("drop_once_after"):
                all_faults[f["path"]] = Fault(bool(f.get("corrupt_once")), f.get("drop_once_after"),
                                              corrupt_at=f.get("corrupt_at"))
    all_faults.update(faults or {})
    return Archive(Path(root), rows, files, all_faults)


DATALINK_COLUMNS = ("ID", "access_url", "service_def", "error_message", "semantics", "description",
                    "content_type", "content_length", "readable")
DATALINK_STANDARD_ID = "ivo://ivoa.net/std/DataLink#links-1.0"


def _row(ident: str, **values) -> dict:
    return {**{c: None for c in DATALINK_COLUMNS}, "ID": ident, **values}


def datalink_rows(archive: Archive, ident: str, base_url: str) -> tuple[list[dict], dict[str, str]]:
    """The DataLink rows for ``ident`` (a MOUS uid, or a tar's name) and the ad-hoc services they name.

    Services: {service_def ID: accessURL} of the recursive DataLink documents.
    """
    inner = _tar_listing(archive, ident, base_url)
    if inner is not None:
        return inner, {}
    try:
        uid = parse_uid(ident)
    except ValueError:
        return [_row(ident, error_message=f"UsageFault: {ident!r} is not a MOUS uid", semantics="#this")], {}
    row = next((r for r in archive.rows if r["member_ous_uid"] == uid), None)
    if row is None:
        return [_row(ident, error_message=f"NotFoundFault: no MOUS {uid} in this archive", semantics="#this")], {}
    if row.get("data_rights") != "Public":
        return [_row(ident, error_message=f"AuthorizationFault: {uid} is proprietary until "
                     f"{row.get('obs_release_date')}", semantics="#this", readable=False)], {}
    out, services = [], {}
    files = sorted(archive.files.get(uid, []), key=lambda f: _ORDER.get(f["semantics"], 9))
    for f in files:
        out.append(_row(ident, access_url=f"{base_url}/{quote(f['path'])}", semantics=f["semantics"],
                        description=_describe(f), content_type=_content_type(f["name"]),
                        content_length=int(f["size"]) if f.get("sizes_known", True) else -1, readable=True))
        if f.get("members"):
            service = f"DataLink.{f['name']}"
            services[service] = f"{base_url}/datalink/sync?ID={quote(f['name'])}"
            out.append(_row(ident, service_def=service, semantics=f["semantics"],
                            content_type="application/x-votable+xml;content=datalink"))
    if not out:
        out.append(_row(ident, error_message=f"NotFoundFault: MOUS {uid} has no files in this archive",
                        semantics="#this"))
    return out, services


_ORDER = {"#documentation": 0, "#this": 1, "#auxiliary": 2, "#progenitor": 3}


def _tar_listing(archive: Archive, name: str, base_url: str) -> list[dict] | None:
    """The recursive DataLink document of the tar called ``name``, or None when no tar has that name."""
    for files in archive.files.values():
        for f in files:
            if f["name"] == name and f.get("members"):
                folder = f["path"].rsplit("/", 1)[0]
                return [_row(name, access_url=f"{base_url}/{quote(folder)}/{quote(name)}/{quote(m['name'])}",
                             semantics=m["semantics"], description=_describe_member(m),
                             content_type=_content_type(m["name"]),
                             content_length=int(m["size"]) if f.get("sizes_known", True) else -1, readable=True)
                        for m in f["members"]]
    return None


def _describe(f: dict) -> str:
    if f["semantics"] == "#documentation":
        return f"Download documentation for {f['name']}|README."
    return "Download dataset of type: {}, and class: N/A.".format(
        {"#progenitor": "", "#this": "null", "#auxiliary": "null"}.get(f["semantics"], "null"))


def _describe_member(m: dict) -> str:
    kind = {"product": ("product", "SCIENCE"), "calibration": ("calibration", "CALIBRATION"),
            "script": ("script", "SCRIPT"), "qa": ("qa", "QA2"), "log": ("log", "LOG")}.get(m["folder"], ("aux", "AUX"))
    if m["semantics"] == "#documentation":
        return f"Download documentation for {m['folder']}/{m['name']}|{kind[1]}."
    return f"Download dataset of type: {kind[0]}, and class: {kind[1]}."


def _content_type(name: str) -> str:
    low = name.lower()
    if low.endswith(".tar"):
        return "application/x-tar"
    if low.endswith((".txt", ".py", ".json")) or "readme" in low:
        return "text/plain"
    if low.endswith(".xml"):
        return "text/xml"
    return "application/octet-stream"


def datalink_votable(rows: list[dict], services: dict[str, str]) -> bytes:
    """A DataLink VOTable written as the ALMA archive writes it (TABLEDATA, meta RESOURCEs)."""
    def td(value) -> str:
        if value is None:
            return "<TD />"
        if isinstance(value, bool):
            return f"<TD>{'true' if value else 'false'}</TD>"
        return f"<TD>{escape(str(value))}</TD>"

    fields = "".join(
        f'      <FIELD name="{c}" datatype="{t}"{a} />\n' for c, t, a in (
            ("ID", "char", ' arraysize="*" ucd="meta.id;meta.main"'),
            ("access_url", "char", ' arraysize="*" ucd="meta.ref.url"'),
            ("service_def", "char", ' arraysize="*" ucd="meta.ref"'),
            ("error_message", "char", ' arraysize="*" ucd="meta.code.error"'),
            ("semantics", "char", ' arraysize="*" ucd="meta.code"'),
            ("description", "char", ' arraysize="*" ucd="meta.note"'),
            ("content_type", "char", ' arraysize="*" ucd="meta.code.mime"'),
            ("content_length", "long", ' ucd="phys.size;meta.file" unit="byte"'),
            ("readable", "boolean", "")))
    body = "".join("          <TR>" + "".join(td(r[c]) for c in DATALINK_COLUMNS) + "</TR>\n" for r in rows)
    meta = "".join(
        f'  <RESOURCE type="meta" ID="{escape(sid)}" utype="adhoc:service">\n'
        f'    <PARAM name="standardID" datatype="char" arraysize="*" value="{DATALINK_STANDARD_ID}" />\n'
        f'    <PARAM name="accessURL" datatype="char" arraysize="*" value="{escape(url)}" />\n'
        '    <GROUP name="inputParams" />\n  </RESOURCE>\n' for sid, url in services.items())
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<VOTABLE xmlns="http://www.ivoa.net/xml/VOTable/v1.3" version="1.4">\n'
            '  <RESOURCE type="results">\n    <TABLE>\n' + fields +
            '      <DATA>\n        <TABLEDATA>\n' + body + '        </TABLEDATA>\n      </DATA>\n'
            '    </TABLE>\n  </RESOURCE>\n' + meta + '</VOTABLE>\n').encode()


# ---------------------------------------------------------------- HTTP

class ArchiveHandler(BaseHTTPRequestHandler):
    """One request to the archive service."""

    server_version = "ari-demo-archive/1"
    protocol_version = "HTTP/1.1"

    @property
    def archive(self) -> Archive:
        return self.server.archive  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def base_url(self) -> str:
        host = self.headers.get("Host") or f"{self.server.server_address[0]}:{self.server.server_address[1]}"
        return f"http://{host}"

    def params(self) -> dict[str, str]:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        if self.command == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            query.update(parse_qs(body, keep_blank_values=True))
        return {k.upper(): v[-1] for k, v in query.items()}

    def send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (stdlib's name)
        try:
            self.route()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # our bug: answer with it rather than drop the connection
            self.send_body(500, error_votable(f"internal error: {type(exc).__name__}: {exc}"),
                           "application/x-votable+xml")
            raise

    def route(self) -> None:
        """Dispatch on the request path."""
        path = unquote(urlsplit(self.path).path).rstrip("/")
        if path in ("/tap/sync",):
            self.tap_sync()
        elif path == "/datalink/sync":
            self.datalink()
        elif path.startswith("/files/"):
            self.download(path.lstrip("/"))
        elif path in ("", "/tap", "/tap/availability"):
            self.send_body(200, b"ari demo ALMA archive: /tap/sync /datalink/sync /files/\n", "text/plain")
        else:
            self.send_body(404, f"no such resource: {path}\n".encode(), "text/plain")

    do_POST = do_GET
    do_HEAD = do_GET

    def tap_sync(self) -> None:
        params = self.params()
        try:
            if params.get("REQUEST", "doQuery") != "doQuery":
                raise AdqlError(f"REQUEST must be doQuery, got {params.get('REQUEST')!r}")
            if params.get("LANG", "ADQL").upper().split("-")[0] != "ADQL":
                raise AdqlError(f"LANG must be ADQL, got {params.get('LANG')!r}")
            types = column_types(self.archive.rows)
            query = parse_adql(params.get("QUERY", ""), set(types))
            maxrec = int(params["MAXREC"]) if params.get("MAXREC", "").strip() else None
            columns, rows, overflow = run_query(query, self.archive.rows, maxrec)
            body = votable_bytes(columns, rows, types, overflow)
        except (AdqlError, ValueError) as exc:
            self.send_body(400, error_votable(f"Invalid query: {exc}"), "application/x-votable+xml")
            return
        self.send_body(200, body, "application/x-votable+xml")

    def datalink(self) -> None:
        ident = self.params().get("ID", "")
        if not ident:
            self.send_body(400, error_votable("UsageFault: the ID parameter is missing"), "application/x-votable+xml")
            return
        rows, services = datalink_rows(self.archive, ident, self.base_url())
        self.send_body(200, datalink_votable(rows, services), "application/x-votable+xml;content=datalink")

    def download(self, rel: str) -> None:
        entry = next((f for files in self.archive.files.values() for f in files if f["path"] == rel), None)
        inner = None
        if entry is None:
            folder, _, member = rel.rpartition("/")
            tar_entry = next((f for files in self.archive.files.values() for f in files if f["path"] == folder), None)
            listed = next((m for m in (tar_entry or {}).get("members", []) if m["name"] == member), None)
            if listed is None:
                self.send_body(404, f"no such file: {rel}\n".encode(), "text/plain")
                return
            with tarfile.open(self.archive.root / folder) as tar:
                inner = tar.extractfile(listed["member"]).read()
            entry = {"name": member, "sha256": None}
        path = self.archive.root / rel
        size = len(inner) if inner is not None else path.stat().st_size
        first, last = 0, size - 1
        partial = False
        spec = self.headers.get("Range")
        if spec:
            parsed = parse_range(spec, size)
            if parsed is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, last = parsed
            partial = True
        length = last - first + 1
        self.send_response(206 if partial else 200)
        self.send_header("Content-Type", _content_type(entry["name"]))
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if self.archive.checksum_headers and entry.get("sha256"):
            self.send_header("ETag", f'"{entry["sha256"][:32]}"')
            self.send_header("Digest", "sha-256=" + base64.b64encode(bytes.fromhex(entry["sha256"])).decode())
            self.send_header("X-Checksum-Sha256", entry["sha256"])
        self.send_header("Content-Disposition", f'attachment; filename="{entry["name"]}"')
        if partial:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        if inner is not None:
            self.wfile.write(inner[first:last + 1])
            return
        fault = self.archive.faults.get(rel, Fault())
        drop_at = None
        if fault.drop_once_after and self.archive.take_fault(rel, "drop"):
            drop_at = first + fault.drop_once_after
        flip_at = None
        target = fault.corrupt_at if fault.corrupt_at is not None else entry.get("corrupt_at", size // 2)
        if fault.corruptions and first <= target <= last and self.archive.take_fault(rel, "corrupt", fault.corruptions):
            flip_at = target
        self.send_file(path, first, last, flip_at, drop_at)

    def send_file(self, path: Path, first: int, last: int, flip_at: int | None, drop_at: int | None) -> None:
        """Write bytes first..last of ``path``; flip one byte / cut the connection when asked."""
        with open(path, "rb") as fh:
            fh.seek(first)
            offset = first
            while offset <= last:
                chunk = bytearray(fh.read(min(65536, last - offset + 1)))
                if not chunk:
                    break
                if flip_at is not None and offset <= flip_at < offset + len(chunk):
                    chunk[flip_at - offset] ^= 0xFF
                if drop_at is not None and offset + len(chunk) > drop_at:
                    self.wfile.write(chunk[: max(0, drop_at - offset)])
                    self.wfile.flush()
                    self.cut_connection()
                    return
                self.wfile.write(chunk)
                offset += len(chunk)

    def cut_connection(self) -> None:
        """Close the socket mid-response, as a flaky network does."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def parse_range(spec: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single ``bytes=`` range, or None when unsatisfiable.

    >>> parse_range("bytes=100-", 1000), parse_range("bytes=-10", 1000), parse_range("bytes=2000-", 1000)
    ((100, 999), (990, 999), None)
    """
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", spec)
    if not match or (not match.group(1) and not match.group(2)):
        return None
    start, end = match.groups()
    if not start:
        first, last = max(0, size - int(end)), size - 1
    else:
        first, last = int(start), min(int(end), size - 1) if end else size - 1
    if first >= size or first > last:
        return None
    return first, last


@dataclass
class RunningService:
    """A service running in a background thread; ``url`` is its base, ``tap_url`` for pyvo."""

    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def tap_url(self) -> str:
        return self.url + "/tap"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def make_server(root: Path, host: str = "127.0.0.1", port: int = 0,
                faults: dict[str, Fault] | None = None, verbose: bool = False,
                checksum_headers: bool = False) -> ThreadingHTTPServer:
    """An HTTP server for the archive in ``root`` (not yet serving); port 0 picks a free one."""
    server = ThreadingHTTPServer((host, port), ArchiveHandler)
    server.daemon_threads = True
    server.archive = load_archive(root, faults)  # type: ignore[attr-defined]
    server.archive.checksum_headers = checksum_headers  # type: ignore[attr-defined]
    server.verbose = verbose  # type: ignore[attr-defined]
    return server


def start_service(root: Path, host: str = "127.0.0.1", port: int = 0,
                  faults: dict[str, Fault] | None = None, checksum_headers: bool = False) -> RunningService:
    """Serve the archive in ``root`` from a background thread; stop it with ``.stop()``."""
    server = make_server(root, host, port, faults, checksum_headers=checksum_headers)
    thread = threading.Thread(target=server.serve_forever, name="ari-archive", daemon=True)
    thread.start()
    return RunningService(server, thread)


def file_url(base_url: str, mous_uid: str, name: str) -> str:
    """The download URL of file ``name`` of a MOUS on a service at ``base_url``."""
    return f"{base_url}/files/{uid_filename(mous_uid)}/{quote(name)}"

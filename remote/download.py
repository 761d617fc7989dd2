"""Download one archive file on a node: resume with HTTP Range, retry with backoff, verify it.

    python3 download.py URL DEST [--sha256 HEX] [--size BYTES] [--attempts 6] [--timeout 60]

Stdlib only, Python 3.6+ (a bare ``python3`` on an old workstation runs it); nothing of the
console is imported. The file grows in ``DEST.part``; after a dropped
connection the next try asks for the rest (``Range: bytes=<have>-``) and keeps
what it has when the server answers 206, starts over on 200. A finished file
whose sha256 differs from the expected one (given, or the server's
``X-Checksum-Sha256`` / ``Digest: sha-256=`` header) is thrown away and
downloaded again. The ALMA archive gives no checksum (and sometimes no size), so
what can be verified is (``verify_content``): the length when known, a tar (or
``.tgz``) read through to its end, a FITS file's header and 2880-byte blocks, an
XML file's well-formedness. An HTML page (a login or error page) or another body
of the wrong type saved in place of data is a ``DownloadError`` naming the URL
and the HTTP status, not retried. Progress goes to the log as lines::

    download: uid___A002_X1_X2.asdm.sdm.tar 1048576/3145728 bytes (33%) 2.1 MB/s

Exit status 0 when DEST holds the verified file, 1 when every try failed (the
last line says why).
"""

import argparse
import base64
import gzip
import hashlib
import os
import sys
import tarfile
import time
import xml.etree.ElementTree as ElementTree
import urllib.error
import urllib.request
from typing import Optional

CHUNK = 1 << 16


class DownloadError(Exception):
    """A download that failed for good: every attempt used, or a refusal worth no retry."""


class ChecksumMismatch(Exception):
    """A complete file whose sha256 (or length, or content) is not what it should be."""


class WrongBody(Exception):
    """The server answered with something that is not the file (an HTML page, another type)."""


FITS_BLOCK = 2880
HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")


def looks_like_html(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a body) is an HTML page.

    >>> looks_like_html(b"  <!DOCTYPE html><html>"), looks_like_html(b"SIMPLE  =                    T")
    (True, False)
    """
    return head.lstrip()[:20].lower().startswith(HTML_STARTS)


def _check_tar_end(path: str, end: int, name: str) -> None:
    """After the last member a tar holds only zeros; anything else is a header tarfile stopped at (damaged)."""
    with open(path, "rb") as fh:
        fh.seek(end)
        while True:
            block = fh.read(1 << 20)
            if not block:
                return
            if block.strip(b"\0"):
                raise ChecksumMismatch("%s is damaged: a tar header after byte %d does not read" % (name, end))


def verify_content(path: str, name: str) -> None:
    """Check what can be checked without a checksum; ChecksumMismatch (damaged) or WrongBody (not the file).

    By name: ``.tar``/``.tgz``/``.tar.gz`` are read through to the end, ``.fits``
    (and ``.fits.gz``) must start with ``SIMPLE  =`` and fill whole 2880-byte blocks,
    ``.xml`` must parse. Any file but ``.html`` that is an HTML page is a WrongBody.
    """
    low = name.lower()
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not low.endswith((".html", ".htm")) and looks_like_html(head):
        raise WrongBody("an HTML page instead of %s" % name)
    try:
        if low.endswith((".tar", ".tgz", ".tar.gz")):
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    if member.isfile():
                        stream = tar.extractfile(member)
                        while stream.read(1 << 20):
                            pass
                end = tar.offset
            if low.endswith(".tar"):
                _check_tar_end(path, end, name)
        elif low.endswith(".fits") or low.endswith(".fits.gz"):
            opener = gzip.open if low.endswith(".gz") else open
            with opener(path, "rb") as fh:
                first = fh.read(FITS_BLOCK)
                size = len(first)
                while True:
                    block = fh.read(1 << 20)
                    if not block:
                        break
                    size += len(block)
            if not first.startswith(b"SIMPLE  ="):
                raise WrongBody("not a FITS file (no SIMPLE card): %s" % name)
            if size % FITS_BLOCK:
                raise ChecksumMismatch("FITS file %s is %d bytes, not whole 2880-byte blocks" % (name, size))
        elif low.endswith(".xml"):
            ElementTree.parse(path)
    except (tarfile.TarError, EOFError, OSError, ElementTree.ParseError) as exc:
        raise ChecksumMismatch("%s is damaged: %s: %s" % (name, type(exc).__name__, exc))


def sha256_of(path: str) -> str:
    """The hex sha256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def server_checksum(headers) -> Optional[str]:
    """The sha256 (hex) the server announces for the whole file, if it does.

    >>> server_checksum({"X-Checksum-Sha256": "AB"})
    'ab'
    """
    value = headers.get("X-Checksum-Sha256")
    if value:
        return value.strip().lower()
    for part in (headers.get("Digest") or "").split(","):
        name, _, encoded = part.strip().partition("=")
        if name.lower() == "sha-256" and encoded:
            return base64.b64decode(encoded).hex()
    return None


def backoff_seconds(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Seconds to wait before try ``attempt`` (1-based): base, 2 base, 4 base ... up to cap.

    >>> [backoff_seconds(n) for n in (1, 2, 3, 8)]
    [0.0, 1.0, 2.0, 60.0]
    """
    return 0.0 if attempt <= 1 else min(cap, base * 2 ** (attempt - 2))


def fetch_once(url: str, part: str, timeout: float, log, label: str) -> Optional[str]:
    """One HTTP try: append to ``part`` from where it ends; the server's checksum, or an exception.

    A ``text/html`` answer for a file that is no HTML page is a WrongBody (with the status).
    """
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # Asked past the end: what we have may be the whole file; verification decides.
            return server_checksum(exc.headers)
        raise
    with response:
        kind = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind in ("text/html", "application/xhtml+xml") and not label.lower().endswith((".html", ".htm")):
            raise WrongBody("HTTP %d with a %s page instead of %s" % (response.status, kind, label))
        if response.status == 200 and have:
            log(f"download: {label}: server ignored the range, starting over")
            have = 0
        elif response.status == 206 and _range_start(response) != have:
            raise ConnectionError(f"server sent a range starting at {_range_start(response)}, asked for {have}")
        total = _total_size(response, have)
        mode = "ab" if have else "wb"
        last_report = time.monotonic()
        started, got = last_report, 0
        with open(part, mode) as out:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                got += len(chunk)
                now = time.monotonic()
                if now - last_report >= 1.0:
                    log(_progress_line(label, have + got, total, got / max(now - started, 1e-6)))
                    last_report = now
        size = os.path.getsize(part)
        if total is not None and size < total:
            raise ConnectionError(f"connection closed after {size} of {total} bytes")
        log(_progress_line(label, size, total, got / max(time.monotonic() - started, 1e-6)))
        return server_checksum(response.headers)


def _range_start(response) -> Optional[int]:
    """The first byte of a 206 response, from its Content-Range (``bytes 100-199/1000``)."""
    value = (response.headers.get("Content-Range") or "").replace("bytes", "").strip()
    start = value.split("-", 1)[0].strip()
    return int(start) if start.isdigit() else None


def _total_size(response, have: int) -> Optional[int]:
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) + (have if response.status == 206 else 0) if length else None


def _progress_line(label: str, done: int, total: Optional[int], rate: float) -> str:
    share = f" ({100 * done // total}%)" if total else ""
    return f"download: {label} {done}/{total if total is not None else '?'} bytes{share} {rate / 1e6:.1f} MB/s"


def download(url: str, dest: str, sha256: Optional[str] = None, attempts: int = 6, timeout: float = 60.0,
             log=print, sleep=time.sleep, backoff_base: float = 1.0, size: Optional[int] = None) -> str:
    """Download ``url`` to ``dest`` and verify it; its hex sha256. DownloadError when it cannot.

    Verified by sha256 when one is known (given, or the server's), else by ``size``
    when known (None or negative: unknown) and by ``verify_content``. Resumes
    ``dest + '.part'`` across tries and across runs; a mismatch discards the part and
    counts as a failed try; a wrong body (an HTML page) fails at once.
    """
    label = os.path.basename(dest)
    part = dest + ".part"
    expected = sha256.lower() if sha256 else None
    size = size if size is not None and int(size) >= 0 else None
    if os.path.exists(dest) and expected and sha256_of(dest) == expected:
        log(f"download: {label} already present and verified")
        return expected
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    last_error = "no attempt made"
    for attempt in range(1, attempts + 1):
        wait = backoff_seconds(attempt, backoff_base)
        if wait:
            log(f"download: {label}: try {attempt}/{attempts} in {wait:.0f} s ({last_error})")
            sleep(wait)
        try:
            announced = fetch_once(url, part, timeout, log, label)
            want = expected or announced
            got = sha256_of(part)
            if want and got != want:
                os.remove(part)
                raise ChecksumMismatch(f"sha256 mismatch: got {got[:12]}..., expected {want[:12]}...")
            if size is not None and os.path.getsize(part) != int(size):
                have = os.path.getsize(part)
                os.remove(part)
                raise ChecksumMismatch(f"length mismatch: got {have} bytes, the archive lists {size}")
            try:
                verify_content(part, label)
            except (ChecksumMismatch, WrongBody):
                os.remove(part)
                raise
            os.replace(part, dest)
            how = "sha256 verified" if want else ("length and content checked" if size is not None
                                                  else "content checked (no checksum or size to verify)")
            log(f"download: {label} complete, sha256 {got} ({how})")
            return got
        except WrongBody as exc:
            if os.path.exists(part):
                os.remove(part)
            raise DownloadError(f"{label}: {url} answered {exc}") from None
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code} {exc.reason}"
            if exc.code in (400, 401, 403, 404, 410):
                raise DownloadError(f"{label}: {last_error} from {url}") from None
        except ChecksumMismatch as exc:
            last_error = str(exc)
        except (OSError, ConnectionError, urllib.error.URLError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        log(f"download: {label}: try {attempt} failed: {last_error}")
    raise DownloadError(f"{label}: gave up after {attempts} tries: {last_error} (from {url})")


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("dest")
    parser.add_argument("--sha256", help="expected sha256 (hex); else the server's header")
    parser.add_argument("--size", type=int, help="expected length in bytes (when the archive lists one)")
    parser.add_argument("--attempts", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--backoff", type=float, default=1.0, help="first wait between tries, seconds")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        download(args.url, args.dest, args.sha256, args.attempts, args.timeout, log=log, backoff_base=args.backoff,
                 size=args.size)
    except DownloadError as exc:
        log(f"download: FAILED {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

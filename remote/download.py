"""Download one archive file on a node: resume with HTTP Range, retry with backoff, verify sha256.

    python3 download.py URL DEST [--sha256 HEX] [--attempts 6] [--timeout 60]

Stdlib only, Python 3.6+ (a bare ``python3`` on an old workstation runs it); nothing of the
console is imported. The file grows in ``DEST.part``; after a dropped
connection the next try asks for the rest (``Range: bytes=<have>-``) and keeps
what it has when the server answers 206, starts over on 200. A finished file
whose sha256 differs from the expected one (given, or the server's
``X-Checksum-Sha256`` / ``Digest: sha-256=`` header) is thrown away and
downloaded again. Progress goes to the log as lines::

    download: uid___A002_X1_X2.asdm.sdm.tar 1048576/3145728 bytes (33%) 2.1 MB/s

Exit status 0 when DEST holds the verified file, 1 when every try failed (the
last line says why).
"""

import argparse
import base64
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Optional

CHUNK = 1 << 16


class DownloadError(Exception):
    """A download that failed for good: every attempt used, or a refusal worth no retry."""


class ChecksumMismatch(Exception):
    """A complete file whose sha256 is not the expected one."""


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
    """One HTTP try: append to ``part`` from where it ends; the server's checksum, or an exception."""
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
             log=print, sleep=time.sleep, backoff_base: float = 1.0) -> str:
    """Download ``url`` to ``dest`` verified by sha256; the hex checksum. DownloadError when it cannot.

    Resumes ``dest + '.part'`` across tries and across runs; a checksum mismatch
    discards the part and counts as a failed try.
    """
    label = os.path.basename(dest)
    part = dest + ".part"
    expected = sha256.lower() if sha256 else None
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
            os.replace(part, dest)
            log(f"download: {label} complete, sha256 {got}" + ("" if want else " (no checksum to verify)"))
            return got
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code} {exc.reason}"
            if exc.code in (400, 401, 403, 404, 410):
                raise DownloadError(f"{label}: {last_error} from {url}") from None
        except ChecksumMismatch as exc:
            last_error = str(exc)
        except (OSError, ConnectionError, urllib.error.URLError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        log(f"download: {label}: try {attempt} failed: {last_error}")
    raise DownloadError(f"{label}: gave up after {attempts} tries: {last_error}")


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("dest")
    parser.add_argument("--sha256", help="expected sha256 (hex); else the server's header")
    parser.add_argument("--attempts", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--backoff", type=float, default=1.0, help="first wait between tries, seconds")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        download(args.url, args.dest, args.sha256, args.attempts, args.timeout, log=log, backoff_base=args.backoff)
    except DownloadError as exc:
        log(f"download: FAILED {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

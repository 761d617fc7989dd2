"""The node-side downloader (remote/download.py) against a real HTTP archive service.

The service is the archive service of ari_console.demo.archive_service on a small
archive written here (one MOUS, one 3 MB file), so the faults are real: the
server shuts the socket down mid-file, or flips a byte of what it sends.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ari_console.demo.archive_service import Fault, start_service
from remote.download import DownloadError, backoff_seconds, download, server_checksum

ROOT = Path(__file__).resolve().parents[1]
UID = "uid://A001/X9999/X1"
NAME = "uid___A002_X9999_X1.asdm.sdm.tar"
REL = f"files/uid___A001_X9999_X1/{NAME}"


def tar_of_random_bytes(size: int) -> bytes:
    """A real tar holding one member of ``size`` random bytes (what a raw-data tar is to a downloader)."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("member/raw/uid___A002_X9999_X1.asdm.sdm/ASDM.xml")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return out.getvalue()


@pytest.fixture
def small_archive(tmp_path: Path) -> tuple[Path, bytes]:
    """An archive root with one public MOUS holding one ~3 MB tar; (root, the file's bytes)."""
    payload = tar_of_random_bytes(3 * 1024 * 1024)
    target = tmp_path / "archive" / REL
    target.parent.mkdir(parents=True)
    target.write_bytes(payload)
    row = {"member_ous_uid": UID, "proposal_id": "2016.1.09999.S", "data_rights": "Public",
           "obs_release_date": "2017-01-01T00:00:00", "band_list": "6", "s_ra": 1.0}
    entry = {"obscore": row, "files": [{"name": NAME, "path": REL, "size": len(payload),
                                         "sha256": hashlib.sha256(payload).hexdigest(), "semantics": "#this"}]}
    (tmp_path / "archive" / "manifest.json").write_text(json.dumps({"mous": {UID: entry}}))
    return tmp_path / "archive", payload


def serve(root: Path, checksum_headers: bool = True, **fault):
    """A running service on ``root`` with ``Fault(**fault)`` on the one file (checksum headers unless told)."""
    return start_service(root, faults={REL: Fault(**fault)} if fault else None, checksum_headers=checksum_headers)


def test_download_resumes_after_the_server_cuts_the_connection(small_archive, tmp_path):
    root, payload = small_archive
    service = serve(root, drop_once_after=1_000_000)
    lines: list[str] = []
    try:
        got = download(f"{service.url}/{REL}", str(tmp_path / "out" / NAME), log=lines.append,
                       sleep=lambda s: None)
    finally:
        service.stop()
    assert (tmp_path / "out" / NAME).read_bytes() == payload
    assert got == hashlib.sha256(payload).hexdigest()
    failed = [l for l in lines if "try 1 failed" in l]
    assert failed and f"closed after 1000000 of {len(payload)} bytes" in failed[0]
    # The second try asked only for the rest: its first progress line starts past the cut.
    resumed = [l for l in lines[lines.index(failed[0]):] if l.startswith(f"download: {NAME} ")]
    assert resumed and int(resumed[0].split()[2].split("/")[0]) > 1_000_000


def test_download_rejects_a_corrupted_file_by_checksum_then_succeeds_on_retry(small_archive, tmp_path):
    root, payload = small_archive
    service = serve(root, corrupt_once=True)
    lines: list[str] = []
    dest = tmp_path / NAME
    try:
        download(f"{service.url}/{REL}", str(dest), sha256=hashlib.sha256(payload).hexdigest(),
                 log=lines.append, sleep=lambda s: None)
    finally:
        service.stop()
    assert any("sha256 mismatch" in l for l in lines)
    assert dest.read_bytes() == payload
    assert not Path(str(dest) + ".part").exists()


def test_download_uses_the_servers_checksum_when_none_is_given(small_archive, tmp_path):
    root, payload = small_archive
    service = serve(root, corrupt_once=True)
    lines: list[str] = []
    try:
        download(f"{service.url}/{REL}", str(tmp_path / NAME), log=lines.append, sleep=lambda s: None)
    finally:
        service.stop()
    assert any("sha256 mismatch" in l for l in lines)
    assert (tmp_path / NAME).read_bytes() == payload


def test_download_gives_up_when_every_try_is_corrupted(small_archive, tmp_path):
    root, payload = small_archive
    service = serve(root)
    try:
        with pytest.raises(DownloadError, match="gave up after 2 tries: sha256 mismatch"):
            download(f"{service.url}/{REL}", str(tmp_path / NAME), sha256="0" * 64, attempts=2,
                     log=lambda line: None, sleep=lambda s: None)
    finally:
        service.stop()
    assert not (tmp_path / NAME).exists()


def test_download_does_not_retry_a_missing_file(small_archive, tmp_path):
    root, _ = small_archive
    service = serve(root)
    waits: list[float] = []
    try:
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(f"{service.url}/files/nothing/here.tar", str(tmp_path / "x"), log=lambda l: None,
                     sleep=waits.append)
    finally:
        service.stop()
    assert waits == []


def test_retries_wait_longer_each_time():
    assert [backoff_seconds(n, base=2) for n in range(1, 6)] == [0.0, 2.0, 4.0, 8.0, 16.0]


def test_server_checksum_reads_the_digest_header():
    assert server_checksum({"Digest": "sha-256=" + "q80="}) == "abcd"


def test_download_script_runs_on_a_bare_python_and_logs_progress(small_archive, tmp_path):
    """The node runs download.py with only the stdlib: -I isolates it from the project and venv paths."""
    root, payload = small_archive
    service = serve(root, drop_once_after=500_000)
    dest = tmp_path / "node" / NAME
    try:
        proc = subprocess.run([sys.executable, "-I", str(ROOT / "remote" / "download.py"), f"{service.url}/{REL}",
                               str(dest), "--sha256", hashlib.sha256(payload).hexdigest(), "--backoff", "0.1"],
                              capture_output=True, text=True, timeout=60)
    finally:
        service.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dest.read_bytes() == payload
    assert "try 1 failed" in proc.stdout and f"download: {NAME} complete" in proc.stdout


def test_without_any_checksum_a_flipped_tar_header_byte_is_caught_by_reading_the_tar_through(small_archive,
                                                                                              tmp_path):
    root, payload = small_archive
    service = serve(root, checksum_headers=False, corrupt_once=True, corrupt_at=10)  # in the member's header
    lines: list[str] = []
    try:
        download(f"{service.url}/{REL}", str(tmp_path / NAME), size=len(payload), log=lines.append,
                 sleep=lambda s: None)
    finally:
        service.stop()
    assert any("try 1 failed" in l and "damaged" in l for l in lines), lines
    assert (tmp_path / NAME).read_bytes() == payload
    assert "length and content checked" in lines[-1]


def test_a_length_other_than_the_archive_lists_is_a_failed_try(small_archive, tmp_path):
    root, payload = small_archive
    service = serve(root, checksum_headers=False)
    try:
        with pytest.raises(DownloadError, match="length mismatch"):
            download(f"{service.url}/{REL}", str(tmp_path / NAME), size=len(payload) + 1, attempts=2,
                     log=lambda line: None, sleep=lambda s: None)
    finally:
        service.stop()


def test_an_html_page_in_place_of_data_fails_naming_the_url_and_the_status(tmp_path):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    class Login(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            body = b"<!DOCTYPE html><html><body>Please log in</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Login)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/dataPortal/{NAME}"
    waits: list[float] = []
    try:
        with pytest.raises(DownloadError) as error:
            download(url, str(tmp_path / NAME), log=lambda line: None, sleep=waits.append)
    finally:
        server.shutdown()
        server.server_close()
    assert url in str(error.value) and "HTTP 200" in str(error.value) and "text/html" in str(error.value)
    assert waits == [] and not (tmp_path / NAME).exists() and not (tmp_path / (NAME + ".part")).exists()


def test_a_fits_file_must_fill_whole_blocks_and_start_with_simple(tmp_path):
    from remote.download import ChecksumMismatch, WrongBody, verify_content

    good = tmp_path / "a.fits"
    good.write_bytes(b"SIMPLE  =                    T".ljust(2880, b" "))
    verify_content(str(good), good.name)
    cut = tmp_path / "b.fits"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ChecksumMismatch, match="2880"):
        verify_content(str(cut), cut.name)
    other = tmp_path / "c.fits"
    other.write_bytes(b"PK\x03\x04" + b"x" * 2876)
    with pytest.raises(WrongBody, match="no SIMPLE"):
        verify_content(str(other), other.name)
    xml = tmp_path / "m.pipeline_manifest.xml"
    xml.write_text("<piperesults><ous>")
    with pytest.raises(ChecksumMismatch, match="damaged"):
        verify_content(str(xml), xml.name)

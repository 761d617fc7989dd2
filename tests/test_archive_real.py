"""The console against the real ALMA archive's answers, served as they are on loopback.

The answers are the ones saved in ``../shared/data/real/archive/`` (see its
SOURCES.md): an ``ivoa.obscore`` row with all 64 columns, the DataLink listing of
a MOUS with its ``service_def`` rows, and the two recursive DataLink documents
behind them. The loopback service only changes the host in their URLs (a real
archive names its own host there); nothing else is rewritten. File bodies are
not saved, so every file URL answers 404 except the README.
"""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

REAL = Path(os.environ.get("ARI_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
ARCHIVE = REAL / "archive"
if not ARCHIVE.is_dir():
    ARCHIVE = Path("/work/shared/data/real/archive")
ARI = str(Path(sys.executable).parent / "ari")
MOUS = "uid://A001/X1295/X35"  # the obscore row's MOUS
PRODUCT_TAR = "2017.1.01185.S_uid___A001_X12a3_Xe9_001_of_001.tar"
AUX_TAR = "2017.1.01185.S_uid___A001_X12a3_Xe9_auxiliary.tar"
HOSTS = ("https://almascience.org", "https://2022jun.asa-test.hq.eso.org")


@pytest.fixture(autouse=True)
def _real_answers_present():
    """The real answers are part of the checkout's surroundings: missing, these tests fail (never skip)."""
    assert ARCHIVE.is_dir(), (f"{ARCHIVE}: the real ALMA archive answers are missing — put shared/data/real beside "
                              f"the checkout, or point ARI_REAL_DATA at it")


def obscore_votable(extra_rows: int = 0) -> bytes:
    """The real obscore row (all its columns, as the ASCII table has them) as a TAP VOTable.

    ``extra_rows`` more rows for the same MOUS, as the real table has one per source
    and spw: another spw of another source, the rest of the row unchanged.
    """
    import io

    from astropy.io import ascii as asc
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info

    table = asc.read(ARCHIVE / "astroquery-alma-onerow.txt", format="basic", delimiter=" ", quotechar='"',
                     guess=False, fast_reader=False)
    from astropy.table import Table

    row = {}
    for col in table.colnames:  # the saved text keeps Python's bytes repr: b'...'
        value = table[col][0]
        row[col] = value[2:-1] if isinstance(value, str) and value.startswith("b'") else value
    rows = [row]
    for i in range(extra_rows):
        rows.append({**row, "target_name": f"M83_field{i + 2}", "frequency_support":
                     f"[{230.0 + i:.2f}..{230.5 + i:.2f}GHz,976.56kHz,1mJy/beam@10km/s,0.3mJy/beam@native, XX YY]"})
    votable = from_table(Table(rows=rows, names=table.colnames))
    votable.resources[0].type = "results"
    votable.resources[0].infos.append(Info(name="QUERY_STATUS", value="OK"))
    out = io.BytesIO()
    votable.to_xml(out)
    return out.getvalue()


def empty_obscore() -> bytes:
    """The real header of an empty obscore result, as a VOTable with no rows."""
    import io

    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info
    from astropy.table import Table

    names = (ARCHIVE / "astroquery-alma-empty.txt").read_text().split()
    votable = from_table(Table(names=names, dtype=[str] * len(names)))
    votable.resources[0].type = "results"
    votable.resources[0].infos.append(Info(name="QUERY_STATUS", value="OK"))
    out = io.BytesIO()
    votable.to_xml(out)
    return out.getvalue()


class RealArchive(BaseHTTPRequestHandler):
    """Serves the saved answers: TAP for the MOUS, DataLink for it and for its two tars."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def here(self, text: str) -> str:
        base = f"http://{self.headers['Host']}"
        for host in HOSTS:
            text = text.replace(host, base)
        return text

    def do_GET(self):  # noqa: N802
        url = urlsplit(self.path)
        params = {k.upper(): v[-1] for k, v in parse_qs(url.query).items()}
        if self.command == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            params.update({k.upper(): v[-1] for k, v in parse_qs(body).items()})
        self.server.requests.append((url.path, params))
        if url.path == "/tap/sync":
            query = params.get("QUERY", "")
            found = MOUS in query
            self.answer(200, obscore_votable(self.server.extra_rows) if found else empty_obscore(),
                        "application/x-votable+xml")
        elif url.path == "/datalink/sync":
            ident = params.get("ID", "")
            name = ("astroquery-alma-datalink-recurse-this.xml" if ident == PRODUCT_TAR else
                    "astroquery-alma-datalink-recurse-aux.xml" if ident == AUX_TAR else
                    "astroquery-alma-datalink.xml")
            text = self.here((ARCHIVE / name).read_text())
            if self.server.sizes_unknown:  # what recent answers give (SOURCES.md): -1 for every size
                text = re.sub(r"<TD>\d+</TD>(\s*<TD>true</TD>)", r"<TD>-1</TD>\1", text)
            self.answer(200, text.encode(), "application/x-votable+xml;content=datalink")
        elif url.path.endswith(".README.txt"):
            self.answer(200, (ARCHIVE / "member.README.excerpt.txt").read_bytes(), "text/plain")
        else:
            self.answer(404, b"<html><body>Not found</body></html>", "text/html")

    do_POST = do_GET


@pytest.fixture
def real_archive():
    server = ThreadingHTTPServer(("127.0.0.1", 0), RealArchive)
    server.daemon_threads = True
    server.requests = []
    server.extra_rows = 2
    server.sizes_unknown = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def ari(tmp_path, *args, timeout=120):
    return subprocess.run([ARI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


def campaign(tmp_path, url, extra=""):
    (tmp_path / "ari.toml").write_text(f'[campaign]\narchive_url = "{url}"\n{extra}\n[[node]]\nname = "n"\n')


def test_import_of_a_real_mous_queues_raw_data_and_calibration_and_knows_the_qa2_fits(tmp_path, real_archive):
    host, port = real_archive.server_address[:2]
    campaign(tmp_path, f"http://{host}:{port}")
    proc = ari(tmp_path, "datasets", "import", "--mous", MOUS, "--json")
    assert proc.returncode == 0, proc.stderr
    shown = ari(tmp_path, "datasets", "show", MOUS, "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    inputs = {f["name"]: f for f in detail["inputs"]}
    # The four raw ASDMs (#progenitor) and the auxiliary tar with the calibration and scripts ...
    assert sorted(n for n in inputs if n.endswith(".asdm.sdm.tar")) == [
        "2017.1.01185.S_uid___A002_Xd28a9e_X71b8.asdm.sdm.tar", "2017.1.01185.S_uid___A002_Xd28a9e_X7b4d.asdm.sdm.tar",
        "2017.1.01185.S_uid___A002_Xd29c1f_X1f74.asdm.sdm.tar", "2017.1.01185.S_uid___A002_Xd29c1f_X5cf.asdm.sdm.tar"]
    assert inputs[AUX_TAR]["semantics"] == "#auxiliary" and inputs[AUX_TAR]["size_bytes"] == 135479296
    assert len(inputs) == 5
    # ... nothing empty (the service_def rows are no files) and nothing of the product tar.
    assert all(f["name"] and f["url"].startswith("http") for f in detail["inputs"])
    assert PRODUCT_TAR not in inputs and not any(n.endswith((".fits", ".fits.gz", ".tgz")) for n in inputs)
    assert {f["semantics"] for f in detail["inputs"]} == {"#progenitor", "#auxiliary"}
    # The QA2 images the console fetches: listed one by one in the product tar's DataLink document.
    assert sorted(f["name"] for f in detail["qa2_files"]) == [
        "member.uid___A001_X12a3_Xe9.50_kms_cloud_sci.spw0_1_2_3_4_5_6_7_8_9_10_11_12_13_14_15.mfs.I.manual.image.pbcor.fits",
        "member.uid___A001_X12a3_Xe9.50_kms_cloud_sci.spw0_4_8_12.cube.I.manual.image.pbcor.fits"]
    # The README names no CASA version and the scripts' bodies are not saved: unknown, not guessed.
    assert detail["casa_version"] is None
    # Both recursive documents were asked for, through the service_def's accessURL.
    asked = [p.get("ID") for path, p in real_archive.requests if path == "/datalink/sync"]
    assert MOUS in asked and PRODUCT_TAR in asked and AUX_TAR in asked
    # The three obscore rows (one per source and spw) are one data set, with every target.
    assert detail["targets"] == ["M83", "M83_field2", "M83_field3"]
    listed = json.loads(ari(tmp_path, "datasets", "list", "--json").stdout)
    assert [r["uid"] for r in listed] == [MOUS]
    assert listed[0]["size_gb"] == pytest.approx((2343569408 + 2343861248 + 2616798208 + 2680167424
                                                  + 135479296) / 1e9, rel=1e-6)


def test_the_real_listing_is_classified_by_what_each_file_is_for(real_archive):
    from ari_console.archive.client import fetch_datalink

    host, port = real_archive.server_address[:2]
    files, error = fetch_datalink(f"http://{host}:{port}/tap", MOUS, timeout=10)
    assert error is None
    kinds = {}
    for f in files:
        kinds.setdefault(f.kind, []).append(f.name)
    assert len(kinds["raw"]) == 4 and kinds["product_tar"] == [PRODUCT_TAR] and kinds["auxiliary_tar"] == [AUX_TAR]
    calibration = kinds["calibration"]
    assert sum(n.endswith(".calibration.tgz") for n in calibration) == 4
    assert sum(n.endswith(".ms.scriptForCalibration.py") for n in calibration) == 4
    assert any(n.endswith("scriptForPI.py") for n in calibration)
    assert all(not n.endswith(".calibration.plots.tgz") for n in calibration)
    assert any(n.endswith("qa2_report.pdf") for n in kinds["qa"])
    assert all(f.inside in (PRODUCT_TAR, AUX_TAR) for f in files if f.kind in ("calibration", "qa2", "qa"))
    assert "cutout" not in kinds  # the SODA rows are services, not files


def test_a_dry_run_lists_which_mous_it_would_queue(tmp_path, real_archive):
    host, port = real_archive.server_address[:2]
    campaign(tmp_path, f"http://{host}:{port}")
    dry = json.loads(ari(tmp_path, "datasets", "import", "--mous", MOUS, "--dry-run", "--json").stdout)
    assert [m["uid"] for m in dry["mous"]] == [MOUS] and dry["mous"][0]["new"]
    text = ari(tmp_path, "datasets", "import", "--mous", MOUS, "--dry-run").stdout
    assert MOUS in text
    real = json.loads(ari(tmp_path, "datasets", "import", "--mous", MOUS, "--json").stdout)
    assert [real[k] for k in ("added", "updated", "unchanged")] == [dry[k] for k in ("added", "updated", "unchanged")]
    again = json.loads(ari(tmp_path, "datasets", "import", "--mous", MOUS, "--dry-run", "--json").stdout)
    assert (again["added"], again["unchanged"], again["mous"][0]["new"]) == (0, 1, False)


def test_the_ari_l_preset_excludes_a_cycle_5_project_with_the_reason(tmp_path, real_archive):
    host, port = real_archive.server_address[:2]
    campaign(tmp_path, f"http://{host}:{port}", '[selection]\npreset = "ari-l"\n')
    dry = json.loads(ari(tmp_path, "datasets", "import", "--mous", MOUS, "--dry-run", "--json").stdout)
    assert dry["mous"] == [] and "2017" in dry["excluded"][MOUS]


def test_a_tap_service_that_never_answers_ends_the_import_with_one_line(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections (the kernel does), never answers
    try:
        port = listener.getsockname()[1]
        campaign(tmp_path, f"http://127.0.0.1:{port}")
        text = (tmp_path / "ari.toml").read_text().replace("[campaign]\n", "[campaign]\narchive_timeout_s = 2\n")
        (tmp_path / "ari.toml").write_text(text)
        started = time.monotonic()
        proc = ari(tmp_path, "datasets", "import", "--mous", MOUS, timeout=60)
        took = time.monotonic() - started
    finally:
        listener.close()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "did not answer within 2 s" in lines[0] and str(port) in lines[0]
    assert took < 30


def test_sizes_the_archive_gives_as_minus_one_are_unknown_never_negative(tmp_path, real_archive):
    real_archive.sizes_unknown = True
    host, port = real_archive.server_address[:2]
    campaign(tmp_path, f"http://{host}:{port}")
    dry = json.loads(ari(tmp_path, "datasets", "import", "--mous", MOUS, "--dry-run", "--json").stdout)
    assert dry["size_gb"] == 0 and dry["size_unknown"] == 1 and dry["mous"][0]["size_gb"] is None
    assert ari(tmp_path, "datasets", "import", "--mous", MOUS).returncode == 0
    detail = json.loads(ari(tmp_path, "datasets", "show", MOUS, "--json").stdout)
    assert len(detail["inputs"]) == 5 and all(f["size_bytes"] is None for f in detail["inputs"])
    assert json.loads(ari(tmp_path, "datasets", "list", "--json").stdout)[0]["size_gb"] is None
    text = ari(tmp_path, "datasets", "show", MOUS).stdout
    assert "unknown" in text and "-1" not in text


def test_a_real_mous_brings_its_windows_channels_mosaic_and_execution_blocks(tmp_path, real_archive):
    host, port = real_archive.server_address[:2]
    campaign(tmp_path, f"http://{host}:{port}")
    assert ari(tmp_path, "datasets", "import", "--mous", MOUS).returncode == 0
    (row,) = json.loads(ari(tmp_path, "datasets", "list", "--json").stdout)
    # The real row's four windows (963, 63, 963 and 1966 channels at their resolution) and the two
    # windows of the other rows (512 each): six windows, 830 channels each on average.
    assert (row["n_spw"], row["n_chan"]) == (6, 830)
    assert row["is_mosaic"] == 1  # obscore says T
    assert row["n_eb"] == 4  # the four raw ASDMs DataLink lists


def test_without_datalink_the_execution_blocks_stay_unknown(tmp_path, real_archive):
    from ari_console.archive.client import query_mous

    host, port = real_archive.server_address[:2]
    mous = query_mous(f"http://{host}:{port}/tap", MOUS, with_datalink=False, timeout=10)
    assert mous.dataset.n_eb is None and mous.dataset.n_spw == 6 and mous.dataset.is_mosaic is True

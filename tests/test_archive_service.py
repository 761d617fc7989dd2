"""The local archive service speaks TAP, DataLink and ranged downloads like the ALMA archive."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request

import pyvo
import pytest

from ari_console.demo.archive_build import load_manifest
from ari_console.demo.archive_service import AdqlError, parse_adql, parse_range


def tap(service, query: str):
    """The astropy table pyvo gets for ``query``."""
    return pyvo.dal.TAPService(service.tap_url).run_sync(query).to_table()


def http_get(url: str, headers: dict | None = None):
    """(status, headers, body) of a GET, also for HTTP errors."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_tap_query_by_project_returns_every_mous_of_the_project(archive_service, demo_archive):
    manifest = load_manifest(demo_archive)
    expected = {u for u, m in manifest["mous"].items() if m["obscore"]["proposal_id"] == "2017.1.00456.S"}
    table = tap(archive_service, "SELECT member_ous_uid, proposal_id FROM ivoa.obscore "
                                 "WHERE proposal_id = '2017.1.00456.S'")
    assert set(table["member_ous_uid"]) == expected
    assert len(expected) >= 4


def test_tap_query_by_uid_returns_the_alma_obscore_columns_one_row_per_source_and_spw(archive_service):
    from ari_console.demo.archive_build import OBSCORE_COLUMNS

    table = tap(archive_service, "SELECT * FROM ivoa.obscore WHERE member_ous_uid = 'uid://A001/X1296/X1d3'")
    assert table.colnames == list(OBSCORE_COLUMNS) and len(OBSCORE_COLUMNS) == 64
    assert "checksum" not in table.colnames and "qa2_status" not in table.colnames
    # Two targets (the MOUS's two sources) x two spectral windows, each row with its own window.
    assert sorted(table["obs_id"]) == [f"uid://A001/X1296/X1d3.source.{t}.spw.{n}"
                                       for t in ("NGC1234", "NGC1234_SE") for n in (0, 1)]
    assert len(set(table["frequency_support"])) == 2 and " U " not in table["frequency_support"][0]
    main = table[table["target_name"] == "NGC1234"]
    assert set(main["band_list"]) == {"6"} and abs(main["s_ra"][0] - 150.0) < 1e-6


def test_tap_supports_like_in_or_and_top_and_order(archive_service, demo_archive):
    rows = [m["obscore"] for m in load_manifest(demo_archive)["mous"].values()]
    expected = sorted(set(r["member_ous_uid"] for r in rows
                       if r["band_list"] in ("3", "7") and (r["target_name"].startswith("M")
                                                            or r["proposal_id"] == "2018.1.00789.S")), reverse=True)
    table = tap(archive_service, "SELECT TOP 12 member_ous_uid FROM ivoa.obscore WHERE band_list IN ('3', '7') "
                                 "AND (target_name LIKE 'M%' OR proposal_id = '2018.1.00789.S') "
                                 "ORDER BY member_ous_uid DESC")
    got = list(table["member_ous_uid"])
    assert got == sorted(got, reverse=True) and len(got) == 12  # many rows per MOUS
    assert list(dict.fromkeys(got)) == expected[:len(set(got))]


def test_a_query_naming_an_unknown_column_is_an_error_votable(archive_service):
    query = urllib.parse.urlencode({"REQUEST": "doQuery", "LANG": "ADQL",
                                    "QUERY": "SELECT colour FROM ivoa.obscore"})
    status, headers, body = http_get(f"{archive_service.tap_url}/sync?{query}")
    assert status == 400
    assert b'name="QUERY_STATUS" value="ERROR"' in body and b"unknown column 'colour'" in body
    with pytest.raises(pyvo.dal.DALQueryError, match="unknown column 'colour'"):
        tap(archive_service, "SELECT colour FROM ivoa.obscore")


@pytest.mark.parametrize("query, message", [
    ("SELECT * FROM ivoa.caom", "unknown table"),
    ("SELECT * FROM ivoa.obscore WHERE proposal_id = ", "expected a quoted string"),
    ("DELETE FROM ivoa.obscore", "expected SELECT"),
])
def test_queries_outside_the_subset_are_refused_with_the_reason(query, message):
    with pytest.raises(AdqlError, match=message):
        parse_adql(query, {"proposal_id", "member_ous_uid"})


def test_datalink_lists_the_files_as_the_alma_archive_does_with_recursive_documents(archive_service):
    url = f"{archive_service.url}/datalink/sync?ID=uid://A001/X1296/X1d3"
    results = pyvo.dal.adhoc.DatalinkResults.from_result_url(url)
    table = results.to_table()
    assert table.colnames == ["ID", "access_url", "service_def", "error_message", "semantics", "description",
                              "content_type", "content_length", "readable"]  # no checksum column
    files = [r for r in table if r["access_url"]]
    by_name = {r["access_url"].rsplit("/", 1)[1]: r["semantics"] for r in files}
    assert by_name == {
        "member.uid___A001_X1296_X1d3.README.txt": "#documentation",
        "2016.1.00123.S_uid___A001_X1296_X1d3_001_of_001.tar": "#this",
        "2016.1.00123.S_uid___A001_X1296_X1d3_auxiliary.tar": "#auxiliary",
        "2016.1.00123.S_uid___A002_Xc1296_X1d3.asdm.sdm.tar": "#progenitor"}
    for row in files:
        status, headers, body = http_get(row["access_url"])
        assert status == 200 and len(body) == row["content_length"]
        assert "X-Checksum-Sha256" not in headers and "Digest" not in headers
    # The two tars each have a row without access_url whose service_def names a DataLink document.
    links = [r for r in table if not r["access_url"]]
    assert sorted(r["semantics"] for r in links) == ["#auxiliary", "#this"]
    for row in links:
        resource = next(r for r in results.votable.resources if r.ID == row["service_def"])
        params = {p.name: p.value for p in resource.params}
        assert params["standardID"].startswith("ivo://ivoa.net/std/DataLink#links")
        inner = pyvo.dal.adhoc.DatalinkResults.from_result_url(params["accessURL"]).to_table()
        assert len(inner) and all(inner["access_url"])
        for member in inner:
            status, _, body = http_get(member["access_url"])
            assert status == 200 and len(body) == member["content_length"]
        names = list(inner["access_url"])
        if row["semantics"] == "#this":
            assert all(n.endswith(".fits") for n in names) and set(inner["semantics"]) == {"#this"}
        else:
            assert any(n.endswith("pipeline_manifest.xml") for n in names)
            assert any(n.endswith("scriptForPI.py") for n in names)


def test_a_mous_with_unknown_sizes_lists_content_length_minus_one(archive_service, demo_archive):
    manifest = load_manifest(demo_archive)
    uid = next(u for u, m in manifest["mous"].items() if m["built"] and not m["sizes_known"])
    table = pyvo.dal.adhoc.DatalinkResults.from_result_url(
        f"{archive_service.url}/datalink/sync?ID={uid}").to_table()
    assert set(int(r["content_length"]) for r in table if r["access_url"]) == {-1}


def test_a_cycle_1_to_4_mous_has_its_calibration_in_the_product_tar(archive_service, demo_archive):
    manifest = load_manifest(demo_archive)
    uid = next(u for u, m in manifest["mous"].items() if m.get("packing") == "cycle1-4")
    semantics = {f["semantics"] for f in manifest["mous"][uid]["files"]}
    assert semantics == {"#progenitor", "#this", "#documentation"}
    product = next(f for f in manifest["mous"][uid]["files"] if f["semantics"] == "#this")
    folders = {m["folder"] for m in product["members"]}
    assert {"product", "script", "qa"} <= folders


@pytest.mark.parametrize("ident, fault", [
    ("uid://A001/X0bad/X1", "NotFoundFault"),
    ("uid://A001/X133d/X3a7", "AuthorizationFault"),
    ("not-a-uid", "UsageFault"),
])
def test_datalink_answers_unknown_or_proprietary_mous_with_an_error_row(archive_service, ident, fault):
    url = f"{archive_service.url}/datalink/sync?ID={urllib.parse.quote(ident)}"
    table = pyvo.dal.adhoc.DatalinkResults.from_result_url(url).to_table()
    assert len(table) == 1 and table["error_message"][0].startswith(fault)


def test_a_range_request_gets_206_and_exactly_those_bytes(archive_service, demo_archive):
    entry = load_manifest(demo_archive)["mous"]["uid://A001/X1296/X1d3"]["files"][0]
    whole = (demo_archive / entry["path"]).read_bytes()
    status, headers, body = http_get(f"{archive_service.url}/{entry['path']}", {"Range": "bytes=1000-1999"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(whole)}"
    assert body == whole[1000:2000]
    status, headers, _ = http_get(f"{archive_service.url}/{entry['path']}", {"Range": f"bytes={len(whole)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(whole)}"


def test_parse_range_handles_open_and_suffix_ranges():
    assert parse_range("bytes=0-", 10) == (0, 9)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=5-100", 10) == (5, 9)
    assert parse_range("bytes=9-3", 10) is None


def test_the_corrupt_download_mous_is_served_wrong_once_then_right(new_archive_service, demo_archive, tmp_path):
    manifest = load_manifest(demo_archive)
    uid = next(u for u, m in manifest["mous"].items() if m["case"] == "corrupt_download")
    raw = next(f for f in manifest["mous"][uid]["files"] if f["semantics"] == "#progenitor")
    service = new_archive_service()
    first = http_get(f"{service.url}/{raw['path']}")[2]
    second = http_get(f"{service.url}/{raw['path']}")[2]
    assert len(first) == raw["size"] and hashlib.sha256(first).hexdigest() != raw["sha256"]
    assert sum(a != b for a, b in zip(first, second)) == 1
    assert hashlib.sha256(second).hexdigest() == raw["sha256"]
    # The flipped byte is in a tar header: reading the tar through catches it without a checksum.
    from remote.download import ChecksumMismatch, verify_content

    (tmp_path / raw["name"]).write_bytes(first)
    with pytest.raises(ChecksumMismatch, match="damaged"):
        verify_content(str(tmp_path / raw["name"]), raw["name"])
    (tmp_path / raw["name"]).write_bytes(second)
    verify_content(str(tmp_path / raw["name"]), raw["name"])


def test_archive_serve_runs_the_service_in_the_foreground(demo_archive, tmp_path):
    """`ari archive serve --port 0` in a real process: it prints its TAP URL and answers queries."""
    import os
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "from ari_console.commands.archive import app; app()",
                             "serve", "--port", "0", "--root", str(demo_archive)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        line = ""
        while "TAP:" not in line:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
        url = line.split("TAP:")[1].split()[0]
        table = pyvo.dal.TAPService(url).run_sync(
            "SELECT member_ous_uid FROM ivoa.obscore WHERE proposal_id = '2016.1.00123.S'").to_table()
        expected = {u for u, m in load_manifest(demo_archive)["mous"].items()
                    if m["obscore"]["proposal_id"] == "2016.1.00123.S"}
        assert set(table["member_ous_uid"]) == expected
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_maxrec_cuts_the_result_and_says_overflow(archive_service, demo_archive):
    total = len(load_manifest(demo_archive)["mous"])
    query = urllib.parse.urlencode({"REQUEST": "doQuery", "LANG": "ADQL", "MAXREC": "2",
                                    "QUERY": "SELECT member_ous_uid FROM ivoa.obscore"})
    status, _, body = http_get(f"{archive_service.tap_url}/sync?{query}")
    assert status == 200 and total > 2
    assert b'value="OVERFLOW"' in body and body.count(b"<TR>") == 2


def test_the_demo_corrupts_a_file_for_one_attempts_worth_of_tries_then_serves_it_right(new_archive_service,
                                                                                       demo_archive):
    """What `ari demo` serves: every try of the runner's first attempt fails its checksum, the next attempt's works."""
    from ari_console.demo.campaign import CORRUPT_RESPONSES, corrupted_file_faults

    manifest = load_manifest(demo_archive)
    faults = corrupted_file_faults(manifest)
    (path,) = faults
    raw = next(f for m in manifest["mous"].values() for f in m["files"] if f["path"] == path)
    service = new_archive_service(faults=faults)
    bodies = [http_get(f"{service.url}/{path}")[2] for _ in range(CORRUPT_RESPONSES + 1)]
    digests = [hashlib.sha256(b).hexdigest() == raw["sha256"] for b in bodies]
    assert digests == [False] * CORRUPT_RESPONSES + [True]

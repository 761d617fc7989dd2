"""The archive client finds MOUS by project or uid over TAP and applies the selection rules."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ari_console.archive import client
from ari_console.demo.archive_build import load_manifest
from ari_console.commands.archive import app
from ari_console.errors import UserError

PROJECTS = ("2016.1.00123.S", "2017.1.00456.S", "2018.1.00789.S")


@pytest.fixture(scope="module")
def every_mous(archive_service) -> list[client.ArchiveMous]:
    """Every MOUS of the demo archive's projects, as the client sees them."""
    return [m for code in PROJECTS for m in client.query_project(archive_service.tap_url, code)]


def test_query_project_returns_the_projects_mous_with_their_metadata(archive_service, demo_archive):
    manifest = load_manifest(demo_archive)["mous"]
    found = client.query_project(archive_service.tap_url, "2017.1.00456.S")
    assert [m.uid for m in found] == sorted(u for u, m in manifest.items()
                                            if m["obscore"]["proposal_id"] == "2017.1.00456.S")
    by_uid = {m.uid: m for m in found}
    tp = by_uid["uid://A001/X12a3/X2e7"]
    assert (tp.dataset.array, tp.dataset.band) == ("TP", 3)
    aca = by_uid["uid://A001/X12a3/X2e1"]
    assert (aca.dataset.array, aca.dataset.project) == ("7m", "2017.1.00456.S")
    raw_and_aux = sum(f["size"] for f in manifest[aca.uid]["files"] if f["semantics"] in ("#progenitor", "#auxiliary"))
    assert aca.dataset.size_gb == pytest.approx(raw_and_aux / 1e9, rel=1e-3)
    assert aca.casa_version == manifest[aca.uid]["casa_version"]  # from its pipeline manifest
    assert {f.kind for f in aca.inputs} == {"raw", "auxiliary_tar"}
    assert aca.qa2_files and all(f.name.endswith(".fits") and f.inside for f in aca.qa2_files)
    assert all(f.sha256 is None for f in aca.files)  # the archive gives no checksum


def test_an_unknown_project_is_a_clear_no_such_project_error(archive_service):
    with pytest.raises(UserError, match=r"^2015\.1\.99999\.S: no such project in the archive"):
        client.query_project(archive_service.tap_url, "2015.1.99999.S")


def test_a_malformed_project_code_says_how_to_write_one(archive_service):
    with pytest.raises(UserError, match="not a project code — write it like 2016.1.00123.S"):
        client.query_project(archive_service.tap_url, "2016-1-123")


def test_query_mous_accepts_the_file_name_spelling_of_a_uid(archive_service):
    found = client.query_mous(archive_service.tap_url, "uid___A001_X1296_X1d9")
    assert found.uid == "uid://A001/X1296/X1d9"
    assert found.obscore["target_name"] == "IRAS16293"


def test_an_unreachable_archive_is_a_user_error_naming_the_url():
    with pytest.raises(UserError, match=r"http://127\.0\.0\.1:9/tap: the archive's TAP service did not answer"):
        client.query_project("http://127.0.0.1:9/tap", "2016.1.00123.S")


def test_default_rules_keep_every_mous_with_a_reason_for_each_excluded_one(every_mous):
    selected, excluded = client.select(every_mous, client.SelectionRules())
    reasons = {m.uid: r for m, r in excluded}
    assert reasons == {
        "uid://A001/X12a3/X2e7": "total power",
        "uid://A001/X133d/X3a7": "proprietary until 2099-01-01",
        "uid://A001/X133d/X3a9": "full Stokes (/XX/XY/YX/YY/)",
        "uid://A001/X12a3/X2e9": "QA2 Fail",
        "uid://A001/X12a3/X2eb": "solar",
    }
    assert len(selected) + len(excluded) == len(every_mous)
    assert len(selected) >= 8


def test_size_and_cycle_limits_exclude_with_their_numbers(every_mous):
    size = {m.uid: m.dataset.size_gb for m in every_mous}["uid://A001/X1296/X1d3"]
    limit = round(size * 0.9, 7)  # just under the data set's size
    rules = client.SelectionRules(max_size_gb=limit, cycles=(4, 5))
    _, excluded = client.select(every_mous, rules)
    reasons = dict((m.uid, r) for m, r in excluded)
    assert reasons["uid://A001/X133d/X3a1"] == "cycle 6 not in 4, 5"
    assert reasons["uid://A001/X1296/X1d3"].endswith(f"GB > max_size_gb {limit:g}")


def test_the_memory_and_walltime_hard_cases_are_under_predicted_as_in_the_study(every_mous):
    """The hog looks like it fits a small node and the slow one a short walltime: both then fail for real."""
    by_uid = {m.uid: m.dataset for m in every_mous}
    normal = by_uid["uid://A001/X1296/X1d3"]
    assert normal.archive_mem_gb < by_uid["uid://A001/X133d/X3a1"].archive_mem_gb < 4
    assert by_uid["uid://A001/X133d/X3a3"].archive_hours < 0.06 < normal.archive_hours
    assert normal.hours is None and normal.mem_gb is None  # the archive's guesses, never explicit values


def test_every_downloadable_mous_records_the_casa_version_its_calibration_needs(every_mous):
    public = [m for m in every_mous if m.files]
    assert public and all(m.casa_version and m.casa_version.startswith("6.") for m in public)


def test_rules_from_config_reject_an_unknown_key_with_the_fix():
    with pytest.raises(UserError, match="unknown key 'public'"):
        client.rules_from_mapping({"public": True})
    assert client.rules_from_mapping({"max_size_gb": 500, "cycles": [2, 3, 4]}).cycles == (2, 3, 4)


def test_archive_query_command_prints_the_documented_json(archive_service):
    result = CliRunner().invoke(app, ["query", "--url", archive_service.tap_url, "--project", "2018.1.00789.S",
                                      "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {tuple(sorted(r)) for r in rows} == {tuple(sorted(["uid", "project", "array", "band", "size_gb", "mem_gb",
                                                              "hours", "casa_version", "selected", "reason"]))}
    assert {r["uid"]: r["reason"] for r in rows if not r["selected"]} == {
        "uid://A001/X133d/X3a7": "proprietary until 2099-01-01", "uid://A001/X133d/X3a9": "full Stokes (/XX/XY/YX/YY/)"}


def test_archive_query_command_for_an_unknown_project_raises_the_user_error(archive_service):
    result = CliRunner().invoke(app, ["query", "--url", archive_service.tap_url, "--project", "2019.1.00001.S"])
    assert isinstance(result.exception, UserError)
    assert "no such project" in str(result.exception)


def test_a_dry_run_summary_counts_mous_gigabytes_and_reasons(every_mous):
    selected, excluded = client.select(every_mous, client.SelectionRules())
    summary = client.selection_summary(selected, excluded)
    assert summary["mous"] == len(selected) and summary["excluded"] == len(excluded)
    known = [m.dataset.size_gb for m in selected if m.dataset.size_gb is not None]
    assert summary["size_gb"] == pytest.approx(sum(known), abs=1e-5)
    assert summary["size_unknown"] == len(selected) - len(known) > 0  # sizes the archive does not give
    assert summary["uids"] == [m.uid for m in selected]
    assert summary["reasons"] == {"total power": 1, "proprietary": 1, "full Stokes (/XX/XY/YX/YY/)": 1,
                                  "QA2 Fail": 1, "solar": 1}


def test_files_found_by_datalink_download_and_verify_on_the_node(new_archive_service, tmp_path):
    """The dropped-download MOUS: the service cuts its raw tar once; the node's downloader resumes it."""
    from remote.download import download

    service = new_archive_service()
    mous = client.query_mous(service.tap_url, "uid://A001/X133d/X3a5")
    lines: list[str] = []
    for f in mous.files:
        download(f.url, str(tmp_path / f.name), sha256=f.sha256, size=f.size, log=lines.append, sleep=lambda s: None)
        assert (tmp_path / f.name).stat().st_size == f.size
    # each raw tar (one per EB: this MOUS has two sessions) is cut once and resumed once
    raw = [f for f in mous.files if f.name.endswith(".asdm.sdm.tar")]
    assert raw and sum("try 1 failed" in line for line in lines) == len(raw), lines

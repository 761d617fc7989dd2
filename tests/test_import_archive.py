"""`ari datasets import --project/--mous` against the local archive service (same protocols as ALMA's)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ARI = str(Path(sys.executable).parent / "ari")


def ari(tmp_path, *args):
    return subprocess.run([ARI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


def campaign(tmp_path, service, selection=""):
    (tmp_path / "ari.toml").write_text(f'[campaign]\narchive_url = "{service.url}"\n{selection}\n[[node]]\nname = "n"\n')


def test_project_import_fills_the_queue_with_its_mous_and_metadata(tmp_path, archive_service):
    campaign(tmp_path, archive_service)
    dry = json.loads(ari(tmp_path, "datasets", "import", "--project", "2016.1.00123.S", "--dry-run", "--json").stdout)
    assert dry["datasets"] >= 3 and dry["new"] == dry["datasets"] and dry["size_gb"] > 0
    assert json.loads(ari(tmp_path, "datasets", "list", "--json").stdout) == []
    result = json.loads(ari(tmp_path, "datasets", "import", "--project", "2016.1.00123.S", "--json").stdout)
    assert result["added"] == dry["datasets"] + len(result["excluded"])
    rows = json.loads(ari(tmp_path, "datasets", "list", "--json").stdout)
    assert {r["project"] for r in rows} == {"2016.1.00123.S"}
    queued = [r for r in rows if r["state"] == "queued"]
    assert len(queued) == dry["datasets"]
    first = queued[0]
    assert first["array"] in ("12m", "7m") and first["band"] in (3, 6, 7) and first["size_gb"] > 0
    assert first["casa_version"]
    archive = first["extra"]["archive"]
    assert any(f["name"].endswith(".asdm.sdm.tar") and f["semantics"] == "#progenitor" for f in archive["inputs"])
    assert all(not f["name"].endswith(".fits") for f in archive["inputs"]) and archive["qa2_files"]
    for r in queued:  # what runtime predictions learn from, as the archive's rows and DataLink give it
        raws = [f for f in r["extra"]["archive"]["inputs"] if f["semantics"] == "#progenitor"]
        assert r["n_spw"] == 2 and r["n_chan"] >= 1 and r["n_eb"] == len(raws) >= 1
        assert r["is_mosaic"] == (1 if r["extra"]["archive"]["is_mosaic"] == "T" else 0)
    for r in rows:
        if r["state"] == "excluded":
            assert r["reason"]  # never silently dropped
    again = json.loads(ari(tmp_path, "datasets", "import", "--project", "2016.1.00123.S", "--json").stdout)
    assert again["added"] == 0


def test_selection_rules_exclude_total_power_with_the_reason(tmp_path, archive_service):
    campaign(tmp_path, archive_service)
    ari(tmp_path, "datasets", "import", "--project", "2016.1.00123.S", "--project", "2017.1.00456.S",
        "--project", "2018.1.00789.S")
    rows = json.loads(ari(tmp_path, "datasets", "list", "--json").stdout)
    tp = [r for r in rows if r["array"] == "TP"]
    assert tp and all(r["state"] == "excluded" and "total power" in r["reason"].lower() for r in tp)


def test_a_wrong_project_code_is_one_clear_line(tmp_path, archive_service):
    campaign(tmp_path, archive_service)
    proc = ari(tmp_path, "datasets", "import", "--project", "2099.1.99999.S")
    assert proc.returncode == 2 and "no such project" in proc.stderr and "Traceback" not in proc.stderr
    bad = ari(tmp_path, "datasets", "import", "--project", "2016-1-123")
    assert bad.returncode == 2 and "is not a project code" in bad.stderr


def test_a_single_mous_can_be_imported_by_uid(tmp_path, archive_service):
    campaign(tmp_path, archive_service)
    proc = ari(tmp_path, "datasets", "import", "--mous", "uid___A001_X1296_X1d3", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(ari(tmp_path, "datasets", "list", "--json").stdout)
    assert [r["uid"] for r in rows] == ["uid://A001/X1296/X1d3"]

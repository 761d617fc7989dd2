"""The alma-pipeline recipe, run by the runner against a stand-in ``casa``.

The ALMA pipeline cannot run here (it ships only inside a full CASA tarball),
so ``tests/data/fake_casa/casa`` stands in for ``casa --pipeline`` (its
docstring says what it imitates). For the same reason the raw data tar holds a
skeleton ASDM (a directory with ``ASDM.xml``): only the stand-in reads it.
Everything else is real: the runner, the HTTP download, the tars, the recipe's
PPR and pipescript, the errorexit detection and the product collection.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from remote.recipes import alma_pipeline
from tests.test_runner import Archive, run_runner, status

ROOT = Path(__file__).resolve().parents[1]
FAKE_CASA = ROOT / "tests" / "data" / "fake_casa" / "casa"
UID = "uid://A001/X1296/X1d3"
RAW_TAR = "uid___A002_X1_X1.asdm.sdm.tar"
AUX_TAR = "2016.1.00123.S_uid___A001_X1296_X1d3_auxiliary.tar"


@pytest.fixture
def served(tmp_path):
    src = tmp_path / "src"
    (src / "uid___A002_X1_X1.asdm.sdm").mkdir(parents=True)
    (src / "uid___A002_X1_X1.asdm.sdm" / "ASDM.xml").write_text("<ASDM/>\n")
    (src / "aux" / "calibration").mkdir(parents=True)
    (src / "aux" / "calibration" / "uid___A001_X1296_X1d3.hifa_calimage.auxproducts.tgz").write_bytes(b"aux")
    root = tmp_path / "archive"
    root.mkdir()
    with tarfile.open(root / RAW_TAR, "w") as tar:
        tar.add(src / "uid___A002_X1_X1.asdm.sdm", arcname="uid___A002_X1_X1.asdm.sdm")
    with tarfile.open(root / AUX_TAR, "w") as tar:
        tar.add(src / "aux", arcname="2016.1.00123.S_uid___A001_X1296_X1d3_auxiliary")
    archive = Archive(root)
    yield archive
    archive.server.shutdown()


def pipeline_spec(tmp_path: Path, served: Archive, casa: Path = FAKE_CASA, env: dict | None = None,
                  files: list | None = None) -> Path:
    spec = {
        "attempt_id": "a-pl", "uid": UID, "work_dir": str(tmp_path / "work"),
        "files": files if files is not None else [served.entry(RAW_TAR), served.entry(AUX_TAR)],
        "recipe": {"name": "alma-pipeline", "python": sys.executable, "casa": str(casa), "params": {}},
        "env": env or {}, "heartbeat_s": 0.5, "poll_s": 0.1, "mem_gb": 2.0, "walltime_h": 1.0,
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_fake_casa_is_executable():
    assert os.access(FAKE_CASA, os.X_OK)


def test_pipeline_run_collects_products_weblog_commands_and_manifest(tmp_path, served):
    proc = run_runner(pipeline_spec(tmp_path, served))
    work = tmp_path / "work"
    assert proc.returncode == 0, (work / "image.log").read_text()[-3000:]
    assert status(work)["state"] == "succeeded"
    products = work / "products"
    manifest = json.loads((products / "manifest.json").read_text())
    kinds = sorted(item["kind"] for item in manifest["products"])
    assert kinds == ["casa_commands", "image", "image", "image", "image", "pipeline_manifest", "weblog"]
    assert (products / "member.uid___A001_X1296_X1d3.NGC1234_sci.spw16_18.cont.I.pbcor.fits").is_file()
    assert manifest["recipe"] == "alma-pipeline" and manifest["casa_version"] == "6.5.4.9"
    for item in manifest["products"]:
        assert alma_pipeline.sha256_file(str(products / item["file"])) == item["sha256"]
    called = [line.split("(")[0] for line in (products / "casa_commands.log").read_text().splitlines()]
    assert called == [task for task, _ in alma_pipeline.pipeline_tasks(False, {})]
    assert called.index("hif_findcont") < called.index("hif_uvcontsub") < called.index("hifa_exportdata")


def test_the_processing_request_names_project_ous_procedure_and_asdm(tmp_path, served):
    assert run_runner(pipeline_spec(tmp_path, served)).returncode == 0
    root = ET.parse(tmp_path / "work" / "pipeline" / "PPR.xml").getroot()
    assert root.findtext("ProjectSummary/ProposalCode") == "2016.1.00123.S"
    assert root.find("ProjectStructure/OUSStatusRef").get("entityId") == UID
    assert root.findtext("ProcessingRequests/ProcessingRequest/ProcessingProcedure/ProcedureTitle") == "hifa_image"
    ids = [e.text for e in root.iter("ResourceId")]
    assert ids == ["uid://A002/X1/X1"]
    assert [a.text for a in root.iter("AsdmDiskName")] == ["uid___A002_X1_X1"]
    assert (tmp_path / "work" / "pipeline" / "rawdata" / "uid___A002_X1_X1" / "ASDM.xml").is_file()


def test_an_errorexit_file_fails_the_image_stage_with_the_running_tasks_category(tmp_path, served):
    proc = run_runner(pipeline_spec(tmp_path, served, env={"FAKE_CASA_FAIL_AT": "hif_findcont"}))
    work = tmp_path / "work"
    assert proc.returncode == 1
    doc = status(work)
    assert (doc["state"], doc["stage"], doc["category"]) == ("failed", "image", "findcont")
    line = re.compile(r"^ari-runner: stage image failed: category=findcont: pipeline failed in hif_findcont "
                      r"\(casa exit 0, errorexit-\w+\.txt\): Error in hif_findcont", re.M)
    assert line.search((work / "image.log").read_text())
    assert not (work / "products" / "manifest.json").exists()


def test_a_missing_casa_fails_the_image_stage_saying_so(tmp_path, served):
    proc = run_runner(pipeline_spec(tmp_path, served, casa=tmp_path / "no" / "casa"))
    work = tmp_path / "work"
    assert proc.returncode == 1
    assert status(work)["stage"] == "image"
    assert "cannot start CASA" in (work / "image.log").read_text()


def test_raw_data_without_an_asdm_fails_restore_with_importdata(tmp_path, served):
    proc = run_runner(pipeline_spec(tmp_path, served, files=[served.entry(AUX_TAR)]))
    work = tmp_path / "work"
    assert proc.returncode == 1
    assert (status(work)["stage"], status(work)["category"]) == ("restore", "importdata")


def test_older_pipeline_releases_fit_the_continuum_with_uvcontfit(tmp_path):
    casa = "/opt/casa-6.4.1-12-pipeline-2022.2.0.64/bin/casa"
    assert alma_pipeline.needs_uvcontfit(casa)
    tasks = alma_pipeline.pipeline_tasks(alma_pipeline.needs_uvcontfit(casa), {})
    script = alma_pipeline.pipescript_text("2016.1.00123.S", UID, ["uid___A002_X1_X1"], tasks)
    order = re.findall(r"^    (h\w+)\(", script, re.M)
    assert order.index("hif_findcont") < order.index("hif_uvcontfit") < order.index("hif_uvcontsub")
    compile(script, "casa_pipescript.py", "exec")


def test_the_recipe_and_triage_give_a_failing_pipeline_task_the_same_category():
    from ari_console.triage import stage_category

    disagree = {task: (category, stage_category(task)) for task, category in alma_pipeline.TASK_CATEGORY.items()
                if stage_category(task) != category}
    assert disagree == {}


def test_the_engine_runs_an_alma_pipeline_node_with_its_python_driving_its_casa(tmp_path, served):
    import time

    from ari_console import store
    from ari_console.alma import DataSet
    from ari_console.config import load_config
    from ari_console.engine import Engine

    (tmp_path / "ari.toml").write_text(
        f'[campaign]\nname = "pl"\npoll_interval_s = 0.5\n[[node]]\nname = "pipe"\nrecipe = "alma-pipeline"\n'
        f'python = "{sys.executable}"\ncasa_path = "{FAKE_CASA}"\nscratch_dir = "{tmp_path / "scratch"}"\n')
    cfg = load_config(tmp_path / "ari.toml")
    store.import_datasets(store.open_db(cfg.campaign.db_path),
                          [DataSet(uid=UID, project="2016.1.00123.S", mem_gb=1, hours=0.01)], "t", now=time.time())
    with Engine(cfg, resolve_files=lambda ds: [served.entry(RAW_TAR), served.entry(AUX_TAR)]) as engine:
        deadline = time.time() + 120
        while time.time() < deadline and not engine.tick().idle:
            time.sleep(0.5)
        (attempt,) = store.attempts(engine.db, uid=UID)
        assert (attempt["state"], attempt["category"]) == ("succeeded", None), attempt["excerpt"]
        names = [Path(p["path"]).name for p in store.products(engine.db, attempt["id"])]
        assert "member.uid___A001_X1296_X1d3.NGC1234_sci.spw16_18.cont.I.pbcor.fits" in names

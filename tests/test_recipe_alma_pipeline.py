"""The alma-pipeline recipe, run by the runner against a strict stand-in ``casa``.

The ALMA pipeline cannot run here (it ships only inside a full CASA tarball),
so ``tests/data/fake_casa/casa`` stands in for ``casa --pipeline``; its docstring
says which of the pipeline's source files it models and where it fails as the real
tasks fail. For the same reason the raw data tar holds a skeleton ASDM (a directory
with ``ASDM.xml``) and the auxiliary tar the pipeline's restore products in the
archive's nested layout: a pipeline manifest, a session's caltables tar, the EB's
final flag versions (with ``Pipeline_Final``) and calapply list. Everything else is
real: the runner, the HTTP download, the tars, the recipe's PPR and pipescript, the
errorexit detection and the product collection.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
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
OUS = "uid___A001_X1296_X1d3"
EB = "uid___A002_X1_X1"
RAW_TAR = f"{EB}.asdm.sdm.tar"
AUX_TAR = f"2016.1.00123.S_{OUS}_auxiliary.tar"
MEMBER = f"2016.1.00123.S/science_goal.uid___A001_X1296_X1d1/group.uid___A001_X1296_X1d2/member.{OUS}"


def restore_products(folder: Path, session: str = "session_1") -> None:
    """The pipeline's restore products for one EB in ``session``, as its calibration run exports them."""
    folder.mkdir(parents=True)
    flags = folder.parent / "_flags" / f"{EB}.ms.flagversions" / "flags.Pipeline_Final"
    flags.mkdir(parents=True)
    (flags / "table.dat").write_bytes(b"flags")
    (flags.parent / "FLAG_VERSION_LIST").write_text("Pipeline_Final : final flags\n")
    with tarfile.open(folder / f"{EB}.ms.flagversions.tgz", "w:gz") as tar:
        tar.add(flags.parent, arcname=f"{EB}.ms.flagversions")
    with tarfile.open(folder / f"{OUS}.{session}.caltables.tgz", "w:gz") as tar:
        tar.add(flags / "table.dat", arcname=f"{EB}.ms.hifa_timegaincal.g.tbl/table.dat")
    (folder / f"{EB}.ms.calapply.txt").write_text(
        f"applycal(vis='{EB}.ms', intent='TARGET,CHECK', gaintable=['{EB}.ms.hifa_timegaincal.g.tbl'])\n")
    (folder / f"{OUS}.hifa_calimage.pipeline_manifest.xml").write_text(
        f'<piperesults name="{UID}"><ous name="{UID}"><casaversion name="6.5.4.9"/>'
        f'<session name="{session}"><caltables name="{OUS}.{session}.caltables.tgz" session="{session}"/>'
        f'<asdm name="{EB}.ms"><finalflags name="{EB}.ms.flagversions.tgz"/>'
        f'<applycmds name="{EB}.ms.calapply.txt"/></asdm></session></ous></piperesults>\n')


@pytest.fixture
def served(tmp_path):
    src = tmp_path / "src"
    (src / "uid___A002_X1_X1.asdm.sdm").mkdir(parents=True)
    (src / "uid___A002_X1_X1.asdm.sdm" / "ASDM.xml").write_text("<ASDM/>\n")
    restore_products(src / "aux" / "calibration", session="session_2")
    root = tmp_path / "archive"
    root.mkdir()
    with tarfile.open(root / RAW_TAR, "w") as tar:
        tar.add(src / "uid___A002_X1_X1.asdm.sdm", arcname=f"{MEMBER}/raw/uid___A002_X1_X1.asdm.sdm")
    with tarfile.open(root / AUX_TAR, "w") as tar:
        tar.add(src / "aux" / "calibration", arcname=f"{MEMBER}/calibration")
    archive = Archive(root)
    yield archive
    archive.server.shutdown()


def pipeline_spec(tmp_path: Path, served: Archive, casa: Path = FAKE_CASA, env: dict | None = None,
                  files: list | None = None, params: dict | None = None) -> Path:
    spec = {
        "attempt_id": "a-pl", "uid": UID, "work_dir": str(tmp_path / "work"),
        "files": files if files is not None else [served.entry(RAW_TAR), served.entry(AUX_TAR)],
        "recipe": {"name": "alma-pipeline", "python": sys.executable, "casa": str(casa), "params": params or {}},
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
    commands = (products / "casa_commands.log").read_text().splitlines()
    called = [line.split("(")[0] for line in commands]
    assert called == [task for task, _ in alma_pipeline.pipeline_tasks("uvcontsub", {})]
    assert called.index("hif_makeimlist") < called.index("hif_findcont") < called.index("hif_uvcontsub")
    assert "copytoraw=False" in commands[0] and "session=['session_2']" in commands[0]
    assert "imaging_products_only=True" in commands[-1]
    rawdata = work / "pipeline" / "rawdata"
    for name in (f"{OUS}.hifa_calimage.pipeline_manifest.xml", f"{OUS}.session_2.caltables.tgz",
                 f"{EB}.ms.flagversions.tgz", f"{EB}.ms.calapply.txt", f"{EB}/ASDM.xml"):
        assert (rawdata / name).is_file(), name


def test_the_processing_request_names_project_ous_procedure_and_asdm(tmp_path, served):
    assert run_runner(pipeline_spec(tmp_path, served)).returncode == 0
    root = ET.parse(tmp_path / "work" / "pipeline" / "PPR.xml").getroot()
    assert root.findtext("ProjectSummary/ProposalCode") == "2016.1.00123.S"
    assert root.find("ProjectStructure/OUSStatusRef").get("entityId") == UID
    assert root.findtext("ProcessingRequests/ProcessingRequest/ProcessingProcedure/ProcedureTitle") == "hifa_image"
    assert root.find("ProjectStructure/ObsUnitSetRef").get("entityTypeName")
    assert root.find("ProjectStructure/ProjectStatusRef").get("entityId")
    ids = [e.text for e in root.iter("ExecBlockId")]
    assert ids == ["uid://A002/X1/X1"]
    assert [a.text for a in root.iter("AsdmDiskName")] == ["uid___A002_X1_X1"]
    intents = {i.findtext("Keyword"): i.findtext("Value") for i in root.iter("Intents")}
    assert intents["SESSION_2"] == "uid://A002/X1/X1" and not intents["SESSION_1"]
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
    casa = "/opt/casa-6.5.4-9-pipeline-2023.1.0.57/bin/casa"
    assert alma_pipeline.needs_uvcontfit(casa)
    tasks = alma_pipeline.pipeline_tasks(alma_pipeline.shape_for({}, casa)[0], {})
    script = alma_pipeline.pipescript_text("2016.1.00123.S", UID, ["uid___A002_X1_X1"], ["session_1"], tasks)
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


def run_fake_casa(tmp_path: Path, script: str, served_root: Path | None = None) -> Path:
    """Run the stand-in on ``script`` in a pipeline layout whose rawdata holds the ASDM; the working dir."""
    base = tmp_path / "pl"
    (base / "rawdata" / EB).mkdir(parents=True)
    (base / "rawdata" / EB / "ASDM.xml").write_text("<ASDM/>\n")
    restore_products(base / "calibration" / MEMBER / "calibration")
    (base / "working").mkdir()
    (base / "working" / "script.py").write_text(script)
    subprocess.run([str(FAKE_CASA), "--pipeline", "--nogui", "-c", "script.py"], cwd=base / "working",
                   capture_output=True, text=True, timeout=60, check=True)
    return base / "working"


def errorexit(working: Path) -> str:
    found = list(working.glob("errorexit-*.txt"))
    return found[0].read_text() if found else ""


def test_the_stand_in_fails_the_restore_the_recipe_used_to_ask_for(tmp_path):
    """products_dir pointing at the nested calibration folder, copytoraw left True: no manifest at its top."""
    working = run_fake_casa(tmp_path, (
        "context = h_init()\ncontext.set_state('ProjectStructure', 'ous_entity_id', %r)\n"
        "hifa_restoredata(vis=[%r], session=['session_1'], ocorr_mode='ca', rawdata_dir='../rawdata', "
        "products_dir='../calibration')\n" % (UID, EB)))
    assert "'NoneType' object has no attribute 'get_ous'" in errorexit(working)


def test_the_stand_in_fails_a_session_the_manifest_does_not_list(tmp_path):
    script = ("import glob, shutil\n"
              "for p in glob.glob('../calibration/**/calibration/*', recursive=True): shutil.copy(p, '../rawdata')\n"
              "hifa_restoredata(vis=[%r], session=['session_3'], copytoraw=False)\n" % EB)
    working = run_fake_casa(tmp_path, script)
    assert "KeyError: 'default'" in errorexit(working)


def test_the_stand_in_fails_an_argument_the_task_does_not_take(tmp_path):
    working = run_fake_casa(tmp_path, "hifa_exportdata(products_dir='../products', imaging_only=True)\n")
    assert "unexpected keyword argument 'imaging_only'" in errorexit(working)


def test_the_stand_in_names_products_oussid_without_the_ousstatus_entity_id(tmp_path):
    working = run_fake_casa(tmp_path, "context = h_init()\ncontext.set_state('ProjectStructure', 'ous_entity_id', "
                                      "%r)\nhifa_exportdata(products_dir='../products')\n" % UID)
    assert errorexit(working) == ""
    assert sorted(p.name for p in (working.parent / "products").glob("*.xml")) == ["oussid.pipeline_manifest.xml"]


def test_the_processing_request_runs_through_executeppr(tmp_path, served):
    proc = run_runner(pipeline_spec(tmp_path, served, params={"mode": "ppr"}))
    work = tmp_path / "work"
    assert proc.returncode == 0, (work / "image.log").read_text()[-3000:]
    commands = (work / "products" / "casa_commands.log").read_text().splitlines()
    assert commands[0].startswith("hifa_restoredata(") and "session=['session_2']" in commands[0]
    assert "copytoraw=False" in commands[0] and "imaging_products_only=True" in commands[-1]
    assert (work / "products" / "member.uid___A001_X1296_X1d3.NGC1234_sci.spw16_18.cont.I.pbcor.fits").is_file()


def test_a_ppr_without_what_executeppr_reads_fails(tmp_path):
    base = tmp_path / "pl"
    (base / "working").mkdir(parents=True)
    (base / "PPR.xml").write_text("<SciPipeRequest><ProjectSummary><ProposalCode>x</ProposalCode></ProjectSummary>"
                                  "</SciPipeRequest>\n")
    code = "import pipeline.infrastructure.executeppr as eppr; eppr.executeppr('../PPR.xml', importonly=False)"
    subprocess.run([str(FAKE_CASA), "--pipeline", "-c", code], cwd=base / "working", capture_output=True,
                   timeout=60, check=True)
    assert "PPR has no" in errorexit(base / "working")


def test_sessions_come_from_the_archives_restore_script_without_a_manifest():
    text = ("h_init()\nhifa_restoredata(vis=['uid___A002_X1_X1', 'uid___A002_X1_X2'], "
            "session=['session_1', 'session_2'], ocorr_mode='ca')\n")
    assert alma_pipeline.sessions_from_restore_script(text) == {EB: "session_1", "uid___A002_X1_X2": "session_2"}


# The commands of pipeline/recipes/procedure_hifa_image.xml at three of the pipeline's release
# tags (2023.1.0.57, 2023.1.0.124, 2024.1.0.8; the same from 2024.0.0.86 to 2025.1.1.61).
_COMMON = ["hifa_restoredata", "hif_mstransform", "hifa_flagtargets", "hifa_imageprecheck", "hif_checkproductsize",
           "hif_makeimlist", "hif_findcont"]
_IMAGES = ["hif_makeimlist", "hif_makeimages"]
REAL_PROCEDURES = {
    (2023, 1, 0, 57): _COMMON + ["hif_uvcontfit", "hif_uvcontsub", "hif_makeimages"] + _IMAGES * 3 + ["hifa_exportdata"],
    (2023, 1, 0, 124): _COMMON + ["hif_uvcontsub", "hif_makeimages"] + _IMAGES * 3 + ["hifa_exportdata"],
    (2024, 1, 0, 8): _COMMON + ["hif_uvcontsub", "hif_makeimages"] + _IMAGES * 2 + ["hif_selfcal"] + _IMAGES * 4
    + ["hifa_exportdata"],
}


@pytest.mark.parametrize("release", sorted(REAL_PROCEDURES))
def test_the_procedure_of_each_release_is_the_one_the_pipeline_tagged(release):
    casa = "/opt/casa-6.5.4-9-pipeline-%s/bin/casa" % ".".join(str(n) for n in release)
    shape, why = alma_pipeline.shape_for({}, casa)
    assert [task for task, _ in alma_pipeline.pipeline_tasks(shape, {})] == REAL_PROCEDURES[release], why


def test_the_release_boundaries_are_where_the_procedure_changed():
    shape = alma_pipeline.procedure_shape
    assert [shape((2023, 1, 0, 57)), shape((2023, 1, 0, 58)), shape((2024, 0, 0, 85)), shape((2024, 0, 0, 86))] == [
        "uvcontfit", "uvcontsub", "uvcontsub", "selfcal"]
    selfcal = alma_pipeline.pipeline_tasks("selfcal", {})
    assert ("hif_makeimlist", {"specmode": "cube", "datatype": "best"}) in selfcal
    assert ("hif_makeimlist", {"specmode": "cube"}) not in selfcal


def test_the_stand_in_fails_findcont_before_makeimlist_as_the_recipe_used_to_call_it(tmp_path):
    working = run_fake_casa(tmp_path, "h_init()\nhif_findcont()\nhif_uvcontsub()\nhif_makeimlist(specmode='mfs')\n")
    assert "no imaging targets pending" in errorexit(working)
    working = run_fake_casa(tmp_path / "b", "h_init()\nhif_makeimlist(specmode='mfs')\nhif_findcont()\n")
    assert errorexit(working) == ""


def test_a_self_calibrating_release_runs_its_procedure_through_the_stand_in(tmp_path, served):
    proc = run_runner(pipeline_spec(tmp_path, served, params={"release": "2024.1.0.8"}))
    work = tmp_path / "work"
    assert proc.returncode == 0, (work / "image.log").read_text()[-3000:]
    called = [line.split("(")[0] for line in (work / "products" / "casa_commands.log").read_text().splitlines()]
    assert called == REAL_PROCEDURES[(2024, 1, 0, 8)]
    assert "selfcal shape: pipeline release 2024.1.0.8 (params.release)" in (work / "restore.log").read_text()


def test_a_release_that_is_no_release_fails_restore_naming_the_fix(tmp_path, served):
    proc = run_runner(pipeline_spec(tmp_path, served, params={"release": "2024.1"}))
    work = tmp_path / "work"
    assert proc.returncode == 1
    assert "write it as 2024.1.0.8" in (work / "restore.log").read_text()

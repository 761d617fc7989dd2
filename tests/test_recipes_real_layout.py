"""The recipes against the real archive's MOUS layout: the file names its DataLink lists.

``../shared/data/real/archive/`` holds the real DataLink answers for a manually calibrated
MOUS (2017.1.01185.S, four EBs): the top listing (README, product tar, auxiliary tar, raw
ASDM tars) and the listing of what the auxiliary tar holds (per-EB ``*.calibration.tgz``,
``*.calibration.plots.tgz``, ``*.ms.scriptForCalibration.py``, ``member.<ous>.scriptForPI.py``,
logs and QA reports). The tests lay those names out as the archive packs them
(``<project>/science_goal.*/group.*/member.*/{calibration,script,log,qa}/``) and check
that each recipe finds in them what it needs, and leaves the rest alone. The file
contents are stand-ins except the one line a real ``scriptForCalibration.py`` carries
to stop under another CASA (its form as the archive's scripts write it).
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from remote.recipes import alma_pipeline, casa6
from tests.test_archive_real import ARCHIVE

OUS = "uid___A001_X12a3_Xe9"
MEMBER = f"2017.1.01185.S/science_goal.uid___A001_X12a3_Xe7/group.uid___A001_X12a3_Xe8/member.{OUS}"
VERSION_CHECK = (" sys.exit('ERROR: PLEASE USE THE SAME VERSION OF CASA THAT YOU USED FOR GENERATING THE SCRIPT: "
                 "5.1.1')\n")


def listed_names(name: str) -> list[str]:
    """The file names (last part of each access URL) of a real DataLink answer."""
    text = (ARCHIVE / name).read_text()
    return [url.rsplit("/", 1)[1] for url in re.findall(r"<TD>(https?://[^<]+)</TD>", text)]


def folder_of(name: str) -> str:
    """Where the archive's auxiliary tar puts a file, by what it is."""
    if name.endswith((".calibration.tgz", ".calibration.plots.tgz")):
        return "calibration"
    if name.endswith((".py", "product_rename.txt")):
        return "script"
    if name.endswith(".log.tgz"):
        return "log"
    return "qa"


def test_the_real_listing_is_a_manual_mous_with_four_ebs():
    names = listed_names("astroquery-alma-datalink-recurse-aux.xml")
    assert sum(n.endswith(".ms.scriptForCalibration.py") for n in names) == 4
    assert f"member.{OUS}.scriptForPI.py" in names


@pytest.fixture
def real_aux(tmp_path) -> Path:
    """The real auxiliary listing laid out as its tar unpacks (contents are stand-ins)."""
    root = tmp_path / "restore"
    for name in listed_names("astroquery-alma-datalink-recurse-aux.xml"):
        path = root / MEMBER / folder_of(name) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".tgz"):
            inner = tmp_path / "inner" / name
            inner.mkdir(parents=True)
            (inner / "x.txt").write_text("x\n")
            with tarfile.open(path, "w:gz") as tar:
                tar.add(inner, arcname=name[:-4])
        elif name.endswith(".ms.scriptForCalibration.py"):
            path.write_text("import re\nimport os\n" + VERSION_CHECK)
        else:
            path.write_text("# stand-in\n")
    return root


def test_casa6_finds_the_real_manual_calibration_and_the_casa_version_its_scripts_need(real_aux):
    script = casa6.manual_calibration(str(real_aux))
    assert script == str(real_aux / MEMBER / "script" / f"member.{OUS}.scriptForPI.py")
    assert casa6.needed_casa_version(casa6.calibration_script_texts(script)) == "5.1.1"
    assert not casa6.same_release("5.1.1", "6.7.0.31")


def test_casa6_leaves_the_real_plots_logs_and_calibration_tars_packed(real_aux):
    casa6.extract_nested(str(real_aux))
    unpacked = sorted(p.name for p in real_aux.rglob("*") if p.is_dir() and not p.name.startswith(("2017", "science",
                                                                                                     "group", "member")))
    assert unpacked == ["calibration", "log", "qa", "script"], unpacked


def test_casa6_refuses_a_manual_mous_under_another_casa_naming_the_version(real_aux, tmp_path):
    """Without a monolithic casa for the version, the recipe stops before the script does."""
    import casatools  # noqa: F401  (CASA is part of the test environment: never skipped)
    script = casa6.manual_calibration(str(real_aux))
    with pytest.raises(casa6.RecipeFailure) as failure:
        casa6.run_script_for_pi(script, [], {"work_dir": str(tmp_path), "casa": None, "params": {}})
    assert failure.value.category == "calibration"
    assert "needs CASA 5.1.1" in failure.value.message and 'casa = { "5.1.1" = ".../bin/casa" }' in failure.value.message


def test_the_alma_pipeline_recipe_puts_each_real_tar_where_the_pipeline_reads_it():
    names = [n for n in listed_names("astroquery-alma-datalink.xml") if n.endswith(".tar")]
    folders = {n: alma_pipeline.input_folder(n) for n in names}
    assert sorted(folders.values()) == ["calibration", "calibration"] + ["rawdata"] * 4, folders
    assert folders["2017.1.01185.S_uid___A001_X12a3_Xe9_001_of_001.tar"] == "calibration"


# The pipeline's calapply lines carry exactly these arguments (its CalApplication export): no
# applymode, which the pipeline's own applycal sets to calflagstrict when it restores.
PIPELINE_LINE = ("applycal(vis='/lustre/pipeline/working/uid___A002_Xd28a9e_X71b8.ms', field='', intent='PHASE', "
                 "spw='17,19,21,23', antenna='0~43', gaintable=['/lustre/pipeline/working/uid___A002_Xd28a9e_X71b8.ms."
                 "hifa_timegaincal.s18_2.spw17_19_21_23.solintint.gpcal.tbl'], gainfield=['nearest'], spwmap=[[]], "
                 "interp=['linear,linearflag'], calwt=[False])")
# Every intent the pipeline's ALMA state table maps an observing mode to (and so may write).
PIPELINE_INTENT_NAMES = ["AMPLITUDE", "ATMOSPHERE", "BANDPASS", "CHECK", "DIFFGAINREF", "DIFFGAINSRC", "FOCUS", "PHASE",
                         "POINTING", "POLANGLE", "POLARIZATION", "POLLEAKAGE", "REFERENCE", "SIDEBAND", "TARGET", "WVR"]


def test_a_pipeline_calapply_line_is_applied_as_the_pipeline_applies_it():
    (call,) = casa6.parse_calapply("# Apply file for uid___A002_Xd28a9e_X71b8.ms\n" + PIPELINE_LINE + "\n")
    table = "/w/restore/x.session_1.caltables.tgz.d/" + call["gaintable"][0].rsplit("/", 1)[1]
    kwargs = casa6.applycal_kwargs(call, "/w/uid___A002_Xd28a9e_X71b8.ms", [table],
                                   ["CALIBRATE_PHASE#ON_SOURCE", "OBSERVE_TARGET#ON_SOURCE"], "calapply.txt")
    assert kwargs["applymode"] == "calflagstrict"
    assert kwargs["intent"] == "*CALIBRATE_PHASE*" and kwargs["gaintable"] == [table]
    assert (kwargs["spw"], kwargs["antenna"], kwargs["gainfield"]) == ("17,19,21,23", "0~43", ["nearest"])


def test_every_intent_the_pipeline_writes_is_translated_and_an_unknown_one_fails():
    assert sorted(casa6.PIPELINE_INTENTS) == PIPELINE_INTENT_NAMES
    for name in PIPELINE_INTENT_NAMES:
        assert all(p.startswith("*") and p != "*" + name + "*" for p in casa6.casa_intents(name).split(",")), name
    assert casa6.casa_intents("REFERENCE", ["OBSERVE_TARGET#OFF_SOURCE"]) == "*OBSERVE_TARGET#OFF_SOURCE*"
    with pytest.raises(casa6.RecipeFailure, match="none of the pipeline's intent names"):
        casa6.casa_intents("TARGET,PHOTON")


def test_a_renormalised_eb_is_named_in_what_the_manifest_reader_returns(tmp_path):
    (tmp_path / "x.hifa_calimage.pipeline_manifest.xml").write_text(
        '<piperesults name="uid://A001/X1/X2"><ous name="uid://A001/X1/X2"><session name="session_1">'
        '<caltables name="u.session_1.caltables.tgz"/><asdm name="uid___A002_X1_X3.ms">'
        '<finalflags name="uid___A002_X1_X3.ms.flagversions.tgz"/><applycmds name="uid___A002_X1_X3.ms.calapply.txt"/>'
        '<hifa_renorm apply="True" threshold="None" spw="" excludechan="{}" correctATM="False"/></asdm>'
        '</session></ous></piperesults>\n')
    entry = casa6.manifest_entry(casa6.read_pipeline_manifest(str(tmp_path)), "uid___A002_X1_X3.ms")
    assert casa6.renorm_applied(entry) and entry["renorm"]["threshold"] == "None"


def test_a_casa6_era_manual_script_passes_its_version_check_under_this_casas_python(tmp_path):
    """The archive's CASA 6 scripts check the version with ``cu`` or ``casalith``, which monolithic
    CASA has and a modular Python does not: the recipe gives them both."""
    import casatools  # CASA is part of the test environment: never skipped
    running = re.match(r"\d+\.\d+\.\d+", casatools.version_string()).group(0)
    script_dir = tmp_path / "member" / "script"
    script_dir.mkdir(parents=True)
    stop = f" sys.exit('ERROR: PLEASE USE THE SAME VERSION OF CASA THAT YOU USED FOR GENERATING THE SCRIPT: {running}')\n"
    (script_dir / "uid___A002_X1_X1.ms.scriptForCalibration.py").write_text("# stand-in\n")
    (script_dir / "member.uid___A001_X1_X2.scriptForPI.py").write_text(
        "import re, sys\n"
        f"if re.search('^{running}', '.'.join([str(i) for i in cu.version().tolist()[:-1]])) == None:\n" + stop +
        f"if re.search('^{running}', '.'.join([str(i) for i in casalith.version()[:-1]])) == None:\n" + stop +
        "open('checked', 'w').write('ok')\n")
    with pytest.raises(casa6.RecipeFailure, match="made no calibrated measurement set"):
        casa6.run_script_for_pi(str(script_dir / "member.uid___A001_X1_X2.scriptForPI.py"), [],
                                {"work_dir": str(tmp_path), "casa": None, "params": {}})
    assert (script_dir / "checked").read_text() == "ok"


def test_the_alma_pipeline_recipe_refuses_the_real_manual_mous_naming_the_casa6_recipe(real_aux, tmp_path):
    """hifa_restoredata restores pipeline calibration only; the real manual MOUS ships none of its products."""
    aux = tmp_path / "2017.1.01185.S_uid___A001_X12a3_Xe9_auxiliary.tar"
    raw = tmp_path / "2017.1.01185.S_uid___A002_Xd28a9e_X71b8.asdm.sdm.tar"
    with tarfile.open(aux, "w") as tar:
        tar.add(real_aux / "2017.1.01185.S", arcname="2017.1.01185.S")
    asdm = tmp_path / "src" / "uid___A002_Xd28a9e_X71b8.asdm.sdm"
    asdm.mkdir(parents=True)
    (asdm / "ASDM.xml").write_text("<ASDM/>\n")
    with tarfile.open(raw, "w") as tar:
        tar.add(asdm, arcname=f"{MEMBER}/raw/{asdm.name}")
    job = {"work_dir": str(tmp_path / "work"), "uid": "uid://A001/X12a3/Xe9", "inputs": [str(raw), str(aux)],
           "casa": "/opt/casa-6.5.4-9-pipeline-2023.1.0.124/bin/casa", "params": dict(alma_pipeline.DEFAULTS)}
    with pytest.raises(alma_pipeline.RecipeFailure) as failure:
        alma_pipeline.stage_restore(job)
    assert failure.value.category == "calibration"
    assert "calibrated by hand" in failure.value.message and "casa6" in failure.value.message
    assert "uid___A002_Xd28a9e_X71b8.ms.scriptForCalibration.py" in failure.value.message

"""Recipe ``alma-pipeline``: image one MOUS with the ALMA pipeline (``casa --pipeline``).

    python3 alma_pipeline.py STAGE PARAMS.json        STAGE: restore | image | export

Stdlib only; it drives a CASA install that has the pipeline (the ``casa`` key
of ``recipe_params.json``, from the job spec's ``recipe.casa``) and never
imports CASA itself. Layout under ``<work_dir>/pipeline/`` is the pipeline's
own: ``rawdata/`` (ASDMs), ``calibration/`` (the auxiliary products the
archive ships), ``working/`` (where CASA runs), ``products/`` (what
hifa_exportdata writes).

- ``restore``: untar the raw data into ``rawdata/`` (each ASDM a directory named
  by its uid, suffixes dropped) and the auxiliary tar (or the product tar that
  carries the calibration in Cycles 1-4) into ``calibration/`` (``input_folder``);
  copy the restore products (pipeline manifest, ``*.caltables.tgz``,
  ``*.flagversions.tgz``, ``*.calapply.txt``, wherever the tar puts them) to the
  top of ``rawdata/``, where ``hifa_restoredata(copytoraw=False)`` reads them, as
  the ``hifa_image`` procedure calls it (a MOUS calibrated by hand, which ships
  none of these, fails here naming the casa6 recipe); take each EB's session from the manifest
  (or the archive's ``*casa_piperestorescript.py``); write the processing request
  ``PPR.xml`` in the form ``executeppr`` reads (``ppr_xml``) and
  ``working/casa_pipescript.py`` with the procedure's stages (``pipeline_tasks``:
  the shape of the pipeline release, ``procedure_shape``: ``hif_uvcontfit`` up to
  2023.1.0.57, ``hif_selfcal`` from 2024.0.0.86; ``hif_makeimlist`` before
  ``hif_findcont`` in all of them) and the
  MOUS as ``ousstatus_entity_id`` (the products' names come from it).
- ``image``: ``casa --pipeline --nogui --nologger --agg -c casa_pipescript.py``
  in ``working/``. It fails when CASA exits non-zero or leaves an ``errorexit*``
  file; the category comes from the pipeline task that was running (the
  script records each task it starts in ``ari_pipeline_progress.txt``).
- ``export``: copy the FITS products, the weblog (``*.weblog.tgz``, or a tar of
  ``pipeline-*/html``), ``casa_commands.log`` and ``*.pipeline_manifest.xml``
  into ``products/`` with ``manifest.json`` (sha256 of each, recipe, CASA
  version, parameters).

Params: ``project_code`` (default: from the auxiliary tar's name
``<PROJECT>_<OUS>_auxiliary.tar``), ``release`` (the pipeline release, e.g.
``2024.1.0.8``, whose ``hifa_image`` shape to run; default: the release the CASA
path names, else the shape every release since 2023.1.0.58 runs), ``uvcontfit``
(true / false: the shape with / without ``hif_uvcontfit`` before ``hif_uvcontsub``,
when ``release`` is not given), ``maxcubesize_gb``
(40), ``maxcubelimit_gb`` (60), ``maxproductsize_gb`` (500), ``mode``
(``pipescript``, or ``ppr`` to run ``PPR.xml`` through ``executeppr``).

Known failures write ``<work_dir>/<stage>.failure.json`` ({category, message}),
print ``ari-recipe: step failed: category=<category>: <message>`` and exit 1.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from remote.procutil import sha256_file  # noqa: E402  (remote/ is copied whole to the node)

RECIPE = "alma-pipeline"
RECIPE_VERSION = "2"
DEFAULTS = {"project_code": None, "uvcontfit": None, "release": None, "maxcubesize_gb": 40.0, "maxcubelimit_gb": 60.0,
            "maxproductsize_gb": 500.0, "mode": "pipescript"}
# The category of a failure in each task: the same as the console's triage (triage.stage_category),
# which a test keeps true.
TASK_CATEGORY = {
    "hifa_restoredata": "calibration", "hifa_importdata": "importdata", "hif_mstransform": "imaging",
    "hifa_flagtargets": "calibration", "hifa_imageprecheck": "makeimlist", "hif_checkproductsize": "makeimlist",
    "hif_makeimlist": "makeimlist", "hif_findcont": "findcont", "hif_uvcontfit": "uvcontfit",
    "hif_uvcontsub": "uvcontfit", "hif_makeimages": "imaging", "hifa_exportdata": "export",
}
PROGRESS_FILE = "ari_pipeline_progress.txt"


class RecipeFailure(Exception):
    """A failure the recipe understands: its category (triage's closed list) and message."""

    def __init__(self, category: str, message: str):
        Exception.__init__(self, message)
        self.category = category
        self.message = message


# ------------------------------------------------------------- pure parts

# Where the ``hifa_image`` procedure changed shape (``pipeline/recipes/procedure_hifa_image.xml``
# at the pipeline's release tags): ``hif_uvcontfit`` runs before ``hif_uvcontsub`` up to
# 2023.1.0.57; ``hif_selfcal`` and the self-calibrated images come from 2024.0.0.86 on.
LAST_UVCONTFIT_RELEASE = (2023, 1, 0, 57)
FIRST_SELFCAL_RELEASE = (2024, 0, 0, 86)
SHAPES = ("uvcontfit", "uvcontsub", "selfcal")


def procedure_shape(release) -> str:
    """The shape of the ``hifa_image`` procedure of a pipeline release (a tuple, or None: unknown).

    >>> procedure_shape((2022, 2, 0, 68)), procedure_shape((2023, 1, 0, 124)), procedure_shape((2025, 1, 0, 35))
    ('uvcontfit', 'uvcontsub', 'selfcal')

    An unknown release gets ``uvcontsub``: it runs on every release since 2023.1.0.58
    (the later ones only add self-calibration).

    >>> procedure_shape(None)
    'uvcontsub'
    """
    if release is not None and release <= LAST_UVCONTFIT_RELEASE:
        return "uvcontfit"
    if release is not None and release >= FIRST_SELFCAL_RELEASE:
        return "selfcal"
    return "uvcontsub"


def pipeline_tasks(shape, limits: dict) -> list:
    """The stages of the ``hifa_image`` procedure of one ``shape`` (``SHAPES``), in order, as ``(task, kwargs)``.

    Every release lists ``hif_makeimlist`` (mfs) before ``hif_findcont``, which takes its
    targets from that list. Up to 2023.1.0.57 ``hif_uvcontfit`` fits the continuum before
    ``hif_uvcontsub``; later ones let ``hif_uvcontsub`` fit it; from 2024.0.0.86 the
    images are made again after ``hif_selfcal`` (the cubes once, from the best data).
    All restore with ``copytoraw=False`` and export the imaging products only.
    ``shape`` True / False stand for ``uvcontfit`` / ``uvcontsub`` (the recipe's ``uvcontfit`` param).

    >>> [t for t, _ in pipeline_tasks("uvcontsub", {})][:9]
    ['hifa_restoredata', 'hif_mstransform', 'hifa_flagtargets', 'hifa_imageprecheck', 'hif_checkproductsize', 'hif_makeimlist', 'hif_findcont', 'hif_uvcontsub', 'hif_makeimages']
    >>> [t for t, _ in pipeline_tasks("uvcontfit", {})][5:9]
    ['hif_makeimlist', 'hif_findcont', 'hif_uvcontfit', 'hif_uvcontsub']
    >>> [t for t, _ in pipeline_tasks("selfcal", {})][13:15]
    ['hif_selfcal', 'hif_makeimlist']
    """
    if shape is True or shape is False:
        shape = "uvcontfit" if shape else "uvcontsub"
    if shape not in SHAPES:
        raise ValueError("unknown hifa_image shape %r (one of %s)" % (shape, ", ".join(SHAPES)))
    tasks = [
        ("hifa_restoredata", {"copytoraw": False}),
        ("hif_mstransform", {}),
        ("hifa_flagtargets", {}),
        ("hifa_imageprecheck", {}),
        ("hif_checkproductsize", {"maxcubesize": float(limits.get("maxcubesize_gb", 40.0)),
                                  "maxcubelimit": float(limits.get("maxcubelimit_gb", 60.0)),
                                  "maxproductsize": float(limits.get("maxproductsize_gb", 500.0))}),
        ("hif_makeimlist", {"specmode": "mfs"}),
        ("hif_findcont", {}),
    ]
    if shape == "uvcontfit":
        tasks.append(("hif_uvcontfit", {}))
    tasks += [("hif_uvcontsub", {}), ("hif_makeimages", {})]
    if shape == "selfcal":
        images = [{"specmode": "cont"}, {"specmode": "repBW"}]
        selfcal = [{"specmode": "mfs", "datatype": "selfcal"}, {"specmode": "cont", "datatype": "selfcal"},
                   {"specmode": "cube", "datatype": "best"}, {"specmode": "repBW", "datatype": "selfcal"}]
    else:
        images = [{"specmode": "cont"}, {"specmode": "cube"}, {"specmode": "repBW"}]
        selfcal = []
    for kwargs in images:
        tasks += [("hif_makeimlist", kwargs), ("hif_makeimages", {})]
    if selfcal:
        tasks.append(("hif_selfcal", {}))
        for kwargs in selfcal:
            tasks += [("hif_makeimlist", kwargs), ("hif_makeimages", {})]
    tasks.append(("hifa_exportdata", {"imaging_products_only": True}))
    return tasks


def pipeline_release(casa_path: str):
    """The pipeline release a CASA path names (``...-pipeline-2023.1.0.124``) as a tuple, or None.

    >>> pipeline_release("/opt/casa-6.5.4-9-pipeline-2023.1.0.124/bin/casa")
    (2023, 1, 0, 124)
    >>> pipeline_release("2024.1.0.8")
    (2024, 1, 0, 8)
    """
    match = re.search(r"(?:pipeline-|^)(\d{4})\.(\d+)\.(\d+)\.(\d+)", casa_path or "")
    return tuple(int(g) for g in match.groups()) if match else None


def needs_uvcontfit(casa_path: str) -> bool:
    """True if the CASA path names a pipeline release up to 2023.1.0.57 (the hif_uvcontfit shape).

    >>> needs_uvcontfit("/opt/casa-6.4.1-12-pipeline-2022.2.0.64/bin/casa")
    True
    >>> needs_uvcontfit("/opt/casa-6.5.4-9-pipeline-2023.1.0.57/bin/casa")
    True
    >>> needs_uvcontfit("/opt/casa-6.5.4-9-pipeline-2023.1.0.124/bin/casa")
    False
    """
    return procedure_shape(pipeline_release(casa_path)) == "uvcontfit"


def shape_for(params: dict, casa_path: str) -> tuple:
    """``(shape, why)``: ``params.release`` first, then ``params.uvcontfit``, then the release the CASA path names.

    >>> shape_for({"release": "2024.1.0.8", "uvcontfit": None}, "/opt/casa/bin/casa")
    ('selfcal', 'pipeline release 2024.1.0.8 (params.release)')
    >>> shape_for({"release": None, "uvcontfit": True}, "/opt/casa/bin/casa")
    ('uvcontfit', 'params.uvcontfit')
    >>> shape_for({"release": None, "uvcontfit": None}, "/opt/casa/bin/casa")[1]
    'pipeline release unknown (the CASA path names none; set params.release)'
    """
    if params.get("release"):
        release = pipeline_release(str(params["release"]))
        if release is None:
            raise RecipeFailure("unknown", "params.release %r is no pipeline release — write it as 2024.1.0.8"
                                % params["release"])
        return procedure_shape(release), "pipeline release %s (params.release)" % params["release"]
    if params.get("uvcontfit") is not None:
        return ("uvcontfit" if params["uvcontfit"] else "uvcontsub"), "params.uvcontfit"
    release = pipeline_release(casa_path)
    if release is None:
        return procedure_shape(None), "pipeline release unknown (the CASA path names none; set params.release)"
    return procedure_shape(release), "pipeline release %s (the CASA path)" % ".".join(str(n) for n in release)


def asdm_name(path: str) -> str:
    """An ASDM's uid name without archive suffixes.

    >>> asdm_name("/x/uid___A002_X1_X1.asdm.sdm")
    'uid___A002_X1_X1'
    """
    name = os.path.basename(path.rstrip("/"))
    for suffix in (".asdm.sdm", ".sdm", ".asdm"):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def uid_of(name: str) -> str:
    """``uid___A002_X1_X1`` -> ``uid://A002/X1/X1``."""
    return name.replace("uid___", "uid://").replace("_", "/")


def project_code_from(inputs: list):
    """The proposal code from ``<PROJECT>_<OUS>_auxiliary.tar``, or None.

    >>> project_code_from(["/r/2016.1.00123.S_uid___A001_X1296_X1d3_auxiliary.tar"])
    '2016.1.00123.S'
    """
    for path in inputs:
        match = re.match(r"(\d{4}\.\d\.\d{5}\.[A-Z]+)_", os.path.basename(path))
        if match:
            return match.group(1)
    return None


def sessions_from_manifest(path: str) -> dict:
    """``{asdm name: session}`` from a ``*pipeline_manifest.xml`` (it names EBs by MS or ASDM)."""
    out = {}
    for session in ET.parse(path).getroot().iter("session"):
        for asdm in session.iter("asdm"):
            out[asdm_name(asdm.get("name", "").replace(".ms", ""))] = session.get("name")
    return out


def sessions_from_restore_script(text: str) -> dict:
    """``{asdm name: session}`` from the ``hifa_restoredata(vis=[...], session=[...])`` of a restore script.

    >>> sessions_from_restore_script("hifa_restoredata(vis=['uid___A002_X1_X1', 'uid___A002_X1_X2'], "
    ...                              "session=['session_1', 'session_2'], ocorr_mode='ca')")
    {'uid___A002_X1_X1': 'session_1', 'uid___A002_X1_X2': 'session_2'}
    """
    import ast

    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "hifa_restoredata":
            kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg in ("vis", "session")}
            vis, session = kw.get("vis") or [], kw.get("session") or []
            vis = [vis] if isinstance(vis, str) else vis
            session = [session] * len(vis) if isinstance(session, str) else session
            return {asdm_name(v): s for v, s in zip(vis, session)}
    return {}


def ppr_xml(project_code: str, ous_uid: str, asdms: list, sessions: list, tasks: list) -> str:
    """The pipeline processing request in the form ``executeppr`` reads.

    ProjectSummary (ProposalCode, Observatory, Telescope); ProjectStructure with
    ObsUnitSetRef, ObsUnitSetTitle/Type, ProjectStatusRef and OUSStatusRef (the MOUS:
    ``ousstatus_entity_id`` names the products); one ProcessingRequest with
    ProcessingIntents (``INTERFEROMETRY``, ``SESSION_1`` ... ``SESSION_n`` = each
    session's EB uids joined by `` | ``, none skipped), the procedure's commands, and the DataSet's AsdmIdentifiers (AsdmRef/ExecBlockId,
    AsdmDiskName) under a SchedBlockIdentifier's RelativePath.
    """
    root = ET.Element("SciPipeRequest")
    summary = ET.SubElement(root, "ProjectSummary")
    ET.SubElement(summary, "ProposalCode").text = project_code
    ET.SubElement(summary, "Observatory").text = "ALMA"
    ET.SubElement(summary, "Telescope").text = "ALMA"
    structure = ET.SubElement(root, "ProjectStructure")
    ET.SubElement(structure, "ObsUnitSetRef", entityId=ous_uid, partId="X00000000", entityTypeName="ObsProject",
                  documentVersion="1")
    ET.SubElement(structure, "ObsUnitSetTitle").text = "ari-console re-imaging"
    ET.SubElement(structure, "ObsUnitSetType").text = "Member"
    ET.SubElement(structure, "ProjectStatusRef", entityId="uid://A001/X0/X0", entityTypeName="ProjectStatus",
                  documentVersion="1")
    ET.SubElement(structure, "OUSStatusRef", entityId=ous_uid, partId="X00000000", entityTypeName="OUSStatus",
                  documentVersion="1")
    requests = ET.SubElement(root, "ProcessingRequests")
    ET.SubElement(requests, "RootDirectory").text = ".."
    request = ET.SubElement(requests, "ProcessingRequest")
    intents = ET.SubElement(request, "ProcessingIntents")
    pairs = [("INTERFEROMETRY", "true")]
    # executeppr reads SESSION_1, SESSION_2, ... up to the first missing one: list every number
    numbered = dict(session_numbers(sessions))
    for number in range(1, max(numbered or [1]) + 1):
        members = [uid_of(a) for a, s in zip(asdms, sessions) if s == numbered.get(number)]
        pairs.append(("SESSION_%d" % number, " | ".join(members)))
    for key, value in pairs:
        intent = ET.SubElement(intents, "Intents")
        ET.SubElement(intent, "Keyword").text = key
        ET.SubElement(intent, "Value").text = value
    procedure = ET.SubElement(request, "ProcessingProcedure")
    ET.SubElement(procedure, "ProcedureTitle").text = "hifa_image"
    for task, kwargs in tasks:
        command = ET.SubElement(procedure, "ProcessingCommand")
        ET.SubElement(command, "Command").text = task
        params = ET.SubElement(command, "ParameterSet")
        for key, value in kwargs.items():
            param = ET.SubElement(params, "Parameter")
            ET.SubElement(param, "Keyword").text = key
            ET.SubElement(param, "Value").text = str(value)
    dataset = ET.SubElement(request, "DataSet")
    sbset = ET.SubElement(dataset, "SchedBlockSet")
    sb = ET.SubElement(sbset, "SchedBlockIdentifier")
    ET.SubElement(sb, "RelativePath").text = "."
    ET.SubElement(sb, "SchedBlockName").text = "ari"
    for name in asdms:
        ident = ET.SubElement(sb, "AsdmIdentifier")
        ref = ET.SubElement(ident, "AsdmRef")
        ET.SubElement(ref, "ExecBlockId").text = uid_of(name)
        ET.SubElement(ident, "AsdmDiskName").text = name
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def session_numbers(sessions: list) -> list:
    """``[(n, name)]`` for the distinct ``session_n`` names, in order.

    >>> session_numbers(["session_2", "session_1", "session_2"])
    [(1, 'session_1'), (2, 'session_2')]
    """
    names = sorted(set(sessions), key=lambda n: int(re.sub(r"\D", "", n) or 0))
    return [(int(re.sub(r"\D", "", n) or 0), n) for n in names]


def pipescript_text(project_code: str, ous_uid: str, asdms: list, sessions: list, tasks: list) -> str:
    """A ``casa_pipescript.py`` like the archive's, recording each task it starts."""
    lines = [
        "# casa_pipescript.py written by ari-console's alma-pipeline recipe (hifa_image procedure)",
        "import time",
        "",
        "def _ari_progress(task):",
        "    with open(%r, 'a') as fh:" % PROGRESS_FILE,
        "        fh.write('%s %s\\n' % (time.strftime('%Y-%m-%dT%H:%M:%S'), task))",
        "",
        "context = h_init()",
        "context.set_state('ProjectSummary', 'proposal_code', %r)" % project_code,
        "context.set_state('ProjectStructure', 'ousstatus_entity_id', %r)" % ous_uid,
        "context.set_state('ProjectStructure', 'recipe_name', 'hifa_image')",
        "try:",
    ]
    for task, kwargs in tasks:
        args = dict(kwargs)
        if task == "hifa_restoredata":
            args.update(vis=list(asdms), session=list(sessions), rawdata_dir="../rawdata", ocorr_mode="ca")
        if task == "hifa_exportdata":
            args.update(products_dir="../products")
        call = ", ".join("%s=%r" % (k, v) for k, v in args.items())
        lines.append("    _ari_progress(%r)" % task)
        lines.append("    %s(%s)" % (task, call))
    lines += ["finally:", "    h_save()", ""]
    return "\n".join(lines)


def failed_task(working: str):
    """The last pipeline task the script started (from the progress file), or None."""
    try:
        with open(os.path.join(working, PROGRESS_FILE)) as fh:
            lines = [l.split() for l in fh if l.strip()]
    except OSError:
        return None
    return lines[-1][1] if lines and len(lines[-1]) > 1 else None


# ------------------------------------------------------------ the stages

def load_params(path: str) -> dict:
    with open(path) as fh:
        doc = json.load(fh)
    merged = dict(DEFAULTS)
    merged.update(doc.get("params") or {})
    doc["params"] = merged
    return doc


def write_json(path: str, doc) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def say(text: str) -> None:
    print("ari-recipe: %s" % text, flush=True)


def layout(job: dict) -> dict:
    base = os.path.join(job["work_dir"], "pipeline")
    out = {k: os.path.join(base, k) for k in ("rawdata", "calibration", "working", "products")}
    out["work"] = base
    return out


def untar(path: str, dest: str) -> None:
    """Extract ``path`` into ``dest``, refusing members that escape it."""
    root = os.path.realpath(dest)
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            target = os.path.realpath(os.path.join(dest, member.name))
            if target != root and not target.startswith(root + os.sep):
                raise RecipeFailure("importdata", "tar member %s escapes %s" % (member.name, dest))
        tar.extractall(dest)


def input_folder(name: str) -> str:
    """Where an input tar goes: ``rawdata`` for raw ASDM tars, ``calibration`` for every other tar.

    The calibration rides in the auxiliary tar, or (Cycles 1-4) in the product tar
    ``<PROJECT>_<OUS>_001_of_001.tar``; both are searched for the restore products.

    >>> input_folder("2017.1.01185.S_uid___A002_Xd28a9e_X71b8.asdm.sdm.tar")
    'rawdata'
    >>> input_folder("2015.1.00123.S_uid___A001_X2f6_X25d_001_of_001.tar")
    'calibration'
    """
    low = name.lower()
    return "rawdata" if low.endswith((".asdm.sdm.tar", ".asdm.tar", ".sdm.tar")) else "calibration"


# What hifa_restoredata with copytoraw=False looks for in rawdata/ (the restore products)
RESTORE_PRODUCTS = ("*pipeline_manifest.xml", "*.caltables.tgz", "*.flagversions.tgz", "*.calapply.txt",
                    "*auxproducts.tgz")


def stage_restore(job: dict) -> None:
    """Untar raw data and auxiliary products into the pipeline's layout; write PPR.xml and casa_pipescript.py.

    ``rawdata/`` gets each ASDM (named by its uid) and, at its top level, the restore
    products found anywhere in the auxiliary data (``RESTORE_PRODUCTS``): what
    ``hifa_restoredata(copytoraw=False)`` reads. Each EB's session comes from the
    pipeline manifest, else from the archive's restore script, else ``session_1``.
    """
    dirs = layout(job)
    for path in dirs.values():
        os.makedirs(path, exist_ok=True)
    for path in job["inputs"]:
        if not os.path.exists(path):
            raise RecipeFailure("importdata", "input %s is missing — run the download stage" % path)
        name = os.path.basename(path)
        dest = dirs[input_folder(name)]
        say("untar %s -> %s" % (name, os.path.relpath(dest, job["work_dir"])))
        untar(path, dest)
    asdms = []
    for found in sorted(glob.glob(os.path.join(dirs["work"], "**", "ASDM.xml"), recursive=True)):
        folder = os.path.dirname(found)
        target = os.path.join(dirs["rawdata"], asdm_name(folder))
        if folder != target:
            if os.path.exists(target):
                shutil.rmtree(target)
            os.rename(folder, target)
        if asdm_name(target) not in asdms:
            asdms.append(asdm_name(target))
    if not asdms:
        raise RecipeFailure("importdata", "no ASDM (a directory with ASDM.xml) in %s" % ", ".join(
            os.path.basename(p) for p in job["inputs"]))
    placed = []
    for pattern in RESTORE_PRODUCTS:
        for path in sorted(glob.glob(os.path.join(dirs["calibration"], "**", pattern), recursive=True)):
            shutil.copy(path, os.path.join(dirs["rawdata"], os.path.basename(path)))
            placed.append(os.path.basename(path))
    if not any(p.endswith((".calapply.txt", ".flagversions.tgz")) for p in placed):
        manual = manual_calibration_files(dirs["calibration"])
        if manual:
            raise RecipeFailure("calibration", "%s was calibrated by hand (%s, no calapply.txt or flagversions.tgz): "
                                "hifa_restoredata restores only pipeline calibration — run it on a casa6 node, "
                                "which runs its scriptForPI.py: ari override %s --node NODE" % (
                                    job["uid"], ", ".join(manual[:2]), job["uid"]))
    if not any(p.endswith("pipeline_manifest.xml") for p in placed):
        say("no pipeline manifest among the auxiliary data: hifa_restoredata will find the products by name")
    sessions_of = session_map(dirs)
    sessions = [sessions_of.get(a, "session_1") for a in asdms]
    params = job["params"]
    code = params["project_code"] or project_code_from(job["inputs"])
    if not code:
        raise RecipeFailure("importdata", "no project code: pass params.project_code or an input named "
                                          "<PROJECT>_<OUS>_auxiliary.tar")
    shape, why = shape_for(params, job.get("casa") or "")
    tasks = pipeline_tasks(shape, params)
    with open(os.path.join(dirs["work"], "PPR.xml"), "w") as fh:
        fh.write(ppr_xml(code, job["uid"], asdms, sessions, tasks))
    with open(os.path.join(dirs["working"], "casa_pipescript.py"), "w") as fh:
        fh.write(pipescript_text(code, job["uid"], asdms, sessions, tasks))
    say("rawdata: %d ASDM(s) in %s, restore products %s" % (
        len(asdms), ", ".join(sorted(set(sessions))), ", ".join(placed) or "none"))
    say("PPR.xml and casa_pipescript.py written: %d pipeline tasks (the hifa_image procedure's %s shape: %s)" % (
        len(tasks), shape, why))


def manual_calibration_files(folder: str) -> list:
    """The names of a manual calibration's files under ``folder``: per-EB ``*.scriptForCalibration.py``
    and ``*.calibration.tgz`` (what the archive ships for MOUS calibrated by hand)."""
    found = []
    for pattern in ("*.scriptForCalibration.py", "*.calibration.tgz"):
        found += sorted(os.path.basename(p) for p in glob.glob(os.path.join(folder, "**", pattern), recursive=True))
    return found


def session_map(dirs: dict) -> dict:
    """``{asdm: session}`` from the pipeline manifest in rawdata/, else the archive's restore script."""
    for path in sorted(glob.glob(os.path.join(dirs["rawdata"], "*pipeline_manifest.xml"))):
        try:
            found = sessions_from_manifest(path)
        except ET.ParseError as exc:
            raise RecipeFailure("calibration", "%s is not valid XML: %s" % (os.path.basename(path), exc))
        if found:
            return found
    for path in sorted(glob.glob(os.path.join(dirs["calibration"], "**", "*piperestorescript.py"), recursive=True)):
        with open(path, errors="replace") as fh:
            try:
                found = sessions_from_restore_script(fh.read())
            except (SyntaxError, ValueError):
                found = {}
        if found:
            return found
    return {}


def casa_command(job: dict) -> list:
    """The ``casa --pipeline`` command line for the chosen mode."""
    casa = job.get("casa")
    if not casa:
        raise RecipeFailure("unknown", "no CASA with the pipeline configured: set recipe.casa in the node config")
    base = [casa, "--pipeline", "--nogui", "--nologger", "--agg"]
    if job["params"]["mode"] == "ppr":
        code = "import pipeline.infrastructure.executeppr as eppr; eppr.executeppr('../PPR.xml', importonly=False)"
        return base + ["-c", code]
    return base + ["-c", "casa_pipescript.py"]


def stage_image(job: dict) -> None:
    """Run the pipeline; errorexit* or a non-zero exit fails with the running task's category."""
    working = layout(job)["working"]
    if not os.path.exists(os.path.join(working, "casa_pipescript.py")):
        raise RecipeFailure("unknown", "no casa_pipescript.py: run the restore stage first")
    for old in glob.glob(os.path.join(working, "errorexit*")) + glob.glob(os.path.join(working, PROGRESS_FILE)):
        os.remove(old)
    argv = casa_command(job)
    say("running %s" % " ".join(argv))
    sys.stdout.flush()
    try:
        code = subprocess.call(argv, cwd=working)
    except OSError as exc:
        raise RecipeFailure("unknown", "cannot start CASA %s: %s" % (argv[0], exc))
    errors = sorted(glob.glob(os.path.join(working, "errorexit*")))
    task = failed_task(working)
    if errors or code != 0:
        detail = ""
        if errors:
            with open(errors[-1]) as fh:
                detail = " ".join(fh.read().split())[:400]
        category = TASK_CATEGORY.get(task or "", "unknown")
        raise RecipeFailure(category, "pipeline failed in %s (casa exit %d%s)%s" % (
            task or "an unknown task", code, ", %s" % os.path.basename(errors[-1]) if errors else "",
            ": " + detail if detail else ""))
    say("pipeline finished: last task %s" % task)


def casa_version(job: dict, working: str):
    """The CASA version: from the pipeline manifest, the CASA log, or ``casa --version``."""
    for path in glob.glob(os.path.join(layout(job)["products"], "*pipeline_manifest.xml")):
        try:
            node = ET.parse(path).getroot().find(".//casaversion")
        except ET.ParseError:
            node = None
        if node is not None and (node.get("name") or node.text):
            return node.get("name") or node.text.strip()
    for path in sorted(glob.glob(os.path.join(working, "casa-*.log"))):
        with open(path, errors="replace") as fh:
            match = re.search(r"CASA Version[^\d]*([\d.\-]+\S*)", fh.read())
        if match:
            return match.group(1)
    return None


def stage_export(job: dict) -> None:
    """Collect FITS products, weblog, casa_commands.log and the pipeline manifest; write manifest.json."""
    dirs = layout(job)
    out = job["products_dir"]
    os.makedirs(out, exist_ok=True)
    collected = []

    def take(path: str, kind: str) -> None:
        target = os.path.join(out, os.path.basename(path))
        shutil.copy(path, target)
        collected.append({"file": os.path.basename(target), "kind": kind})

    fits = sorted(glob.glob(os.path.join(dirs["products"], "**", "*.fits"), recursive=True) +
                  glob.glob(os.path.join(dirs["products"], "**", "*.fits.gz"), recursive=True))
    if not fits:
        raise RecipeFailure("export", "the pipeline exported no FITS products to %s" % dirs["products"])
    for path in fits:
        take(path, "image")
    manifests = glob.glob(os.path.join(dirs["products"], "**", "*pipeline_manifest.xml"), recursive=True)
    if not manifests:
        raise RecipeFailure("export", "no pipeline_manifest.xml among the pipeline products")
    for path in manifests:
        take(path, "pipeline_manifest")
    html = sorted(glob.glob(os.path.join(dirs["working"], "pipeline-*", "html")))
    commands = [os.path.join(h, "casa_commands.log") for h in html if os.path.exists(os.path.join(h, "casa_commands.log"))]
    if not commands:
        raise RecipeFailure("export", "no casa_commands.log in the pipeline's html directory")
    take(commands[-1], "casa_commands")
    weblogs = glob.glob(os.path.join(dirs["products"], "**", "*weblog.tgz"), recursive=True)
    if weblogs:
        take(weblogs[0], "weblog")
    elif html:
        target = os.path.join(out, "member.%s.weblog.tgz" % job["uid"].replace("uid://", "uid___").replace("/", "_"))
        with tarfile.open(target, "w:gz") as tar:
            tar.add(os.path.dirname(html[-1]), arcname=os.path.basename(os.path.dirname(html[-1])))
        collected.append({"file": os.path.basename(target), "kind": "weblog"})
    else:
        raise RecipeFailure("export", "no weblog: neither *weblog.tgz nor pipeline-*/html")
    for item in collected:
        path = os.path.join(out, item["file"])
        item["sha256"] = sha256_file(path)
        item["size"] = os.path.getsize(path)
    manifest = {
        "uid": job["uid"], "attempt_id": job["attempt_id"], "recipe": RECIPE, "recipe_version": RECIPE_VERSION,
        "casa": job.get("casa"), "casa_version": casa_version(job, dirs["working"]), "parameters": job["params"],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "products": collected,
    }
    write_json(os.path.join(out, "manifest.json"), manifest)
    say("collected %d files into %s" % (len(collected), out))


STAGES = {"restore": stage_restore, "image": stage_image, "export": stage_export}


def main(argv: list) -> int:
    if len(argv) != 2 or argv[0] not in STAGES:
        print("usage: alma_pipeline.py restore|image|export PARAMS.json", file=sys.stderr)
        return 2
    stage, params_path = argv
    job = load_params(params_path)
    try:
        STAGES[stage](job)
    except RecipeFailure as exc:
        say("step failed: category=%s: %s" % (exc.category, exc.message))
        write_json(os.path.join(job["work_dir"], "%s.failure.json" % stage),
                   {"category": exc.category, "message": exc.message})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

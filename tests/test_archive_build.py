"""The demo archive holds what CASA really made, packed as the ALMA archive packs it."""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from ari_console.archive import client
from ari_console.demo import archive_build as build
from ari_console.commands.archive import app


@pytest.fixture(scope="module")
def manifest(demo_archive) -> dict:
    return build.load_manifest(demo_archive)


def member_files(root: Path, entry: dict, semantics: str) -> tarfile.TarFile:
    """The tar of one MOUS with the given DataLink semantics (``#auxiliary``: the tar that carries the
    calibration, which is the product tar in a Cycle 1-4 style MOUS)."""
    f = next((f for f in entry["files"] if f["semantics"] == semantics), None)
    if f is None and semantics == "#auxiliary" and entry.get("packing") == "cycle1-4":
        f = next(f for f in entry["files"] if f["semantics"] == "#this")
    return tarfile.open(root / f["path"])


def qa2_fits(root: Path, entry: dict, suffix: str) -> fits.Header | np.ndarray:
    """(header, data) of the QA2 image whose name ends with ``suffix``."""
    with member_files(root, entry, "#this") as tar:
        name = next(n for n in tar.getnames() if n.endswith(suffix))
        with fits.open(io.BytesIO(tar.extractfile(name).read())) as hdul:
            return hdul[0].header, hdul[0].data.squeeze()


def test_the_archive_has_at_least_eight_mous_in_three_projects_and_three_bands(manifest):
    built = [m for m in manifest["mous"].values() if m["built"]]
    assert len(built) >= 8
    assert {m["obscore"]["proposal_id"] for m in built} == {"2016.1.00123.S", "2017.1.00456.S", "2018.1.00789.S"}
    assert {m["obscore"]["band_list"] for m in built} == {"3", "6", "7"}
    cases = {m["case"] for m in built}
    assert {"total_power", "missing_caltable", "line_whole_window", "memory_hog", "walltime_long",
            "qa2_discrepant", "corrupt_download"} <= cases


def test_every_mous_is_packed_as_the_archive_packs_it(demo_archive, manifest):
    for uid, entry in manifest["mous"].items():
        if not entry["built"]:
            continue
        names = [f["name"] for f in entry["files"]]
        asdm = entry["obscore"]["asdm_uid"].replace("uid://", "uid___").replace("/", "_")
        project = entry["obscore"]["proposal_id"]
        assert f"{project}_{asdm}.asdm.sdm.tar" in names
        assert {f["semantics"] for f in entry["files"]} <= {"#progenitor", "#this", "#auxiliary", "#documentation"}
        readme = (demo_archive / next(f["path"] for f in entry["files"] if f["semantics"] == "#documentation"))
        text = readme.read_text()
        assert text.startswith("ALMA Member ObsUnitSet README") and "raw (semipass)" in text
        assert client.casa_version_from_text(text) is None  # the README names none; the pipeline manifest does
        with member_files(demo_archive, entry, "#auxiliary") as tar:
            folders = {n.split("/")[4] for n in tar.getnames() if n.count("/") >= 4}
        assert {"README", "log", "qa", "script"} <= folders, uid
        assert ("calibration" in folders) == (entry["case"] != "total_power"), uid
        raws = [f["name"] for f in entry["files"] if f["semantics"] == "#progenitor" and ".asdm.sdm" in f["name"]]
        assert len(raws) == len(build.asdm_uids(next(m for m in build.CATALOGUE if m.uid == uid))), uid


def aux_names(root: Path, entry: dict) -> list[str]:
    """Names in the MOUS's calibration/ and script/ folders, whichever tar carries them."""
    names = []
    for f in entry["files"]:
        if f["semantics"] in ("#auxiliary", "#this") and f["name"].endswith(".tar"):
            with tarfile.open(root / f["path"]) as tar:
                names += [n.rsplit("/", 1)[-1] for n in tar.getnames() if "/calibration/" in n or "/script/" in n]
    return names


def test_pipeline_mous_ship_final_flags_calapply_lists_with_pipeline_intents_and_session_tables(demo_archive, manifest):
    entry = manifest["mous"]["uid://A001/X1296/X1d3"]
    names = aux_names(demo_archive, entry)
    asdm = "uid___A002_Xc1296_X1d3"
    for name in (f"{asdm}.ms.flagversions.tgz", f"{asdm}.ms.calapply.txt", "uid___A001_X1296_X1d3.session_1.caltables.tgz",
                 "uid___A001_X1296_X1d3.hifa_calimage.pipeline_manifest.xml",
                 "uid___A001_X1296_X1d3.hifa_calimage.casa_piperestorescript.py", "member.uid___A001_X1296_X1d3.scriptForPI.py"):
        assert name in names, name
    with member_files(demo_archive, entry, "#auxiliary") as tar:
        calapply = tar.extractfile(next(n for n in tar.getnames() if n.endswith(".calapply.txt"))).read().decode()
        flags = next(n for n in tar.getnames() if n.endswith(".flagversions.tgz"))
        with tarfile.open(fileobj=io.BytesIO(tar.extractfile(flags).read())) as inner:
            assert any(n.endswith("flags.Pipeline_Final") for n in inner.getnames())
    assert "intent='TARGET,CHECK'" in calapply and "intent='BANDPASS,PHASE,AMPLITUDE'" in calapply


def test_the_two_session_mous_has_one_caltables_tar_per_session(demo_archive, manifest):
    entry = manifest["mous"]["uid://A001/X133d/X3a5"]
    names = aux_names(demo_archive, entry)
    assert {"uid___A001_X133d_X3a5.session_1.caltables.tgz", "uid___A001_X133d_X3a5.session_2.caltables.tgz"} <= set(names)
    with member_files(demo_archive, entry, "#auxiliary") as tar:
        xml = tar.extractfile(next(n for n in tar.getnames() if n.endswith("pipeline_manifest.xml"))).read().decode()
    assert xml.count("<session ") == 2


def test_the_mosaic_mous_says_so_in_its_metadata(manifest):
    entry = manifest["mous"]["uid://A001/X133d/X3ad"]
    assert entry["obscore"]["is_mosaic"] == "T"


def test_qa2_images_come_from_casa_and_their_fluxes_match_the_truth(demo_archive, manifest):
    checked = 0
    for uid, entry in manifest["mous"].items():
        sources = entry["truth"]["sources"]
        if not entry["built"] or entry["case"] == "total_power" or sources[0]["shape"] != "point":
            continue
        if sources[0]["dra_arcsec"] or sources[0]["ddec_arcsec"]:
            continue  # the mosaic's source sits between pointings (its flux: test_recipe_casa6_kinds)
        header, data = qa2_fits(demo_archive, entry, "_cont.manual.pbcor.fits")
        made_by = "immath" if entry["truth"]["qa2_flux_scale"] != 1 else "tclean"  # the rescaled one
        assert header["ORIGIN"].startswith("CASA") and made_by in str(header["HISTORY"]), uid
        centre = data[data.shape[0] // 2 - 2: data.shape[0] // 2 + 3, data.shape[1] // 2 - 2: data.shape[1] // 2 + 3]
        expected = sources[0]["flux_jy"] * entry["truth"]["qa2_flux_scale"]
        y, x = np.indices(data.shape)
        far = np.hypot(y - data.shape[0] // 2, x - data.shape[1] // 2) > data.shape[0] // 4
        noise = float(np.nanstd(np.where(far, data, np.nan)))
        assert abs(float(np.nanmax(centre)) - expected) < 0.1 * expected + 5 * noise, uid
        checked += 1
    assert checked >= 6


def test_the_discrepant_mous_qa2_image_is_off_by_its_wrong_flux_scale(demo_archive, manifest):
    entry = next(m for m in manifest["mous"].values() if m["case"] == "qa2_discrepant")
    _, data = qa2_fits(demo_archive, entry, "_cont.manual.pbcor.fits")
    assert float(np.nanmax(data)) / entry["truth"]["sources"][0]["flux_jy"] == pytest.approx(1.4, rel=0.08)


def test_the_qa2_cube_is_continuum_subtracted_around_its_line(demo_archive, manifest):
    normal = manifest["mous"]["uid://A001/X1296/X1d3"]
    _, cube = qa2_fits(demo_archive, normal, ".manual.cube.pbcor.fits")
    spectrum = np.nanmax(cube.reshape(cube.shape[0], -1), axis=1)
    line_peak = normal["truth"]["line"]["peak_jy"]
    assert spectrum.max() == pytest.approx(line_peak, rel=0.1)
    # The 0.5 Jy continuum is gone: line-free channels hold noise only.
    assert np.median(spectrum[:4]) < 0.05 * normal["truth"]["sources"][0]["flux_jy"]


def test_one_mous_has_no_line_free_channel_so_its_edge_fitted_cube_loses_the_line(demo_archive, manifest):
    whole = next(m for m in manifest["mous"].values() if m["case"] == "line_whole_window")
    profile = np.array(whole["build"]["line_profile_jy"])
    # Every channel carries line emission: no line-free channel to fit the continuum on ...
    assert profile.min() > 0.5 * whole["truth"]["line"]["peak_jy"]
    _, cube = qa2_fits(demo_archive, whole, ".manual.cube.pbcor.fits")
    spectrum = np.nanmax(cube.reshape(cube.shape[0], -1), axis=1)
    # ... so the QA2 analyst's fit of the window's edges subtracted most of the line too.
    assert spectrum.max() < 0.25 * whole["truth"]["line"]["peak_jy"]


def test_qa2_images_are_noise_limited_at_the_expected_thermal_noise(demo_archive, manifest):
    """The rms measured as the QA2 comparison measures it, against the radiometer estimate."""
    from ari_console.qa2.measure import measure_file

    for mous in (build.CATALOGUE[0], build.CATALOGUE[3]):
        entry, plan = manifest["mous"][mous.uid], build.casa_spec(mous, 0)["qa2"]
        for kind, suffix in (("cont", "_cont.manual.pbcor.fits"), ("cube", ".manual.cube.pbcor.fits")):
            with member_files(demo_archive, entry, "#this") as tar, \
                    TemporaryDirectory() as tmp:
                name = next(n for n in tar.getnames() if n.endswith(suffix))
                path = Path(tmp) / Path(name).name
                path.write_bytes(tar.extractfile(name).read())
                rms_mjy = measure_file(path).rms * 1e3 / mous.qa2_flux_scale
            expected = plan[f"{kind}_noise_mjy"]
            assert expected < rms_mjy < 2.5 * expected, (mous.uid, kind, rms_mjy, expected)


def test_the_archive_ships_no_clean_threshold_so_the_recipe_measures_its_own(manifest):
    for mous in build.CATALOGUE:
        assert "threshold" not in manifest["mous"][mous.uid]["hints"], mous.uid


def test_the_calibration_table_really_undoes_the_gain_errors(manifest):
    for uid, entry in manifest["mous"].items():
        if entry["built"] and entry["case"] != "total_power":
            quality = entry["build"]["restore_quality"]
            assert quality["data"]["abs_phase_deg"] > 10, uid
            assert quality["corrected_data"]["abs_phase_deg"] < 0.1, uid
            assert abs(quality["corrected_data"]["amp_ratio"] - 1) < 0.001, uid


def _unpack(root: Path, entry: dict, into: Path) -> Path:
    """Untar a MOUS's raw and auxiliary tars into ``into``; the member folder."""
    for semantics in ("#progenitor", "#auxiliary"):
        with member_files(root, entry, semantics) as tar:
            tar.extractall(into, filter="data")
    return next(into.glob("*/science_goal.*/group.*/member.*"))


RESTORE_CHECK = """
import glob
import numpy as np
from casatools import table
tb = table()
tb.open(glob.glob("../calibrated/*.ms.split.cal")[0])
sub = tb.query("DATA_DESC_ID==0")  # one window: the windows' shapes differ
flag, data = sub.getcol("FLAG"), sub.getcol("DATA")
a1, a2 = sub.getcol("ANTENNA1"), sub.getcol("ANTENNA2")
sub.close()
tb.close()
bad = (a1 == {bad}) | (a2 == {bad})
good = ~flag[:, :, ~bad]
print("PHASES", abs(np.degrees(np.angle(data[:, :, ~bad][good].mean()))), flag[:, :, bad].mean())
"""


def test_the_manual_mous_script_for_pi_runs_each_ebs_calibration_script(casa, demo_archive, manifest, tmp_path):
    """NGC_5678 is a centred Gaussian: the vector average of the calibrated data has no phase; the analyst's
    broken antenna is flagged."""
    entry = manifest["mous"]["uid://A001/X1296/X1d5"]
    member = _unpack(demo_archive, entry, tmp_path)
    names = aux_names(demo_archive, entry)
    asdm = "uid___A002_Xc1296_X1d5"
    assert {f"{asdm}.calibration.tgz", f"{asdm}.ms.scriptForCalibration.py",
            "member.uid___A001_X1296_X1d5.scriptForPI.py"} <= set(names)
    proc = subprocess.run([casa.python, "member.uid___A001_X1296_X1d5.scriptForPI.py"], cwd=member / "script",
                          env=casa.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = casa.run(RESTORE_CHECK.replace("{bad}", str(build.CATALOGUE[1].bad_antenna)), member / "script")
    phase, bad_flagged = map(float, out.split("PHASES")[1].split())
    assert phase < 5 and bad_flagged == 1.0


def test_the_missing_caltable_mous_names_a_table_its_session_tar_lacks(demo_archive, manifest):
    entry = next(m for m in manifest["mous"].values() if m["case"] == "missing_caltable")
    with member_files(demo_archive, entry, "#auxiliary") as tar:
        calapply = tar.extractfile(next(n for n in tar.getnames() if n.endswith(".calapply.txt"))).read().decode()
        session = next(n for n in tar.getnames() if n.endswith(".caltables.tgz"))
        with tarfile.open(fileobj=io.BytesIO(tar.extractfile(session).read())) as inner:
            shipped = {n.split("/")[0] for n in inner.getnames()}
    named = set(re.findall(r"working/([^'/]+\.tbl)", calapply))
    assert named and not named & shipped


def test_the_total_power_mous_has_no_interferometric_products(demo_archive, manifest):
    entry = next(m for m in manifest["mous"].values() if m["case"] == "total_power")
    assert all(a.split(":")[1].startswith("PM") for a in entry["obscore"]["antenna_arrays"].split())
    assert "#this" not in {f["semantics"] for f in entry["files"]}
    with member_files(demo_archive, entry, "#progenitor") as tar:
        assert any("/raw/" in n for n in tar.getnames())


def test_the_slow_and_big_mous_carry_the_knobs_a_recipe_honours(demo_archive, manifest):
    for case, knob in (("memory_hog", "demo_alloc_gb"), ("walltime_long", "demo_slowdown_s")):
        entry = next(m for m in manifest["mous"].values() if m["case"] == case)
        with member_files(demo_archive, entry, "#auxiliary") as tar:
            name = next(n for n in tar.getnames() if n.endswith("script/demo_hints.json"))
            assert knob in json.loads(tar.extractfile(name).read())


def test_the_memory_hog_is_predicted_to_fit_a_small_node_but_allocates_more(manifest):
    """The client's prediction from the metadata is a realistic under-estimate of what imaging takes."""
    entry = next(m for m in manifest["mous"].values() if m["case"] == "memory_hog")
    predicted = client.predicted_memory_gb(entry["obscore"])
    normal = client.predicted_memory_gb(manifest["mous"]["uid://A001/X1296/X1d3"]["obscore"])
    assert normal < predicted < 4.0  # placed on a small (4 GB) node, bigger than a normal MOUS
    assert entry["hints"]["demo_alloc_gb"] > 2 * predicted  # ... where the runner's budget kills it


def test_the_long_mous_is_predicted_to_fit_a_short_walltime_and_asks_the_recipe_to_run_slow(manifest):
    entry = next(m for m in manifest["mous"].values() if m["case"] == "walltime_long")
    predicted_h = client.predicted_hours(entry["obscore"])
    normal_h = client.predicted_hours(manifest["mous"]["uid://A001/X1296/X1d3"]["obscore"])
    assert predicted_h < 0.06 and predicted_h < normal_h  # fits a short walltime, unlike a normal MOUS
    assert entry["hints"]["demo_slowdown_s"] > 0  # ... which the recipe's sleeps then exceed


def test_a_current_cache_is_reused_without_running_casa(demo_archive):
    before = (demo_archive / "manifest.json").stat().st_mtime_ns
    assert build.build_archive(demo_archive, python="/nonexistent/python") == demo_archive
    assert (demo_archive / "manifest.json").stat().st_mtime_ns == before


def test_a_cache_of_another_recipe_is_not_current(demo_archive, tmp_path):
    stale = tmp_path / "stale"
    stale.mkdir()
    manifest = build.load_manifest(demo_archive)
    (stale / "manifest.json").write_text(json.dumps(dict(manifest, recipe_hash="0" * 16)))
    assert build.is_built(demo_archive) and not build.is_built(stale)


def test_archive_build_command_reports_the_cached_archive(demo_archive):
    result = CliRunner().invoke(app, ["build", "--root", str(demo_archive), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) == {"root", "recipe_version", "built_seconds", "casa_build_seconds", "mous",
                            "files", "bytes"}
    assert summary["mous"] == len(build.CATALOGUE) and summary["files"] >= 8 * 3


def test_a_small_archive_builds_with_progress_and_goes_stale_when_its_recipe_changes(tmp_path):
    """A one-MOUS archive (the total-power one: the quickest for CASA) built for real into tmp."""
    import dataclasses

    tp = next(m for m in build.CATALOGUE if m.case == "total_power")
    seen: list[tuple[int, int, str]] = []
    root = build.build_archive(tmp_path / "small", catalogue=(tp,), progress=lambda *a: seen.append(a))
    assert [(done, total) for done, total, _ in seen] == [(0, 1), (1, 1)]
    assert list(build.load_manifest(root)["mous"]) == [tp.uid]
    assert build.is_built(root, (tp,))
    assert not build.is_built(root, (dataclasses.replace(tp, noise_jy=tp.noise_jy * 2),))

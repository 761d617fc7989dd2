"""The casa6 recipe, run for real by the runner on a simulated ALMA data set.

The data set is made with CASA's simulator: 12 ALMA antennas, two spws of 8
channels, a 1 Jy point source at the phase centre with a 2 Jy line in
channels 3-4 of the first spw, a little noise, complex antenna gains corrupting the data, an
ASDM exported from it, and a gaincal table (made from the imported ASDM) that
undoes the corruption, shipped in a nested caltables.tgz with a calapply.txt —
the raw tar and auxiliary tar an archive would serve.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from remote.recipes import casa6
from tests.test_runner import Archive, run_runner, status

ROOT = Path(__file__).resolve().parents[1]
UID = "uid://A001/X1296/X1d3"
EB = "uid___A002_X1_X1"
RAW_TAR = f"{EB}.asdm.sdm.tar"
AUX_TAR = "2016.1.00123.S_uid___A001_X1296_X1d3_auxiliary.tar"
CALTABLE = f"{EB}.ms.hifa_timegaincal.ap.tbl"
TRUE_FLUX_JY = 1.0
TRUE_LINE_JY = 2.0

SIMULATE = f'''
import os, shutil
import numpy as np
import casadata
from casatasks import exportasdm, gaincal, importasdm
from casatasks.private import simutil
from casatools import componentlist, measures, simulator, table

me = measures()
direction = "J2000 10h00m00.0s -30d00m00.0s"
cl = componentlist()
cl.addcomponent(dir=direction, flux={TRUE_FLUX_JY}, fluxunit="Jy", freq="230GHz", shape="point")
cl.rename("point.cl"); cl.close()
cfg = os.path.join(os.path.dirname(casadata.__file__), "__data__", "alma", "simmos", "alma.cycle5.1.cfg")
x, y, z, d, pad, ant, tel, pos = simutil.simutil().readantenna(cfg)
n = 12
sm = simulator(); sm.open("sim.ms")
sm.setconfig(telescopename="ALMA", x=x[:n], y=y[:n], z=z[:n], dishdiameter=d[:n], mount="alt-az",
             antname=ant[:n], padname=pad[:n], coordsystem="global", referencelocation=me.observatory("ALMA"))
sm.setspwindow(spwname="SPW16", freq="230.0GHz", deltafreq="10MHz", freqresolution="10MHz", nchannels=8, stokes="XX YY")
sm.setspwindow(spwname="SPW18", freq="232.0GHz", deltafreq="10MHz", freqresolution="10MHz", nchannels=8, stokes="XX YY")
sm.setfeed("perfect X Y")
sm.setfield(sourcename="NGC1234", sourcedirection=direction)
sm.setlimits(shadowlimit=0.001, elevationlimit="8deg")
sm.setauto(0.0)
sm.settimes(integrationtime="30s", usehourangle=True, referencetime=me.epoch("utc", "2024/01/01/00:00:00"))
for spw in ["SPW16", "SPW18"]:
    sm.observe(sourcename="NGC1234", spwname=spw, starttime="0s", stoptime="300s",
               state_obs_mode="OBSERVE_TARGET#ON_SOURCE")
sm.setdata(spwid=[0, 1], fieldid=[0])  # without spwid only the first spw is predicted
sm.predict(complist="point.cl"); sm.close()

tb = table()
# two setspwindow calls leave a duplicate polarization row that exportasdm rejects
tb.open("sim.ms/DATA_DESCRIPTION", nomodify=False); tb.putcol("POLARIZATION_ID", tb.getcol("POLARIZATION_ID") * 0); tb.close()
tb.open("sim.ms/POLARIZATION", nomodify=False); tb.removerows(list(range(1, tb.nrows()))); tb.close()
tb.open("sim.ms", nomodify=False)
a1, a2, ddid = tb.getcol("ANTENNA1"), tb.getcol("ANTENNA2"), tb.getcol("DATA_DESC_ID")
data = tb.getcol("DATA")
rng = np.random.default_rng(7)
gains = rng.uniform(0.7, 1.3, n) * np.exp(1j * rng.uniform(-1.0, 1.0, n))
line = ddid == 0
data[:, 3:5, line] *= {(TRUE_FLUX_JY + TRUE_LINE_JY) / TRUE_FLUX_JY}
# a little thermal noise: gaincal discards solutions whose chi2 is exactly zero
data = data + 0.02 * (rng.standard_normal(data.shape) + 1j * rng.standard_normal(data.shape))
data = data * (gains[a1] * np.conj(gains[a2]))[None, None, :]
tb.putcol("DATA", data); tb.close()

exportasdm(vis="sim.ms", asdm="{EB}")
importasdm(asdm="{EB}", vis="cal.ms")
os.makedirs("aux/calibration")
gaincal(vis="cal.ms", caltable="aux/calibration/{CALTABLE}", spw="0:0~2;5~7,1", solint="inf",
        refant="0", gaintype="G", calmode="ap")
print("simulated")
'''


@pytest.fixture(scope="session")
def demo_archive(casa, tmp_path_factory) -> Path:
    """A directory with the raw data tar and the auxiliary tar (caltable + a restore script)."""
    work = tmp_path_factory.mktemp("casa6_sim")
    casa.run(SIMULATE, work)
    root = work / "archive"
    root.mkdir()
    with tarfile.open(root / RAW_TAR, "w") as tar:
        tar.add(work / EB, arcname=f"{EB}.asdm.sdm")
    (work / "aux" / "script").mkdir()
    (work / "aux" / "script" / f"{EB}.scriptForPI.py").write_text("# the archive's restore script (not run by casa6)\n")
    # as the archive ships them: the tables in a nested caltables.tgz, and how to apply them
    with tarfile.open(work / "aux" / "calibration" / "uid___A001_X1296_X1d3.hifa_calimage.caltables.tgz", "w:gz") as tgz:
        tgz.add(work / "aux" / "calibration" / CALTABLE, arcname=CALTABLE)
    shutil.rmtree(work / "aux" / "calibration" / CALTABLE)
    (work / "aux" / "calibration" / f"{EB}.ms.calapply.txt").write_text(
        f"applycal(vis='{EB}.ms', field='', intent='', spw='', antenna='', gaintable=['{CALTABLE}'], "
        "gainfield=[''], spwmap=[[]], interp=['linear'], calwt=[False], applymode='calflag', flagbackup=False)\n")
    with tarfile.open(root / AUX_TAR, "w") as tar:
        tar.add(work / "aux", arcname="2016.1.00123.S_uid___A001_X1296_X1d3_auxiliary")
    return root


@pytest.fixture(scope="session")
def served(demo_archive):
    archive = Archive(demo_archive)
    yield archive
    archive.server.shutdown()


def casa6_spec(tmp_path: Path, served: Archive, casa, params: dict, stages=None) -> Path:
    spec = {
        "attempt_id": "a-casa6", "uid": UID, "work_dir": str(tmp_path / "work"),
        "stages": stages or ["download", "restore", "image", "export"],
        "files": [served.entry(RAW_TAR), served.entry(AUX_TAR)],
        "recipe": {"name": "casa6", "python": casa.python, "params": params},
        "mem_gb": 8.0, "walltime_h": 1.0, "env": {"CASASITECONFIG": str(casa.site_config)},
        "heartbeat_s": 1.0, "poll_s": 0.2,
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def peak_jy_per_beam(path: Path) -> float:
    with fits.open(path) as hdul:
        return float(np.nanmax(hdul[0].data))


def test_runner_images_the_demo_data_set_and_the_continuum_flux_matches_the_truth(tmp_path, served, casa):
    spec = casa6_spec(tmp_path, served, casa, {"imsize": 128, "niter": 300, "caltables": [CALTABLE]})
    proc = run_runner(spec, timeout=900)
    work = tmp_path / "work"
    logs = "\n".join((work / f"{s}.log").read_text()[-2000:] for s in ("restore", "image", "export") if (work / f"{s}.log").exists())
    assert proc.returncode == 0, logs
    doc = status(work)
    assert doc["state"] == "succeeded" and doc["peak_rss_bytes"] > 50 * 2**20
    products = work / "products"
    base = "member.uid___A001_X1296_X1d3.NGC1234_sci"
    cont = products / f"{base}.spw0_1.cont.I.pbcor.fits"
    for name in (cont.name, f"{base}.spw0_1.cont.I.pb.fits", f"{base}.spw0_1.cont.I.image.fits",
                 f"{base}.spw0.cube.I.pbcor.fits", f"{base}.spw1.cube.I.pbcor.fits"):
        assert (products / name).is_file(), sorted(p.name for p in products.iterdir())
    assert abs(peak_jy_per_beam(cont) / TRUE_FLUX_JY - 1) < 0.05
    with fits.open(products / f"{base}.spw0.cube.I.pbcor.fits") as hdul:
        cube = hdul[0].data[0]
    manifest = json.loads((products / "manifest.json").read_text())
    # the cube's first channel on tclean's LSRK grid gets no data: it is left out, and the manifest says so
    (choice,) = manifest["imaging"].values()
    first, last = (int(c) for c in choice["cubes"]["0"]["channels"].split("~"))
    assert first == 1 and "edge channels 0 hold 0%" in choice["cubes"]["0"]["channels_why"]
    assert cube.shape[0] == last - first + 1
    per_channel = dict(zip(range(first, last + 1), np.nanmax(cube, axis=(1, 2))))
    assert abs(max(per_channel[3], per_channel[4]) / TRUE_LINE_JY - 1) < 0.05
    assert max(abs(per_channel[c]) for c in (1, 6, 7) if c in per_channel) < 0.05 * TRUE_LINE_JY
    assert manifest["recipe"] == "casa6" and manifest["casa_version"].startswith("6.")
    assert manifest["contranges"] == {"0": "0~1;6~7", "1": "0~7"}
    assert manifest["parameters"]["imsize"] == 128
    for item in manifest["products"]:
        assert casa6.sha256_file(str(products / item["file"])) == item["sha256"]
    assert "SpectralWindow: 0" in (work / "cont.dat").read_text()


def test_a_missing_caltable_fails_restore_with_category_calibration(tmp_path, served, casa):
    spec = casa6_spec(tmp_path, served, casa, {"caltables": [CALTABLE, f"{EB}.ms.hifa_bandpass.tbl"]},
                      stages=["download", "restore"])
    proc = run_runner(spec, timeout=600)
    work = tmp_path / "work"
    assert proc.returncode == 1
    doc = status(work)
    assert (doc["state"], doc["stage"], doc["category"]) == ("failed", "restore", "calibration")
    lines = (work / "restore.log").read_text().splitlines()
    assert (f"ari-runner: stage restore failed: category=calibration: caltable {EB}.ms.hifa_bandpass.tbl is "
            f"missing from the auxiliary data (found: {CALTABLE})") in lines


def test_product_size_within_limits_needs_no_mitigation():
    plan = casa6.plan_product_size(128, [8, 8], 1, maxcubesize_gb=40, maxproductsize_gb=500)
    assert plan["ok"] and plan["nbin"] == 1 and plan["imsize"] == 128 and plan["mitigations"] == []


def test_product_size_too_large_bins_channels_then_shrinks_the_field():
    # one 2000x2000x3840 cube is 61 GB: binning by 2 brings it to 31 GB
    plan = casa6.plan_product_size(2000, [3840], 1, maxcubesize_gb=40, maxproductsize_gb=500)
    assert plan["ok"] and plan["nbin"] == 2 and plan["imsize"] == 2000
    plan = casa6.plan_product_size(2000, [3840], 1, maxcubesize_gb=10, maxproductsize_gb=500)
    assert plan["ok"] and plan["nbin"] == 4 and plan["imsize"] < 2000 and plan["cube_gb"] <= 10
    assert plan["mitigations"] == ["binned channels by 4", f"reduced imsize from 2000 to {plan['imsize']}"]


def test_product_size_beyond_any_mitigation_fails_with_the_sizes_in_the_reason():
    plan = casa6.plan_product_size(4000, [3840] * 4, 3, maxcubesize_gb=1, maxproductsize_gb=5)
    assert not plan["ok"]
    assert plan["reason"].startswith("product size check failed: largest cube ")
    assert "limit 1.0 GB" in plan["reason"] and "nbin=4" in plan["reason"]


def test_continuum_heuristic_finds_a_line_in_a_noisy_spectrum():
    rng = np.random.default_rng(3)
    spectrum = 1.0 + 0.01 * rng.standard_normal(64)
    spectrum[20:26] += np.array([0.1, 0.5, 1.0, 1.0, 0.5, 0.1])
    chans = casa6.continuum_channels(list(spectrum), nsigma=3.0, pad=1)
    assert not set(range(20, 26)) & set(chans)
    assert len(chans) >= 50
    assert casa6.channel_ranges(chans).count(";") <= 2


def test_product_names_follow_the_pipeline():
    assert (casa6.product_base(UID, "NGC1234", [16, 18, 20, 22], "cont") + ".pbcor.fits"
            == "member.uid___A001_X1296_X1d3.NGC1234_sci.spw16_18_20_22.cont.I.pbcor.fits")
    assert (casa6.product_base(UID, "NGC1234", [17], "cube") + ".pbcor.fits"
            == "member.uid___A001_X1296_X1d3.NGC1234_sci.spw17.cube.I.pbcor.fits")


def test_a_slowed_down_casa_job_is_killed_at_its_walltime(tmp_path, served, casa):
    """slowdown_s is how the demo makes a job outlive a short walltime."""
    spec = casa6_spec(tmp_path, served, casa, {"imsize": 64, "slowdown_s": 60, "caltables": [CALTABLE]})
    doc = json.loads(spec.read_text())
    doc["walltime_h"] = 0.004  # 14.4 s: download and importasdm fit, the first slowdown does not
    spec.write_text(json.dumps(doc))
    proc = run_runner(spec, timeout=120)
    work = tmp_path / "work"
    assert proc.returncode == 1
    doc = status(work)
    assert (doc["state"], doc["stage"], doc["category"]) == ("failed", "restore", "walltime")
    assert "ari-runner: killed: walltime 0.004 h exceeded" in (work / "restore.log").read_text().splitlines()
    assert "slowdown: sleeping 60.0 s" in (work / "restore.log").read_text()


def test_casa_passing_the_memory_budget_is_killed_with_category_memory(tmp_path, served, casa):
    spec = casa6_spec(tmp_path, served, casa, {"caltables": [CALTABLE]})
    doc = json.loads(spec.read_text())
    doc["mem_gb"] = 0.1  # importing casatasks alone takes more than 100 MB
    spec.write_text(json.dumps(doc))
    proc = run_runner(spec, timeout=120)
    work = tmp_path / "work"
    assert proc.returncode == 1
    doc = status(work)
    assert (doc["state"], doc["stage"], doc["category"]) == ("failed", "restore", "memory")
    assert re.search(r"^ari-runner: killed: memory budget 0\.1 GB exceeded \(rss \d+\.\d+ GB\)$",
                     (work / "restore.log").read_text(), re.M)


def test_restore_follows_the_archives_calapply_file_when_no_caltables_are_given(tmp_path, served, casa):
    spec = casa6_spec(tmp_path, served, casa, {}, stages=["download", "restore"])
    proc = run_runner(spec, timeout=600)
    work = tmp_path / "work"
    assert proc.returncode == 0, (work / "restore.log").read_text()[-3000:]
    assert f"as {EB}.ms.calapply.txt says" in (work / "restore.log").read_text()
    out = casa.run(f"""
        import numpy as np
        from casatools import table
        tb = table(); tb.open({str(work / (EB + ".ms"))!r})
        data, ddid = tb.getcol("CORRECTED_DATA"), tb.getcol("DATA_DESC_ID"); tb.close()
        print([float(abs(data[:, :, ddid == spw].mean(axis=2)).mean()) for spw in (0, 1)])
    """, tmp_path / "check")
    spw0_mean, spw1 = json.loads(out.strip().splitlines()[-1])
    assert abs(spw1 - TRUE_FLUX_JY) < 0.02  # vector average over baselines: gains undone
    assert spw0_mean > TRUE_FLUX_JY  # spw 0 carries the line on top


def test_cubes_over_the_size_limit_are_imaged_with_coarser_channels(tmp_path, served, casa):
    # a 64 x 64 x 8 float cube is 1.2e-4 GB: a 1e-4 GB limit forces nbin=2
    params = {"imsize": 64, "niter": 50, "caltables": [CALTABLE], "maxcubesize_gb": 0.0001}
    proc = run_runner(casa6_spec(tmp_path, served, casa, params), timeout=900)
    work = tmp_path / "work"
    assert proc.returncode == 0, (work / "image.log").read_text()[-3000:]
    manifest = json.loads((work / "products" / "manifest.json").read_text())
    assert manifest["size_plan"]["nbin"] == 2
    assert manifest["size_plan"]["mitigations"] == ["binned channels by 2"]
    with fits.open(work / "products" / "member.uid___A001_X1296_X1d3.NGC1234_sci.spw0.cube.I.pbcor.fits") as hdul:
        assert hdul[0].header["NAXIS3"] == 4 and hdul[0].header["NAXIS1"] == 64


def test_a_line_filling_its_window_is_caught_by_its_continuum_level():
    levels = {0: 0.30, 1: 0.795}  # spw 1: a line wider than the window, its "continuum" is the line
    [(spw, ratio)] = casa6.line_filled_spws(levels, 1.5)
    assert spw == 1 and 2.5 < ratio < 2.8
    assert casa6.line_filled_spws({0: 0.30, 1: 0.33}, 1.5) == []

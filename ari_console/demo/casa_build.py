"""Build the demo archive's data sets with CASA: simulate, corrupt, calibrate, QA2-image.

    python casa_build.py SPEC.json WORK_DIR

Run with a Python that has casatools/casatasks (and ``CASASITECONFIG`` set to an
offline site config). SPEC.json holds ``{"mous": [...]}`` as written by
``ari_console/demo/archive_build.py``; for every MOUS this script writes, under
``WORK_DIR/<mous uid file name>/``:

- ``raw/<asdm>.asdm.sdm/``: the raw visibilities as an ASDM (``exportasdm`` of
  the simulated MS whose DATA carry per-antenna gain errors and noise);
- ``calibration/<asdm>.ms.ampphase_inf.tbl``: the ``gaincal`` table (solved
  against the noiseless model) that ``applycal`` uses to undo those errors;
- ``product/*.fits``: the QA2 images (a ``tclean`` with its own cell, size and
  weighting: aggregate continuum from the line-free channels, a cube of the
  continuum-subtracted (``uvcontsub``) line window) named as QA2 analysts name them;
- ``log/casa-<asdm>.log``: this MOUS's CASA log; ``result.json``: the truth,
  how well the table restores the data and what each image holds.

Progress goes to stdout as ``PROGRESS <i> <n> <uid> <step>`` lines. Stdlib +
CASA only; nothing of the console is imported.
"""

import json
import os
import shutil
import sys
import time

import numpy as np

C_KMS = 299792.458


def log_progress(index, total, uid, step):
    """One progress line the console turns into a progress bar."""
    print(f"PROGRESS {index} {total} {uid} {step}", flush=True)


def antenna_subset(config, nant):
    """Positions of the first ``nant`` antennas of a casadata ALMA configuration."""
    import casadata
    from casatasks.private.simutil import simutil

    path = os.path.join(os.path.dirname(casadata.__file__), "__data__", "alma", "simmos", config)
    x, y, z, d, pads, _ants, tel, pos = simutil().readantenna(path)
    return x[:nant], y[:nant], z[:nant], d[:nant], list(pads[:nant]), tel, pos


def offset_direction(ra, dec, dra_arcsec, ddec_arcsec):
    """The J2000 direction string ``dra``/``ddec`` arcsec (true angle) from (ra, dec)."""
    from casatools import measures, quanta

    me, qa = measures(), quanta()
    centre = me.direction("J2000", ra, dec)
    lon, lat = centre["m0"]["value"], centre["m1"]["value"]
    lat2 = lat + np.radians(ddec_arcsec / 3600.0)
    lon2 = lon + np.radians(dra_arcsec / 3600.0) / np.cos(lat)
    return "J2000 {} {}".format(qa.formxxx(f"{lon2}rad", format="hms", prec=5),
                                qa.formxxx(f"{lat2}rad", format="dms", prec=4))


def make_componentlist(path, m):
    """The continuum sources of MOUS ``m`` as a CASA component list."""
    from casatools import componentlist

    shutil.rmtree(path, ignore_errors=True)
    cl = componentlist()
    for src in m["sources"]:
        kw = dict(dir=offset_direction(m["ra"], m["dec"], src["dra_arcsec"], src["ddec_arcsec"]),
                  flux=src["flux_jy"], fluxunit="Jy", freq=f"{m['cont']['freq_ghz']}GHz",
                  shape=src["shape"])
        if src["shape"] == "gaussian":
            kw.update(majoraxis=f"{src['major_arcsec']}arcsec", minoraxis=f"{src['minor_arcsec']}arcsec",
                      positionangle=f"{src.get('pa_deg', 0)}deg")
        cl.addcomponent(**kw)
    cl.rename(path)
    cl.close()


def line_profile(m):
    """The line's flux density (Jy) in each channel of the line window."""
    line = m["line"]
    ch = np.arange(line["nchan"], dtype=float)
    sigma = line["fwhm_chan"] / 2.3548
    return line["peak_jy"] * np.exp(-0.5 * ((ch - line["center_chan"]) / sigma) ** 2)


def make_line_cube(path, m):
    """A model cube (Jy/pixel) on the line window's channels with the line at the phase centre."""
    from casatools import image, measures

    me = measures()
    line = m["line"]
    n = 32
    cell = np.radians(0.05 / 3600.0)
    ia = image()
    shutil.rmtree(path, ignore_errors=True)
    ia.fromshape(path, [n, n, 1, line["nchan"]], overwrite=True)
    cs = ia.coordsys()
    centre = me.direction("J2000", m["ra"], m["dec"])
    cs.setunits(["rad", "rad", "", "Hz"])
    cs.setincrement([-cell, cell, 1, line["width_mhz"] * 1e6])
    cs.setreferencevalue([centre["m0"]["value"], centre["m1"]["value"], 1, line["freq_ghz"] * 1e9])
    cs.setreferencepixel([n // 2, n // 2, 0, 0])
    ia.setcoordsys(cs.torecord())
    ia.setbrightnessunit("Jy/pixel")
    pixels = np.zeros((n, n, 1, line["nchan"]))
    pixels[n // 2, n // 2, 0, :] = line_profile(m)
    ia.putchunk(pixels)
    ia.close()


def observe(ms, m, eb, auto_only=False):
    """An empty MS of EB ``eb`` of MOUS ``m``: its antennas, a continuum and a line window, one
    scan per pointing (a mosaic's pointings are fields of one name, as ALMA names them)."""
    from casatools import measures, simulator, table

    x, y, z, d, pads, tel, pos = antenna_subset(m["config"], m["nant"])
    shutil.rmtree(ms, ignore_errors=True)
    sm, me = simulator(), measures()
    sm.open(ms)
    names = [f"{m['antenna_prefix']}{i + 1:02d}" for i in range(len(pads))]
    sm.setconfig(telescopename="ALMA", x=x, y=y, z=z, dishdiameter=list(d), mount=["alt-az"],
                 antname=names, padname=pads, coordsystem="global", referencelocation=pos)
    cont, line = m["cont"], m["line"]
    sm.setspwindow(spwname="cont", freq=f"{cont['freq_ghz']}GHz", deltafreq=f"{cont['width_mhz']}MHz",
                   freqresolution=f"{cont['width_mhz']}MHz", nchannels=cont["nchan"], stokes="XX YY")
    sm.setspwindow(spwname="line", freq=f"{line['freq_ghz']}GHz", deltafreq=f"{line['width_mhz']}MHz",
                   freqresolution=f"{line['width_mhz']}MHz", nchannels=line["nchan"], stokes="XX YY")
    sm.setfeed("perfect X Y")
    pointings = m.get("pointings") or [[0.0, 0.0]]
    fields = [m["target"]] if len(pointings) == 1 else [f"{m['target']}_{k}" for k in range(len(pointings))]
    for name, (dra, ddec) in zip(fields, pointings):
        sm.setfield(sourcename=name, sourcedirection=offset_direction(m["ra"], m["dec"], dra, ddec)
                    if (dra or ddec) else me.direction("J2000", m["ra"], m["dec"]))
    sm.setlimits(shadowlimit=0.001, elevationlimit="8.0deg")
    sm.setauto(1.0 if auto_only else 0.0)
    sm.settimes(integrationtime=f"{m['integration_s']}s", usehourangle=True,
                referencetime=me.epoch("utc", eb["date"]))
    half = m["track_s"] / 2
    step = m["track_s"] / len(fields)
    for k, name in enumerate(fields):
        start = -half + k * step if len(fields) > 1 else -half
        stop = start + step if len(fields) > 1 else half
        for spw in ("cont", "line"):
            sm.observe(name, spw, starttime=f"{start}s", stoptime=f"{stop}s")
    sm.close()
    if len(fields) > 1:
        # one target name for every pointing, as a mosaic's fields have
        tb = table()
        tb.open(ms + "/FIELD", nomodify=False)
        tb.putcol("NAME", np.array([m["target"]] * tb.nrows()))
        tb.close()
        tb.open(ms + "/SOURCE", nomodify=False)
        tb.putcol("NAME", np.array([m["target"]] * tb.nrows()))
        tb.close()


def tidy_for_asdm(ms, intent):
    """Make the simulator's MS exportable: one polarization row, a processor, a scan intent."""
    from casatools import table

    tb = table()
    tb.open(ms + "/DATA_DESCRIPTION", nomodify=False)
    tb.putcol("POLARIZATION_ID", np.zeros(tb.nrows(), dtype=np.int32))
    tb.close()
    tb.open(ms + "/POLARIZATION", nomodify=False)
    if tb.nrows() > 1:
        tb.removerows(list(range(1, tb.nrows())))
    tb.close()
    tb.open(ms + "/STATE", nomodify=False)
    tb.addrows(1)
    tb.putcell("OBS_MODE", 0, intent)
    tb.putcell("SIG", 0, True)
    tb.putcell("REF", 0, False)
    tb.close()
    tb.open(ms, nomodify=False)
    tb.putcol("STATE_ID", np.zeros(tb.nrows(), dtype=np.int32))
    tb.close()


def set_correlator_weights(ms, m):
    """WEIGHT = 2 x channel width x integration time per window, SIGMA = 1/sqrt(WEIGHT).

    What ``importasdm`` writes for the archive's raw data, so the QA2 analyst's images
    weight the windows exactly as the pipeline's images of the restored data do.
    """
    from casatools import table

    tb = table()
    tb.open(ms, nomodify=False)
    for ddid, window in ((0, m["cont"]), (1, m["line"])):
        sub = tb.query(f"DATA_DESC_ID=={ddid}")
        weight = 2 * window["width_mhz"] * 1e6 * m["integration_s"]
        shape = sub.getcol("WEIGHT").shape
        sub.putcol("WEIGHT", np.full(shape, weight, dtype=np.float32))
        sub.putcol("SIGMA", np.full(shape, weight ** -0.5, dtype=np.float32))
        if "WEIGHT_SPECTRUM" in sub.colnames() and sub.iscelldefined("WEIGHT_SPECTRUM", 0):
            spectrum = sub.getcol("WEIGHT_SPECTRUM")
            sub.putcol("WEIGHT_SPECTRUM", np.full(spectrum.shape, weight, dtype=np.float32))
        sub.close()
    tb.close()


def predict_model(ms, m):
    """Fill MODEL_DATA with the true sky: components in both windows, the line in the line window.

    A mosaic's pointings see the sky through their primary beam, so its model is predicted
    with it (``predict_mosaic``); a single pointing's sources sit near the phase centre and
    ``ft`` predicts them as they are.
    """
    from casatasks import ft

    make_componentlist("sky.cl", m)
    make_line_cube("line.im", m)
    if len(m.get("pointings") or [0]) > 1:
        predict_mosaic(ms, m)
        return
    ft(vis=ms, complist="sky.cl", spw="0", usescratch=True)
    ft(vis=ms, complist="sky.cl", spw="1", usescratch=True)
    ft(vis=ms, model="line.im", spw="1", usescratch=True, incremental=True)


def predict_mosaic(ms, m):
    """MODEL_DATA of a mosaic: the sky seen through each pointing's primary beam.

    The simulator predicts every pointing exactly: each component, and the line cube,
    multiplied by CASA's ALMA primary beam (its default voltage pattern, the Airy beam of
    the ``.pb`` images tclean makes) at its offset from that pointing, channel by
    channel. ``sm.predict`` writes DATA, which becomes MODEL_DATA. (Predicting a model
    image through tclean's mosaic gridder instead gave each pointing 3-10 % more than
    this beam, 0.790 instead of 0.748 for a source 8.5" off a pointing at 232 GHz, and
    every image of the mosaic showed the source ~6 % brighter than it is.)
    """
    from casatools import simulator, table

    sm = simulator()
    sm.openfromms(ms)
    sm.setvp(dovp=True, usedefaultvp=True)
    sm.predict(complist="sky.cl", incremental=False)
    if m["line"]["peak_jy"]:
        sm.setdata(spwid=[1], fieldid=list(range(len(m["pointings"]))))  # else field 0 only
        sm.predict(imagename="line.im", incremental=True)
    sm.close()
    tb = table()
    tb.open(ms, nomodify=False)
    for ddid in (0, 1):  # one window at a time: the columns' shape differs between windows
        sub = tb.query(f"DATA_DESC_ID=={ddid}")
        sub.putcol("MODEL_DATA", sub.getcol("DATA"))
        sub.close()
    tb.close()


def corrupt_gains(ms, m, rng):
    """DATA = g_i g_j* MODEL, with per-antenna, per-window, per-polarization gain errors.

    Returns the gains applied, {spw: [[[amp, phase_deg] per antenna] per polarization]}.
    """
    from casatools import table

    tb = table()
    tb.open(ms, nomodify=False)
    applied = {}
    for ddid in (0, 1):
        sub = tb.query(f"DATA_DESC_ID=={ddid}")
        model = sub.getcol("MODEL_DATA")
        a1, a2 = sub.getcol("ANTENNA1"), sub.getcol("ANTENNA2")
        amp = rng.uniform(0.75, 1.25, (2, m["nant"]))
        phase = rng.uniform(-50, 50, (2, m["nant"]))
        if m["calibration"] == "manual" and ddid == 1:
            # the atmosphere's phase is the same in both windows: a manual calibration solves
            # it in the continuum window and maps it to the line window (spwmap)
            phase = np.array([[p for _, p in pol] for pol in applied["0"]])
        g = amp * np.exp(1j * np.radians(phase))
        gij = g[:, a1] * np.conj(g[:, a2])
        sub.putcol("DATA", model * gij[:, None, :])
        applied[str(ddid)] = np.stack([amp, phase], axis=-1).round(4).tolist()
        sub.close()
    tb.close()
    return applied


def add_noise(ms, sigma_jy, rng):
    """Add complex Gaussian noise of ``sigma_jy`` per visibility (real and imaginary together)."""
    from casatools import table

    tb = table()
    tb.open(ms, nomodify=False)
    for ddid in (0, 1):  # one window at a time: DATA's shape differs between windows
        sub = tb.query(f"DATA_DESC_ID=={ddid}")
        data = sub.getcol("DATA")
        noise = rng.standard_normal(data.shape) + 1j * rng.standard_normal(data.shape)
        sub.putcol("DATA", data + sigma_jy * noise / np.sqrt(2))
        sub.close()
    tb.close()


def restore_quality(ms):
    """Median |CORRECTED/MODEL| and |phase| (deg), and the same for raw DATA: the table's proof.

    Flagged visibilities (e.g. a shadowed antenna) are left out.
    """
    from casatools import table

    tb = table()
    tb.open(ms)
    ratios = {"data": [], "corrected_data": []}
    for ddid in (0, 1):
        sub = tb.query(f"DATA_DESC_ID=={ddid}")
        model, good = sub.getcol("MODEL_DATA"), ~sub.getcol("FLAG")
        for col in ("DATA", "CORRECTED_DATA"):
            ratios[col.lower()].append((sub.getcol(col)[good] / np.where(model == 0, 1, model)[good]).ravel())
        sub.close()
    tb.close()
    out = {}
    for col, parts in ratios.items():
        ratio = np.concatenate(parts)
        out[col] = {"amp_ratio": float(np.median(np.abs(ratio))),
                    "abs_phase_deg": float(np.degrees(np.median(np.abs(np.angle(ratio))))),
                    "worst_amp_error": float(np.max(np.abs(np.abs(ratio) - 1))) if ratio.size else None}
    return out


def solve_gains(ms, caltable, nant):
    """``gaincal`` against the model, trying reference antennas until the table restores the data.

    Returns the restore quality; raises when no reference antenna gives a table that
    brings every unflagged visibility within 1 % of the model and solves every window.
    """
    from casatasks import applycal, gaincal

    for refant in range(nant):
        shutil.rmtree(caltable, ignore_errors=True)
        gaincal(vis=ms, caltable=caltable, solint="inf", calmode="ap", refant=str(refant), minsnr=2.0)
        if not os.path.isdir(caltable):
            continue
        # calonly: a table that fails the check must not flag data the next try then cannot solve
        applycal(vis=ms, gaintable=[caltable], calwt=False, flagbackup=False, applymode="calonly")
        quality = restore_quality(ms)
        if quality["corrected_data"]["worst_amp_error"] < 0.01 and table_spws(caltable) == {0, 1}:
            return dict(quality, refant=refant)
    raise RuntimeError(f"gaincal found no table that restores {ms}")


def table_spws(caltable):
    """The spectral windows a calibration table has solutions for."""
    from casatools import table

    tb = table()
    tb.open(caltable)
    try:
        return {int(s) for s in tb.getcol("SPECTRAL_WINDOW_ID")}
    finally:
        tb.close()


def image_stats(image):
    """What ``imstat`` says about a CASA image (peak, its pixel, rms, flux when it has a beam)."""
    from casatasks import imstat

    stats = imstat(image)
    flux = stats.get("flux")
    return {"max": float(stats["max"][0]), "maxpos": [int(v) for v in stats["maxpos"]],
            "rms": float(stats["rms"][0]), "flux": float(flux[0]) if flux is not None and len(flux) else None}


def qa2_line_ms(mss, qa2):
    """The continuum-subtracted line window, as QA2 analysts image cubes: ``uvcontsub`` of spw 1.

    Fits ``qa2["contsub_fitspec"]`` (the line-free channels, or the window's edges when the
    line fills it) with order 0; returns the output MS (its DATA column, spw renumbered to 0).
    """
    from casatasks import uvcontsub

    outs = []
    for k, ms in enumerate(mss):
        out = f"qa2_line{k}.ms"
        shutil.rmtree(out, ignore_errors=True)
        uvcontsub(vis=ms, outputvis=out, spw="1", fitspec=qa2["contsub_fitspec"], fitorder=0,
                  datacolumn="corrected")
        if not os.path.isdir(out):
            raise RuntimeError(f"uvcontsub wrote no {out}")
        outs.append(out)
    return outs


def qa2_images(mss, m, folder):
    """The QA2 analyst's images, exported as named FITS: aggregate continuum and line cube.

    Continuum (mfs) from the line-free channels of both windows (``qa2["cont_spw"]``),
    cube from the continuum-subtracted line window without its edge channels; both cleaned to ~3x the thermal noise
    (``*_threshold_mjy``) on a field like the pipeline's, so they are noise-limited.
    """
    from casatasks import exportfits, immath, tclean

    qa2 = m["qa2"]
    out = {}
    line_ms = qa2_line_ms(mss, qa2)
    # The cube leaves out the window's edge channels: on tclean's LSRK grid the first one gets
    # only part of the data (several times the noise, or no PSF at all), and analysts drop them.
    edges = dict(start=1, nchan=m["line"]["nchan"] - 2)
    plans = [("cont", mss, qa2["cont_spw"], "mfs", "corrected", qa2["cont_name"], {}),
             ("cube", line_ms, "", "cube", "data", qa2["cube_name"], edges)]
    for kind, vis, spw, specmode, column, name, channels in plans:
        base = f"qa2_{kind}"
        for old in [p for p in os.listdir(".") if p.startswith(base + ".")]:
            shutil.rmtree(old)
        tclean(vis=vis, imagename=base, spw=spw, specmode=specmode, imsize=qa2["imsize"],
               cell=f"{qa2['cell_arcsec']}arcsec", weighting=qa2["weighting"], robust=qa2.get("robust", 0.5),
               niter=qa2["niter"], threshold=f"{qa2[kind + '_threshold_mjy']}mJy", deconvolver="hogbom",
               cyclefactor=qa2.get("cyclefactor", 1.0), minpsffraction=qa2.get("minpsffraction", 0.05),
               nmajor=qa2.get("nmajor", -1),
               datacolumn=column, pbcor=True, usemask="user", mask=qa2[kind + "_mask"],
               gridder="mosaic" if len(m.get("pointings") or [0]) > 1 else "standard",
               phasecenter=0 if len(m.get("pointings") or [0]) > 1 else "", **channels)
        pbcor = f"{base}.image.pbcor"
        if qa2["flux_scale"] != 1.0:
            # The QA2 analyst's flux scale was wrong: the delivered image carries it.
            shutil.rmtree(base + ".scaled", ignore_errors=True)
            immath(imagename=[pbcor], expr=f"IM0*{qa2['flux_scale']}", outfile=base + ".scaled")
            pbcor = base + ".scaled"
        for suffix, image in (("pbcor", pbcor), ("pb", f"{base}.pb")):
            fits = os.path.join(folder, f"{name}.{suffix}.fits")
            exportfits(imagename=image, fitsimage=fits, overwrite=True)
            out[os.path.basename(fits)] = {"kind": kind, "suffix": suffix,
                                           **(image_stats(image) if suffix == "pbcor" else {})}
    for path in line_ms:
        shutil.rmtree(path)
    return out


# What the pipeline's restore gives importasdm (the casa6 recipe imports the raw data alike,
# so the flag versions saved here line up with its rows).
IMPORTASDM_ARGS = {
    "ocorr_mode": "ca", "bdfflags": True, "lazy": False, "process_caldevice": False, "savecmds": False,
    "with_pointing_correction": False,
    "asis": "SBSummary ExecBlock Antenna Annotation Station Receiver Source CalAtmosphere CalWVR CalPointing",
}
TARGET_INTENT = "OBSERVE_TARGET#ON_SOURCE"


def spoil_antenna(ms, antenna, rng):
    """Ruin every visibility of ``antenna`` (a broken receiver): what QA2 flagged, and the pipeline too."""
    from casatools import table

    tb = table()
    tb.open(ms, nomodify=False)
    for ddid in (0, 1):
        sub = tb.query(f"DATA_DESC_ID=={ddid} && (ANTENNA1=={antenna} || ANTENNA2=={antenna})")
        data = sub.getcol("DATA")
        junk = 3.0 * np.exp(1j * rng.uniform(-np.pi, np.pi, data.shape))
        sub.putcol("DATA", data * junk)
        sub.close()
    tb.close()


def antenna_name(m, index):
    return f"{m['antenna_prefix']}{index + 1:02d}"


def simulate_eb(m, eb):
    """One EB of MOUS ``m``: simulated, corrupted, solved; leaves ``<asdm>.ms`` with CORRECTED_DATA."""
    from casatasks import applycal, flagdata

    ms = eb["asdm_file"] + ".ms"
    observe(ms, m, eb)
    set_correlator_weights(ms, m)
    predict_model(ms, m)
    rng = np.random.default_rng(eb["seed"])
    gains = corrupt_gains(ms, m, rng)
    # Calibrator scans are not simulated: the gains are solved on the corrupted target data
    # before the noise goes in, against the true model, so the tables undo them exactly.
    if m["calibration"] == "manual":
        tables, quality = solve_manual(ms, eb["asdm_file"], m["nant"])
    else:
        table = os.path.join("calibration", f"{eb['asdm_file']}.ms.hifa_timegaincal.g.tbl")
        quality = solve_gains(ms, table, m["nant"])
        tables = [table]
    add_noise(ms, m["noise_jy"], rng)
    if m.get("bad_antenna") is not None:
        spoil_antenna(ms, m["bad_antenna"], rng)
    tidy_for_asdm(ms, TARGET_INTENT)
    from casatasks import exportasdm
    exportasdm(vis=ms, asdm=os.path.join("raw", eb["asdm_file"] + ".asdm.sdm"), datacolumn="data")
    if m.get("bad_antenna") is not None:
        flagdata(vis=ms, mode="manual", antenna=antenna_name(m, m["bad_antenna"]), flagbackup=False)
    if m["calibration"] == "manual":
        applycal(vis=ms, gaintable=tables, interp=["linear", "nearest"], spwmap=[[0, 0], []], calwt=False,
                 flagbackup=False)
    else:
        applycal(vis=ms, gaintable=tables, calwt=False, flagbackup=False)
    return ms, {"gains_applied": gains, "restore_quality": quality, "caltables": [os.path.basename(t) for t in tables]}


def solve_manual(ms, asdm, nant):
    """A manual calibration's tables: phase per integration in the continuum window (mapped to the
    line window), then amplitude per window over the scan; checked to restore the data."""
    from casatasks import applycal, gaincal

    folder = os.path.join("calibration", f"{asdm}.calibration")
    os.makedirs(folder, exist_ok=True)
    phase, ampli = os.path.join(folder, f"{asdm}.ms.phase_int"), os.path.join(folder, f"{asdm}.ms.ampli_inf")
    for refant in range(nant):
        for table in (phase, ampli):
            shutil.rmtree(table, ignore_errors=True)
        gaincal(vis=ms, caltable=phase, spw="0", solint="int", calmode="p", refant=str(refant), minsnr=2.0)
        gaincal(vis=ms, caltable=ampli, solint="inf", calmode="a", refant=str(refant), minsnr=2.0,
                gaintable=[phase], spwmap=[[0, 0]], interp=["linear"])
        if not (os.path.isdir(phase) and os.path.isdir(ampli)):
            continue
        applycal(vis=ms, gaintable=[phase, ampli], interp=["linear", "nearest"], spwmap=[[0, 0], []], calwt=False,
                 flagbackup=False, applymode="calonly")
        quality = restore_quality(ms)
        if quality["corrected_data"]["worst_amp_error"] < 0.01:
            return [phase, ampli], dict(quality, refant=refant)
    raise RuntimeError(f"the manual calibration found no tables that restore {ms}")


def pipeline_products(m, ebs, casa_version):
    """What the pipeline's calibration leaves for the archive, per EB and session.

    ``<asdm>.ms.flagversions.tgz`` (flag version ``Pipeline_Final``, saved on the MS as
    importasdm makes it from the raw ASDM, with what QA2 flagged), ``<asdm>.ms.calapply.txt``
    (applycal calls with the pipeline's intent names), ``<ous>.session_<n>.caltables.tgz``
    (each session's tables), ``<ous>.hifa_calimage.pipeline_manifest.xml`` and the restore
    script naming each EB's session.
    """
    import tarfile
    import xml.etree.ElementTree as ET

    from casatasks import flagdata, flagmanager, importasdm

    ous = m["uid_file"]
    root = ET.Element("piperesults", name=m["uid"])
    node = ET.SubElement(root, "ous", name=m["uid"])
    ET.SubElement(node, "casaversion", name=casa_version)
    ET.SubElement(node, "pipeline_version", name="demo")
    ET.SubElement(node, "procedure_name", name="hifa_calimage")
    sessions = {}
    for eb in ebs:
        sessions.setdefault(eb["session"], []).append(eb)
    for session, members in sorted(sessions.items()):
        name = f"session_{session}"
        element = ET.SubElement(node, "session", name=name)
        tgz = f"{ous}.{name}.caltables.tgz"
        with tarfile.open(os.path.join("calibration", tgz), "w:gz") as tar:
            for eb in members:
                for table in eb["caltables"]:
                    if not m.get("omit_caltables"):  # the archive lost them: restore must fail naming one
                        tar.add(os.path.join("calibration", table), arcname=table)
        for eb in members:
            for table in eb["caltables"]:
                shutil.rmtree(os.path.join("calibration", table))
        ET.SubElement(element, "caltables", name=tgz, session=name, datatype="caltables", format="tgz")
        for eb in members:
            asdm = eb["asdm_file"]
            flags, applycmds = f"{asdm}.ms.flagversions.tgz", f"{asdm}.ms.calapply.txt"
            # the pipeline names each EB by its MS
            entry = ET.SubElement(element, "asdm", name=asdm + ".ms", datatype="asdm", format="sdm")
            ET.SubElement(entry, "finalflags", name=flags, asdm=asdm + ".ms", datatype="ms.flagversions", format="tgz")
            ET.SubElement(entry, "applycmds", name=applycmds, asdm=asdm + ".ms", datatype="ms.calapply", format="txt")
            scratch = os.path.join("flagging", asdm + ".ms")
            shutil.rmtree(os.path.dirname(scratch), ignore_errors=True)
            os.makedirs(os.path.dirname(scratch))
            importasdm(asdm=os.path.join("raw", asdm + ".asdm.sdm"), vis=scratch, **IMPORTASDM_ARGS)
            if m.get("bad_antenna") is not None:
                flagdata(vis=scratch, mode="manual", antenna=antenna_name(m, m["bad_antenna"]), flagbackup=False)
            flagmanager(vis=scratch, mode="save", versionname="Pipeline_Final",
                        comment="flags of the pipeline's final calibrated MS")
            with tarfile.open(os.path.join("calibration", flags), "w:gz") as tar:
                tar.add(scratch + ".flagversions", arcname=asdm + ".ms.flagversions")
            shutil.rmtree(os.path.dirname(scratch))
            with open(os.path.join("calibration", applycmds), "w") as fh:
                fh.write(calapply_text(asdm, eb["caltables"]))
    ET.indent(root)
    with open(os.path.join("calibration", f"{ous}.hifa_calimage.pipeline_manifest.xml"), "w") as fh:
        fh.write(ET.tostring(root, encoding="unicode") + "\n")
    vis = [eb["asdm_file"] for eb in ebs]
    session_names = ["session_%d" % eb["session"] for eb in ebs]
    with open(os.path.join("script", f"{ous}.hifa_calimage.casa_piperestorescript.py"), "w") as fh:
        fh.write("__rethrow_casa_exceptions = True\nh_init()\ntry:\n"
                 f"    hifa_restoredata(vis={vis!r}, session={session_names!r}, "
                 "ocorr_mode='ca')\nfinally:\n    h_save()\n")


def calapply_text(asdm, tables):
    """The pipeline's ``<asdm>.ms.calapply.txt``: one applycal per intent group, pipeline intent names.

    The calibrators' line names intents this simulated EB never observed (only its target
    was simulated); the target's line carries the tables.
    """
    paths = [f"/lustre/naasc/pipeline/working/{t}" for t in tables]
    n = len(tables)
    return (f"applycal(vis='/lustre/naasc/pipeline/working/{asdm}.ms', field='', intent='BANDPASS,PHASE,AMPLITUDE', "
            f"spw='', antenna='', gaintable={paths!r}, gainfield={[''] * n!r}, spwmap={[[]] * n!r}, "
            f"interp={['linear,linearflag'] * n!r}, calwt={[False] * n!r}, applymode='calflagstrict')\n"
            f"applycal(vis='/lustre/naasc/pipeline/working/{asdm}.ms', field='', intent='TARGET,CHECK', "
            f"spw='', antenna='', gaintable={paths!r}, gainfield={['nearest'] * n!r}, spwmap={[[]] * n!r}, "
            f"interp={['linear,linearflag'] * n!r}, calwt={[False] * n!r}, applymode='calflagstrict')\n")


def manual_products(m, ebs, casa_version):
    """What a manual calibration leaves for the archive: per EB ``<asdm>.calibration.tgz`` (its
    tables) and ``<asdm>.ms.scriptForCalibration.py``, and ``member.<ous>.scriptForPI.py``."""
    import tarfile

    for eb in ebs:
        asdm = eb["asdm_file"]
        folder = os.path.join("calibration", f"{asdm}.calibration")
        with tarfile.open(os.path.join("calibration", f"{asdm}.calibration.tgz"), "w:gz") as tar:
            tar.add(folder, arcname=f"{asdm}.calibration")
        shutil.rmtree(folder)
        with open(os.path.join("script", f"{asdm}.ms.scriptForCalibration.py"), "w") as fh:
            fh.write(script_for_calibration(m, asdm, casa_version))
    with open(os.path.join("script", f"member.{m['uid_file']}.scriptForPI.py"), "w") as fh:
        fh.write(script_for_pi(m, casa_version))


def script_for_calibration(m, asdm, casa_version):
    bad = antenna_name(m, m["bad_antenna"]) if m.get("bad_antenna") is not None else None
    flag = f"flagdata(vis=vis, mode='manual', antenna={bad!r}, flagbackup=False)  # a broken receiver\n" if bad else ""
    return f"""# Calibration script for {asdm} ({m['uid']}), written by the QA2 analyst
# CASA version: {casa_version}
# Run by scriptForPI.py from the calibrated/ folder (applyonly: the tables are in {asdm}.calibration/).
try:
    from casatasks import applycal, flagdata, importasdm, split
except ImportError:
    pass  # monolithic CASA: the tasks are already here

asdm = {asdm!r}
vis = asdm + '.ms'
importasdm(asdm='../raw/' + asdm + '.asdm.sdm', vis=vis, asis='Antenna Station Receiver Source CalAtmosphere CalWVR',
           bdfflags=True, ocorr_mode='ca', process_caldevice=False, overwrite=True)
{flag}tables = [asdm + '.calibration/' + vis + '.phase_int', asdm + '.calibration/' + vis + '.ampli_inf']
applycal(vis=vis, intent='*OBSERVE_TARGET*', gaintable=tables, interp=['linear', 'nearest'], spwmap=[[0, 0], []],
         gainfield=['', ''], calwt=False, flagbackup=False)
split(vis=vis, outputvis=vis + '.split.cal', datacolumn='corrected', keepflags=True)
"""


def script_for_pi(m, casa_version):
    return f"""# scriptForPI.py for {m['uid']} (manual calibration)
# CASA version: {casa_version}
# From this script/ folder, with the raw/ folder (untarred ASDMs) beside it: restores
# ../calibrated/<asdm>.ms.split.cal for every EB by running its scriptForCalibration.py.
import glob
import os
import tarfile

here = os.path.abspath(os.getcwd())
os.makedirs('../calibrated', exist_ok=True)
for tgz in sorted(glob.glob('../calibration/*.calibration.tgz')):
    asdm = os.path.basename(tgz)[:-len('.calibration.tgz')]
    if not os.path.isdir('../raw/' + asdm + '.asdm.sdm'):
        raise RuntimeError('raw data missing: ../raw/' + asdm + '.asdm.sdm')
    with tarfile.open(tgz) as tar:
        tar.extractall('../calibrated')
    script = os.path.join(here, asdm + '.ms.scriptForCalibration.py')
    os.chdir('../calibrated')
    try:
        exec(compile(open(script).read(), script, 'exec'), dict(globals(), __name__='__main__'))
    finally:
        os.chdir(here)
print('scriptForPI: calibrated', sorted(glob.glob('../calibrated/*.split.cal')))
"""


def build_interferometric(m, here):
    """Simulate, corrupt, calibrate and QA2-image one interferometric MOUS in ``here`` (one or more EBs)."""
    import casatools

    casa_version = casatools.version_string()
    mss, ebs, raw = [], [], []
    for eb in m["ebs"]:
        ms, result = simulate_eb(m, eb)
        mss.append(ms)
        ebs.append(dict(eb, **result))
        raw.append(eb["asdm_file"] + ".asdm.sdm")
    if m["calibration"] == "manual":
        manual_products(m, ebs, casa_version)
    else:
        pipeline_products(m, ebs, casa_version)
    images = qa2_images(mss, m, "product")
    for ms in mss:
        shutil.rmtree(ms)
    first = ebs[0]
    return {"gains_applied": first["gains_applied"], "restore_quality": first["restore_quality"],
            "qa2_images": images, "caltables": sorted(os.listdir("calibration")), "raw_format": "asdm",
            "raw_entry": raw[0], "raw_entries": raw, "calibration": m["calibration"],
            "ebs": [{k: eb[k] for k in ("asdm_file", "session", "caltables", "restore_quality")} for eb in ebs]}


def build_total_power(m, here):
    """A total-power MOUS: autocorrelations only (no interferometric baseline), no calibration table."""
    from casatasks import exportasdm, split
    from casatools import table

    asdm = m["asdm_file"]
    ms = asdm + ".ms"
    observe("with_baselines.ms", m, m["ebs"][0], auto_only=True)
    # Single dishes: keep the autocorrelations only (no baseline at all).
    shutil.rmtree(ms, ignore_errors=True)
    split(vis="with_baselines.ms", outputvis=ms, antenna="*&&&", datacolumn="data", keepflags=True)
    shutil.rmtree("with_baselines.ms")
    tidy_for_asdm(ms, "OBSERVE_TARGET#ON_SOURCE")
    rng = np.random.default_rng(m["seed"])
    tb = table()
    tb.open(ms, nomodify=False)
    if np.any(tb.getcol("ANTENNA1") != tb.getcol("ANTENNA2")) or tb.nrows() == 0:
        raise RuntimeError("the total-power MS should hold autocorrelations only")
    total = sum(s["flux_jy"] for s in m["sources"])
    for ddid, spectrum in ((0, None), (1, line_profile(m))):
        sub = tb.query(f"DATA_DESC_ID=={ddid}")
        data = sub.getcol("DATA")
        level = np.full(data.shape[1], total) if spectrum is None else total + spectrum
        noise = m["noise_jy"] * rng.standard_normal(data.shape)
        sub.putcol("DATA", (level[None, :, None] + noise).astype(complex))
        sub.close()
    tb.close()
    try:
        exportasdm(vis=ms, asdm=os.path.join("raw", asdm + ".asdm.sdm"), datacolumn="data")
        raw_format = "asdm"
    except Exception as exc:  # exportasdm refuses some autocorrelation-only MSs
        print(f"exportasdm of the total-power MS failed ({exc}); shipping the MS instead", flush=True)
        shutil.rmtree(os.path.join("raw", asdm + ".asdm.sdm"), ignore_errors=True)
        shutil.move(ms, os.path.join("raw", ms))
        raw_format = "ms"
    shutil.rmtree(ms, ignore_errors=True)
    return {"gains_applied": {}, "restore_quality": {}, "qa2_images": {}, "caltables": [],
            "raw_format": raw_format, "raw_entry": asdm + (".asdm.sdm" if raw_format == "asdm" else ".ms")}


def build_one(m, work_dir):
    """Build MOUS ``m`` in its own folder; its result dict (also written as result.json)."""
    from casatasks import casalog
    import casatools

    here = os.path.join(work_dir, m["uid_file"])
    shutil.rmtree(here, ignore_errors=True)
    for sub in ("raw", "calibration", "product", "log", "script"):
        os.makedirs(os.path.join(here, sub))
    cwd = os.getcwd()
    os.chdir(here)
    casalog.setlogfile(os.path.abspath(os.path.join("log", f"casa-{m['asdm_file']}.log")))
    started = time.time()
    try:
        build = build_total_power if m["kind"] == "tp" else build_interferometric
        result = build(m, here)
    finally:
        for scratch in ("sky.cl", "line.im"):
            shutil.rmtree(scratch, ignore_errors=True)
        for old in [p for p in os.listdir(".") if p.startswith("qa2_")]:
            shutil.rmtree(old, ignore_errors=True)
        os.chdir(cwd)
    result.update(uid=m["uid"], seconds=round(time.time() - started, 2),
                  casa_version=casatools.version_string(), line_profile_jy=line_profile(m).round(6).tolist())
    with open(os.path.join(here, "result.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    return result


def main(argv):
    if len(argv) != 2:
        print("usage: casa_build.py SPEC.json WORK_DIR", file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        spec = json.load(fh)
    work_dir = os.path.abspath(argv[1])
    os.makedirs(work_dir, exist_ok=True)
    os.chdir(work_dir)
    mous = spec["mous"]
    for i, m in enumerate(mous):
        log_progress(i, len(mous), m["uid"], "start")
        result = build_one(m, work_dir)
        log_progress(i + 1, len(mous), m["uid"], f"done {result['seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

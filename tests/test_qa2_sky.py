"""The same sky in two images: per-source and field fluxes against the truth CASA simulated.

Pairs made by CASA (tests/fixtures/qa2_images.py) with known fluxes; a QA2 image on another
flux scale gives a known true ratio. Then the real images of ../shared/data/real/fits (their
blank pixels) and images made here with numpy for what CASA does not make (fill values, a
source on the noise region, another sky frame).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ari_console.qa2 import compare_dirs, compare_sky
from ari_console.qa2.measure import measure_file, open_image
from ari_console.qa2.sources import emission_free_rms, islands
from tests.fixtures.qa2_images import Qa2Images

REAL = Path("/work/shared/data/real/fits")


def _scaled_copy(src: Path, dst: Path, factor: float, channels: slice | None = None) -> Path:
    """``src`` with its pixels (or those of ``channels``) multiplied by ``factor``; header and tables kept."""
    with fits.open(src) as hdul:
        data = hdul[0].data.astype(np.float32)
        if channels is None:
            data = data * np.float32(factor)
        else:
            data[:, channels] *= np.float32(factor)
        out = fits.HDUList([fits.PrimaryHDU(data=data, header=hdul[0].header), *[h.copy() for h in hdul[1:]]])
        out.writeto(dst, overwrite=True)
    return dst


def _islands_of(path: Path, within_arcsec: float = 8.0) -> int:
    """Islands (3 sigma, peak 5 sigma) that reach within ``within_arcsec`` of the pointing centre."""
    from scipy import ndimage

    m = measure_file(path)
    with fits.open(path) as hdul:
        plane = np.squeeze(hdul[0].data).astype(float)
        cx, cy = hdul[0].header["CRPIX1"] - 1, hdul[0].header["CRPIX2"] - 1
    labels, _ = ndimage.label(islands(plane, 3 * m.rms, 5 * m.rms, np.isfinite(plane)))
    y, x = np.indices(plane.shape)
    near = np.hypot(x - cx, y - cy) * m.pixel_arcsec <= within_arcsec
    return len(set(np.unique(labels[near])) - {0})


@pytest.mark.casa
@pytest.mark.parametrize("sky", ["point", "disk", "double"])
@pytest.mark.parametrize("kind", ["pbcor", "image"])
def test_every_source_and_the_field_total_agree_within_five_percent_on_one_sky(qa2_images: Qa2Images, sky, kind):
    c = compare_sky(str(qa2_images.path(sky, "pl", kind)), str(qa2_images.path(sky, "qa2", kind)))
    truth = qa2_images.of(qa2_images.path(sky, "pl", kind))["flux"]
    assert c.total_ratio == pytest.approx(1.0, abs=0.05)
    assert c.pl_total == pytest.approx(truth, rel=0.05) and c.qa2_total == pytest.approx(truth, rel=0.05)
    matched = [s for s in c.sources if s.found_in == "both" and s.snr >= 10]
    assert matched and all(s.flux_ratio == pytest.approx(1.0, abs=0.05) for s in matched), c.sources
    assert not c.discrepant_sources, [s.reasons for s in c.discrepant_sources]
    assert all(s.offset_arcsec < 0.3 for s in matched)


@pytest.mark.casa
def test_two_components_are_two_islands_under_the_small_beam_and_one_under_the_tapered_one(qa2_images):
    assert _islands_of(qa2_images.path("double", "pl")) == 2
    assert _islands_of(qa2_images.path("double", "qa2")) == 1
    # Grown from the peak, the pipeline image would miss the extended component: 0.05 of 0.08 Jy.
    assert measure_file(qa2_images.path("double", "pl")).flux < 0.06


@pytest.mark.casa
def test_a_qa2_image_on_another_flux_scale_gives_the_true_ratio_for_every_source_and_the_field(
        qa2_images: Qa2Images, tmp_path):
    pl = qa2_images.path("double", "pl")
    qa2 = _scaled_copy(qa2_images.path("double", "qa2"), tmp_path / "G10.6-0.4_cont.pbcor.fits", 0.7)
    c = compare_sky(str(pl), str(qa2))
    truth = 1 / 0.7
    assert c.total_ratio == pytest.approx(truth, rel=0.05)
    strong = [s for s in c.sources if s.snr >= 10]
    assert sum(s.pl_components for s in strong) == 2, "both components of the pipeline image are in the field"
    assert all(s.flux_ratio == pytest.approx(truth, rel=0.05) for s in strong), c.sources
    # Each verdict follows from its ratio and tolerance; the bright compact one and the field are discrepant.
    assert all((s.verdict == "discrepant") == (abs(s.flux_ratio - 1) > s.flux_tolerance) for s in strong)
    assert max(strong, key=lambda s: s.snr).verdict == "discrepant"
    assert abs(c.total_ratio - 1) > c.total_tolerance


@pytest.mark.casa
def test_compare_json_keeps_its_keys_and_judges_the_double_field_by_the_same_sky(qa2_images: Qa2Images, tmp_path):
    pl_dir, qa2_dir = tmp_path / "pl", tmp_path / "qa2"
    pl_dir.mkdir(), qa2_dir.mkdir()
    shutil.copy(qa2_images.path("double", "pl"), pl_dir)
    _scaled_copy(qa2_images.path("double", "qa2"), qa2_dir / "G10.6-0.4_cont.pbcor.fits", 0.7)
    report = compare_dirs(pl_dir, qa2_dir).as_dict()
    (pair,) = report["pairs"]
    assert {"pl", "qa2", "field", "spw", "specmode", "peak_ratio", "flux_ratio", "rms_ratio", "beam_ratio",
            "verdict"} <= set(pair)
    assert pair["verdict"] == "discrepant" and pair["flux_ratio"] == pytest.approx(1 / 0.7, rel=0.05)
    assert pair["sources"] and {"id", "found_in", "pl_flux", "qa2_flux", "flux_ratio", "pl_peak", "qa2_peak",
                                "offset_arcsec", "verdict"} <= set(pair["sources"][0])
    json.dumps(report)  # storable as it is


@pytest.mark.casa
def test_a_faint_source_agrees_within_its_error_and_is_judged_consistent(qa2_images: Qa2Images):
    c = compare_sky(str(qa2_images.path("faint", "pl", "image")), str(qa2_images.path("faint", "qa2", "image")))
    (source,) = [s for s in c.sources if s.found_in == "both"]
    assert 8 <= source.snr <= 30
    assert abs(source.flux_ratio - 1) <= source.flux_tolerance and source.verdict == "consistent"
    assert source.pl_flux == pytest.approx(0.003, rel=0.1) and source.qa2_flux == pytest.approx(0.003, rel=0.15)


@pytest.mark.casa
def test_a_line_cube_compares_spectra_on_one_frequency_axis(qa2_images: Qa2Images, tmp_path):
    pl, qa2 = qa2_images.path("line", "pl"), qa2_images.path("line", "qa2")
    truth = qa2_images.of(pl)["flux"]  # Jy MHz: 0.5 Jy x sqrt(2 pi) x 17 MHz
    c = compare_sky(str(pl), str(qa2))
    (source,) = [s for s in c.sources if s.snr >= 10]
    spectrum = next(s for s in c.channels["spectra"] if s["id"] == source.id)
    assert len(spectrum["frequency_hz"]) == 12, "the QA2 cube's channels are twice as wide: the common axis"
    assert spectrum["line_flux_unit"] in ("Jy MHz", "Jy km/s")
    scale = 1.0 if spectrum["line_flux_unit"] == "Jy MHz" else 299792.458 / 230e3
    assert source.pl_flux == pytest.approx(truth * scale, rel=0.05)
    assert source.flux_ratio == pytest.approx(1.0, abs=0.05) and source.verdict == "consistent"
    assert abs(spectrum["pl_peak_frequency_hz"] - 230e9) <= 30e6
    assert c.channels["differing_channels"] == []
    # Half the flux in two channels of the line: the verdict names them.
    bad = _scaled_copy(qa2, tmp_path / qa2.name, 0.5, channels=slice(5, 7))
    c = compare_sky(str(pl), str(bad))
    (source,) = [s for s in c.sources if s.snr >= 10]
    assert source.verdict == "discrepant" and set(c.channels["differing_channels"]) & {5, 6}
    assert "channels" in source.reasons


def _real(name: str) -> Path:
    return REAL / name


@pytest.mark.parametrize("name", ["PD_2000_sub.fits", "NGC4451.gausspk.fits", "NGC4701.gausspk.fits",
                                  "NGC5692.gausspk.fits", "example_cube.fits"])
def test_real_images_are_measured_on_their_data_pixels_only(name):
    expect = json.loads((REAL / "expect.json").read_text())[name]
    m = measure_file(_real(name))
    assert m.peak == pytest.approx(expect["peak"], rel=1e-5)
    assert m.peak_pixel == expect["peak_pixel"]
    assert m.beam_major == pytest.approx(expect["beam_major_arcsec"], rel=1e-3)
    assert math.isfinite(m.rms) and 0 < m.rms < abs(expect["peak"])
    assert math.isfinite(m.flux) and m.flux > 0
    if "gausspk" in name:  # -999 written for blank pixels with a float BLANK card
        assert any("-999" in note and "blank" in note for note in m.notes)
    if "rms_range" in expect:
        low, high = expect["rms_range"]
        assert low <= m.rms <= high
        low, high = expect["flux_range"]
        assert low <= m.flux <= high


@pytest.mark.parametrize("name", ["NGC0925.bima.mmom0.fits", "m33_beams_bintable.fits"])
def test_real_files_without_an_image_are_one_clear_error(name):
    from ari_console.qa2.measure import MeasureError

    with pytest.raises(MeasureError, match="no image in this FITS file"):
        measure_file(_real(name))


def _sky_fits(path: Path, data: np.ndarray, frame: str = "icrs", blank=None, bunit="Jy/beam") -> Path:
    """A 2-D image FITS of ``data`` (1" pixels, 3" beam) at RA 150, Dec -30 (or the same sky in galactic)."""
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    ny, nx = data.shape
    if frame == "galactic":
        centre = SkyCoord(150 * u.deg, -30 * u.deg).galactic
        lon, lat, ctypes = centre.l.deg, centre.b.deg, ("GLON-SIN", "GLAT-SIN")
    else:
        lon, lat, ctypes = 150.0, -30.0, ("RA---SIN", "DEC--SIN")
    header = fits.Header({"CTYPE1": ctypes[0], "CTYPE2": ctypes[1], "CRVAL1": lon, "CRVAL2": lat,
                          "CDELT1": -1 / 3600, "CDELT2": 1 / 3600, "CRPIX1": nx / 2 + 1, "CRPIX2": ny / 2 + 1,
                          "BMAJ": 3 / 3600, "BMIN": 3 / 3600, "BPA": 0.0, "BUNIT": bunit, "OBJECT": "FIELD1"})
    if blank is not None:
        header["BLANK"] = blank
    fits.PrimaryHDU(data=data.astype(np.float32), header=header).writeto(path, overwrite=True)
    return path


def _gauss(shape, x0, y0, fwhm, peak):
    y, x = np.indices(shape)
    s = fwhm / math.sqrt(8 * math.log(2))
    return peak * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * s * s))


def test_a_source_at_the_centre_does_not_raise_the_noise():
    rng = np.random.default_rng(4)
    img = rng.normal(0, 1e-3, (300, 300)) + _gauss((300, 300), 150, 150, 12, 0.02)  # resolved, on the noise disk
    rms = emission_free_rms(img, np.ones(img.shape, bool), fwhm_pixels=3.0)
    assert rms == pytest.approx(1e-3, rel=0.05)


def test_a_fill_value_without_a_blank_card_is_masked_and_said(tmp_path):
    rng = np.random.default_rng(5)
    data = rng.normal(0, 1e-3, (200, 200)) + _gauss((200, 200), 100, 100, 3, 0.05)
    data[:, :40] = -999.0  # outside the mapped area, as some writers do
    m = measure_file(_sky_fits(tmp_path / "filled.fits", data))
    assert m.rms == pytest.approx(1e-3, rel=0.1) and m.flux == pytest.approx(0.05, rel=0.05)
    assert any("-999" in n and "constant fill value" in n for n in m.notes)


def test_two_images_of_one_sky_in_different_frames_and_grids_match_their_sources(tmp_path):
    rng = np.random.default_rng(6)
    sources = [(80, 90, 0.05), (130, 100, 0.02), (100, 140, 0.01)]
    a = rng.normal(0, 1e-4, (200, 200))
    for x, y, peak in sources:
        a += _gauss(a.shape, x, y, 3, peak)
    pl = _sky_fits(tmp_path / "pl.fits", a)
    # The same sky, 0.8 times as bright, on a galactic grid: positions map through both WCSs.
    from astropy.wcs import WCS
    gal = _sky_fits(tmp_path / "qa2.fits", np.zeros((200, 200)), frame="galactic")
    w_pl, w_gal = WCS(fits.getheader(pl)), WCS(fits.getheader(gal))
    b = rng.normal(0, 1e-4, (200, 200))
    for x, y, peak in sources:
        gx, gy = w_gal.world_to_pixel(w_pl.pixel_to_world(x, y))
        b += _gauss(b.shape, float(gx), float(gy), 3, 0.8 * peak)
    _sky_fits(gal, b, frame="galactic")
    c = compare_sky(str(pl), str(gal))
    matched = [s for s in c.sources if s.found_in == "both"]
    assert len(matched) == 3 and all(s.offset_arcsec < 0.5 for s in matched)
    assert all(s.flux_ratio == pytest.approx(1.25, rel=0.05) for s in matched)
    assert c.total_ratio == pytest.approx(1.25, rel=0.05)


def test_a_source_in_one_image_only_is_listed_and_judged_against_the_other_images_noise(tmp_path):
    rng = np.random.default_rng(7)
    a = rng.normal(0, 5e-4, (200, 200)) + _gauss((200, 200), 100, 100, 3, 0.05) + _gauss((200, 200), 60, 60, 3, 0.01)
    b = rng.normal(0, 5e-4, (200, 200)) + _gauss((200, 200), 100, 100, 3, 0.05)
    c = compare_sky(str(_sky_fits(tmp_path / "pl.fits", a)), str(_sky_fits(tmp_path / "qa2.fits", b)))
    (extra,) = c.unmatched
    assert extra.found_in == "pl" and extra.pl_flux == pytest.approx(0.01, rel=0.1)
    assert extra.verdict == "discrepant", "20 sigma in one image and nothing at that place in the other"
    assert [s.verdict for s in c.sources if s.found_in == "both"] == ["consistent"]


def test_a_source_filling_the_noise_region_still_leaves_a_noise_figure(tmp_path):
    rng = np.random.default_rng(10)
    data = rng.normal(0, 1e-3, (64, 64)) + _gauss((64, 64), 32, 32, 20, 0.2)  # wider than the central disk
    m = measure_file(_sky_fits(tmp_path / "big.fits", data))
    assert math.isfinite(m.rms) and 0 < m.rms < 0.02

"""Measuring real CASA images: fluxes against the simulated truth, peaks against imstat."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from ari_console.commands.qa2 import app
from ari_console.qa2.measure import MeasureError, measure_file, robust_rms
from tests.fixtures.qa2_images import Qa2Images

pytestmark = pytest.mark.casa
CONTRACT = {"file", "field", "spw", "specmode", "bunit", "peak", "peak_pixel", "rms", "flux",
            "beam_major", "beam_minor", "beam_pa", "snr"}


@pytest.mark.parametrize("style", ["pl", "qa2"])
@pytest.mark.parametrize("kind", ["pbcor", "image"])
def test_noiseless_point_source_flux_is_the_simulated_one_jansky(qa2_images: Qa2Images, style, kind):
    m = measure_file(qa2_images.path("point", style, kind))
    assert m.flux == pytest.approx(1.0, rel=0.01)
    assert m.bunit == "Jy/beam"


@pytest.mark.parametrize("style", ["pl", "qa2"])
def test_peak_and_its_pixel_are_what_casa_imstat_finds(qa2_images: Qa2Images, style):
    for sky in ("point", "disk", "cube"):
        path = qa2_images.path(sky, style)
        truth = qa2_images.of(path)
        m = measure_file(path)
        assert m.peak == pytest.approx(truth["imstat_max"], rel=1e-3)
        assert m.peak_pixel == truth["imstat_maxpos"][:2]


@pytest.mark.parametrize("style", ["pl", "qa2"])
@pytest.mark.parametrize("kind", ["pbcor", "image"])
def test_extended_gaussian_flux_is_within_five_percent_of_the_truth(qa2_images: Qa2Images, style, kind):
    m = measure_file(qa2_images.path("disk", style, kind))
    assert m.snr >= 50
    assert m.flux == pytest.approx(0.2, rel=0.05)
    assert m.region_beams > 5, "the region must follow the resolved source, not stop at one beam"


@pytest.mark.parametrize("sky", ["point", "disk", "cube"])
def test_two_grids_and_weightings_of_one_sky_give_the_same_flux(qa2_images: Qa2Images, sky):
    pl, qa2 = measure_file(qa2_images.path(sky, "pl")), measure_file(qa2_images.path(sky, "qa2"))
    assert pl.pixel_arcsec != pytest.approx(qa2.pixel_arcsec, rel=0.1)
    assert pl.flux == pytest.approx(qa2.flux, rel=0.02)


@pytest.mark.parametrize("style", ["pl", "qa2"])
def test_faint_source_has_a_modest_snr_and_a_flux_within_its_error(qa2_images: Qa2Images, style):
    m = measure_file(qa2_images.path("faint", style, "image"))
    assert 8 <= m.snr <= 30
    assert abs(m.flux - 0.003) <= 3 * m.flux_error
    with fits.open(m.file) as hdul:
        plane = hdul[0].data[0, 0]
    y, x = np.indices(plane.shape)
    r = np.hypot(x - m.peak_pixel[0], y - m.peak_pixel[1]) * m.pixel_arcsec
    assert m.rms == pytest.approx(np.nanstd(plane[(r > 6) & (r < 12)]), rel=0.15)


def test_cube_reports_the_peak_channel_and_that_channels_own_beam(qa2_images: Qa2Images):
    path = qa2_images.path("cube", "pl")
    truth = qa2_images.of(path)
    m = measure_file(path)
    with fits.open(path) as hdul:
        assert "BEAMS" in hdul and "BMAJ" not in hdul[0].header
    assert m.nchan == 4
    assert m.peak_channel == 3  # spectral index 2: the highest frequency is the brightest
    bmaj, bmin, bpa = truth["beams"][3]
    assert (m.beam_major, m.beam_minor, m.beam_pa) == pytest.approx((bmaj, bmin, bpa), rel=1e-4)
    assert truth["beams"][0][0] != pytest.approx(bmaj, rel=0.01)
    assert m.flux == pytest.approx(truth["flux"], rel=0.05)
    assert m.frequency_ghz == pytest.approx(250.0, abs=0.1)


def test_header_beam_is_reported_in_arcsec_and_degrees(qa2_images: Qa2Images):
    path = qa2_images.path("point", "qa2")
    header = fits.getheader(path)
    m = measure_file(path)
    assert m.beam_major == pytest.approx(header["BMAJ"] * 3600)
    assert m.beam_minor == pytest.approx(header["BMIN"] * 3600)
    assert m.beam_pa == pytest.approx(header["BPA"])
    assert 0.5 < m.beam_major < 5


def test_a_plain_two_axis_copy_measures_like_the_four_axis_original(qa2_images: Qa2Images, tmp_path):
    source = qa2_images.path("disk", "pl")
    with fits.open(source) as hdul:
        header = hdul[0].header.copy()
        data = hdul[0].data[0, 0]
    for key in [k for k in header if k[-1:] in "34" and k[:5] in ("CTYPE", "CRVAL", "CDELT", "CRPIX", "CUNIT",
                                                                "NAXIS")]:
        del header[key]
    for key in [k for k in header if k.startswith("PC") and ("3" in k or "4" in k)]:
        del header[key]
    flat = tmp_path / "flat.fits"
    fits.PrimaryHDU(data=data, header=header).writeto(flat)
    a, b = measure_file(source), measure_file(flat)
    assert (b.peak, b.peak_pixel, b.flux) == (a.peak, a.peak_pixel, pytest.approx(a.flux, rel=1e-9))


def test_kelvin_image_gives_the_flux_in_jansky_and_says_so(qa2_images: Qa2Images, tmp_path):
    source = qa2_images.path("point", "pl")
    reference = measure_file(source)
    with fits.open(source) as hdul:
        header, data = hdul[0].header.copy(), hdul[0].data.astype(np.float64)
    freq, omega = 230e9, math.pi * math.radians(header["BMAJ"]) * math.radians(header["BMIN"]) / (4 * math.log(2))
    jy_per_k = 2 * 1.380649e-23 * freq**2 * omega / 299792458.0**2 * 1e26
    header["BUNIT"] = "K"
    kelvin = tmp_path / "kelvin.fits"
    fits.PrimaryHDU(data=(data / jy_per_k).astype(np.float32), header=header).writeto(kelvin)
    m = measure_file(kelvin)
    assert m.bunit == "K"
    assert m.flux == pytest.approx(reference.flux, rel=0.01)
    assert any("unit is K" in note for note in m.notes)


def _broken_copies(qa2_images: Qa2Images, where: Path) -> dict[str, Path]:
    """A FITS without a beam, a truncated FITS and an all-NaN FITS, made from a real image."""
    source = qa2_images.path("point", "qa2")
    where.mkdir(parents=True, exist_ok=True)
    with fits.open(source) as hdul:
        header, data = hdul[0].header.copy(), hdul[0].data
        nobeam = header.copy()
        for key in ("BMAJ", "BMIN", "BPA"):
            del nobeam[key]
        fits.PrimaryHDU(data=data, header=nobeam).writeto(where / "nobeam.fits")
        fits.PrimaryHDU(data=np.full_like(data, np.nan), header=header).writeto(where / "blank.fits")
    raw = source.read_bytes()
    (where / "truncated.fits").write_bytes(raw[: len(raw) // 2])
    good = where / "good.fits"
    shutil.copy(source, good)
    return {"nobeam": where / "nobeam.fits", "blank": where / "blank.fits",
            "truncated": where / "truncated.fits", "good": good}


def test_broken_files_raise_one_clear_line_each(qa2_images: Qa2Images, tmp_path):
    files = _broken_copies(qa2_images, tmp_path)
    expected = {"nobeam": "no restoring beam", "blank": "every pixel is NaN", "truncated": "truncated"}
    for name, words in expected.items():
        with pytest.raises(MeasureError) as info:
            measure_file(files[name])
        message = str(info.value)
        assert message.startswith(str(files[name])) and words in message and "—" in message
        assert "\n" not in message


def test_measure_cli_warns_per_broken_file_measures_the_rest_and_exits_non_zero(qa2_images: Qa2Images, tmp_path):
    files = _broken_copies(qa2_images, tmp_path)
    result = CliRunner().invoke(app, ["measure", *map(str, files.values()), "--json"])
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert [r["file"] for r in rows] == [str(files["good"])]
    assert CONTRACT <= set(rows[0]) and rows[0]["flux"] == pytest.approx(1.0, rel=0.01)
    assert len(rows[0]["peak_pixel"]) == 2
    said = "".join(result.stderr.split())  # rich may wrap a long line on a narrow terminal
    for name, words in {"nobeam": "norestoringbeam", "blank": "everypixelisNaN", "truncated": "truncated"}.items():
        assert said.count(f"{files[name]}:") == 1 and words in said


def test_measure_cli_prints_a_table_for_people(qa2_images: Qa2Images):
    result = CliRunner().invoke(app, ["measure", str(qa2_images.path("faint", "pl"))])
    assert result.exit_code == 0
    assert "QA2 measurements" in result.stdout and "J1610" in result.stdout


def test_robust_rms_ignores_a_bright_source_and_blanked_edge(tmp_path):
    rng = np.random.default_rng(7)
    data = rng.normal(0.0, 1e-3, (256, 256)).astype(np.float32)
    y, x = np.mgrid[:256, :256]
    data += (0.5 * np.exp(-((x - 128) ** 2 + (y - 128) ** 2) / (2 * 3.0**2))).astype(np.float32)
    data[np.hypot(x - 128, y - 128) > 120] = np.nan
    header = fits.Header({"CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN", "CDELT1": -0.1 / 3600,
                          "CDELT2": 0.1 / 3600, "CRPIX1": 129, "CRPIX2": 129, "CRVAL1": 150.0,
                          "CRVAL2": -30.0, "BUNIT": "Jy/beam", "BMAJ": 0.7 / 3600, "BMIN": 0.7 / 3600,
                          "BPA": 0.0, "OBJECT": "synthetic"})
    path = tmp_path / "synthetic.image.fits"
    fits.PrimaryHDU(data=data, header=header).writeto(path)
    m = measure_file(path)
    assert m.rms == pytest.approx(1e-3, rel=0.05)
    assert robust_rms(data.ravel()) == pytest.approx(1e-3, rel=0.05)
    assert m.peak_pixel == [128, 128]


def test_jy_per_pixel_image_sums_pixels_and_says_so(qa2_images: Qa2Images, tmp_path):
    source = qa2_images.path("point", "qa2")
    reference = measure_file(source)
    with fits.open(source) as hdul:
        header, data = hdul[0].header.copy(), hdul[0].data.astype(np.float64)
    beam_pixels = math.pi * header["BMAJ"] * header["BMIN"] / (4 * math.log(2)) / abs(header["CDELT1"] * header["CDELT2"])
    header["BUNIT"] = "Jy/pixel"
    per_pixel = tmp_path / "model.fits"
    fits.PrimaryHDU(data=(data / beam_pixels).astype(np.float32), header=header).writeto(per_pixel)
    m = measure_file(per_pixel)
    assert m.bunit == "Jy/pixel"
    assert m.flux == pytest.approx(reference.flux, rel=0.01)
    assert any("Jy/pixel" in note for note in m.notes)


def test_a_measurement_flattens_into_one_storable_row(qa2_images: Qa2Images):
    m = measure_file(qa2_images.path("cube", "qa2"))
    row = m.as_row()
    assert (row["peak_x"], row["peak_y"]) == tuple(m.peak_pixel)
    assert all(isinstance(v, (str, int, float, type(None))) for v in row.values())

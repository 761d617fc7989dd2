"""Pairing pipeline products with QA2 products named by people."""

from __future__ import annotations

import pytest
from astropy.io import fits

from ari_console.qa2.associate import associate, describe, normalise_field, parse_field
from ari_console.qa2.measure import describe_file

UID = "member.uid___A001_X1296_X1d3"


def names(infos):
    return sorted(i.file for i in infos)


def pairs_of(result):
    return sorted((p.pl.file, p.qa2.file) for p in result.pairs)


@pytest.mark.parametrize("raw, expected", [
    ("NGC1234_sci", "ngc1234"), ("NGC_1234", "ngc1234"), ("ngc 1234", "ngc1234"),
    ("J1610-3958", "j1610-3958"), ("J1610+3958", "j1610+3958"), ("Orion_KL", "orionkl"),
])
def test_field_names_are_compared_without_case_sci_spaces_or_underscores(raw, expected):
    assert normalise_field(raw) == expected


@pytest.mark.parametrize("filename", [
    f"{UID}.NGC1234_sci.spw16_18_20_22.cont.I.pbcor.fits",
    "NGC1234_cont.manual.pbcor.fits",
    "NGC1234.spw17.cube.image.pbcor.fits",
    "uid___A001_X1296_X1d3.NGC_1234_sci.spw16_18_20_22.cont.I.pbcor.fits",
    "ngc1234_spw17_line.image.fits",
    "ngc_1234.continuum.briggs.pbcor.fits",
])
def test_the_field_is_read_from_archive_and_hand_made_names(filename):
    assert parse_field(filename) == "ngc1234"


def test_archive_cont_cube_and_mfs_products_pair_with_hand_named_qa2_products():
    pl = [describe(n) for n in (
        f"{UID}.NGC1234_sci.spw16_18_20_22.cont.I.pbcor.fits",
        f"{UID}.NGC1234_sci.spw17.cube.I.pbcor.fits",
        f"{UID}.NGC1234_sci.spw19.cube.I.pbcor.fits",
        f"{UID}.NGC1234_sci.spw16.mfs.I.pbcor.fits",
        f"{UID}.NGC1234_sci.spw17.cube.I.image.fits",
    )]
    qa2 = [describe(n) for n in (
        "NGC1234_cont.manual.pbcor.fits",
        "ngc1234_spw19_line.image.pbcor.fits",
        "NGC1234.spw17.cube.image.pbcor.fits",
        "ngc_1234.spw16.mfs.pbcor.fits",
        "ngc1234_spw17_line.image.fits",
    )]
    result = associate(pl, qa2)
    assert pairs_of(result) == sorted([
        (pl[0].file, "NGC1234_cont.manual.pbcor.fits"),
        (pl[1].file, "NGC1234.spw17.cube.image.pbcor.fits"),
        (pl[2].file, "ngc1234_spw19_line.image.pbcor.fits"),
        (pl[3].file, "ngc_1234.spw16.mfs.pbcor.fits"),
        (pl[4].file, "ngc1234_spw17_line.image.fits"),
    ])
    assert result.unmatched_pl == [] and result.unmatched_qa2 == []


def test_files_without_a_partner_are_listed_on_both_sides():
    pl = [describe(f"{UID}.NGC1234_sci.spw16_18.cont.I.pbcor.fits"),
          describe(f"{UID}.M87_sci.spw16_18.cont.I.pbcor.fits")]
    qa2 = [describe("NGC1234_cont.pbcor.fits"), describe("IRAS16293_cont.pbcor.fits")]
    result = associate(pl, qa2)
    assert pairs_of(result) == [(pl[0].file, qa2[0].file)]
    assert names(result.unmatched_pl) == [pl[1].file]
    assert names(result.unmatched_qa2) == [qa2[1].file]


def test_pbcor_pairs_with_pbcor_and_plain_image_with_plain_image():
    pl = [describe(f"{UID}.NGC1234_sci.spw16_18.cont.I.pbcor.fits"),
          describe(f"{UID}.NGC1234_sci.spw16_18.cont.I.image.fits")]
    qa2 = [describe("NGC1234_cont.image.fits"), describe("NGC1234_cont.pbcor.fits")]
    result = associate(pl, qa2)
    assert pairs_of(result) == sorted([(pl[0].file, qa2[1].file), (pl[1].file, qa2[0].file)])


def test_primary_beams_and_masks_are_not_compared_but_reported():
    pl = [describe(f"{UID}.NGC1234_sci.spw16_18.cont.I.{k}.fits") for k in ("pb", "mask", "psf", "residual")]
    pl.append(describe(f"{UID}.NGC1234_sci.spw16_18.cont.I.alpha.fits"))
    result = associate(pl, [describe("NGC1234_cont.pb.fits")])
    assert result.pairs == [] and result.unmatched_pl == [] and result.unmatched_qa2 == []
    assert len(result.ignored) == 6


def test_a_cube_never_pairs_with_a_continuum_image():
    result = associate([describe(f"{UID}.NGC1234_sci.spw17.cube.I.pbcor.fits")],
                       [describe("NGC1234_cont.pbcor.fits")])
    assert result.pairs == []
    assert len(result.unmatched_pl) == 1 and len(result.unmatched_qa2) == 1


def test_different_named_spws_do_not_pair():
    result = associate([describe(f"{UID}.NGC1234_sci.spw17.cube.I.pbcor.fits")],
                       [describe("NGC1234.spw19.cube.pbcor.fits")])
    assert result.pairs == []


def _header_only_fits(path, obj, ra=150.0, dec=-30.0, freq=230e9, nchan=1, width=2e9):
    """A small image FITS whose headers say field, position and frequency (pixels are zeros)."""
    import numpy as np
    header = fits.Header({"CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN", "CRVAL1": ra, "CRVAL2": dec,
                          "CDELT1": -5.6e-5, "CDELT2": 5.6e-5, "CRPIX1": 9, "CRPIX2": 9, "CTYPE3": "FREQ",
                          "CRVAL3": freq, "CDELT3": width, "CRPIX3": 1, "BUNIT": "Jy/beam"})
    if obj is not None:
        header["OBJECT"] = obj
    fits.PrimaryHDU(data=np.zeros((nchan, 16, 16), np.float32), header=header).writeto(path)
    return str(path)


def test_the_header_field_wins_over_a_misleading_file_name(tmp_path):
    pl = _header_only_fits(tmp_path / f"{UID}.NGC1234_sci.spw16_18.cont.I.pbcor.fits", "NGC1234")
    wrong = _header_only_fits(tmp_path / "NGC1234_cont.pbcor.fits", "NGC5678", ra=151.0)
    right = _header_only_fits(tmp_path / "target_final_cont.pbcor.fits", "NGC_1234")
    result = associate([describe_file(pl)], [describe_file(wrong), describe_file(right)])
    assert pairs_of(result) == [(pl, right)]
    assert names(result.unmatched_qa2) == [wrong]


def test_the_sky_position_pairs_files_whose_names_tell_no_field(tmp_path):
    pl = _header_only_fits(tmp_path / f"{UID}.NGC1234_sci.spw16_18.cont.I.pbcor.fits", None)
    near = _header_only_fits(tmp_path / "final_cont.pbcor.fits", None, ra=150.0 + 1e-4)
    far = _header_only_fits(tmp_path / "cont_v2.pbcor.fits", None, ra=152.0)
    result = associate([describe_file(pl)], [describe_file(near), describe_file(far)])
    assert pairs_of(result) == [(pl, near)]
    assert "sky position" in result.pairs[0].evidence[0]


def test_renumbered_spws_pair_when_the_frequencies_overlap(tmp_path):
    pl = _header_only_fits(tmp_path / f"{UID}.NGC1234_sci.spw17.cube.I.pbcor.fits", "NGC1234",
                           freq=230.0e9, nchan=8, width=10e6)
    same = _header_only_fits(tmp_path / "NGC1234.spw1.cube.pbcor.fits", "NGC1234", freq=230.0e9, nchan=8,
                             width=10e6)
    other = _header_only_fits(tmp_path / "NGC1234.spw3.cube.pbcor.fits", "NGC1234", freq=232.0e9, nchan=8,
                              width=10e6)
    result = associate([describe_file(pl)], [describe_file(other), describe_file(same)])
    assert pairs_of(result) == [(pl, same)]
    assert names(result.unmatched_qa2) == [other]


def test_a_cube_without_mode_words_is_told_by_its_channel_count(tmp_path):
    cube = _header_only_fits(tmp_path / "NGC1234_spw17.pbcor.fits", "NGC1234", nchan=4, width=10e6)
    assert describe_file(cube).specmode == "cube"
    single = _header_only_fits(tmp_path / "NGC1234_spw17_18.pbcor.fits", "NGC1234")
    assert describe_file(single).specmode == "cont"


@pytest.mark.parametrize("pl_name, qa2_name", [
    (f"{UID}.NGC1234_sci.spw16_18_20_22.cont.I.pbcor.fits", "2016.1.00123.S_NGC1234_cont.pbcor.fits"),
    (f"{UID}.NGC1234_sci.spw16_18_20_22.cont.I.pbcor.fits", "NGC1234_mfs_robust0.5.pbcor.fits"),
    (f"{UID}.NGC1234_sci.spw16_18_20_22.cont.I.tt0.pbcor.fits", "calibrated_final_cont_NGC1234.pbcor.fits"),
    (f"{UID}.NGC1234_sci.spw17.cube.I.pbcor.fits", "NGC1234_spw17_CO2-1.cube.pbcor.fits"),
    (f"{UID}.NGC1234_sci.spw17.cube.I.iter1.image.pbcor.fits", "NGC 1234.spw17.line.pbcor.fits"),
])
def test_unusual_hand_made_names_still_find_their_pipeline_partner(pl_name, qa2_name):
    decoy = describe("M87_cont.pbcor.fits")
    result = associate([describe(pl_name)], [decoy, describe(qa2_name)])
    assert pairs_of(result) == [(pl_name, qa2_name)]
    assert names(result.unmatched_qa2) == ["M87_cont.pbcor.fits"]


def test_a_field_name_that_only_starts_like_another_does_not_pair():
    result = associate([describe(f"{UID}.NGC1234_sci.spw16_18.cont.I.pbcor.fits")],
                       [describe("NGC12345_cont.pbcor.fits")])
    assert result.pairs == []


@pytest.mark.parametrize("qa2_name", [
    "Band6_NGC1234_cont.pbcor.fits",
    "NGC1234_12m_B6_contimage_robust0.5.pbcor.fits",
    "NGC1234_sci.spw16_18_20_22.cont.I.manual.pbcor.fits",
    "NGC1234_spw16_18_20_22_aggregate.pbcor.fits",
])
def test_band_array_and_weighting_words_around_the_field_are_ignored(qa2_name):
    pl_name = f"{UID}.NGC1234_sci.spw16_18_20_22.cont.I.pbcor.fits"
    result = associate([describe(pl_name)], [describe("M87_cont.pbcor.fits"), describe(qa2_name)])
    assert pairs_of(result) == [(pl_name, qa2_name)]


REAL_QA2 = "/work/shared/data/real/archive/astroquery-alma-datalink-recurse-this.xml"


def _real_qa2_names() -> list[str]:
    """The QA2 FITS names the real archive lists for MOUS uid://A001/X12a3/Xe9 (4 EBs)."""
    import re
    from pathlib import Path

    text = Path(REAL_QA2).read_text()
    return sorted({m for m in re.findall(r"member\.uid[^<\"&]*?\.fits(?:\.gz)?", text)})


def test_real_multi_eb_qa2_names_pair_with_pipeline_names_despite_renumbered_spws():
    qa2 = _real_qa2_names()
    assert any("spw0_4_8_12.cube" in n for n in qa2)  # the renumbering this test is about
    stem = "member.uid___A001_X12a3_Xe9.50_kms_cloud_sci"
    pl = [f"{stem}.spw25_27_29_31.cont.I.pbcor.fits", f"{stem}.spw25.cube.I.pbcor.fits",
          f"{stem}.spw27.cube.I.pbcor.fits", f"{stem}.spw25_27_29_31.cont.I.tt1.pbcor.fits"]
    result = associate([describe(f) for f in pl], [describe(f) for f in qa2])
    paired = {Path_name(p.pl.file): Path_name(p.qa2.file) for p in result.pairs}
    assert paired[pl[1]].startswith(f"{stem}.spw0_4_8_12.cube")
    assert paired[pl[0]].startswith(f"{stem}.spw0_1_2_3_4_5_6_7_8_9_10_11_12_13_14_15.mfs")
    assert pl[3] not in paired, "a Taylor-term image is never compared as flux"
    assert [Path_name(i.file) for i in result.unmatched_pl] == [pl[2]]


def Path_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def test_a_taylor_term_or_spectral_index_image_is_never_a_flux_image(tmp_path):
    assert describe(f"{UID}.NGC1234_sci.spw16_18.cont.I.tt1.pbcor.fits").kind == "tt1"
    assert describe(f"{UID}.NGC1234_sci.spw16_18.cont.I.tt0.pbcor.fits").kind == "pbcor"
    path = _header_only_fits(tmp_path / "ngc1234_cont.fits", "NGC1234")
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["BTYPE"] = "Spectral index"
    from ari_console.qa2.measure import describe_file
    assert describe_file(path).kind == "alpha" and not describe_file(path).measured


def test_dotted_source_names_and_pipeline_stage_prefixes_keep_the_whole_name():
    assert describe(f"{UID}.G10.6-0.4_sci.spw25.cube.I.pbcor.fits").field == "g106-04"
    assert describe("oussid.s38_0.G10.6-0.4_sci.spw25.cube.I.iter1.image.pbcor.fits").field == "g106-04"
    result = associate([describe(f"member.{UID}.G10.6-0.4_sci.spw25.cube.I.pbcor.fits")],
                       [describe("G10.6-0.4.spw25.cube.image.pbcor.fits"), describe("G10_cube.pbcor.fits")])
    assert [Path_name(p.qa2.file) for p in result.pairs] == ["G10.6-0.4.spw25.cube.image.pbcor.fits"]

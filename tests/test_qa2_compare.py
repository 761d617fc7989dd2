"""Comparing pipeline with QA2: ratios, the SNR-scaled verdict, and `ari qa2 compare` on real images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from ari_console.commands.qa2 import app
from ari_console.qa2.compare import compare
from tests.fixtures.qa2_images import Qa2Images

PAIR_KEYS = {"pl", "qa2", "field", "spw", "specmode", "peak_ratio", "flux_ratio", "rms_ratio", "beam_ratio",
             "verdict"}


def measurement(**overrides) -> dict:
    base = dict(file="pl.fits", field="ngc1234", spw="17", specmode="cont", peak=0.1, flux=0.1, rms=1e-4,
                snr=1000.0, beam_major=1.0, beam_minor=0.8, beam_pa=0.0, region_beams=9.0)
    return {**base, **overrides}


def test_ratios_are_pipeline_over_qa2():
    c = compare(measurement(peak=0.2, flux=0.3, rms=2e-4, beam_major=2.0, beam_minor=1.6),
                measurement(file="qa2.fits"))
    assert (c.peak_ratio, c.flux_ratio, c.rms_ratio, c.beam_ratio) == pytest.approx((2.0, 3.0, 2.0, 2.0))


def test_a_faint_source_is_allowed_more_scatter_than_a_bright_one():
    bright = compare(measurement(flux=0.112, peak=0.11), measurement(file="q"))
    faint = compare(measurement(flux=0.112, peak=0.11, snr=12.0), measurement(file="q", snr=12.0))
    assert bright.verdict == "discrepant" and "flux ratio" in bright.reasons
    assert faint.verdict == "consistent"
    assert faint.flux_tolerance > bright.flux_tolerance


def test_peak_of_a_resolved_source_is_not_judged_because_it_depends_on_the_beam():
    resolved = compare(measurement(flux=0.5, peak=0.08), measurement(file="q", flux=0.5, peak=0.1))
    assert resolved.verdict == "consistent" and not resolved.peak_judged
    compact = compare(measurement(flux=0.1, peak=0.08), measurement(file="q", flux=0.1, peak=0.1))
    assert compact.verdict == "discrepant" and "peak ratio" in compact.reasons


def test_a_beam_twice_the_size_is_discrepant():
    c = compare(measurement(beam_major=2.5, beam_minor=2.0), measurement(file="q"))
    assert c.verdict == "discrepant" and "beam ratio" in c.reasons


def test_without_a_detection_only_noise_and_beam_are_judged():
    c = compare(measurement(flux=3e-4, peak=3e-4, snr=3.0), measurement(file="q", flux=1e-4, peak=1e-4, snr=1.0))
    assert c.verdict == "consistent" and "no source" in c.reasons


def _compare_json(pl_dir, qa2_dir):
    result = CliRunner().invoke(app, ["compare", str(pl_dir), str(qa2_dir), "--json"])
    return result, json.loads(result.stdout)


@pytest.mark.casa
def test_compare_pairs_every_real_product_and_finds_them_consistent(qa2_images: Qa2Images):
    result, report = _compare_json(qa2_images.pl, qa2_images.qa2)
    assert result.exit_code == 0, result.stderr
    assert {"pairs", "unmatched_pl", "unmatched_qa2"} <= set(report)
    pairs = {(qa2_images.of(p["pl"])["sky"], qa2_images.of(p["pl"])["kind"]): p for p in report["pairs"]}
    assert set(pairs) == {(s, k) for s in ("point", "disk", "faint", "cube", "double", "line")
                          for k in ("pbcor", "image")}
    for (sky, kind), pair in pairs.items():
        assert PAIR_KEYS <= set(pair)
        truth_pl, truth_qa2 = qa2_images.of(pair["pl"]), qa2_images.of(pair["qa2"])
        assert (truth_qa2["sky"], truth_qa2["kind"], truth_qa2["style"]) == (sky, kind, "qa2")
        assert pair["verdict"] == "consistent", pair
    assert pairs[("point", "pbcor")]["flux_ratio"] == pytest.approx(1.0, abs=0.01)
    assert pairs[("cube", "pbcor")]["specmode"] == "cube"
    assert report["unmatched_pl"] == [] and report["unmatched_qa2"] == []
    assert all(name.endswith(".pb.fits") for name in report["ignored"])


@pytest.mark.casa
def test_a_qa2_image_on_another_flux_scale_is_discrepant_and_orphans_are_listed(qa2_images: Qa2Images, tmp_path):
    qa2 = tmp_path / "qa2"
    shutil.copytree(qa2_images.qa2, qa2)
    scaled = qa2 / qa2_images.path("disk", "qa2").name
    with fits.open(scaled) as hdul:
        data, header = hdul[0].data * np.float32(1.25), hdul[0].header
        fits.PrimaryHDU(data=data, header=header).writeto(scaled, overwrite=True)
    orphan = qa2 / "IRAS16293_cont.pbcor.fits"
    with fits.open(qa2_images.path("point", "qa2")) as hdul:
        header = hdul[0].header.copy()
        header["OBJECT"], header["CRVAL1"] = "IRAS16293", 248.09
        fits.PrimaryHDU(data=hdul[0].data, header=header).writeto(orphan)
    (qa2 / qa2_images.path("faint", "qa2", "image").name).unlink()
    result, report = _compare_json(qa2_images.pl, qa2)
    assert result.exit_code == 0
    verdicts = {(qa2_images.of(p["pl"])["sky"], qa2_images.of(p["pl"])["kind"]): p for p in report["pairs"]}
    disk = verdicts[("disk", "pbcor")]
    assert disk["verdict"] == "discrepant" and disk["flux_ratio"] == pytest.approx(0.8, rel=0.02)
    assert sum(p["verdict"] == "discrepant" for p in report["pairs"]) == 1
    assert report["unmatched_qa2"] == [str(orphan)]
    assert report["unmatched_pl"] == [str(qa2_images.path("faint", "pl", "image"))]


@pytest.mark.casa
def test_compare_names_an_unreadable_qa2_image_and_still_compares_the_rest(qa2_images: Qa2Images, tmp_path):
    qa2 = tmp_path / "qa2"
    shutil.copytree(qa2_images.qa2, qa2)
    broken = qa2 / qa2_images.path("point", "qa2").name
    raw = broken.read_bytes()
    broken.write_bytes(raw[: len(raw) // 2])
    result, report = _compare_json(qa2_images.pl, qa2)
    assert result.exit_code == 1
    said = "".join(result.stderr.split())  # rich may wrap a long line on a narrow terminal
    assert said.count(f"{broken}:truncated") == 1
    assert len(report["pairs"]) == 11 and len(report["errors"]) == 1


def test_compare_of_a_missing_directory_is_a_user_error(tmp_path):
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "nope"), str(tmp_path), "--json"])
    assert result.exit_code != 0
    assert "is not a directory" in str(result.exception)


@pytest.mark.casa
def test_compare_prints_verdicts_and_orphans_as_tables_for_people(qa2_images: Qa2Images, tmp_path):
    qa2 = tmp_path / "qa2"
    shutil.copytree(qa2_images.qa2, qa2)
    (qa2 / qa2_images.path("cube", "qa2").name).unlink()
    result = CliRunner().invoke(app, ["compare", str(qa2_images.pl), str(qa2)])
    assert result.exit_code == 0
    assert "pipeline / QA2" in result.stdout and "without a partner" in result.stdout
    assert result.stdout.count("consistent") >= 11  # the verdicts, and the rows of the sources


def test_two_cubes_are_compared_by_their_median_noise_not_by_one_noisy_peak_channel():
    """A line-free cube's peak channel is a noise spike whose rms is one draw: two cubes with the
    same noise per channel must not be called discrepant because their peak channels differ."""
    cube = dict(file="pl.fits", field="f", spw="17", specmode="cube", peak=0.01, flux=0.01, snr=4.0,
                beam_major=1.0, beam_minor=1.0, nchan=40)
    pl = {**cube, "rms": 0.0025, "rms_median": 0.0021}
    qa2 = {**cube, "file": "qa2.fits", "rms": 0.0011, "rms_median": 0.0020}
    c = compare(pl, qa2)
    assert c.verdict == "consistent" and round(c.rms_ratio, 3) == 1.05
    # a cube whose noise really is three times the other's still is discrepant
    assert compare({**pl, "rms_median": 0.006}, qa2).verdict == "discrepant"
    # a plane (or a measurement without rms_median) keeps the rms of its one channel
    assert round(compare({**pl, "nchan": 1}, {**qa2, "nchan": 1}).rms_ratio, 2) == 2.27

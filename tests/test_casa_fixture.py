"""Real CASA runs offline: simobserve + tclean of a point source images its flux."""

import json

import pytest

from pathlib import Path

RECIPES = Path(__file__).resolve().parent / "data" / "recipes"


@pytest.mark.casa
def test_simobserve_and_tclean_image_a_point_source_at_its_flux(casa, tmp_path):
    out = casa.run(f"""
        import sys, json
        sys.argv = ["sim_point.py", {str(tmp_path / "job")!r}, "--flux-jy", "0.5"]
        sys.path.insert(0, {str(RECIPES)!r})
        import sim_point
        sim_point.main(sys.argv[1:])
    """, cwd=tmp_path)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["peak_jy"] == pytest.approx(0.5, rel=1e-3)
    assert result["peak_pixel"] == [64, 64]
    from astropy.io import fits
    with fits.open(result["fits"]) as hdul:
        assert hdul[0].header["BUNIT"].lower() == "jy/beam"
        assert float(hdul[0].data.max()) == pytest.approx(0.5, rel=1e-3)


@pytest.mark.casa
def test_casa_uses_the_offline_measures_from_casadata(casa, tmp_path):
    out = casa.run("""
        import casatools, casadata, os
        from casatools import ctsys
        print(ctsys.rundata())
        print(os.path.dirname(casadata.__file__))
    """, cwd=tmp_path)
    rundata, casadata_dir = out.strip().splitlines()[-2:]
    assert rundata.startswith(casadata_dir)

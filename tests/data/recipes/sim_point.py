"""Simulate one ALMA observation of a point source with CASA and image it.

    python sim_point.py OUT_DIR [--flux-jy 1.0] [--freq-ghz 230] [--config alma.cycle5.1.cfg]

The smallest real CASA imaging job (the CASA fixture test runs it):
simobserve (an ALMA 12m configuration shipped in casadata) -> tclean (mfs,
hogbom) -> exportfits, then ``result.json`` in OUT_DIR with the image's peak,
its pixel and the FITS path. Needs casatools/casatasks; nothing of the console.
"""

import argparse
import json
import os
import shutil
import sys
import time


def simulate_and_image(out_dir, flux_jy, freq_ghz, config):
    """Run simobserve + tclean + exportfits in ``out_dir``; the result dict."""
    import casadata
    from casatasks import exportfits, imstat, simobserve, tclean
    from casatools import componentlist

    os.makedirs(out_dir, exist_ok=True)
    os.chdir(out_dir)
    direction = "J2000 10h00m00.0s -30d00m00.0s"
    if os.path.exists("point.cl"):
        shutil.rmtree("point.cl")
    cl = componentlist()
    cl.addcomponent(dir=direction, flux=flux_jy, fluxunit="Jy", freq=f"{freq_ghz}GHz", shape="point")
    cl.rename("point.cl")
    cl.close()
    cfg = os.path.join(os.path.dirname(casadata.__file__), "__data__", "alma", "simmos", config)
    started = time.time()
    simobserve(project="sim", complist="point.cl", compwidth="2GHz", direction=direction,
               obsmode="int", antennalist=cfg, totaltime="600s", integration="30s",
               thermalnoise="", mapsize=["10arcsec", "10arcsec"], overwrite=True, graphics="none")
    vis = os.path.join("sim", "sim." + config.replace(".cfg", ".ms"))
    for old in [p for p in os.listdir(".") if p.startswith("point_image.")]:
        shutil.rmtree(old)
    tclean(vis=vis, imagename="point_image", imsize=128, cell="0.1arcsec", niter=200,
           threshold="1mJy", specmode="mfs", deconvolver="hogbom", pbcor=True)
    fits = "point_image.pbcor.fits"
    exportfits("point_image.image.pbcor", fits, overwrite=True)
    stats = imstat("point_image.image.pbcor")
    return {
        "fits": os.path.abspath(fits),
        "peak_jy": float(stats["max"][0]),
        "peak_pixel": [int(v) for v in stats["maxpos"][:2]],
        "flux_jy_true": flux_jy,
        "seconds": round(time.time() - started, 2),
    }


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--flux-jy", type=float, default=1.0)
    parser.add_argument("--freq-ghz", type=float, default=230.0)
    parser.add_argument("--config", default="alma.cycle5.1.cfg")
    args = parser.parse_args(argv)
    out_dir = os.path.abspath(args.out_dir)
    result = simulate_and_image(out_dir, args.flux_jy, args.freq_ghz, args.config)
    tmp = os.path.join(out_dir, "result.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(result, fh)
    os.replace(tmp, os.path.join(out_dir, "result.json"))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Benchmark: `qa2 measure` throughput on a >= 1 GB float32 cube, with memory kept flat.

Writes a 1024 x 1024 x 256 (1 GiB) float32 cube with Gaussian noise, a point
source in a few channels, a blanked primary-beam edge and a per-channel BEAMS
table, into a temporary directory (written by channel blocks, so making it
is flat in memory too). Then measures it in a fresh subprocess and prints the
throughput and that process's peak RSS.

Targets: >= 50 MB/s on one core; peak RSS far below the cube size (the
cube is read through short-lived memory maps one block of channels at a time).

Run: ``.venv/bin/python -m benchmarks.bench_qa2 [--nchan 256] [--size 1024]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

TARGET_MB_S = 50.0
RMS = 1e-3
PEAK = 0.5


def cube_header(size: int, nchan: int) -> fits.Header:
    """A CASA-like 4-D header (RA, Dec, FREQ, STOKES) with no header beam (it is in BEAMS)."""
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 4
    for i, n in enumerate((size, size, nchan, 1), start=1):
        header[f"NAXIS{i}"] = n
    header["EXTEND"] = True
    header.update({"BUNIT": "Jy/beam", "OBJECT": "BENCH", "CTYPE1": "RA---SIN", "CRVAL1": 150.0,
                   "CDELT1": -0.1 / 3600, "CRPIX1": size / 2 + 1, "CUNIT1": "deg", "CTYPE2": "DEC--SIN",
                   "CRVAL2": -30.0, "CDELT2": 0.1 / 3600, "CRPIX2": size / 2 + 1, "CUNIT2": "deg",
                   "CTYPE3": "FREQ", "CRVAL3": 230e9, "CDELT3": 1e6, "CRPIX3": 1, "CUNIT3": "Hz",
                   "CTYPE4": "STOKES", "CRVAL4": 1.0, "CDELT4": 1.0, "CRPIX4": 1, "CASAMBM": True})
    return header


def write_cube(path: Path, size: int, nchan: int, seed: int = 1) -> float:
    """Write the benchmark cube to ``path`` block by block; returns the true flux of the source (Jy)."""
    rng = np.random.default_rng(seed)
    beam_px = 7.0  # FWHM in pixels (0.7")
    sigma = beam_px / math.sqrt(8 * math.log(2))
    y, x = np.mgrid[:size, :size]
    centre = size // 2
    source = (PEAK * np.exp(-((x - centre) ** 2 + (y - centre) ** 2) / (2 * sigma**2))).astype(np.float32)
    blank = np.hypot(x - centre, y - centre) > 0.48 * size
    line = {nchan // 2 - 1: 0.5, nchan // 2: 1.0, nchan // 2 + 1: 0.5}
    with open(path, "wb") as fh:
        fh.write(cube_header(size, nchan).tostring().encode("ascii"))
        for c in range(nchan):
            plane = rng.standard_normal((size, size), dtype=np.float32) * np.float32(RMS)
            if c in line:
                plane += source * np.float32(line[c])
            plane[blank] = np.nan
            fh.write(plane.astype(">f4").tobytes())
        pad = (-fh.tell()) % 2880
        fh.write(b"\0" * pad)
        cols = [fits.Column(name="BMAJ", format="1E", unit="arcsec", array=np.full(nchan, 0.7, np.float32)),
                fits.Column(name="BMIN", format="1E", unit="arcsec", array=np.full(nchan, 0.7, np.float32)),
                fits.Column(name="BPA", format="1E", unit="deg", array=np.zeros(nchan, np.float32)),
                fits.Column(name="CHAN", format="1J", array=np.arange(nchan, dtype=np.int32)),
                fits.Column(name="POL", format="1J", array=np.zeros(nchan, np.int32))]
    table = fits.BinTableHDU.from_columns(cols, name="BEAMS")
    with fits.open(path, mode="append", memmap=True) as hdul:
        hdul.append(table)
    return PEAK  # a point source: flux in Jy equals its peak in Jy/beam


def measure_in_child(path: Path) -> dict:
    """Measure ``path`` in a fresh interpreter; its seconds, peak RSS and the measurement."""
    code = (
        "import json, resource, sys, time\n"
        "from ari_console.qa2.measure import measure_file\n"
        "t = time.perf_counter(); m = measure_file(sys.argv[1]); dt = time.perf_counter() - t\n"
        "print(json.dumps({'seconds': dt, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
        " 'flux': m.flux, 'peak': m.peak, 'rms': m.rms, 'channel': m.peak_channel}))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                          env=env, cwd=Path(__file__).resolve().parents[1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def baseline_rss_mb() -> float:
    """Peak RSS of a child that only imports the measure module (the interpreter's floor)."""
    proc = subprocess.run([sys.executable, "-c", "import resource, ari_console.qa2.measure; "
                           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"],
                          capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return float(proc.stdout.strip())


def main() -> None:
    """Make the cube, measure it, print MB/s and peak RSS against the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--nchan", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-qa2-") as tmp:
        path = Path(tmp) / "bench.cube.I.pbcor.fits"
        t0 = time.perf_counter()
        truth = write_cube(path, args.size, args.nchan)
        made = time.perf_counter() - t0
        mb = path.stat().st_size / 1e6
        floor = baseline_rss_mb()
        result = measure_in_child(path)
    rate = mb / result["seconds"]
    print(f"cube: {args.size}x{args.size}x{args.nchan} float32, {mb:.0f} MB (written in {made:.1f} s)")
    print(f"measure: {result['seconds']:.2f} s -> {rate:.0f} MB/s on one core (target >= {TARGET_MB_S:.0f} MB/s): "
          f"{'OK' if rate >= TARGET_MB_S else 'BELOW TARGET'}")
    print(f"peak RSS: {result['peak_rss_mb']:.0f} MB (interpreter + imports alone: {floor:.0f} MB; "
          f"cube {mb:.0f} MB)")
    print(f"result: flux {result['flux']:.4f} Jy (truth {truth:.4f}), peak {result['peak']:.4f}, "
          f"rms {result['rms']:.2e} (truth {RMS:.0e}), peak channel {result['channel']}")


if __name__ == "__main__":
    main()

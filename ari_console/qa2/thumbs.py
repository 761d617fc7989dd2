"""Small pictures of a pipeline image and its QA2 partner, for comparing them by eye.

Pure apart from reading the two FITS files: each image (a cube: its channel-maximum map) is
cut to the sky both images cover, resampled onto one grid of ``width x height`` cells (the
QA2 image through the WCSs, so a source sits in the same cell of both pictures), and
stretched with one asinh scale shared by both (the QA2 image's noise to the brighter peak),
so equal fluxes look equal. The sources of the comparison (their sky positions) are marked.
The TUI draws the cells with half blocks, the report with matplotlib.

>>> t = Thumb(values=np.zeros((2, 2)), marks=[(0.5, 1.0, 1, "consistent")], title="x")
>>> t.values.shape, t.marks[0][2]
((2, 2), 1)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field as dc_field

import numpy as np


@dataclass
class Thumb:
    """One picture: ``values`` in [0, 1] (NaN blank), rows from the top; marks ``(x, y, id, verdict)``."""

    values: np.ndarray
    marks: list = dc_field(default_factory=list)
    title: str = ""


def pair(pl_file: str, qa2_file: str, sources: list[dict] | None = None, width: int = 48,
         height: int = 48) -> tuple[Thumb, Thumb]:
    """The two pictures of a pair on the pipeline image's sky, marked with ``sources``
    (dicts with ``ra_deg``, ``dec_deg``, ``id``, ``verdict``, as ``ari qa2 compare`` gives them)."""
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    from .measure import open_image
    from .sky import celestial_wcs

    pl, qa2 = open_image(pl_file), open_image(qa2_file)
    a, b = pl.channel_max(), qa2.channel_max()
    wa, wb = celestial_wcs(pl), celestial_wcs(qa2)
    ny, nx = a.shape
    # The pipeline image's grid, cropped to the finite part, sampled at width x height cells.
    rows, cols = np.nonzero(np.isfinite(a))
    if rows.size == 0:
        rows, cols = np.array([0, ny - 1]), np.array([0, nx - 1])
    y0, y1, x0, x1 = rows.min(), rows.max(), cols.min(), cols.max()
    side = max(y1 - y0, x1 - x0) + 1
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    xs = cx - side / 2 + (np.arange(width) + 0.5) * side / width
    ys = cy + side / 2 - (np.arange(height) + 0.5) * side / height  # top row = north
    gx, gy = np.meshgrid(xs, ys)
    sample_a = _sample(a, gx, gy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bx, by = wb.world_to_pixel(wa.pixel_to_world(gx.ravel(), gy.ravel()))
    sample_b = _sample(b, np.asarray(bx).reshape(gx.shape), np.asarray(by).reshape(gy.shape))
    lo, hi = _scale(sample_a, sample_b)
    marks = []
    for s in sources or []:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            px, py = wa.world_to_pixel(SkyCoord(s["ra_deg"] * u.deg, s["dec_deg"] * u.deg))
        mx = (float(px) - (cx - side / 2)) / side * width
        my = ((cy + side / 2) - float(py)) / side * height
        if 0 <= mx < width and 0 <= my < height:
            marks.append((mx, my, s["id"], s.get("verdict", "")))
    return (Thumb(_stretch(sample_a, lo, hi), marks, "pipeline"),
            Thumb(_stretch(sample_b, lo, hi), marks, "QA2"))


def _sample(plane: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Nearest pixel of ``plane`` at (x, y); NaN outside. A cell wider than a pixel takes the
    maximum of its pixels, so a compact source never falls between samples."""
    ny, nx = plane.shape
    step = max(1, int(abs(x[0, 1] - x[0, 0]) if x.shape[1] > 1 else 1))
    if step > 1:
        from scipy import ndimage

        filled = np.where(np.isfinite(plane), plane, -np.inf)
        plane = ndimage.maximum_filter(filled, size=step, mode="nearest")
        plane[~np.isfinite(plane)] = np.nan
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    inside = (ix >= 0) & (iy >= 0) & (ix < nx) & (iy < ny) & np.isfinite(x) & np.isfinite(y)
    out = np.full(x.shape, np.nan)
    out[inside] = plane[iy[inside], ix[inside]]
    return out


def _scale(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Shared display range: from -2 sigma of the noise (MAD) to the brighter peak."""
    both = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
    if both.size == 0:
        return 0.0, 1.0
    med = float(np.median(both))
    sigma = 1.4826 * float(np.median(np.abs(both - med))) or 1e-12
    return med - 2 * sigma, max(float(both.max()), med + 5 * sigma)


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """asinh stretch of ``values`` into [0, 1] (NaN stays NaN).

    >>> _stretch(np.array([0.0, 1.0, np.nan]), 0.0, 1.0).round(2).tolist()[:2]
    [0.0, 1.0]
    """
    span = hi - lo if hi > lo else 1.0
    x = np.clip((values - lo) / span, 0, 1)
    soft = 0.02
    return np.arcsinh(x / soft) / math.asinh(1 / soft)

"""Sources in one image plane: the noise of its emission-free pixels, segmentation with deblending.

Pure: numpy arrays in, arrays and numbers out (no file is read here).

1. *noise* (:func:`emission_free_rms`): a first robust rms (MAD with a 4-sigma clip) over the
   noise region, then every island above 3 sigma whose peak reaches 5 sigma is masked with a
   margin of one beam FWHM and the rms is measured again on what is left; twice. A source that
   sits in the noise region therefore no longer raises the rms.
2. *segments* (:func:`find_sources`): islands of at least half a beam above ``3 sigma`` whose
   peak reaches ``5 sigma`` (photutils ``detect_sources``), split into components by
   ``deblend_sources`` (multi-threshold, watershed); the threshold follows a map of the local
   noise, so the loud edge of a primary-beam corrected image yields no false sources.
3. *regions* (:func:`expand_labels`): each segment is widened by half a beam FWHM into the
   background (a pixel goes to the nearest segment), so the region holds the beam's wings that
   lie below the threshold.

>>> y, x = np.mgrid[:80, :80]; rng = np.random.default_rng(2)
>>> img = rng.normal(0, 0.01, (80, 80)) + np.exp(-((x - 30) ** 2 + (y - 40) ** 2) / 18.0)
>>> rms = emission_free_rms(img, np.ones_like(img, bool), fwhm_pixels=5.0)
>>> round(rms, 2), int(find_sources(img, rms, fwhm_pixels=5.0).max())
(0.01, 1)
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage

MAD_TO_SIGMA = 1.4826
RMS_SAMPLE = 1_000_000


def robust_rms(values: np.ndarray, clip: float = 4.0, iterations: int = 4) -> float:
    """Noise sigma of ``values``: MAD x 1.4826 about the median, with iterated ``clip``-sigma clipping.

    >>> rng = np.random.default_rng(1); x = rng.normal(0, 2.0, 200000); x[:500] += 50
    >>> round(robust_rms(x), 1)
    2.0
    """
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan")
    for _ in range(iterations):
        med = np.median(v)
        sigma = MAD_TO_SIGMA * np.median(np.abs(v - med))
        if sigma == 0:
            return float(np.std(v))
        kept = v[np.abs(v - med) <= clip * sigma]
        if kept.size == v.size or kept.size < 10:
            break
        v = kept
    med = np.median(v)
    return float(MAD_TO_SIGMA * np.median(np.abs(v - med)))


def sample(plane: np.ndarray, mask: np.ndarray, limit: int = RMS_SAMPLE) -> np.ndarray:
    """At most ~``limit`` masked pixels of ``plane`` on a regular stride."""
    step = max(1, int(math.sqrt(plane.size / limit)))
    return plane[::step, ::step][mask[::step, ::step]]


def disk(radius: float) -> np.ndarray:
    """A boolean disk structuring element of ``radius`` pixels."""
    r = max(1, int(math.ceil(radius)))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= radius * radius + 1e-9


def islands(plane: np.ndarray, threshold: np.ndarray | float, peak_threshold: np.ndarray | float,
            valid: np.ndarray) -> np.ndarray:
    """Boolean mask of the connected regions above ``threshold`` whose maximum reaches ``peak_threshold``."""
    data = np.where(valid, plane, -np.inf)
    labels, n = ndimage.label(data > threshold)
    if n == 0:
        return np.zeros(plane.shape, bool)
    strong = np.where(valid & (data >= peak_threshold), labels, 0)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(strong)] = True
    keep[0] = False
    return keep[labels]


def source_mask(plane: np.ndarray, valid: np.ndarray, rms: float | np.ndarray, fwhm_pixels: float,
                max_rings: int = 12) -> np.ndarray:
    """Pixels of sources (3-sigma islands with a 5-sigma peak), one beam FWHM around them, and
    further rings of half a FWHM while a ring's mean is still 2 sigma above zero (the faint
    wings of an extended source)."""
    found = islands(plane, 3 * rms, 5 * rms, valid)
    if not found.any():
        return found
    mask = ndimage.binary_dilation(found, structure=disk(max(1.0, fwhm_pixels)))
    ring_element = disk(max(1.0, 0.5 * fwhm_pixels))
    beam_pixels = max(1.0, math.pi * fwhm_pixels**2 / (4 * math.log(2)))
    sigma = float(np.median(rms))
    for _ in range(max_rings):
        ring = ndimage.binary_dilation(mask, structure=ring_element) & ~mask & valid
        n = int(ring.sum())
        if n == 0 or float(np.mean(plane[ring])) <= 2 * sigma / math.sqrt(max(1.0, n / beam_pixels)):
            break
        mask |= ring
    return mask


def emission_free_rms(plane: np.ndarray, noise_region: np.ndarray, fwhm_pixels: float,
                      valid: np.ndarray | None = None, rounds: int = 2) -> float:
    """The rms of ``plane`` over ``noise_region`` with every source (and a beam around it) left out.

    >>> y, x = np.mgrid[:100, :100]; rng = np.random.default_rng(3)
    >>> wide = 0.05 * np.exp(-((x - 50) ** 2 + (y - 50) ** 2) / 400.0)  # faint, wide: clipping keeps it
    >>> img = rng.normal(0, 0.01, (100, 100)) + wide
    >>> round(emission_free_rms(img, np.ones((100, 100), bool), 4.0) / 0.01, 1)  # the plain MAD says 1.3
    1.0
    """
    valid = np.isfinite(plane) if valid is None else valid
    region = noise_region & valid
    # The first guess: the clipped rms of the noise region, or of the whole image when a source
    # fills the region (then the region's is the source's spread, and the lower one is the noise).
    guesses = [g for g in (robust_rms(sample(plane, region)), robust_rms(sample(plane, valid))) if math.isfinite(g)]
    rms = min(guesses) if guesses else float("nan")
    for _ in range(rounds):
        if not math.isfinite(rms) or rms <= 0:
            break
        sources = source_mask(plane, valid, rms, fwhm_pixels)
        free = region & ~sources
        if free.sum() < 50:  # a source fills the noise region: emission-free pixels anywhere
            free = valid & ~sources
        if free.sum() < 50:
            break
        rms = robust_rms(sample(plane, free))
    return rms


def local_rms(plane: np.ndarray, free: np.ndarray, box: int, floor: float) -> np.ndarray:
    """A map of the rms over boxes of ``box`` pixels (emission-free pixels only), never below ``floor``.

    Boxes with too few free pixels take the median of the others; the map is smoothed across
    box edges by a linear zoom.
    """
    ny, nx = plane.shape
    by, bx = max(1, math.ceil(ny / box)), max(1, math.ceil(nx / box))
    coarse = np.full((by, bx), np.nan)
    for i in range(by):
        for j in range(bx):
            cut = (slice(i * box, min(ny, (i + 1) * box)), slice(j * box, min(nx, (j + 1) * box)))
            values = plane[cut][free[cut]]
            if values.size >= max(30, box * box // 4):
                coarse[i, j] = robust_rms(values)
    if not np.isfinite(coarse).any():
        return np.full(plane.shape, floor)
    coarse = np.where(np.isfinite(coarse), coarse, np.nanmedian(coarse))
    if coarse.size > 1:
        full = ndimage.zoom(coarse, (ny / by, nx / bx), order=1, mode="nearest", grid_mode=True)[:ny, :nx]
        full = np.pad(full, ((0, ny - full.shape[0]), (0, nx - full.shape[1])), mode="edge")
    else:
        full = np.full(plane.shape, coarse[0, 0])
    return np.maximum(full, floor)


def find_sources(plane: np.ndarray, rms: float, fwhm_pixels: float, valid: np.ndarray | None = None,
                 noise_map: np.ndarray | None = None, deblend: bool = True) -> np.ndarray:
    """Segment map (0 background, 1..n components) of the sources of ``plane``.

    Islands above 3 x noise of at least half a beam whose peak reaches 5 x noise, deblended
    into components (photutils); ``noise_map`` (the local rms) defaults to ``rms`` everywhere.
    """
    from photutils.segmentation import deblend_sources, detect_sources

    valid = np.isfinite(plane) if valid is None else valid
    noise = noise_map if noise_map is not None else rms
    keep = islands(plane, 3 * noise, 5 * noise, valid)
    if not keep.any():
        return np.zeros(plane.shape, np.int32)
    data = np.where(valid, plane, 0.0)
    beam_pixels = math.pi * fwhm_pixels**2 / (4 * math.log(2))
    npixels = max(3, int(0.5 * beam_pixels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segm = detect_sources(np.where(keep, data, 0.0), 3 * noise if np.ndim(noise) == 0 else 3 * noise,
                              npixels=npixels)
        if segm is None:
            return np.zeros(plane.shape, np.int32)
        # max_label, not n_labels: photutils 3.0 renamed nlabels to n_labels (2.x has only nlabels)
        if deblend and segm.max_label:
            try:
                segm = deblend_sources(data, segm, npixels=npixels, nlevels=32, contrast=0.01,
                                       progress_bar=False)
            except (ImportError, ValueError):  # no scikit-image, or nothing to split: keep the islands
                pass
    return np.asarray(segm.data, dtype=np.int32)


def expand_labels(labels: np.ndarray, distance: float) -> np.ndarray:
    """Each label widened by ``distance`` pixels into the background, a pixel to its nearest label.

    >>> expand_labels(np.array([[1, 0, 0, 0, 2]]), 1.5).tolist()
    [[1, 1, 0, 2, 2]]
    """
    if not labels.any() or distance <= 0:
        return labels
    dist, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    grown = labels[iy, ix]
    return np.where(dist <= distance, grown, 0).astype(labels.dtype)

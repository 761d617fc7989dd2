"""The same sky in two images: sources found in each, matched by position, measured over one region.

Two images of one field (the pipeline's and the QA2 one) differ in grid, beam and noise, so a
flux "grown from the peak" in each measures different sky: a compact and an extended component
are two islands under a small beam and one under a large beam. Here both images are measured
over the same sky:

1. in each image, the sources (:func:`ari_console.qa2.sources.find_sources`: 3-sigma islands
   with a 5-sigma peak, deblended) on the noise of its emission-free pixels; each segment
   widened by half its own beam (the wings below the threshold);
2. each image's segments are mapped onto the other grid through both WCSs (astropy, any
   celestial frame); a segment of one image and a segment of the other that overlap by a
   quarter of the smaller are the same source; *groups* are the connected sets of such links
   (two components under a small beam and their one island under a large beam are one group);
3. the region of a group on each grid is the union of its segments of both images; the flux
   of a group in an image is the sum over that region / the beam area; the *field total* is the
   sum over every group both images cover that reaches 5 sigma in one of them (no pixel is
   counted twice);
4. per group: flux, peak, the flux-weighted centre in each image and their offset; a group seen
   in one image only is still measured in the other (over the same region) and listed as
   found in one image;
5. verdict per group: ``|F_pl - F_qa2| <= max(floor x |F_qa2|, k sqrt(e_pl^2 + e_qa2^2))`` with
   ``e = rms sqrt(region in beams)``; groups whose brighter side is below 5 sigma are not judged.

Cubes (:func:`compare_cubes`): the groups come from each cube's channel-maximum map on the noise
of one channel (a source's brightest channel reaches 5 sigma); the spectrum
of each group (flux per channel over its region, each channel's own beam) in both cubes is put on
one frequency axis (the coarser cube's channels; the finer cube averaged into them); line flux
(sum x channel width, in Jy km/s when the rest frequency is known), peak frequency and velocity,
channel-wise noise (``rms x sqrt(region in beams)`` per channel); the channels whose fluxes differ
by more than ``max(floor, k sigma)`` (k grows with the number of channels so that noise alone
flags none in a cube, Bonferroni; plus a quarter of the step to the neighbouring channel, as a
narrow line binned or regridded differently shifts by that much) are named in the verdict.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field as dc_field

import numpy as np
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS
from scipy import ndimage
from scipy.stats import norm

from ari_console.qa2.compare import Rule
from ari_console.qa2.measure import Image, interior_mask, noise_region
from ari_console.qa2.sources import emission_free_rms, expand_labels, find_sources, local_rms, robust_rms, sample

C_KMS = 299792.458


@dataclass(frozen=True)
class SkyRule(Rule):
    """Tolerances of the per-source and per-channel verdicts: the pair's (``flux_floor``,
    ``k_sigma``, ``detection_snr``) and those of matching and cubes (see docs/qa2.md)."""

    link_overlap: float = 0.25
    dynamic_range: float = 500.0  # artefacts below brightest peak / this are noise, not sources
    false_channels: float = 0.05  # noise alone flags this many channels in a cube, on average


@dataclass
class Side:
    """One image reduced to what the comparison needs: a plane, its noise, its sources."""

    image: Image
    plane: np.ndarray  # float64 [y, x], NaN where blank
    valid: np.ndarray
    rms: float
    labels: np.ndarray  # widened segments, 0 = background
    wcs: WCS
    noise_map: np.ndarray  # local rms, never below the dynamic-range floor
    channel: int = 0

    @property
    def beam_pixels(self) -> float:
        return self.image.beam_pixels(self.channel)

    @property
    def fwhm_pixels(self) -> float:
        return self.image.fwhm_pixels(self.channel)


@dataclass
class SourceRow:
    """One source (a group of matched segments) measured in both images over the same region."""

    id: int
    ra_deg: float
    dec_deg: float
    found_in: str  # both, pl, qa2
    pl_flux: float
    qa2_flux: float
    flux_ratio: float
    pl_peak: float
    qa2_peak: float
    peak_ratio: float
    offset_arcsec: float
    pl_components: int
    qa2_components: int
    region_beams: float
    snr: float
    flux_tolerance: float
    covered: bool
    verdict: str
    reasons: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SkyComparison:
    """Per-source rows, the field total over the union of the sources, and what could not be judged."""

    sources: list[SourceRow]
    pl_total: float
    qa2_total: float
    total_ratio: float
    total_tolerance: float
    pl_rms: float
    qa2_rms: float
    notes: list[str] = dc_field(default_factory=list)
    channels: dict | None = None  # cubes: the spectral comparison

    @property
    def discrepant_sources(self) -> list[SourceRow]:
        return [s for s in self.sources if s.verdict == "discrepant"]

    @property
    def unmatched(self) -> list[SourceRow]:
        return [s for s in self.sources if s.found_in != "both"]


def celestial_wcs(image: Image) -> WCS:
    """The image's celestial WCS (2 axes), warnings of odd headers silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        return WCS(image.header).celestial


def _ratio(a: float, b: float) -> float:
    try:
        value = a / b
    except ZeroDivisionError:
        return float("nan")
    return value if math.isfinite(value) else float("nan")


def prepare(image: Image, plane: np.ndarray, channel: int = 0, rms: float | None = None,
            rule: SkyRule = SkyRule(), noise_plane: np.ndarray | None = None) -> Side:
    """Noise and sources of one plane of ``image`` (see the module docstring).

    The detection noise is a local rms map (boxes of 3 beams or 16 pixels) of ``noise_plane``
    (default: ``plane``; for a cube's channel-maximum map, one channel), so the loud edge of a
    primary-beam corrected image gives no false sources, and never below the brightest peak /
    ``rule.dynamic_range`` (deconvolution artefacts around a bright source are not sources).
    """
    from ari_console.qa2.sources import source_mask

    plane = np.asarray(plane, dtype=np.float64)
    valid = np.isfinite(plane)
    fwhm = max(1.0, image.fwhm_pixels(channel))
    inner = interior_mask(valid, int(max(2 * fwhm, 0.05 * min(plane.shape))))
    if rms is None:
        rms = emission_free_rms(plane, noise_region(valid, inner), fwhm, valid)
    usable = math.isfinite(rms) and rms > 0
    brightest = float(np.nanmax(plane)) if valid.any() else 0.0
    floor = max(rms if usable else 0.0, brightest / rule.dynamic_range)
    if usable:
        noisy = plane if noise_plane is None else np.asarray(noise_plane, dtype=np.float64)
        free = valid & np.isfinite(noisy) & ~source_mask(noisy, valid & np.isfinite(noisy), floor, fwhm)
        noise_map = np.maximum(local_rms(noisy, free, box=int(max(16, 3 * fwhm)), floor=rms), floor)
        labels = find_sources(plane, rms, fwhm, valid, noise_map)
    else:
        noise_map = np.full(plane.shape, np.nan)
        labels = np.zeros(plane.shape, np.int32)
    return Side(image=image, plane=plane, valid=valid, rms=float(rms), labels=expand_labels(labels, 0.5 * fwhm),
                wcs=celestial_wcs(image), noise_map=noise_map, channel=channel)


def map_onto(src: Side, dst: Side) -> np.ndarray:
    """``src``'s labels seen on ``dst``'s grid: each pixel of ``dst`` takes the label of the
    ``src`` pixel at the same sky position (0 outside ``src``); -1 where ``src`` is blank."""
    ny, nx = dst.plane.shape
    y, x = np.mgrid[:ny, :nx]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sky = dst.wcs.pixel_to_world(x.ravel(), y.ravel())
        sx, sy = src.wcs.world_to_pixel(sky)
    sx = np.rint(np.asarray(sx)).reshape(ny, nx)
    sy = np.rint(np.asarray(sy)).reshape(ny, nx)
    inside = np.isfinite(sx) & np.isfinite(sy) & (sx >= 0) & (sy >= 0) & (sx < src.plane.shape[1]) & (
        sy < src.plane.shape[0])
    out = np.full((ny, nx), -1, np.int32)
    ix, iy = sx[inside].astype(int), sy[inside].astype(int)
    out[inside] = np.where(src.valid[iy, ix], src.labels[iy, ix], -1)
    return out


def _groups(pl: Side, qa2: Side, qa2_on_pl: np.ndarray, pl_on_qa2: np.ndarray, rule: SkyRule) -> list[tuple[set, set]]:
    """Connected sets of linked segments: [(pipeline labels, QA2 labels)]."""
    n_pl, n_qa2 = int(pl.labels.max()), int(qa2.labels.max())
    parent = {("p", i): ("p", i) for i in range(1, n_pl + 1)} | {("q", j): ("q", j) for j in range(1, n_qa2 + 1)}

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def link(a, b):
        parent[find(a)] = find(b)

    for own, other_on_own, tag_own, tag_other in ((pl, qa2_on_pl, "p", "q"), (qa2, pl_on_qa2, "q", "p")):
        both = (own.labels > 0) & (other_on_own > 0)
        if not both.any():
            continue
        pairs, counts = np.unique(np.stack([own.labels[both], other_on_own[both]]), axis=1, return_counts=True)
        own_area = np.bincount(own.labels.ravel(), minlength=own.labels.max() + 1)
        other_area = np.bincount(np.clip(other_on_own, 0, None).ravel(),
                                 minlength=max(int(other_on_own.max()), 0) + 1)
        for (a, b), n in zip(pairs.T, counts):
            if n >= rule.link_overlap * min(own_area[a], other_area[b]):
                link((tag_own, int(a)), (tag_other, int(b)))
    groups: dict = {}
    for key in parent:
        groups.setdefault(find(key), (set(), set()))[0 if key[0] == "p" else 1].add(key[1])
    return sorted(groups.values(), key=lambda g: (min(g[0]) if g[0] else 10**9, min(g[1]) if g[1] else 10**9))


def _group_image(own: Side, other_on_own: np.ndarray, groups: list[tuple[set, set]], own_is_pl: bool) -> np.ndarray:
    """Group index (1-based, 0 none) of every pixel of ``own``: its own segments first, then the other's."""
    own_lut = np.zeros(int(own.labels.max()) + 1, np.int32)
    n_other = max([max(g[1] if own_is_pl else g[0], default=0) for g in groups] + [int(other_on_own.max()), 0])
    other_lut = np.zeros(n_other + 1, np.int32)
    for g, (pls, qas) in enumerate(groups, start=1):
        mine, theirs = (pls, qas) if own_is_pl else (qas, pls)
        for label in mine:
            own_lut[label] = g
        for label in theirs:
            other_lut[label] = g
    out = other_lut[np.clip(other_on_own, 0, None)]
    out = np.where(other_on_own > 0, out, 0)
    return np.where(own.labels > 0, own_lut[own.labels], out).astype(np.int32)


def _per_group(side: Side, groups_img: np.ndarray, n: int) -> dict:
    """Per group on one grid: flux (sum / beam area), peak, pixel count, blank count, centre."""
    index = np.arange(1, n + 1)
    data = np.where(side.valid, side.plane, 0.0)
    flux = ndimage.sum_labels(data, groups_img, index) / side.beam_pixels
    peak = ndimage.maximum(np.where(side.valid, side.plane, -np.inf), groups_img, index)
    pixels = ndimage.sum_labels(np.ones_like(data), groups_img, index)
    blank = ndimage.sum_labels((~side.valid).astype(float), groups_img, index)
    positive = np.clip(data, 0, None)
    weight = ndimage.sum_labels(positive, groups_img, index)
    y, x = np.indices(data.shape)
    cy = ndimage.sum_labels(positive * y, groups_img, index) / np.where(weight > 0, weight, np.nan)
    cx = ndimage.sum_labels(positive * x, groups_img, index) / np.where(weight > 0, weight, np.nan)
    noise_sum = ndimage.sum_labels(np.nan_to_num(side.noise_map, nan=side.rms), groups_img, index)
    noise = np.where(pixels > 0, noise_sum / np.maximum(pixels, 1), side.rms)
    return dict(flux=np.atleast_1d(flux), peak=np.atleast_1d(peak), pixels=np.atleast_1d(pixels),
                blank=np.atleast_1d(blank), cx=np.atleast_1d(cx), cy=np.atleast_1d(cy), noise=np.atleast_1d(noise))


def _centre_and_offset(pl: Side, qa2: Side, a: dict, b: dict, k: int):
    """Group ``k``'s flux-weighted centre (ICRS, from the pipeline side when it has one) and the
    offset in arcsec between the two images' centres (NaN when one side has no positive flux)."""
    have_a, have_b = math.isfinite(a["cx"][k]), math.isfinite(b["cx"][k])
    where_a = _world(pl, a["cx"][k], a["cy"][k]) if have_a else None
    where_b = _world(qa2, b["cx"][k], b["cy"][k]) if have_b else None
    offset = float(where_a.separation(where_b).arcsec) if have_a and have_b else float("nan")
    centre = where_a if have_a else where_b
    if centre is None:
        return _world(pl, 0.0, 0.0).icrs, offset
    return centre.icrs, offset


def _world(side: Side, x: float, y: float):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return side.wcs.pixel_to_world(x, y)


def match_regions(pl: Side, qa2: Side, rule: SkyRule = SkyRule()):
    """Groups of both images and the group index of every pixel on each grid."""
    qa2_on_pl, pl_on_qa2 = map_onto(qa2, pl), map_onto(pl, qa2)
    groups = _groups(pl, qa2, qa2_on_pl, pl_on_qa2, rule)
    return (groups, _group_image(pl, qa2_on_pl, groups, True), _group_image(qa2, pl_on_qa2, groups, False),
            qa2_on_pl, pl_on_qa2)


def judge(pl_flux: float, qa2_flux: float, e_pl: float, e_qa2: float, snr: float, rule: SkyRule) -> tuple[str, float, str]:
    """(verdict, tolerance on the ratio, reason) of one flux pair with its errors."""
    allowed = max(rule.flux_floor * abs(qa2_flux), rule.k_sigma * math.hypot(e_pl, e_qa2))
    tolerance = _ratio(allowed, abs(qa2_flux))
    if not math.isfinite(snr) or snr < rule.detection_snr:
        return "consistent", tolerance, f"below {rule.detection_snr:g} sigma: not judged"
    if abs(pl_flux - qa2_flux) > allowed:
        return "discrepant", tolerance, (f"flux {pl_flux:.4g} Jy vs {qa2_flux:.4g} Jy differs by more than "
                                         f"{allowed:.3g} Jy")
    return "consistent", tolerance, ""


def compare_planes(pl: Side, qa2: Side, rule: SkyRule = SkyRule()) -> SkyComparison:
    """Per-source rows and the field total of two prepared planes (see the module docstring)."""
    groups, g_pl, g_qa2, qa2_on_pl, pl_on_qa2 = match_regions(pl, qa2, rule)
    n = len(groups)
    rows: list[SourceRow] = []
    notes: list[str] = []
    total = {"pl": 0.0, "qa2": 0.0, "e_pl": 0.0, "e_qa2": 0.0}
    if n:
        a, b = _per_group(pl, g_pl, n), _per_group(qa2, g_qa2, n)
        # The other image's footprint: a group partly outside or on blank pixels is not comparable.
        covers = _coverage(pl, qa2, g_pl, g_qa2, qa2_on_pl, pl_on_qa2, n)
        for k, (pls, qas) in enumerate(groups):
            covered = bool(covers[k])
            beams = max(a["pixels"][k] / pl.beam_pixels, b["pixels"][k] / qa2.beam_pixels, 1.0)
            e_pl = a["noise"][k] * math.sqrt(max(a["pixels"][k] / pl.beam_pixels, 1.0))
            e_qa2 = b["noise"][k] * math.sqrt(max(b["pixels"][k] / qa2.beam_pixels, 1.0))
            snr = max(_ratio(a["peak"][k], a["noise"][k]), _ratio(b["peak"][k], b["noise"][k]))
            found = "both" if pls and qas else ("pl" if pls else "qa2")
            if covered:
                verdict, tolerance, reason = judge(a["flux"][k], b["flux"][k], e_pl, e_qa2, snr, rule)
            else:
                verdict, tolerance, reason = "consistent", float("nan"), "not covered by both images: not judged"
            if covered and snr >= rule.detection_snr:  # the field total: sources, not noise
                total["pl"] += a["flux"][k]
                total["qa2"] += b["flux"][k]
                total["e_pl"] += e_pl**2
                total["e_qa2"] += e_qa2**2
            icrs, offset = _centre_and_offset(pl, qa2, a, b, k)
            rows.append(SourceRow(
                id=k + 1, ra_deg=float(icrs.ra.deg), dec_deg=float(icrs.dec.deg), found_in=found,
                pl_flux=float(a["flux"][k]), qa2_flux=float(b["flux"][k]),
                flux_ratio=_ratio(float(a["flux"][k]), float(b["flux"][k])),
                pl_peak=float(a["peak"][k]), qa2_peak=float(b["peak"][k]),
                peak_ratio=_ratio(float(a["peak"][k]), float(b["peak"][k])), offset_arcsec=offset,
                pl_components=len(pls), qa2_components=len(qas), region_beams=float(beams), snr=float(snr),
                flux_tolerance=float(tolerance), covered=covered, verdict=verdict, reasons=reason))
        uncovered = sum(not r.covered for r in rows)
        if uncovered:
            notes.append(f"{uncovered} source(s) lie partly outside one image or on its blank pixels: listed, "
                         "not in the field total")
    total_tol = _ratio(max(rule.flux_floor * abs(total["qa2"]),
                           rule.k_sigma * math.sqrt(total["e_pl"] + total["e_qa2"])), abs(total["qa2"]))
    return SkyComparison(sources=rows, pl_total=total["pl"], qa2_total=total["qa2"],
                         total_ratio=_ratio(total["pl"], total["qa2"]), total_tolerance=total_tol,
                         pl_rms=pl.rms, qa2_rms=qa2.rms, notes=notes)


def compare_images(pl: Image, qa2: Image, rule: SkyRule = SkyRule()) -> SkyComparison:
    """Compare two images of one field over the same sky; cubes go through :func:`compare_cubes`."""
    if pl.layout.nchan > 1 or qa2.layout.nchan > 1:
        return compare_cubes(pl, qa2, rule)
    return compare_planes(prepare(pl, pl.plane(0), rule=rule), prepare(qa2, qa2.plane(0), rule=rule), rule)


# -- cubes ---------------------------------------------------------------------------------

def channel_frequencies(image: Image) -> np.ndarray | None:
    """Frequency (Hz) of every channel from the spectral axis (FREQ, or a velocity axis with RESTFRQ)."""
    header, n = image.header, image.layout.nchan
    for i in range(1, int(header.get("NAXIS", 0)) + 1):
        ctype = str(header.get(f"CTYPE{i}", "")).upper()
        if int(header.get(f"NAXIS{i}", 1)) != n:
            continue
        world = float(header.get(f"CRVAL{i}", 0.0)) + (np.arange(n) + 1 - float(header.get(f"CRPIX{i}", 1.0))) * float(
            header.get(f"CDELT{i}", 1.0))
        if ctype.startswith("FREQ"):
            return world
        rest = _rest_hz(image)
        if ctype.startswith(("VRAD", "VELO", "FELO", "VOPT")) and rest:
            unit = str(header.get(f"CUNIT{i}", "m/s")).strip().lower()
            kms = world / 1000.0 if unit in ("m/s", "") else world
            return rest * (1 - kms / C_KMS)
    return None


def _rest_hz(image: Image) -> float | None:
    for key in ("RESTFRQ", "RESTFREQ"):
        value = image.header.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


def _spectra(side: Side, groups_img: np.ndarray, n: int, free: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel: flux of every group over its region [nchan, n], its noise [nchan, n], channel rms."""
    image = side.image
    nchan = image.layout.nchan
    flux = np.zeros((nchan, n))
    noise = np.zeros((nchan, n))
    rms = np.zeros(nchan)
    index = np.arange(1, n + 1)
    pixels = np.atleast_1d(ndimage.sum_labels(np.ones(groups_img.shape), groups_img, index)) if n else np.zeros(0)
    for start, block in image.blocks():
        for k, plane in enumerate(block):
            c = start + k
            valid = np.isfinite(plane)
            beam = image.beam_pixels(c)
            rms[c] = robust_rms(sample(plane, free & valid))
            if n:
                flux[c] = np.atleast_1d(ndimage.sum_labels(np.where(valid, plane, 0.0), groups_img, index)) / beam
                noise[c] = rms[c] * np.sqrt(np.maximum(pixels / beam, 1.0))
    return flux, noise, rms


def _onto(freq_src: np.ndarray, values: np.ndarray, freq_dst: np.ndarray, width_dst: float) -> np.ndarray:
    """Average ``values`` [nchan_src, ...] into channels of width ``width_dst`` centred on ``freq_dst``."""
    out = np.full((len(freq_dst),) + values.shape[1:], np.nan)
    for i, f in enumerate(freq_dst):
        inside = np.abs(freq_src - f) <= width_dst / 2 + 1e-6 * width_dst
        if inside.any():
            out[i] = values[inside].mean(axis=0)
        elif freq_src.min() <= f <= freq_src.max():
            out[i] = np.array([np.interp(f, freq_src[np.argsort(freq_src)], col[np.argsort(freq_src)])
                               for col in values.reshape(len(freq_src), -1).T]).reshape(values.shape[1:])
    return out


def _slope(spectrum: np.ndarray) -> np.ndarray:
    """Per channel, the larger step to a neighbouring channel: a narrow line binned or regridded
    differently moves by up to a quarter of that between two cubes of the same data.

    >>> _slope(np.array([0.0, 1.0, 0.5])).tolist()
    [1.0, 1.0, 0.5]
    """
    if spectrum.size < 2:
        return np.zeros_like(spectrum)
    step = np.abs(np.diff(np.nan_to_num(spectrum)))
    return np.maximum(np.r_[step, 0.0], np.r_[0.0, step])


def _ranges(channels: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    out, run = [], []
    for c in channels:
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def _noise_pixels(side: Side, groups_img: np.ndarray) -> np.ndarray:
    """Where a cube's channel noise is measured: the noise region (inside the primary beam) without sources."""
    inner = interior_mask(side.valid, int(max(2 * side.fwhm_pixels, 0.05 * min(side.plane.shape))))
    free = noise_region(side.valid, inner) & (side.labels == 0) & (groups_img == 0)
    return free if free.sum() >= 50 else side.valid & (side.labels == 0) & (groups_img == 0)


def _on_coarser(f_coarse: np.ndarray, w_coarse: float, coarse: tuple, f_fine: np.ndarray, w_fine: float,
                fine: tuple) -> tuple[np.ndarray, tuple, tuple]:
    """Both cubes' (flux, noise, rms) on the coarser cube's channels within the overlap: which
    coarse channels are kept, the coarse values there, the fine values averaged into them."""
    keep = (f_coarse >= f_fine.min() - w_fine / 2) & (f_coarse <= f_fine.max() + w_fine / 2)
    at = f_coarse[keep]
    thinner = math.sqrt(max(1.0, w_coarse / w_fine))  # noise of a mean of that many channels
    flux, noise, rms = fine
    return keep, tuple(v[keep] for v in coarse), (
        _onto(f_fine, flux, at, w_coarse), _onto(f_fine, noise, at, w_coarse) / thinner,
        _onto(f_fine, rms[:, None], at, w_coarse)[:, 0])


def snr_max_map(image: Image) -> np.ndarray:
    """The maximum over channels of every pixel in units of its channel's noise (the robust,
    clipped rms inside the primary beam): channels of unequal noise (a cube's edge channels)
    weigh alike, and noise reaches 5 once in ~3 million pixel-channels."""
    rms = np.full(image.layout.nchan, np.nan)
    region = None
    for start, block in image.blocks():
        for k, plane in enumerate(block):
            valid = np.isfinite(plane)
            if region is None or region.shape != plane.shape:
                fwhm = max(1.0, image.fwhm_pixels(start + k))
                region = noise_region(valid, interior_mask(valid, int(max(2 * fwhm, 0.05 * min(plane.shape)))))
            rms[start + k] = robust_rms(sample(plane, region & valid))
    best = None
    for start, block in image.blocks():
        scale = rms[start:start + len(block)]
        usable = np.isfinite(scale) & (scale > 0)
        if not usable.any():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            m = np.nanmax(block[usable] / scale[usable][:, None, None], axis=0)
        best = m if best is None else np.fmax(best, m)
    if best is None:
        return np.full(image.plane(0).shape, np.nan)
    return best.astype(np.float64)


def _detection_side(image: Image, rule: SkyRule) -> Side:
    """A cube's sources, found on its channel-maximum signal-to-noise map (noise 1 by construction)."""
    # The widest beam of the cube: the region must hold every channel's wings.
    widest = max(range(image.layout.nchan), key=lambda c: image.fwhm_pixels(c))
    return prepare(image, snr_max_map(image), channel=widest, rms=1.0, rule=rule)


def _coverage(pl: Side, qa2: Side, g_pl: np.ndarray, g_qa2: np.ndarray, qa2_on_pl: np.ndarray,
              pl_on_qa2: np.ndarray, n: int) -> np.ndarray:
    """Per group: True when both images cover its region (at most 2% of it blank or outside the other)."""
    index = np.arange(1, n + 1)
    out = []
    for own, other_on_own, groups in ((pl, qa2_on_pl, g_pl), (qa2, pl_on_qa2, g_qa2)):
        pixels = np.atleast_1d(ndimage.sum_labels(np.ones(groups.shape), groups, index))
        bad = np.atleast_1d(ndimage.sum_labels(((other_on_own < 0) | ~own.valid).astype(float), groups, index))
        out.append(bad <= 0.02 * pixels)
    return out[0] & out[1]


def compare_cubes(pl: Image, qa2: Image, rule: SkyRule = SkyRule()) -> SkyComparison:
    """Spectra of every matched source in both cubes on one frequency axis (see the module docstring)."""
    side_pl, side_qa2 = _detection_side(pl, rule), _detection_side(qa2, rule)
    groups, g_pl, g_qa2, qa2_on_pl, pl_on_qa2 = match_regions(side_pl, side_qa2, rule)
    n = len(groups)
    covers = _coverage(side_pl, side_qa2, g_pl, g_qa2, qa2_on_pl, pl_on_qa2, n) if n else np.zeros(0, bool)
    free_pl, free_qa2 = _noise_pixels(side_pl, g_pl), _noise_pixels(side_qa2, g_qa2)
    pos_pl, pos_qa2 = (_per_group(side_pl, g_pl, n), _per_group(side_qa2, g_qa2, n)) if n else ({}, {})
    flux_pl, noise_pl, rms_pl = _spectra(side_pl, g_pl, n, free_pl)
    flux_qa2, noise_qa2, rms_qa2 = _spectra(side_qa2, g_qa2, n, free_qa2)
    f_pl, f_qa2 = channel_frequencies(pl), channel_frequencies(qa2)
    notes: list[str] = []
    if f_pl is None or f_qa2 is None:
        if pl.layout.nchan != qa2.layout.nchan:
            return _no_axis(side_pl, side_qa2, "no frequency axis and different channel counts: spectra not compared")
        f_pl = f_qa2 = np.arange(pl.layout.nchan, dtype=float)
        notes.append("no frequency axis: channels compared by index")
    w_pl = abs(float(np.median(np.diff(f_pl)))) if len(f_pl) > 1 else 1.0
    w_qa2 = abs(float(np.median(np.diff(f_qa2)))) if len(f_qa2) > 1 else 1.0
    # The coarser cube's channels are the common axis, within the overlap of both.
    spec_pl, spec_qa2 = (flux_pl, noise_pl, rms_pl), (flux_qa2, noise_qa2, rms_qa2)
    if w_pl >= w_qa2:
        ref, width = f_pl, w_pl
        keep, (s_pl, n_pl, r_pl), (s_qa2, n_qa2, r_qa2) = _on_coarser(f_pl, w_pl, spec_pl, f_qa2, w_qa2, spec_qa2)
    else:
        ref, width = f_qa2, w_qa2
        keep, (s_qa2, n_qa2, r_qa2), (s_pl, n_pl, r_pl) = _on_coarser(f_qa2, w_qa2, spec_qa2, f_pl, w_pl, spec_pl)
    axis = ref[keep]
    nch = len(axis)
    if nch == 0:
        return _no_axis(side_pl, side_qa2, "the cubes share no frequencies: spectra not compared")
    rest = _rest_hz(pl) or _rest_hz(qa2)
    dv = C_KMS * width / rest if rest else width / 1e6
    unit = "Jy km/s" if rest else "Jy MHz"
    k = max(rule.k_sigma, float(norm.isf(rule.false_channels / (2 * max(1, nch * max(n, 1))))))
    rows: list[SourceRow] = []
    differ_all: set[int] = set()
    spectra: list[dict] = []
    tot = {"pl": 0.0, "qa2": 0.0, "e_pl": 0.0, "e_qa2": 0.0}
    for g, (pls, qas) in enumerate(groups):
        a, b = s_pl[:, g], s_qa2[:, g]
        na, nb = n_pl[:, g], n_qa2[:, g]
        allowed = np.maximum(np.maximum(rule.flux_floor * np.abs(b), k * np.hypot(na, nb)), _slope(b) / 4)
        signal = np.maximum(np.abs(a) / np.where(na > 0, na, np.inf), np.abs(b) / np.where(nb > 0, nb, np.inf))
        covered = bool(covers[g])
        differ = [int(c) for c in np.nonzero((np.abs(a - b) > allowed) & np.isfinite(a) & np.isfinite(b))[0]
                  ] if covered else []
        differ_all.update(differ)
        line_pl, line_qa2 = float(np.nansum(a) * dv), float(np.nansum(b) * dv)
        e_pl = float(np.sqrt(np.nansum(na**2)) * dv)
        e_qa2 = float(np.sqrt(np.nansum(nb**2)) * dv)
        snr = float(np.nanmax(signal)) if signal.size else float("nan")
        verdict = "discrepant" if differ and snr >= rule.detection_snr else "consistent"
        if not covered:
            tol, why = float("nan"), "not covered by both images: not judged"
        elif verdict == "consistent":
            line_verdict, tol, why = judge(line_pl, line_qa2, e_pl, e_qa2, snr, rule)
            verdict = line_verdict
        else:
            tol = _ratio(max(rule.flux_floor * abs(line_qa2), rule.k_sigma * math.hypot(e_pl, e_qa2)), abs(line_qa2))
            why = f"channels {_ranges(differ)} differ"
        if covered and snr >= rule.detection_snr:  # the field total: sources, not noise
            tot["pl"] += line_pl
            tot["qa2"] += line_qa2
            tot["e_pl"] += e_pl**2
            tot["e_qa2"] += e_qa2**2
        peak_pl = int(np.nanargmax(a)) if np.isfinite(a).any() else 0
        peak_qa2 = int(np.nanargmax(b)) if np.isfinite(b).any() else 0
        spectra.append({
            "id": g + 1, "frequency_hz": axis.tolist(), "pl": a.tolist(), "qa2": b.tolist(),
            "pl_noise": na.tolist(), "qa2_noise": nb.tolist(), "differing_channels": differ,
            "pl_line_flux": line_pl, "qa2_line_flux": line_qa2, "line_flux_unit": unit,
            "pl_peak_frequency_hz": float(axis[peak_pl]), "qa2_peak_frequency_hz": float(axis[peak_qa2]),
            "pl_peak_velocity_kms": C_KMS * (1 - axis[peak_pl] / rest) if rest else None,
            "qa2_peak_velocity_kms": C_KMS * (1 - axis[peak_qa2] / rest) if rest else None,
        })
        icrs, offset = _centre_and_offset(side_pl, side_qa2, pos_pl, pos_qa2, g)
        rows.append(SourceRow(
            id=g + 1, ra_deg=float(icrs.ra.deg), dec_deg=float(icrs.dec.deg),
            found_in="both" if pls and qas else ("pl" if pls else "qa2"), pl_flux=line_pl, qa2_flux=line_qa2,
            flux_ratio=_ratio(line_pl, line_qa2), pl_peak=float(np.nanmax(a)), qa2_peak=float(np.nanmax(b)),
            peak_ratio=_ratio(float(np.nanmax(a)), float(np.nanmax(b))),
            offset_arcsec=offset,
            pl_components=len(pls), qa2_components=len(qas), region_beams=float("nan"), snr=snr,
            flux_tolerance=float(tol), covered=covered, verdict=verdict, reasons=why))
    total_tol = _ratio(max(rule.flux_floor * abs(tot["qa2"]), rule.k_sigma * math.sqrt(tot["e_pl"] + tot["e_qa2"])),
                       abs(tot["qa2"]))
    channels = {
        "frequency_hz": axis.tolist(), "pl_rms": r_pl.tolist(), "qa2_rms": r_qa2.tolist(),
        "differing_channels": sorted(differ_all), "k_sigma": k, "line_flux_unit": unit, "spectra": spectra,
        "explanation": (f"channels {_ranges(sorted(differ_all))} of {nch} differ" if differ_all
                        else f"all {nch} common channels agree"),
    }
    return SkyComparison(sources=rows, pl_total=tot["pl"], qa2_total=tot["qa2"],
                         total_ratio=_ratio(tot["pl"], tot["qa2"]), total_tolerance=total_tol,
                         pl_rms=float(np.nanmedian(rms_pl)), qa2_rms=float(np.nanmedian(rms_qa2)),
                         notes=notes, channels=channels)


def _no_axis(pl: Side, qa2: Side, why: str) -> SkyComparison:
    nan = float("nan")
    return SkyComparison(sources=[], pl_total=nan, qa2_total=nan, total_ratio=nan, total_tolerance=nan,
                         pl_rms=pl.rms, qa2_rms=qa2.rms, notes=[why])

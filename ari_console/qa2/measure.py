"""Measure an image: peak, robust rms, integrated flux, beam and SNR (numpy + astropy, memory-mapped).

Works on 2-D images and 3/4-D cubes (degenerate Stokes/frequency axes are
dropped; of a real Stokes axis, plane I is used). The data are read through
``numpy.memmap`` one block of channels at a time and each block is unmapped
after use, so memory stays flat whatever the cube size.

The method, in the order it runs (per channel, then on the peak channel):

1. *valid region*: finite pixels. The primary-beam edge is excluded: pixels
   closer than ``max(2 beams, 5 % of the image)`` to a blanked (NaN) pixel.
   With no blanked pixel, the whole image is the valid region.
2. *peak*: the maximum over the valid region (edge band excluded, where a
   primary-beam corrected image has its loudest noise) of every channel; its
   pixel ``[x, y]`` is 0-based, ``peak_channel`` the channel (0 for 2-D images).
3. *rms*: median absolute deviation x 1.4826 about the median, iterated with a
   4-sigma clip (which removes the source), over the central disk of the valid
   region (half its equivalent radius: where a primary-beam corrected image has
   nearly its pointing-centre noise), on a regular subsample of at most ~1 M
   pixels. The rms reported is the one of the peak channel; cubes
   also report ``rms_median`` over channels.
4. *flux* (Jy) on the peak channel: the region connected to the peak above
   ``max(3 rms, 0.001 peak)``, dilated by half a beam FWHM, then grown by
   quarter-beam rings while a ring still adds more than 2 sigma of flux (at
   most one more FWHM). Flux = sum / beam area in pixels, beam area =
   pi bmaj bmin / (4 ln 2). This is exact for a point source (the dilation
   reaches the Gaussian's wings) and for extended sources (the region follows
   the source), and independent of pixel size. ``flux_error`` is
   ``rms * sqrt(region area in beams)``.
5. *beam*: the peak channel's beam from the ``BEAMS`` table (per-plane beams,
   as CASA's exportfits writes them), else ``BMAJ``/``BMIN``/``BPA`` (degrees),
   else an AIPS ``HISTORY ... BMAJ=`` card. Reported in arcsec and degrees.
6. *snr* = peak / rms.

Units: ``Jy/beam`` as above; ``Jy/pixel`` (model images) sums pixels without
a beam; ``K`` is converted to Jy with Rayleigh-Jeans at the peak channel's
frequency. Each case other than Jy/beam adds a note the CLI prints.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import asdict, dataclass, field as dc_field
from pathlib import Path
from typing import Iterator

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from scipy import ndimage

from ari_console.qa2.associate import ImageInfo, describe
from ari_console.qa2.sources import disk as _disk, emission_free_rms, robust_rms, sample as _sample, source_mask

FOUR_LN2 = 4 * math.log(2)
BLOCK_BYTES = 64 * 2**20
_BITPIX = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


class MeasureError(Exception):
    """A file that cannot be measured; the message says what is wrong and the fix."""


@dataclass
class Beam:
    """A restoring beam: axes in arcsec, position angle in degrees."""

    major: float
    minor: float
    pa: float

    def area_pixels(self, pixel_arcsec: float) -> float:
        """Beam area in pixels of side ``pixel_arcsec``: pi bmaj bmin / (4 ln 2) / pixel area.

        >>> round(Beam(1.0, 1.0, 0.0).area_pixels(0.1), 2)
        113.31
        """
        return math.pi * self.major * self.minor / FOUR_LN2 / pixel_arcsec**2


@dataclass
class Measurement:
    """The measured values of one image (flat, so it stores as one row)."""

    file: str
    field: str
    spw: str
    specmode: str
    bunit: str
    peak: float
    peak_pixel: list[int]
    rms: float
    flux: float
    beam_major: float
    beam_minor: float
    beam_pa: float
    snr: float
    kind: str = ""
    peak_channel: int = 0
    nchan: int = 1
    rms_median: float = float("nan")
    flux_error: float = float("nan")
    region_beams: float = float("nan")
    pixel_arcsec: float = float("nan")
    frequency_ghz: float | None = None
    notes: list[str] = dc_field(default_factory=list)

    def as_dict(self) -> dict:
        """Plain dict with the contract keys first."""
        return asdict(self)

    def as_row(self) -> dict:
        """A flat row for a table: ``peak_pixel`` as ``peak_x``/``peak_y``, notes joined by ``; ``."""
        row = self.as_dict()
        row["peak_x"], row["peak_y"] = row.pop("peak_pixel")
        row["notes"] = "; ".join(row["notes"])
        return row


@dataclass
class _Layout:
    """Where the image lives in the file and how its axes map to (channel, y, x)."""

    path: str
    offset: int
    dtype: str
    shape: tuple[int, ...]  # numpy order of the whole data array
    x_axis: int  # numpy axis index of the longitude axis
    y_axis: int
    chan_axis: int | None
    fixed: dict[int, int]  # other numpy axes -> index used (Stokes I, degenerate)
    bscale: float
    bzero: float
    blank: int | None
    sentinels: tuple[float, ...] = ()  # values written for blank pixels (float BLANK card, -999...)

    @property
    def nchan(self) -> int:
        return self.shape[self.chan_axis] if self.chan_axis is not None else 1

    @property
    def plane_bytes(self) -> int:
        return self.shape[self.x_axis] * self.shape[self.y_axis] * np.dtype(self.dtype).itemsize


def _fail(path: str, what: str, fix: str) -> MeasureError:
    return MeasureError(f"{path}: {what} — {fix}")


def _image_hdu(hdul: fits.HDUList, path: str) -> int:
    """Index of the first HDU holding an image of at least 2 dimensions."""
    for i, hdu in enumerate(hdul):
        header = hdu.header
        naxis = int(header.get("NAXIS", 0))
        if (isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)) and naxis >= 2 and not header.get("GROUPS")
                and all(int(header.get(f"NAXIS{k}", 0)) > 0 for k in range(1, naxis + 1))):
            return i
    raise _fail(path, "no image in this FITS file (no HDU with 2 or more non-empty axes; uv data?)",
                "give an image FITS")


def _layout(path: str, hdul: fits.HDUList, index: int) -> _Layout:
    """The data layout of HDU ``index``; raises for truncated files and missing sky axes."""
    header = hdul[index].header
    naxis = int(header["NAXIS"])
    fits_shape = [int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
    numpy_axis = {i: naxis - i for i in range(1, naxis + 1)}
    ctypes = {i: str(header.get(f"CTYPE{i}", "")).upper() for i in range(1, naxis + 1)}
    lon, lat = _sky_axes(header)
    spectral = [i for i, c in ctypes.items() if i not in (lon, lat) and not c.startswith("STOKES")
                and fits_shape[i - 1] > 1]
    chan = spectral[0] if spectral else None
    fixed = {}
    for i in range(1, naxis + 1):
        if i in (lon, lat, chan):
            continue
        index_used = 0
        if ctypes[i].startswith("STOKES"):
            for k in range(fits_shape[i - 1]):
                value = float(header.get(f"CRVAL{i}", 1)) + (k + 1 - float(header.get(f"CRPIX{i}", 1))) * float(
                    header.get(f"CDELT{i}", 1))
                if round(value) == 1:
                    index_used = k
                    break
        elif fits_shape[i - 1] > 1:
            raise _fail(path, f"axis {i} ({ctypes[i] or 'unnamed'}) has {fits_shape[i - 1]} planes besides the "
                        "spectral axis", "give a 2-D image or a cube with one spectral axis")
        fixed[numpy_axis[i]] = index_used
    bitpix = int(header["BITPIX"])
    info = hdul.fileinfo(index)
    offset = int(info["datLoc"])
    size = int(np.prod(fits_shape)) * abs(bitpix) // 8
    if offset + size > os.path.getsize(path):
        raise _fail(path, f"truncated: the data need {offset + size} bytes, the file has {os.path.getsize(path)}",
                    "download or export it again")
    return _Layout(
        path=path, offset=offset, dtype=_BITPIX[bitpix], shape=tuple(reversed(fits_shape)),
        x_axis=numpy_axis[lon], y_axis=numpy_axis[lat], chan_axis=numpy_axis[chan] if chan else None,
        fixed=fixed, bscale=float(header.get("BSCALE", 1.0)), bzero=float(header.get("BZERO", 0.0)),
        blank=header.get("BLANK") if bitpix > 0 else None,
        sentinels=(float(header["BLANK"]),) if bitpix < 0 and isinstance(header.get("BLANK"), (int, float)) else (),
    )


def _read(layout: _Layout, start: int, stop: int) -> np.ndarray:
    """Channels ``start:stop`` as float32 [n, y, x], read through a memmap that is unmapped on return."""
    mm = np.memmap(layout.path, dtype=layout.dtype, mode="r", offset=layout.offset, shape=layout.shape)
    index: list = [slice(None)] * len(layout.shape)
    for axis, k in layout.fixed.items():
        index[axis] = k
    if layout.chan_axis is not None:
        index[layout.chan_axis] = slice(start, stop)
    view = mm[tuple(index)]
    kept = [a for a in range(len(layout.shape)) if a not in layout.fixed]
    order = [kept.index(layout.chan_axis)] if layout.chan_axis is not None else []
    order += [kept.index(layout.y_axis), kept.index(layout.x_axis)]
    block = np.array(np.transpose(view, order), dtype=np.float32)
    del view, mm
    if layout.chan_axis is None:
        block = block[np.newaxis]
    if layout.blank is not None:
        block[block == layout.blank] = np.nan
    if layout.bscale != 1.0 or layout.bzero != 0.0:
        block = block * np.float32(layout.bscale) + np.float32(layout.bzero)
    for value in layout.sentinels:
        block[block == np.float32(value)] = np.nan
    return block


def find_sentinels(sample: np.ndarray, float_blank: float | None = None, min_fraction: float = 0.01) -> tuple[float, ...]:
    """Values that stand for blank pixels in a float image: the ``BLANK`` card (which the FITS
    standard allows for integer images only, yet some writers put on float ones) and one constant
    repeated in at least ``min_fraction`` of the pixels while lying at the data's edge (-999, 0
    outside the primary beam...). Measured data never repeat one float that often.

    >>> rng = np.random.default_rng(0); x = rng.normal(0, 1, 10000).astype(np.float32); x[:2000] = -999
    >>> find_sentinels(x), find_sentinels(x[2000:]), find_sentinels(x[2000:], float_blank=-1)
    ((-999.0,), (), (-1.0,))
    """
    found: list[float] = []
    if float_blank is not None and math.isfinite(float_blank):
        found.append(float(float_blank))
    v = sample[np.isfinite(sample)].ravel()
    if v.size >= 100:
        values, counts = np.unique(v, return_counts=True)
        top = int(np.argmax(counts))
        value = float(values[top])
        at_edge = value in (float(values[0]), float(values[-1])) or value == 0.0
        if counts[top] >= max(10, min_fraction * v.size) and values.size > 1 and at_edge and value not in found:
            found.append(value)
    return tuple(found)


def _blocks(layout: _Layout) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first channel, float32 [n, y, x]) blocks of about BLOCK_BYTES each."""
    per_block = max(1, BLOCK_BYTES // max(1, layout.plane_bytes))
    for start in range(0, layout.nchan, per_block):
        yield start, _read(layout, start, min(layout.nchan, start + per_block))


def _beams(hdul: fits.HDUList, header: fits.Header, nchan: int) -> list[Beam] | None:
    """One beam per channel from the BEAMS table, the header, or AIPS history; None if none."""
    for hdu in hdul[1:]:
        if isinstance(hdu, fits.BinTableHDU) and hdu.name.upper() == "BEAMS":
            data = hdu.data
            names = [c.name.upper() for c in hdu.columns]
            units = {c.name.upper(): (c.unit or "arcsec").lower() for c in hdu.columns}
            scale = {k: 3600.0 if units[k].startswith("deg") else (1 / 1000 if units[k].startswith("mas") else 1.0)
                     for k in ("BMAJ", "BMIN")}
            rows = {}
            for row in data:
                chan = int(row["CHAN"]) if "CHAN" in names else 0
                pol = int(row["POL"]) if "POL" in names else 0
                if pol == 0 or chan not in rows:
                    rows[chan] = Beam(float(row["BMAJ"]) * scale["BMAJ"], float(row["BMIN"]) * scale["BMIN"],
                                      float(row["BPA"]))
            if rows:
                return [rows.get(c, rows[min(rows, key=lambda k: abs(k - c))]) for c in range(nchan)]
    if header.get("BMAJ") and header.get("BMIN"):
        beam = Beam(float(header["BMAJ"]) * 3600, float(header["BMIN"]) * 3600, float(header.get("BPA", 0.0)))
        return [beam] * nchan
    for card in reversed(header.get("HISTORY", [])):
        match = re.search(r"BMAJ=\s*([-+\d.Ee]+)\s+BMIN=\s*([-+\d.Ee]+)\s+BPA=\s*([-+\d.Ee]+)", str(card))
        if match:
            bmaj, bmin, bpa = map(float, match.groups())
            return [Beam(bmaj * 3600, bmin * 3600, bpa)] * nchan
    return None


def normalise_bunit(bunit: str) -> str:
    """``Jy/beam``, ``Jy/pixel``, ``K``, or the unit as written when it is none of those.

    >>> normalise_bunit("JY/BEAM"), normalise_bunit("Jy beam-1"), normalise_bunit("Jy/pixel")
    ('Jy/beam', 'Jy/beam', 'Jy/pixel')
    """
    text = re.sub(r"\s+", "", bunit.strip().lower())
    if text in ("jy/beam", "jybeam-1", "jy/bm", "jy.beam-1", "jy/beam-1", "jybeam^-1"):
        return "Jy/beam"
    if text in ("jy/pixel", "jy/pix", "jypixel-1", "jy.pixel-1", "jypix-1", "jy"):
        return "Jy/pixel"
    if text == "k":
        return "K"
    if text in ("mjy/beam", "mjybeam-1"):
        return "mJy/beam"
    return bunit.strip()


def _sky_axes(header: fits.Header) -> tuple[int, int]:
    """The 1-based FITS axes of longitude and latitude (1 and 2 when CTYPE does not say)."""
    ctypes = {i: str(header.get(f"CTYPE{i}", "")).upper() for i in range(1, int(header.get("NAXIS", 0)) + 1)}
    lon = next((i for i, c in ctypes.items() if c.startswith(("RA", "GLON", "ELON"))), 1)
    lat = next((i for i, c in ctypes.items() if c.startswith(("DEC", "GLAT", "ELAT"))), 2)
    return lon, lat


def _pixel_arcsec(header: fits.Header, path: str) -> float:
    """Pixel side in arcsec: sqrt(|det|) of the sky axes' CD matrix (or PC x CDELT).

    >>> round(_pixel_arcsec(fits.Header({"NAXIS": 2, "CDELT1": -1e-4, "CDELT2": 1e-4}), "x"), 3)
    0.36
    """
    lon, lat = _sky_axes(header)
    axes = (lon, lat)
    if any(f"CD{i}_{j}" in header for i in axes for j in axes):
        m = [[float(header.get(f"CD{i}_{j}", 0.0)) for j in axes] for i in axes]
    else:
        m = [[float(header.get(f"PC{i}_{j}", 1.0 if i == j else 0.0)) * float(header.get(f"CDELT{i}", 0.0))
              for j in axes] for i in axes]
    det = abs(m[0][0] * m[1][1] - m[0][1] * m[1][0])
    if not math.isfinite(det) or det <= 0:
        raise _fail(path, "no pixel size (CDELT or CD of the sky axes)", "give an image with a celestial WCS")
    unit = str(header.get(f"CUNIT{lon}", "deg")).strip().lower() or "deg"
    scale = {"deg": 3600.0, "rad": math.degrees(1) * 3600, "arcsec": 1.0, "arcmin": 60.0}.get(unit, 3600.0)
    return math.sqrt(det) * scale


def _frequency_ghz(header: fits.Header, channel: int) -> float | None:
    """Frequency of ``channel`` (0-based) in GHz from a FREQ axis, else RESTFRQ."""
    for i in range(1, int(header.get("NAXIS", 0)) + 1):
        if str(header.get(f"CTYPE{i}", "")).upper().startswith("FREQ"):
            n = int(header.get(f"NAXIS{i}", 1))
            k = channel if n > 1 else 0
            return (float(header[f"CRVAL{i}"]) + (k + 1 - float(header.get(f"CRPIX{i}", 1))) * float(
                header.get(f"CDELT{i}", 0))) / 1e9
    rest = header.get("RESTFRQ") or header.get("RESTFREQ")
    return float(rest) / 1e9 if rest else None


def interior_mask(valid: np.ndarray, margin: int) -> np.ndarray:
    """Valid pixels farther than ``margin`` pixels (box distance) from any invalid pixel.

    >>> v = np.ones((9, 9), bool); v[0, :] = False
    >>> int(interior_mask(v, 2)[:4, 4].sum())
    1
    """
    if valid.all() or margin <= 0:
        return valid
    near_blank = ndimage.maximum_filter(~valid, size=2 * margin + 1, mode="constant", cval=False)
    inner = valid & ~near_blank
    return inner if inner.any() else valid


def central_mask(valid: np.ndarray) -> np.ndarray:
    """Pixels within half the equivalent radius of the valid region, around its centroid.

    In a primary-beam corrected image the noise grows as 1/pb towards the edge; the central
    disk (pb above ~0.7 for a 0.2 pblimit) gives the noise at the pointing centre, on a
    blanked pipeline image and an unblanked QA2 image alike.

    >>> int(central_mask(np.ones((100, 100), bool)).sum()) in range(2400, 2600)
    True
    """
    n = int(valid.sum())
    if n == 0:
        return valid
    cy = float(np.dot(valid.sum(axis=1), np.arange(valid.shape[0]))) / n
    cx = float(np.dot(valid.sum(axis=0), np.arange(valid.shape[1]))) / n
    radius = 0.5 * math.sqrt(n / math.pi)
    y = np.arange(valid.shape[0])[:, None] - cy
    x = np.arange(valid.shape[1])[None, :] - cx
    return valid & (x * x + y * y <= radius * radius)


def integrated_flux(plane: np.ndarray, peak_yx: tuple[int, int], rms: float, peak: float,
                    beam_pixels: float, fwhm_pixels: float, nsigma: float = 3.0) -> tuple[float, float]:
    """Sum over the source region grown from the peak, in beam units; returns (sum/beam, region beams).

    The region: pixels connected to ``peak_yx`` above ``max(nsigma*rms, 1e-3*peak)``, dilated
    by half a FWHM, then grown by quarter-FWHM rings while a ring adds more than 2 sigma.

    >>> y, x = np.mgrid[:101, :101]; s = 10 / math.sqrt(8 * math.log(2))
    >>> img = np.exp(-((x - 50) ** 2 + (y - 50) ** 2) / (2 * s * s))
    >>> area = math.pi * 100 / (4 * math.log(2))
    >>> round(integrated_flux(img, (50, 50), 1e-4, 1.0, area, 10.0)[0], 4)
    1.0
    """
    finite = np.nan_to_num(plane, nan=0.0)
    threshold = max(nsigma * rms if math.isfinite(rms) else 0.0, 1e-3 * peak)
    above = finite > threshold
    labels, _ = ndimage.label(above)
    region = labels == labels[peak_yx]
    if not region[peak_yx]:
        region = np.zeros_like(above)
        region[peak_yx] = True
    ys, xs = np.nonzero(region)
    pad = int(math.ceil(2.0 * fwhm_pixels)) + 2
    y0, y1 = max(0, ys.min() - pad), min(plane.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(plane.shape[1], xs.max() + pad + 1)
    sub = finite[y0:y1, x0:x1].astype(np.float64)
    region = region[y0:y1, x0:x1]
    region = ndimage.binary_dilation(region, structure=_disk(0.5 * fwhm_pixels))
    ring = _disk(max(1.0, 0.25 * fwhm_pixels))
    for _ in range(4):
        grown = ndimage.binary_dilation(region, structure=ring)
        added = grown & ~region
        n_added = int(added.sum())
        if n_added == 0:
            break
        ring_flux = sub[added].sum() / beam_pixels
        ring_noise = rms * math.sqrt(max(n_added, beam_pixels) / beam_pixels) if math.isfinite(rms) else 0.0
        if ring_flux <= 2 * ring_noise:
            break
        region = grown
    total = sub[region].sum() / beam_pixels
    return float(total), float(region.sum() / beam_pixels)


def _open(path: str) -> fits.HDUList:
    """Open ``path`` memory-mapped; a clear MeasureError for what is not a readable FITS file."""
    if not Path(path).is_file():
        raise _fail(path, "no such file", "check the path")
    with open(path, "rb") as fh:
        if fh.read(2) == b"\x1f\x8b":
            raise _fail(path, "gzip-compressed FITS cannot be memory-mapped", "gunzip it first")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            hdul = fits.open(path, memmap=True, lazy_load_hdus=False)
    except Exception as exc:  # astropy raises OSError, TypeError, ValueError for broken files
        raise _fail(path, f"not a readable FITS file ({exc})", "download or export it again") from None
    return hdul


def _unit(header: fits.Header, path: str, notes: list[str]) -> str:
    """The image unit, normalised; a note when it is missing; a MeasureError when unusable."""
    unit = normalise_bunit(str(header.get("BUNIT", "")))
    if not unit:
        notes.append(f"{path}: no BUNIT — assumed Jy/beam")
        return "Jy/beam"
    if unit not in ("Jy/beam", "Jy/pixel", "K", "mJy/beam"):
        raise _fail(path, f"unit {unit!r} is not Jy/beam, Jy/pixel or K", "export the image in Jy/beam")
    if unit == "Jy/pixel":
        notes.append(f"{path}: unit is Jy/pixel — peak and rms are per pixel, flux is the plain pixel sum")
    return unit


def _to_jansky(unit: str, freq: float | None, beam: Beam | None, path: str, notes: list[str]) -> float:
    """Factor that turns a flux summed in ``unit`` x beam into Jy (1 for Jy/beam and Jy/pixel)."""
    if unit == "mJy/beam":
        return 1e-3
    if unit != "K":
        return 1.0
    if freq is None or beam is None:
        raise _fail(path, "unit is K and the frequency or beam is unknown", "export the image in Jy/beam")
    jy_per_k = _jy_per_beam_per_kelvin(freq, beam)
    notes.append(f"{path}: unit is K (brightness temperature) — peak and rms are in K, flux converted to Jy "
                 f"with {jy_per_k:.4g} Jy/beam per K (Rayleigh-Jeans at {freq:.3f} GHz)")
    return jy_per_k


@dataclass
class Image:
    """An opened image: where its pixels are, its header, beams, pixel size, unit and notes."""

    path: str
    header: fits.Header
    layout: _Layout
    beams: list[Beam] | None
    pixel: float
    unit: str
    notes: list[str]

    def plane(self, channel: int) -> np.ndarray:
        """One channel as float32 [y, x], blanks as NaN."""
        return _plane(self.layout, channel)

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first channel, [n, y, x]) blocks of channels, blanks as NaN."""
        return _blocks(self.layout)

    def channel_max(self) -> np.ndarray:
        """The plane (float64), or for a cube the maximum over channels of every pixel."""
        best = None
        for _, block in self.blocks():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-blank pixel stays NaN
                m = np.nanmax(block, axis=0)
            best = m if best is None else np.fmax(best, m)
        return best.astype(np.float64)

    def fwhm_pixels(self, channel: int = 0) -> float:
        """The beam's geometric-mean FWHM in pixels (3 without a beam)."""
        beam = self.beams[channel] if self.beams else None
        return math.sqrt(beam.major * beam.minor) / self.pixel if beam else 3.0

    def beam_pixels(self, channel: int = 0) -> float:
        """The beam area in pixels (1 for a Jy/pixel image)."""
        if self.unit == "Jy/pixel" or not self.beams:
            return 1.0
        return self.beams[channel].area_pixels(self.pixel)


def open_image(path: str | os.PathLike) -> Image:
    """Open ``path`` for measuring: layout, beams, unit, and the values that stand for blanks.

    Blank pixels are NaN, the ``BLANK`` value of an integer image, the ``BLANK`` card of a float
    image (not standard, but written), and a constant repeated over much of the image at the
    edge of the data's range (-999...); each one found adds a note.
    """
    path = str(path)
    with _open(path) as hdul:
        index = _image_hdu(hdul, path)
        header = hdul[index].header.copy()
        layout = _layout(path, hdul, index)
        beams = _beams(hdul, header, layout.nchan)
    pixel = _pixel_arcsec(header, path)
    notes: list[str] = []
    unit = _unit(header, path, notes)
    if beams is None and unit != "Jy/pixel":
        raise _fail(path, "no restoring beam (no BMAJ/BMIN in the header, no BEAMS table)",
                    "export it from the CASA image with exportfits, which writes the beam")
    if layout.dtype.startswith(">f"):
        raw = _read(_Layout(**{**layout.__dict__, "sentinels": ()}), layout.nchan // 2, layout.nchan // 2 + 1)[0]
        float_blank = layout.sentinels[0] if layout.sentinels else None
        layout.sentinels = find_sentinels(raw, float_blank)
        for value in layout.sentinels:
            count = int(np.count_nonzero(raw == np.float32(value)))
            if count:
                source = "the BLANK card of this float image" if value == float_blank else "a constant fill value"
                notes.append(f"{path}: {count} of {raw.size} pixels equal {value:g} ({source}) — taken as blank, "
                             "not measured")
    return Image(path, header, layout, beams, pixel, unit, notes)


def measure_file(path: str | os.PathLike) -> Measurement:
    """Measure the image in ``path`` (see the module docstring for the method).

    Raises MeasureError, whose message is one line naming the file, the problem and the fix.
    """
    image = open_image(path)
    path, header, layout, beams, pixel, unit, notes = (image.path, image.header, image.layout, image.beams,
                                                        image.pixel, image.unit, image.notes)
    fwhm_guess = math.sqrt(beams[0].major * beams[0].minor) / pixel if beams else 3.0
    peaks, rms_all, maxmap, noise = _scan(layout, max(3.0, fwhm_guess))
    if not np.isfinite(peaks["value"]).any():
        raise _fail(path, "every pixel is NaN or a blank value", "re-image or re-export it")
    chan = int(np.nanargmax(peaks["value"]))
    rms_all, _ = _emission_free(layout, rms_all, maxmap, noise, chan, max(1.0, fwhm_guess))
    peak, rms = float(peaks["value"][chan]), float(rms_all[chan])
    y, x = int(peaks["y"][chan]), int(peaks["x"][chan])
    beam = beams[chan] if beams else None
    beam_pixels = beam.area_pixels(pixel) if beam else 1.0
    fwhm_pixels = math.sqrt(beam.major * beam.minor) / pixel if beam else 3.0
    per_pixel = unit == "Jy/pixel"
    total, region = integrated_flux(_plane(layout, chan), (y, x), rms, peak,
                                    1.0 if per_pixel else beam_pixels, fwhm_pixels)
    region_beams = region / beam_pixels if per_pixel else region  # region is in units of the divisor
    error = rms * math.sqrt(max(region * (1.0 if not per_pixel else beam_pixels), 1.0))
    freq = _frequency_ghz(header, chan)
    factor = _to_jansky(unit, freq, beam, path, notes)
    info = describe(path, header)
    nan = float("nan")
    return Measurement(
        file=path, field=info.label, spw=",".join(map(str, info.spws)), specmode=info.specmode, bunit=unit,
        peak=peak, peak_pixel=[x, y], rms=rms, flux=total * factor,
        beam_major=beam.major if beam else nan, beam_minor=beam.minor if beam else nan,
        beam_pa=beam.pa if beam else nan, snr=peak / rms if rms > 0 else float("inf"),
        kind=info.kind, peak_channel=chan, nchan=layout.nchan, rms_median=float(np.nanmedian(rms_all)),
        flux_error=error * factor, region_beams=region_beams if beam else nan, pixel_arcsec=pixel,
        frequency_ghz=freq, notes=notes,
    )


def _jy_per_beam_per_kelvin(freq_ghz: float, beam: Beam) -> float:
    """Rayleigh-Jeans Jy/beam per K for ``beam`` at ``freq_ghz``."""
    k_b, c = 1.380649e-23, 299792458.0
    omega = math.pi * math.radians(beam.major / 3600) * math.radians(beam.minor / 3600) / FOUR_LN2
    return 2 * k_b * (freq_ghz * 1e9) ** 2 * omega / c**2 * 1e26


def _plane(layout: _Layout, channel: int) -> np.ndarray:
    """One channel as a float32 array [y, x]."""
    return _read(layout, channel, channel + 1)[0]


def _scan(layout: _Layout, fwhm_pixels: float) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel peak (value, y, x) over the interior, the clipped robust rms of a 2-D image (NaN
    for a cube's channels); the channel-max map and the noise region (interior of the valid
    region, central disk) of the last channel."""
    n = layout.nchan
    values = np.full(n, np.nan)
    ys = np.zeros(n, int)
    xs = np.zeros(n, int)
    rms = np.full(n, np.nan)
    ny, nx = layout.shape[layout.y_axis], layout.shape[layout.x_axis]
    margin = int(max(2 * fwhm_pixels, 0.05 * min(ny, nx)))
    cached_valid: np.ndarray | None = None
    inner = noise = np.zeros((ny, nx), bool)
    maxmap = np.full((ny, nx), -np.inf, np.float32)
    for start, block in _blocks(layout):
        for k, plane in enumerate(block):
            c = start + k
            valid = np.isfinite(plane)
            if cached_valid is None or not np.array_equal(valid, cached_valid):
                inner = interior_mask(valid, margin)
                noise = noise_region(valid, inner)
                cached_valid = valid
            if not inner.any():
                continue
            masked = np.where(inner, plane, -np.inf)
            np.maximum(maxmap, np.where(valid, plane, -np.inf), out=maxmap)
            flat = int(np.argmax(masked))
            values[c] = float(masked.flat[flat])
            ys[c], xs[c] = divmod(flat, nx)
            if n == 1:  # a cube's channels get their rms once, in _emission_free
                rms[c] = robust_rms(_sample(plane, noise))
    return {"value": values, "y": ys, "x": xs}, rms, maxmap, noise


def noise_region(valid: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """Where the noise is measured: the central disk of the valid interior (the primary beam's
    inner part, where a primary-beam corrected image has nearly its pointing-centre noise)."""
    noise = inner & central_mask(valid)
    return noise if noise.sum() >= 1000 else inner


def _emission_free(layout: _Layout, rms: np.ndarray, maxmap: np.ndarray, noise: np.ndarray,
                   chan: int, fwhm_pixels: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel rms of the emission-free pixels: the sources of the peak channel and of the
    channel-max map (a line in any channel), with a beam around them, are left out.

    Returns (rms per channel, source mask)."""
    plane = _plane(layout, chan)
    valid = np.isfinite(plane)
    if layout.nchan == 1:
        found = emission_free_rms(plane, noise, fwhm_pixels, valid, rounds=3)
        return np.array([found]), source_mask(plane, valid, found, fwhm_pixels)
    first = rms[chan] if math.isfinite(rms[chan]) else robust_rms(_sample(plane, noise))
    sources = source_mask(plane, valid, first, fwhm_pixels)
    if layout.nchan > 1:
        finite = np.isfinite(maxmap)
        level = float(np.median(maxmap[finite])) if finite.any() else 0.0
        spread = robust_rms(_sample(maxmap - level, noise & finite & ~sources))
        if math.isfinite(spread) and spread > 0:
            sources |= source_mask(maxmap - level, finite, spread, fwhm_pixels)
    free = noise & ~sources
    if free.sum() < 50:  # a source fills the central disk: emission-free pixels anywhere, else the disk
        anywhere = np.isfinite(plane) & ~sources
        free = anywhere if anywhere.sum() >= 50 else noise
    out = np.full(layout.nchan, np.nan)
    for start, block in _blocks(layout):
        for k, p in enumerate(block):
            out[start + k] = robust_rms(_sample(p, free))
    return out, sources


def describe_file(path: str | os.PathLike) -> ImageInfo:
    """Describe ``path`` for pairing from its name and primary header (no pixel is read).

    A file whose header cannot be read is described from its name alone.
    """
    path = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(path, memmap=True) as hdul:
                header = hdul[_image_hdu(hdul, path)].header.copy()
    except Exception:
        return describe(path)
    return describe(path, header)

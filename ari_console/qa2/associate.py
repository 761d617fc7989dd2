"""Pair pipeline images with QA2 images: same field, same spws, same spec mode, like with like.

Pipeline products have regular names
(``member.uid___A001_X1296_X1d3.NGC1234_sci.spw16_18_20_22.cont.I.pbcor.fits``);
QA2 products are named by people (``NGC1234_cont.manual.pbcor.fits``,
``ngc1234_spw17_line.image.fits``...). Each file is first *described*
(:func:`describe`) from its name and, when given, its FITS header; then
:func:`associate` pairs descriptions one-to-one by a score and lists every
file without a partner on its side.

Evidence, strongest first:

- field: the header's ``OBJECT``/``FIELD`` (normalised: case, ``_sci``,
  spaces, underscores and dots ignored), else the name's field, else the sky
  position of the image centre;
- spectral mode: ``cube``, ``mfs`` (one spw, one plane) or ``cont`` (the
  aggregate continuum over several spws), from the name or from the number
  of channels and spws;
- spws: equal sets from the names, or overlapping frequency ranges from the
  headers (QA2 images of split data sets often renumber spws from 0);
- kind: ``pbcor`` pairs with ``pbcor`` and ``image`` with ``image``;
  ``pb``, ``mask``, ``psf``, ``residual``, ``model``, ``alpha``... are not
  compared and are reported as ignored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Mapping, Sequence

MEASURED_KINDS = ("pbcor", "image")
# Tokens that never belong to a field name (compared lower-case).
_NOISE_TOKENS = {
    "member", "sci", "cont", "continuum", "mfs", "cube", "line", "lines", "aggregate", "agg",
    "image", "images", "img", "pbcor", "pbcorr", "pb", "mask", "psf", "residual", "model", "sumwt",
    "weight", "alpha", "error", "tt0", "tt1", "tt2", "i", "q", "u", "v", "iquv", "manual", "qa2",
    "final", "fits", "clean", "cleaned", "dirty", "selfcal", "contsub", "nocontsub", "briggs",
    "natural", "uniform", "robust", "mtmfs", "hogbom", "multiscale", "pipeline", "pl", "calibrated",
    "targets", "target", "spw", "spws", "fixed", "new", "v2", "v1", "fits.gz", "gz",
}
_SPW_RE = re.compile(r"(?<![a-z])spws?[_\-.]?((?:\d+)(?:[_,\-+]\d+)*)", re.IGNORECASE)
_UID_RE = re.compile(r"uid___a\d+_x[0-9a-f]+_x[0-9a-f]+", re.IGNORECASE)
_TOKEN_SPLIT = re.compile(r"[._\s]+")
# A dot separates name parts, except between two digits (``G10.6-0.4``).
_CHUNK_SPLIT = re.compile(r"(?<!\d)\.|\.(?!\d)")
_PREFIX_RE = re.compile(r"^\s*(member|group|oussid)[._\s]+(s\d+_\d+[._\s]+)?", re.IGNORECASE)
_PROJECT_RE = re.compile(r"\d{4}\.\d\.\d{5}\.[a-z]", re.IGNORECASE)
_NOISE_RE = re.compile(r"iter\d+|r(obust)?[-_]?\d+(\.\d+)?|tt\d|band\d+|b\d|\d+m|tm\d|aca|"
                       r"\d+(\.\d+)?ghz|\d{8}|\d{4}-\d{2}-\d{2}", re.IGNORECASE)


@dataclass
class ImageInfo:
    """What a file is, as far as pairing needs: field, spws, spec mode, kind, sky and frequency.

    ``field`` is normalised (see :func:`normalise_field`) and ``label`` is the same field as
    written (header ``OBJECT``, else the name's words); ``field_from`` says where it came from
    (``header``, ``name`` or ``""``); ``freq_ghz`` is the (low, high) coverage or None.
    """

    file: str
    field: str
    field_from: str
    spws: tuple[int, ...]
    specmode: str
    kind: str
    label: str = ""
    name_field: str = ""
    name_fields: tuple[str, ...] = ()
    header_field: str = ""
    ra_deg: float | None = None
    dec_deg: float | None = None
    fov_deg: float | None = None
    freq_ghz: tuple[float, float] | None = None
    nchan: int | None = None
    spw_rank: int | None = None  # rank of its spw set among its side's images of one field and mode

    @property
    def measured(self) -> bool:
        """True when the file is an image whose flux is compared (pbcor or plain image)."""
        return self.kind in MEASURED_KINDS


@dataclass
class Pair:
    """A pipeline file and its QA2 partner, with the evidence that paired them."""

    pl: ImageInfo
    qa2: ImageInfo
    score: float
    evidence: list[str] = dc_field(default_factory=list)


@dataclass
class Association:
    """Pairs, files without a partner on each side, and files not compared (pb, mask...)."""

    pairs: list[Pair]
    unmatched_pl: list[ImageInfo]
    unmatched_qa2: list[ImageInfo]
    ignored: list[ImageInfo]


def normalise_field(name: str) -> str:
    """A field name reduced to what identifies it.

    >>> normalise_field("NGC_1234_sci"), normalise_field("ngc 1234"), normalise_field("J1610-3958")
    ('ngc1234', 'ngc1234', 'j1610-3958')
    """
    text = name.strip().lower()
    text = re.sub(r"[_\s.]*sci$", "", text)
    return re.sub(r"[\s_.]+", "", text)


def _strip_extension(filename: str) -> str:
    """``filename`` without its directory and ``.fits``/``.fits.gz``/``.fz`` suffix."""
    base = Path(filename).name
    return re.sub(r"\.(fits|fit|fts)(\.gz|\.fz)?$", "", base, flags=re.IGNORECASE)


def parse_spws(filename: str) -> tuple[int, ...]:
    """The spw ids a file name mentions, sorted.

    >>> parse_spws("x.NGC1234_sci.spw16_18_20_22.cont.I.pbcor.fits"), parse_spws("ngc_spw17_line.fits")
    ((16, 18, 20, 22), (17,))
    """
    found: set[int] = set()
    for match in _SPW_RE.finditer(_strip_extension(filename)):
        found.update(int(v) for v in re.split(r"[_,\-+]", match.group(1)) if v)
    return tuple(sorted(found))


def parse_kind(filename: str) -> str:
    """``pbcor``, ``image``, or the product type that is not compared (``pb``, ``mask``, ``tt1``...).

    Higher Taylor terms (``tt1``, ``tt2``) and spectral-index images are not flux images, even
    when primary-beam corrected.

    >>> parse_kind("a.cont.I.pbcor.fits"), parse_kind("a.cont.I.pb.fits"), parse_kind("b.fits")
    ('pbcor', 'pb', 'image')
    >>> parse_kind("a.cont.I.tt1.pbcor.fits"), parse_kind("a.cont.I.tt0.pbcor.fits"), parse_kind("a.alpha.error.fits")
    ('tt1', 'pbcor', 'alpha.error')
    """
    tokens = [t.lower() for t in _TOKEN_SPLIT.split(_strip_extension(filename)) if t]
    joined = ".".join(tokens)
    if "alpha" in tokens or "spectral_index" in joined or "spindex" in tokens:
        return "alpha.error" if "error" in tokens else "alpha"
    for term in ("tt1", "tt2", "tt3"):
        if term in tokens:
            return term
    if any(t in ("pbcor", "pbcorr", "pbcorrected") for t in tokens) or "pbcor" in joined:
        return "pbcor"
    for kind in ("pb", "mask", "psf", "residual", "model", "sumwt", "weight", "flux"):
        if kind in tokens[1:] or (tokens and tokens[-1] == kind):
            return kind
    return "image"


def header_kind(header: Mapping) -> str | None:
    """What the header says the image is when it is not a flux image (``alpha``), else None.

    >>> header_kind({"BTYPE": "Spectral index"}), header_kind({"BTYPE": "Intensity", "BUNIT": "Jy/beam"})
    ('alpha', None)
    """
    btype = str(header.get("BTYPE", "")).strip().lower()
    if "spectral" in btype and "index" in btype or btype in ("alpha", "spectral_index"):
        return "alpha"
    if btype in ("optical depth", "beam", "weight"):
        return btype
    return None


def parse_specmode(filename: str) -> str:
    """``cube``, ``mfs`` or ``cont`` as the name says, or ``""`` when it says nothing.

    >>> parse_specmode("a.spw17.cube.I.pbcor.fits"), parse_specmode("ngc_spw17_line.image.fits")
    ('cube', 'cube')
    """
    tokens = {t.lower() for t in _TOKEN_SPLIT.split(_strip_extension(filename)) if t}
    if tokens & {"cube", "line", "lines", "contsub", "cubes"}:
        return "cube"
    if "mfs" in tokens:
        return "mfs"
    if tokens & {"cont", "continuum", "aggregate", "agg", "contin"}:
        return "cont"
    return ""


def _field_words(filename: str) -> list[str]:
    """The words of the file name that may name the field, in order (first chunk that has any)."""
    stem = _UID_RE.sub(" ", _strip_extension(filename))
    stem = _PROJECT_RE.sub(" ", stem)
    stem = _SPW_RE.sub(" ", stem)
    stem = _PREFIX_RE.sub(" ", stem)
    for chunk in _CHUNK_SPLIT.split(stem):
        words = [w for w in re.split(r"[_\s]+", chunk)
                 if w and w.lower() not in _NOISE_TOKENS and not _NOISE_RE.fullmatch(w)]
        if words:
            return words
    return []


def parse_field(filename: str) -> str:
    """The field a file name gives, normalised; ``""`` when none can be told.

    The uid prefix, project code, spw lists and product words are dropped; what remains
    first is the field.

    >>> parse_field("member.uid___A001_X1296_X1d3.NGC1234_sci.spw16_18_20_22.cont.I.pbcor.fits")
    'ngc1234'
    >>> parse_field("uid___A001_X1296_X1d3.NGC_1234_sci.spw16.cont.I.pbcor.fits")
    'ngc1234'
    >>> parse_field("2016.1.00123.S_ngc1234_spw17_line.image.fits")
    'ngc1234'
    >>> parse_field("member.uid___A001_X1_X2.G10.6-0.4_sci.spw25.cube.I.pbcor.fits")
    'g106-04'
    >>> parse_field("oussid.s38_0.NGC253_sci.spw17.mfs.I.iter1.image.pbcor.fits")
    'ngc253'
    """
    return normalise_field("".join(_field_words(filename)))


def name_candidates(filename: str) -> tuple[str, ...]:
    """Every run of consecutive field words of the name, normalised, longest first.

    The field may be followed by a line name or preceded by a band: any run may be the field.

    >>> name_candidates("NGC1234_CO2-1.image.pbcor.fits")
    ('ngc1234co2-1', 'ngc1234', 'co2-1')
    """
    words = _field_words(filename)[:6]
    runs = [words[i:j] for n in range(len(words), 0, -1) for i in range(len(words) - n + 1) for j in [i + n]]
    return tuple(dict.fromkeys(normalise_field("".join(r)) for r in runs))


def _label(header: Mapping, filename: str) -> str:
    """The field as people write it: the header's FIELD/OBJECT, else the name's field words.

    >>> _label({}, "member.uid___A001_X1_X2.NGC_1234_sci.spw17.cube.I.pbcor.fits")
    'NGC_1234'
    """
    for key in ("FIELD", "OBJECT"):
        value = header.get(key)
        if isinstance(value, str) and value.strip() and value.strip().lower() not in ("unknown", "none"):
            return value.strip()
    words = _field_words(filename)
    return "_".join(words) if words else ""


def _header_field(header: Mapping) -> str:
    """The header's field name (``FIELD`` then ``OBJECT``), normalised, or ``""``."""
    for key in ("FIELD", "OBJECT"):
        value = header.get(key)
        if isinstance(value, str) and value.strip() and value.strip().lower() not in ("unknown", "none"):
            return normalise_field(value)
    return ""


def _axis(header: Mapping, prefix: str) -> int | None:
    """The 1-based FITS axis whose CTYPE starts with one of ``prefix`` (``|``-separated)."""
    for i in range(1, int(header.get("NAXIS", 0)) + 1):
        ctype = str(header.get(f"CTYPE{i}", "")).upper()
        if any(ctype.startswith(p) for p in prefix.split("|")):
            return i
    return None


def _world(header: Mapping, axis: int, pixel: float) -> float:
    """World coordinate of 1-based ``pixel`` on a linear ``axis``."""
    return float(header.get(f"CRVAL{axis}", 0.0)) + (pixel - float(header.get(f"CRPIX{axis}", 1.0))) * float(
        header.get(f"CDELT{axis}", 1.0)
    )


def header_frequency_ghz(header: Mapping) -> tuple[float, float] | None:
    """Frequency coverage (low, high) in GHz from a FREQ axis, channel widths included."""
    axis = _axis(header, "FREQ")
    if axis is None:
        return None
    n = int(header.get(f"NAXIS{axis}", 1))
    half = abs(float(header.get(f"CDELT{axis}", 0.0))) / 2
    edges = [_world(header, axis, 1) , _world(header, axis, n)]
    return (min(edges) - half) / 1e9, (max(edges) + half) / 1e9


def header_nchan(header: Mapping) -> int:
    """Number of spectral channels (1 when there is no spectral axis)."""
    axis = _axis(header, "FREQ|VRAD|VOPT|FELO|VELO|WAVE|AWAV|ZOPT|BETA|VRAD")
    return int(header.get(f"NAXIS{axis}", 1)) if axis else 1


def _centre(header: Mapping) -> tuple[float | None, float | None, float | None]:
    """RA, Dec of the image centre and the smaller field-of-view side, degrees."""
    lon, lat = _axis(header, "RA|GLON|ELON"), _axis(header, "DEC|GLAT|ELAT")
    if lon is None or lat is None:
        return None, None, None
    ra = float(header.get(f"CRVAL{lon}", 0.0))
    dec = float(header.get(f"CRVAL{lat}", 0.0))
    fov = min(abs(float(header.get(f"CDELT{a}", 0.0))) * int(header.get(f"NAXIS{a}", 0)) for a in (lon, lat))
    return ra, dec, fov


def describe(filename: str, header: Mapping | None = None) -> ImageInfo:
    """Describe ``filename`` from its name and (when given) its primary FITS header.

    >>> info = describe("member.uid___A001_X1_X2.NGC1234_sci.spw17.cube.I.pbcor.fits")
    >>> info.field, info.spws, info.specmode, info.kind
    ('ngc1234', (17,), 'cube', 'pbcor')
    """
    header = header or {}
    name_field = parse_field(filename)
    head_field = _header_field(header)
    field, source = (head_field, "header") if head_field else ((name_field, "name") if name_field else ("", ""))
    spws = parse_spws(filename)
    nchan = header_nchan(header) if header else None
    mode = parse_specmode(filename)
    if mode == "mfs" and len(spws) != 1:
        mode = "cont"  # an mfs image over all spws is the continuum image
    if not mode:
        if nchan and nchan > 1:
            mode = "cube"
        elif len(spws) == 1:
            mode = "mfs"
        else:
            mode = "cont"
    ra, dec, fov = _centre(header) if header else (None, None, None)
    kind = parse_kind(filename)
    if header and kind in MEASURED_KINDS:
        kind = header_kind(header) or kind
    return ImageInfo(
        file=str(filename), field=field, field_from=source, spws=spws, specmode=mode,
        kind=kind, label=_label(header, filename), name_field=name_field, name_fields=name_candidates(filename),
        header_field=head_field, ra_deg=ra,
        dec_deg=dec, fov_deg=fov, freq_ghz=header_frequency_ghz(header) if header else None, nchan=nchan,
    )


def separation_arcsec(a: ImageInfo, b: ImageInfo) -> float | None:
    """Angular distance between two image centres in arcsec, or None when unknown."""
    if None in (a.ra_deg, a.dec_deg, b.ra_deg, b.dec_deg):
        return None
    ra1, de1, ra2, de2 = map(math.radians, (a.ra_deg, a.dec_deg, b.ra_deg, b.dec_deg))
    cos = math.sin(de1) * math.sin(de2) + math.cos(de1) * math.cos(de2) * math.cos(ra1 - ra2)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos)))) * 3600


def _field_score(a: ImageInfo, b: ImageInfo, position_tol_arcsec: float) -> tuple[float, str] | None:
    """How strongly ``a`` and ``b`` are the same field: 3 header, 2 name, 1 position; None if not."""
    if a.header_field and b.header_field and a.header_field == b.header_field:
        return 3.0, f"field {a.header_field} (headers)"
    names_a = {n for n in (a.header_field, a.name_field) if n}
    names_b = {n for n in (b.header_field, b.name_field) if n}
    common = names_a & names_b
    if common:
        return 2.0, f"field {sorted(common)[0]} (names)"
    loose = (names_a & set(b.name_fields)) | (names_b & set(a.name_fields))
    if loose:
        return 1.5, f"field {sorted(loose)[0]} (start of a name)"
    sep = separation_arcsec(a, b)
    if sep is not None:
        tol = max(position_tol_arcsec, 0.05 * 3600 * min(a.fov_deg or 0, b.fov_deg or 0))
        if sep <= tol:
            return 1.0, f"same sky position ({sep:.1f}\" apart)"
    return None


def _overlap_fraction(a: tuple[float, float], b: tuple[float, float], of_wider: bool = False) -> float:
    """Overlap of two frequency ranges as a fraction of the narrower one (or of the wider one).

    >>> _overlap_fraction((100, 110), (105, 106)), _overlap_fraction((100, 110), (105, 106), of_wider=True)
    (1.0, 0.1)
    """
    low, high = max(a[0], b[0]), min(a[1], b[1])
    narrow = (max if of_wider else min)(a[1] - a[0], b[1] - b[0])
    if narrow <= 0:
        return 1.0 if low <= high else 0.0
    return max(0.0, high - low) / narrow


def _spectral_score(a: ImageInfo, b: ImageInfo) -> tuple[float, str] | None:
    """How well the spws agree: 2 same ids, 1 overlapping frequencies, 0.5 unknown; None if not."""
    if a.specmode != b.specmode:
        return None
    overlap = _overlap_fraction(a.freq_ghz, b.freq_ghz) if a.freq_ghz and b.freq_ghz else None
    if a.specmode == "cube" and a.freq_ghz and b.freq_ghz:
        # Cubes cover the same spw: the overlap is most of what either covers (a narrow line cube
        # inside a wide one is another spw).
        overlap = _overlap_fraction(a.freq_ghz, b.freq_ghz, of_wider=True)
        if overlap < 0.5:
            return None
    if a.spws and b.spws and a.spws == b.spws:
        return 2.0, f"spw {','.join(map(str, a.spws))}"
    if overlap is not None and overlap > 0.5:
        return 1.0, f"frequencies overlap {overlap:.0%}"
    if a.spws and b.spws:
        # Multi-EB QA2 products renumber spws (``spw0_4_8_12`` is one spw of four EBs): with no
        # frequencies to tell, the k-th spw set of one side may be the k-th of the other when
        # one side lists n times as many spws as the other.
        short, long_ = sorted((len(a.spws), len(b.spws)))
        renumbered = short != long_ and long_ % short == 0  # n EBs x the same spws
        if overlap is None and renumbered and a.spw_rank is not None and a.spw_rank == b.spw_rank:
            return 0.3, f"spws renumbered ({_spw_text(a)} ~ {_spw_text(b)}, same rank; no frequencies)"
        return None  # named spws that differ and nothing says they are the same data
    return 0.5, "spws not named on one side"


def _spw_text(info: ImageInfo) -> str:
    return "spw" + "_".join(map(str, info.spws))


def rank_spws(infos: Sequence[ImageInfo]) -> None:
    """Set ``spw_rank``: the rank of each image's spw set among those of its field and spec mode.

    >>> a, b = describe("x.NGC1_sci.spw27.cube.I.pbcor.fits"), describe("x.NGC1_sci.spw25.cube.I.pbcor.fits")
    >>> rank_spws([a, b]); a.spw_rank, b.spw_rank
    (1, 0)
    """
    groups: dict[tuple, list[ImageInfo]] = {}
    for info in infos:
        if info.spws:
            groups.setdefault((info.field, info.specmode), []).append(info)
    for members in groups.values():
        order = sorted({m.spws for m in members})
        for m in members:
            m.spw_rank = order.index(m.spws)


def pair_score(a: ImageInfo, b: ImageInfo, position_tol_arcsec: float = 5.0) -> tuple[float, list[str]] | None:
    """Score of pairing pipeline ``a`` with QA2 ``b`` (higher is better), or None if they cannot pair."""
    if a.kind != b.kind or not a.measured:
        return None
    field = _field_score(a, b, position_tol_arcsec)
    spectral = _spectral_score(a, b)
    if field is None or spectral is None:
        return None
    score = field[0] * 10 + spectral[0]
    sep = separation_arcsec(a, b)
    if sep is not None:
        score += 1.0 / (1.0 + sep)
    return score, [field[1], spectral[1], a.specmode, a.kind]


def associate(pl: Sequence[ImageInfo], qa2: Sequence[ImageInfo], position_tol_arcsec: float = 5.0) -> Association:
    """Pair pipeline and QA2 images one-to-one, best score first; list the rest on each side.

    >>> a = describe("member.uid___A001_X1_X2.NGC1234_sci.spw16_18.cont.I.pbcor.fits")
    >>> b = describe("NGC1234_cont.manual.pbcor.fits")
    >>> result = associate([a], [b])
    >>> [(p.pl.file, p.qa2.file) for p in result.pairs], result.unmatched_pl, result.unmatched_qa2
    ([('member.uid___A001_X1_X2.NGC1234_sci.spw16_18.cont.I.pbcor.fits', 'NGC1234_cont.manual.pbcor.fits')], [], [])
    """
    pl_measured = [i for i in pl if i.measured]
    qa2_measured = [i for i in qa2 if i.measured]
    rank_spws(pl_measured)
    rank_spws(qa2_measured)
    ignored = [i for i in (*pl, *qa2) if not i.measured]
    candidates = []
    for i, a in enumerate(pl_measured):
        for j, b in enumerate(qa2_measured):
            scored = pair_score(a, b, position_tol_arcsec)
            if scored is not None:
                candidates.append((scored[0], i, j, scored[1]))
    candidates.sort(key=lambda c: (-c[0], pl_measured[c[1]].file, qa2_measured[c[2]].file))
    used_pl: set[int] = set()
    used_qa2: set[int] = set()
    pairs = []
    for score, i, j, evidence in candidates:
        if i in used_pl or j in used_qa2:
            continue
        used_pl.add(i)
        used_qa2.add(j)
        pairs.append(Pair(pl=pl_measured[i], qa2=qa2_measured[j], score=score, evidence=evidence))
    pairs.sort(key=lambda p: p.pl.file)
    return Association(
        pairs=pairs,
        unmatched_pl=[a for i, a in enumerate(pl_measured) if i not in used_pl],
        unmatched_qa2=[b for j, b in enumerate(qa2_measured) if j not in used_qa2],
        ignored=ignored,
    )

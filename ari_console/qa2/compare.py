"""Compare a pipeline measurement with its QA2 partner: ratios and a verdict.

Pure: measurements in (dicts with the ``ari qa2 measure`` keys), flat rows out,
ready to be stored one row per pair. The verdict rule is written down in
docs/qa2.md; in short, with ``snr = min(snr_pl, snr_qa2)`` and ``beams`` the
larger flux region in beams:

- flux: ``|flux_ratio - 1| <= max(0.05, 3 sqrt(beams) / snr)``;
- peak (only when both images show a compact source, flux/peak <= 1.5 beam):
  ``|peak_ratio - 1| <= max(0.05, 3 / snr)``;
- when ``snr < 5`` no source is detected: flux and peak are not judged;
- rms and beam (sqrt(bmaj bmin)) ratios within a factor 2; a cube's rms is
  compared by its median over channels (``rms_median``) when both images have
  it, since one channel's rms is a single draw of the noise.

Anything outside is ``discrepant`` and the row's ``reasons`` says why.

When the two images were also compared over the same sky (:mod:`ari_console.qa2.sky`), the
``flux_ratio`` is the one of the field totals over the union of both images' source regions,
its tolerance the one of that total, and every matched source must agree within its own
tolerance; the row then carries ``sources`` (one dict per source: flux, peak, offset, found in
``both``/``pl``/``qa2``, verdict), ``unmatched_sources`` and, for cubes, ``channels`` (the
spectra on a common frequency axis and which channels differ).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field as dc_field
from typing import Mapping

from ari_console.qa2.associate import Association

CONSISTENT = "consistent"
DISCREPANT = "discrepant"


@dataclass(frozen=True)
class Rule:
    """The tolerances of the verdict (see docs/qa2.md)."""

    flux_floor: float = 0.05
    peak_floor: float = 0.05
    k_sigma: float = 3.0
    detection_snr: float = 5.0
    compact_flux_per_peak: float = 1.5
    rms_factor: float = 2.0
    beam_factor: float = 2.0


def rules_version(rule: Rule = Rule()) -> str:
    """A short fingerprint of the verdict's tolerances, stored with every verdict they made.

    >>> rules_version() == rules_version(Rule()) != rules_version(Rule(flux_floor=0.1))
    True
    """
    import hashlib

    text = ";".join(f"{k}={v!r}" for k, v in sorted(asdict(rule).items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Comparison:
    """One pipeline/QA2 pair: the contract keys, then the evidence (a flat row)."""

    pl: str
    qa2: str
    field: str
    spw: str
    specmode: str
    peak_ratio: float
    flux_ratio: float
    rms_ratio: float
    beam_ratio: float
    verdict: str
    kind: str = ""
    snr_min: float = float("nan")
    flux_tolerance: float = float("nan")
    peak_tolerance: float = float("nan")
    peak_judged: bool = False
    pl_flux: float = float("nan")
    qa2_flux: float = float("nan")
    pl_peak: float = float("nan")
    qa2_peak: float = float("nan")
    reasons: str = ""
    pl_total: float = float("nan")
    qa2_total: float = float("nan")
    sources: list = dc_field(default_factory=list)
    unmatched_sources: list = dc_field(default_factory=list)
    channels: dict | None = None
    notes: list = dc_field(default_factory=list)

    def as_dict(self) -> dict:
        """Plain dict with the contract keys first."""
        return asdict(self)


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when it is undefined.

    >>> ratio(2.0, 4.0), math.isnan(ratio(1.0, 0.0))
    (0.5, True)
    """
    try:
        value = float(a) / float(b)
    except (TypeError, ZeroDivisionError, ValueError):
        return float("nan")
    return value if math.isfinite(value) else float("nan")


def _num(m: Mapping, key: str) -> float:
    value = m.get(key)
    return float(value) if isinstance(value, (int, float)) and value is not None else float("nan")


def _outside_factor(value: float, factor: float) -> bool:
    """True when ``value`` is NaN or outside [1/factor, factor]."""
    return not math.isfinite(value) or value > factor or value < 1 / factor


def _compact(m: Mapping, rule: Rule) -> bool:
    """True when the image's source is compact: flux / peak at most ``compact_flux_per_peak`` beams."""
    per_beam = ratio(_num(m, "flux"), _num(m, "peak"))
    return math.isfinite(per_beam) and per_beam <= rule.compact_flux_per_peak


def _is_cube(m: Mapping) -> bool:
    """True for a measurement of several channels that carries its median rms over them."""
    return _num(m, "nchan") > 1 and math.isfinite(_num(m, "rms_median"))


def compare(pl: Mapping, qa2: Mapping, rule: Rule = Rule(), sky=None) -> Comparison:
    """Ratios pipeline / QA2 and the verdict for one pair of measurements.

    >>> pl = dict(file="a", field="f", spw="17", specmode="cube", peak=1.0, flux=1.0, rms=0.01,
    ...           snr=100.0, beam_major=1.0, beam_minor=1.0, region_beams=10.0)
    >>> c = compare(pl, {**pl, "file": "b", "flux": 0.97})
    >>> c.verdict, round(c.flux_ratio, 3)
    ('consistent', 1.031)
    >>> compare(pl, {**pl, "file": "b", "flux": 0.8, "peak": 0.8}).verdict
    'discrepant'
    """
    peak_ratio = ratio(_num(pl, "peak"), _num(qa2, "peak"))
    flux_ratio = ratio(_num(pl, "flux"), _num(qa2, "flux"))
    noise = "rms_median" if _is_cube(pl) and _is_cube(qa2) else "rms"  # one channel's rms is one draw
    rms_ratio = ratio(_num(pl, noise), _num(qa2, noise))
    beam_ratio = ratio(math.sqrt(max(_num(pl, "beam_major") * _num(pl, "beam_minor"), 0.0)),
                       math.sqrt(max(_num(qa2, "beam_major") * _num(qa2, "beam_minor"), 0.0)))
    snrs = [s for s in (_num(pl, "snr"), _num(qa2, "snr")) if not math.isnan(s)]
    snr = min(snrs) if snrs else float("nan")
    beams = max([b for b in (_num(pl, "region_beams"), _num(qa2, "region_beams"), 1.0) if math.isfinite(b)])
    flux_tol = max(rule.flux_floor, rule.k_sigma * math.sqrt(beams) / snr) if snr > 0 else float("inf")
    peak_tol = max(rule.peak_floor, rule.k_sigma / snr) if snr > 0 else float("inf")
    reasons: list[str] = []
    detected = math.isfinite(snr) and snr >= rule.detection_snr
    peak_judged = detected and _compact(pl, rule) and _compact(qa2, rule)
    if not detected:
        reasons.append(f"no source above {rule.detection_snr:g} sigma: flux and peak not judged")
    else:
        if not math.isfinite(flux_ratio) or abs(flux_ratio - 1) > flux_tol:
            reasons.append(f"flux ratio {flux_ratio:.3f} outside 1 ± {flux_tol:.3f}")
        if peak_judged and (not math.isfinite(peak_ratio) or abs(peak_ratio - 1) > peak_tol):
            reasons.append(f"peak ratio {peak_ratio:.3f} outside 1 ± {peak_tol:.3f}")
    if _outside_factor(rms_ratio, rule.rms_factor):
        reasons.append(f"rms ratio {rms_ratio:.3f} beyond a factor {rule.rms_factor:g}")
    if _outside_factor(beam_ratio, rule.beam_factor):
        reasons.append(f"beam ratio {beam_ratio:.3f} beyond a factor {rule.beam_factor:g}")
    extra: dict = {}
    if sky is not None:
        flux_ratio, extra = _with_sky(sky, reasons, detected, rule, flux_ratio)
    discrepant = any(not r.startswith("no source") for r in reasons)
    return Comparison(
        pl=str(pl.get("file", "")), qa2=str(qa2.get("file", "")), field=str(pl.get("field") or qa2.get("field", "")),
        spw=str(pl.get("spw") or qa2.get("spw") or ""), specmode=str(pl.get("specmode", "")),
        peak_ratio=peak_ratio, flux_ratio=flux_ratio, rms_ratio=rms_ratio, beam_ratio=beam_ratio,
        verdict=DISCREPANT if discrepant else CONSISTENT, kind=str(pl.get("kind", "")), snr_min=snr,
        flux_tolerance=extra.pop("flux_tolerance", flux_tol), peak_tolerance=peak_tol, peak_judged=peak_judged,
        pl_flux=_num(pl, "flux"), qa2_flux=_num(qa2, "flux"), pl_peak=_num(pl, "peak"),
        qa2_peak=_num(qa2, "peak"), reasons="; ".join(reasons), **extra,
    )


def _with_sky(sky, reasons: list[str], detected: bool, rule: Rule, peak_region_ratio: float) -> tuple[float, dict]:
    """Replace the peak-region flux judgement by the same-sky one: field total and every source.

    With no source covered by both images there is no field total: the peak regions' ratio stays
    (and its judgement), and a note says why."""
    covered = [s for s in sky.sources if s.covered]
    if not covered:
        notes = [*sky.notes, "no source covered by both images: flux ratio of the peak regions"]
        return peak_region_ratio, dict(sources=[s.as_dict() for s in sky.sources], notes=notes,
                                       channels=sky.channels)
    # Cubes: the spectra on one axis replace the peak channel's peak (channels of other widths
    # sample a line's peak differently).
    dropped = ("flux ratio", "peak ratio") if sky.channels else ("flux ratio",)
    reasons[:] = [r for r in reasons if not r.startswith(dropped)]
    total = sky.total_ratio
    if detected and (not math.isfinite(total) or abs(total - 1) > sky.total_tolerance):
        reasons.append(f"field total ratio {total:.3f} outside 1 ± {sky.total_tolerance:.3f} "
                       f"(union of both images' sources)")
    bad = sky.discrepant_sources
    if bad:
        reasons.append("; ".join(f"source {s.id} ({s.found_in}): {s.reasons}" for s in bad[:5])
                       + (f"; {len(bad) - 5} more" if len(bad) > 5 else ""))
    if sky.channels and sky.channels.get("differing_channels"):
        reasons.append(sky.channels["explanation"])
    unmatched = [{"id": s.id, "found_in": s.found_in, "ra_deg": s.ra_deg, "dec_deg": s.dec_deg,
                  "flux": s.pl_flux if s.found_in == "pl" else s.qa2_flux} for s in sky.unmatched]
    return total, dict(pl_total=sky.pl_total, qa2_total=sky.qa2_total, sources=[s.as_dict() for s in sky.sources],
                       unmatched_sources=unmatched, channels=sky.channels, notes=list(sky.notes),
                       flux_tolerance=sky.total_tolerance)


@dataclass
class Report:
    """The outcome of comparing two directories: pairs, orphans, unmeasurable files."""

    pairs: list[Comparison]
    unmatched_pl: list[str]
    unmatched_qa2: list[str]
    ignored: list[str] = dc_field(default_factory=list)
    errors: list[str] = dc_field(default_factory=list)

    def as_dict(self) -> dict:
        """The ``ari qa2 compare --json`` document."""
        return {
            "pairs": [p.as_dict() for p in self.pairs],
            "unmatched_pl": self.unmatched_pl,
            "unmatched_qa2": self.unmatched_qa2,
            "ignored": self.ignored,
            "errors": self.errors,
            "consistent": sum(p.verdict == CONSISTENT for p in self.pairs),
            "discrepant": sum(p.verdict == DISCREPANT for p in self.pairs),
        }


def compare_association(association: Association, measurements: Mapping[str, Mapping],
                        errors: Mapping[str, str] | None = None, rule: Rule = Rule(),
                        skies: Mapping | None = None) -> Report:
    """Compare every pair whose two files were measured; a pair with a failed side goes to errors.

    ``measurements`` maps a file to its measurement dict; ``errors`` maps a file to the line
    that says why it could not be measured; ``skies`` maps (pipeline file, QA2 file) to their
    same-sky comparison (:func:`ari_console.qa2.sky.compare_images`).
    """
    errors = dict(errors or {})
    pairs: list[Comparison] = []
    failed: list[str] = []
    for pair in association.pairs:
        a, b = measurements.get(pair.pl.file), measurements.get(pair.qa2.file)
        if a is None or b is None:
            bad = [f for f in (pair.pl.file, pair.qa2.file) if f not in measurements]
            failed.append(f"pair {pair.pl.file} / {pair.qa2.file} not compared: "
                          + "; ".join(errors.get(f, f"{f}: not measured") for f in bad))
            continue
        pairs.append(compare(a, b, rule, sky=(skies or {}).get((pair.pl.file, pair.qa2.file))))
    return Report(
        pairs=pairs,
        unmatched_pl=[i.file for i in association.unmatched_pl],
        unmatched_qa2=[i.file for i in association.unmatched_qa2],
        ignored=[i.file for i in association.ignored],
        errors=failed,
    )


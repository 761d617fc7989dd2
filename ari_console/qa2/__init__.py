"""QA2 comparison: pair pipeline and QA2 images, measure them, flag discrepancies.

- :mod:`ari_console.qa2.associate` pairs files by field, spws, spec mode and kind;
- :mod:`ari_console.qa2.measure` measures peak, rms, flux, beam, SNR of one FITS image;
- :mod:`ari_console.qa2.sources` finds sources (noise of emission-free pixels, segmentation
  with deblending) in one plane;
- :mod:`ari_console.qa2.sky` measures two images over the same sky: sources matched through
  the WCS, per-source fluxes, the field total, and spectra for cubes;
- :mod:`ari_console.qa2.compare` turns two measurements into ratios and a verdict.
"""

from __future__ import annotations



from pathlib import Path
from typing import Callable

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz")


def fits_in(directory: Path) -> list[str]:
    """The FITS files directly in ``directory``, sorted."""
    return sorted(str(p) for p in Path(directory).iterdir()
                  if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES))


def measure_all(paths: list[str], warn: Callable[[str], None] = lambda msg: None) -> tuple[dict, dict[str, str]]:
    """Measure every path: (file -> Measurement, file -> one-line problem); a bad file never stops the batch."""
    from .measure import MeasureError, measure_file

    done, failed = {}, {}
    for path in paths:
        try:
            m = measure_file(path)
        except MeasureError as exc:
            failed[path] = str(exc)
            warn(failed[path])
            continue
        except Exception as exc:  # our bug on an unusual file: say so, keep the batch going
            failed[path] = f"{path}: could not be measured ({type(exc).__name__}: {exc}) — report this file as an ari bug"
            warn(failed[path])
            continue
        for note in m.notes:
            warn(note)
        done[path] = m
    return done, failed


def compare_dirs(pl_dir: Path, qa2_dir: Path, warn: Callable[[str], None] = lambda msg: None):
    """Pair the FITS images of two directories, measure both sides and judge each pair: a compare Report."""
    from .associate import associate
    from .compare import compare_association
    from .measure import describe_file

    pl_files, qa2_files = fits_in(pl_dir), fits_in(qa2_dir)
    association = associate([describe_file(p) for p in pl_files], [describe_file(p) for p in qa2_files])
    wanted = [f for pair in association.pairs for f in (pair.pl.file, pair.qa2.file)]
    done, failed = measure_all(wanted, warn)
    skies = {}
    for pair in association.pairs:
        if pair.pl.file in done and pair.qa2.file in done:
            key = (pair.pl.file, pair.qa2.file)
            try:
                skies[key] = compare_sky(*key)
            except Exception as exc:  # our bug on an unusual pair: say so, keep the peak-region comparison
                warn(f"{pair.pl.file} / {pair.qa2.file}: same-sky comparison failed ({type(exc).__name__}: {exc})"
                     " — the flux ratio is the peak regions'; report these files as an ari bug")
    return compare_association(association, {f: m.as_dict() for f, m in done.items()}, failed, skies=skies)


def compare_sky(pl_file: str, qa2_file: str):
    """Compare two image files over the same sky: a :class:`ari_console.qa2.sky.SkyComparison`."""
    from .measure import open_image
    from .sky import compare_images

    return compare_images(open_image(pl_file), open_image(qa2_file))

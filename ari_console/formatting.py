"""How sizes and durations read, the same in the CLI, the console and the report.

One formatter per kind of number, so ``ari attempts``, the console's queue and
the report's tables never disagree on how long an attempt ran or how big a data
set is. Durations are compact and exact enough to act on (``3h05m``, not "3
hours"); sizes are decimal, as the archive gives them, with three significant
digits (humanize's ``naturalsize``). Unknown values read ``""``; callers that
want a placeholder add it. Pure and light: no typer, rich or Textual here (the
fast ``ari status`` path imports it).
"""

from __future__ import annotations


def duration_text(seconds: float | None) -> str:
    """A duration: ``"45s"``, ``"12m"``, ``"3h05m"``, ``"2d04h"``; ``""`` when unknown.

    >>> duration_text(11100), duration_text(59), duration_text(2 * 86400 + 4 * 3600), duration_text(None)
    ('3h05m', '59s', '2d04h', '')
    """
    if seconds is None:
        return ""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def hours_text(hours: float | None) -> str:
    """A duration given in hours (what estimates and runtimes carry), read like :func:`duration_text`.

    >>> hours_text(0.04), hours_text(26.5), hours_text(None)
    ('2m', '1d02h', '')
    """
    return "" if hours is None else duration_text(hours * 3600)


def size_text(nbytes: float | None) -> str:
    """A size in bytes: ``"778 kB"``, ``"12.3 GB"``, ``"1.5 TB"``; ``""`` when unknown.

    >>> size_text(778_000), size_text(12.34e9), size_text(1.5e12), size_text(None)
    ('778 kB', '12.3 GB', '1.5 TB', '')
    """
    if nbytes is None:
        return ""
    import humanize

    return humanize.naturalsize(nbytes, format="%.3g")


def gb_text(gb: float | None) -> str:
    """A size given in GB (what the store and the scheduler carry), read like :func:`size_text`.

    >>> gb_text(0.85), gb_text(12.34), gb_text(None)
    ('850 MB', '12.3 GB', '')
    """
    return "" if gb is None else size_text(gb * 1e9)

"""The CASA 6 install beside the console: its offline site config and its version.

``ari init`` writes both into a new ``ari.toml`` for the local node; the demo uses
the same two facts. CASA itself is never imported here (the console never runs
CASA): the version comes from the installed ``casatools`` distribution's metadata.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def casa_site_config() -> Path | None:
    """The offline CASA site config of this install (``make`` writes it into the venv), if any."""
    env = os.environ.get("CASASITECONFIG")
    if env and Path(env).is_file():
        return Path(env)
    site = Path(sys.prefix) / "casasiteconfig.py"
    return site if site.is_file() else None


def casa_version_text(version_string: str) -> str:
    """``6.7.0.31`` -> ``6.7.0-31`` (the way restore scripts name CASA versions).

    >>> casa_version_text("6.7.0.31")
    '6.7.0-31'
    """
    parts = version_string.split(".")
    return ".".join(parts[:3]) + (f"-{parts[3]}" if len(parts) > 3 else "")


def local_casa_version() -> str | None:
    """The installed casatools version as restore scripts name it (``6.7.0-31``), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return casa_version_text(version("casatools"))
    except PackageNotFoundError:
        return None

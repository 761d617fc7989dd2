"""The CASA 6 install beside the console: its offline site config and its version.

``ari init`` writes both into a new ``ari.toml`` for the local node; the demo uses
the same two facts. CASA itself is never imported here (the console never runs
CASA): the version comes from the installed ``casatools`` distribution's metadata.
"""

from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
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


def _parts(version: str) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[.\-]", version.strip()) if p)


@lru_cache(maxsize=4096)
def _install_key(needed: str, installed: tuple[str, ...]) -> str | None:
    want = _parts(needed)
    if not want:
        return None
    fits = []
    for key in installed:
        have = _parts(key)
        if have == want:
            return key
        if have[:len(want)] == want or (len(have) >= 3 and want[:len(have)] == have):
            fits.append(key)
    return fits[0] if fits else None


def casa_install_key(needed: str | None, installed) -> str | None:
    """The key of ``installed`` (a node's CASA versions) that serves a data set needing ``needed``.

    Versions are spelled three ways: ``6.5.4.9`` (a pipeline manifest), ``6.5.4-9`` (restore
    scripts, ``ari init``) and ``5.1.1`` (a manual script's version check). They are compared by
    their numbers: an exact match first, then a node's build of the named release (the data set
    names fewer numbers than the node), then a node that names its release without the build
    (``6.5.4`` serves ``6.5.4.9``; a bare ``6.5`` is too vague to serve anything but ``6.5``).

    >>> casa_install_key("6.5.4.9", ("6.5.4-9", "4.7.2"))
    '6.5.4-9'
    >>> casa_install_key("5.1.1", ("6.5.4-9", "5.1.1-5"))
    '5.1.1-5'
    >>> casa_install_key("6.5.4.9", ("6.5.4",)), casa_install_key("6.5.4.9", ("6.5",))
    ('6.5.4', None)
    >>> casa_install_key("6.5.4-9", ("6.5.4-10",)) is None
    True
    """
    if needed is None:
        return None
    return _install_key(needed, tuple(installed))

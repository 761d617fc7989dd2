"""JSON output of every --json read (no rich here: the fast `ari status --json` path uses it)."""

from __future__ import annotations

import json
import math
import sys
from typing import Any


def plain(value: Any) -> Any:
    """``value`` made JSON-safe: NaN/inf -> None, tuples -> lists, paths -> str.

    >>> plain({"a": float("nan"), "b": (1, 2)})
    {'a': None, 'b': [1, 2]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return plain(value.item())
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


INDENT_UP_TO = 256 * 1024
"""Answers up to this many characters are printed indented for people; longer ones on one line."""


def dumps(value: Any) -> str:
    """``value`` as JSON text: indented when short, compact when long.

    Why: ``json`` encodes with its C encoder only without ``indent``; indented, a 2 MB
    answer (``ari attempts --json`` on a big campaign) takes ten times as long. Values that
    are already JSON-safe skip ``plain``'s walk.

    >>> print(dumps({"a": [1]}))
    {
      "a": [
        1
      ]
    }
    >>> len(dumps(list(range(100_000)))) < 600_000
    True
    """
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):  # NaN, a path, a numpy scalar: make it plain first
        value = plain(value)
        text = json.dumps(value, separators=(",", ":"))
    return json.dumps(value, indent=2) if len(text) <= INDENT_UP_TO else text


def emit_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (the --json contract of every read)."""
    sys.stdout.write(dumps(value) + "\n")

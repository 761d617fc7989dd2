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


def emit_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (the --json contract of every read)."""
    sys.stdout.write(json.dumps(plain(value), indent=2) + "\n")

"""Signatures and groups: a decisive message with numbers, paths and uids masked, so that
attempts that failed for one cause group together (one fix for the operator).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from ari_console.triage.scanner import Verdict


@dataclass
class Group:
    """Attempts that failed with one signature: one cause an operator fixes once."""

    signature: str
    category: str
    count: int
    example_uids: list[str]



_KEEP_NUMBER_AFTER = ("http error ", "http error: ", "errno ", "code ", "status ", "signal ", "curl: (", "error ", "exit ")
_MASKS: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"uid://\w+/\w+/\w+(?:/\w+)*", re.I), "<uid>"),
    (re.compile(r"\buid___\w+?_\w+?_\w+(?:\.[\w-]+)*", re.I), "<uid>"),
    (re.compile(r"\b\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?)?Z?"), "<date>"),
    (re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\w* +(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\w* +\d+ +[\d:]+(?: +[A-Z]{3,4})?(?: +\d{4})?"), "<date>"),
    (re.compile(r"\b\d\d:\d\d:\d\d(?:\.\d+)?\b"), "<time>"),
    (re.compile(r"(?:[A-Za-z]:)?(?:~|\.{1,2})?(?:/[^\s'\"()\[\],;:]+)+/?|\b[\w.+-]+(?:/[\w.+-]+)+/?"), "<path>"),
    (re.compile(r"\b(?=[\w.+-]*\d)[\w+-]+(?:\.[\w+-]+){2,}\b"), "<name>"),  # data names, not python.dotted.names
    (re.compile(r"\b[\w+-]+\.(?:ms|tbl|cal|fits|image|pbcor|psf|pb|residual|model|mask|cl|log|txt|xml|tar|tgz|gz|py)\b", re.I), "<name>"),
    (re.compile(r"\b(field|source|target|object)(\s*[=:]\s*|\s+)(?!(?:expression|selection|names?|ids?|intent|list|for|of|in|is)\b)(['\"]?)[^\s,'\";:]+\3(?!:)", re.I), r"\1\2<field>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<hex>"),
)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_SPACES = re.compile(r"\s+")
_NUMBER_LIST = re.compile(r"<n>(?:\s*[,;]\s*<n>)+")  # "spw 25, 27, 29" and "spw 17, 19" group together


def _mask_number(m: re.Match) -> str:
    """'<n>' for a number, except an error/exit/signal code that tells causes apart."""
    before = m.string[max(0, m.start() - 12): m.start()].lower()
    if any(before.endswith(k) for k in _KEEP_NUMBER_AFTER) and len(m.group()) <= 4:
        return m.group()
    return "<n>"


def signature(message: str) -> str:
    """``message`` with uids, dates, paths, names, fields, hex and numbers masked.

    >>> signature("Table /scratch/a/uid___A002_X1_X2.ms.hif_bandpass.tbl does not exist.")
    'Table <path> does not exist.'
    >>> signature("urllib.error.HTTPError: HTTP Error 503: retry 3 of uid://A001/X1296/X1d3")
    'urllib.error.HTTPError: HTTP Error 503: retry <n> of <uid>'
    """
    text = message.strip()
    for regex, repl in _MASKS:
        text = regex.sub(repl, text)
    text = _NUMBER.sub(_mask_number, text)
    text = _NUMBER_LIST.sub("<n,...>", text)
    return _SPACES.sub(" ", text).strip()[:240]


def group(items: Iterable[tuple[str, Verdict]], examples: int = 3) -> list[Group]:
    """Attempts ``(uid, verdict)`` grouped by (signature, category), biggest group first.

    >>> from ari_console.triage import classify
    >>> v = classify(["MemoryError: Unable to allocate 4.41 TiB"])
    >>> [(g.category, g.count) for g in group([("uid://A/X/1", v), ("uid://A/X/2", v)])]
    [('memory', 2)]
    """
    table: dict[tuple[str, str], Group] = {}
    for uid, verdict in items:
        key = (verdict.signature, verdict.category)
        g = table.setdefault(key, Group(verdict.signature, verdict.category, 0, []))
        g.count += 1
        if len(g.example_uids) < examples and uid not in g.example_uids:
            g.example_uids.append(uid)
    return sorted(table.values(), key=lambda g: (-g.count, g.category, g.signature))


_UID_IN_PATH = re.compile(r"uid(?:___|://|_)(\w+?)[_/](\w+?)[_/](\w+)", re.I)


def uid_from_path(path: str) -> str | None:
    """The MOUS uid a log's path names (``.../uid___A001_X1_X2/...`` -> ``uid://A001/X1/X2``)."""
    m = _UID_IN_PATH.search(path)
    return f"uid://{m.group(1)}/{m.group(2)}/{m.group(3)}" if m else None

"""The pipeline image and its QA2 partner side by side, drawn with half blocks, sources marked.

Each terminal cell shows two pixels (``▀``: the upper one in the foreground colour, the lower
one in the background colour); values in [0, 1] come from :mod:`ari_console.qa2.thumbs`. A
source is a ``+`` (green when its fluxes agree, red when they differ) with its id beside it.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import Static

from ari_console.qa2.thumbs import Thumb

# A dark-blue -> orange -> white ramp: faint emission stays visible on a dark terminal.
_RAMP = [(0, 0, 20), (20, 30, 90), (90, 40, 120), (200, 70, 60), (250, 170, 40), (255, 255, 220)]
MARK_COLOURS = {"consistent": "bold green", "discrepant": "bold red"}


def colour(value: float) -> str:
    """The ramp's colour of ``value`` in [0, 1], as ``rgb(r,g,b)``; NaN is the terminal's black.

    >>> colour(0.0), colour(1.0), colour(float("nan"))
    ('rgb(0,0,20)', 'rgb(255,255,220)', 'black')
    """
    if not math.isfinite(value):
        return "black"
    x = min(1.0, max(0.0, value)) * (len(_RAMP) - 1)
    i = min(int(x), len(_RAMP) - 2)
    f = x - i
    r, g, b = (round(a + (c - a) * f) for a, c in zip(_RAMP[i], _RAMP[i + 1]))
    return f"rgb({r},{g},{b})"


def render(thumb: Thumb) -> list[Text]:
    """The picture as lines of half-block cells (two pixel rows per line), marks drawn over it."""
    values = thumb.values
    height, width = values.shape
    marks = {(int(x), int(y) // 2): (ident, verdict) for x, y, ident, verdict in thumb.marks}
    lines = []
    for row in range(0, height, 2):
        line = Text()
        for col in range(width):
            top = float(values[row, col])
            bottom = float(values[row + 1, col]) if row + 1 < height else float("nan")
            mark = marks.get((col, row // 2))
            if mark:
                line.append("+", style=f"{MARK_COLOURS.get(mark[1], 'bold yellow')} on {colour(max(top, bottom))}")
            else:
                line.append("▀", style=f"{colour(top)} on {colour(bottom)}")
        lines.append(line)
    return lines


def side_by_side(left: Thumb, right: Thumb, gap: int = 3) -> Text:
    """Both pictures in one block of text, titled, with the marks' ids listed below."""
    a, b = render(left), render(right)
    width = left.values.shape[1]
    out = Text()
    out.append(left.title.ljust(width + gap), style="bold")
    out.append(right.title, style="bold")
    for la, lb in zip(a, b):
        out.append("\n")
        out.append_text(la)
        out.append(" " * gap)
        out.append_text(lb)
    if left.marks:
        out.append("\n")
        for x, y, ident, verdict in left.marks:
            out.append(f"+{ident} ", style=MARK_COLOURS.get(verdict, "bold yellow"))
    return out


class SkyPair(Static):
    """Shows a pair of pictures, or a one-line message when there is none."""

    def show_pair(self, left: Thumb, right: Thumb) -> None:
        self.update(side_by_side(left, right))

    def show_message(self, text: str) -> None:
        self.update(Text(text, style="dim"))

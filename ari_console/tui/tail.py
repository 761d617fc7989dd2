"""Reading a growing log file a little at a time.

The console shows the *local mirror* of an attempt's log (the engine copies
new bytes from the node into it). These functions read only bytes not yet
read (the caller keeps the offset), never more than a window, so a
multi-GB log opens at once and a fast-growing one costs little.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

WINDOW = 256 * 1024
"""Bytes read at most per call: the tail of a big file, or a burst of a fast one."""


@dataclass(frozen=True)
class Chunk:
    """Complete lines read from ``start`` up to ``offset`` (where the next read starts).

    ``skipped`` counts bytes jumped over (a backlog larger than the window);
    ``first_line`` is the 1-based number of the first line when it is known.
    """

    lines: list[str]
    offset: int
    skipped: int = 0
    truncated: bool = False
    first_line: int | None = None


def read_new(path: str | os.PathLike, offset: int, window: int = WINDOW) -> Chunk:
    """The complete lines appended to ``path`` since ``offset``.

    A backlog larger than ``window`` is skipped to its last ``window`` bytes
    (``skipped`` says how much); a file that shrank (rotated, rewritten) is
    read again from the start (``truncated``). A partial last line stays
    unread until its newline arrives.
    """
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return Chunk([], offset)
    truncated = size < offset
    if truncated:
        offset = 0
    if size == offset:
        return Chunk([], offset, truncated=truncated)
    skipped = 0
    start = offset
    if size - offset > window:
        start = size - window
        skipped = start - offset
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(size - start)
    if skipped:  # drop the partial line we landed in
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else b""
        start = size - len(data)
        skipped = start - offset
    end = data.rfind(b"\n")
    if end < 0:
        return Chunk([], start, skipped, truncated)
    text = data[:end].decode("utf-8", errors="replace")
    first = 1 if offset == 0 and not skipped else None
    return Chunk(text.split("\n"), start + end + 1, skipped, truncated, first)


def read_around(path: str | os.PathLike, line_no: int, before: int = 200, after: int = 200,
                block: int = 1 << 20) -> Chunk:
    """Lines ``line_no - before`` .. ``line_no + after`` of ``path`` (1-based), read in blocks.

    Counts newlines block by block, so memory stays bounded for any file size;
    ``first_line`` is the number of the first returned line.
    """
    want_from = max(1, line_no - before)
    want_to = line_no + after
    lines: list[str] = []
    current = 1
    pending = b""
    pos = 0
    with open(path, "rb") as f:
        while current <= want_to:
            data = f.read(block)
            if not data:
                break
            pos += len(data)
            data = pending + data
            parts = data.split(b"\n")
            pending = parts.pop()
            if current + len(parts) < want_from:
                current += len(parts)
                continue
            for part in parts:
                if want_from <= current <= want_to:
                    lines.append(part.decode("utf-8", errors="replace"))
                current += 1
                if current > want_to:
                    break
    if pending and want_from <= current <= want_to:
        lines.append(pending.decode("utf-8", errors="replace"))
    return Chunk(lines, pos, first_line=want_from)

"""A log that streams a growing file: follow, pause, filter, SEVERE/ERROR highlighted.

Only new bytes are read (the widget keeps the offset), at most a window at a
time, in a thread worker; the buffer is bounded (``max_lines``), so a
fast-growing or multi-GB log costs the UI thread only the lines it shows.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from pathlib import Path

from rich.highlighter import Highlighter
from rich.text import Text
from textual import work
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Log
from textual.worker import get_current_worker

from .. import tail
from ..views import RowFilter, matches

SEVERE = re.compile(r"\b(SEVERE|ERROR|Traceback|Exception)\b")
WARN = re.compile(r"\bWARN(ING)?\b")
GUTTER = re.compile(r"^ *(\d+) │")
MAX_LINE = 2000


class LogHighlighter(Highlighter):
    """SEVERE/ERROR lines in red, WARN in yellow, the decisive line reversed, filter matches underlined."""

    def __init__(self) -> None:
        self.decisive: int | None = None
        self.search: re.Pattern | None = None

    def highlight(self, text: Text) -> None:
        plain = text.plain
        if SEVERE.search(plain):
            text.stylize("bold red")
        elif WARN.search(plain):
            text.stylize("yellow")
        gutter = GUTTER.match(plain)
        if gutter:
            text.stylize("dim", 0, gutter.end())
            if self.decisive is not None and int(gutter.group(1)) == self.decisive:
                text.stylize("reverse")
        if self.search is not None:
            for m in self.search.finditer(plain):
                if m.end() > m.start():
                    text.stylize("underline", m.start(), m.end())


class LogView(Log):
    """The local mirror of one attempt's log, streamed as it grows."""

    class Status(Message):
        """Where the view is: file, offset, lines shown, follow/pause, skipped bytes."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    follow: reactive[bool] = reactive(True)
    paused: reactive[bool] = reactive(False)

    def __init__(self, max_lines: int = 5000, poll_s: float = 0.25, **kw) -> None:
        super().__init__(highlight=True, max_lines=max_lines, **kw)
        self.highlighter = LogHighlighter()
        self.poll_s = poll_s
        self.path: Path | None = None
        self.read_offset = 0
        self.next_line: int | None = 1
        self.buffer: deque[tuple[int | None, str]] = deque(maxlen=max_lines)
        self.flt = RowFilter()
        self.skipped = 0
        self._wake = threading.Event()
        self._generation = 0

    # -- what to show ------------------------------------------------------------------

    def open(self, path: str | Path | None, decisive: int | None = None) -> None:
        """Stream ``path`` from its last window; ``decisive`` is the triage line to mark."""
        self._generation += 1
        self.path = Path(path) if path else None
        self.read_offset, self.next_line, self.skipped = 0, 1, 0
        self.buffer.clear()
        self.highlighter.decisive = decisive
        self.clear()
        self.paused = False
        self.follow = True
        if self.path is not None:
            self._tail(self.path, self._generation)
        self._status()

    def set_filter(self, flt: RowFilter) -> None:
        """Show only the buffered lines that pass ``flt`` (and new ones that do)."""
        self.flt = flt
        self.highlighter.search = flt.regex if flt.active and not flt.invert else None
        self._rewrite()

    def jump_to_decisive(self) -> bool:
        """Scroll to the decisive line, loading the lines around it if they are not buffered.

        False when there is no decisive line to go to.
        """
        line = self.highlighter.decisive
        if line is None or self.path is None:
            return False
        self.follow = False
        if not self._scroll_to_line(line):
            self.paused = True
            self._load_around(self.path, line, self._generation)
        return True

    # -- reactives ---------------------------------------------------------------------

    def watch_follow(self, follow: bool) -> None:
        self.auto_scroll = follow
        if follow:
            self.scroll_end(animate=False)
        self._status()

    def watch_paused(self, paused: bool) -> None:
        if not paused:
            self._wake.set()
        self._status()

    # -- reading (thread workers) -----------------------------------------------------------

    @work(thread=True, exclusive=True, group="log-tail")
    def _tail(self, path: Path, generation: int) -> None:
        """Read new bytes of ``path`` every ``poll_s`` and hand complete lines to the UI."""
        worker = get_current_worker()
        offset = 0
        while not worker.is_cancelled and generation == self._generation:
            if not self.paused:
                chunk = tail.read_new(path, offset)
                if chunk.lines or chunk.skipped or chunk.truncated:
                    offset = chunk.offset
                    self.app.call_from_thread(self._append, chunk, generation)
                else:
                    offset = chunk.offset
            self._wake.wait(self.poll_s)
            self._wake.clear()

    @work(thread=True, exclusive=True, group="log-around")
    def _load_around(self, path: Path, line: int, generation: int) -> None:
        """Read the lines around ``line`` (for a decisive line outside the buffer)."""
        chunk = tail.read_around(path, line)
        self.app.call_from_thread(self._show_around, chunk, line, generation)

    # -- UI thread ------------------------------------------------------------------------------

    def _append(self, chunk: tail.Chunk, generation: int) -> None:
        if generation != self._generation:
            return
        if chunk.truncated:
            self.buffer.clear()
            self.clear()
            self.next_line = 1
        if chunk.skipped:
            self.skipped += chunk.skipped
            self.next_line = None
            self.buffer.append((None, f"… {chunk.skipped:,} bytes skipped …"))
        if chunk.first_line is not None:
            self.next_line = chunk.first_line
        new = []
        for text in chunk.lines:
            entry = (self.next_line, text[:MAX_LINE])
            if self.next_line is not None:
                self.next_line += 1
            self.buffer.append(entry)
            if self._passes(entry):
                new.append(self._format(entry))
        self.read_offset = chunk.offset
        if new:
            self.write_lines(new, scroll_end=self.follow)
        self._status()

    def _show_around(self, chunk: tail.Chunk, line: int, generation: int) -> None:
        if generation != self._generation:
            return
        self.buffer.clear()
        for i, text in enumerate(chunk.lines):
            self.buffer.append((chunk.first_line + i, text[:MAX_LINE]))
        self.next_line = None
        self._rewrite()
        self._scroll_to_line(line)
        self._status()

    def _passes(self, entry: tuple[int | None, str]) -> bool:
        return matches(self.flt, (entry[1],))

    def _format(self, entry: tuple[int | None, str]) -> str:
        number, text = entry
        return f"{number:>7} │ {text}" if number is not None else f"{'':>7} │ {text}"

    def _rewrite(self) -> None:
        self.clear()
        self._render_line_cache.clear()
        self.write_lines([self._format(e) for e in self.buffer if self._passes(e)], scroll_end=self.follow)

    def _scroll_to_line(self, line: int) -> bool:
        """Scroll so that file line ``line`` is in the middle; False if it is not shown."""
        prefix = f"{line:>7} │"
        for y, text in enumerate(self.lines):
            if text.startswith(prefix):
                self._render_line_cache.clear()
                self.scroll_to(y=max(0, y - self.size.height // 2), animate=False)
                return True
        return False

    def _status(self) -> None:
        if not self.is_mounted:
            return
        mode = "paused" if self.paused else ("following" if self.follow else "not following")
        skipped = f" · {self.skipped:,} bytes skipped" if self.skipped else ""
        name = self.path.name if self.path else "no log"
        self.post_message(self.Status(f"{name} · {self.read_offset:,} bytes · {len(self.buffer)} lines "
                                      f"buffered · {mode}{skipped}"))

    def on_unmount(self) -> None:
        self._generation += 1
        self._wake.set()

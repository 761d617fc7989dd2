"""Reading logs: plain, gzip, bz2 or xz, streamed in blocks of whole lines; a UserError
naming the file when it cannot be read or is not text.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from pathlib import Path
from typing import Iterator, Sequence

from ari_console.errors import UserError
from ari_console.triage.rules import RULES, Rule
from ari_console.triage.scanner import CHUNK_CHARS, Verdict, classify_blocks

def _open_text(path: Path) -> io.TextIOBase:
    """``path`` opened as text (gzip/bz2/xz by magic bytes), or a UserError saying why not."""
    try:
        with open(path, "rb") as raw:
            magic = raw.read(6)
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory — pass the log files inside it") from None
    except FileNotFoundError:
        raise UserError(f"{path}: no such file — check the path") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied — make it readable or run as its owner") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc}) — check the file") from None
    if magic.startswith(b"\x1f\x8b"):
        binary = gzip.open(path, "rb")
    elif magic.startswith(b"BZh"):
        binary = bz2.open(path, "rb")
    elif magic.startswith(b"\xfd7zXZ"):
        binary = lzma.open(path, "rb")
    else:
        binary = open(path, "rb")
    return io.TextIOWrapper(binary, encoding="utf-8", errors="replace")


def _looks_binary(sample: str) -> bool:
    """True when decoded text is not a log: NUL bytes or mostly undecodable/control characters."""
    if "\x00" in sample:
        return True
    if not sample:
        return False
    bad = sum(1 for ch in sample if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\n\r\f\v\x1b"))
    return bad > len(sample) * 0.1


def read_blocks(path: str | Path, size: int = CHUNK_CHARS) -> Iterator[str]:
    """The text of ``path`` in blocks of whole lines; UserError if it is unreadable or binary."""
    path = Path(path)
    text = _open_text(path)
    try:
        carry = ""
        first = True
        while True:
            try:
                block = text.read(size)
            except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
                raise UserError(f"{path}: cannot read ({exc}) — the file is damaged; re-fetch it") from None
            if first:
                if _looks_binary(block[:8192]):
                    raise UserError(f"{path}: binary file, not a text log — pass the CASA/pipeline/batch log (casa-*.log, *.out)")
                first = False
            if not block:
                break
            block = carry + block
            cut = block.rfind("\n") + 1
            if cut == 0:
                carry = block
                continue
            carry = block[cut:]
            yield block[:cut]
        if carry:
            yield carry
    finally:
        text.close()


def classify_file(path: str | Path, rules: Sequence[Rule] = RULES, hint: str | None = None,
                  chunk_chars: int = CHUNK_CHARS) -> Verdict:
    """Classify one log file (plain, gzip, bz2 or xz) streaming in blocks.

    Raises UserError naming the file when it cannot be read or is not text.
    """
    verdict = classify_blocks(read_blocks(path, chunk_chars), rules, hint)
    verdict.source = str(path)
    return verdict

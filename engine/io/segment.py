"""Markdown and plain text into segments: one per section under a heading, links
reduced to their text, long sections split at paragraph, line, then space boundaries
(a fenced code block split across parts is closed and reopened).

:mod:`engine.io.corpus` reads files and applies the segment rules; this module only
cuts text. Memory stays flat: a section is buffered up to ``16 x max_chars``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = (
    "Segment",
    "caps_ratio",
    "outside_code",
    "reduce_links",
    "segments_text",
    "shape",
    "split_text",
    "unescape",
)

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```+|~~~+)")
_SPACE = re.compile(r"[ \t\r\f\v]+")
_BUFFER_FACTOR = 16


@dataclass(frozen=True)
class Segment:
    """One candidate segment.

    Attributes:
        header: the heading it follows ("" when none).
        text: the section text, in its shape (see the module docstring).
        offset: position of the segment in its document: 0 for text before the first
            heading (and for a JSONL record), k for the text after the k-th heading.
        truncated: more of the section follows in the next Segment (it reached the
            buffer bound); the parts of both are numbered as one section.
        line: line of the heading in a Markdown/text file (0 when unknown).
    """

    header: str
    text: str
    offset: int
    truncated: bool = False
    line: int = 0


def caps_ratio(text: str) -> float:
    """Share of capital letters among the letters of ``text`` (0.0 without letters)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if c.isupper()) / len(letters)


_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\((?:[^()]|\([^()]*\))*\)")
_REF_LINK = re.compile(r"!?\[([^\[\]]+)\]\[[^\[\]]*\]")
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto):[^>\s]+)>")
_REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]+\S+.*$", re.M)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>|])")


def outside_code(text: str, fn: Callable[[str], str]) -> str:
    """Apply ``fn`` to the parts of Markdown ``text`` outside fences and code spans."""
    out: list[str] = []
    prose: list[str] = []
    fence: str | None = None

    def flush() -> None:
        if prose:
            chunk = "\n".join(prose)
            parts: list[str] = []
            pos = 0
            for m in _CODE_SPAN.finditer(chunk):
                parts.append(fn(chunk[pos : m.start()]))
                parts.append(m.group(0))
                pos = m.end()
            parts.append(fn(chunk[pos:]))
            out.append("".join(parts))
            prose.clear()

    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is not None:
            out.append(line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if m:
            flush()
            fence = m.group(1)
            out.append(line)
            continue
        prose.append(line)
    flush()
    return "\n".join(out)


def _reduce(text: str) -> str:
    prev = None
    while prev != text:  # links inside image alt text or link text
        prev = text
        text = _LINK.sub(lambda m: m.group(1), text)
    text = _REF_LINK.sub(lambda m: m.group(1), text)
    text = _AUTOLINK.sub(lambda m: m.group(1), text)
    return _REF_DEF.sub("", text)


def reduce_links(text: str) -> str:
    """Markdown ``text`` with links and images reduced to their text (code untouched)."""
    return outside_code(text, _reduce)


def shape(text: str) -> str:
    """Trailing spaces off every line, at most one blank line in a row, no edge blanks."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    out: list[str] = []
    for line in lines:
        if not line and (not out or not out[-1]):
            continue
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def _clean(text: str) -> str:
    return shape(reduce_links(text))


# ------------------------------------------------------------------- splitting
def _blocks(text: str) -> list[str]:
    """Paragraph blocks of ``text``: split at blank lines outside fenced code."""
    blocks: list[str] = []
    cur: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is not None:
            cur.append(line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if m:
            fence = m.group(1)
            cur.append(line)
            continue
        if not line.strip():
            if cur:
                blocks.append("\n".join(cur))
                cur = []
            continue
        cur.append(line)
    if cur:
        blocks.append("\n".join(cur))
    return blocks


def _split_long(block: str, limit: int) -> list[str]:
    """A block over ``limit``: split at lines (a fence is closed and reopened), then spaces."""
    lines = block.split("\n")
    opener = lines[0] if _FENCE.match(lines[0]) else None
    closer = _FENCE.match(lines[0]).group(1) if opener else None  # type: ignore[union-attr]
    room = limit - (len(opener) + len(closer) + 2 if opener and closer else 0)
    room = max(room, 1)
    pieces: list[str] = []
    cur: list[str] = []
    size = 0
    for line in lines:
        while len(line) > room:
            cut = line.rfind(" ", 0, room)
            cut = cut if cut > 0 else room
            if cur:
                pieces.append("\n".join(cur))
                cur, size = [], 0
            pieces.append(line[:cut].rstrip())
            line = line[cut:].lstrip()
        if cur and size + len(line) + 1 > room:
            pieces.append("\n".join(cur))
            cur, size = [], 0
        cur.append(line)
        size += len(line) + 1
    if cur:
        pieces.append("\n".join(cur))
    if opener and closer:
        fixed = []
        for i, piece in enumerate(pieces):
            if i > 0 and not _FENCE.match(piece.split("\n", 1)[0]):
                piece = f"{opener}\n{piece}"
            if i < len(pieces) - 1 and not piece.rstrip().endswith(closer):
                piece = f"{piece}\n{closer}"
            fixed.append(piece)
        pieces = fixed
    return [p for p in pieces if p.strip()]


def split_text(text: str, max_chars: int) -> list[str]:
    """``text`` in balanced parts of at most ``max_chars`` characters, cut at paragraph
    boundaries where possible (then lines, then spaces). Short text is one part."""
    if len(text) <= max_chars:
        return [text]
    n = math.ceil(len(text) / max_chars)
    target = min(max_chars, math.ceil(len(text) / n) + 1)
    units: list[str] = []
    for block in _blocks(text):
        units.extend(_split_long(block, max_chars) if len(block) > max_chars else [block])
    parts: list[str] = []
    cur: list[str] = []
    size = 0
    for unit in units:
        add = len(unit) + (2 if cur else 0)
        if cur and (size + add > max_chars or size >= target):
            parts.append("\n\n".join(cur))
            cur, size = [], 0
            add = len(unit)
        cur.append(unit)
        size += add
    if cur:
        parts.append("\n\n".join(cur))
    return parts


# ------------------------------------------------------------------------ text
def segments_text(lines: Iterator[str], *, max_chars: int) -> Iterator[Segment]:
    """Header-anchored sections of Markdown/plain text (ATX headings; fenced code is body).

    Text before the first heading is yielded with header "" (offset 0). A section is
    buffered up to ``16 x max_chars`` characters; past that it is yielded in pieces
    (``truncated`` set on all but the last).
    """
    header, offset, at = "", 0, 1
    buf: list[str] = []
    size = 0
    fence: str | None = None
    cap = _BUFFER_FACTOR * max_chars
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        m = _FENCE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
        elif m:
            fence = m.group(1)
        h = None if fence is not None or m else _HEADING.match(line)
        if h:
            text = "\n".join(buf)
            if text.strip() or header:
                yield Segment(header, _clean(text), offset, False, at)
            buf, size = [], 0
            header, offset, at = _clean(h.group(2).strip()), offset + 1, lineno
            continue
        buf.append(line)
        size += len(line) + 1
        if size > cap and fence is None and not line.strip():
            yield Segment(header, _clean("\n".join(buf)), offset, True, at)
            buf, size = [], 0
    text = "\n".join(buf)
    if text.strip() or header:
        yield Segment(header, _clean(text), offset, False, at)


# ------------------------------------------------------------------------ html


def unescape(text: str) -> str:
    """Undo Markdown's backslash escapes (``\\*`` -> ``*``)."""
    return _ESCAPE.sub(r"\1", text)

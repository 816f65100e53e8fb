"""Streaming corpus reader: web-text segments for instruction backtranslation.

A *segment* is self-contained text that follows a heading (Humpback's "text that follows
an HTML header"). Three formats are read, by file extension:

- HTML (``.html``, ``.htm``): parsed with the stdlib :class:`html.parser.HTMLParser`, fed
  64 KiB at a time; each ``<h1>``..``<h6>`` starts a segment holding the text that follows
  it up to the next heading (``script``, ``style``, ``nav``, ``header``, ``footer`` and
  similar boilerplate are skipped).
- Text and Markdown (``.md``, ``.markdown``, ``.txt``): read line by line; each ATX
  heading (``#`` .. ``######``) starts a segment.
- JSONL (``.jsonl``): one record per line, already a segment: its text field (``text``),
  its header field (``title``, optional) and its id field (``id``, else ``file:line``).

Memory is flat in the corpus size: files are walked in sorted order and read
incrementally, and a segment stops accumulating at ``max_chars`` (it is then dropped as
too long), so a huge file never sits in memory. The only state that grows is the dedup set
the caller passes in (fixed-size digests, one per distinct kept segment).

Segment rules (each configurable, see :class:`SegmentRules`), applied in this order:
empty, no header (HTML/Markdown), header capitalisation ratio, length bounds, exact dedup.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TextIO

import orjson

from ..errors import InputError
from ..records import BadInput, Item
from .readers import MAX_LINE_BYTES

__all__ = (
    "HTML_EXTENSIONS",
    "JSONL_EXTENSIONS",
    "TEXT_EXTENSIONS",
    "CorpusStats",
    "Segment",
    "SegmentRules",
    "caps_ratio",
    "iter_corpus_files",
    "read_corpus",
    "segments_html",
    "segments_text",
)

HTML_EXTENSIONS = frozenset({".html", ".htm"})
TEXT_EXTENSIONS = frozenset({".md", ".markdown", ".txt"})
JSONL_EXTENSIONS = frozenset({".jsonl"})

_CHUNK = 64 * 1024
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_SPACE = re.compile(r"[ \t\r\f\v]+")


@dataclass(frozen=True)
class SegmentRules:
    """Which segments are kept (Humpback section 2.1; exact bounds are ours).

    Attributes:
        min_chars: drop segments shorter than this (characters).
        max_chars: drop segments of this length or longer; also caps what is buffered.
        max_header_caps_ratio: drop segments whose header has a larger share of capital
            letters among its letters (the paper's "proportion of capitalized letters in
            the header"); 1.0 disables the rule.
        require_header: drop HTML/Markdown text that follows no heading.
        dedup: drop exact repeats (normalised text).
        text_field: JSONL field holding the segment text.
        header_field: JSONL field holding the header (optional per record).
        id_field: JSONL field holding the document id (else ``file:line``).
    """

    min_chars: int = 200
    max_chars: int = 6000
    max_header_caps_ratio: float = 0.6
    require_header: bool = True
    dedup: bool = True
    text_field: str = "text"
    header_field: str = "title"
    id_field: str = "id"


@dataclass
class CorpusStats:
    """What the reader saw.

    Attributes:
        files: files read.
        files_skipped: files with an extension the reader does not know.
        documents: documents read (a file, or a JSONL record).
        segments_read: candidate segments extracted, before the rules.
        dropped: rule -> segments dropped by it.
        bad_records: unreadable records or files (yielded as BadInput).
        segments: segments that passed every rule (yielded as Items).
    """

    files: int = 0
    files_skipped: int = 0
    documents: int = 0
    segments_read: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    bad_records: int = 0
    segments: int = 0

    def as_dict(self) -> dict[str, object]:
        """Plain-dict view for reports."""
        return {
            "files": self.files,
            "files_skipped": self.files_skipped,
            "documents": self.documents,
            "segments_read": self.segments_read,
            "dropped": dict(sorted(self.dropped.items())),
            "bad_records": self.bad_records,
            "segments": self.segments,
        }


@dataclass(frozen=True)
class Segment:
    """One candidate segment.

    Attributes:
        header: the heading it follows ("" when none).
        text: the segment text (paragraphs joined by newlines).
        offset: position of the segment in its document: 0 for text before the first
            heading (and for a JSONL record), k for the text after the k-th heading.
        truncated: the text reached ``max_chars`` and stopped accumulating.
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


def _clean(text: str) -> str:
    lines = (_SPACE.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


class _Buffer:
    """Segment text accumulated up to a cap."""

    __slots__ = ("cap", "parts", "size", "truncated")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def add(self, text: str) -> None:
        if self.truncated:
            return
        room = self.cap - self.size
        if len(text) > room:
            text = text[:room]
            self.truncated = True
        self.parts.append(text)
        self.size += len(text)

    def take(self) -> tuple[str, bool]:
        text, truncated = "".join(self.parts), self.truncated
        self.parts, self.size, self.truncated = [], 0, False
        return text, truncated


# ------------------------------------------------------------------------ text
def segments_text(lines: Iterator[str], *, max_chars: int) -> Iterator[Segment]:
    """Header-anchored segments of Markdown/plain text (ATX headings; fenced code is body).

    Text before the first heading is yielded with header "" (offset 0).
    """
    header, offset, at = "", 0, 1
    buf = _Buffer(max_chars + 1)
    in_fence = False
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if _FENCE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            text, truncated = buf.take()
            if text.strip() or header:
                yield Segment(header, _clean(text), offset, truncated, at)
            header, offset, at = m.group(2).strip(), offset + 1, lineno
            continue
        buf.add(line + "\n")
    text, truncated = buf.take()
    if text.strip() or header:
        yield Segment(header, _clean(text), offset, truncated, at)


# ------------------------------------------------------------------------ html
_SKIP = frozenset(
    {"script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form", "head"}
)
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
_BLOCK = frozenset(
    {
        "p",
        "div",
        "li",
        "ul",
        "ol",
        "br",
        "tr",
        "table",
        "section",
        "article",
        "blockquote",
        "pre",
        "dd",
        "dt",
        "hr",
        "main",
    }
)
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})


class _SegmentParser(HTMLParser):
    def __init__(self, max_chars: int) -> None:
        super().__init__(convert_charrefs=True)
        self.max_chars = max_chars
        self.ready: list[Segment] = []
        self.skip_depth = 0
        self.skip_stack: list[str] = []
        self.in_heading: str | None = None
        self.heading_parts: list[str] = []
        self.header = ""
        self.seg_index = 0
        self.body = _Buffer(max_chars + 1)

    def _flush(self) -> None:
        text, truncated = self.body.take()
        if text.strip() or self.header:
            self.ready.append(Segment(self.header, _clean(text), self.seg_index, truncated))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP and tag not in _VOID:
            self.skip_stack.append(tag)
            return
        if self.skip_stack:
            return
        if tag in _HEADINGS:
            self._flush()
            self.in_heading = tag
            self.heading_parts = []
            self.seg_index += 1
        elif tag in _BLOCK:
            self.body.add("\n")

    def handle_endtag(self, tag: str) -> None:
        if self.skip_stack:
            if tag == self.skip_stack[-1]:
                self.skip_stack.pop()
            elif tag in self.skip_stack:
                while self.skip_stack and self.skip_stack.pop() != tag:
                    pass
            return
        if self.in_heading is not None and tag in _HEADINGS:
            self.header = _SPACE.sub(" ", " ".join(self.heading_parts)).strip()[:500]
            self.in_heading = None
        elif tag in _BLOCK:
            self.body.add("\n")

    def handle_data(self, data: str) -> None:
        if self.skip_stack:
            return
        if self.in_heading is not None:
            if sum(len(p) for p in self.heading_parts) < 1000:
                self.heading_parts.append(data.replace("\n", " "))
            return
        self.body.add(data.replace("\n", " "))

    def finish(self) -> None:
        self.close()
        if self.in_heading is not None:
            self.header = _SPACE.sub(" ", " ".join(self.heading_parts)).strip()[:500]
            self.in_heading = None
        self._flush()


def segments_html(chunks: Iterator[str], *, max_chars: int) -> Iterator[Segment]:
    """Header-anchored segments of an HTML document fed chunk by chunk.

    Text before the first heading is yielded with header "".
    """
    parser = _SegmentParser(max_chars)
    for chunk in chunks:
        parser.feed(chunk)
        if parser.ready:
            yield from parser.ready
            parser.ready = []
    parser.finish()
    yield from parser.ready
    parser.ready = []


# ----------------------------------------------------------------------- files
def iter_corpus_files(path: Path) -> Iterator[Path]:
    """``path`` itself, or every non-hidden file under it in sorted order.

    Raises:
        InputError: ``path`` does not exist.
    """
    if path.is_file():
        yield path
        return
    if not path.is_dir():
        raise InputError("corpus not found (a file or a directory)", path=str(path))
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def _chunks(f: TextIO) -> Iterator[str]:
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            return
        yield chunk


def read_corpus(
    path: Path,
    rules: SegmentRules,
    *,
    seen: Callable[[str], bool] | None = None,
    stats: CorpusStats | None = None,
) -> Iterator[Item | BadInput]:
    """Stream the corpus at ``path`` (a file or a directory) as segment Items.

    Each Item has key ``<doc_id>@<offset>``, source ``<file>:<line>`` (``<file>#<offset>``
    for HTML) and data
    ``{text, header, doc_id, offset}``. Unreadable records (bad JSON, a missing text
    field, an unreadable file) are yielded as BadInput with their file and line.

    Args:
        path: a corpus file or directory (walked in sorted order).
        rules: the segment rules.
        seen: dedup hook: called with a segment's text, returns True when it is new
            (e.g. ``ExactDedup().add``); only consulted when ``rules.dedup``.
        stats: counters to update (a fresh one when None).

    Raises:
        InputError: ``path`` does not exist.
    """
    st = stats if stats is not None else CorpusStats()
    index = 0
    root = path if path.is_dir() else path.parent
    for file in iter_corpus_files(path):
        ext = file.suffix.lower()
        if ext not in HTML_EXTENSIONS | TEXT_EXTENSIONS | JSONL_EXTENSIONS:
            st.files_skipped += 1
            continue
        st.files += 1
        rel = file.relative_to(root).as_posix()
        produced: Iterator[str | tuple[tuple[str, int], Segment]]
        try:
            if ext in JSONL_EXTENSIONS:
                produced = _jsonl(file, rel, rules, st)
            else:
                produced = _document(file, rel, ext, rules, st)
            for entry in produced:
                if isinstance(entry, str):  # a bad record: "line\treason"
                    line, why = entry.split("\t", 1)
                    st.bad_records += 1
                    yield BadInput(
                        index=index, key=f"{rel}:{line}", source=f"{rel}:{line}", reason=why
                    )
                    index += 1
                    continue
                doc_id, seg = entry
                st.segments_read += 1
                reason = _check(seg, rules, jsonl=ext in JSONL_EXTENSIONS)
                if reason is None and rules.dedup and seen is not None and not seen(seg.text):
                    reason = "duplicate"
                if reason is not None:
                    st.dropped[reason] += 1
                    continue
                st.segments += 1
                if ext in JSONL_EXTENSIONS:
                    where = f"{rel}:{doc_id[1]}"
                elif seg.line:
                    where = f"{rel}:{seg.line}"
                else:
                    where = f"{rel}#{seg.offset}"
                yield Item(
                    index=index,
                    key=f"{doc_id[0]}@{seg.offset}",
                    source=where,
                    data={
                        "text": seg.text,
                        "header": seg.header,
                        "doc_id": doc_id[0],
                        "offset": seg.offset,
                    },
                )
                index += 1
        except OSError as exc:
            st.bad_records += 1
            yield BadInput(
                index=index,
                key=f"{rel}:0",
                source=f"{rel}:0",
                reason=f"cannot read file ({exc.strerror or exc})",
            )
            index += 1


def _check(seg: Segment, rules: SegmentRules, *, jsonl: bool) -> str | None:
    if not seg.text.strip():
        return "empty"
    if not jsonl and rules.require_header and not seg.header:
        return "no_header"
    if seg.header and caps_ratio(seg.header) > rules.max_header_caps_ratio:
        return "header_caps"
    n = len(seg.text)
    if n < rules.min_chars:
        return "too_short"
    if seg.truncated or n >= rules.max_chars:
        return "too_long"
    return None


def _document(
    file: Path, rel: str, ext: str, rules: SegmentRules, st: CorpusStats
) -> Iterator[tuple[tuple[str, int], Segment]]:
    with file.open("r", encoding="utf-8", errors="replace", newline="") as f:
        st.documents += 1
        segs = (
            segments_html(_chunks(f), max_chars=rules.max_chars)
            if ext in HTML_EXTENSIONS
            else segments_text(iter(f), max_chars=rules.max_chars)
        )
        for seg in segs:
            yield (rel, seg.offset), seg


def _jsonl(
    file: Path, rel: str, rules: SegmentRules, st: CorpusStats
) -> Iterator[str | tuple[tuple[str, int], Segment]]:
    with file.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if len(line) > MAX_LINE_BYTES:
                yield f"{lineno}\tline is {len(line)} bytes, over the {MAX_LINE_BYTES}-byte limit"
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield f"{lineno}\tnot valid JSON ({exc})"
                continue
            if not isinstance(data, dict):
                yield f"{lineno}\texpected a JSON object, got {type(data).__name__}"
                continue
            text = data.get(rules.text_field)
            if not isinstance(text, str):
                yield f"{lineno}\tmissing or non-string field {rules.text_field!r}"
                continue
            st.documents += 1
            header = data.get(rules.header_field)
            rid = data.get(rules.id_field)
            doc_id = str(rid) if isinstance(rid, str | int) and str(rid) else f"{rel}:{lineno}"
            truncated = len(text) >= rules.max_chars
            yield (
                (doc_id, lineno),
                Segment(
                    header=_SPACE.sub(" ", header).strip() if isinstance(header, str) else "",
                    text=_clean(text) if not truncated else text,
                    offset=0,
                    truncated=truncated,
                ),
            )

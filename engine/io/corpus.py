"""Streaming corpus reader: web-text segments for instruction backtranslation.

A *segment* is self-contained text that follows a heading (Humpback's "text that follows
an HTML header"). Three formats are read, by file extension:

- HTML (``.html``, ``.htm``): the page's main text is extracted with trafilatura (the
  extractor datatrove and other web-scale pipelines use: boilerplate such as menus,
  sidebars and footers is left out), as Markdown-like text that keeps paragraph breaks,
  lists and indented code. Headings are protected through the extraction (trafilatura's
  heuristics sometimes drop ``<h2>`` elements of API references), then each heading
  starts a segment. A page is parsed whole, so pages over ``max_html_bytes`` are refused.
- Text and Markdown (``.md``, ``.markdown``, ``.txt``): read line by line; each ATX
  heading (``#`` .. ``######``) starts a segment; headings inside fenced code are body.
- JSONL (``.jsonl``): one record per line, already a segment: its text field (``text``),
  its header field (``title``, optional) and its id field (``id``, else ``file:line``).

Segments keep the text's shape: paragraph breaks (one blank line), line breaks, list
markers and the indentation of code are preserved; only trailing spaces and runs of
blank lines are trimmed. Markdown links and images are reduced to their text
(``[Phoenix](Phoenix_(mythology) "wikilink")`` -> ``Phoenix``), reference definitions
are dropped, and code is left untouched.

A section longer than ``max_chars`` is split at paragraph boundaries (then at lines,
then at spaces) into balanced parts, each its own segment (key ``doc@offset.part``);
a fenced code block split across parts is closed and reopened. Memory stays flat in the
corpus size: a section is buffered up to ``16 x max_chars``, then flushed in parts.

Segment rules (each configurable, see :class:`SegmentRules`), applied in this order and
each counted by reason: empty, no header (HTML/Markdown), header capitalisation ratio,
too short (a part under ``min_chars``), exact dedup.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ..errors import InputError
from ..records import BadInput, Item
from .readers import MAX_LINE_BYTES
from .segment import (
    Segment,
    caps_ratio,
    outside_code,
    reduce_links,
    segments_text,
    shape,
    split_text,
    unescape,
)

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
    "reduce_links",
    "segments_html",
    "segments_text",
    "split_text",
)

HTML_EXTENSIONS = frozenset({".html", ".htm"})
TEXT_EXTENSIONS = frozenset({".md", ".markdown", ".txt"})
JSONL_EXTENSIONS = frozenset({".jsonl"})

_SPACE = re.compile(r"[ \t\r\f\v]+")


@dataclass(frozen=True)
class SegmentRules:
    """Which segments are kept (Humpback section 2.1; exact bounds are ours).

    Attributes:
        min_chars: drop segments (parts) shorter than this (characters).
        max_chars: split longer sections into parts of at most this many characters.
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
    max_html_bytes: int = 20 * 1024 * 1024


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
        sections_split: sections longer than ``max_chars`` split into parts.
        parts: segments those splits produced.
    """

    files: int = 0
    files_skipped: int = 0
    documents: int = 0
    segments_read: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    bad_records: int = 0
    segments: int = 0
    sections_split: int = 0
    parts: int = 0

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
            "sections_split": self.sections_split,
            "parts": self.parts,
        }


_MARK = "xqxSEHDG{level}xqx"
_MARK_RE = re.compile(r"^\s*xqxSEHDG([1-6])xqx\s*(.*)$")


def html_to_markdown(html: str) -> str:
    """The main text of an HTML page as Markdown-like text (trafilatura), with every
    heading kept as an ATX heading and trafilatura's Markdown escapes undone."""
    import trafilatura
    from lxml import html as lxml_html
    from lxml.etree import ParserError

    try:
        tree = lxml_html.document_fromstring(html)
    except (ParserError, ValueError):
        return ""
    for h in list(tree.iter("h1", "h2", "h3", "h4", "h5", "h6")):
        level = int(str(h.tag)[1])
        title = " ".join(h.text_content().split())
        tail = h.tail
        h.clear()
        h.tag = "p"
        h.text = f"{_MARK.format(level=level)} {title}" if title else ""
        h.tail = tail
    out = trafilatura.extract(
        tree,
        output_format="markdown",
        include_formatting=True,
        include_tables=True,
        include_comments=False,
        include_links=False,
        include_images=False,
        favor_recall=True,
        deduplicate=False,
    )
    if not out:
        return ""
    lines = []
    for line in out.split("\n"):
        m = _MARK_RE.match(line)
        lines.append(f"{'#' * int(m.group(1))} {m.group(2)}" if m else line)
    # trafilatura keeps the page source's indentation inside paragraphs: prose lines are
    # dedented (code blocks keep theirs), and its Markdown escapes are undone.
    return outside_code(
        "\n".join(lines), lambda t: unescape("\n".join(x.strip() for x in t.split("\n")))
    )


def segments_html(chunks: Iterator[str], *, max_chars: int) -> Iterator[Segment]:
    """Header-anchored sections of an HTML document (read whole, then extracted).

    Text before the first heading is yielded with header "".
    """
    text = html_to_markdown("".join(chunks))
    for seg in segments_text(iter(text.split("\n")), max_chars=max_chars):
        yield Segment(seg.header, seg.text, seg.offset, seg.truncated, 0)


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
    numbering: dict[tuple[str, int], int] = {}
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
                    where_bad = f"{rel}:{line}" if line != "0" else rel
                    yield BadInput(index=index, key=where_bad, source=where_bad, reason=why)
                    index += 1
                    continue
                doc_id, seg = entry
                st.segments_read += 1
                jsonl = ext in JSONL_EXTENSIONS
                reason = _check(seg, rules, jsonl=jsonl)
                if reason is not None:
                    st.dropped[reason] += 1
                    continue
                key = (doc_id[0], seg.offset)
                parts = split_text(seg.text, rules.max_chars)
                if len(parts) > 1 or seg.truncated or key in numbering:
                    if key not in numbering:
                        st.sections_split += 1
                    first = numbering.get(key, 0)
                    numbering[key] = first + len(parts)
                    if not seg.truncated:
                        numbering.pop(key)
                    st.parts += len(parts)
                    named = [(f"{seg.offset}.{first + i + 1}", p) for i, p in enumerate(parts)]
                else:
                    named = [(str(seg.offset), parts[0])]
                if jsonl:
                    where = f"{rel}:{doc_id[1]}"
                elif seg.line:
                    where = f"{rel}:{seg.line}"
                else:
                    where = f"{rel}#{seg.offset}"
                for suffix, text in named:
                    drop = _part_check(text, rules)
                    if drop is None and rules.dedup and seen is not None and not seen(text):
                        drop = "duplicate"
                    if drop is not None:
                        st.dropped[drop] += 1
                        continue
                    st.segments += 1
                    data: dict[str, object] = {
                        "text": text,
                        "header": seg.header,
                        "doc_id": doc_id[0],
                        "offset": seg.offset,
                    }
                    if suffix != str(seg.offset):
                        data["part"] = int(suffix.rsplit(".", 1)[1])
                    yield Item(index=index, key=f"{doc_id[0]}@{suffix}", source=where, data=data)
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
    return None


def _part_check(text: str, rules: SegmentRules) -> str | None:
    if len(text) < rules.min_chars:
        return "too_short"
    return None


def _document(
    file: Path, rel: str, ext: str, rules: SegmentRules, st: CorpusStats
) -> Iterator[str | tuple[tuple[str, int], Segment]]:
    if ext in HTML_EXTENSIONS:
        size = file.stat().st_size
        if size > rules.max_html_bytes:
            yield f"0\tHTML page is {size} bytes, over the {rules.max_html_bytes}-byte limit"
            return
        st.documents += 1
        text = file.read_bytes().decode("utf-8", errors="replace")
        for seg in segments_html(iter([text]), max_chars=rules.max_chars):
            yield (rel, seg.offset), seg
        return
    with file.open("r", encoding="utf-8", errors="replace", newline="") as f:
        st.documents += 1
        for seg in segments_text(iter(f), max_chars=rules.max_chars):
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
            yield (
                (doc_id, lineno),
                Segment(
                    header=_SPACE.sub(" ", header).strip() if isinstance(header, str) else "",
                    text=shape(text),
                    offset=0,
                ),
            )

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

import math
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

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```+|~~~+)")
_SPACE = re.compile(r"[ \t\r\f\v]+")
_BUFFER_FACTOR = 16


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


def _outside_code(text: str, fn: Callable[[str], str]) -> str:
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
    return _outside_code(text, _reduce)


def _shape(text: str) -> str:
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
    return _shape(reduce_links(text))


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
    return _outside_code(
        "\n".join(lines),
        lambda t: _ESCAPE.sub(r"\1", "\n".join(x.strip() for x in t.split("\n"))),
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
                    text=_shape(text),
                    offset=0,
                ),
            )

"""Reply formats a prompt spells out, as a sequence of parts to fill.

A reply is a tuple of :data:`Part`: :class:`Lit` (fixed text), :class:`Pick` (one of
the listed answers), :class:`Num` (an integer score in a range) and :class:`Free` (words
of the prompt: a phrase, a sentence, a question, a list of phrases, or running text).

:func:`read_format` recognises, in this order: blocks the prompt asks for ``between
[Start of X] and [End of X]`` (a score block gets the score or the answer its clause
names); the last run of template lines with ``<placeholders>`` (``Use case: <use
case>``, ``1. <rubric>`` then ``...``); a quoted template line (``"Score: <1-10>"``, on
the last line unless the prompt says first); ``[QUESTION] question [ANSWER] answer
[END]`` pairs; two scores on one line; a numbered list of N items. :func:`label_reply`
and :func:`score_reply` shape a reply around listed answers or a bare scale.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from .labels import hits, inline_list, labels_in, number, score_range
from .text import Text

__all__ = (
    "Free",
    "Lit",
    "Num",
    "Part",
    "Pick",
    "label_reply",
    "read_format",
    "score_reply",
)


class Lit(msgspec.Struct, frozen=True):
    """Fixed text."""

    text: str


class Pick(msgspec.Struct, frozen=True):
    """One of ``options``."""

    options: tuple[str, ...]


class Num(msgspec.Struct, frozen=True):
    """An integer in ``[low, high]``."""

    low: int
    high: int


FreeKind = Literal["phrase", "sentence", "question", "items", "text"]


class Free(msgspec.Struct, frozen=True):
    """Words of the prompt: ``phrase`` (2-4 words), ``sentence``, ``question``,
    ``items`` (2-3 phrases joined by commas) or ``text`` (the rest of the length)."""

    kind: FreeKind


Part = Lit | Pick | Num | Free
_DEFAULT_RANGE = (1, 10)
_MAX_COUNT = 20

# ------------------------------------------------------------------ placeholders
_RANGE_ONLY = re.compile(r"^\s*(\d{1,3})\s*(?:-|\u2013|to)\s*(\d{1,3})\s*$")
_SCORE_WORDS = ("score", "rating", "grade", "number", "points", "mark")
_LIST_WORDS = ("comma", "list", "skills", "keywords", "tags", "items")
_SENTENCE_WORDS = (
    "rubric",
    "action",
    "reason",
    "explanation",
    "description",
    "sentence",
    "answer",
    "instruction",
    "summary",
    "feedback",
    "text",
    "response",
    "justification",
)


_DEFINED = re.compile(r"\s*(?:is|=|:)\s*")


def _placeholder(name: str, text: Text) -> Part:
    """The part a ``<name>`` placeholder stands for."""
    m = _RANGE_ONLY.match(name)
    if m:
        return Num(int(m.group(1)), int(m.group(2)))
    if "|" in name or "/" in name or " or " in name:
        options = tuple(
            x.strip(" \"'") for x in re.split(r"\s*(?:\||/|\bor\b)\s*", name) if x.strip(" \"'")
        )
        if len(options) >= 2:
            return Pick(options)
    low = name.lower()
    if any(w in low for w in _SCORE_WORDS):
        values: list[int] = []
        raw = text.raw
        i = raw.find(f"<{name}>")
        while i >= 0 and not values:
            where = _DEFINED.match(raw, i + len(name) + 2)
            found = inline_list(raw, where.end()) if where else ()
            values = [int(x) for x in found if x.isdigit()]
            i = raw.find(f"<{name}>", i + 1)
        if len(values) >= 2:
            return Num(min(values), max(values))
        return Num(*(score_range(text) or _DEFAULT_RANGE))
    if "question" in low:
        return Free("question")
    if any(w in low for w in _LIST_WORDS):
        return Free("items")
    if any(w in low for w in _SENTENCE_WORDS):
        return Free("sentence")
    return Free("phrase")


_HOW_MANY_BEFORE = re.compile(
    r"\b(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten)\s+(?:[\w-]+\s+){0,3}?$", re.I
)


def _count(text: Text, noun: str, default: int) -> int:
    """How many ``noun`` items the prompt asks for (``write 4 domain-specific rubrics``):
    a number at most three words before the noun's first such mention."""
    stem = noun.lower().rstrip("s")[:6]
    for pos in hits(text.lower, (stem,), cap=16):
        m = _HOW_MANY_BEFORE.search(text.raw, max(0, pos - 48), pos)
        n = number(m.group(1)) if m else None
        if n:
            return max(1, min(n, _MAX_COUNT))
    return default


# ---------------------------------------------------------------- tag blocks
_BETWEEN = re.compile(r"between\s+\[(Start of ([^\]\n]{1,40}))\]\s+and\s+\[End of \2\]", re.I)
_SENTENCE_BLOCKS = ("evaluation", "explanation", "reason", "rationale", "feedback", "critique")
_QUOTED_X = re.compile(r"\"([^\"\n]{0,30}?)\b(?:X|N|K)\b([^\"\n]{0,10})\"")


def _score_block(clause: str, text: Text) -> tuple[Part, ...]:
    said = Text(clause)
    labels = labels_in(said)
    if labels:
        return (Pick(labels),)
    rng = score_range(said) or score_range(text) or _DEFAULT_RANGE
    q = _QUOTED_X.search(clause)
    if q:
        return (Lit(q.group(1)), Num(*rng), Lit(q.group(2)))
    return (Num(*rng),)


def _blocks(text: Text) -> tuple[Part, ...]:
    if not (text.has("between") and text.has("start")):
        return ()
    raw, lower = text.raw, text.lower
    parts: list[Part] = []
    seen: set[str] = set()
    for pos in hits(lower, ("between [start of", "between\n[start of"), cap=8):
        m = _BETWEEN.match(raw, pos)
        if m is None:
            continue
        name = m.group(2).strip()
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        start = max(raw.rfind(". ", 0, m.start()), raw.rfind("\n\n", 0, m.start()))
        then = lower.rfind("then", start, m.start())
        clause = raw[max(start, then) : m.start()]
        low = name.lower()
        open_, close = Lit(f"[Start of {name}]\n"), Lit(f"\n[End of {name}]\n")
        if "score" in low:
            parts += [open_, *_score_block(clause, text), close]
        elif "question" in low:
            n = _count(text, "question", 1) if "each between" in lower else 1
            parts += [open_, Free("question"), close] * n
        else:
            kind: FreeKind = "sentence" if any(w in low for w in _SENTENCE_BLOCKS) else "text"
            parts += [open_, Free(kind), close]
    return tuple(parts)


# -------------------------------------------------------------- template lines
_TEMPLATE_LINE = re.compile(
    r"^[ \t]*(?:\d{1,2}[.)][ \t]*)?(?:[A-Za-z][\w ()'/-]{0,40}?[ \t]*[:=][ \t]*)?"
    r"<[^<>\n]{1,60}>[ \t]*$"
)
_HEADER_LINE = re.compile(r"^[ \t]*[A-Za-z][\w ()'/-]{0,40}:[ \t]*$")
_ELLIPSIS = re.compile(r"^[ \t]*(?:\d{1,2}[.)][ \t]*)?(?:\.\.\.|\u2026)[ \t]*$")
_PLACEHOLDER = re.compile(r"<([^<>\n]{1,60})>")
_NUMBERED = re.compile(r"^([ \t]*)(\d{1,2})([.)][ \t]*)(.*)$")


def _fill_line(line: str, text: Text) -> list[Part]:
    parts: list[Part] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(line):
        if m.start() > pos:
            parts.append(Lit(line[pos : m.start()]))
        parts.append(_placeholder(m.group(1), text))
        pos = m.end()
    if pos < len(line):
        parts.append(Lit(line[pos:]))
    return parts


def _template_lines(text: Text) -> tuple[Part, ...]:
    raw = text.raw
    last: int | None = None
    i = raw.find("<")
    while i >= 0:
        start = raw.rfind("\n", 0, i) + 1
        end = raw.find("\n", i)
        end = len(raw) if end < 0 else end
        if _TEMPLATE_LINE.match(raw[start:end]):
            last = start
        i = raw.find("<", end)
    if last is None:
        return ()
    before = raw[:last].split("\n")[-12:]
    after = raw[last:].split("\n")
    if before == [""]:
        before = []
    elif before and before[-1] == "":
        before = before[:-1]
    lines = before + after[:24]
    end = len(before)
    start = end
    while start > 0 and (
        _TEMPLATE_LINE.match(lines[start - 1])
        or _HEADER_LINE.match(lines[start - 1])
        or _ELLIPSIS.match(lines[start - 1])
    ):
        start -= 1
    while end + 1 < len(lines) and (
        _ELLIPSIS.match(lines[end + 1]) or _TEMPLATE_LINE.match(lines[end + 1])
    ):
        end += 1
    block = lines[start : end + 1]
    # Header lines that only introduce the block ("Answer in this format:") are not part
    # of it; headers inside it are ("Rubrics:" ... "Actions:").
    while len(block) > 1 and _HEADER_LINE.match(block[0]) and _HEADER_LINE.match(block[1]):
        block = block[1:]
    if _HEADER_LINE.match(block[0]) and not any(_HEADER_LINE.match(x) for x in block[1:]):
        block = block[1:]
    parts: list[Part] = []
    previous: re.Match[str] | None = None
    for line in block:
        if _ELLIPSIS.match(line):
            if previous is not None:
                noun = _PLACEHOLDER.search(previous.group(4))
                n = _count(text, noun.group(1) if noun else "item", 3)
                indent, first, dot, body = previous.groups()
                for k in range(int(first) + 1, n + 1):
                    parts += [Lit(f"{indent}{k}{dot}"), *_fill_line(body, text), Lit("\n")]
            continue
        parts += [*_fill_line(line, text), Lit("\n")]
        previous = _NUMBERED.match(line)
    return tuple(parts)


_QUOTED_TEMPLATE = re.compile(
    r"[\"\u201c']([^\"\u201d'\n]{0,40}<[^<>\"'\n]{1,40}>[^\"\u201d'\n]{0,20})[\"\u201d']"
)


def _quoted_template(text: Text) -> tuple[Part, ...]:
    raw = text.raw
    i = raw.find("<")
    m = None
    while i >= 0 and m is None:
        m = _QUOTED_TEMPLATE.search(raw, max(0, i - 42), i + 64)
        i = raw.find("<", i + 1)
    if m is None:
        return ()
    line = _fill_line(m.group(1), text)
    after = text.lower[m.end() : m.end() + 40]
    if not _wants_reason(text):
        return tuple(line)
    if "first line" in after:
        return (*line, Lit("\n"), Free("sentence"))
    return (Free("sentence"), Lit("\n"), *line)


_REASONS = ("explanation", "explain", "reason", "reasoning", "justify", "justification",
            "rationale")  # fmt: skip


def _wants_reason(text: Text) -> bool:
    return text.has(*_REASONS) and not _no_explanation(text)


def _no_explanation(text: Text) -> bool:
    if not text.has("explanation", "else"):
        return False
    lower = text.lower
    return "no explanation" in lower or "nothing else" in lower or "without explanation" in lower


# ------------------------------------------------------------------- the rest
_TAG_TEMPLATE = re.compile(
    r"((?:\[[A-Z][A-Z _]{0,20}\][ \t]*[a-z][a-z ]{0,20}?[ \t]*){2,6})\[END\]"
)
_TAG_PIECE = re.compile(r"\[([A-Z][A-Z _]{0,20})\][ \t]*([a-z][a-z ]{0,20}?)[ \t]*(?=\[|$)")


def _tag_template(text: Text) -> tuple[Part, ...]:
    if "end" not in text.vocab:
        return ()
    raw = text.raw
    found = None
    i = raw.find("[END]")
    while i >= 0:
        m = _TAG_TEMPLATE.search(raw, max(0, i - 160), i + 5)
        found = m.group(1) if m else found
        i = raw.find("[END]", i + 1)
    if found is None:
        return ()
    one: list[Part] = []
    for tag, name in _TAG_PIECE.findall(found):
        kind: FreeKind = "question" if "question" in name else "sentence"
        one += [Lit(f"[{tag}] "), Free(kind), Lit(" ")]
    one.append(Lit("[END]\n"))
    single = any(f"{verb} one " in text.lower for verb in ("write", "give", "generate", "create"))
    return tuple(one) * (1 if single else 2)


_PAIR = ("two numbers", "two scores", "two ratings", "two integers", "two grades", "2 numbers",
         "2 scores", "both scores")  # fmt: skip
_LIST_ASK = ("numbered", "(1., 2.", "one per line", "bullet point", "bulleted list", "bullet list")
_HOW_MANY = re.compile(
    r"(?:write|give|list|generate|create|produce|propose|suggest|provide|come up with|name)"
    r"\s+(?:me\s+)?(?:a set of\s+|exactly\s+|at least\s+|up to\s+)?"
    r"(\d{1,2}|two|three|four|five|six|seven|eight|nine|ten)\s+",
    re.I,
)
_VERBS = ("write", "give", "list", "generate", "create", "produce", "propose", "suggest",
          "provide", "come up with", "name")  # fmt: skip


def _pair(text: Text) -> tuple[Part, ...]:
    if not text.has("numbers", "scores", "ratings", "integers", "grades"):
        return ()
    if not any(p in text.lower for p in _PAIR):
        return ()
    rng = score_range(text)
    if rng is None:
        return ()
    pair: tuple[Part, ...] = (Num(*rng), Lit(" "), Num(*rng))
    return (*pair, Lit("\n"), Free("sentence")) if _wants_reason(text) else pair


def _numbered(text: Text) -> tuple[Part, ...]:
    if not text.has("numbered", "bullet", "line"):
        return ()
    if not any(p in text.lower for p in _LIST_ASK):
        return ()
    n = 3
    for pos in hits(text.lower, _VERBS, cap=8):
        m = _HOW_MANY.match(text.raw, pos)
        if m:
            n = min(number(m.group(1)) or 3, _MAX_COUNT)
            break
    parts: list[Part] = []
    for k in range(1, n + 1):
        parts += [Lit(f"{k}. "), Free("sentence"), Lit("\n")]
    return tuple(parts)


def read_format(text: Text) -> tuple[Part, ...]:
    """The reply format ``text`` spells out (empty when it spells out none)."""
    if not text:
        return ()
    return (
        _blocks(text)
        or (_template_lines(text) if "<" in text.raw else ())
        or (_quoted_template(text) if "<" in text.raw else ())
        or _tag_template(text)
        or _pair(text)
        or _numbered(text)
    )


_THEN = (" then ", "\nthen ", "followed by", "and a sentence", "and one sentence", "and a reason")


def label_reply(text: Text, labels: tuple[str, ...]) -> tuple[Part, ...]:
    """One of ``labels``; on its own first line, then a sentence, when the prompt asks
    for a reason after it (``YES or NO on the first line, then one sentence``)."""
    then = text.has("then", "followed", "sentence", "reason") and any(
        t in text.lower for t in _THEN
    )
    if then and not _no_explanation(text):
        return (Pick(labels), Lit("\n"), Free("sentence"))
    return (Pick(labels),)


_ONLY = re.compile(r"\bonly\b[^.\n]{0,30}\b(?:number|score|rating|digit|integer)\b")


def score_reply(text: Text) -> tuple[Part, ...]:
    """A reason then ``Score: k`` when ``text`` asks for a score on a scale it names;
    the bare number when it asks for only the number; else empty."""
    if not text.has("rate", "score", "rating", "grade", "scale"):
        return ()
    rng = score_range(text)
    if rng is None:
        return ()
    if _no_explanation(text) or ("only" in text.vocab and _ONLY.search(text.lower)):
        return (Num(*rng),)
    return (Free("sentence"), Lit("\nScore: "), Num(*rng))

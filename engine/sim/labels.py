"""Answers and score ranges a prompt lists, read the way a reader would.

:func:`labels_in` finds a list of allowed answers after a phrase that introduces one
(``Options:``, ``one of:``, ``Answer with``, ``Choose from``, ``classify ... as``,
``labels:``) or as lettered lines (``(A) ...``, ``B) ...``); :func:`score_range` finds a
scale (``on a scale of 1 to 10``, ``<1-10>``, ``(0 or 1)``, ``is 1, 2, 3, 4 or 5``).

A list after a colon runs to the end of its line (or is the bullet lines below an empty
one); an inline list is single words or quoted strings joined by commas, ``or``, ``/``
or ``|`` and ends at the first word that is not followed by one. Every list needs two
answers or more. After a bare ``answer``/``reply``/``give`` (no ``with``), only answers
that look like labels count: capitalised, quoted, numbers, or yes/no/true/false.
"""

from __future__ import annotations

import re

from .text import Text

__all__ = ("hits", "inline_list", "labels_in", "number", "score_range")

_NUMBERS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "hundred": 100,
}


def hits(lower: str, keys: tuple[str, ...], cap: int = 48) -> list[int]:
    """Where ``keys`` occur in ``lower`` at the start of a word, in text order (at most
    ``cap`` of each). Finding keywords with ``str.find`` first and matching regular
    expressions only there keeps a long prompt cheap to read."""
    out: list[int] = []
    for key in keys:
        i = lower.find(key)
        seen = 0
        while i >= 0 and seen < cap:
            if i == 0 or not lower[i - 1].isalnum():
                out.append(i)
                seen += 1
            i = lower.find(key, i + 1)
    out.sort()
    return out


def number(word: str) -> int | None:
    """``"3"`` or ``"three"`` as an int (None otherwise)."""
    if word.isdigit():
        return int(word)
    return _NUMBERS.get(word.lower())


_NOUNS = r"(?:labels?|options?|words?|categories|category|classes|class|values?|answers?|choices?)"
_TRIGGER = re.compile(
    r"\b(?:options|choices|labels|categories|classes"
    r"|(?:possible|valid|allowed|permitted)\s+(?:answers|labels|values|outputs|options)"
    r"|answer\s+choices)\b(?:\s+(?:are|is))?\s*:?"
    rf"|\bone\s+of(?:\s+the\s+following)?(?:\s+{_NOUNS})?\s*:?"
    rf"|\b(?:choose|select|pick)\s+(?:from|between|among|one\s+of)(?:\s+the\s+following)?"
    rf"(?:\s+{_NOUNS})?\s*:?"
    r"|\b(?:classify|categori[sz]e|label)\b[^.\n:]{0,80}?\bas\b(?:\s+(?:either|one\s+of))?\s*:?"
    r"|\b(?:answer|reply|respond|output|return|say)(?:\s+(?:only|just))?\s+(?:with|using)\b"
    r"(?:\s+(?:only|just|exactly|either|one\s+of(?:\s+the\s+following)?|the\s+words?"
    r"|one\s+word|a\s+single\s+word|a\s+word|the\s+label|one\s+label|a\s+label))*\s*:?"
    r"|\b(?P<weak>answer|reply|respond|give|output|write)\b(?:\s+(?:only|just|either))?\s*:?",
    re.I,
)
_ITEM = re.compile(
    r"[ \t]*(?:\"([^\"\n]{1,40})\"|'([^'\n]{1,40})'|\u201c([^\u201d\n]{1,40})\u201d"
    r"|`([^`\n]{1,40})`|\*\*([^*\n]{1,40})\*\*|([A-Za-z0-9][\w+.-]*[\w+]|[A-Za-z0-9]))"
    r"(?:[ \t]*\([^()\n]{0,40}\))?"
)
_SEP = re.compile(
    r"[ \t]*(?:,[ \t]*(?:or[ \t]+|and[ \t]+)?|[ \t]+or[ \t]+|[ \t]*/[ \t]*|[ \t]*\|[ \t]*)"
)
_LABELLIKE = frozenset({"yes", "no", "true", "false", "maybe", "unknown", "none"})
_BULLET = re.compile(r"[ \t]*(?:[-*\u2022]|\d{1,2}[.)]|\(?([A-Ha-h])[.)])[ \t]+(\S.*?)[ \t]*$")
_LETTERED = re.compile(r"^[ \t]*\(?([A-H])[).:][ \t]+\S", re.M)
_MAX_ITEM_WORDS = 4


def _label_like(item: str, quoted: bool) -> bool:
    return quoted or item.isdigit() or item[0].isupper() or item.lower() in _LABELLIKE


def inline_list(text: str, pos: int = 0, *, strict: bool = False) -> tuple[str, ...]:
    """The inline list starting at ``pos`` (two items or more, else empty).

    Args:
        text: the text.
        pos: where the list starts.
        strict: only label-like items (see the module docstring).
    """
    items: list[str] = []
    while True:
        m = _ITEM.match(text, pos)
        if m is None:
            break
        idx = m.lastindex or 6
        item = m.group(idx).strip()
        if strict and not _label_like(item, idx < 6):
            break
        items.append(item)
        pos = m.end()
        sep = _SEP.match(text, pos)
        if sep is None:
            break
        pos = sep.end()
    return tuple(dict.fromkeys(items)) if len(items) >= 2 else ()


def _clean(item: str) -> str:
    return item.strip().strip("\"'`*\u201c\u201d").strip().rstrip(".").strip()


def _line_list(text: str, pos: int) -> tuple[str, ...]:
    """A list after a colon: the rest of the line, or the bullet lines below it."""
    end = text.find("\n", pos)
    line = text[pos : end if end >= 0 else len(text)].strip()
    if not line:
        return _bullets(text[end + 1 :] if end >= 0 else "")
    letters = re.findall(r"\(([A-H])\)", line)
    if len(letters) >= 2:
        return tuple(dict.fromkeys(letters))
    line = re.split(r"\.(?:\s|$)", line, maxsplit=1)[0]
    items = [_clean(x) for x in re.split(r"\s*(?:,|;|\||/|\bor\b)\s*", line)]
    items = [x for x in items if x]
    if len(items) < 2 or any(len(x) > 40 or len(x.split()) > _MAX_ITEM_WORDS for x in items):
        return ()
    if items[-1].lower().startswith("and "):
        items[-1] = items[-1][4:].strip()
    return tuple(dict.fromkeys(items))


def _bullets(text: str) -> tuple[str, ...]:
    items: list[str] = []
    for line in text.split("\n")[: _MAX_ITEM_WORDS * 5]:
        m = _BULLET.match(line)
        if m is None:
            break
        letter, body = m.group(1), _clean(m.group(2))
        short = body and len(body.split()) <= _MAX_ITEM_WORDS
        items.append(letter.upper() if letter and not short else body)
    items = [x for x in items if x]
    return tuple(dict.fromkeys(items)) if len(items) >= 2 else ()


def _worth_trying(text: str, lower: str, pos: int, key: str) -> bool:
    """Whether a weak trigger at ``pos`` can start a list: it is followed by a colon,
    ``with``/``using``/``only``/``either``, or an answer-like word (capitalised, a
    number, quoted, yes/no...). Most mentions of "write" or "give" are not, and this
    skips them without running the regular expression."""
    if key not in _WEAK:
        return True
    at = pos + len(key)
    while at < len(text) and text[at] in " \t\n":
        at += 1
    c = text[at : at + 1]
    if not c:
        return False
    if c in ":\"'`*\u201c" or c.isdigit() or c.isupper():
        return True
    if lower.startswith(("with", "using", "only", "just", "either"), at):
        return True
    return lower[at : at + 12].split(" ", 1)[0].strip(".,;:") in _LABELLIKE


def labels_in(text: Text) -> tuple[str, ...]:
    """The first list of allowed answers in ``text`` (see the module docstring)."""
    if not text or text.vocab.isdisjoint(_KEY_OF):
        keys: tuple[str, ...] = ()
    else:
        keys = tuple(dict.fromkeys(_KEY_OF[w] for w in text.vocab.intersection(_KEY_OF)))
    raw, lower = text.raw, text.lower
    starts: list[int] = []
    for key in keys:
        i = lower.find(key)
        seen = 0
        while i >= 0 and seen < 12:
            if (i == 0 or not lower[i - 1].isalnum()) and _worth_trying(raw, lower, i, key):
                starts.append(i)
                seen += 1
            i = lower.find(key, i + 1)
    starts.sort()
    for pos in starts[:_MAX_TRIGGERS]:
        m = _TRIGGER.match(raw, pos)
        if m is None:
            continue
        if m.group(0).rstrip().endswith(":"):
            found = _line_list(raw, m.end())
        else:
            found = inline_list(raw, m.end(), strict=m.group("weak") is not None)
        if found:
            return found
    if "a" in text.vocab and (
        "(a)" in lower or "\na)" in lower or "\na." in lower or lower.startswith(("a)", "a."))
    ):
        letters = _LETTERED.findall(raw)
        if len(letters) >= 2 and letters[0] == "A" and letters[1] == "B":
            out = ["A", "B"]
            for x in letters[2:]:
                if ord(x) == ord(out[-1]) + 1:
                    out.append(x)
            return tuple(out)
    return ()


_MAX_TRIGGERS = 32
_WEAK = frozenset({"answer", "reply", "respond", "give", "output", "write", "return", "say"})
# A word of the text -> where to look for a trigger (the first word of an alternative
# of _TRIGGER, as str.find finds it).
_KEY_OF: dict[str, str] = {
    **dict.fromkeys(("option", "options"), "option"),
    **dict.fromkeys(("choice", "choices"), "choice"),
    **dict.fromkeys(("label", "labels"), "label"),
    **dict.fromkeys(("categories", "categorize", "categorise"), "categor"),
    **dict.fromkeys(("class", "classes", "classify"), "class"),
    **{w: w for w in ("possible", "valid", "allowed", "permitted", "answer", "choose")},
    **{w: w for w in ("select", "pick", "reply", "respond", "output", "return", "say")},
    **{w: w for w in ("give", "write")},
    "one": "one of",
}


# ---------------------------------------------------------------------- scores
_ANGLE = re.compile(r"<\s*(\d{1,3})\s*(?:-|\u2013|to)\s*(\d{1,3})\s*>")
_SCALE = re.compile(
    r"(?:scale|scores?|scored|rating|rate|grade|points?)\b[^.\n]{0,40}?"
    r"(?:\b(?:of|from|between)\s+)?\(?(\d{1,3})\s*(?:-|\u2013|to|and)\s*(\d{1,3})\b",
    re.I,
)
_SCALE_KEYS = ("scale", "score", "rating", "rate", "grade", "point")
_INTS = re.compile(r"(?:\(|\bis\s+|\bgive\s+)((?:\d{1,2}\s*,\s*)*\d{1,2},?\s+or\s+\d{1,2})\b")


def score_range(text: Text) -> tuple[int, int] | None:
    """The first score range ``text`` names (low, high), or None."""
    raw, lower = text.raw, text.lower
    found: list[tuple[int, int, int]] = []
    i = raw.find("<")
    while i >= 0 and not found:
        if raw[i + 1 : i + 2].isdigit():
            m = _ANGLE.match(raw, i)
            if m:
                found.append((i, int(m.group(1)), int(m.group(2))))
        i = raw.find("<", i + 1)
    if text.has("scale", "score", "scores", "scored", "rating", "rate", "grade", "point", "points"):
        for pos in hits(lower, _SCALE_KEYS, cap=16):
            m = _SCALE.match(raw, pos)
            if m:
                found.append((pos, int(m.group(1)), int(m.group(2))))
                break
    if "or" in text.vocab:
        i = lower.find(" or ")
        while i >= 0:
            if raw[i + 4 : i + 5].isdigit():
                m = _INTS.search(raw, max(0, i - 30), i + 8)
                if m:
                    values = [int(x) for x in re.findall(r"\d+", m.group(1))]
                    found.append((m.start(), min(values), max(values)))
                    break
            i = lower.find(" or ", i + 1)
    found = [f for f in found if f[1] < f[2] <= 100 and f[1] <= 1]
    if not found:
        return None
    _, lo, hi = min(found)
    return lo, hi

"""What a prompt asks the simulated endpoint for: the reply's shape, read from the chat.

:func:`read_ask` turns a request's messages into an :class:`Ask`: the text whose words
replies use (the last user message), and the reply's parts in order: fixed text, a choice
among the answers the prompt lists, a score in the range it names, and free text. The
simulated endpoint then fills the parts deterministically (:mod:`engine.sim.reply`), so a
prompt that says ``Answer with A, B or C`` gets one of them, a judge asked for
``Score: <1-10>`` gets a score its parser reads, and a prompt with examples gets a reply
like them. What is read, first match wins:

1. **Examples of the reply.** Few-shot chat turns whose user messages start like the
   last one (``[input] = ...``), or lines ``cue=value`` above a prompt that ends with the
   bare cue (``[input]=``): short values (labels) are chosen among; longer ones set the
   reply's length in characters.
2. **A format the prompt spells out** (:mod:`engine.sim.formats`): blocks between
   ``[Start of X]`` and ``[End of X]``, lines with ``<placeholders>``, a quoted line such
   as ``"Score: <1-10>"``, ``[QUESTION] question [ANSWER] answer [END]`` pairs, two scores
   on one line, a numbered list of N items.
3. **Listed answers** (:mod:`engine.sim.labels`): ``Options: A, B, C``, ``one of: x, y``,
   ``Answer with A, B or C``, ``labels: ...``, ``Choose from ...``, ``classify ... as x or
   y``, lines ``(A) ...``; searched in the last user message, then the system message,
   then earlier user messages.
4. **A score** on a scale the prompt names (``on a scale of 1 to 10``): a short reason,
   then ``Score: k``.
5. **Plain text**, of the length asked for (``in 50 words``, ``in two sentences``) when
   the prompt says one, else of the length the endpoint draws.

Long messages are read at their first 3,000 and last 1,500 characters, where instructions are
(and their words taken from the first 1,000 and the last 500).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

import msgspec

from .formats import Free, Lit, Num, Part, Pick, label_reply, read_format, score_reply
from .labels import hits, labels_in, number
from .text import Text, pool, window

__all__ = ("Ask", "Free", "Lit", "Num", "Part", "Pick", "message_text", "pool", "read_ask")


class Ask(msgspec.Struct, frozen=True):
    """What one request asks for.

    Attributes:
        source: the text whose words replies draw from (:func:`pool`): the last user
            message, or the examples when the reply mimics them.
        parts: the reply's parts in order; empty for plain text.
        labels: answers the prompt lists (also used for JSON answer fields).
        length: plain text: (low, high) words asked for, or None.
        sentences: plain text: sentences asked for, or None.
        chars: plain text mimicking examples: (low, high) characters, or None.
    """

    source: str = ""
    parts: tuple[Part, ...] = ()
    labels: tuple[str, ...] = ()
    length: tuple[int, int] | None = None
    sentences: int | None = None
    chars: tuple[int, int] | None = None


def message_text(message: object) -> str:
    """The text of a chat message (string content, or the text parts of a list)."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


# ------------------------------------------------------------------ examples
_CUE = re.compile(r"\s*(\[?[A-Za-z][\w ]{0,30}?\]?)\s*[:=]")
_FINAL_CUE = re.compile(r"(?:^|\n)[ \t]*(\[?[A-Za-z][\w ]{0,30}?\]?)[ \t]*[:=][ \t]*$")
_SHORT_WORDS = 3
_SHORT_CHARS = 40
_MAX_OPTIONS = 20


def _cue(text: str) -> str | None:
    m = _CUE.match(text)
    return m.group(1).strip().lower() if m else None


def _is_short(values: Sequence[str]) -> bool:
    return all(len(v) <= _SHORT_CHARS and len(v.split()) <= _SHORT_WORDS for v in values)


def _mimic(values: list[str], listed: Callable[[], tuple[str, ...]], source: str) -> Ask:
    """Reply like ``values``: one of them (or of the ``listed`` answers, when the values
    are among them) when they are short, else text as long, in their words."""
    distinct = tuple(dict.fromkeys(v for v in values if v))
    if _is_short(distinct) and len(distinct) <= _MAX_OPTIONS:
        labels = listed()
        fits = labels and all(v in labels for v in distinct)
        options = labels if fits else distinct
        return Ask(source=source, parts=(Pick(options),), labels=options)
    lengths = sorted(len(v) for v in distinct)
    return Ask(source=" ".join(distinct), chars=(lengths[0], lengths[-1]))


def _chat_examples(turns: Sequence[tuple[str, str]], last: str) -> list[str]:
    """Assistant replies to earlier user turns that start like the last one."""
    key = _cue(last)
    out: list[str] = []
    for (role, text), (next_role, reply) in zip(turns, turns[1:], strict=False):
        if role == "user" and next_role == "assistant":
            if key is None or _cue(text) == key:
                out.append(reply.strip())
    if key is None and (len(out) < 2 or not _is_short(out)):
        return []  # without a cue, only a run of short replies reads as examples
    return out


def _prompt_examples(text: str) -> list[str]:
    """Values of ``cue=value`` lines above a prompt that ends with the bare cue."""
    tail = text[-200:]
    m = _FINAL_CUE.search(tail)
    if m is None:
        return []
    cue = m.group(1).strip()
    end = len(text) - len(tail) + m.start()
    out: list[str] = []
    i = text.find(cue)
    while 0 <= i < end:
        after = _VALUE.match(text, i + len(cue))
        if after is not None and (i == 0 or text[i - 1].isspace()):
            value = after.group(1).strip().strip('"').strip()
            if value:
                out.append(value)
        i = text.find(cue, i + 1)
    return out


_VALUE = re.compile(r"[ \t]*[:=][ \t]*(\S[^\n]*)")


# --------------------------------------------------------------------- lengths
_DIGIT = re.compile(r"\d")
_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve", "fifteen", "twenty", "thirty", "forty", "fifty", "hundred")  # fmt: skip
_UNITS = ("word", "words", "sentence", "sentences", "paragraph", "paragraphs")
# The word before the number in a length request ("in 50 words", "write 100 words").
_LEAD = frozenset(
    "in of with using within about around roughly approximately exactly most least than to "
    "under over max maximum minimum only just write use answer reply respond summarize "
    "summarise describe explain give keep limit".split()
)
_AT_MOST = ("at most", "no more than", "up to", "under", "fewer than", "less than", "maximum")
_AT_LEAST = ("at least", "more than", "over", "minimum")


def _length(text: Text) -> tuple[tuple[int, int] | None, int | None]:
    """(words (low, high), sentences) a prompt asks for, from its first mention such as
    ``in 50 words``, ``at most 20 words``, ``two sentences``, ``a 3-paragraph``."""
    if not text.has(*_UNITS) or not (text.has(*_NUMBER_WORDS) or _DIGIT.search(text.lower)):
        return None, None
    lower = text.lower
    for pos in hits(lower, ("word", "sentence", "paragraph"), cap=16):
        j = pos - 1
        if j < 1 or lower[j] not in " -":
            continue
        k = lower.rfind(" ", 0, j)
        n = number(lower[k + 1 : j])
        if not n:
            continue
        if lower[j] == " " and lower[max(0, k - 12) : k].rsplit(" ", 1)[-1] not in _LEAD:
            continue  # "in 50 words", "a 50-word", "at most 50 words"; not "two words"
        unit = lower[pos : pos + 10]
        size = 4 if unit.startswith("word") else 8 if unit.startswith("sentence") else 9
        follows = lower[pos + size : pos + size + 1]
        if follows.isalpha() and follows != "s":
            continue
        before = lower[max(0, pos - 40) : pos].replace("-", " ").split()
        qualifier = " ".join(before[-4:-1])
        if unit.startswith("sentence"):
            return None, min(n, 50)
        if unit.startswith("paragraph"):
            return None, min(4 * n, 50)
        if any(q in qualifier for q in _AT_MOST):
            return (max(1, n // 2), n), None
        if any(q in qualifier for q in _AT_LEAST):
            return (n, n + max(1, n // 3)), None
        return (max(1, n * 9 // 10), max(1, n * 11 // 10)), None
    return None, None


# ------------------------------------------------------------------------ read
def _turns(messages: Sequence[object]) -> tuple[str, tuple[tuple[str, str], ...]]:
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for m in messages:
        role = m.get("role") if isinstance(m, dict) else None
        text = message_text(m)
        if role in ("system", "developer"):
            system.append(text)
        else:
            turns.append((str(role), text))
    return "\n".join(system), tuple(turns)


def read_ask(messages: Sequence[object]) -> Ask:
    """Read what the chat ``messages`` ask for (see the module docstring).

    The same messages are read once: the last 256 readings are kept (a request sent
    again, the ``n`` parallel samples of a vote, a benchmark's fixed prompt).

    Args:
        messages: the request's ``messages`` (dicts with ``role`` and ``content``).

    Returns:
        The Ask.
    """
    return _read(*_turns(messages))


@functools.lru_cache(maxsize=256)
def _read(system: str, turns: tuple[tuple[str, str], ...]) -> Ask:
    users = [t for r, t in turns if r == "user"]
    last_full = users[-1] if users else (turns[-1][1] if turns else system)
    last = Text(window(last_full))
    sys_text = Text(window(system) if system else "")

    def listed() -> tuple[str, ...]:
        found = labels_in(last) or labels_in(sys_text)
        cue = _cue(last_full)
        for text in users[:-1]:  # instructions, not the examples' inputs
            if found:
                break
            if cue is None or _cue(text) != cue:
                found = labels_in(Text(window(text)))
        return found

    examples = _chat_examples(turns, last_full) if len(turns) > 2 else []
    if not examples:
        examples = _prompt_examples(last.raw)
    if examples:
        return _mimic(examples, listed, last_full)
    parts = read_format(last) or read_format(sys_text)
    if parts:
        return Ask(source=last_full, parts=parts)
    labels = listed()
    if labels:
        return Ask(source=last_full, parts=label_reply(last, labels), labels=labels)
    parts = score_reply(last) or score_reply(sys_text)
    if parts:
        return Ask(source=last_full, parts=parts)
    length, sentences = _length(last)
    if length is None and sentences is None:
        length, sentences = _length(sys_text)
    return Ask(source=last_full, length=length, sentences=sentences)

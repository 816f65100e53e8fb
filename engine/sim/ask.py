"""What a prompt asks the simulated endpoint for: the reply's shape, read from the chat.

:func:`read_ask` turns a request's messages into an :class:`Ask`: the words to answer
with (the last user message's), and the reply's parts in order: fixed text, a choice
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

Long messages are read at their first and last 2,000 characters, where instructions are
(and their words taken from the first 2,000 and the last 1,000).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

import msgspec

from .formats import Free, Lit, Num, Part, Pick, label_reply, read_format, score_reply
from .labels import hits, labels_in, number

__all__ = ("Ask", "Free", "Lit", "Num", "Part", "Pick", "message_text", "read_ask")

_HEAD = 2000
_TAIL = 2000
_POOL_HEAD = 2000
_POOL_TAIL = 1000


class Ask(msgspec.Struct, frozen=True):
    """What one request asks for.

    Attributes:
        words: the words replies draw from (the last user message's, or the examples'
            when the reply mimics them; empty: the endpoint's fixed vocabulary).
        parts: the reply's parts in order; empty for plain text.
        labels: answers the prompt lists (also used for JSON answer fields).
        length: plain text: (low, high) words asked for, or None.
        sentences: plain text: sentences asked for, or None.
        chars: plain text mimicking examples: (low, high) characters, or None.
    """

    words: tuple[str, ...] = ()
    parts: tuple[Part, ...] = ()
    labels: tuple[str, ...] = ()
    length: tuple[int, int] | None = None
    sentences: int | None = None
    chars: tuple[int, int] | None = None


def message_text(message: Any) -> str:
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


def _window(text: str) -> str:
    """The part of a message that is read: all of it, or its head and tail."""
    if len(text) <= _HEAD + _TAIL:
        return text
    return text[:_HEAD] + "\n" + text[-_TAIL:]


_DROP = (string.punctuation + string.digits).encode()
_SPACES = bytes.maketrans(_DROP, b" " * len(_DROP))


def pool(text: str) -> tuple[str, ...]:
    """The distinct words of ``text`` (punctuation and numbers removed)."""
    if len(text) > _POOL_HEAD + _POOL_TAIL:
        text = text[:_POOL_HEAD] + " " + text[-_POOL_TAIL:]
    words = dict.fromkeys(text.encode().translate(_SPACES).decode().split())
    for junk in _JUNK:
        words.pop(junk, None)
    return tuple(words)


# The label of simulated text a prompt quotes, and what is left of "don't", "e.g.", "I'll".
_JUNK = ("simulated", "s", "t", "e", "g", "i", "ll", "re", "ve", "d", "m")


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


def _mimic(values: list[str], labels: tuple[str, ...], words: tuple[str, ...]) -> Ask:
    """Reply like ``values``: one of them when they are short, else text as long."""
    distinct = tuple(dict.fromkeys(v for v in values if v))
    if _is_short(distinct) and len(distinct) <= _MAX_OPTIONS:
        fits = labels and all(v in labels for v in distinct)
        options = labels if fits else distinct
        return Ask(words=words, parts=(Pick(options),), labels=options)
    lengths = sorted(len(v) for v in distinct)
    return Ask(words=pool(" ".join(distinct)) or words, chars=(lengths[0], lengths[-1]))


def _chat_examples(turns: list[tuple[str, str]], last: str) -> list[str]:
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
_AT_MOST = ("at most", "no more than", "up to", "under", "fewer than", "less than", "maximum")
_AT_LEAST = ("at least", "more than", "over", "minimum")


def _length(text: str, lower: str) -> tuple[tuple[int, int] | None, int | None]:
    """(words (low, high), sentences) a prompt asks for, from its first mention such as
    ``in 50 words``, ``at most 20 words``, ``two sentences``, ``a 3-paragraph``."""
    for pos in hits(lower, ("word", "sentence", "paragraph"), cap=16):
        j = pos - 1
        if j < 1 or lower[j] not in " -":
            continue
        n = number(lower[lower.rfind(" ", 0, j) + 1 : j])
        if not n:
            continue
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
def _turns(messages: Sequence[Any]) -> tuple[str, list[tuple[str, str]]]:
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for m in messages:
        role = m.get("role") if isinstance(m, dict) else None
        text = message_text(m)
        if role in ("system", "developer"):
            system.append(text)
        else:
            turns.append((str(role), text))
    return "\n".join(system), turns


def read_ask(messages: Sequence[Any]) -> Ask:
    """Read what the chat ``messages`` ask for (see the module docstring).

    Args:
        messages: the request's ``messages`` (dicts with ``role`` and ``content``).

    Returns:
        The Ask; its ``words`` are empty when the last user message has none.
    """
    system, turns = _turns(messages)
    users = [t for r, t in turns if r == "user"]
    last_full = users[-1] if users else (turns[-1][1] if turns else system)
    last = _window(last_full)
    low = last.lower()
    sys_text = _window(system)
    sys_low = sys_text.lower()
    words = pool(last_full)

    def listed() -> tuple[str, ...]:
        found = labels_in(last, low) or labels_in(sys_text, sys_low)
        for text in users[:-1]:
            found = found or labels_in(_window(text))
        return found

    examples = _chat_examples(turns, last_full) if len(turns) > 2 else []
    if not examples:
        examples = _prompt_examples(last)
    if examples:
        return _mimic(examples, listed(), words)
    parts = read_format(last, low) or read_format(sys_text, sys_low)
    if parts:
        return Ask(words=words, parts=parts)
    labels = listed()
    if labels:
        return Ask(words=words, parts=label_reply(low, labels), labels=labels)
    parts = score_reply(last, low) or score_reply(sys_text, sys_low)
    if parts:
        return Ask(words=words, parts=parts)
    length, sentences = _length(last, low)
    if length is None and sentences is None:
        length, sentences = _length(sys_text, sys_low)
    return Ask(words=words, length=length, sentences=sentences)

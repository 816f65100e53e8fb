"""LAB's reply shapes and parsers: SDG's tagged outputs, ``[QUESTION]/[ANSWER]`` blocks
and the judges' explanation + score blocks, for text replies and structured output.

The reply Structs are the schemas asked for as structured output: their names and fields
are part of every request (and so of the response cache's keys), and they carry no
docstring on purpose (a docstring would become the schema's ``description``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec

from ...errors import ParseError
from ...stages import json_schema, parse_score

__all__ = (
    "Binary",
    "Context",
    "PairScore",
    "QAList",
    "QAPair",
    "Questions",
    "Relevancy",
    "YesNo",
    "binary",
    "chunk_words",
    "first_qa",
    "first_tagged",
    "nonempty",
    "pair_score",
    "parse_judge_score",
    "parse_qa_blocks",
    "parse_tagged",
    "parse_yes_no",
    "qa_list",
    "questions_schema",
    "relevancy",
    "tagged_questions",
    "yes_no",
)


# ------------------------------------------------------------ structured shapes
class Questions(msgspec.Struct):
    questions: Annotated[list[str], msgspec.Meta(min_length=1)]


def questions_schema(n: int) -> dict[str, Any]:
    """The JSON schema sent for a set of exactly ``n`` questions (a shorter list still
    decodes)."""
    schema = json_schema(Questions)
    schema["properties"]["questions"]["minItems"] = n
    schema["properties"]["questions"]["maxItems"] = n
    return schema


class Context(msgspec.Struct):
    context: str


class QAPair(msgspec.Struct):
    question: str
    answer: str


class QAList(msgspec.Struct):
    pairs: list[QAPair]


class Binary(msgspec.Struct):
    explanation: str
    score: Annotated[int, msgspec.Meta(ge=0, le=1)]


class PairScore(msgspec.Struct):
    explanation: str
    score: Annotated[int, msgspec.Meta(ge=1, le=3)]


class Relevancy(msgspec.Struct):
    explanation: str
    score: Annotated[int, msgspec.Meta(ge=0, le=2)]


class YesNo(msgspec.Struct):
    explanation: str
    score: Literal["YES", "NO"]


# ----------------------------------------------------------------- text parsers
def parse_tagged(text: str, start: str, end: str, *, stage: str = "parse") -> list[str]:
    """The non-empty texts between each ``start``/``end`` tag pair.

    Tolerant: an unclosed last tag runs to the end; a reply without any tag counts as
    one item (the whole reply) when it is not empty.

    Raises:
        ParseError: nothing non-empty found.
    """
    pattern = re.compile(rf"{re.escape(start)}(.*?)(?:{re.escape(end)}|$)", re.S | re.I)
    found = [m.group(1).strip() for m in pattern.finditer(text)]
    if not found and start.lower() not in text.lower():
        found = [text.replace(end, "").strip()]
    items = [f for f in found if f]
    if not items:
        raise ParseError(f"expected text between {start} and {end}", stage=stage)
    return items


_QA_BLOCK = re.compile(
    r"\[QUESTION\]\s*(.*?)\s*\[ANSWER\]\s*(.*?)\s*(?:\[END\]|(?=\[QUESTION\])|$)", re.S | re.I
)


def parse_qa_blocks(text: str, *, stage: str = "gen_knowledge") -> list[tuple[str, str]]:
    """``[QUESTION] q [ANSWER] a [END]`` blocks; ``[UNANSWERABLE]`` alone gives none.

    Raises:
        ParseError: no block and no ``[UNANSWERABLE]``.
    """
    pairs = [(q.strip(), a.strip()) for q, a in _QA_BLOCK.findall(text)]
    pairs = [(q, a) for q, a in pairs if q and a]
    if not pairs and "[unanswerable]" not in text.lower():
        raise ParseError("expected [QUESTION] ... [ANSWER] ... [END] blocks", stage=stage)
    return pairs


_SCORE_BLOCK = re.compile(r"\[Start of Score\](.*?)(?:\[End of Score\]|$)", re.S | re.I)
_TOTAL = re.compile(r"total\s*score\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.I)


def parse_judge_score(text: str, *, low: int, high: int, stage: str = "judge") -> int:
    """A judge's integer score: from the ``[Start of Score]`` block, else a ``Total
    Score: X`` line, else the last ``Score: k`` (or number) in range.

    Raises:
        ParseError: no score in [low, high].
    """
    m = _SCORE_BLOCK.search(text)
    if m:
        try:
            return round(parse_score(m.group(1), low=low, high=high, stage=stage))
        except ParseError:
            pass
    totals = [float(x) for x in _TOTAL.findall(text)]
    for value in reversed(totals):
        if low <= value <= high:
            return round(value)
    return round(parse_score(text, low=low, high=high, stage=stage))


_YES_NO = re.compile(r"\b(YES|NO)\b", re.I)


def parse_yes_no(text: str, *, stage: str = "eval_faithfulness") -> Literal["YES", "NO"]:
    """``YES`` or ``NO``: the last one in the score block, else in the whole reply.

    Raises:
        ParseError: neither word found.
    """
    m = _SCORE_BLOCK.search(text)
    for part in ([m.group(1)] if m else []) + [text]:
        found = _YES_NO.findall(part)
        if found:
            return "YES" if str(found[-1]).upper() == "YES" else "NO"
    raise ParseError("expected YES or NO", stage=stage)


def binary(text: str, stage: str) -> Binary:
    """A 0/1 judge's verdict: its explanation and score.

    Raises:
        ParseError: no score in 0..1.
    """
    return Binary(
        explanation=text.strip(), score=parse_judge_score(text, low=0, high=1, stage=stage)
    )


def pair_score(text: str) -> PairScore:
    """``eval_pair``'s verdict (1-3).

    Raises:
        ParseError: no score in 1..3.
    """
    return PairScore(
        explanation=text.strip(), score=parse_judge_score(text, low=1, high=3, stage="eval_pair")
    )


def relevancy(text: str) -> Relevancy:
    """``eval_relevancy``'s verdict (0-2).

    Raises:
        ParseError: no score in 0..2.
    """
    return Relevancy(
        explanation=text.strip(),
        score=parse_judge_score(text, low=0, high=2, stage="eval_relevancy"),
    )


def yes_no(text: str) -> YesNo:
    """``eval_faithfulness``'s verdict (YES or NO).

    Raises:
        ParseError: neither word found.
    """
    return YesNo(explanation=text.strip(), score=parse_yes_no(text))


def qa_list(text: str) -> QAList:
    """``gen_knowledge``'s pairs.

    Raises:
        ParseError: no block and no ``[UNANSWERABLE]``.
    """
    return QAList([QAPair(q, a) for q, a in parse_qa_blocks(text)])


def tagged_questions(stage: str) -> Callable[[str], Questions]:
    """A parser of every ``[Start of Question]...[End of Question]`` in a reply."""

    def parse(text: str) -> Questions:
        return Questions(
            parse_tagged(text, "[Start of Question]", "[End of Question]", stage=stage)
        )

    return parse


def first_tagged(stage: str) -> Callable[[str], Context]:
    """A parser of a reply's first ``[Start of Context]...[End of Context]``."""

    def parse(text: str) -> Context:
        return Context(parse_tagged(text, "[Start of Context]", "[End of Context]", stage=stage)[0])

    return parse


# --------------------------------------------------------------- pure functions
_WORD = re.compile(r"\S+\s*")


def chunk_words(text: str, size: int) -> list[str]:
    """Split ``text`` into chunks of at most ``size`` words (whitespace kept inside a chunk).

    The last chunk may be shorter; an empty text gives no chunk.
    """
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    words = _WORD.findall(text.strip())
    return ["".join(words[i : i + size]).strip() for i in range(0, len(words), size)]


def nonempty(stage: str) -> Callable[[str], str]:
    """A parser of a non-empty text reply (stripped)."""

    def parse(text: str) -> str:
        out = text.strip()
        if not out:
            raise ParseError("empty reply", stage=stage)
        return out

    return parse


def first_qa(stage: str) -> Callable[[str], QAPair]:
    """A parser of a reply's first ``[QUESTION] ... [ANSWER] ... [END]`` block."""

    def parse(text: str) -> QAPair:
        pairs = parse_qa_blocks(text, stage=stage)
        if not pairs:
            raise ParseError("no [QUESTION] ... [ANSWER] ... [END] block", stage=stage)
        return QAPair(*pairs[0])

    return parse

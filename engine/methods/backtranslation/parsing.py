"""Reading the models' replies (an instruction, a judge's reasoning and score) and the
curation rules applied to the scores."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from ...errors import ParseError
from ...stages import parse_score

__all__ = (
    "Curation",
    "CurationWire",
    "InstructionReply",
    "decide",
    "effective_threshold",
    "parse_curation",
    "parse_instruction",
    "score_bucket",
)


# A backtranslation reply: the instruction the segment would answer. (No docstring: it
# would become the "description" of the JSON schema sent, and so change every request.)
class InstructionReply(msgspec.Struct):
    instruction: str


class Curation(msgspec.Struct):
    """One judge sample: brief reasoning and a 1-5 score (fractional from text replies)."""

    reasoning: str
    score: Annotated[float, msgspec.Meta(ge=1, le=5)]


# The structured-output schema asked of the judge: an integer score, as the rubric asks.
# (No docstring, for the same reason.)
class CurationWire(msgspec.Struct):
    reasoning: str
    score: Annotated[int, msgspec.Meta(ge=1, le=5)]


_LABEL = re.compile(r"^\s*\**\s*(?:instruction|question|user)\s*\**\s*:\s*\**\s*", re.I)
_SCORE_LINE = re.compile(r"^\W*score\W*[:=]", re.I)


def parse_instruction(text: str) -> InstructionReply:
    """The instruction of a backtranslation reply (a leading label and quotes removed).

    Raises:
        ParseError: the reply is empty.
    """
    out = _LABEL.sub("", text.strip()).strip().strip('"').strip("\u201c\u201d").strip()
    if not out:
        raise ParseError("empty instruction", stage="backtranslate")
    return InstructionReply(instruction=out)


def parse_curation(text: str) -> Curation:
    """A curation reply: the last ``Score: k`` (1-5, fractional allowed) and the reasoning
    before it; without a score line, the last number in 1-5.

    Raises:
        ParseError: no score between 1 and 5.
    """
    score = parse_score(text, low=1, high=5, stage="curate")
    lines = text.strip().splitlines()
    while lines and (not lines[-1].strip() or _SCORE_LINE.match(lines[-1])):
        lines.pop()
    reasoning = "\n".join(lines).strip()
    reasoning = re.sub(r"^\W*reasoning\W*[:=]\s*", "", reasoning, flags=re.I)
    return Curation(reasoning=reasoning, score=score)


def effective_threshold(threshold: float | None, samples: int) -> float:
    """The keep threshold: the configured one, else the paper's A5 cut (4.5: score 5 on
    one integer sample, a mean of at least 4.5 over several)."""
    del samples  # the A5 cut is the same for one sample and for averaged scores
    return 4.5 if threshold is None else threshold


def decide(score: float, threshold: float) -> bool:
    """Self-curation: keep when ``score >= threshold``."""
    return score >= threshold - 1e-9


def score_bucket(score: float) -> str:
    """Histogram bucket of a score: rounded down to the half point ("3.5", "4.0")."""
    return f"{int(score * 2) / 2:.1f}"

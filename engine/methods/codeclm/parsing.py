"""CodecLM's replies: the shape each stage asks for, and the text parsers behind them.

Each stage asks for a msgspec Struct as structured output where the endpoint supports it
(:mod:`engine.stages` sends the Struct's JSON schema) and reads plain text with the parser
here otherwise. Every parser raises :class:`~engine.errors.ParseError` naming its stage,
so a reply that does not parse is asked for again and, in the end, fails that stage.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from ...errors import ParseError
from ...stages import json_schema, parse_labelled, parse_numbered_list, parse_score_pair

__all__ = (
    "Encoding",
    "Improved",
    "Instructions",
    "Pair",
    "Rubrics",
    "Verdict",
    "exact_lists",
    "parse_encoding",
    "parse_improved",
    "parse_instructions",
    "parse_pair",
    "parse_rubrics",
    "parse_verdict",
)


# The reply shapes carry no docstring: msgspec puts a Struct's docstring into its JSON
# schema as "description", which would change the request (and every cache key).


# encode: a seed's use case and up to 3 skills
class Encoding(msgspec.Struct):
    use_case: str
    skills: Annotated[list[str], msgspec.Meta(min_length=1, max_length=3)]


# decode: basic instructions made from one metadata item
class Instructions(msgspec.Struct):
    instructions: Annotated[list[str], msgspec.Meta(min_length=1)]


# rubrics: Self-Rubrics, and the actions that make an instruction harder
class Rubrics(msgspec.Struct):
    rubrics: list[str]
    actions: Annotated[list[str], msgspec.Meta(min_length=1)]


# improve: an instruction rewritten by one action
class Improved(msgspec.Struct):
    improved_instruction: str


# check_metadata: the judge's verdict on an augmented combination
class Verdict(msgspec.Struct):
    reasonable: bool
    reason: str


# judge: the scores of the two answers, in the order shown
class Pair(msgspec.Struct):
    assistant_1: Annotated[int, msgspec.Meta(ge=1, le=10)]
    assistant_2: Annotated[int, msgspec.Meta(ge=1, le=10)]


def exact_lists(tp: type[msgspec.Struct], sizes: dict[str, int]) -> dict[str, object]:
    """The wire schema of ``tp`` asking for exactly ``sizes[field]`` items per list field.

    What is accepted back stays lenient (a shorter list still decodes and is used).
    """
    schema = json_schema(tp)
    for field, n in sizes.items():
        prop = schema["properties"][field]
        prop["minItems"] = n
        prop["maxItems"] = n
    return schema


def _split_skills(text: str) -> list[str]:
    parts = re.split(r"[,;\n]|\s\d+[.)]\s", text)
    parts = [re.sub(r"^\s*\d+[.)]\s+", "", p) for p in parts]  # "1. Creative writing"
    return [p.strip(" .-*\t") for p in parts if p.strip(" .-*\t")]


def parse_encoding(text: str, max_skills: int = 3) -> Encoding:
    """Parse ``Use case:`` (or ``Task:``) and ``Skills:`` lines.

    Raises:
        ParseError: a line is missing or no skill is named.
    """
    fields = parse_labelled(
        text,
        {"use_case": ("Use case", "Usecase", "Task"), "skills": ("Skills", "Skill")},
        stage="encode",
    )
    skills = _split_skills(fields["skills"])[:max_skills]
    if not skills:
        raise ParseError("no skill named on the Skills line", stage="encode")
    return Encoding(use_case=fields["use_case"].strip(" ."), skills=skills)


def parse_rubrics(text: str, k: int) -> Rubrics:
    """Split a reply into numbered rubrics and numbered actions.

    Splits on an ``Actions`` header when there is one; otherwise takes the first ``k``
    list items as rubrics and the next ``k`` as actions.

    Raises:
        ParseError: no action can be found.
    """
    m = re.search(r"^[ \t*#]*actions?[ \t*]*:?[ \t*]*$", text, re.I | re.M)
    if m:
        head, tail = text[: m.start()], text[m.end() :]
        try:
            rubrics = parse_numbered_list(head, stage="rubrics")
        except ParseError:
            rubrics = []
        actions = parse_numbered_list(tail, stage="rubrics")
    else:
        items = parse_numbered_list(text, stage="rubrics")
        if len(items) < 2:
            raise ParseError(
                "expected numbered rubrics followed by numbered actions", stage="rubrics"
            )
        half = min(k, len(items) // 2)
        rubrics, actions = items[:half], items[half : half + k]
    if not actions:
        raise ParseError("no actions found", stage="rubrics")
    return Rubrics(rubrics=rubrics[:k], actions=actions[:k])


def parse_instructions(text: str) -> Instructions:
    """A numbered list of basic instructions.

    Raises:
        ParseError: the reply holds no list.
    """
    return Instructions(parse_numbered_list(text, stage="decode"))


def parse_improved(text: str) -> Improved:
    """The improved instruction, without an ``Improved instruction:`` label.

    Raises:
        ParseError: the reply is empty.
    """
    out = re.sub(r"^\s*\**improved instruction\**\s*:\s*", "", text.strip(), flags=re.I).strip()
    if not out:
        raise ParseError("empty improved instruction", stage="improve")
    return Improved(improved_instruction=out)


def parse_pair(text: str) -> Pair:
    """The two scores (1-10) of the Vicuna pairwise format, rounded to integers.

    Raises:
        ParseError: no pair of scores in range.
    """
    a, b = parse_score_pair(text, low=1, high=10, stage="judge")
    return Pair(assistant_1=round(a), assistant_2=round(b))


def parse_verdict(text: str) -> Verdict:
    """YES or NO, and the whole reply as the reason.

    Raises:
        ParseError: neither word is in the reply.
    """
    m = re.search(r"\b(YES|NO)\b", text, re.I)
    if m is None:
        raise ParseError("expected YES or NO", stage="check_metadata")
    return Verdict(reasonable=m.group(1).upper() == "YES", reason=text.strip())

"""CodecLM's generation steps, built on the run's :class:`~engine.Context`.

Each step is an :class:`engine.stages.Generate`: a template, the reply's shape (asked for
as structured output where the endpoint supports it, parsed from text otherwise), the
sampling parameters of its stage, and the stage's metrics (``ctx.observer``). The roles
are resolved once, so a missing one is an error before any call.

Depths (gate priority, deeper first): encode and check_metadata 0, rubrics and decode 1,
improve 2, respond 3, judge 4; an instruction's iteration ``i`` adds ``4 (i - 1)`` so that
started work finishes before new work starts.
"""

from __future__ import annotations

from typing import NamedTuple

from ...stages import ChatCaller, Generate
from ..custom import Context
from .config import CodecLMConfig
from .parsing import (
    Encoding,
    Improved,
    Instructions,
    Pair,
    Rubrics,
    Verdict,
    exact_lists,
    parse_encoding,
    parse_improved,
    parse_instructions,
    parse_pair,
    parse_rubrics,
    parse_verdict,
)

__all__ = ("Roles", "Steps")


def _strip(text: str) -> str:
    return text.strip()


class Roles(NamedTuple):
    """The callers of CodecLM's three roles."""

    strong: ChatCaller
    target: ChatCaller
    judge: ChatCaller


class Steps:
    """The seven steps of one run (one attribute per stage), and the roles' callers.

    Attributes:
        roles: the callers of ``strong``, ``target`` and ``judge``.
        encode, rubrics, decode, improve, respond, judge, check_metadata: the steps.
    """

    def __init__(self, cfg: CodecLMConfig, ctx: Context) -> None:
        t = cfg.templates
        gen = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
        obs = ctx.observer
        self.roles = Roles(ctx.caller("strong"), ctx.caller("target"), ctx.caller("judge"))
        max_skills, k = cfg.max_skills, cfg.rubric_count

        def encoding(text: str) -> Encoding:
            return parse_encoding(text, max_skills)

        def rubrics(text: str) -> Rubrics:
            return parse_rubrics(text, k)

        self.encode: Generate[Encoding] = Generate(
            "encode",
            depth=0,
            template=t.encode,
            schema=Encoding,
            parse_text=encoding,
            params=gen,
            observer_for=obs,
        )
        self.rubrics: Generate[Rubrics] = Generate(
            "rubrics",
            depth=1,
            template=t.rubrics,
            schema=Rubrics,
            parse_text=rubrics,
            params=gen,
            observer_for=obs,
            wire_schema=exact_lists(Rubrics, {"rubrics": k, "actions": k}),
        )
        self.decode: Generate[Instructions] = Generate(
            "decode",
            depth=1,
            template=t.decode,
            schema=Instructions,
            parse_text=parse_instructions,
            params=gen,
            observer_for=obs,
            wire_schema=exact_lists(Instructions, {"instructions": cfg.instructions_per_metadata}),
        )
        self.improve: Generate[Improved] = Generate(
            "improve",
            depth=2,
            template=t.improve,
            schema=Improved,
            parse_text=parse_improved,
            params=gen,
            observer_for=obs,
        )
        self.respond: Generate[str] = Generate(
            "respond",
            depth=3,
            template=t.respond,
            schema=None,
            parse_text=_strip,
            params={"temperature": cfg.response_temperature, "max_tokens": cfg.response_max_tokens},
            observer_for=obs,
            parse_retries=0,
        )
        self.judge: Generate[Pair] = Generate(
            "judge",
            depth=4,
            template=t.judge,
            schema=Pair,
            parse_text=parse_pair,
            params={"temperature": cfg.judge_temperature, "max_tokens": cfg.judge_max_tokens},
            observer_for=obs,
        )
        self.check_metadata: Generate[Verdict] = Generate(
            "check_metadata",
            depth=0,
            template=t.check_metadata,
            schema=Verdict,
            parse_text=parse_verdict,
            params={"temperature": cfg.judge_temperature, "max_tokens": 64},
            observer_for=obs,
        )

"""``respond``: seed instruction -> strong response -> judge score (1-10) -> keep if >= threshold.

The simplest pipeline, kept as a smoke test of the engine and for users who only need
responses for instructions they already have.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import msgspec

from ..config import Base
from ..errors import EndpointError, EngineError, InputError, ParseError
from ..io.readers import read_jsonl
from ..records import BadInput, Item, RowOut, row_id
from ..stages import Generate, check_template, parse_score
from .base import MethodContext, bad_input_reason, failed_row, items_for_schema

__all__ = ("RespondConfig", "RespondMethod")

RESPOND_TEMPLATE = "{{instruction}}"
JUDGE_TEMPLATE = """You are a strict reviewer of AI assistant answers.
Rate how helpful, relevant, accurate and detailed the answer is on a scale of 1 to 10.
First give a one-sentence explanation, then write "Score: <1-10>" on the last line.

[Question]
{{instruction}}

[The Start of the Answer]
{{response}}
[The End of the Answer]"""


class RespondConfig(Base, frozen=True):
    """``[method.respond]``.

    Attributes:
        threshold: keep a response whose judge score is at least this (1-10).
        max_tokens: response length limit.
        temperature: response sampling temperature.
        judge_temperature: judge sampling temperature.
        respond_template: user message for the response (``{{instruction}}``).
        judge_template: judge prompt (``{{instruction}}``, ``{{response}}``).
    """

    threshold: Annotated[float, msgspec.Meta(ge=1, le=10)] = 7.0
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 512
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    judge_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.0
    respond_template: str = RESPOND_TEMPLATE
    judge_template: str = JUDGE_TEMPLATE


class _Text(msgspec.Struct):
    response: str


class _Score(msgspec.Struct):
    explanation: str
    score: Annotated[int, msgspec.Meta(ge=1, le=10)]


class RespondMethod:
    """The ``respond`` pipeline."""

    name = "respond"

    def __init__(self, cfg: RespondConfig, ctx: MethodContext) -> None:
        check_template(
            cfg.respond_template, {"instruction"}, field="method.respond.respond_template"
        )
        check_template(
            cfg.judge_template, {"instruction", "response"}, field="method.respond.judge_template"
        )
        self.cfg = cfg
        self.ctx = ctx
        self.respond = Generate(
            "respond",
            depth=1,
            template=cfg.respond_template,
            schema=_Text,
            parse_text=lambda t: _Text(response=t.strip()),
            params={"temperature": cfg.temperature, "max_tokens": cfg.max_tokens},
            observer_for=ctx.stage,
        )
        self.judge = Generate(
            "judge",
            depth=2,
            template=cfg.judge_template,
            schema=_Score,
            parse_text=lambda t: _Score(
                explanation=t.strip(), score=round(parse_score(t, low=1, high=10, stage="judge"))
            ),
            params={"temperature": cfg.judge_temperature, "max_tokens": 256},
            observer_for=ctx.stage,
        )

    async def prepare(self) -> None:
        """Nothing to prepare."""

    def work(self) -> Iterator[Item | BadInput]:
        """One item per input line with an ``instruction`` (a bad line: an item that
        becomes a failed row, written by :meth:`process` so it says ``simulated`` too)."""
        return items_for_schema(
            read_jsonl(
                self.ctx.input_path,
                required=("instruction",),
                duplicate_ids=self.ctx.config.run.duplicate_ids,
            )
        )

    def _failed(self, item: Item, stage: str, error: EngineError | str) -> list[RowOut]:
        kind, row = failed_row(self.name, item.key, source=item.source, stage=stage, error=error)
        row["simulated"] = self.ctx.simulated
        return [(kind, row)]

    async def process(self, item: Item) -> list[RowOut]:
        """Respond, judge, route."""
        bad = bad_input_reason(item)
        if bad is not None:
            return self._failed(item, "input", bad)
        instruction = str(item.data["instruction"])
        strong = self.ctx.callers["strong"]
        judge = self.ctx.callers["judge"]
        try:
            answer = await self.respond(strong, {"instruction": instruction})
            verdict = await self.judge(
                judge, {"instruction": instruction, "response": answer.response}
            )
        except (EndpointError, ParseError, InputError) as exc:
            return self._failed(item, getattr(exc, "stage", None) or "respond", exc)
        row: dict[str, Any] = {
            "id": row_id(self.name, item.key),
            "instruction": instruction,
            "response": answer.response,
            "score": verdict.score,
            "explanation": verdict.explanation,
            "seed_id": item.key,
            "models": self.ctx.models(),
            "simulated": self.ctx.simulated,
        }
        if verdict.score >= self.cfg.threshold:
            return [("kept", row)]
        row["reason"] = f"judge score {verdict.score} < threshold {self.cfg.threshold:g}"
        return [("rejected", row)]

    def report(self) -> dict[str, Any]:
        """Nothing beyond the common report."""
        return {"threshold": self.cfg.threshold}

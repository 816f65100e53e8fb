"""``respond``: seed instruction -> strong response -> judge score (1-10) -> keep if >= threshold.

The simplest pipeline, kept as a smoke test of the engine and for users who only need
responses for instructions they already have. Built on the public method API
(:class:`engine.Method`), like a method a user would write.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, ClassVar

import msgspec

from ..config import Config as RunConfig
from ..config import locate_key
from ..errors import ConfigError, EndpointError, InputError, ParseError
from ..io.readers import read_jsonl
from ..records import BadInput, Item, row_id
from ..stages import Generate, check_template, parse_score
from .base import bad_input_reason, items_for_schema
from .custom import Context, Failed, Kept, Method, MethodConfig, Rejected, TypedRow

__all__ = (
    "JUDGE_TEMPLATE",
    "RESPOND_TEMPLATE",
    "Respond",
    "RespondConfig",
    "RespondFailed",
    "RespondRow",
)

RESPOND_TEMPLATE = "{{instruction}}"
JUDGE_TEMPLATE = """You are a strict reviewer of AI assistant answers.
Rate how helpful, relevant, accurate and detailed the answer is on a scale of 1 to 10.
First give a one-sentence explanation, then write "Score: <1-10>" on the last line.

[Question]
{{instruction}}

[The Start of the Answer]
{{response}}
[The End of the Answer]"""

_NAME = "respond"


class RespondConfig(MethodConfig, frozen=True):
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


# The replies' shapes (no docstrings: a docstring becomes the "description" of the JSON
# schema sent as structured output, and so would change every request).
class _Text(msgspec.Struct):
    response: str


class _Score(msgspec.Struct):
    explanation: str
    score: Annotated[int, msgspec.Meta(ge=1, le=10)]


def _parse_judge(text: str) -> _Score:
    return _Score(
        explanation=text.strip(), score=round(parse_score(text, low=1, high=10, stage="judge"))
    )


class RespondRow(msgspec.Struct, frozen=True, kw_only=True):
    """A judged response: kept as is, or rejected (the engine adds ``reason`` last)."""

    id: str
    instruction: str
    response: str
    score: int
    explanation: str
    seed_id: str
    models: dict[str, str]
    simulated: bool


class RespondFailed(msgspec.Struct, frozen=True, kw_only=True):
    """An instruction that got no judged response: a bad input line or a failed call."""

    id: str
    seed_id: str
    source: str
    stage: str
    error_kind: str
    error: str
    simulated: bool


def _source_text(config: RunConfig) -> str | None:
    try:
        return Path(config.source).read_text(encoding="utf-8") if config.source else None
    except OSError:
        return None


class _Steps:
    def __init__(self, cfg: RespondConfig, ctx: Context) -> None:
        self.respond = Generate(
            "respond",
            depth=1,
            template=cfg.respond_template,
            schema=_Text,
            parse_text=lambda t: _Text(response=t.strip()),
            params={"temperature": cfg.temperature, "max_tokens": cfg.max_tokens},
            observer_for=ctx.observer,
        )
        self.judge = Generate(
            "judge",
            depth=2,
            template=cfg.judge_template,
            schema=_Score,
            parse_text=_parse_judge,
            params={"temperature": cfg.judge_temperature, "max_tokens": 256},
            observer_for=ctx.observer,
        )


class Respond(Method):
    """The ``respond`` pipeline (see the module docstring)."""

    name: ClassVar[str] = _NAME
    Config = RespondConfig
    required_fields: ClassVar[tuple[str, ...]] = ("instruction",)
    provenance_columns: ClassVar[bool] = False

    def __init__(self, options: RespondConfig | None = None) -> None:
        super().__init__(options)
        self.cfg = options or RespondConfig()
        self._steps: _Steps | None = None

    @classmethod
    def check_options(cls, options: object, config: RunConfig) -> None:
        """The templates use only the placeholders they are given.

        Raises:
            ConfigError: a template uses another placeholder (the config file, the
                template's line and key, and the placeholders it may use).
        """
        assert isinstance(options, RespondConfig)
        checks = (
            ("respond_template", options.respond_template, {"instruction"}),
            ("judge_template", options.judge_template, {"instruction", "response"}),
        )
        for key, template, allowed in checks:
            field = f"method.{_NAME}.{key}"
            try:
                check_template(template, allowed, field=field)
            except ConfigError as exc:
                overridden = field in config.overridden
                text = _source_text(config) if not overridden else None
                raise ConfigError(
                    exc.reason,
                    path="--set" if overridden else (config.source or None),
                    line=locate_key(text, field) if text else None,
                    field=field,
                    hint=exc.hint,
                ) from exc

    def work(self, ctx: Context) -> Iterator[Item | BadInput]:
        """One item per input line with an ``instruction`` (a bad line: an item that
        becomes a failed row, written by :meth:`process` so it says ``simulated`` too)."""
        return items_for_schema(
            read_jsonl(
                ctx.input_path,
                required=self.required_fields,
                duplicate_ids=ctx.config.run.duplicate_ids,
            )
        )

    def _failed(
        self,
        item: Item,
        ctx: Context,
        stage: str,
        error: EndpointError | ParseError | InputError | str,
    ) -> TypedRow:
        if isinstance(error, str):
            kind = "input"
        elif isinstance(error, EndpointError):
            kind = error.kind
        else:
            kind = type(error).__name__
        row = RespondFailed(
            id=row_id(_NAME, item.key, stage, "failed"),
            seed_id=item.key,
            source=item.source,
            stage=stage,
            error_kind=kind,
            error=str(error),
            simulated=ctx.simulated,
        )
        return Failed(row.stage, row.error, data=row)

    async def process(self, item: Item, ctx: Context) -> list[TypedRow]:
        """Respond, judge, route."""
        if self._steps is None:
            self._steps = _Steps(self.cfg, ctx)
        steps = self._steps
        bad = bad_input_reason(item)
        if bad is not None:
            return [self._failed(item, ctx, "input", bad)]
        instruction = str(item.data["instruction"])
        try:
            answer = await steps.respond(ctx.caller("strong"), {"instruction": instruction})
            verdict = await steps.judge(
                ctx.caller("judge"), {"instruction": instruction, "response": answer.response}
            )
        except (EndpointError, ParseError, InputError) as exc:
            stage = exc.stage if isinstance(exc, EndpointError | ParseError) else None
            return [self._failed(item, ctx, stage or "respond", exc)]
        row = RespondRow(
            id=row_id(_NAME, item.key),
            instruction=instruction,
            response=answer.response,
            score=verdict.score,
            explanation=verdict.explanation,
            seed_id=item.key,
            models=ctx.models(),
            simulated=ctx.simulated,
        )
        if verdict.score >= self.cfg.threshold:
            return [Kept(row)]
        return [
            Rejected(row, reason=f"judge score {verdict.score} < threshold {self.cfg.threshold:g}")
        ]

    def report(self) -> dict[str, object]:
        """Nothing beyond the common report but the threshold."""
        return {"threshold": self.cfg.threshold}

"""The declarative pipeline's config: its stage kinds, and their checks before any call.

``[method.pipeline]`` decodes into :class:`PipelineConfig` (a tagged union of stages on
``kind``; unknown keys are errors with file, line and key, like the rest of the config).
:func:`check_pipeline` then checks what a Struct cannot: each stage reads only columns an
input field or an earlier stage wrote, writes no column twice, samples from a consistent
set of values, and explodes only a column that can hold a list. The stages run in
:mod:`engine.methods.pipeline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from ..config import Config as RunConfig
from ..config import locate_key
from ..errors import ConfigError
from ..stages import template_vars
from .custom import MethodConfig

__all__ = (
    "DedupStage",
    "ExplodeStage",
    "FilterStage",
    "GenerateStage",
    "JudgeStage",
    "PipelineConfig",
    "SampleStage",
    "Stage",
    "Value",
    "check_pipeline",
    "stage_reads",
    "stage_writes",
)

_Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
_FieldType = Literal[
    "string", "integer", "number", "boolean", "list[string]", "list[integer]", "list[number]"
]
_Enum = Annotated[list[str], msgspec.Meta(min_length=1)]
_Field = _FieldType | _Enum  # a type, or the values allowed (a string enum)
Value = str | int | float | bool


class _Stage(MethodConfig, frozen=True, tag_field="kind"):
    name: _Name


class GenerateStage(_Stage, frozen=True, tag="generate"):
    """A model writes ``output`` (its text), or ``fields`` (a JSON object's fields)."""

    template: str
    role: Literal["strong", "target", "judge"] = "strong"
    system: str | None = None
    output: _Name | None = None
    fields: dict[_Name, _Field] = msgspec.field(default_factory=dict)
    n: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 512


class JudgeStage(_Stage, frozen=True, tag="judge"):
    """A judge's score on ``scale`` in ``output``; rows below ``min`` are rejected."""

    template: str
    output: _Name
    role: Literal["strong", "target", "judge"] = "judge"
    system: str | None = None
    scale: tuple[float, float] = (1.0, 10.0)
    min: float | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 256


class FilterStage(_Stage, frozen=True, tag="filter"):
    """Rejects rows whose ``column`` is out of bounds (length or value) or not matching."""

    column: _Name
    min_chars: Annotated[int, msgspec.Meta(ge=0)] | None = None
    max_chars: Annotated[int, msgspec.Meta(ge=1)] | None = None
    min: float | None = None
    max: float | None = None
    pattern: str | None = None


class DedupStage(_Stage, frozen=True, tag="dedup"):
    """Rejects a row whose ``column`` (case and spacing aside) was seen before.

    ``scope = "item"`` compares the rows of one item (a fan-out's repeats); ``"run"``
    across the whole run, first come first kept (a resumed run knows the committed rows).
    """

    column: _Name
    scope: Literal["item", "run"] = "run"


class SampleStage(_Stage, frozen=True, tag="sample"):
    """Draws ``output`` without a model, with the item's own random source.

    From ``values`` (weighted by ``weights``); from ``values`` keyed by the value of the
    column ``by`` (a table of lists); or uniformly between ``low`` and ``high`` (integers
    when both are integers).
    """

    output: _Name
    values: list[Value] | dict[str, list[Value]] | None = None
    weights: list[Annotated[float, msgspec.Meta(ge=0)]] | None = None
    by: _Name | None = None
    low: int | float | None = None
    high: int | float | None = None


class ExplodeStage(_Stage, frozen=True, tag="explode"):
    """One row per element of the list in ``column``, the element in ``output``."""

    column: _Name
    output: _Name


Stage = GenerateStage | JudgeStage | FilterStage | DedupStage | SampleStage | ExplodeStage


class PipelineConfig(MethodConfig, frozen=True):
    """``[method.pipeline]``: the input fields the stages read, and the stages."""

    inputs: list[_Name] = msgspec.field(default_factory=list)
    stages: list[Stage] = msgspec.field(default_factory=list)


def stage_writes(stage: Stage) -> list[str]:
    if isinstance(stage, GenerateStage):
        return [stage.output] if stage.output else list(stage.fields)
    if isinstance(stage, JudgeStage | SampleStage | ExplodeStage):
        return [stage.output]
    return []


def stage_reads(stage: Stage) -> set[str]:
    if isinstance(stage, GenerateStage | JudgeStage):
        return template_vars(stage.template) | template_vars(stage.system or "")
    if isinstance(stage, SampleStage):
        return {stage.by} if stage.by else set()
    return {stage.column}


def _stage_line(text: str | None, index: int, key: str | None) -> int | None:
    """The line of stage ``index``'s ``key`` (or of its ``[[...]]`` header)."""
    if not text:
        return None
    return locate_key(text, f"method.pipeline.stages.{index}" + (f".{key}" if key else ""))


def check_pipeline(cfg: PipelineConfig, config: RunConfig) -> None:
    """Check what the Structs cannot: columns read before they are written, written twice,
    samples without a consistent set of values, a non-list exploded, no stage at all.

    Raises:
        ConfigError: the mistake, with the file, line and key of the stage.
    """
    text = Path(config.source).read_text(encoding="utf-8") if config.source else None

    def fail(index: int, key: str | None, reason: str, hint: str) -> ConfigError:
        field = f"method.pipeline.stages.{index}" + (f".{key}" if key else "")
        return ConfigError(
            reason,
            path=config.source or None,
            line=_stage_line(text, index, key),
            field=field,
            hint=hint,
        )

    if not cfg.stages:
        raise ConfigError(
            "a pipeline needs at least one stage",
            path=config.source or None,
            line=locate_key(text, "method.pipeline") if text else None,
            field="method.pipeline.stages",
            hint="add [[method.pipeline.stages]] tables (kind = generate, judge, filter, "
            "dedup, sample, explode)",
        )
    # column -> what it holds, where known: "list[...]", a field type, "text"...
    known: dict[str, str | None] = dict.fromkeys(cfg.inputs)
    drawn: dict[str, list[Value]] = {}  # column -> the values a sample stage draws from
    for index, stage in enumerate(cfg.stages):
        missing = sorted(stage_reads(stage) - set(known))
        if missing:
            key = (
                "by"
                if isinstance(stage, SampleStage)
                else "column"
                if isinstance(stage, FilterStage | DedupStage | ExplodeStage)
                else "template"
            )
            raise fail(
                index,
                key,
                f"stage {stage.name!r} reads {', '.join(missing)}, which no input field or "
                "earlier stage writes",
                f"available here: {', '.join(sorted(known)) or 'nothing'}; list input fields "
                "in method.pipeline.inputs",
            )
        if isinstance(stage, GenerateStage) and bool(stage.output) == bool(stage.fields):
            raise fail(
                index,
                "output",
                f"stage {stage.name!r} must write either output (its text) or fields "
                "(a JSON object's fields), not both or neither",
                'write output = "answer", or fields = { answer = "string" }',
            )
        problem = (
            _sample_problem(stage, drawn)
            if isinstance(stage, SampleStage)
            else _explode_problem(stage, known)
            if isinstance(stage, ExplodeStage)
            else None
        )
        if problem is not None:
            raise fail(index, *problem)
        for column in stage_writes(stage):
            if column in known:
                raise fail(
                    index,
                    "output" if not isinstance(stage, GenerateStage) or stage.output else "fields",
                    f"stage {stage.name!r} writes {column!r}, which is already a column",
                    "give it another name",
                )
            known[column] = _holds(stage, column, known)
        if isinstance(stage, SampleStage) and isinstance(stage.values, list):
            drawn[stage.output] = stage.values


def _holds(stage: Stage, column: str, known: Mapping[str, str | None]) -> str | None:
    """What ``column``, written by ``stage``, holds (None: not known before the run)."""
    if isinstance(stage, GenerateStage):
        kind = stage.fields.get(column, "text")
        return "string" if isinstance(kind, list) else kind
    if isinstance(stage, JudgeStage):
        return "number"
    if isinstance(stage, ExplodeStage):
        listed = known.get(stage.column)
        return listed[5:-1] if listed and listed.startswith("list[") else None
    return "sampled"


def _sample_problem(
    stage: SampleStage, drawn: Mapping[str, list[Value]]
) -> tuple[str, str, str] | None:
    """(key, reason, hint) of a sample stage's mistake, or None."""
    name = f"stage {stage.name!r}"
    ranged = stage.low is not None or stage.high is not None
    if ranged and stage.values is not None:
        return "values", f"{name} gives both values and a range", "keep values, or low and high"
    if ranged:
        if stage.low is None or stage.high is None:
            return "low", f"{name} needs both low and high", "write low = 1 and high = 5"
        if stage.low > stage.high:
            return "low", f"{name} has low {stage.low} above high {stage.high}", "swap them"
        return None
    if stage.values is None:
        return (
            "values",
            f"{name} has nothing to draw from",
            'list values = ["a", "b"], or give low and high for a uniform range',
        )
    if isinstance(stage.values, dict):
        if stage.by is None:
            return (
                "values",
                f"{name} lists values per key but names no column to key them by",
                'add by = "the column whose value picks the list"',
            )
        empty = sorted(k for k, v in stage.values.items() if not v)
        if empty:
            return "values", f"{name} has no values for {', '.join(empty)}", "list some"
        unlisted = sorted({str(v) for v in drawn.get(stage.by, [])} - set(stage.values))
        if unlisted:
            return (
                "values",
                f"{name} has no values for {stage.by} = {', '.join(unlisted)}",
                f"list values for every value the {stage.by!r} stage draws",
            )
        return None
    if stage.by is not None:
        return (
            "by",
            f"{name} names by = {stage.by!r} but its values are one list",
            f"write values as a table of lists keyed by the values of {stage.by!r}",
        )
    if not stage.values:
        return "values", f"{name} has an empty values list", "list some values"
    if stage.weights is not None:
        if len(stage.weights) != len(stage.values):
            return (
                "weights",
                f"{name} has {len(stage.weights)} weights for {len(stage.values)} values",
                "give one weight per value",
            )
        if not sum(stage.weights) > 0:
            return "weights", f"{name}'s weights are all zero", "give some value a weight"
    return None


def _explode_problem(
    stage: ExplodeStage, known: Mapping[str, str | None]
) -> tuple[str, str, str] | None:
    """(key, reason, hint) when ``stage`` explodes a column known not to be a list."""
    holds = known.get(stage.column)
    if holds is None or holds.startswith("list["):
        return None
    return (
        "column",
        f"stage {stage.name!r} explodes {stage.column!r}, which holds {holds} values, not lists",
        f'have a generate stage write it as a list: fields = {{ {stage.column} = "list[string]" }}',
    )

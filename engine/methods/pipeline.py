"""Declarative pipelines: a generation job declared in TOML, no Python (``method = "pipeline"``).

Each input record is a row of columns. Stages run in order over the rows of an item; each
reads columns (the ``{{name}}`` placeholders of its template, or its ``column``) and
writes columns::

    [method.pipeline]
    inputs = ["topic"]                 # the input record's fields the stages read

    [[method.pipeline.stages]]
    kind = "generate"                  # a model writes a column (or several, with fields)
    name = "question"
    role = "strong"
    template = "Ask a question about {{topic}}."
    output = "question"
    n = 2                              # fan-out: each row becomes 2

    [[method.pipeline.stages]]
    kind = "judge"                     # a score on a scale; rows below min are rejected
    name = "score"
    role = "judge"
    template = "Rate 1-10: {{question}}"
    output = "score"
    min = 6

    [[method.pipeline.stages]]
    kind = "filter"                    # a rule on a column's length or value
    name = "length"
    column = "question"
    max_chars = 300

    [[method.pipeline.stages]]
    kind = "dedup"                     # exact duplicates (normalised text) are rejected
    name = "unique"
    column = "question"

Everything is validated before a call is made, with the file, line and key of the
mistake: unknown keys, unknown stage kinds, a template that reads a column nothing has
written yet, a column written twice. It is built on the public method API
(:mod:`engine.methods.custom`), like a method a user would write.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from ..config import Config as RunConfig
from ..config import locate_key
from ..errors import ConfigError, EndpointError, ParseError
from ..io.readers import read_jsonl
from ..io.shards import iter_rows
from ..records import BadInput, Item, row_id
from ..stages import template_vars
from .custom import Context, Failed, Kept, Method, MethodConfig, Rejected, TypedRow

__all__ = ("PipelineConfig", "PipelineMethod")

_Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
_FieldType = Literal["string", "integer", "number", "boolean"]


class _Stage(MethodConfig, frozen=True, tag_field="kind"):
    name: _Name


class GenerateStage(_Stage, frozen=True, tag="generate"):
    """A model writes ``output`` (its text), or ``fields`` (a JSON object's fields)."""

    template: str
    role: Literal["strong", "target", "judge"] = "strong"
    system: str | None = None
    output: _Name | None = None
    fields: dict[_Name, _FieldType] = msgspec.field(default_factory=dict)
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


Stage = GenerateStage | JudgeStage | FilterStage | DedupStage


class PipelineConfig(MethodConfig, frozen=True):
    """``[method.pipeline]``: the input fields the stages read, and the stages."""

    inputs: list[_Name] = msgspec.field(default_factory=list)
    stages: list[Stage] = msgspec.field(default_factory=list)


def _writes(stage: Stage) -> list[str]:
    if isinstance(stage, GenerateStage):
        return [stage.output] if stage.output else list(stage.fields)
    if isinstance(stage, JudgeStage):
        return [stage.output]
    return []


def _reads(stage: Stage) -> set[str]:
    if isinstance(stage, GenerateStage | JudgeStage):
        return template_vars(stage.template) | template_vars(stage.system or "")
    return {stage.column}


def _norm(text: object) -> str:
    return hashlib.blake2b(
        " ".join(str(text).lower().split()).encode("utf-8"), digest_size=12
    ).hexdigest()


class PipelineMethod(Method):
    """Runs the stages declared in ``[method.pipeline]`` (see the module docstring)."""

    name = "pipeline"
    Config = PipelineConfig

    def __init__(self, options: PipelineConfig | None = None) -> None:
        super().__init__(options)
        self.cfg = options or PipelineConfig()
        self.seen: dict[str, set[str]] = {}  # dedup stage -> normalised values kept
        self.columns = [*self.cfg.inputs]
        for stage in self.cfg.stages:
            self.columns += _writes(stage)
        self.kept_by_stage: dict[str, int] = {}
        self.rejected_by_stage: dict[str, int] = {}

    @classmethod
    def check_options(cls, options: Any, config: RunConfig) -> None:
        """Columns read before they are written, or written twice (file, line and key)."""
        _check(options, config)

    def work(self, ctx: Context) -> Iterator[Item | BadInput]:
        """The input records; each must have the declared ``inputs`` fields."""
        return read_jsonl(
            ctx.input_path,
            required=tuple(self.cfg.inputs),
            duplicate_ids=ctx.config.run.duplicate_ids,
        )

    async def prepare(self, ctx: Context) -> None:
        # A resumed run's dedup knows what was committed before.
        runs = [s for s in self.cfg.stages if isinstance(s, DedupStage) and s.scope == "run"]
        out = ctx.config.resolve(ctx.config.run.output)
        for stage in runs:
            seen = self.seen.setdefault(stage.name, set())
            for row in iter_rows(out, "kept"):
                if stage.column in row:
                    seen.add(_norm(row[stage.column]))

    async def process(self, item: Item, ctx: Context) -> list[TypedRow]:
        rows: list[dict[str, Any]] = [
            {**dict.fromkeys(self.columns), **{k: item.data.get(k) for k in self.cfg.inputs}}
        ]
        paths = [""]
        out: list[TypedRow] = []
        item_seen: dict[str, set[str]] = {}
        for depth, stage in enumerate(self.cfg.stages):
            next_rows: list[dict[str, Any]] = []
            next_paths: list[str] = []
            for row, path in zip(rows, paths, strict=True):
                try:
                    produced = await self._apply(stage, depth, row, path, item, ctx, item_seen)
                except (EndpointError, ParseError) as exc:
                    out.append(Failed(stage.name, str(exc), data=self._id(item, path, row)))
                    continue
                for variant, (new, reason) in enumerate(produced):
                    sub = f"{path}/{stage.name}.{variant}" if len(produced) > 1 else path
                    if reason is not None:
                        self.rejected_by_stage[stage.name] = (
                            self.rejected_by_stage.get(stage.name, 0) + 1
                        )
                        out.append(
                            Rejected(self._id(item, sub, new), reason=f"{stage.name}: {reason}")
                        )
                    else:
                        next_rows.append(new)
                        next_paths.append(sub)
            rows, paths = next_rows, next_paths
        out.extend(Kept(self._id(item, path, row)) for row, path in zip(rows, paths, strict=True))
        return out

    def _id(self, item: Item, path: str, row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row_id(self.name, item.key, path), **row}

    async def _apply(
        self,
        stage: Stage,
        depth: int,
        row: dict[str, Any],
        path: str,
        item: Item,
        ctx: Context,
        item_seen: dict[str, set[str]],
    ) -> list[tuple[dict[str, Any], str | None]]:
        """The rows ``stage`` makes of ``row``, each with its rejection reason (or None)."""
        if isinstance(stage, GenerateStage):
            schema = _schema(stage.fields) if stage.fields else None
            kwargs: dict[str, Any] = {
                "schema": schema,
                "system": stage.system,
                "stage": stage.name,
                "depth": depth,
                "temperature": stage.temperature,
                "max_tokens": stage.max_tokens,
            }
            replies = await ctx.samples(stage.role, stage.template, row, n=stage.n, **kwargs)
            made: list[tuple[dict[str, Any], str | None]] = []
            for reply in replies:
                new = dict(row)
                if stage.output:
                    new[stage.output] = reply if isinstance(reply, str) else str(reply)
                else:
                    for name in stage.fields:
                        new[name] = reply.get(name) if isinstance(reply, dict) else None
                made.append((new, None))
            return made
        if isinstance(stage, JudgeStage):
            score = await ctx.judge(
                stage.role,
                stage.template,
                row,
                scale=stage.scale,
                system=stage.system,
                stage=stage.name,
                depth=depth,
                max_tokens=stage.max_tokens,
            )
            new = {**row, stage.output: score}
            below = stage.min is not None and score < stage.min
            return [(new, f"{score:g} < {stage.min:g}" if below else None)]
        if isinstance(stage, FilterStage):
            return [(row, _filter(stage, row.get(stage.column)))]
        value = _norm(row.get(stage.column))
        if stage.scope == "item":
            seen = item_seen.setdefault(stage.name, set())
        else:
            # First come, first kept, across items in flight too (claimed at the check);
            # a resumed run starts from the committed rows' values (see prepare).
            seen = self.seen.setdefault(stage.name, set())
        if value in seen:
            return [(row, f"duplicate {stage.column}")]
        seen.add(value)
        return [(row, None)]

    def report(self) -> dict[str, Any]:
        return {
            "stages": [s.name for s in self.cfg.stages],
            "rejected_by_stage": dict(self.rejected_by_stage),
        }


def _schema(fields: Mapping[str, str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in fields.items()},
        "required": list(fields),
        "additionalProperties": False,
    }


def _filter(stage: FilterStage, value: Any) -> str | None:
    if value is None:
        return f"{stage.column} is empty"
    if stage.min_chars is not None or stage.max_chars is not None:
        n = len(str(value))
        if stage.min_chars is not None and n < stage.min_chars:
            return f"{stage.column} has {n} characters, under {stage.min_chars}"
        if stage.max_chars is not None and n > stage.max_chars:
            return f"{stage.column} has {n} characters, over {stage.max_chars}"
    if stage.min is not None or stage.max is not None:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"{stage.column} is not a number"
        if stage.min is not None and number < stage.min:
            return f"{stage.column} {number:g} < {stage.min:g}"
        if stage.max is not None and number > stage.max:
            return f"{stage.column} {number:g} > {stage.max:g}"
    if stage.pattern is not None and not re.search(stage.pattern, str(value)):
        return f"{stage.column} does not match {stage.pattern!r}"
    return None


def _stage_line(text: str | None, index: int, key: str | None) -> int | None:
    """The line of stage ``index``'s ``key`` (or of its ``[[...]]`` header)."""
    if not text:
        return None
    return locate_key(text, f"method.pipeline.stages.{index}" + (f".{key}" if key else ""))


def _check(cfg: PipelineConfig, config: RunConfig) -> None:
    """Columns read before they are written, written twice, or no stage at all."""
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
            hint="add [[method.pipeline.stages]] tables (kind = generate, judge, filter, dedup)",
        )
    known = set(cfg.inputs)
    for index, stage in enumerate(cfg.stages):
        missing = sorted(_reads(stage) - known)
        if missing:
            key = "column" if isinstance(stage, FilterStage | DedupStage) else "template"
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
        for column in _writes(stage):
            if column in known:
                raise fail(
                    index,
                    "output" if not isinstance(stage, GenerateStage) or stage.output else "fields",
                    f"stage {stage.name!r} writes {column!r}, which is already a column",
                    "give it another name",
                )
            known.add(column)

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

Two more kinds need no model: ``sample`` draws a column from listed values (weighted, or
keyed by another column) or a uniform range, with the item's own random source, so a
rerun draws the same; ``explode`` makes one row per element of a list column (a list
``fields`` type such as ``"list[string]"``). A field's type can also be a list of the
values allowed (``sentiment = ["positive", "negative"]``).

Everything is validated before a call is made, with the file, line and key of the
mistake: unknown keys, unknown stage kinds, a template that reads a column nothing has
written yet, a column written twice. The stage kinds and
those checks are in :mod:`engine.methods.pipeline_config`. It is built on the public method
API (:mod:`engine.methods.custom`), like a method a user would write.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator, Mapping, Sequence

from ..config import Config as RunConfig
from ..errors import EndpointError, ParseError
from ..io.readers import read_jsonl
from ..io.shards import iter_rows
from ..jsontypes import JSON, JSONObject
from ..records import BadInput, Item, row_id
from .custom import Context, Failed, Kept, Method, Rejected, TypedRow
from .pipeline_config import (
    DedupStage,
    ExplodeStage,
    FilterStage,
    GenerateStage,
    JudgeStage,
    PipelineConfig,
    SampleStage,
    Stage,
    check_pipeline,
    stage_writes,
)

__all__ = ("PipelineConfig", "PipelineMethod")


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
            self.columns += stage_writes(stage)
        self.kept_by_stage: dict[str, int] = {}
        self.rejected_by_stage: dict[str, int] = {}

    @classmethod
    def check_options(cls, options: PipelineConfig, config: RunConfig) -> None:
        """Columns read before they are written, or written twice (file, line and key)."""
        check_pipeline(options, config)

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
        rows: list[JSONObject] = [
            {**dict.fromkeys(self.columns), **{k: item.data.get(k) for k in self.cfg.inputs}}
        ]
        paths = [""]
        out: list[TypedRow] = []
        item_seen: dict[str, set[str]] = {}
        for depth, stage in enumerate(self.cfg.stages):
            next_rows: list[JSONObject] = []
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

    def _id(self, item: Item, path: str, row: JSONObject) -> JSONObject:
        return {"id": row_id(self.name, item.key, path), **row}

    async def _apply(
        self,
        stage: Stage,
        depth: int,
        row: JSONObject,
        path: str,
        item: Item,
        ctx: Context,
        item_seen: dict[str, set[str]],
    ) -> list[tuple[JSONObject, str | None]]:
        """The rows ``stage`` makes of ``row``, each with its rejection reason (or None)."""
        if isinstance(stage, GenerateStage):
            replies: Sequence[str | JSONObject]
            if stage.fields:
                replies = await ctx.samples(
                    stage.role,
                    stage.template,
                    row,
                    n=stage.n,
                    schema=_schema(stage.fields),
                    system=stage.system,
                    stage=stage.name,
                    depth=depth,
                    temperature=stage.temperature,
                    max_tokens=stage.max_tokens,
                )
            else:
                replies = await ctx.samples(
                    stage.role,
                    stage.template,
                    row,
                    n=stage.n,
                    system=stage.system,
                    stage=stage.name,
                    depth=depth,
                    temperature=stage.temperature,
                    max_tokens=stage.max_tokens,
                )
            made: list[tuple[JSONObject, str | None]] = []
            for reply in replies:
                new = dict(row)
                if stage.output:
                    new[stage.output] = reply if isinstance(reply, str) else str(reply)
                else:
                    got: JSONObject = reply if isinstance(reply, dict) else {}
                    for name, kind in stage.fields.items():
                        problem = _field_problem(name, kind, got.get(name))
                        if problem is not None:
                            raise ParseError(f"the reply's {problem}", stage=stage.name)
                        new[name] = got[name]
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
        if isinstance(stage, SampleStage):
            return [_sample(stage, row, ctx.rng(item, f"{stage.name}\x1f{path}"))]
        if isinstance(stage, ExplodeStage):
            items = row.get(stage.column)
            if not isinstance(items, list):
                return [(row, f"{stage.column} is not a list")]
            if not items:
                return [(row, f"{stage.column} is empty")]
            return [({**row, stage.output: element}, None) for element in items]
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

    def report(self) -> dict[str, object]:
        return {
            "stages": [s.name for s in self.cfg.stages],
            "rejected_by_stage": dict(self.rejected_by_stage),
        }


def _field_schema(kind: str | list[str]) -> dict[str, object]:
    if isinstance(kind, list):
        return {"type": "string", "enum": list(kind)}
    if kind.startswith("list["):
        return {"type": "array", "items": {"type": kind[5:-1]}}
    return {"type": kind}


def _schema(fields: Mapping[str, str | list[str]]) -> dict[str, object]:
    return {
        "type": "object",
        "properties": {name: _field_schema(kind) for name, kind in fields.items()},
        "required": list(fields),
        "additionalProperties": False,
    }


_IS: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


def _fits(kind: str, value: JSON) -> bool:
    # bool is an int to Python, not to JSON.
    return isinstance(value, _IS[kind]) and (kind == "boolean" or not isinstance(value, bool))


def _field_problem(name: str, kind: str | list[str], value: JSON) -> str | None:
    """Why ``value`` does not fit the declared field type (None when it does)."""
    if value is None:
        return f"field {name!r} is missing"
    if isinstance(kind, list):
        return None if value in kind else f"{name} {value!r} is not one of {', '.join(kind)}"
    if kind.startswith("list["):
        inner = kind[5:-1]
        if isinstance(value, list) and all(_fits(inner, v) for v in value):
            return None
        return f"{name} is not a list of {inner} values"
    return None if _fits(kind, value) else f"{name} {value!r} is not a {kind}"


def _sample(
    stage: SampleStage, row: JSONObject, rng: random.Random
) -> tuple[JSONObject, str | None]:
    """``row`` with ``stage.output`` drawn (or the reason it cannot be)."""
    if stage.low is not None and stage.high is not None:
        both_int = isinstance(stage.low, int) and isinstance(stage.high, int)
        value: int | float = (
            rng.randint(int(stage.low), int(stage.high))
            if both_int
            else rng.uniform(float(stage.low), float(stage.high))
        )
        return {**row, stage.output: value}, None
    if isinstance(stage.values, dict):
        key = row.get(stage.by or "")
        options = stage.values.get(str(key))
        if not options:
            return row, f"no values listed for {stage.by} = {key!r}"
        return {**row, stage.output: rng.choice(options)}, None
    assert stage.values is not None  # _check: values, or low and high
    return {**row, stage.output: rng.choices(stage.values, weights=stage.weights)[0]}, None


def _filter(stage: FilterStage, value: JSON) -> str | None:
    if value is None:
        return f"{stage.column} is empty"
    if stage.min_chars is not None or stage.max_chars is not None:
        n = len(str(value))
        if stage.min_chars is not None and n < stage.min_chars:
            return f"{stage.column} has {n} characters, under {stage.min_chars}"
        if stage.max_chars is not None and n > stage.max_chars:
            return f"{stage.column} has {n} characters, over {stage.max_chars}"
    if stage.min is not None or stage.max is not None:
        if not isinstance(value, bool | int | float | str):
            return f"{stage.column} is not a number"
        try:
            number = float(value)
        except ValueError:
            return f"{stage.column} is not a number"
        if stage.min is not None and number < stage.min:
            return f"{stage.column} {number:g} < {stage.min:g}"
        if stage.max is not None and number > stage.max:
            return f"{stage.column} {number:g} > {stage.max:g}"
    if stage.pattern is not None and not re.search(stage.pattern, str(value)):
        return f"{stage.column} does not match {stage.pattern!r}"
    return None

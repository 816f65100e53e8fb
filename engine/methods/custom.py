"""The public method API: write your own generation job, run it with every guarantee.

A method is a subclass of :class:`Method` with one required coroutine,
``process(item, ctx)``, which calls the configured roles through ``ctx`` and returns
typed rows (:class:`Kept`, :class:`Rejected`, :class:`Failed`)::

    class Jokes(Method):
        name = "jokes"

        async def process(self, item: Item, ctx: Context) -> list[TypedRow]:
            joke = await ctx.generate("strong", "Tell a joke about {{topic}}.", item.data)
            score = await ctx.judge("judge", "Rate this joke from 1 to 10: {{joke}}", {"joke": joke})
            row = {"topic": item.data["topic"], "joke": joke, "score": score}
            return [Kept(row) if score >= 7 else Rejected(row, reason="score below 7")]

It runs under the same scheduler, gate, cache, budgets, shards, progress, report,
``Engine.stream()`` and Ray runner as the built-in methods: the engine owns concurrency,
retries, resume and output; the method owns only what one item becomes. Its input is
the run's JSONL records (``work`` can be overridden), its ``[method.NAME]`` table is
validated against its ``Config`` Struct, and capabilities are declared as class
attributes (``global_phase``, ``records_input``) instead of being discovered.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar, overload

import msgspec

from ..config import Base
from ..config import Config as RunConfig
from ..errors import EngineError, ParseError
from ..io.derived import DerivedFile
from ..io.readers import read_jsonl
from ..jsontypes import JSONObject
from ..records import BadInput, Item
from ..stages import ChatCaller, CompletionLike, Generate, StageObserver, parse_score
from .base import MethodContext

__all__ = (
    "Context",
    "Failed",
    "Kept",
    "Method",
    "MethodConfig",
    "Rejected",
    "TypedRow",
)

T = TypeVar("T")


class MethodConfig(Base, frozen=True):
    """Base of a method's ``[method.NAME]`` table (unknown keys are errors)."""


class Kept(msgspec.Struct, frozen=True, tag="kept"):
    """A row that passed: ``data`` is a msgspec Struct or a mapping of its columns."""

    data: object


class Rejected(msgspec.Struct, frozen=True, tag="rejected"):
    """A row a filter rejected, and why."""

    data: object
    reason: str


class Failed(msgspec.Struct, frozen=True, tag="failed"):
    """An item (or part of one) that could not be processed: the stage and the error."""

    stage: str
    error: str
    data: object = None


TypedRow = Kept | Rejected | Failed
"""A row a method returns: a tagged union of the three kinds."""


class _Score(msgspec.Struct):
    score: float


class Context:
    """What a method may use while it processes items.

    Attributes:
        config: the whole run config.
        seed: the run's seed.
        input_path: the run's input file.
        out_dir: the run's output directory (committed rows: ``engine.io.shards.iter_rows``).
        log: the engine's logger (warnings reach the user).
    """

    def __init__(self, mctx: MethodContext, method_name: str) -> None:
        self._mctx = mctx
        self._name = method_name
        self.config = mctx.config
        self.seed = mctx.seed
        self.input_path = mctx.input_path
        self.out_dir = mctx.out_dir
        self.log = mctx.log
        self._stages: dict[tuple[object, ...], Generate[object]] = {}
        self._judges: dict[tuple[object, ...], Generate[_Score]] = {}

    @property
    def simulated(self) -> bool:
        """Whether the output comes from a simulated endpoint (labelled on every row)."""
        return self._mctx.simulated

    @property
    def roles(self) -> list[str]:
        """The configured roles (``strong``, ``target``, ``judge``)."""
        return list(self._mctx.callers)

    def models(self) -> dict[str, str]:
        """Role -> model id."""
        return self._mctx.models()

    def caller(self, role: str) -> ChatCaller:
        """The caller of ``role`` (for :meth:`chat`-level use)."""
        try:
            return self._mctx.callers[role]
        except KeyError:
            raise EngineError(
                f"method {self._name!r} asks for role {role!r}, which is not configured "
                f"(roles: {', '.join(self.roles)})"
            ) from None

    def observer(self, stage: str) -> StageObserver:
        """The metrics of ``stage`` (calls, ok, failed, parse errors), for steps built
        directly on :class:`engine.stages.Generate`."""
        return self._mctx.stage(stage)

    @property
    def method_context(self) -> MethodContext:
        """The engine's method context (callers by role, stage observers, simulated):
        what the built-in methods are given, for steps this class does not wrap."""
        return self._mctx

    def rng(self, item: Item, salt: str = "") -> random.Random:
        """A random source for ``item``: the same on every rerun (resume-safe)."""
        digest = hashlib.blake2b(
            f"{self.seed}\x1f{self._name}\x1f{item.key}\x1f{salt}".encode(), digest_size=8
        ).digest()
        return random.Random(int.from_bytes(digest, "big"))

    def _stage(
        self,
        stage: str,
        template: str,
        system: str | None,
        schema: type[object] | Mapping[str, object] | None,
        depth: int,
        parse_retries: int,
        params: Mapping[str, object],
    ) -> Generate[object]:
        key = (stage, template, system, schema if isinstance(schema, type) else id(schema), depth)
        found = self._stages.get(key)
        if found is not None:
            return found
        struct_type: type[object] | None = None
        wire: dict[str, object] | None = None
        if isinstance(schema, type) and issubclass(schema, msgspec.Struct):
            struct_type = schema
        elif isinstance(schema, Mapping):
            struct_type, wire = dict, dict(schema)

        def parse_text(text: str) -> object:
            if struct_type is None:
                return text.strip()
            # An endpoint without structured output: the JSON object inside the text.
            start, end = text.find("{"), text.rfind("}")
            if 0 <= start < end:
                try:
                    return msgspec.json.decode(text[start : end + 1], type=struct_type)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise ParseError(f"the reply's JSON does not fit: {exc}", stage=stage) from exc
            raise ParseError("the reply holds no JSON object", stage=stage)

        made: Generate[object] = Generate(
            stage,
            depth=depth,
            template=template,
            system=system,
            schema=struct_type,
            parse_text=parse_text,
            params=params,
            parse_retries=parse_retries,
            observer_for=self._mctx.stage,
            wire_schema=wire if wire is not None else None,
        )
        self._stages[key] = made
        return made

    @overload
    async def generate(
        self,
        role: str,
        template: str,
        values: Mapping[str, object] | None = ...,
        *,
        schema: type[T],
        system: str | None = ...,
        stage: str = ...,
        depth: int = ...,
        sample: int = ...,
        parse_retries: int = ...,
        **sampling: object,
    ) -> T: ...

    @overload
    async def generate(
        self,
        role: str,
        template: str,
        values: Mapping[str, object] | None = ...,
        *,
        schema: Mapping[str, object],
        system: str | None = ...,
        stage: str = ...,
        depth: int = ...,
        sample: int = ...,
        parse_retries: int = ...,
        **sampling: object,
    ) -> JSONObject: ...

    @overload
    async def generate(
        self,
        role: str,
        template: str,
        values: Mapping[str, object] | None = ...,
        *,
        schema: None = ...,
        system: str | None = ...,
        stage: str = ...,
        depth: int = ...,
        sample: int = ...,
        parse_retries: int = ...,
        **sampling: object,
    ) -> str: ...

    async def generate(
        self,
        role: str,
        template: str,
        values: Mapping[str, object] | None = None,
        *,
        schema: type[object] | Mapping[str, object] | None = None,
        system: str | None = None,
        stage: str = "generate",
        depth: int = 0,
        sample: int = 0,
        parse_retries: int = 2,
        **sampling: object,
    ) -> object:
        """Ask ``role`` for a reply to ``template`` filled with ``values``.

        Args:
            role: a configured role (``strong``, ``target``, ``judge``).
            template: the user message, with ``{{name}}`` placeholders.
            values: the placeholders' values (an item's ``data``, say).
            schema: None: the reply's text; a msgspec Struct type: an instance of it; a
                JSON schema (a mapping): a dict. Asked for as structured output where the
                endpoint supports it, parsed from text otherwise.
            system: an optional system message template.
            stage: the stage's name (metrics, budgets, failed rows).
            depth: the stage's depth in the pipeline (deeper calls go first at the gate).
            sample: a distinct sample index (another draw of the same request).
            parse_retries: extra samples asked for when a reply does not parse.
            **sampling: request parameters (temperature, max_tokens, top_p...).

        Raises:
            EndpointError: the call failed (the engine retried what can be retried).
            ParseError: no reply parsed.
        """
        return await self._generate(
            role, template, values, schema, system, stage, depth, sample, parse_retries, sampling
        )

    async def _generate(
        self,
        role: str,
        template: str,
        values: Mapping[str, object] | None,
        schema: type[object] | Mapping[str, object] | None,
        system: str | None,
        stage: str,
        depth: int,
        sample: int,
        parse_retries: int,
        sampling: Mapping[str, object],
    ) -> object:
        step = self._stage(stage, template, system, schema, depth, parse_retries, sampling)
        return await step(self.caller(role), dict(values or {}), sample_index=sample)

    @overload
    async def samples(
        self,
        role: str,
        template: str,
        values: Mapping[str, object] | None = ...,
        *,
        n: int,
        schema: type[T],
        system: str | None = ...,
        stage: str = ...,
        depth: int = ...,
        parse_retries: int = ...,
        **sampling: object,
    ) -> list[T]: ...

    @overload
    async def samples(
        self,
        role: str,
        template: str,
        values: Mapping[str, object] | None = ...,
        *,
        n: int,
        schema: Mapping[str, object],
        system: str | None = ...,
        stage: str = ...,
        depth: int = ...,
        parse_retries: int = ...,
        **sampling: object,
    ) -> list[JSONObject]: ...

    @overload
    async def samples(
        self,
        role: str,
        template: str,
        values: Mapping[str, object] | None = ...,
        *,
        n: int,
        schema: None = ...,
        system: str | None = ...,
        stage: str = ...,
        depth: int = ...,
        parse_retries: int = ...,
        **sampling: object,
    ) -> list[str]: ...

    async def samples(
        self,
        role: str,
        template: str,
        values: Mapping[str, object] | None = None,
        *,
        n: int,
        schema: type[object] | Mapping[str, object] | None = None,
        system: str | None = None,
        stage: str = "generate",
        depth: int = 0,
        parse_retries: int = 2,
        **sampling: object,
    ) -> Sequence[object]:
        """``n`` independent samples of :meth:`generate` (sent at once, cached apiece).

        Raises:
            EndpointError: a call failed (the others are cancelled).
            ParseError: a sample did not parse.
        """
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(
                    self._generate(
                        role,
                        template,
                        values,
                        schema,
                        system,
                        stage,
                        depth,
                        i,
                        parse_retries,
                        sampling,
                    )
                )
                for i in range(n)
            ]
        return [t.result() for t in tasks]

    async def judge(
        self,
        role: str,
        template: str,
        values: Mapping[str, object] | None = None,
        *,
        scale: tuple[float, float] = (1.0, 10.0),
        system: str | None = None,
        stage: str = "judge",
        depth: int = 1,
        sample: int = 0,
        **sampling: Any,
    ) -> float:
        """A judge's score on ``scale``.

        Asked for as structured output (``{"score": number}`` within the scale) where the
        endpoint supports it; from text otherwise (its ``Score: k`` line, or the last
        number in range). Temperature 0 unless given.

        Raises:
            EndpointError: the call failed.
            ParseError: no score in range.
        """
        low, high = scale
        key = ("judge", stage, template, system, low, high, depth)
        step = self._judges.get(key)
        if step is None:

            def from_text(text: str) -> _Score:
                return _Score(score=parse_score(text, low=low, high=high, stage=stage))

            step = Generate(
                stage,
                depth=depth,
                template=template,
                system=system,
                schema=_Score,
                parse_text=from_text,
                params={"temperature": 0.0},
                observer_for=self._mctx.stage,
                wire_schema={
                    "type": "object",
                    "properties": {"score": {"type": "number", "minimum": low, "maximum": high}},
                    "required": ["score"],
                    "additionalProperties": False,
                },
            )
            self._judges[key] = step
        verdict = await step(self.caller(role), dict(values or {}), sample_index=sample, **sampling)
        if not low <= verdict.score <= high:
            raise ParseError(f"score {verdict.score:g} is outside {low:g}..{high:g}", stage=stage)
        return float(verdict.score)

    async def chat(
        self,
        role: str,
        messages: list[dict[str, Any]],
        *,
        stage: str | None = None,
        **params: Any,
    ) -> CompletionLike:
        """One raw chat call (cached, gated, budgeted); returns the completion."""
        return await self.caller(role).chat(messages, stage=stage, **params)


class Method:
    """Base class of a user-written method (see the module docstring).

    Class attributes:
        name: the method's name (rows, report, its ``[method.NAME]`` table).
        Config: the Struct its ``[method.NAME]`` table is validated against (a
            :class:`MethodConfig` subclass), or None for no options.
        required_fields: fields each input record must have (non-empty strings).
        records_input: its input is the run's JSONL records (so ``Engine.stream(items)``
            can feed it).
        global_phase: ``prepare`` does work every item depends on (on Ray it runs once).
        provenance_columns: add ``item`` (the item's key) and ``source`` to rows that do
            not have them (a method with its own row schema turns it off).

    Instance attributes:
        total: how many items ``work`` yields, when ``prepare`` knows it (progress, ETA
            and the report's item total; None, the default: unknown).

    Optional, found when present: ``check_input(ctx) -> InputCheck`` (``validate`` reads
    the input through it) and ``row_schema`` (a :class:`~engine.methods.base.RowSchema`,
    so failed rows the engine writes for an item share the method's columns).
    """

    name: ClassVar[str] = "custom"
    Config: ClassVar[type[MethodConfig] | None] = None
    required_fields: ClassVar[tuple[str, ...]] = ()
    records_input: ClassVar[bool] = True
    global_phase: ClassVar[bool] = False
    provenance_columns: ClassVar[bool] = True
    total: int | None = None

    def __init__(self, options: Any = None) -> None:
        self.options = options

    @classmethod
    def check_options(cls, options: Any, config: RunConfig) -> None:
        """Check the validated options against the rest of the config, before any call.

        Raise :class:`~engine.errors.ConfigError` (with the file, line and key) for what a
        Struct cannot express; runs in ``validate`` and when the engine starts.
        """

    async def prepare(self, ctx: Context) -> None:
        """Work before items stream (nothing by default)."""

    def work(self, ctx: Context) -> Iterator[Item | BadInput]:
        """The items, in a stable order: by default the input's JSONL records."""
        return read_jsonl(
            ctx.input_path,
            required=self.required_fields,
            duplicate_ids=ctx.config.run.duplicate_ids,
        )

    async def process(self, item: Item, ctx: Context) -> list[TypedRow]:
        """All rows of one item."""
        raise NotImplementedError(f"{type(self).__name__}.process is not written")

    async def finalize(self, ctx: Context, out_dir: Path) -> list[DerivedFile]:
        """Derived datasets from the committed rows (none by default)."""
        return []

    def report(self) -> dict[str, Any]:
        """Method-specific figures for the report (none by default)."""
        return {}

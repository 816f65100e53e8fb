"""Reusable pipeline primitives: templates, parsers and the generate step.

A method is a composition of these. ``Generate`` renders a template into chat messages,
asks a model (through a :class:`ChatCaller`, normally :class:`engine.llm.Caller`) for
structured JSON when the endpoint supports ``response_format`` (json_schema, or a schema
inside json_object as llama-cpp-python's grammar takes it), decodes it with msgspec into a
typed Struct, and falls back to a tolerant text parser when it does not. A reply that
does not parse is asked again (a new sample, so a new cache key) a bounded number of
times, then raises :class:`~engine.errors.ParseError`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from .errors import BudgetExceeded, ConfigError, EndpointError, EngineError, ParseError
from .jsontypes import JSON, JSONObject

__all__ = (
    "ChatCaller",
    "CompletionLike",
    "Generate",
    "StageObserver",
    "check_template",
    "check_templates",
    "concurrently",
    "json_schema",
    "parse_labelled",
    "parse_numbered_list",
    "parse_score",
    "parse_score_pair",
    "render",
    "template_vars",
)

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class CompletionLike(Protocol):
    """A chat reply as a stage reads it (``engine.llm.Completion`` fits)."""

    @property
    def text(self) -> str: ...

    @property
    def texts(self) -> list[str]: ...

    @property
    def cached(self) -> bool: ...


class ChatCaller(Protocol):
    """What a stage needs from an endpoint (``engine.llm.Caller`` implements it)."""

    name: str
    model: str

    @property
    def structured_output(self) -> bool | str:
        """False: plain text; True or "json_schema"; "json_object" (schema inside)."""
        ...

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        priority: int = 0,
        sample_index: int = 0,
        stage: str | None = None,
        **params: Any,
    ) -> CompletionLike: ...


class StageObserver(Protocol):
    """Per-stage metrics (``engine.metrics.StageStats`` fits)."""

    calls: int
    ok: int
    failed: int
    parse_errors: int


# ------------------------------------------------------------------ templates
def template_vars(template: str) -> set[str]:
    """Names used as ``{{name}}`` in ``template``."""
    return set(_VAR.findall(template))


def check_template(template: str, allowed: set[str], *, field: str) -> None:
    """Raise ConfigError if ``template`` uses a variable not in ``allowed``."""
    unknown = template_vars(template) - allowed
    if unknown:
        raise ConfigError(
            f"template uses unknown variable(s) {', '.join(sorted(unknown))}",
            field=field,
            hint=f"available: {', '.join('{{' + a + '}}' for a in sorted(allowed))}",
        )


def check_templates(
    templates: object, allowed: Mapping[str, Collection[str]], *, prefix: str
) -> None:
    """:func:`check_template` for every template of a templates table.

    Args:
        templates: the table (a Struct with one attribute per template).
        allowed: template name -> the variables it may use.
        prefix: dotted key of the table, e.g. ``method.codeclm.templates``.
    """
    for name, names in allowed.items():
        check_template(getattr(templates, name), set(names), field=f"{prefix}.{name}")


def render(template: str, values: Mapping[str, object]) -> str:
    """Substitute ``{{name}}`` placeholders (no other syntax; braces elsewhere stay)."""

    def sub(m: re.Match[str]) -> str:
        return str(values[m.group(1)])

    return _VAR.sub(sub, template)


# --------------------------------------------------------------------- parsers
_NUMBERED = re.compile(r"^\s*(?:\(?(\d{1,3})[.):]|[-*\u2022])\s+(.*\S)\s*$")


def parse_numbered_list(text: str, *, stage: str = "parse") -> list[str]:
    """Items of a numbered (``1.``, ``1)``, ``(1)``) or bulleted list; continuation lines join.

    Raises:
        ParseError: no list item found.
    """
    items: list[str] = []
    for line in text.splitlines():
        m = _NUMBERED.match(line)
        if m:
            items.append(m.group(2).strip())
        elif items and line.strip() and not line.lstrip().startswith("#"):
            if line.startswith((" ", "\t")):
                items[-1] = f"{items[-1]} {line.strip()}"
    items = [i.strip().strip('"').strip() for i in items]
    items = [i for i in items if i]
    if not items:
        raise ParseError("expected a numbered list, found none", stage=stage)
    return items


def parse_labelled(
    text: str, labels: Mapping[str, tuple[str, ...]], *, stage: str = "parse"
) -> dict[str, str]:
    """Values of ``Label: value`` lines.

    Args:
        text: the reply.
        labels: output name -> accepted labels (case-insensitive), e.g.
            ``{"use_case": ("Use case", "Task")}``.

    Raises:
        ParseError: a label has no line.
    """
    out: dict[str, str] = {}
    for name, accepted in labels.items():
        alts = "|".join(re.escape(a) for a in accepted)
        m = re.search(
            rf"^[ \t*#_\-\u2022]*(?:{alts})[ \t*_]*:[ \t*_]*(.+?)[ \t*_]*$", text, re.I | re.M
        )
        if not m or not m.group(1).strip():
            raise ParseError(f"expected a line '{accepted[0]}: ...'", stage=stage)
        out[name] = m.group(1).strip()
    return out


_NUM = r"(\d+(?:\.\d+)?)"
# "8/10", "8 out of 10": the scale's top is not a score.
_DENOM = re.compile(r"\s*(?:/|\bout\s+of\b)\s*\d+(?:\.\d+)?", re.I)
# "Assistant 1", "Assistant #2": the assistant's number is not a score.
_ASSISTANT = re.compile(r"\bassistants?\s*#?\s*([12])\b(?:\s*(?:and|&)\s*#?\s*2\b)?", re.I)


def parse_score(text: str, *, low: float, high: float, stage: str = "parse") -> float:
    """The score of a judge reply: the last ``Score: k`` line, else the last number in range
    (the scale's top in ``k/10`` or ``k out of 10`` does not count).

    Raises:
        ParseError: no score in [low, high].
    """
    found = re.findall(rf"score\s*[:=]?\s*\**\s*{_NUM}", text, re.I)
    candidates = [float(x) for x in found] or [
        float(x) for x in re.findall(_NUM, _DENOM.sub(" ", text))
    ]
    for value in reversed(candidates):
        if low <= value <= high:
            return value
    raise ParseError(f"expected a score between {low:g} and {high:g}", stage=stage)


def parse_score_pair(
    text: str, *, low: float, high: float, stage: str = "parse"
) -> tuple[float, float]:
    """Two scores from the first line that holds two numbers (the Vicuna pairwise format).

    The numbers in "Assistant 1"/"Assistant 2" and the scale's top in ``8/10`` are not
    scores. When no line holds two scores, labelled scores on separate lines
    (``Assistant 1: 8`` / ``Assistant 2: 3``) are read.

    Raises:
        ParseError: no line with two scores in [low, high].
    """
    for line in text.splitlines():
        nums = re.findall(_NUM, _DENOM.sub(" ", _ASSISTANT.sub(" ", line)))
        if len(nums) >= 2:
            a, b = float(nums[0]), float(nums[1])
            if low <= a <= high and low <= b <= high:
                return a, b
    labelled: dict[str, float] = {}
    for m in re.finditer(rf"{_ASSISTANT.pattern}[^\d\n]*?{_NUM}", text, re.I):
        labelled.setdefault(m.group(1), float(m.group(2)))
    if "1" in labelled and "2" in labelled:
        a, b = labelled["1"], labelled["2"]
        if low <= a <= high and low <= b <= high:
            return a, b
    raise ParseError(f"expected two scores between {low:g} and {high:g} on one line", stage=stage)


# ------------------------------------------------------------------ structured
def json_schema(tp: type[object]) -> dict[str, Any]:
    """A self-contained JSON schema for a Struct type (``$ref``s inlined).

    Every field is marked required and extra properties forbidden, as strict
    structured-output endpoints demand.
    """
    raw: JSONObject = msgspec.json.schema(tp)
    found = raw.get("$defs")
    defs: JSONObject = found if isinstance(found, dict) else {}

    def inline(node: JSON) -> JSON:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[str(node["$ref"]).rsplit("/", 1)[-1]])
            # "title" is an annotation msgspec adds, dropped; but under "properties" the
            # keys are field names, and a field may be called "title".
            out: JSONObject = {
                k: {name: inline(sub) for name, sub in v.items()}
                if k == "properties" and isinstance(v, dict)
                else inline(v)
                for k, v in node.items()
                if k != "title"
            }
            props = out.get("properties")
            if out.get("type") == "object" and isinstance(props, dict):
                required: list[JSON] = [*props]
                out["required"] = required
                out["additionalProperties"] = False
            return out
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    body: JSONObject = {k: v for k, v in raw.items() if k != "$defs"}
    schema = inline(body)
    assert isinstance(schema, dict)  # inline maps an object to an object
    return schema


class Generate(Generic[T]):
    """One generation step: template -> messages -> reply -> typed result.

    Args:
        name: stage name (metrics, errors, failed rows).
        depth: pipeline depth (gate priority: deeper first).
        template: user-message template with ``{{var}}`` placeholders.
        system: optional system-message template.
        schema: Struct type asked for as JSON when the endpoint supports structured output
            (None: always plain text, e.g. for free-form responses).
        parse_text: fallback parser from reply text to ``T`` (raises ParseError).
        params: sampling parameters (temperature, max_tokens, top_p...).
        parse_retries: extra samples asked for when a reply does not parse.
        observer_for: stage name -> metrics observer.
        wire_schema: the JSON schema sent to the endpoint, when it should be stricter than
            what is accepted back (e.g. ``minItems`` = the number of items asked for, while
            a shorter list still decodes).
    """

    def __init__(
        self,
        name: str,
        *,
        depth: int,
        template: str,
        schema: type[T] | None,
        parse_text: Callable[[str], T],
        system: str | None = None,
        params: Mapping[str, object] | None = None,
        parse_retries: int = 2,
        observer_for: Callable[[str], StageObserver] | None = None,
        wire_schema: Mapping[str, object] | None = None,
    ) -> None:
        self.name = name
        self.depth = depth
        self.template = template
        self.system = system
        self.schema = schema
        self.parse_text = parse_text
        self.params = dict(params or {})
        self.parse_retries = parse_retries
        self._observer = observer_for(name) if observer_for is not None else None
        self._decoder = msgspec.json.Decoder(schema) if schema is not None else None
        self._response_format: dict[str, object] | None = None
        self._json_object_format: dict[str, object] | None = None
        if schema is not None:
            wire = wire_schema if wire_schema is not None else json_schema(schema)
            self._response_format = {
                "type": "json_schema",
                "json_schema": {"name": name, "strict": True, "schema": wire},
            }
            self._json_object_format = {"type": "json_object", "schema": wire}

    def messages(self, values: Mapping[str, object]) -> list[dict[str, str]]:
        """The chat messages for ``values``."""
        msgs: list[dict[str, str]] = []
        if self.system:
            msgs.append({"role": "system", "content": render(self.system, values)})
        msgs.append({"role": "user", "content": render(self.template, values)})
        return msgs

    def parse(self, text: str, *, structured: bool) -> T:
        """Decode a reply (JSON when ``structured``, else the text parser).

        A structured reply that does not decode strictly is read leniently before it
        counts as a parse error: JSON with raw control characters inside its strings (a
        grammar engine such as llama.cpp's lets newlines through) is accepted, and a reply
        that is not JSON at all (a server that ignored ``response_format``) goes to the
        text parser. JSON cut short stays an error: its fragments are not read as text.
        """
        if structured and self._decoder is not None:
            try:
                return self._decoder.decode(text)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                error = exc
            reason = str(error)
            if not isinstance(error, msgspec.ValidationError):  # not JSON, strictly
                assert self.schema is not None
                try:
                    return msgspec.convert(json.loads(text, strict=False), self.schema)
                except ValueError as lenient:  # also msgspec.ValidationError
                    reason = f"{reason}; read leniently: {lenient}"
            if not text.lstrip().startswith(("{", "[")):
                try:
                    return self.parse_text(text)
                except ParseError:
                    pass
            raise ParseError(
                f"reply is not the expected JSON ({reason})", stage=self.name
            ) from error
        return self.parse_text(text)

    async def __call__(
        self,
        caller: ChatCaller,
        values: Mapping[str, object],
        *,
        sample_index: int = 0,
        priority: int | None = None,
        **params: object,
    ) -> T:
        """Ask ``caller`` and return the parsed result.

        ``priority`` overrides the stage's depth at the gate (e.g. depth + iteration).

        Raises:
            ParseError: no sample parsed within ``parse_retries`` extra tries.
            EndpointError: the call itself failed.
        """
        msgs = self.messages(values)
        mode = caller.structured_output
        structured = bool(mode) and self._response_format is not None
        call_params = {**self.params, **params}
        if structured:
            call_params["response_format"] = (
                self._json_object_format if mode == "json_object" else self._response_format
            )
        obs = self._observer
        last: ParseError | None = None
        for attempt in range(self.parse_retries + 1):
            if obs is not None:
                obs.calls += 1
            try:
                reply = await caller.chat(
                    msgs,
                    priority=self.depth if priority is None else priority,
                    sample_index=sample_index * 1000 + attempt,
                    stage=self.name,
                    **call_params,
                )
            except EndpointError as exc:
                if exc.stage is None:
                    exc.stage = self.name
                if obs is not None:
                    obs.failed += 1
                raise
            except BudgetExceeded:
                raise  # refused before it was sent: not a failure of this stage
            except Exception:
                if obs is not None:
                    obs.failed += 1
                raise
            try:
                result = self.parse(reply.text, structured=structured)
            except ParseError as exc:
                if obs is not None:
                    obs.parse_errors += 1
                last = exc
                continue
            if obs is not None:
                obs.ok += 1
            return result
        if obs is not None:
            obs.failed += 1
        assert last is not None
        raise last


async def concurrently(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Await two calls at once; if one fails, cancel the other and raise the failure.

    Unlike ``asyncio.gather``, the sibling of a failed call is cancelled (no orphaned
    request, no "exception was never retrieved"), and unlike a bare TaskGroup the error
    comes out as itself, not wrapped in an ExceptionGroup, so stages can catch
    ``EndpointError``/``ParseError`` as usual.
    """
    try:
        async with asyncio.TaskGroup() as tg:
            ta = tg.create_task(_awaited(first))
            tb = tg.create_task(_awaited(second))
    except BaseExceptionGroup as group:
        errors = [e for e in group.exceptions if isinstance(e, EngineError)]
        raise (errors[0] if errors else group.exceptions[0]) from None
    return ta.result(), tb.result()


async def _awaited(aw: Awaitable[T]) -> T:
    return await aw

"""Stage primitives: templates, tolerant text parsers, JSON schemas and the Generate step."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from engine.errors import ConfigError, ParseError, ServerError
from engine.stages import (
    Generate,
    check_template,
    concurrently,
    json_schema,
    parse_labelled,
    parse_numbered_list,
    parse_score,
    parse_score_pair,
    render,
    template_vars,
)
from tests.fakes import Counts, Observers, Reply


# ------------------------------------------------------------------ numbered lists
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1. alpha\n2. beta\n3. gamma", ["alpha", "beta", "gamma"]),
        ("1) alpha\n2) beta", ["alpha", "beta"]),
        ("(1) alpha\n(2) beta", ["alpha", "beta"]),
        ("1: alpha\n2: beta", ["alpha", "beta"]),
        ("- alpha\n* beta\n\u2022 gamma", ["alpha", "beta", "gamma"]),
        ("Here are the instructions:\n\n1. alpha\n2. beta\n\nHope this helps.", ["alpha", "beta"]),
        ('1. "quoted"\n2.  spaced  ', ["quoted", "spaced"]),
        ("10. ten\n11. eleven", ["ten", "eleven"]),
    ],
    ids=["dot", "paren", "parens", "colon", "bullets", "preamble", "quotes", "two-digit"],
)
def test_parse_numbered_list(text: str, expected: list[str]) -> None:
    assert parse_numbered_list(text) == expected


def test_parse_numbered_list_joins_indented_continuation_lines() -> None:
    text = "1. Write a poem\n   about the sea\n\tin four lines\n2. Second\nUnindented trailer\n# Heading\n3. Third"
    assert parse_numbered_list(text) == [
        "Write a poem about the sea in four lines",
        "Second",
        "Third",
    ]


@pytest.mark.parametrize("text", ["", "no list here", "1.5 is a number\n2024. a year", "1.\n2. "])
def test_parse_numbered_list_without_items_raises(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_numbered_list(text, stage="decode")
    assert info.value.stage == "decode"
    assert str(info.value).startswith("decode: ")


# ------------------------------------------------------------------ labelled lines
LABELS = {"use_case": ("Use case", "Task"), "skills": ("Skills",)}


@pytest.mark.parametrize(
    "text",
    [
        "Use case: Code review\nSkills: Python, Testing",
        "use CASE: Code review\nSKILLS: Python, Testing",
        "**Use case:** Code review\n**Skills:** Python, Testing",
        "**Use case**: Code review\n- Skills: Python, Testing",
        "## Task: Code review\nSkills:   Python, Testing   ",
        "Preamble line.\nTask: Code review\n\nSkills: Python, Testing\nTrailing words.",
    ],
)
def test_parse_labelled(text: str) -> None:
    assert parse_labelled(text, LABELS) == {"use_case": "Code review", "skills": "Python, Testing"}


@pytest.mark.parametrize(
    "text",
    ["Skills: a, b", "Use case: x", "Use case:   \nSkills: a", "Usecase x\nSkills: a", ""],
)
def test_parse_labelled_missing_raises(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_labelled(text, LABELS, stage="encode")
    assert info.value.stage == "encode"


# ------------------------------------------------------------------ single score
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Good answer.\nScore: 8", 8.0),
        ("Score: 3\nOn reflection...\nScore: 8", 8.0),  # the last Score line wins
        ("Score: 7.5", 7.5),
        ("**Score:** 9", 9.0),
        ("score = 6", 6.0),
        ("Score: 4\nScore: 12", 4.0),  # out-of-range scores are ignored
        ("Score: 12\nScore: 4", 4.0),
        ("I would rate it 6", 6.0),  # no Score line: last number in range
        ("I would rate it 6 out of 10.", 6.0),  # the scale's top is not a score
        ("Rating: 7/10", 7.0),
    ],
)
def test_parse_score(text: str, expected: float) -> None:
    assert parse_score(text, low=1, high=10) == expected


@pytest.mark.parametrize("text", ["no numbers", "Score: 0", "Score: 11", "42"])
def test_parse_score_none_in_range_raises(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_score(text, low=1, high=10, stage="judge")
    assert info.value.stage == "judge"
    assert "between 1 and 10" in str(info.value)


# ------------------------------------------------------------------ score pairs
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8 3", (8.0, 3.0)),
        ("8 3\nAssistant 1 was more detailed.", (8.0, 3.0)),
        ("7.5 4", (7.5, 4.0)),
        ("Scores: 9, 2", (9.0, 2.0)),
        ("11 3\n8 2", (8.0, 2.0)),  # a line out of range is skipped, the next one used
        ("My scores:\n6 6", (6.0, 6.0)),
        # The assistants' numbers are labels, not scores.
        ("Assistant 1: 8, Assistant 2: 3", (8.0, 3.0)),
        ("Assistant 1 and 2: 8 3", (8.0, 3.0)),
        ("8/10 3/10", (8.0, 3.0)),
        # No line holds two scores: labelled scores on separate lines are read.
        ("Assistant 1: 8\nAssistant 2: 3", (8.0, 3.0)),
        ("Assistant 2: 3\nAssistant 1: 8", (8.0, 3.0)),
        ("**Assistant 1**: 7/10\n**Assistant 2**: 9/10", (7.0, 9.0)),
    ],
)
def test_parse_score_pair(text: str, expected: tuple[float, float]) -> None:
    assert parse_score_pair(text, low=1, high=10) == expected


def test_parse_score_pair_uses_the_first_line_with_two_numbers() -> None:
    assert parse_score_pair("5 9\n8 3", low=1, high=10) == (5.0, 9.0)


@pytest.mark.parametrize(
    "text", ["none", "8", "Assistant 1: 8", "0 0", "11 12", "Assistant 1: 8\nAssistant 2: 0"]
)
def test_parse_score_pair_raises(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_score_pair(text, low=1, high=10, stage="judge")
    assert info.value.stage == "judge"


# ------------------------------------------------------------------ templates
def test_template_vars() -> None:
    assert template_vars("{{a}} {{ b }} {c} {{1x}} {{a}}") == {"a", "b"}
    assert template_vars("no placeholders") == set()


def test_render_substitutes_only_double_braces() -> None:
    assert render("{{a}} {{ b }} {c} {{{a}}} {}", {"a": 1, "b": "x"}) == "1 x {c} {1} {}"


def test_render_missing_value_raises_key_error() -> None:
    with pytest.raises(KeyError):
        render("{{missing}}", {})


def test_render_does_not_reexpand_values() -> None:
    assert render("{{a}}", {"a": "{{b}}", "b": "no"}) == "{{b}}"


def test_check_template() -> None:
    check_template("{{x}} and {{y}}", {"x", "y", "z"}, field="method.m.templates.t")
    with pytest.raises(ConfigError) as info:
        check_template("{{x}} {{oops}} {{zz}}", {"x"}, field="method.m.templates.t")
    err = info.value
    assert err.field == "method.m.templates.t"
    assert "oops, zz" in err.reason
    assert err.hint == "available: {{x}}"


# ------------------------------------------------------------------ json schema
class Inner(msgspec.Struct):
    a: int


class Outer(msgspec.Struct):
    name: str
    inner: Inner
    items: list[Inner]
    opt: int = 3


def _walk(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        out.append(node)
        for v in node.values():
            out.extend(_walk(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(_walk(v))
    return out


def test_json_schema_is_self_contained_and_strict() -> None:
    schema = json_schema(Outer)
    nodes = _walk(schema)
    assert all("$ref" not in n and "$defs" not in n and "title" not in n for n in nodes)
    objects = [n for n in nodes if n.get("type") == "object"]
    assert len(objects) == 3  # Outer, inner, items[]
    for obj in objects:
        assert obj["required"] == list(obj["properties"])
        assert obj["additionalProperties"] is False
    assert schema["required"] == ["name", "inner", "items", "opt"]
    assert schema["properties"]["inner"]["properties"] == {"a": {"type": "integer"}}
    assert schema["properties"]["items"]["items"]["required"] == ["a"]
    msgspec.json.encode(schema)  # JSON-serialisable


# ------------------------------------------------------------------ Generate
class Answer(msgspec.Struct):
    value: str
    n: int


@dataclass
class ScriptedCaller:
    """A ChatCaller that plays back replies in order and records every request."""

    replies: list[str | Exception]
    structured: bool = False
    name: str = "fake"
    model: str = "fake-model"
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def structured_output(self) -> bool:
        return self.structured

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        priority: int = 0,
        sample_index: int = 0,
        stage: str | None = None,
        **params: Any,
    ) -> Reply:
        self.requests.append(
            {
                "messages": messages,
                "priority": priority,
                "sample_index": sample_index,
                "params": params,
            }
        )
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return Reply(reply)


def parse_answer_text(text: str) -> Answer:
    fields = parse_labelled(text, {"value": ("Value",), "n": ("N",)}, stage="answer")
    try:
        return Answer(value=fields["value"], n=int(fields["n"]))
    except ValueError as exc:
        raise ParseError("n is not an integer", stage="answer") from exc


def make_gen(
    observers: Observers | None = None, *, schema: type[Answer] | None = Answer, retries: int = 2
) -> Generate[Answer]:
    return Generate(
        "answer",
        depth=2,
        template="Question: {{q}}",
        system="You answer {{style}}.",
        schema=schema,
        parse_text=parse_answer_text,
        params={"temperature": 0.5, "max_tokens": 64},
        parse_retries=retries,
        observer_for=observers,
    )


def test_generate_messages() -> None:
    gen = make_gen()
    assert gen.messages({"q": "why?", "style": "briefly"}) == [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Question: why?"},
    ]


async def test_generate_structured_decodes_json() -> None:
    caller = ScriptedCaller(['{"value": "blue", "n": 3}'], structured=True)
    result = await make_gen()(caller, {"q": "colour?", "style": "briefly"})
    assert result == Answer(value="blue", n=3)
    (req,) = caller.requests
    fmt = req["params"]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "answer"
    assert fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == json_schema(Answer)
    assert req["params"]["temperature"] == 0.5 and req["params"]["max_tokens"] == 64
    assert req["priority"] == 2
    assert req["sample_index"] == 0


async def test_generate_text_path_uses_parse_text() -> None:
    caller = ScriptedCaller(["Value: blue\nN: 3"], structured=False)
    result = await make_gen()(caller, {"q": "colour?", "style": "briefly"})
    assert result == Answer(value="blue", n=3)
    assert "response_format" not in caller.requests[0]["params"]


async def test_generate_without_schema_never_sends_response_format() -> None:
    caller = ScriptedCaller(["Value: blue\nN: 3"], structured=True)
    result = await make_gen(schema=None)(caller, {"q": "colour?", "style": "briefly"})
    assert result == Answer(value="blue", n=3)  # the text parser, although the caller is structured
    assert "response_format" not in caller.requests[0]["params"]


async def test_generate_call_params_priority_and_sample_index() -> None:
    caller = ScriptedCaller(["Value: x\nN: 1"])
    await make_gen()(
        caller, {"q": "q", "style": "s"}, sample_index=3, priority=9, temperature=0.0, top_p=0.9
    )
    (req,) = caller.requests
    assert req["priority"] == 9
    assert req["sample_index"] == 3000
    assert req["params"] == {"temperature": 0.0, "max_tokens": 64, "top_p": 0.9}


@pytest.mark.parametrize("structured", [False, True])
async def test_generate_parse_retry_asks_a_new_sample(structured: bool) -> None:
    bad = "not json at all" if structured else "Value: blue"
    good = '{"value": "blue", "n": 3}' if structured else "Value: blue\nN: 3"
    caller = ScriptedCaller([bad, bad, good], structured=structured)
    observers = Observers()
    result = await make_gen(observers)(caller, {"q": "q", "style": "s"}, sample_index=1)
    assert result == Answer(value="blue", n=3)
    indexes = [r["sample_index"] for r in caller.requests]
    assert indexes == [1000, 1001, 1002]
    assert len(set(indexes)) == 3
    assert all(r["messages"] == caller.requests[0]["messages"] for r in caller.requests)
    assert observers.by_stage["answer"] == Counts(calls=3, ok=1, failed=0, parse_errors=2)


async def test_generate_structured_reply_with_wrong_shape_is_a_parse_error() -> None:
    caller = ScriptedCaller(['{"value": "blue"}', '{"value": 1, "n": 2}'], structured=True)
    with pytest.raises(ParseError) as info:
        await make_gen(retries=1)(caller, {"q": "q", "style": "s"})
    assert info.value.stage == "answer"
    assert "expected JSON" in str(info.value)


async def test_generate_exhausted_retries_raise_parse_error() -> None:
    caller = ScriptedCaller(["nope", "still nope", "no"])
    observers = Observers()
    with pytest.raises(ParseError) as info:
        await make_gen(observers, retries=2)(caller, {"q": "q", "style": "s"})
    assert info.value.stage == "answer"
    assert len(caller.requests) == 3
    assert caller.replies == []
    assert observers.by_stage["answer"] == Counts(calls=3, ok=0, failed=1, parse_errors=3)


async def test_generate_zero_retries_asks_once() -> None:
    caller = ScriptedCaller(["nope", "Value: x\nN: 1"])
    with pytest.raises(ParseError):
        await make_gen(retries=0)(caller, {"q": "q", "style": "s"})
    assert len(caller.requests) == 1


async def test_generate_endpoint_error_propagates_without_retry() -> None:
    caller = ScriptedCaller([ServerError("boom", endpoint="fake", status=503), "Value: x\nN: 1"])
    observers = Observers()
    with pytest.raises(ServerError):
        await make_gen(observers)(caller, {"q": "q", "style": "s"})
    assert len(caller.requests) == 1
    assert observers.by_stage["answer"] == Counts(calls=1, ok=0, failed=1, parse_errors=0)


async def test_concurrently_returns_both_results() -> None:
    async def value(x: int) -> int:
        await asyncio.sleep(0)
        return x

    assert await concurrently(value(1), value(2)) == (1, 2)


async def test_concurrently_cancels_the_sibling_and_raises_unwrapped() -> None:
    cancelled = asyncio.Event()

    async def slow() -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    async def fail() -> int:
        await asyncio.sleep(0)
        raise ServerError("boom", endpoint="e", status=503)

    with pytest.raises(ServerError):
        await concurrently(slow(), fail())
    assert cancelled.is_set()


async def test_generate_stamps_its_stage_on_endpoint_errors() -> None:
    class Down:
        name = "down"
        model = "m"
        structured_output = False

        async def chat(self, messages: list[dict[str, Any]], **kw: Any) -> Any:
            raise ServerError("unavailable", endpoint="down", status=503)

    gen: Generate[str] = Generate("rubrics", depth=1, template="{{x}}", schema=None, parse_text=str)
    with pytest.raises(ServerError) as info:
        await gen(Down(), {"x": "hi"})
    assert info.value.stage == "rubrics"

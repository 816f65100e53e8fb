"""Structured output modes and lenient decoding of structured replies (real-model shapes).

A small real model behind llama-cpp-python showed these: the server takes a JSON schema
only inside ``{"type": "json_object", "schema": ...}``; its grammar lets raw newlines
into JSON strings; and a reply cut at max_tokens is unfinished JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest

from engine.errors import ParseError
from engine.llm.caller import Caller
from engine.llm.client import Client
from engine.llm.gate import Gate
from engine.llm.pool import Pool
from engine.stages import json_schema
from tests.unit.test_stages import Answer, ScriptedCaller, make_gen


@dataclass
class ModeCaller(ScriptedCaller):
    """A ScriptedCaller whose structured output mode is a string."""

    mode: bool | str = "json_object"

    @property
    def structured_output(self) -> bool | str:  # type: ignore[override]
        return self.mode


async def test_json_object_mode_sends_the_schema_inside_json_object() -> None:
    caller = ModeCaller(['{"value": "blue", "n": 3}'])
    result = await make_gen()(caller, {"q": "colour?", "style": "briefly"})
    assert result == Answer(value="blue", n=3)
    fmt = caller.requests[0]["params"]["response_format"]
    assert fmt == {"type": "json_object", "schema": json_schema(Answer)}


@pytest.mark.parametrize("mode", [True, "json_schema"])
async def test_json_schema_mode_is_the_openai_shape(mode: bool | str) -> None:
    caller = ModeCaller(['{"value": "blue", "n": 3}'], mode=mode)
    await make_gen()(caller, {"q": "colour?", "style": "briefly"})
    fmt = caller.requests[0]["params"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == json_schema(Answer)


async def test_off_mode_parses_text() -> None:
    caller = ModeCaller(["Value: blue\nN: 3"], mode=False)
    assert await make_gen()(caller, {"q": "q", "style": "s"}) == Answer(value="blue", n=3)
    assert "response_format" not in caller.requests[0]["params"]


async def test_raw_newlines_inside_json_strings_are_read() -> None:
    caller = ModeCaller(['{"value": "blue\nand green", "n": 3}'])
    result = await make_gen(retries=0)(caller, {"q": "q", "style": "s"})
    assert result == Answer(value="blue\nand green", n=3)


async def test_lenient_json_still_checks_the_shape() -> None:
    caller = ModeCaller(['{"value": "blue\nand green", "n": "three"}'])
    with pytest.raises(ParseError) as info:
        await make_gen(retries=0)(caller, {"q": "q", "style": "s"})
    assert "expected JSON" in str(info.value)


async def test_a_reply_that_is_not_json_goes_to_the_text_parser() -> None:
    # A server that ignored response_format and answered in prose.
    caller = ModeCaller(["Sure!\nValue: blue\nN: 3"])
    result = await make_gen(retries=0)(caller, {"q": "q", "style": "s"})
    assert result == Answer(value="blue", n=3)


async def test_json_cut_short_is_not_read_as_text() -> None:
    # The labelled lines are there, but inside unfinished JSON: its fragments are no answer.
    caller = ModeCaller(['{"value": "see below\nValue: blue\nN: 3\nand then the reply was cut'])
    with pytest.raises(ParseError) as info:
        await make_gen(retries=0)(caller, {"q": "q", "style": "s"})
    # The strict reason (the raw newline) and what is really wrong (it is unfinished).
    assert "expected JSON" in str(info.value)
    assert "read leniently: Unterminated string" in str(info.value)


async def test_an_unreadable_structured_reply_keeps_the_json_reason() -> None:
    caller = ModeCaller(['{"value": "blue", "n": '])
    with pytest.raises(ParseError) as info:
        await make_gen(retries=0)(caller, {"q": "q", "style": "s"})
    assert info.value.stage == "answer"
    assert "expected JSON" in str(info.value) and "truncated" in str(info.value)


def _caller(name: str, mode: bool | str) -> Caller:
    return Caller(
        name, "m", Client(name, "http://127.0.0.1:9/v1"), Gate(name), structured_output=mode
    )


@pytest.mark.parametrize(
    ("modes", "expected"),
    [
        (["json_object", "json_object"], "json_object"),
        ([True, "json_schema"], "json_schema"),
        ([True, True], "json_schema"),
        (["json_object", True], False),
        ([False, False], False),
    ],
)
def test_a_pool_uses_its_members_common_mode(modes: list[bool | str], expected: object) -> None:
    pool = Pool("p", [_caller(f"e{i}", m) for i, m in enumerate(modes)])
    assert pool.structured_output == expected


class _Titled(msgspec.Struct):
    title: str
    body: str


def test_a_field_named_title_stays_in_the_schema() -> None:
    schema = json_schema(_Titled)
    assert schema["properties"] == {"title": {"type": "string"}, "body": {"type": "string"}}
    assert schema["required"] == ["title", "body"] and "title" not in schema

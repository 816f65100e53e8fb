"""The engine's client against the real server: streaming, real token counts, structured
output through the grammar, and the context-window error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from engine.errors import BadRequest, ParseError
from engine.llm.caller import Caller
from engine.llm.client import Client
from engine.llm.gate import Gate
from engine.llm.retry import RetryPolicy
from engine.metrics.core import EndpointStats
from engine.stages import Generate
from tests.real_model._real import MODEL, URL, check_accounted, out_dir, run_method


class Fruit(msgspec.Struct):
    name: str
    colour: str


def _fruit_text(text: str) -> Fruit:
    raise ParseError("text replies are not expected here", stage="fruit")


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    c = Client("local", URL, timeout_s=300.0)
    try:
        yield c
    finally:
        await c.aclose()


def _caller(client: Client, **kw: object) -> Caller:
    return Caller(
        "local",
        MODEL,
        client,
        Gate("local", max_concurrency=1, adaptive=False),
        retry=RetryPolicy(1),
        **kw,  # type: ignore[arg-type]
    )


async def test_plain_reply_has_real_token_counts(client: Client) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 12,
        "temperature": 0.0,
    }
    result = await client.chat(body)
    assert result.texts and result.texts[0].strip()
    assert result.usage is not None  # reported by the server, not estimated
    assert 0 < result.usage.completion_tokens <= 12
    assert result.usage.prompt_tokens > 5
    assert result.finish_reasons[0] in ("stop", "length")


async def test_streaming_measures_time_to_first_token(client: Client) -> None:
    stats = EndpointStats("local")
    caller = _caller(client, stream=True, observer=stats)
    reply = await caller.chat(
        [{"role": "user", "content": "Write two sentences about rivers."}],
        max_tokens=24,
        temperature=0.0,
    )
    assert reply.text.strip()
    assert reply.finish_reasons[0] in ("stop", "length")
    # llama-cpp-python streams no usage: the caller estimates it from the text.
    assert reply.usage.completion_tokens > 0
    assert stats.ttft.count == 1 and stats.latency.count == 1
    assert 0 < stats.ttft.percentile(50) < stats.latency.percentile(50)


async def test_streamed_call_reports_ttft_below_latency(client: Client) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write two sentences about rivers."}],
        "max_tokens": 24,
        "temperature": 0.0,
        "stream": True,
    }
    result = await client.chat(body)
    assert result.ttft is not None
    assert 0 < result.ttft < result.latency
    assert "".join(result.texts).strip()


async def test_structured_output_through_the_grammar(client: Client) -> None:
    caller = _caller(client, structured_output="json_object")
    gen: Generate[Fruit] = Generate(
        "fruit",
        depth=0,
        template="Name one fruit and its colour, as JSON.",
        schema=Fruit,
        parse_text=_fruit_text,
        params={"max_tokens": 48, "temperature": 0.0},
        parse_retries=0,
    )
    fruit = await gen(caller, {})
    assert fruit.name.strip() and fruit.colour.strip()


async def test_json_schema_format_is_refused_at_once(client: Client) -> None:
    """llama-cpp-python rejects response_format json_schema (with HTTP 500): one request,
    a fatal error naming what it accepts, no retries."""
    stats = EndpointStats("local")
    caller = _caller(client, observer=stats)
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with pytest.raises(BadRequest) as info:
        await caller.chat([{"role": "user", "content": "hi"}], response_format=fmt, max_tokens=4)
    assert "json_object" in str(info.value)
    assert stats.requests == 1 and stats.retries == 0


async def test_context_window_error_is_fatal_for_that_request_only(client: Client) -> None:
    stats = EndpointStats("local")
    caller = _caller(client, observer=stats)
    long = "word " * 4000  # well past --n_ctx 2048
    with pytest.raises(BadRequest) as info:
        await caller.chat([{"role": "user", "content": long}], max_tokens=4)
    assert info.value.status == 400
    assert "context length" in str(info.value)
    assert stats.requests == 1  # not retried
    # The next request on the same caller goes through.
    reply = await caller.chat([{"role": "user", "content": "Say yes."}], max_tokens=4)
    assert reply.text.strip()


@pytest.mark.timeout(900)
def test_an_item_over_the_context_window_is_one_failed_row(tmp_path: Path) -> None:
    """In a run, the item whose prompt is too long fails with the server's reason; the
    others are processed as usual."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "short.md").write_text(
        "# Watering Tomatoes\n\nWater tomato plants deeply twice a week at the base, in the "
        "morning, so the leaves stay dry and the roots grow down rather than sideways.\n"
    )
    (corpus / "long.md").write_text(
        "# A Very Long Note\n\n"
        + " ".join(f"The garden path number {i} is long." for i in range(700))
    )
    run = run_method(
        "backtranslation",
        out_dir(tmp_path, "backtranslation-context"),
        f"run.input={corpus}",
        "method.backtranslation.max_chars=40000",
    )
    check_accounted(run)
    failed = run.rows.get("failed", [])
    over = [r for r in failed if "context length" in r["error"]]
    assert len(over) == 1, failed
    assert over[0]["stage"] == "backtranslate" and over[0]["error_kind"] == "bad_request"
    assert over[0]["doc_id"] == "long.md"
    others = [r for rows in run.rows.values() for r in rows if r is not over[0]]
    assert len(others) == 1  # the short document's row, kept, rejected or failed
    assert "short.md" in json.dumps(others[0])  # as doc_id, or inside its source

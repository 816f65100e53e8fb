"""engine/llm/anthropic.py, the client side, against servers on 127.0.0.1.

A small scripted server of the test's own (it records each request and answers what the
test says: stop reasons, cache-token usage, ``anthropic-ratelimit-*`` headers, SSE) checks
the translation of a chat-completions body into a Messages request, the stop reasons, the
usage with prompt-cache tokens reaching the spend ledger, and the gate learning its
limits from Anthropic's headers. The simulated Anthropic endpoint (labelled simulated in
every reply) checks the same against the project's own server.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web

from engine.llm.anthropic import AnthropicBatches, AnthropicTransport, parse_anthropic_rate
from engine.llm.batch_api import BatchRequest
from engine.llm.budget import Ledger
from engine.llm.caller import Caller
from engine.llm.gate import Gate
from engine.llm.retry import RetryPolicy
from engine.sim import SimServer, SimSettings

KEY = "sk-ant-test-0123456789abcdef"
Reply = Callable[[dict[str, Any]], web.StreamResponse]


def _message(
    text: str = "hello",
    stop: str = "end_turn",
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 10, "output_tokens": 5},
    }


class Scripted:
    """An Anthropic-shaped server: ``reply`` makes the answer to each request body."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.requests.append(orjson.loads(raw) if raw else {})
        self.headers.append(dict(request.headers))
        self.paths.append(request.path)
        return self.reply(self.requests[-1])

    async def __aenter__(self) -> Scripted:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


def _json(body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json", headers=headers)


async def _transport(url: str) -> AsyncIterator[AnthropicTransport]:
    transport = AnthropicTransport("claude", url, api_key=KEY, timeout_s=5.0)
    try:
        yield transport
    finally:
        await transport.aclose()


async def test_a_chat_body_becomes_a_messages_request() -> None:
    async with Scripted(lambda body: _json(_message())) as server:
        async for t in _transport(server.url):
            await t.chat(
                {
                    "model": "claude-test",
                    "messages": [
                        {"role": "system", "content": "Be terse."},
                        {"role": "system", "content": "Answer in English."},
                        {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello."},
                        {"role": "user", "content": "Bye"},
                    ],
                    "temperature": 0.3,
                    "top_p": 0.9,
                    "stop": "\n\n",
                    "response_format": {"type": "json_object"},
                    "seed": 7,
                }
            )
            await t.chat(
                {
                    "model": "claude-test",
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": 77,
                    "stop": ["END", "STOP"],
                }
            )
    first, second = server.requests
    assert server.paths == ["/v1/messages", "/v1/messages"]
    assert first == {
        "model": "claude-test",
        "max_tokens": 1024,  # required by the Messages API: the default when none is given
        "system": "Be terse.\n\nAnswer in English.",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye"},
        ],
        "temperature": 0.3,
        "top_p": 0.9,
        "stop_sequences": ["\n\n"],
    }
    assert second["max_tokens"] == 77 and second["stop_sequences"] == ["END", "STOP"]
    assert "system" not in second
    headers = server.headers[0]
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in headers


async def test_n_samples_are_n_requests_with_their_usage_summed() -> None:
    count = iter(range(100))

    def reply(body: dict[str, Any]) -> web.Response:
        i = next(count)
        return _json(_message(f"sample {i}", usage={"input_tokens": 10, "output_tokens": i + 1}))

    async with Scripted(reply) as server:
        async for t in _transport(server.url):
            result = await t.chat(
                {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3}
            )
    assert len(server.requests) == 3 and all("n" not in r for r in server.requests)
    assert sorted(result.texts) == ["sample 0", "sample 1", "sample 2"]
    assert result.usage is not None
    assert result.usage.prompt_tokens == 30 and result.usage.completion_tokens == 6


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "refusal"),  # a reason without an OpenAI name is passed on as it is
    ],
)
async def test_stop_reasons_plain_and_streamed(stop: str, finish: str) -> None:
    def reply(body: dict[str, Any]) -> web.StreamResponse:
        if not body.get("stream"):
            return _json(_message(stop=stop))
        return web.Response(body=_sse("hel", "lo", stop=stop), content_type="text/event-stream")

    async with Scripted(reply) as server:
        async for t in _transport(server.url):
            body: dict[str, object] = {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
            }
            plain = await t.chat(body)
            streamed = await t.chat({**body, "stream": True})
    assert plain.finish_reasons == [finish] and streamed.finish_reasons == [finish]
    assert plain.texts == streamed.texts == ["hello"]
    assert server.requests[1]["stream"] is True


def _sse(*parts: str, stop: str = "end_turn", usage: dict[str, int] | None = None) -> bytes:
    start_usage = usage or {"input_tokens": 10, "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {**_message(""), "content": []}}),
        ("ping", {"type": "ping"}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        ),
    ]
    events[0][1]["message"]["usage"] = start_usage
    events += [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
        )
        for p in parts
    ]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(
        b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
        for name, data in events
    )


CACHED = {
    "input_tokens": 10,
    "output_tokens": 5,
    "cache_creation_input_tokens": 2000,
    "cache_read_input_tokens": 3000,
}


def _caller(url: str, gate: Gate, ledger: Ledger | None = None, stream: bool = False) -> Caller:
    return Caller(
        "claude",
        "claude-test",
        AnthropicTransport("claude", url, api_key=KEY, timeout_s=5.0),
        gate,
        retry=RetryPolicy(2, base_s=0.01, cap_s=0.02, rng=random.Random(0)),
        ledger=ledger,
        stream=stream,
        structured_output=False,
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_cache_tokens_are_counted_as_prompt_tokens_in_the_ledger(stream: bool) -> None:
    def reply(body: dict[str, Any]) -> web.StreamResponse:
        if body.get("stream"):
            return web.Response(body=_sse("hello", usage=CACHED), content_type="text/event-stream")
        return _json(_message(usage=CACHED))

    ledger = Ledger(prices={"claude": (3.0, 15.0)})
    async with Scripted(reply) as server:
        caller = _caller(server.url, Gate("claude", adaptive=False), ledger, stream=stream)
        try:
            completion = await caller.chat([{"role": "user", "content": "x"}], stage="judge")
        finally:
            await caller.client.aclose()
    assert completion.usage.prompt_tokens == 5010 and completion.usage.completion_tokens == 5
    spent = ledger.to_dict()["judge"]["claude"]
    assert spent["prompt_tokens"] == 5010 and spent["completion_tokens"] == 5
    assert spent["cost"] == pytest.approx((5010 * 3.0 + 5 * 15.0) / 1e6)


def _rfc3339(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def test_the_gate_learns_the_anthropic_ratelimit_headers() -> None:
    headers = {
        "anthropic-ratelimit-requests-limit": "120",
        "anthropic-ratelimit-requests-remaining": "119",
        "anthropic-ratelimit-requests-reset": _rfc3339(0.5),
        "anthropic-ratelimit-tokens-limit": "40000",
        "anthropic-ratelimit-tokens-remaining": "39000",
        "anthropic-ratelimit-tokens-reset": _rfc3339(1.5),
    }
    async with Scripted(lambda body: _json(_message(), headers)) as server:
        gate = Gate("claude", adaptive="auto")
        assert gate.state().rpm is None and gate.adapting
        caller = _caller(server.url, gate)
        try:
            await caller.chat([{"role": "user", "content": "x"}])
        finally:
            await caller.client.aclose()
    state = gate.state()
    assert state.rpm == 120 and state.tpm == 40_000
    assert not gate.adapting  # known limits pace the endpoint from now on


def test_input_token_limits_stand_for_tokens_and_resets_are_seconds_from_now() -> None:
    rate = parse_anthropic_rate(
        {
            "anthropic-ratelimit-input-tokens-limit": "80000",
            "anthropic-ratelimit-input-tokens-remaining": "79000",
            "anthropic-ratelimit-input-tokens-reset": _rfc3339(30),
            "anthropic-ratelimit-requests-limit": "0",  # below 1: not a limit
        }
    )
    assert rate is not None
    assert rate.limit_tokens == 80_000 and rate.remaining_tokens == 79_000
    assert rate.reset_tokens is not None and 28 < rate.reset_tokens <= 30
    assert rate.limit_requests is None
    assert parse_anthropic_rate({"x-ratelimit-limit-requests": "5"}) is None
    assert parse_anthropic_rate({"anthropic-ratelimit-tokens-limit": "inf"}) is None


async def test_the_simulated_endpoint_teaches_the_gate_its_limits() -> None:
    settings = SimSettings(latency_ms=1.0, rpm=600, tpm=90_000)
    async with SimServer(settings) as sim:
        gate = Gate("claude", adaptive="auto")
        caller = _caller(sim.url, gate)
        try:
            completion = await caller.chat(
                [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Name three colours."},
                ],
                max_tokens=1,
            )
        finally:
            await caller.client.aclose()
    assert caller.client.simulated  # the reply says it is simulated
    assert completion.texts[0].startswith("[simulated]")
    assert completion.finish_reasons == ["length"]  # max_tokens reached
    assert gate.state().rpm == 600 and gate.state().tpm == 90_000


async def test_message_batches_carry_translated_requests_and_map_results() -> None:
    results = [
        {"custom_id": "a", "result": {"type": "succeeded", "message": _message("A", "max_tokens")}},
        {"custom_id": "b", "result": {"type": "expired"}},
        {
            "custom_id": "c",
            "result": {
                "type": "errored",
                "error": {"type": "error", "error": {"type": "overloaded_error", "message": "x"}},
            },
        },
        {
            "custom_id": "d",
            "result": {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": f"bad key {KEY}"},
                },
            },
        },
    ]

    def reply(body: dict[str, Any]) -> web.StreamResponse:
        return _json({"id": "msgbatch_1", "processing_status": "in_progress"})

    async with Scripted(reply) as server:
        async for t in _transport(server.url):
            batches = AnthropicBatches(t)
            body: dict[str, object] = {
                "model": "m",
                "messages": [{"role": "system", "content": "S"}],
                "stop": "Q",
            }
            batch_id = await batches.submit_batch([BatchRequest("a", body)], token="tok")
            assert await batches.find_batch("tok") is None  # no metadata to find it by
            server.reply = lambda body: web.Response(
                body=b"\n".join(orjson.dumps(r) for r in results),
                content_type="application/binary",
            )
            lines = [line async for line in batches.batch_results(batch_id)]
    assert batch_id == "msgbatch_1"
    assert server.requests[0] == {
        "requests": [
            {
                "custom_id": "a",
                "params": {
                    "model": "m",
                    "max_tokens": 1024,
                    "messages": [],
                    "system": "S",
                    "stop_sequences": ["Q"],
                },
            }
        ]
    }
    a, b, c, d = lines
    assert a.result is not None and a.result.texts == ["A"]
    assert a.result.finish_reasons == ["length"]
    assert (b.rerun, c.rerun, d.rerun) == (True, True, False)
    assert d.error is not None and KEY not in d.error

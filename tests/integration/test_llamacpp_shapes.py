"""The client against the exact response shapes of llama-cpp-python's server (0.3.x).

A small aiohttp server on 127.0.0.1 answers with the bodies and statuses that
llama-cpp-python sends (recorded from a real one serving SmolLM2-135M): a request its
own validation rejects comes back as HTTP 500, a prompt over the context window as a 400
with ``context_length_exceeded``, and a stream carries no usage even when asked.
The real server itself is exercised by tests/real_model (scripts/real-model.sh).
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from engine.errors import BadRequest, ServerError
from engine.llm.caller import Caller
from engine.llm.client import Client
from engine.llm.gate import Gate
from engine.llm.retry import RetryPolicy

# What llama-cpp-python 0.3.x answered to response_format json_schema (HTTP 500).
VALIDATION_500 = {
    "error": {
        "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', "
        "'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", "
        "'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  "
        'File "/venv/lib/python3.11/site-packages/llama_cpp/server/app.py", line 376, '
        "in create_chat_completion\n    POST /v1/chat/completions",
        "type": "internal_server_error",
        "param": None,
        "code": None,
    }
}
# ... to a prompt longer than --n_ctx (HTTP 400).
CONTEXT_400 = {
    "error": {
        "message": "This model's maximum context length is 2048 tokens. However, you "
        "requested 3036 tokens (3031 in the messages, 5 in the completion). Please reduce "
        "the length of the messages or completion.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
# ... when the model itself fails (a genuine server error: worth retrying).
CRASH_500 = {
    "error": {
        "message": "llama_decode returned -1",
        "type": "internal_server_error",
        "param": None,
        "code": None,
    }
}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "model": "m",
        "created": 1,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\r\n\r\n"


class Recorded:
    """A loopback server playing llama-cpp-python's answers, chosen by the request."""

    def __init__(self) -> None:
        self.hits = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        body = await request.json()
        if (body.get("response_format") or {}).get("type") == "json_schema":
            return web.json_response(VALIDATION_500, status=500)
        text = body["messages"][-1]["content"]
        if text == "crash":
            return web.json_response(CRASH_500, status=500)
        if len(text) > 1000:
            return web.json_response(CONTEXT_400, status=400)
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "m",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"content": '{ "answer": "yes" }', "role": "assistant"},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 31, "completion_tokens": 9, "total_tokens": 40},
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_chunk({"role": "assistant"}))
        for piece in ("Hello", "!", " I", "'m", " here"):
            await resp.write(_chunk({"content": piece}))
        await resp.write(_chunk({}, finish="length"))
        await resp.write(b"data: [DONE]\r\n\r\n")  # no usage chunk, although asked for
        return resp

    async def __aenter__(self) -> Recorded:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Recorded]:
    async with Recorded() as srv:
        yield srv


def _caller(url: str, **kw: Any) -> Caller:
    return Caller(
        "llama",
        "m",
        Client("llama", url, timeout_s=5.0),
        Gate("llama", max_concurrency=2, adaptive=False),
        retry=RetryPolicy(3, base_s=0.001, cap_s=0.01, rng=random.Random(0)),
        **kw,
    )


async def test_a_rejected_request_field_is_a_bad_request_not_retried(server: Recorded) -> None:
    caller = _caller(server.url)
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    try:
        with pytest.raises(BadRequest) as info:
            await caller.chat([{"role": "user", "content": "hi"}], response_format=fmt)
    finally:
        await caller.client.aclose()
    assert server.hits == 1  # fatal: sent once
    assert info.value.status == 500
    assert "response_format" in str(info.value) and "json_object" in str(info.value)


async def test_a_genuine_server_error_is_still_retried(server: Recorded) -> None:
    caller = _caller(server.url)
    try:
        with pytest.raises(ServerError):
            await caller.chat([{"role": "user", "content": "crash"}])
    finally:
        await caller.client.aclose()
    assert server.hits == 4  # one attempt and three retries


async def test_json_object_with_schema_is_accepted(server: Recorded) -> None:
    caller = _caller(server.url)
    fmt = {"type": "json_object", "schema": {"type": "object"}}
    try:
        reply = await caller.chat([{"role": "user", "content": "hi"}], response_format=fmt)
    finally:
        await caller.client.aclose()
    assert reply.text == '{ "answer": "yes" }'
    assert reply.usage.prompt_tokens == 31 and reply.usage.completion_tokens == 9


async def test_the_context_window_error_is_fatal_and_says_so(server: Recorded) -> None:
    caller = _caller(server.url)
    try:
        with pytest.raises(BadRequest) as info:
            await caller.chat([{"role": "user", "content": "word " * 400}])
    finally:
        await caller.client.aclose()
    assert server.hits == 1
    assert info.value.status == 400
    assert "maximum context length is 2048 tokens" in str(info.value)


async def test_a_stream_without_usage_is_estimated(server: Recorded) -> None:
    caller = _caller(server.url, stream=True)
    try:
        reply = await caller.chat([{"role": "user", "content": "Say hi"}], max_tokens=5)
    finally:
        await caller.client.aclose()
    assert reply.text == "Hello! I'm here"
    assert reply.finish_reasons == ["length"]
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0

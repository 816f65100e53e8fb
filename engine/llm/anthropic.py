"""Anthropic's native Messages API as a transport (``kind = "anthropic"``).

The engine's requests arrive in the OpenAI chat-completions shape (:mod:`.transport`);
this module translates them: system messages become the top-level ``system``,
``max_tokens`` is required (1024 when the stage gives none), ``stop`` becomes
``stop_sequences``, ``n`` samples become ``n`` requests (the Messages API has no ``n``),
and ``response_format`` is dropped (structured output is read from text: set
``structured_output = false`` on such endpoints, the default for this kind). Replies come
back as a :class:`~engine.llm.client.ChatResult`: the text blocks joined, the stop
reason mapped (``end_turn``/``stop_sequence`` -> ``stop``, ``max_tokens`` -> ``length``),
usage with prompt-cache reads and writes counted as prompt tokens, and the
``anthropic-ratelimit-*`` headers read into :class:`~engine.llm.wire.RateInfo` so the
gate learns limits as it does from OpenAI's. Streaming reads Anthropic's SSE events.

References: https://docs.anthropic.com/en/api/messages, .../streaming, .../errors,
.../rate-limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from time import time as wall_time
from typing import Any

import aiohttp
import msgspec

from ..errors import EndpointError, MalformedResponse
from .batch_api import BatchLine, BatchRequest, BatchState
from .client import ChatResult, Client
from .http import Body, decoded, map_errors, read_all
from .wire import RateInfo, Usage, encoder

__all__ = ("AnthropicBatches", "AnthropicTransport", "messages_request", "parse_anthropic_rate")

_DEFAULT_MAX_TOKENS = 1024
_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
# Sampling parameters the Messages API takes as they are.
_PASSED = ("temperature", "top_p", "top_k", "metadata")


class _Block(msgspec.Struct, kw_only=True):
    type: str = ""
    text: str | None = None


class _AUsage(msgspec.Struct, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Message(msgspec.Struct, kw_only=True):
    content: list[_Block] = msgspec.field(default_factory=list)
    stop_reason: str | None = None
    usage: _AUsage | None = None


class _Delta(msgspec.Struct, kw_only=True):
    type: str = ""
    text: str | None = None
    stop_reason: str | None = None


class _Event(msgspec.Struct, kw_only=True):
    type: str = ""
    message: _Message | None = None
    delta: _Delta | None = None
    usage: _AUsage | None = None
    error: dict[str, object] | None = None


_message_decoder = msgspec.json.Decoder(_Message)
_event_decoder = msgspec.json.Decoder(_Event)


def _count(value: object, default: int) -> int:
    """A count parameter of a chat body (``n``, ``max_tokens``), ``default`` when unset."""
    return int(value) if isinstance(value, int | float | str) and value else default


def messages_request(body: Mapping[str, object]) -> dict[str, object]:
    """A Messages API request for one sample of a chat-completions ``body``."""
    system: list[str] = []
    messages: list[dict[str, object]] = []
    turns = body.get("messages")
    for m in turns if isinstance(turns, list) else ():
        role = m.get("role")
        if role == "system":
            system.append(str(m.get("content") or ""))
        else:
            messages.append(
                {
                    "role": "assistant" if role == "assistant" else "user",
                    "content": m.get("content") or "",
                }
            )
    out: dict[str, object] = {
        "model": body["model"],
        "max_tokens": _count(
            body.get("max_tokens") or body.get("max_completion_tokens"), _DEFAULT_MAX_TOKENS
        ),
        "messages": messages,
    }
    if system:
        out["system"] = "\n\n".join(system)
    for key in _PASSED:
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = (
            [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, Iterable) else stop
        )
    if body.get("stream"):
        out["stream"] = True
    return out


def _reset_seconds(value: str | None) -> float | None:
    """An RFC 3339 reset time as seconds from now (None: absent or unreadable)."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return max(0.0, when - wall_time())


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_anthropic_rate(headers: Any) -> RateInfo | None:
    """The ``anthropic-ratelimit-*`` headers as a :class:`RateInfo` (None when absent).

    Anthropic's tokens limits are input and output token limits besides a combined one;
    the combined ``tokens`` headers are read (input tokens where only those are sent).
    Limits below 1 or not finite read as absent, as for OpenAI's headers.
    """
    get = headers.get
    prefix = "anthropic-ratelimit-"
    lr = _number(get(prefix + "requests-limit"))
    lt = _number(get(prefix + "tokens-limit") or get(prefix + "input-tokens-limit"))
    rr = _number(get(prefix + "requests-remaining"))
    rt = _number(get(prefix + "tokens-remaining") or get(prefix + "input-tokens-remaining"))
    if lr is None and lt is None and rr is None and rt is None:
        return None
    return RateInfo(
        limit_requests=lr if lr is not None and lr >= 1 else None,
        remaining_requests=rr,
        reset_requests=_reset_seconds(get(prefix + "requests-reset")),
        limit_tokens=lt if lt is not None and lt >= 1 else None,
        remaining_tokens=rt,
        reset_tokens=_reset_seconds(
            get(prefix + "tokens-reset") or get(prefix + "input-tokens-reset")
        ),
    )


def _usage(u: _AUsage | None) -> Usage | None:
    if u is None:
        return None
    prompt = (
        u.input_tokens + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0)
    )
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=u.output_tokens,
        total_tokens=prompt + u.output_tokens,
    )


class AnthropicTransport(Client):
    """The Messages API of one endpoint (see the module docstring).

    Args:
        name: the endpoint's name.
        base_url: e.g. ``https://api.anthropic.com/v1``.
        api_key: sent as ``x-api-key`` (never logged; redacted from every message).
        anthropic_version: the ``anthropic-version`` header.
        **kwargs: as :class:`~engine.llm.client.Client` (timeouts, limits, redactor).
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        anthropic_version: str = "2023-06-01",
        **kwargs: Any,
    ) -> None:
        headers = {"anthropic-version": anthropic_version, **(kwargs.pop("headers", None) or {})}
        if api_key:
            headers["x-api-key"] = api_key
        super().__init__(name, base_url, api_key=None, headers=headers, **kwargs)
        if api_key:
            self._redactor.add(api_key)
        self._url = self.base_url + "/messages"

    async def chat(self, body: dict[str, object]) -> ChatResult:
        """One chat request; ``n`` samples are ``n`` concurrent Messages requests."""
        n = _count(body.get("n"), 1)
        if n <= 1:
            return await self._one(body)
        async with asyncio.TaskGroup() as tg:
            parts = [tg.create_task(self._one(body)) for _ in range(n)]
        results = [p.result() for p in parts]
        usage = Usage(
            prompt_tokens=sum(r.usage.prompt_tokens for r in results if r.usage),
            completion_tokens=sum(r.usage.completion_tokens for r in results if r.usage),
            total_tokens=sum(r.usage.total_tokens for r in results if r.usage),
        )
        return ChatResult(
            texts=[r.texts[0] for r in results],
            finish_reasons=[r.finish_reasons[0] for r in results],
            usage=usage,
            rate=results[-1].rate,
            latency=max(r.latency for r in results),
            ttft=min((r.ttft for r in results if r.ttft is not None), default=None),
        )

    async def _one(self, body: dict[str, object]) -> ChatResult:
        session = self._open()
        payload = encoder.encode(messages_request(body))
        start = self._clock()
        with map_errors(self.name, self._redactor):
            async with session.post(self._url, data=payload) as resp:
                headers = resp.headers
                if not self.simulated and "x-synth-engine-simulated" in headers:
                    self.simulated = True
                if resp.status != 200:
                    raise self._error_for(resp.status, await self._error_body(resp), headers)
                rate = parse_anthropic_rate(headers)
                reader = Body(self.name, headers.get("Content-Encoding", ""), self._max_bytes)
                if body.get("stream"):
                    return await self._stream(resp, reader, start, rate)
                raw = await read_all(resp.content, reader, known_length=resp.content_length)
                message = _message_decoder.decode(raw)
        text = "".join(b.text or "" for b in message.content if b.type == "text")
        return ChatResult(
            texts=[text],
            finish_reasons=[_STOP.get(message.stop_reason or "", message.stop_reason)],
            usage=_usage(message.usage),
            rate=rate,
            latency=self._clock() - start,
        )

    async def _stream(
        self, resp: aiohttp.ClientResponse, reader: Body, start: float, rate: RateInfo | None
    ) -> ChatResult:
        parts: list[str] = []
        pending = bytearray()
        ttft: float | None = None
        stop: str | None = None
        usage = _AUsage()
        done = False
        async for data in decoded(resp.content, reader):
            pending += data
            end = pending.rfind(b"\n")
            if end < 0:
                continue
            lines, rest = bytes(pending[:end]), bytes(pending[end + 1 :])
            pending = bytearray(rest)
            for line in lines.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                event = _event_decoder.decode(line[5:].strip())
                if event.type == "message_start" and event.message is not None:
                    if event.message.usage is not None:
                        usage = event.message.usage
                elif event.type == "content_block_delta" and event.delta is not None:
                    if event.delta.text:
                        parts.append(event.delta.text)
                        if ttft is None:
                            ttft = self._clock() - start
                elif event.type == "message_delta":
                    if event.delta is not None and event.delta.stop_reason:
                        stop = event.delta.stop_reason
                    if event.usage is not None:
                        usage.output_tokens = event.usage.output_tokens
                elif event.type == "error":
                    message = str((event.error or {}).get("message") or "no error message")
                    raise MalformedResponse(
                        f"stream carried an error: {self._redactor.text(message)[:300]}",
                        endpoint=self.name,
                    )
                elif event.type == "message_stop":
                    done = True
            if done:
                break
        if not done:
            raise MalformedResponse("stream ended before message_stop", endpoint=self.name)
        return ChatResult(
            texts=["".join(parts)],
            finish_reasons=[_STOP.get(stop or "", stop)],
            usage=_usage(usage),
            rate=rate,
            latency=self._clock() - start,
            ttft=ttft,
        )


class _BatchResult(msgspec.Struct, kw_only=True):
    type: str = ""
    message: _Message | None = None
    error: dict[str, object] | None = None


class _BatchResultLine(msgspec.Struct, kw_only=True):
    custom_id: str = ""
    result: _BatchResult | None = None


_batch_line_decoder = msgspec.json.Decoder(_BatchResultLine)


class AnthropicBatches:
    """Anthropic's Message Batches (https://docs.anthropic.com/en/api/creating-message-batches).

    A batch carries no metadata, so a batch whose id was never recorded (a kill right
    after its submission) cannot be found again: :meth:`find_batch` says so with None, and
    its requests are submitted once more (the batcher counts them).
    """

    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024
    finds_batches = False  # no metadata to find a batch by

    def __init__(self, transport: AnthropicTransport) -> None:
        self.transport = transport

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        t = self.transport
        session = t._open()
        with map_errors(t.name, t._redactor):
            async with session.request(method, t.base_url + path, **kwargs) as resp:
                if resp.status != 200:
                    raise t._error_for(resp.status, await t._error_body(resp), resp.headers)
                reader = Body(t.name, resp.headers.get("Content-Encoding", ""), t._max_bytes)
                raw = await read_all(resp.content, reader, known_length=resp.content_length)
        data = msgspec.json.decode(raw)
        if not isinstance(data, dict):
            raise MalformedResponse(f"unexpected {path} reply", endpoint=t.name)
        return data

    async def submit_batch(self, requests: list[BatchRequest], *, token: str) -> str:
        items = []
        for r in requests:
            if _count(r.body.get("n"), 1) > 1:
                raise MalformedResponse(
                    "Message Batches take one sample per request (n > 1)",
                    endpoint=self.transport.name,
                )
            params = messages_request({**r.body, "stream": False})
            items.append({"custom_id": r.custom_id, "params": params})
        batch = await self._json(
            "POST", "/messages/batches", data=encoder.encode({"requests": items})
        )
        return str(batch["id"])

    async def batch_state(self, batch_id: str) -> BatchState:
        batch = await self._json("GET", f"/messages/batches/{batch_id}")
        status = str(batch.get("processing_status") or "")
        counts = batch.get("request_counts") or {}
        done = sum(int(counts.get(k, 0)) for k in ("succeeded", "errored", "canceled", "expired"))
        return BatchState(
            status="ended" if status == "ended" else "running",
            detail=status,
            done=done,
            total=done + int(counts.get("processing", 0)),
        )

    async def batch_results(self, batch_id: str) -> AsyncIterator[BatchLine]:
        t = self.transport
        session = t._open()
        with map_errors(t.name, t._redactor):
            async with session.get(t.base_url + f"/messages/batches/{batch_id}/results") as resp:
                if resp.status != 200:
                    raise t._error_for(resp.status, await t._error_body(resp), resp.headers)
                pending = b""
                async for chunk in resp.content.iter_chunked(1 << 16):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for raw in lines:
                        if raw.strip():
                            yield self._line(raw)
                if pending.strip():
                    yield self._line(pending)

    def _line(self, raw: bytes) -> BatchLine:
        line = _batch_line_decoder.decode(raw)
        result = line.result or _BatchResult()
        if result.type == "succeeded" and result.message is not None:
            m = result.message
            text = "".join(b.text or "" for b in m.content if b.type == "text")
            return BatchLine(
                line.custom_id,
                result=ChatResult(
                    texts=[text],
                    finish_reasons=[_STOP.get(m.stop_reason or "", m.stop_reason)],
                    usage=_usage(m.usage),
                ),
            )
        if result.type in ("canceled", "expired"):
            return BatchLine(line.custom_id, error=f"batch request {result.type}", rerun=True)
        error = result.error or {}
        nested = error.get("error")
        inner: dict[str, object] = nested if isinstance(nested, dict) else error
        kind = str(inner.get("type") or "")
        message = str(inner.get("message") or kind or "errored")
        transient = kind in ("overloaded_error", "api_error", "rate_limit_error")
        return BatchLine(
            line.custom_id,
            error=self.transport._redactor.text(message)[:300],
            rerun=transient,
        )

    async def find_batch(self, token: str) -> str | None:
        return None  # no metadata to find a batch by (see the class docstring)

    async def cancel_batch(self, batch_id: str) -> None:
        with contextlib.suppress(EndpointError):
            await self._json("POST", f"/messages/batches/{batch_id}/cancel")

"""The simulated Anthropic Messages API: ``POST /v1/messages``, plain JSON or SSE.

Follows https://docs.anthropic.com/en/api/messages (request and ``message`` shapes),
https://docs.anthropic.com/en/docs/build-with-claude/streaming (event types
``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``,
``content_block_stop``, ``message_delta``, ``message_stop``),
https://docs.anthropic.com/en/api/errors (``{"type": "error", "error": {"type",
"message"}}``; 529 ``overloaded_error``) and https://docs.anthropic.com/en/api/rate-limits
(``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``, reset as an RFC 3339
time, ``retry-after`` seconds on 429).

Every request needs a key, in an ``x-api-key`` header or as ``Authorization: Bearer``
(which recent SDKs send; 401 ``authentication_error`` without; with the sim's ``api_key``
set it must be one of its keys), and an ``anthropic-version`` header (400).
The request is checked and translated into a chat-completions body
(:mod:`engine.sim.anthropic_wire`) and answered by the chat endpoint's code, so its text
is the online chat reply to that body. It shares the chat endpoint's rpm/tpm buckets
(admission cost ``prompt + max_tokens``), fault plan (``503`` and ``down`` answer 529
``overloaded_error``, ``500``/``502`` ``api_error``, ``429`` a ``rate_limit_error``; the
connection faults behave as on the chat route), latency model and counters; prompt
caching is simulated (:mod:`engine.sim.prompt_cache`).
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from engine.clock import monotonic

from .anthropic_wire import (
    AnthropicError,
    Message,
    Translated,
    build_message,
    sse_events,
    translate,
)
from .completion import Prepared, Rejection, prepare, produce
from .model import Content, jitter_s
from .prompt_cache import PromptCache
from .transport import abort, sleep_until

if TYPE_CHECKING:
    from .server import _SimState

__all__ = ("MessagesAPI", "rfc3339")

_JSON = "application/json"
_SIMULATED_HEADER = "x-synth-engine-simulated"
_MALFORMED = b'{"type": "message", "content": ['
_SLOW_PIECES = 10
_FAULTS: dict[str, AnthropicError] = {
    "500": AnthropicError(500, "Internal server error (simulated)."),
    "502": AnthropicError(502, "Bad gateway (simulated)."),
    "503": AnthropicError(529, "Overloaded (simulated)."),
    "down": AnthropicError(529, "Overloaded: the simulated endpoint is down."),
}


def rfc3339(unix: float) -> str:
    """``unix`` seconds as an RFC 3339 UTC time, to the second (``2025-01-15T14:24:00Z``)."""
    return datetime.fromtimestamp(math.ceil(unix), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MessagesAPI:
    """Handlers and counters of the Messages API; headers and errors for all Anthropic routes.

    Args:
        state: the server's shared state (settings, limiter, fault plan, counters).
        cache: the prompt cache.
    """

    def __init__(self, state: _SimState, cache: PromptCache) -> None:
        self.state = state
        self.cache = cache
        self.seq = 0
        self.requests = 0
        self.streamed = 0
        self.completed = 0
        self.errors: dict[str, int] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_creation_input_tokens = 0
        self.cache_read_input_tokens = 0

    # ------------------------------------------------------------------ shared helpers
    def stats(self) -> dict[str, object]:
        """Counters of the Messages API for ``/sim/stats``."""
        return {
            "messages_requests": self.requests,
            "messages_completed": self.completed,
            "messages_streamed": self.streamed,
            "errors_by_type": dict(sorted(self.errors.items())),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_writes": self.cache.writes,
            "cache_reads": self.cache.reads,
        }

    def next_id(self, prefix: str, digest: bytes) -> str:
        """A fresh object id (``msg_sim...``)."""
        self.seq += 1
        return f"{prefix}{digest[:8].hex()}{self.seq:x}"

    def headers(self, content_type: str = _JSON) -> dict[str, str]:
        """Content type, the simulated label, a request id and Anthropic's rate-limit headers."""
        self.seq += 1
        headers = {
            "Content-Type": content_type,
            _SIMULATED_HEADER: "true",
            "request-id": f"req_sim{self.seq:016x}",
        }
        state = self.state
        if state.limited:
            now = monotonic()
            wall = time.time()
            for bucket, kind in ((state.req_bucket, "requests"), (state.tok_bucket, "tokens")):
                if bucket is not None:
                    bucket.refill(now)
                    prefix = f"anthropic-ratelimit-{kind}"
                    headers[f"{prefix}-limit"] = str(int(bucket.capacity))
                    headers[f"{prefix}-remaining"] = str(max(0, math.floor(bucket.level)))
                    headers[f"{prefix}-reset"] = rfc3339(wall + bucket.reset_s())
        return headers

    def error(self, err: AnthropicError, *, retry_after: float | None = None) -> web.Response:
        """An error response in Anthropic's shape, counted."""
        headers = self.headers()
        state = self.state
        if retry_after is not None:
            headers["retry-after"] = str(max(1, math.ceil(retry_after)))
        if err.status == 429:
            state.http_429 += 1
            second = int(monotonic() - state.started)
            state.per_second_429[second] = state.per_second_429.get(second, 0) + 1
        elif err.status in (400, 404, 413):
            state.bad_requests += 1
        kind = err.kind()
        self.errors[kind] = self.errors.get(kind, 0) + 1
        return web.Response(
            status=err.status,
            body=orjson.dumps(err.body(headers["request-id"])),
            headers=headers,
        )

    def json(self, body: dict[str, object]) -> web.Response:
        """A 200 JSON response with the Anthropic headers."""
        return web.Response(body=orjson.dumps(body), headers=self.headers())

    def check_headers(self, request: web.Request) -> AnthropicError | None:
        """The ``x-api-key`` and ``anthropic-version`` headers, as the API requires them."""
        state = self.state
        # Recent SDKs send the key as a bearer token, which the API accepts too.
        bearer = request.headers.get("Authorization", "")
        given = request.headers.get("x-api-key") or bearer.removeprefix("Bearer ").strip()
        key = state.settings.api_key
        keys = [key] if isinstance(key, str) else key
        if not given or (keys is not None and given not in keys):
            state.unauthorized += 1
            return AnthropicError(
                401,
                "x-api-key header is required."
                if not given
                else "invalid x-api-key (simulated endpoint).",
            )
        if keys is not None and len(keys) > 1:
            state.by_key[keys.index(given)] += 1
        if not request.headers.get("anthropic-version"):
            return AnthropicError(
                400, "anthropic-version: header is required (e.g. anthropic-version: 2023-06-01)."
            )
        return None

    # ------------------------------------------------------------------ POST /v1/messages
    async def messages(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/messages``."""
        state = self.state
        state.requests += 1
        self.requests += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            if state.slots is None:
                return await self._messages(request)
            async with state.slots:
                return await self._messages(request)
        finally:
            state.in_flight -= 1

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        s = state.settings
        refused = self.check_headers(request)
        if refused is not None:
            return self.error(refused)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return self.error(AnthropicError(400, f"The request body is not valid JSON: {exc}"))
        translated = translate(body)
        if isinstance(translated, AnthropicError):
            return self.error(translated)
        prepared = prepare(s, translated.chat)
        if isinstance(prepared, Rejection):
            return self.error(AnthropicError(400, prepared.message))
        fault = (
            state.plan.decide(prepared.digest, monotonic() - state.started)
            if state.plan.active
            else None
        )
        if fault == "429":
            return self.error(
                AnthropicError(429, "Rate limit reached (simulated fault)."),
                retry_after=s.retry_after_s,
            )
        if fault == "down":
            return self.error(_FAULTS[fault])
        cost = prepared.cost
        if state.limited:
            wait = state.admit(cost)
            if wait > 0.0:
                state.rate_limited += 1
                return self.error(
                    AnthropicError(
                        429,
                        f"Rate limit reached for {s.model} (simulated endpoint): this request "
                        f"costs {cost} tokens; try again in {wait:.2f}s.",
                    ),
                    retry_after=wait,
                )
        state.admitted += 1
        second = int(monotonic() - state.started)
        row = state.per_second.setdefault(second, [0, 0])
        row[0] += 1
        row[1] += cost
        due = t0 + jitter_s(s, prepared.digest)
        failure = _FAULTS.get(fault) if fault is not None else None
        if failure is not None:
            await sleep_until(loop, due)
            return self.error(failure)
        if fault == "reset":
            return abort(request)
        if fault == "timeout":
            await asyncio.sleep(s.hang_s)
        if fault == "malformed" or (fault == "truncated" and not translated.stream):
            await sleep_until(loop, due)
            return web.Response(body=_MALFORMED, headers=self.headers())
        content = produce(s, prepared)
        state._settle(cost, content, second)
        message = self.answer(translated, prepared, content, tier="standard")
        tokens = message["usage"]["output_tokens"]
        if translated.stream:
            self.streamed += 1
            return await self._stream(request, message, due, tokens, fault, content)
        payload = orjson.dumps(message)
        if fault == "slow":
            return await self._dribble(request, payload, due, _JSON, content)
        tps = s.tokens_per_s
        await sleep_until(loop, due + (tokens / tps if tps > 0 else 0.0))
        self._done(content)
        return web.Response(body=payload, headers=self.headers())

    def answer(
        self, translated: Translated, prepared: Prepared, content: Content, *, tier: str
    ) -> Message:
        """The message for a generated reply, with simulated prompt caching, counted."""
        cache = self.cache.use(
            translated.cache_prefix, translated.cache_chars, translated.cache_ttl_s
        )
        message = build_message(
            translated,
            prepared,
            content,
            self.next_id("msg_sim", prepared.digest),
            cache=cache,
            tier=tier,
        )
        usage = message["usage"]
        self.input_tokens += usage["input_tokens"]
        self.output_tokens += usage["output_tokens"]
        self.cache_creation_input_tokens += usage["cache_creation_input_tokens"]
        self.cache_read_input_tokens += usage["cache_read_input_tokens"]
        return message

    def _done(self, content: Content) -> None:
        self.completed += 1
        self.state._done(content)

    async def _stream(
        self,
        request: web.Request,
        message: Message,
        first_byte_at: float,
        tokens: int,
        fault: str | None,
        content: Content,
    ) -> web.StreamResponse:
        steps = sse_events(message)
        if fault == "slow":
            return await self._dribble(
                request, b"".join(steps), first_byte_at, "text/event-stream", content
            )
        loop = asyncio.get_running_loop()
        await sleep_until(loop, first_byte_at)
        resp = web.StreamResponse(headers=self.headers("text/event-stream"))
        resp.headers["Cache-Control"] = "no-cache"
        await resp.prepare(request)
        if fault == "truncated":
            for step in steps[: max(1, len(steps) // 2)]:
                await resp.write(step)
            return abort(request, resp)
        tps = self.state.settings.tokens_per_s
        if tps <= 0:
            await resp.write(b"".join(steps))
        else:
            gaps = max(1, len(steps) - 1)
            for k, step in enumerate(steps):
                await sleep_until(loop, first_byte_at + tokens * k / gaps / tps)
                await resp.write(step)
        await resp.write_eof()
        self._done(content)
        return resp

    async def _dribble(
        self,
        request: web.Request,
        payload: bytes,
        first_byte_at: float,
        content_type: str,
        content: Content,
    ) -> web.StreamResponse:
        await sleep_until(asyncio.get_running_loop(), first_byte_at)
        resp = web.StreamResponse(headers=self.headers(content_type))
        if content_type == _JSON:
            resp.content_length = len(payload)
        await resp.prepare(request)
        gap = self.state.settings.slow_body_s / _SLOW_PIECES
        for i in range(_SLOW_PIECES):
            if i:
                await asyncio.sleep(gap)
            size = len(payload)
            await resp.write(payload[size * i // _SLOW_PIECES : size * (i + 1) // _SLOW_PIECES])
        await resp.write_eof()
        self._done(content)
        return resp

    def register(self, app: web.Application) -> None:
        """Add ``POST /v1/messages`` to ``app``."""
        app.router.add_post("/v1/messages", self.messages)

"""The simulated OpenAI-compatible endpoint: an aiohttp.web app and helpers to run it.

Routes: ``POST /v1/chat/completions`` (plain JSON or SSE), ``GET /v1/models``,
``GET /sim/stats`` (counters for tests and benchmarks) and ``GET /health``. Every
response carries ``x-synth-engine-simulated: true``.

Request handling order: auth (401), body (400), context length (400), fault decision,
rate-limit admission (429), then latency and the body. Injected ``429``/``down``
faults and the 5xx faults are answered before admission, so they use no quota; the
other faults (timeout, reset, malformed, truncated, slow) hit admitted requests.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from engine.clock import Clock, monotonic
from engine.serving import LoopbackServer

from .apis import add_provider_apis
from .completion import Rejection, completion_object, prepare, produce, usage_of
from .faults import FaultPlan
from .model import LABEL, Content, SimSettings, format_duration, jitter_s
from .transport import abort as _reset
from .transport import sleep_until as _sleep_until

__all__ = ("SimServer", "make_app", "serve_forever")

SIMULATED_HEADER = "x-synth-engine-simulated"
_JSON = "application/json"
_MAX_CHUNK_WRITES = 20
_SLOW_PIECES = 10
# Graceful-shutdown grace for in-flight handlers; the sim has nothing worth waiting for.
_SHUTDOWN_TIMEOUT_S = 0.5
_MALFORMED_BODY = b'{"choices": ['

_ERRORS_5XX: dict[str, tuple[int, str, str | None]] = {
    "500": (500, "The server had an error while processing your request (simulated).", None),
    "502": (502, "Bad gateway (simulated).", None),
    "503": (503, "The engine is currently overloaded, please try again later (simulated).", None),
    "down": (503, "Service unavailable: the simulated endpoint is down.", "service_unavailable"),
}


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


def _limit_text(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


class _Bucket:
    """A token bucket with OpenAI semantics: capacity = limit, refill limit/60 per second."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, limit: float, now: float) -> None:
        self.capacity = float(limit)
        self.rate = self.capacity / 60.0
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (a cost above capacity waits for a full bucket)."""
        short = min(amount, self.capacity) - self.level
        return short / self.rate if short > 0 else 0.0

    def reset_s(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


class _SimState:
    """Per-app state: settings, limiter buckets, fault plan and counters."""

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.started = monotonic()
        now = self.started
        self.req_bucket = _Bucket(settings.rpm, now) if settings.rpm is not None else None
        self.tok_bucket = _Bucket(settings.tpm, now) if settings.tpm is not None else None
        self.limited = self.req_bucket is not None or self.tok_bucket is not None
        self.plan = FaultPlan(settings)
        self.seq = 0
        self.requests = 0
        self.admitted = 0
        self.completed = 0
        self.rate_limited = 0
        self.http_429 = 0
        self.bad_requests = 0
        self.unauthorized = 0
        # Authorized requests per accepted key (by position in settings.api_key).
        self.by_key = [0] * (len(settings.api_key) if isinstance(settings.api_key, list) else 0)
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.per_second: dict[int, list[int]] = {}
        self.per_second_429: dict[int, int] = {}
        n = settings.max_concurrency
        self.slots = asyncio.Semaphore(n) if n is not None else None
        # More counters for /sim/stats, by section (the batch and Anthropic APIs).
        self.sections: dict[str, Callable[[], dict[str, object]]] = {}

    # ------------------------------------------------------------------ helpers
    def stats(self) -> dict[str, Any]:
        """Counters as a JSON-ready dict (the body of ``GET /sim/stats``)."""
        return {
            "simulated": True,
            "model": self.settings.model,
            "uptime_s": round(monotonic() - self.started, 3),
            "requests": self.requests,
            "admitted": self.admitted,
            "completed": self.completed,
            "rate_limited": self.rate_limited,
            "http_429": self.http_429,
            "bad_requests": self.bad_requests,
            "unauthorized": self.unauthorized,
            "requests_by_key": list(self.by_key),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "faults": dict(sorted(self.plan.injected.items())),
            "per_second": [[s, v[0], v[1]] for s, v in sorted(self.per_second.items())],
            "per_second_429": [[s, c] for s, c in sorted(self.per_second_429.items())],
            **{name: section() for name, section in self.sections.items()},
        }

    def headers(self, content_type: str = _JSON) -> dict[str, str]:
        headers = {"Content-Type": content_type, SIMULATED_HEADER: "true"}
        if self.limited:
            now = monotonic()
            for bucket, suffix in ((self.req_bucket, "requests"), (self.tok_bucket, "tokens")):
                if bucket is not None:
                    bucket.refill(now)
                    headers[f"x-ratelimit-limit-{suffix}"] = _limit_text(bucket.capacity)
                    headers[f"x-ratelimit-remaining-{suffix}"] = str(
                        max(0, math.floor(bucket.level))
                    )
                    headers[f"x-ratelimit-reset-{suffix}"] = format_duration(bucket.reset_s())
        return headers

    def error(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None,
        *,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> web.Response:
        headers = self.headers()
        if retry_after is not None:
            headers["Retry-After"] = f"{math.ceil(retry_after * 100 - 1e-9) / 100:.2f}"
        if status == 429:
            self.http_429 += 1
            second = int(monotonic() - self.started)
            self.per_second_429[second] = self.per_second_429.get(second, 0) + 1
        elif status in (400, 404, 413, 422):
            self.bad_requests += 1
        return web.Response(
            status=status, body=_error_body(message, type_, code, param), headers=headers
        )

    def bad_request(
        self, message: str, code: str | None = None, param: str | None = None
    ) -> web.Response:
        return self.error(400, message, "invalid_request_error", code, param=param)

    def admit(self, tokens: int) -> float:
        """Take one request and ``tokens`` from the buckets; 0.0, or seconds to wait if refused."""
        now = monotonic()
        rb, tb = self.req_bucket, self.tok_bucket
        wait = 0.0
        if rb is not None:
            rb.refill(now)
            wait = rb.wait_for(1.0)
        if tb is not None:
            tb.refill(now)
            wait = max(wait, tb.wait_for(tokens))
        if wait > 0.0:
            return wait
        if rb is not None:
            rb.level -= 1.0
        if tb is not None:
            tb.level -= tokens
        return 0.0

    # ------------------------------------------------------------------ handlers
    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        try:
            if self.slots is None:
                return await self._chat(request)
            async with self.slots:
                return await self._chat(request)
        finally:
            self.in_flight -= 1

    def _authorized(self, request: web.Request) -> bool:
        key = self.settings.api_key
        keys = [key] if isinstance(key, str) else key or []
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if given not in keys:
            return False
        if len(keys) > 1:
            self.by_key[keys.index(given)] += 1
        return True

    def _unauthorized(self) -> web.Response:
        self.unauthorized += 1
        return self.error(
            401,
            "Incorrect API key provided (simulated endpoint).",
            "invalid_request_error",
            "invalid_api_key",
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        s = self.settings
        if s.api_key is not None and not self._authorized(request):
            return self._unauthorized()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return self.bad_request(f"We could not parse the JSON body of your request: {exc}")
        if not isinstance(body, dict):
            return self.bad_request("The request body must be a JSON object.")
        prepared = prepare(s, body)
        if isinstance(prepared, Rejection):
            return self.bad_request(prepared.message, prepared.code, prepared.param)
        digest, cost = prepared.digest, prepared.cost
        plan = self.plan
        fault = plan.decide(digest, monotonic() - self.started) if plan.active else None
        if fault == "429":
            return self.error(
                429,
                "Rate limit reached (simulated fault). Please try again later.",
                "rate_limit_error",
                "rate_limit_exceeded",
                retry_after=s.retry_after_s,
            )
        if fault == "down":
            status, message, code = _ERRORS_5XX[fault]
            return self.error(status, message, "server_error", code)
        if self.limited:
            wait = self.admit(cost)
            if wait > 0.0:
                self.rate_limited += 1
                return self.error(
                    429,
                    f"Rate limit reached for {s.model} (simulated endpoint): "
                    f"limit {_limit_text(s.rpm) if s.rpm else '-'} RPM, "
                    f"{_limit_text(s.tpm) if s.tpm else '-'} TPM; this request costs {cost} tokens. "
                    f"Please try again in {wait:.2f}s.",
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    retry_after=wait,
                )
        self.admitted += 1
        second = int(monotonic() - self.started)
        row = self.per_second.get(second)
        if row is None:
            self.per_second[second] = [1, cost]
        else:
            row[0] += 1
            row[1] += cost
        latency = jitter_s(s, digest)
        if fault is not None and fault in _ERRORS_5XX:
            await _sleep_until(loop, t0 + latency)
            status, message, code = _ERRORS_5XX[fault]
            return self.error(status, message, "server_error", code)
        if fault == "reset":
            return _reset(request)
        if fault == "timeout":
            await asyncio.sleep(s.hang_s)
        stream = body.get("stream") is True
        if fault == "malformed" or (fault == "truncated" and not stream):
            await _sleep_until(loop, t0 + latency)
            return web.Response(body=_MALFORMED_BODY, headers=self.headers())
        content = produce(s, prepared)
        self._settle(cost, content, second)
        model = prepared.model
        self.seq += 1
        cid = f"chatcmpl-sim-{digest[:8].hex()}{self.seq:x}"
        longest = max(c.tokens for c in content.choices)
        if stream:
            opts = body.get("stream_options")
            include_usage = s.usage and isinstance(opts, dict) and opts.get("include_usage") is True
            steps = _sse_steps(cid, model, content, include_usage)
            if fault == "slow":
                return await self._dribble(
                    request, b"".join(steps), t0 + latency, content, chunked=True
                )
            return await self._stream(
                request,
                steps,
                t0 + latency,
                longest,
                truncated=fault == "truncated",
                content=content,
            )
        payload = orjson.dumps(
            completion_object(cid, model, content, created=int(time.time()), usage=s.usage)
        )
        if fault == "slow":
            return await self._dribble(request, payload, t0 + latency, content, chunked=False)
        tps = s.tokens_per_s
        await _sleep_until(loop, t0 + latency + (longest / tps if tps > 0 else 0.0))
        self._done(content)
        return web.Response(body=payload, headers=self.headers())

    def _settle(self, cost: int, content: Content, second: int) -> None:
        """Return the unused part of the admission charge once the completion length is known.

        Admission charges prompt + max_tokens x n; the bucket then keeps only what the
        request really used (usage-based accounting, which the engine's reconciliation of
        reservations with ``usage`` mirrors). The refund happens here, before the response
        is sent, so a client refunding on receipt is never ahead of this bucket.
        """
        unused = cost - (content.prompt_tokens + content.completion_tokens)
        if unused <= 0:
            return
        if self.tok_bucket is not None:
            self.tok_bucket.refill(monotonic())
            self.tok_bucket.level = min(self.tok_bucket.capacity, self.tok_bucket.level + unused)
        row = self.per_second.get(second)
        if row is not None:
            row[1] -= unused

    def _done(self, content: Content) -> None:
        self.completed += 1
        self.prompt_tokens += content.prompt_tokens
        self.completion_tokens += content.completion_tokens

    async def _stream(
        self,
        request: web.Request,
        steps: list[bytes],
        first_byte_at: float,
        tokens: int,
        *,
        truncated: bool,
        content: Content,
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        tps = self.settings.tokens_per_s
        await _sleep_until(loop, first_byte_at)
        resp = web.StreamResponse(headers=self.headers("text/event-stream"))
        resp.headers["Cache-Control"] = "no-cache"
        await resp.prepare(request)
        # steps = [content step 0..B-1, final]; content step k is due after k/B of the tokens.
        content_steps = len(steps) - 1
        if truncated:
            for step in steps[: max(1, content_steps // 2)]:
                await resp.write(step)
            return _reset(request, resp)
        if tps <= 0:
            await resp.write(b"".join(steps))
        else:
            for k, step in enumerate(steps):
                await _sleep_until(loop, first_byte_at + tokens * k / content_steps / tps)
                await resp.write(step)
        await resp.write_eof()
        self._done(content)
        return resp

    async def _dribble(
        self,
        request: web.Request,
        payload: bytes,
        first_byte_at: float,
        content: Content,
        *,
        chunked: bool,
    ) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        await _sleep_until(loop, first_byte_at)
        headers = self.headers("text/event-stream" if chunked else _JSON)
        resp = web.StreamResponse(headers=headers)
        if not chunked:
            resp.content_length = len(payload)
        await resp.prepare(request)
        pieces = _SLOW_PIECES
        gap = self.settings.slow_body_s / pieces
        for i in range(pieces):
            if i:
                await asyncio.sleep(gap)
            await resp.write(payload[len(payload) * i // pieces : len(payload) * (i + 1) // pieces])
        await resp.write_eof()
        self._done(content)
        return resp

    async def models(self, request: web.Request) -> web.Response:
        if self.settings.api_key is not None and not self._authorized(request):
            return self._unauthorized()
        body = {
            "object": "list",
            "data": [
                {
                    "id": self.settings.model,
                    "object": "model",
                    "created": 0,
                    "owned_by": "synth-engine-sim",
                }
            ],
        }
        return web.Response(body=orjson.dumps(body), headers=self.headers())

    async def stats_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.stats()), headers=self.headers())

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok","simulated":true}', headers=self.headers())


STATE_KEY = web.AppKey("synth_engine_sim_state", _SimState)


def _sse_steps(cid: str, model: str, content: Content, include_usage: bool) -> list[bytes]:
    """SSE payloads, one per write: B content steps (all choices each), then the final one."""
    created = int(time.time())
    longest = max(c.tokens for c in content.choices)
    batches = max(1, min(_MAX_CHUNK_WRITES, longest))
    dumps = orjson.dumps

    def event(choices: list[dict[str, object]], **extra: object) -> bytes:
        chunk = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return b"data: " + dumps(chunk) + b"\n\n"

    cuts = [_cuts(c.content, batches) for c in content.choices]
    steps: list[bytes] = []
    for k in range(batches):
        events = []
        for i, c in enumerate(content.choices):
            piece = c.content[cuts[i][k] : cuts[i][k + 1]]
            delta = {"role": "assistant", "content": piece} if k == 0 else {"content": piece}
            events.append(event([{"index": i, "delta": delta, "finish_reason": None}]))
        steps.append(b"".join(events))
    final = [
        event([{"index": i, "delta": {}, "finish_reason": c.finish_reason}])
        for i, c in enumerate(content.choices)
    ]
    if include_usage:
        final.append(event([], usage=usage_of(content)))
    final.append(b"data: [DONE]\n\n")
    steps.append(b"".join(final))
    return steps


def _cuts(text: str, batches: int) -> list[int]:
    """``batches + 1`` cut points into ``text``, snapped to word starts.

    Simulated text (the label, then one word per token) is cut by word count, so each
    batch carries the same number of tokens: with as many batches as tokens, every event
    is one token (a fixed token cadence). Other text is cut near-evenly by characters.
    """
    size = len(text)
    if text.startswith(LABEL + " "):
        starts = [i for i, ch in enumerate(text) if ch == " "]  # the space before each token
        if len(starts) >= batches:
            n = len(starts)
            return [0, *(starts[k * n // batches] for k in range(1, batches)), size]
    cuts = [0]
    for k in range(1, batches):
        pos = text.find(" ", max(cuts[-1], size * k // batches))
        cuts.append(size if pos < 0 else pos)
    cuts.append(size)
    return cuts


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[SIMULATED_HEADER] = "true"


def make_app(settings: SimSettings, *, clock: Clock | None = None) -> web.Application:
    """Build the aiohttp application of the simulated endpoint.

    Args:
        settings: behaviour of the endpoint (latency, limits, faults...).
        clock: time source of the batch lifecycles (tests step a
            :class:`engine.clock.FakeClock`); default: monotonic time.

    Returns:
        An application with ``POST /v1/chat/completions``, ``GET /v1/models``,
        ``GET /sim/stats``, ``GET /health``, OpenAI's Files and Batch APIs and
        Anthropic's Messages and Message Batches APIs (:mod:`engine.sim.apis`).
    """
    state = _SimState(settings)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = state
    app.router.add_post("/v1/chat/completions", state.chat)
    app.router.add_get("/v1/models", state.models)
    app.router.add_get("/sim/stats", state.stats_handler)
    app.router.add_get("/health", state.health)
    add_provider_apis(app, state, clock or monotonic)
    # Responses the handlers do not build (404, 405) get the label too.
    app.on_response_prepare.append(_on_prepare)
    return app


class SimServer(LoopbackServer):
    """Runs the simulated endpoint on a TCP port in the current event loop.

    Use as ``async with SimServer(settings) as server: ... server.url ...``.

    Args:
        settings: behaviour of the endpoint.
        host: interface to listen on.
        port: TCP port (0: a free one, see :attr:`port`).
        clock: time source of the batch lifecycles (default: monotonic time).
    """

    def __init__(
        self,
        settings: SimSettings,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            host=host,
            port=port,
            runner_options={
                "handler_cancellation": True,
                "shutdown_timeout": _SHUTDOWN_TIMEOUT_S,
            },
            site_options={"backlog": 4096, "reuse_address": True},
        )
        self.settings = settings
        self.clock = clock

    def build_app(self) -> web.Application:
        """The simulated endpoint's application."""
        return make_app(self.settings, clock=self.clock)

    @property
    def url(self) -> str:
        """Base URL for OpenAI clients, e.g. ``http://127.0.0.1:PORT/v1``."""
        return self.address("/v1")

    def stats(self) -> dict[str, Any]:
        """The same counters ``GET /sim/stats`` returns."""
        if self._app is None:
            raise RuntimeError("SimServer is not started")
        return self._app[STATE_KEY].stats()


async def serve_forever(
    settings: SimSettings,
    host: str,
    port: int,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the simulated endpoint until cancelled (the ``synth-engine sim`` command).

    Args:
        settings: behaviour of the endpoint.
        host: interface to listen on.
        port: TCP port (0: a free one).
        ready: called once with the base URL when listening.
    """
    async with SimServer(settings, host=host, port=port) as server:
        if ready is not None:
            ready(server.url)
        await asyncio.Event().wait()

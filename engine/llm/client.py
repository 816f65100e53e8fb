"""OpenAI-compatible chat client on aiohttp: one session per endpoint, one attempt per call.

The client sends a request, reads the body (whole or as an SSE stream), decodes it with
msgspec into the view Structs of :mod:`engine.llm.wire` and maps every foreign failure
into the error tree of :mod:`engine.errors` right here, at the boundary. Retrying,
pacing and caching are the caller's and the gate's business, not this module's.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import msgspec

from ..clock import Clock, monotonic
from ..errors import (
    AuthError,
    BadRequest,
    ConnectionLost,
    EndpointError,
    MalformedResponse,
    RateLimited,
    ServerError,
    Timeout,
)
from .wire import (
    ErrorBody,
    RateInfo,
    SseAccumulator,
    Usage,
    completion_decoder,
    encoder,
    error_decoder,
    parse_rate_headers,
)

__all__ = ("SIMULATED_HEADER", "ChatResult", "Client")

SIMULATED_HEADER = "x-synth-engine-simulated"
"""Response header by which synth-engine's simulated endpoint labels itself."""


class ChatResult(msgspec.Struct, kw_only=True):
    """What one successful call returned.

    Attributes:
        texts: content of each choice, by index.
        finish_reasons: finish reason of each choice.
        usage: reported usage (None if the server sent none).
        rate: the response's x-ratelimit-* headers, if any.
        latency: seconds from send to the end of the body.
        ttft: seconds to the first content byte (streamed calls only).
    """

    texts: list[str]
    finish_reasons: list[str | None]
    usage: Usage | None = None
    rate: RateInfo | None = None
    latency: float = 0.0
    ttft: float | None = None


def _retry_after(headers: Any) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000.0)
    value = headers.get("retry-after")
    if value is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(value))
    return None


# A request the server's own validation rejected, sent back as HTTP 500 by servers that
# wrap every exception (llama-cpp-python reports pydantic's "1 validation error: ...
# 'loc': ('body', 'response_format', 'type') ..." that way): the request is wrong, so
# another attempt cannot help.
_REQUEST_VALIDATION = re.compile(r"^\d+ validation errors?\b.*'loc': \('body'", re.S)


@contextlib.contextmanager
def _map_errors(endpoint: str) -> Iterator[None]:
    """Map aiohttp/asyncio/msgspec failures into the engine's tree (subclasses first)."""
    try:
        yield
    except EndpointError:
        raise
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise Timeout(f"timed out ({type(exc).__name__})", endpoint=endpoint) from exc
    except aiohttp.ClientPayloadError as exc:
        raise ConnectionLost(f"body cut short: {exc}", endpoint=endpoint) from exc
    except aiohttp.ClientConnectorError as exc:
        raise ConnectionLost(f"cannot connect: {exc.os_error}", endpoint=endpoint) from exc
    except aiohttp.ClientConnectionError as exc:
        raise ConnectionLost(
            f"connection lost: {type(exc).__name__} {exc}", endpoint=endpoint
        ) from exc
    except aiohttp.ClientResponseError as exc:
        raise MalformedResponse(f"bad response: {exc.message}", endpoint=endpoint) from exc
    except msgspec.DecodeError as exc:
        raise MalformedResponse(f"undecodable body: {exc}", endpoint=endpoint) from exc


class Client:
    """A chat-completions client for one endpoint.

    Args:
        name: endpoint name (for errors and logs; never the key).
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        api_key: bearer token, or None for servers without auth.
        timeout_s: per-request deadline (connect + send + whole body).
        connect_timeout_s: deadline for the TCP connect alone.
        max_connections: connection pool size (0: unbounded).
        headers: extra headers sent with every request.
        clock: monotonic time for latency measurements.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        max_connections: int = 0,
        headers: dict[str, str] | None = None,
        clock: Clock = monotonic,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._url = self.base_url + "/chat/completions"
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._max_connections = max_connections
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if headers:
            self._headers.update(headers)
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.simulated = False  # set once a response carries the simulated endpoint's header

    async def __aenter__(self) -> Client:
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=self._headers
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _redact(self, text: str) -> str:
        key = self._api_key
        if key:
            text = text.replace(key, "[redacted]")
            if len(key) > 8:
                text = text.replace(key[:8], "[redacted]")
        return text

    def _error_for(self, status: int, body: bytes, headers: Any) -> EndpointError:
        message = ""
        try:
            err: ErrorBody = error_decoder.decode(body)
            if isinstance(err.error, str):
                message = err.error
            elif err.error is not None:
                message = err.error.message
        except msgspec.DecodeError:
            message = body[:200].decode("utf-8", "replace")
        message = self._redact(message.strip())[:300] or "no error message"
        kw: dict[str, Any] = {"endpoint": self.name, "status": status}
        if status == 429:
            return RateLimited(message, retry_after=_retry_after(headers), **kw)
        if status in (401, 403):
            return AuthError(
                message + "; check the API key in the endpoint's api_key_env variable", **kw
            )
        if status >= 500 and _REQUEST_VALIDATION.match(message):
            return BadRequest(message, **kw)
        if status == 408 or status >= 500 or status == 409:
            return ServerError(message, retry_after=_retry_after(headers), **kw)
        return BadRequest(message, **kw)

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        """Send one chat-completions request; stream if ``body["stream"]`` is true.

        Raises:
            RetryableError: 429, 5xx, timeouts, lost connections, malformed or cut bodies.
            FatalEndpointError: 4xx other than 429.
        """
        session = self._open()
        payload = encoder.encode(body)
        start = self._clock()
        with _map_errors(self.name):
            async with session.post(self._url, data=payload) as resp:
                if not self.simulated and SIMULATED_HEADER in resp.headers:
                    self.simulated = True
                if resp.status != 200:
                    raw = await resp.read()
                    raise self._error_for(resp.status, raw, resp.headers)
                rate = parse_rate_headers(resp.headers)
                if body.get("stream"):
                    return await self._read_stream(resp, start, rate)
                raw = await resp.read()
                completion = completion_decoder.decode(raw)
        if not completion.choices:
            raise MalformedResponse("response has no choices", endpoint=self.name)
        texts = [c.message.content or "" for c in completion.choices]
        reasons = [c.finish_reason for c in completion.choices]
        return ChatResult(
            texts=texts,
            finish_reasons=reasons,
            usage=completion.usage,
            rate=rate,
            latency=self._clock() - start,
        )

    async def _read_stream(
        self, resp: aiohttp.ClientResponse, start: float, rate: RateInfo | None
    ) -> ChatResult:
        acc = SseAccumulator()
        ttft: float | None = None
        async for data in resp.content.iter_any():
            if acc.feed(data) and ttft is None:
                ttft = self._clock() - start
            if acc.done:
                break
        else:
            acc.finish()
        if not acc.done:
            raise MalformedResponse("stream ended before [DONE]", endpoint=self.name)
        indices = acc.indices()
        if not indices:
            raise MalformedResponse("stream carried no choices", endpoint=self.name)
        return ChatResult(
            texts=["".join(acc.parts.get(i, ())) for i in indices],
            finish_reasons=[acc.reasons.get(i) for i in indices],
            usage=acc.usage,
            rate=rate,
            latency=self._clock() - start,
            ttft=ttft,
        )

    async def models(self) -> list[str]:
        """List the model ids the endpoint serves (``GET /models``)."""
        session = self._open()
        with _map_errors(self.name):
            async with session.get(self.base_url + "/models") as resp:
                if SIMULATED_HEADER in resp.headers:
                    self.simulated = True
                raw = await resp.read()
                if resp.status != 200:
                    raise self._error_for(resp.status, raw, resp.headers)
        try:
            data = msgspec.json.decode(raw)
            return [str(m["id"]) for m in data.get("data", [])]
        except (msgspec.DecodeError, TypeError, KeyError, AttributeError) as exc:
            raise MalformedResponse("undecodable /models body", endpoint=self.name) from exc

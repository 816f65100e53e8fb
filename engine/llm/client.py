"""OpenAI-compatible chat client on aiohttp: one session per endpoint, one attempt per call.

The client sends a request, reads the body (whole or as an SSE stream), decodes it with
msgspec into the view Structs of :mod:`engine.llm.wire` and maps every foreign failure
into the error tree of :mod:`engine.errors` right here, at the boundary. Retrying,
pacing and caching are the caller's and the gate's business, not this module's.

What a server sends is bounded as it is read, not after: a body (decompressed, if the
server compressed it) over ``max_response_bytes`` ends the call with
:class:`~engine.errors.ResponseTooLarge`; error bodies are read up to 64 KiB. The client
decompresses gzip/deflate itself, in steps that never produce more than the limit, so a
small compressed "bomb" costs at most the limit in memory. Every message it builds from
what a server sent is redacted (the run's keys) before it is cut to length.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp.http import SERVER_SOFTWARE

from ..clock import Clock, monotonic
from ..errors import (
    AuthError,
    BadRequest,
    EndpointError,
    MalformedResponse,
    RateLimited,
    ServerError,
)
from ..redaction import Redactor
from .http import (
    ERROR_BODY_BYTES,
    MESSAGE_CHARS,
    Body,
    Readable,
    decoded,
    map_errors,
    read_all,
    retry_after,
)
from .http11 import Pool
from .wire import (
    ErrorBody,
    HeaderLookup,
    RateInfo,
    SseAccumulator,
    Usage,
    completion_decoder,
    encoder,
    error_decoder,
    parse_rate_headers,
)

__all__ = ("DEFAULT_MAX_RESPONSE_BYTES", "SIMULATED_HEADER", "ChatResult", "Client")

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""Largest response body accepted by default (decompressed): 8 MiB."""


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


# A request the server's own validation rejected, sent back as HTTP 500 by servers that
# wrap every exception (llama-cpp-python reports pydantic's "1 validation error: ...
# 'loc': ('body', 'response_format', 'type') ..." that way): the request is wrong, so
# another attempt cannot help.
_REQUEST_VALIDATION = re.compile(r"^\d+ validation errors?\b.*'loc': \('body'", re.S)


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
        max_response_bytes: largest body accepted, decompressed (see the module docs).
        redactor: secrets to hide in error messages (the key is always added).
        clock: monotonic time for latency measurements.
        stream_transport: send streamed calls through :mod:`engine.llm.http11` (its own
            keep-alive pool); False sends them through aiohttp like the others.
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
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        redactor: Redactor | None = None,
        clock: Clock = monotonic,
        stream_transport: bool = True,
    ) -> None:
        if max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be >= 1 (got {max_response_bytes})")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._url = self.base_url + "/chat/completions"
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._max_connections = max_connections
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            # Decompressed here, within the byte limit (aiohttp's own decompression is off).
            "Accept-Encoding": "gzip, deflate",
        }
        if headers:
            self._headers.update(headers)
        self._max_bytes = max_response_bytes
        self._redactor = redactor if redactor is not None else Redactor()
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
            self._redactor.add(api_key)
        self._clock = clock
        self._stream_transport = stream_transport
        self._session: aiohttp.ClientSession | None = None
        self._pool: Pool | None = None
        self._stream_head = b""
        self.simulated = False  # set once a response carries the simulated endpoint's header
        # Called after each streamed read that carried content text, with the stream's
        # accumulator and the time (``synth-engine bench`` notes token arrivals with it).
        self.on_stream_content: Callable[[SseAccumulator, float], None] | None = None

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
                connector=connector,
                timeout=self._timeout,
                headers=self._headers,
                auto_decompress=False,
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _stream_pool(self) -> Pool:
        if self._pool is None:
            pool = Pool(
                self.name,
                self._url,
                limit=self._max_connections,
                connect_timeout_s=self._connect_timeout_s,
                redact=self._redactor.text,
            )
            parts = urlsplit(self._url)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            headers = {"Host": pool.authority, "User-Agent": SERVER_SOFTWARE, **self._headers}
            for name, value in headers.items():
                if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                    raise BadRequest(
                        f"the {name} header holds a line break"
                        + (
                            " (check the API key's environment variable)"
                            if name == "Authorization"
                            else ""
                        ),
                        endpoint=self.name,
                    )
            lines = [f"POST {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
            self._stream_head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
            self._pool = pool
        return self._pool

    def _message(self, body: bytes) -> str:
        """A server's error message from ``body``: redacted first, then cut to length."""
        message = ""
        try:
            err: ErrorBody = error_decoder.decode(body)
            if isinstance(err.error, str):
                message = err.error
            elif err.error is not None:
                message = err.error.message
        except msgspec.DecodeError:
            message = body.decode("utf-8", "replace")
        return self._redactor.text(message.strip())[:MESSAGE_CHARS]

    async def _error_body(self, resp: aiohttp.ClientResponse) -> bytes:
        """Up to 64 KiB of an error response's body (decoded); the rest is not read."""
        return await self._error_body_of(resp.content, resp.headers)

    async def _error_body_of(self, content: Readable, headers: HeaderLookup) -> bytes:
        """:meth:`_error_body` of any body being read, with its headers."""
        body = Body(
            self.name,
            headers.get("Content-Encoding") or "",
            min(self._max_bytes, ERROR_BODY_BYTES),
            truncate=True,
        )
        return await read_all(content, body, known_length=None)

    def _error_for(self, status: int, body: bytes, headers: HeaderLookup) -> EndpointError:
        message = self._message(body) or "no error message"
        kw: dict[str, Any] = {"endpoint": self.name, "status": status}
        if status == 429:
            return RateLimited(message, retry_after=retry_after(headers), **kw)
        if status in (401, 403):
            return AuthError(
                message + "; check the API key in the endpoint's api_key_env variable", **kw
            )
        if status >= 500 and _REQUEST_VALIDATION.match(message):
            return BadRequest(message, **kw)
        if status == 408 or status >= 500 or status == 409:
            return ServerError(message, retry_after=retry_after(headers), **kw)
        return BadRequest(message, **kw)

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        """Send one chat-completions request; stream if ``body["stream"]`` is true.

        Raises:
            RetryableError: 429, 5xx, timeouts, lost connections, malformed or cut bodies.
            FatalEndpointError: 4xx other than 429.
        """
        payload = encoder.encode(body)
        start = self._clock()
        if self._stream_transport and body.get("stream"):
            return await self._chat_streamed(payload, start)
        session = self._open()
        with map_errors(self.name, self._redactor):
            async with session.post(self._url, data=payload) as resp:
                headers = resp.headers
                if not self.simulated and SIMULATED_HEADER in headers:
                    self.simulated = True
                if resp.status != 200:
                    error_body = await self._error_body(resp)
                    raise self._error_for(resp.status, error_body, headers)
                rate = parse_rate_headers(headers)
                reader = Body(self.name, headers.get("Content-Encoding", ""), self._max_bytes)
                if body.get("stream"):
                    return await self._read_stream(resp.content, reader, start, rate)
                raw = await read_all(resp.content, reader, known_length=resp.content_length)
                completion = completion_decoder.decode(raw)
        if not completion.choices:
            if completion.error is not None:
                # A 200 that carries an error object (some proxies and servers do this).
                raise MalformedResponse(
                    f"HTTP 200 with an error: {self._message(raw) or 'no error message'}",
                    endpoint=self.name,
                )
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

    async def _chat_streamed(self, payload: bytes, start: float) -> ChatResult:
        """A streamed call through :mod:`engine.llm.http11` (same errors, limits and hook)."""
        with map_errors(self.name, self._redactor):
            pool = self._stream_pool()
            request = b"%b%d\r\n\r\n%b" % (self._stream_head, len(payload), payload)
            async with asyncio.timeout(self._timeout_s):
                resp = await pool.request(request)
                try:
                    headers = resp.headers
                    if not self.simulated and SIMULATED_HEADER in headers:
                        self.simulated = True
                    if resp.status != 200:
                        error_body = await self._error_body_of(resp, headers)
                        raise self._error_for(resp.status, error_body, headers)
                    rate = parse_rate_headers(headers)
                    reader = Body(self.name, headers.get("Content-Encoding", ""), self._max_bytes)
                    return await self._read_stream(resp, reader, start, rate)
                finally:
                    resp.release()

    async def _read_stream(
        self, content: Readable, reader: Body, start: float, rate: RateInfo | None
    ) -> ChatResult:
        acc = SseAccumulator()
        ttft: float | None = None
        hook = self.on_stream_content
        if reader.plain:
            # The common case, kept to one loop: count the bytes, feed the reads.
            limit, seen = self._max_bytes, 0
            while data := await content.readany():
                seen += len(data)
                if seen > limit:
                    raise reader.too_large()
                if acc.feed(data):
                    if ttft is None:
                        ttft = self._clock() - start
                    if hook is not None:
                        hook(acc, self._clock())
                if acc.done:
                    break
            else:
                acc.finish()
        else:
            async for data in decoded(content, reader):
                if acc.feed(data):
                    if ttft is None:
                        ttft = self._clock() - start
                    if hook is not None:
                        hook(acc, self._clock())
                if acc.done:
                    break
            else:
                acc.finish()
        if acc.error is not None:
            raise MalformedResponse(
                f"stream carried an error: {self._redactor.text(acc.error)[:MESSAGE_CHARS]}",
                endpoint=self.name,
            )
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

    async def models(self, base_url: str | None = None) -> list[str]:
        """List the model ids the endpoint serves (``GET /models``).

        Args:
            base_url: ask this base URL instead of the endpoint's (with the same key and
                limits), e.g. to check whether the endpoint answers under ``/v1``.
        """
        session = self._open()
        base = (base_url or self.base_url).rstrip("/")
        with map_errors(self.name, self._redactor):
            async with session.get(base + "/models") as resp:
                if SIMULATED_HEADER in resp.headers:
                    self.simulated = True
                if resp.status != 200:
                    error_body = await self._error_body(resp)
                    raise self._error_for(resp.status, error_body, resp.headers)
                reader = Body(self.name, resp.headers.get("Content-Encoding", ""), self._max_bytes)
                raw = await read_all(resp.content, reader, known_length=resp.content_length)
        try:
            data = msgspec.json.decode(raw)
            return [str(m["id"]) for m in data.get("data", [])]
        except (msgspec.DecodeError, TypeError, KeyError, AttributeError) as exc:
            raise MalformedResponse("undecodable /models body", endpoint=self.name) from exc

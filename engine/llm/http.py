"""HTTP plumbing shared by the transports: bounded body reading, error mapping, Retry-After.

What a server sends is bounded as it is read, not after: a body (decompressed, if the
server compressed it) over the limit ends the call with
:class:`~engine.errors.ResponseTooLarge`; error bodies are read up to 64 KiB. Bodies are
decompressed here (gzip/deflate), in steps that never produce more than the limit, so a
small compressed "bomb" costs at most the limit in memory. Every message built from what
a server sent is redacted before it is cut to length.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import AsyncIterator, Iterator
from email.utils import parsedate_to_datetime
from time import time as wall_time
from typing import Any, Protocol

import aiohttp
import msgspec

from ..errors import ConnectionLost, EndpointError, MalformedResponse, ResponseTooLarge, Timeout
from ..redaction import Redactor
from .wire import HeaderLookup

__all__ = (
    "ERROR_BODY_BYTES",
    "MESSAGE_CHARS",
    "Body",
    "Readable",
    "decoded",
    "map_errors",
    "read_all",
    "retry_after",
)

ERROR_BODY_BYTES = 64 * 1024  # an error body is read up to this, the rest ignored
MESSAGE_CHARS = 300  # an error message from a server is cut to this (after redaction)


class Readable(Protocol):
    """A response body being read: aiohttp's ``StreamReader`` or an ``http11.Response``."""

    async def read(self) -> bytes:
        """The rest of the body."""
        ...

    async def readany(self) -> bytes:
        """What arrived since the last read (waits for some); b"" at the end."""
        ...


def _seconds(text: str, scale: float = 1.0) -> float | None:
    """A finite, non-negative number of seconds, else None (ignored)."""
    try:
        value = float(text) * scale
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


def retry_after(headers: HeaderLookup) -> float | None:
    """The server's Retry-After in seconds: ``retry-after-ms``, seconds or an HTTP date.

    A value that is not a finite number (``inf``, ``nan``, garbage) is ignored; a huge
    finite one is the gate's to judge (``max_wait_s``).
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        found = _seconds(ms, 0.001)
        if found is not None:
            return found
    value = headers.get("retry-after")
    if value is None:
        return None
    found = _seconds(value)
    if found is None:
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            found = max(0.0, parsedate_to_datetime(value).timestamp() - wall_time())
    return found


@contextlib.contextmanager
def map_errors(endpoint: str, redact: Redactor) -> Iterator[None]:
    """Map aiohttp/asyncio/msgspec failures into the engine's tree (subclasses first).

    A foreign error's text may quote what the server sent (an over-long header echoing
    ``Authorization``), so each message is redacted, then cut to length.
    """

    def text(value: object) -> str:
        return redact.text(str(value))[:MESSAGE_CHARS]

    try:
        yield
    except EndpointError:
        raise
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise Timeout(f"timed out ({type(exc).__name__})", endpoint=endpoint) from exc
    except aiohttp.ClientPayloadError as exc:
        raise ConnectionLost(f"body cut short: {text(exc)}", endpoint=endpoint) from exc
    except aiohttp.ClientConnectorError as exc:
        raise ConnectionLost(f"cannot connect: {text(exc.os_error)}", endpoint=endpoint) from exc
    except aiohttp.ClientConnectionError as exc:
        raise ConnectionLost(
            f"connection lost: {type(exc).__name__} {text(exc)}", endpoint=endpoint
        ) from exc
    except aiohttp.ClientResponseError as exc:
        raise MalformedResponse(f"bad response: {text(exc.message)}", endpoint=endpoint) from exc
    except msgspec.DecodeError as exc:
        raise MalformedResponse(f"undecodable body: {text(exc)}", endpoint=endpoint) from exc
    except zlib.error as exc:
        raise MalformedResponse(
            f"undecodable compressed body: {text(exc)}", endpoint=endpoint
        ) from exc


class Body:
    """Reads one response body within a byte limit, decompressing gzip/deflate itself.

    Both what arrives on the wire and what it decompresses to are bounded by ``limit``:
    each decompression step asks zlib for no more than the room left, so memory never
    exceeds the limit plus one network read, whatever the compression ratio.
    """

    __slots__ = ("_decoder", "_limit", "_name", "_out", "_raw", "_truncate")

    def __init__(self, name: str, encoding: str, limit: int, *, truncate: bool = False) -> None:
        self._name = name
        self._limit = limit
        self._truncate = truncate
        self._raw = 0
        self._out = 0
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._decoder: Any = None
        elif encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header
        else:
            raise MalformedResponse(
                f"unsupported Content-Encoding {encoding[:40]!r} (asked for gzip or deflate)",
                endpoint=name,
            )

    def too_large(self) -> ResponseTooLarge:
        return ResponseTooLarge(
            f"response body over the {self._limit:,}-byte limit (max_response_bytes)",
            endpoint=self._name,
        )

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of one network read, in bounded pieces.

        Raises:
            ResponseTooLarge: the body (on the wire or decoded) went over the limit
                (unless reading with ``truncate``, which stops yielding instead).
        """
        self._raw += len(data)
        if self._raw > self._limit and not self._truncate:
            raise self.too_large()
        decoder = self._decoder
        if decoder is None:
            yield from self._count(data)
            return
        while data:
            room = self._limit - self._out + 1
            if room <= 0:
                return
            piece = decoder.decompress(data, room)
            data = decoder.unconsumed_tail
            if piece:
                yield from self._count(piece)

    def _count(self, piece: bytes) -> Iterator[bytes]:
        room = self._limit - self._out
        self._out += len(piece)
        if self._out > self._limit:
            if not self._truncate:
                raise self.too_large()
            piece = piece[: max(0, room)]
        if piece:
            yield piece

    @property
    def plain(self) -> bool:
        """Whether the body is not compressed (read as it arrives)."""
        return self._decoder is None

    def full(self) -> bool:
        """Whether a truncating read has all it will keep."""
        return self._out >= self._limit or self._raw >= self._limit


async def read_all(content: Readable, body: Body, *, known_length: int | None) -> bytes:
    """The whole (bounded, decoded) body."""
    if known_length is not None and known_length > body._limit and not body._truncate:
        raise body.too_large()
    if body._decoder is None and known_length is not None and known_length <= body._limit:
        # The common case: the length is known and within the limit; aiohttp reads
        # exactly that many bytes, in one buffer.
        return await content.read()
    buf = bytearray()
    while data := await content.readany():
        for piece in body.pieces(data):
            buf += piece
        if body._truncate and body.full():
            break
    return bytes(buf)


async def decoded(content: Readable, body: Body) -> AsyncIterator[bytes]:
    """The decoded pieces of a streamed body, as they arrive (bounded by ``body``)."""
    while data := await content.readany():
        for piece in body.pieces(data):
            yield piece

"""Chunked event streams read a network read at a time, below aiohttp's per-chunk body stream.

A streamed chat completion is an SSE body sent with ``Transfer-Encoding: chunked``, and
servers send each line or event as its own HTTP chunk (nginx sends every ``echo`` of an
event, the ``data:`` line and each blank line, as one chunk: 105 chunks for 32 tokens).
aiohttp's C parser hands each chunk to the body stream separately, and the stream pays
Python-level work per chunk on both sides (``feed_data`` and the chunk-split bookkeeping
as it arrives; as it is read, a ``_read_nowait_chunk`` that resumes the transport and
re-enters ``data_received``): about 6 us per chunk, 650 us of the 980 us of client CPU a
streamed request cost against nginx, three times a plain one.

:class:`ChunkDecoder` takes the chunk framing off a whole network read in one loop (a
regex match and a slice per chunk, ~0.5 us) and :class:`EventStreamHandler`, aiohttp's
connection protocol with one change, feeds the result to the same body stream as one
piece per read. Everything else stays aiohttp's: the status line and headers are parsed
by its parser (the handler hands it exactly the bytes of the head, found by their blank
line, so no body byte reaches it), and the connection pool, TLS, timeouts, flow control
(the body stream pauses the transport above its high-water mark), keep-alive, the
response object and every error it raises. It takes over only a response with
``Transfer-Encoding: chunked`` and ``Content-Type: text/event-stream`` whose head ended
with CRLF CRLF; anything else goes to aiohttp's parser untouched. At the terminating
chunk it ends the body, so the connection goes back to the pool; a connection lost
mid-body ends it with aiohttp's own ``ClientPayloadError`` (its parser, which saw only
the head, reports the message incomplete), and a framing error does the same at once.

Why not ``ResponseHandler.set_parser`` (the hook aiohttp's WebSocket upgrade uses)? It
can only be installed once the response object exists, and by then aiohttp's parser has
consumed the whole read that carried the head, usually with the entire body (nginx sends
the 6.5 KB of a 32-token stream in one read), possibly stopping mid-chunk in a state it
does not expose. The handler is installed as the connector's protocol factory
(:func:`install`) instead: aiohttp's private ``_factory`` attribute, present since 3.0;
where it is missing the client keeps aiohttp's own path (``install`` returns False).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import aiohttp
from aiohttp.client_exceptions import ClientPayloadError
from aiohttp.client_proto import ResponseHandler
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

__all__ = ("ChunkDecoder", "ChunkError", "EventStreamHandler", "install")

# chunk-size [BWS] [; chunk-ext] CRLF, with the leniencies aiohttp's parser allows for
# responses (a bare LF, spaces after the size). 16 hex digits: sizes up to 2**64 - 1.
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")
MAX_LINE = 8190  # a chunk-size line or trailer field (aiohttp's max_line_size)
MAX_TRAILERS = 64 * 1024  # the whole trailer section
MAX_HEAD = 1024 * 1024  # beyond this the head is left to aiohttp's parser and its limits

_SIZE, _DATA, _CRLF, _TRAILER, _DONE = range(5)  # ChunkDecoder's states
_HEAD, _BODY, _AIOHTTP = range(3)  # EventStreamHandler's: watching the head, reading, not


class ChunkError(ValueError):
    """The chunk framing of a body is malformed or over a size limit."""


class ChunkDecoder:
    """Takes the ``Transfer-Encoding: chunked`` framing off a body, a network read at a time.

    :meth:`feed` returns the body bytes of one read (the framing removed), joined into one
    piece. Chunk data is never buffered: a chunk cut by a read boundary is returned in
    parts. Only an incomplete framing element (a size line, the line end after a chunk, a
    trailer line) waits for the next read, bounded by :data:`MAX_LINE`, so any split of a
    body costs linear time. After the last chunk and the trailer section, :attr:`done` is
    set and :attr:`tail` holds whatever followed the message in the read.

    Raises:
        ChunkError: malformed framing, or a size line or trailers over their limits.
    """

    __slots__ = ("_left", "_pending", "_state", "_trailers", "done", "tail")

    def __init__(self) -> None:
        self._state = _SIZE
        self._left = 0  # bytes of the current chunk still to come
        self._pending = b""  # an incomplete framing element
        self._trailers = 0
        self.done = False
        self.tail = b""

    def feed(self, data: bytes) -> bytes:
        """The body bytes carried by one read (possibly empty)."""
        if self._pending:
            data = self._pending + data
            self._pending = b""
        state, left, pos, n = self._state, self._left, 0, len(data)
        out: list[bytes] = []
        match = _SIZE_LINE.match
        while pos < n:
            if state == _DATA:
                end = pos + left
                if end > n:
                    out.append(data[pos:] if pos else data)
                    left -= n - pos
                    pos = n
                    break
                out.append(data[pos:end])
                pos, left, state = end, 0, _CRLF
            if state == _CRLF:
                if data.startswith(b"\r\n", pos):
                    pos += 2
                elif data.startswith(b"\n", pos):
                    pos += 1
                elif data[pos:] == b"\r":
                    self._pending = b"\r"
                    pos = n
                    break
                elif pos < n:
                    raise ChunkError("chunk data not followed by a line end")
                else:
                    break
                state = _SIZE
                continue
            if state == _SIZE:
                found = match(data, pos)
                if found is None:
                    if data.find(b"\n", pos) >= 0:
                        line = data[pos : data.find(b"\n", pos)][:40]
                        raise ChunkError(f"malformed chunk size line {line!r}")
                    if n - pos > MAX_LINE:
                        raise ChunkError(f"chunk size line over {MAX_LINE} bytes")
                    self._pending = data[pos:]
                    pos = n
                    break
                left = int(found.group(1), 16)
                pos = found.end()
                state = _DATA if left else _TRAILER
                continue
            if state == _TRAILER:
                eol = data.find(b"\n", pos)
                if eol < 0:
                    if n - pos > MAX_LINE:
                        raise ChunkError(f"trailer line over {MAX_LINE} bytes")
                    self._pending = data[pos:]
                    pos = n
                    break
                if eol == pos or (eol == pos + 1 and data[pos] == 13):  # the blank line
                    self.done = True
                    self.tail = data[eol + 1 :]
                    state = _DONE
                    break
                self._trailers += eol + 1 - pos
                if self._trailers > MAX_TRAILERS:
                    raise ChunkError(f"trailer section over {MAX_TRAILERS} bytes")
                pos = eol + 1
                continue
            raise ChunkError("data after the end of the body")  # _DONE: the caller stops
        self._state, self._left = state, left
        if len(out) == 1:
            return out[0]
        return b"".join(out)


class EventStreamHandler(ResponseHandler):
    """aiohttp's connection protocol, reading chunked event streams with :class:`ChunkDecoder`.

    Per response (aiohttp calls ``set_response_params`` before each request): until the
    head's blank line is seen, reads go to aiohttp's parser, the read that ends the head
    cut right after it. If the response is a chunked ``text/event-stream`` with a body,
    the rest of that read and every later one go through a :class:`ChunkDecoder` into the
    response's body stream, one piece per read, until the terminating chunk ends it.
    """

    _mode = _AIOHTTP  # until set_response_params
    _decoder: ChunkDecoder | None = None
    _body: StreamReader | None = None
    _message: Any = None
    _head_seen = 0
    _head_end = b""

    def set_response_params(self, *args: Any, **kwargs: Any) -> None:
        """As aiohttp's, and start watching for the next response's head."""
        self._mode = _HEAD
        self._head_seen, self._head_end = 0, b""
        self._decoder, self._body, self._message = None, None, None
        super().set_response_params(*args, **kwargs)

    def feed_data(self, data: Any, size: int = 0) -> None:
        """As aiohttp's (a parsed response for the reader); notes it for the check."""
        self._message = data
        super().feed_data(data, size)

    def data_received(self, data: bytes) -> None:
        """Route one read: the head to aiohttp's parser, an event stream's body here."""
        mode = self._mode
        if mode == _BODY:
            self._body_received(data)
        elif mode == _HEAD and data:
            self._head_received(data)
        else:
            super().data_received(data)

    def _head_received(self, data: bytes) -> None:
        window = self._head_end + data
        end = window.find(b"\r\n\r\n")
        if end < 0:
            self._head_seen += len(data)
            self._head_end = window[-3:]
            if self._head_seen > MAX_HEAD:
                self._mode = _AIOHTTP
            self._message = None
            super().data_received(data)
            if self._message is not None:  # aiohttp found a head (bare LF endings): its path
                self._mode = _AIOHTTP
            return
        cut = end + 4 - len(self._head_end)
        self._head_seen, self._head_end = 0, b""
        self._message = None
        super().data_received(data[:cut])
        rest = data[cut:]
        parsed = self._message
        if parsed is None or self.exception() is not None:
            self._mode = _AIOHTTP  # a malformed head: aiohttp has reported it
            return
        message, payload = parsed
        if 100 <= message.code < 200 and message.code != 101:
            if rest:  # an interim response: the real head follows
                self._head_received(rest)
            return
        if self._takes(message, payload):
            self._mode = _BODY
            self._decoder = ChunkDecoder()
            self._body = payload
            if rest:
                self._body_received(rest)
        else:
            self._mode = _AIOHTTP
            if rest:
                super().data_received(rest)

    def _takes(self, message: Any, payload: Any) -> bool:
        """Whether the response is a chunked event stream this handler reads."""
        if not getattr(message, "chunked", False) or payload is EMPTY_PAYLOAD:
            return False
        if type(payload) is not StreamReader or payload.is_eof() or self._payload is not payload:
            return False
        headers = message.headers
        codings = headers.getall("Transfer-Encoding", ())
        if len(codings) != 1 or codings[0].strip().lower() != "chunked":
            return False
        media = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        return bool(media == "text/event-stream")

    def _body_received(self, data: bytes) -> None:
        decoder, body = self._decoder, self._body
        assert decoder is not None and body is not None
        if data:
            self._reschedule_timeout()
        try:
            piece = decoder.feed(data)
        except ChunkError as exc:
            self._mode = _AIOHTTP
            error = ClientPayloadError(f"Response payload is not completed: {exc}")
            body.set_exception(error)
            self.set_exception(error)
            if self.transport is not None:
                self.transport.close()
            return
        if piece:
            body.feed_data(piece)
        if decoder.done:
            # aiohttp's parser saw only the head and would call the body incomplete when
            # the connection closes; the body is complete, so it goes (a new one comes
            # with the next request). Bytes after the body are kept, which makes aiohttp
            # close the connection instead of reusing it.
            self._mode = _AIOHTTP
            self._parser = None
            self._decoder = self._body = None
            if decoder.tail:
                super().data_received(decoder.tail)
            body.feed_eof()  # the response releases the connection to the pool


def install(connector: aiohttp.BaseConnector) -> bool:
    """Make ``connector`` create :class:`EventStreamHandler` protocols; False if it cannot.

    It replaces the connector's protocol factory (``functools.partial(ResponseHandler,
    loop=...)`` in aiohttp 3.x); with any other factory it changes nothing.
    """
    factory = getattr(connector, "_factory", None)
    if not isinstance(factory, functools.partial) or factory.func is not ResponseHandler:
        return False
    connector._factory = functools.partial(  # type: ignore[assignment]
        EventStreamHandler, *factory.args, **factory.keywords
    )
    return True

"""The chunked event-stream reader against aiohttp's own parser, on the same bytes.

Each test builds a raw HTTP/1.1 response (status line, headers, an SSE body in random HTTP
chunks), cuts it into random network reads and feeds them to two connection protocols
over a fake transport (the lowest seam): aiohttp's ``ResponseHandler`` and
:class:`~engine.llm.chunked.EventStreamHandler`. Both must hand the response reader the
same message, the same body bytes and the same events, and fail alike.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import pytest
from aiohttp.client_proto import ResponseHandler
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.llm.chunked import ChunkDecoder, ChunkError, EventStreamHandler, install
from engine.llm.wire import SseAccumulator


class FakeTransport(asyncio.Transport):
    """Enough of a transport for a client protocol: writes dropped, close noted."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass


def _event(i: int, text: str) -> bytes:
    return (
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
        b'"delta":{"content":"' + text.encode() + b'"},"finish_reason":null}]}\n\n'
    )


def sse_body(words: list[str]) -> bytes:
    """An SSE body: one event per word, a finish event, usage, ``[DONE]``."""
    out = [_event(i, w) for i, w in enumerate(words)]
    out.append(
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":'
        + str(len(words)).encode()
        + b',"total_tokens":9}}\n\ndata: [DONE]\n\n'
    )
    return b"".join(out)


def chunked(body: bytes, cuts: list[int], *, upper: bool = False, ext: bool = False) -> bytes:
    """``body`` in HTTP chunks ending at the offsets ``cuts``, then the last chunk."""
    out, start = [], 0
    for end in [*sorted({c for c in cuts if 0 < c < len(body)}), len(body)]:
        size = f"{end - start:X}" if upper else f"{end - start:x}"
        out.append(size.encode() + (b";x=1" if ext else b"") + b"\r\n" + body[start:end] + b"\r\n")
        start = end
    return b"".join(out) + b"0\r\n\r\n"


HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: test\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
)


async def feed(
    protocol_class: type[ResponseHandler], reads: list[bytes], *, close: bool = False
) -> tuple[Any, bytes, BaseException | None, ResponseHandler]:
    """Feed ``reads`` as a session would; the message, the body read back, its error."""
    loop = asyncio.get_running_loop()
    protocol = protocol_class(loop)
    protocol.connection_made(FakeTransport())
    protocol.set_response_params(auto_decompress=False)
    for data in reads:
        protocol.data_received(data)
    if close:
        protocol.connection_lost(None)
    try:
        message, payload = await asyncio.wait_for(protocol.read(), 1.0)
        while 100 <= message.code < 200:  # interim responses, skipped as aiohttp's reader does
            message, payload = await asyncio.wait_for(protocol.read(), 1.0)
    except Exception as exc:  # a malformed head: both report it
        return None, b"", exc, protocol
    body = bytearray()
    error: BaseException | None = None
    try:
        async with asyncio.timeout(1.0):
            async for data in payload.iter_any():
                body += data
    except (aiohttp.ClientPayloadError, TimeoutError) as exc:
        error = exc
    return message, bytes(body), error, protocol


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted({c for c in cuts if 0 < c < len(raw)}), len(raw)]
    return [raw[a:b] for a, b in zip(points, points[1:], strict=False)]


def events(body: bytes, reads: list[bytes] | None = None) -> tuple[list[str], Any]:
    acc = SseAccumulator()
    for data in reads or [body]:
        acc.feed(data)
    acc.finish()
    return ["".join(acc.parts.get(i, ())) for i in acc.indices()], acc.usage


@settings(max_examples=150, deadline=None)
@given(
    words=st.lists(st.text("abcxyz ", min_size=1, max_size=8), min_size=1, max_size=40),
    seed=st.integers(0, 2**32 - 1),
    chunk_cuts=st.integers(0, 120),
    read_cuts=st.integers(0, 60),
    upper=st.booleans(),
    ext=st.booleans(),
)
async def test_any_chunking_and_reads_give_what_aiohttp_gives(
    words: list[str], seed: int, chunk_cuts: int, read_cuts: int, upper: bool, ext: bool
) -> None:
    rng = random.Random(seed)
    body = sse_body(words)
    raw = HEAD + chunked(
        body, [rng.randrange(len(body)) for _ in range(chunk_cuts)], upper=upper, ext=ext
    )
    reads = split(raw, [rng.randrange(len(raw)) for _ in range(read_cuts)])
    ours = await feed(EventStreamHandler, reads)
    theirs = await feed(ResponseHandler, reads)
    assert ours[2] is None and theirs[2] is None
    assert ours[1] == theirs[1] == body
    assert ours[0].code == theirs[0].code == 200 and ours[0].headers == theirs[0].headers
    assert events(ours[1]) == events(theirs[1]) == (words_joined(words), events(body)[1])
    # The connection can be reused: nothing pending, body at its end.
    assert not ours[3].should_close and not theirs[3].should_close
    assert ours[3]._parser is None  # the body was read here, not by aiohttp's parser


def words_joined(words: list[str]) -> list[str]:
    return ["".join(words)]


async def test_one_piece_per_network_read_not_per_chunk() -> None:
    body = sse_body(["w"] * 32)
    raw = HEAD + chunked(body, list(range(1, len(body), 3)))  # a chunk every 3 bytes
    pieces = {}
    for cls in (EventStreamHandler, ResponseHandler):
        protocol = cls(asyncio.get_running_loop())
        protocol.connection_made(FakeTransport())
        protocol.set_response_params(auto_decompress=False)
        protocol.data_received(raw)
        _, payload = await protocol.read()
        assert payload.is_eof()
        pieces[cls] = len(payload._buffer)  # what the reader will take, one by one
        assert payload.read_nowait(-1) == body
    assert pieces[EventStreamHandler] == 1
    assert pieces[ResponseHandler] > len(body) // 3


@pytest.mark.parametrize("cut", [10, 200, -7, -3, -1])
async def test_a_connection_lost_mid_body_is_a_payload_error_like_aiohttp(cut: int) -> None:
    body = sse_body(["a", "b", "c"])
    raw = HEAD + chunked(body, [20, 60, 100])
    truncated = raw[: len(HEAD) + cut] if cut > 0 else raw[:cut]
    ours = await feed(EventStreamHandler, [truncated], close=True)
    theirs = await feed(ResponseHandler, [truncated], close=True)
    assert isinstance(ours[2], aiohttp.ClientPayloadError), ours
    assert isinstance(theirs[2], aiohttp.ClientPayloadError), theirs
    assert ours[1] == theirs[1]


@pytest.mark.parametrize(
    "bad",
    [
        b"zz\r\nabc\r\n0\r\n\r\n",  # not a size
        b"3\r\nabcX\r\n0\r\n\r\n",  # no line end after the data
        b"12345678901234567\r\n",  # 17 hex digits
        b"3" + b" " * 9000,  # a size line that never ends
    ],
)
async def test_malformed_framing_fails_the_body_and_closes(bad: bytes) -> None:
    message, body, error, protocol = await feed(EventStreamHandler, [HEAD + bad])
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert protocol.should_close and protocol.transport is not None
    assert protocol.transport.is_closing()


async def test_other_responses_are_left_to_aiohttp() -> None:
    json_head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    plain = b'{"choices":[]}'
    length_head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Content-Length: " + str(len(plain)).encode() + b"\r\n\r\n"
    )
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    lf_only = b"HTTP/1.1 200 OK\nContent-Type: text/event-stream\nTransfer-Encoding: chunked\n\n"
    cases = [
        [json_head + chunked(plain, [3])],
        [length_head + plain],
        [interim + HEAD + chunked(plain, [5])],
        [lf_only + chunked(plain, [5])],
        [HEAD[:30], HEAD[30:-1], HEAD[-1:] + chunked(plain, [5])[:4], chunked(plain, [5])[4:]],
    ]
    for reads in cases:
        ours = await feed(EventStreamHandler, reads)
        theirs = await feed(ResponseHandler, reads)
        assert ours[1] == theirs[1] == plain, reads
        assert ours[2] is None and theirs[2] is None


async def test_bytes_after_the_body_close_the_connection() -> None:
    raw = HEAD + chunked(b"data: x\n\n", []) + b"HTTP/1.1 200 OK\r\n"
    message, body, error, protocol = await feed(EventStreamHandler, [raw])
    assert body == b"data: x\n\n" and error is None
    assert protocol.should_close


def test_decoder_keeps_only_framing_between_reads() -> None:
    decoder = ChunkDecoder()
    payload = b"x" * 100_000
    raw = chunked(payload, [])
    out = bytearray()
    for i in range(0, len(raw), 7):
        out += decoder.feed(raw[i : i + 7])
        assert len(decoder._pending) < 16  # a size line or a line end, never chunk data
    assert decoder.done and bytes(out) == payload and decoder.tail == b""
    with pytest.raises(ChunkError):
        ChunkDecoder().feed(b"3;" + b"e" * 9000)
    trailers = ChunkDecoder()
    assert trailers.feed(b"1\r\na\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\nrest") == b"a"
    assert trailers.done and trailers.tail == b"rest"


async def test_install_replaces_only_aiohttps_own_factory() -> None:
    connector = aiohttp.TCPConnector()
    try:
        assert install(connector)
        assert connector._factory().__class__ is EventStreamHandler
        assert not install(connector)  # already ours: left alone
    finally:
        await connector.close()

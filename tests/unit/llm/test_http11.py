"""The streamed calls' HTTP/1.1 client against aiohttp's own parser, on the same bytes.

Protocol tests build a raw response (status line, headers, an SSE body in random HTTP
chunks), cut it into random network reads and feed them, over a fake transport (the
lowest seam), to :class:`~engine.llm.http11.Connection` and to aiohttp's
``ResponseHandler``: both must give the same status, headers, body bytes and events, and
fail alike. Pool tests use a small server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.client_proto import ResponseHandler
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import BadRequest, ConnectionLost, MalformedResponse
from engine.llm.client import Client
from engine.llm.http11 import HIGH_WATER, Connection, Pool, Response
from engine.llm.wire import SseAccumulator
from tests.unit.llm.test_chunked import chunked, split


class FakeTransport(asyncio.Transport):
    """Enough of a transport for a client protocol: writes kept, close and pauses noted."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.paused = False
        self.written = bytearray()

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
        self.written += data


def sse_body(words: list[str], *, crlf: bool = False) -> bytes:
    """An SSE body: one event per word, a finish event, usage, ``[DONE]``.

    ``crlf``: lines end with CRLF, as sse-starlette (llama-cpp-python's server) sends them.
    """
    out = [
        b'data: {"choices":[{"index":0,"delta":{"content":"' + w.encode() + b'"}}]}\n\n'
        for w in words
    ]
    out.append(
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":'
        + str(len(words)).encode()
        + b',"total_tokens":9}}\n\ndata: [DONE]\n\n'
    )
    body = b"".join(out)
    return body.replace(b"\n", b"\r\n") if crlf else body


HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: test\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\nX-RateLimit-Remaining-Requests: 7\r\n\r\n"
)


def events(body: bytes) -> tuple[list[str], Any]:
    acc = SseAccumulator()
    acc.feed(body)
    acc.finish()
    return ["".join(acc.parts.get(i, ())) for i in acc.indices()], acc.usage


async def ours(reads: list[bytes], *, close: bool = False) -> tuple[Any, Connection]:
    """(status, headers, body, error) from our connection, and the connection."""
    conn = Connection("e", lambda c, reuse: None)
    conn.connection_made(FakeTransport())
    resp = conn.send(b"POST / HTTP/1.1\r\n\r\n")
    for data in reads:
        conn.data_received(data)
    if close:
        conn.connection_lost(None)
    try:
        await asyncio.wait_for(conn.head(resp), 1.0)
    except (ConnectionLost, MalformedResponse) as exc:
        return (None, None, b"", exc), conn
    body = bytearray()
    error: BaseException | None = None
    try:
        async with asyncio.timeout(1.0):
            while data := await resp.readany():
                body += data
    except (ConnectionLost, MalformedResponse) as exc:
        error = exc
    return (resp.status, dict(resp.headers), bytes(body), error), conn


async def theirs(reads: list[bytes], *, close: bool = False) -> tuple[Any, ...]:
    """The same from aiohttp's protocol and parser (its reader skips interim responses)."""
    protocol = ResponseHandler(asyncio.get_running_loop())
    protocol.connection_made(FakeTransport())
    protocol.set_response_params(auto_decompress=False)
    for data in reads:
        protocol.data_received(data)
    if close:
        protocol.connection_lost(None)
    try:
        message, payload = await asyncio.wait_for(protocol.read(), 1.0)
        while 100 <= message.code < 200:
            message, payload = await asyncio.wait_for(protocol.read(), 1.0)
    except Exception as exc:
        return None, None, b"", exc
    body = bytearray()
    error: BaseException | None = None
    try:
        async with asyncio.timeout(1.0):
            async for data in payload.iter_any():
                body += data
    except aiohttp.ClientPayloadError as exc:
        error = exc
    headers = {k.lower(): v for k, v in message.headers.items()}
    return message.code, headers, bytes(body), error


@settings(max_examples=150, deadline=None)
@given(
    words=st.lists(st.text("abcxyz ", min_size=1, max_size=8), min_size=1, max_size=40),
    seed=st.integers(0, 2**32 - 1),
    chunk_cuts=st.integers(0, 120),
    read_cuts=st.integers(0, 60),
    upper=st.booleans(),
    ext=st.booleans(),
    crlf=st.booleans(),
)
async def test_any_chunking_and_reads_give_what_aiohttp_gives(
    words: list[str],
    seed: int,
    chunk_cuts: int,
    read_cuts: int,
    upper: bool,
    ext: bool,
    crlf: bool,
) -> None:
    rng = random.Random(seed)
    body = sse_body(words, crlf=crlf)
    cuts = [rng.randrange(len(body)) for _ in range(chunk_cuts)]
    raw = HEAD + chunked(body, cuts, upper=upper, ext=ext)
    reads = split(raw, [rng.randrange(len(raw)) for _ in range(read_cuts)])
    (status, headers, got, error), conn = await ours(reads)
    ref = await theirs(reads)
    assert error is None and ref[3] is None
    assert (status, headers, got) == ref[:3]
    assert got == body and headers["x-ratelimit-remaining-requests"] == "7"
    assert events(got) == events(ref[2]) == (["".join(words)], events(body)[1])
    assert conn.reusable and conn._keep  # a complete body: the connection can serve again


@pytest.mark.parametrize("cut", [10, 200, -7, -3, -1])
async def test_a_connection_lost_mid_body_fails_like_aiohttp(cut: int) -> None:
    raw = HEAD + chunked(sse_body(["a", "b", "c"]), [20, 60, 100])
    truncated = raw[: len(HEAD) + cut] if cut > 0 else raw[:cut]
    (_, _, got, error), _ = await ours([truncated], close=True)
    ref = await theirs([truncated], close=True)
    assert isinstance(error, ConnectionLost) and "body cut short" in str(error)
    assert isinstance(ref[3], aiohttp.ClientPayloadError)
    assert sse_body(["a", "b", "c"]).startswith(got)  # what came before the cut, if anything


async def test_a_connection_lost_before_a_head() -> None:
    (_, _, _, error), _ = await ours([HEAD[:20]], close=True)
    assert isinstance(error, ConnectionLost) and "before a response" in str(error)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", MalformedResponse),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", MalformedResponse),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n", MalformedResponse),
        (b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 9000, MalformedResponse),
        (HEAD + b"3\r\nabcX\r\n0\r\n\r\n", ConnectionLost),  # framing: the body is cut
        (HEAD + b"zz\r\n", ConnectionLost),
    ],
)
async def test_malformed_responses_fail_and_close(raw: bytes, error: type[Exception]) -> None:
    (_, _, _, got), conn = await ours([raw])
    assert isinstance(got, error)
    assert not conn.reusable and conn.transport is not None and conn.transport.is_closing()


async def test_other_framings_give_what_aiohttp_gives() -> None:
    plain = b'{"choices":[]}'
    cases = [
        # Content-Length, in two reads
        [b"HTTP/1.1 429 Too Many\r\nContent-Length: 14\r\nRetry-After: 2\r\n\r\n" + plain[:5],
         plain[5:]],
        # interim responses first, a head split across reads, bare LF line ends
        [b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD[:30], HEAD[30:] + chunked(plain, [5])],
        [b"HTTP/1.1 200 OK\nContent-Type: text/event-stream\nTransfer-Encoding: chunked\n\n"
         + chunked(plain, [5])],
        # repeated headers are joined, folded lines continued
        [b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-A: 2\r\nX-B: a\r\n  b\r\nContent-Length: 14\r\n\r\n"
         + plain],
    ]  # fmt: skip
    for reads in cases:
        (status, headers, got, error), _ = await ours(reads)
        ref = await theirs(reads)
        assert error is None and ref[3] is None
        assert status == ref[0] and got == ref[2] == plain, reads
        assert {k: v for k, v in headers.items() if k not in ("x-a", "x-b")} == {
            k: v for k, v in ref[1].items() if k not in ("x-a", "x-b")
        }
    assert headers["x-a"] == "1, 2" and headers["x-b"] == "a b"


async def test_a_body_framed_by_the_close_ends_with_it() -> None:
    (status, _, got, error), conn = await ours(
        [b"HTTP/1.0 200 OK\r\n\r\ndata: a\n\n", b"data: [DONE]\n\n"], close=True
    )
    assert status == 200 and error is None and got == b"data: a\n\ndata: [DONE]\n\n"
    assert not conn._keep


@pytest.mark.parametrize(
    ("head", "keep"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
    ],
)
async def test_keep_alive_as_the_server_says(head: bytes, keep: bool) -> None:
    (status, _, got, _), conn = await ours([head])
    assert status == 200 and got == b"" and conn._keep is keep


async def test_bytes_after_the_body_make_the_connection_unusable() -> None:
    (_, _, got, error), conn = await ours([HEAD + chunked(b"data: x\n\n", []) + b"HTTP/1.1"])
    assert got == b"data: x\n\n" and error is None and not conn.reusable


async def test_reading_pauses_while_the_caller_is_behind() -> None:
    conn = Connection("e", lambda c, reuse: None)
    transport = FakeTransport()
    conn.connection_made(transport)
    resp = conn.send(b"POST / HTTP/1.1\r\n\r\n")
    conn.data_received(HEAD)
    big = b"x" * (HIGH_WATER // 4)
    for _ in range(5):
        conn.data_received(chunked(big, [])[:-5])  # chunks, the body not over
    assert transport.paused
    assert len(await resp.readany()) == 5 * len(big) and not transport.paused


# ---------------------------------------------------------------- the pool


class Server:
    """A loopback server answering each request with ``answer(n)`` (n counts from 1)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests = 0
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                self.requests += 1
                reply = self.answer(self.requests)
                if reply is None:
                    writer.close()
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    servers: list[asyncio.Server] = []

    async def start(answer: Any) -> Server:
        s = Server(answer)
        s.server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
        servers.append(s.server)
        return s

    yield start
    for server in servers:
        server.close()


def _request() -> bytes:
    return b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


STREAM = HEAD + chunked(b"data: [DONE]\n\n", [3])


async def test_the_pool_reuses_connections_and_respects_its_limit(serve: Any) -> None:
    server = await serve(lambda n: STREAM)
    pool = Pool("e", server.url, limit=2, connect_timeout_s=5.0)
    in_use = 0
    most = 0

    async def one() -> None:
        nonlocal in_use, most
        resp = await pool.request(_request())
        in_use += 1
        most = max(most, in_use)
        await asyncio.sleep(0.01)
        assert await resp.read() == b"data: [DONE]\n\n"
        in_use -= 1
        resp.release()

    await asyncio.gather(*(one() for _ in range(20)))
    pool.close()
    assert server.requests == 20 and most == 2 and server.connections == 2


async def test_an_incomplete_or_closing_response_closes_its_connection(serve: Any) -> None:
    answers = {
        1: HEAD + b"3\r\nabc\r\n",  # the body goes on (not here)
        2: HEAD.replace(b"Server: test", b"Connection: close") + chunked(b"x", []),
    }
    server = await serve(lambda n: answers.get(n, STREAM))
    pool = Pool("e", server.url, limit=0, connect_timeout_s=5.0)
    first = await pool.request(_request())
    first.release()  # head read, body not: not reusable
    for _ in range(3):
        resp = await pool.request(_request())
        await resp.read()
        resp.release()
    pool.close()
    # 1: abandoned; 2: the server asked to close; 3 and 4 share one connection.
    assert server.connections == 3


async def test_connect_errors_are_connection_lost() -> None:
    pool = Pool("e", "http://127.0.0.1:9/v1", limit=0, connect_timeout_s=2.0)
    with pytest.raises(ConnectionLost, match="cannot connect"):
        await pool.request(_request())
    assert pool._open == 0


async def test_a_server_that_hangs_up_before_answering(serve: Any) -> None:
    server = await serve(lambda n: None)
    pool = Pool("e", server.url, limit=1, connect_timeout_s=2.0)
    for _ in range(2):  # the connection's place is given back each time
        with pytest.raises(ConnectionLost, match="before a response"):
            await pool.request(_request())
    assert pool._open == 0


async def test_cancelled_waiters_give_their_turn_back(serve: Any) -> None:
    server = await serve(lambda n: STREAM)
    pool = Pool("e", server.url, limit=1, connect_timeout_s=2.0)
    held = await pool.request(_request())
    waiting = asyncio.create_task(pool.request(_request()))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await held.read()
    held.release()
    resp: Response = await asyncio.wait_for(pool.request(_request()), 2.0)
    await resp.read()
    resp.release()
    pool.close()
    assert server.connections == 1


async def test_idle_connections_older_than_15_s_are_not_reused(serve: Any) -> None:
    server = await serve(lambda n: STREAM)
    now = [0.0]
    pool = Pool("e", server.url, limit=0, connect_timeout_s=2.0, clock=lambda: now[0])
    for step in (0.0, 14.0, 16.0):  # reused after 14 s idle, not after 16 s
        now[0] += step
        resp = await pool.request(_request())
        await resp.read()
        resp.release()
    pool.close()
    assert server.connections == 2


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (openssl; skipped without it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_tls_with_the_hostname_and_certificate_checked(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    s = Server(lambda n: STREAM)
    server = await asyncio.start_server(s.handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        pool = Pool("e", f"https://localhost:{port}/v1", limit=0, connect_timeout_s=5.0,
                    ssl_context=trusting)  # fmt: skip
        for _ in range(2):
            resp = await pool.request(_request())
            assert await resp.read() == b"data: [DONE]\n\n"
            resp.release()
        pool.close()
        assert s.connections == 1 and pool.authority == f"localhost:{port}"
        # The system's store does not know this certificate: refused, not read.
        strict = Pool("e", f"https://localhost:{port}/v1", limit=0, connect_timeout_s=5.0)
        with pytest.raises(ConnectionLost, match="CERTIFICATE_VERIFY_FAILED"):
            await strict.request(_request())
        # Nor does a certificate for another name pass.
        other = Pool("e", f"https://127.0.0.1:{port}/v1", limit=0, connect_timeout_s=5.0,
                     ssl_context=trusting)  # fmt: skip
        with pytest.raises(ConnectionLost, match="cannot connect"):
            await other.request(_request())
    finally:
        server.close()


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nX-Echo Bearer {key}\r\n\r\n",  # a header line without a colon
        b"HTTP/1.1 2OO {key}\r\n\r\n",  # not a status line
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{key}\r\n",  # not a size
    ],
)
async def test_messages_quoting_the_server_hide_the_key(serve: Any, reply: bytes) -> None:
    key = "sk-test-" + "9f8e7d6c5b4a" * 4
    server = await serve(lambda n: reply.replace(b"{key}", key.encode()))
    client = Client("e", server.url.rsplit("/chat/completions", 1)[0], api_key=key, timeout_s=5)
    try:
        with pytest.raises((MalformedResponse, ConnectionLost)) as info:
            await client.chat({"model": "m", "messages": [], "stream": True})
    finally:
        await client.aclose()
    assert key not in str(info.value) and key[:20] not in str(info.value)
    assert "[redacted]" in str(info.value)


async def test_a_key_with_a_line_break_is_refused_not_sent(serve: Any) -> None:
    server = await serve(lambda n: STREAM)
    key = "sk-test-key-with-newline\n"
    client = Client("e", server.url.rsplit("/chat/completions", 1)[0], api_key=key)
    try:
        with pytest.raises(BadRequest, match="API key's environment variable") as info:
            await client.chat({"model": "m", "messages": [], "stream": True})
    finally:
        await client.aclose()
    assert "sk-test" not in str(info.value) and server.requests == 0

"""Streamed calls against nginx, which sends every SSE line as its own HTTP chunk.

The client reads chunked event streams with its own decoder (``engine/llm/chunked.py``);
``Client(stream_transport=False)`` is aiohttp's per-chunk path, the reference. nginx runs
with the echo module from ``benchmarks/_nginx.py`` on 127.0.0.1 (skipped without it),
with a few answers of the tests' own: the nginx connection's serial number as the
streamed text (to see connections reused or closed), a stream that ends before
``[DONE]``, one that stalls after its first event, and a gzip-compressed one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import uvloop

from benchmarks._nginx import NginxEcho, ensure_nginx, nginx_echo, stream_events
from engine.errors import MalformedResponse, RateLimited, ResponseTooLarge, Timeout
from engine.llm.client import ChatResult, Client
from engine.llm.wire import SseAccumulator

BODY: dict[str, Any] = {
    "model": "sim-model",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 32,
    "stream": True,
}


def _q(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _events(lines: list[str]) -> str:
    return "\n".join(f"            echo -n {_q('data: ' + e)}; echo; echo;" for e in lines)


EVENTS = stream_events(32)
CONNECTION = '{"choices":[{"index":0,"delta":{"content":"$connection"},"finish_reason":"stop"}]}'
EXTRA = f"""
        location = /conn/v1/chat/completions {{
            default_type text/event-stream;
{_events([CONNECTION, "[DONE]"])}
        }}
        location = /trunc/v1/chat/completions {{
            default_type text/event-stream;
{_events(EVENTS[:5])}
        }}
        location = /slow/v1/chat/completions {{
            default_type text/event-stream;
{_events(EVENTS[:1])}
            echo_flush;
            echo_sleep 30;
{_events(EVENTS[1:])}
        }}
        location = /limited/v1/chat/completions {{
            default_type application/json;
            add_header Retry-After 2 always;
            add_header x-ratelimit-limit-requests 60 always;
            return 429 '{{"error":{{"message":"Rate limit reached (nginx)","type":"requests"}}}}';
        }}
        location = /gz/v1/chat/completions {{
            default_type text/event-stream;
            gzip on;
            gzip_types text/event-stream;
            gzip_min_length 0;
{_events(EVENTS)}
        }}
"""


@pytest.fixture(scope="module")
def nginx() -> Iterator[NginxEcho]:
    try:
        ensure_nginx(install=False)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    with nginx_echo([1.0], extra_locations=EXTRA) as server:
        yield server


def _url(nginx: NginxEcho, name: str) -> str:
    return f"http://127.0.0.1:{nginx.port}/{name}/v1"


async def _chat(url: str, **kw: Any) -> ChatResult:
    async with Client("nginx", url, **kw) as client:
        return await client.chat(BODY)


async def test_the_same_result_as_aiohttps_per_chunk_path(nginx: NginxEcho) -> None:
    for url in (nginx.base_url(1.0, stream=True), _url(nginx, "gz")):
        ours = await _chat(url)
        theirs = await _chat(url, stream_transport=False)
        assert ours.texts == theirs.texts and len(ours.texts[0].split()) == 32
        assert ours.finish_reasons == theirs.finish_reasons == ["stop"]
        assert ours.usage == theirs.usage and ours.usage is not None
        assert ours.usage.completion_tokens == 32
        assert ours.ttft is not None and ours.ttft <= ours.latency


async def test_one_connection_serves_100_streams(nginx: NginxEcho) -> None:
    async with Client("nginx", _url(nginx, "conn")) as client:
        serials = {(await client.chat(BODY)).texts[0] for _ in range(100)}
    assert len(serials) == 1, serials


def test_on_uvloop_as_the_cli_runs(nginx: NginxEcho) -> None:
    """uvloop's transports are not asyncio's classes; the bench and the CLI run on it."""

    async def run() -> tuple[ChatResult, set[str]]:
        result = await _chat(nginx.base_url(1.0, stream=True))
        async with Client("nginx", _url(nginx, "conn")) as client:
            serials = {(await client.chat(BODY)).texts[0] for _ in range(20)}
        return result, serials

    result, serials = uvloop.run(run())
    assert len(result.texts[0].split()) == 32 and len(serials) == 1


def _open_sockets(nginx: NginxEcho) -> int:
    """This process's established TCP connections to nginx (as the OS sees them)."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == nginx.port and c.status == psutil.CONN_ESTABLISHED
    )


@pytest.mark.parametrize("reader", [True, False])
async def test_cancelling_mid_stream_closes_the_connection(nginx: NginxEcho, reader: bool) -> None:
    async with Client("nginx", _url(nginx, "slow"), stream_transport=reader) as slow:
        assert _open_sockets(nginx) == 0
        started = asyncio.Event()

        def note(acc: SseAccumulator, now: float) -> None:
            started.set()

        slow.on_stream_content = note
        task = asyncio.create_task(slow.chat(BODY))
        async with asyncio.timeout(10.0):
            await started.wait()  # the first event is in; the rest is 30 s away
        assert _open_sockets(nginx) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The half-read connection is closed at once, not put back in the pool.
        await asyncio.sleep(0.05)
        assert _open_sockets(nginx) == 0


async def test_a_stream_ended_before_done_is_malformed(nginx: NginxEcho) -> None:
    for reader in (True, False):
        with pytest.raises(MalformedResponse, match=r"\[DONE\]"):
            await _chat(_url(nginx, "trunc"), stream_transport=reader)


async def test_a_429_is_rate_limited_with_its_retry_after(nginx: NginxEcho) -> None:
    for transport in (True, False):
        with pytest.raises(RateLimited, match=r"Rate limit reached \(nginx\)") as info:
            await _chat(_url(nginx, "limited"), stream_transport=transport)
        assert info.value.retry_after == 2.0 and info.value.status == 429


async def test_the_byte_limit_holds(nginx: NginxEcho) -> None:
    for url in (nginx.base_url(1.0, stream=True), _url(nginx, "gz")):
        with pytest.raises(ResponseTooLarge):
            await _chat(url, max_response_bytes=2048)


async def test_a_stalled_stream_times_out(nginx: NginxEcho) -> None:
    with pytest.raises(Timeout):
        await _chat(_url(nginx, "slow"), timeout_s=0.5)

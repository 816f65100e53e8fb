"""Client, gate, cache and retries against the simulated endpoint on 127.0.0.1 (real HTTP)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import (
    AuthError,
    BadRequest,
    ConnectionLost,
    MalformedResponse,
    RateLimited,
    ServerError,
    Timeout,
)
from engine.llm.cache import ResponseCache
from engine.llm.caller import Caller
from engine.llm.client import Client
from engine.llm.gate import Gate
from engine.llm.retry import RetryPolicy
from engine.metrics.core import EndpointStats
from engine.sim import FaultWindow, SimServer, SimSettings

MESSAGES = [{"role": "user", "content": "Say something."}]


async def _serve(**kw: Any) -> AsyncIterator[SimServer]:
    async with SimServer(SimSettings(**{"latency_ms": 1.0, **kw})) as server:
        yield server


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async for server in _serve():
        yield server


def _caller(url: str, **kw: Any) -> Caller:
    client = Client("sim", url, timeout_s=kw.pop("timeout_s", 5.0))
    gate = Gate("sim", max_concurrency=kw.pop("max_concurrency", 8), adaptive=False)
    return Caller(
        "sim",
        "sim-model",
        client,
        gate,
        retry=kw.pop("retry", RetryPolicy(3, base_s=0.01, cap_s=0.05, rng=random.Random(0))),
        observer=kw.pop("observer", None),
        **kw,
    )


async def test_plain_and_streamed_give_the_same_text(sim: SimServer) -> None:
    plain = _caller(sim.url)
    streamed = _caller(sim.url, stream=True)
    try:
        a = await plain.chat(MESSAGES, max_tokens=20)
        b = await streamed.chat(MESSAGES, max_tokens=20)
    finally:
        await plain.client.aclose()
        await streamed.client.aclose()
    assert a.text == b.text and a.text.startswith("[simulated]")
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens > 0
    assert b.usage == a.usage


async def test_streaming_measures_time_to_first_token() -> None:
    async for server in _serve(latency_ms=30.0, tokens_per_s=200.0):
        client = Client("sim", server.url)
        try:
            result = await client.chat(
                {"model": "m", "messages": MESSAGES, "max_tokens": 20, "stream": True}
            )
        finally:
            await client.aclose()
        assert result.ttft is not None
        assert 0.02 <= result.ttft < result.latency


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("500", ServerError),
        ("502", ServerError),
        ("503", ServerError),
        ("429", RateLimited),
        ("reset", ConnectionLost),
        ("malformed", MalformedResponse),
    ],
)
async def test_faults_map_to_the_error_tree(fault: str, error: type[Exception]) -> None:
    async for server in _serve(fault_rate=1.0, faults=[fault], retry_after_s=0.2):
        client = Client("sim", server.url, timeout_s=5.0)
        try:
            with pytest.raises(error) as info:
                await client.chat({"model": "m", "messages": MESSAGES, "max_tokens": 8})
        finally:
            await client.aclose()
        if fault == "429":
            assert info.value.retry_after == pytest.approx(0.2)  # type: ignore[attr-defined]


async def test_truncated_stream_is_retryable() -> None:
    async for server in _serve(fault_rate=1.0, faults=["truncated"]):
        client = Client("sim", server.url)
        try:
            with pytest.raises((MalformedResponse, ConnectionLost)):
                await client.chat(
                    {"model": "m", "messages": MESSAGES, "max_tokens": 30, "stream": True}
                )
        finally:
            await client.aclose()


async def test_read_timeout_is_a_timeout() -> None:
    async for server in _serve(fault_rate=1.0, faults=["timeout"], hang_s=5.0):
        client = Client("sim", server.url, timeout_s=0.3)
        try:
            with pytest.raises(Timeout):
                await client.chat({"model": "m", "messages": MESSAGES, "max_tokens": 8})
        finally:
            await client.aclose()


async def test_connection_refused_is_connection_lost() -> None:
    async for server in _serve():
        url = server.url
    client = Client("sim", url, connect_timeout_s=1.0)
    try:
        with pytest.raises(ConnectionLost):
            await client.chat({"model": "m", "messages": MESSAGES})
    finally:
        await client.aclose()


async def test_auth_and_context_errors_are_fatal_and_redacted() -> None:
    async for server in _serve(api_key="sk-right-key-123456", max_context_tokens=50):
        wrong = Client("sim", server.url, api_key="sk-wrong-key-987654321")
        right = Client("sim", server.url, api_key="sk-right-key-123456")
        try:
            with pytest.raises(AuthError) as auth:
                await wrong.chat({"model": "m", "messages": MESSAGES})
            assert "sk-wrong-key-987654321" not in str(auth.value)
            with pytest.raises(BadRequest) as ctx:
                await right.chat({"model": "m", "messages": MESSAGES, "max_tokens": 100})
            assert ctx.value.status == 400 and "context length" in str(ctx.value)
        finally:
            await wrong.aclose()
            await right.aclose()


async def test_retries_recover_from_faults_within_bounds() -> None:
    async for server in _serve(fault_rate=0.5, faults=["500", "reset", "malformed"]):
        stats = EndpointStats("sim")
        caller = _caller(server.url, retry=RetryPolicy(8, base_s=0.001, cap_s=0.01), observer=stats)
        try:
            results = await asyncio.gather(
                *(
                    caller.chat([{"role": "user", "content": f"q{i}"}], max_tokens=8)
                    for i in range(30)
                )
            )
        finally:
            await caller.client.aclose()
        assert all(r.text for r in results)
        assert all(1 <= r.attempts <= 9 for r in results)
        assert stats.retries == sum(r.attempts - 1 for r in results) > 0
        assert stats.requests == sum(r.attempts for r in results)


async def test_retries_are_bounded() -> None:
    async for server in _serve(fault_rate=1.0, faults=["503"]):
        stats = EndpointStats("sim")
        caller = _caller(server.url, retry=RetryPolicy(2, base_s=0.001, cap_s=0.01), observer=stats)
        try:
            with pytest.raises(ServerError):
                await caller.chat(MESSAGES, max_tokens=8)
        finally:
            await caller.client.aclose()
        assert stats.requests == 3 and stats.retries == 2
        assert server.stats()["requests"] == 3


async def test_cache_replays_without_calling_the_endpoint(sim: SimServer, tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    caller = _caller(sim.url, cache=cache)
    try:
        first = await caller.chat(MESSAGES, max_tokens=12, temperature=0.7)
        before = sim.stats()["requests"]
        again = await caller.chat(MESSAGES, max_tokens=12, temperature=0.7)
        other = await caller.chat(MESSAGES, max_tokens=12, temperature=0.7, sample_index=1)
    finally:
        await caller.client.aclose()
        cache.close()
    assert again.cached and not first.cached and again.texts == first.texts
    assert sim.stats()["requests"] == before + 1  # only the new sample index was paid
    assert not other.cached
    reopened = ResponseCache(tmp_path / "cache.sqlite")
    assert len(reopened) == 2
    reopened.close()


async def test_gate_learns_limits_from_headers() -> None:
    async for server in _serve(rpm=600.0, tpm=60000.0):
        caller = _caller(server.url)
        try:
            await caller.chat(MESSAGES, max_tokens=8)
        finally:
            await caller.client.aclose()
        state = caller.gate.state()
        assert state.rpm == 600.0 and state.tpm == 60000.0


async def test_429_pauses_the_whole_endpoint_then_retries_succeed() -> None:
    """A 429 storm: the first 429 pauses every request of the endpoint for Retry-After."""
    window = FaultWindow(start_s=0.0, end_s=0.3, kind="429")
    async for server in _serve(schedule=[window], retry_after_s=0.5):
        stats = EndpointStats("sim")
        caller = _caller(server.url, max_concurrency=4, observer=stats)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        caller.chat([{"role": "user", "content": f"q{i}"}], max_tokens=4)
                        for i in range(20)
                    )
                ),
                timeout=20,
            )
        finally:
            await caller.client.aclose()
        assert len(results) == 20
        assert loop.time() - t0 >= 0.5
        # Only the requests already in flight when the first 429 came back hit the storm;
        # the pause kept the 16 waiting ones (and the retries) from hammering the endpoint.
        assert 1 <= stats.http_429 <= 4


async def test_connect_timeout_is_a_timeout() -> None:
    """A listener whose accept queue is full drops new SYNs: the connect times out."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue (never accepted)
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(c)
        await asyncio.sleep(0.1)
        client = Client(
            "stuck", f"http://127.0.0.1:{port}/v1", connect_timeout_s=0.3, timeout_s=2.0
        )
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            with pytest.raises(Timeout):
                await client.chat({"model": "m", "messages": MESSAGES})
        finally:
            await client.aclose()
        assert loop.time() - t0 < 1.5
    finally:
        for c in fillers:
            c.close()
        server.close()


async def test_budget_refuses_before_sending_and_frees_the_gate(
    sim: SimServer, tmp_path: Path
) -> None:
    from engine.config import Limits
    from engine.errors import BudgetExceeded
    from engine.llm.budget import Ledger

    ledger = Ledger(run=Limits(max_requests=3), prices={"sim": (1.0, 1.0)})
    cache = ResponseCache(tmp_path / "cache.sqlite")
    caller = _caller(sim.url, cache=cache, ledger=ledger)
    try:
        for i in range(3):
            await caller.chat(MESSAGES, max_tokens=8, sample_index=i, stage="judge")
        replay = await caller.chat(MESSAGES, max_tokens=8, sample_index=0, stage="judge")
        with pytest.raises(BudgetExceeded, match="max_requests 3"):
            await caller.chat(MESSAGES, max_tokens=8, sample_index=9, stage="judge")
    finally:
        await caller.client.aclose()
        cache.close()
    assert replay.cached  # a cache replay is free: allowed past the limit
    assert sim.stats()["requests"] == 3  # the refused call never reached the server
    assert caller.gate.state().in_flight == 0  # its permit was given back
    spent = ledger.to_dict()["judge"]["sim"]
    assert spent["requests"] == 3
    assert spent["prompt_tokens"] > 0 and spent["completion_tokens"] > 0
    assert spent["cost"] == pytest.approx(
        (spent["prompt_tokens"] + spent["completion_tokens"]) / 1e6
    )

"""The server's burst, used against the simulated endpoint (real HTTP on 127.0.0.1).

The sim limits like OpenAI: a bucket of one minute's quota (``rpm`` requests), full at the
start and refilled at rpm/60 per second, advertised in ``x-ratelimit-*`` headers. With
the limit learned from those headers, the gate spends what they say remains: 640 requests
against rpm 600 take a few seconds (600 at once, then 10/s), where pacing that keeps
every 60 s window under 600 needs over a minute. No request may get a 429.
"""

from __future__ import annotations

import asyncio
import time

from engine.llm.caller import Caller
from engine.llm.client import Client
from engine.llm.gate import Gate
from engine.sim import SimServer, SimSettings

MESSAGES = [{"role": "user", "content": "Say something."}]


async def test_learned_pacing_spends_the_burst_the_sim_grants() -> None:
    async with SimServer(SimSettings(latency_ms=5.0, rpm=600)) as server:
        client = Client("sim", server.url, timeout_s=10.0)
        caller = Caller("sim", "sim-model", client, Gate("sim", max_concurrency=64))
        todo = iter(range(640))

        async def worker() -> None:
            for i in todo:
                await caller.chat(MESSAGES, max_tokens=4, sample_index=i)

        start = time.monotonic()
        try:
            async with asyncio.timeout(60.0):
                await asyncio.gather(*(worker() for _ in range(64)))
        finally:
            await client.aclose()
        wall = time.monotonic() - start
        stats = server.stats()
    assert stats["http_429"] == 0 and stats["rate_limited"] == 0
    assert stats["admitted"] == 640
    # 600 at once, 40 more at 10/s: about 4 s; window-safe pacing would take > 60 s.
    assert wall < 20.0, wall
    first_seconds = sum(row[1] for row in stats["per_second"] if row[0] < 3)
    assert first_seconds > 600, stats["per_second"]

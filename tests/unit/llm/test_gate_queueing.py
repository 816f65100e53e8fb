"""Adaptive concurrency against a server that queues instead of returning 429, on a FakeClock.

The server model is the one a llama.cpp or a busy vLLM server presents: ``parallel``
requests are served at once, each for ``service_s``; the rest wait in a FIFO queue, so
past ``parallel`` every extra request in flight only adds latency. With ``overhead``, each
request waiting also slows the one being served (llama-cpp-python's server, juggling 64
connections, serves even the first request of a burst about twice as slowly), so a
baseline learned from the first replies is too high. The gate starts at 64 and must come
down near ``parallel`` within a bounded number of requests, without losing throughput,
and must leave an uncongested server alone.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections import deque
from statistics import median

import pytest

from engine.clock import FakeClock
from engine.llm.gate import Gate
from tests.unit.llm.test_gate import run_clock


class QueueingServer:
    """``parallel`` slots, a FIFO queue in front, ``service_s`` (+- jitter) per request."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        parallel: int,
        service_s: float,
        jitter: float,
        seed: int,
        overhead: float = 0.0,
    ) -> None:
        self.clock = clock
        self.parallel = parallel
        self.service_s = service_s
        self.jitter = jitter
        self.overhead = overhead
        self.rng = random.Random(seed)
        self.busy = 0
        self.queue: deque[asyncio.Future[None]] = deque()

    async def handle(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append(fut)
        self._start()
        await fut

    def _start(self) -> None:
        while self.busy < self.parallel and self.queue:
            fut = self.queue.popleft()
            self.busy += 1
            slower = 1 + self.overhead * len(self.queue)
            service = self.service_s * slower * (1 + self.rng.uniform(-self.jitter, self.jitter))
            self.clock.call_later(service, functools.partial(self._finish, fut))

    def _finish(self, fut: asyncio.Future[None]) -> None:
        self.busy -= 1
        fut.set_result(None)
        self._start()


async def drive(
    *,
    parallel: int,
    service_s: float,
    seconds: float,
    adaptive: bool = True,
    start: int = 64,
    floor: int = 1,
    overhead: float = 0.0,
) -> tuple[Gate, list[tuple[float, float, float]]]:
    """64 workers loop through the gate to the server for ``seconds`` of fake time.

    Returns:
        The gate and (finish time, limit after release, latency) of every request.
    """
    clock = FakeClock()
    gate = Gate(
        "q",
        max_concurrency=start,
        adaptive=adaptive,
        min_concurrency=floor,
        clock=clock,
        call_later=clock.call_later,
    )
    server = QueueingServer(
        clock, parallel=parallel, service_s=service_s, jitter=0.1, seed=7, overhead=overhead
    )
    samples: list[tuple[float, float, float]] = []

    async def worker() -> None:
        while True:
            permit = await gate.acquire(0)
            t0 = clock.now
            await server.handle()
            latency = clock.now - t0
            gate.release(permit, outcome="ok", latency=latency, completion_tokens=16)
            samples.append((clock.now, gate.state().concurrency_limit, latency))

    tasks = [asyncio.create_task(worker()) for _ in range(start)]
    try:
        await run_clock(clock, seconds)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return gate, samples


def _throughput(samples: list[tuple[float, float, float]], since: float) -> float:
    done = [t for t, _, _ in samples if t >= since]
    return len(done) / (samples[-1][0] - since)


@pytest.mark.parametrize(
    ("parallel", "overhead"), [(1, 0.0), (4, 0.0), (1, 0.015), (2, 0.015), (4, 0.015)]
)
async def test_a_queueing_server_brings_the_limit_down_near_its_parallelism(
    parallel: int, overhead: float
) -> None:
    service = 0.5
    seconds = 600 * service / parallel  # about 600 requests at the server's capacity
    gate, samples = await drive(
        parallel=parallel, service_s=service, seconds=seconds, overhead=overhead
    )
    assert len(samples) >= 450
    # Settled within the first 200 requests (halving per window: 64, 32, 16...): from
    # then on the limit stays near twice the server's parallelism (a latency tolerance
    # of 2 lets about that many be in flight; the additive probe goes a little above).
    settled_at = samples[200][0]
    later = [limit for t, limit, _ in samples if t >= settled_at]
    assert median(later) <= 2 * parallel + 2, (parallel, median(later))
    assert max(later) <= 3 * parallel + 2, (parallel, max(later))
    # The baseline is the unloaded service time, even when the first burst was slower.
    assert max(gate._aimd.lat_base.values()) < 1.25 * service, gate._aimd.lat_base
    # Latency stops growing: late requests wait behind about the limit, not behind 64.
    late = [lat for t, _, lat in samples if t >= settled_at]
    assert median(late) <= (2 * parallel + 2) / parallel * service, median(late)
    assert median(late) < median(lat for _, _, lat in samples[:100]) / 4
    # The server stays busy: throughput is its capacity (parallel / service).
    assert _throughput(samples, settled_at) >= 0.9 * parallel / service


async def test_a_server_with_room_for_everything_keeps_the_limit() -> None:
    # 64 slots: no queue forms, latency is the service time, nothing reads as congestion.
    gate, samples = await drive(parallel=64, service_s=0.5, seconds=60, adaptive=True)
    assert len(samples) > 1000
    assert gate.state().concurrency_limit == 64


async def test_a_queue_does_not_drag_the_baseline_up() -> None:
    # A floor of 64 keeps 64 requests queued on a one-slot server for the whole run; the
    # learned uncongested latency must stay near the service time, not drift towards the
    # queueing latency (which would hide the queue from the congestion signal).
    gate, samples = await drive(parallel=1, service_s=0.5, seconds=300, floor=64)
    assert len(samples) > 500
    assert median(lat for _, _, lat in samples[100:]) > 20  # the queue was there all along
    baseline = gate._aimd.lat_base  # the learned quantity this test is about
    assert baseline and max(baseline.values()) < 2 * 0.5, baseline

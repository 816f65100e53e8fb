"""One load point: send the workload at one rate or concurrency and keep every record.

Closed loop: ``concurrency`` worker coroutines each take the next conversation and send
its turns one after the other (a fixed pool of workers costs less CPU and memory than a
task per request behind a semaphore). Open loop: one dispatcher walks the precomputed
schedule with one timer at a time (``asyncio.sleep`` to the next due time; every request
already due is started at once, nothing polls) and starts each conversation as a task
of the run's task group; ``concurrency``, if given, caps the requests in flight at the
gate, and a request held there shows as schedule lag. Either way requests go through the
engine's :class:`~engine.llm.caller.Caller` (gate, client, retries) without a cache.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import ConfigError, EndpointError
from ..llm.caller import Caller
from ..llm.client import Client
from ..llm.gate import Gate
from ..llm.retry import RetryPolicy
from .arrivals import arrival_offsets, trace_offsets
from .metrics import Record
from .settings import BenchSettings
from .timing import CURRENT, Stamps, TimedClient
from .tokens import TokenCounter
from .workload import Plan, Workload

__all__ = ("PointResult", "api_key_from_env", "run_point")


class PointResult(msgspec.Struct, kw_only=True):
    """What one load point produced.

    Attributes:
        records: one per request, in the order they were created.
        start: the run's start on its clock (the schedule's time 0).
        wall_s: from the start until the last reply.
        cpu_s: the process's CPU time over the run.
        rate: the target rate (open loops).
        concurrency: workers (closed loop) or the in-flight cap (open loop).
        attempts: HTTP attempts; retries: attempts after the first.
        simulated: the endpoint labelled itself as synth-engine's simulated endpoint.
        errors: failed requests by error kind.
    """

    records: list[Record]
    start: float
    wall_s: float
    cpu_s: float
    rate: float | None
    concurrency: int | None
    attempts: int
    retries: int
    simulated: bool
    errors: dict[str, int]


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def api_key_from_env(env: str | None) -> str | None:
    """The key held by the environment variable ``env`` (None: no variable named).

    Raises:
        ConfigError: the variable is named but not set.
    """
    if not env:
        return None
    key = os.environ.get(env)
    if not key:
        raise ConfigError(
            f"environment variable {env} is not set",
            path="bench",
            field="--api-key-env",
            hint=f"export {env}=<your key>",
        )
    return key


async def run_point(
    settings: BenchSettings,
    workload: Workload,
    tokens: TokenCounter,
    *,
    rate: float | None = None,
    concurrency: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> PointResult:
    """Run one load point (see the module docstring).

    Args:
        settings: the bench settings (load model, counts, endpoint, request options).
        workload: makes the conversations.
        tokens: counts output tokens when the server sends no usage.
        rate: target rate of an open loop (requests/s).
        concurrency: closed-loop workers, or an open loop's in-flight cap (None: none).
        clock: monotonic seconds (every reading of the run comes from it).

    Raises:
        ConfigError: a missing API key.
    """
    load = settings.load
    closed = load == "closed"
    workers = (concurrency or 64) if closed else None
    offsets: list[float] = []
    if load == "trace":
        offsets = trace_offsets([r.at for r in workload.trace], settings.trace_speed)
        if settings.requests is not None:
            offsets = offsets[: settings.requests]
        if settings.duration_s is not None:
            offsets = [o for o in offsets if o <= settings.duration_s]
    elif not closed:
        assert rate is not None
        count = settings.requests
        if settings.duration_s is not None:
            by_time = max(1, math.floor(rate * settings.duration_s))
            count = by_time if count is None else min(count, by_time)
        assert count is not None
        conversations = max(1, math.ceil(count / max(1, settings.turns)))
        offsets = arrival_offsets(
            load, rate, conversations, seed=settings.seed, burstiness=settings.burstiness
        )
    limit_requests = (
        settings.requests
        if settings.requests is not None
        else (None if settings.duration_s is not None else 1000)
    )
    cap = workers or concurrency
    stamps = Stamps(clock)
    api_key = api_key_from_env(settings.api_key_env)
    client: Client = (
        TimedClient(
            "bench",
            settings.base_url,
            tokens=tokens if settings.tokenizer else None,
            api_key=api_key,
            timeout_s=settings.timeout_s,
            max_connections=cap or 0,
            clock=clock,
        )
        if settings.stream
        else Client(
            "bench",
            settings.base_url,
            api_key=api_key,
            timeout_s=settings.timeout_s,
            max_connections=cap or 0,
            clock=clock,
        )
    )
    gate = Gate(
        "bench",
        max_concurrency=cap or max(1, len(offsets) * max(1, settings.turns)),
        rpm=settings.rpm,
        tpm=settings.tpm,
        adaptive=False,
    )
    caller = Caller(
        "bench",
        settings.model,
        client,
        gate,
        cache=None,
        retry=RetryPolicy(settings.max_retries),
        stream=settings.stream,
        observer=stamps,
    )
    extra: dict[str, Any] = {"temperature": settings.temperature}
    if settings.ignore_eos:
        extra["ignore_eos"] = True
    records: list[Record] = []
    errors: dict[str, int] = {}
    count_text = settings.tokenizer is not None

    async def send(rec: Record, messages: list[dict[str, str]], max_tokens: int) -> str | None:
        token = CURRENT.set(rec)
        try:
            reply = await caller.chat(messages, max_tokens=max_tokens, **extra)
        except EndpointError as exc:
            rec.end = clock()
            rec.error = exc.kind
            rec.status = exc.status
            rec.message = str(exc)[:300]
            errors[exc.kind] = errors.get(exc.kind, 0) + 1
            return None
        finally:
            CURRENT.reset(token)
        rec.ok = True
        if rec.end is None:
            rec.end = clock()
        rec.prompt_tokens = reply.usage.prompt_tokens
        rec.finish_reason = reply.finish_reasons[0] if reply.finish_reasons else None
        if rec.tokens_source == "none":
            rec.output_tokens = tokens.count(reply.text)
            rec.tokens_source = "tokenizer" if count_text else "words"
        else:
            rec.output_tokens = reply.usage.completion_tokens
        return reply.text

    async def converse(plan: Plan, intended: float, budget: list[int] | None) -> None:
        messages: list[dict[str, str]] = []
        if plan.system:
            messages.append({"role": "system", "content": plan.system})
        messages.extend({"role": role, "content": text} for role, text in plan.history)
        for k, (text, max_tokens) in enumerate(plan.turns):
            if budget is not None:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            messages.append({"role": "user", "content": text})
            rec = Record(index=len(records), conversation=plan.index, turn=k, intended=intended)
            records.append(rec)
            reply = await send(rec, messages, max_tokens)
            if reply is None or k == len(plan.turns) - 1:
                return
            messages.append({"role": "assistant", "content": reply})
            if settings.turn_delay_s > 0:
                await asyncio.sleep(settings.turn_delay_s)
            intended = clock()

    cpu0 = _cpu()
    start = clock()
    try:
        if closed:
            deadline = None if settings.duration_s is None else start + settings.duration_s
            budget = [limit_requests] if limit_requests is not None else None
            next_conv = 0

            async def worker() -> None:
                nonlocal next_conv
                while (budget is None or budget[0] > 0) and (
                    deadline is None or clock() < deadline
                ):
                    index = next_conv
                    next_conv += 1
                    await converse(workload.plan(index), clock(), budget)

            async with asyncio.TaskGroup() as tg:
                for _ in range(min(workers or 1, limit_requests or (workers or 1))):
                    tg.create_task(worker())
        else:
            budget = (
                [settings.requests]
                if settings.requests is not None and settings.turns > 1
                else None
            )
            async with asyncio.TaskGroup() as tg:
                for index, offset in enumerate(offsets):
                    due = start + offset
                    # One timer to the next due time; uvloop's timers have 1 ms
                    # resolution and can fire early, so re-arm for what is left.
                    while (delay := due - clock()) > 0:  # noqa: ASYNC110
                        await asyncio.sleep(delay)
                    tg.create_task(converse(workload.plan(index), due, budget))
    finally:
        end = clock()
        cpu = _cpu() - cpu0
        await client.aclose()
    return PointResult(
        records=records,
        start=start,
        wall_s=end - start,
        cpu_s=cpu,
        rate=rate,
        concurrency=workers if closed else concurrency,
        attempts=stamps.attempts,
        retries=stamps.retries,
        simulated=client.simulated,
        errors=errors,
    )

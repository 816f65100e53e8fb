"""``synth-engine bench``: throughput of an OpenAI-compatible endpoint through the engine's own path.

Requests go through the same :class:`~engine.llm.Caller` (gate, client, retries) as a
run, without the cache. ``concurrency`` worker coroutines each loop over requests: a
fixed pool of workers costs less CPU and memory than one task per request behind a
semaphore, and the gate still enforces rpm/tpm when they are given.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from typing import Any

import msgspec

from .errors import ConfigError, EndpointError
from .llm.caller import Caller
from .llm.client import Client
from .llm.gate import Gate
from .llm.retry import RetryPolicy

__all__ = ("BenchSettings", "render_bench", "run_bench")


class BenchSettings(msgspec.Struct, kw_only=True):
    """What to measure (see ``synth-engine bench --help``)."""

    base_url: str
    model: str
    api_key_env: str | None = None
    requests: int = 1000
    concurrency: int = 64
    max_tokens: int = 64
    prompt_tokens: int = 32
    stream: bool = False
    rpm: float | None = None
    tpm: float | None = None
    timeout_s: float = 120.0
    max_retries: int = 3
    duration_s: float | None = None


class _Recorder:
    """A minimal observer: latencies, TTFTs, 429s, tokens."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.done_at: list[float] = []
        self.ttfts: list[float] = []
        self.http_429 = 0
        self.completion_tokens = 0
        self.attempts = 0
        self.retries = 0

    def on_start(self) -> None:
        self.attempts += 1

    def on_finish(
        self,
        latency_s: float,
        ok: bool,
        error_kind: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_s: float | None,
    ) -> None:
        if ok:
            self.done_at.append(time.perf_counter())
            self.latencies.append(latency_s)
            self.completion_tokens += completion_tokens
            if ttft_s is not None:
                self.ttfts.append(ttft_s)
        elif error_kind == "rate_limited":
            self.http_429 += 1

    def on_retry(self) -> None:
        self.retries += 1

    def on_cache_hit(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Not used: the benchmark has no cache."""


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return round(s[k] * 1000.0, 2)


def _steady_rate(done_at: list[float], concurrency: int) -> float | None:
    """Completions per second in the middle of the run, over whole waves of ``concurrency``.

    With C workers each waiting ~L per request, completions come in waves of C; the
    k-th and (k + m*C)-th completions sit at the same place in waves m cycles apart, so
    m*C / (t[k + m*C] - t[k]) is unbiased by where the waves fall. Starting at k = C
    leaves out the ramp-up (connections opening, the first wave) and ending a wave before
    the last leaves out the drain (the last wave's tail). None for runs under 3 waves.
    """
    n = len(done_at)
    c = concurrency
    m = (n - 2 * c) // c
    if m < 1:
        return None
    span = done_at[c + m * c - 1] - done_at[c - 1]
    return m * c / span if span > 0 else None


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """Send ``settings.requests`` requests at ``settings.concurrency`` and report.

    Returns:
        The JSON report (requests, ok, failed, wall_s, requests_per_s, steady_requests_per_s,
        output_tokens_per_s,
        latency_ms, ttft_ms, http_429, cpu_s, cpu_us_per_request, peak_rss_mb).
    """
    if settings.requests < 1 or settings.concurrency < 1:
        raise ConfigError("--requests and --concurrency must be >= 1", path="bench")
    api_key = None
    if settings.api_key_env:
        api_key = os.environ.get(settings.api_key_env)
        if not api_key:
            raise ConfigError(
                f"environment variable {settings.api_key_env} is not set",
                path="bench",
                field="--api-key-env",
                hint=f"export {settings.api_key_env}=<your key>",
            )
    recorder = _Recorder()
    client = Client(
        "bench",
        settings.base_url,
        api_key=api_key,
        timeout_s=settings.timeout_s,
        max_connections=settings.concurrency,
    )
    gate = Gate(
        "bench",
        max_concurrency=settings.concurrency,
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
        observer=recorder,
    )
    prompt = " ".join(["word"] * max(1, settings.prompt_tokens - 4))
    messages = [{"role": "user", "content": prompt}]
    remaining = settings.requests
    ok = 0
    failed = 0
    errors: dict[str, int] = {}

    deadline = None if settings.duration_s is None else time.perf_counter() + settings.duration_s

    async def worker() -> None:
        nonlocal remaining, ok, failed
        while remaining > 0 and (deadline is None or time.perf_counter() < deadline):
            remaining -= 1
            try:
                await caller.chat(messages, max_tokens=settings.max_tokens, temperature=0.0)
                ok += 1
            except EndpointError as exc:
                failed += 1
                errors[exc.kind] = errors.get(exc.kind, 0) + 1

    cpu0 = _cpu()
    t0 = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(min(settings.concurrency, settings.requests)):
                tg.create_task(worker())
    finally:
        wall = time.perf_counter() - t0
        cpu = _cpu() - cpu0
        await client.aclose()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "base_url": settings.base_url,
        "model": settings.model,
        "concurrency": settings.concurrency,
        "stream": settings.stream,
        "requests": ok + failed,
        "ok": ok,
        "failed": failed,
        "errors": errors,
        "wall_s": round(wall, 3),
        "requests_per_s": round(ok / wall, 2) if wall > 0 else 0.0,
        "steady_requests_per_s": (
            round(rate, 2)
            if (rate := _steady_rate(recorder.done_at, settings.concurrency))
            else None
        ),
        "output_tokens_per_s": round(recorder.completion_tokens / wall, 1) if wall > 0 else 0.0,
        "latency_ms": {
            q: _pct(recorder.latencies, v) for q, v in (("p50", 50), ("p90", 90), ("p99", 99))
        },
        "ttft_ms": {q: _pct(recorder.ttfts, v) for q, v in (("p50", 50), ("p99", 99))},
        "http_429": recorder.http_429,
        "retries": recorder.retries,
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu / max(1, ok + failed) * 1e6, 1),
        "peak_rss_mb": round(peak_kb / 1024.0, 1),
    }


def render_bench(report: dict[str, Any]) -> str:
    """A short human-readable rendering of a bench report."""
    lat = report["latency_ms"]
    ttft = report["ttft_ms"]
    lines = [
        f"endpoint      {report['base_url']}  model {report['model']}  concurrency {report['concurrency']}",
        f"requests      {report['ok']} ok / {report['failed']} failed of {report['requests']}  in {report['wall_s']} s",
        f"throughput    {report['requests_per_s']} req/s overall, {report['steady_requests_per_s']} req/s "
        f"steady state, {report['output_tokens_per_s']} output tokens/s",
        f"latency ms    p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}",
        f"ttft ms       p50 {ttft['p50']}  p99 {ttft['p99']}"
        + ("" if report["stream"] else "  (use --stream)"),
        f"429s          {report['http_429']}  retries {report['retries']}",
        f"client CPU    {report['cpu_s']} s, {report['cpu_us_per_request']} us/request; peak RSS {report['peak_rss_mb']} MB",
    ]
    if report.get("errors"):
        lines.append("errors        " + ", ".join(f"{k} {v}" for k, v in report["errors"].items()))
    return "\n".join(lines)

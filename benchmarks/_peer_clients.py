"""Peer clients for ``cpu_peers``: the openai SDK and httpx, each behind an asyncio.Semaphore.

Runs in the peers' own venv (``benchmarks/.venv-peers``), not the project's; prints one
JSON report with the same CPU measurement as ``synth-engine bench`` (process CPU time
over the request phase / requests). The usual way these clients are driven: one task
per request, ``concurrency`` of them in flight behind a semaphore.

Usage: python benchmarks/_peer_clients.py {openai,httpx} URL MODEL REQUESTS CONCURRENCY
       MAX_TOKENS DURATION_S
"""

from __future__ import annotations

import asyncio
import importlib
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _drive(
    call: Callable[[], Awaitable[bool]], requests: int, concurrency: int, duration_s: float
) -> dict[str, Any]:
    """``requests`` calls, ``concurrency`` at once; none started after ``duration_s``."""
    sem = asyncio.Semaphore(concurrency)
    ok = failed = 0
    deadline = time.perf_counter() + duration_s

    async def one() -> None:
        nonlocal ok, failed
        async with sem:
            if time.perf_counter() >= deadline:
                return
            try:
                good = await call()
            except Exception:  # a peer's own error types: counted, not raised
                good = False
            if good:
                ok += 1
            else:
                failed += 1

    cpu0 = _cpu()
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(requests)))
    wall = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    done = ok + failed
    return {
        "requests": done,
        "ok": ok,
        "failed": failed,
        "wall_s": round(wall, 3),
        "requests_per_s": round(ok / wall, 2) if wall > 0 else 0.0,
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu / max(1, done) * 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }


def _messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(["word"] * 28)}]


async def run_openai(
    url: str, model: str, requests: int, concurrency: int, max_tokens: int, duration_s: float
) -> dict[str, Any]:
    """``AsyncOpenAI`` with its defaults (httpx transport, its own connection limits)."""
    openai: Any = importlib.import_module("openai")  # in the peers' venv only
    client = openai.AsyncOpenAI(base_url=url, api_key="bench")

    async def call() -> bool:
        resp = await client.chat.completions.create(
            model=model, messages=_messages(), max_tokens=max_tokens, temperature=0.0
        )
        return bool(resp.choices)

    try:
        return await _drive(call, requests, concurrency, duration_s)
    finally:
        await client.close()


async def run_httpx(
    url: str, model: str, requests: int, concurrency: int, max_tokens: int, duration_s: float
) -> dict[str, Any]:
    """``httpx.AsyncClient`` with a pool of ``concurrency`` connections."""
    httpx: Any = importlib.import_module("httpx")  # in the peers' venv only
    body = json.dumps(
        {"model": model, "messages": _messages(), "max_tokens": max_tokens, "temperature": 0.0}
    ).encode()
    headers = {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120.0) as client:

        async def call() -> bool:
            resp = await client.post(url + "/chat/completions", content=body, headers=headers)
            return resp.status_code == 200 and bool(json.loads(resp.content)["choices"])

        return await _drive(call, requests, concurrency, duration_s)


def main(argv: list[str]) -> None:
    """Run one peer client and print its JSON report."""
    kind, url, model = argv[0], argv[1], argv[2]
    n, c, k, dur = int(argv[3]), int(argv[4]), int(argv[5]), float(argv[6])
    runner = {"openai": run_openai, "httpx": run_httpx}[kind]
    try:
        import uvloop

        report = uvloop.run(runner(url, model, n, c, k, dur))
        loop = "uvloop"
    except ImportError:
        report = asyncio.run(runner(url, model, n, c, k, dur))
        loop = "asyncio"
    sys.stdout.write(json.dumps({**report, "loop": loop}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

"""The baseline: a bare aiohttp + uvloop client, N worker coroutines, no engine code.

Prints a JSON report with the same CPU measurement as ``synth-engine bench``.
Usage: python benchmarks/_bare_client.py URL MODEL REQUESTS CONCURRENCY MAX_TOKENS
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import aiohttp
import uvloop


async def main(
    url: str, model: str, requests: int, concurrency: int, max_tokens: int
) -> dict[str, object]:
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": " ".join(["word"] * 28)}],
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
    ).encode()
    headers = {"Content-Type": "application/json"}
    remaining = requests
    ok = failed = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining, ok, failed
            while remaining > 0:
                remaining -= 1
                async with session.post(
                    url + "/chat/completions", data=body, headers=headers
                ) as resp:
                    data = await resp.read()
                    if resp.status == 200 and json.loads(data)["choices"]:
                        ok += 1
                    else:
                        failed += 1

        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "requests": requests,
        "ok": ok,
        "failed": failed,
        "wall_s": round(wall, 3),
        "requests_per_s": round(ok / wall, 2),
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu / max(1, ok + failed) * 1e6, 1),
        "peak_rss_mb": round(ru1.ru_maxrss / 1024.0, 1),
    }


if __name__ == "__main__":
    u, m, n, c, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    report = uvloop.run(main(u, m, n, c, k))
    sys.stdout.write(json.dumps(report) + "\n")

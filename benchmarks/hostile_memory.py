"""Peak client memory under hostile bodies: an endless body, a gzip bomb, SSE without newlines.

The hostile server of the test suite (``python -m tests.hostile MODE``) runs in its own
process, so only the client is measured. This process makes ``--concurrency`` calls at
once through :class:`engine.llm.client.Client` with ``max_response_bytes = --limit-mib``;
each must end with ``ResponseTooLarge``. The figure is the growth of the peak RSS
(``VmHWM``) over the RSS before the calls, against the bound the reliability promise
states: limit x calls in flight + a constant.

    python -m benchmarks.hostile_memory --json
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from engine.errors import ResponseTooLarge
from engine.llm.client import Client
from engine.sim.process import free_port

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / MiB


def _peak_mib() -> float:
    # VmHWM (this process image's peak), not ru_maxrss: the latter survives exec, so a
    # child of a big process (a test runner) would report its parent's peak.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _serve(mode: str, attack: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hostile", mode, "--port", str(port), "--bytes", str(attack)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/models", timeout=1):
                break
        except urllib.error.HTTPError:
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the hostile server ({mode}) did not start") from None
            time.sleep(0.1)
    return proc, url


async def _attack(url: str, *, stream: bool, concurrency: int, limit: int) -> int:
    async with Client("hostile", url, max_response_bytes=limit) as client:

        async def one() -> bool:
            try:
                await client.chat({**BODY, "stream": stream})
            except ResponseTooLarge:
                return True
            return False

        results = await asyncio.gather(*(one() for _ in range(concurrency)))
    return sum(results)


def measure(mode: str, *, concurrency: int, limit_mib: float, attack_mib: int) -> dict[str, Any]:
    """Peak RSS growth of ``concurrency`` calls against one hostile body ``mode``."""
    proc, url = _serve(mode, attack_mib * MiB)
    try:
        before = _rss_mib()
        start = time.monotonic()
        refused = asyncio.run(
            _attack(
                url,
                stream=mode == "sse",
                concurrency=concurrency,
                limit=int(limit_mib * MiB),
            )
        )
        wall = time.monotonic() - start
        growth = max(0.0, _peak_mib() - before)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return {
        "mode": mode,
        "attack_mib": attack_mib,
        "concurrency": concurrency,
        "limit_mib": limit_mib,
        "refused": refused,
        "rss_before_mib": round(before, 1),
        "peak_growth_mib": round(growth, 1),
        "bound_mib": limit_mib * concurrency,
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=["huge", "bomb", "sse"])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--limit-mib", type=float, default=8.0)
    parser.add_argument("--attack-mib", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for mode in args.modes:
        # Each mode in a fresh process: VmHWM is a high-water mark of the process.
        if len(args.modes) > 1:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.hostile_memory",
                    "--modes",
                    mode,
                    "--concurrency",
                    str(args.concurrency),
                    "--limit-mib",
                    str(args.limit_mib),
                    "--attack-mib",
                    str(args.attack_mib),
                    "--json",
                ],
                cwd=ROOT,
                capture_output=True,
                check=True,
            )
            rows.extend(orjson.loads(out.stdout))
        else:
            rows.append(
                measure(
                    mode,
                    concurrency=args.concurrency,
                    limit_mib=args.limit_mib,
                    attack_mib=args.attack_mib,
                )
            )
    if args.json:
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
        return
    for r in rows:
        print(
            f"{r['mode']:5}  {r['concurrency']} x {r['limit_mib']} MiB limit "
            f"(attack {r['attack_mib']} MiB): peak +{r['peak_growth_mib']} MiB "
            f"(bound {r['bound_mib']} MiB + const), refused {r['refused']}, {r['wall_s']} s"
        )
    from benchmarks._common import loadavg, write_result

    print(f"written {write_result('hostile_memory', {'runs': rows, 'loadavg': loadavg()})}")


if __name__ == "__main__":
    main()

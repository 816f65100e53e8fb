"""Adaptive concurrency on a real model server that queues instead of returning 429.

llama-cpp-python serves one request at a time and queues the rest: past its useful
parallelism, every extra request in flight adds only latency. This benchmark drives it
through the engine's own path (a :class:`~engine.llm.Caller` over a
:class:`~engine.llm.Gate` and :class:`~engine.llm.Client`, no cache), with one fixed
request (a short prompt, ``--max-tokens`` output tokens at temperature 0):

1. a sweep of fixed concurrency limits (``--sweep``, default 1, 2, 4, 8), each for
   ``--fixed-s`` seconds: throughput and latency per setting;
2. the adaptive gate starting at ``--start`` (default 64) with that many workers for
   ``--adaptive-s`` seconds, sampling the gate's limit and the p50 latency of each
   ``--window-s`` window.

It then checks (exit 1 if not, with ``--check``): the limit the gate settled on (median
over the last third of the run) is near the server's useful parallelism (the smallest
fixed setting within 5% of the best throughput): at most twice it plus two (the gate's
latency tolerance of 2 lets about twice it be in flight), latency
stopped growing (the median window p50 of the last third within 25% of the middle
third's and under half the peak window's), and the adaptive run's throughput once
settled (its last third) is within 10% of the best fixed setting (measured in the
sweep and again right after the adaptive run, averaged: the machine's other load drifts
over minutes); the whole run's, burst included, is reported too. Latency is the server's: from sending a request to the
end of its reply, not including the time a worker waits at the gate. Writes
``benchmarks/results/adaptive_real.json``.

    python -m benchmarks.adaptive_real --base-url http://127.0.0.1:PORT/v1 --model NAME
        [--sweep 1,2,4,8] [--fixed-s 40] [--adaptive-s 180] [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from typing import Any

from benchmarks._common import exit_on_sigterm, loadavg, write_result
from engine.errors import EndpointError
from engine.llm.caller import Caller
from engine.llm.client import Client
from engine.llm.gate import Gate
from engine.llm.retry import RetryPolicy

PROMPT = "Write one sentence about the sea."


class _Run:
    """Completions of one timed run: (finish time since start, server latency, tokens).

    A :class:`~engine.llm.caller.CallObserver`: the latency is the attempt's, from
    sending the request to the end of the reply (what the server's queue adds to), not
    the time a worker also waited at the gate.
    """

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.done: list[tuple[float, float, int]] = []
        self.errors: dict[str, int] = {}

    def on_start(self) -> None:
        """Nothing to count."""

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
            self.done.append((time.perf_counter() - self.t0, latency_s, completion_tokens))
        elif error_kind is not None and error_kind != "cancelled":  # cancelled: the deadline
            self.errors[error_kind] = self.errors.get(error_kind, 0) + 1

    def on_retry(self) -> None:
        """Retries show as errors."""

    def on_cache_hit(self, prompt_tokens: int, completion_tokens: int) -> None:
        """No cache here."""


async def _drive(
    base_url: str,
    model: str,
    *,
    limit: int,
    adaptive: bool,
    seconds: float,
    max_tokens: int,
    window_s: float,
) -> tuple[_Run, list[dict[str, float]]]:
    """``limit`` workers loop through one gate for ``seconds``; sample the gate each window."""
    t0 = time.perf_counter()
    run = _Run(t0)
    client = Client("real", base_url, timeout_s=600.0)
    gate = Gate("real", max_concurrency=limit, adaptive=adaptive)
    caller = Caller("real", model, client, gate, retry=RetryPolicy(2), observer=run)
    messages = [{"role": "user", "content": PROMPT}]
    samples: list[dict[str, float]] = []

    async def worker() -> None:
        while True:
            with contextlib.suppress(EndpointError):  # counted by the observer
                await caller.chat(messages, max_tokens=max_tokens, temperature=0.0)

    async def sampler() -> None:
        seen = 0
        while True:
            await asyncio.sleep(window_s)
            window = [lat for _, lat, _ in run.done[seen:]]
            seen = len(run.done)
            state = gate.state()
            samples.append(
                {
                    "t_s": round(time.perf_counter() - t0, 1),
                    "limit": state.concurrency_limit,
                    "in_flight": state.in_flight,
                    "completed": len(window),
                    "latency_p50_s": round(statistics.median(window), 3) if window else 0.0,
                }
            )

    # At the deadline everything stops, in flight or waiting at the gate: only what
    # finished within the run counts (workers left to finish would inflate the rates,
    # the more so the more of them there are).
    tasks = [asyncio.create_task(worker()) for _ in range(limit)]
    tasks.append(asyncio.create_task(sampler()))
    try:
        await asyncio.sleep(seconds + min(1.0, window_s / 2))  # the last window's sample
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
    run.done = [d for d in run.done if d[0] <= seconds]
    return run, samples


def _summary(run: _Run, seconds: float) -> dict[str, Any]:
    lat = sorted(x for _, x, _ in run.done)
    return {
        "requests": len(run.done),
        "errors": run.errors,
        "requests_per_min": round(len(run.done) / seconds * 60.0, 1),
        "output_tokens_per_s": round(sum(n for _, _, n in run.done) / seconds, 1),
        "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
        "latency_p90_s": round(lat[int(0.9 * (len(lat) - 1))], 3) if lat else None,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep, then the adaptive run; the figures and the checks."""
    sweep = [int(x) for x in args.sweep.split(",")]
    common = {"max_tokens": args.max_tokens, "window_s": args.window_s}
    # Warm up: load the model's pages and the server's prompt prefix.
    await _drive(args.base_url, args.model, limit=1, adaptive=False, seconds=5.0, **common)
    fixed: dict[str, Any] = {}
    for c in sweep:
        run, _ = await _drive(
            args.base_url, args.model, limit=c, adaptive=False, seconds=args.fixed_s, **common
        )
        fixed[str(c)] = _summary(run, args.fixed_s) | {"loadavg": loadavg()}
        print(f"fixed {c:3d}: {fixed[str(c)]}", file=sys.stderr, flush=True)
    run, samples = await _drive(
        args.base_url,
        args.model,
        limit=args.start,
        adaptive=True,
        seconds=args.adaptive_s,
        **common,
    )
    adaptive = _summary(run, args.adaptive_s) | {"loadavg": loadavg()}
    print(f"adaptive from {args.start}: {adaptive}", file=sys.stderr, flush=True)

    best_c, best = max(fixed.items(), key=lambda kv: kv[1]["requests_per_min"])
    useful = min(
        int(c) for c, f in fixed.items() if f["requests_per_min"] >= 0.95 * best["requests_per_min"]
    )
    # The machine's other load drifts over minutes: the best fixed setting is measured
    # again right after the adaptive run, and the two measurements are averaged.
    again, _ = await _drive(
        args.base_url, args.model, limit=int(best_c), adaptive=False, seconds=args.fixed_s, **common
    )
    best_again = _summary(again, args.fixed_s) | {"loadavg": loadavg()}
    print(f"fixed {best_c:>3} again: {best_again}", file=sys.stderr, flush=True)
    best_rate = (best["requests_per_min"] + best_again["requests_per_min"]) / 2
    last_third = [s for s in samples if s["t_s"] >= args.adaptive_s * 2 / 3]
    settled = statistics.median(s["limit"] for s in last_third)
    middle_third = [s for s in samples if args.adaptive_s / 3 <= s["t_s"] < args.adaptive_s * 2 / 3]
    late = statistics.median(s["latency_p50_s"] for s in last_third if s["completed"])
    middle = statistics.median(s["latency_p50_s"] for s in middle_third if s["completed"])
    peak = max(s["latency_p50_s"] for s in samples)
    # Stopped growing: the last third no slower than the middle one (within 25%), and
    # well below the peak the 64-request burst caused.
    late_steady = late <= 1.25 * middle and late <= 0.5 * peak
    # Throughput after settling, over the same last third.
    t_from = args.adaptive_s * 2 / 3
    steady_rate = sum(1 for t, _, _ in run.done if t >= t_from) / (args.adaptive_s - t_from) * 60.0
    ratio = adaptive["requests_per_min"] / best_rate if best_rate else 0.0
    steady_ratio = steady_rate / best_rate if best_rate else 0.0
    checks = {
        "settled_near_useful_parallelism": settled <= 2 * useful + 2,
        "latency_stopped_growing": late_steady,
        "throughput_within_10pct_of_best_fixed": steady_ratio >= 0.9,
        "no_errors": not adaptive["errors"] and not any(f["errors"] for f in fixed.values()),
    }
    return {
        "server": args.server,
        "model": args.model,
        "request": {"prompt": PROMPT, "max_tokens": args.max_tokens, "temperature": 0.0},
        "fixed": fixed,
        "best_fixed_concurrency": int(best_c),
        "best_fixed_again": best_again,
        "best_fixed_requests_per_min": round(best_rate, 1),
        "useful_parallelism": useful,
        "adaptive": adaptive
        | {
            "start": args.start,
            "seconds": args.adaptive_s,
            "settled_limit": settled,
            "latency_p50_s_peak_window": peak,
            "latency_p50_s_middle_third": middle,
            "latency_p50_s_last_third": late,
            "steady_requests_per_min": round(steady_rate, 1),
            "throughput_vs_best_fixed": round(ratio, 3),
            "steady_throughput_vs_best_fixed": round(steady_ratio, 3),
            "timeline": samples,
        },
        "checks": checks,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--server", default="llama-cpp-python", help="label for the results")
    ap.add_argument("--sweep", default="1,2,4,8")
    ap.add_argument("--fixed-s", type=float, default=40.0)
    ap.add_argument("--adaptive-s", type=float, default=180.0)
    ap.add_argument("--start", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--window-s", type=float, default=5.0)
    ap.add_argument("--check", action="store_true", help="exit 1 when a check fails")
    ap.add_argument("--no-write", action="store_true", help="print only; keep the results file")
    args = ap.parse_args()
    exit_on_sigterm()
    result = asyncio.run(measure(args))
    if not args.no_write:
        print(f"wrote {write_result('adaptive_real', result)}", file=sys.stderr)
    a = result["adaptive"]
    print(
        f"adaptive from {a['start']}: settled at {a['settled_limit']:g} "
        f"(useful parallelism {result['useful_parallelism']}), "
        f"{a['steady_requests_per_min']} req/min once settled = "
        f"{a['steady_throughput_vs_best_fixed']:.0%} of the best fixed setting "
        f"({result['best_fixed_concurrency']}; whole run {a['throughput_vs_best_fixed']:.0%}); "
        "checks: "
        + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in result["checks"].items())
    )
    return 0 if all(result["checks"].values()) or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())

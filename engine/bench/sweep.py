"""Several load points in one invocation: sweeps, the SLO search, and the whole run.

* A **sweep** runs each of ``--rate a,b,c`` (open loop) or ``--concurrency a,b,c`` in turn
  with the same workload.
* The **SLO search** (``--search LOW:HIGH:STEP``) looks for the highest rate on the grid
  LOW, LOW+STEP, ... HIGH whose run meets every ``--slo`` at ``--slo-percentile``. It runs
  LOW, then HIGH, then bisects between the highest rate that passed and the lowest that
  failed, so it needs about log2((HIGH - LOW) / STEP) + 2 runs, and its answer is within
  one STEP of the true limit wherever meeting the SLOs is monotone in the rate (a higher
  rate never does better), which is what a queue at the server gives.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..errors import EngineError
from ..llm.client import Client
from .datasets import read_prompts, read_trace
from .lengths import LengthDist, parse_length
from .report import build_meta, point_summary, request_rows, timeline, write_outputs
from .runner import PointResult, api_key_from_env, run_point
from .settings import BenchSettings
from .tokens import load_tokens
from .workload import Workload

__all__ = ("rate_grid", "run_bench", "search_rate")


def rate_grid(low: float, high: float, step: float) -> list[float]:
    """LOW, LOW+STEP, ... up to HIGH (HIGH included even when off the grid)."""
    n = math.floor((high - low) / step + 1e-9)
    grid = [round(low + i * step, 9) for i in range(n + 1)]
    if grid[-1] < high - 1e-9:
        grid.append(high)
    return grid


async def search_rate(
    probe: Callable[[float], Awaitable[bool]], low: float, high: float, step: float
) -> tuple[float | None, list[tuple[float, bool]]]:
    """The highest rate of :func:`rate_grid` for which ``probe`` passes (see the docstring).

    Returns:
        The rate (None if even LOW fails) and every ``(rate, passed)`` tried, in order.
    """
    grid = rate_grid(low, high, step)
    tried: list[tuple[float, bool]] = []

    async def test(i: int) -> bool:
        ok = await probe(grid[i])
        tried.append((grid[i], ok))
        return ok

    if not await test(0):
        return None, tried
    if len(grid) == 1:
        return grid[0], tried
    if await test(len(grid) - 1):
        return grid[-1], tried
    good, bad = 0, len(grid) - 1
    while bad - good > 1:
        mid = (good + bad) // 2
        if await test(mid):
            good = mid
        else:
            bad = mid
    return grid[good], tried


async def _server_info(settings: BenchSettings, api_key: str | None) -> dict[str, object]:
    client = Client("bench", settings.base_url, api_key=api_key, timeout_s=10.0)
    try:
        models = await client.models()
        return {"models": models, "simulated": client.simulated}
    except EngineError as exc:
        return {"models": None, "error": str(exc)[:200]}
    finally:
        await client.aclose()


async def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """Run the benchmark the settings describe: one point, a sweep, or an SLO search.

    Returns:
        ``{"meta": ..., "points": [...], "search": ... or None, "files": [...]}``; with one
        point, that point's figures are also at the top level (as in earlier versions).

    Raises:
        ConfigError: inconsistent settings, a missing key or tokenizer.
        InputError: an unreadable dataset, trace or length file.
    """
    settings.check()
    tokens = load_tokens(settings.tokenizer)
    conversations, skipped = read_prompts(settings.dataset, tokens) if settings.dataset else ([], 0)
    trace = read_trace(settings.trace, settings.trace_unit) if settings.trace else []
    out_dist: LengthDist | None
    if settings.output_tokens is not None:
        out_dist = parse_length(settings.output_tokens, "--output-tokens")
    elif settings.max_tokens is not None:
        out_dist = parse_length(settings.max_tokens, "--max-tokens")
    else:
        out_dist = None if (conversations or trace) else parse_length(64, "--output-tokens")
    workload = Workload(
        tokens,
        prompt_tokens=parse_length(settings.prompt_tokens, "--prompt-tokens"),
        output_tokens=out_dist,
        seed=settings.seed,
        turns=settings.turns,
        conversations=conversations,
        trace=trace,
        prefix_tokens=settings.prefix_tokens,
        prefix_count=settings.prefix_count,
        block_tokens=settings.block_tokens,
    )
    started = dt.datetime.now(dt.UTC)
    server = await _server_info(settings, api_key_from_env(settings.api_key_env))
    keep = settings.out is not None
    results: list[PointResult] = []
    points: list[dict[str, Any]] = []
    rows: list[dict[str, object]] = []
    timelines: list[dict[str, list[tuple[float, float]]]] = []

    async def point(rate: float | None, concurrency: int | None) -> dict[str, Any]:
        res = await run_point(settings, workload, tokens, rate=rate, concurrency=concurrency)
        summary = point_summary(settings, res)
        points.append(summary)
        if keep:
            rows.extend(request_rows(settings, res, len(points) - 1))
            timelines.append(timeline(res, settings.stream))
        res.records = [] if not keep else res.records
        results.append(res)
        return summary

    search: dict[str, object] | None = None
    if settings.search is not None:
        low, high, step = settings.search

        async def probe(rate: float) -> bool:
            summary = await point(rate, settings.concurrency)
            return bool(summary["slo"]["met"])

        best, tried = await search_rate(probe, low, high, step)
        search = {
            "low": low,
            "high": high,
            "step": step,
            "best_rate": best,
            "tried": [{"rate": r, "met": ok} for r, ok in tried],
        }
    elif settings.rates:
        for rate in settings.rates:
            await point(rate, settings.concurrency)
    elif settings.concurrencies:
        for c in settings.concurrencies:
            await point(settings.rate, c)
    else:
        await point(settings.rate, settings.concurrency)
    meta = build_meta(settings, results, started, server)
    if skipped:
        meta["dataset_records_skipped"] = skipped
    meta["workload"] = workload.kind
    meta["tokenizer"] = tokens.name
    report: dict[str, Any] = {"meta": meta, "points": points, "search": search}
    if keep:
        assert settings.out is not None
        files = write_outputs(Path(settings.out), report, rows, timelines)
        report["files"] = [str(p) for p in files]
    if len(points) == 1:
        report = {**points[0], **report}
    return report

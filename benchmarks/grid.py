"""Throughput vs the physical limit over a grid of concurrency, latency and streaming.

The physical limit of a cell is min(C/L, RPM/60, TPM/tokens_per_request/60) requests per
second: C requests in flight, each taking L seconds, under the request and token quotas
(none in the main grid, so C/L). Each cell runs ``synth-engine bench`` in its own process
against two servers in turn, both in separate processes on 127.0.0.1:

* ``sim``: ``synth-engine sim --latency-ms L`` (the project's simulated endpoint; Python,
  so at high rates it competes with the client for the 2 cores);
* ``nginx``: nginx + the echo module (``echo_sleep L`` then a fixed answer), which costs
  almost no CPU, so the client is the only thing measured.

Two more cells on nginx are bound by a quota instead of C/L (``--rpm`` / ``--tpm`` given
to the engine). Each cell sends enough requests for >= 6 waves of C (3 at least, so the
sustained rate exists) and about ``--cell-seconds`` of traffic, capped in count and time.
Before each run the script waits (up to ``--max-wait`` s) for other processes to use at
most ``--noise-pct`` of the machine's CPU; a cell during which they used more is run
again (up to ``--attempts``) if the machine has become quiet by then; the quietest
attempt is kept and all are recorded.

    python -m benchmarks.grid [--quick] [--servers sim nginx]
    python -m benchmarks.grid --rerun-noisy [--budget-s 2000]   # re-measure noisy cells
    python -m benchmarks.grid --concurrency 1024 --latency-ms 1000 --merge
    python -m benchmarks.grid --stream on --no-quota-cells --merge   # streamed cells only
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from benchmarks._common import (
    CpuWatch,
    bench_cmd,
    exit_on_sigterm,
    results_dir,
    run_json,
    sim_server,
    wait_quiet,
    write_result,
)
from benchmarks._nginx import NginxEcho, nginx_echo

CONCURRENCY = (64, 256, 1024, 4096)
LATENCY_MS = (50.0, 500.0, 1000.0, 5000.0)
QUICK_CONCURRENCY = (256, 1024)
QUICK_LATENCY_MS = (50.0, 1000.0)
MAX_TOKENS = 32
ACCEPTANCE_SECONDS = 30.0  # traffic of the C=1024, L=1 s cells (full grid)
PLAIN_TARGET_PCT = 95.0  # the core's throughput goal, sustained, at C=1024, L=1 s
STREAM_TARGET_PCT = 97.0  # issue 23: the streamed cell on nginx, sustained
TOKENS_PER_REQUEST = 71  # 39 prompt + 32 completion: what nginx reports (quota cells)
# Rough client ceilings (req/s on one core), only to size cells: plain ~200-280 us/request,
# streamed (32 SSE events) ~200-300 us/request since engine/llm/http11.py (700 before).
CLIENT_CEILING = {False: 3500.0, True: 3000.0}


def physical_limit(
    concurrency: int, latency_s: float, rpm: float | None, tpm: float | None, tokens: float
) -> float:
    """min(C/L, RPM/60, TPM/tokens_per_request/60) requests per second."""
    return min(
        concurrency / latency_s,
        rpm / 60.0 if rpm else math.inf,
        tpm / tokens / 60.0 if tpm else math.inf,
    )


def cell_requests(
    concurrency: int, limit: float, stream: bool, seconds: float, max_requests: int
) -> int:
    """Requests for one cell: ~``seconds`` of traffic, >= 6 waves, capped, never < 3 waves."""
    expected = min(limit, CLIENT_CEILING[stream])
    n = max(6 * concurrency, int(expected * seconds))
    n = min(n, max_requests, int(expected * 4 * seconds))
    return max(n, 3 * concurrency)


def _pct(value: float | None, limit: float) -> float | None:
    return round(100.0 * value / limit, 1) if value else None


def run_cell(
    url: str,
    *,
    server: str,
    concurrency: int,
    latency_ms: float,
    stream: bool,
    requests: int,
    rpm: float | None = None,
    tpm: float | None = None,
    attempts: int = 2,
    noise_pct: float = 25.0,
    max_wait_s: float = 15.0,
) -> dict[str, Any]:
    """One cell (re-run while noisy); the quietest attempt's figures plus every attempt's."""
    limit = physical_limit(concurrency, latency_ms / 1000.0, rpm, tpm, TOKENS_PER_REQUEST)
    extra: list[str] = ["--stream"] if stream else []
    if rpm:
        extra += ["--rpm", str(rpm)]
    if tpm:
        extra += ["--tpm", str(tpm)]
    expected_s = requests / min(limit, CLIENT_CEILING[stream])
    tries: list[dict[str, Any]] = []
    for attempt in range(max(1, attempts)):
        cmd = bench_cmd(
            url,
            requests=requests,
            concurrency=concurrency,
            max_tokens=MAX_TOKENS,
            extra=tuple(extra),
        )
        quiet_before = wait_quiet(noise_pct, max_wait_s=max_wait_s)
        if attempt > 0 and quiet_before > noise_pct and "error" not in tries[-1]:
            break  # the machine is still busy: a re-run now would be no quieter
        try:
            with CpuWatch() as watch:
                r = run_json(cmd, timeout=max(120.0, 6 * expected_s + 60))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            tries.append({"error": str(exc)[-800:], "foreign_cpu_pct": math.inf})
            continue
        tries.append(
            {
                "req_s": r["requests_per_s"],
                "sustained_req_s": r["steady_requests_per_s"],
                "ok": r["ok"],
                "failed": r["failed"],
                "errors": r.get("errors", {}),
                "wall_s": r["wall_s"],
                "cpu_us_per_request": r["cpu_us_per_request"],
                "p50_ms": r["latency_ms"]["p50"],
                "p99_ms": r["latency_ms"]["p99"],
                "peak_rss_mb": r["peak_rss_mb"],
                "foreign_cpu_pct_before": quiet_before,
                "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                **watch.noise(),
            }
        )
        if watch.foreign_cpu_pct <= noise_pct:
            break
    best = dict(min(tries, key=lambda t: float(t["foreign_cpu_pct"])))
    if "error" in best:
        best = dict.fromkeys(FIGURES) | {"error": best["error"], "foreign_cpu_pct": None}
    cpu_us = best["cpu_us_per_request"]
    return {
        "server": server,
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "stream": stream,
        "rpm": rpm,
        "tpm": tpm,
        "requests": requests,
        "limit_req_s": round(limit, 1),
        **best,
        "overall_pct": _pct(best["req_s"], limit),
        "sustained_pct": _pct(best["sustained_req_s"], limit),
        # What one core could do at this client CPU cost: above the limit = not CPU-bound.
        "client_ceiling_req_s": round(1e6 / cpu_us) if cpu_us else None,
        "attempts": [
            {k: v for k, v in t.items() if k != "foreign_cpu_pct" or v != math.inf} for t in tries
        ],
    }


FIGURES = (
    "req_s", "sustained_req_s", "ok", "failed", "errors", "wall_s", "cpu_us_per_request",
    "p50_ms", "p99_ms", "peak_rss_mb", "loadavg_before", "loadavg_after",
)  # fmt: skip


def _key(c: dict[str, Any]) -> tuple[Any, ...]:
    return (c["server"], c["concurrency"], c["latency_ms"], c["stream"], c["rpm"], c["tpm"])


def merge_cells(
    old: list[dict[str, Any]], new: list[dict[str, Any]], *, quieter: bool = False
) -> list[dict[str, Any]]:
    """The cells of an earlier run with ``new`` ones replacing same-key cells.

    With ``quieter``, a new cell replaces an old one only if it ran with less foreign CPU.
    """

    def noise(c: dict[str, Any]) -> float:
        value = c.get("foreign_cpu_pct")
        return math.inf if value is None else float(value)

    fresh = {_key(c): c for c in new}
    merged = []
    for c in old:
        candidate = fresh.pop(_key(c), None)
        if candidate is None or (quieter and noise(candidate) >= noise(c)):
            merged.append(c)
        else:
            merged.append(candidate)
    return merged + list(fresh.values())


HEADER = (
    f"{'server':<6} {'C':>5} {'L ms':>6} {'strm':>5} {'quota':>12} {'N':>6} {'limit/s':>8} "
    f"{'overall/s':>9} {'%':>6} {'sustain/s':>9} {'%':>6} {'us/req':>7} {'p99 ms':>8} "
    f"{'noise%':>6}"
)


def fmt_row(c: dict[str, Any]) -> str:
    """One table line."""
    quota = f"rpm {c['rpm']:g}" if c["rpm"] else (f"tpm {c['tpm']:g}" if c["tpm"] else "-")
    return (
        f"{c['server']:<6} {c['concurrency']:>5} {c['latency_ms']:>6g} {c['stream']!s:>5} "
        f"{quota:>12} {c['requests']:>6} {c['limit_req_s']:>8g} {c['req_s']!s:>9} "
        f"{c['overall_pct']!s:>6} {c['sustained_req_s']!s:>9} {c['sustained_pct']!s:>6} "
        f"{c['cpu_us_per_request']!s:>7} {c['p99_ms']!s:>8} {c['foreign_cpu_pct']!s:>6}"
    )


@contextlib.contextmanager
def _server(kind: str, latency_ms: float, nginx: NginxEcho | None) -> Iterator[tuple[str, str]]:
    """(plain URL, streamed URL) for one latency."""
    if kind == "nginx":
        assert nginx is not None
        yield nginx.base_url(latency_ms), nginx.base_url(latency_ms, stream=True)
    else:
        with sim_server("--latency-ms", str(latency_ms)) as url:
            yield url, url


def main(argv: list[str] | None = None) -> int:
    """Run the grid, print the table, write results/grid.json; 1 if acceptance fails."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced grid; writes results/quick/")
    ap.add_argument("--servers", nargs="+", choices=("sim", "nginx"), default=["sim", "nginx"])
    ap.add_argument("--concurrency", type=int, nargs="+", default=None)
    ap.add_argument("--latency-ms", type=float, nargs="+", default=None)
    ap.add_argument("--cell-seconds", type=float, default=None, help="traffic per cell (10)")
    ap.add_argument("--max-requests", type=int, default=30000)
    ap.add_argument("--attempts", type=int, default=2, help="runs of a noisy cell at most")
    ap.add_argument("--noise-pct", type=float, default=25.0, help="foreign CPU %% = noisy")
    ap.add_argument("--max-wait", type=float, default=None, help="seconds to wait for quiet (15)")
    ap.add_argument("--no-quota-cells", action="store_true")
    ap.add_argument(
        "--stream",
        choices=("both", "on", "off"),
        default="both",
        help="which cells: streamed, plain or both (with --merge, to re-measure one kind)",
    )
    ap.add_argument("--name", default="grid", help="results file name (default grid)")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="replace only the measured cells in an existing results file",
    )
    ap.add_argument(
        "--rerun-noisy",
        action="store_true",
        help="re-measure the cells of the results file run above --noise-pct (implies --merge)",
    )
    ap.add_argument("--budget-s", type=float, default=None, help="start no cell after this")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    cs = args.concurrency or (QUICK_CONCURRENCY if args.quick else CONCURRENCY)
    lats = args.latency_ms or (QUICK_LATENCY_MS if args.quick else LATENCY_MS)
    max_wait = args.max_wait if args.max_wait is not None else (3.0 if args.quick else 15.0)
    seconds = args.cell_seconds or (4.0 if args.quick else 10.0)
    rate = 500.0  # quota-bound cells: 500 req/s from rpm, then from tpm
    specs = [
        (kind, lat, c, stream)
        for kind in args.servers
        for lat in lats
        for c in cs
        for stream in {"both": (False, True), "on": (True,), "off": (False,)}[args.stream]
    ]
    quotas: list[tuple[float | None, float | None]] = []
    if "nginx" in args.servers and not args.no_quota_cells:
        quotas = [(rate * 60, None), (None, rate * 60 * TOKENS_PER_REQUEST)]
    earlier_path = results_dir(args.quick) / f"{args.name}.json"
    if args.rerun_noisy:
        old = json.loads(earlier_path.read_text())["cells"]
        noisy = [
            c for c in old if c["foreign_cpu_pct"] is None or c["foreign_cpu_pct"] > args.noise_pct
        ]
        specs = [
            (c["server"], c["latency_ms"], c["concurrency"], c["stream"])
            for c in noisy
            if not (c["rpm"] or c["tpm"])
        ]
        quotas = [(c["rpm"], c["tpm"]) for c in noisy if c["rpm"] or c["tpm"]]
        args.merge = True
    deadline = time.monotonic() + args.budget_s if args.budget_s else math.inf
    cells: list[dict[str, Any]] = []
    print(HEADER, flush=True)
    with contextlib.ExitStack() as stack:
        needed = sorted({lat for kind, lat, _, _ in specs if kind == "nginx"} | {50.0})
        use_nginx = any(kind == "nginx" for kind, *_ in specs) or bool(quotas)
        nginx = stack.enter_context(nginx_echo(needed)) if use_nginx else None
        for (kind, lat), group in itertools.groupby(specs, key=lambda x: (x[0], x[1])):
            if time.monotonic() > deadline:
                break
            with _server(kind, lat, nginx) as (plain, streamed):
                for _, _, c, stream in group:
                    if time.monotonic() > deadline:
                        break
                    limit = physical_limit(c, lat / 1000.0, None, None, 1.0)
                    # The acceptance cells run longer (~30 waves): the sustained rate
                    # settles as the waves spread out.
                    accept = c == 1024 and lat == 1000.0 and not args.quick
                    secs = max(seconds, ACCEPTANCE_SECONDS) if accept else seconds
                    cell = run_cell(
                        streamed if stream else plain,
                        server=kind,
                        concurrency=c,
                        latency_ms=lat,
                        stream=stream,
                        requests=cell_requests(c, limit, stream, secs, args.max_requests),
                        attempts=args.attempts,
                        noise_pct=args.noise_pct,
                        max_wait_s=max_wait,
                    )
                    cells.append(cell)
                    print(fmt_row(cell), flush=True)
        # Quota-bound cells at C=1024, L=50 ms (C/L 20,480): >= 7 waves, so the sustained
        # rate leaves out the gate's initial burst of one second's quota.
        for rpm, tpm in quotas:
            if nginx is None or time.monotonic() > deadline:
                break
            cell = run_cell(
                nginx.base_url(50.0),
                server="nginx",
                concurrency=1024,
                latency_ms=50.0,
                stream=False,
                requests=max(8 * 1024, int(rate * seconds * 4 / 3)),
                rpm=rpm,
                tpm=tpm,
                attempts=args.attempts,
                noise_pct=args.noise_pct,
                max_wait_s=max_wait,
            )
            cells.append(cell)
            print(fmt_row(cell), flush=True)
    settings: dict[str, Any] = {
        "concurrency": list(cs),
        "latency_ms": list(lats),
        "cell_seconds": seconds,
        "acceptance_cell_seconds": ACCEPTANCE_SECONDS,
        "max_requests": args.max_requests,
        "max_tokens": MAX_TOKENS,
        "tokens_per_request": TOKENS_PER_REQUEST,
        "attempts": args.attempts,
        "noise_pct": args.noise_pct,
        "servers": args.servers,
        "stream": args.stream,
    }
    extra: dict[str, Any] = {}
    if args.merge and earlier_path.exists():
        earlier = json.loads(earlier_path.read_text())
        cells = merge_cells(earlier["cells"], cells, quieter=args.rerun_noisy)
        rerun = {**settings, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        # The grid's shape stays the first run's.
        settings = {**earlier["settings"], "acceptance_cell_seconds": ACCEPTANCE_SECONDS}
        extra = {
            "first_run_machine": earlier.get("first_run_machine", earlier["machine"]),
            "reruns": [*earlier.get("reruns", []), rerun],
        }
    acceptance = [
        c
        for c in cells
        if c["concurrency"] == 1024 and c["latency_ms"] == 1000.0 and not (c["rpm"] or c["tpm"])
    ]

    def reached(stream: bool, servers: tuple[str, ...] = ("sim", "nginx")) -> bool | None:
        target = STREAM_TARGET_PCT if stream else PLAIN_TARGET_PCT
        found = [c for c in acceptance if c["stream"] == stream and c["server"] in servers]
        return all((c["sustained_pct"] or 0) >= target for c in found) if found else None

    # The core's acceptance figure is the non-streamed one (as in ``throughput``); the
    # streamed cell on nginx has its own target (issue 23), reported beside it.
    ok = bool(reached(False))
    for c in acceptance:
        target = STREAM_TARGET_PCT if c["stream"] else PLAIN_TARGET_PCT
        print(
            f"acceptance C=1024 L=1 s {c['server']} stream={c['stream']}: sustained "
            f"{c['sustained_pct']}% overall {c['overall_pct']}% (target sustained >= {target:g}%)"
        )
    path = write_result(
        args.name,
        {
            "settings": settings,
            **extra,
            "cells": cells,
            "acceptance": {
                "target_sustained_pct": PLAIN_TARGET_PCT,
                "met": ok,
                "plain_met": reached(False),
                "stream_target_sustained_pct": STREAM_TARGET_PCT,
                "stream_met": reached(True, ("nginx",)),
            },
        },
        quick=args.quick,
    )
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

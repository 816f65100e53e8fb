"""Throughput vs the physical limit C/L at the core acceptance point, through ``synth-engine bench``.

C=1024 in flight against ``synth-engine sim --latency-ms 1000`` in its own process,
20,000 requests (limit 1,024 req/s); reports the overall rate (N / wall) and the
sustained rate (whole waves in the middle of the run, see ``engine/bench.py``).
``grid`` sweeps C, L and streaming on the sim and on nginx.

    python -m benchmarks.throughput [--requests 20000] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from benchmarks._common import (
    CpuWatch,
    bench_cmd,
    exit_on_sigterm,
    run_json,
    sim_server,
    write_result,
)


def point(concurrency: int, latency_ms: float, requests: int, stream: bool) -> dict[str, Any]:
    """One measurement against a fresh sim."""
    with sim_server("--latency-ms", str(latency_ms)) as url:
        cmd = bench_cmd(url, requests=requests, concurrency=concurrency, max_tokens=32)
        if stream:
            cmd.append("--stream")
        with CpuWatch() as watch:
            r = run_json(cmd)
    limit = concurrency / (latency_ms / 1000.0)
    steady = r["steady_requests_per_s"]
    return {
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "stream": stream,
        "requests": requests,
        "limit_req_s": limit,
        "req_s": r["requests_per_s"],
        "pct_of_limit": round(100.0 * r["requests_per_s"] / limit, 1),
        "steady_req_s": steady,
        "steady_pct_of_limit": round(100.0 * steady / limit, 1) if steady else None,
        "failed": r["failed"],
        "cpu_us_per_request": r["cpu_us_per_request"],
        "p50_ms": r["latency_ms"]["p50"],
        "p99_ms": r["latency_ms"]["p99"],
        **watch.noise(),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure the point; print it; 1 if the sustained rate is under 95% of the limit."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=None, help="default 20000")
    ap.add_argument("--concurrency", type=int, default=1024)
    ap.add_argument("--latency-ms", type=float, default=1000.0)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--quick", action="store_true", help="5000 requests; writes results/quick/")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    n = args.requests or (5000 if args.quick else 20000)
    row = point(args.concurrency, args.latency_ms, n, args.stream)
    print(
        f"C={row['concurrency']} L={row['latency_ms']:g} ms stream={row['stream']}: limit "
        f"{row['limit_req_s']:g} req/s, overall {row['req_s']} ({row['pct_of_limit']}%), "
        f"sustained {row['steady_req_s']} ({row['steady_pct_of_limit']}%), client "
        f"{row['cpu_us_per_request']} us/request, p99 {row['p99_ms']} ms, "
        f"foreign CPU {row['foreign_cpu_pct']}%"
    )
    ok = (row["steady_pct_of_limit"] or 0) >= 95.0
    path = write_result(
        "throughput", {"points": [row], "acceptance": {"met": ok}}, quick=args.quick
    )
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

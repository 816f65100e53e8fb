"""Throughput vs the physical limit min(C/L, RPM/60, TPM/tokens/60), through ``synth-engine bench``.

Default: the core acceptance point, C=1024 in flight against a sim with L=1 s latency,
20,000 requests (limit 1,024 req/s). ``--grid`` sweeps C and L, plain and streamed.

    python benchmarks/throughput.py [--grid] [--requests 20000]
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import bench_cmd, run_json, sim_server, write_result


def point(concurrency: int, latency_ms: float, requests: int, stream: bool) -> dict[str, object]:
    with sim_server("--latency-ms", str(latency_ms)) as url:
        cmd = bench_cmd(url, requests=requests, concurrency=concurrency, max_tokens=32)
        if stream:
            cmd.append("--stream")
        r = run_json(cmd)
    limit = concurrency / (latency_ms / 1000.0)
    return {
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "stream": stream,
        "limit_req_s": limit,
        "req_s": r["requests_per_s"],
        "pct_of_limit": round(100.0 * r["requests_per_s"] / limit, 1),
        "steady_req_s": r["steady_requests_per_s"],
        "steady_pct_of_limit": (
            round(100.0 * r["steady_requests_per_s"] / limit, 1)
            if r["steady_requests_per_s"]
            else None
        ),
        "failed": r["failed"],
        "cpu_us_per_request": r["cpu_us_per_request"],
        "p50_ms": r["latency_ms"]["p50"],
        "p99_ms": r["latency_ms"]["p99"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grid", action="store_true")
    ap.add_argument("--requests", type=int, default=20000)
    args = ap.parse_args()
    if args.grid:
        points = [
            (c, float(lat), s) for c in (64, 256, 1024) for lat in (50, 1000) for s in (False, True)
        ]
    else:
        points = [(1024, 1000.0, False)]
    rows: list[dict[str, Any]] = []
    print(
        f"{'C':>5} {'L ms':>6} {'stream':>6} {'limit/s':>8} {'req/s':>8} {'% limit':>8} "
        f"{'steady/s':>9} {'steady %':>9} {'CPU us/req':>10} {'p99 ms':>8}"
    )
    for c, lat, s in points:
        n = min(args.requests, max(2000, int(c / (lat / 1000.0) * 10)))
        row = point(c, lat, n, s)
        rows.append(row)
        print(
            f"{c:>5} {lat:>6} {s!s:>6} {row['limit_req_s']:>8.0f} {row['req_s']:>8} {row['pct_of_limit']:>8} "
            f"{row['steady_req_s']!s:>9} {row['steady_pct_of_limit']!s:>9} {row['cpu_us_per_request']:>10} "
            f"{row['p99_ms']:>8}"
        )
    path = write_result("throughput", {"points": rows})
    print(f"wrote {path}")
    # Acceptance: the sustained (steady-state) rate at L >= 1 s reaches 95% of C/L.
    checked = [r for r in rows if float(r["latency_ms"]) >= 1000]
    return 0 if all((r["steady_pct_of_limit"] or 0) >= 95.0 for r in checked) else 1


if __name__ == "__main__":
    raise SystemExit(main())

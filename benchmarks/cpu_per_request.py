"""CPU per request: ``synth-engine bench`` vs a bare aiohttp + uvloop client, same sim, one run.

Both clients run in their own process against one ``synth-engine sim`` (50 ms latency)
in a third, with 256 requests in flight; each reports its own process CPU time for the
request phase. Prints a table and the ratio, and writes benchmarks/results/cpu_per_request.json.
(``cpu_peers`` compares more clients against nginx, which costs almost no CPU.)

    python -m benchmarks.cpu_per_request [--requests 20000] [--concurrency 256] [--quick]
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

BARE = "benchmarks/_bare_client.py"


def main(argv: list[str] | None = None) -> int:
    """Measure both clients; print the table; 1 if the ratio misses 1.3."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=None, help="per client (20000)")
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="5000 requests; writes results/quick/")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    n = args.requests or (5000 if args.quick else 20000)
    rows: dict[str, dict[str, Any]] = {}
    with sim_server("--latency-ms", str(args.latency_ms)) as url:
        # Warm the server (first connections, code paths) with a short bare run.
        run_json([sys.executable, BARE, url, "sim-model", "2000", "64", str(args.max_tokens)])
        cmds = {
            "bare aiohttp + uvloop": [
                sys.executable, BARE, url, "sim-model", str(n), str(args.concurrency),
                str(args.max_tokens),
            ],
            "synth-engine bench": bench_cmd(
                url, requests=n, concurrency=args.concurrency, max_tokens=args.max_tokens
            ),
        }  # fmt: skip
        for name, cmd in cmds.items():
            with CpuWatch() as watch:
                rows[name] = {**run_json(cmd), **watch.noise()}
    bare = rows["bare aiohttp + uvloop"]["cpu_us_per_request"]
    ours = rows["synth-engine bench"]["cpu_us_per_request"]
    ratio = round(ours / bare, 3)
    print(f"{'client':<24} {'requests':>9} {'req/s':>8} {'CPU us/req':>11} {'peak RSS MB':>12}")
    for name, r in rows.items():
        print(
            f"{name:<24} {r['ok']:>9} {r['requests_per_s']:>8} {r['cpu_us_per_request']:>11} "
            f"{r['peak_rss_mb']:>12}"
        )
    print(f"ratio engine/bare CPU per request: {ratio} (target <= 1.3)")
    settings = {**vars(args), "requests": n}
    path = write_result(
        "cpu_per_request",
        {
            "settings": settings,
            "clients": rows,
            "ratio": ratio,
            "acceptance": {"met": ratio <= 1.3},
        },
        quick=args.quick,
    )
    print(f"wrote {path}")
    return 0 if ratio <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())

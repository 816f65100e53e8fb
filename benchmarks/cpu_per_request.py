"""CPU per request: ``synth-engine bench`` vs a bare aiohttp + uvloop client, same sim, one run.

Both clients run in their own process against one ``synth-engine sim`` (50 ms latency)
in a third, with 256 requests in flight; each reports its own process CPU time for the
request phase. Prints a table and the ratio, and writes benchmarks/results/cpu_per_request.json.

    python benchmarks/cpu_per_request.py [--requests 20000] [--concurrency 256]
"""

from __future__ import annotations

import argparse
import sys

from _common import bench_cmd, run_json, sim_server, write_result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    rows = {}
    with sim_server("--latency-ms", str(args.latency_ms)) as url:
        # Warm the server (first connections, code paths) with a short bare run.
        run_json(
            [
                sys.executable,
                "benchmarks/_bare_client.py",
                url,
                "sim-model",
                "2000",
                "64",
                str(args.max_tokens),
            ]
        )
        rows["bare aiohttp + uvloop"] = run_json(
            [
                sys.executable,
                "benchmarks/_bare_client.py",
                url,
                "sim-model",
                str(args.requests),
                str(args.concurrency),
                str(args.max_tokens),
            ]
        )
        rows["synth-engine bench"] = run_json(
            bench_cmd(
                url,
                requests=args.requests,
                concurrency=args.concurrency,
                max_tokens=args.max_tokens,
            )
        )
    bare = rows["bare aiohttp + uvloop"]["cpu_us_per_request"]
    ours = rows["synth-engine bench"]["cpu_us_per_request"]
    ratio = round(ours / bare, 3)
    print(f"{'client':<24} {'requests':>9} {'req/s':>8} {'CPU us/req':>11} {'peak RSS MB':>12}")
    for name, r in rows.items():
        print(
            f"{name:<24} {r['ok']:>9} {r['requests_per_s']:>8} {r['cpu_us_per_request']:>11} {r['peak_rss_mb']:>12}"
        )
    print(f"ratio engine/bare CPU per request: {ratio} (target <= 1.3)")
    path = write_result(
        "cpu_per_request", {"settings": vars(args), "clients": rows, "ratio": ratio}
    )
    print(f"wrote {path}")
    return 0 if ratio <= 1.3 else 1


if __name__ == "__main__":
    raise SystemExit(main())

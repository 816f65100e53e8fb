"""Limiter accuracy: quota used and 429s against a sim that enforces rpm/tpm.

Two runs of ``synth-engine bench`` for ``--duration`` seconds each against
``synth-engine sim --rpm 600 --tpm 60000``:

1. configured with the same limits: expect 0 429s and >= 97% of the request quota;
2. configured with no limits: the gate learns them from x-ratelimit-* headers; expect
   429s under 1% of requests after the first 10 seconds.

Windows over quota are counted from the sim's per-second admission log (sliding 60 s).

    python benchmarks/limiter_accuracy.py [--duration 120]
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import bench_cmd, run_json, sim_server, sim_stats, write_result


def windows_over(per_second: list[list[float]], limit: float, key: int) -> int:
    counts: dict[int, float] = {}
    for row in per_second:
        counts[int(row[0])] = counts.get(int(row[0]), 0.0) + float(row[key])
    if not counts:
        return 0
    lo, hi = min(counts), max(counts)
    over = 0
    for start in range(lo, hi + 1):
        if sum(counts.get(s, 0.0) for s in range(start, start + 60)) > limit:
            over += 1
    return over


def run(
    duration: float, rpm: float, tpm: float, configured: bool, concurrency: int
) -> dict[str, Any]:
    with sim_server("--latency-ms", "50", "--rpm", str(rpm), "--tpm", str(tpm)) as url:
        cmd = bench_cmd(
            url,
            requests=1_000_000,
            concurrency=concurrency,
            max_tokens=32,
            extra=("--duration-s", str(duration)),
        )
        if configured:
            cmd += ["--rpm", str(rpm), "--tpm", str(tpm)]
        report = run_json(cmd, timeout=duration + 300)
        stats = sim_stats(url)
    per_second = stats.get("per_second", [])
    late = [r for r in stats.get("per_second_429", []) if r[0] >= 10]
    late_429 = sum(int(r[1]) for r in late)
    late_requests = sum(int(r[1]) for r in per_second if r[0] >= 10) + late_429
    # Quota over the time requests were actually sent (workers already waiting at the
    # gate when the deadline passes still go, at the paced rate).
    quota = rpm * float(report["wall_s"]) / 60.0
    return {
        "configured_limits": configured,
        "duration_s": duration,
        "wall_s": report["wall_s"],
        "ok": report["ok"],
        "http_429_client": report["http_429"],
        "http_429_sim": stats.get("rate_limited", None),
        "pct_request_quota_used": round(100.0 * report["ok"] / quota, 1),
        "late_429_pct": round(100.0 * late_429 / late_requests, 2) if late_requests else 0.0,
        "windows_over_rpm": windows_over(per_second, rpm, 1),
        "windows_over_tpm": windows_over(per_second, tpm, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--rpm", type=float, default=600.0)
    ap.add_argument("--tpm", type=float, default=60000.0)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    rows = [
        run(args.duration, args.rpm, args.tpm, configured, args.concurrency)
        for configured in (True, False)
    ]
    for r in rows:
        print(r)
    path = write_result("limiter_accuracy", {"settings": vars(args), "runs": rows})
    print(f"wrote {path}")
    a, b = rows
    ok = (
        a["http_429_client"] == 0
        and a["pct_request_quota_used"] >= 97.0
        and b["late_429_pct"] < 1.0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

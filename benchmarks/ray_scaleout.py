"""Scale-out on Ray: 1, 2 and 4 workers sharing one endpoint's quota.

For each worker count, ``run_on_ray`` runs the ``respond`` pipeline over more input
than the quota allows in ``--duration`` seconds against one ``synth-engine sim``
process enforcing rpm 600 / tpm 60,000 (the same limits as ``limiter_accuracy.py``),
with the same limits in the config, then stops the run (the workers drain their items
in flight). The sim's per-second admission log gives:

* throughput: requests/s (and items/s) over the seconds requests were admitted;
* % of quota used: admitted requests (tokens) over rpm (tpm) x that time;
* windows over quota: 60-second windows (1 s steps) holding more than rpm (tpm), and
  the sim's own 429 count.

Target: 4 workers use >= 95% of the quota with 0 windows over it.

    python -m benchmarks.ray_scaleout [--duration 90] [--workers 1 2 4] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, exit_on_sigterm, sim_server, sim_stats, write_result
from engine import load_config
from engine.distributed import run_on_ray


def windows_over(per_second: list[list[float]], limit: float, key: int) -> int:
    """60 s windows (1 s steps, any overlapping the log) holding more than ``limit``."""
    counts: dict[int, float] = {}
    for row in per_second:
        counts[int(row[0])] = counts.get(int(row[0]), 0.0) + float(row[key])
    if not counts:
        return 0
    lo, hi = min(counts), max(counts)
    return sum(
        sum(counts.get(s, 0.0) for s in range(start, start + 60)) > limit
        for start in range(lo - 59, hi + 1)
    )


def run(workers: int, duration: float, rpm: float, tpm: float, tmp: Path) -> dict[str, Any]:
    inp = tmp / f"input-{workers}.jsonl"
    n_items = int(rpm * (duration + 60) / 60)  # more than the quota allows in time
    inp.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "instruction": f"Explain idea number {i} briefly."}) + "\n"
            for i in range(n_items)
        )
    )
    out = tmp / f"out-{workers}"
    with sim_server("--latency-ms", "50", "--rpm", str(rpm), "--tpm", str(tpm)) as url:
        config = load_config(
            ROOT / "configs" / "respond.toml",
            [
                f"run.input={inp}",
                f"run.output={out}",
                "run.max_items_in_flight=8",  # enough demand; a stop drains these at the paced rate
                "method.respond.max_tokens=32",
                f"endpoints.strong.base_url={url}",
                "endpoints.strong.sim={}",
                f"endpoints.strong.rpm={rpm}",
                f"endpoints.strong.tpm={tpm}",
                "endpoints.strong.max_concurrency=32",
                "endpoints.strong.adaptive_concurrency=false",
            ],
        )

        async def main() -> Any:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(duration, stop.set)
            return await run_on_ray(config, workers=workers, stop=stop)

        t0 = time.monotonic()
        result = asyncio.run(main())
        wall = time.monotonic() - t0
        stats = sim_stats(url)
    per_second = stats.get("per_second", [])
    seconds = [int(r[0]) for r in per_second]
    active = (max(seconds) - min(seconds) + 1) if seconds else 0
    requests = sum(int(r[1]) for r in per_second)
    tokens = sum(float(r[2]) for r in per_second)
    items = result.manifest.totals.get("items", 0) if result.manifest else 0
    lease = result.leases.get("strong")
    pct_rpm = 100.0 * requests / (rpm * active / 60.0) if active else 0.0
    pct_tpm = 100.0 * tokens / (tpm * active / 60.0) if active else 0.0
    return {
        "workers": workers,
        "duration_s": duration,
        "wall_s": round(wall, 1),
        "active_s": active,
        "requests": requests,
        "items": items,
        "requests_per_s": round(requests / active, 2) if active else 0.0,
        "items_per_s": round(items / active, 2) if active else 0.0,
        "pct_request_quota_used": round(pct_rpm, 1),
        "pct_token_quota_used": round(pct_tpm, 1),
        "pct_quota_used": round(max(pct_rpm, pct_tpm), 1),
        "windows_over_rpm": windows_over(per_second, rpm, 1),
        "windows_over_tpm": windows_over(per_second, tpm, 2),
        "http_429_sim": stats.get("http_429", 0),
        "lease_grants": lease.grants if lease else None,
        "lease_peak_allocated": round(lease.max_allocated, 4) if lease else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=90.0)
    ap.add_argument("--rpm", type=float, default=600.0)
    ap.add_argument("--tpm", type=float, default=60000.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--quick", action="store_true", help="20 s runs into results/quick/")
    args = ap.parse_args()
    if args.quick:
        args.duration = min(args.duration, 20.0)
    exit_on_sigterm()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [run(w, args.duration, args.rpm, args.tpm, Path(tmp)) for w in args.workers]
    finally:
        ray.shutdown()
    for r in rows:
        print(r)
    path = write_result("ray_scaleout", {"settings": vars(args), "runs": rows}, quick=args.quick)
    print(f"wrote {path}")
    four = [r for r in rows if r["workers"] == 4]
    ok = all(
        r["windows_over_rpm"] == 0 and r["windows_over_tpm"] == 0 and r["http_429_sim"] == 0
        for r in rows
    ) and all(r["pct_quota_used"] >= 95.0 for r in four)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

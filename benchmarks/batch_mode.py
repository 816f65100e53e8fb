"""Batch mode against online mode: 10,000 CodecLM items on the simulated endpoint.

One ``synth-engine sim`` process (50 ms latency online; batches processed in simulated
time) serves both runs of the same job: CodecLM with ``metadata_count = N`` and one basic
instruction per metadata item (N items, about seven calls each), strong and target on the
sim, priced as gpt-4o and gpt-4o-mini. Each run is a CLI process; its CPU time and peak
RSS are read from the OS when it exits. Printed and written to
``benchmarks/results/batch_mode.json``: requests, batches, wall time, client CPU, peak
RSS, cost at batch prices and what the same tokens cost online, and whether both runs
wrote the same rows.

    python -m benchmarks.batch_mode [--items 10000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from benchmarks._common import ROOT, loadavg, sim_server, sim_stats, write_result
from engine.io.shards import KINDS, iter_rows

DEMO = ROOT / "configs" / "demo.toml"
# Simulated time runs 60 times faster than real time: a batch "processed in a minute"
# takes a second, the 24-hour window 24 minutes.
BATCHES = {"speed": 60.0, "processing_s": 60.0, "validating_s": 5.0, "finalizing_s": 5.0}
PRICES = {
    "strong": "{prompt = 2.5, completion = 10.0}",
    "target": "{prompt = 0.15, completion = 0.6}",
}


def _sets(out: Path, url: str, items: int, mode: str) -> list[str]:
    sets = [
        f"run.output={out}",
        f"method.codeclm.metadata_count={items}",
        "method.codeclm.instructions_per_metadata=1",
        "run.shard_records=2000",
        "run.watchdog_s=0",
    ]
    for ep in ("strong", "target"):
        sets += [
            f"endpoints.{ep}.base_url={url}",
            f"endpoints.{ep}.sim={{}}",
            f"endpoints.{ep}.mode={mode}",
            f"endpoints.{ep}.price={PRICES[ep]}",
            f"endpoints.{ep}.max_concurrency=64",
            f"endpoints.{ep}.batch={{max_wait_s = 2, poll_s = 0.5, poll_max_s = 2}}",
        ]
    return sets


def _run(out: Path, url: str, items: int, mode: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "engine", "run", str(DEMO), "--quiet"]
    for item in _sets(out, url, items, mode):
        cmd += ["--set", item]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=7200, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 5):
        raise RuntimeError(f"{mode} run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    spend = manifest["extra"]["spend"]
    cost = sum(c["cost"] for per in spend.values() for c in per.values())
    requests = sum(e["requests"] for e in report["endpoints"].values())
    batch = report["method_report"].get("batch") or {}
    return {
        "mode": mode,
        "items": manifest["totals"]["items"],
        "rows": {k: manifest["totals"][k] for k in KINDS},
        "requests": requests,
        "batches": sum(b["batches_submitted"] for b in batch.values()),
        "requests_resubmitted": sum(b["requests_resubmitted"] for b in batch.values()),
        "wall_s": round(wall, 1),
        "client_cpu_s": round(
            (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 1
        ),
        "client_peak_rss_mib": round(after.ru_maxrss / 1024, 1),
        "cost_usd": round(cost, 4),
        "online_cost_usd": round(report["method_report"].get("online_cost_usd", cost), 4),
    }


def _rows(out: Path) -> dict[str, str]:
    return {r["id"]: json.dumps(r, sort_keys=True) for kind in KINDS for r in iter_rows(out, kind)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--items", type=int, default=None, help="CodecLM items (10000)")
    ap.add_argument("--quick", action="store_true", help="500 items; writes results/quick/")
    args = ap.parse_args(argv)
    items = args.items or (500 if args.quick else 10_000)
    rows: list[dict[str, Any]] = []
    with (
        TemporaryDirectory(prefix="synth-batch-") as tmp,
        sim_server("--latency-ms", "50", "--batches", json.dumps(BATCHES)) as url,
    ):
        work = Path(tmp)
        load = loadavg()
        rows = [_run(work / mode, url, items, mode) for mode in ("online", "batch")]
        same = _rows(work / "online") == _rows(work / "batch")
        stats = sim_stats(url)["batches"]
    twice = sum(1 for n in stats["submissions_by_custom_id"].values() if n > 1)
    print(f"{'mode':<7} {'items':>6} {'requests':>9} {'batches':>8} {'wall s':>7} {'CPU s':>6} "
          f"{'RSS MiB':>8} {'cost $':>8} {'online $':>9}")  # fmt: skip
    for r in rows:
        print(
            f"{r['mode']:<7} {r['items']:>6} {r['requests']:>9} {r['batches']:>8} "
            f"{r['wall_s']:>7} {r['client_cpu_s']:>6} {r['client_peak_rss_mib']:>8} "
            f"{r['cost_usd']:>8} {r['online_cost_usd']:>9}"
        )
    print(f"same rows: {same}; requests submitted twice: {twice}")
    path = write_result(
        "batch_mode",
        {
            "items": items,
            "runs": rows,
            "same_rows": same,
            "submitted_twice": twice,
            "sim_batches": BATCHES,
            "loadavg_before": load,
        },
        quick=args.quick,
    )
    print(f"written {path}")
    return 0 if same and twice == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

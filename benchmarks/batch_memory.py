"""Where batch mode's memory goes: peak RSS by items in flight, and a tracemalloc breakdown.

The figures in docs/batch.md ("Memory") were measured with this script on the simulated
endpoint (the sim in its own process; CodecLM with one instruction per metadata item):

    python -m benchmarks.batch_memory rss --items 2000
        peak RSS of three CLI runs: online; batch (every item in flight); batch with
        ``batch.max_requests = 250`` (250 items in flight)
    python -m benchmarks.batch_memory trace --items 1000
        one batch run in this process under tracemalloc: the traced peak grouped by the
        innermost engine frame of each allocation

It prints its figures and writes no result file (batch_mode.py measures the 10,000-item
runs).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from tempfile import TemporaryDirectory

from benchmarks._common import ROOT, sim_server
from engine import Engine, load_config

__all__ = ("main",)

DEMO = ROOT / "configs" / "demo.toml"
BATCHES = {"speed": 60.0, "processing_s": 60.0, "validating_s": 5.0, "finalizing_s": 5.0}


def _sets(out: Path, url: str, items: int, mode: str, max_requests: int | None) -> list[str]:
    sets = [
        f"run.output={out}",
        f"method.codeclm.metadata_count={items}",
        "method.codeclm.instructions_per_metadata=1",
        "run.watchdog_s=0",
    ]
    limit = f", max_requests = {max_requests}" if max_requests else ""
    for ep in ("strong", "target"):
        sets += [
            f"endpoints.{ep}.base_url={url}",
            f"endpoints.{ep}.sim={{}}",
            f"endpoints.{ep}.mode={mode}",
            f"endpoints.{ep}.max_concurrency=64",
            f"endpoints.{ep}.batch={{max_wait_s = 2, poll_s = 0.5, poll_max_s = 2{limit}}}",
        ]
    return sets


def rss(items: int) -> None:
    with (
        TemporaryDirectory(prefix="synth-batch-mem-") as tmp,
        sim_server("--latency-ms", "1", "--batches", json.dumps(BATCHES)) as url,
    ):
        for mode, max_requests in (("online", None), ("batch", None), ("batch", 250)):
            out = Path(tmp) / f"{mode}-{max_requests}"
            cmd = [sys.executable, "-m", "engine", "run", str(DEMO), "--quiet"]
            for item in _sets(out, url, items, mode, max_requests):
                cmd += ["--set", item]
            start = time.monotonic()
            proc = subprocess.Popen(cmd, cwd=ROOT)
            _, status, usage = os.wait4(proc.pid, 0)
            report = json.loads((out / "report.json").read_text())
            batches = sum(
                int(b["batches_submitted"])
                for b in (report["method_report"].get("batch") or {}).values()
            )
            print(
                f"{mode:<6} max_requests={max_requests} exit={os.waitstatus_to_exitcode(status)} "
                f"peak_rss_mib={usage.ru_maxrss / 1024:.1f} "
                f"wall_s={time.monotonic() - start:.1f} batches={batches}"
            )


async def _traced(items: int, url: str, out: Path) -> tracemalloc.Snapshot:
    best: tuple[int, tracemalloc.Snapshot | None] = (0, None)
    tracemalloc.start(12)

    async def watch() -> None:
        nonlocal best
        while True:
            await asyncio.sleep(0.5)
            current, _ = tracemalloc.get_traced_memory()
            if current > best[0]:
                best = (current, tracemalloc.take_snapshot())

    watcher = asyncio.create_task(watch())
    try:
        async with Engine(load_config(DEMO, _sets(out, url, items, "batch", None))) as engine:
            await engine.run()
    finally:
        watcher.cancel()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(f"traced peak {peak / 2**20:.1f} MiB")
    assert best[1] is not None, "the run ended before the first snapshot"
    return best[1]


def trace(items: int) -> None:
    with (
        TemporaryDirectory(prefix="synth-batch-mem-") as tmp,
        sim_server("--latency-ms", "1", "--batches", json.dumps(BATCHES)) as url,
    ):
        snapshot = asyncio.run(_traced(items, url, Path(tmp) / "batch"))
    groups: collections.Counter[str] = collections.Counter()
    for t in snapshot.traces:
        engine_frames = [f.filename for f in t.traceback if "/engine/" in f.filename]
        groups[engine_frames[-1].split("/engine/")[1] if engine_frames else "other"] += t.size
    print(f"largest snapshot {sum(groups.values()) / 2**20:.1f} MiB, by innermost engine frame:")
    for name, size in groups.most_common(15):
        print(f"{size / 2**20:7.1f} MiB  {name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", choices=("rss", "trace"))
    ap.add_argument("--items", type=int, default=2000)
    args = ap.parse_args(argv)
    (rss if args.what == "rss" else trace)(args.items)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

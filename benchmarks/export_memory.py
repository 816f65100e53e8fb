"""``synth-engine export`` on a small and a 10x larger output: time and peak memory per format.

Writes CodecLM-shaped outputs (the viewer benchmark's rows: ~1 KB each, about a quarter
kept) of N and 10*N items with the engine's own ``ShardSink`` (reused when already there),
then exports each in every format in a fresh ``python -m engine export`` process and
reads that process's peak RSS from the kernel (``wait4``'s ``ru_maxrss``). The claims it
checks (docs/export.md): ``messages`` and ``parquet`` stream, so their peak memory grows
by under 25% while the rows grow tenfold; ``hf`` stays under twice (``datasets``
memory-maps the Arrow data it copies into ``save_to_disk``'s shards, and mapped pages
count in RSS); and every kept row is exported.

    python -m benchmarks.export_memory [--items 40000] [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, exit_on_sigterm, write_result
from benchmarks.viewer_open import make_output

FORMATS = ("messages", "parquet", "hf")


def export_once(out: Path, fmt: str, target: Path) -> dict[str, Any]:
    """One export in a fresh process: wall time, peak RSS, rows."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "export", str(out), "--format", fmt],
        cwd=ROOT,
        env=env | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"export {fmt} of {out} failed: {stderr[-2000:]}")
    record = json.loads((target / "export.json").read_text())
    return {
        "format": fmt,
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "rows": record["rows"],
        "bytes": sum(f["bytes"] for f in record["files"]),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure; write results/export_memory.json; 1 if the memory claim does not hold."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=40_000, help="items of the small output")
    ap.add_argument("--out", type=Path, default=None, help="where the outputs are written")
    ap.add_argument("--quick", action="store_true", help="4,000 items (a smoke run)")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    items = 4_000 if args.quick else args.items
    base = args.out or Path(tempfile.gettempdir()) / "synth-engine-export-bench"
    runs: list[dict[str, Any]] = []
    for n in (items, items * 10):
        out = base / f"codeclm-{n}"
        totals = make_output(out, n)
        for fmt in FORMATS:
            result = export_once(out, fmt, out / f"export-{fmt}")
            result.update(items=n, kept=totals.get("kept", 0))
            runs.append(result)
            print(json.dumps(result), flush=True)
    checks = {}
    for fmt in FORMATS:
        small, large = (r for r in runs if r["format"] == fmt)
        growth = large["peak_rss_mib"] / small["peak_rss_mib"]
        limit = 2.0 if fmt == "hf" else 1.25
        checks[fmt] = {
            "rss_growth_for_10x_rows": round(growth, 2),
            "limit": limit,
            "flat": growth < limit,
            "all_kept_rows": small["rows"] == small["kept"] and large["rows"] == large["kept"],
        }
    ok = all(c["flat"] and c["all_kept_rows"] for c in checks.values())
    path = write_result(
        "export_memory", {"runs": runs, "checks": checks, "ok": ok}, quick=args.quick
    )
    print(json.dumps({"checks": checks, "ok": ok, "written": str(path)}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

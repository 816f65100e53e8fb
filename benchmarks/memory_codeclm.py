"""Peak RSS of a CodecLM run against the number of seeds (flat memory check).

For each size N, writes N distinct seed instructions as JSONL into a temp dir and runs
``python -m engine run configs/demo.toml`` on them with ``metadata_count = N``, one
instruction per metadata item and one iteration (so a run makes about 7 calls per seed
and 1M seeds stay feasible), against one external ``synth-engine sim`` process at
latency 0 ("fast mode": the sim's own memory is not counted). Peak RSS is the run
process's own ``ru_maxrss`` (from ``os.wait4`` on it), cross-checked by sampling its
RSS with psutil. Sizes already in the results file and not re-measured are kept, each
row with its own date and commit. Prints a table and writes
``benchmarks/results/memory_codeclm.json``.

    python -m benchmarks.memory_codeclm                       # 10k and 100k
    python -m benchmarks.memory_codeclm --sizes 1000000 --timeout 7200
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

import psutil

from benchmarks._common import (
    ROOT,
    exit_on_sigterm,
    loadavg,
    machine,
    results_dir,
    sim_server,
    write_result,
)

__all__ = ("main", "measure", "write_seeds")

_TOPICS = (
    "a leaking tap, a budget spreadsheet, a cover letter, binary search, photosynthesis, "
    "a birthday speech, tax brackets, a chess opening, sourdough bread, SQL joins"
).split(", ")


def write_seeds(path: Path, n: int) -> None:
    """``n`` distinct seed instructions (``{"id", "instruction"}`` JSONL)."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            topic = _TOPICS[i % len(_TOPICS)]
            text = f"Seed {i}: explain {topic} to a beginner, with example number {i // 10}."
            f.write(json.dumps({"id": f"seed-{i}", "instruction": text}) + "\n")


def run_args(seeds: Path, out: Path, url: str, n: int, in_flight: int) -> list[str]:
    """The ``synth-engine run`` command line."""
    sets = [
        f"run.input={seeds}",
        f"run.output={out}",
        f"run.max_items_in_flight={in_flight}",
        "run.shard_records=1000",
        f"method.codeclm.metadata_count={n}",
        "method.codeclm.instructions_per_metadata=1",
        "method.codeclm.max_iterations=1",
    ]
    for ep in ("strong", "target"):
        sets += [
            f"endpoints.{ep}.base_url={url}",
            f"endpoints.{ep}.sim={{}}",
            f"endpoints.{ep}.adaptive_concurrency=false",
        ]
    cmd = [sys.executable, "-m", "engine", "run", str(ROOT / "configs" / "demo.toml"), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def measure(n: int, url: str, timeout: float, in_flight: int = 256) -> dict[str, Any]:
    """One run on ``n`` seeds: wall time, peak RSS (exact and sampled), totals."""
    with tempfile.TemporaryDirectory(prefix="codeclm-mem-") as tmp:
        seeds = Path(tmp) / "seeds.jsonl"
        write_seeds(seeds, n)
        out = Path(tmp) / "out"
        stderr_path = Path(tmp) / "stderr.txt"
        load0 = loadavg()
        started = machine()  # the code the run imports is the tree as it is now
        t0 = time.perf_counter()
        with stderr_path.open("w") as err:
            proc = subprocess.Popen(
                run_args(seeds, out, url, n, in_flight),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        watched = psutil.Process(proc.pid)
        sampled = 0
        status = None
        maxrss_kib = 0
        timed_out = False
        while status is None:
            pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                status = os.waitstatus_to_exitcode(wait_status)
                maxrss_kib = usage.ru_maxrss
                proc.returncode = status  # reaped here: keep Popen from waiting again
                break
            try:
                sampled = max(sampled, watched.memory_info().rss)
            except psutil.Error:
                pass
            if time.perf_counter() - t0 > timeout and not timed_out:
                proc.kill()  # bounded: the run is killed past its time limit
                timed_out = True
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        manifest_path = out / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        report_path = out / "report.json"
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        stderr = stderr_path.read_text()
    m = machine()
    return {
        "seeds": n,
        "returncode": status,
        "timed_out": timed_out,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(maxrss_kib / 1024, 1),
        "sampled_peak_rss_mib": round(sampled / 2**20, 1),
        "totals": manifest.get("totals"),
        "complete": manifest.get("complete"),
        "method_report": report.get("method_report") if isinstance(report, dict) else None,
        "stderr_tail": stderr[-500:] if status else "",
        "date": started["date"],
        "commit": started["commit"],
        "finished": m["date"],
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure each size; print and save the table (merged with earlier sizes)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="default 10000 100000")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    ap.add_argument("--in-flight", type=int, default=256, help="run.max_items_in_flight")
    ap.add_argument("--quick", action="store_true", help="1k and 10k seeds; writes results/quick/")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    sizes = args.sizes or ([1_000, 10_000] if args.quick else [10_000, 100_000])
    fresh: list[dict[str, Any]] = []
    with sim_server("--latency-ms", "0") as url:
        for n in sizes:
            row = measure(n, url, args.timeout, args.in_flight)
            fresh.append(row)
            print(
                f"{n} seeds: peak RSS {row['peak_rss_mib']} MiB (sampled "
                f"{row['sampled_peak_rss_mib']}), {row['wall_s']} s, rc {row['returncode']}",
                flush=True,
            )
    path = results_dir(args.quick) / "memory_codeclm.json"
    earlier = json.loads(path.read_text())["runs"] if path.exists() else []
    measured = {r["seeds"] for r in fresh}
    rows = sorted(
        [r for r in earlier if r["seeds"] not in measured] + fresh, key=lambda r: r["seeds"]
    )
    base = next((r["peak_rss_mib"] for r in rows if r["returncode"] == 0), 0.0)
    for r in rows:
        r["rss_ratio_vs_smallest"] = round(r["peak_rss_mib"] / base, 3) if base else None
    print(f"{'seeds':>9} {'peak RSS MiB':>13} {'ratio':>6} {'wall s':>8} {'rc':>3}  totals")
    for r in rows:
        print(
            f"{r['seeds']:>9} {r['peak_rss_mib']:>13} {r['rss_ratio_vs_smallest']!s:>6} "
            f"{r['wall_s']:>8} {r['returncode']!s:>3}  {r['totals']}"
        )
    big = [r for r in rows if r["seeds"] >= 1_000_000 and r["returncode"] == 0]
    met = bool(big) and all((r["rss_ratio_vs_smallest"] or 99) <= 1.2 for r in big)
    out = write_result(
        "memory_codeclm",
        {
            "settings": {
                "sim_latency_ms": 0,
                "max_items_in_flight": args.in_flight,
                "instructions_per_metadata": 1,
                "max_iterations": 1,
                "config": "configs/demo.toml",
            },
            "runs": rows,
            "acceptance": {"target": "RSS(1M) <= 1.2 x RSS(10k)", "met": met if big else None},
        },
        quick=args.quick,
    )
    print(f"wrote {out}")
    return 0 if all(r["returncode"] == 0 for r in fresh) else 1


if __name__ == "__main__":
    sys.exit(main())

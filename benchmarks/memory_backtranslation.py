"""Peak RSS of a backtranslation run against corpus size (flat memory check).

For each size, writes a synthetic JSONL corpus of N distinct segments into a temp dir and
runs ``python -m engine run configs/backtranslation.toml`` on it in a subprocess, with the
in-process simulated endpoints at latency 0. Each run is measured in its own wrapper
process (``--one``) so ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` is that run's
peak RSS alone. Sizes already in the results file and not re-measured are kept, each
row with its own date and commit. Prints a table and writes
``benchmarks/results/memory_backtranslation.json``.

    python -m benchmarks.memory_backtranslation                  # 10k and 100k
    python -m benchmarks.memory_backtranslation --sizes 1000000 --timeout 7200
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    ROOT,
    exit_on_sigterm,
    loadavg,
    machine,
    results_dir,
    write_result,
)

__all__ = ("main", "measure_one", "write_corpus")

_WORDS = (
    "garden river engine market winter theory signal recipe planet harbor "
    "lantern budget canvas thunder pocket meadow circuit ledger anchor violin"
).split()


def write_corpus(path: Path, n: int) -> None:
    """``n`` distinct JSONL segments of ~300-400 characters, each with a title."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            words = [_WORDS[(i * 7 + j * 3 + (i >> j % 8)) % len(_WORDS)] for j in range(48)]
            text = f"Record {i}. " + " ".join(words) + "."
            f.write(json.dumps({"id": f"doc-{i}", "title": f"Topic {i % 997}", "text": text}))
            f.write("\n")


def measure_one(n: int, timeout: float) -> dict[str, Any]:
    """Run the engine on an n-segment corpus; return wall time, peak RSS and row totals."""
    with tempfile.TemporaryDirectory(prefix="bt-mem-") as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        write_corpus(corpus, n)
        out = Path(tmp) / "out"
        sets = [
            f"run.input={corpus}",
            f"run.output={out}",
            "method.backtranslation.min_chars=50",
            "run.max_items_in_flight=256",
            "run.shard_records=1000",
        ]
        for ep in ("strong", "target"):
            sets += [f"endpoints.{ep}.sim.latency_ms=0", f"endpoints.{ep}.sim.jitter_ms=0"]
        cmd = [sys.executable, "-m", "engine", "run", "configs/backtranslation.toml", "--quiet"]
        for s in sets:
            cmd += ["--set", s]
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
        wall = time.perf_counter() - t0
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        manifest = json.loads((out / "manifest.json").read_text()) if proc.returncode == 0 else {}
        m = machine()
        return {
            "segments": n,
            "returncode": proc.returncode,
            "wall_s": round(wall, 1),
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "totals": manifest.get("totals"),
            "complete": manifest.get("complete"),
            "stderr_tail": proc.stderr[-500:] if proc.returncode else "",
            "date": m["date"],
            "commit": m["commit"],
            "loadavg_after": loadavg(),
        }


def main(argv: list[str] | None = None) -> int:
    """Measure each size in its own wrapper process; print and save the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="default 10000 100000")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--quick", action="store_true", help="1k and 10k; writes results/quick/")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    exit_on_sigterm()
    if args.one is not None:
        sys.stdout.write(json.dumps(measure_one(args.one, args.timeout)) + "\n")
        return 0
    sizes = args.sizes or ([1_000, 10_000] if args.quick else [10_000, 100_000])
    fresh: list[dict[str, Any]] = []
    for n in sizes:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory_backtranslation", "--one", str(n)]
            + ["--timeout", str(args.timeout)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=args.timeout + 120,
            check=True,
        )
        fresh.append(json.loads(proc.stdout))
        r = fresh[-1]
        sys.stderr.write(f"{n} segments: {r['peak_rss_mib']} MiB, {r['wall_s']} s\n")
    path = results_dir(args.quick) / "memory_backtranslation.json"
    earlier = json.loads(path.read_text())["runs"] if path.exists() else []
    measured = {r["segments"] for r in fresh}
    rows = sorted(
        [r for r in earlier if r["segments"] not in measured] + fresh, key=lambda r: r["segments"]
    )
    base = rows[0]["peak_rss_mib"]
    for r in rows:
        r["rss_ratio_vs_smallest"] = round(r["peak_rss_mib"] / base, 3) if base else None
    lines = [f"{'segments':>10} {'peak RSS MiB':>13} {'ratio':>6} {'wall s':>8}  totals"]
    lines += [
        f"{r['segments']:>10} {r['peak_rss_mib']:>13} {r['rss_ratio_vs_smallest']:>6} "
        f"{r['wall_s']:>8}  {r['totals']}"
        for r in rows
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    big = [r for r in rows if r["segments"] >= 1_000_000]
    met = all((r["rss_ratio_vs_smallest"] or 99) <= 1.2 for r in big) if big else None
    out = write_result(
        "memory_backtranslation",
        {
            "sim": {"latency_ms": 0},
            "max_items_in_flight": 256,
            "runs": rows,
            "acceptance": {"target": "RSS(1M) <= 1.2 x RSS(10k)", "met": met},
        },
        quick=args.quick,
    )
    sys.stdout.write(f"wrote {out}\n")
    return 0 if all(r["returncode"] == 0 for r in fresh) else 1


if __name__ == "__main__":
    sys.exit(main())

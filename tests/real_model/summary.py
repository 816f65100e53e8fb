"""Summarise the real-model runs kept in a directory (``scripts/real-model.sh`` step 4).

    python -m tests.real_model.summary OUT/real-model/runs

For each run (a sub-directory holding ``report.json`` and ``manifest.json``): rows per
minute (every row, and kept rows), requests, tokens per second, and the parse-failure
rate of each stage (replies that did not parse / calls made). Prints a table and writes
``summary.json`` into the directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def summarise(run_dir: Path) -> dict[str, Any]:
    """The figures of one run directory."""
    report = json.loads((run_dir / "report.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    wall = float(report["wall_s"]) or 1e-9
    rows = report["rows"]
    usage = manifest["usage"]
    prompt = sum(u["prompt_tokens"] for u in usage.values())
    completion = sum(u["completion_tokens"] for u in usage.values())
    requests = sum(u["requests"] for u in usage.values())
    stages = {
        name: {
            "calls": s["calls"],
            "parse_errors": s["parse_errors"],
            "parse_failure_rate": round(s["parse_errors"] / s["calls"], 3),
        }
        for name, s in report["stages"].items()
        if s["calls"]
    }
    return {
        "method": report["method"],
        "complete": manifest["complete"],
        "wall_s": round(wall, 1),
        "rows": rows,
        "rows_per_min": round(sum(rows.values()) / wall * 60.0, 2),
        "kept_per_min": round(rows["kept"] / wall * 60.0, 2),
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "completion_tokens_per_s": round(completion / wall, 2),
        "stages": stages,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write(str(__doc__))
        return 2
    root = Path(argv[0])
    runs = {
        d.name: summarise(d)
        for d in sorted(root.iterdir())
        if (d / "report.json").exists() and (d / "manifest.json").exists()
    }
    (root / "summary.json").write_text(json.dumps(runs, indent=2) + "\n")
    out = sys.stdout.write
    out(
        f"{'run':26} {'wall s':>7} {'kept':>5} {'rej':>5} {'fail':>5} {'rows/min':>8} "
        f"{'req':>5} {'tok/s':>6}  parse failures per stage\n"
    )
    for name, r in runs.items():
        rows = r["rows"]
        stages = ", ".join(f"{s} {v['parse_errors']}/{v['calls']}" for s, v in r["stages"].items())
        out(
            f"{name:26} {r['wall_s']:7.1f} {rows['kept']:5d} {rows['rejected']:5d} "
            f"{rows['failed']:5d} {r['rows_per_min']:8.2f} {r['requests']:5d} "
            f"{r['completion_tokens_per_s']:6.2f}  {stages}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

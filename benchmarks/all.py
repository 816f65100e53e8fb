"""Run every benchmark, then render ``benchmarks/README.md`` from the results.

Each script runs in its own process, one after the other (never two at once: they
measure CPU and rate on a shared machine), with a time limit; a script that fails or
misses its target does not stop the others. ``--quick`` passes ``--quick`` to each
(reduced sizes, results in ``results/quick/``, README rendered there).

    python -m benchmarks.all [--quick] [--only grid cpu_peers] [--skip memory_codeclm]

A full run takes one and a half to two hours on 2 shared cores (the grid 45-70 min,
CodecLM memory at 100k seeds ~20 min, the limiter 9 min); ``--quick`` about 15 minutes.
The 1M-item memory runs are not part of it (``--sizes 1000000`` on each memory script).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from benchmarks._common import ROOT, exit_on_sigterm
from benchmarks.render import main as render_main

# (name, time limit in seconds for a full run)
SCRIPTS = (
    ("cpu_per_request", 600),
    ("cpu_peers", 1800),
    ("throughput", 600),
    ("grid", 7200),
    ("limiter_accuracy", 1800),
    ("kill_resume", 1800),
    ("memory_backtranslation", 3600),
    ("memory_codeclm", 7200),
    ("viewer_open", 900),
    ("bench_peers", 1800),
)


def main(argv: list[str] | None = None) -> int:
    """Run the scripts; render; 1 if any failed or missed its target."""
    names = [n for n, _ in SCRIPTS]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="+", choices=names, default=None)
    ap.add_argument("--skip", nargs="+", choices=names, default=[])
    ap.add_argument("--no-render", action="store_true")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    codes: dict[str, int | str] = {}
    for name, limit in SCRIPTS:
        if (args.only and name not in args.only) or name in args.skip:
            continue
        cmd = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if args.quick else [])
        print(f"== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        try:
            codes[name] = subprocess.run(cmd, cwd=ROOT, timeout=limit, check=False).returncode
        except subprocess.TimeoutExpired:
            codes[name] = "timed out"
        print(f"== {name}: exit {codes[name]} in {time.perf_counter() - t0:.0f} s", flush=True)
    if not args.no_render:
        render_main(["--quick"] if args.quick else [])
    print("\n".join(f"{n:<24} {'ok' if c == 0 else c}" for n, c in codes.items()))
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Crash and resume: SIGKILL a CodecLM run at random moments, resume it, compare.

Wraps ``tests/resume/killer.py`` (the same procedure the test suite runs with a small N):
a reference run and a run SIGKILLed ``--kills`` times then completed, both against one
external sim process whose request counter shows the calls paid twice. Prints the
figures and writes ``benchmarks/results/kill_resume.json``.

    python -m benchmarks.kill_resume [--kills 50] [--seed 7] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks._common import exit_on_sigterm, write_result
from tests.resume.killer import CONCURRENCY, kill_and_resume


def main(argv: list[str] | None = None) -> int:
    """Run the kill test; print and save the figures; 1 if rows differ or re-paid > bound."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kills", type=int, default=None, help="default 50")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="5 kills; writes results/quick/")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    kills = args.kills or (5 if args.quick else 50)
    with tempfile.TemporaryDirectory(prefix="kill-resume-") as tmp:
        figures = kill_and_resume(Path(tmp), kills=kills, seed=args.seed)
    ok = bool(figures["same_rows"]) and figures["repaid_calls"] <= figures["repaid_bound"]
    for key, value in figures.items():
        print(f"{key:<26} {value}")
    path = write_result(
        "kill_resume",
        {
            "settings": {
                "kills": kills,
                "seed": args.seed,
                "concurrency_per_endpoint": CONCURRENCY,
            },
            "figures": figures,
            "acceptance": {"met": ok},
        },
        quick=args.quick,
    )
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

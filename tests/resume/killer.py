"""SIGKILL a CodecLM run at random moments, resume it, and compare with an uninterrupted run.

Both runs talk to one external ``synth-engine sim`` process, whose request counter shows
what was paid: the killed-and-resumed run may pay again only for calls that were in
flight when it was killed (at most strong + target concurrency per kill).

Used by ``tests/resume/test_kill.py`` (small N); run longer on demand::

    python -m tests.resume.killer --kills 50 --seed 7
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from engine.sim.process import sim_process

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "demo.toml"
CONCURRENCY = 8  # per endpoint: bounds the calls in flight at a kill


def external_sim(
    *args: str, env: dict[str, str] | None = None
) -> contextlib.AbstractContextManager[str]:
    """``synth-engine sim`` in its own process on a free loopback port; yields base_url."""
    return sim_process(*args, cwd=ROOT, env=env)


def paid(url: str) -> int:
    """Requests the sim has answered so far."""
    with urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/sim/stats", timeout=5) as resp:
        return int(json.loads(resp.read())["requests"])


def run_args(out: Path, url: str, extra: list[str], metadata: int = 24) -> list[str]:
    sets = [
        f"run.output={out}",
        "run.shard_records=10",
        "run.max_items_in_flight=4",
        f"method.codeclm.metadata_count={metadata}",
        "method.codeclm.instructions_per_metadata=4",
        *extra,
    ]
    for ep in ("strong", "target"):
        sets += [
            f"endpoints.{ep}.base_url={url}",
            f"endpoints.{ep}.sim={{}}",
            f"endpoints.{ep}.max_concurrency={CONCURRENCY}",
            f"endpoints.{ep}.adaptive_concurrency=false",
        ]
    args = [sys.executable, "-m", "engine", "run", str(CONFIG), "--quiet"]
    for item in sets:
        args += ["--set", item]
    return args


def rows(out: Path) -> dict[str, dict[str, Any]]:
    """Every committed row by id (asserting no id appears twice)."""
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True, "run is not complete"
    found: dict[str, dict[str, Any]] = {}
    for shard in manifest["shards"]:
        for line in (out / shard["name"]).read_text().splitlines():
            row = json.loads(line)
            assert row["id"] not in found, f"duplicate row {row['id']}"
            found[row["id"]] = {"kind": shard["kind"], **row}
    return found


def kill_and_resume(
    workdir: Path, *, kills: int, seed: int, window: tuple[float, float] = (0.5, 1.2)
) -> dict[str, Any]:
    """Reference run, then up to ``kills`` SIGKILLed runs and a final one; compare.

    The work grows with ``kills`` (6 metadata items per kill) so that each kill lands
    mid-run; killing stops early if a run finishes before its kill.

    Returns:
        Figures: rows, kills that landed mid-run, calls paid by each path, re-paid calls.
    """
    rng = random.Random(seed)
    metadata = max(24, 6 * kills)
    with external_sim("--latency-ms", "20", "--jitter-ms", "10", "--seed", "1") as url:
        before = paid(url)
        ref = subprocess.run(
            run_args(workdir / "reference", url, [], metadata),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert ref.returncode == 0, ref.stderr
        reference_paid = paid(url) - before
        expected = rows(workdir / "reference")

        out = workdir / "killed"
        before = paid(url)
        landed = 0
        for _ in range(kills):
            proc = subprocess.Popen(
                run_args(out, url, [], metadata),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(*window))
            if proc.poll() is not None:
                proc.wait(timeout=60)
                break  # finished before the kill: nothing left to interrupt
            os.kill(proc.pid, signal.SIGKILL)
            landed += 1
            proc.wait(timeout=60)
        final = subprocess.run(
            run_args(out, url, [], metadata), cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert final.returncode == 0, final.stderr
        resumed_paid = paid(url) - before
        got = rows(out)
    repaid = resumed_paid - reference_paid
    return {
        "seed": seed,
        "kills": kills,
        "kills_mid_run": landed,
        "rows": len(expected),
        "same_ids": set(got) == set(expected),
        "same_rows": got == expected,
        "reference_calls": reference_paid,
        "killed_and_resumed_calls": resumed_paid,
        "repaid_calls": repaid,
        "repaid_bound": landed * 2 * CONCURRENCY,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        figures = kill_and_resume(args.workdir or Path(tmp), kills=args.kills, seed=args.seed)
    sys.stdout.write(json.dumps(figures, indent=2) + "\n")
    ok = figures["same_rows"] and figures["repaid_calls"] <= figures["repaid_bound"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

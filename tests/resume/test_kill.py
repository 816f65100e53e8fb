"""Crash safety: SIGKILL mid-run, rerun the same command, compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import CONFIGS, ROOT, run_cli

SETS = [
    "method.codeclm.metadata_count=24",
    "method.codeclm.instructions_per_metadata=4",
    "run.shard_records=10",
    "run.max_items_in_flight=4",
    "endpoints.strong.max_concurrency=8",
    "endpoints.target.max_concurrency=8",
]


def _args(out: Path) -> list[str]:
    args = ["run", str(CONFIGS / "demo.toml"), "--quiet", "--set", f"run.output={out}"]
    for item in SETS:
        args += ["--set", item]
    return args


def _rows(out: Path) -> dict[str, dict[str, object]]:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    rows: dict[str, dict[str, object]] = {}
    for shard in manifest["shards"]:
        for line in (out / shard["name"]).read_text().splitlines():
            row = json.loads(line)
            assert row["id"] not in rows, f"duplicate row {row['id']}"
            rows[row["id"]] = {"kind": shard["kind"], **row}
    return rows


def _kill_after(out: Path, delay: float) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", *_args(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=30)


def test_sigkill_and_resume_gives_the_same_rows(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    proc = run_cli(*_args(reference))
    assert proc.returncode == 0, proc.stderr
    expected = _rows(reference)
    seed = int(os.environ.get("KILL_TEST_SEED", "1234"))
    rng = random.Random(seed)
    out = tmp_path / "killed"
    kills = int(os.environ.get("KILL_TEST_N", "3"))
    for _ in range(kills):
        _kill_after(out, rng.uniform(0.8, 2.5))
    final = run_cli(*_args(out))
    assert final.returncode == 0, final.stderr
    got = _rows(out)
    assert set(got) == set(expected), f"seed {seed}"
    assert got == expected, f"seed {seed}"

"""Hang-proofing: Ctrl+C drains and exits resumable; a second Ctrl+C exits at once with no
torn shard; an endpoint restarting mid-run is survived; the watchdog reports stuck work."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.io.manifest import load_manifest, verify_shards
from engine.sim.process import free_port, sim_process
from tests.conftest import CONFIGS, ROOT, run_cli
from tests.resume.killer import rows

SETS = [
    "method.codeclm.metadata_count=40",
    "method.codeclm.instructions_per_metadata=4",
    "run.shard_records=10",
]


def _args(
    out: Path, extra: list[str] | None = None, config: Path = CONFIGS / "demo.toml"
) -> list[str]:
    args = ["run", str(config), "--quiet", "--set", f"run.output={out}"]
    for item in [*SETS, *(extra or [])]:
        args += ["--set", item]
    return args


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_commit(out: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        manifest = load_manifest(out) if (out / "manifest.json").exists() else None
        if manifest is not None and manifest.shards:
            return
        time.sleep(0.05)
    raise AssertionError("no shard committed in time")


def _reference(tmp: Path) -> dict[str, dict[str, object]]:
    proc = run_cli(*_args(tmp / "reference"))
    assert proc.returncode == 0, proc.stderr
    return rows(tmp / "reference")


def test_ctrl_c_drains_and_resumes_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Eight items in flight: when the first shard commits, items are still to start, so
    # the drain stops short of the end (with 32, how far the run is by then depends on
    # what the simulated endpoint answers, and it could finish every item).
    args = _args(out, ["run.max_items_in_flight=8"])
    proc = _start(args)
    _wait_for_commit(out)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "finishing items in flight" in err and "resume" in err
    manifest = load_manifest(out)
    assert manifest is not None and not manifest.complete and manifest.stop_reason == "stopped"
    assert verify_shards(out, manifest) == []
    paid_first = manifest.usage["strong"]["requests"]
    assert paid_first > 0
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert rows(out) == _reference(tmp_path)
    # Usage accumulates over invocations: the resumed run adds to what the first paid.
    final = load_manifest(out)
    assert final is not None and final.usage["strong"]["requests"] > paid_first


def test_second_ctrl_c_exits_at_once_without_torn_shards(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start(_args(out))
    _wait_for_commit(out)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 5.0
    assert proc.returncode == 130, err
    manifest = load_manifest(out)
    assert manifest is not None and not manifest.complete
    assert verify_shards(out, manifest) == []  # every listed shard whole, checksums match
    again = run_cli(*_args(out))
    assert again.returncode == 0, again.stderr
    assert rows(out) == _reference(tmp_path)


def test_endpoint_restarting_mid_run_is_survived(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    extra = [
        f"endpoints.target.base_url={url}",
        "endpoints.target.sim={}",
        "endpoints.target.max_retries=10",
    ]
    out = tmp_path / "out"
    with sim_process("--latency-ms", "20", port=port, cwd=ROOT):
        run = _start(_args(out, extra))
        _wait_for_commit(out)
    # The target is down: calls fail with connection errors and back off.
    time.sleep(1.0)
    with sim_process("--latency-ms", "20", port=port, cwd=ROOT):
        _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    target = manifest["extra"]["endpoints"]["target"]
    assert target["errors"].get("connection_lost", 0) > 0 and target["retries"] > 0
    assert sum(manifest["totals"].get(k, 0) for k in ("kept", "rejected", "failed")) == 160


def test_watchdog_reports_stuck_work(tmp_path: Path) -> None:
    proc = run_cli(
        "run",
        str(CONFIGS / "respond.toml"),
        "--quiet",
        "--set",
        f"run.output={tmp_path / 'out'}",
        "--set",
        "run.watchdog_s=0.5",
        "--set",
        "endpoints.strong.sim={latency_ms = 2500}",
        "--set",
        "endpoints.strong.max_concurrency=64",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no progress for" in proc.stderr and "in flight" in proc.stderr


def test_watchdog_stays_quiet_while_calls_are_answered_without_rows(tmp_path: Path) -> None:
    """CodecLM encodes every seed before its first row: answered calls are progress."""
    proc = run_cli(
        "run",
        str(CONFIGS / "demo.toml"),
        "--quiet",
        "--set",
        f"run.output={tmp_path / 'out'}",
        "--set",
        "run.watchdog_s=0.6",
        "--set",
        "endpoints.strong.max_concurrency=2",
        "--set",
        "endpoints.strong.sim={latency_ms = 100}",  # 22 seeds: ~1.1 s of encoding, no rows
        "--set",
        "method.codeclm.metadata_count=2",
        "--set",
        "method.codeclm.instructions_per_metadata=2",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no progress" not in proc.stderr

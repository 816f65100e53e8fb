"""Reliability, round two, through the CLI: one writer per output, halts with exit codes,
bounded stops, exact input identity, unique ids, safe --force-new, no secret echoed.

Each test names the promise of docs/reliability.md it checks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, ROOT, run_cli

SEEDS = CONFIGS / "data" / "seeds.jsonl"


def _flags(sets: list[str]) -> list[str]:
    out: list[str] = []
    for item in sets:
        out += ["--set", item]
    return out


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


# -------------------------------------------------------- one writer per output


def test_a_second_run_on_the_same_output_is_refused_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sets = [
        f"run.output={out}",
        "endpoints.strong.sim={latency_ms = 150}",
        "endpoints.strong.max_concurrency=1",
        "run.max_items_in_flight=1",
    ]  # 44 calls one at a time: about 7 s
    first = subprocess.Popen(
        _cli("run", str(CONFIGS / "respond.toml"), "--quiet", *_flags(sets)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(out / "manifest.json")
        for extra in ([], ["--force-new"]):
            start = time.monotonic()
            second = run_cli(
                "run", str(CONFIGS / "respond.toml"), "--quiet", *extra, *_flags(sets), timeout=60
            )
            assert time.monotonic() - start < 20
            assert second.returncode == 2, second.stderr
            assert "another run is writing this output" in second.stderr
            assert f"pid {first.pid}" in second.stderr, second.stderr
        stdout, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    inspected = run_cli("inspect", str(out))
    assert inspected.returncode == 0 and "complete (verified)" in inspected.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    rows = sum(s["rows"] for s in manifest["shards"])
    assert rows == 22 and manifest["totals"]["items"] == 22


# ----------------------------------------------------------- absurd config values


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("endpoints.strong.rpm=inf", "endpoints.strong.rpm"),
        ("endpoints.strong.rpm=1e-300", "endpoints.strong.rpm"),
        ("endpoints.strong.rpm=nan", "endpoints.strong.rpm"),
        ("endpoints.strong.timeout_s=inf", "endpoints.strong.timeout_s"),
        ("endpoints.strong.tpm=inf", "endpoints.strong.tpm"),
        ("run.watchdog_stop_s=inf", "run.watchdog_stop_s"),
        ("endpoints.strong.rpm=0.05", "endpoints.strong.rpm"),  # one call per 20 min > max_wait
    ],
)
def test_non_finite_or_absurd_limits_fail_validate(override: str, field: str) -> None:
    proc = run_cli("validate", str(CONFIGS / "respond.toml"), "--set", override)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert field in proc.stderr and "Traceback" not in proc.stderr


def test_output_at_the_filesystem_root_is_refused() -> None:
    proc = run_cli("validate", str(CONFIGS / "respond.toml"), "--set", "run.output=/")
    assert proc.returncode == 2 and "run.output" in proc.stderr


# --------------------------------------------------------------- secrets


def test_a_key_pasted_into_api_key_env_is_never_printed(tmp_path: Path) -> None:
    key = "sk-proj-PASTEDkey0123456789abcdefXYZ"
    proc = run_cli(
        "validate",
        str(CONFIGS / "respond.toml"),
        "--set",
        f'endpoints.strong.api_key_env="{key}"',
        "--set",
        "endpoints.strong.base_url=http://127.0.0.1:9/v1",
        "--set",
        "endpoints.strong.sim={}",
    )
    assert proc.returncode == 2
    assert "looks like an API key" in proc.stderr
    assert key[:8] not in proc.stdout + proc.stderr


def test_credentials_in_a_base_url_are_not_printed() -> None:
    proc = run_cli(
        "validate",
        str(CONFIGS / "respond.toml"),
        "--set",
        "endpoints.strong.base_url=https://alice:s3cr3t-pa55@llm.example.com/v1",
        "--set",
        "endpoints.strong.sim={}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "s3cr3t" not in proc.stdout + proc.stderr and "***@llm.example.com" in proc.stdout


# The sim's key (from the environment, enforced with 401, never on a command line):
# tests/e2e/test_sim_key.py.


# ---------------------------------------------------------------- bounded stops


def test_watchdog_stops_a_stalled_run_resumably(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sets = [
        f"run.output={out}",
        "run.watchdog_s=0",
        "run.watchdog_stop_s=1",
        "endpoints.strong.timeout_s=600",
        'endpoints.strong.sim={fault_rate = 1.0, faults = ["timeout"], hang_s = 600}',
    ]
    start = time.monotonic()
    proc = run_cli("run", str(CONFIGS / "respond.toml"), "--quiet", *_flags(sets), timeout=90)
    assert time.monotonic() - start < 60
    assert proc.returncode == 3, proc.stderr
    assert "watchdog: no progress for" in proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["stop_reason"].startswith("watchdog")


def _paused_run(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """A run whose endpoint answers a few calls, then 429s with Retry-After 300."""
    out = tmp_path / "out"
    script = textwrap.dedent(
        """
        import asyncio, sys
        from aiohttp import web
        from tests.hostile import Hostile, proxied

        async def behave(n, request, fetch):
            with open(COUNTER, "w") as f:
                f.write(str(n))
            if n > 4:
                return web.json_response({"error": {"message": "slow down"}}, status=429,
                                         headers={"Retry-After": "300"})
            return proxied()(await fetch())

        async def main():
            async with Hostile(behave) as server:
                sys.stdout.write(server.url + "\\n")
                sys.stdout.flush()
                await asyncio.Event().wait()

        asyncio.run(main())
        """
    ).replace("COUNTER", repr(str(tmp_path / "requests")))
    server = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    sets = [f"run.output={out}", f"endpoints.strong.base_url={url}", "endpoints.strong.sim={}"]
    run = subprocess.Popen(
        _cli("run", str(CONFIGS / "respond.toml"), "--quiet", *_flags(sets)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run._server = server  # type: ignore[attr-defined]
    return run, out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_a_stop_drains_even_while_the_endpoint_is_paused(
    tmp_path: Path, sig: signal.Signals
) -> None:
    run, out = _paused_run(tmp_path)
    server: subprocess.Popen[str] = run._server  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 60
        counter = tmp_path / "requests"
        # A 429 with Retry-After 300 was answered: the endpoint is paused for 5 minutes.
        while not (counter.exists() and counter.read_text() and int(counter.read_text()) > 4):
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.05)
        time.sleep(0.5)
        assert run.poll() is None
        sent = time.monotonic()
        run.send_signal(sig)
        _, stderr = run.communicate(timeout=60)
        assert time.monotonic() - sent < 20, "the drain waited for the pause"
    finally:
        for proc in (run, server):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert server.stdout is not None
        server.stdout.close()
    assert run.returncode == 130, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False


# ------------------------------------------------------------- input identity


def test_a_same_length_edit_in_the_middle_of_the_input_is_noticed(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.jsonl"
    lines = [
        json.dumps({"id": f"s{i}", "instruction": f"Task {i:06d} " + "x" * 400})
        for i in range(8000)
    ]
    seeds.write_text("\n".join(lines) + "\n")  # 3.4 MB: the middle is in neither end's MiB
    out = tmp_path / "out"
    sets = [
        f"run.output={out}",
        f"run.input={seeds}",
        "endpoints.strong.sim={latency_ms = 0}",
        "run.max_items_in_flight=1",
        "budget.max_requests=20",  # a first run that stops early, its items committed
    ]
    first = run_cli("run", str(CONFIGS / "respond.toml"), "--quiet", *_flags(sets), timeout=120)
    assert first.returncode == 3, first.stderr
    data = bytearray(seeds.read_bytes())
    at = data.index(b"Task ", len(data) // 2) + 5
    data[at : at + 6] = b"999999"  # same length, different content
    seeds.write_bytes(bytes(data))
    again = run_cli("run", str(CONFIGS / "respond.toml"), "--quiet", *_flags(sets))
    assert again.returncode != 0 and "different input" in again.stderr


# ------------------------------------------------------------------ unique ids


def test_duplicate_ids_are_failed_rows_or_refused(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.jsonl"
    records = [
        {"id": "same", "instruction": "one"},
        {"id": "same", "instruction": "two"},
        {"id": 1, "instruction": "three"},
        {"id": "1", "instruction": "four"},
        {"instruction": "five (line 5, id line-5)"},
        {"id": "line-5", "instruction": "six"},
    ]
    seeds.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    sets = [f"run.output={out}", f"run.input={seeds}", "endpoints.strong.sim={latency_ms = 0}"]
    proc = run_cli("run", str(CONFIGS / "respond.toml"), "--quiet", *_flags(sets))
    assert proc.returncode in (0, 5), proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    rows = [
        json.loads(line)
        for shard in manifest["shards"]
        for line in (out / shard["name"]).read_text().splitlines()
    ]
    failed = {r["source"]: r["error"] for r in rows if r.get("stage") == "input"}
    assert failed == {
        "seeds.jsonl:2": "duplicate id 'same' (first at line 1)",
        "seeds.jsonl:4": "duplicate id '1' (first at line 3)",
        "seeds.jsonl:6": "duplicate id 'line-5' (first at line 5)",
    }
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 6
    refused = run_cli(
        "run",
        str(CONFIGS / "respond.toml"),
        "--quiet",
        *_flags([*sets, f"run.output={tmp_path / 'refused'}", 'run.duplicate_ids="refuse"']),
    )
    assert refused.returncode == 2
    assert "seeds.jsonl:2: duplicate id 'same' (first at line 1)" in refused.stderr


def test_an_over_long_line_is_never_read_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    with big.open("wb") as f:
        f.write(b'{"instruction": "ok"}\n{"instruction": "')
        block = b"x" * (1 << 20)
        for _ in range(200):  # a 200 MB line
            f.write(block)
        f.write(b'"}\n{"instruction": "after"}\n')
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from engine.io.readers import read_jsonl
        kinds = [type(r).__name__ for r in read_jsonl(Path({str(big)!r}))]
        # VmHWM, not ru_maxrss: the latter survives exec, so a child of a big pytest
        # process would report its parent's peak.
        status = Path("/proc/self/status").read_text()
        peak = int(status.split("VmHWM:")[1].split()[0]) // 1024
        print(kinds, peak)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    kinds, peak = proc.stdout.rsplit(" ", 1)
    assert kinds == "['Item', 'BadInput', 'Item']"
    assert int(peak) < 120, f"peak RSS {peak} MiB while skipping a 200 MB line"


def test_a_symlink_loop_is_named_as_such(tmp_path: Path) -> None:
    loop = tmp_path / "loop.jsonl"
    os.symlink(loop, loop)
    proc = run_cli(
        "run",
        str(CONFIGS / "respond.toml"),
        "--quiet",
        *_flags([f"run.input={loop}", f"run.output={tmp_path / 'o'}"]),
    )
    assert proc.returncode == 2 and "loops back on itself" in proc.stderr


# ------------------------------------------------------------ safe --force-new


def test_force_new_never_deletes_the_input_in_the_output_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    seeds = out / "seeds.jsonl"
    seeds.write_text(SEEDS.read_text())
    sets = [f"run.output={out}", f"run.input={seeds}", "endpoints.strong.sim={latency_ms = 0}"]
    assert run_cli("run", str(CONFIGS / "respond.toml"), "--quiet", *_flags(sets)).returncode == 0
    proc = run_cli(
        "run",
        str(CONFIGS / "respond.toml"),
        "--quiet",
        "--force-new",
        *_flags([*sets, "method.respond.threshold=9"]),
    )
    assert proc.returncode in (0, 5), proc.stderr
    assert seeds.read_text() == SEEDS.read_text()
    named_like_a_shard = out / "kept-00000.jsonl"
    refused = run_cli(
        "run",
        str(CONFIGS / "respond.toml"),
        "--quiet",
        "--force-new",
        *_flags([*sets, f"run.input={named_like_a_shard}"]),
    )
    assert refused.returncode != 0 and "lies in the output directory" in refused.stderr
    assert named_like_a_shard.exists()


def test_inspect_verifies_and_advice_keeps_the_cache(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sets = [f"run.output={out}", "endpoints.strong.sim={latency_ms = 0}"]
    assert run_cli("run", str(CONFIGS / "respond.toml"), "--quiet", *_flags(sets)).returncode == 0
    shard = next(out.glob("kept-*.jsonl"))
    shard.write_bytes(shard.read_bytes().replace(b"[simulated]", b"[tampered!]", 1))
    inspected = run_cli("inspect", str(out))
    assert inspected.returncode == 1 and "CORRUPT" in inspected.stderr
    rerun = run_cli("run", str(CONFIGS / "respond.toml"), "--quiet", *_flags(sets))
    assert rerun.returncode == 1 and "--force-new" in rerun.stderr
    assert "cache.sqlite" in rerun.stderr and "delete OUT" not in rerun.stderr
    fixed = run_cli("run", str(CONFIGS / "respond.toml"), "--quiet", "--force-new", *_flags(sets))
    assert fixed.returncode == 0, fixed.stderr
    report = json.loads((out / "report.json").read_text())
    strong = report["endpoints"]["strong"]
    assert strong["requests"] == 0 and strong["cache_hits"] > 0  # nothing paid again


# --------------------------------------------------------- report before manifest


def test_a_kill_at_the_report_rename_leaves_the_output_resumable(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sets = [f"run.output={out}", "endpoints.strong.sim={latency_ms = 0}"]
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        real = os.replace
        def replace(src, dst, *a, **k):
            if str(dst).endswith("report.json"):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *a, **k)
        os.replace = replace
        from engine.cli import main
        sys.exit(main({["run", str(CONFIGS / "respond.toml"), "--quiet", *_flags(sets)]!r}))
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "report.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False  # the report goes first
    again = run_cli("run", str(CONFIGS / "respond.toml"), "--quiet", *_flags(sets))
    assert again.returncode == 0, again.stderr
    assert (out / "report.json").exists()
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_a_server_on_a_non_loopback_address_warns() -> None:
    proc = subprocess.Popen(
        _cli("sim", "--host", "0.0.0.0", "--port", "0"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # listening
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    assert "which other machines can reach" in stderr

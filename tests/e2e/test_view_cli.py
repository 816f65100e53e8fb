"""``synth-engine view`` and ``run --view`` as a user runs them (subprocesses, 127.0.0.1)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import CONFIGS, ROOT, run_cli

_URL = re.compile(r"viewer\s+(http://127\.0\.0\.1:\d+/)")


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def test_run_view_serves_the_output_while_the_run_goes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "run",
            str(CONFIGS / "demo.toml"),
            "--quiet",
            "--view",
            "0",
        ]
        + [f"--set=run.output={out}", "--set=endpoints.strong.sim.latency_ms=150"]
        + ["--set=run.max_items_in_flight=4", "--set=method.codeclm.metadata_count=8"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = _URL.search(line)
        assert m, line
        states = set()
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                states.add(_get(m.group(1) + "api/run")["state"])
            except OSError:
                break  # the run ended and took its viewer with it
            time.sleep(0.2)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert "live" in states, states
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "ended" and status["rows"]["kept"] > 0


def test_view_refuses_a_file_and_a_busy_port(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    proc = run_cli("view", str(target), "--port", "0", timeout=30)
    assert proc.returncode == 2 and "not a directory" in proc.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli("view", str(tmp_path), "--port", str(port), timeout=30)
        assert proc.returncode == 1 and "--port 0" in proc.stderr
        proc = run_cli(
            "run", str(CONFIGS / "demo.toml"), "--quiet", "--view", str(port),
            f"--set=run.output={tmp_path / 'o'}", timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2 and "--view 0" in proc.stderr

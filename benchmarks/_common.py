"""Helpers shared by the benchmark scripts: free ports, a sim subprocess, JSON results."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
if str(ROOT) not in sys.path:  # runnable from a checkout without installing the package
    sys.path.insert(0, str(ROOT))

from engine.sim.process import free_port, sim_process  # noqa: E402

__all__ = (
    "RESULTS",
    "ROOT",
    "bench_cmd",
    "free_port",
    "machine",
    "run_json",
    "sim_server",
    "sim_stats",
    "write_result",
)


def sim_server(*args: str, timeout: float = 20.0) -> contextlib.AbstractContextManager[str]:
    """Run ``synth-engine sim`` in a subprocess on a free loopback port; yield its base URL."""
    return sim_process(*args, timeout=timeout, cwd=ROOT)


def bench_cmd(
    url: str, *, requests: int, concurrency: int, max_tokens: int, extra: tuple[str, ...] = ()
) -> list[str]:
    """The ``synth-engine bench --json`` command line against ``url`` (model ``sim-model``)."""
    return [
        sys.executable, "-m", "engine", "bench", "--base-url", url, "--model", "sim-model",
        "--requests", str(requests), "--concurrency", str(concurrency),
        "--max-tokens", str(max_tokens), "--json", *extra,
    ]  # fmt: skip


def sim_stats(url: str) -> dict[str, Any]:
    """The sim's /sim/stats counters."""
    base = url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(base + "/sim/stats", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def run_json(cmd: list[str], timeout: float = 900.0) -> dict[str, Any]:
    """Run a command that prints one JSON object on stdout; return it."""
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout))


def machine() -> dict[str, Any]:
    """Where and when the figures were measured."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "commit": commit or "uncommitted",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/NAME.json`` (with machine info) and return its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    return path

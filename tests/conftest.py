"""Shared fixtures: the simulated endpoint on 127.0.0.1 (port 0), helpers to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.sim import SimServer, SimSettings

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@pytest.fixture
async def sim_url() -> AsyncIterator[str]:
    """A fast simulated endpoint on a free loopback port; yields its base_url."""
    async with SimServer(SimSettings(latency_ms=1.0, seed=0), host="127.0.0.1", port=0) as server:
        yield server.url


def run_cli(
    *args: str, timeout: float = 120.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m engine ARGS`` in a subprocess (bounded by ``timeout``)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=full_env,
        check=False,
    )

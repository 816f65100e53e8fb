"""A metrics port (or viewer) listening beyond loopback says so (docs/reliability.md).

``run --metrics-port P --metrics-host H`` serves Prometheus metrics; with H other than a
loopback address, anyone who can reach the machine can read them, and the exporter has
no authentication of its own, so the run warns, naming the exporter and the address. On
127.0.0.1 or ``localhost`` (the default) it says nothing. The same holds for the viewer
(``synth-engine view --host``). ``sim --host`` has its own test
(``tests/e2e/test_reliability.py::test_a_server_on_a_non_loopback_address_warns``).

The warning cases listen on 0.0.0.0 (every interface, port chosen by the OS) for the
few seconds of the test; the tests themselves only ever connect to 127.0.0.1.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import aiohttp
import pytest

from engine import Engine, load_config
from engine.viewer import ViewerServer
from tests.conftest import CONFIGS, run_cli

CONFIG = CONFIGS / "respond.toml"
WARNING = "which other machines can reach"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and WARNING in r.getMessage()
    ]


async def _scrape_on_loopback(url: str) -> str:
    match = re.fullmatch(r"http://[^/]+:(\d+)/metrics", url)
    assert match, url
    port = int(match.group(1))
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


@pytest.mark.parametrize(
    ("host", "warns"),
    [("0.0.0.0", True), ("127.0.0.1", False), ("localhost", False)],
)
async def test_an_engine_serving_metrics_beyond_loopback_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str, warns: bool
) -> None:
    config = load_config(CONFIG, [f"run.output={tmp_path / 'out'}", "run.progress=off"])
    with caplog.at_level(logging.WARNING, logger="engine"):
        async with Engine(config, metrics_port=0, metrics_host=host) as engine:
            assert engine.metrics_url is not None
            assert "synth_engine_" in await _scrape_on_loopback(engine.metrics_url)
    found = _warnings(caplog)
    if warns:
        assert len(found) == 1, found
        assert "PrometheusExporter" in found[0] and host in found[0]
        assert "127.0.0.1" in found[0]  # says what to use instead
    else:
        assert found == []


def test_run_with_a_non_loopback_metrics_host_warns_on_stderr(tmp_path: Path) -> None:
    """Through the CLI, as a user sees it: the warning reaches stderr, the run completes."""

    def run(host: str, out: Path) -> str:
        proc = run_cli(
            "run",
            str(CONFIG),
            "--quiet",
            "--set",
            f"run.output={out}",
            "--metrics-port",
            "0",
            "--metrics-host",
            host,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert re.search(r"^metrics\s+http://\S+:\d+/metrics$", proc.stderr, re.M), proc.stderr
        return proc.stderr

    exposed = run("0.0.0.0", tmp_path / "exposed")
    assert f"PrometheusExporter listens on 0.0.0.0, {WARNING}" in exposed
    assert "no authentication of its own" in exposed
    assert WARNING not in run("127.0.0.1", tmp_path / "loopback")


@pytest.mark.parametrize(("host", "warns"), [("0.0.0.0", True), ("127.0.0.1", False)])
async def test_a_viewer_beyond_loopback_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str, warns: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="engine"):
        async with ViewerServer(tmp_path, host=host, port=0):
            pass
    found = _warnings(caplog)
    assert (found != []) is warns, found
    if warns:
        assert "ViewerServer" in found[0] and host in found[0]

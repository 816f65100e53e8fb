"""Browser tests: Playwright for Python driving Debian's Chromium, headless, offline.

Chromium comes from the system (``apt-get install chromium``; ``.ci/run`` installs it),
never from ``playwright install``: nothing is downloaded. Without it (a developer who
ran only the README's pip command) these tests skip and say why, unless
``SYNTH_ENGINE_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes a missing browser a failure.
Screenshots of each page go to ``tests/browser/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from tests.conftest import CONFIGS, ROOT, run_cli

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_URL = re.compile(r"(http://127\.0\.0\.1:\d+/)")


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("SYNTH_ENGINE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}; SYNTH_ENGINE_REQUIRE_BROWSER=1 requires the browser tests to run")
    pytest.skip(reason)


def chromium_path() -> str | None:
    """Debian's Chromium (or SYNTH_ENGINE_CHROMIUM), if installed."""
    for candidate in (
        os.environ.get("SYNTH_ENGINE_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """A headless Chromium with a fresh profile, for one test module.

    Not for the session: Playwright's sync API drives its own event loop on this thread
    while it is open, and the asyncio tests that follow need the thread to themselves.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    exe = chromium_path()
    if exe is None:
        _unavailable("Chromium is not installed (apt-get install chromium; .ci/run does it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=exe,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


@contextmanager
def serve_view(out: Path, timeout: float = 30.0) -> Iterator[str]:
    """``synth-engine view OUT --port 0`` in a subprocess; yields the page's URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "view", str(out), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = wait_for_url(proc, timeout)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def wait_for_url(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first ``http://127.0.0.1:PORT/`` the process prints (within ``timeout``)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        m = _URL.search(line)
        if m:
            return m.group(1)
    raise AssertionError("no viewer URL printed:\n" + "".join(seen))


def demo_output(out: Path, config: str = "demo.toml", *sets: str) -> Path:
    """Run a shipped config (simulated endpoint) into ``out``; returns ``out``."""
    args = [f"--set=run.output={out}", *(f"--set={s}" for s in sets)]
    proc = run_cli("run", str(CONFIGS / config), "--quiet", *args, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out

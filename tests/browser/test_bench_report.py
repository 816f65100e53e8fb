"""The bench's HTML report opens in a real browser (Debian's Chromium) with its plots drawn.

Skipped when /usr/bin/chromium or Playwright is missing, unless
SYNTH_ENGINE_REQUIRE_BROWSER=1 (then it fails instead).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from engine.bench import BenchSettings, run_bench
from engine.sim import SimServer, SimSettings

CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = os.environ.get("SYNTH_ENGINE_REQUIRE_BROWSER") == "1"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _need_browser() -> None:
    missing = None
    if not CHROMIUM.exists():
        missing = "/usr/bin/chromium is not installed (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (pip install playwright)"
    if missing:
        if REQUIRED:
            pytest.fail(missing)
        pytest.skip(missing)


async def _report(out: Path) -> None:
    async with SimServer(SimSettings(latency_ms=10.0, tokens_per_s=400.0)) as server:
        await run_bench(
            BenchSettings(
                base_url=server.url, model="sim-model", load="poisson", rates=[40.0, 80.0],
                requests=60, stream=True, max_tokens=8, out=str(out),
            )
        )  # fmt: skip


def test_html_report_opens_with_its_plots(tmp_path: Path) -> None:
    _need_browser()
    from playwright.sync_api import sync_playwright

    out = tmp_path / "bench"
    asyncio.run(_report(out))
    page_file = out / "report.html"
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            args=ARGS,
            headless=True,
        )
        try:
            page = browser.new_page()
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(page_file.as_uri())
            assert "synth-engine bench" in page.title()
            assert page.locator("text=SIMULATED ENDPOINT").count() >= 1
            plots = page.locator("svg.plot")
            assert plots.count() == 4
            names = [plots.nth(i).get_attribute("data-plot") for i in range(plots.count())]
            assert names == [
                "rate-latency",
                "rate-throughput",
                "latency-over-time",
                "latency-over-time",
            ]
            for i in range(plots.count()):
                box = plots.nth(i).bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 150
                marks = plots.nth(i).locator(".mark")
                assert marks.count() > 0
                mark = marks.first.bounding_box()
                assert mark is not None and mark["width"] > 0  # drawn, not just present
            # one dot per request in each timeline (60 requests, 3 series when streamed)
            assert plots.nth(2).locator(".mark").count() == 3 * 60
            assert not failed  # nothing fetched from anywhere: readable offline
            page.screenshot(path=str(tmp_path / "bench-report.png"), full_page=True)
        finally:
            browser.close()

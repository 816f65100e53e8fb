"""What a person does with the viewer, in a real (headless) Chromium.

Open a run, watch its counts grow while it goes, filter rejected rows by reason, open
one row and see where it came from. Every page is kept as a screenshot under
``tests/browser/artifacts/``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import ARTIFACTS, demo_output, serve_view
from tests.conftest import CONFIGS, ROOT

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = pytest.mark.timeout(240)


def _rows(out: Path, kind: str) -> list[dict[str, Any]]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for shard in manifest["shards"]:
        if shard["kind"] == kind:
            with (out / shard["name"]).open() as f:
                rows += [json.loads(line) for line in f]
    return rows


def _int(text: str) -> int:
    digits = re.sub(r"[^\d]", "", text.split("/")[0])
    return int(digits) if digits else 0


@pytest.fixture(scope="module")
def codeclm_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_output(tmp_path_factory.mktemp("view") / "codeclm")


@pytest.fixture(scope="module")
def lab_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_output(tmp_path_factory.mktemp("view") / "lab", "lab.toml")


@pytest.fixture
def page(browser: BrowserContext) -> Any:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    page.close()
    assert not errors, errors


def test_open_a_finished_run(page: Page, codeclm_out: Path) -> None:
    manifest = json.loads((codeclm_out / "manifest.json").read_text())
    with serve_view(codeclm_out) as url:
        page.goto(url)
        state = page.get_by_test_id("state")
        state.filter(has_text="complete").wait_for()
        assert page.get_by_test_id("sim-banner").is_visible()  # simulated output, labelled
        assert page.get_by_test_id("run-title").inner_text().endswith("codeclm")
        for kind in ("kept", "rejected", "failed"):
            shown = page.get_by_test_id(f"count-{kind}").inner_text()
            assert _int(shown) == manifest["totals"][kind], kind
        assert (
            page.get_by_test_id("items").inner_text().startswith(f"{manifest['totals']['items']:,}")
        )
        funnel = page.get_by_test_id("funnel")
        for stage in ("encode", "decode", "respond", "judge"):
            assert funnel.get_by_test_id(f"stage-{stage}").is_visible()
        assert page.get_by_test_id("endpoint-strong").is_visible()
        page.screenshot(path=str(ARTIFACTS / "run-finished.png"), full_page=True)


def test_watch_the_counts_grow_while_a_run_goes(page: Page, tmp_path: Path) -> None:
    out = tmp_path / "live"
    slow = [
        "endpoints.strong.sim.latency_ms=200",
        "endpoints.target.sim.latency_ms=200",
        "run.max_items_in_flight=4",
        "run.shard_records=10",
        "method.codeclm.metadata_count=12",
    ]
    with serve_view(out) as url:
        page.goto(url)
        page.get_by_test_id("state").filter(has_text="empty").wait_for()
        run = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", str(CONFIGS / "demo.toml"), "--quiet"]
            + [f"--set=run.output={out}"]
            + [f"--set={s}" for s in slow],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            page.get_by_test_id("state").filter(has_text="LIVE").wait_for(timeout=30_000)
            seen: list[tuple[int, int]] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and run.poll() is None:
                kept = _int(page.get_by_test_id("count-kept").inner_text())
                items = _int(page.get_by_test_id("items").inner_text())
                if not seen or seen[-1] != (kept, items):
                    seen.append((kept, items))
                if len(seen) == 3:
                    page.screenshot(path=str(ARTIFACTS / "run-live.png"), full_page=True)
                time.sleep(0.25)
            assert run.wait(timeout=60) == 0, run.stderr.read() if run.stderr else ""
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
            if run.stderr:
                run.stderr.close()
        # The counts grew step by step while the run went, never backwards.
        assert len(seen) >= 3, seen
        assert [k for k, _ in seen] == sorted(k for k, _ in seen)
        assert [i for _, i in seen] == sorted(i for _, i in seen)
        assert seen[-1][0] > seen[0][0]
        page.get_by_test_id("state").filter(has_text="complete").wait_for(timeout=15_000)
        manifest = json.loads((out / "manifest.json").read_text())
        page.get_by_test_id("count-kept").filter(
            has_text=f"{manifest['totals']['kept']:,}"
        ).wait_for()
        assert page.get_by_test_id("chart-requests").is_visible()  # rates over time
        page.screenshot(path=str(ARTIFACTS / "run-complete.png"), full_page=True)


def test_filter_rejected_rows_by_reason(page: Page, lab_out: Path) -> None:
    rejected = _rows(lab_out, "rejected")
    classes = Counter(re.sub(r"[-+]?\d+(?:\.\d+)?", "#", r["reason"]) for r in rejected)
    assert len(classes) > 1, classes  # a filter that keeps everything would prove nothing
    wanted, expected = min(classes.items(), key=lambda kv: kv[1])
    with serve_view(lab_out) as url:
        page.goto(url + "#rows?kind=rejected")
        rows = page.get_by_test_id("row")
        rows.first.wait_for()
        assert rows.count() == min(50, len(rejected))
        page.get_by_test_id("filter-reason").select_option(value=wanted)
        page.get_by_test_id("page-info").filter(has_text=f"{expected} matches").wait_for()
        assert rows.count() == expected
        pattern = re.compile(re.escape(wanted).replace("\\#", r"[-+]?\d+(?:\.\d+)?"))
        for reason in rows.locator("td.reason").all_inner_texts():
            assert pattern.match(reason.strip()), reason
        page.screenshot(path=str(ARTIFACTS / "rows-filtered.png"), full_page=True)
        # Open one: the judges' rationales, as the method recorded them.
        position = int(rows.first.get_attribute("data-position") or "0")
        row = rejected[position]
        rows.first.click()
        rationales = page.get_by_test_id("rationales")
        rationales.wait_for()
        shown = rationales.inner_text()
        for check in row["checks"]:
            assert check["check"].upper() in shown.upper(), (check, shown)  # labels: CSS capitals
            assert (check["rationale"] or "(no rationale)").strip()[:40] in shown, (check, shown)
        page.get_by_test_id("filter-reset").click()
        unfiltered = re.compile(rf"^rows 1–{min(50, len(rejected))} of {len(rejected)}$")
        page.get_by_test_id("page-info").filter(has_text=unfiltered).wait_for()
        assert rows.count() == min(50, len(rejected))


def test_open_one_row_and_see_its_provenance(page: Page, codeclm_out: Path) -> None:
    rejected = _rows(codeclm_out, "rejected")
    with serve_view(codeclm_out) as url:
        page.goto(url)
        page.get_by_test_id("tab-rows").click()
        page.get_by_test_id("kind-rejected").click()
        page.get_by_test_id("page-info").filter(has_text=f"of {len(rejected)}").wait_for()
        page.get_by_test_id("row").nth(2).click()
        detail = page.get_by_test_id("detail")
        row = rejected[2]
        detail.get_by_test_id("detail-id").filter(has_text=row["id"]).wait_for()
        assert detail.get_by_test_id("detail-sim").inner_text() == "SIMULATED"
        assert detail.get_by_test_id("why-reason").inner_text() == row["reason"]
        scores = detail.get_by_test_id("detail-scores").inner_text()
        for name in ("strong", "target", "gap"):
            assert name in scores
        rounds = detail.get_by_test_id("round")
        assert rounds.count() == len(row["history"])  # every round, with its instruction
        for i, past in enumerate(row["history"]):
            assert past["instruction"] in rounds.nth(i).inner_text()
        provenance = detail.get_by_test_id("provenance").inner_text()
        assert row["seed_id"] in provenance and row["metadata"]["use_case"] in provenance
        page.screenshot(path=str(ARTIFACTS / "row-detail.png"), full_page=True)


def test_generated_markup_is_shown_as_text(page: Page, tmp_path: Path) -> None:
    from engine.io.shards import ShardSink

    markup = '<img src="x" data-testid="injected" onerror="document.title=\'pwned\'"> <b>bold</b>'
    sink, _ = ShardSink.open(
        tmp_path,
        shard_records=10,
        config_hash="h",
        input_fingerprint="f",
        method="respond",
        engine_version="0",
        simulated=False,
    )
    sink.write_item(0, [("kept", {"id": "x1", "instruction": markup, "response": markup})])
    sink.close(complete=True)
    with serve_view(tmp_path) as url:
        page.goto(url + "#rows?kind=kept")
        page.get_by_test_id("row").first.click()
        page.get_by_test_id("text-instruction").wait_for()
        assert markup in page.get_by_test_id("text-instruction").inner_text()
        assert page.get_by_test_id("injected").count() == 0  # not parsed as HTML
        assert page.locator("#detail b").count() == 0
        assert page.title() != "pwned"
        assert not page.get_by_test_id("sim-banner").is_visible()  # a real endpoint's output

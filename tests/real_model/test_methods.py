"""Every method runs to completion against a real (small, weak) model.

Strong, target and judge are all the one server. A weak model breaks parsers and fails
filters: what is asserted is that each run completes, accounts for every item and row,
and gives every failed or rejected row its reason; not the quality of what is kept.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.real_model._real import check_accounted, out_dir, run_method


def _parse_errors(report: dict[str, object]) -> int:
    stages = report["stages"]
    assert isinstance(stages, dict)
    return sum(int(s["parse_errors"]) for s in stages.values())


@pytest.mark.timeout(900)
@pytest.mark.parametrize("method", ["codeclm", "backtranslation", "selfguide", "lab"])
def test_method_completes_structured(tmp_path: Path, method: str) -> None:
    """Structured output through llama.cpp's grammar (response_format json_object + schema)."""
    run = run_method(method, out_dir(tmp_path, method))
    check_accounted(run)
    stages = run.report["stages"]
    assert sum(s["calls"] for s in stages.values()) > 0
    # Each failed row names the stage that failed, one the report has figures for.
    for row in run.rows.get("failed", []):
        assert row["stage"] in stages, row
        if row["error_kind"] == "ParseError":
            assert row["error"].startswith(f"{row['stage']}: "), row


@pytest.mark.timeout(900)
def test_text_fallback_completes(tmp_path: Path) -> None:
    """The same method with structured output off: every reply goes through the text parsers."""
    run = run_method(
        "backtranslation",
        out_dir(tmp_path, "backtranslation-text"),
        "endpoints.local.structured_output=false",
    )
    check_accounted(run)
    assert run.report["stages"]["backtranslate"]["calls"] > 0


@pytest.mark.timeout(900)
def test_replies_cut_short_become_rows_with_reasons(tmp_path: Path) -> None:
    """Replies cut at a few tokens are unfinished JSON: failed rows with reasons, no crash."""
    run = run_method(
        "backtranslation",
        out_dir(tmp_path, "backtranslation-cut"),
        "method.backtranslation.max_tokens=4",
    )
    check_accounted(run)
    assert _parse_errors(run.report) > 0
    failed = run.rows.get("failed", [])
    assert failed and all(r["error_kind"] == "ParseError" for r in failed), failed
    assert all(r["stage"] == "backtranslate" and "expected JSON" in r["error"] for r in failed)

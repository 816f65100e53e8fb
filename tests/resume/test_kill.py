"""Crash safety: SIGKILL mid-run at seeded random moments, resume, compare (see killer.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.resume.killer import kill_and_resume


@pytest.mark.timeout(600)
def test_sigkill_and_resume_is_exactly_once(tmp_path: Path) -> None:
    seed = int(os.environ.get("KILL_TEST_SEED", "1234"))
    kills = int(os.environ.get("KILL_TEST_N", "3"))
    figures = kill_and_resume(tmp_path, kills=kills, seed=seed)
    assert figures["kills_mid_run"] >= 1, figures
    assert figures["same_ids"], figures
    assert figures["same_rows"], figures
    # Paid again: at most the calls in flight at each kill.
    assert figures["repaid_calls"] <= figures["repaid_bound"], figures

"""Budgets end to end: the run stops cleanly at a limit, says which, and resumes exactly once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import CONFIGS, run_cli

SMALL = [
    "method.codeclm.metadata_count=10",
    "method.codeclm.instructions_per_metadata=3",
    "run.shard_records=7",
]


def _run(out: Path, *extra: str) -> tuple[int, str]:
    args: list[str] = []
    for item in [f"run.output={out}", *SMALL, *extra]:
        args += ["--set", item]
    proc = run_cli("run", str(CONFIGS / "demo.toml"), "--quiet", *args)
    return proc.returncode, proc.stderr


def _manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return data


def _ids(out: Path) -> list[str]:
    ids: list[str] = []
    for shard in _manifest(out)["shards"]:
        ids += [json.loads(line)["id"] for line in (out / shard["name"]).read_text().splitlines()]
    return ids


def _requests(out: Path, stage: str | None = None) -> int:
    """HTTP requests recorded for the output (all invocations), overall or for one stage."""
    manifest = _manifest(out)
    if stage is None:
        return sum(int(ep["requests"]) for ep in manifest["extra"]["endpoints"].values())
    return sum(int(c["requests"]) for c in manifest["extra"]["spend"].get(stage, {}).values())


def test_request_budget_stops_resumably_and_resumes_exactly_once(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    assert _run(reference)[0] == 0
    expected = sorted(_ids(reference))
    total = _requests(reference)

    out = tmp_path / "budget"
    limit = total // 3
    rc, err = _run(out, f"budget.max_requests={limit}")
    assert rc == 3, err
    assert "max_requests" in err and "raise the limit" in err
    manifest = _manifest(out)
    assert manifest["complete"] is False
    assert manifest["stop_reason"].startswith("budget: run budget reached: max_requests")
    assert _requests(out) == limit  # exact: never one request more
    partial = _ids(out)
    assert len(partial) == len(set(partial)) < len(expected)

    # The same budget again: nothing more is spent, the run says so again.
    rc, err = _run(out, f"budget.max_requests={limit}")
    assert rc == 3 and "max_requests" in err
    assert _requests(out) == limit

    # A raised budget (not part of the config hash) resumes to the same rows, once each.
    rc, err = _run(out, f"budget.max_requests={10 * total}")
    assert rc == 0, err
    assert _manifest(out)["complete"] is True
    assert sorted(_ids(out)) == expected
    report = json.loads((out / "report.json").read_text())
    assert report["stop_reason"] is None


def test_stage_budget_and_cost_budget(tmp_path: Path) -> None:
    out = tmp_path / "stage"
    rc, err = _run(out, "budget.stages.judge.max_requests=12")
    assert rc == 3, err
    assert "budget of stage 'judge' reached" in err
    assert _requests(out, "judge") == 12
    assert _requests(out, "respond") > 0  # other stages ran

    priced = tmp_path / "cost"
    rc, err = _run(
        priced,
        "endpoints.strong.price.prompt=3",
        "endpoints.strong.price.completion=15",
        "endpoints.target.price.prompt=0.5",
        "endpoints.target.price.completion=1.5",
        "budget.max_cost=0.02",
    )
    assert rc == 3, err
    assert "max_cost $0.02" in err
    spend = _manifest(priced)["extra"]["spend"]
    cost = sum(c["cost"] for per in spend.values() for c in per.values())
    # Reached: at least the limit, overshot at most by the calls in flight when it was hit.
    assert 0.02 <= cost < 0.05


def test_cost_limit_without_prices_is_a_config_error(tmp_path: Path) -> None:
    rc, err = _run(tmp_path / "x", "budget.max_cost=1")
    assert rc == 2
    assert "budget.max_cost" in err and "price" in err

"""The spending ledger: counting by stage and endpoint, limits, prior spend."""

from __future__ import annotations

import pytest

from engine.config import Limits
from engine.errors import BudgetExceeded
from engine.llm.budget import Ledger, Spend


def test_counts_by_stage_and_endpoint_with_cost() -> None:
    ledger = Ledger(prices={"a": (2.0, 10.0)})
    ledger.admit("judge", "a")
    ledger.charge("judge", "a", 1_000, 500)
    ledger.admit("respond", "b")
    ledger.charge("respond", "b", 100, 100)
    ledger.admit(None, "a")
    spend = ledger.to_dict()
    assert spend["judge"]["a"] == {
        "requests": 1,
        "prompt_tokens": 1_000,
        "completion_tokens": 500,
        "cost": pytest.approx((1_000 * 2.0 + 500 * 10.0) / 1e6),
    }
    assert spend["respond"]["b"]["cost"] == 0.0  # unpriced endpoint
    assert spend["other"]["a"]["requests"] == 1
    summary = ledger.summary()
    assert summary["total"]["requests"] == 3
    assert summary["total"]["prompt_tokens"] == 1_100
    assert summary["reached"] is None
    assert not ledger.enforcing


def test_request_limit_is_exact() -> None:
    ledger = Ledger(run=Limits(max_requests=3))
    for _ in range(3):
        ledger.admit("s", "e")
    with pytest.raises(BudgetExceeded, match="max_requests 3"):
        ledger.admit("s", "e")
    assert ledger.total.requests == 3  # the refused request is not counted
    assert ledger.reached is not None and "run budget" in ledger.reached


def test_token_and_cost_limits_refuse_once_reached() -> None:
    ledger = Ledger(run=Limits(max_tokens=1_000), prices={"e": (1.0, 1.0)})
    ledger.admit("s", "e")
    ledger.charge("s", "e", 600, 300)  # 900 < 1000: still open
    ledger.admit("s", "e")
    ledger.charge("s", "e", 100, 50)  # 1050: reached
    with pytest.raises(BudgetExceeded, match="max_tokens 1000"):
        ledger.admit("s", "e")
    cost = Ledger(run=Limits(max_cost=0.01), prices={"e": (5.0, 15.0)})
    cost.admit("s", "e")
    cost.charge("s", "e", 1_000, 1_000)  # $0.02
    with pytest.raises(BudgetExceeded, match=r"max_cost \$0.01"):
        cost.admit("t", "e")


def test_stage_limit_applies_to_that_stage_only() -> None:
    ledger = Ledger(stages={"judge": Limits(max_requests=2)})
    assert ledger.enforcing
    ledger.admit("judge", "a")
    ledger.admit("judge", "b")  # counted across endpoints
    with pytest.raises(BudgetExceeded, match="stage 'judge'"):
        ledger.admit("judge", "a")
    for _ in range(10):
        ledger.admit("respond", "a")  # other stages go on
    assert ledger.to_dict()["respond"]["a"]["requests"] == 10


def test_prior_spend_counts_toward_the_limit() -> None:
    first = Ledger(prices={"e": (1.0, 2.0)})
    for _ in range(4):
        first.admit("s", "e")
        first.charge("s", "e", 10, 10)
    prior = first.to_dict()
    resumed = Ledger(run=Limits(max_requests=5), prior=prior)
    assert resumed.total.requests == 4
    assert resumed.total.cost == pytest.approx(4 * 30 / 1e6)
    resumed.admit("s", "e")
    with pytest.raises(BudgetExceeded):
        resumed.admit("s", "e")
    assert resumed.to_dict()["s"]["e"]["requests"] == 5


def test_malformed_prior_is_ignored_field_by_field() -> None:
    ledger = Ledger(prior={"s": {"e": {"requests": "x", "prompt_tokens": 5}}, "bad": 3})
    assert ledger.total.requests == 0
    assert ledger.total.prompt_tokens == 5
    assert Spend.from_dict({}).to_dict()["cost"] == 0.0

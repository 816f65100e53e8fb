"""Spending ledger: what the run has paid for, by stage and endpoint, and its limits.

Every HTTP attempt passes :meth:`Ledger.admit` right before it is sent (after the gate,
so a request that waited at the gate while the budget ran out does not go) and is
charged with :meth:`Ledger.charge` when its usage is known. Replays from the response
cache cost nothing and are not charged.

Limits are checked at admission: a request limit is exact (never exceeded), while a
token or cost limit can be overshot by the calls already in flight when it is reached,
because their usage is known only when they finish. When a limit is reached, ``admit``
raises :class:`~engine.errors.BudgetExceeded`; the scheduler then stops taking items
and lets the interrupted items be redone on the next run (their paid calls replay from
the cache), so the stop is clean and resumable.

The ledger starts from what earlier invocations on the same output spent (recorded in
the manifest), so a budget covers the whole job, not one invocation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol, TypedDict

from ..errors import BudgetExceeded

__all__ = ("Caps", "Ledger", "Spend", "SpendSummary")

_OTHER = "other"  # stage name for calls made outside a named stage


class SpendSummary(TypedDict):
    """The report's spending: the whole run, each stage, the limit reached if any."""

    total: dict[str, int | float]
    stages: dict[str, dict[str, int | float]]
    reached: str | None


class Caps(Protocol):
    """Limits (``engine.config.Limits`` fits); None means not enforced."""

    @property
    def max_cost(self) -> float | None: ...

    @property
    def max_tokens(self) -> int | None: ...

    @property
    def max_requests(self) -> int | None: ...


class Spend:
    """Requests, tokens and cost counted for one (stage, endpoint) pair, or a total."""

    __slots__ = ("completion_tokens", "cost", "prompt_tokens", "requests")

    def __init__(
        self,
        requests: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost: float = 0.0,
    ) -> None:
        self.requests = requests
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cost = cost

    @property
    def tokens(self) -> int:
        """Prompt + completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Spend) -> None:
        """Add ``other``'s counts to this one."""
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost += other.cost

    def to_dict(self) -> dict[str, int | float]:
        """Plain counters (cost rounded to a micro-dollar)."""
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": round(self.cost, 6),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> Spend:
        """Inverse of :meth:`to_dict` (missing, malformed, negative or non-finite fields
        count as 0: a manifest edited by hand or written by an older version must not
        carry a negative spend that keeps every budget from triggering)."""

        def num(key: str) -> float:
            value = raw.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return 0.0
            value = float(value)
            return value if 0.0 <= value < math.inf else 0.0

        return cls(
            int(num("requests")),
            int(num("prompt_tokens")),
            int(num("completion_tokens")),
            num("cost"),
        )


def _reached(spent: Spend, caps: Caps) -> str | None:
    """Which limit ``spent`` has reached, described, or None."""
    if caps.max_requests is not None and spent.requests >= caps.max_requests:
        return f"max_requests {caps.max_requests} (spent {spent.requests})"
    if caps.max_tokens is not None and spent.tokens >= caps.max_tokens:
        return f"max_tokens {caps.max_tokens} (spent {spent.tokens})"
    if caps.max_cost is not None and spent.cost >= caps.max_cost:
        return f"max_cost ${caps.max_cost:g} (spent ${spent.cost:.4f})"
    return None


class Ledger:
    """Counts spending by stage and endpoint and enforces run and per-stage limits.

    Args:
        run: limits for the whole run (None: none).
        stages: stage name -> that stage's limits.
        prices: endpoint name -> (USD per 1M prompt tokens, USD per 1M completion
            tokens); an endpoint missing here costs 0.
        prior: spending recorded by earlier invocations, as returned by
            :meth:`to_dict` (``{stage: {endpoint: counters}}``).
    """

    def __init__(
        self,
        *,
        run: Caps | None = None,
        stages: Mapping[str, Caps] | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
        prior: Mapping[str, object] | None = None,
    ) -> None:
        self._run = run
        self._stages = dict(stages or {})
        self._prices = dict(prices or {})
        self._by: dict[str, dict[str, Spend]] = {}
        self.total = Spend()
        self._stage_totals: dict[str, Spend] = {}
        self.reached: str | None = None
        self.online_cost = 0.0  # what this invocation's tokens cost at online prices
        for stage, per_endpoint in (prior or {}).items():
            if not isinstance(per_endpoint, Mapping):
                continue
            for endpoint, raw in per_endpoint.items():
                if isinstance(raw, Mapping):
                    spend = Spend.from_dict(raw)
                    self._slot(stage, endpoint).add(spend)
                    self._stage_total(stage).add(spend)
                    self.total.add(spend)

    @property
    def enforcing(self) -> bool:
        """Whether any limit is set (otherwise admit never refuses)."""
        return self._run is not None or bool(self._stages)

    def _slot(self, stage: str, endpoint: str) -> Spend:
        per = self._by.get(stage)
        if per is None:
            per = self._by[stage] = {}
        slot = per.get(endpoint)
        if slot is None:
            slot = per[endpoint] = Spend()
        return slot

    def _stage_total(self, stage: str) -> Spend:
        slot = self._stage_totals.get(stage)
        if slot is None:
            slot = self._stage_totals[stage] = Spend()
        return slot

    def check(self, stage: str | None = None) -> None:
        """Raise BudgetExceeded if the run's or ``stage``'s limit is reached."""
        stage = stage or _OTHER
        why: str | None = None
        if self._run is not None:
            hit = _reached(self.total, self._run)
            if hit is not None:
                why = f"run budget reached: {hit}"
        caps = self._stages.get(stage)
        if why is None and caps is not None:
            hit = _reached(self._stage_total(stage), caps)
            if hit is not None:
                why = f"budget of stage {stage!r} reached: {hit}"
        if why is not None:
            if self.reached is None:
                self.reached = why
            raise BudgetExceeded(why)

    def admit(self, stage: str | None, endpoint: str) -> None:
        """Count one request about to be sent, or raise BudgetExceeded if a limit is reached."""
        stage = stage or _OTHER
        if self.enforcing:
            self.check(stage)
        self._slot(stage, endpoint).requests += 1
        self._stage_total(stage).requests += 1
        self.total.requests += 1

    def charge(
        self,
        stage: str | None,
        endpoint: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        factor: float = 1.0,
    ) -> None:
        """Charge a finished request's tokens (and their cost) to ``stage`` and ``endpoint``.

        ``factor`` scales the cost (a batch request's share of the online price); what the
        same tokens cost online is kept in :attr:`online_cost`.

        Raises:
            ValueError: a negative count (the caller validates a server's usage first).
        """
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError(f"negative usage ({prompt_tokens}, {completion_tokens})")
        stage = stage or _OTHER
        price = self._prices.get(endpoint)
        online = (
            (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
            if price is not None
            else 0.0
        )
        self.online_cost += online
        cost = online * factor
        for spend in (self._slot(stage, endpoint), self._stage_total(stage), self.total):
            spend.prompt_tokens += prompt_tokens
            spend.completion_tokens += completion_tokens
            spend.cost += cost

    def to_dict(self) -> dict[str, dict[str, dict[str, int | float]]]:
        """``{stage: {endpoint: counters}}``, everything spent so far (prior included)."""
        return {
            stage: {endpoint: spend.to_dict() for endpoint, spend in per.items()}
            for stage, per in self._by.items()
        }

    def summary(self) -> SpendSummary:
        """Totals for the report: the whole run, each stage, and the limit reached if any."""
        return {
            "total": self.total.to_dict(),
            "stages": {stage: s.to_dict() for stage, s in sorted(self._stage_totals.items())},
            "reached": self.reached,
        }

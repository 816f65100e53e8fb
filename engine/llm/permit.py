"""The gate's vocabulary: a granted place (:class:`Permit`), how a call went
(:data:`Outcome`) and a read-only snapshot of a gate (:class:`GateState`)."""

from __future__ import annotations

from typing import Literal

__all__ = ("GateState", "Outcome", "Permit")

Outcome = Literal["ok", "rate_limited", "overloaded", "error", "cancelled"]


class Permit:
    """A granted place at the gate; give it back with :meth:`Gate.release`."""

    __slots__ = ("epoch", "paced", "released", "started_at", "ticket", "tokens")

    def __init__(
        self,
        tokens: int,
        started_at: float,
        epoch: int,
        *,
        paced: bool = False,
        ticket: tuple[int, float] = (0, 0.0),
    ) -> None:
        self.tokens = tokens
        self.started_at = started_at
        self.epoch = epoch
        self.released = False
        # Granted while a bucket paced the endpoint (a 429 then means the headers lied).
        self.paced = paced
        # Answers received before this send (engine.llm.burst.SendLedger's snapshot).
        self.ticket = ticket


class GateState:
    """A read-only snapshot of a gate for metrics and reports."""

    __slots__ = ("concurrency_limit", "in_flight", "paused_for", "rpm", "tpm", "waiting")

    def __init__(
        self,
        *,
        concurrency_limit: float,
        in_flight: int,
        waiting: int,
        rpm: float | None,
        tpm: float | None,
        paused_for: float,
    ) -> None:
        self.concurrency_limit = concurrency_limit
        self.in_flight = in_flight
        self.waiting = waiting
        self.rpm = rpm
        self.tpm = tpm
        self.paused_for = paused_for

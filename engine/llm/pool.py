"""A pool of callers behind one role: several keys or endpoints serving the same model.

Each call goes to the member where it would start soonest (:meth:`Gate.expected_wait`:
its queue served at the rate its buckets refill, a 429 pause, the concurrency limit).
Among members where it could start at once, the one with the most quota free now
(:meth:`Gate.free_now`) wins; then round robin, so equal members take turns. The
result: members share the load in proportion to their quotas (a key with twice the
rpm takes about twice the calls), and a member paused by a 429 gets no new calls until
its pause is over. Every member keeps its own gate, retries and metrics; the response
cache is shared and keyed by the (common) model, so a replay does not depend on which
member answered first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .caller import Caller, Completion

__all__ = ("Pool",)


class Pool:
    """Calls the member with the most quota left.

    Args:
        name: the pool's name (its members' names joined by ``+``).
        members: the callers (the same model; at least one).

    Raises:
        ValueError: no member, or members serving different models.
    """

    def __init__(self, name: str, members: list[Caller]) -> None:
        if not members:
            raise ValueError("a pool needs at least one member")
        models = {m.model for m in members}
        if len(models) != 1:
            raise ValueError(f"pooled callers serve different models: {sorted(models)}")
        self.name = name
        self.members = members
        self.model = members[0].model
        self._next = 0

    @property
    def structured_output(self) -> bool | str:
        """The members' structured output mode when they all share one, else plain text."""
        modes = {
            m.structured_output if m.structured_output is not True else "json_schema"
            for m in self.members
        }
        return modes.pop() if len(modes) == 1 else False

    def pick(self) -> Caller:
        """The member where a call would start soonest; among those that could start
        at once, the one with the most quota free now; then round robin."""
        members = self.members
        n = len(members)
        start = self._next
        best = members[start % n]
        best_key = self._key(best)
        for i in range(1, n):
            member = members[(start + i) % n]
            key = self._key(member)
            if key < best_key:
                best, best_key = member, key
        self._next = (start + 1) % n
        return best

    @staticmethod
    def _key(member: Caller) -> tuple[float, float]:
        gate = member.gate
        # Waits are compared to the millisecond: closer than that is a tie.
        return (round(gate.expected_wait(), 3), -gate.free_now())

    async def chat(
        self,
        messages: Sequence[Mapping[str, object]],
        *,
        priority: int = 0,
        sample_index: int = 0,
        stage: str | None = None,
        **params: Any,
    ) -> Completion:
        """:meth:`Caller.chat` on the member with the most headroom."""
        return await self.pick().chat(
            messages, priority=priority, sample_index=sample_index, stage=stage, **params
        )

"""One LAB run's machinery: calls, per-leaf dedup and rows, shared by the leaf flows.

:class:`Pipeline` holds what every leaf's flow uses (the steps, the caller of each role,
the counts, the optional semantic dedup); the flows are :mod:`.skills` (freeform and
grounded skills), :mod:`.knowledge` and :mod:`.simple` (``pipeline = "simple"``). A
question dropped by a check raises :class:`Drop` inside its chain and becomes a rejected
row; an endpoint or parse error becomes a failed row of the step it hit, and the rest of
the leaf goes on.

Determinism: every generation sends a ``seed`` derived from the run seed, the leaf, the
step and the unit, and dedup runs in generation order after all samples of a step are back.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from ...dedup.semantic import REASON as NEAR_DUPLICATE
from ...dedup.semantic import SemanticDedup
from ...errors import EndpointError, ParseError
from ...filters import ExactDedup
from ...io.taxonomy import Leaf
from ...records import row_id
from ...stages import Generate
from ..custom import Context, Failed, Kept, Rejected, TypedRow
from .config import LabConfig
from .report import Tally
from .rows import METHOD, Candidate, LabFailed, LabKept, LabRejected, check
from .steps import Steps

__all__ = ("Drop", "Pipeline", "Values")

T = TypeVar("T")

Values = dict[str, object]
"""A step's template values (``{{name}}`` -> value)."""


class Drop(Exception):
    """A check dropped the question: ``filter`` names it, ``reason`` says why."""

    def __init__(self, filter_name: str, reason: str) -> None:
        super().__init__(reason)
        self.filter = filter_name
        self.reason = reason


class Pipeline:
    """What the leaf flows share during one run (built in ``prepare``).

    Args:
        cfg: the method's options.
        ctx: the run's method context (callers, observers, seed, models).
        tally: the run's counts.
        semantic: the near-duplicate filter, when enabled.
    """

    def __init__(
        self, cfg: LabConfig, ctx: Context, tally: Tally, semantic: SemanticDedup | None
    ) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.steps = Steps(cfg, ctx.observer)
        self.tally = tally
        self.semantic = semantic
        self.models = ctx.models()

    # ------------------------------------------------------------------ calls
    def _seed(self, leaf: Leaf, *parts: object) -> int:
        return int(row_id(METHOD, self.ctx.seed, leaf.path, *parts)[:8], 16)

    async def ask(self, step: Generate[T], role: str, values: Values, leaf: Leaf, unit: str) -> T:
        """``step``'s reply from ``role``, with the seed of ``leaf`` and ``unit``.

        Raises:
            EndpointError: the call failed.
            ParseError: no reply parsed.
        """
        seed = self._seed(leaf, step.name, unit)
        return await step(self.ctx.caller(role), values, seed=seed)

    async def many(
        self, step: Generate[T], jobs: list[tuple[str, Values]], leaf: Leaf
    ) -> list[tuple[str, T | Failed]]:
        """Run generation ``jobs`` (unit, values) at once; a failure becomes a failed row."""

        async def one(unit: str, values: Values) -> T | Failed:
            try:
                return await self.ask(step, "strong", values, leaf, unit)
            except (EndpointError, ParseError) as exc:
                return self.failed(leaf, unit, step.name, exc)

        results = await asyncio.gather(*(one(u, v) for u, v in jobs))
        return [(u, r) for (u, _), r in zip(jobs, results, strict=True)]

    # ------------------------------------------------------------------- rows
    def kept(self, leaf: Leaf, cand: Candidate) -> Kept:
        """The kept row of ``cand`` (counted)."""
        self.tally.leaf(leaf)["kept"] += 1
        return Kept(LabKept.of(leaf, cand, self.models, self.ctx.simulated))

    def rejected(
        self,
        leaf: Leaf,
        cand: Candidate,
        filter_name: str,
        reason: str,
        *,
        similarity: float = 0.0,
        duplicate_of: str = "",
    ) -> Rejected:
        """The rejected row of ``cand``, dropped by ``filter_name`` (counted)."""
        self.tally.leaf(leaf)[filter_name] += 1
        row = LabRejected.of(
            leaf,
            cand,
            self.models,
            self.ctx.simulated,
            filter=filter_name,
            reason=reason,
            similarity=similarity,
            duplicate_of=duplicate_of,
        )
        return Rejected(row, reason=reason)

    def failed(
        self,
        leaf: Leaf,
        unit: str,
        stage: str,
        exc: EndpointError | ParseError,
        *,
        question: str = "",
    ) -> Failed:
        """The failed row of ``stage`` at ``unit`` (counted)."""
        self.tally.failed(leaf, stage)
        row = LabFailed.of(
            leaf, unit, stage, exc, self.models, self.ctx.simulated, question=question
        )
        return Failed(stage=stage, error=row.error, data=row)

    # ------------------------------------------------------------------ dedup
    async def dedup(
        self, leaf: Leaf, cands: list[Candidate], rows: list[TypedRow]
    ) -> list[Candidate]:
        """The candidates whose question is new: exact dedup within the leaf, in order,
        then (when enabled) the near-duplicate check against the whole run. Every
        candidate is counted as generated; a dropped one is appended to ``rows``."""
        seen = ExactDedup()
        unique: list[Candidate] = []
        counts = self.tally.leaf(leaf)
        for cand in cands:
            counts["generated"] += 1
            if seen.add(cand.question):
                cand.checks = [check("dedup", 1.0, True)]
                unique.append(cand)
            else:
                cand.checks = [check("dedup", 0.0, False, "duplicate question")]
                rows.append(self.rejected(leaf, cand, "dedup", "duplicate question"))
        if self.semantic is None or not unique:
            return unique
        verdicts = await self.semantic.check(
            [(row_id(METHOD, leaf.path, c.unit), c.question) for c in unique]
        )
        admitted: list[Candidate] = []
        for cand, dup in zip(unique, verdicts, strict=True):
            if dup is None:
                admitted.append(cand)
                continue
            similarity = round(dup.similarity, 4)
            cand.checks.append(
                check(NEAR_DUPLICATE, similarity, False, f"near duplicate of {dup.duplicate_of}")
            )
            rows.append(
                self.rejected(
                    leaf,
                    cand,
                    NEAR_DUPLICATE,
                    NEAR_DUPLICATE,
                    similarity=similarity,
                    duplicate_of=dup.duplicate_of,
                )
            )
        return admitted

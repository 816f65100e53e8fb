"""SELF-GUIDE's input generation (the method's ``prepare``): rounds of prompts, the
input filters, and the pool of accepted inputs each round samples from.

``generation_rounds`` rounds run one after the other (each samples from the inputs
accepted so far); the ``per_round`` prompts of a round are sent concurrently (at most
``concurrency`` in flight). Each reply is cleaned and passes the input filters in prompt
order (:class:`~engine.methods.selfguide.rules.InputFilters`), then, with
``[method.selfguide.semantic_dedup] enabled = true``, the near-duplicate check against
every accepted input (filter and reason ``near_duplicate``). Every candidate ends up
accepted or dropped, and counted in its round.

A generation call that fails for good stops the run (resumable): carrying on would build a
pool that a rerun builds differently. Every call replays from the cache, so a resume
rebuilds the same pool.
"""

from __future__ import annotations

import asyncio

from ...dedup.semantic import REASON as NEAR_DUPLICATE
from ...dedup.semantic import SemanticDedup
from ...filters import ExactDedup
from ...io.tasks import Task
from ...records import row_id
from .config import SelfGuideConfig
from .prompts import Prompter
from .report import RoundStats
from .rows import Candidate
from .rules import INPUT_FILTERS, InputFilters, clean_reply
from .student import Student

__all__ = ("Rounds", "input_filter_names")


def input_filter_names(semantic: SemanticDedup | None) -> tuple[str, ...]:
    """The input filters in use, in order (the rejected rows' ``filter`` values)."""
    return INPUT_FILTERS + ((NEAR_DUPLICATE,) if semantic is not None else ())


class Rounds:
    """The generation rounds of one run (see the module docstring).

    Attributes:
        accepted: the accepted candidates, in round and prompt order.
        dropped: the dropped candidates, with their filter and reason.
        stats: per round: generated, dropped by filter, kept.
    """

    def __init__(
        self,
        cfg: SelfGuideConfig,
        task: Task,
        *,
        prompter: Prompter,
        filters: InputFilters,
        student: Student,
        semantic: SemanticDedup | None,
        temperature: float,
        method: str,
    ) -> None:
        self.cfg = cfg
        self.prompter = prompter
        self.filters = filters
        self.student = student
        self.semantic = semantic
        self.temperature = temperature
        self.method = method
        self.filter_names = input_filter_names(semantic)
        examples = (e.input for e in task.examples) if cfg.dedup_examples else ()
        self.dedup = ExactDedup(examples)
        self.accepted: list[Candidate] = []
        self.dropped: list[Candidate] = []
        self.stats: list[RoundStats] = []

    async def run(self) -> None:
        """Run every round, one after the other.

        Raises:
            EndpointError: a generation call failed for good.
        """
        cfg = self.cfg
        limit = asyncio.Semaphore(cfg.concurrency or cfg.per_round)
        for round_no in range(1, cfg.generation_rounds + 1):
            pool = [c.text for c in self.accepted]
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._one(round_no, j, pool, limit))
                    for j in range(cfg.per_round)
                ]
            await self._admit(round_no, [t.result() for t in tasks])

    async def _one(
        self, round_no: int, prompt: int, pool: list[str], limit: asyncio.Semaphore
    ) -> Candidate:
        messages, label = self.prompter.generation(round_no, prompt, pool)
        async with limit:
            raw = await self.student.generate(
                messages,
                sample_index=(round_no - 1) * self.cfg.per_round + prompt,
                temperature=self.temperature,
            )
        return Candidate(round=round_no, prompt=prompt, text=clean_reply(raw), raw=raw, label=label)

    async def _admit(self, round_no: int, cands: list[Candidate]) -> None:
        """Filter one round's candidates in prompt order; accept or drop each."""
        stats = RoundStats(
            round=round_no, generated=len(cands), dropped=dict.fromkeys(self.filter_names, 0)
        )
        for cand in cands:
            verdict = self.filters.check(cand.text, self.dedup)
            if verdict is not None:
                cand.filter, cand.reason = verdict
        await self._near_duplicates(cands)
        for cand in cands:
            if cand.filter is None:
                self.accepted.append(cand)
                stats.kept += 1
            else:
                self.dropped.append(cand)
                stats.dropped[cand.filter] += 1
        self.stats.append(stats)

    async def _near_duplicates(self, cands: list[Candidate]) -> None:
        """Mark the candidates that passed the input filters but repeat an accepted input."""
        if self.semantic is None:
            return
        survivors = [c for c in cands if c.filter is None]
        verdicts = await self.semantic.check(
            [(row_id(self.method, c.key), c.text) for c in survivors]
        )
        for cand, dup in zip(survivors, verdicts, strict=True):
            if dup is not None:
                cand.filter = cand.reason = NEAR_DUPLICATE
                cand.similarity = round(dup.similarity, 4)
                cand.duplicate_of = dup.duplicate_of

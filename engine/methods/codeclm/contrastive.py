"""Contrastive Filtering (CodecLM section 4.3): one instruction, iterated until it separates
the strong model from the target.

Iteration 1 is the basic instruction; each later one applies one random action of the
item's Self-Rubrics (improve, strong). Strong and target answer at once; the judge scores
the pair twice with the answers swapped and the two results are averaged (:func:`swap_average`);
gap = strong - target. ``|gap| > theta`` keeps (the instruction and the better answer),
else the instruction goes back to improve, up to ``max_iterations``; still within theta
then: rejected (:func:`route`). With semantic dedup on, an instruction near one already
kept is dropped before its answers are paid for, and checked again when it is kept.

Every random choice comes from a ``random.Random`` seeded by the run seed, the item and
the instruction's position, and every call replays from the cache, so a rerun (or a
resume after a crash) gives the same row with the same id.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Literal, TypeVar

from ...dedup.semantic import SemanticDedup
from ...errors import EndpointError, ParseError
from ...stages import ChatCaller, Generate, concurrently
from ..custom import Failed, Kept, Rejected, TypedRow
from .config import CodecLMConfig
from .report import Tally
from .rows import RowBase, Scores, Step
from .steps import Steps

__all__ = ("Contrastive", "route", "swap_average")

T = TypeVar("T")


def swap_average(first: tuple[float, float], swapped: tuple[float, float]) -> tuple[float, float]:
    """Scores of (strong, target) from two judge calls with the answers swapped.

    ``first`` shows the strong answer as Assistant 1; ``swapped`` shows it as Assistant 2.
    """
    strong = (first[0] + swapped[1]) / 2.0
    target = (first[1] + swapped[0]) / 2.0
    return strong, target


def route(
    gap: float, iteration: int, *, theta: float, max_iterations: int
) -> Literal["keep", "improve", "reject"]:
    """Contrastive Filtering's decision: ``keep``, ``improve`` (requeue) or ``reject``."""
    if abs(gap) > theta:
        return "keep"
    if iteration >= max_iterations:
        return "reject"
    return "improve"


async def _ask(
    step: Generate[T], caller: ChatCaller, values: Mapping[str, object], depth: int
) -> T:
    # Later iterations outrank earlier ones at the gate: finish started work first.
    return await step(caller, values, priority=step.depth + depth)


class Contrastive:
    """Runs instructions through Contrastive Filtering, counting into ``tally``.

    Args:
        steps: the run's steps and role callers.
        cfg: the method's options (theta, max_iterations).
        tally: the run's counters.
        semantic: the near-duplicate check, or None when it is off.
        seed: the run's seed.
    """

    def __init__(
        self,
        steps: Steps,
        cfg: CodecLMConfig,
        tally: Tally,
        semantic: SemanticDedup | None,
        seed: int,
    ) -> None:
        self.steps = steps
        self.theta = cfg.theta
        self.max_iterations = cfg.max_iterations
        self.tally = tally
        self.semantic = semantic
        self.seed = seed

    async def run(self, base: RowBase, item_key: str, j: int, actions: list[str]) -> TypedRow:
        """The row instruction ``j`` of item ``item_key`` ends as (``base``: its columns).

        An endpoint or parse error fails the instruction alone (a failed row naming the
        stage and holding the instruction as it was then); any other error escapes.
        """
        steps, roles, semantic = self.steps, self.steps.roles, self.semantic
        rng = random.Random(f"codeclm:{self.seed}:{item_key}:{j}")
        instruction = base.basic_instruction
        if semantic is not None:
            semantic.warm_up()  # loads once, in a worker thread, while calls run
        history: list[Step] = []
        stage = "respond"
        try:
            for iteration in range(1, self.max_iterations + 1):
                depth = 4 * (iteration - 1)
                action = ""
                if iteration > 1:
                    stage = "improve"
                    action = rng.choice(actions)
                    values = {"action": action, "instruction": instruction}
                    improved = await _ask(steps.improve, roles.strong, values, depth)
                    instruction = improved.improved_instruction
                if semantic is not None:
                    # Before paying for two responses and two judge calls: an instruction
                    # already near a kept one is dropped now (the check at keep decides
                    # for pairs in flight at the same time).
                    dup = await semantic.probe(base.id, instruction)
                    if dup is not None:
                        row = base.near_duplicate(
                            instruction, iteration, history, dup.similarity, dup.duplicate_of
                        )
                        return Rejected(row, row.reason)
                stage = "respond"
                asked = {"instruction": instruction}
                strong_ans, target_ans = await concurrently(
                    _ask(steps.respond, roles.strong, asked, depth),
                    _ask(steps.respond, roles.target, asked, depth),
                )
                stage = "judge"
                first, swapped = await concurrently(
                    _ask(
                        steps.judge,
                        roles.judge,
                        {
                            "instruction": instruction,
                            "answer_1": strong_ans,
                            "answer_2": target_ans,
                        },
                        depth,
                    ),
                    _ask(
                        steps.judge,
                        roles.judge,
                        {
                            "instruction": instruction,
                            "answer_1": target_ans,
                            "answer_2": strong_ans,
                        },
                        depth,
                    ),
                )
                self.tally.judge_pairs += 1
                shown = (float(first.assistant_1), float(first.assistant_2))
                shown_swapped = (float(swapped.assistant_1), float(swapped.assistant_2))
                s_strong, s_target = swap_average(shown, shown_swapped)
                gap = s_strong - s_target
                scores = Scores(strong=s_strong, target=s_target, gap=gap)
                history.append(
                    Step(
                        iteration=iteration,
                        instruction=instruction,
                        action=action,
                        strong_response=strong_ans,
                        target_response=target_ans,
                        judge_strong_first=list(shown),
                        judge_target_first=list(shown_swapped),
                        scores=scores,
                    )
                )
                decision = route(
                    gap, iteration, theta=self.theta, max_iterations=self.max_iterations
                )
                if decision == "keep":
                    # Checked (and added to the index) only when kept: the kept text is
                    # the one that must not repeat, and the one a resume rebuilds from.
                    if semantic is not None:
                        dup = await semantic.check_one(base.id, instruction)
                        if dup is not None:
                            row = base.near_duplicate(
                                instruction, iteration, history, dup.similarity, dup.duplicate_of
                            )
                            return Rejected(row, row.reason)
                    self.tally.kept_by_iteration[iteration] += 1
                    better = "strong" if gap > 0 else "target"
                    answer = strong_ans if gap > 0 else target_ans
                    return Kept(base.kept(instruction, iteration, answer, better, scores, history))
                if decision == "reject":
                    self.tally.rejected += 1
                    reason = (
                        f"gap {gap:+.2f} within theta {self.theta:g} after "
                        f"{self.max_iterations} iterations"
                    )
                    row = base.rejected(
                        instruction, iteration, history, filter="contrastive", reason=reason
                    )
                    return Rejected(row, row.reason)
        except (EndpointError, ParseError) as exc:
            stage = exc.stage or stage
            self.tally.failed_by_stage[stage] += 1
            failed = base.failed(instruction, stage, exc)
            return Failed(failed.stage, failed.error, failed)
        finally:
            if semantic is not None:
                semantic.forget(base.id)
        raise AssertionError("unreachable: route() rejects at max_iterations")

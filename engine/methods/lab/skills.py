"""LAB's skill leaves (``pipeline = "full"``), as InstructLab SDG generates them.

* freeform: ``gen_questions``, one call per seed example asking for a set of
  ``num_samples`` questions -> exact dedup -> ``eval_question`` (0/1, keep == 1) ->
  ``gen_responses`` -> ``eval_pair`` (1-3, keep >= ``min_pair_score``).
* grounded: ``gen_contexts`` (``num_contexts`` per seed example, deduplicated) ->
  ``gen_grounded_questions`` (one call per context asking for a set of
  ``grounded_questions``) -> the same checks and response, with the context shown.

Each leaf is prompted only with its own seed examples (taxonomy-driven sampling).
"""

from __future__ import annotations

import asyncio

from ...errors import EndpointError, ParseError
from ...filters import ExactDedup
from ...io.taxonomy import Leaf
from ..custom import Failed, TypedRow
from .pipeline import Drop, Pipeline, Values
from .rows import Candidate, check

__all__ = ("context_block", "skill_rows", "skill_values")


def skill_values(leaf: Leaf, i: int) -> Values:
    """The template values of seed example ``i`` (cycling through the leaf's seeds)."""
    seed = leaf.skill_seeds[i % len(leaf.skill_seeds)]
    return {
        "task_description": leaf.task_description,
        "seed_question": seed.question,
        "seed_answer": seed.answer,
        "seed_context": seed.context,
        "context_block": "",
    }


def context_block(context: str) -> str:
    """The context as the templates show it (``""`` without one)."""
    if not context:
        return ""
    return f"Context:\n[Start of Context]\n{context}\n[End of Context]\n\n"


async def skill_rows(run: Pipeline, leaf: Leaf) -> list[TypedRow]:
    """All rows of a skill leaf."""
    rows: list[TypedRow] = []
    if leaf.kind == "freeform_skill":
        cands = await _freeform_questions(run, leaf, rows)
    else:
        cands = await _grounded_questions(run, leaf, rows)
    unique = await run.dedup(leaf, cands, rows)
    rows.extend(await asyncio.gather(*(_chain(run, leaf, c) for c in unique)))
    return rows


async def _freeform_questions(run: Pipeline, leaf: Leaf, rows: list[TypedRow]) -> list[Candidate]:
    # As SDG: one call per seed example, asking for a set of num_samples questions.
    n = run.cfg.num_samples
    seeds = range(len(leaf.skill_seeds))
    jobs = [(f"s{i}", {**skill_values(leaf, i), "num_samples": n}) for i in seeds]
    cands: list[Candidate] = []
    asked = await run.many(run.steps.gen_questions, jobs, leaf)
    for (unit, res), i in zip(asked, seeds, strict=True):
        if isinstance(res, Failed):
            rows.append(res)
            continue
        for k, question in enumerate(res.questions[:n]):
            if question.strip():
                cands.append(Candidate(unit=f"{unit}.q{k}", question=question.strip(), seed=i))
    return cands


async def _grounded_questions(run: Pipeline, leaf: Leaf, rows: list[TypedRow]) -> list[Candidate]:
    # As SDG: num_contexts contexts per seed example (its n=10), then one call per context
    # asking for a set of grounded_questions questions.
    cfg = run.cfg
    seeds = [i for i in range(len(leaf.skill_seeds)) for _ in range(cfg.num_contexts)]
    units = [f"s{i}.c{j}" for i in range(len(leaf.skill_seeds)) for j in range(cfg.num_contexts)]
    jobs = [(unit, skill_values(leaf, i)) for unit, i in zip(units, seeds, strict=True)]
    contexts: list[tuple[str, str, int]] = []  # (unit, context, seed example)
    seen = ExactDedup()
    counts = run.tally.leaf(leaf)
    written = await run.many(run.steps.gen_contexts, jobs, leaf)
    for (unit, made), i in zip(written, seeds, strict=True):
        if isinstance(made, Failed):
            rows.append(made)
            continue
        counts["contexts_generated"] += 1
        if seen.add(made.context):
            contexts.append((unit, made.context.strip(), i))
        else:
            counts["contexts_duplicate"] += 1
    n = cfg.grounded_questions
    qjobs: list[tuple[str, Values]] = [
        (unit, {**skill_values(leaf, i), "context": context, "num_samples": n})
        for unit, context, i in contexts
    ]
    cands: list[Candidate] = []
    answers = await run.many(run.steps.gen_grounded_questions, qjobs, leaf)
    for (unit, res), (_, context, i) in zip(answers, contexts, strict=True):
        if isinstance(res, Failed):
            rows.append(res)
            continue
        for k, question in enumerate(res.questions[:n]):
            if question.strip():
                cands.append(
                    Candidate(
                        unit=f"{unit}.q{k}", question=question.strip(), context=context, seed=i
                    )
                )
    return cands


async def _chain(run: Pipeline, leaf: Leaf, cand: Candidate) -> TypedRow:
    """The checks and the response of one question: its kept, rejected or failed row."""
    steps, unit = run.steps, cand.unit
    values = skill_values(leaf, cand.seed) | {
        "question": cand.question,
        "context": cand.context,
        "context_block": context_block(cand.context),
    }
    stage = "eval_question"
    try:
        q = await run.ask(steps.eval_question, "judge", values, leaf, unit)
        cand.checks.append(check("question_check", q.score, q.score == 1, q.explanation))
        if q.score != 1:
            raise Drop("question_check", f"question_check={q.score}")
        stage = "gen_responses"
        cand.answer = await run.ask(steps.gen_responses, "strong", values, leaf, unit)
        stage = "eval_pair"
        p = await run.ask(steps.eval_pair, "judge", {**values, "answer": cand.answer}, leaf, unit)
        ok = p.score >= run.cfg.min_pair_score
        cand.checks.append(check("pair_check", p.score, ok, p.explanation))
        if not ok:
            raise Drop("pair_check", f"pair_score={p.score}<{run.cfg.min_pair_score}")
    except Drop as drop:
        return run.rejected(leaf, cand, drop.filter, drop.reason)
    except (EndpointError, ParseError) as exc:
        return run.failed(leaf, unit, stage, exc, question=cand.question)
    return run.kept(leaf, cand)

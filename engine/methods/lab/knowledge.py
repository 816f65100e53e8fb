"""LAB's knowledge leaves (``pipeline = "full"``), as InstructLab SDG generates them.

Documents chunked by words (``chunk_word_count``), optionally a spell-corrected copy of
every chunk (both used) -> ``gen_knowledge`` (``[QUESTION]...[ANSWER]...[END]`` blocks)
-> exact dedup -> ``eval_faithfulness`` (YES/NO, keep YES) -> ``eval_relevancy`` (0-2,
keep == 2) -> ``eval_verify_question`` (0/1, keep == 1).
"""

from __future__ import annotations

import asyncio

import msgspec

from ...errors import EndpointError, ParseError
from ...filters import normalize
from ...io.taxonomy import Leaf
from ..custom import Failed, TypedRow
from .leaves import chunks as leaf_chunks
from .pipeline import Drop, Pipeline, Values
from .rows import Candidate, check

__all__ = ("icl_values", "knowledge_rows")


def icl_values(leaf: Leaf, i: int, icl_pairs: int) -> Values:
    """The in-context example of seed ``i`` (cycling): its document and QA pairs."""
    seed = leaf.knowledge_seeds[i % len(leaf.knowledge_seeds)]
    pairs = "\n".join(f"[QUESTION] {q} [ANSWER] {a} [END]" for q, a in seed.qa[:icl_pairs])
    return {
        "domain": leaf.domain,
        "document_outline": leaf.document_outline,
        "icl_document": seed.context,
        "icl_pairs": pairs,
    }


class _Version(msgspec.Struct, frozen=True):
    """A chunk as sent to gen_knowledge: as read, or spell-corrected."""

    unit: str
    text: str
    chunk: int  # its index among the leaf's chunks
    dataset_type: str  # base_document or spellcheck


async def knowledge_rows(run: Pipeline, leaf: Leaf) -> list[TypedRow]:
    """All rows of a knowledge leaf."""
    cfg = run.cfg
    rows: list[TypedRow] = []
    chunks = leaf_chunks(leaf, cfg.chunk_word_count)
    run.tally.leaf(leaf)["chunks"] += len(chunks)
    # SDG's flattened document columns: every chunk, then its corrected copies.
    versions = [_Version(u, t, i, "base_document") for i, (u, t) in enumerate(chunks)]
    if cfg.spellcheck:
        jobs: list[tuple[str, Values]] = [
            (u, {"document": t, "domain": leaf.domain}) for u, t in chunks
        ]
        fixed = await run.many(run.steps.spellcheck, jobs, leaf)
        for i, (unit, text) in enumerate(fixed):
            if isinstance(text, Failed):
                rows.append(text)
            elif normalize(text) != normalize(chunks[i][1]):
                versions.append(_Version(f"{unit}.spell", text.strip(), i, "spellcheck"))
    samples = [(v, k) for v in versions for k in range(cfg.knowledge_samples)]
    gjobs: list[tuple[str, Values]] = [
        (f"{v.unit}.s{k}", {**icl_values(leaf, v.chunk, cfg.icl_pairs), "document": v.text})
        for v, k in samples
    ]
    cands: list[Candidate] = []
    answers = await run.many(run.steps.gen_knowledge, gjobs, leaf)
    for (unit, res), (v, _) in zip(answers, samples, strict=True):
        if isinstance(res, Failed):
            rows.append(res)
            continue
        for p, qa in enumerate(res.pairs):
            if qa.question.strip() and qa.answer.strip():
                cands.append(
                    Candidate(
                        unit=f"{unit}.p{p}",
                        question=qa.question.strip(),
                        answer=qa.answer.strip(),
                        context=v.text,
                        raw_document=chunks[v.chunk][1],
                        dataset_type=v.dataset_type,
                    )
                )
    unique = await run.dedup(leaf, cands, rows)
    rows.extend(await asyncio.gather(*(_chain(run, leaf, c) for c in unique)))
    return rows


async def _chain(run: Pipeline, leaf: Leaf, cand: Candidate) -> TypedRow:
    """The three judges of one pair: its kept, rejected or failed row."""
    steps, unit = run.steps, cand.unit
    values: Values = {
        "document": cand.context,
        "question": cand.question,
        "answer": cand.answer,
        "domain": leaf.domain,
    }
    stage = "eval_faithfulness"
    try:
        f = await run.ask(steps.eval_faithfulness, "judge", values, leaf, unit)
        yes = f.score == "YES"
        cand.checks.append(check("faithfulness", 1.0 if yes else 0.0, yes, f.explanation))
        if not yes:
            raise Drop("faithfulness", f"faithfulness={f.score}")
        stage = "eval_relevancy"
        r = await run.ask(steps.eval_relevancy, "judge", values, leaf, unit)
        cand.checks.append(check("relevancy", r.score, r.score == 2, r.explanation))
        if r.score != 2:
            raise Drop("relevancy", f"relevancy={r.score}<2")
        stage = "eval_verify_question"
        v = await run.ask(steps.eval_verify_question, "judge", values, leaf, unit)
        cand.checks.append(check("self_contained", v.score, v.score == 1, v.explanation))
        if v.score != 1:
            raise Drop("self_contained", f"self_contained={v.score}")
    except Drop as drop:
        return run.rejected(leaf, cand, drop.filter, drop.reason)
    except (EndpointError, ParseError) as exc:
        return run.failed(leaf, unit, stage, exc, question=cand.question)
    return run.kept(leaf, cand)

"""LAB's ``pipeline = "simple"``: InstructLab SDG's simple pipeline, with no judge.

``num_instructions_to_generate`` question/answer generations per leaf at
``temperature`` and exact dedup on the question. Grounded skill leaves reuse their seed
contexts; knowledge leaves cycle through their chunks.
"""

from __future__ import annotations

from ...io.taxonomy import Leaf
from ..custom import Failed, TypedRow
from .knowledge import icl_values
from .leaves import chunks as leaf_chunks
from .pipeline import Pipeline, Values
from .rows import Candidate
from .skills import context_block, skill_values

__all__ = ("simple_rows",)


async def simple_rows(run: Pipeline, leaf: Leaf) -> list[TypedRow]:
    """All rows of a leaf under the simple pipeline."""
    n = run.cfg.num_instructions_to_generate
    rows: list[TypedRow] = []
    jobs: list[tuple[str, Values]] = []
    # unit -> (context, dataset_type): the context a generation was shown
    contexts: dict[str, tuple[str, str]] = {}
    if leaf.kind == "knowledge":
        chunks = leaf_chunks(leaf, run.cfg.chunk_word_count)
        run.tally.leaf(leaf)["chunks"] += len(chunks)
        for i in range(n if chunks else 0):
            _, text = chunks[i % len(chunks)]
            jobs.append((f"s{i}", {**icl_values(leaf, i, run.cfg.icl_pairs), "document": text}))
            contexts[f"s{i}"] = (text, "base_document")
        step = run.steps.simple_knowledge
    else:
        for i in range(n):
            values = skill_values(leaf, i)
            context = str(values["seed_context"])
            if context:
                values["context_block"] = context_block(context)
                contexts[f"s{i}"] = (context, "")
            jobs.append((f"s{i}", {**values, "context": context}))
        step = run.steps.simple_skill
    cands: list[Candidate] = []
    for unit, res in await run.many(step, jobs, leaf):
        if isinstance(res, Failed):
            rows.append(res)
            continue
        cand = Candidate(unit=unit, question=res.question.strip(), answer=res.answer.strip())
        if unit in contexts:
            cand.context, dataset_type = contexts[unit]
            if dataset_type:
                cand.raw_document = cand.context
                cand.dataset_type = dataset_type
        cands.append(cand)
    unique = await run.dedup(leaf, cands, rows)
    rows.extend(run.kept(leaf, cand) for cand in unique)
    return rows

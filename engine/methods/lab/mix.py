"""LAB's derived training sets, built as InstructLab SDG's data mixer builds them.

Source: ``instructlab/sdg`` at ``faa84ef``, ``src/instructlab/sdg/datamixing.py``
(``_create_phase07_ds``, ``_create_phase10_ds``, ``_add_extra_contexts_to_samples``,
``_create_auxiliary_dataset``, ``DataMixer.collect``, ``_add_system_message``) and
``pipelines/full/knowledge.yaml`` (the auxiliary spellcheck instructions).

* **Knowledge phase** (``knowledge.jsonl``, SDG's phase 0.7): every kept knowledge pair
  with its document chunk in the user turn (``context\\n\\nquestion``), ``unmask = true``
  (trained on as pretraining text), plus the auxiliary spellcheck samples.
* **Skills phase** (``skills.jsonl``, SDG's phase 1.0): every skill leaf resampled to
  ``skills_per_leaf`` samples (SDG's ``NUM_SYNTH_SKILLS = 30``, with replacement); every
  knowledge pair again RAFT-style (its leaf's other chunks as distractor documents,
  ``num_doc_in_context`` documents in all, the gold one among them with probability
  ``raft_p``); the knowledge phase's pairs replayed (``unmask = true``); the auxiliary
  spellcheck samples (``unmask = false``).
* **Auxiliary spellcheck**: for each distinct spell-corrected chunk a kept pair came
  from, the original chunk plus one of SDG's spellcheck instructions as the user turn
  and the corrected chunk as the answer.
* Every sample is ``messages`` with the system turn first (``system_prompt``; SDG's
  default is its Granite prompt).
* ``mixed.jsonl``: the recipe of ``[method.lab.mix]`` over one sample per kept row.

Every random choice comes from ``random.Random`` seeded by the run seed and the set's
identity, so finalizing again writes the same files.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Annotated, TypedDict, TypeVar

import msgspec

from ...config import Base
from ...records import row_id

__all__ = (
    "SDG_SYSTEM_PROMPT",
    "SPELLCHECK_INSTRUCTIONS",
    "LabMix",
    "Row",
    "Sample",
    "mix_rows",
    "phase_sets",
    "raft_documents",
    "sample_rows",
    "training_sample",
)

SDG_SYSTEM_PROMPT = (
    "I am a Red Hat® Instruct Model, an AI language model developed by Red Hat and IBM "
    "Research based on the granite-3.0-8b-base model. My primary role is to serve as a "
    "chat assistant."
)
"""InstructLab SDG's default system prompt (``generate_data.py`` ``_SYS_PROMPT``)."""

SPELLCHECK_INSTRUCTIONS: tuple[str, ...] = (
    "Correct any spelling errors in the document and output the corrected version.",
    "Rewrite the document to remove any spelling errors.",
)
"""SDG's auxiliary spellcheck instructions (``pipelines/full/knowledge.yaml``)."""

Size = int | float
"""A pool's size: an int is a count, a float a ratio of the pool."""

Row = Mapping[str, object]
"""A committed kept row of LAB, as read back from its shard (or made by a caller)."""


class Sample(TypedDict):
    """A training sample, as written to the phase sets."""

    id: str
    source_id: str
    leaf: str
    kind: str
    phase: str
    dataset: str
    unmask: bool
    messages: list[dict[str, str]]


T = TypeVar("T")
S = TypeVar("S", bound=Mapping[str, object])


def _check_size(value: Size, field: str) -> None:
    if value < 0:
        raise ValueError(f"{field}: sampling size must be >= 0, got {value}")


class LabMix(Base, frozen=True):
    """``[method.lab.mix]``: the phase sets and the data-mixing recipe.

    Attributes:
        system_prompt: the system turn of every sample (SDG's default prompt).
        num_doc_in_context: documents in a RAFT sample's user turn (SDG: 4).
        raft_p: probability that the gold chunk is among them (SDG: 0.4).
        skills_per_leaf: samples per skill leaf in the skills phase, drawn with
            replacement (SDG ``NUM_SYNTH_SKILLS``: 30); 0: every kept row once.
        auxiliary_instructions: instructions of the auxiliary spellcheck samples (SDG's).
        knowledge: ``mixed.jsonl``: size of the knowledge pool (an int is a count, a
            float a ratio of the pool).
        skills: ``mixed.jsonl``: size of the skills pool.
        leaves: ``mixed.jsonl``: leaf path -> size (sampled on its own, out of its pool).
    """

    system_prompt: str = SDG_SYSTEM_PROMPT
    num_doc_in_context: Annotated[int, msgspec.Meta(ge=1)] = 4
    raft_p: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.4
    skills_per_leaf: Annotated[int, msgspec.Meta(ge=0)] = 30
    auxiliary_instructions: tuple[str, ...] = SPELLCHECK_INSTRUCTIONS
    knowledge: Size = 1.0
    skills: Size = 1.0
    leaves: dict[str, Size] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_size(self.knowledge, "knowledge")
        _check_size(self.skills, "skills")
        for leaf, size in self.leaves.items():
            _check_size(size, f"leaves.{leaf}")
        if not self.auxiliary_instructions:
            raise ValueError("auxiliary_instructions: give at least one instruction")


def sample_rows(rows: Sequence[T], size: Size, rng: random.Random) -> list[T]:
    """``size`` rows (int) or ``size`` x len(rows) rows (float), seeded.

    All rows (in order) when the count equals the number of rows, a sample without
    replacement when it is smaller, and a sample with replacement when it is larger.
    """
    n = size if isinstance(size, int) else round(size * len(rows))
    if not rows or n <= 0:
        return []
    if n == len(rows):
        return list(rows)
    if n < len(rows):
        return rng.sample(list(rows), n)
    return rng.choices(list(rows), k=n)


def _sample(
    row: Row, system: str, user: str, *, dataset: str, unmask: bool, copy: int = 0
) -> Sample:
    return {
        "id": row_id("lab", dataset, row["id"], copy),
        "source_id": str(row["id"]),
        "leaf": str(row["leaf"]),
        "kind": str(row["kind"]),
        "phase": str(row["phase"]),
        "dataset": dataset,
        "unmask": unmask,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": str(row["answer"])},
        ],
    }


def training_sample(row: Row, system: str = SDG_SYSTEM_PROMPT) -> Sample:
    """A kept row as one chat sample: grounded skills and knowledge put their context
    before the question (``context\\n\\nquestion``, as SDG's CombineColumnsBlock and
    phase 0.7 set do); freeform skills ask the question alone."""
    question = str(row["question"])
    context = str(row.get("context") or "")
    user = f"{context}\n\n{question}" if context else question
    dataset = "knowledge_qa" if row["kind"] == "knowledge" else str(row["kind"])
    return _sample(row, system, user, dataset=dataset, unmask=row["kind"] == "knowledge")


def raft_documents(
    gold: str, others: Sequence[str], *, n: int, p: float, rng: random.Random
) -> str:
    """The documents block of a RAFT sample (SDG ``_add_extra_contexts_to_samples``).

    With probability ``p`` the gold document and ``n - 1`` distractors, else ``n``
    distractors (fewer when the leaf has fewer chunks; the gold one alone when it has
    no other), shuffled, each as ``Document:\\n<text>\\n\\n`` joined by newlines.
    """
    pool = [d for d in others if d != gold]
    if not pool:
        docs = [gold]
    elif rng.random() < p:
        docs = (rng.sample(pool, n - 1) if len(pool) >= n - 1 else list(pool)) + [gold]
    else:
        docs = rng.sample(pool, n) if len(pool) >= n else list(pool)
    rng.shuffle(docs)
    return "\n".join(f"Document:\n{d}\n\n" for d in docs)


def _auxiliary(rows: Sequence[Row], mix: LabMix, seed: int, *, unmask: bool) -> list[Sample]:
    out: list[Sample] = []
    seen: set[str] = set()
    for row in rows:
        if row.get("dataset_type") != "spellcheck":
            continue
        context = str(row["context"])
        if context in seen:
            continue
        seen.add(context)
        rng = random.Random(f"lab:aux:{seed}:{row['id']}")
        instruction = rng.choice(mix.auxiliary_instructions)
        aux = {**row, "answer": context}
        out.append(
            _sample(
                aux,
                mix.system_prompt,
                f"{row['raw_document']}\n\n{instruction}",
                dataset="document_spellcheck",
                unmask=unmask,
            )
        )
    return out


def phase_sets(kept: Sequence[Row], mix: LabMix, *, seed: int) -> dict[str, list[Sample]]:
    """``knowledge.jsonl``, ``skills.jsonl`` and ``mixed.jsonl`` from the kept rows
    (sorted by the caller, so the result does not depend on shard order)."""
    system = mix.system_prompt
    knowledge_rows = [r for r in kept if r["kind"] == "knowledge"]
    by_leaf: dict[str, list[Row]] = defaultdict(list)
    for r in kept:
        by_leaf[str(r["leaf"])].append(r)

    knowledge_qa = [training_sample(r, system) for r in knowledge_rows]
    phase07 = knowledge_qa + _auxiliary(knowledge_rows, mix, seed, unmask=True)

    phase10: list[Sample] = []
    for leaf, rows in sorted(by_leaf.items()):
        if rows[0]["kind"] == "knowledge":
            contexts = list(dict.fromkeys(str(r["context"]) for r in rows))
            for r in rows:
                rng = random.Random(f"lab:raft:{seed}:{r['id']}")
                docs = raft_documents(
                    str(r["context"]), contexts, n=mix.num_doc_in_context, p=mix.raft_p, rng=rng
                )
                phase10.append(
                    _sample(
                        r,
                        system,
                        f"{docs}\n\n{r['question']}",
                        dataset=f"knowledge_qa_raft_p{mix.raft_p:g}",
                        unmask=False,
                    )
                )
            continue
        samples = [training_sample(r, system) for r in rows]
        if mix.skills_per_leaf:
            rng = random.Random(f"lab:skills:{seed}:{leaf}")
            picked = rng.choices(samples, k=mix.skills_per_leaf)
            samples = [
                {**s, "id": row_id("lab", "skills", s["source_id"], i)}
                for i, s in enumerate(picked)
            ]
        phase10.extend(samples)
    phase10.extend(knowledge_qa)  # the knowledge replay, unmasked as in phase 0.7
    phase10.extend(_auxiliary(knowledge_rows, mix, seed, unmask=False))
    return {
        "knowledge.jsonl": phase07,
        "skills.jsonl": phase10,
        "mixed.jsonl": mix_rows([training_sample(r, system) for r in kept], mix, seed=seed),
    }


def mix_rows(rows: Sequence[S], recipe: LabMix, *, seed: int) -> list[S]:
    """The mixed training set: each group sampled by its size, then shuffled (seeded).

    Groups: every leaf named in ``recipe.leaves``, then each phase's remaining rows.
    """
    groups: dict[str, tuple[list[S], Size]] = {}
    for leaf, size in sorted(recipe.leaves.items()):
        groups[f"leaf:{leaf}"] = ([r for r in rows if r["leaf"] == leaf], size)
    for phase, size in (("knowledge", recipe.knowledge), ("skills", recipe.skills)):
        pool = [r for r in rows if r["phase"] == phase and r["leaf"] not in recipe.leaves]
        groups[f"phase:{phase}"] = (pool, size)
    out: list[S] = []
    for name, (pool, size) in groups.items():
        out.extend(sample_rows(pool, size, random.Random(f"lab:mix:{seed}:{name}")))
    random.Random(f"lab:mix:{seed}:shuffle").shuffle(out)
    return out

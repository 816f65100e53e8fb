"""LAB (InstructLab SDG, arXiv 2403.01081): taxonomy-driven generation with teacher-as-critic.

Spec: shared methods.md section 4; docs: docs/methods/lab.md. One work item per taxonomy
leaf (``qna.yaml``); each leaf is prompted only with its own seed examples
(taxonomy-driven sampling). ``pipeline = "full"`` runs SDG's generation and
teacher-as-critic checks per leaf kind (freeform and grounded skills, knowledge);
``pipeline = "simple"`` generates question/answer pairs with exact dedup and no judge.
With ``[method.lab.semantic_dedup] enabled = true``, questions that pass exact dedup are
also checked against every question admitted so far in the run (all leaves). Every
judge's rationale is kept on the row (``checks``). ``finalize`` writes InstructLab's
phase sets ``knowledge.jsonl`` and ``skills.jsonl`` and ``mixed.jsonl``.

The package, one concept per module:

* :mod:`.config`: ``[method.lab]`` and its checks; :mod:`.prompts`: the templates.
* :mod:`.leaves`: the taxonomy as work items (documents, chunks, ``validate``).
* :mod:`.parsing`: reply shapes and parsers; :mod:`.steps`: the generation and judge steps.
* :mod:`.pipeline`: calls, dedup and rows shared by the leaf flows :mod:`.skills`,
  :mod:`.knowledge` and :mod:`.simple`.
* :mod:`.rows`: the row schema and a Struct per row kind; :mod:`.report`: the counts.
* :mod:`.mix`: the phase sets and ``mixed.jsonl``; :mod:`.method`: :class:`LabMethod`,
  the :class:`engine.Method` that puts them together.
"""

from __future__ import annotations

from .config import LabConfig, LabTemplates
from .method import LabMethod
from .mix import LabMix, mix_rows, sample_rows, training_sample
from .parsing import chunk_words, parse_judge_score, parse_qa_blocks, parse_tagged, parse_yes_no
from .rows import COLUMNS

__all__ = (
    "COLUMNS",
    "LabConfig",
    "LabMethod",
    "LabMix",
    "LabTemplates",
    "chunk_words",
    "mix_rows",
    "parse_judge_score",
    "parse_qa_blocks",
    "parse_tagged",
    "parse_yes_no",
    "sample_rows",
    "training_sample",
)

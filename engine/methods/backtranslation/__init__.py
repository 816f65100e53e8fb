"""Instruction Backtranslation / Humpback (Li et al., Meta, 2023).

Pipeline (spec: shared methods.md section 2; paper sections 2-3, Table 1):

1. Segments: human-written web text that follows a heading, read by
   :func:`engine.io.corpus.read_corpus` from HTML, Markdown/text or JSONL, with the
   paper's rule-based selection (exact dedup, length bounds, share of capital letters in
   the header). Each segment is one work item.
2. Self-augmentation: a model (role ``backtranslate_role``, default ``strong``) predicts
   the instruction the segment would answer from the segment alone (the paper's backward
   model never sees the heading; ``backtranslate_header = true`` shows it), sampled at
   T=0.7, top-p 0.9 (the paper's generation values).
3. Self-curation: by default the same model (the "self" in self-curation; ``judge_role``
   names another) rates the (instruction, segment) pair on the paper's 5-point rubric,
   with brief reasoning and a final ``Score: k`` line (or the JSON ``{reasoning, score}``
   when the endpoint supports structured output), over ``curation_samples`` samples whose
   scores are averaged.
4. Rescoring rounds (the paper's iteration: M0 curates, M1 is trained on seed + A5 and
   re-curates, then M2): ``rescore_with`` lists the roles serving M1, M2...; each re-scores
   every candidate and the last round's score decides.
5. Keep the pair when the deciding score >= threshold (default 4.5: the paper's A5 set,
   score 5 on a single integer sample; 4 gives A4). Kept rows carry the S_w system-prompt
   tag ("Answer with knowledge from web search.").
6. ``finalize``: with a seed file (``seeds``), the training mix: every seed pair tagged
   S_a ("Answer in the style of an AI Assistant.") plus every kept pair tagged S_w, as
   ``messages`` with the tag as the system turn (``training_mix.jsonl``, counts in the
   manifest and the report).

Built on the public method API (:class:`engine.Method`), like a method a user would
write. The package, one concept a module: :mod:`.config` (the options), :mod:`.prompts`,
:mod:`.parsing` (replies and the keep rule), :mod:`.rows` (one Struct per row kind),
:mod:`.seeds` (seed pairs and the training mix), :mod:`.report` and :mod:`.pipeline`
(the method).
"""

from __future__ import annotations

from .config import BacktranslationConfig, BacktranslationTemplates, Role
from .parsing import (
    Curation,
    decide,
    effective_threshold,
    parse_curation,
    parse_instruction,
    score_bucket,
)
from .pipeline import Backtranslation
from .rows import COLUMNS, FailedRow, KeptRow, RejectedRow, Round
from .seeds import MIX_NAME, SeedPair, read_seeds

__all__ = (
    "COLUMNS",
    "MIX_NAME",
    "Backtranslation",
    "BacktranslationConfig",
    "BacktranslationTemplates",
    "Curation",
    "FailedRow",
    "KeptRow",
    "RejectedRow",
    "Role",
    "Round",
    "SeedPair",
    "decide",
    "effective_threshold",
    "parse_curation",
    "parse_instruction",
    "read_seeds",
    "score_bucket",
)

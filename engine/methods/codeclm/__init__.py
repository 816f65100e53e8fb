"""CodecLM (Wang et al., NAACL 2024): encode seeds to metadata, decode to instructions,
Self-Rubrics complexification, dual-model responses, Contrastive Filtering.

A method on the public method API (:class:`engine.Method`), in one module per concept:

========================  ===============================================================
:mod:`.config`            the ``[method.codeclm]`` options (the paper's defaults)
:mod:`.prompts`           the prompt templates (paper App. A.9)
:mod:`.parsing`           each stage's reply shape and text parser
:mod:`.steps`             the generation steps, built on the run's Context
:mod:`.pool`              mix and match of metadata (App. A.3); the in-memory reference
:mod:`.store`             the pool as a SQLite file in the output directory
:mod:`.seeds`             the encode phase: seeds into the pool, in a bounded window
:mod:`.check`             the judge's check of augmented combinations (an addition, off)
:mod:`.items`             the work items, made on demand from the pool
:mod:`.contrastive`       Contrastive Filtering of one instruction
:mod:`.rows`              the rows: one Struct per kind, one schema for all
:mod:`.report`            the counters and the ``method_report``
:mod:`.pipeline`          the method: prepare, work, process, report
========================  ===============================================================

Pipeline (spec: shared methods.md section 1; paper section 4 and App. A.3):

1. ``prepare``: encode every seed (strong) into a use case + up to 3 skills and register
   it, in seed order, in the metadata pool (``OUT/codeclm_pool.sqlite``).
2. One work item per metadata item, ``metadata_count`` of them, made on demand from the
   pool: the seeds' own metadata first, then use cases paired with sampled skills.
   Rubrics + actions (strong, once per item) and decode into
   ``instructions_per_metadata`` basic instructions (strong, zero-shot numbered list).
3. Each instruction then loops: iteration 1 is the basic instruction; later iterations
   apply one random action (improve, strong). Strong and target answer concurrently; the
   judge scores the pair twice with the answers swapped and the scores are averaged;
   gap = strong - target. ``|gap| > theta`` keeps (instruction, better answer), else the
   instruction goes back to improve, up to ``max_iterations``; still unresolved -> rejected.

Memory is flat in the number of seeds and items, and every random choice is seeded by the
run seed and the item's identity, so a rerun or a resume gives the same rows and ids.
"""

from __future__ import annotations

from .config import CodecLMConfig, CodecLMTemplates
from .contrastive import route, swap_average
from .parsing import parse_encoding, parse_improved, parse_pair, parse_rubrics, parse_verdict
from .pipeline import CodecLM
from .pool import Metadata, augment_metadata
from .rows import COLUMNS
from .store import POOL_NAME

__all__ = (
    "COLUMNS",
    "POOL_NAME",
    "CodecLM",
    "CodecLMConfig",
    "CodecLMTemplates",
    "Metadata",
    "augment_metadata",
    "parse_encoding",
    "parse_improved",
    "parse_pair",
    "parse_rubrics",
    "parse_verdict",
    "route",
    "swap_average",
)

# The names shared tests import from the single module this package replaced.
_parse_improved = parse_improved
_parse_pair = parse_pair
_parse_verdict = parse_verdict

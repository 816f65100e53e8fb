"""CodecLM's counters and its ``method_report``.

:class:`Tally` holds what one invocation counts (items resumed from an earlier run are
not processed again, so not counted); :class:`CodecLMReport` is the report's shape, keys
in the order they are written, the optional groups present only when their option is on.
"""

from __future__ import annotations

from collections import Counter

import msgspec

from ...dedup.semantic import SemanticDedup
from .config import CodecLMConfig

__all__ = ("CodecLMReport", "MetadataCheckReport", "Tally")

_NOTE = "counts cover the items processed by this invocation (resumed items are skipped)"


class MetadataCheckReport(msgspec.Struct):
    """``metadata_check``: combinations the judge checked, refused, and left unchecked."""

    checked: int
    refused: int
    unchecked: int


class CodecLMReport(msgspec.Struct, omit_defaults=True, kw_only=True):
    """The ``method_report`` of a CodecLM run (docs/methods/codeclm.md)."""

    seeds_read: int
    seeds_failed: int
    metadata_items: int
    basic_instructions_budget: int
    instructions: int
    target_pairs: int | None = None
    kept_total: int | None = None
    kept_before_this_run: int | None = None
    passes: int | None = None
    metadata_check: MetadataCheckReport | None = None
    short_decodes: int
    kept: int
    kept_by_iteration: dict[str, int]
    kept_first_iteration_share: float | None
    rejected: int
    failed_by_stage: dict[str, int]
    judge_calls: int
    note: str
    semantic_dedup: dict[str, object] | None = None


class Tally:
    """What a run counts, as it goes.

    Attributes:
        seeds_read: input lines read by ``prepare`` (bad ones too).
        seeds_failed: seeds that could not be read or encoded.
        metadata_items: metadata items per pass.
        kept_before: kept rows committed before this run (``target_pairs``).
        kept_now: pairs kept by this run.
        passes: passes over the metadata items started (``target_pairs``).
        instructions: basic instructions decoded.
        short_decodes: decodes that gave fewer instructions than asked for.
        judge_pairs: judged iterations (two judge calls each).
        kept_by_iteration: kept pairs by the iteration they were kept at.
        rejected: instructions Contrastive Filtering rejected.
        failed_by_stage: failed rows by stage.
        metadata_checked, metadata_refused, metadata_unchecked: the metadata check.
    """

    def __init__(self) -> None:
        self.seeds_read = 0
        self.seeds_failed = 0
        self.metadata_items = 0
        self.kept_before = 0
        self.kept_now = 0
        self.passes = 0
        self.instructions = 0
        self.short_decodes = 0
        self.judge_pairs = 0
        self.kept_by_iteration: Counter[int] = Counter()
        self.rejected = 0
        self.failed_by_stage: Counter[str] = Counter()
        self.metadata_checked = 0
        self.metadata_refused = 0
        self.metadata_unchecked = 0

    def kept_total(self) -> int:
        """Pairs kept so far: committed before this run, plus kept by it."""
        return self.kept_before + self.kept_now

    def report(self, cfg: CodecLMConfig, semantic: SemanticDedup | None) -> CodecLMReport:
        """The report: kept per iteration, rejected, failed per stage, judge calls, seeds."""
        kept = sum(self.kept_by_iteration.values())
        target = cfg.target_pairs is not None
        return CodecLMReport(
            seeds_read=self.seeds_read,
            seeds_failed=self.seeds_failed,
            metadata_items=self.metadata_items,
            basic_instructions_budget=self.metadata_items * cfg.instructions_per_metadata,
            instructions=self.instructions,
            target_pairs=cfg.target_pairs,
            kept_total=self.kept_total() if target else None,
            kept_before_this_run=self.kept_before if target else None,
            passes=self.passes if target else None,
            metadata_check=MetadataCheckReport(
                self.metadata_checked, self.metadata_refused, self.metadata_unchecked
            )
            if cfg.metadata_check
            else None,
            short_decodes=self.short_decodes,
            kept=kept,
            kept_by_iteration={str(k): v for k, v in sorted(self.kept_by_iteration.items())},
            kept_first_iteration_share=(
                round(self.kept_by_iteration.get(1, 0) / kept, 3) if kept else None
            ),
            rejected=self.rejected,
            failed_by_stage=dict(self.failed_by_stage),
            judge_calls=2 * self.judge_pairs,
            note=_NOTE,
            semantic_dedup=semantic.report() if semantic is not None else None,
        )

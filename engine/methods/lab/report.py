"""LAB's figures: counts per leaf and per filter, kept while items run, and the report.

Counts cover the items processed by this invocation (resumed items are skipped), so a
leaf's ``generated`` = ``kept`` + every ``dropped`` + failures after generation.
"""

from __future__ import annotations

from collections import Counter

import msgspec
from msgspec import UNSET, UnsetType

from ...io.taxonomy import Leaf, Problem

__all__ = ("FILTERS", "BadLeaf", "LabReport", "LeafReport", "Tally")

FILTERS: tuple[str, ...] = (
    "dedup",
    "question_check",
    "pair_check",
    "faithfulness",
    "relevancy",
    "self_contained",
)
"""The filters a question can be dropped by (rejected rows name one in ``filter``)."""

_EXTRAS = ("contexts_generated", "contexts_duplicate", "chunks")


class BadLeaf(msgspec.Struct, frozen=True):
    """A leaf the taxonomy reader refused: where (``file:line``) and why."""

    source: str
    reason: str


class LeafReport(msgspec.Struct, kw_only=True):
    """One leaf's figures (a count absent from the leaf's work is left out)."""

    kind: str
    generated: int
    dropped: dict[str, int]
    kept: int
    failed: int
    contexts_generated: int | UnsetType = UNSET
    contexts_duplicate: int | UnsetType = UNSET
    chunks: int | UnsetType = UNSET


class LabReport(msgspec.Struct, kw_only=True):
    """``method_report`` of a LAB run (see docs/methods/lab.md)."""

    pipeline: str
    leaves_total: int
    leaves_bad: list[BadLeaf]
    leaves_not_read: list[Problem]
    per_leaf: dict[str, LeafReport]
    generated: int
    dropped_by_filter: dict[str, int]
    kept: int
    failed_by_stage: dict[str, int]
    derived: dict[str, int]
    note: str = "counts cover the items processed by this invocation (resumed items are skipped)"
    semantic_dedup: dict[str, object] | UnsetType = UNSET

    def to_dict(self) -> dict[str, object]:
        """The report as JSON-ready builtins (unset counts left out)."""
        built = msgspec.to_builtins(self)
        assert isinstance(built, dict)
        return built


class Tally:
    """The counts of a run, per leaf and per failed stage.

    Args:
        filters: the filters a question can be dropped by, in report order.
    """

    def __init__(self, filters: tuple[str, ...]) -> None:
        self.filters = filters
        self.per_leaf: dict[str, tuple[Leaf, Counter[str]]] = {}
        self.failed_by_stage: Counter[str] = Counter()
        self.derived: dict[str, int] = {}

    def leaf(self, leaf: Leaf) -> Counter[str]:
        """``leaf``'s counts (created empty: a processed leaf is reported even with none)."""
        found = self.per_leaf.get(leaf.path)
        if found is None:
            found = self.per_leaf[leaf.path] = (leaf, Counter())
        return found[1]

    def failed(self, leaf: Leaf, stage: str) -> None:
        """Count a failed row of ``leaf`` at ``stage``."""
        self.leaf(leaf)["failed"] += 1
        self.failed_by_stage[stage] += 1

    def report(
        self,
        *,
        pipeline: str,
        leaves_total: int,
        bad: list[BadLeaf],
        notes: list[Problem],
        semantic: dict[str, object] | None,
    ) -> LabReport:
        """The report: per leaf (sorted by path), then the run's totals."""
        by_filter: Counter[str] = Counter()
        leaves: dict[str, LeafReport] = {}
        for path in sorted(self.per_leaf):
            leaf, counts = self.per_leaf[path]
            dropped = {f: counts.get(f, 0) for f in self.filters}
            by_filter.update(dropped)
            entry = LeafReport(
                kind=leaf.kind,
                generated=counts.get("generated", 0),
                dropped=dropped,
                kept=counts.get("kept", 0),
                failed=counts.get("failed", 0),
            )
            for extra in _EXTRAS:
                if extra in counts:
                    setattr(entry, extra, counts[extra])
            leaves[path] = entry
        return LabReport(
            pipeline=pipeline,
            leaves_total=leaves_total,
            leaves_bad=bad,
            leaves_not_read=notes,
            per_leaf=leaves,
            generated=sum(e.generated for e in leaves.values()),
            dropped_by_filter={f: by_filter.get(f, 0) for f in self.filters},
            kept=sum(e.kept for e in leaves.values()),
            failed_by_stage=dict(self.failed_by_stage),
            derived=dict(self.derived),
            semantic_dedup=UNSET if semantic is None else semantic,
        )

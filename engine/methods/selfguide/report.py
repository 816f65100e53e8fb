"""SELF-GUIDE's report (``report.json`` → ``method_report``): per round, the candidates
generated, dropped by each filter and kept; then the annotation's counts, and the class
balance of ``finalize``.

The round counts cover the whole run (the rounds are replayed from the cache on resume);
the annotation counts cover the items this invocation processed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import msgspec

from .config import Sampling, Settings

__all__ = (
    "NOTE",
    "AnnotationCounts",
    "AnnotationReport",
    "Balance",
    "InputTotals",
    "RoundStats",
    "SelfGuideReport",
    "input_totals",
)

NOTE = (
    "rounds and inputs cover the whole run (replayed on resume); annotation counts "
    "cover the items processed by this invocation"
)


class RoundStats(msgspec.Struct, kw_only=True):
    """One generation round: candidates generated, dropped by filter, kept."""

    round: int
    generated: int
    dropped: dict[str, int]
    kept: int = 0


class InputTotals(msgspec.Struct, frozen=True, kw_only=True):
    """The rounds' counts totalled."""

    generated: int
    dropped: dict[str, int]
    kept: int


def input_totals(rounds: Sequence[RoundStats], filters: Sequence[str], kept: int) -> InputTotals:
    """The candidates of every round: generated, dropped by each filter, kept."""
    dropped = dict.fromkeys(filters, 0)
    for r in rounds:
        for name, count in r.dropped.items():
            dropped[name] += count
    return InputTotals(generated=sum(r.generated for r in rounds), dropped=dropped, kept=kept)


class AnnotationCounts(msgspec.Struct, kw_only=True):
    """What the annotation made of the inputs this invocation processed."""

    voted: int = 0
    dropped_min_frequency: int = 0
    dropped_label: int = 0
    dropped_min_votes: int = 0
    single_vote: int = 0
    label_changed: int = 0
    dropped_output_filters: int = 0
    failed: int = 0

    def refused(self, step: str) -> None:
        """Count an input the annotation step ``step`` rejected."""
        if step == "min_frequency":
            self.dropped_min_frequency += 1
        elif step == "label":
            self.dropped_label += 1
        elif step == "min_votes":
            self.dropped_min_votes += 1
        elif step == "output_filters":
            self.dropped_output_filters += 1
        else:
            raise ValueError(f"unknown annotation step {step!r}")


class AnnotationReport(AnnotationCounts, kw_only=True):
    """The annotation counts, and the samples the output filters dropped (by filter)."""

    samples_dropped: dict[str, int]

    @classmethod
    def of(cls, counts: AnnotationCounts, samples_dropped: Counter[str]) -> AnnotationReport:
        """``counts`` with the dropped samples, sorted by filter."""
        return cls(
            **msgspec.structs.asdict(counts), samples_dropped=dict(sorted(samples_dropped.items()))
        )


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    """Class balancing (classification, ``finalize``)."""

    per_label_before: dict[str, int]
    per_class_after: int
    kept: int
    dropped: int


class SelfGuideReport(msgspec.Struct, kw_only=True):
    """The whole report (``method_report``); the optional parts are left out when unset.

    Attributes:
        task: the task's name (None: the task file was not read).
        task_format: how it was read (``engine``, ``selfguide_reference``,
            ``natural_instructions``).
        warnings: what was read differently than the user may expect.
        task_type: ``generation`` or ``classification``.
        settings: the per-type settings in effect.
        sampling: the ``top_k``/``best_of`` values sent (None: not sent).
        rounds: per round: generated, dropped by filter, kept.
        inputs: the rounds totalled.
        prompts_over_budget: prompts no pool sample brought under ``context_tokens``.
        prompts_without_low_quality: those sent without the low-quality section.
        annotation: what the annotation made of the inputs.
        note: what the counts cover.
        balance: class balancing (classification with ``balance_classes``).
        semantic_dedup: the near-duplicate filter's figures (when enabled).
    """

    task: str | None
    task_format: str | None
    warnings: list[str]
    task_type: str | None
    settings: Settings | None
    sampling: Sampling
    rounds: list[RoundStats]
    inputs: InputTotals
    prompts_over_budget: int
    prompts_without_low_quality: int
    annotation: AnnotationReport
    note: str = NOTE
    balance: Balance | msgspec.UnsetType = msgspec.UNSET
    semantic_dedup: Mapping[str, object] | msgspec.UnsetType = msgspec.UNSET

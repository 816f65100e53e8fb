"""What a backtranslation run did: the counts it keeps while items stream, and the
``method_report`` it becomes (docs/methods/backtranslation.md, "Report")."""

from __future__ import annotations

from collections import Counter

import msgspec

from ...filters import BloomDedup, ExactDedup
from ...io.corpus import CorpusStats
from ..base import InputCheck
from .config import BacktranslationConfig, Role
from .parsing import score_bucket
from .seeds import MixCounts

__all__ = ("DedupReport", "Report", "SeedCounts", "Tally")

_NOTE = (
    "corpus counts cover the whole corpus; call and row counts cover the items "
    "processed by this invocation (resumed items are skipped)"
)


class DedupReport(msgspec.Struct, omit_defaults=True):
    """How repeated segments were found: ``bloom`` (with its capacity and whether more
    segments than that were added), ``exact`` or ``off``."""

    mode: str
    capacity: int | None = None
    saturated: bool | None = None

    @classmethod
    def of(cls, dedup: BloomDedup | ExactDedup | None) -> DedupReport:
        """The report of the filter a corpus pass used (None: dedup was off)."""
        if isinstance(dedup, BloomDedup):
            return cls("bloom", dedup.capacity, dedup.saturated)
        return cls("exact" if dedup is not None else "off")


class SeedCounts(msgspec.Struct):
    """Seed pairs found usable and bad when the seed file was read through."""

    usable: int
    bad: int


class Report(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``method_report`` of a backtranslation run (``training_mix`` and ``seeds`` only
    with a seed file)."""

    corpus: dict[str, object]
    dedup: DedupReport
    backtranslated: int
    curated: int
    rescored: int
    curation_samples: int
    samples_unparsed: int
    threshold: float
    kept: int
    rejected: int
    failed_by_stage: dict[str, int]
    score_histogram: dict[str, int]
    first_round_histogram: dict[str, int]
    tags: dict[str, str]
    curated_by: Role
    rescore_with: list[Role]
    training_mix: MixCounts | None = None
    seeds: SeedCounts | None = None
    note: str


class Tally:
    """Counts kept while items stream (this invocation's items only)."""

    def __init__(self) -> None:
        self.backtranslated = 0
        self.curated = 0
        self.rescored = 0
        self.kept = 0
        self.rejected = 0
        self.samples_unparsed = 0
        self.failed_by_stage: Counter[str] = Counter()
        self.histogram: Counter[str] = Counter()
        self.first_round_histogram: Counter[str] = Counter()

    def decided(self, score: float, kept: bool) -> None:
        """A pair's deciding score, and whether it was kept."""
        self.histogram[score_bucket(score)] += 1
        if kept:
            self.kept += 1
        else:
            self.rejected += 1

    def report(
        self,
        cfg: BacktranslationConfig,
        *,
        corpus: CorpusStats,
        dedup: BloomDedup | ExactDedup | None,
        mix: MixCounts | None,
        seeds: InputCheck | None,
    ) -> Report:
        """The run's ``method_report``."""
        return Report(
            corpus=corpus.as_dict(),
            dedup=DedupReport.of(dedup),
            backtranslated=self.backtranslated,
            curated=self.curated,
            rescored=self.rescored,
            curation_samples=cfg.curation_samples,
            samples_unparsed=self.samples_unparsed,
            threshold=cfg.threshold,
            kept=self.kept,
            rejected=self.rejected,
            failed_by_stage=dict(sorted(self.failed_by_stage.items())),
            score_histogram=dict(sorted(self.histogram.items())),
            first_round_histogram=dict(sorted(self.first_round_histogram.items())),
            tags={"S_w": cfg.tag, "S_a": cfg.seed_tag},
            curated_by=cfg.curator,
            rescore_with=cfg.rescore_roles,
            training_mix=mix,
            seeds=SeedCounts(seeds.items_ok, seeds.items_bad) if seeds is not None else None,
            note=_NOTE,
        )

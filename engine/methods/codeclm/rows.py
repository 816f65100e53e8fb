"""CodecLM's rows: one Struct per kind (kept, rejected, failed), one schema for all three.

Every row has the columns of :data:`COLUMNS`, in that order, whatever its kind: a column
a kind does not fill is null on every row of that kind (its field is typed ``None``
here), so ``datasets.load_dataset("json", ...)`` reads any number of shards. The method
returns these Structs as :class:`~engine.Kept`, :class:`~engine.Rejected` and
:class:`~engine.Failed` rows; :data:`COLUMNS` is also the method's ``row_schema``, which
the engine uses for the failed rows it writes itself (an item whose error escaped).
"""

from __future__ import annotations

import msgspec

from ...dedup.semantic import REASON as NEAR_DUPLICATE
from ...errors import EngineError
from ...records import row_id
from ..base import ERROR_COLUMNS, ORIGIN_COLUMNS, Column
from .pool import FailedSeed

__all__ = (
    "COLUMNS",
    "FailedRow",
    "KeptRow",
    "MetadataColumn",
    "RejectedRow",
    "RowBase",
    "Scores",
    "Step",
    "failed_item",
    "failed_seed",
    "failed_seed_row",
)

COLUMNS: tuple[Column, ...] = (
    Column("id", str, doc="row id"),
    Column("seed_id", str, doc="the seed the use case came from (failed seeds: the seed)"),
    Column("source", str, doc="`metadata:i`, or the seed's `file:line`"),
    Column("metadata", dict, "kr", doc="`{use_case, skills}`"),
    Column("origin", str, "kr", doc="`seed` (a seed's own metadata) or `augmented`"),
    Column("basic_instruction", str, doc="the decoded instruction (iteration 1)"),
    Column("instruction", str, doc="the final instruction"),
    Column("iteration", int, "kr", doc="the iteration it was kept or rejected at"),
    Column("response", str, "k", doc="the better answer"),
    Column("response_source", str, "k", doc="`strong` or `target`"),
    Column("scores", dict, "k", doc="`{strong, target, gap}` of the kept iteration"),
    Column(
        "history",
        list,
        "kr",
        doc="every judged iteration: instruction, action, "
        "both responses, both judge orders, scores",
    ),
    Column("filter", str, "r", doc="`contrastive` or `near_duplicate`"),
    Column("reason", str, "r", doc="why"),
    Column("similarity", float, "r", empty=0.0, doc="near duplicates: cosine (else 0.0)"),
    Column("duplicate_of", str, "r", doc='near duplicates: the kept row id (else `""`)'),
    Column("stage", str, "f", doc="`input`, `encode`, `rubrics`, `decode`, ..."),
    *ERROR_COLUMNS,
    *ORIGIN_COLUMNS,
)
"""The row schema: every kept, rejected and failed row has these columns."""


class MetadataColumn(msgspec.Struct, frozen=True):
    """The ``metadata`` column: the item's use case and skills."""

    use_case: str
    skills: list[str]


class Scores(msgspec.Struct, frozen=True):
    """The swap-averaged scores of one judged iteration, and their gap."""

    strong: float
    target: float
    gap: float


class Step(msgspec.Struct, frozen=True):
    """One judged iteration (an entry of ``history``).

    ``judge_strong_first`` holds the scores of Assistant 1 and 2 as shown with the strong
    answer first; ``judge_target_first`` with the answers swapped.
    """

    iteration: int
    instruction: str
    action: str
    strong_response: str
    target_response: str
    judge_strong_first: list[float]
    judge_target_first: list[float]
    scores: Scores


class KeptRow(msgspec.Struct, kw_only=True):
    """A kept pair: the instruction and the better of the two answers."""

    id: str
    seed_id: str
    source: str
    metadata: MetadataColumn
    origin: str
    basic_instruction: str
    instruction: str
    iteration: int
    response: str
    response_source: str
    scores: Scores
    history: list[Step]
    filter: None = None
    reason: None = None
    similarity: None = None
    duplicate_of: None = None
    stage: None = None
    error_kind: None = None
    error: None = None
    models: dict[str, str]
    simulated: bool


class RejectedRow(msgspec.Struct, kw_only=True):
    """An instruction Contrastive Filtering (or semantic dedup) did not keep, and why."""

    id: str
    seed_id: str
    source: str
    metadata: MetadataColumn
    origin: str
    basic_instruction: str
    instruction: str
    iteration: int
    response: None = None
    response_source: None = None
    scores: None = None
    history: list[Step]
    filter: str
    reason: str
    similarity: float = 0.0
    duplicate_of: str = ""
    stage: None = None
    error_kind: None = None
    error: None = None
    models: dict[str, str]
    simulated: bool


class FailedRow(msgspec.Struct, kw_only=True):
    """A seed, an item or an instruction that failed: where, and the error."""

    id: str
    seed_id: str
    source: str
    metadata: None = None
    origin: None = None
    basic_instruction: str = ""
    instruction: str = ""
    iteration: None = None
    response: None = None
    response_source: None = None
    scores: None = None
    history: None = None
    filter: None = None
    reason: None = None
    similarity: None = None
    duplicate_of: None = None
    stage: str
    error_kind: str
    error: str
    models: dict[str, str]
    simulated: bool


def _error_kind(error: EngineError | str) -> str:
    """The ``error_kind`` column, as :func:`engine.methods.base.failed_row` names it."""
    kind = getattr(error, "kind", None)
    if isinstance(kind, str) and kind:
        return kind
    return type(error).__name__ if isinstance(error, Exception) else "input"


class RowBase(msgspec.Struct, frozen=True, kw_only=True):
    """What every row of one instruction shares, and the three rows it can end as."""

    id: str
    seed_id: str
    source: str
    metadata: MetadataColumn
    origin: str
    basic_instruction: str
    models: dict[str, str]
    simulated: bool

    def kept(
        self,
        instruction: str,
        iteration: int,
        response: str,
        source: str,
        scores: Scores,
        history: list[Step],
    ) -> KeptRow:
        """The kept row: ``response`` from ``source`` (``strong`` or ``target``)."""
        return KeptRow(
            id=self.id,
            seed_id=self.seed_id,
            source=self.source,
            metadata=self.metadata,
            origin=self.origin,
            basic_instruction=self.basic_instruction,
            instruction=instruction,
            iteration=iteration,
            response=response,
            response_source=source,
            scores=scores,
            history=history,
            models=self.models,
            simulated=self.simulated,
        )

    def rejected(
        self,
        instruction: str,
        iteration: int,
        history: list[Step],
        *,
        filter: str,
        reason: str,
        similarity: float = 0.0,
        duplicate_of: str = "",
    ) -> RejectedRow:
        """The rejected row: by ``filter`` (``contrastive`` or ``near_duplicate``)."""
        return RejectedRow(
            id=self.id,
            seed_id=self.seed_id,
            source=self.source,
            metadata=self.metadata,
            origin=self.origin,
            basic_instruction=self.basic_instruction,
            instruction=instruction,
            iteration=iteration,
            history=history,
            filter=filter,
            reason=reason,
            similarity=similarity,
            duplicate_of=duplicate_of,
            models=self.models,
            simulated=self.simulated,
        )

    def near_duplicate(
        self, instruction: str, iteration: int, history: list[Step], similarity: float, of: str
    ) -> RejectedRow:
        """The rejected row of a near duplicate of kept row ``of`` (semantic dedup)."""
        return self.rejected(
            instruction,
            iteration,
            history,
            filter=NEAR_DUPLICATE,
            reason=NEAR_DUPLICATE,
            similarity=round(similarity, 4),
            duplicate_of=of,
        )

    def failed(self, instruction: str, stage: str, error: EngineError) -> FailedRow:
        """The failed row of this instruction at ``stage`` (its id is the instruction's)."""
        return FailedRow(
            id=self.id,
            seed_id=self.seed_id,
            source=self.source,
            basic_instruction=self.basic_instruction,
            instruction=instruction,
            stage=stage,
            error_kind=_error_kind(error),
            error=str(error),
            models=self.models,
            simulated=self.simulated,
        )


def failed_seed(
    method: str, key: str, *, source: str, stage: str, error: EngineError | str
) -> FailedSeed:
    """The text columns of seed ``key`` that could not be read or encoded, with the id
    :func:`engine.methods.base.failed_row` gives it (kept in the pool until its item)."""
    return {
        "id": row_id(method, key, stage, "failed"),
        "seed_id": key,
        "source": source,
        "stage": stage,
        "error_kind": _error_kind(error),
        "error": str(error),
    }


def failed_item(
    method: str,
    key: str,
    *,
    seed_id: str,
    source: str,
    stage: str,
    error: EngineError,
    models: dict[str, str],
    simulated: bool,
) -> FailedRow:
    """The failed row of metadata item ``key`` whose rubrics or decode failed (the id
    :func:`engine.methods.base.failed_row` gives it, with the seed id in it)."""
    return FailedRow(
        id=row_id(method, key, stage, "failed", seed_id),
        seed_id=seed_id,
        source=source,
        stage=stage,
        error_kind=_error_kind(error),
        error=str(error),
        models=models,
        simulated=simulated,
    )


def failed_seed_row(row: FailedSeed, *, models: dict[str, str], simulated: bool) -> FailedRow:
    """The failed row of a seed kept in the pool (``basic_instruction`` and ``instruction``
    are ``""``: there is none)."""
    return FailedRow(
        id=row["id"],
        seed_id=row["seed_id"],
        source=row["source"],
        stage=row["stage"],
        error_kind=row["error_kind"],
        error=row["error"],
        models=models,
        simulated=simulated,
    )

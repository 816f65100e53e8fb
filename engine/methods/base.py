"""The method protocol and what a method is given to work with.

A method turns its input into a stream of work items and processes one item at a time
into rows. The scheduler owns concurrency, resume and output; the method owns only its
pipeline, so the same method runs under the local scheduler or a distributed runner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import msgspec

from ..config import Config
from ..errors import EngineError, InputError
from ..io.derived import DerivedFile
from ..records import BadInput, Item, Kind, RowOut, row_id
from ..stages import ChatCaller, StageObserver

__all__ = (
    "FAILURE_COLUMNS",
    "Column",
    "ERROR_COLUMNS",
    "ORIGIN_COLUMNS",
    "Finalizing",
    "InputCheck",
    "InputProblem",
    "Method",
    "MethodContext",
    "RowSchema",
    "bad_input_reason",
    "failed_row",
    "failed_row_for",
    "items_for_schema",
)


class MethodContext:
    """What a method may use.

    Attributes:
        config: the whole config.
        callers: endpoint role -> caller (``strong``, ``target``, ``judge``).
        input_path: the resolved input file.
        seed: the run's seed.
        stage: stage name -> metrics observer.
        log: logger for warnings the user should see.
        simulated: whether output comes from a simulated endpoint (labelled on rows).
        out_dir: the run's output directory (given, so a method never recomputes it; a
            partition's own directory on Ray).
    """

    def __init__(
        self,
        *,
        config: Config,
        callers: dict[str, ChatCaller],
        input_path: Path,
        stage: Callable[[str], StageObserver],
        log: logging.Logger | None = None,
        simulated: Callable[[], bool] | None = None,
        out_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.callers = callers
        self.input_path = input_path
        self.out_dir = out_dir if out_dir is not None else config.resolve(config.run.output)
        self.seed = config.run.seed
        self.stage = stage
        self.log = log or logging.getLogger("engine")
        self._simulated = simulated or (lambda: config.simulated)

    @property
    def simulated(self) -> bool:
        """Whether any endpoint is (or answered as) synth-engine's simulated endpoint."""
        return self._simulated()

    def models(self) -> dict[str, str]:
        """Role -> model id, recorded on every row."""
        return {role: c.model for role, c in self.callers.items()}


class Method(Protocol):
    """A generation method."""

    name: str

    async def prepare(self) -> None:
        """Work that must happen before items stream (e.g. CodecLM's encode + metadata)."""
        ...

    def work(self) -> Iterator[Item | BadInput]:
        """The work items, in a stable order (the same on every rerun)."""
        ...

    async def process(self, item: Item) -> list[RowOut]:
        """All rows of one item. May raise EngineError: the item then fails as a whole."""
        ...

    def report(self) -> dict[str, Any]:
        """Method-specific figures for the end-of-run report."""
        ...


@runtime_checkable
class Finalizing(Protocol):
    """A method that also builds derived datasets once every item is committed.

    ``finalize(out_dir)`` reads the committed rows (``engine.io.shards.iter_rows``), writes
    derived files with ``engine.io.derived.write_jsonl_atomic`` and returns what it wrote
    (recorded in the manifest). It runs only when the run is complete and must be
    idempotent (a crash during it reruns it).
    """

    async def finalize(self, out_dir: Path) -> list[DerivedFile]:
        """Write derived datasets; return their records."""
        ...


class InputProblem(msgspec.Struct, frozen=True):
    """A problem (or warning) found in the input: file, line (None: unknown), message."""

    file: str
    line: int | None
    message: str


class InputCheck(msgspec.Struct, kw_only=True):
    """What reading the input found, without calling any endpoint (``validate``).

    Attributes:
        items_ok: usable work items (leaves, tasks, segments, records).
        items_bad: items that would become failed rows.
        problems: every refusal, with its file and line.
        warnings: what is read differently than the user may expect, or left out.
        details: method-specific figures (kinds, labels, drop counts...).
    """

    items_ok: int = 0
    items_bad: int = 0
    problems: list[InputProblem] = msgspec.field(default_factory=list)
    warnings: list[InputProblem] = msgspec.field(default_factory=list)
    details: dict[str, object] = msgspec.field(default_factory=dict)

    def add_problem(self, file: str, line: int | None, message: str) -> None:
        """Record a problem."""
        self.problems.append(InputProblem(file, line, message))

    def add_warning(self, file: str, line: int | None, message: str) -> None:
        """Record a warning."""
        self.warnings.append(InputProblem(file, line, message))

    @classmethod
    def failed(cls, exc: InputError) -> InputCheck:
        """A check where the input as a whole cannot be read."""
        check = cls()
        check.add_problem(exc.path or "input", exc.line, exc.reason)
        return check


def failed_row(
    method: str, key: str, *, source: str, stage: str, error: EngineError | str, **extra: object
) -> RowOut:
    """A failed row for item ``key`` (stable id; the error class and message kept)."""
    kind = getattr(error, "kind", None) or (
        type(error).__name__ if isinstance(error, Exception) else "input"
    )
    return (
        "failed",
        {
            "id": row_id(method, key, stage, "failed", *extra.values()),
            "seed_id": key,
            "source": source,
            "stage": stage,
            "error_kind": kind,
            "error": str(error),
            **extra,
        },
    )


# ------------------------------------------------------------------ row schema
FAILURE_COLUMNS: tuple[str, ...] = ("stage", "error_kind", "error")
"""Columns a failed row fills (null on kept and rejected rows)."""


class Column(msgspec.Struct, frozen=True):
    """One column of a method's row schema.

    Attributes:
        name: the key.
        type: the Python type of every non-null value (``float`` for every score, so
            ``4`` and ``4.5`` never load as two types).
        kinds: the row kinds that fill it (``k``ept, ``r``ejected, ``f``ailed); on the
            others it is null on every row.
        doc: what it holds (the method docs' record tables list it).
        empty: the value a row of a filling kind gets when it does not give one (None:
            ``""`` for text, else null).
    """

    name: str
    type: type
    kinds: str = "krf"
    doc: str = ""
    empty: object = None


ERROR_COLUMNS: tuple[Column, ...] = (
    Column("error_kind", str, "f", doc="the error's class"),
    Column("error", str, "f", doc="the error's message"),
)
"""The failed rows' error, the same in every built-in method's schema."""

ORIGIN_COLUMNS: tuple[Column, ...] = (
    Column("models", dict, doc="role -> model"),
    Column("simulated", bool, doc="written by the simulated endpoint"),
)
"""Who wrote a row, last in every built-in method's schema."""


_EMPTY: dict[type, object] = {str: ""}
_KIND_LETTER = {"kept": "k", "rejected": "r", "failed": "f"}


class RowSchema:
    """One schema per method: every row of every kind has exactly these columns.

    ``datasets.load_dataset("json", data_files=...)`` takes each column's type from
    the first shard it reads, so a column that is null on every row of that shard but
    set in a later one cannot be loaded. Hence the rule this class applies: a column is
    null on *every* row of a kind that does not fill it (``Column.kinds``), and on the
    kinds that do, a row that leaves the key out gets the column's empty value
    (``Column.empty``, else ``""`` for text); a key given as None stays null (for a
    value that no row of the run has, e.g. labels of a generation task). Unknown keys
    are a programming error.

    Args:
        method: the method's name (failed-row ids).
        columns: the columns, in output order; must include ``id``, ``seed_id``,
            ``source`` and :data:`FAILURE_COLUMNS`.
        common: values every row gets when it lacks them (models, simulated).
    """

    def __init__(
        self,
        method: str,
        columns: tuple[Column, ...],
        *,
        common: Callable[[], Mapping[str, object]] | None = None,
    ) -> None:
        self.method = method
        self.columns = columns
        self.names = tuple(c.name for c in columns)
        missing = {"id", "seed_id", "source", *FAILURE_COLUMNS} - set(self.names)
        if missing:
            raise ValueError(f"row schema of {method} lacks {sorted(missing)}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"row schema of {method} repeats a column")
        self._common = common

    def conform(self, kind: str, row: Mapping[str, object]) -> dict[str, object]:
        """``row`` with exactly the schema's columns, in order (see the class doc).

        Raises:
            ValueError: ``row`` has a key the schema does not declare.
        """
        unknown = set(row) - set(self.names)
        if unknown:
            raise ValueError(f"{self.method} {kind} row has undeclared keys {sorted(unknown)}")
        letter = _KIND_LETTER[kind]
        common = self._common() if self._common is not None else {}
        out: dict[str, object] = {}
        for col in self.columns:
            if letter not in col.kinds:
                out[col.name] = None
                continue
            value = row.get(col.name)
            if value is None and col.name in common:
                value = common[col.name]
            elif col.name not in row:
                value = col.empty if col.empty is not None else _EMPTY.get(col.type)
            if value is None:
                pass
            elif col.type is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            out[col.name] = value
        return out

    def row(self, kind: Kind, values: Mapping[str, object]) -> RowOut:
        """A ``(kind, row)`` pair conformed to the schema."""
        return (kind, self.conform(kind, values))

    def failed(
        self, key: str, *, source: str, stage: str, error: EngineError | str, **extra: object
    ) -> RowOut:
        """A failed row (:func:`failed_row`, ``extra`` in its id as there) conformed to
        the schema."""
        _, row = failed_row(self.method, key, source=source, stage=stage, error=error, **extra)
        return self.row("failed", row)


def failed_row_for(
    method: object, key: str, *, source: str, stage: str, error: EngineError | str
) -> RowOut:
    """A failed row in ``method``'s row schema when it declares one (``row_schema``),
    else :func:`failed_row`: for failed rows made outside the method (bad input lines,
    an item whose error the method did not handle)."""
    schema = getattr(method, "row_schema", None)
    if isinstance(schema, RowSchema):
        return schema.failed(key, source=source, stage=stage, error=error)
    name = str(getattr(method, "name", "method"))
    return failed_row(name, key, source=source, stage=stage, error=error)


_BAD = "_bad_input"


def items_for_schema(items: Iterator[Item | BadInput]) -> Iterator[Item]:
    """``items`` with every :class:`BadInput` turned into an Item the method itself
    answers with a failed row in its schema (:func:`bad_input_reason` tells them apart),
    so no row of the method is written in another shape."""
    for item in items:
        if isinstance(item, BadInput):
            yield Item(index=item.index, key=item.key, data={_BAD: item.reason}, source=item.source)
        else:
            yield item


def bad_input_reason(item: Item) -> str | None:
    """The reason of an item made from a BadInput by :func:`items_for_schema`, else None."""
    reason = item.data.get(_BAD)
    return str(reason) if reason is not None else None

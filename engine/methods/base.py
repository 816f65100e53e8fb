"""The method protocol and what a method is given to work with.

A method turns its input into a stream of work items and processes one item at a time
into rows. The scheduler owns concurrency, resume and output; the method owns only its
pipeline, so the same method runs under the local scheduler or a distributed runner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import msgspec

from ..config import Config
from ..errors import EngineError, InputError
from ..io.derived import DerivedFile
from ..records import BadInput, Item, RowOut, row_id
from ..stages import ChatCaller, StageObserver

__all__ = (
    "ChecksInput",
    "Finalizing",
    "InputCheck",
    "InputProblem",
    "Method",
    "MethodContext",
    "failed_row",
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
    ) -> None:
        self.config = config
        self.callers = callers
        self.input_path = input_path
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
    details: dict[str, Any] = msgspec.field(default_factory=dict)

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


@runtime_checkable
class ChecksInput(Protocol):
    """A method that can read its input the way ``run`` will, for ``validate``."""

    def check_input(self) -> InputCheck:
        """Read the whole input; count usable and bad items; list every problem."""
        ...


def failed_row(
    method: str, key: str, *, source: str, stage: str, error: EngineError | str, **extra: Any
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

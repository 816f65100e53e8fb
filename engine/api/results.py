"""What a run gives back: :class:`RunResult`, the :class:`Row` a stream yields, the
``Records`` a stream may take."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from ..io.manifest import Manifest
from ..metrics.report import Report

__all__ = ("Records", "Row", "RunResult")


class RunResult(msgspec.Struct, kw_only=True):
    """What :meth:`Engine.run` did.

    Attributes:
        output: the output directory.
        complete: every item is done (the manifest says ``complete: true``).
        already_complete: the output was complete before this run; nothing was done.
        stop_reason: why the run stopped early (None when complete).
        manifest: the final manifest.
        report: the run report (also in ``OUT/report.json``).
        summary: the one-screen text summary.
    """

    output: Path
    complete: bool
    already_complete: bool = False
    stop_reason: str | None = None
    manifest: Manifest | None = None
    report: Report | None = None
    summary: str = ""


class Row(msgspec.Struct, frozen=True):
    """One output row, as :meth:`Engine.stream` yields it.

    Attributes:
        kind: ``kept``, ``rejected`` or ``failed``.
        data: the row as written to the output (``data["id"]`` is its stable id).
    """

    kind: str
    data: dict[str, Any]

    @property
    def id(self) -> str:
        """The row's stable id (the same on every rerun)."""
        return str(self.data["id"])


# Input records for Engine.stream: dicts, as the lines of the method's JSONL input.
Records = Iterable[Mapping[str, object]] | AsyncIterable[Mapping[str, object]]

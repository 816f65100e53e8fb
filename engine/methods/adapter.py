"""The bridge from a user's :class:`~engine.methods.custom.Method` to the engine.

The engine runs every method, built-in or a user's, through an :class:`Adapter`: it owns
the method's :class:`~engine.methods.custom.Context`, turns the typed rows ``process``
returns into output rows, and exposes the capabilities the class declares.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from ..io.derived import DerivedFile
from ..records import BadInput, Item, Kind, RowOut, row_id
from .base import InputCheck, MethodContext
from .custom import Context, Failed, Kept, Method, Rejected, TypedRow

__all__ = ("Adapter",)


def _columns(data: object) -> dict[str, object]:
    """A row's data as a fresh dict (a Struct's fields, or a mapping's items)."""
    if data is None:
        return {}
    if isinstance(data, Mapping):
        return dict(data)
    built = msgspec.to_builtins(data)
    if not isinstance(built, dict):
        raise TypeError(f"a row's data must be a Struct or a mapping, not {type(data).__name__}")
    return built


class Adapter:
    """Runs a :class:`Method` under the engine's internal method protocol.

    It owns the method's :class:`Context`, turns typed rows into output rows (a stable
    ``id`` when the row has none, the item's key and source, ``simulated``), and maps
    the capabilities the class declares.
    """

    def __init__(self, method: Method, mctx: MethodContext) -> None:
        self.method = method
        self.name = method.name
        self.ctx = Context(mctx, method.name)
        self.global_phase = method.global_phase
        self.records_input = method.records_input
        schema = getattr(method, "row_schema", None)
        if schema is not None:
            self.row_schema = schema

    @property
    def total(self) -> int | None:
        """The method's item count, once ``prepare`` has run (None: unknown)."""
        return self.method.total

    def input_check(self) -> InputCheck | None:
        """The method's own reading of its input (``validate``), or None when it has none."""
        check = getattr(self.method, "check_input", None)
        if check is None:
            return None
        result = check(self.ctx)
        assert isinstance(result, InputCheck)
        return result

    async def prepare(self) -> None:
        await self.method.prepare(self.ctx)

    def work(self) -> Iterator[Item | BadInput]:
        return self.method.work(self.ctx)

    async def process(self, item: Item) -> list[RowOut]:
        rows = await self.method.process(item, self.ctx)
        return [self._row(item, n, row) for n, row in enumerate(rows)]

    async def finalize(self, out_dir: Path) -> list[DerivedFile]:
        return await self.method.finalize(self.ctx, out_dir)

    def report(self) -> dict[str, Any]:
        return self.method.report()

    def _row(self, item: Item, n: int, row: TypedRow) -> RowOut:
        out = _columns(row.data)
        kind: Kind
        if isinstance(row, Kept):
            kind = "kept"
        elif isinstance(row, Rejected):
            kind = "rejected"
            out["reason"] = row.reason
        elif isinstance(row, Failed):
            kind = "failed"
            out["stage"] = row.stage
            out["error"] = row.error
        else:
            raise TypeError(
                f"{type(self.method).__name__}.process returned {type(row).__name__}; "
                "return Kept, Rejected or Failed rows"
            )
        if "id" not in out:  # (not setdefault: a row with its own id costs no hash)
            out["id"] = row_id(self.name, item.key, kind, n)
        if self.method.provenance_columns:
            out.setdefault("item", item.key)
            out.setdefault("source", item.source)
        out["simulated"] = self.ctx.simulated
        return kind, out

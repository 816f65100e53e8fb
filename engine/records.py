"""Structs for what flows between the reader, the methods and the sink.

An :class:`Item` is one unit of work (an input line, or an item a method derives from
its input, such as a CodecLM metadata item). Processing an item yields rows, each a
``(kind, row)`` pair where kind is ``kept``, ``rejected`` or ``failed`` and row is a
plain dict in the method's record schema. Row ids are content-addressed
(:func:`row_id`), so a rerun produces the same ids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

__all__ = ("KINDS", "BadInput", "Item", "Kind", "RowOut", "reason_of", "row_id")

Kind = Literal["kept", "rejected", "failed"]
KINDS: tuple[Kind, ...] = ("kept", "rejected", "failed")

RowOut = tuple[Kind, dict[str, Any]]


class Item(msgspec.Struct, kw_only=True):
    """One unit of work.

    Attributes:
        index: 0-based position in the work stream (resume bookkeeping).
        key: stable identity (the input record's ``id``, else ``line-N``).
        data: the record.
        source: where it came from, e.g. ``seeds.jsonl:12``.
    """

    index: int
    key: str
    data: dict[str, Any]
    source: str = ""


class BadInput(msgspec.Struct, kw_only=True):
    """An input record that could not be read; it becomes a failed row.

    Attributes:
        index: position in the work stream, as an Item would have had.
        key: ``line-N``.
        source: ``file:line``.
        reason: what is wrong with it.
    """

    index: int
    key: str
    source: str
    reason: str


def row_id(*parts: object) -> str:
    """A stable 16-hex-digit id from the parts that identify a row."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(str(part).encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def reason_of(kind: str, row: Mapping[str, object]) -> str:
    """Why a row was not kept, as a group a summary can count.

    A failed row: ``stage: error_kind``. A rejected row: its ``filter`` or ``reason``
    with numbers replaced by ``#`` (so "score 3 below threshold 4" and "score 2 below
    threshold 4" count together), after its stage when it names one.
    """
    stage = row.get("stage")
    if kind == "failed":
        what = str(row.get("error_kind") or "error")
    else:
        what = _NUMBER.sub("#", str(row.get("filter") or row.get("reason") or kind))[:80]
    return f"{stage}: {what}" if isinstance(stage, str) and stage else what

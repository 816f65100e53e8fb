"""The seed pairs and the training mix (the paper's seed data tagged S_a beside the kept
augmented pairs tagged S_w, the tag as the system turn)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import msgspec

from ...errors import InputError, ShardError
from ...io.derived import DerivedFile, write_jsonl_atomic
from ...io.readers import read_jsonl
from ...io.shards import iter_rows
from ...records import BadInput, row_id
from ..base import InputCheck
from .rows import NAME

__all__ = (
    "MIX_NAME",
    "MixCounts",
    "SeedPair",
    "check_seeds",
    "read_seeds",
    "write_training_mix",
)

MIX_NAME = "training_mix.jsonl"
"""The training mix ``finalize`` writes when a seed file is given."""


class SeedPair(msgspec.Struct, frozen=True):
    """One seed pair of the training mix."""

    key: str
    source: str
    instruction: str
    response: str


def read_seeds(
    path: Path, *, instruction_field: str, response_field: str
) -> Iterator[SeedPair | BadInput]:
    """The seed pairs of a JSONL file, streamed (bad lines as BadInput with file:line).

    Raises:
        InputError: the file cannot be opened.
    """
    for rec in read_jsonl(path, required=(instruction_field, response_field)):
        if isinstance(rec, BadInput):
            yield rec
            continue
        instruction = str(rec.data[instruction_field]).strip()
        response = str(rec.data[response_field]).strip()
        if not instruction or not response:
            yield BadInput(
                index=rec.index,
                key=rec.key,
                source=rec.source,
                reason=f"empty {instruction_field if not instruction else response_field}",
            )
            continue
        yield SeedPair(key=rec.key, source=rec.source, instruction=instruction, response=response)


def check_seeds(path: Path, *, instruction_field: str, response_field: str) -> InputCheck:
    """Read the seed file through: usable and bad pairs, each problem with file:line."""
    check = InputCheck()
    try:
        for pair in read_seeds(
            path, instruction_field=instruction_field, response_field=response_field
        ):
            if isinstance(pair, BadInput):
                check.items_bad += 1
                file, _, line = pair.source.rpartition(":")
                check.add_problem(
                    file or pair.source, int(line) if line.isdigit() else None, pair.reason
                )
            else:
                check.items_ok += 1
    except InputError as exc:
        return InputCheck.failed(exc)
    return check


class _Message(msgspec.Struct, frozen=True):
    role: Literal["system", "user", "assistant"]
    content: str


class _MixRow(msgspec.Struct, frozen=True):
    id: str
    origin: Literal["seed", "augmented"]
    tag: Literal["S_a", "S_w"]
    source: str
    messages: list[_Message]


class _Kept(msgspec.Struct, frozen=True):
    """The columns of a committed kept row the mix reads (the others are not decoded)."""

    id: str
    source: str
    instruction: str
    response: str


class MixCounts(msgspec.Struct, kw_only=True):
    """What the training mix holds: seed pairs, augmented pairs, seed lines left out."""

    file: str = MIX_NAME
    seed: int = 0
    augmented: int = 0
    seed_bad: int = 0
    rows: int = 0


def _messages(system: str, instruction: str, response: str) -> list[_Message]:
    return [
        _Message("system", system),
        _Message("user", instruction),
        _Message("assistant", response),
    ]


def _kept(out_dir: Path) -> Iterator[_Kept]:
    for row in iter_rows(out_dir, "kept"):
        try:
            yield msgspec.convert(row, _Kept)
        except msgspec.ValidationError as exc:
            raise ShardError(
                f"a committed kept row does not fit the backtranslation schema ({exc})",
                path=str(out_dir),
                hint="was this output written by another method? run into a new run.output",
            ) from exc


def write_training_mix(
    out_dir: Path,
    seeds: Path,
    *,
    instruction_field: str,
    response_field: str,
    seed_tag: str,
    tag: str,
) -> tuple[DerivedFile, MixCounts]:
    """``OUT/training_mix.jsonl``: every seed pair tagged S_a, then every committed kept
    pair tagged S_w (in id order), each as ``messages`` with the tag as the system turn.

    Idempotent: the same seeds and committed rows give the same file.

    Raises:
        InputError: the seed file cannot be opened.
        ShardError: the committed rows cannot be read, or the file cannot be written.
    """
    counts = MixCounts()

    def rows() -> Iterator[object]:
        for pair in read_seeds(
            seeds, instruction_field=instruction_field, response_field=response_field
        ):
            if isinstance(pair, BadInput):
                counts.seed_bad += 1
                continue
            counts.seed += 1
            yield _MixRow(
                id=row_id(NAME, "seed", pair.key),
                origin="seed",
                tag="S_a",
                source=pair.source,
                messages=_messages(seed_tag, pair.instruction, pair.response),
            )
        for row in sorted(_kept(out_dir), key=lambda r: r.id):
            counts.augmented += 1
            yield _MixRow(
                id=row.id,
                origin="augmented",
                tag="S_w",
                source=row.source,
                messages=_messages(tag, row.instruction, row.response),
            )

    written = write_jsonl_atomic(out_dir / MIX_NAME, map(msgspec.to_builtins, rows()))
    counts.rows = written.rows
    return written, counts

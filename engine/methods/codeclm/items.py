"""CodecLM's work items, made on demand from a built metadata pool.

One item per metadata item (``meta-i``, source ``metadata:i``), then one per seed that
failed to be read or encoded (its key and ``file:line``; the item writes the seed's
failed row). With ``target_pairs``: the failed seeds first, then passes over the metadata
items (``meta-i.pP``, source ``metadata:i:pass:P``; pass ``P`` decodes new basic
instructions, as decode sample ``P``) for as long as fewer than ``target_pairs`` pairs are
kept, at most ``target_max_passes`` passes. Each pass reads the pool with a reader of its
own, so it makes the same items as the first; nothing per item stays in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from ...records import Item
from .pool import BATCH, Metadata, draw
from .store import SqlitePoolReader

__all__ = ("BuiltPool", "Catalog", "ItemMetadata")


class BuiltPool(msgspec.Struct, frozen=True):
    """A pool file ``prepare`` built, and what it counted."""

    path: Path
    own: int
    seeds: int
    use_cases: int
    skills: int
    failed: int


class ItemMetadata(msgspec.Struct, frozen=True):
    """What a metadata item's ``data`` holds, read back by ``process``."""

    metadata: Metadata
    origin: str
    pass_: int

    @classmethod
    def of(cls, item: Item) -> ItemMetadata:
        """The metadata of ``item`` (made by :meth:`Catalog.item`)."""
        data = item.data
        return cls(
            Metadata(
                use_case=str(data["use_case"]),
                skills=tuple(str(s) for s in data["skills"]),
                seed_id=str(data["seed_id"]),
            ),
            origin=str(data.get("origin", "augmented")),
            pass_=int(data.get("pass", 0)),
        )


class Catalog:
    """The items of a built pool (see the module docstring).

    Args:
        pool: the built pool.
        count: metadata items per pass (``metadata_count``).
        max_skills: skills per metadata item, at most.
        seed: the run's seed.
    """

    def __init__(self, pool: BuiltPool, *, count: int, max_skills: int, seed: int) -> None:
        self.pool = pool
        self.count = count
        self.max_skills = max_skills
        self.seed = seed

    def reader(self) -> SqlitePoolReader:
        """A new reader of the pool file (close it after use).

        Raises:
            ShardError: the file cannot be opened.
        """
        return SqlitePoolReader(self.pool.path)

    def draw(self, reader: SqlitePoolReader) -> Iterator[Metadata]:
        """The metadata items, one pass, drawn through ``reader``."""
        return draw(
            reader,
            own=self.pool.own,
            use_cases=self.pool.use_cases,
            skills=self.pool.skills,
            count=self.count,
            max_skills=self.max_skills,
            seed=self.seed,
            seeds=self.pool.seeds,
        )

    def metadata(self) -> Iterator[Metadata]:
        """The ``metadata_count`` metadata items, generated lazily from the pool.

        Raises:
            ShardError: the pool file cannot be read.
        """
        reader = self.reader()
        try:
            yield from self.draw(reader)
        finally:
            reader.close()

    def seeds_own(self) -> int:
        """How many of the items are seeds' own metadata (they come first)."""
        return min(self.pool.own, self.count)

    def item(self, index: int, i: int, md: Metadata, pass_: int) -> Item:
        """The work item of metadata item ``i`` in pass ``pass_``, at ``index``."""
        key = f"meta-{i}" if pass_ == 0 else f"meta-{i}.p{pass_}"
        return Item(
            index=index,
            key=key,
            data={
                "use_case": md.use_case,
                "skills": list(md.skills),
                "seed_id": md.seed_id,
                "origin": "seed" if i < self.seeds_own() else "augmented",
                "pass": pass_,
            },
            source=f"metadata:{i}" if pass_ == 0 else f"metadata:{i}:pass:{pass_}",
        )

    def failed_items(self, base: int) -> Iterator[Item]:
        """One item per failed seed, in seed order, from ``index = base``."""
        reader = self.reader()
        try:
            for start in range(0, self.pool.failed, BATCH):
                for j, row in enumerate(reader.failed(start, BATCH), start):
                    yield Item(
                        index=base + j,
                        key=row["seed_id"],
                        data={"failed": row},
                        source=row["source"],
                    )
        finally:
            reader.close()

    def one_pass(self) -> Iterator[Item]:
        """Every metadata item once, then the failed seeds."""
        reader = self.reader()
        try:
            for i, md in enumerate(self.draw(reader)):
                yield self.item(i, i, md, 0)
        finally:
            reader.close()
        yield from self.failed_items(self.count)

    def until(
        self, target: int, kept: Callable[[], int], passes: int, started: Callable[[int], None]
    ) -> Iterator[Item]:
        """The failed seeds, then passes over the metadata items while ``kept()`` is
        below ``target``, at most ``passes`` passes (``started(p)``: pass ``p`` began)."""
        yield from self.failed_items(0)
        base = self.pool.failed
        for pass_ in range(passes):
            reader = self.reader()  # a fresh reader per pass: the same items each pass
            try:
                for i, md in enumerate(self.draw(reader)):
                    if kept() >= target:
                        return
                    started(pass_ + 1)
                    yield self.item(base + pass_ * self.count + i, i, md, pass_)
            finally:
                reader.close()

"""CodecLM's metadata pool: seeds' metadata in, ``metadata_count`` items out (App. A.3).

``prepare`` registers every encoded seed, in seed order, into a pool (:class:`PoolWriter`):
the distinct use cases and skills (first spelling, case-insensitive), the seeds' own
metadata (distinct combinations), each seed's use case, and the failed seeds' rows.
:func:`draw` then makes the items one at a time from a :class:`PoolReader`:

- the seeds' own metadata first: all of them when there are at most ``count``, else
  ``count`` of them drawn uniformly (selection sampling in seed order, from
  ``random.Random(f"codeclm:own:{seed}")``), so every seed can contribute;
- then item ``i`` draws from ``random.Random(f"codeclm:augment:{seed}:{i}")`` the use
  case of a uniformly drawn seed (use cases keep the seeds' distribution), ``k``
  uniformly in ``1..min(max_skills, skills)`` and ``k`` distinct skills uniformly. A
  combination already taken (by a seed or an earlier item) is drawn again, at most
  ``REDRAWS`` times, and not at all once every combination is taken.

The pool the engine uses is a SQLite file (:mod:`.store`), so memory stays flat in the
number of seeds; :class:`MemoryPool` is the in-memory reference of the same procedure
(:func:`augment_metadata`), which the tests hold the file to.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterable, Iterator
from typing import Protocol

import msgspec

__all__ = (
    "BATCH",
    "REDRAWS",
    "FailedSeed",
    "MemoryPool",
    "Metadata",
    "PoolReader",
    "PoolWriter",
    "augment_metadata",
    "combinations",
    "draw",
    "metadata_key",
    "register",
    "sig",
)

REDRAWS = 64
"""Draws per augmented item while its combination is already taken."""

BATCH = 512
"""Rows read from the pool at a time."""

FailedSeed = dict[str, str]
"""The failed row of a seed that could not be read or encoded (its text columns: ``id``,
``seed_id``, ``source``, ``stage``, ``error_kind``, ``error``), kept in the pool until
its work item writes it."""


class Metadata(msgspec.Struct, frozen=True):
    """One metadata item: a use case, its skills, and the seed the use case came from."""

    use_case: str
    skills: tuple[str, ...]
    seed_id: str


def sig(use_case: int, skills: Iterable[int]) -> str:
    """A combination's identity: the use case's id and the sorted set of skill ids."""
    return f"{use_case}|{','.join(map(str, sorted(set(skills))))}"


def metadata_key(md: Metadata) -> str:
    """A combination's identity by its text (case-insensitive), for the metadata check."""
    return f"{md.use_case.lower()}|{'|'.join(sorted(k.lower() for k in md.skills))}"


class PoolWriter(Protocol):
    """Where ``prepare`` registers seeds, in seed order (a SQLite file, or memory)."""

    own_count: int
    failed_count: int
    use_case_count: int
    skill_count: int
    seed_count: int

    def use_case_id(self, key: str, text: str, seed_id: str) -> int:
        """The id of use case ``key`` (lower-cased), added with its first spelling if new."""
        ...

    def skill_id(self, key: str, text: str) -> int:
        """The id of skill ``key`` (lower-cased), added with its first spelling if new."""
        ...

    def add_own(self, md: Metadata, sig: str) -> None:
        """Add a seed's own metadata unless combination ``sig`` is already there."""
        ...

    def add_failed(self, row: FailedSeed) -> None:
        """Append the failed row of a seed that could not be read or encoded."""
        ...

    def add_seed(self, use_case: int) -> None:
        """Append an encoded seed's use case id (the use cases' distribution)."""
        ...


class PoolReader(Protocol):
    """Random access into a built pool, with a combination set private to one reader."""

    def own(self, start: int, n: int) -> list[Metadata]:
        """Seeds' own metadata ``start .. start + n`` (deduplicated, in seed order)."""
        ...

    def use_case(self, i: int) -> tuple[str, str]:
        """Distinct use case ``i``: its first spelling and the seed it came from."""
        ...

    def seed_use_case(self, i: int) -> int:
        """The use case id of encoded seed ``i`` (in seed order)."""
        ...

    def skill(self, i: int) -> str:
        """Distinct skill ``i`` (first spelling)."""
        ...

    def taken(self, sig: str) -> bool:
        """Whether a seed's own metadata or an item this reader produced has ``sig``."""
        ...

    def take(self, sig: str) -> None:
        """Record that this reader produced combination ``sig``."""
        ...

    def failed(self, start: int, n: int) -> list[FailedSeed]:
        """Failed seed rows ``start .. start + n`` (in seed order)."""
        ...


def register(pool: PoolWriter, md: Metadata, count: int) -> None:
    """Add one encoded seed to ``pool``.

    Its use case and skills join the vocabularies, its use case id is appended to the
    seeds' list (so augmented items draw use cases with the seeds' frequencies), and its
    own metadata is kept when its combination is new (every seed can be one of the
    ``count`` items: :func:`draw` samples among all of them).
    """
    del count  # every seed's metadata is kept; the sample is drawn at generation
    uc = pool.use_case_id(md.use_case.lower(), md.use_case, md.seed_id)
    skills = [pool.skill_id(s.lower(), s) for s in md.skills]
    pool.add_seed(uc)
    pool.add_own(md, sig(uc, skills))


def combinations(use_cases: int, skills: int, max_skills: int, cap: int) -> int:
    """How many distinct (use case, 1..max_skills skills) combinations exist, at most ``cap``."""
    total = 0
    for k in range(1, min(max_skills, skills) + 1):
        total += use_cases * math.comb(skills, k)
        if total >= cap:
            return cap
    return total


def draw(
    pool: PoolReader,
    *,
    own: int,
    use_cases: int,
    skills: int,
    count: int,
    max_skills: int,
    seed: int,
    seeds: int | None = None,
) -> Iterator[Metadata]:
    """The ``count`` metadata items of a pool, one at a time (see the module docstring).

    ``seeds``: how many seeds were encoded (use cases are drawn as a random seed's);
    None draws them uniformly over the distinct use cases.
    """
    if own > count:
        rng = random.Random(f"codeclm:own:{seed}")
        need = count
        for start in range(0, own, BATCH):
            for j, md in enumerate(pool.own(start, min(BATCH, own - start)), start):
                if need and rng.random() * (own - j) < need:
                    need -= 1
                    yield md
        return
    for start in range(0, own, BATCH):
        yield from pool.own(start, min(BATCH, own - start))
    if own >= count or not use_cases or not skills:
        return
    most = min(max_skills, skills)
    room = combinations(use_cases, skills, max_skills, count) - own  # untaken ones
    for i in range(own, count):
        rng = random.Random(f"codeclm:augment:{seed}:{i}")
        for _ in range(REDRAWS):
            uc = pool.seed_use_case(rng.randrange(seeds)) if seeds else rng.randrange(use_cases)
            picked = rng.sample(range(skills), rng.randint(1, most))
            combination = sig(uc, picked)
            fresh = room > 0 and not pool.taken(combination)
            if fresh or room <= 0:
                break
        if fresh:
            pool.take(combination)
            room -= 1
        text, seed_id = pool.use_case(uc)
        yield Metadata(use_case=text, skills=tuple(pool.skill(j) for j in picked), seed_id=seed_id)


class MemoryPool:
    """A pool in memory: the reference implementation, for small inputs and tests."""

    def __init__(self) -> None:
        self.own_count = self.failed_count = self.use_case_count = self.skill_count = 0
        self.seed_count = 0
        self._use_cases: dict[str, int] = {}
        self._use_case_list: list[tuple[str, str]] = []
        self._skills: dict[str, int] = {}
        self._skill_list: list[str] = []
        self._own: list[Metadata] = []
        self._own_sigs: set[str] = set()
        self._failed: list[FailedSeed] = []
        self._taken: set[str] = set()
        self._seed_uc: list[int] = []

    def add_seed(self, use_case: int) -> None:
        self._seed_uc.append(use_case)
        self.seed_count += 1

    def seed_use_case(self, i: int) -> int:
        return self._seed_uc[i]

    def use_case_id(self, key: str, text: str, seed_id: str) -> int:
        if key not in self._use_cases:
            self._use_cases[key] = len(self._use_case_list)
            self._use_case_list.append((text, seed_id))
            self.use_case_count += 1
        return self._use_cases[key]

    def skill_id(self, key: str, text: str) -> int:
        if key not in self._skills:
            self._skills[key] = len(self._skill_list)
            self._skill_list.append(text)
            self.skill_count += 1
        return self._skills[key]

    def add_own(self, md: Metadata, sig: str) -> None:
        if sig not in self._own_sigs:
            self._own_sigs.add(sig)
            self._own.append(md)
            self.own_count += 1

    def add_failed(self, row: FailedSeed) -> None:
        self._failed.append(row)
        self.failed_count += 1

    def reader(self) -> MemoryPool:
        """A view of this pool with its own (empty) set of taken combinations."""
        view = copy.copy(self)
        view._taken = set()
        return view

    def own(self, start: int, n: int) -> list[Metadata]:
        return self._own[start : start + n]

    def use_case(self, i: int) -> tuple[str, str]:
        return self._use_case_list[i]

    def skill(self, i: int) -> str:
        return self._skill_list[i]

    def taken(self, sig: str) -> bool:
        return sig in self._own_sigs or sig in self._taken

    def take(self, sig: str) -> None:
        self._taken.add(sig)

    def failed(self, start: int, n: int) -> list[FailedSeed]:
        return self._failed[start : start + n]


def augment_metadata(
    encodings: list[Metadata], count: int, *, max_skills: int, seed: int
) -> list[Metadata]:
    """Mix and match seed metadata up to ``count`` items (CodecLM App. A.3), in memory.

    The reference for what the method streams from its on-disk pool: the seeds' own
    metadata come first (deduplicated by use case and skill set, ignoring case); each
    further item ``i`` pairs the use case of a uniformly drawn seed (first spelling, and
    the first seed that named it) with 1..max_skills skills drawn uniformly without
    replacement from the distinct skills, from a ``random.Random`` seeded by ``seed``
    and ``i`` alone. A combination already present is re-drawn (at most 64 draws per
    item) while an unused one exists.
    """
    pool = MemoryPool()
    for md in encodings:
        register(pool, md, count)
    return list(
        draw(
            pool.reader(),
            own=pool.own_count,
            use_cases=pool.use_case_count,
            skills=pool.skill_count,
            count=count,
            max_skills=max_skills,
            seed=seed,
            seeds=pool.seed_count,
        )
    )

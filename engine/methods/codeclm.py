"""CodecLM (Wang et al., NAACL 2024): encode seeds to metadata, decode to instructions,
Self-Rubrics complexification, dual-model responses, Contrastive Filtering.

Pipeline (spec: shared methods.md section 1; paper section 4 and App. A.3):

1. ``prepare``: encode every seed (strong) into a use case + up to 3 skills and register
   it, in seed order, in the metadata pool (``OUT/codeclm_pool.sqlite``, see below).
2. One work item per metadata item, ``metadata_count`` of them, made on demand from the
   pool (mix and match, App. A.3): the seeds' own metadata come first (deduplicated),
   then items pairing one use case with 1..max_skills skills sampled without replacement.
   Rubrics + actions (strong, once per item: the result is the item's, and replays from
   the cache on resume), and decode into ``instructions_per_metadata`` basic
   instructions (strong, zero-shot numbered list).
3. Each instruction then loops: iteration 1 is the basic instruction; later iterations
   apply one random action (improve, strong). Strong and target answer concurrently; the
   judge scores the pair twice with the answers swapped and the scores are averaged;
   gap = strong - target. ``|gap| > theta`` keeps (instruction, better answer), else the
   instruction goes back to improve, up to ``max_iterations``; still unresolved -> rejected.

Memory is flat in the number of seeds and items. ``prepare`` keeps at most
``encode_concurrency`` encode tasks alive and reads the next seed only when one has room
(and when it is fewer than ``max(16 x encode_concurrency, 4096)`` seeds ahead of the
oldest unfinished one). The pool is a SQLite file in the output directory, rebuilt from
scratch on every run (encodings replay free from the cache, so it comes out the same):
the distinct use cases and skills (first spelling, case-insensitive), the seeds' own
metadata, and the failed seeds' rows, each in seed order. Only counters stay in memory.
``work()`` generates item ``i`` when the scheduler asks for it; the combinations already
used by earlier items go to a TEMP table of that iteration's own connection.

Sampling of augmented items (a change from the first, in-memory version, which drew
every item from one random stream): item ``i`` draws from
``random.Random(f"codeclm:augment:{seed}:{i}")`` a use case uniformly from the distinct
use cases, ``k`` uniformly in ``1..min(max_skills, distinct skills)`` and ``k`` skills
uniformly without replacement from the distinct skills (the same distribution per draw
as before). A combination already taken by a seed or an earlier item is drawn again, at
most 64 draws per item, and not at all once every combination is taken (the old version
had a global budget of 50 x metadata_count redraws, which at scale could spin for
minutes). :func:`augment_metadata` is the in-memory reference of the same procedure.

Determinism: every random choice comes from a ``random.Random`` seeded by the run seed
and the item's identity, and every call replays from the cache, so a rerun (or a resume
after a crash) produces the same rows with the same ids.
"""

from __future__ import annotations

import asyncio
import copy
import math
import random
import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Protocol

import msgspec

from ..config import Base
from ..dedup.semantic import REASON as NEAR_DUPLICATE
from ..dedup.semantic import SemanticDedupConfig, semantic_dedup
from ..errors import EndpointError, EngineError, InputError, ParseError, ShardError
from ..io.readers import read_jsonl
from ..io.shards import iter_rows
from ..records import BadInput, Item, RowOut, row_id
from ..stages import (
    ChatCaller,
    Generate,
    check_templates,
    concurrently,
    json_schema,
    parse_labelled,
    parse_numbered_list,
    parse_score_pair,
)
from . import prompts_codeclm as P
from .base import Column, MethodContext, RowSchema, failed_row

__all__ = (
    "COLUMNS",
    "POOL_NAME",
    "CodecLMConfig",
    "CodecLMMethod",
    "CodecLMTemplates",
    "Metadata",
    "augment_metadata",
    "parse_encoding",
    "parse_rubrics",
    "route",
    "swap_average",
)


class CodecLMTemplates(Base, frozen=True):
    """``[method.codeclm.templates]``: prompt overrides (``{{var}}`` placeholders)."""

    encode: str = P.ENCODE
    decode: str = P.DECODE
    rubrics: str = P.RUBRICS
    improve: str = P.IMPROVE
    respond: str = P.RESPOND
    judge: str = P.JUDGE
    check_metadata: str = P.CHECK_METADATA


class CodecLMConfig(Base, frozen=True):
    """``[method.codeclm]`` — defaults are the paper's (App. A.3, section 5.3).

    Attributes:
        metadata_count: metadata items after augmentation (paper: 200).
        instructions_per_metadata: basic instructions decoded per metadata item. The
            budget ``metadata_count x instructions_per_metadata`` counts *basic
            instructions* (the paper's 2,000), not kept pairs: Contrastive Filtering keeps
            a share of them (the paper-default config kept 1,453 of 2,000 on the sim).
        target_pairs: run until this many pairs are kept (None: one pass over the
            budget). Metadata items are then made past ``metadata_count`` by cycling
            over them with fresh basic instructions (another decode sample), and no new
            item starts once enough pairs are kept (items in flight still finish, so
            the count can be exceeded by up to max_items_in_flight x
            instructions_per_metadata). A rerun counts the kept rows already committed.
        target_max_passes: with ``target_pairs``, stop after this many passes over the
            metadata items even if fewer pairs are kept (a bound on the spend).
        metadata_check: ask the judge whether each augmented combination of use case and
            skills is reasonable, and draw again for the ones it refuses (the paper's
            authors removed unreasonable combinations by hand; an addition, off).
        metadata_check_rounds: check-and-redraw rounds (combinations still unchecked
            after them are used as drawn, and counted in the report).
        max_skills: skills per metadata item (paper: at most 3).
        rubric_count: rubrics and actions per metadata item (paper: 4).
        theta: keep a pair when |gap| > theta (paper: 3, on a 1-10 scale).
        max_iterations: iterations per instruction, basic generation counting as 1 (paper: 4).
        temperature: sampling temperature of encode, decode, rubrics, improve (paper: 0.7).
        max_tokens: max tokens of generation stages (paper: 1024 with PaLM).
        response_temperature: sampling temperature of the strong and target answers.
        response_max_tokens: max tokens of an answer.
        judge_temperature: judge sampling temperature (paper's evaluation judge: 0).
        judge_max_tokens: max tokens of a judge reply.
        encode_concurrency: seeds encoded at once during prepare.
        templates: prompt overrides.
        semantic_dedup: embedding near-duplicate check of each instruction before its
            responses are paid for and again when it is kept (off by default; docs/dedup.md).
    """

    metadata_count: Annotated[int, msgspec.Meta(ge=1)] = 200
    instructions_per_metadata: Annotated[int, msgspec.Meta(ge=1)] = 10
    max_skills: Annotated[int, msgspec.Meta(ge=1)] = 3
    rubric_count: Annotated[int, msgspec.Meta(ge=1)] = 4
    theta: Annotated[float, msgspec.Meta(ge=0)] = 3.0
    max_iterations: Annotated[int, msgspec.Meta(ge=1)] = 4
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    response_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    response_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    judge_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.0
    judge_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 32
    encode_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 64
    target_pairs: Annotated[int, msgspec.Meta(ge=1)] | None = None
    target_max_passes: Annotated[int, msgspec.Meta(ge=1)] = 20
    metadata_check: bool = False
    metadata_check_rounds: Annotated[int, msgspec.Meta(ge=1)] = 3
    templates: CodecLMTemplates = msgspec.field(default_factory=CodecLMTemplates)
    semantic_dedup: SemanticDedupConfig = msgspec.field(default_factory=SemanticDedupConfig)


# ------------------------------------------------------------ structured shapes
class _Encoding(msgspec.Struct):
    use_case: str
    skills: Annotated[list[str], msgspec.Meta(min_length=1, max_length=3)]


class _Instructions(msgspec.Struct):
    instructions: Annotated[list[str], msgspec.Meta(min_length=1)]


class _Rubrics(msgspec.Struct):
    rubrics: list[str]
    actions: Annotated[list[str], msgspec.Meta(min_length=1)]


def _exact_lists(tp: type[Any], sizes: dict[str, int]) -> dict[str, Any]:
    """The wire schema of ``tp`` asking for exactly ``sizes[field]`` items per list field.

    What is accepted back stays lenient (a shorter list still decodes and is used).
    """
    schema = json_schema(tp)
    for field, n in sizes.items():
        prop = schema["properties"][field]
        prop["minItems"] = n
        prop["maxItems"] = n
    return schema


class _Improved(msgspec.Struct):
    improved_instruction: str


class _Verdict(msgspec.Struct):
    reasonable: bool
    reason: str


def _parse_verdict(text: str) -> _Verdict:
    m = re.search(r"\b(YES|NO)\b", text, re.I)
    if m is None:
        raise ParseError("expected YES or NO", stage="check_metadata")
    return _Verdict(reasonable=m.group(1).upper() == "YES", reason=text.strip())


class _Pair(msgspec.Struct):
    assistant_1: Annotated[int, msgspec.Meta(ge=1, le=10)]
    assistant_2: Annotated[int, msgspec.Meta(ge=1, le=10)]


class Metadata(msgspec.Struct, frozen=True):
    """One metadata item: a use case, its skills, and the seed the use case came from."""

    use_case: str
    skills: tuple[str, ...]
    seed_id: str


# ----------------------------------------------------------------- text parsers
def _split_skills(text: str) -> list[str]:
    parts = re.split(r"[,;\n]|\s\d+[.)]\s", text)
    parts = [re.sub(r"^\s*\d+[.)]\s+", "", p) for p in parts]  # "1. Creative writing"
    return [p.strip(" .-*\t") for p in parts if p.strip(" .-*\t")]


def parse_encoding(text: str, max_skills: int = 3) -> _Encoding:
    """Parse ``Use case:`` (or ``Task:``) and ``Skills:`` lines.

    Raises:
        ParseError: a line is missing or no skill is named.
    """
    fields = parse_labelled(
        text,
        {"use_case": ("Use case", "Usecase", "Task"), "skills": ("Skills", "Skill")},
        stage="encode",
    )
    skills = _split_skills(fields["skills"])[:max_skills]
    if not skills:
        raise ParseError("no skill named on the Skills line", stage="encode")
    return _Encoding(use_case=fields["use_case"].strip(" ."), skills=skills)


def parse_rubrics(text: str, k: int) -> _Rubrics:
    """Split a reply into numbered rubrics and numbered actions.

    Splits on an ``Actions`` header when there is one; otherwise takes the first ``k``
    list items as rubrics and the next ``k`` as actions.

    Raises:
        ParseError: no action can be found.
    """
    m = re.search(r"^[ \t*#]*actions?[ \t*]*:?[ \t*]*$", text, re.I | re.M)
    if m:
        head, tail = text[: m.start()], text[m.end() :]
        try:
            rubrics = parse_numbered_list(head, stage="rubrics")
        except ParseError:
            rubrics = []
        actions = parse_numbered_list(tail, stage="rubrics")
    else:
        items = parse_numbered_list(text, stage="rubrics")
        if len(items) < 2:
            raise ParseError(
                "expected numbered rubrics followed by numbered actions", stage="rubrics"
            )
        half = min(k, len(items) // 2)
        rubrics, actions = items[:half], items[half : half + k]
    if not actions:
        raise ParseError("no actions found", stage="rubrics")
    return _Rubrics(rubrics=rubrics[:k], actions=actions[:k])


def _parse_improved(text: str) -> _Improved:
    out = re.sub(r"^\s*\**improved instruction\**\s*:\s*", "", text.strip(), flags=re.I).strip()
    if not out:
        raise ParseError("empty improved instruction", stage="improve")
    return _Improved(improved_instruction=out)


def _parse_pair(text: str) -> _Pair:
    a, b = parse_score_pair(text, low=1, high=10, stage="judge")
    return _Pair(assistant_1=round(a), assistant_2=round(b))


# ------------------------------------------------------------ metadata pool
POOL_NAME = "codeclm_pool.sqlite"
"""The metadata pool's file in the output directory (rebuilt by every ``prepare``)."""

_REDRAWS = 64  # draws per augmented item while its combination is already taken
_BATCH = 512  # rows read from the pool at a time
_SPAN_MIN = 4096  # seeds read ahead of the oldest unfinished encoding (at least)


def _sig(use_case: int, skills: Iterable[int]) -> str:
    """A combination's identity: the use case's id and the sorted set of skill ids."""
    return f"{use_case}|{','.join(map(str, sorted(set(skills))))}"


class _PoolWriter(Protocol):
    """Where ``prepare`` registers seeds, in seed order (a SQLite file, or memory)."""

    own_count: int
    failed_count: int
    use_case_count: int
    skill_count: int

    def use_case_id(self, key: str, text: str, seed_id: str) -> int:
        """The id of use case ``key`` (lower-cased), added with its first spelling if new."""
        ...

    def skill_id(self, key: str, text: str) -> int:
        """The id of skill ``key`` (lower-cased), added with its first spelling if new."""
        ...

    def add_own(self, md: Metadata, sig: str) -> None:
        """Add a seed's own metadata unless combination ``sig`` is already there."""
        ...

    def add_failed(self, row: dict[str, Any]) -> None:
        """Append the failed row of a seed that could not be read or encoded."""
        ...

    def add_seed(self, use_case: int) -> None:
        """Append an encoded seed's use case id (the use cases' distribution)."""
        ...


class _PoolReader(Protocol):
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

    def failed(self, start: int, n: int) -> list[dict[str, Any]]:
        """Failed seed rows ``start .. start + n`` (in seed order)."""
        ...


def _register(pool: _PoolWriter, md: Metadata, count: int) -> None:
    """Add one encoded seed to ``pool``.

    Its use case and skills join the vocabularies, its use case id is appended to the
    seeds' list (so augmented items draw use cases with the seeds' frequencies), and its
    own metadata is kept when its combination is new (every seed can be one of the
    ``count`` items: :func:`_generate` samples among all of them).
    """
    del count  # every seed's metadata is kept; the sample is drawn at generation
    uc = pool.use_case_id(md.use_case.lower(), md.use_case, md.seed_id)
    skills = [pool.skill_id(s.lower(), s) for s in md.skills]
    pool.add_seed(uc)
    pool.add_own(md, _sig(uc, skills))


def _combinations(use_cases: int, skills: int, max_skills: int, cap: int) -> int:
    """How many distinct (use case, 1..max_skills skills) combinations exist, at most ``cap``."""
    total = 0
    for k in range(1, min(max_skills, skills) + 1):
        total += use_cases * math.comb(skills, k)
        if total >= cap:
            return cap
    return total


def _generate(
    pool: _PoolReader,
    *,
    own: int,
    use_cases: int,
    skills: int,
    count: int,
    max_skills: int,
    seed: int,
    seeds: int | None = None,
) -> Iterator[Metadata]:
    """The ``count`` metadata items of a pool, one at a time (CodecLM App. A.3).

    The seeds' own metadata come first: all of them when there are at most ``count``,
    else ``count`` of them drawn uniformly (selection sampling in seed order, from
    ``random.Random(f"codeclm:own:{seed}")``), so every seed can contribute, not only the
    first ones. Item ``i`` after them draws from
    ``random.Random(f"codeclm:augment:{seed}:{i}")``: a use case as the use case of a
    seed drawn uniformly from the ``seeds`` encoded seeds (so use cases keep the seeds'
    distribution; ``seeds=None``: uniformly over the distinct use cases), ``k``
    uniformly in ``1..min(max_skills, skills)``, then ``k`` skills uniformly without
    replacement from the distinct skills. While that combination is already taken (by
    a seed or an earlier item) and an untaken one exists, it draws again, at most
    ``_REDRAWS`` times in all.
    """
    if own > count:
        rng = random.Random(f"codeclm:own:{seed}")
        need = count
        for start in range(0, own, _BATCH):
            for j, md in enumerate(pool.own(start, min(_BATCH, own - start)), start):
                if need and rng.random() * (own - j) < need:
                    need -= 1
                    yield md
        return
    for start in range(0, own, _BATCH):
        yield from pool.own(start, min(_BATCH, own - start))
    if own >= count or not use_cases or not skills:
        return
    most = min(max_skills, skills)
    room = _combinations(use_cases, skills, max_skills, count) - own  # untaken ones
    for i in range(own, count):
        rng = random.Random(f"codeclm:augment:{seed}:{i}")
        for _ in range(_REDRAWS):
            uc = pool.seed_use_case(rng.randrange(seeds)) if seeds else rng.randrange(use_cases)
            picked = rng.sample(range(skills), rng.randint(1, most))
            sig = _sig(uc, picked)
            fresh = room > 0 and not pool.taken(sig)
            if fresh or room <= 0:
                break
        if fresh:
            pool.take(sig)
            room -= 1
        text, seed_id = pool.use_case(uc)
        yield Metadata(use_case=text, skills=tuple(pool.skill(j) for j in picked), seed_id=seed_id)


class _MemoryPool:
    """A pool in memory: the reference implementation, for small inputs and tests."""

    def __init__(self) -> None:
        self.own_count = self.failed_count = self.use_case_count = self.skill_count = 0
        self._use_cases: dict[str, int] = {}
        self._use_case_list: list[tuple[str, str]] = []
        self._skills: dict[str, int] = {}
        self._skill_list: list[str] = []
        self._own: list[Metadata] = []
        self._own_sigs: set[str] = set()
        self._failed: list[dict[str, Any]] = []
        self._taken: set[str] = set()
        self._seed_uc: list[int] = []
        self.seed_count = 0

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

    def add_failed(self, row: dict[str, Any]) -> None:
        self._failed.append(row)
        self.failed_count += 1

    def reader(self) -> _MemoryPool:
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

    def failed(self, start: int, n: int) -> list[dict[str, Any]]:
        return self._failed[start : start + n]


_SCHEMA = (
    "CREATE TABLE use_case (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,"
    " text TEXT NOT NULL, seed_id TEXT NOT NULL)",
    "CREATE TABLE skill (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, text TEXT NOT NULL)",
    "CREATE TABLE own (pos INTEGER PRIMARY KEY, metadata BLOB NOT NULL)",
    "CREATE TABLE own_sig (sig TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TABLE failed (pos INTEGER PRIMARY KEY, row BLOB NOT NULL)",
    "CREATE TABLE seed_uc (pos INTEGER PRIMARY KEY, uc INTEGER NOT NULL)",
    "CREATE TABLE refused (sig TEXT PRIMARY KEY) WITHOUT ROWID",
)
_SELECT_USE_CASE = "SELECT id FROM use_case WHERE key = ?"
_INSERT_USE_CASE = "INSERT INTO use_case VALUES (?, ?, ?, ?)"
_SELECT_SKILL = "SELECT id FROM skill WHERE key = ?"
_INSERT_SKILL = "INSERT INTO skill VALUES (?, ?, ?)"
_CACHE_KIB = 2048  # SQLite page cache per connection (the pool itself stays on disk)
_json_encoder = msgspec.json.Encoder()
_own_decoder = msgspec.json.Decoder(Metadata)
_row_decoder = msgspec.json.Decoder(dict[str, Any])


def _pool_error(path: Path, exc: sqlite3.Error | OSError, action: str) -> ShardError:
    return ShardError(
        f"cannot {action} the CodecLM metadata pool ({exc})",
        path=str(path),
        hint="check free disk space; the pool is rebuilt from cached replies on the next run",
    )


class _SqlitePoolWriter:
    """Builds the pool file from scratch; nothing but counters stays in memory.

    Raises:
        ShardError: the file cannot be created or written (from any method).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.own_count = self.failed_count = self.use_case_count = self.skill_count = 0
        self.seed_count = 0
        try:
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise _pool_error(path, exc, "create") from exc
        try:
            # The file is scratch, rebuilt on every run: no journal, no fsync.
            for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{_CACHE_KIB}"):
                self._db.execute(f"PRAGMA {pragma}")
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            self._db.close()
            raise _pool_error(path, exc, "create") from exc

    def _lookup(self, select: str, insert: str, key: str, values: tuple[Any, ...]) -> int | None:
        """The id of ``key`` if it is known; else insert ``values`` and return None."""
        try:
            row = self._db.execute(select, (key,)).fetchone()
            if row is not None:
                return int(row[0])
            self._db.execute(insert, values)
        except sqlite3.Error as exc:
            raise _pool_error(self.path, exc, "write") from exc
        return None

    def use_case_id(self, key: str, text: str, seed_id: str) -> int:
        n = self.use_case_count
        found = self._lookup(_SELECT_USE_CASE, _INSERT_USE_CASE, key, (n, key, text, seed_id))
        if found is None:
            self.use_case_count += 1
            return n
        return found

    def skill_id(self, key: str, text: str) -> int:
        n = self.skill_count
        found = self._lookup(_SELECT_SKILL, _INSERT_SKILL, key, (n, key, text))
        if found is None:
            self.skill_count += 1
            return n
        return found

    def add_own(self, md: Metadata, sig: str) -> None:
        try:
            if self._db.execute("INSERT OR IGNORE INTO own_sig VALUES (?)", (sig,)).rowcount:
                self._db.execute(
                    "INSERT INTO own VALUES (?, ?)", (self.own_count, _json_encoder.encode(md))
                )
                self.own_count += 1
        except sqlite3.Error as exc:
            raise _pool_error(self.path, exc, "write") from exc

    def add_seed(self, use_case: int) -> None:
        try:
            self._db.execute("INSERT INTO seed_uc VALUES (?, ?)", (self.seed_count, use_case))
        except sqlite3.Error as exc:
            raise _pool_error(self.path, exc, "write") from exc
        self.seed_count += 1

    def add_failed(self, row: dict[str, Any]) -> None:
        try:
            self._db.execute(
                "INSERT INTO failed VALUES (?, ?)", (self.failed_count, _json_encoder.encode(row))
            )
        except sqlite3.Error as exc:
            raise _pool_error(self.path, exc, "write") from exc
        self.failed_count += 1

    def finish(self) -> None:
        """Commit and close."""
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _pool_error(self.path, exc, "write") from exc
        finally:
            self._db.close()

    def abandon(self) -> None:
        """Close without committing (the next ``prepare`` rebuilds the file)."""
        self._db.close()


class _SqlitePoolReader:
    """Reads a built pool file; taken combinations go to a private TEMP table.

    Raises:
        ShardError: the file cannot be opened or read (from any method).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise _pool_error(path, exc, "open") from exc
        try:
            self._db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            self._db.execute("PRAGMA temp_store=FILE")
            self._db.execute("CREATE TEMP TABLE taken (sig TEXT PRIMARY KEY) WITHOUT ROWID")
            self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            self._db.close()
            raise _pool_error(path, exc, "read") from exc
        self._pending = 0

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise _pool_error(self.path, exc, "read") from exc

    def own(self, start: int, n: int) -> list[Metadata]:
        rows = self._query(
            "SELECT metadata FROM own WHERE pos >= ? ORDER BY pos LIMIT ?", (start, n)
        )
        return [_own_decoder.decode(blob) for (blob,) in rows]

    def use_case(self, i: int) -> tuple[str, str]:
        ((text, seed_id),) = self._query("SELECT text, seed_id FROM use_case WHERE id = ?", (i,))
        return str(text), str(seed_id)

    def skill(self, i: int) -> str:
        ((text,),) = self._query("SELECT text FROM skill WHERE id = ?", (i,))
        return str(text)

    def seed_use_case(self, i: int) -> int:
        ((uc,),) = self._query("SELECT uc FROM seed_uc WHERE pos = ?", (i,))
        return int(uc)

    def taken(self, sig: str) -> bool:
        ((found,),) = self._query(
            "SELECT EXISTS (SELECT 1 FROM temp.taken WHERE sig = ?1)"
            " OR EXISTS (SELECT 1 FROM own_sig WHERE sig = ?1)"
            " OR EXISTS (SELECT 1 FROM refused WHERE sig = ?1)",
            (sig,),
        )
        return bool(found)

    def take(self, sig: str) -> None:
        try:
            self._db.execute("INSERT INTO temp.taken VALUES (?)", (sig,))
            self._pending += 1
            if self._pending >= _BATCH:  # bounded transactions on the temp table
                self._db.execute("COMMIT")
                self._db.execute("BEGIN")
                self._pending = 0
        except sqlite3.Error as exc:
            raise _pool_error(self.path, exc, "read") from exc

    def failed(self, start: int, n: int) -> list[dict[str, Any]]:
        rows = self._query("SELECT row FROM failed WHERE pos >= ? ORDER BY pos LIMIT ?", (start, n))
        return [_row_decoder.decode(blob) for (blob,) in rows]

    def close(self) -> None:
        """Close (the TEMP table goes with the connection)."""
        self._db.close()


def augment_metadata(
    encodings: list[Metadata], count: int, *, max_skills: int, seed: int
) -> list[Metadata]:
    """Mix and match seed metadata up to ``count`` items (CodecLM App. A.3), in memory.

    The reference for what :class:`CodecLMMethod` streams from its on-disk pool: the
    seeds' own metadata come first (deduplicated by use case and skill set, ignoring
    case); each further item ``i`` pairs one use case, drawn uniformly from the distinct
    use cases (first spelling, and the first seed that named it), with 1..max_skills
    skills drawn uniformly without replacement from the distinct skills, from a
    ``random.Random`` seeded by ``seed`` and ``i`` alone. A combination already present
    is re-drawn (at most 64 draws per item) while an unused one exists.
    """
    pool = _MemoryPool()
    for md in encodings:
        _register(pool, md, count)
    return list(
        _generate(
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


# --------------------------------------------------------------- pure functions
def swap_average(first: tuple[float, float], swapped: tuple[float, float]) -> tuple[float, float]:
    """Scores of (strong, target) from two judge calls with the answers swapped.

    ``first`` shows the strong answer as Assistant 1; ``swapped`` shows it as Assistant 2.
    """
    strong = (first[0] + swapped[1]) / 2.0
    target = (first[1] + swapped[0]) / 2.0
    return strong, target


def route(gap: float, iteration: int, *, theta: float, max_iterations: int) -> str:
    """Contrastive Filtering's decision: ``keep``, ``improve`` (requeue) or ``reject``."""
    if abs(gap) > theta:
        return "keep"
    if iteration >= max_iterations:
        return "reject"
    return "improve"


def _metadata_key(md: Metadata) -> str:
    return f"{md.use_case.lower()}|{'|'.join(sorted(k.lower() for k in md.skills))}"


def _refuse(path: Path, refused: list[Metadata]) -> None:
    """Record refused combinations in the pool file (generation then draws again)."""
    if not refused:
        return
    try:
        db = sqlite3.connect(str(path), isolation_level=None)
        try:
            for md in refused:
                (uc,) = db.execute(
                    "SELECT id FROM use_case WHERE key = ?", (md.use_case.lower(),)
                ).fetchone()
                ids = [
                    db.execute("SELECT id FROM skill WHERE key = ?", (k.lower(),)).fetchone()[0]
                    for k in md.skills
                ]
                db.execute("INSERT OR IGNORE INTO refused VALUES (?)", (_sig(uc, ids),))
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise _pool_error(path, exc, "write") from exc


# ---------------------------------------------------------------------- rows
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
    Column("error_kind", str, "f", doc="the error's class"),
    Column("error", str, "f", doc="the error's message"),
    Column("models", dict, doc="role -> model"),
    Column("simulated", bool, doc="written by the simulated endpoint"),
)
"""The row schema: every kept, rejected and failed row has these columns."""


# ---------------------------------------------------------------------- method
class CodecLMMethod:
    """The CodecLM pipeline."""

    name = "codeclm"
    global_phase = True  # encodes every seed and augments the metadata pool before the first item

    def __init__(self, cfg: CodecLMConfig, ctx: MethodContext) -> None:
        t = cfg.templates
        check_templates(t, P.TEMPLATE_VARS, prefix="method.codeclm.templates")
        self.cfg = cfg
        self.ctx = ctx
        gen = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
        obs = ctx.stage
        self.encode = Generate(
            "encode",
            depth=0,
            template=t.encode,
            schema=_Encoding,
            parse_text=lambda s: parse_encoding(s, cfg.max_skills),
            params=gen,
            observer_for=obs,
        )
        k = cfg.rubric_count
        self.rubrics = Generate(
            "rubrics",
            depth=1,
            template=t.rubrics,
            schema=_Rubrics,
            parse_text=lambda s: parse_rubrics(s, k),
            params=gen,
            observer_for=obs,
            wire_schema=_exact_lists(_Rubrics, {"rubrics": k, "actions": k}),
        )
        self.decode = Generate(
            "decode",
            depth=1,
            template=t.decode,
            schema=_Instructions,
            parse_text=lambda s: _Instructions(parse_numbered_list(s, stage="decode")),
            params=gen,
            observer_for=obs,
            wire_schema=_exact_lists(
                _Instructions, {"instructions": cfg.instructions_per_metadata}
            ),
        )
        self.improve = Generate(
            "improve",
            depth=2,
            template=t.improve,
            schema=_Improved,
            parse_text=_parse_improved,
            params=gen,
            observer_for=obs,
        )
        self.respond = Generate(
            "respond",
            depth=3,
            template=t.respond,
            schema=None,
            parse_text=lambda s: s.strip(),
            params={"temperature": cfg.response_temperature, "max_tokens": cfg.response_max_tokens},
            observer_for=obs,
            parse_retries=0,
        )
        self.judge = Generate(
            "judge",
            depth=4,
            template=t.judge,
            schema=_Pair,
            parse_text=_parse_pair,
            params={"temperature": cfg.judge_temperature, "max_tokens": cfg.judge_max_tokens},
            observer_for=obs,
        )
        self.check_metadata = Generate(
            "check_metadata",
            depth=0,
            template=t.check_metadata,
            schema=_Verdict,
            parse_text=_parse_verdict,
            params={"temperature": cfg.judge_temperature, "max_tokens": 64},
            observer_for=obs,
        )
        self.row_schema = RowSchema(
            self.name,
            COLUMNS,
            common=lambda: {"models": ctx.models(), "simulated": ctx.simulated},
        )
        self.kept_before = 0  # committed kept rows found by prepare (target_pairs)
        self.kept_now = 0
        self.metadata_checked = 0
        self.metadata_refused = 0
        self.metadata_unchecked = 0
        self.passes = 0
        self.total: int | None = None
        self.metadata_items = 0
        self.seeds_failed = 0
        self._pool_path: Path | None = None
        self._own = self._use_cases = self._skills = self._seeds = 0
        self.kept_by_iteration: Counter[int] = Counter()
        self.rejected = 0
        self.failed_by_stage: Counter[str] = Counter()
        self.instructions = 0
        self.short_decodes = 0
        self.seeds_read = 0
        self.judge_pairs = 0
        # Kept instructions; rebuilt on resume from the committed kept rows.
        self.semantic = semantic_dedup(
            cfg.semantic_dedup,
            ctx.config,
            method=self.name,
            logger=ctx.log,
            text_field="instruction",
        )

    # ---------------------------------------------------------------- prepare
    async def prepare(self) -> None:
        """Encode every seed and build the metadata pool in ``OUT/codeclm_pool.sqlite``.

        Seeds are read one at a time and encoded by at most ``encode_concurrency`` tasks;
        results are registered in seed order (whatever order they finish in), so the
        pool, and with it every item, is the same on every run. The pool file is rebuilt
        from scratch each time (the encodings replay from the response cache).

        Raises:
            InputError: the input holds no record.
            EngineError: no seed could be encoded.
            EndpointError: a seed could not be encoded because the endpoint failed; the
                run stops (resumable) rather than build a metadata pool that a rerun
                would build differently.
            ShardError: the pool file cannot be written.
        """
        config = self.ctx.config
        out_dir = config.resolve(config.run.output)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _pool_error(out_dir / POOL_NAME, exc, "create") from exc
        path = out_dir / POOL_NAME
        self._pool_path = None
        self.seeds_read = 0
        pool = _SqlitePoolWriter(path)
        try:
            await self._encode_seeds(pool)
            if self.seeds_read == 0:
                raise InputError(
                    "input holds no seed records (each line must be a JSON object with an instruction)",
                    path=str(self.ctx.input_path),
                )
            if pool.use_case_count == 0:
                raise EngineError(
                    "no seed could be encoded into metadata; check the input and the strong endpoint"
                )
        except BaseException:
            pool.abandon()
            raise
        pool.finish()
        self._pool_path = path
        self._own = pool.own_count
        self._seeds = pool.seed_count
        self._use_cases = pool.use_case_count
        self._skills = pool.skill_count
        self.seeds_failed = pool.failed_count
        self.metadata_items = self.cfg.metadata_count
        self.total = (
            self.metadata_items + self.seeds_failed if self.cfg.target_pairs is None else None
        )
        if self.cfg.metadata_check:
            await self._check_metadata(path)
        if self.cfg.target_pairs is not None:
            # A rerun continues the count: the pairs already committed are kept pairs.
            self.kept_before = sum(1 for _ in iter_rows(out_dir, "kept"))
            self.kept_now = 0

    async def _check_metadata(self, path: Path) -> None:
        """The judge's check of every augmented combination; refused ones are recorded in
        the pool (``refused``) so that generation draws again, for up to
        ``metadata_check_rounds`` rounds (every call replays from the cache on resume).
        """
        judge = self.ctx.callers["judge"]
        room = asyncio.Semaphore(self.cfg.encode_concurrency)
        verdicts: dict[str, bool] = {}

        async def check(md: Metadata) -> bool:
            async with room:
                got = await self.check_metadata(
                    judge, {"use_case": md.use_case, "skills": ", ".join(md.skills)}
                )
            return got.reasonable

        for _ in range(self.cfg.metadata_check_rounds):
            reader = self._reader()
            try:
                pending = [
                    (key, md)
                    for i, md in enumerate(self._metadata(reader))
                    if i >= min(self._own, self.metadata_items)
                    and (key := _metadata_key(md)) not in verdicts
                ]
            finally:
                reader.close()
            if not pending:
                break
            answers = await asyncio.gather(*(check(md) for _, md in pending))
            refused = []
            for (key, md), ok in zip(pending, answers, strict=True):
                verdicts[key] = ok
                self.metadata_checked += 1
                if not ok:
                    self.metadata_refused += 1
                    refused.append(md)
            _refuse(path, refused)
        reader = self._reader()
        try:
            self.metadata_unchecked = sum(
                1
                for i, md in enumerate(self._metadata(reader))
                if i >= min(self._own, self.metadata_items) and _metadata_key(md) not in verdicts
            )
        finally:
            reader.close()

    async def _encode_seeds(self, pool: _PoolWriter) -> None:
        """Encode the input's seeds into ``pool`` with a bounded window of tasks.

        At most ``encode_concurrency`` encode tasks exist at a time, and a seed is read
        only when there is room and it is fewer than ``span`` seeds ahead of the oldest
        unregistered one, so the results waiting for their turn stay bounded too.
        """
        strong = self.ctx.callers["strong"]
        concurrency = self.cfg.encode_concurrency
        span = max(16 * concurrency, _SPAN_MIN)
        count = self.cfg.metadata_count
        room = asyncio.Semaphore(concurrency)
        advanced = asyncio.Event()
        ready: dict[int, Metadata | RowOut] = {}
        head = 0  # the next seed (by position) to register

        def settle(n: int, value: Metadata | RowOut) -> None:
            nonlocal head
            ready[n] = value
            while head in ready:
                done = ready.pop(head)
                if isinstance(done, Metadata):
                    _register(pool, done, count)
                else:
                    pool.add_failed(done[1])
                head += 1
            advanced.set()

        async def encode(n: int, item: Item) -> None:
            try:
                settle(n, await self._encode_one(strong, item))
            finally:
                room.release()

        async with asyncio.TaskGroup() as tg:
            for n, rec in enumerate(
                read_jsonl(
                    self.ctx.input_path,
                    required=("instruction",),
                    duplicate_ids=self.ctx.config.run.duplicate_ids,
                )
            ):
                self.seeds_read += 1
                while n - head >= span:
                    advanced.clear()
                    await advanced.wait()
                if isinstance(rec, BadInput):
                    settle(
                        n,
                        failed_row(
                            self.name, rec.key, source=rec.source, stage="input", error=rec.reason
                        ),
                    )
                    continue
                await room.acquire()
                tg.create_task(encode(n, rec))

    async def _encode_one(self, strong: ChatCaller, item: Item) -> Metadata | RowOut:
        """One seed's metadata, or its failed row when the reply does not parse."""
        try:
            enc = await self.encode(strong, {"instruction": item.data["instruction"]})
        except ParseError as exc:
            return failed_row(self.name, item.key, source=item.source, stage="encode", error=exc)
        skills = tuple(s.strip() for s in enc.skills if s.strip())[: self.cfg.max_skills]
        if not enc.use_case.strip() or not skills:
            return failed_row(
                self.name,
                item.key,
                source=item.source,
                stage="encode",
                error=ParseError("empty use case or skills", stage="encode"),
            )
        return Metadata(use_case=enc.use_case.strip(), skills=skills, seed_id=item.key)

    def metadata(self) -> Iterator[Metadata]:
        """The ``metadata_count`` metadata items, generated lazily from the pool.

        Raises:
            RuntimeError: :meth:`prepare` has not built the pool.
            ShardError: the pool file cannot be read.
        """
        reader = self._reader()
        try:
            yield from self._metadata(reader)
        finally:
            reader.close()

    def _reader(self) -> _SqlitePoolReader:
        if self._pool_path is None:
            raise RuntimeError("CodecLMMethod.prepare() must build the metadata pool first")
        return _SqlitePoolReader(self._pool_path)

    def _metadata(self, reader: _PoolReader) -> Iterator[Metadata]:
        return _generate(
            reader,
            own=self._own,
            use_cases=self._use_cases,
            skills=self._skills,
            count=self.metadata_items,
            max_skills=self.cfg.max_skills,
            seed=self.ctx.seed,
            seeds=self._seeds,
        )

    def work(self) -> Iterator[Item | BadInput]:
        """Metadata items (made on demand), then one item per seed that failed to encode.

        With ``target_pairs``: the failed seeds first, then passes over the metadata items
        (pass ``p`` decodes new basic instructions, as decode sample ``p``) for as long as
        fewer than ``target_pairs`` pairs are kept, at most ``target_max_passes`` passes.
        """
        if self.cfg.target_pairs is not None:
            yield from self._failed_items(0)
            yield from self._target_items(self.cfg.target_pairs, base=self.seeds_failed)
            return
        reader = self._reader()
        try:
            for i, md in enumerate(self._metadata(reader)):
                yield self._metadata_item(i, i, md, 0)
        finally:
            reader.close()
        yield from self._failed_items(self.metadata_items)

    def _metadata_item(self, index: int, i: int, md: Metadata, pass_: int) -> Item:
        key = f"meta-{i}" if pass_ == 0 else f"meta-{i}.p{pass_}"
        return Item(
            index=index,
            key=key,
            data={
                "use_case": md.use_case,
                "skills": list(md.skills),
                "seed_id": md.seed_id,
                "origin": "seed" if i < min(self._own, self.metadata_items) else "augmented",
                "pass": pass_,
            },
            source=f"metadata:{i}" if pass_ == 0 else f"metadata:{i}:pass:{pass_}",
        )

    def _failed_items(self, base: int) -> Iterator[Item]:
        reader = self._reader()
        try:
            for start in range(0, self.seeds_failed, _BATCH):
                for j, row in enumerate(reader.failed(start, _BATCH), start):
                    yield Item(
                        index=base + j,
                        key=str(row["seed_id"]),
                        data={"failed": row},
                        source=str(row["source"]),
                    )
        finally:
            reader.close()

    def kept_total(self) -> int:
        """Pairs kept so far: committed before this run, plus kept by it."""
        return self.kept_before + self.kept_now

    def _target_items(self, target: int, *, base: int) -> Iterator[Item]:
        count = self.metadata_items
        for pass_ in range(self.cfg.target_max_passes):
            reader = self._reader()  # a fresh reader per pass: the same items each pass
            try:
                for i, md in enumerate(self._metadata(reader)):
                    if self.kept_total() >= target:
                        return
                    self.passes = pass_ + 1
                    yield self._metadata_item(base + pass_ * count + i, i, md, pass_)
            finally:
                reader.close()

    # ---------------------------------------------------------------- process
    async def process(self, item: Item) -> list[RowOut]:
        """Rubrics + decode for one metadata item, then every instruction's loop."""
        if "failed" in item.data:
            self.failed_by_stage[str(item.data["failed"]["stage"])] += 1
            return [self.row_schema.row("failed", dict(item.data["failed"]))]
        rows = await self._process(item)
        self.kept_now += sum(kind == "kept" for kind, _ in rows)
        return rows

    async def _process(self, item: Item) -> list[RowOut]:
        strong = self.ctx.callers["strong"]
        md = Metadata(
            use_case=str(item.data["use_case"]),
            skills=tuple(item.data["skills"]),
            seed_id=str(item.data["seed_id"]),
        )
        values = {"use_case": md.use_case, "skills": ", ".join(md.skills)}
        n = self.cfg.instructions_per_metadata
        try:
            rubrics, decoded = await concurrently(
                self.rubrics(strong, {**values, "k": self.cfg.rubric_count}),
                # a later pass (target_pairs) decodes new basic instructions
                self.decode(strong, {**values, "n": n}, sample_index=int(item.data.get("pass", 0))),
            )
        except (EndpointError, ParseError) as exc:
            stage = exc.stage or "decode"
            self.failed_by_stage[stage] += 1
            return [
                self.row_schema.failed(
                    item.key,
                    source=item.source,
                    stage=stage,
                    error=exc,
                    seed_id=md.seed_id,
                )
            ]
        instructions = [s.strip() for s in decoded.instructions if s.strip()][:n]
        if len(instructions) < n:
            self.short_decodes += 1
        actions = [a.strip() for a in rubrics.actions if a.strip()] or ["Add one more constraint."]
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._instruction(item, md, j, text, actions))
                for j, text in enumerate(instructions)
            ]
        self.instructions += len(instructions)
        return [task.result() for task in tasks]

    async def _instruction(
        self, item: Item, md: Metadata, j: int, basic: str, actions: list[str]
    ) -> RowOut:
        cfg = self.cfg
        rng = random.Random(f"codeclm:{self.ctx.seed}:{item.key}:{j}")
        instruction = basic
        if self.semantic is not None:
            self.semantic.warm_up()  # loads once, in a worker thread, while calls run
        base_row: dict[str, Any] = {
            "id": row_id(self.name, item.key, j),
            "seed_id": md.seed_id,
            "source": item.source,
            "metadata": {"use_case": md.use_case, "skills": list(md.skills)},
            "origin": str(item.data.get("origin", "augmented")),
            "basic_instruction": basic,
        }
        schema = self.row_schema
        history: list[dict[str, Any]] = []
        stage = "respond"
        try:
            for iteration in range(1, cfg.max_iterations + 1):
                depth = 4 * (iteration - 1)
                action = ""
                if iteration > 1:
                    stage = "improve"
                    action = rng.choice(actions)
                    improved = await self._call(
                        self.improve,
                        "strong",
                        {"action": action, "instruction": instruction},
                        depth,
                    )
                    instruction = improved.improved_instruction
                if self.semantic is not None:
                    # Before paying for two responses and two judge calls: an instruction
                    # already near a kept one is dropped now (the check at keep decides
                    # for pairs in flight at the same time).
                    dup = await self.semantic.probe(base_row["id"], instruction)
                    if dup is not None:
                        return schema.row(
                            "rejected",
                            {
                                **base_row,
                                "instruction": instruction,
                                "iteration": iteration,
                                "filter": NEAR_DUPLICATE,
                                **dup.fields(),
                                "history": history,
                            },
                        )
                stage = "respond"
                strong_ans, target_ans = await concurrently(
                    self._call(self.respond, "strong", {"instruction": instruction}, depth),
                    self._call(self.respond, "target", {"instruction": instruction}, depth),
                )
                stage = "judge"
                first, swapped = await concurrently(
                    self._call(
                        self.judge,
                        "judge",
                        {
                            "instruction": instruction,
                            "answer_1": strong_ans,
                            "answer_2": target_ans,
                        },
                        depth,
                    ),
                    self._call(
                        self.judge,
                        "judge",
                        {
                            "instruction": instruction,
                            "answer_1": target_ans,
                            "answer_2": strong_ans,
                        },
                        depth,
                    ),
                )
                self.judge_pairs += 1
                s_strong, s_target = swap_average(
                    (first.assistant_1, first.assistant_2),
                    (swapped.assistant_1, swapped.assistant_2),
                )
                gap = s_strong - s_target
                scores = {"strong": s_strong, "target": s_target, "gap": gap}
                history.append(
                    {
                        "iteration": iteration,
                        "instruction": instruction,
                        "action": action,
                        "strong_response": strong_ans,
                        "target_response": target_ans,
                        # Assistant 1 and 2 as shown: strong first, then swapped.
                        "judge_strong_first": [float(first.assistant_1), float(first.assistant_2)],
                        "judge_target_first": [
                            float(swapped.assistant_1),
                            float(swapped.assistant_2),
                        ],
                        "scores": scores,
                    }
                )
                decision = route(gap, iteration, theta=cfg.theta, max_iterations=cfg.max_iterations)
                if decision == "keep":
                    better = "strong" if gap > 0 else "target"
                    kept = {
                        **base_row,
                        "instruction": instruction,
                        "response": strong_ans if gap > 0 else target_ans,
                        "response_source": better,
                        "iteration": iteration,
                        "scores": scores,
                        "history": history,
                    }
                    # Checked (and added to the index) only when kept: the kept text is
                    # the one that must not repeat, and the one a resume rebuilds from.
                    if self.semantic is not None:
                        dup = await self.semantic.check_one(base_row["id"], instruction)
                        if dup is not None:
                            kept.pop("scores")
                            kept.pop("response")
                            kept.pop("response_source")
                            return schema.row(
                                "rejected", {**kept, "filter": NEAR_DUPLICATE, **dup.fields()}
                            )
                    self.kept_by_iteration[iteration] += 1
                    return schema.row("kept", kept)
                if decision == "reject":
                    self.rejected += 1
                    return schema.row(
                        "rejected",
                        {
                            **base_row,
                            "instruction": instruction,
                            "iteration": iteration,
                            "filter": "contrastive",
                            "reason": (
                                f"gap {gap:+.2f} within theta {cfg.theta:g} after "
                                f"{cfg.max_iterations} iterations"
                            ),
                            "history": history,
                        },
                    )
        except (EndpointError, ParseError) as exc:
            stage = exc.stage or stage
            self.failed_by_stage[stage] += 1
            return schema.failed(
                item.key,
                source=item.source,
                stage=stage,
                error=exc,
                id=base_row["id"],
                seed_id=md.seed_id,
                basic_instruction=basic,
                instruction=instruction,
            )
        finally:
            if self.semantic is not None:
                self.semantic.forget(base_row["id"])
        raise AssertionError("unreachable: route() rejects at max_iterations")

    async def _call(self, gen: Generate[Any], role: str, values: dict[str, Any], depth: int) -> Any:
        # Later iterations outrank earlier ones at the gate: finish started work first.
        return await gen(self.ctx.callers[role], values, priority=gen.depth + depth)

    def report(self) -> dict[str, Any]:
        """Kept per iteration, rejected, failed per stage, judge calls, seeds."""
        kept = sum(self.kept_by_iteration.values())
        return {
            "seeds_read": self.seeds_read,
            "seeds_failed": self.seeds_failed,
            "metadata_items": self.metadata_items,
            "basic_instructions_budget": self.metadata_items * self.cfg.instructions_per_metadata,
            "instructions": self.instructions,
            **(
                {
                    "target_pairs": self.cfg.target_pairs,
                    "kept_total": self.kept_total(),
                    "kept_before_this_run": self.kept_before,
                    "passes": self.passes,
                }
                if self.cfg.target_pairs is not None
                else {}
            ),
            **(
                {
                    "metadata_check": {
                        "checked": self.metadata_checked,
                        "refused": self.metadata_refused,
                        "unchecked": self.metadata_unchecked,
                    }
                }
                if self.cfg.metadata_check
                else {}
            ),
            "short_decodes": self.short_decodes,
            "kept": kept,
            "kept_by_iteration": {str(k): v for k, v in sorted(self.kept_by_iteration.items())},
            "kept_first_iteration_share": (
                round(self.kept_by_iteration.get(1, 0) / kept, 3) if kept else None
            ),
            "rejected": self.rejected,
            "failed_by_stage": dict(self.failed_by_stage),
            "judge_calls": 2 * self.judge_pairs,
            "note": "counts cover the items processed by this invocation (resumed items are skipped)",
            **({"semantic_dedup": self.semantic.report()} if self.semantic is not None else {}),
        }

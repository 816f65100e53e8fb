"""CodecLM's flat-memory metadata pool: bounded encoding window, on-disk pool, lazy items."""

from __future__ import annotations

import asyncio
import gc
import json
import random
import sqlite3
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from engine.config import Config, load_config
from engine.errors import ServerError, ShardError
from engine.io.shards import ShardSink
from engine.methods import method_config
from engine.methods.base import MethodContext
from engine.methods.codeclm import (
    POOL_NAME,
    CodecLMConfig,
    Metadata,
    augment_metadata,
)
from engine.methods.codeclm import pool as codeclm_pool
from engine.methods.codeclm import seeds as codeclm_seeds
from engine.methods.codeclm import store as codeclm_store
from engine.records import Item
from tests.fakes import Observers, Reply
from tests.unit.methods.codeclm_harness import CodecLMMethod


def encoding_of(i: int, vocab: int) -> Metadata:
    """What the fake encoder answers for seed ``i``: skills from a vocabulary of ``vocab``."""
    skills = tuple(f"Skill {(i * 7 + j * 3) % vocab}" for j in range(1 + i % 3))
    return Metadata(f"Use case {i % 11}", tuple(dict.fromkeys(skills)), f"s{i}")


class Encoder:
    """A strong endpoint that only encodes: seed ``i`` gets :func:`encoding_of` ``(i)``.

    Records how many calls were in flight at once and how many tasks were alive.
    """

    name = "strong"
    model = "m-strong"
    structured_output = False

    def __init__(
        self,
        *,
        vocab: int = 40,
        delay: Any = None,
        gate: asyncio.Event | None = None,
        unparsable: frozenset[int] = frozenset(),
        down: frozenset[int] = frozenset(),
        count_tasks: bool = True,
    ) -> None:
        self.vocab = vocab
        self.delay = delay  # seed index -> seconds, or None for instant replies
        self.gate = gate  # when set, seed 0 waits for it
        self.unparsable = unparsable
        self.down = down  # seeds whose call fails with a server error
        self.count_tasks = count_tasks
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.max_tasks = 0

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        priority: int = 0,
        sample_index: int = 0,
        stage: str | None = None,
        **params: Any,
    ) -> Reply:
        content = messages[-1]["content"]
        i = int(content.rsplit("Instruction: Seed ", 1)[1].split(":", 1)[0])
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.count_tasks:
            self.max_tasks = max(self.max_tasks, len(asyncio.all_tasks()))
        try:
            if self.gate is not None and i == 0:
                await self.gate.wait()
            if self.delay is not None:
                await asyncio.sleep(self.delay(i))
        finally:
            self.in_flight -= 1
        if i in self.down:
            raise ServerError("upstream down", endpoint="strong", status=503)
        if i in self.unparsable:
            return Reply("I would rather not say.")
        md = encoding_of(i, self.vocab)
        return Reply(f"Use case: {md.use_case}\nSkills: {', '.join(md.skills)}")


def write_config(
    tmp_path: Path, seeds: int, *, bad: tuple[int, ...] = (), **method: object
) -> Config:
    lines = [
        "{not json" if i in bad else json.dumps({"id": f"s{i}", "instruction": f"Seed {i}: do it."})
        for i in range(seeds)
    ]
    (tmp_path / "seeds.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = {"metadata_count": seeds, "instructions_per_metadata": 1, **method}
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    path = tmp_path / "codeclm.toml"
    path.write_text(
        f"""
[run]
method = "codeclm"
input = "seeds.jsonl"
output = "out"
seed = 3

[endpoints.strong]
base_url = "http://127.0.0.1:9/v1"
model = "m-strong"

[roles]
strong = "strong"
target = "strong"
judge = "strong"

[method.codeclm]
{table}""",
        encoding="utf-8",
    )
    return load_config(path)


def make(tmp_path: Path, seeds: int, encoder: Encoder, **method: object) -> CodecLMMethod:
    bad = method.pop("bad", ())
    assert isinstance(bad, tuple)
    config = write_config(tmp_path, seeds, bad=bad, **method)
    cfg = method_config(config)
    assert isinstance(cfg, CodecLMConfig)
    ctx = MethodContext(
        config=config,
        callers={"strong": encoder, "target": encoder, "judge": encoder},
        input_path=config.resolve(config.run.input or ""),
        stage=Observers(),
    )
    return CodecLMMethod(cfg, ctx)


def metadata_of(items: list[Item]) -> list[Metadata]:
    return [
        Metadata(i.data["use_case"], tuple(i.data["skills"]), i.data["seed_id"])
        for i in items
        if "failed" not in i.data
    ]


def all_items(method: CodecLMMethod) -> list[Item]:
    items = list(method.work())
    assert all(isinstance(i, Item) for i in items)
    return [i for i in items if isinstance(i, Item)]


# ------------------------------------------------------------------ bounded window
async def test_prepare_keeps_at_most_encode_concurrency_calls_and_tasks(tmp_path: Path) -> None:
    # Later seeds finish first, so results arrive far out of order.
    encoder = Encoder(delay=lambda i: 0.004 * (1 + (-i) % 5))
    method = make(tmp_path, 300, encoder, encode_concurrency=6, metadata_count=350)
    before = len(asyncio.all_tasks())
    await asyncio.wait_for(method.prepare(), 60)
    assert encoder.calls == 300
    assert encoder.max_in_flight == 6
    # Alive at once: the tasks there before, wait_for's task running prepare(), and at
    # most encode_concurrency encode tasks (never one task per seed).
    assert encoder.max_tasks <= before + 1 + 6
    # Registration follows seed order, not completion order.
    expected = augment_metadata([encoding_of(i, 40) for i in range(300)], 350, max_skills=3, seed=3)
    assert metadata_of(all_items(method)) == expected


async def test_prepare_reads_no_further_than_the_span_while_the_oldest_seed_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codeclm_seeds, "_SPAN_MIN", 40)
    gate = asyncio.Event()
    encoder = Encoder(gate=gate)
    method = make(tmp_path, 200, encoder, encode_concurrency=2)
    task = asyncio.create_task(method.prepare())
    for _ in range(5000):  # let it run until it blocks behind seed 0 (it then stays put)
        await asyncio.sleep(0)
    assert method.seeds_read == 41  # seeds 0..40; seed 40 waits for seed 0 before encoding
    assert encoder.calls == 40
    assert encoder.max_in_flight == 2
    gate.set()
    await asyncio.wait_for(task, 30)
    assert encoder.calls == 200 and method.seeds_read == 200


async def test_completion_order_does_not_change_the_items(tmp_path: Path) -> None:
    runs = []
    for name, delay in (("fast", None), ("reversed", lambda i: 0.002 * ((97 - i) % 7))):
        (tmp_path / name).mkdir()
        method = make(tmp_path / name, 97, Encoder(delay=delay), encode_concurrency=9)
        await asyncio.wait_for(method.prepare(), 60)
        runs.append([(i.index, i.key, i.data) for i in all_items(method)])
    assert runs[0] == runs[1]
    assert len(runs[0]) == 97


# ------------------------------------------------------------------ the pool file
async def test_pool_round_trip_matches_the_in_memory_reference(tmp_path: Path) -> None:
    encodings = [encoding_of(i, 25) for i in range(60)]
    failed = [{"id": f"f{i}", "seed_id": f"x{i}", "source": f"seeds.jsonl:{i}"} for i in range(3)]
    path = tmp_path / POOL_NAME
    disk = codeclm_store.SqlitePoolWriter(path)
    memory = codeclm_pool.MemoryPool()
    for pool in (disk, memory):
        for n, md in enumerate(encodings):
            codeclm_pool.register(pool, md, 45)
            if n % 20 == 0:
                pool.add_failed(failed[n // 20])
    disk.finish()
    counts = ("own_count", "failed_count", "use_case_count", "skill_count")
    assert [getattr(disk, c) for c in counts] == [getattr(memory, c) for c in counts]
    # every seed's own metadata is kept (the sample of them is drawn at generation)
    assert disk.own_count == 60 and disk.use_case_count == 11 and disk.failed_count == 3
    assert disk.seed_count == memory.seed_count == 60
    reader = codeclm_store.SqlitePoolReader(path)
    view = memory.reader()
    try:
        assert reader.own(0, 100) == view.own(0, 100) == encodings
        assert [reader.seed_use_case(i) for i in range(60)] == [
            view.seed_use_case(i) for i in range(60)
        ]
        assert reader.own(40, 3) == encodings[40:43]
        rng = random.Random(0)
        for _ in range(50):  # random access by id
            u, s = rng.randrange(disk.use_case_count), rng.randrange(disk.skill_count)
            assert reader.use_case(u) == view.use_case(u)
            assert reader.skill(s) == view.skill(s)
        assert reader.use_case(0) == ("Use case 0", "s0")
        assert reader.failed(0, 10) == failed
        assert reader.failed(2, 10) == failed[2:]
        sig = codeclm_pool.sig(0, [0])
        assert reader.taken(sig) == view.taken(sig)
        fresh = codeclm_pool.sig(
            disk.use_case_count - 1, range(disk.skill_count - 3, disk.skill_count)
        )
        assert not reader.taken(fresh)
        reader.take(fresh)
        assert reader.taken(fresh)
    finally:
        reader.close()
    # A second reader does not see what the first one took.
    again = codeclm_store.SqlitePoolReader(path)
    try:
        assert not again.taken(fresh)
    finally:
        again.close()


async def test_pool_is_rebuilt_by_each_prepare_and_kept_by_resume(tmp_path: Path) -> None:
    method = make(tmp_path, 30, Encoder(), metadata_count=50)
    await method.prepare()
    first = all_items(method)
    path = tmp_path / "out" / POOL_NAME
    assert path.is_file()
    path.write_bytes(b"garbage from a crash mid-build")
    again = make(tmp_path, 30, Encoder(), metadata_count=50)
    await again.prepare()
    assert all_items(again) == first
    # The shard sink leaves the pool alone when it starts, and when it resumes, in OUT.
    for resumed in (False, True):
        sink, state = ShardSink.open(
            tmp_path / "out",
            shard_records=10,
            config_hash="h",
            input_fingerprint="f",
            method="codeclm",
            engine_version="0",
            simulated=False,
        )
        sink.close(complete=False)
        assert state.resumed is resumed
        assert POOL_NAME not in state.discarded and path.is_file()


async def test_unwritable_output_is_a_shard_error(tmp_path: Path) -> None:
    method = make(tmp_path, 5, Encoder())
    (tmp_path / "out").write_text("a file where the output directory should be")
    with pytest.raises(ShardError) as info:
        await method.prepare()
    assert "metadata pool" in str(info.value)


async def test_endpoint_error_while_encoding_stops_prepare_and_its_tasks(tmp_path: Path) -> None:
    encoder = Encoder(delay=lambda i: 0.001, down=frozenset({37}))
    method = make(tmp_path, 200, encoder, encode_concurrency=4)
    before = len(asyncio.all_tasks())
    with pytest.raises(ExceptionGroup) as info:
        await asyncio.wait_for(method.prepare(), 60)
    assert info.group_contains(ServerError)
    assert len(asyncio.all_tasks()) == before  # no encode task left behind
    assert encoder.calls < 200  # it stopped reading seeds
    with pytest.raises(RuntimeError, match="prepare"):
        next(iter(method.work()))  # no half-built pool is used


async def test_work_before_prepare_is_an_error(tmp_path: Path) -> None:
    method = make(tmp_path, 5, Encoder())
    with pytest.raises(RuntimeError, match="prepare"):
        next(iter(method.work()))


# ------------------------------------------------------------------ lazy items
async def test_work_is_lazy_repeatable_and_matches_the_reference(tmp_path: Path) -> None:
    method = make(
        tmp_path, 40, Encoder(unparsable=frozenset({5, 17})), metadata_count=90, bad=(8, 30)
    )
    await method.prepare()
    assert method.total == 90 + 4
    one, two = method.work(), method.work()
    interleaved = [(next(one), next(two)) for _ in range(60)]
    assert all(a == b for a, b in interleaved)
    streamed = [a for a, _ in interleaved] + list(one)
    assert streamed[60:] == list(two)
    items = [i for i in streamed if isinstance(i, Item)]
    assert items == streamed == all_items(method)
    assert [i.index for i in items] == list(range(94))
    assert [i.key for i in items[:90]] == [f"meta-{i}" for i in range(90)]
    # Failed seeds come last, in seed order: bad lines and unparsable replies alike.
    failed = [i.data["failed"] for i in items[90:]]
    assert [(r["seed_id"], r["stage"]) for r in failed] == [
        ("s5", "encode"),
        ("line-9", "input"),
        ("s17", "encode"),
        ("line-31", "input"),
    ]
    encodings = [encoding_of(i, 40) for i in range(40) if i not in (5, 8, 17, 30)]
    assert metadata_of(items) == augment_metadata(encodings, 90, max_skills=3, seed=3)
    assert list(method.metadata()) == metadata_of(items)


def test_augmented_item_is_a_function_of_the_run_seed_and_its_index() -> None:
    # A vocabulary large enough that no draw collides: item i is then exactly its first draw.
    encodings = [encoding_of(i, 97) for i in range(30)]
    use_cases = list(dict.fromkeys(md.use_case for md in encodings))
    skills = list(dict.fromkeys(s for md in encodings for s in md.skills))
    first_seed = {uc: next(md.seed_id for md in encodings if md.use_case == uc) for uc in use_cases}
    out = augment_metadata(encodings, 80, max_skills=3, seed=9)
    assert out[:30] == encodings
    first_draws = 0
    for i in range(30, 80):
        rng = random.Random(f"codeclm:augment:9:{i}")
        uc = encodings[rng.randrange(len(encodings))].use_case  # a seed's use case
        picked = tuple(skills[j] for j in rng.sample(range(len(skills)), rng.randint(1, 3)))
        first_draws += out[i] == Metadata(uc, picked, first_seed[uc])
    assert first_draws >= 45  # the others collided with a taken combination and redrew
    assert set(use_cases) >= {md.use_case for md in out}
    # Changing the count does not move the items before it.
    assert augment_metadata(encodings, 50, max_skills=3, seed=9) == out[:50]


def test_exhausted_combinations_are_repeated_without_spinning() -> None:
    tiny = [Metadata("Only", ("one", "two"), "s")]  # 1 use case x 3 skill sets
    started = time.perf_counter()
    out = augment_metadata(tiny, 20_000, max_skills=3, seed=0)
    assert time.perf_counter() - started < 10
    assert {frozenset(md.skills) for md in out} == {
        frozenset({"one"}),
        frozenset({"two"}),
        frozenset({"one", "two"}),
    }
    assert out[:3] == augment_metadata(tiny, 3, max_skills=3, seed=0)
    assert len(set(out[:3])) == 3  # all three combinations before any repeat


# ------------------------------------------------------------------ memory
async def _peak_bytes(tmp_path: Path, seeds: int) -> int:
    """Peak traced Python heap over prepare() and a full work() pass for ``seeds`` seeds."""
    # Every skill distinct, and half as many augmented items again as seeds' own.
    method = make(
        tmp_path,
        seeds,
        Encoder(vocab=10**9, count_tasks=False),
        encode_concurrency=16,
        metadata_count=seeds + seeds // 2,
    )
    gc.collect()
    tracemalloc.start()
    try:
        await method.prepare()
        n = sum(1 for _ in method.work())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == seeds + seeds // 2 == method.total
    return peak


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_python_memory_is_flat_in_the_number_of_seeds(tmp_path: Path) -> None:
    for name in ("warm", "small", "large"):
        (tmp_path / name).mkdir()
    await _peak_bytes(tmp_path / "warm", 200)  # first-use allocations (caches) go here
    small = await _peak_bytes(tmp_path / "small", 1_000)
    large = await _peak_bytes(tmp_path / "large", 10_000)
    # 10x the seeds: anything kept per seed or per item (a Metadata, a dict entry: >= 150
    # bytes) would add >= 9k x 1.5 x 150 bytes = 2 MB; the peak may grow by noise only.
    assert large - small < 768 * 1024, (small, large)


def test_pool_file_is_sqlite_with_the_seed_order(tmp_path: Path) -> None:
    path = tmp_path / POOL_NAME
    writer = codeclm_store.SqlitePoolWriter(path)
    for i in (3, 1, 2):
        codeclm_pool.register(writer, encoding_of(i, 40), 10)
    writer.finish()
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT metadata FROM own ORDER BY pos").fetchall()
    finally:
        db.close()
    order = [json.loads(blob)["seed_id"] for (blob,) in rows]
    assert order == ["s3", "s1", "s2"]


def test_augmented_use_cases_keep_the_seeds_distribution() -> None:
    # 90% of the seeds are code debugging: uniform over distinct use cases would give 1/3
    seeds = [Metadata("Code debugging", (f"Skill {i}",), f"s{i}") for i in range(90)]
    seeds += [Metadata(f"Rare {i % 2}", (f"Other {i}",), f"r{i}") for i in range(10)]
    out = augment_metadata(seeds, 2100, max_skills=3, seed=0)[100:]
    share = sum(md.use_case == "Code debugging" for md in out) / len(out)
    # 0.9 before redraws of combinations already taken (one-skill ones run out first)
    assert 0.8 < share < 0.92


def test_every_seed_can_contribute_when_seeds_outnumber_items() -> None:
    seeds = [encoding_of(i, 10_000) for i in range(1000)]
    out = augment_metadata(seeds, 200, max_skills=3, seed=4)
    assert len(out) == 200 and len(set(out)) == 200
    positions = [seeds.index(md) for md in out]
    assert positions == sorted(positions)  # a sample in seed order, not the first 200
    assert max(positions) > 900 and min(positions) < 100
    assert sum(p >= 200 for p in positions) > 120  # not the first seeds only
    assert augment_metadata(seeds, 200, max_skills=3, seed=4) == out  # seeded

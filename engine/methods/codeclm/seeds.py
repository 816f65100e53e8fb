"""CodecLM's encode phase: every seed to metadata, registered in seed order into the pool.

Memory stays flat in the number of seeds: at most ``encode_concurrency`` encode tasks
exist at a time, and a seed is read only when one has room and when it is fewer than
``max(16 x encode_concurrency, 4096)`` seeds ahead of the oldest unregistered one, so the
results waiting for their turn stay bounded too. Results are registered in seed order,
whatever order they finish in, so the pool (and every item made from it) is the same on
every run.

A seed whose line cannot be read, or whose reply does not parse into a use case and
skills, becomes a failed row kept in the pool (its work item writes it). An endpoint
error stops the phase instead (the run stops, resumably): a pool built without that
seed would differ from the one a rerun builds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ...errors import ParseError
from ...records import BadInput, Item
from ...stages import ChatCaller, Generate
from .parsing import Encoding
from .pool import FailedSeed, Metadata, PoolWriter, register
from .report import Tally
from .rows import failed_seed

__all__ = ("encode_seed", "encode_seeds")

_SPAN_MIN = 4096  # seeds read ahead of the oldest unfinished encoding (at least)


async def encode_seed(
    step: Generate[Encoding], strong: ChatCaller, item: Item, *, max_skills: int, method: str
) -> Metadata | FailedSeed:
    """One seed's metadata, or its failed row when the reply does not parse.

    Raises:
        EndpointError: the call failed.
    """
    try:
        enc = await step(strong, {"instruction": item.data["instruction"]})
    except ParseError as exc:
        return failed_seed(method, item.key, source=item.source, stage="encode", error=exc)
    skills = tuple(s.strip() for s in enc.skills if s.strip())[:max_skills]
    if not enc.use_case.strip() or not skills:
        error = ParseError("empty use case or skills", stage="encode")
        return failed_seed(method, item.key, source=item.source, stage="encode", error=error)
    return Metadata(use_case=enc.use_case.strip(), skills=skills, seed_id=item.key)


async def encode_seeds(
    pool: PoolWriter,
    records: Iterable[Item | BadInput],
    *,
    step: Generate[Encoding],
    strong: ChatCaller,
    concurrency: int,
    count: int,
    max_skills: int,
    method: str,
    tally: Tally,
) -> None:
    """Encode ``records`` into ``pool`` with a bounded window of tasks (module docstring).

    Raises:
        ExceptionGroup: an encode call failed (its EndpointError inside); no task is
            left behind and no further seed is read.
        ShardError: the pool cannot be written.
    """
    span = max(16 * concurrency, _SPAN_MIN)
    room = asyncio.Semaphore(concurrency)
    advanced = asyncio.Event()
    ready: dict[int, Metadata | FailedSeed] = {}
    head = 0  # the next seed (by position) to register

    def settle(n: int, value: Metadata | FailedSeed) -> None:
        nonlocal head
        ready[n] = value
        while head in ready:
            done = ready.pop(head)
            if isinstance(done, Metadata):
                register(pool, done, count)
            else:
                pool.add_failed(done)
            head += 1
        advanced.set()

    async def encode(n: int, item: Item) -> None:
        try:
            settle(n, await encode_seed(step, strong, item, max_skills=max_skills, method=method))
        finally:
            room.release()

    async with asyncio.TaskGroup() as tg:
        for n, rec in enumerate(records):
            tally.seeds_read += 1
            while n - head >= span:
                advanced.clear()
                await advanced.wait()
            if isinstance(rec, BadInput):
                settle(
                    n,
                    failed_seed(
                        method, rec.key, source=rec.source, stage="input", error=rec.reason
                    ),
                )
                continue
            await room.acquire()
            tg.create_task(encode(n, rec))

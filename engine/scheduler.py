"""The run loop: a bounded window of items in flight, one task per item, graceful stop.

Items are read from the method's work stream only when the window has room, so memory
is O(window) whatever the input size. Besides the count of items in flight, the *span*
of indices in flight is bounded too (item k starts only while k is less than the oldest
unfinished index + ``span``): the sink's done set stores the indices finished above the
oldest unfinished one, so one slow item among many fast ones must not let that set grow
without bound. Each item runs as one task under a TaskGroup and
hands its rows, whole, to the sink (a synchronous call on the event loop thread: one
writer, no locks). Items already done in an earlier run are skipped.

Stopping: when ``stop`` is set (first Ctrl+C), no new item starts and the in-flight ones
finish (drain). When an item meets a :class:`~engine.errors.RunHalted` (a spending limit
reached, an endpoint that failed as a whole, a stop while a call waits for a paused
endpoint), the run stops the same way; that item is not written, so the next run redoes
it (its paid calls replay from the cache). Cancelling the task running :func:`run_items`
(second Ctrl+C) abandons the in-flight items at once; rows already handed to the sink stay
and are committed by the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Container, Iterator

import msgspec

from .errors import Draining, EndpointError, EngineError, InputError, ParseError, RunHalted
from .methods.base import Method, failed_row_for
from .metrics.core import Metrics
from .records import BadInput, Item, RowOut

__all__ = ("ITEM_ERRORS", "first_engine_error", "halt_reason", "partition_items", "run_items")

ITEM_ERRORS = (EndpointError, ParseError, InputError)
"""Errors that fail one item (written as a failed row); any other error stops the run."""


def first_engine_error(exc: BaseException) -> EngineError | None:
    """The first EngineError in ``exc`` or, depth first, in its exception groups."""
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_engine_error(inner)
            if found is not None:
                return found
    return None


log = logging.getLogger("engine")


def halt_reason(exc: RunHalted) -> str:
    """The run's ``stop_reason`` for a halt: ``"<label>: <what happened>"``.

    The label (``budget``, ``endpoint``, ``watchdog``, ``stopped``) says which kind of halt
    it was; the CLI maps it to an exit code.
    """
    if isinstance(exc, Draining):
        return "stopped"
    return f"{exc.label}: {exc}"


WriteItem = Callable[[int, list[RowOut]], None]


def partition_items(
    items: Iterator[Item | BadInput], part: int, parts: int
) -> Iterator[Item | BadInput]:
    """The items of partition ``part`` of ``parts`` (index % parts == part).

    They are renumbered densely (``index // parts``), so that a partition's done set
    stays a compact watermark instead of every ``parts``-th index.
    """
    if not 0 <= part < parts:
        raise ValueError(f"partition {part} of {parts} does not exist")
    for item in items:
        if item.index % parts == part:
            yield msgspec.structs.replace(item, index=item.index // parts)


EmitRows = Callable[[list[RowOut]], Awaitable[None]]


async def run_items(
    method: Method,
    *,
    window: int,
    done: Container[int],
    write: WriteItem,
    stop: asyncio.Event,
    metrics: Metrics,
    span: int | None = None,
    emit: EmitRows | None = None,
    partition: tuple[int, int] | None = None,
    on_halt: Callable[[RunHalted], None] | None = None,
) -> str | None:
    """Process every item of ``method.work()`` not in ``done``.

    Args:
        method: the method (already prepared).
        window: most items in flight at once.
        done: indices finished in an earlier run (skipped).
        write: hands one item's rows to the sink.
        stop: when set, stop taking new items and drain.
        metrics: the run's ``engine.metrics.Metrics`` (item and row counters).
        span: most indices between the oldest unfinished item and a new one
            (default ``max(16 * window, 4096)``).
        emit: awaited with each item's rows before they are written (the embedding API's
            stream): it returns once the consumer has taken them, so no row is committed
            that the consumer did not see. The item keeps its place in the window
            meanwhile, so a slow consumer slows the run instead of buffering rows.
        partition: ``(k, n)``: process only the items whose index % n == k, renumbered
            ``index // n`` (see :func:`partition_items`); the others are not this run's
            and are not counted as skipped.
        on_halt: called once with the first :class:`~engine.errors.RunHalted` an item
            met (the engine logs it and stops the gates' waiting).

    Returns:
        None when every item was processed, else why the run stopped early.
    """
    room = asyncio.Semaphore(window)
    span = span or max(16 * window, 4096)
    stop_reason: str | None = None
    halted: list[RunHalted] = []  # why the run was halted (the first one wins)
    started: deque[int] = deque()  # indices in flight, in start order (= index order)
    finished: set[int] = set()  # finished indices still behind an unfinished one
    advanced = asyncio.Event()

    def retire(index: int) -> None:
        finished.add(index)
        while started and started[0] in finished:
            finished.discard(started.popleft())
            advanced.set()

    def finish(index: int, rows: list[RowOut]) -> None:
        retire(index)
        write(index, rows)
        metrics.items_done += 1
        for kind, row in rows:
            metrics.add_row(kind, row)
        metrics.mark_progress()

    def halt(index: int, exc: RunHalted) -> None:
        # Not the item's fault: leave it undone (redone on resume) and stop taking items.
        if not halted:
            halted.append(exc)
            if on_halt is not None:
                on_halt(exc)
        stop.set()
        retire(index)

    async def one(item: Item) -> None:
        try:
            try:
                rows = await method.process(item)
            except ITEM_ERRORS as exc:
                # The method did not turn the error into rows itself: the item fails whole.
                # Anything else (disk full, a broken cache, a budget) is not the item's
                # fault and stops the run instead, resumably.
                rows = [
                    failed_row_for(method, item.key, source=item.source, stage="item", error=exc)
                ]
            except RunHalted as exc:
                halt(item.index, exc)
                return
            except BaseExceptionGroup as group:
                found = first_engine_error(group)
                if not isinstance(found, RunHalted):
                    raise
                halt(item.index, found)
                return
            if emit is not None:
                await emit(rows)
            finish(item.index, rows)
        finally:
            room.release()

    work = method.work()
    if partition is not None:
        work = partition_items(work, *partition)
    async with asyncio.TaskGroup() as tg:
        for item in work:
            if stop.is_set():
                stop_reason = "stopped"
                break
            if item.index in done:
                metrics.items_skipped += 1
                continue
            await room.acquire()
            if stop.is_set():
                room.release()
                stop_reason = "stopped"
                break
            while started and item.index - started[0] >= span:
                advanced.clear()
                await advanced.wait()
            if isinstance(item, BadInput):
                room.release()
                metrics.items_started += 1
                started.append(item.index)
                rows = [
                    failed_row_for(
                        method, item.key, source=item.source, stage="input", error=item.reason
                    )
                ]
                if emit is not None:
                    await emit(rows)
                finish(item.index, rows)
                continue
            metrics.items_started += 1
            started.append(item.index)
            tg.create_task(one(item), name=f"item-{item.index}")
    if halted:
        return halt_reason(halted[0])
    return stop_reason

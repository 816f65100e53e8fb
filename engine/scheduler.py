"""The run loop: a bounded window of items in flight, one task per item, graceful stop.

Items are read from the method's work stream only when the window has room, so memory
is O(window) whatever the input size. Each item runs as one task under a TaskGroup and
hands its rows, whole, to the sink (a synchronous call on the event loop thread: one
writer, no locks). Items already done in an earlier run are skipped.

Stopping: when ``stop`` is set (first Ctrl+C, a budget), no new item starts and the
in-flight ones finish (drain). Cancelling the task running :func:`run_items` (second
Ctrl+C) abandons the in-flight items at once; rows already handed to the sink stay and
are committed by the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Container
from typing import Any

from .errors import EngineError
from .methods.base import Method, failed_row
from .records import BadInput, Item, RowOut

__all__ = ("run_items",)

log = logging.getLogger("engine")

WriteItem = Callable[[int, list[RowOut]], None]


async def run_items(
    method: Method,
    *,
    window: int,
    done: Container[int],
    write: WriteItem,
    stop: asyncio.Event,
    metrics: Any,
) -> str | None:
    """Process every item of ``method.work()`` not in ``done``.

    Args:
        method: the method (already prepared).
        window: most items in flight at once.
        done: indices finished in an earlier run (skipped).
        write: hands one item's rows to the sink.
        stop: when set, stop taking new items and drain.
        metrics: the run's ``engine.metrics.Metrics`` (item and row counters).

    Returns:
        None when every item was processed, else why the run stopped early.
    """
    room = asyncio.Semaphore(window)
    stop_reason: str | None = None

    def finish(index: int, rows: list[RowOut]) -> None:
        write(index, rows)
        metrics.items_done += 1
        for kind, _ in rows:
            metrics.rows[kind] = metrics.rows.get(kind, 0) + 1
        metrics.last_progress_at = metrics.clock()

    async def one(item: Item) -> None:
        try:
            try:
                rows = await method.process(item)
            except EngineError as exc:
                # The method did not turn the error into rows itself: the item fails whole.
                rows = [failed_row(method.name, item.key, source=item.source, stage="item", error=exc)]
            finish(item.index, rows)
        finally:
            room.release()

    async with asyncio.TaskGroup() as tg:
        for item in method.work():
            if stop.is_set():
                stop_reason = "stopped"
                break
            if item.index in done:
                metrics.items_skipped += 1
                continue
            await room.acquire()
            if isinstance(item, BadInput):
                room.release()
                metrics.items_started += 1
                finish(
                    item.index,
                    [failed_row(method.name, item.key, source=item.source, stage="input", error=item.reason)],
                )
                continue
            metrics.items_started += 1
            tg.create_task(one(item), name=f"item-{item.index}")
    if stop_reason is None and stop.is_set():
        # Stopped after the last item was taken: everything still finished.
        stop_reason = None
    return stop_reason

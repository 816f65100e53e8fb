"""Process plumbing shared by the commands: the event loop, GC and fd tuning, stop signals, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import TypeVar

__all__ = (
    "STOP_SIGNALS",
    "stop_on_signals",
    "EXIT_NOTHING_KEPT",
    "advice",
    "nothing_kept",
    "raise_fd_limit",
    "run_async",
    "stop_exit_code",
)

T = TypeVar("T")


log = logging.getLogger("engine")

# Signals that stop a run gracefully: Ctrl+C, a service manager's stop, a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_EXIT_BY_HALT = {"budget": 3, "watchdog": 3, "endpoint": 4}

EXIT_NOTHING_KEPT = 5


@contextlib.contextmanager
def stop_on_signals(first: str, again: str | None = None) -> Iterator[asyncio.Event]:
    """While inside, the first SIGINT/SIGTERM/SIGHUP sets the yielded event (a graceful
    stop, ``first`` logged) and the next one cancels the current task (``again`` logged).

    Where the loop cannot take signal handlers (not the main thread, Windows) nothing is
    installed and the default behaviour stays.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal() -> None:
        if not stop.is_set():
            log.warning("%s", first)
            stop.set()
        elif task is not None:
            if again:
                log.warning("%s", again)
            task.cancel()

    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    try:
        yield stop
    finally:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def stop_exit_code(stop_reason: str | None) -> int:
    """The exit code of a run that stopped early, from its stop reason's label."""
    reason = stop_reason or ""
    if reason in ("stopped", "cancelled"):
        return 130
    return _EXIT_BY_HALT.get(reason.split(":", 1)[0], 3)


def advice(stop_reason: str | None) -> str:
    label = (stop_reason or "").split(":", 1)[0]
    if label == "budget":
        return "raise the limit (e.g. --set budget.max_cost=...) and run again to resume"
    if label == "endpoint":
        return (
            "fix the endpoint (its key, limits or quota) and run the same command again to resume"
        )
    return "run the same command again to resume"


def raise_fd_limit(want: int = 65536) -> None:
    """Raise the soft open-file limit (thousands of connections need thousands of fds)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass


def tune_gc() -> None:
    """Make the cyclic GC cheaper for a long-running I/O-bound process.

    Objects alive after start-up (modules, config, sessions) are frozen out of collection,
    and generation 0 is collected every 50,000 allocations instead of 700: almost all
    per-request garbage is freed by reference counting, and scanning thousands of live
    connection objects on every young collection cost ~15% of the client's CPU per request
    at 1,024 in flight (benchmarks/README.md).
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def run_async(factory: Callable[[], Coroutine[object, object, T]]) -> T:
    """Run a coroutine on uvloop when installed (faster), else asyncio's loop."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(factory())


def nothing_kept(manifest: object) -> int:
    """0, or :data:`EXIT_NOTHING_KEPT` (with a line saying why) when a finished run kept no row."""
    totals = dict(getattr(manifest, "totals", None) or {})
    if totals.get("kept", 0) or not totals.get("items", 0):
        return 0
    failed, rejected = totals.get("failed", 0), totals.get("rejected", 0)
    why = (
        f"every item failed ({failed} failed rows; see failed-*.jsonl for each error)"
        if not rejected
        else f"{rejected} rows rejected by the filters, {failed} failed"
    )
    print(f"synth-engine: warning: the run finished but kept no row: {why}", file=sys.stderr)
    return EXIT_NOTHING_KEPT

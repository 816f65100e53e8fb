"""``synth-engine run``: one job in this process (or across a Ray cluster), stopped gracefully by signals."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from ..config import Config, load_config
from ..errors import ConfigError
from .runtime import advice, nothing_kept, run_async, stop_exit_code, stop_on_signals

__all__ = ("cmd_run",)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    if args.ray is not None:
        if args.retry_failed:
            raise ConfigError(
                "--retry-failed is not supported with --ray",
                hint="run it without --ray on the merged output, or rerun with --force-new",
            )
        if args.view is not None:
            print(
                "synth-engine: error: --view is not available with --ray; "
                "run synth-engine view OUT on the driver instead",
                file=sys.stderr,
            )
            return 2
        return _cmd_run_ray(args, config)

    async def main() -> int:
        with stop_on_signals(
            "stopping: finishing items in flight (press Ctrl+C again to exit now)",
            "exiting now; finished rows are kept and the run stays resumable",
        ) as stop:
            return await _run_local(args, config, stop)

    return run_async(main)


async def _run_local(args: argparse.Namespace, config: Config, stop: asyncio.Event) -> int:
    """The single-process run, until done or stopped (``stop``: a graceful stop asked)."""
    from ..api import Engine

    progress = None if args.quiet else sys.stderr
    async with (
        Engine(
            config,
            progress=progress,
            force_new=args.force_new,
            retry_failed=args.retry_failed,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
        ) as engine,
        _viewing(args.view, config.resolve(config.run.output)),
    ):
        if engine.metrics_url:
            print(f"metrics     {engine.metrics_url}", file=sys.stderr, flush=True)
        try:
            result = await engine.run(stop=stop)
        except asyncio.CancelledError:
            return 130
    if result.already_complete:
        failed = (result.manifest.totals.get("failed", 0) if result.manifest else 0) or 0
        print(
            f"{result.output}: already complete; nothing to do"
            + (
                f" ({failed} failed rows: --retry-failed redoes them, replaying every "
                "response already paid for)"
                if failed
                else " (use a new output to run again)"
            )
        )
        return 0
    if not args.quiet:
        print(result.summary)
        print(f"output      {result.output}")
    if result.complete:
        return nothing_kept(result.manifest)
    hint = advice(result.stop_reason)
    failed = (result.manifest.totals.get("failed", 0) if result.manifest else 0) or 0
    if failed and (result.stop_reason or "").startswith("endpoint"):
        hint += (
            f", with --retry-failed to also redo the {failed} items that failed before "
            "the stop (responses already paid for replay from the cache)"
        )
    print(f"stopped early ({result.stop_reason}); {hint}", file=sys.stderr)
    return stop_exit_code(result.stop_reason)


@contextlib.asynccontextmanager
async def _viewing(port: int | None, out: Path) -> AsyncIterator[None]:
    """``run --view``: the viewer of the run's output for as long as the run goes."""
    if port is None:
        yield
        return
    from ..errors import ConfigError
    from ..viewer import ViewerServer

    viewer = ViewerServer(out, port=port)
    try:
        await viewer.start()
    except OSError as exc:
        raise ConfigError(
            f"cannot serve the viewer on 127.0.0.1:{port} ({exc.strerror or exc})",
            path="--view",
            hint="pass --view 0 for a free port",
        ) from exc
    try:
        print(f"viewer      {viewer.url}", file=sys.stderr, flush=True)
        yield
    finally:
        await viewer.aclose()


def _cmd_run_ray(args: argparse.Namespace, config: Config) -> int:
    """``run --ray``: the job split across a Ray cluster's workers (engine.distributed)."""
    from ..distributed import run_on_ray

    async def main() -> int:
        with stop_on_signals(
            "stopping: workers finish their items in flight (again: exit now)"
        ) as stop:
            try:
                result = await run_on_ray(
                    config,
                    address=args.ray or None,
                    workers=args.workers,
                    force_new=args.force_new,
                    stop=stop,
                )
            except asyncio.CancelledError:
                return 130
        if result.already_complete:
            print(f"{result.output}: already complete; nothing to do")
            return 0
        if not args.quiet:
            print(result.summary)
            print(f"output      {result.output}")
        if result.complete:
            return nothing_kept(result.manifest)
        print(
            f"stopped early ({result.stop_reason}); {advice(result.stop_reason)}",
            file=sys.stderr,
        )
        return 130 if stop.is_set() else stop_exit_code(result.stop_reason)

    return run_async(main)

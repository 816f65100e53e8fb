"""The ``synth-engine`` command line: run | validate | bench | sim | inspect | view.

The only module that prints or exits. Exit codes: 0 done; 1 runtime error; 2 bad config
or input; 3 stopped early but resumable (budget, watchdog); 130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson

from . import __version__
from .config import Config, load_config
from .errors import EngineError

__all__ = ("main",)

T = TypeVar("T")
log = logging.getLogger("engine")


def _raise_fd_limit(want: int = 65536) -> None:
    """Raise the soft open-file limit (thousands of connections need thousands of fds)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass


def _tune_gc() -> None:
    """Make the cyclic GC cheaper for a long-running I/O-bound process.

    Objects alive after start-up (modules, config, sessions) are frozen out of collection,
    and generation 0 is collected every 50,000 allocations instead of 700: almost all
    per-request garbage is freed by reference counting, and scanning thousands of live
    connection objects on every young collection cost ~15% of the client's CPU per request
    at 1,024 in flight (benchmarks/README.md).
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on uvloop when installed (faster), else asyncio's loop."""
    _tune_gc()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(factory())


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, typed as the schema says (repeatable), e.g. --set run.seed=3",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synth-engine",
        description="Generate synthetic instruction data from OpenAI-compatible endpoints.",
    )
    parser.add_argument("--version", action="version", version=f"synth-engine {__version__}")
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a generation job (resumes an unfinished output)")
    run.add_argument("config", help="TOML config file")
    _add_set(run)
    run.add_argument(
        "--force-new", action="store_true", help="overwrite an output written by a different config"
    )
    run.add_argument("--quiet", action="store_true", help="no progress display and no summary")
    run.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster (ADDRESS, or RAY_ADDRESS, or a new local one); "
        "needs pip install 'synth-engine[ray]' (docs/scale-out.md)",
    )
    run.add_argument(
        "--workers", type=int, default=None, metavar="N", help="with --ray: partitions/workers"
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics during the run (0: a free "
        "port); needs pip install 'synth-engine[metrics]'",
    )
    run.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="interface for --metrics-port (default 127.0.0.1)",
    )
    run.add_argument(
        "--view",
        nargs="?",
        type=int,
        const=8765,
        default=None,
        metavar="PORT",
        help="serve the viewer at http://127.0.0.1:PORT/ while the run goes (default port "
        "8765; 0: a free one); see synth-engine view",
    )

    val = sub.add_parser("validate", help="check a config without calling any endpoint")
    val.add_argument("config")
    _add_set(val)

    sim = sub.add_parser("sim", help="serve the simulated OpenAI-compatible endpoint")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8000)
    sim.add_argument("--model", default="sim-model")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--latency-ms", type=float, default=50.0)
    sim.add_argument("--jitter-ms", type=float, default=0.0)
    sim.add_argument(
        "--tokens-per-s", type=float, default=0.0, help="output token rate (0: instant)"
    )
    sim.add_argument(
        "--rpm", type=float, default=None, help="enforce requests/min (429 + Retry-After)"
    )
    sim.add_argument("--tpm", type=float, default=None, help="enforce tokens/min")
    sim.add_argument(
        "--fault-rate", type=float, default=0.0, help="probability of a fault per request"
    )
    sim.add_argument(
        "--faults",
        default="",
        help="comma list: 500,502,503,429,timeout,reset,malformed,truncated,slow",
    )
    sim.add_argument("--api-key", default=None, help="require this bearer key")

    bench = sub.add_parser("bench", help="measure throughput of an OpenAI-compatible endpoint")
    bench.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    bench.add_argument("--model", required=True)
    bench.add_argument(
        "--api-key-env", default=None, help="environment variable holding the API key"
    )
    bench.add_argument("--requests", type=int, default=1000)
    bench.add_argument("--concurrency", type=int, default=64)
    bench.add_argument("--max-tokens", type=int, default=64)
    bench.add_argument("--prompt-tokens", type=int, default=32)
    bench.add_argument("--stream", action="store_true")
    bench.add_argument("--rpm", type=float, default=None)
    bench.add_argument("--tpm", type=float, default=None)
    bench.add_argument("--timeout-s", type=float, default=120.0)
    bench.add_argument(
        "--duration-s", type=float, default=None, help="stop sending after this many seconds"
    )
    bench.add_argument("--json", action="store_true", help="print the JSON report only")

    ins = sub.add_parser("inspect", help="summarise an output directory")
    ins.add_argument("output")

    view = sub.add_parser(
        "view", help="serve a local page showing a run live and its rows (read-only)"
    )
    view.add_argument("output", help="output directory (finished, or being written)")
    view.add_argument(
        "--port", type=int, default=8765, help="TCP port (default 8765; 0: a free one)"
    )
    view.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface (default 127.0.0.1; another one shows the output to the network)",
    )
    return parser


def _cmd_validate(args: argparse.Namespace) -> int:
    from .methods import method_config

    config = load_config(args.config, args.overrides)
    method_config(config)
    eps = ", ".join(
        f"{n} ({'simulated' if e.simulated else e.base_url}, {e.model})"
        for n, e in config.endpoints.items()
    )
    print(f"{args.config}: OK — method {config.run.method}; endpoints: {eps}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .api import Engine

    config = load_config(args.config, args.overrides)
    if args.ray is not None:
        if args.view is not None:
            print(
                "synth-engine: error: --view is not available with --ray; "
                "run synth-engine view OUT on the driver instead",
                file=sys.stderr,
            )
            return 2
        return _cmd_run_ray(args, config)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        presses = 0

        def on_signal() -> None:
            nonlocal presses
            presses += 1
            if presses == 1:
                log.warning("stopping: finishing items in flight (press Ctrl+C again to exit now)")
                stop.set()
            elif task is not None:
                log.warning("exiting now; finished rows are kept and the run stays resumable")
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal)
        progress = None if args.quiet else sys.stderr
        try:
            async with (
                Engine(
                    config,
                    progress=progress,
                    force_new=args.force_new,
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
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        if result.already_complete:
            print(
                f"{result.output}: already complete; nothing to do (use a new output to run again)"
            )
            return 0
        if not args.quiet:
            print(result.summary)
            print(f"output      {result.output}")
        if result.complete:
            return 0
        again = (
            "raise the limit (e.g. --set budget.max_cost=...) and run again to resume"
            if (result.stop_reason or "").startswith("budget")
            else "run the same command again to resume"
        )
        print(f"stopped early ({result.stop_reason}); {again}", file=sys.stderr)
        return 130 if result.stop_reason in ("stopped", "cancelled") else 3

    return _run_async(main)


@contextlib.asynccontextmanager
async def _viewing(port: int | None, out: Path) -> AsyncIterator[None]:
    """``run --view``: the viewer of the run's output for as long as the run goes."""
    if port is None:
        yield
        return
    from .errors import ConfigError
    from .viewer import ViewerServer

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
    from .distributed import run_on_ray

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()

        def on_signal() -> None:
            if not stop.is_set():
                log.warning("stopping: workers finish their items in flight (again: exit now)")
                stop.set()
            elif task is not None:
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal)
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
            return 0
        print(
            f"stopped early ({result.stop_reason}); run the same command again to resume",
            file=sys.stderr,
        )
        return 130 if stop.is_set() else 3

    return _run_async(main)


def _cmd_sim(args: argparse.Namespace) -> int:
    from .sim import SimSettings, serve_forever

    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    settings = SimSettings(
        seed=args.seed,
        model=args.model,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        tokens_per_s=args.tokens_per_s,
        rpm=args.rpm,
        tpm=args.tpm,
        fault_rate=args.fault_rate,
        faults=faults,
        api_key=args.api_key,
    )

    _raise_fd_limit()

    def ready(url: str) -> None:
        print(
            f"synth-engine SIMULATED endpoint listening on {url} (model {args.model})", flush=True
        )

    with contextlib.suppress(KeyboardInterrupt):
        _run_async(lambda: serve_forever(settings, args.host, args.port, ready=ready))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchSettings, render_bench, run_bench

    settings = BenchSettings(
        base_url=args.base_url,
        model=args.model,
        api_key_env=args.api_key_env,
        requests=args.requests,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        prompt_tokens=args.prompt_tokens,
        stream=args.stream,
        rpm=args.rpm,
        tpm=args.tpm,
        timeout_s=args.timeout_s,
        duration_s=args.duration_s,
    )
    _raise_fd_limit()
    report = _run_async(lambda: run_bench(settings))
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_bench(report))
    return 0 if report["failed"] == 0 else 1


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .io.manifest import load_manifest

    out = Path(args.output)
    manifest = load_manifest(out)
    if manifest is None:
        print(
            f"{out}: no manifest.json (not a synth-engine output, or nothing committed yet)",
            file=sys.stderr,
        )
        return 2
    state = (
        "complete" if manifest.complete else f"incomplete ({manifest.stop_reason or 'interrupted'})"
    )
    sim = " [SIMULATED ENDPOINT]" if manifest.simulated else ""
    print(f"{out}: {manifest.method}, {state}{sim}")
    print("rows: " + ", ".join(f"{k} {v}" for k, v in manifest.totals.items()))
    print(
        f"shards: {len(manifest.shards)}; config {manifest.config_hash}; engine {manifest.engine_version}"
    )
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    """``view OUT``: serve the viewer until Ctrl+C."""
    from .viewer import ViewerServer

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        print(f"synth-engine: error: {out}: not a directory", file=sys.stderr)
        return 2
    if not out.exists():
        print(f"{out}: does not exist yet; the page fills in once a run writes it", file=sys.stderr)

    async def serve() -> int:
        server = ViewerServer(out, host=args.host, port=args.port)
        try:
            await server.start()
        except OSError as exc:
            print(
                f"synth-engine: error: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
                "pass --port 0 for a free port",
                file=sys.stderr,
            )
            return 1
        try:
            print(f"viewer      {server.url}  (read-only; Ctrl+C to stop)", flush=True)
            await asyncio.Event().wait()
        finally:
            await server.aclose()
        return 0

    with contextlib.suppress(KeyboardInterrupt):
        return _run_async(serve)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``synth-engine`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="synth-engine: %(levelname)s: %(message)s", stream=sys.stderr
    )
    commands = {
        "run": _cmd_run,
        "validate": _cmd_validate,
        "sim": _cmd_sim,
        "bench": _cmd_bench,
        "inspect": _cmd_inspect,
        "view": _cmd_view,
    }
    try:
        return commands[args.command](args)
    except EngineError as exc:
        print(f"synth-engine: error: {exc}", file=sys.stderr)
        return exc.exit_code

"""The ``synth-engine`` command line: run | validate | bench | sim | inspect.

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
from collections.abc import Callable, Coroutine
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


def _numbers(kind: type[T], option: str) -> Callable[[str], list[T]]:
    def parse(text: str) -> list[T]:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]  # type: ignore[call-arg]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option}: expected a number or a comma-separated list, not {text!r}"
            ) from None

    return parse


def _search(text: str) -> tuple[float, float, float]:
    try:
        low, high, step = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--search: expected LOW:HIGH:STEP (requests/s), not {text!r}"
        ) from None
    return low, high, step


def _bench_options(b: argparse.ArgumentParser) -> None:
    """The ``bench`` options (docs/bench.md explains each)."""
    g = b.add_argument_group("endpoint")
    g.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--model", required=True)
    g.add_argument("--api-key-env", default=None, help="environment variable holding the API key")
    g.add_argument("--stream", action="store_true", help="stream replies (TTFT, TPOT, ITL)")
    g.add_argument("--rpm", type=float, default=None, help="cap requests/min at the gate")
    g.add_argument("--tpm", type=float, default=None, help="cap tokens/min at the gate")
    g.add_argument("--timeout-s", type=float, default=120.0, help="per-request deadline")
    g.add_argument("--max-retries", type=int, default=3, help="retries of retryable errors")
    g = b.add_argument_group("load")
    g.add_argument(
        "--load",
        choices=("closed", "constant", "poisson", "gamma", "trace"),
        default=None,
        help="closed loop (default; trace with --trace), or open-loop arrivals at --rate",
    )
    g.add_argument(
        "--rate",
        type=_numbers(float, "--rate"),
        default=None,
        metavar="R[,R...]",
        help="open-loop requests/s; a list sweeps them",
    )
    g.add_argument(
        "--concurrency",
        type=_numbers(int, "--concurrency"),
        default=None,
        metavar="C[,C...]",
        help="closed-loop workers (default 64), or an open loop's in-flight cap; a list sweeps",
    )
    g.add_argument("--burstiness", type=float, default=1.0, help="gamma shape (1: Poisson)")
    g.add_argument("--requests", type=int, default=None, help="requests to send (default 1000)")
    g.add_argument("--duration-s", type=float, default=None, help="stop sending after this long")
    g.add_argument("--warmup-s", type=float, default=0.0, help="leave out the first seconds")
    g.add_argument("--cooldown-s", type=float, default=0.0, help="leave out the last seconds")
    g.add_argument("--seed", type=int, default=0, help="seed of arrivals and prompts")
    g = b.add_argument_group("workload")
    g.add_argument(
        "--prompt-tokens",
        default="32",
        metavar="DIST",
        help="prompt length: N, uniform:A,B, normal:MEAN,SD or file:PATH",
    )
    g.add_argument(
        "--output-tokens", default=None, metavar="DIST", help="max_tokens per request, as a DIST"
    )
    g.add_argument("--max-tokens", type=int, default=None, help="a fixed --output-tokens")
    g.add_argument("--ignore-eos", action="store_true", help="send ignore_eos (vLLM, SGLang)")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--dataset", default=None, help="prompt file: JSONL or ShareGPT JSON")
    g.add_argument("--turns", type=int, default=1, help="turns per conversation (0: all)")
    g.add_argument("--turn-delay-s", type=float, default=0.0, help="pause between turns")
    g.add_argument("--prefix-tokens", type=int, default=0, help="shared prefix length")
    g.add_argument("--prefix-count", type=int, default=1, help="distinct shared prefixes")
    g.add_argument("--trace", default=None, help="trace to replay (Mooncake JSONL, Azure CSV)")
    g.add_argument("--trace-speed", type=float, default=1.0, help="replay this many times faster")
    g.add_argument("--trace-unit", choices=("auto", "s", "ms"), default="auto")
    g.add_argument("--block-tokens", type=int, default=512, help="tokens per trace hash block")
    g.add_argument("--tokenizer", default=None, help="tokenizer.json for exact token counts")
    g = b.add_argument_group("SLOs and reports")
    g.add_argument(
        "--slo",
        action="append",
        default=[],
        metavar="NAME=MS",
        help="ttft, tpot, itl or latency limit in ms (repeatable)",
    )
    g.add_argument("--slo-percentile", type=float, default=99.0)
    g.add_argument(
        "--search",
        type=_search,
        default=None,
        metavar="LOW:HIGH:STEP",
        help="find the highest rate meeting the SLOs",
    )
    g.add_argument(
        "--out", default=None, help="write requests.jsonl, summary.json/.csv, report.html"
    )
    g.add_argument("--json", action="store_true", help="print the JSON report only")


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

    bench = sub.add_parser(
        "bench",
        help="benchmark an OpenAI-compatible endpoint (load models, streaming metrics, "
        "sweeps, SLO search, reports; docs/bench.md)",
    )
    _bench_options(bench)

    ins = sub.add_parser("inspect", help="summarise an output directory")
    ins.add_argument("output")
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
            async with Engine(
                config,
                progress=progress,
                force_new=args.force_new,
                metrics_port=args.metrics_port,
                metrics_host=args.metrics_host,
            ) as engine:
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
    from .bench import BenchSettings, parse_slo, render_bench, run_bench

    rates = args.rate or []
    concurrencies = args.concurrency or []
    settings = BenchSettings(
        base_url=args.base_url,
        model=args.model,
        api_key_env=args.api_key_env,
        load=args.load or ("trace" if args.trace else "closed"),
        rate=rates[0] if len(rates) == 1 else None,
        rates=rates if len(rates) > 1 else [],
        concurrency=concurrencies[0] if len(concurrencies) == 1 else None,
        concurrencies=concurrencies if len(concurrencies) > 1 else [],
        burstiness=args.burstiness,
        requests=args.requests,
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        cooldown_s=args.cooldown_s,
        seed=args.seed,
        prompt_tokens=args.prompt_tokens,
        output_tokens=args.output_tokens,
        max_tokens=args.max_tokens,
        ignore_eos=args.ignore_eos,
        temperature=args.temperature,
        dataset=args.dataset,
        turns=args.turns,
        turn_delay_s=args.turn_delay_s,
        prefix_tokens=args.prefix_tokens,
        prefix_count=args.prefix_count,
        trace=args.trace,
        trace_speed=args.trace_speed,
        trace_unit=args.trace_unit,
        block_tokens=args.block_tokens,
        tokenizer=args.tokenizer,
        stream=args.stream,
        rpm=args.rpm,
        tpm=args.tpm,
        timeout_s=args.timeout_s,
        max_retries=args.max_retries,
        slos=dict(parse_slo(s) for s in args.slo),
        slo_percentile=args.slo_percentile,
        search=args.search,
        out=args.out,
    )
    _raise_fd_limit()
    report = _run_async(lambda: run_bench(settings))
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_bench(report))
        for path in report.get("files", []):
            print(f"wrote         {path}")
    if report["search"] is not None:
        return 0 if report["search"]["best_rate"] is not None else 1
    points = report["points"]
    failed = any(p["failed"] for p in points)
    missed = any(p.get("slo") and not p["slo"]["met"] for p in points)
    return 1 if failed or missed else 0


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
    }
    try:
        return commands[args.command](args)
    except EngineError as exc:
        print(f"synth-engine: error: {exc}", file=sys.stderr)
        return exc.exit_code

"""The ``synth-engine`` command line: run | validate | bench | sim | inspect | view | export.

The only module that prints or exits. Exit codes: 0 done; 1 runtime error; 2 bad config
or input, or the output is locked by another run; 3 stopped early but resumable (budget,
watchdog); 4 stopped because an endpoint failed as a whole (key refused, limits a request
cannot fit, a wait over max_wait_s), resumable; 5 finished, but no row was kept;
130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .config import Config, load_config
from .errors import ConfigError, EngineError
from .version import __version__

__all__ = ("main",)

T = TypeVar("T")
log = logging.getLogger("engine")

# Signals that stop a run gracefully: Ctrl+C, a service manager's stop, a closed terminal.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_EXIT_BY_HALT = {"budget": 3, "watchdog": 3, "endpoint": 4}
EXIT_NOTHING_KEPT = 5


def _stop_exit_code(stop_reason: str | None) -> int:
    """The exit code of a run that stopped early, from its stop reason's label."""
    reason = stop_reason or ""
    if reason in ("stopped", "cancelled"):
        return 130
    return _EXIT_BY_HALT.get(reason.split(":", 1)[0], 3)


def _advice(stop_reason: str | None) -> str:
    label = (stop_reason or "").split(":", 1)[0]
    if label == "budget":
        return "raise the limit (e.g. --set budget.max_cost=...) and run again to resume"
    if label == "endpoint":
        return (
            "fix the endpoint (its key, limits or quota) and run the same command again to resume"
        )
    return "run the same command again to resume"


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


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, "")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, "", argparse.SUPPRESS) or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


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


def _export_options(sub: Any) -> None:
    """The ``export`` subcommand (docs/export.md explains each option)."""
    exp = sub.add_parser(
        "export",
        help="write an output's kept rows for training: chat messages (JSONL), Parquet or a "
        "datasets directory, with a dataset card; optionally push to the Hugging Face Hub",
        description="Export a complete output's kept rows (or a derived dataset) as chat "
        "`messages` that TRL and InstructLab training read, with a dataset card (README.md) "
        "and export.json. docs/export.md lists the columns per method.",
        formatter_class=_DefaultsHelp,
    )
    exp.add_argument("output", help="the output directory (run.output)")
    exp.add_argument(
        "--format",
        choices=("messages", "parquet", "hf"),
        default="messages",
        help="messages: data/train.jsonl; parquet: data/train-*.parquet (pyarrow); hf: a "
        "datasets.save_to_disk directory (datasets)",
    )
    exp.add_argument(
        "--output",
        dest="export_dir",
        default=None,
        metavar="DIR",
        help="the export directory (default OUT/export-FORMAT); an earlier export there is "
        "replaced, anything else is refused",
    )
    exp.add_argument(
        "--from",
        dest="dataset",
        default="kept",
        metavar="NAME",
        help="kept, or a derived dataset of the output (training_mix, balanced, knowledge, "
        "skills, mixed)",
    )
    exp.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="export an output that is not complete (the rows committed so far)",
    )
    exp.add_argument("--rows-per-file", type=int, default=100_000, help="rows per Parquet file")
    exp.add_argument(
        "--push-to-hub",
        default=None,
        metavar="REPO",
        help="then upload the export to this Hugging Face dataset repository "
        "(NAMESPACE/NAME; created if missing)",
    )
    exp.add_argument(
        "--hub-token-env",
        default="HF_TOKEN",
        metavar="VAR",
        help="environment variable holding the Hub token (else huggingface_hub's stored login)",
    )
    exp.add_argument(
        "--hub-endpoint",
        default=None,
        metavar="URL",
        help="the Hub's URL (default: HF_ENDPOINT, else https://huggingface.co)",
    )
    exp.add_argument("--private", action="store_true", help="create the Hub repository private")


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
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="rebuild an output of this same config: every response already paid for replays "
        "from OUT/cache.sqlite, only the calls that failed are made again (after fixing an "
        "endpoint's URL or key, say)",
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

    val = sub.add_parser(
        "validate",
        help="check a config and read its input as run will, without calling any endpoint "
        "(exit 2 when nothing in the input is usable)",
    )
    val.add_argument("config")
    _add_set(val)
    val.add_argument(
        "--json", action="store_true", help="print the result as one JSON object on stdout"
    )
    val.add_argument(
        "--ping",
        action="store_true",
        help="also call each real endpoint's GET /models: reachable, key accepted, model served",
    )
    val.add_argument(
        "--estimate",
        nargs="?",
        const=50,
        type=int,
        default=None,
        metavar="N",
        help="also estimate calls, tokens and cost: a dry run of the method on simulated "
        "endpoints (the first N JSONL records, scaled to the whole input; default 50)",
    )

    sim = sub.add_parser(
        "sim",
        help="serve the simulated OpenAI-compatible endpoint",
        description="Serve synth-engine's SIMULATED OpenAI-compatible endpoint on HOST:PORT "
        "(chat completions, plain and streamed, /v1/models, usage, rate-limit headers). Its "
        "replies are fake text labelled [simulated], deterministic from the seed and request: "
        "by default they answer from the prompt (its words, one of the answers it lists, a "
        "score where a judge asks for one, the format and length it asks for), so a task "
        "can be dry-run offline.",
        formatter_class=_DefaultsHelp,
    )
    sim.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (loopback unless you mean it)"
    )
    sim.add_argument("--port", type=int, default=8000, help="TCP port (0: a free one)")
    sim.add_argument("--model", default="sim-model", help="model id it reports in /v1/models")
    sim.add_argument("--seed", type=int, default=0, help="content seed")
    sim.add_argument(
        "--answers",
        choices=("prompt", "random"),
        default="prompt",
        help="prompt: answer from the prompt (its words, listed answers, scores, formats, "
        "lengths); random: words of a fixed vocabulary whatever the prompt",
    )
    sim.add_argument("--latency-ms", type=float, default=50.0, help="time to the first byte")
    sim.add_argument("--jitter-ms", type=float, default=0.0, help="+- uniform latency jitter")
    sim.add_argument(
        "--tokens-per-s", type=float, default=0.0, help="output token rate (0: whole body at once)"
    )
    sim.add_argument(
        "--rpm",
        type=float,
        default=None,
        help="enforce requests/min with 429 + Retry-After (default: no limit)",
    )
    sim.add_argument(
        "--tpm",
        type=float,
        default=None,
        help="enforce tokens/min with 429 + Retry-After (default: no limit)",
    )
    sim.add_argument(
        "--fault-rate", type=float, default=0.0, help="probability of a fault per request"
    )
    sim.add_argument(
        "--faults",
        default="",
        help="comma list of fault kinds drawn from: "
        "500,502,503,429,timeout,reset,malformed,truncated,slow (default: none)",
    )
    sim.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="require the bearer key held in this environment variable (a key on the "
        "command line would be visible to every user of the machine; default: no key)",
    )
    sim.add_argument(
        "--batches",
        default=None,
        metavar="JSON",
        help="settings of the simulated OpenAI Batch API and Anthropic Message Batches, as "
        "JSON with the keys of the config's sim.batches table, e.g. '{\"speed\": 3600, "
        '"processing_s": 3600, "fail_fraction": 0.05}\' (docs/config.md; default: defaults)',
    )

    bench = sub.add_parser(
        "bench",
        help="benchmark an OpenAI-compatible endpoint (load models, streaming metrics, "
        "sweeps, SLO search, reports; docs/bench.md)",
    )
    _bench_options(bench)

    ins = sub.add_parser(
        "inspect",
        help="summarise an output directory: verified state, counts by kind and reason, "
        "spend, the config it was made with, sample rows",
    )
    ins.add_argument("output", help="the output directory (run.output)")
    ins.add_argument("--samples", type=int, default=2, help="sample rows per kind (default 2)")
    ins.add_argument("--json", action="store_true", help="print everything as one JSON object")

    _export_options(sub)

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
    from .methods import check_input, method_config
    from .redaction import display_url

    try:
        config = load_config(args.config, args.overrides)
        method_config(config)
    except ConfigError as exc:
        if not args.json:
            raise
        doc: dict[str, Any] = {
            "config": {"ok": False, "file": exc.path, "line": exc.line, "message": str(exc)}
        }
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return exc.exit_code
    check = check_input(config)
    usable = check.items_ok > 0
    missing = _missing_keys(config)
    pings = _run_async(lambda: _ping(config)) if args.ping else {}
    estimate = None
    if args.estimate is not None and usable:
        from .estimate import estimate as dry_run

        estimate = _run_async(lambda: dry_run(config, sample=args.estimate))
    failed = bool(missing) or any(not p["ok"] for p in pings.values())
    if args.json:
        doc = {
            "config": {
                "ok": True,
                "file": args.config,
                "method": config.run.method,
                "endpoints": {
                    n: {
                        "base_url": display_url(e.base_url),
                        "model": e.model,
                        "simulated": e.simulated,
                    }
                    for n, e in config.endpoints.items()
                },
            },
            "input": {
                "path": str(config.resolve(config.run.input or "")),
                "items_ok": check.items_ok,
                "items_bad": check.items_bad,
                "problems": [
                    {"file": p.file, "line": p.line, "message": p.message} for p in check.problems
                ],
                "warnings": [
                    {"file": w.file, "line": w.line, "message": w.message} for w in check.warnings
                ],
                "details": check.details,
            },
            "keys_missing": missing,
            "ping": pings,
            "estimate": estimate,
        }
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0 if usable and not failed else 2
    eps = ", ".join(
        f"{n} ({'simulated' if e.simulated else display_url(e.base_url)}, {e.model})"
        for n, e in config.endpoints.items()
    )
    print(f"{args.config}: config OK — method {config.run.method}; endpoints: {eps}")
    print(
        f"input {config.run.input}: {check.items_ok} usable, {check.items_bad} bad"
        + (f"; {check.details}" if check.details else "")
    )
    for label, items in (("error", check.problems), ("warning", check.warnings)):
        for p in items:
            where = f"{p.file}:{p.line}" if p.line else p.file
            print(f"  {label}: {where}: {p.message}")
    for name, env in missing.items():
        print(
            f"  error: endpoints.{name}.api_key_env: environment variable {env} is not set "
            f"(export {env}=<your key>)"
        )
    for name, ping in pings.items():
        print(f"  ping {name}: {'OK' if ping['ok'] else 'FAILED'}: {ping['detail']}")
    if estimate is not None:
        _print_estimate(estimate)
    if not usable:
        print(f"{args.config}: nothing in the input is usable", file=sys.stderr)
        return 2
    if failed:
        print(f"{args.config}: fix the endpoint problems above before running", file=sys.stderr)
        return 2
    return 0


def _missing_keys(config: Config) -> dict[str, str]:
    """Endpoint (or pool member) -> the key variable it names that is not set."""
    return {
        name if len(ep.key_envs) == 1 else f"{name}#{i}": env
        for name, ep in config.endpoints.items()
        if not ep.simulated
        for i, env in enumerate(ep.key_envs, 1)
        if not os.environ.get(env)
    }


async def _ping(config: Config) -> dict[str, dict[str, Any]]:
    """Each real endpoint's ``GET /models``: reachable, key accepted, model listed."""
    import time

    from .errors import EndpointError
    from .llm.client import Client
    from .redaction import display_url

    out: dict[str, dict[str, Any]] = {}
    for name, ep in config.endpoints.items():
        if ep.simulated:
            continue
        key = os.environ.get(ep.key_envs[0]) if ep.key_envs else None
        start = time.monotonic()
        async with Client(name, ep.base_url, api_key=key, timeout_s=min(ep.timeout_s, 30.0)) as c:
            try:
                models = await c.models()
            except EndpointError as exc:
                hint = (
                    " (OpenAI-compatible servers serve under /v1)"
                    if exc.status == 404 and not ep.base_url.rstrip("/").endswith("/v1")
                    else ""
                )
                out[name] = {"ok": False, "detail": f"{exc}{hint}"}
                continue
        ms = (time.monotonic() - start) * 1000
        listed = ep.model in models
        out[name] = {
            "ok": listed or not models,
            "detail": f"{display_url(ep.base_url)} answered in {ms:.0f} ms; "
            + (
                f"model {ep.model!r} is served"
                if listed
                else f"model {ep.model!r} is NOT among the {len(models)} it lists "
                f"({', '.join(models[:5])}{'...' if len(models) > 5 else ''})"
                if models
                else "it lists no models (cannot check the model id)"
            ),
        }
    return out


def _print_estimate(est: dict[str, Any]) -> None:
    scale = (
        f"the first {est['sampled_items']} of {est['total_items']} records, per-record stages "
        f"scaled x{est['scale']}"
        if est["sampled_items"] is not None
        else "the whole input"
    )
    print(
        f"estimate    (a dry run on SIMULATED endpoints over {scale}; completion lengths and "
        "judge-dependent rounds are simulated, so this is an estimate)"
    )
    for name, e in est["endpoints"].items():
        cost = "no price" if e["cost_usd"] is None else f"${e['cost_usd']:,.4f}"
        print(
            f"  {name:<10} {e['model']}: {e['calls']:,} calls, {e['prompt_tokens']:,} prompt + "
            f"{e['completion_tokens']:,} completion tokens, {cost}"
        )
    total = est["total"]
    cost = (
        f"${total['cost_usd']:,.4f}"
        if total["cost_usd"] is not None
        else f"unknown (no price for {', '.join(est['unpriced'])}; set [endpoints.NAME.price])"
    )
    print(
        f"  total      {total['calls']:,} calls, {total['prompt_tokens']:,} + "
        f"{total['completion_tokens']:,} tokens, cost {cost}"
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from .api import Engine

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

        for sig in _STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal)
        progress = None if args.quiet else sys.stderr
        try:
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
        finally:
            for sig in _STOP_SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
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
            return _nothing_kept(result.manifest)
        advice = _advice(result.stop_reason)
        failed = (result.manifest.totals.get("failed", 0) if result.manifest else 0) or 0
        if failed and (result.stop_reason or "").startswith("endpoint"):
            advice += (
                f", with --retry-failed to also redo the {failed} items that failed before "
                "the stop (responses already paid for replay from the cache)"
            )
        print(f"stopped early ({result.stop_reason}); {advice}", file=sys.stderr)
        return _stop_exit_code(result.stop_reason)

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


def _nothing_kept(manifest: Any) -> int:
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

        for sig in _STOP_SIGNALS:
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
            return _nothing_kept(result.manifest)
        print(
            f"stopped early ({result.stop_reason}); {_advice(result.stop_reason)}",
            file=sys.stderr,
        )
        return 130 if stop.is_set() else _stop_exit_code(result.stop_reason)

    return _run_async(main)


def _cmd_sim(args: argparse.Namespace) -> int:
    import msgspec

    from .sim import SimSettings, serve_forever
    from .sim.lifecycle import BatchSettings

    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    api_key: str | None = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(
                f"synth-engine: error: environment variable {args.api_key_env} is not set",
                file=sys.stderr,
            )
            return 2
    batches: dict[str, object] = {}
    if args.batches:
        try:
            batches = msgspec.json.decode(args.batches)
        except msgspec.DecodeError as exc:
            print(f"synth-engine: error: --batches is not JSON: {exc}", file=sys.stderr)
            return 2
    try:
        batch_settings = msgspec.convert(batches, BatchSettings)
    except (msgspec.ValidationError, ValueError) as exc:
        print(f"synth-engine: error: --batches: {exc}", file=sys.stderr)
        return 2
    settings = SimSettings(
        batches=batch_settings,
        seed=args.seed,
        model=args.model,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        tokens_per_s=args.tokens_per_s,
        rpm=args.rpm,
        tpm=args.tpm,
        fault_rate=args.fault_rate,
        faults=faults,
        api_key=api_key,
        answers=args.answers,
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


def _short(value: Any, width: int = 100) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .io.summary import summarize_output

    out = Path(args.output)
    summary = summarize_output(out, samples=args.samples)
    if args.json:
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0 if summary["verified"] else 1
    if not summary["verified"]:
        problems = summary["problems"]
        print(
            f"{out}: CORRUPT: {len(problems)} shard(s) do not match the manifest:", file=sys.stderr
        )
        for problem in problems[:10]:
            print(f"  {problem}", file=sys.stderr)
        print(
            "  to rebuild it: run again with --force-new (it keeps OUT/cache.sqlite, so every "
            "response already paid for replays for free)",
            file=sys.stderr,
        )
        return 1
    state = (
        "complete (verified)"
        if summary["complete"]
        else f"incomplete ({summary['stop_reason'] or 'interrupted'}; run again to resume)"
    )
    sim = (
        "  ** SIMULATED ENDPOINT: rows are fake, not real model output **"
        if summary["simulated"]
        else ""
    )
    totals = summary["totals"]
    print(f"{out}: {summary['method']}, {state}{sim}")
    print(
        f"items       {totals.get('items', 0)}   rows: kept {totals.get('kept', 0)}   "
        f"rejected {totals.get('rejected', 0)}   failed {totals.get('failed', 0)}   "
        f"in {summary['shards']} shards"
    )
    for kind in ("rejected", "failed"):
        for reason, n in list(summary["reasons"].get(kind, {}).items())[:8]:
            print(f"  {kind:<9} {n:>7}  {reason}")
    spent = summary["spent"]
    if spent["requests"]:
        cost = f"   ${spent['cost']:.4f}" if spent["cost"] else ""
        print(
            f"spent       {spent['requests']} requests   {spent['prompt_tokens']} prompt + "
            f"{spent['completion_tokens']} completion tokens{cost} (every run on this output)"
        )
    config = summary["config"]
    if isinstance(config, dict):
        roles = config.get("roles") or {}
        endpoints = config.get("endpoints") or {}
        served = []
        for role in ("strong", "target", "judge"):
            ref = roles.get(role) or roles.get("strong")
            names = [ref] if isinstance(ref, str) else list(ref or [])
            models = sorted({str(endpoints.get(n, {}).get("model")) for n in names})
            served.append(f"{role} {'/'.join(models)}")
        print(
            f"config      {', '.join(served)}; seed {config.get('run', {}).get('seed')} "
            f"(OUT/config.json, hash {summary['config_hash']})"
        )
    for derived in summary["derived"] or []:
        if isinstance(derived, dict):
            print(f"derived     {derived.get('name')}: {derived.get('rows')} rows")
    for kind in ("kept", "rejected", "failed"):
        for row in summary["samples"][kind]:
            shown = {k: row[k] for k in _SAMPLE_FIELDS if k in row} or row
            print(
                f"sample {kind:<8} " + "  ".join(f"{k}={_short(v, 60)}" for k, v in shown.items())
            )
    return 0


# The fields that say what a row is, in the order a sample shows them.
_SAMPLE_FIELDS = (
    "instruction",
    "question",
    "input",
    "response",
    "answer",
    "output",
    "reason",
    "stage",
    "error",
)


def _cmd_export(args: argparse.Namespace) -> int:
    """``export OUT``: write the training export, then push it when asked."""
    from .export import export_output, push_export, resolve_hub

    if args.rows_per_file < 1:
        raise ConfigError("must be at least 1", path="--rows-per-file")
    hub = None
    if args.push_to_hub:
        hub = resolve_hub(
            args.push_to_hub,
            endpoint=args.hub_endpoint,
            token_env=args.hub_token_env,
            private=args.private,
        )
    result = export_output(
        Path(args.output),
        args.format,
        output=Path(args.export_dir) if args.export_dir else None,
        dataset=args.dataset,
        allow_incomplete=args.allow_incomplete,
        rows_per_file=args.rows_per_file,
        repo_id=args.push_to_hub,
    )
    what = "kept rows" if result.dataset == "kept" else f"derived dataset {result.dataset}"
    flags = "  ** SIMULATED ENDPOINT: rows are fake, not real model output **" * result.simulated
    if not result.complete:
        flags += "  (INCOMPLETE output)"
    print(
        f"exported    {result.rows} conversations ({result.method}, {what}) -> "
        f"{result.directory}{flags}"
    )
    shown = ", ".join(f"{f.name} ({f.rows} rows)" for f in result.files)
    print(f"files       {shown}, README.md (dataset card), export.json")
    if result.skipped:
        reasons = ", ".join(f"{reason} {n}" for reason, n in result.skipped.items())
        print(f"left out    {sum(result.skipped.values())} rows: {reasons}")
    if result.fmt == "hf":
        print(f'load        datasets.load_from_disk("{result.directory}")')
    else:
        print(f'load        datasets.load_dataset("{result.directory}", split="train")')
    if hub is not None:
        if result.simulated:
            print(
                "synth-engine: warning: pushing SIMULATED rows (the card says so)",
                file=sys.stderr,
            )
        message = f"synth-engine export: {result.rows} {result.method} conversations" + (
            " (SIMULATED)" if result.simulated else ""
        )
        pushed = push_export(result.directory, hub, message=message)
        print(f"pushed      {pushed.url}  (commit {pushed.commit[:12]})")
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
        "export": _cmd_export,
    }
    try:
        return commands[args.command](args)
    except EngineError as exc:
        print(f"synth-engine: error: {exc}", file=sys.stderr)
        return exc.exit_code

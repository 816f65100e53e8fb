"""``synth-engine sim``, ``bench`` and ``view``: the commands that serve or load an endpoint."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path

import orjson

from .runtime import raise_fd_limit, run_async

__all__ = ("cmd_bench", "cmd_sim", "cmd_view")


def cmd_sim(args: argparse.Namespace) -> int:
    import msgspec

    from ..sim import SimSettings, serve_forever
    from ..sim.lifecycle import BatchSettings

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

    raise_fd_limit()

    def ready(url: str) -> None:
        print(
            f"synth-engine SIMULATED endpoint listening on {url} (model {args.model})", flush=True
        )

    with contextlib.suppress(KeyboardInterrupt):
        run_async(lambda: serve_forever(settings, args.host, args.port, ready=ready))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import BenchSettings, parse_slo, render_bench, run_bench

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
    raise_fd_limit()
    report = run_async(lambda: run_bench(settings))
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


def cmd_view(args: argparse.Namespace) -> int:
    """``view OUT``: serve the viewer until Ctrl+C."""
    from ..viewer import ViewerServer

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
        return run_async(serve)
    return 0

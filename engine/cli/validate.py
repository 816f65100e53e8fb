"""``synth-engine validate``: the config, the input, keys, endpoint pings and a dry-run estimate."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

import orjson

from ..config import Config, load_config
from ..errors import ConfigError
from .runtime import run_async

if TYPE_CHECKING:
    from ..estimate import Estimate

__all__ = ("cmd_validate",)


def cmd_validate(args: argparse.Namespace) -> int:
    from ..methods import check_input, method_config
    from ..redaction import display_url

    try:
        config = load_config(args.config, args.overrides)
        method_config(config)
    except ConfigError as exc:
        if not args.json:
            raise
        doc: dict[str, object] = {
            "config": {"ok": False, "file": exc.path, "line": exc.line, "message": str(exc)}
        }
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return exc.exit_code
    check = check_input(config)
    usable = check.items_ok > 0
    missing = _missing_keys(config)
    pings = run_async(lambda: _ping(config)) if args.ping else {}
    estimate = None
    if args.estimate is not None and usable:
        from ..estimate import estimate as dry_run

        estimate = run_async(lambda: dry_run(config, sample=args.estimate))
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


async def _ping(config: Config) -> dict[str, dict[str, object]]:
    """Each real endpoint's ``GET /models``: reachable, key accepted, model listed."""
    import time

    from ..errors import EndpointError
    from ..llm.client import Client
    from ..redaction import display_url

    out: dict[str, dict[str, object]] = {}
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


def _print_estimate(est: Estimate) -> None:
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

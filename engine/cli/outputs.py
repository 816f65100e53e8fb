"""``synth-engine inspect`` and ``export``: reading a finished (or running) output directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from ..errors import ConfigError

__all__ = ("cmd_export", "cmd_inspect")


def _short(value: object, width: int = 100) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..io.summary import summarize_output

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


def cmd_export(args: argparse.Namespace) -> int:
    """``export OUT``: write the training export, then push it when asked."""
    from ..export import export_output, push_export, resolve_hub

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

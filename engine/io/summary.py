"""What an output directory holds, for ``synth-engine inspect``: verified, counted, sampled.

:func:`summarize_output` checks every listed shard against the manifest's checksums,
counts the rejected and failed rows by reason (reading only those shards: kept rows are
counted by the manifest), picks a few sample rows of each kind, and gathers what the
output says about itself: how the last run ended, what it spent, the config it was made
with (``OUT/config.json``). Nothing is held but counters and the samples, so a
ten-million-row output costs a scan of its rejected and failed shards, not memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from ..errors import ShardError
from ..jsontypes import JSON, JSONObject
from ..records import reason_of
from .manifest import load_manifest, verify_shards
from .shards import KINDS, iter_rows

__all__ = ("summarize_output",)


def _spent(manifest_extra: Mapping[str, object]) -> dict[str, object]:
    """Requests, tokens and cost over every invocation, from the manifest's ledger."""
    total = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}
    by_stage: dict[str, float] = {}
    spend = manifest_extra.get("spend")
    if isinstance(spend, dict):
        for stage, per_endpoint in spend.items():
            if not isinstance(per_endpoint, dict):
                continue
            for counters in per_endpoint.values():
                if not isinstance(counters, dict):
                    continue
                for key in total:
                    value = counters.get(key, 0)
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        total[key] += value
                cost = counters.get("cost", 0)
                if isinstance(cost, int | float):
                    by_stage[stage] = by_stage.get(stage, 0.0) + float(cost)
    return {**total, "cost": round(float(total["cost"]), 6), "cost_by_stage": by_stage}


def summarize_output(out_dir: Path, *, samples: int = 2) -> dict[str, Any]:
    """Everything ``inspect`` shows about ``out_dir``, as JSON-able builtins.

    Args:
        out_dir: an output directory.
        samples: rows of each kind to include.

    Raises:
        ShardError: no manifest (not an output, or nothing committed yet), or it cannot
            be read.
    """
    out_dir = Path(out_dir)
    manifest = load_manifest(out_dir)
    if manifest is None:
        raise ShardError(
            "no manifest.json (not a synth-engine output, or nothing committed yet)",
            path=str(out_dir),
            hint="run synth-engine run CONFIG first, or check the path",
        )
    problems = verify_shards(out_dir, manifest)
    reasons: dict[str, dict[str, int]] = {}
    sampled: dict[str, list[JSONObject]] = {kind: [] for kind in KINDS}
    if not problems:
        for kind in KINDS:
            counts: dict[str, int] = {}
            for row in iter_rows(out_dir, kind):
                if len(sampled[kind]) < samples:
                    sampled[kind].append(row)
                elif kind == "kept":
                    break  # kept rows need no reasons: the manifest counts them
                if kind != "kept":
                    reason = reason_of(kind, row)
                    counts[reason] = counts.get(reason, 0) + 1
            if counts:
                reasons[kind] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    config: JSON = None
    config_path = out_dir / "config.json"
    if config_path.is_file():
        try:
            config = orjson.loads(config_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            config = None
    return {
        "output": str(out_dir),
        "method": manifest.method,
        "simulated": manifest.simulated,
        "complete": manifest.complete,
        "stop_reason": manifest.stop_reason,
        "verified": not problems,
        "problems": problems,
        "totals": dict(manifest.totals),
        "shards": len(manifest.shards),
        "reasons": reasons,
        "samples": sampled,
        "spent": _spent(manifest.extra),
        "derived": manifest.extra.get("derived", []),
        "config_hash": manifest.config_hash,
        "config": config,
        "engine_version": manifest.engine_version,
        "started_at": manifest.started_at,
        "ended_at": manifest.ended_at,
    }

"""What a job will cost before it runs: a dry run of the real method on simulated endpoints.

:func:`estimate` runs the configured method, unchanged, with every endpoint replaced by
the built-in simulated one (same model ids, no latency) into a temporary directory. The
calls it makes are the job's real calls: the same prompts (so the same prompt tokens),
the same stages, fan-outs and rounds. What the simulated endpoint cannot know is how a
real model answers: completion lengths are drawn up to each call's ``max_tokens``, and
rounds that depend on a judge's scores (CodecLM's iterations) follow simulated scores.
The figures are an estimate, labelled as one.

For JSONL inputs only the first ``sample`` records are dry-run. Where every record is an
item (respond, backtranslation), all figures are scaled to the whole input; CodecLM's
items are its metadata (``metadata_count``, whatever the number of seeds), so only its
per-seed stage (``encode``, on the strong endpoint) is scaled. Other inputs (a taxonomy,
a task file, a corpus) are dry-run whole. Prices are the endpoints' (configured, or built
in for hosted models).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import TypedDict

import msgspec

from .api import Engine
from .config import Config, EndpointConfig, Price, as_simulated
from .errors import ConfigError
from .methods import resolve_method
from .prices import builtin_price

__all__ = ("EndpointEstimate", "Estimate", "EstimateTotal", "estimate")


class EstimateTotal(TypedDict):
    """Calls, tokens and cost (None: an endpoint has no price) over the whole input."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None


class EndpointEstimate(EstimateTotal):
    """One endpoint's share, and the model it serves."""

    model: str | None


class Estimate(TypedDict):
    """What :func:`estimate` returns (``validate --estimate --json`` prints it)."""

    simulated: bool
    method: str
    scale: float
    sampled_items: int | None
    total_items: int | None
    endpoints: dict[str, EndpointEstimate]
    total: EstimateTotal
    unpriced: list[str]
    kept_in_dry_run: int


_BUILT_IN = frozenset({"respond", "backtranslation", "codeclm", "selfguide", "lab"})
# Method -> the stages whose calls grow with the number of input records (None: all; a
# user's method, whose items are its records, scales all).
_PER_RECORD_STAGES: dict[str, frozenset[str] | None] = {
    "respond": None,
    "backtranslation": None,
    "codeclm": frozenset({"encode"}),
}


def _sample(path: Path, out: Path, sample: int) -> tuple[int, int]:
    """Copy the first ``sample`` non-blank lines of ``path`` to ``out``; (copied, total)."""
    copied = total = 0
    with path.open("rb") as src, out.open("wb") as dst:
        for line in src:
            if not line.strip():
                continue
            total += 1
            if copied < sample:
                dst.write(line if line.endswith(b"\n") else line + b"\n")
                copied += 1
    return copied, total


def _price(config: Config, name: str) -> Price | None:
    ep = config.endpoints[name]
    if ep.price is not None:
        return ep.price
    if ep.builtin_price:
        found = builtin_price(ep.model, ep.base_url)
        if found is not None:
            return Price(prompt=found.prompt, completion=found.completion)
    return None


async def estimate(config: Config, *, sample: int = 50) -> Estimate:
    """Dry-run ``config`` on simulated endpoints; calls, tokens and cost per endpoint.

    Args:
        config: a validated config (its endpoints may be real: they are not called).
        sample: JSONL records to dry-run (the figures are scaled to the whole input).

    Returns:
        ``{"scale", "sampled_items", "total_items", "endpoints": {name: {calls,
        prompt_tokens, completion_tokens, cost_usd}}, "total": {...}, "simulated": True}``.

    Raises:
        ConfigError: ``sample`` is below 1.
    """
    if sample < 1:
        raise ConfigError("--estimate needs a sample of at least 1 item")
    with tempfile.TemporaryDirectory(prefix="synth-engine-estimate-") as tmp:
        work = Path(tmp)
        input_path = config.resolve(config.run.input or "")
        scale, sampled, total = 1.0, None, None
        run = msgspec.structs.replace(config.run, output=str(work / "out"), progress="off")
        entry = resolve_method(config)
        if entry.records_input and input_path.is_file():
            sampled, total = _sample(input_path, work / "sample.jsonl", sample)
            scale = total / sampled if sampled else 0.0
            run = msgspec.structs.replace(run, input=str(work / "sample.jsonl"))
        endpoints: dict[str, EndpointConfig] = {
            name: as_simulated(
                ep,
                {"latency_ms": 0, "seed": config.run.seed},
                api_key_env=None,
                rpm=None,
                tpm=None,
                stream=False,
            )
            for name, ep in config.endpoints.items()
        }
        dry = msgspec.structs.replace(
            config, run=run, endpoints=endpoints, budget=type(config.budget)()
        )
        async with Engine(dry) as engine:
            result = await engine.run()
        report = result.report
        per: dict[str, EndpointEstimate] = {}
        all_calls = all_prompt = all_completion = 0
        all_cost = 0.0
        unpriced: list[str] = []
        stages = _PER_RECORD_STAGES.get(config.run.method) if entry.name in _BUILT_IN else None
        extra = {"calls": 0.0, "prompt": 0.0, "completion": 0.0}
        if report is not None and stages is not None:
            for stage in stages:
                st = report.stages.get(stage)
                if st is not None:
                    extra["calls"] += st.calls * (scale - 1.0)
                    extra["prompt"] += st.prompt_tokens * (scale - 1.0)
                    extra["completion"] += st.completion_tokens * (scale - 1.0)
        strong = config.role_endpoints("strong")[0] if config.roles is not None else None
        if report is not None:
            for name, e in report.endpoints.items():
                base = name.split("#", 1)[0]
                if stages is None:
                    calls = math.ceil(e.requests * scale)
                    prompt = math.ceil(e.prompt_tokens * scale)
                    completion = math.ceil(e.completion_tokens * scale)
                else:
                    add = base == strong and name in (base, f"{base}#1")
                    calls = e.requests + (math.ceil(extra["calls"]) if add else 0)
                    prompt = e.prompt_tokens + (math.ceil(extra["prompt"]) if add else 0)
                    completion = e.completion_tokens + (
                        math.ceil(extra["completion"]) if add else 0
                    )
                price = _price(config, base) if base in config.endpoints else None
                cost = price.cost(prompt, completion) if price is not None else None
                if cost is None and calls:
                    unpriced.append(name)
                per[name] = {
                    "model": config.endpoints[base].model if base in config.endpoints else None,
                    "calls": calls,
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "cost_usd": None if cost is None else round(cost, 4),
                }
                all_calls += calls
                all_prompt += prompt
                all_completion += completion
                all_cost += cost or 0.0
        return {
            "simulated": True,
            "method": config.run.method,
            "scale": round(scale, 3),
            "sampled_items": sampled,
            "total_items": total,
            "endpoints": per,
            "total": {
                "calls": all_calls,
                "prompt_tokens": all_prompt,
                "completion_tokens": all_completion,
                "cost_usd": None if unpriced else round(float(all_cost), 4),
            },
            "unpriced": unpriced,
            "kept_in_dry_run": report.rows.kept if report is not None else 0,
        }

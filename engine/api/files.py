"""The files an engine writes beside the shards: the spooled input of a stream, the
effective config, and the counters that add up over every invocation on one output."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any

import msgspec
import orjson

from ..config import Config
from ..redaction import Redactor, display_url
from .results import Records

__all__ = ("SPOOL", "accumulate", "keep_config", "spool")

log = logging.getLogger("engine")

# Where Engine.stream(items) writes its items (the engine re-reads its input to resume).
SPOOL = "input.jsonl"


async def spool(items: Records, out_dir: Path) -> Path:
    """Write ``items`` to ``OUT/input.jsonl`` (atomically) and return its path.

    An unchanged spool is left as it is, so the input's fingerprint stays the same and a
    rerun with the same items resumes. The writes block, as the shards' do: a local file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    path = out_dir / SPOOL
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("wb") as f:
        if isinstance(items, AsyncIterable):
            async for record in items:
                f.write(orjson.dumps(dict(record)) + b"\n")
        else:
            for record in items:
                f.write(orjson.dumps(dict(record)) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    if path.exists() and path.read_bytes() == tmp.read_bytes():
        tmp.unlink()
    else:
        tmp.replace(path)
    return path


def keep_config(config: Config, redactor: Redactor, out_dir: Path) -> None:
    """Write the effective config to ``OUT/config.json`` (provenance of the output).

    Secrets never get there: keys are not in the config (only their variables' names),
    URL credentials and query values are masked, and the text passes the run's redactor.
    """
    doc = msgspec.to_builtins(config)
    for ep in doc.get("endpoints", {}).values():
        if isinstance(ep, dict) and isinstance(ep.get("base_url"), str):
            ep["base_url"] = display_url(ep["base_url"])
        sim = ep.get("sim") if isinstance(ep, dict) else None
        if isinstance(sim, dict) and "api_key" in sim:
            sim["api_key"] = "[redacted]"
    data = redactor.bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    path = out_dir / "config.json"
    tmp = path.with_name(f".config.json.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log.warning("could not write %s (%s)", path, exc.strerror or exc)


def accumulate(prior: Any, now: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Add this invocation's per-endpoint counters to those recorded by earlier ones.

    Numbers add; nested dicts (errors by kind) add key by key.
    """
    out: dict[str, Any] = {k: dict(v) for k, v in (prior or {}).items() if isinstance(v, dict)}
    for name, counters in now.items():
        merged = out.setdefault(name, {})
        for key, value in counters.items():
            if isinstance(value, dict):
                inner = dict(merged.get(key) or {})
                for k, v in value.items():
                    inner[k] = inner.get(k, 0) + v
                merged[key] = inner
            else:
                merged[key] = merged.get(key, 0) + value
    return out

"""The layout of a partitioned output and its merged manifest.

Worker ``k`` of ``n`` writes a complete, ordinary output (shards, cache, manifest,
report) under ``OUT/partitions/k-of-n``. The driver writes ``OUT/manifest.json``: the
same :class:`~engine.io.manifest.Manifest` format, whose shard names are paths relative
to ``OUT`` (``partitions/0-of-4/kept-00000.jsonl``), so ``engine.io.shards.iter_rows``
reads the merged rows as they are, and whose ``extra.partitions`` says how the output
is split. It is ``complete`` only when every partition is.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from ..errors import ShardError
from ..io.manifest import Manifest, ShardInfo, load_manifest, utc_now, write_manifest

__all__ = (
    "PARTITIONS_DIR",
    "check_partitioned_output",
    "merge_manifests",
    "partition_dir",
    "partition_manifests",
)

PARTITIONS_DIR = "partitions"


def partition_dir(out_dir: Path, part: int, parts: int) -> Path:
    """Where partition ``part`` of ``parts`` writes its output."""
    return Path(out_dir) / PARTITIONS_DIR / f"{part}-of-{parts}"


def partition_manifests(out_dir: Path, parts: int) -> list[Manifest | None]:
    """Each partition's manifest (None where a partition has not started)."""
    return [load_manifest(partition_dir(out_dir, k, parts)) for k in range(parts)]


def check_partitioned_output(
    out_dir: Path, parts: int, *, config_hash: str, force_new: bool = False
) -> Manifest | None:
    """Check that ``OUT`` can hold (or continue) a run split into ``parts`` partitions.

    Returns:
        The merged manifest already there, if any.

    Raises:
        ShardError: ``OUT`` holds a single-process output, a run split another way, or
            one written by another config (unless ``force_new``).
    """
    existing = load_manifest(out_dir)
    if existing is None or force_new:
        return existing
    info = existing.extra.get("partitions")
    if not isinstance(info, dict):
        raise ShardError(
            "output was written by a single-process run",
            path=str(out_dir),
            hint="resume it without --ray, or choose a new output directory",
        )
    if info.get("count") != parts:
        raise ShardError(
            f"output is split into {info.get('count')} partitions, not {parts}",
            path=str(out_dir),
            hint=f"rerun with --workers {info.get('count')} (partitions resume one by one)",
        )
    if existing.config_hash != config_hash:
        raise ShardError(
            f"output was written by a different config "
            f"(hash {existing.config_hash} != {config_hash})",
            path=str(out_dir),
            hint="use a new output directory, or pass --force-new to overwrite",
        )
    return existing


def _add(into: dict[str, object], more: object) -> None:
    """Add nested counters (numbers add; dicts add key by key)."""
    if not isinstance(more, dict):
        return
    for key, value in more.items():
        if isinstance(value, dict):
            inner = into.setdefault(key, {})
            if isinstance(inner, dict):
                _add(inner, value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            current = into.get(key, 0)
            if isinstance(current, int | float):
                into[key] = current + value


def merge_manifests(
    out_dir: Path,
    parts: int,
    *,
    config_hash: str,
    input_fingerprint: str,
    method: str,
    engine_version: str,
    simulated: bool = False,
    stop_reason: str | None = None,
    final: bool = False,
) -> Manifest:
    """Write ``OUT/manifest.json`` from the partitions' manifests and return it.

    Args:
        out_dir: the run's output directory.
        parts: number of partitions.
        config_hash: the run's config hash.
        input_fingerprint: the run's input fingerprint.
        method: the method's name.
        engine_version: synth-engine's version.
        simulated: any endpoint is simulated.
        stop_reason: why the run stopped early (kept only when it is incomplete).
        final: the run has ended (sets ``ended_at``).

    Raises:
        ShardError: a partition's manifest cannot be read, or the merged one written.
    """
    out_dir = Path(out_dir)
    previous = load_manifest(out_dir)
    now = utc_now()
    shards: list[ShardInfo] = []
    totals: dict[str, int] = {}
    usage: dict[str, dict[str, int]] = {}
    endpoints: dict[str, object] = {}
    spend: dict[str, object] = {}
    states: list[dict[str, object]] = []
    derived: object = None
    complete = True
    for k, m in enumerate(partition_manifests(out_dir, parts)):
        rel = partition_dir(Path("."), k, parts).as_posix()
        if m is None:
            complete = False
            states.append({"partition": k, "dir": rel, "started": False, "complete": False})
            continue
        complete = complete and m.complete
        simulated = simulated or m.simulated
        shards.extend(msgspec.structs.replace(s, name=f"{rel}/{s.name}") for s in m.shards)
        for key, count in m.totals.items():
            totals[key] = totals.get(key, 0) + count
        for name, counts in m.usage.items():
            into = usage.setdefault(name, {})
            for key, count in counts.items():
                into[key] = into.get(key, 0) + count
        _add(endpoints, m.extra.get("endpoints"))
        _add(spend, m.extra.get("spend"))
        if m.extra.get("derived") is not None:
            derived = m.extra["derived"]
        states.append(
            {
                "partition": k,
                "dir": rel,
                "started": True,
                "complete": m.complete,
                "stop_reason": m.stop_reason,
                "items": m.totals.get("items", 0),
            }
        )
    extra: dict[str, object] = {
        "partitions": {"count": parts, "states": states},
        "endpoints": endpoints,
    }
    if spend:
        extra["spend"] = spend
    if derived is not None:
        extra["derived"] = derived
    manifest = Manifest(
        engine_version=engine_version,
        complete=complete,
        simulated=simulated,
        config_hash=config_hash,
        input_fingerprint=input_fingerprint,
        method=method,
        started_at=previous.started_at if previous is not None else now,
        updated_at=now,
        ended_at=now if final else None,
        shards=shards,
        totals=totals,
        usage=usage,
        stop_reason=None if complete else stop_reason,
        extra=extra,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(out_dir, manifest)
    return manifest

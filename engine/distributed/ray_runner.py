"""Run one job on a Ray cluster: partitioned workers, fleet-wide rate leases, one manifest.

The driver (this module, in the process that calls :func:`run_on_ray`):

1. checks ``OUT`` (a fresh output, or one split the same way by the same config);
2. starts one lease actor per rate-limited endpoint (per key, for a key pool), each
   holding a :class:`~engine.distributed.lease.ShareLedger` of the fleet's quota;
3. starts one worker actor per unfinished partition; worker ``k`` of ``n`` runs an
   ordinary :class:`~engine.Engine` over the items whose index % n == k, writing
   ``OUT/partitions/k-of-n``, with every leased gate kept on a lease
   (:class:`~engine.distributed.lease.LeaseClient`);
4. when every other partition is done, tells worker 0 to build the method's derived
   datasets over the merged output (methods with a ``finalize`` step only);
5. writes ``OUT/manifest.json`` merging the partitions' manifests.

Rerunning resumes: finished partitions are skipped, the others resume from their own
manifests and caches. Ray is imported only when a run starts (``synth-engine[ray]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import msgspec

from ..config import Config, config_hash
from ..errors import ConfigError, EngineError
from ..io.lock import OutputLock
from ..io.manifest import Manifest, load_manifest
from ..io.readers import fingerprint
from ..llm.cache import copy_cache
from ..methods import resolve_method
from ..version import __version__
from .lease import LedgerState
from .merge import (
    PARTITIONS_DIR,
    check_partitioned_output,
    merge_manifests,
    partition_dir,
)
from .worker import (
    LeaseActor,
    MergeArgs,
    PartitionResult,
    PartitionWorker,
    partition_config,
)

__all__ = ("RayRunResult", "leased_gates", "partition_config", "run_on_ray")

log = logging.getLogger("engine")


T = TypeVar("T")


class RayRunResult(msgspec.Struct, kw_only=True):
    """What :func:`run_on_ray` did.

    Attributes:
        output: the output directory.
        complete: every partition is complete (the merged manifest says so).
        already_complete: every partition was complete before this run.
        stop_reason: why the run stopped early (None when complete).
        workers: number of partitions (= workers).
        manifest: the merged manifest (``OUT/manifest.json``).
        partitions: per partition: ``partition``, ``complete``, ``stop_reason``,
            ``skipped`` (already complete), ``error``.
        leases: leased gate -> its ledger's final state.
        summary: a short text summary.
    """

    output: Path
    complete: bool
    already_complete: bool = False
    stop_reason: str | None = None
    workers: int
    manifest: Manifest | None = None
    partitions: list[dict[str, object]] = []
    leases: dict[str, LedgerState] = {}
    summary: str = ""


def leased_gates(config: Config) -> dict[str, tuple[float | None, float | None]]:
    """Gate name -> (rpm, tpm) of every gate whose quota the fleet shares.

    Those are the real endpoints with ``rpm`` or ``tpm`` configured, one gate per key of
    a key pool (each key has its own quota). A simulated endpoint runs inside each
    worker, so it has no shared quota.
    """
    gates: dict[str, tuple[float | None, float | None]] = {}
    for name, ep in config.endpoints.items():
        if ep.simulated or (ep.rpm is None and ep.tpm is None):
            continue
        envs = ep.key_envs
        names = [f"{name}#{i}" for i in range(1, len(envs) + 1)] if len(envs) > 1 else [name]
        for gate in names:
            gates[gate] = (ep.rpm, ep.tpm)
    return gates


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "Ray is not installed",
            hint="pip install 'synth-engine[ray]'",
        ) from exc
    module: ModuleType = ray
    return module


# ---------------------------------------------------------------------------- driver
def _has_global_phase(config: Config) -> bool:
    """The method's ``prepare`` makes calls over the whole input (CodecLM, SELF-GUIDE)."""
    return resolve_method(config).global_phase


def _builds_derived(config: Config) -> bool:
    return resolve_method(config).finalizes


def _clear_for_new(out_dir: Path, keep: Path) -> None:
    """``--force-new``: remove an earlier output's partitions and merged manifest.

    Only what a Ray run writes is removed: shard files the merged manifest lists (by
    their own name pattern, never another name a manifest may hold) and the partitions
    folder; never ``keep`` (the run's input).
    """
    old = load_manifest(out_dir)
    if old is not None:
        for shard in old.shards:
            path = out_dir / shard.name
            if _is_shard_name(shard.name) and path.resolve() != keep.resolve():
                with contextlib.suppress(OSError):
                    path.unlink()
        with contextlib.suppress(OSError):
            (out_dir / "manifest.json").unlink()
    parts = out_dir / PARTITIONS_DIR
    if keep.resolve().is_relative_to(parts.resolve()):
        raise ConfigError(
            f"run.input lies inside {parts}, which --force-new deletes",
            field="run.input",
            hint="move the input out of the output directory",
        )
    shutil.rmtree(parts, ignore_errors=True)


def _is_shard_name(name: str) -> bool:
    return re.fullmatch(r"(kept|rejected|failed)-\d{5,}\.jsonl", name) is not None


async def run_on_ray(
    config: Config,
    *,
    address: str | None = None,
    workers: int | None = None,
    force_new: bool = False,
    stop: asyncio.Event | None = None,
    lease_term_s: float = 6.0,
    worker_cpus: float | None = None,
    on_started: Callable[[list[object]], None] | None = None,
) -> RayRunResult:
    """Run (or resume) ``config`` on a Ray cluster, split into ``workers`` partitions.

    Args:
        config: a validated config.
        address: the cluster to join (``ray.init(address=...)``; None: the one in
            ``RAY_ADDRESS``, else a new local one). Ignored when Ray is already initialised.
        workers: partitions (one worker actor each); default the cluster's CPU count.
            A resumed output must use the same number.
        force_new: discard an existing output written by another config or split.
        stop: when set, every worker finishes its items in flight and stops resumably.
        lease_term_s: how long a rate lease is good for (renewed every third of it).
        worker_cpus: CPUs each worker reserves (default ``min(1, cluster CPUs / workers)``).
        on_started: called with the worker actor handles once they are started (tests).

    Raises:
        ConfigError: Ray is missing, or the config cannot run partitioned.
        ShardError: ``OUT`` belongs to another config or split.
        EngineError: a worker failed with it (e.g. a missing API key on a node).
    """
    ray = _import_ray()
    stop = stop or asyncio.Event()
    out = config.resolve(config.run.output)
    done = load_manifest(out) if not force_new else None
    split = done.extra.get("partitions") if done is not None else None
    if (
        done is not None
        and done.complete
        and done.config_hash == config_hash(config, resolve_method(config).name)
        and isinstance(split, dict)
        and workers in (None, split.get("count"))
    ):  # nothing to do: no need to join a cluster
        n = int(split.get("count", 1))
        return RayRunResult(
            output=out,
            complete=True,
            already_complete=True,
            workers=n,
            manifest=done,
            summary=f"{out}: already complete ({n} partitions)",
        )
    started_ray = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        started_ray = True
    try:
        # The driver holds OUT for the whole run; each worker's Engine holds its partition.
        with OutputLock(out):
            return await _drive(
                ray,
                config,
                workers=workers,
                force_new=force_new,
                stop=stop,
                lease_term_s=lease_term_s,
                worker_cpus=worker_cpus,
                on_started=on_started,
            )
    finally:
        if started_ray:
            ray.shutdown()


async def _drive(
    ray: ModuleType,
    config: Config,
    *,
    workers: int | None,
    force_new: bool,
    stop: asyncio.Event,
    lease_term_s: float,
    worker_cpus: float | None,
    on_started: Callable[[list[object]], None] | None,
) -> RayRunResult:
    if config.run.input is None:
        raise ConfigError(
            "a Ray run needs run.input (a file every worker can read)", field="run.input"
        )
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    n = workers if workers is not None else max(1, int(cpus))
    if n < 1:
        raise ConfigError(f"--workers must be >= 1 (got {n})")
    out = config.resolve(config.run.output)
    chash = config_hash(config, resolve_method(config).name)
    input_path = config.resolve(config.run.input)
    if force_new:
        _clear_for_new(out, keep=input_path)
    check_partitioned_output(out, n, config_hash=chash)
    merge_args: MergeArgs = {
        "config_hash": chash,
        "input_fingerprint": fingerprint(input_path),
        "method": config.run.method,
        "engine_version": __version__,
        "simulated": config.simulated,
    }
    merged = merge_manifests(out, n, **merge_args)  # claims OUT for this split
    states = merged.extra.get("partitions")
    done = {
        int(s["partition"])
        for s in (states.get("states", []) if isinstance(states, dict) else [])
        if s.get("complete")
    }
    if len(done) == n:
        return RayRunResult(
            output=out,
            complete=True,
            already_complete=True,
            workers=n,
            manifest=merged,
            summary=f"{out}: already complete ({n} partitions)",
        )
    run_id = secrets.token_hex(3)
    cpu_each = worker_cpus if worker_cpus is not None else min(1.0, cpus / n)
    lease_cls = ray.remote(LeaseActor)
    worker_cls = ray.remote(PartitionWorker)
    leases = {
        gate: lease_cls.options(num_cpus=0, name=f"synth-engine:{run_id}:lease:{gate}").remote(
            n, lease_term_s
        )
        for gate in leased_gates(config)
    }
    builds_derived = _builds_derived(config) and 0 not in done
    # The global phase is paid once: partition 0 runs it, then its cache is copied to
    # every partition that has none yet, which replays it from there (docs/scale-out.md).
    share_to = (
        [
            partition_dir(out, k, n)
            for k in range(1, n)
            if k not in done and not (partition_dir(out, k, n) / "cache.sqlite").exists()
        ]
        if n > 1 and _has_global_phase(config)
        else []
    )
    handles: dict[int, Any] = {}
    refs: dict[int, Any] = {}
    results: dict[int, PartitionResult] = {k: {"partition": k, "skipped": True} for k in done}
    watcher: asyncio.Task[None] | None = None

    def start(k: int, share: list[Path]) -> None:
        handles[k] = worker_cls.options(
            num_cpus=cpu_each,
            name=f"synth-engine:{run_id}:worker-{k}",
            max_restarts=0,
            scheduling_strategy="SPREAD",
        ).remote(config, k, n, leases, builds_derived and k == 0, [str(p) for p in share])
        refs[k] = handles[k].run.remote()

    async def forward_stop() -> None:
        await stop.wait()
        for h in handles.values():
            with contextlib.suppress(Exception):
                h.stop.remote()

    try:
        watcher = asyncio.create_task(forward_stop(), name="ray-stop")
        if share_to and 0 in done:
            source = partition_dir(out, 0, n) / "cache.sqlite"
            if source.exists():  # partition 0 finished in an earlier run: copy here
                for target in share_to:
                    target.mkdir(parents=True, exist_ok=True)
                    await asyncio.to_thread(copy_cache, source, target / "cache.sqlite")
        elif share_to:
            start(0, share_to)
            await _until_prepared(ray, handles[0], refs[0])
        if not stop.is_set():
            for k in range(n):
                if k not in done and k not in handles:
                    start(k, [])
        if on_started is not None:
            on_started([handles[k] for k in sorted(handles)])
        for k in range(n):  # stopped while worker 0 ran the global phase alone
            if k not in done and k not in refs:
                results[k] = {"partition": k, "complete": False, "stop_reason": "stopped"}
        others = [k for k in refs if not (builds_derived and k == 0)]
        results.update(zip(others, await _gather(ray, [refs[k] for k in others]), strict=True))
        if builds_derived and 0 in refs:
            # Worker 0 builds the derived datasets once every other partition is done.
            ready = all(results[k].get("complete") for k in range(1, n))
            with contextlib.suppress(Exception):
                await handles[0].merged.remote(str(out) if ready else None, merge_args)
            results[0] = (await _gather(ray, [refs[0]]))[0]
    finally:
        if watcher is not None:
            watcher.cancel()
        for h in handles.values():
            with contextlib.suppress(Exception):
                ray.kill(h)
        lease_states: dict[str, LedgerState] = {}
        for gate, actor in leases.items():
            with contextlib.suppress(Exception):
                lease_states[gate] = await asyncio.wait_for(actor.state.remote(), 10)
            with contextlib.suppress(Exception):
                ray.kill(actor)
    errors = [e for r in results.values() if isinstance(e := r.get("error"), EngineError)]
    reasons = [
        f"partition {k}: {r.get('stop_reason') or r.get('error')}"
        for k, r in sorted(results.items())
        if not r.get("skipped") and not r.get("complete")
    ]
    stop_reason = "; ".join(reasons) or None
    manifest = merge_manifests(out, n, stop_reason=stop_reason, final=True, **merge_args)
    if errors and not manifest.complete:
        raise errors[0]
    parts = [
        {**r, "error": str(r["error"])} if "error" in r else r for _, r in sorted(results.items())
    ]
    return RayRunResult(
        output=out,
        complete=manifest.complete,
        stop_reason=None if manifest.complete else stop_reason or "incomplete",
        workers=n,
        manifest=manifest,
        partitions=[{k: v for k, v in p.items() if k != "summary"} for p in parts],
        leases=lease_states,
        summary=_summary(manifest, n, lease_states),
    )


async def _until_prepared(ray: ModuleType, handle: Any, run_ref: Awaitable[object]) -> None:
    """Wait until worker 0 has shared its global phase, or its run has ended (an error
    or a stop: the others then run the phase themselves, as without sharing)."""
    prepared = asyncio.ensure_future(_awaited(handle.prepared.remote()))
    # The run's own result is awaited again later (_gather); this waiter is left to end
    # with it rather than cancelled, and its outcome is retrieved here so none is lost.
    ended = asyncio.ensure_future(_awaited(run_ref))
    ended.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        await asyncio.wait({prepared, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        prepared.cancel()
        await asyncio.gather(prepared, return_exceptions=True)


async def _awaited(ref: Awaitable[T]) -> T:
    return await ref


async def _gather(ray: ModuleType, refs: list[Awaitable[PartitionResult]]) -> list[PartitionResult]:
    """Await worker results; a lost or failed worker becomes ``{"error": ...}``."""

    async def one(ref: Awaitable[PartitionResult]) -> PartitionResult:
        try:
            res = await ref
            return res
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            return {"complete": False, "error": cause if cause is not None else exc}
        except ray.exceptions.RayError as exc:  # the actor died (killed, node lost)
            return {"complete": False, "error": f"worker lost ({type(exc).__name__})"}

    return list(await asyncio.gather(*(one(r) for r in refs)))


def _summary(manifest: Manifest, n: int, leases: dict[str, LedgerState]) -> str:
    totals = ", ".join(f"{k} {v}" for k, v in manifest.totals.items())
    lines = [
        f"{manifest.method} on Ray: {n} partitions, "
        f"{'complete' if manifest.complete else 'incomplete'}; rows: {totals}"
    ]
    for gate, st in sorted(leases.items()):
        lines.append(
            f"lease {gate}: {st.grants} grants, {st.expired} expired, "
            f"peak allocated {st.max_allocated:.3f} of the quota"
        )
    return "\n".join(lines)

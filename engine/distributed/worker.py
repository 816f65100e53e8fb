"""What runs inside a Ray worker: one partition's Engine, on leases of the fleet's quota.

:func:`partition_config` is the config worker ``k`` of ``n`` runs (its own output
directory, its share of the budgets); :class:`PartitionWorker` runs it as an async actor
and answers the driver (:mod:`engine.distributed.ray_runner`); :class:`LeaseActor` holds
one endpoint's :class:`~engine.distributed.lease.ShareLedger`, and :class:`RayLease` is
a worker's view of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import msgspec

from ..api import Engine, RunResult
from ..config import Config, Limits
from ..errors import ConfigError, EngineError
from ..llm.cache import copy_cache
from .lease import Grant, LeaseClient, LedgerState, ShareLedger
from .merge import merge_manifests, partition_dir

__all__ = (
    "LeaseActor",
    "MergeArgs",
    "PartitionResult",
    "PartitionWorker",
    "RayLease",
    "partition_config",
)

L = TypeVar("L", bound=Limits)


class MergeArgs(TypedDict):
    """What every merge of the partitions' manifests is told about the run."""

    config_hash: str
    input_fingerprint: str
    method: str
    engine_version: str
    simulated: bool


class PartitionResult(TypedDict, total=False):
    """What one partition's run ended with (a dict, as it crosses Ray)."""

    partition: int
    complete: bool
    already_complete: bool
    stop_reason: str | None
    summary: str
    skipped: bool
    error: EngineError | str


def partition_config(config: Config, part: int, parts: int) -> Config:
    """The config worker ``part`` of ``parts`` runs: its own output directory, and its
    share (1/parts) of the run's budgets, so that the fleet stays within them.
    """
    out = partition_dir(config.resolve(config.run.output), part, parts)
    run = msgspec.structs.replace(config.run, output=str(out))
    budget = config.budget
    if budget.any or budget.stages:

        def split(lim: L) -> L:
            return msgspec.structs.replace(
                lim,
                max_cost=None if lim.max_cost is None else lim.max_cost / parts,
                max_tokens=None if lim.max_tokens is None else max(1, lim.max_tokens // parts),
                max_requests=None
                if lim.max_requests is None
                else max(1, lim.max_requests // parts),
            )

        budget = split(budget)
        budget = msgspec.structs.replace(
            budget, stages={name: split(lim) for name, lim in budget.stages.items()}
        )
    return msgspec.structs.replace(config, run=run, budget=budget)


class LeaseActor:
    """One endpoint's ledger, as a Ray actor (methods run one at a time)."""

    def __init__(self, workers: int, term_s: float) -> None:
        self._ledger = ShareLedger(workers, term_s=term_s)

    def acquire(self, worker: str, busy: bool) -> Grant:
        return self._ledger.acquire(worker, busy=busy)

    def release(self, worker: str) -> None:
        self._ledger.release(worker)

    def state(self) -> LedgerState:
        return self._ledger.state()


class RayLease:
    """:class:`~engine.distributed.lease.LeaseServer` over a lease actor's handle."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    async def acquire(self, worker: str, busy: bool) -> Grant:
        grant: Grant = await self._actor.acquire.remote(worker, busy)
        return grant

    async def release(self, worker: str) -> None:
        await self._actor.release.remote(worker)


class PartitionWorker:
    """Runs one partition's Engine inside a Ray worker process (an async actor)."""

    def __init__(
        self,
        config: Config,
        part: int,
        parts: int,
        leases: dict[str, Any],
        builds_derived: bool,
        share_cache_to: list[str] | None = None,
    ) -> None:
        self._config = config
        self._part = part
        self._parts = parts
        self._leases = leases
        self._builds_derived = builds_derived
        self._share_to = [Path(p) for p in share_cache_to or ()]
        self._prepared = asyncio.Event()
        self._stop = asyncio.Event()
        self._merged: asyncio.Future[Path | None] | None = None
        self._merge_args: MergeArgs | None = None
        self._lost = False

    async def stop(self) -> None:
        """Finish the items in flight and stop resumably."""
        self._stop.set()

    async def merged(self, out_dir: str | None, merge_args: MergeArgs) -> None:
        """The driver's answer to :meth:`_wait_merged`: every other partition is done
        (``out_dir`` is the run's output), or one is not (None).
        """
        self._merge_args = merge_args
        if self._merged is None:
            self._merged = asyncio.get_running_loop().create_future()
        if not self._merged.done():
            self._merged.set_result(Path(out_dir) if out_dir is not None else None)

    async def prepared(self) -> None:
        """Return once this partition's global phase is done and its cache copied to
        the partitions named in ``share_cache_to`` (see :func:`run_on_ray`)."""
        await self._prepared.wait()

    async def _share_cache(self) -> None:
        """Engine's ``after_prepare`` hook: copy this partition's response cache, which
        now holds every call of the method's global phase, to the other partitions."""
        source = partition_dir(self._config.resolve(self._config.run.output), 0, self._parts)
        for target in self._share_to:
            target.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(copy_cache, source / "cache.sqlite", target / "cache.sqlite")
        self._prepared.set()

    async def _wait_merged(self) -> Path | None:
        """Engine's ``derived_dir`` hook: wait for the driver, then merge every
        partition's committed rows (this one's included) into ``OUT/manifest.json``.
        """
        if self._merged is None:
            self._merged = asyncio.get_running_loop().create_future()
        out = await self._merged
        if out is not None and self._merge_args is not None:
            merge_manifests(out, self._parts, **self._merge_args)
        return out

    async def run(self) -> PartitionResult:
        """Run (or resume) this partition; return what happened."""
        k, n = self._part, self._parts
        config = partition_config(self._config, k, n)
        worker = f"worker-{k}"
        derived = self._wait_merged if self._builds_derived else None
        share = self._share_cache if self._share_to else None
        async with Engine(
            config, partition=(k, n), derived_dir=derived, after_prepare=share
        ) as engine:
            gates = engine.gates
            for name in self._leases:
                if name not in gates:
                    raise ConfigError(f"no gate {name!r} in worker {k} to lease")
                gates[name].set_share(0.0)  # nothing goes before the first lease
            run: asyncio.Task[RunResult] | None = None

            def lost() -> None:
                self._lost = True
                if run is not None:
                    run.cancel()

            async with contextlib.AsyncExitStack() as stack:
                for name, actor in self._leases.items():
                    await stack.enter_async_context(
                        LeaseClient(gates[name], RayLease(actor), worker, on_lost=lost)
                    )
                run = asyncio.create_task(engine.run(stop=self._stop), name=f"partition-{k}")
                try:
                    result = await run
                except asyncio.CancelledError:
                    if not self._lost:
                        raise
                    return {
                        "partition": k,
                        "complete": False,
                        "stop_reason": "lost the fleet's lease server",
                    }
        return {
            "partition": k,
            "complete": result.complete,
            "already_complete": result.already_complete,
            "stop_reason": result.stop_reason,
            "summary": result.summary,
        }

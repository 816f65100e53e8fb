"""The Engine façade: composes config, endpoints, cache, method, scheduler, sink and metrics.

It holds no protocol logic of its own. It installs no signal handlers and keeps no
global state, so several engines can run in one event loop inside another program;
the CLI adds signals, progress on stderr and exit codes on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import msgspec
import orjson

from .config import (
    AnthropicEndpoint,
    Config,
    EndpointConfig,
    Price,
    config_content,
    config_hash,
)
from .errors import (
    AuthError,
    ConfigError,
    ConnectionLost,
    EndpointError,
    EngineError,
    RunHalted,
    Stalled,
    Timeout,
)
from .io.lock import OutputLock
from .io.manifest import Manifest
from .io.readers import check_readable, fingerprint
from .io.shards import ShardSink
from .llm.anthropic import AnthropicBatches, AnthropicTransport
from .llm.batch import Batcher, BatchLedger, BatchSettings
from .llm.batch_api import BatchAPI, OpenAIBatches
from .llm.budget import Ledger
from .llm.cache import ResponseCache
from .llm.caller import Caller
from .llm.client import Client
from .llm.gate import Gate
from .llm.pool import Pool
from .llm.retry import RetryPolicy
from .llm.transport import TRANSPORTS, Transport
from .methods import create_method, method_config, method_spec, resolve_method
from .methods.base import Finalizing, MethodContext
from .methods.custom import Method as UserMethod
from .metrics.core import Metrics
from .metrics.progress import Progress
from .metrics.report import Report, build_report, render_summary, write_report
from .metrics.status import StatusWriter
from .prices import builtin_price, table_version
from .records import RowOut
from .redaction import Redactor, display_url
from .scheduler import EmitRows, first_engine_error, halt_reason, run_items
from .version import __version__

__all__ = ("Engine", "Row", "RunResult")

log = logging.getLogger("engine")


class RunResult(msgspec.Struct, kw_only=True):
    """What :meth:`Engine.run` did.

    Attributes:
        output: the output directory.
        complete: every item is done (the manifest says ``complete: true``).
        already_complete: the output was complete before this run; nothing was done.
        stop_reason: why the run stopped early (None when complete).
        manifest: the final manifest.
        report: the run report (also in ``OUT/report.json``).
        summary: the one-screen text summary.
    """

    output: Path
    complete: bool
    already_complete: bool = False
    stop_reason: str | None = None
    manifest: Manifest | None = None
    report: Report | None = None
    summary: str = ""


class Row(msgspec.Struct, frozen=True):
    """One output row, as :meth:`Engine.stream` yields it.

    Attributes:
        kind: ``kept``, ``rejected`` or ``failed``.
        data: the row as written to the output (``data["id"]`` is its stable id).
    """

    kind: str
    data: dict[str, Any]

    @property
    def id(self) -> str:
        """The row's stable id (the same on every rerun)."""
        return str(self.data["id"])


Records = Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]]

_SPOOL = "input.jsonl"
# After a stop, calls that cannot start within this many seconds give up (their items
# are left undone), so a paused endpoint cannot hold the drain.
_DRAIN_GRACE_S = 5.0
# Items in flight in batch mode (each holds its state while its call waits in a batch).
_BATCH_WINDOW = 10_000
# After the watchdog stops a stalled run, items still in flight this long (at most; at
# most run.watchdog_stop_s too) are abandoned.
_STALL_GRACE_S = 30.0

_HALT_ADVICE = {
    "budget": "raise the limit (e.g. --set budget.max_cost=...) and run again to resume",
    "endpoint": "fix the endpoint (key, limits, or wait for its quota) and run again to resume",
    "watchdog": "find what is stuck (see the warnings above) and run again to resume",
}


class _Endpoint:
    """One endpoint's live parts."""

    def __init__(self, name: str, cfg: EndpointConfig, client: Transport, gate: Gate) -> None:
        self.name = name
        self.cfg = cfg
        self.client = client
        self.gate = gate


class Engine:
    """Runs one configured generation job.

    Use as an async context manager, which starts in-process simulated endpoints and
    HTTP sessions and closes them on exit::

        async with Engine(config) as engine:
            result = await engine.run()

    Args:
        config: a validated :class:`~engine.config.Config` (see :func:`engine.load_config`).
        progress: stream for live progress (None: no progress display).
        force_new: discard an existing output written by a different config.
        retry_failed: rebuild an existing output of this config from its cache, so that
            only the calls that failed are made again (see ``ShardSink.open``).
        partition: ``(k, n)``: process only items whose index % n == k (one worker of a
            partitioned run, see ``engine.distributed``); its derived datasets are built
            only through ``derived_dir``.
        derived_dir: for a partitioned run, awaited once this partition's items are
            committed: the merged output to build the method's derived datasets from, or
            None when other partitions are unfinished (this run then stops resumably).
        after_prepare: awaited once the method's global phase (``prepare``) is done and
            before any item starts (``engine.distributed`` copies the cache then).
        metrics_port: serve Prometheus metrics on this port while the engine is open
            (0: a free port; None: no endpoint); needs ``synth-engine[metrics]``.
        metrics_host: interface for the metrics endpoint (loopback by default).
        method: run this :class:`engine.Method` subclass instead of ``run.method`` (the
            config's ``run.method`` becomes its ``"module:ClassName"``, which the config
            hash, the output and Ray workers then name it by).

    Attributes:
        metrics_url: the metrics endpoint's URL once open, e.g.
            ``http://127.0.0.1:PORT/metrics`` (None without ``metrics_port``).
    """

    def __init__(
        self,
        config: Config,
        *,
        progress: TextIO | None = None,
        force_new: bool = False,
        retry_failed: bool = False,
        partition: tuple[int, int] | None = None,
        derived_dir: Callable[[], Awaitable[Path | None]] | None = None,
        after_prepare: Callable[[], Awaitable[None]] | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        method: type[UserMethod] | None = None,
    ) -> None:
        if method is not None:
            config = msgspec.structs.replace(
                config, run=msgspec.structs.replace(config.run, method=method_spec(method))
            )
        self.config = config
        self._metrics_addr = None if metrics_port is None else (metrics_host, metrics_port)
        self.metrics_url: str | None = None
        self.method_entry = resolve_method(config)
        self.method_cfg = method_config(config, self.method_entry)  # validate before starting
        self._progress_stream = progress
        self._force_new = force_new
        self._retry_failed = retry_failed
        self._partition = partition
        self._derived_dir = derived_dir
        self._after_prepare = after_prepare
        self._sims: list[Any] = []
        self._endpoints: dict[str, _Endpoint] = {}
        self.metrics = Metrics()
        self.ledger: Ledger | None = None  # the last run's spending ledger
        self.result: RunResult | None = None  # the last run's result
        self._stack = contextlib.AsyncExitStack()
        self._overlap_samples = 0
        self._overlap_all_busy = 0
        # The run's secrets (keys read from the environment): redacted from every row,
        # error message and report.
        self.redactor = Redactor()
        self._stall: Stalled | None = None  # set by the watchdog when it stops the run
        self._price_cache: dict[str, Price] | None = None
        self._batchers: dict[str, Batcher] = {}
        self._batch_ledger: BatchLedger | None = None
        # endpoint -> where its price came from, when not from the config
        self.price_sources: dict[str, str] = {}
        self._guarded: asyncio.Task[Any] | None = None  # the phase the watchdog may cancel

    async def __aenter__(self) -> Engine:
        try:
            for name, ep in self.config.endpoints.items():
                envs = ep.key_envs
                if len(envs) > 1:
                    # A key pool: one member endpoint (own gate, own quota) per key.
                    for i, env in enumerate(envs, 1):
                        member = f"{name}#{i}"
                        self._endpoints[member] = await self._open_endpoint(member, ep, env, name)
                else:
                    self._endpoints[name] = await self._open_endpoint(
                        name, ep, envs[0] if envs else None, name
                    )
            await self._preflight()
            if self._metrics_addr is not None:
                from .metrics.prometheus import PrometheusExporter

                host, port = self._metrics_addr
                exporter = PrometheusExporter(
                    self.metrics, host=host, port=port, prices=self._prices()
                )
                self.metrics_url = (await self._stack.enter_async_context(exporter)).url
        except BaseException:
            await self.aclose()
            raise
        return self

    def _prices(self) -> dict[str, Price]:
        """Open endpoint (or key-pool member) name -> its price: the configured one, else
        the built-in table's for a hosted model (``engine.prices``), where known."""
        if self._price_cache is None:
            prices: dict[str, Price] = {}
            for name, ep in self._endpoints.items():
                if ep.cfg.price is not None:
                    prices[name] = ep.cfg.price
                elif ep.cfg.builtin_price:
                    found = builtin_price(ep.cfg.model, ep.cfg.base_url)
                    if found is not None:
                        prices[name] = Price(prompt=found.prompt, completion=found.completion)
                        self.price_sources[name] = (
                            f"genai-prices {table_version()}: {found.provider}/{found.model}"
                        )
            self._price_cache = prices
        return self._price_cache

    @property
    def gates(self) -> dict[str, Gate]:
        """Endpoint name -> its gate (open endpoints only; for a fleet's rate leases)."""
        return {name: ep.gate for name, ep in self._endpoints.items()}

    async def _preflight(self) -> None:
        """Fail fast on an endpoint that cannot be reached or refuses the key.

        One ``GET /models`` per real endpoint before any paid call: an unreachable
        base_url or a rejected key is one clear error now, not thousands of failed rows
        later. A server without ``/models`` (404) or one that is briefly unwell (5xx) is
        let through: the run's retries handle that.
        """
        for name, ep in self._endpoints.items():
            if ep.cfg.simulated:
                continue
            try:
                await ep.client.models()
            except (ConnectionLost, Timeout) as exc:
                raise EndpointError(
                    f"cannot reach {display_url(ep.client.base_url)} ({exc.reason}); check "
                    f"endpoints.{name}.base_url and that the server is running",
                    endpoint=name,
                ) from exc
            except AuthError:
                raise
            except EndpointError as exc:
                if exc.status == 404:
                    await self._check_v1(name, ep, exc)
                log.debug("preflight of %s: %s (continuing)", name, exc)

    async def _check_v1(self, name: str, ep: _Endpoint, exc: EndpointError) -> None:
        """``GET /models`` said 404: if the server answers under ``/v1``, say so and stop.

        A base_url without ``/v1`` is the most common first mistake; every chat call would
        then fail with 404 too.
        """
        base = ep.client.base_url
        if base.endswith("/v1"):
            log.warning(
                "endpoint %r: GET %s/models answered HTTP 404; if calls fail too, check "
                "endpoints.%s.base_url",
                name,
                display_url(base),
                name,
            )
            return
        try:
            await ep.client.models(base + "/v1")
        except EndpointError:
            log.warning(
                "endpoint %r: GET %s/models answered HTTP 404 (OpenAI-compatible servers "
                "serve under /v1); continuing",
                name,
                display_url(base),
            )
            return
        raise ConfigError(
            f"the endpoint answers HTTP 404 at {display_url(base)}/models but serves "
            f"{display_url(base)}/v1/models",
            path=self.config.source or None,
            field=f"endpoints.{name}.base_url",
            hint=f'write base_url = "{display_url(base)}/v1"',
        ) from exc

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close HTTP sessions and stop simulated endpoints."""
        await self._stack.aclose()

    async def _open_endpoint(
        self, name: str, ep: EndpointConfig, key_env: str | None, config_name: str
    ) -> _Endpoint:
        base_url = ep.base_url
        api_key: str | None = None
        if ep.simulated:
            from .sim import SimServer, SimSettings

            try:
                settings = msgspec.convert({"model": ep.model, **ep.sim}, SimSettings)
            except msgspec.ValidationError as exc:
                raise ConfigError(
                    str(exc),
                    path=self.config.source or None,
                    field=f"endpoints.{config_name}.sim",
                    hint="see docs/config.md for the simulated endpoint's settings",
                ) from exc
            server = SimServer(settings)
            await self._stack.enter_async_context(server)
            base_url = server.url
        elif key_env:
            api_key = os.environ.get(key_env)
            if not api_key:
                raise ConfigError(
                    f"environment variable {key_env} is not set",
                    path=self.config.source or None,
                    field=f"endpoints.{config_name}.api_key_env",
                    hint=f"export {key_env}=<your key>",
                )
            self.redactor.add(api_key)
        factory = TRANSPORTS.get(ep.kind)
        if factory is None:
            raise ConfigError(
                f"endpoints of kind {ep.kind!r} are not supported by this version",
                path=self.config.source or None,
                field=f"endpoints.{config_name}.kind",
                hint=f"use one of: {', '.join(sorted(TRANSPORTS))}",
            )
        options = (
            {"anthropic_version": ep.anthropic_version} if isinstance(ep, AnthropicEndpoint) else {}
        )
        client = factory(
            name,
            base_url,
            api_key=api_key,
            timeout_s=ep.timeout_s,
            connect_timeout_s=ep.connect_timeout_s,
            max_connections=ep.max_concurrency,
            max_response_bytes=ep.max_response_bytes,
            redactor=self.redactor,
            **options,
        )
        self._stack.push_async_callback(client.aclose)
        gate = Gate(
            name,
            max_concurrency=ep.max_concurrency,
            rpm=ep.rpm,
            tpm=ep.tpm,
            adaptive=ep.adaptive_concurrency,
            max_wait_s=ep.max_wait_s,
        )
        return _Endpoint(name, ep, client, gate)

    def _ledger(self, prior: Any) -> Ledger:
        """The run's spending ledger, continuing from what earlier invocations spent."""
        budget = self.config.budget
        return Ledger(
            run=budget if budget.any else None,
            stages={name: lim for name, lim in budget.stages.items() if lim.any},
            prices={name: (p.prompt, p.completion) for name, p in self._prices().items()},
            prior=prior if isinstance(prior, dict) else None,
        )

    def _members(self, config_name: str) -> list[str]:
        """The live endpoints of a configured one: itself, or one per pooled key."""
        if config_name in self._endpoints:
            return [config_name]
        prefix = f"{config_name}#"
        return [name for name in self._endpoints if name.startswith(prefix)]

    def _callers(
        self,
        cache: ResponseCache | None,
        ledger: Ledger | None,
        batchers: Mapping[str, Batcher] | None = None,
    ) -> dict[str, Caller | Pool]:
        """Role -> caller: one endpoint's, or a pool over several endpoints or keys."""
        callers: dict[str, Caller | Pool] = {}
        by_endpoint: dict[str, Caller] = {}
        pools: dict[str, Pool] = {}
        for role in ("strong", "target", "judge"):
            members = [m for ref in self.config.role_endpoints(role) for m in self._members(ref)]
            for name in members:
                if name in by_endpoint:
                    continue
                ep = self._endpoints[name]
                by_endpoint[name] = Caller(
                    name,
                    ep.cfg.model,
                    ep.client,
                    ep.gate,
                    cache=cache,
                    retry=RetryPolicy(ep.cfg.max_retries, rng=random.Random(self.config.run.seed)),
                    params=ep.cfg.params,
                    stream=ep.cfg.stream,
                    structured_output=ep.cfg.structured_output,
                    observer=self.metrics.endpoint(name),
                    ledger=ledger,
                    fail_fast_after=ep.cfg.fail_fast_after,
                    batcher=(batchers or {}).get(name),
                    batch_price=ep.cfg.price.batch if ep.cfg.price is not None else 0.5,
                )
            if len(members) == 1:
                callers[role] = by_endpoint[members[0]]
            else:
                key = "+".join(members)
                if key not in pools:
                    pools[key] = Pool(key, [by_endpoint[m] for m in members])
                callers[role] = pools[key]
        return callers

    def _simulated(self) -> bool:
        """True if any endpoint is configured as, or answered as, the simulated endpoint."""
        return self.config.simulated or any(ep.client.simulated for ep in self._endpoints.values())

    def _sync_gate_metrics(self) -> None:
        for name, ep in self._endpoints.items():
            st = ep.gate.state()
            stats = self.metrics.endpoint(name)
            stats.concurrency_limit = st.concurrency_limit
            stats.rpm_limit = st.rpm
            stats.tpm_limit = st.tpm

    async def _monitor(self, stop: asyncio.Event, interval: float = 0.1) -> None:
        """Sync gate state into metrics, sample endpoint overlap, and run the watchdog.

        The watchdog warns after ``run.watchdog_s`` without progress (no call answered,
        no row written), and after ``run.watchdog_stop_s`` stops the run: a stop is
        asked (items in flight may finish, waiting calls give up) and, if nothing
        finishes within a grace, the phase in flight is cancelled. Either way the run
        ends resumably with a ``watchdog`` stop reason (exit code 3).
        """
        watchdog = self.config.run.watchdog_s
        stop_after = self.config.run.watchdog_stop_s
        warned_at = 0.0
        stalled_at = 0.0
        while True:
            await asyncio.sleep(interval)
            self._sync_gate_metrics()
            busy = [ep.gate.state().in_flight > 0 for ep in self._endpoints.values()]
            if any(busy):
                self._overlap_samples += 1
                self._overlap_all_busy += all(busy)
            if watchdog > 0:
                now = self.metrics.clock()
                idle = now - self.metrics.last_activity_at()
                if idle > watchdog and now - warned_at > watchdog:
                    warned_at = now
                    detail = ", ".join(
                        f"{n}: {st.in_flight} in flight, {st.waiting} waiting, paused {st.paused_for:.0f}s"
                        for n, e in self._endpoints.items()
                        for st in (e.gate.state(),)
                    )
                    log.warning(
                        "no progress for %.0f s: no call answered, no row written (%s)",
                        idle,
                        detail,
                    )
            # Only while work is under way (prepare, items): waiting for other partitions
            # to finish before building derived datasets is not a stall.
            if stop_after > 0 and self._guarded is not None:
                now = self.metrics.clock()
                idle = now - self.metrics.last_activity_at()
                if self._stall is None and idle > stop_after:
                    self._stall = Stalled(
                        f"no progress for {idle:,.0f} s (run.watchdog_stop_s = {stop_after:g})"
                    )
                    stalled_at = now
                    log.warning("%s; stopping", self._stall)
                    stop.set()
                elif (
                    self._stall is not None
                    and now - stalled_at > min(_STALL_GRACE_S, stop_after)
                    and not self._guarded.done()
                ):
                    log.warning("items still stuck after the stop; abandoning them")
                    self._guarded.cancel()

    def _overlap(self) -> dict[str, Any]:
        """How often every endpoint had calls in flight at once (sampled every 0.1 s)."""
        n = self._overlap_samples
        return {
            "samples_with_traffic": n,
            "all_endpoints_busy": self._overlap_all_busy,
            "share_all_busy": round(self._overlap_all_busy / n, 3) if n else None,
        }

    async def stream(
        self, items: Records | None = None, *, stop: asyncio.Event | None = None
    ) -> AsyncIterator[Row]:
        """Run the job and yield its rows as each item finishes.

        The rows are written to the output directory as by :meth:`run` (so a crash or a
        cancellation loses nothing and a rerun resumes), and yielded as well. Rows
        flow with backpressure: while the consumer is busy, the item whose rows wait
        keeps its place in the run's window, so a slow consumer slows the run instead
        of buffering rows. Leaving the loop early (``break``, an exception, a cancelled
        task) cancels the run and leaves the output resumable. The run's
        :class:`RunResult` is in :attr:`result` once the iteration ends.

        A resumed stream yields only the rows of items not committed before; rows of
        items that were yielded but not yet committed when an earlier invocation ended
        are yielded again (same ids), so deduplicate by :attr:`Row.id` if that matters.

        Args:
            items: input records (dicts, as the lines of the method's JSONL input),
                from a list, a generator or an async generator. They are first spooled
                to ``OUT/input.jsonl`` (the engine re-reads its input to resume), then
                run. None: the configured ``run.input``. Only methods whose input is
                JSONL records take items (codeclm, respond, backtranslation).
            stop: when set, stop taking new items, drain and end the iteration.

        Raises:
            ConfigError: ``items`` given to a method whose input is not records.
        """
        # Hand-off: an item's rows go to the consumer and the item waits until every one
        # was taken (its future resolved); only then are they written. Rows the consumer
        # never took are never committed, so a resumed run yields them again.
        queue: asyncio.Queue[tuple[list[RowOut], asyncio.Future[None]] | None] = asyncio.Queue()

        async def emit(rows: list[RowOut]) -> None:
            taken = asyncio.get_running_loop().create_future()
            queue.put_nowait((rows, taken))
            await taken

        async def run() -> RunResult:
            try:
                return await self._run(stop=stop, emit=emit, items=items)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(run(), name="engine-stream")
        try:
            while True:
                handed = await queue.get()
                if handed is None:
                    break
                rows, taken = handed
                for kind, data in rows:
                    yield Row(kind, data)
                if not taken.done():
                    taken.set_result(None)
            self.result = await task
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _spool(self, items: Records) -> Path:
        """Write ``items`` to ``OUT/input.jsonl`` (atomically) and return its path."""
        config = self.config
        if not self.method_entry.records_input:
            raise ConfigError(
                f"method {config.run.method!r} reads its input from files, not records",
                field="run.input",
                hint="call Engine.stream() without items; the configured run.input is used",
            )
        out_dir = config.resolve(config.run.output)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / _SPOOL
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
        # Replace only if different: an unchanged spool keeps the input fingerprint.
        if path.exists() and path.read_bytes() == tmp.read_bytes():
            tmp.unlink()
        else:
            tmp.replace(path)
        return path

    async def run(self, *, stop: asyncio.Event | None = None) -> RunResult:
        """Run the job to completion, or until ``stop`` is set (then drain and stop resumably).

        Re-running on the same output resumes: items already committed are skipped and
        paid-for responses replay from the cache.

        Raises:
            ConfigError: a problem found only now (e.g. a missing API key variable).
            InputError: the input cannot be read.
            ShardError: the output cannot be written, or belongs to another config.
        """
        self.result = await self._run(stop=stop)
        return self.result

    async def _run(
        self,
        *,
        stop: asyncio.Event | None = None,
        emit: EmitRows | None = None,
        items: Records | None = None,
    ) -> RunResult:
        """The run, holding the output directory's lock from first touch to last write.

        Raises:
            OutputLocked: another run holds the output directory (exit code 2).
        """
        with OutputLock(self.config.resolve(self.config.run.output)):
            input_path = await self._spool(items) if items is not None else None
            return await self._run_locked(stop=stop, emit=emit, input_path=input_path)

    async def _drain_on(self, stop: asyncio.Event) -> None:
        """Once a stop is asked, bound how long calls may still wait (see Gate.drain);
        calls waiting for a batch give up at once (the batch keeps running)."""
        await stop.wait()
        for ep in self._endpoints.values():
            ep.gate.drain(_DRAIN_GRACE_S)
        for batcher in self._batchers.values():
            await batcher.drain()

    def _window(self) -> int:
        """Items in flight: the configured window, raised in batch mode so that a batch
        can fill (each item waits on one call at a time; at most 10,000 items)."""
        window = self.config.run.max_items_in_flight
        if self._batchers:
            fill = max(b.max_requests for b in self._batchers.values())
            window = max(window, min(fill, _BATCH_WINDOW))
        return window

    def _open_batchers(self, out_dir: Path, cache: ResponseCache) -> dict[str, Batcher]:
        """A batcher per endpoint in batch mode, over the run's batch ledger."""
        names = [n for n, ep in self._endpoints.items() if ep.cfg.mode == "batch"]
        if not names:
            return {}
        ledger = self._batch_ledger = BatchLedger(out_dir / "cache.sqlite")
        batchers: dict[str, Batcher] = {}
        for name in names:
            ep = self._endpoints[name]
            api: BatchAPI
            if isinstance(ep.client, AnthropicTransport):
                api = AnthropicBatches(ep.client)
            elif isinstance(ep.client, Client):
                api = OpenAIBatches(ep.client)
            else:
                raise ConfigError(
                    f"endpoints of kind {ep.cfg.kind!r} have no batch API",
                    field=f"endpoints.{name}.mode",
                    hint='set mode = "online"',
                )
            batchers[name] = Batcher(
                name,
                api,
                ledger,
                cache,
                BatchSettings(**msgspec.structs.asdict(ep.cfg.batch)),
                on_alive=self.metrics.mark_progress,
            )
        return batchers

    async def _watched(self, coro: Awaitable[Any]) -> Any:
        """Await ``coro`` as a task the watchdog may cancel when the run stalls.

        Raises:
            Stalled: the watchdog cancelled it.
        """
        task = self._guarded = asyncio.ensure_future(coro)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._stall is not None and (current is None or not current.cancelling()):
                raise self._stall from None
            raise
        finally:
            self._guarded = None
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _keep_config(self, out_dir: Path) -> None:
        """Write the effective config to ``OUT/config.json`` (provenance of the output).

        Secrets never get there: keys are not in the config (only their variables'
        names), URL credentials and query values are masked, and the text passes the
        run's redactor.
        """
        doc = msgspec.to_builtins(self.config)
        for ep in doc.get("endpoints", {}).values():
            if isinstance(ep, dict) and isinstance(ep.get("base_url"), str):
                ep["base_url"] = display_url(ep["base_url"])
            sim = ep.get("sim") if isinstance(ep, dict) else None
            if isinstance(sim, dict) and "api_key" in sim:
                sim["api_key"] = "[redacted]"
        data = self.redactor.bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        path = out_dir / "config.json"
        tmp = path.with_name(f".config.json.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("could not write %s (%s)", path, exc.strerror or exc)

    def _on_halt(self, exc: RunHalted) -> None:
        advice = _HALT_ADVICE.get(exc.label, "run again to resume")
        log.warning("%s; stopping (%s)", exc, advice)

    async def _run_locked(
        self,
        *,
        stop: asyncio.Event | None = None,
        emit: EmitRows | None = None,
        input_path: Path | None = None,
    ) -> RunResult:
        config = self.config
        stop = stop or asyncio.Event()
        self._stall = None
        out_dir = config.resolve(config.run.output)
        if input_path is None:
            input_path = config.resolve(config.run.input or "")
        check_readable(input_path)
        sink, resume = ShardSink.open(
            out_dir,
            shard_records=config.run.shard_records,
            config_hash=config_hash(config, self.method_entry.name),
            input_fingerprint=fingerprint(input_path),
            method=config.run.method,
            engine_version=__version__,
            simulated=self._simulated(),
            force_new=self._force_new,
            retry_failed=self._retry_failed,
            config_content=config_content(config, self.method_entry.name),
            protect=[input_path],
            redact=self.redactor.bytes if self.redactor else None,
        )
        if resume.complete:
            sink.abandon()
            return RunResult(
                output=out_dir, complete=True, already_complete=True, manifest=sink.manifest
            )
        self._keep_config(out_dir)
        if resume.discarded:
            log.info("resume: discarded %d unfinished file(s)", len(resume.discarded))
        prior = sink.manifest.extra.get("endpoints")
        prior_endpoints: dict[str, Any] = dict(prior) if isinstance(prior, dict) else {}
        prior_usage = dict(sink.manifest.usage)
        cache = ResponseCache(out_dir / "cache.sqlite")
        ledger = self.ledger = self._ledger(sink.manifest.extra.get("spend"))
        self._batchers = self._open_batchers(out_dir, cache)
        ctx = MethodContext(
            config=config,
            callers=dict(self._callers(cache, ledger, self._batchers)),
            input_path=input_path,
            stage=self.metrics.stage,
            simulated=self._simulated,
            out_dir=out_dir,
        )
        method = create_method(config, ctx, self.method_entry)
        stop_reason: str | None = "error"
        background: list[asyncio.Task[None]] = []
        progress: Progress | None = None
        try:
            if self._progress_stream is not None and config.run.progress != "off":
                use_rich = {"auto": None, "rich": True, "plain": False}[config.run.progress]
                progress = Progress(
                    self.metrics,
                    stream=self._progress_stream,
                    use_rich=use_rich,
                    prices=self._prices(),
                )
                background.append(asyncio.create_task(progress.run(), name="progress"))
            background.append(asyncio.create_task(self._monitor(stop), name="monitor"))
            background.append(asyncio.create_task(self._drain_on(stop), name="drain"))
            background.extend(
                asyncio.create_task(b.run(), name=f"batcher-{n}") for n, b in self._batchers.items()
            )
            # OUT/status.json: the live figures, for a viewer in another process.
            status = StatusWriter(
                out_dir, self.metrics, rows=lambda: sink.rows_written, prices=self._prices()
            )
            background.append(asyncio.create_task(status.run(), name="status"))
            await self._watched(method.prepare())
            if self._after_prepare is not None:
                await self._after_prepare()
            self.metrics.items_total = total = getattr(method, "total", None)
            if total is not None and self._partition is not None:
                k, n = self._partition
                self.metrics.items_total = max(0, total - k + n - 1) // n
            stop_reason = await self._watched(
                run_items(
                    method,
                    window=self._window(),
                    done=resume.done,
                    write=sink.write_item,
                    stop=stop,
                    metrics=self.metrics,
                    emit=emit,
                    partition=self._partition,
                    on_halt=self._on_halt,
                )
            )
            if self._stall is not None:
                stop_reason = halt_reason(self._stall)
            if stop_reason is None and isinstance(method, Finalizing):
                # Derived datasets are built from committed rows only.
                sink.commit()
                source: Path | None = out_dir
                if self._partition is not None:
                    # One partition builds them, over the merged output (engine.distributed).
                    source = None
                    if self._derived_dir is not None:
                        source = await self._derived_dir()
                        if source is None:
                            stop_reason = "other partitions unfinished (derived datasets not built)"
                if source is not None:
                    derived = await method.finalize(source)
                    sink.manifest.extra["derived"] = [msgspec.to_builtins(d) for d in derived]
        except RunHalted as exc:
            # Met before items streamed (e.g. in CodecLM's encode phase), or the watchdog.
            stop_reason = halt_reason(exc)
            self._on_halt(exc)
        except asyncio.CancelledError:
            stop_reason = "cancelled"
            raise
        except BaseExceptionGroup as group:
            # Task groups wrap errors; surface the engine's own (one clear message).
            found = first_engine_error(group)
            if isinstance(found, RunHalted):
                stop_reason = halt_reason(found)
                self._on_halt(found)
            elif found is None:
                raise
            else:
                raise found from group
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if progress is not None:
                with contextlib.suppress(Exception):
                    progress.close()
            self._sync_gate_metrics()
            # Figures accumulate over every invocation that wrote this output.
            sink.manifest.extra["endpoints"] = _accumulate(
                prior_endpoints,
                {
                    name: {
                        "requests": st.requests,
                        "ok": st.ok,
                        "errors": dict(st.errors),
                        "http_429": st.http_429,
                        "retries": st.retries,
                    }
                    for name in self._endpoints
                    for st in (self.metrics.endpoint(name),)
                },
            )
            sink.manifest.usage = _accumulate(
                prior_usage,
                {
                    name: {
                        "prompt_tokens": st.prompt_tokens,
                        "completion_tokens": st.completion_tokens,
                        "requests": st.requests,
                    }
                    for name in self._endpoints
                    for st in (self.metrics.endpoint(name),)
                },
            )
            sink.manifest.extra["spend"] = ledger.to_dict()
            complete = stop_reason is None
            if self._simulated():
                sink.manifest.simulated = True
            # The report goes first: a crash between the two leaves a manifest that is not
            # complete yet, so the rerun finishes the job and writes both (written the
            # other way round, a complete output could be left without a report for good).
            report = build_report(
                self.metrics,
                method=config.run.method,
                simulated=self._simulated(),
                stop_reason=stop_reason,
                method_report={
                    **method.report(),
                    "endpoint_overlap": self._overlap(),
                    **({"price_sources": dict(self.price_sources)} if self.price_sources else {}),
                    **(
                        {
                            "batch": {n: dict(b.stats) for n, b in self._batchers.items()},
                            "online_cost_usd": round(ledger.online_cost, 6),
                        }
                        if self._batchers
                        else {}
                    ),
                },
                prices=self._prices(),
            )
            with contextlib.suppress(EngineError, OSError):
                write_report(
                    out_dir / "report.json",
                    report,
                    redact=self.redactor.bytes if self.redactor else None,
                )
            manifest = sink.close(complete=complete, stop_reason=stop_reason)
            for batcher in self._batchers.values():
                await batcher.aclose()
            if self._batch_ledger is not None:
                self._batch_ledger.close()
                self._batch_ledger = None
            cache.close()
        return RunResult(
            output=out_dir,
            complete=complete,
            stop_reason=stop_reason,
            manifest=manifest,
            report=report,
            summary=render_summary(report),
        )


def _accumulate(prior: Any, now: dict[str, dict[str, Any]]) -> dict[str, Any]:
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

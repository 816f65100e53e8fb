"""The Engine façade: composes config, endpoints, cache, method, scheduler, sink and metrics.

It holds no protocol logic of its own. It installs no signal handlers and keeps no
global state, so several engines can run in one event loop inside another program;
the CLI adds signals, progress on stderr and exit codes on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TextIO

import msgspec

from ..config import Config, config_content, config_hash
from ..errors import ConfigError, EngineError, RunHalted
from ..io.lock import OutputLock
from ..io.readers import check_readable, fingerprint
from ..io.shards import ShardSink
from ..llm.batch import Batcher, BatchLedger
from ..llm.budget import Ledger
from ..llm.cache import ResponseCache
from ..llm.gate import Gate
from ..methods import create_method, method_config, method_spec, resolve_method
from ..methods.base import Finalizing, MethodContext
from ..methods.custom import Method as UserMethod
from ..metrics.core import Metrics
from ..metrics.progress import Progress
from ..metrics.report import build_report, render_summary, write_report
from ..metrics.status import StatusWriter
from ..records import RowOut
from ..redaction import Redactor
from ..scheduler import EmitRows, first_engine_error, halt_reason, run_items
from ..version import __version__
from .endpoints import Endpoints
from .files import accumulate, keep_config, spool
from .results import Records, Row, RunResult
from .watchdog import Monitor

__all__ = ("Engine",)

log = logging.getLogger("engine")


# After a stop, calls that cannot start within this many seconds give up (their items
# are left undone), so a paused endpoint cannot hold the drain.
_DRAIN_GRACE_S = 5.0
_DRAIN_WAIT_S = 15.0  # at most this long for a stop's drain to finish its batch cancels
# Items in flight in batch mode (each holds its state while its call waits in a batch).
_BATCH_WINDOW = 10_000

_HALT_ADVICE = {
    "budget": "raise the limit (e.g. --set budget.max_cost=...) and run again to resume",
    "endpoint": "fix the endpoint (key, limits, or wait for its quota) and run again to resume",
    "watchdog": "find what is stuck (see the warnings above) and run again to resume",
}


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
        self._is_simulated = False  # once True, for good (a row's label asks it each time)
        self._retry_failed = retry_failed
        self._partition = partition
        self._derived_dir = derived_dir
        self._after_prepare = after_prepare
        self.metrics = Metrics()
        self.ledger: Ledger | None = None  # the last run's spending ledger
        self.result: RunResult | None = None  # the last run's result
        self._stack = contextlib.AsyncExitStack()
        # The run's secrets (keys read from the environment): redacted from every row,
        # error message and report.
        self.redactor = Redactor()
        self.endpoints = Endpoints(config, self.metrics, self.redactor, self._stack)
        self._monitor = Monitor(config.run, self.metrics, self.endpoints)
        self._batchers: dict[str, Batcher] = {}
        self._batch_ledger: BatchLedger | None = None

    async def __aenter__(self) -> Engine:
        try:
            await self.endpoints.open()
            await self.endpoints.preflight()
            if self._metrics_addr is not None:
                from ..metrics.prometheus import PrometheusExporter

                host, port = self._metrics_addr
                exporter = PrometheusExporter(
                    self.metrics, host=host, port=port, prices=self.endpoints.prices()
                )
                self.metrics_url = (await self._stack.enter_async_context(exporter)).url
        except BaseException:
            await self.aclose()
            raise
        return self

    @property
    def gates(self) -> dict[str, Gate]:
        """Endpoint name -> its gate (open endpoints only; for a fleet's rate leases)."""
        return self.endpoints.gates

    @property
    def price_sources(self) -> dict[str, str]:
        """Endpoint -> where its price came from, when not from the config."""
        return self.endpoints.price_sources

    def _simulated(self) -> bool:
        """True if any endpoint is configured as, or answered as, the simulated endpoint.

        Asked for every row; an endpoint only ever turns simulated, so a True is kept.
        """
        if not self._is_simulated:
            self._is_simulated = self.config.simulated or self.endpoints.simulated()
        return self._is_simulated

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close HTTP sessions and stop simulated endpoints."""
        await self._stack.aclose()

    def _ledger(self, prior: object) -> Ledger:
        """The run's spending ledger, continuing from what earlier invocations spent."""
        budget = self.config.budget
        return Ledger(
            run=budget if budget.any else None,
            stages={name: lim for name, lim in budget.stages.items() if lim.any},
            prices={name: (p.prompt, p.completion) for name, p in self.endpoints.prices().items()},
            prior=prior if isinstance(prior, dict) else None,
        )

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
        """Spool a stream's items to ``OUT/input.jsonl`` (:func:`engine.api.files.spool`)."""
        config = self.config
        if not self.method_entry.records_input:
            raise ConfigError(
                f"method {config.run.method!r} reads its input from files, not records",
                field="run.input",
                hint="call Engine.stream() without items; the configured run.input is used",
            )
        return await spool(items, config.resolve(config.run.output))

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
        for ep in self.endpoints:
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
        self._monitor = monitor = Monitor(config.run, self.metrics, self.endpoints)
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
        keep_config(config, self.redactor, out_dir)
        if resume.discarded:
            log.info("resume: discarded %d unfinished file(s)", len(resume.discarded))
        prior = sink.manifest.extra.get("endpoints")
        prior_endpoints: dict[str, object] = dict(prior) if isinstance(prior, dict) else {}
        prior_usage = dict(sink.manifest.usage)
        cache = ResponseCache(out_dir / "cache.sqlite")
        ledger = self.ledger = self._ledger(sink.manifest.extra.get("spend"))
        self._batchers, self._batch_ledger = self.endpoints.open_batchers(out_dir, cache)
        ctx = MethodContext(
            config=config,
            callers=dict(self.endpoints.callers(cache, ledger, self._batchers)),
            input_path=input_path,
            stage=self.metrics.stage,
            simulated=self._simulated,
            out_dir=out_dir,
        )
        method = create_method(config, ctx, self.method_entry)
        stop_reason: str | None = "error"
        background: list[asyncio.Task[None]] = []
        drainer: asyncio.Task[None] | None = None
        progress: Progress | None = None
        try:
            if self._progress_stream is not None and config.run.progress != "off":
                use_rich = {"auto": None, "rich": True, "plain": False}[config.run.progress]
                progress = Progress(
                    self.metrics,
                    stream=self._progress_stream,
                    use_rich=use_rich,
                    prices=self.endpoints.prices(),
                )
                background.append(asyncio.create_task(progress.run(), name="progress"))
            background.append(asyncio.create_task(monitor.run(stop), name="monitor"))
            drainer = asyncio.create_task(self._drain_on(stop), name="drain")
            background.append(drainer)
            background.extend(
                asyncio.create_task(b.run(), name=f"batcher-{n}") for n, b in self._batchers.items()
            )
            # OUT/status.json: the live figures, for a viewer in another process.
            status = StatusWriter(
                out_dir,
                self.metrics,
                rows=lambda: sink.rows_written,
                prices=self.endpoints.prices(),
            )
            background.append(asyncio.create_task(status.run(), name="status"))
            await monitor.watched(method.prepare())
            if self._after_prepare is not None:
                await self._after_prepare()
            self.metrics.items_total = total = getattr(method, "total", None)
            if total is not None and self._partition is not None:
                k, n = self._partition
                self.metrics.items_total = max(0, total - k + n - 1) // n
            stop_reason = await monitor.watched(
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
            if monitor.stall is not None:
                stop_reason = halt_reason(monitor.stall)
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
            if drainer is not None and stop.is_set() and not drainer.done():
                # A stop's drain may still be cancelling batches (cancel_on_stop), one of
                # them perhaps on its way: let it finish before the batchers are stopped.
                with contextlib.suppress(TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(drainer), _DRAIN_WAIT_S)
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if progress is not None:
                with contextlib.suppress(Exception):
                    progress.close()
            self.endpoints.sync_metrics()
            # Figures accumulate over every invocation that wrote this output.
            requests, usage = self.endpoints.counters()
            sink.manifest.extra["endpoints"] = accumulate(prior_endpoints, requests)
            sink.manifest.usage = accumulate(prior_usage, usage)
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
                    "endpoint_overlap": monitor.overlap(),
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
                prices=self.endpoints.prices(),
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

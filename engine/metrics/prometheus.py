"""An optional Prometheus endpoint: ``GET /metrics`` served on the run's own event loop.

Nothing is recorded for Prometheus on the hot path: a custom collector reads the run's
:class:`~engine.metrics.core.Metrics` when a scrape arrives and converts it then
(counters, gauges, and our log-bucketed histograms folded into cumulative ``le``
buckets at a fixed ladder of boundaries). Each exporter has its own
``CollectorRegistry``, never the global one, so two engines in one process do not clash.

``prometheus_client`` is an optional dependency (``pip install 'synth-engine[metrics]'``),
imported only when an exporter or collector is created. The HTTP side is an
``aiohttp.web`` app on the current event loop (no thread), listening on 127.0.0.1 by
default. Every metric name and label is documented in ``docs/observability.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from operator import attrgetter
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web

from ..errors import ConfigError
from ..serving import LoopbackServer
from .core import _GROWTH, _MIN_S, EndpointStats, Histogram, Metrics, StageStats
from .report import Priced

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = (
    "LATENCY_BUCKETS_S",
    "PREFIX",
    "MetricsCollector",
    "PrometheusExporter",
    "cumulative_buckets",
)

PREFIX = "synth_engine_"

#: Upper bounds (seconds) of the exported latency buckets, besides ``+Inf``.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0,
)  # fmt: skip

_INSTALL_HINT = "pip install 'synth-engine[metrics]'"


def _require_client() -> None:
    """Import ``prometheus_client`` or raise a :class:`ConfigError` saying how to install it."""
    try:
        import prometheus_client
        import prometheus_client.core
        import prometheus_client.exposition  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "the Prometheus endpoint needs the prometheus_client package, which is not installed",
            field="metrics_port",
            hint=_INSTALL_HINT,
        ) from exc


# ------------------------------------------------------------------ histograms
def _bucket_cutoffs(bounds: tuple[float, ...]) -> tuple[int, ...]:
    """For each bound, how many leading internal buckets fall at or below it.

    Internal bucket 0 holds values under 0.1 ms (represented by 0.05 ms); bucket ``i``
    (1 <= i < last) is represented by its geometric middle, as in
    :meth:`Histogram.percentile`; the last (overflow, one hour or more) by infinity.
    A bucket is counted under ``le=b`` when its representative is at most ``b``, so the
    exported counts are accurate to within one internal bucket (about 5%).
    """
    n = len(Histogram().buckets)
    reps = [_MIN_S / 2.0] + [_MIN_S * _GROWTH ** (i - 0.5) for i in range(1, n - 1)] + [math.inf]
    return tuple(sum(1 for r in reps if r <= b) for b in bounds)


_CUTOFFS = _bucket_cutoffs(LATENCY_BUCKETS_S)
_LE = tuple(repr(b) for b in LATENCY_BUCKETS_S)


def cumulative_buckets(hist: Histogram) -> list[tuple[str, float]]:
    """``hist`` as Prometheus cumulative buckets: ``(le, count)`` pairs ending in ``+Inf``.

    Counts never decrease along the ladder; ``+Inf`` is the exact count. A bound at or
    above the exact maximum counts every value, and one below the exact minimum none.
    """
    out: list[tuple[str, float]] = []
    buckets = hist.buckets
    count = hist.count
    running = 0
    i = 0
    for le, bound, cutoff in zip(_LE, LATENCY_BUCKETS_S, _CUTOFFS, strict=True):
        while i < cutoff:
            running += buckets[i]
            i += 1
        if count == 0 or bound < hist.min:
            n = 0
        elif bound >= hist.max:
            n = count
        else:
            n = running
        out.append((le, float(n)))
    out.append(("+Inf", float(count)))
    return out


# ------------------------------------------------------------------ collector
_S = TypeVar("_S")
_Get = Callable[[_S], float | int | None]

# (name without prefix/suffix, help text, value getter)
_ENDPOINT_COUNTERS: tuple[tuple[str, str, _Get[EndpointStats]], ...] = (
    ("requests", "HTTP attempts sent (retries included, cache hits excluded).",
     attrgetter("requests")),
    ("requests_ok", "HTTP attempts that returned a response.", attrgetter("ok")),
    ("requests_cancelled", "HTTP attempts abandoned because their task was cancelled.",
     attrgetter("cancelled")),
    ("http_429", "HTTP attempts answered with 429 (rate limited).", attrgetter("http_429")),
    ("retries", "Retries scheduled after a failed attempt.", attrgetter("retries")),
    ("cache_hits", "Calls answered from the response cache (nothing sent, nothing paid).",
     attrgetter("cache_hits")),
    ("prompt_tokens", "Prompt tokens paid for (finished attempts).", attrgetter("prompt_tokens")),
    ("completion_tokens", "Completion tokens paid for (finished attempts).",
     attrgetter("completion_tokens")),
    ("cached_prompt_tokens", "Prompt tokens of replayed cache hits (free).",
     attrgetter("cached_prompt_tokens")),
    ("cached_completion_tokens", "Completion tokens of replayed cache hits (free).",
     attrgetter("cached_completion_tokens")),
)  # fmt: skip

_ENDPOINT_GAUGES: tuple[tuple[str, str, _Get[EndpointStats]], ...] = (
    ("in_flight", "HTTP attempts in flight now.", attrgetter("in_flight")),
    ("max_in_flight", "Most HTTP attempts in flight at once so far.", attrgetter("max_in_flight")),
    ("concurrency_limit", "The gate's current concurrency limit (absent until known).",
     attrgetter("concurrency_limit")),
    ("rpm_limit", "Requests-per-minute limit, configured or learned (absent when none).",
     attrgetter("rpm_limit")),
    ("tpm_limit", "Tokens-per-minute limit, configured or learned (absent when none).",
     attrgetter("tpm_limit")),
)  # fmt: skip

_STAGE_COUNTERS: tuple[tuple[str, str, _Get[StageStats]], ...] = (
    ("stage_calls", "Model calls made by the stage (parse retries included).",
     attrgetter("calls")),
    ("stage_ok", "Stage calls whose reply parsed.", attrgetter("ok")),
    ("stage_failed", "Stage calls that failed (endpoint error or parse retries exhausted).",
     attrgetter("failed")),
    ("stage_parse_errors", "Stage replies that did not parse.", attrgetter("parse_errors")),
    ("stage_prompt_tokens", "Prompt tokens recorded by the stage.", attrgetter("prompt_tokens")),
    ("stage_completion_tokens", "Completion tokens recorded by the stage.",
     attrgetter("completion_tokens")),
)  # fmt: skip


class MetricsCollector:
    """A ``prometheus_client`` collector that reads a :class:`Metrics` at scrape time.

    Register it in a private ``CollectorRegistry`` (as :class:`PrometheusExporter` does).

    Args:
        metrics: the run's metrics (read only).
        prices: endpoint name -> price (``engine.config.Price`` fits); priced endpoints
            also export ``synth_engine_cost_usd_total``.

    Raises:
        ConfigError: ``prometheus_client`` is not installed.
    """

    def __init__(self, metrics: Metrics, *, prices: Mapping[str, Priced] | None = None) -> None:
        _require_client()
        self.metrics = metrics
        self.prices: dict[str, Priced] = dict(prices or {})

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family, read from the metrics now."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        m = self.metrics
        endpoints: list[EndpointStats] = list(m.endpoints.values())
        stages: list[StageStats] = list(m.stages.values())

        # Endpoints.
        for name, doc, get in _ENDPOINT_COUNTERS:
            fam = CounterMetricFamily(PREFIX + name, doc, labels=["endpoint"])
            for e in endpoints:
                fam.add_metric([e.name], float(get(e) or 0))
            yield fam
        errors = CounterMetricFamily(
            PREFIX + "request_errors",
            "Failed HTTP attempts by error kind (cancellations excluded).",
            labels=["endpoint", "kind"],
        )
        for e in endpoints:
            for kind, n in sorted(e.errors.items()):
                errors.add_metric([e.name, kind], float(n))
        yield errors
        cost = CounterMetricFamily(
            PREFIX + "cost_usd",
            "USD paid for tokens, from the endpoint's configured price (priced endpoints only).",
            labels=["endpoint"],
        )
        for e in endpoints:
            price = self.prices.get(e.name)
            if price is not None:
                cost.add_metric([e.name], price.cost(e.prompt_tokens, e.completion_tokens))
        yield cost
        for name, doc, get in _ENDPOINT_GAUGES:
            gauge = GaugeMetricFamily(PREFIX + name, doc, labels=["endpoint"])
            for e in endpoints:
                value = get(e)
                if value is not None:
                    gauge.add_metric([e.name], float(value))
            yield gauge
        rpm = GaugeMetricFamily(
            PREFIX + "rpm", "Live requests per minute (attempts finished in the last 60 s).",
            labels=["endpoint"],
        )  # fmt: skip
        tpm = GaugeMetricFamily(
            PREFIX + "tpm", "Live tokens per minute (tokens of attempts finished in the last 60 s).",
            labels=["endpoint"],
        )  # fmt: skip
        for e in endpoints:
            r, t = e.rates()
            rpm.add_metric([e.name], r)
            tpm.add_metric([e.name], t)
        yield rpm
        yield tpm
        for name, doc, attr in (
            ("request_latency_seconds", "Latency of successful HTTP attempts.", "latency"),
            ("ttft_seconds", "Time to first token of streamed successful attempts.", "ttft"),
        ):
            hist = HistogramMetricFamily(PREFIX + name, doc, labels=["endpoint"])
            for e in endpoints:
                h: Histogram = getattr(e, attr)
                hist.add_metric([e.name], cumulative_buckets(h), h.sum)
            yield hist

        # Stages.
        for name, doc, stage_get in _STAGE_COUNTERS:
            fam = CounterMetricFamily(PREFIX + name, doc, labels=["stage"])
            for s in stages:
                fam.add_metric([s.name], float(stage_get(s) or 0))
            yield fam
        stage_latency = HistogramMetricFamily(
            PREFIX + "stage_latency_seconds",
            "Latency of the stage's model calls.",
            labels=["stage"],
        )
        for s in stages:
            stage_latency.add_metric([s.name], cumulative_buckets(s.latency), s.latency.sum)
        yield stage_latency

        # The run.
        yield CounterMetricFamily(
            PREFIX + "items_started", "Input items handed to the method.", value=m.items_started
        )
        yield CounterMetricFamily(
            PREFIX + "items_done", "Input items finished in this run.", value=m.items_done
        )
        yield CounterMetricFamily(
            PREFIX + "items_skipped",
            "Input items skipped because an earlier run finished them.",
            value=m.items_skipped,
        )
        planned = GaugeMetricFamily(
            PREFIX + "items_planned", "Number of input items (absent while unknown)."
        )
        if m.items_total is not None:
            planned.add_metric([], float(m.items_total))
        yield planned
        rows = CounterMetricFamily(
            PREFIX + "rows", "Rows written in this run, by kind.", labels=["kind"]
        )
        for kind, n in m.rows.items():
            rows.add_metric([kind], float(n))
        yield rows
        now = m.clock()
        yield GaugeMetricFamily(
            PREFIX + "elapsed_seconds", "Seconds since the run's metrics were created.",
            value=now - m.started_at,
        )  # fmt: skip
        yield GaugeMetricFamily(
            PREFIX + "idle_seconds",
            "Seconds since a call was last answered or a row written (the watchdog's figure).",
            value=now - m.last_activity_at(),
        )  # fmt: skip


# ------------------------------------------------------------------- exporter
class PrometheusExporter(LoopbackServer):
    """Serves ``GET /metrics`` for one run's metrics on the current event loop.

    Use as ``async with PrometheusExporter(metrics, port=0) as exp: ... exp.url ...``.

    Args:
        metrics: the run's metrics (read at each scrape).
        host: interface to listen on (loopback by default; the data is not secret, but
            nothing is exposed beyond the machine unless asked).
        port: TCP port (0: a free one, see :attr:`port`).
        prices: endpoint name -> price, for ``synth_engine_cost_usd_total``.

    Attributes:
        registry: the exporter's own ``CollectorRegistry``.
        collector: the :class:`MetricsCollector` registered in it.

    Raises:
        ConfigError: ``prometheus_client`` is not installed, or ``port`` is not a TCP port.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        prices: Mapping[str, Priced] | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        if not 0 <= port <= 65535:
            raise ConfigError(
                f"metrics port {port} is not a TCP port",
                field="metrics_port",
                hint="use 1..65535, or 0 for a free port",
            )
        self.collector = MetricsCollector(metrics, prices=prices)
        from prometheus_client import CollectorRegistry

        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition for an ``Accept`` header: ``(body, content type)``.

        Without an ``Accept`` naming another format, this is the classic text format
        (``prometheus_client``'s negotiation, as its own HTTP handlers do).
        """
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    async def _handle(self, request: web.Request) -> web.Response:
        body, content_type = self.render(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    def build_app(self) -> web.Application:
        """An application serving ``GET /metrics``."""
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        return app

    async def start(self) -> None:
        """Start listening (idempotent).

        Raises:
            ConfigError: the address cannot be bound (e.g. the port is taken).
        """
        try:
            await super().start()
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self._requested_port} "
                f"({exc.strerror or exc})",
                field="metrics_port",
                hint="choose a free port, or 0 for any free one",
            ) from exc

    @property
    def url(self) -> str:
        """The scrape URL, e.g. ``http://127.0.0.1:PORT/metrics``."""
        return self.address("/metrics")

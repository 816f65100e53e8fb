"""A run's live endpoints: transports, gates, prices, the callers each role gets.

:class:`Endpoints` opens every configured endpoint (starting an in-process simulated one
where configured, reading keys from the environment, one member per key of a key pool),
checks the real ones before any paid call (:meth:`Endpoints.preflight`), and builds the
callers the method's roles use (:meth:`Endpoints.callers`) and the batchers of endpoints
in batch mode (:meth:`Endpoints.open_batchers`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgspec

from ..config import AnthropicEndpoint, Config, EndpointConfig, Price
from ..errors import AuthError, ConfigError, ConnectionLost, EndpointError, Timeout
from ..llm.anthropic import AnthropicBatches, AnthropicTransport
from ..llm.batch import Batcher, BatchLedger, BatchSettings
from ..llm.batch_api import BatchAPI, OpenAIBatches
from ..llm.budget import Ledger
from ..llm.cache import ResponseCache
from ..llm.caller import Caller
from ..llm.client import Client
from ..llm.gate import Gate
from ..llm.pool import Pool
from ..llm.retry import RetryPolicy
from ..llm.transport import TRANSPORTS, Transport
from ..metrics.core import Metrics
from ..prices import builtin_price, table_version
from ..redaction import Redactor, display_url

__all__ = ("Endpoint", "Endpoints")

log = logging.getLogger("engine")


class Endpoint:
    """One endpoint's live parts (a key pool has one per key, named ``NAME#i``)."""

    def __init__(self, name: str, cfg: EndpointConfig, client: Transport, gate: Gate) -> None:
        self.name = name
        self.cfg = cfg
        self.client = client
        self.gate = gate


class Endpoints:
    """The live endpoints of one engine, by name.

    Args:
        config: the run's config.
        metrics: where each endpoint's figures go.
        redactor: learns every key read, so that no row, error or report shows it.
        stack: owns what is opened (simulated servers, HTTP sessions).
    """

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        redactor: Redactor,
        stack: contextlib.AsyncExitStack,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.redactor = redactor
        self._stack = stack
        self.live: dict[str, Endpoint] = {}
        self._prices: dict[str, Price] | None = None
        # endpoint -> where its price came from, when not from the config
        self.price_sources: dict[str, str] = {}

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self.live.values())

    async def open(self) -> None:
        """Open every configured endpoint (one member per key of a key pool)."""
        for name, ep in self.config.endpoints.items():
            envs = ep.key_envs
            if len(envs) > 1:
                # A key pool: one member endpoint (own gate, own quota) per key.
                for i, env in enumerate(envs, 1):
                    member = f"{name}#{i}"
                    self.live[member] = await self._open(member, ep, env, name)
            else:
                self.live[name] = await self._open(name, ep, envs[0] if envs else None, name)

    async def _open(
        self, name: str, ep: EndpointConfig, key_env: str | None, config_name: str
    ) -> Endpoint:
        base_url = ep.base_url
        api_key: str | None = None
        if ep.simulated:
            from ..sim import SimServer, SimSettings

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
        return Endpoint(name, ep, client, gate)

    async def preflight(self) -> None:
        """Fail fast on an endpoint that cannot be reached or refuses the key.

        One ``GET /models`` per real endpoint before any paid call: an unreachable
        base_url or a rejected key is one clear error now, not thousands of failed rows
        later. A server without ``/models`` (404) or one that is briefly unwell (5xx) is
        let through: the run's retries handle that.
        """
        for name, ep in self.live.items():
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

    async def _check_v1(self, name: str, ep: Endpoint, exc: EndpointError) -> None:
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

    def prices(self) -> dict[str, Price]:
        """Open endpoint (or key-pool member) name -> its price: the configured one, else
        the built-in table's for a hosted model (``engine.prices``), where known."""
        if self._prices is None:
            prices: dict[str, Price] = {}
            for name, ep in self.live.items():
                if ep.cfg.price is not None:
                    prices[name] = ep.cfg.price
                elif ep.cfg.builtin_price:
                    found = builtin_price(ep.cfg.model, ep.cfg.base_url)
                    if found is not None:
                        prices[name] = Price(prompt=found.prompt, completion=found.completion)
                        self.price_sources[name] = (
                            f"genai-prices {table_version()}: {found.provider}/{found.model}"
                        )
            self._prices = prices
        return self._prices

    @property
    def gates(self) -> dict[str, Gate]:
        """Endpoint name -> its gate."""
        return {name: ep.gate for name, ep in self.live.items()}

    def simulated(self) -> bool:
        """True if any endpoint answered as the simulated endpoint."""
        return any(ep.client.simulated for ep in self.live.values())

    def members(self, config_name: str) -> list[str]:
        """The live endpoints of a configured one: itself, or one per pooled key."""
        if config_name in self.live:
            return [config_name]
        prefix = f"{config_name}#"
        return [name for name in self.live if name.startswith(prefix)]

    def callers(
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
            members = [m for ref in self.config.role_endpoints(role) for m in self.members(ref)]
            for name in members:
                if name in by_endpoint:
                    continue
                ep = self.live[name]
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

    def open_batchers(
        self, out_dir: Path, cache: ResponseCache
    ) -> tuple[dict[str, Batcher], BatchLedger | None]:
        """A batcher per endpoint in batch mode, over the run's batch ledger (which the
        caller closes)."""
        names = [n for n, ep in self.live.items() if ep.cfg.mode == "batch"]
        if not names:
            return {}, None
        ledger = BatchLedger(out_dir / "cache.sqlite")
        batchers: dict[str, Batcher] = {}
        for name in names:
            ep = self.live[name]
            api: BatchAPI
            if isinstance(ep.client, AnthropicTransport):
                api = AnthropicBatches(ep.client)
            elif isinstance(ep.client, Client):
                api = OpenAIBatches(ep.client)
            else:
                ledger.close()
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
        return batchers, ledger

    def sync_metrics(self) -> None:
        """Copy each gate's current limits into the endpoint's metrics."""
        for name, ep in self.live.items():
            st = ep.gate.state()
            stats = self.metrics.endpoint(name)
            stats.concurrency_limit = st.concurrency_limit
            stats.rpm_limit = st.rpm
            stats.tpm_limit = st.tpm

    def counters(self) -> tuple[dict[str, dict[str, object]], dict[str, dict[str, object]]]:
        """This invocation's per-endpoint (request counters, token usage) for the manifest."""
        requests: dict[str, dict[str, object]] = {}
        usage: dict[str, dict[str, object]] = {}
        for name in self.live:
            st = self.metrics.endpoint(name)
            requests[name] = {
                "requests": st.requests,
                "ok": st.ok,
                "errors": dict(st.errors),
                "http_429": st.http_429,
                "retries": st.retries,
            }
            usage[name] = {
                "prompt_tokens": st.prompt_tokens,
                "completion_tokens": st.completion_tokens,
                "requests": st.requests,
            }
        return requests, usage

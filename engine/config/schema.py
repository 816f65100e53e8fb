"""The config schema: frozen msgspec Structs for ``[run]``, ``[endpoints.NAME]``, ``[roles]``,
``[budget]`` and their bounds."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

__all__ = (
    "ENDPOINT_KINDS",
    "AnthropicEndpoint",
    "Base",
    "BatchConfig",
    "BudgetConfig",
    "Config",
    "EndpointConfig",
    "Limits",
    "OpenAIEndpoint",
    "Price",
    "RolesConfig",
    "RunConfig",
    "SimEndpoint",
    "as_simulated",
    "endpoint_kind",
)

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
# Every float has a finite upper bound: TOML (and --set) accept ``inf`` and ``nan``, and
# an infinite limit or timeout must fail at validate, not as a traceback mid-run.
PositiveFloat = Annotated[float, msgspec.Meta(gt=0, le=1e15)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0, le=1e15)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=30 * 86400)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=30 * 86400)]
# Requests/min: one request in 100 minutes at least (below, a run cannot progress), and
# at most a billion.
Rpm = Annotated[float, msgspec.Meta(ge=0.01, le=1e9)]
Tpm = Annotated[float, msgspec.Meta(ge=1, le=1e12)]
ResponseBytes = Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)]


class Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Shared options of every config Struct."""


class RunConfig(Base, frozen=True):
    """``[run]``: what to run and where output goes.

    Attributes:
        method: generation method (``codeclm``, ``respond``, ...).
        input: input file, relative to the config file's directory.
        output: output directory, relative to the config file's directory.
        seed: seed of every random choice the engine makes.
        max_items_in_flight: input items processed at once (bounds memory).
        shard_records: rows per output shard before it is committed and rotated.
        progress: "auto" (a bar on a terminal, plain lines otherwise), "rich", "plain", "off".
        watchdog_s: report stuck work after this many seconds with no call answered and no
            row written (0: off).
        watchdog_stop_s: stop the run (resumably, exit code 3) after this many seconds with
            no call answered and no row written (0: never).
        duplicate_ids: what to do with an input record whose ``id`` an earlier record
            already has (``1`` and ``"1"`` are the same id): ``"fail"`` writes it as a failed
            row naming the first occurrence; ``"refuse"`` stops the run before any call
            (exit code 2).
    """

    method: str = "codeclm"
    input: str | None = None
    output: str = "out"
    seed: int = 0
    max_items_in_flight: PositiveInt = 64
    shard_records: PositiveInt = 1000
    progress: Literal["auto", "rich", "plain", "off"] = "auto"
    watchdog_s: Seconds = 300.0
    watchdog_stop_s: Seconds = 3600.0
    duplicate_ids: Literal["fail", "refuse"] = "fail"


class Price(Base, frozen=True):
    """``[endpoints.NAME.price]``: what the endpoint's model costs, in USD per million tokens.

    Attributes:
        prompt: USD per 1M prompt (input) tokens.
        completion: USD per 1M completion (output) tokens.
        batch: the fraction of these prices a batch request costs (OpenAI's and
            Anthropic's batch APIs charge half).
    """

    prompt: NonNegFloat = 0.0
    completion: NonNegFloat = 0.0
    batch: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for the given token counts."""
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1e6


class Limits(Base, frozen=True):
    """Spending limits; a limit left out (None) is not enforced.

    Attributes:
        max_cost: USD (needs a ``price`` on every endpoint the limit covers).
        max_tokens: prompt + completion tokens.
        max_requests: HTTP requests (retries included).
    """

    max_cost: PositiveFloat | None = None
    max_tokens: PositiveInt | None = None
    max_requests: PositiveInt | None = None

    @property
    def any(self) -> bool:
        """Whether any limit is set."""
        return (
            self.max_cost is not None
            or self.max_tokens is not None
            or self.max_requests is not None
        )


class BudgetConfig(Limits, frozen=True):
    """``[budget]``: limits for the whole run, and ``[budget.stages.NAME]`` for one stage.

    Budgets count what the output directory has paid for over every invocation (a
    resumed run continues the count); cache replays are free. When a limit is reached
    no new call starts, the run drains and stops resumably, and says which limit. Budgets
    are not part of the config hash: raise one (``--set budget.max_cost=...``) and rerun
    to continue.

    Attributes:
        stages: stage name (e.g. ``judge``, ``respond``) -> limits of that stage alone.
    """

    stages: dict[str, Limits] = msgspec.field(default_factory=dict)


class BatchConfig(Base, frozen=True):
    """``[endpoints.NAME.batch]``: how batch mode gathers and follows batches.

    Attributes:
        max_requests: most requests in one batch (also capped by the provider's limit:
            OpenAI 50,000, Anthropic 100,000).
        max_bytes: most bytes in one batch (also capped: OpenAI 200 MB, Anthropic 256 MB).
        max_wait_s: the longest a request waits for its batch to fill before a partial
            batch is sent.
        poll_s: the first wait between two polls of a running batch (it doubles).
        poll_max_s: the longest wait between two polls.
        retry_with: requests a batch did not run (expired, cancelled, a transient failure)
            go into a new ``"batch"`` or are sent ``"online"``.
        max_resubmits: how many times one request is submitted again before it fails.
        cancel_on_stop: on Ctrl+C, cancel the batches still running (default: leave them;
            the next run reads their results).
    """

    max_requests: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 50_000
    max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=256 * 1024 * 1024)] = 200 * 1024 * 1024
    max_wait_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 60.0
    poll_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    poll_max_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 300.0
    retry_with: Literal["batch", "online"] = "batch"
    max_resubmits: Annotated[int, msgspec.Meta(ge=0, le=20)] = 3
    cancel_on_stop: bool = False


class _Endpoint(Base, frozen=True, tag_field="kind"):
    """``[endpoints.NAME]``: one endpoint; ``kind`` says which protocol it speaks.

    ``kind`` may be left out: ``base_url = "sim"`` is the simulated endpoint, any other
    URL an OpenAI-compatible one (see :func:`load_config`).

    Attributes:
        base_url: ``http(s)://host:port/v1``, or ``"sim"`` for the in-process simulated endpoint.
        model: model id sent in requests.
        api_key_env: name of the environment variable holding the API key (never the key),
            or a list of names: a pool of keys, each with its own quota (gate), balanced by
            the quota each has left.
        max_concurrency: most requests in flight (the ceiling when concurrency adapts).
        rpm: requests-per-minute limit to respect (None: learn from headers).
        tpm: tokens-per-minute limit to respect (None: learn from headers).
        adaptive_concurrency: "auto" adapts concurrency (AIMD) while no rpm/tpm is known.
        timeout_s: per-request deadline.
        connect_timeout_s: TCP connect deadline.
        max_wait_s: the longest the endpoint's limits may hold a call (a 429's
            Retry-After, a rate-limit debt); a longer wait stops the run resumably (exit
            code 4) instead of sleeping, e.g. on a daily quota.
        max_response_bytes: largest response body accepted (decompressed); a larger one
            fails that call (not retried).
        fail_fast_after: stop the run (resumably, exit code 4) when the endpoint's first
            this many calls all fail with the same non-retryable error, such as HTTP 404
            from a base_url without /v1 (0: never).
        max_retries: retries of a retryable failure before the item fails.
        stream: stream responses (SSE) to measure time to first token.
        structured_output: ask for JSON via ``response_format``: true or "json_schema" (the
            OpenAI shape), "json_object" (``{"type": "json_object", "schema": ...}``, the
            shape llama-cpp-python turns into a grammar), false: parse text.
        params: extra request parameters sent with every call (top_p, seed, stop...).
        price: the model's price (USD per 1M tokens), for the cost report and budgets.
        builtin_price: without ``price``, use the built-in table's (``genai-prices``) for
            a hosted model it knows; never for loopback or private addresses.
        sim: settings of the simulated endpoint when ``base_url = "sim"``.
        mode: ``"online"`` (each call sent at once) or ``"batch"`` (calls gathered into the
            provider's batches, at its batch price; see docs/batch.md).
        batch: how batches are made and followed (``mode = "batch"``).
    """

    model: str
    api_key_env: str | list[str] | None = None
    max_concurrency: PositiveInt = 64
    rpm: Rpm | None = None
    tpm: Tpm | None = None
    adaptive_concurrency: bool | Literal["auto"] = "auto"
    timeout_s: PositiveSeconds = 120.0
    connect_timeout_s: PositiveSeconds = 10.0
    max_wait_s: Annotated[float, msgspec.Meta(ge=1, le=7 * 86400)] = 600.0
    max_response_bytes: ResponseBytes = 8 * 1024 * 1024
    fail_fast_after: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 10
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=100)] = 5
    stream: bool = False
    structured_output: bool | Literal["json_schema", "json_object"] = True
    params: dict[str, object] = msgspec.field(default_factory=dict)
    price: Price | None = None
    builtin_price: bool = True
    sim: dict[str, object] = msgspec.field(default_factory=dict)
    mode: Literal["online", "batch"] = "online"
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)

    @property
    def kind(self) -> str:
        """The protocol: ``openai``, ``sim`` or ``anthropic``."""
        return str(type(self).__struct_config__.tag)

    @property
    def simulated(self) -> bool:
        """Whether this endpoint is the built-in simulated one."""
        return self.kind == "sim"

    @property
    def key_envs(self) -> list[str]:
        """The API key variables (one per pooled key; empty without a key)."""
        if self.api_key_env is None:
            return []
        return [self.api_key_env] if isinstance(self.api_key_env, str) else list(self.api_key_env)


class OpenAIEndpoint(_Endpoint, frozen=True, tag="openai"):
    """An OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, LiteLLM, Ollama, llama.cpp...).

    ``base_url`` is required (an empty one is reported as missing).
    """

    base_url: str = ""


class SimEndpoint(_Endpoint, frozen=True, tag="sim"):
    """synth-engine's simulated endpoint, started in process on 127.0.0.1."""

    base_url: Literal["sim"] = "sim"


class AnthropicEndpoint(_Endpoint, frozen=True, tag="anthropic"):
    """Anthropic's native Messages API.

    Attributes:
        anthropic_version: the ``anthropic-version`` header sent with every request.
    """

    base_url: str = "https://api.anthropic.com/v1"
    anthropic_version: str = "2023-06-01"
    # The Messages API has no response_format: replies are parsed from text.
    structured_output: bool | Literal["json_schema", "json_object"] = False


EndpointConfig = OpenAIEndpoint | SimEndpoint | AnthropicEndpoint
"""``[endpoints.NAME]``: a tagged union on ``kind`` (one Struct per protocol)."""

ENDPOINT_KINDS: dict[str, type[_Endpoint]] = {
    "openai": OpenAIEndpoint,
    "sim": SimEndpoint,
    "anthropic": AnthropicEndpoint,
}


def as_simulated(ep: EndpointConfig, sim: Mapping[str, object], **changes: object) -> SimEndpoint:
    """``ep`` turned into a simulated endpoint with the same model and settings."""
    fields = msgspec.structs.asdict(ep)
    fields.pop("base_url", None)
    fields.pop("anthropic_version", None)
    return SimEndpoint(**{**fields, "sim": sim, **changes})


def endpoint_kind(table: Mapping[str, object]) -> str:
    """The ``kind`` of an endpoint table that does not say it: from its ``base_url``."""
    return "sim" if table.get("base_url") == "sim" else "openai"


class RolesConfig(Base, frozen=True):
    """``[roles]``: which endpoint plays which role.

    A role names one endpoint or a list of endpoints serving the same model: a pool,
    where each call goes to the member with the most quota left.
    """

    strong: str | list[str]
    target: str | list[str] | None = None
    judge: str | list[str] | None = None


class Config(Base, frozen=True):
    """The whole configuration.

    Attributes:
        run: ``[run]``.
        endpoints: ``[endpoints.NAME]`` tables.
        roles: ``[roles]``.
        budget: ``[budget]``: spending limits per run and per stage.
        method: raw ``[method.NAME]`` tables (validated by the method registry).
        source: the config file it was read from ("" when built in code).
        overridden: the dotted keys set with ``--set`` (their errors name ``--set``,
            not a line of the file).
    """

    run: RunConfig = msgspec.field(default_factory=RunConfig)
    endpoints: dict[str, EndpointConfig] = msgspec.field(default_factory=dict)
    roles: RolesConfig | None = None
    budget: BudgetConfig = msgspec.field(default_factory=BudgetConfig)
    method: dict[str, dict[str, object]] = msgspec.field(default_factory=dict)
    source: str = ""
    overridden: list[str] = msgspec.field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        """Directory relative paths in the config are resolved against."""
        return Path(self.source).parent if self.source else Path.cwd()

    def resolve(self, path: str) -> Path:
        """A config path made absolute against :attr:`base_dir`."""
        p = Path(os.path.expanduser(path))
        return Path(os.path.normpath(p if p.is_absolute() else self.base_dir / p))

    @property
    def simulated(self) -> bool:
        """Whether any endpoint is simulated."""
        return any(ep.simulated for ep in self.endpoints.values())

    def role_endpoint(self, role: str) -> str:
        """Endpoint name for ``role`` (target and judge fall back to strong); a pool's
        names joined by ``+``."""
        return "+".join(self.role_endpoints(role))

    def role_endpoints(self, role: str) -> list[str]:
        """Endpoint names for ``role``: one, or the members of a pool."""
        assert self.roles is not None
        ref = getattr(self.roles, role, None)
        if ref is None:
            ref = self.roles.strong
        return [ref] if isinstance(ref, str) else list(ref)

"""The run configuration: TOML decoded into frozen msgspec Structs.

Unknown keys are rejected (a typo fails loudly instead of being ignored). Every error is
a :class:`~engine.errors.ConfigError` naming the file, the line where the key sits (found
by scanning the TOML text, since ``tomllib`` keeps no positions), the dotted key, the
reason and what to do. ``--set dotted.key=value`` overrides are applied to the parsed
document before validation, so they are typed by the same schema; errors in them name
``--set`` instead of a file line.

Method tables (``[method.NAME]``) are kept as raw tables here and validated by the method
registry against each method's own Struct (``engine.methods``), because methods sit above
this module.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from .errors import ConfigError
from .prices import builtin_price
from .redaction import looks_like_secret

__all__ = (
    "Base",
    "BudgetConfig",
    "AnthropicEndpoint",
    "BatchConfig",
    "Config",
    "EndpointConfig",
    "Limits",
    "OpenAIEndpoint",
    "Price",
    "RolesConfig",
    "RunConfig",
    "SimEndpoint",
    "apply_overrides",
    "as_simulated",
    "config_content",
    "config_hash",
    "endpoint_kind",
    "load_config",
    "locate_key",
    "validation_error",
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
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    price: Price | None = None
    builtin_price: bool = True
    sim: dict[str, Any] = msgspec.field(default_factory=dict)
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

_ENDPOINT_KINDS: dict[str, type[_Endpoint]] = {
    "openai": OpenAIEndpoint,
    "sim": SimEndpoint,
    "anthropic": AnthropicEndpoint,
}


def as_simulated(ep: EndpointConfig, sim: dict[str, Any], **changes: Any) -> SimEndpoint:
    """``ep`` turned into a simulated endpoint with the same model and settings."""
    fields = msgspec.structs.asdict(ep)
    fields.pop("base_url", None)
    fields.pop("anthropic_version", None)
    return SimEndpoint(**{**fields, "sim": sim, **changes})


def endpoint_kind(table: dict[str, Any]) -> str:
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
    method: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
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


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# ----------------------------------------------------------------- locating keys
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEYLINE = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")


def _norm_key(raw: str) -> str:
    parts = [p.strip().strip("\"'") for p in raw.split(".")]
    return ".".join(parts)


def locate_key(text: str, dotted: str) -> int | None:
    """1-based line of ``dotted`` (a key or a table) in TOML ``text``, or None.

    Falls back to the line of the nearest enclosing table that is present.
    """
    table = ""
    best: tuple[int, int] | None = None  # (matched length, line)
    in_string: str | None = None  # delimiter of the multi-line string we are inside
    arrays: dict[str, int] = {}  # array-of-tables name -> tables seen so far
    for lineno, line in enumerate(text.splitlines(), 1):
        if in_string is not None:
            # Lines of a multi-line string (e.g. a template with "[Question]") are no keys.
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        m = _HEADER.match(line)
        if m:
            table = _norm_key(m.group(1))
            if line.lstrip().startswith("[["):
                # The Nth [[name]] table is name.N (0-based), as errors name it.
                index = arrays[table] = arrays.get(table, -1) + 1
                if dotted == table and index == 0:
                    return lineno
                table = f"{table}.{index}"
            full = table
        else:
            k = _KEYLINE.match(line)
            if not k:
                continue
            key = _norm_key(k.group(1))
            full = f"{table}.{key}" if table else key
            rest = line[k.end() :]
            for delim in ('"""', "'''"):
                if rest.count(delim) % 2 == 1:
                    in_string = delim
                    break
        if full == dotted:
            return lineno
        if dotted.startswith(full + ".") and (best is None or len(full) > best[0]):
            best = (len(full), lineno)
    return best[1] if best else None


# ------------------------------------------------------------ validation errors
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD = re.compile(r"field `([^`]+)`")


def _dotted(path: str) -> str:
    # msgspec paths look like .endpoints.strong.rpm or .endpoints['a b'] or .x[0]
    out = re.sub(r"\['([^']*)'\]", r".\1", path)
    out = re.sub(r"\[(\d+)\]", r".\1", out)
    return out.lstrip(".")


def _schema_at(root: type, dotted: str) -> Any:
    """The msgspec type info at ``dotted`` in the schema rooted at ``root`` (None if absent)."""
    info: Any = msgspec.inspect.type_info(root)
    for part in [p for p in dotted.split(".") if p]:
        while isinstance(info, msgspec.inspect.UnionType):
            structs = [
                t
                for t in info.types
                if isinstance(t, msgspec.inspect.StructType | msgspec.inspect.DictType)
            ]
            if not structs:
                return None
            info = structs[0]
        if isinstance(info, msgspec.inspect.StructType):
            match = [f for f in info.fields if f.name == part]
            if not match:
                return None
            info = match[0].type
        elif isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        elif isinstance(info, msgspec.inspect.ListType) and part.isdigit():
            info = info.item_type
        else:
            return None
    return info


def _valid_keys(root: type, dotted: str) -> list[str]:
    """Keys valid at ``dotted`` in the schema rooted at ``root`` (for hints)."""
    info = _schema_at(root, dotted)
    while isinstance(info, msgspec.inspect.UnionType):
        structs = [t for t in info.types if isinstance(t, msgspec.inspect.StructType)]
        if not structs:
            break
        info = structs[0]
    if isinstance(info, msgspec.inspect.StructType):
        return [f.name for f in info.fields if f.name not in ("source", "overridden")]
    return []


def _allowed_values(root: type, dotted: str) -> list[str]:
    """The literal values allowed at ``dotted``, if it is an enumerated key."""
    info = _schema_at(root, dotted)
    parent, _, last = dotted.rpartition(".")
    if info is None and last:
        # A tagged union's tag (e.g. a pipeline stage's kind): the tags of its members.
        holder = _schema_at(root, parent) if parent else msgspec.inspect.type_info(root)
        if isinstance(holder, msgspec.inspect.UnionType):
            tags = [
                repr(t.tag)
                for t in holder.types
                if isinstance(t, msgspec.inspect.StructType) and t.tag_field == last
            ]
            if tags:
                return tags
    options = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    values: list[str] = []
    for opt in options:
        if isinstance(opt, msgspec.inspect.LiteralType):
            values.extend(repr(v) for v in opt.values)
        elif isinstance(opt, msgspec.inspect.BoolType):
            values.extend(["true", "false"])
    return values


def validation_error(
    exc: msgspec.ValidationError,
    *,
    root: type,
    path: str | None,
    text: str | None,
    prefix: str = "",
    overridden: frozenset[str] = frozenset(),
) -> ConfigError:
    """Turn a msgspec ValidationError into a ConfigError with file, line, key and hint.

    Args:
        exc: the error.
        root: the Struct type that was being decoded (for the list of valid keys).
        path: the config file.
        text: the config file's text (for line lookup).
        prefix: dotted prefix of ``root`` within the file (e.g. ``method.codeclm``).
        overridden: dotted keys that came from ``--set``.
    """
    m = _AT.match(str(exc))
    assert m is not None
    msg = m.group("msg")
    where = _dotted(m.group("path") or "")
    field = where
    hint: str | None = None
    fm = _FIELD.search(msg)
    if msg.startswith("Object contains unknown field") and fm:
        field = f"{where}.{fm.group(1)}" if where else fm.group(1)
        valid = _valid_keys(root, where)
        reason = "unknown key"
        hint = "remove it or fix the spelling" + (
            f"; valid keys here: {', '.join(valid)}" if valid else ""
        )
    elif msg.startswith("Object missing required field") and fm:
        field = f"{where}.{fm.group(1)}" if where else fm.group(1)
        reason = "required key is missing"
        hint = "add it"
    else:
        reason = msg[0].lower() + msg[1:] if msg else "invalid value"
        allowed = _allowed_values(root, where)
        hint = f"use one of: {', '.join(allowed)}" if allowed else "fix the value's type or range"
    full = f"{prefix}.{field}".strip(".") if prefix else field
    if any(full == k or full.startswith(k + ".") for k in overridden):
        return ConfigError(reason, path="--set", field=full, hint=hint)
    line = locate_key(text, full) if text else None
    return ConfigError(reason, path=path, line=line, field=full or None, hint=hint)


# ------------------------------------------------------------------- overrides
def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(doc: dict[str, Any], overrides: list[str]) -> frozenset[str]:
    """Apply ``dotted.key=value`` overrides to a parsed TOML document in place.

    The value is read as a TOML literal when it is one (``3``, ``true``, ``"x"``,
    ``[1, 2]``) and as a plain string otherwise (``http://127.0.0.1:8000/v1``).

    Returns:
        The dotted keys that were set.

    Raises:
        ConfigError: an override is not ``key=value`` or crosses a non-table value.
    """
    keys: set[str] = set()
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(
                f"cannot read override {item!r}", path="--set", hint="write --set dotted.key=value"
            )
        parts = key.split(".")
        node: Any = doc
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(
                    "is not a table, so it has no sub-keys",
                    path="--set",
                    field=".".join(parts[: i + 1]),
                    hint=f"check the key {key!r}",
                )
            node = nxt
        node[parts[-1]] = _parse_value(raw.strip())
        keys.add(key)
    return frozenset(keys)


# -------------------------------------------------------------------- loading
def _check(config: Config, path: str, text: str, overridden: frozenset[str]) -> None:
    def err(field: str, reason: str, hint: str) -> ConfigError:
        if any(field == k or field.startswith(k + ".") for k in overridden):
            return ConfigError(reason, path="--set", field=field, hint=hint)
        return ConfigError(reason, path=path, line=locate_key(text, field), field=field, hint=hint)

    if not config.endpoints:
        raise err(
            "endpoints",
            "no endpoint is defined",
            "add an [endpoints.NAME] table with base_url and model",
        )
    for name, ep in config.endpoints.items():
        url = ep.base_url
        if not url:
            raise err(
                f"endpoints.{name}.base_url",
                "required key is missing",
                'add base_url, e.g. "http://127.0.0.1:8000/v1", or "sim" for the simulated endpoint',
            )
        if url != "sim" and not re.match(r"^https?://[^/\s]+", url):
            raise err(
                f"endpoints.{name}.base_url",
                f"{url!r} is not an http(s) URL",
                'write e.g. "http://127.0.0.1:8000/v1", or "sim" for the simulated endpoint',
            )
        if ep.sim and not ep.simulated:
            raise err(
                f"endpoints.{name}.sim",
                "sim settings on a real endpoint",
                'remove them or set base_url = "sim"',
            )
    if config.roles is None:
        raise err(
            "roles", "the [roles] table is missing", 'add [roles] with strong = "<endpoint name>"'
        )
    names = ", ".join(sorted(config.endpoints))
    for name, ep in config.endpoints.items():
        envs = ep.key_envs
        if isinstance(ep.api_key_env, list) and (not envs or len(set(envs)) != len(envs)):
            raise err(
                f"endpoints.{name}.api_key_env",
                "a key pool needs one or more distinct variable names",
                'write e.g. api_key_env = ["OPENAI_KEY_1", "OPENAI_KEY_2"]',
            )
        for env in envs:
            # Never echo the value: it may be the key itself, pasted in the wrong place.
            if looks_like_secret(env):
                raise err(
                    f"endpoints.{name}.api_key_env",
                    "this looks like an API key, not the name of the environment variable "
                    "holding one (the value is not shown)",
                    "remove the key from the file, export it (export OPENAI_API_KEY=...) and "
                    'write api_key_env = "OPENAI_API_KEY"; consider rotating the key',
                )
            if not _ENV_NAME.match(env):
                raise err(
                    f"endpoints.{name}.api_key_env",
                    "is not a valid environment variable name",
                    'use letters, digits and underscores, e.g. "OPENAI_API_KEY"',
                )
        if ep.rpm is not None and ep.rpm * ep.max_wait_s / 60.0 < 1.0:
            raise err(
                f"endpoints.{name}.rpm",
                f"{ep.rpm:g} requests/min leaves {60.0 / ep.rpm:,.0f} s between requests, more "
                f"than max_wait_s = {ep.max_wait_s:g}, so the run would stop at its first wait",
                "raise rpm or max_wait_s",
            )
    for role in ("strong", "target", "judge"):
        ref = getattr(config.roles, role)
        if ref is None:
            continue
        refs = [ref] if isinstance(ref, str) else ref
        if not refs or len(set(refs)) != len(refs):
            raise err(
                f"roles.{role}",
                "a pool needs one or more distinct endpoint names",
                f'write e.g. {role} = ["{next(iter(config.endpoints))}", "<another endpoint>"]',
            )
        for one in refs:
            if one not in config.endpoints:
                raise err(
                    f"roles.{role}",
                    f"names endpoint {one!r}, which is not defined",
                    f"use one of: {names}",
                )
        models = {config.endpoints[one].model for one in refs}
        if len(models) > 1:
            raise err(
                f"roles.{role}",
                f"pools endpoints serving different models ({', '.join(sorted(models))})",
                "pool only endpoints with the same model id: rows record one model per "
                "role, and the response cache is keyed by it",
            )
    capped = ["budget"] if config.budget.max_cost is not None else []
    capped += [f"budget.stages.{s}" for s, lim in config.budget.stages.items() if lim.max_cost]
    unpriced = sorted(
        n
        for n, ep in config.endpoints.items()
        if ep.price is None
        and capped
        and not (ep.builtin_price and builtin_price(ep.model, ep.base_url) is not None)
    )
    if capped and unpriced:
        raise err(
            f"{capped[0]}.max_cost",
            f"a cost limit needs prices, and endpoint(s) {', '.join(unpriced)} have none",
            f"add [endpoints.{unpriced[0]}.price] with prompt and completion in USD per 1M tokens",
        )
    if config.run.input is None:
        raise err(
            "run.input", "no input file is given", "set run.input to a JSONL file of seed items"
        )
    out = config.resolve(config.run.output)
    if out == Path(out.anchor) or out == Path.home().resolve():
        raise err(
            "run.output",
            f"{out} is a filesystem root or your home directory",
            "write output to a directory of its own, e.g. out/my-run",
        )


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> Config:
    """Read, override and validate a TOML config.

    Args:
        path: the config file.
        overrides: ``dotted.key=value`` strings (from ``--set``).

    Raises:
        ConfigError: the file is unreadable, not TOML, or does not fit the schema.
    """
    p = str(path)
    try:
        text = Path(p).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("file not found", path=p, hint="check the path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file ({exc})", path=p, hint="check the file") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(
            f"not valid TOML: {reason}",
            path=p,
            line=int(m.group(1)) if m else None,
            hint="fix the syntax",
        ) from exc
    overridden = apply_overrides(doc, overrides or [])
    for internal in ("source", "overridden"):
        if internal in doc:
            raise ConfigError(
                "unknown key",
                path="--set" if internal in overridden else p,
                line=None if internal in overridden else locate_key(text, internal),
                field=internal,
                hint="remove it",
            )
    doc["source"] = str(Path(p).resolve())
    doc["overridden"] = sorted(overridden)
    endpoints = doc.get("endpoints")
    if isinstance(endpoints, dict):
        # Validated one by one first: msgspec reports a dict value's path as
        # ``endpoints[...]``, which names neither the endpoint nor its line.
        for name, table in endpoints.items():
            if isinstance(table, dict) and "kind" not in table:
                table["kind"] = endpoint_kind(table)
            if isinstance(table, dict) and table.get("kind") not in _ENDPOINT_KINDS:
                field = f"endpoints.{name}.kind"
                over = any(field == k or field.startswith(k + ".") for k in overridden)
                raise ConfigError(
                    f"unknown endpoint kind {table.get('kind')!r}",
                    path="--set" if over else p,
                    line=None if over else locate_key(text, field),
                    field=field,
                    hint=f"use one of: {', '.join(repr(k) for k in _ENDPOINT_KINDS)}",
                )
            try:
                msgspec.convert(table, EndpointConfig)
            except msgspec.ValidationError as exc:
                kind = table.get("kind") if isinstance(table, dict) else None
                raise validation_error(
                    exc,
                    root=_ENDPOINT_KINDS.get(str(kind), OpenAIEndpoint),
                    path=p,
                    text=text,
                    prefix=f"endpoints.{name}",
                    overridden=overridden,
                ) from exc
    try:
        config = msgspec.convert(doc, Config)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, root=Config, path=p, text=text, overridden=overridden) from exc
    _check(config, p, text, overridden)
    return config


def config_content(config: Config, method_table: str | None = None) -> dict[str, Any]:
    """Everything in ``config`` that decides the output's content (what is hashed).

    ``method_table`` names the method's ``[method.NAME]`` table when it is not
    ``run.method`` (a user's method named ``"module:Class"`` keeps its options under its
    own name).

    Left out on purpose: where output goes and how fast it is produced (output path,
    window, progress, base_url, keys, limits, timeouts, retries, streaming, budgets,
    endpoint names and pool sizes), so a run can resume against another host serving
    the same model, at another rate, with more keys or a raised budget. Each role maps
    to the distinct specs of what serves it (one for an endpoint, several for a pool of
    different settings), sorted.
    """
    roles: dict[str, list[dict[str, Any]]] | None = None
    if config.roles is not None:
        roles = {}
        for role in ("strong", "target", "judge"):
            # What serves each role, not what the endpoints are called: renaming an
            # endpoint or adding a member serving the same model keeps the content.
            specs = {
                msgspec.json.encode(
                    {
                        "model": ep.model,
                        "structured_output": ep.structured_output,
                        "params": ep.params,
                        "sim": ep.sim,
                        "simulated": ep.simulated,
                    },
                    order="sorted",
                ): None
                for name in config.role_endpoints(role)
                if (ep := config.endpoints.get(name)) is not None
            }
            roles[role] = [msgspec.json.decode(spec) for spec in sorted(specs)]
    return {
        "run": {
            "method": config.run.method,
            "input": config.run.input,
            "seed": config.run.seed,
            "shard_records": config.run.shard_records,
        },
        "roles": roles,
        "method": config.method.get(method_table or config.run.method, {}),
    }


def config_hash(config: Config, method_table: str | None = None) -> str:
    """A 16-hex-digit hash of :func:`config_content` (stable across versions: each role's
    specs are hashed as their sorted JSON texts, as the first release did)."""
    content = config_content(config, method_table)
    roles = content["roles"]
    if roles is not None:
        content = {
            **content,
            "roles": {
                role: sorted(msgspec.json.encode(spec, order="sorted").decode() for spec in specs)
                for role, specs in roles.items()
            },
        }
    blob = msgspec.json.encode(content, order="sorted")
    return hashlib.sha256(blob).hexdigest()[:16]

"""Loading: TOML text, ``--set`` overrides applied to the parsed document, validation by
the schema, then the checks a schema cannot express (roles, keys, bounds)."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import msgspec

from ..errors import ConfigError
from ..prices import builtin_price
from ..redaction import looks_like_secret
from .locate import locate_key, validation_error
from .schema import ENDPOINT_KINDS, Config, EndpointConfig, OpenAIEndpoint, endpoint_kind

__all__ = ("apply_overrides", "load_config")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ------------------------------------------------------------------- overrides
def _parse_value(raw: str) -> object:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(doc: dict[str, object], overrides: list[str]) -> frozenset[str]:
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
        node: dict[str, object] = doc
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
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
            if isinstance(table, dict) and table.get("kind") not in ENDPOINT_KINDS:
                field = f"endpoints.{name}.kind"
                over = any(field == k or field.startswith(k + ".") for k in overridden)
                raise ConfigError(
                    f"unknown endpoint kind {table.get('kind')!r}",
                    path="--set" if over else p,
                    line=None if over else locate_key(text, field),
                    field=field,
                    hint=f"use one of: {', '.join(repr(k) for k in ENDPOINT_KINDS)}",
                )
            try:
                msgspec.convert(table, EndpointConfig)
            except msgspec.ValidationError as exc:
                kind = table.get("kind") if isinstance(table, dict) else None
                raise validation_error(
                    exc,
                    root=ENDPOINT_KINDS.get(str(kind), OpenAIEndpoint),
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

"""What decides an output's content: the part of the config that is hashed into the
manifest, so that a rerun with another config is told apart from a resume."""

from __future__ import annotations

import hashlib
from typing import TypedDict

import msgspec

from .schema import Config

__all__ = ("ConfigContent", "config_content", "config_hash")


class ConfigContent(TypedDict):
    """What :func:`config_content` returns: the ``run`` keys that decide the content,
    each role's specs (None without roles) and the method's table."""

    run: dict[str, object]
    roles: dict[str, list[dict[str, object]]] | None
    method: dict[str, object]


def config_content(config: Config, method_table: str | None = None) -> ConfigContent:
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
    roles: dict[str, list[dict[str, object]]] | None = None
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
    hashed: dict[str, object] = {**content}
    if roles is not None:
        hashed["roles"] = {
            role: sorted(msgspec.json.encode(spec, order="sorted").decode() for spec in specs)
            for role, specs in roles.items()
        }
    blob = msgspec.json.encode(hashed, order="sorted")
    return hashlib.sha256(blob).hexdigest()[:16]

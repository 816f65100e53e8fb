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

from .hashing import config_content, config_hash
from .load import apply_overrides, load_config
from .locate import locate_key, validation_error
from .schema import (
    AnthropicEndpoint,
    Base,
    BatchConfig,
    BudgetConfig,
    Config,
    EndpointConfig,
    Limits,
    OpenAIEndpoint,
    Price,
    RolesConfig,
    RunConfig,
    SimEndpoint,
    as_simulated,
    endpoint_kind,
)

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

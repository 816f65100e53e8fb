"""Method registry: ``run.method`` name -> (config Struct, factory).

Each method validates its own ``[method.NAME]`` table here, with the same file/line/key
errors as the rest of the config.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from ..config import Base, Config, locate_key, validation_error
from ..errors import ConfigError, InputError
from ..io.readers import check_readable, read_jsonl
from ..records import BadInput
from .base import ChecksInput, InputCheck, Method, MethodContext, failed_row
from .respond import RespondConfig, RespondMethod

__all__ = (
    "METHODS",
    "RECORD_INPUT",
    "InputCheck",
    "Method",
    "MethodContext",
    "check_input",
    "create_method",
    "failed_row",
    "method_config",
)

RECORD_INPUT = frozenset({"codeclm", "respond", "backtranslation"})
"""Methods whose input is JSONL records (so ``Engine.stream(items)`` can feed them)."""

Factory = Callable[[Any, MethodContext], Method]

METHODS: dict[str, tuple[type[Base], Factory]] = {
    "respond": (RespondConfig, RespondMethod),
}


# Methods in their own modules, registered when present: (module, config class, method class).
_OPTIONAL = (
    ("codeclm", "CodecLMConfig", "CodecLMMethod"),
    ("backtranslation", "BacktranslationConfig", "BacktranslationMethod"),
    ("selfguide", "SelfGuideConfig", "SelfGuideMethod"),
    ("lab", "LabConfig", "LabMethod"),
)


def _register_optional() -> None:
    import importlib

    for module, cfg_name, method_name in _OPTIONAL:
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{module}":
                raise
            continue
        METHODS[module] = (getattr(mod, cfg_name), getattr(mod, method_name))


_register_optional()


def method_config(config: Config) -> Base:
    """The validated config Struct of ``config.run.method``.

    Raises:
        ConfigError: unknown method, or its table does not fit the method's schema.
    """
    name = config.run.method
    text = None
    if config.source:
        try:
            text = Path(config.source).read_text(encoding="utf-8")
        except OSError:
            text = None
    for table in config.method:
        if table not in METHODS:
            raise ConfigError(
                f"unknown method table {table!r}",
                path=config.source or None,
                line=locate_key(text, f"method.{table}") if text else None,
                field=f"method.{table}",
                hint=f"methods: {', '.join(sorted(METHODS))}",
            )
    if name not in METHODS:
        raise ConfigError(
            f"unknown method {name!r}",
            path=config.source or None,
            line=locate_key(text, "run.method") if text else None,
            field="run.method",
            hint=f"choose one of: {', '.join(sorted(METHODS))}",
        )
    schema, _ = METHODS[name]
    try:
        return msgspec.convert(config.method.get(name, {}), schema)
    except msgspec.ValidationError as exc:
        raise validation_error(
            exc, root=schema, path=config.source or None, text=text, prefix=f"method.{name}"
        ) from exc


def create_method(config: Config, ctx: MethodContext) -> Method:
    """Build the configured method."""
    cfg = method_config(config)
    _, factory = METHODS[config.run.method]
    return factory(cfg, ctx)


_RECORD_FIELDS = {"respond": ("instruction",), "codeclm": ("instruction",)}
"""Fields the JSONL-record methods without their own ``check_input`` require."""


class _NoStage:
    calls = ok = failed = parse_errors = 0


def check_input(config: Config) -> InputCheck:
    """Read ``config``'s input the way ``run`` will, without calling any endpoint.

    Raises:
        ConfigError: the method's table is invalid.
    """
    cfg = method_config(config)
    path = config.resolve(config.run.input or "")
    try:
        check_readable(path)
    except InputError as exc:
        return InputCheck.failed(exc)
    ctx = MethodContext(config=config, callers={}, input_path=path, stage=lambda _: _NoStage())
    _, factory = METHODS[config.run.method]
    if hasattr(factory, "check_input"):
        method = factory(cfg, ctx)
        if isinstance(method, ChecksInput):
            return method.check_input()
    check = InputCheck()
    try:
        for rec in read_jsonl(path, required=_RECORD_FIELDS.get(config.run.method, ())):
            if isinstance(rec, BadInput):
                check.items_bad += 1
                file, _, line = rec.source.rpartition(":")
                check.add_problem(
                    file or rec.source, int(line) if line.isdigit() else None, rec.reason
                )
            else:
                check.items_ok += 1
    except InputError as exc:
        return InputCheck.failed(exc)
    return check

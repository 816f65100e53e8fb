"""Method registry: ``run.method`` -> the method to run, its options and capabilities.

``run.method`` names a built-in method (``codeclm``, ``respond``...), a user's
:class:`~engine.methods.custom.Method` subclass as ``"package.module:ClassName"``, or one
registered by an installed package under the entry-point group ``synth_engine.methods``
(so a method can live in its own package). Each method validates its own
``[method.NAME]`` table here, with the same file/line/key errors as the rest of the
config.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from ..config import Base, Config, locate_key, validation_error
from ..errors import ConfigError, InputError
from ..io.readers import check_readable, read_jsonl
from ..records import BadInput
from .adapter import Adapter
from .base import InputCheck, Method, MethodContext, failed_row
from .custom import Method as UserMethod
from .custom import MethodConfig

__all__ = (
    "ENTRY_POINT_GROUP",
    "InputCheck",
    "Method",
    "MethodContext",
    "MethodEntry",
    "check_input",
    "create_method",
    "failed_row",
    "method_config",
    "method_spec",
    "resolve_method",
)

ENTRY_POINT_GROUP = "synth_engine.methods"
"""Entry-point group under which an installed package registers methods by name."""

Factory = Callable[[Any, MethodContext], Method]


def _public_methods() -> dict[str, type[UserMethod]]:
    """Built-in methods written on the public method API, by name."""
    from .backtranslation import Backtranslation
    from .codeclm import CodecLM
    from .lab import LabMethod
    from .pipeline import PipelineMethod
    from .respond import Respond
    from .selfguide import SelfGuideMethod

    return {
        "pipeline": PipelineMethod,
        "codeclm": CodecLM,
        "backtranslation": Backtranslation,
        "selfguide": SelfGuideMethod,
        "lab": LabMethod,
        "respond": Respond,
    }


PUBLIC_METHODS = _public_methods()


class MethodEntry:
    """A resolved method: its table name, options Struct, factory and capabilities.

    Attributes:
        name: the method's name, and the name of its ``[method.NAME]`` table.
        config_type: the Struct its table is validated against.
        factory: ``(options, MethodContext) -> Method`` (the engine's internal protocol).
        records_input: its input is JSONL records (``Engine.stream(items)`` can feed it).
        global_phase: its ``prepare`` does work every item depends on.
        required_fields: fields each input record must have (for ``validate``).
        finalizes: it builds derived datasets once every item is committed.
    """

    def __init__(
        self,
        name: str,
        config_type: type[Base],
        factory: Factory,
        *,
        records_input: bool,
        global_phase: bool,
        required_fields: tuple[str, ...] = (),
        finalizes: bool = False,
        check: Callable[[Any, Config], None] | None = None,
    ) -> None:
        self.name = name
        self.config_type = config_type
        self.factory = factory
        self.records_input = records_input
        self.global_phase = global_phase
        self.required_fields = required_fields
        self.finalizes = finalizes
        self.check = check


class _NoOptions(MethodConfig, frozen=True):
    """A method without options: its table, if any, must be empty."""


def _user_entry(cls: type[UserMethod]) -> MethodEntry:
    def factory(options: Any, ctx: MethodContext) -> Method:
        return Adapter(cls(options), ctx)

    return MethodEntry(
        cls.name,
        cls.Config or _NoOptions,
        factory,
        records_input=cls.records_input,
        global_phase=cls.global_phase,
        required_fields=cls.required_fields,
        finalizes=cls.finalize is not UserMethod.finalize,
        check=cls.check_options,
    )


def method_spec(cls: type[UserMethod]) -> str:
    """The ``run.method`` value that names ``cls``: ``"package.module:ClassName"``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def _config_text(config: Config) -> str | None:
    if not config.source:
        return None
    try:
        return Path(config.source).read_text(encoding="utf-8")
    except OSError:
        return None


def resolve_method(config: Config) -> MethodEntry:
    """What ``config.run.method`` names: a built-in, ``"module:Class"`` or an entry point.

    Raises:
        ConfigError: nothing by that name, or it is not a method.
    """
    spec = config.run.method
    if spec in PUBLIC_METHODS:
        return _user_entry(PUBLIC_METHODS[spec])
    text = _config_text(config)

    def refuse(reason: str, hint: str) -> ConfigError:
        return ConfigError(
            reason,
            path="--set" if "run.method" in config.overridden else (config.source or None),
            line=None
            if "run.method" in config.overridden or not text
            else locate_key(text, "run.method"),
            field="run.method",
            hint=hint,
        )

    found: object = None
    if ":" in spec:
        module, _, qualname = spec.partition(":")
        try:
            found = importlib.import_module(module)
        except ImportError as exc:
            raise refuse(
                f"cannot import module {module!r} ({exc})",
                "check the module path and that its package is installed or on PYTHONPATH",
            ) from exc
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if found is None:
            raise refuse(
                f"module {module!r} has no {qualname!r}",
                "check the class name after the colon",
            )
    else:
        from importlib.metadata import entry_points

        points = entry_points(group=ENTRY_POINT_GROUP, name=spec)
        if points:
            found = next(iter(points)).load()
    if found is None:
        raise refuse(
            f"unknown method {spec!r}",
            f"choose one of: {', '.join(sorted(PUBLIC_METHODS))}, or name your own as "
            '"package.module:ClassName"',
        )
    if not (isinstance(found, type) and issubclass(found, UserMethod)):
        raise refuse(
            f"{spec!r} is not a method (a subclass of engine.Method)",
            "name a class that subclasses engine.Method",
        )
    return _user_entry(found)


def method_config(config: Config, entry: MethodEntry | None = None) -> Base:
    """The validated options Struct of the configured method.

    Raises:
        ConfigError: unknown method, or its table does not fit the method's schema.
    """
    entry = entry or resolve_method(config)
    text = _config_text(config)
    known = {*PUBLIC_METHODS, entry.name}
    for table in config.method:
        if table not in known:
            raise ConfigError(
                f"unknown method table {table!r}",
                path=config.source or None,
                line=locate_key(text, f"method.{table}") if text else None,
                field=f"method.{table}",
                hint=f"methods: {', '.join(sorted(known))}",
            )
    try:
        options = msgspec.convert(config.method.get(entry.name, {}), entry.config_type)
    except msgspec.ValidationError as exc:
        raise validation_error(
            exc,
            root=entry.config_type,
            path=config.source or None,
            text=text,
            prefix=f"method.{entry.name}",
            overridden=frozenset(config.overridden),
        ) from exc
    if entry.check is not None:
        entry.check(options, config)
    return options


def create_method(config: Config, ctx: MethodContext, entry: MethodEntry | None = None) -> Method:
    """Build the configured method."""
    entry = entry or resolve_method(config)
    return entry.factory(method_config(config, entry), ctx)


class _NoStage:
    calls = ok = failed = parse_errors = 0


def check_input(config: Config) -> InputCheck:
    """Read ``config``'s input the way ``run`` will, without calling any endpoint.

    Raises:
        ConfigError: the method's table is invalid.
    """
    entry = resolve_method(config)
    cfg = method_config(config, entry)
    path = config.resolve(config.run.input or "")
    try:
        check_readable(path)
    except InputError as exc:
        return InputCheck.failed(exc)
    ctx = MethodContext(config=config, callers={}, input_path=path, stage=lambda _: _NoStage())
    method = entry.factory(cfg, ctx)
    found = method.input_check() if isinstance(method, Adapter) else None
    if found is not None:
        return found
    check = InputCheck()
    try:
        for rec in read_jsonl(path, required=entry.required_fields):
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

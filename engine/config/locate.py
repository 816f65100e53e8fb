"""Where a config error is: the line of a dotted key in the TOML text, and a msgspec
validation error turned into a :class:`~engine.errors.ConfigError` naming file, line,
key, valid keys or values."""

from __future__ import annotations

import re

import msgspec

from ..errors import ConfigError

__all__ = ("locate_key", "validation_error")
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


def _schema_at(root: type, dotted: str) -> msgspec.inspect.Type | None:
    """The msgspec type info at ``dotted`` in the schema rooted at ``root`` (None if absent)."""
    info: msgspec.inspect.Type = msgspec.inspect.type_info(root)
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

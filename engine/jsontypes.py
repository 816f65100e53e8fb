"""Types for JSON documents: what orjson and msgspec decode to and encode from.

How the engine types a JSON value (issue 20: no untyped escape hatch where a type is
known):

* a document with known keys that the code builds or reads by key gets a msgspec
  Struct (decoded and validated) or a ``TypedDict`` (built, or read back as built);
* a value the code only passes along (to orjson, msgspec, a log line) is ``object``,
  a mapping of such values ``Mapping[str, object]``;
* a document whose keys the code does not fix (an input record, a request body the
  simulated endpoint checks, a row the viewer shows) is :data:`JSON` or
  :data:`JSONObject`, narrowed with ``isinstance`` where it is read.

The escape hatch stays only where a library is untyped (pyarrow, Ray handles), where
arguments are forwarded verbatim to a typed callee (``**params`` of ``Caller.chat``),
and where callers (tests included) read a report's or a row's nested fields by key.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ("JSON", "JSONObject")

JSON: TypeAlias = "None | bool | int | float | str | list[JSON] | dict[str, JSON]"
"""A JSON value, as decoded (arrays are lists, objects are dicts with str keys)."""

JSONObject: TypeAlias = "dict[str, JSON]"
"""A JSON object."""

"""Types for JSON documents: what orjson and msgspec decode to and encode from.

Code that reads a JSON document whose keys it does not fix (an input record, a
response body, a report read back) takes :data:`JSON` and narrows it with
``isinstance``; code that builds one takes :data:`JSONObject`. A document with
known keys gets a msgspec Struct or a ``TypedDict`` instead, where it is read.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = ("JSON", "JSONObject")

JSON: TypeAlias = "None | bool | int | float | str | list[JSON] | dict[str, JSON]"
"""A JSON value, as decoded (arrays are lists, objects are dicts with str keys)."""

JSONObject: TypeAlias = "dict[str, JSON]"
"""A JSON object."""

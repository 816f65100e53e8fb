"""JSON values that validate against a request's JSON schema (``response_format``).

Supports object (properties, required, additionalProperties false), array (items,
minItems, maxItems, prefixItems), string (minLength, maxLength, enum, a few formats),
integer and number (minimum, maximum, exclusive bounds; default 1..10), boolean, null,
enum, const, anyOf/oneOf (the first option), allOf (merged) and local ``$ref``. Free
strings start with ``"[simulated] "`` (cut short only by a ``maxLength`` below 12) and
are 3-8 words drawn from the given words (the prompt's, in the simulated endpoint); a
string field that holds the answer (named ``answer``, ``label``, ``response``...,
or the only string of the top object) is one of the prompt's listed answers when it
lists some. Enum and const values, and ``format`` strings (date-time, date, time,
uuid), are used verbatim. ``pattern`` is not honoured.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from ..jsontypes import JSON, JSONObject
from .reply import LABEL, VOCAB

__all__ = ("schema_instance",)

_MAX_DEPTH = 12
_ANSWER_FIELDS = frozenset(
    {
        "answer",
        "response",
        "label",
        "output",
        "class",
        "category",
        "prediction",
        "choice",
        "sentiment",
        "result",
        "verdict",
        "classification",
    }
)


def _number(value: JSON) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _bounds(node: JSONObject, integer: bool) -> tuple[float, float]:
    lo = _number(node.get("minimum"))
    hi = _number(node.get("maximum"))
    ex_lo = node.get("exclusiveMinimum")
    ex_hi = node.get("exclusiveMaximum")
    step = 1.0 if integer else 0.01
    if isinstance(ex_lo, int | float) and not isinstance(ex_lo, bool):
        lo = max(lo, ex_lo + step) if lo is not None else ex_lo + step
    if isinstance(ex_hi, int | float) and not isinstance(ex_hi, bool):
        hi = min(hi, ex_hi - step) if hi is not None else ex_hi - step
    if lo is None and hi is None:
        lo, hi = 1.0, 10.0
    elif lo is None:
        assert hi is not None
        lo = min(1.0, hi)
    elif hi is None:
        hi = max(10.0, lo)
    if integer:
        lo, hi = float(math.ceil(lo)), float(math.floor(hi))
    return lo, max(lo, hi)


def _resolve(root: JSONObject, ref: str) -> JSON:
    if not ref.startswith("#"):
        return {}
    node: JSON = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return {}
    return node


def _is_free_string(node: JSON) -> bool:
    return (
        isinstance(node, dict)
        and node.get("type") == "string"
        and "enum" not in node
        and "const" not in node
        and "format" not in node
    )


class _Filler:
    """One schema instance's draws (``rng``, ``words``, ``labels``)."""

    def __init__(
        self,
        root: JSONObject,
        rng: random.Random,
        words: Sequence[str],
        labels: Sequence[str],
    ) -> None:
        self.root = root
        self.rng = rng
        self.words = words
        self.labels = labels

    def sentence(self, count: int) -> str:
        return " ".join(self.rng.choices(self.words, k=count))

    def string(self, node: JSONObject, answer: bool) -> str:
        rng = self.rng
        fmt = node.get("format")
        if fmt == "date-time":
            return "2024-01-01T00:00:00Z"
        if fmt == "date":
            return "2024-01-01"
        if fmt == "time":
            return "00:00:00Z"
        if fmt == "uuid":
            return "%08x-%04x-4%03x-8%03x-%012x" % (  # noqa: UP031 - fixed-width hex groups
                rng.getrandbits(32),
                rng.getrandbits(16),
                rng.getrandbits(12),
                rng.getrandbits(12),
                rng.getrandbits(48),
            )
        if answer and self.labels:
            text = f"{LABEL} {rng.choice(self.labels)}"
        else:
            text = f"{LABEL} {self.sentence(rng.randint(3, 8))}"
        min_len = node.get("minLength")
        if isinstance(min_len, int):
            while len(text) < min_len:
                text += " " + self.sentence(4)
        max_len = node.get("maxLength")
        if isinstance(max_len, int) and len(text) > max_len:
            text = text[:max_len].rstrip() if max_len > len(LABEL) else text[:max_len]
            if isinstance(min_len, int) and len(text) < min_len:
                text = text.ljust(min_len, "x")
        return text

    def obj(self, node: JSONObject, depth: int) -> JSONObject:
        props = node.get("properties")
        if not isinstance(props, dict):
            return {}
        required = node.get("required")
        keep = set(required) if isinstance(required, list) and depth > _MAX_DEPTH else None
        strings = [k for k, v in props.items() if _is_free_string(v)]
        only = strings[0] if depth == 0 and len(strings) == 1 else None
        return {
            name: self.value(sub, depth + 1, answer=name == only or name.lower() in _ANSWER_FIELDS)
            for name, sub in props.items()
            if keep is None or name in keep
        }

    def array(self, node: JSONObject, depth: int) -> list[JSON]:
        min_items = node.get("minItems")
        max_items = node.get("maxItems")
        lo = max(1, min_items) if isinstance(min_items, int) else 1
        hi = max(lo, 4)
        if isinstance(max_items, int):
            hi = min(hi, max_items)
            lo = min(lo, hi)
        if depth > _MAX_DEPTH:
            hi = lo = min_items if isinstance(min_items, int) else 0
        count = self.rng.randint(lo, hi)
        items = node.get("items", {})
        prefix = node.get("prefixItems")
        out: list[JSON] = []
        if isinstance(prefix, list):
            out = [self.value(p, depth + 1) for p in prefix[:count]]
        if items is False:
            return out
        out.extend(self.value(items, depth + 1) for _ in range(count - len(out)))
        return out

    def value(self, node: JSON, depth: int, *, answer: bool = False) -> JSON:
        if not isinstance(node, dict):
            return None
        rng = self.rng
        if "$ref" in node:
            if depth > _MAX_DEPTH:
                return None
            return self.value(_resolve(self.root, str(node["$ref"])), depth + 1, answer=answer)
        if "const" in node:
            return node["const"]
        enum = node.get("enum")
        if isinstance(enum, list) and enum:
            return rng.choice(enum)
        for key in ("anyOf", "oneOf"):
            options = node.get(key)
            if isinstance(options, list) and options:
                return self.value(options[0], depth + 1, answer=answer)
        all_of = node.get("allOf")
        if isinstance(all_of, list) and all_of:
            merged: JSONObject = {k: v for k, v in node.items() if k != "allOf"}
            for part in all_of:
                if isinstance(part, dict):
                    merged.update(part)
            return self.value(merged, depth + 1, answer=answer)
        kind = node.get("type")
        if isinstance(kind, list):
            non_null = [k for k in kind if k != "null"]
            kind = non_null[0] if non_null else "null"
        if kind is None:
            if "properties" in node:
                kind = "object"
            elif "items" in node:
                kind = "array"
            else:
                kind = "string"
        if kind == "object":
            return self.obj(node, depth)
        if kind == "array":
            return self.array(node, depth)
        if kind == "string":
            return self.string(node, answer)
        if kind == "integer":
            lo_f, hi_f = _bounds(node, integer=True)
            return rng.randint(int(lo_f), int(hi_f))
        if kind == "number":
            lo_f, hi_f = _bounds(node, integer=False)
            return min(hi_f, max(lo_f, round(rng.uniform(lo_f, hi_f), 2)))
        if kind == "boolean":
            return rng.random() < 0.5
        return None


def schema_instance(
    schema: JSONObject,
    rng: random.Random,
    words: Sequence[str] | None = None,
    labels: Sequence[str] = (),
) -> JSON:
    """A JSON value that validates against ``schema``, drawn with ``rng`` (see the module
    docstring).

    Args:
        schema: the JSON schema.
        rng: the source of every choice.
        words: the words free strings draw from (default: the fixed vocabulary).
        labels: answers the prompt lists, for answer fields (none: free words).
    """
    return _Filler(schema, rng, VOCAB if words is None else words, labels).value(schema, 0)

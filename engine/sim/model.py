"""Settings, latency/token model and deterministic content of the simulated endpoint.

Everything a response contains is a pure function of ``(settings.seed, request body)``:
the body (minus the transport fields ``stream`` and ``stream_options``, so a streamed and
a plain call agree) is canonicalised with sorted keys and hashed with blake2b, and every
choice, length and jitter is derived from that digest. ``temperature`` and ``top_p`` are
part of the hash like any other field but do not make content more or less random; a
different request ``seed`` (or any other change to the body) gives different content.

Every free-text value starts with ``"[simulated] "`` so simulated output is labelled
wherever it lands.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

import msgspec
import orjson

from .lifecycle import BatchSettings

__all__ = (
    "FAULT_KINDS",
    "LABEL",
    "WINDOW_KINDS",
    "Choice",
    "Content",
    "FaultWindow",
    "SimSettings",
    "completion_plan",
    "format_duration",
    "generate",
    "jitter_s",
    "prompt_tokens",
    "request_digest",
    "schema_instance",
)

LABEL = "[simulated]"

FAULT_KINDS: tuple[str, ...] = (
    "429",
    "500",
    "502",
    "503",
    "malformed",
    "reset",
    "slow",
    "timeout",
    "truncated",
)
WINDOW_KINDS: tuple[str, ...] = (*FAULT_KINDS, "down")


class FaultWindow(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A time window (seconds since server start) during which every request gets ``kind``.

    Attributes:
        start_s: window start, inclusive.
        end_s: window end, exclusive.
        kind: a fault kind (see :data:`FAULT_KINDS`) or ``"down"`` (503 to everything).
    """

    start_s: float
    end_s: float
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in WINDOW_KINDS:
            raise ValueError(
                f"unknown fault kind {self.kind!r}; expected one of {', '.join(WINDOW_KINDS)}"
            )
        if self.end_s < self.start_s:
            raise ValueError("end_s must not be before start_s")


class SimSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Behaviour of the simulated OpenAI-compatible endpoint.

    Attributes:
        seed: content seed; content is deterministic from (seed, request body).
        model: model name reported by ``/v1/models`` (requests may name any model; it is echoed).
        latency_ms: time before the first byte.
        jitter_ms: uniform +-jitter on the latency, deterministic per request.
        tokens_per_s: output token rate (0: the whole body at once after the latency).
        max_tokens_default: completion length when the request gives no ``max_tokens``.
        rpm: requests per minute enforced with token buckets (None: unlimited).
        tpm: tokens per minute enforced the same way; a request costs
            ``prompt_tokens + max_tokens * n`` at admission.
        fault_rate: probability of a fault per request attempt.
        faults: the kinds a fault is drawn from, uniformly.
        schedule: windows during which every request gets one fault kind.
        retry_after_s: ``Retry-After`` of injected ``"429"`` faults.
        hang_s: how long a ``"timeout"`` fault waits before answering.
        slow_body_s: over how long a ``"slow"`` fault dribbles its body.
        usage: report token usage (streams: only with ``stream_options.include_usage``).
        api_key: require ``Authorization: Bearer <api_key>`` (None: no auth); a list
            accepts any of its keys (requests are counted per key in ``/sim/stats``).
        max_context_tokens: reject ``prompt_tokens + max_tokens`` above this with 400.
        max_concurrency: requests served at once; the rest wait in arrival order for a
            slot before their latency starts (a server that queues, as vLLM does past
            its batch size). None: no limit.
        batches: the simulated OpenAI Batch API and Anthropic Message Batches
            (lifecycle timing, partial failures, expiry; :class:`BatchSettings`).
    """

    seed: int = 0
    model: str = "sim-model"
    latency_ms: float = 50.0
    jitter_ms: float = 0.0
    tokens_per_s: float = 0.0
    max_tokens_default: int = 64
    rpm: float | None = None
    tpm: float | None = None
    fault_rate: float = 0.0
    faults: list[str] = msgspec.field(default_factory=list)
    schedule: list[FaultWindow] = msgspec.field(default_factory=list)
    retry_after_s: float = 1.0
    hang_s: float = 30.0
    slow_body_s: float = 5.0
    usage: bool = True
    api_key: str | list[str] | None = None
    max_context_tokens: int | None = None
    max_concurrency: int | None = None
    batches: BatchSettings = msgspec.field(default_factory=BatchSettings)

    def __post_init__(self) -> None:
        for kind in self.faults:
            if kind not in FAULT_KINDS:
                raise ValueError(
                    f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}"
                )
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        if self.fault_rate > 0.0 and not self.faults:
            raise ValueError("fault_rate > 0 needs at least one kind in faults")
        for name in (
            "latency_ms",
            "jitter_ms",
            "tokens_per_s",
            "retry_after_s",
            "hang_s",
            "slow_body_s",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 (or unset)")
        if self.max_tokens_default < 1:
            raise ValueError("max_tokens_default must be >= 1")
        if self.max_context_tokens is not None and self.max_context_tokens < 1:
            raise ValueError("max_context_tokens must be >= 1 (or unset)")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1 (or unset)")


# 256 words, so one digest byte picks one word. Some end in "." to make pseudo-sentences.
_BASE_WORDS = (
    "the a an this that each every some many few model answer data result method system "
    "user query task step plan idea note list table value field record sample example "
    "text prompt reply score rubric skill case goal rule test check point part piece "
    "clear quick short long simple careful useful direct brief exact small large new "
    "good fair plain rich basic general specific common rare early late final first "
    "next last main key core extra open shared local global stable steady precise "
    "writes reads makes takes gives shows finds keeps uses builds checks tests lists "
    "explains describes compares ranks scores sorts groups joins splits counts marks "
    "improves refines expands covers follows meets helps guides supports handles "
    "and or but so then also often always never rarely quickly slowly clearly simply "
    "with for from into about over under between across within without through "
    "of to in on at by as per via near"
).split()


def _vocabulary() -> tuple[str, ...]:
    words = list(dict.fromkeys(_BASE_WORDS))
    i = 0
    while len(words) < 256:
        words.append(words[i] + ".")
        i += 1
    return tuple(words[:256])


_VOCAB: tuple[str, ...] = _vocabulary()
_VOCAB_GET = _VOCAB.__getitem__
_TRANSPORT_FIELDS = ("stream", "stream_options")


def request_digest(seed: int, body: dict[str, Any]) -> bytes:
    """A 16-byte blake2b digest of ``seed`` and the canonical JSON of ``body``.

    ``stream`` and ``stream_options`` are left out, so a streamed request gets the same
    content as the same request unstreamed.
    """
    if "stream" in body or "stream_options" in body:
        body = {k: v for k, v in body.items() if k not in _TRANSPORT_FIELDS}
    h = hashlib.blake2b(b"%d\n" % seed, digest_size=16)
    h.update(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    return h.digest()


def jitter_s(settings: SimSettings, digest: bytes) -> float:
    """Latency before the first byte for this request: base +- uniform jitter, in seconds."""
    latency = settings.latency_ms
    if settings.jitter_ms:
        u = int.from_bytes(digest[8:16], "big") / 2.0**64
        latency += (2.0 * u - 1.0) * settings.jitter_ms
    return max(0.0, latency) / 1000.0


def prompt_tokens(messages: list[Any]) -> int:
    """Approximate prompt tokens: ``ceil(chars of all contents / 4) + 4`` per message."""
    chars = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    text = part.get("text")
                    if isinstance(text, str):
                        chars += len(text)
    return -(-chars // 4) + 4 * len(messages)


def completion_plan(max_tokens: int | None, default: int, choice_digest: bytes) -> tuple[int, str]:
    """Completion length in words and finish reason for one choice.

    Without ``max_tokens`` the length is ``default`` (finish ``"stop"``); with it, a value in
    ``[min(8, max_tokens), max_tokens]`` from the digest, ``"length"`` only when it hits
    ``max_tokens`` exactly.
    """
    if max_tokens is None:
        return default, "stop"
    lo = min(8, max_tokens)
    length = lo + int.from_bytes(choice_digest[:4], "big") % (max_tokens - lo + 1)
    return length, ("length" if length == max_tokens else "stop")


def _words(choice_digest: bytes, count: int) -> str:
    out: list[str] = []
    block = choice_digest
    while len(out) < count:
        block = hashlib.blake2b(block, digest_size=64).digest()
        out.extend(map(_VOCAB_GET, block[: count - len(out)]))
    return " ".join(out)


def _text(count: int, choice_digest: bytes) -> str:
    if count <= 0:
        return LABEL
    return f"{LABEL} {_words(choice_digest, count)}"


# ------------------------------------------------------------------ json schema
_MAX_DEPTH = 12


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(_VOCAB, k=words))


def _string(node: dict[str, Any], rng: random.Random) -> str:
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
    text = f"{LABEL} {_sentence(rng, rng.randint(3, 8))}"
    min_len = node.get("minLength")
    if isinstance(min_len, int):
        while len(text) < min_len:
            text += " " + _sentence(rng, 4)
    max_len = node.get("maxLength")
    if isinstance(max_len, int) and len(text) > max_len:
        text = text[:max_len].rstrip() if max_len > len(LABEL) else text[:max_len]
        if isinstance(min_len, int) and len(text) < min_len:
            text = text.ljust(min_len, "x")
    return text


def _bounds(node: dict[str, Any], integer: bool) -> tuple[float, float]:
    lo: float | None = node.get("minimum")
    hi: float | None = node.get("maximum")
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


def _resolve(root: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#"):
        return {}
    node: Any = root
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


def _instance(node: Any, rng: random.Random, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(node, dict):
        return None
    if "$ref" in node:
        if depth > _MAX_DEPTH:
            return None
        return _instance(_resolve(root, str(node["$ref"])), rng, root, depth + 1)
    if "const" in node:
        return node["const"]
    enum = node.get("enum")
    if isinstance(enum, list) and enum:
        return rng.choice(enum)
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list) and options:
            return _instance(options[0], rng, root, depth + 1)
    all_of = node.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
        for part in all_of:
            if isinstance(part, dict):
                merged.update(part)
        return _instance(merged, rng, root, depth + 1)
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
        props = node.get("properties")
        if not isinstance(props, dict):
            return {}
        required = node.get("required")
        keep = set(required) if isinstance(required, list) and depth > _MAX_DEPTH else None
        return {
            name: _instance(sub, rng, root, depth + 1)
            for name, sub in props.items()
            if keep is None or name in keep
        }
    if kind == "array":
        min_items = node.get("minItems")
        max_items = node.get("maxItems")
        lo = max(1, min_items) if isinstance(min_items, int) else 1
        hi = max(lo, 4)
        if isinstance(max_items, int):
            hi = min(hi, max_items)
            lo = min(lo, hi)
        if depth > _MAX_DEPTH:
            hi = lo = min_items if isinstance(min_items, int) else 0
        count = rng.randint(lo, hi)
        items = node.get("items", {})
        prefix = node.get("prefixItems")
        out: list[Any] = []
        if isinstance(prefix, list):
            out = [_instance(p, rng, root, depth + 1) for p in prefix[:count]]
        if items is False:
            return out
        out.extend(_instance(items, rng, root, depth + 1) for _ in range(count - len(out)))
        return out
    if kind == "string":
        return _string(node, rng)
    if kind == "integer":
        lo_f, hi_f = _bounds(node, integer=True)
        return rng.randint(int(lo_f), int(hi_f))
    if kind == "number":
        lo_f, hi_f = _bounds(node, integer=False)
        return min(hi_f, max(lo_f, round(rng.uniform(lo_f, hi_f), 2)))
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def schema_instance(schema: dict[str, Any], rng: random.Random) -> Any:
    """A JSON value that validates against ``schema``, drawn with ``rng``.

    Supports object (properties, required, additionalProperties false), array (items,
    minItems, maxItems, prefixItems), string (minLength, maxLength, enum, a few formats),
    integer and number (minimum, maximum, exclusive bounds; default 1..10), boolean, null,
    enum, const, anyOf/oneOf (the first option), allOf (merged) and local ``$ref``.
    Free strings start with ``"[simulated] "`` (cut short only by a ``maxLength`` below
    12); enum and const values, and ``format`` strings (date-time, date, time, uuid), are
    used verbatim. ``pattern`` is not honoured.
    """
    return _instance(schema, rng, schema, 0)


# ------------------------------------------------------------------ whole completions
class Choice(msgspec.Struct, frozen=True):
    """One generated choice.

    Attributes:
        content: the assistant message text.
        finish_reason: ``"stop"`` or ``"length"``.
        tokens: completion tokens it counts for.
    """

    content: str
    finish_reason: str
    tokens: int


class Content(msgspec.Struct, frozen=True):
    """Everything generated for one request.

    Attributes:
        choices: one per requested ``n``.
        prompt_tokens: the prompt estimate.
        completion_tokens: sum over the choices.
    """

    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int


def _choice_digest(digest: bytes, index: int) -> bytes:
    if index == 0:
        return digest
    return hashlib.blake2b(digest + index.to_bytes(4, "big"), digest_size=16).digest()


def generate(
    settings: SimSettings,
    digest: bytes,
    *,
    n: int,
    max_tokens: int | None,
    prompt: int,
    response_format: Any,
    temperature: float | None = None,
    ignore_eos: bool = False,
) -> Content:
    """Generate the choices of one request (pure function of its arguments).

    Args:
        settings: the server's settings (``max_tokens_default``).
        digest: :func:`request_digest` of the request.
        n: number of choices.
        max_tokens: the request's ``max_tokens`` (None: not given).
        prompt: prompt tokens already counted with :func:`prompt_tokens`.
        response_format: the request's ``response_format`` value (or None).
        temperature: the request's temperature. At 0.3 or below, choices agree the way a
            model's low-temperature samples do: each of the ``n`` choices repeats choice 0
            with probability 0.7 (decided by its digest), so self-consistency votes have a
            majority to find. Above it, every choice differs.
        ignore_eos: the request's ``ignore_eos`` (vLLM's extension): plain text runs to
            ``max_tokens`` exactly.

    Plain text and ``json_object`` count one token per generated word; ``json_schema``
    output counts ``ceil(chars / 4)`` and always finishes with ``"stop"`` (it is never cut
    short, so it always parses).
    """
    schema: dict[str, Any] | None = None
    json_object = False
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            raw = spec.get("schema") if isinstance(spec, dict) else None
            schema = raw if isinstance(raw, dict) else {}
        elif kind == "json_object":
            json_object = True
    choices: list[Choice] = []
    total = 0
    consensus = temperature is not None and temperature <= 0.3
    first = _choice_digest(digest, 0)
    for index in range(n):
        cd = _choice_digest(digest, index)
        if consensus and index > 0 and cd[0] < 179:  # 179/256 ~ 0.7
            cd = first
        if schema is not None:
            rng = random.Random(int.from_bytes(cd, "big"))
            content = orjson.dumps(schema_instance(schema, rng)).decode()
            tokens = -(-len(content) // 4)
            choices.append(Choice(content, "stop", tokens))
        else:
            tokens, reason = completion_plan(max_tokens, settings.max_tokens_default, cd)
            if ignore_eos and max_tokens is not None:
                tokens, reason = max_tokens, "length"
            text = _text(tokens, cd)
            if json_object:
                text = orjson.dumps({"text": text}).decode()
            choices.append(Choice(text, reason, tokens))
        total += tokens
    return Content(choices, prompt, total)


def format_duration(seconds: float) -> str:
    """Format seconds the way OpenAI's ``x-ratelimit-reset-*`` headers do.

    ``0.25`` -> ``"250ms"``, ``1`` -> ``"1s"``, ``360`` -> ``"6m0s"``, ``3725.5`` ->
    ``"1h2m5.5s"``. Sub-second values round up to whole milliseconds.
    """
    if seconds <= 0:
        return "0s"
    if seconds < 1.0:
        return f"{max(1, math.ceil(seconds * 1000 - 1e-9))}ms"
    ms_total = math.ceil(seconds * 1000 - 1e-9)
    hours, rest = divmod(ms_total, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{secs}s"

"""Settings, latency/token model and deterministic content of the simulated endpoint.

Everything a response contains is a pure function of ``(settings.seed, request body)``:
the body (minus the transport fields ``stream`` and ``stream_options``, so a streamed and
a plain call agree) is canonicalised with sorted keys and hashed with blake2b, and every
choice, length and jitter is derived from that digest. ``temperature`` and ``top_p`` are
part of the hash like any other field but do not make content more or less random; a
different request ``seed`` (or any other change to the body) gives different content.

Every free-text value starts with ``"[simulated] "`` so simulated output is labelled
wherever it lands.

What the text says depends on ``answers``: ``"prompt"`` (the default) reads the request's
messages (:mod:`engine.sim.ask`) and answers from them: the prompt's own words, one of
the answers it lists, a score where it asks for one, the format it spells out, the
length it names (:mod:`engine.sim.reply`, :mod:`engine.sim.schema`); ``"random"``
answers every prompt with words of a fixed vocabulary, as earlier versions did.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec
import orjson

from ..jsontypes import JSONObject
from .ask import Ask, Free, pool, read_ask
from .lifecycle import BatchSettings
from .reply import LABEL, VOCAB, WORDS, fixed_reply, write_reply
from .schema import schema_instance

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
        answers: ``"prompt"``: replies read the request's messages and answer from them
            (its words, the answers it lists, the scores and formats it asks for, the
            length it names); ``"random"``: words of a fixed vocabulary, whatever the
            prompt (the behaviour before prompt answers, for figures measured with it).
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
    answers: Literal["prompt", "random"] = "prompt"

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


_VOCAB: tuple[str, ...] = VOCAB
_VOCAB_GET = _VOCAB.__getitem__
_TRANSPORT_FIELDS = ("stream", "stream_options")


def request_digest(seed: int, body: Mapping[str, object]) -> bytes:
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


def prompt_tokens(messages: Sequence[object]) -> int:
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


def _choice(
    settings: SimSettings,
    cd: bytes,
    ask: Ask | None,
    words: tuple[str, ...],
    schema: JSONObject | None,
    json_object: bool,
    max_tokens: int | None,
    ignore_eos: bool,
) -> Choice:
    """One choice from its digest ``cd``."""
    if schema is not None:
        rng = random.Random(int.from_bytes(cd, "big"))
        labels = ask.labels if ask is not None else ()
        content = orjson.dumps(schema_instance(schema, rng, words, labels)).decode()
        return Choice(content, "stop", -(-len(content) // 4))
    tokens, reason = completion_plan(max_tokens, settings.max_tokens_default, cd)
    if ignore_eos and max_tokens is not None:
        tokens, reason = max_tokens, "length"
    if ask is None:
        text = _text(tokens, cd)
    elif ask.parts and not words:
        text, tokens, reason = fixed_reply(ask.parts, cd, max_tokens)
    else:
        rng = random.Random(int.from_bytes(cd, "big"))
        text, tokens, written = write_reply(ask, words, rng, length=tokens, max_tokens=max_tokens)
        reason = "length" if ignore_eos and max_tokens is not None else written
    if json_object:
        text = orjson.dumps({"text": text}).decode()
    return Choice(text, reason, tokens)


def generate(
    settings: SimSettings,
    digest: bytes,
    *,
    n: int,
    max_tokens: int | None,
    prompt: int,
    response_format: object,
    temperature: float | None = None,
    ignore_eos: bool = False,
    messages: Sequence[object] = (),
) -> Content:
    """Generate the choices of one request (pure function of its arguments).

    Args:
        settings: the server's settings (``max_tokens_default``, ``answers``).
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
        messages: the request's ``messages``, which ``answers = "prompt"`` answers from
            (none: words of the fixed vocabulary).

    Plain text and ``json_object`` count one token per generated word; ``json_schema``
    output counts ``ceil(chars / 4)`` and always finishes with ``"stop"`` (it is never cut
    short, so it always parses).
    """
    schema: JSONObject | None = None
    json_object = False
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            raw = spec.get("schema") if isinstance(spec, dict) else None
            schema = raw if isinstance(raw, dict) else {}
        elif kind == "json_object":
            json_object = True
    ask = read_ask(messages) if settings.answers == "prompt" and messages else None
    words: tuple[str, ...] = VOCAB
    if ask is not None:
        if ignore_eos and max_tokens is not None:
            ask = msgspec.structs.replace(ask, parts=(), length=None, sentences=None, chars=None)
        # A reply of labels and scores alone needs no words: skip reading them.
        needs = not ask.parts or schema is not None or any(isinstance(p, Free) for p in ask.parts)
        words = (pool(ask.source) or WORDS) if needs else ()
    choices: list[Choice] = []
    total = 0
    consensus = temperature is not None and temperature <= 0.3
    first = _choice_digest(digest, 0)
    made: dict[bytes, Choice] = {}  # low-temperature copies of choice 0 repeat it
    for index in range(n):
        cd = _choice_digest(digest, index)
        if consensus and index > 0 and cd[0] < 179:  # 179/256 ~ 0.7
            cd = first
        choice = made.get(cd)
        if choice is None:
            choice = _choice(settings, cd, ask, words, schema, json_object, max_tokens, ignore_eos)
            made[cd] = choice
        choices.append(choice)
        total += choice.tokens
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

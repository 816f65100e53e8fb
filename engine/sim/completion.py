"""One chat-completions request body to its simulated reply, without any transport.

The online handler (``POST /v1/chat/completions`` in :mod:`engine.sim.server`), the
OpenAI Batch API (:mod:`engine.sim.batches`) and the Anthropic Messages API
(:mod:`engine.sim.anthropic`, which translates its body into a chat body first) all go
through :func:`prepare` and :func:`produce`, so a batch line, or an Anthropic request,
gets exactly the reply the online endpoint gives the same chat body: same checks, same
error messages, same :func:`engine.sim.model.generate` call.
"""

from __future__ import annotations

import msgspec

from ..jsontypes import JSON, JSONObject
from .model import Content, SimSettings, generate, prompt_tokens, request_digest

__all__ = (
    "MAX_N",
    "Prepared",
    "Rejection",
    "completion_object",
    "prepare",
    "produce",
    "usage_of",
)

MAX_N = 128


class Rejection(msgspec.Struct, frozen=True):
    """A request the endpoint refuses before generating anything (OpenAI error shape).

    Attributes:
        status: HTTP status (400).
        message: what is wrong and what to do.
        code: OpenAI's machine-readable code, or None.
        param: the offending parameter, or None.
        type: OpenAI's error type.
    """

    status: int
    message: str
    code: str | None = None
    param: str | None = None
    type: str = "invalid_request_error"

    def body(self) -> JSONObject:
        """The JSON error body OpenAI sends: ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class Prepared(msgspec.Struct, frozen=True):
    """A checked request, ready to be answered.

    Attributes:
        body: the request body as sent.
        messages: its ``messages`` (a non-empty list).
        digest: :func:`engine.sim.model.request_digest` of it (drives all content).
        n: number of choices.
        max_tokens: the request's ``max_completion_tokens``/``max_tokens`` (None: not given).
        prompt: estimated prompt tokens.
        cost: tokens charged at admission (``prompt + budget * n``).
        model: the model name to report (the request's, else the endpoint's).
    """

    body: JSONObject
    messages: list[JSON]
    digest: bytes
    n: int
    max_tokens: int | None
    prompt: int
    cost: int
    model: str


def _temperature(body: JSONObject) -> float | None:
    value = body.get("temperature")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def prepare(settings: SimSettings, body: JSON) -> Prepared | Rejection:
    """Check one chat-completions body the way the endpoint does; digest it if it passes.

    Args:
        settings: the endpoint's settings (``seed``, ``max_context_tokens``...).
        body: the decoded JSON body.

    Returns:
        The prepared request, or why it is refused (400 with OpenAI's codes).
    """
    if not isinstance(body, dict):
        return Rejection(400, "The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return Rejection(
            400, "Missing required parameter: 'messages'.", "missing_required_parameter", "messages"
        )
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
        return Rejection(400, f"Invalid 'n': expected an integer in [1, {MAX_N}].", None, "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        return Rejection(400, "Invalid 'max_tokens': expected an integer >= 1.", None, "max_tokens")
    prompt = prompt_tokens(messages)
    budget = max_tokens if max_tokens is not None else settings.max_tokens_default
    if settings.max_context_tokens is not None and prompt + budget > settings.max_context_tokens:
        return Rejection(
            400,
            f"This model's maximum context length is {settings.max_context_tokens} tokens. "
            f"However, you requested {prompt + budget} tokens ({prompt} in the messages, "
            f"{budget} in the completion). Please reduce the length of the messages or "
            "completion.",
            "context_length_exceeded",
            "messages",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        model = settings.model
    return Prepared(
        body=body,
        messages=messages,
        digest=request_digest(settings.seed, body),
        n=n,
        max_tokens=max_tokens,
        prompt=prompt,
        cost=prompt + budget * n,
        model=model,
    )


def produce(settings: SimSettings, prepared: Prepared) -> Content:
    """Generate the reply to a prepared request (a pure function of seed and body)."""
    body = prepared.body
    return generate(
        settings,
        prepared.digest,
        n=prepared.n,
        max_tokens=prepared.max_tokens,
        prompt=prepared.prompt,
        response_format=body.get("response_format"),
        temperature=_temperature(body),
        ignore_eos=body.get("ignore_eos") is True,
        messages=prepared.messages,
    )


def usage_of(content: Content) -> dict[str, int]:
    """OpenAI's ``usage`` object for a reply."""
    return {
        "prompt_tokens": content.prompt_tokens,
        "completion_tokens": content.completion_tokens,
        "total_tokens": content.prompt_tokens + content.completion_tokens,
    }


def completion_object(
    cid: str, model: str, content: Content, *, created: int, usage: bool
) -> dict[str, object]:
    """The ``chat.completion`` object of a reply, as the online endpoint sends it.

    Args:
        cid: the completion id.
        model: the model name to report.
        content: the generated reply.
        created: unix seconds.
        usage: include the ``usage`` object.
    """
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.content},
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(content.choices)
        ],
        **({"usage": usage_of(content)} if usage else {}),
    }

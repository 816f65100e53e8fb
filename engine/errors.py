"""The single exception tree of synth-engine.

Every error the engine raises is an :class:`EngineError`. Foreign exceptions (aiohttp,
msgspec, sqlite3, OSError) are mapped into this tree at the module that talks to the
foreign library and re-raised ``from`` the original, so callers only ever catch ours::

    EngineError
    ├── ConfigError                  bad config file or --set override (exit code 2)
    ├── InputError                   unreadable or malformed input (exit code 2, or a failed row)
    ├── EndpointError                a call to an LLM endpoint failed
    │   ├── RetryableError           worth another try after a backoff
    │   │   ├── RateLimited          HTTP 429 (carries retry_after)
    │   │   ├── ServerError          HTTP 5xx
    │   │   ├── Timeout              connect/read/deadline timeout
    │   │   ├── ConnectionLost       reset, refused, closed mid-body
    │   │   └── MalformedResponse    body that is not the JSON/SSE we expect, or truncated
    │   └── FatalEndpointError       retrying cannot help
    │       ├── AuthError            HTTP 401/403
    │       └── BadRequest           HTTP 400/404/413/422 (e.g. context length exceeded)
    ├── ParseError                   a reply that does not parse into what the stage needs
    ├── ShardError                   output cannot be written or resumed
    └── BudgetExceeded               a configured run budget was reached

Retryability is a class, not a flag: ``except RetryableError`` is the retry policy.
"""

from __future__ import annotations

__all__ = (
    "AuthError",
    "BadRequest",
    "BudgetExceeded",
    "ConfigError",
    "ConnectionLost",
    "EndpointError",
    "EngineError",
    "FatalEndpointError",
    "InputError",
    "MalformedResponse",
    "ParseError",
    "RateLimited",
    "RetryableError",
    "ServerError",
    "ShardError",
    "Timeout",
)


class EngineError(Exception):
    """Base class of every error synth-engine raises."""

    exit_code: int = 1


class ConfigError(EngineError):
    """The configuration is invalid.

    Attributes:
        path: the config file (or ``"--set"`` for a command-line override).
        line: 1-based line in ``path`` where the offending key sits, if known.
        field: dotted key, e.g. ``endpoints.strong.rpm``.
        reason: what is wrong.
        hint: what to do about it.
    """

    exit_code = 2

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.reason = reason
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.path or "config"
        if self.line is not None:
            where += f":{self.line}"
        msg = f"{where}: "
        if self.field:
            msg += f"{self.field}: "
        msg += self.reason
        if self.hint:
            msg += f" ({self.hint})"
        return msg


class InputError(EngineError):
    """An input file cannot be read, or one of its records is malformed.

    Attributes:
        path: the input file.
        line: 1-based line (JSONL) or record number, if known.
        reason: what is wrong.
    """

    exit_code = 2

    def __init__(self, reason: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = path or "input"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {reason}")


class EndpointError(EngineError):
    """A call to an LLM endpoint failed.

    Attributes:
        endpoint: the endpoint's config name (never its key).
        status: HTTP status, if a response arrived.
        retry_after: seconds the server asked us to wait, if it said.
        stage: the pipeline stage whose call failed (set by the stage that made it).
    """

    stage: str | None = None

    def __init__(
        self,
        reason: str,
        *,
        endpoint: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.status = status
        self.retry_after = retry_after
        self.reason = reason
        prefix = f"endpoint {endpoint!r}: " if endpoint else ""
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{prefix}{code}{reason}")

    @property
    def kind(self) -> str:
        """Short snake_case name of the error class, used in metrics and failed rows."""
        name = type(self).__name__
        return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class RetryableError(EndpointError):
    """An endpoint error that another attempt may not hit."""


class RateLimited(RetryableError):
    """HTTP 429: the endpoint's rate limit was hit."""


class ServerError(RetryableError):
    """HTTP 5xx from the endpoint."""


class Timeout(RetryableError):
    """Connecting, reading or the per-request deadline timed out."""


class ConnectionLost(RetryableError):
    """The connection was refused, reset or closed before the body was complete."""


class MalformedResponse(RetryableError):
    """The body was not the JSON or SSE stream we expect (or was cut short)."""


class FatalEndpointError(EndpointError):
    """An endpoint error that retrying cannot fix."""


class AuthError(FatalEndpointError):
    """HTTP 401/403: the API key is missing, wrong or lacks permission."""


class BadRequest(FatalEndpointError):
    """HTTP 400/404/413/422: the request itself is wrong (model name, context length...)."""


class ParseError(EngineError):
    """A model reply does not parse into what the stage needs.

    Attributes:
        stage: the stage whose parser rejected the reply.
        reason: what was expected.
    """

    def __init__(self, reason: str, *, stage: str | None = None) -> None:
        self.stage = stage
        self.reason = reason
        super().__init__(f"{stage + ': ' if stage else ''}{reason}")


class ShardError(EngineError):
    """Output shards or the manifest cannot be written, read or resumed."""

    def __init__(self, reason: str, *, path: str | None = None, hint: str | None = None) -> None:
        self.path = path
        self.reason = reason
        self.hint = hint
        msg = f"{path}: {reason}" if path else reason
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class BudgetExceeded(EngineError):
    """A configured budget (requests, tokens, cost) was reached; the run stops resumably."""

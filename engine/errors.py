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
    │       ├── BadRequest           HTTP 400/404/413/422 (e.g. context length exceeded)
    │       └── ResponseTooLarge     the body (decompressed) is over the byte limit
    ├── ParseError                   a reply that does not parse into what the stage needs
    ├── ShardError                   output cannot be written or resumed
    │   └── OutputLocked             another run holds the output directory (exit code 2)
    └── RunHalted                    not the item's fault: the run stops, resumably
        ├── BudgetExceeded           a configured run budget was reached (exit code 3)
        ├── EndpointUnusable         a whole endpoint failed: key refused, a request that
        │                            cannot fit its limits, a wait over the cap (exit code 4)
        ├── Stalled                  no progress for ``run.watchdog_stop_s`` (exit code 3)
        └── Draining                 a stop was asked and this call would have to wait

Retryability is a class, not a flag: ``except RetryableError`` is the retry policy. So is
scope: an :class:`EndpointError` fails one call (and, unhandled, one item); a
:class:`RunHalted` is never written as a failed row. The item that met it is left undone,
the run drains and stops, and the next run redoes that item from the response cache.
"""

from __future__ import annotations

__all__ = (
    "AuthError",
    "BadRequest",
    "BudgetExceeded",
    "ConfigError",
    "ConnectionLost",
    "Draining",
    "EndpointError",
    "EndpointUnusable",
    "EngineError",
    "FatalEndpointError",
    "InputError",
    "MalformedResponse",
    "OutputLocked",
    "ParseError",
    "RateLimited",
    "ResponseTooLarge",
    "RetryableError",
    "RunHalted",
    "ServerError",
    "ShardError",
    "Stalled",
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


class ResponseTooLarge(FatalEndpointError):
    """The response body, decompressed, is over the endpoint's ``max_response_bytes``.

    Not retried: a server that sends an oversized answer once sends it again, and every
    attempt would cost the limit in memory.
    """


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


class OutputLocked(ShardError):
    """Another run (or process) holds the output directory's lock.

    Attributes:
        holder: what the lock file says about its holder (pid, host, command, start).
    """

    exit_code = 2

    def __init__(self, reason: str, *, path: str | None = None, holder: str = "") -> None:
        self.holder = holder
        super().__init__(
            reason,
            path=path,
            hint="wait for it to finish or stop it, or choose another output directory",
        )


class RunHalted(EngineError):
    """The run cannot go on for a reason that is not the item's: it stops, resumably.

    An item that meets it is left undone (no failed row): the run stops taking items,
    drains, commits and exits with :attr:`exit_code`; the next run redoes the item, its
    paid calls replayed from the cache.

    Attributes:
        reason: what happened, in one line.
    """

    exit_code = 3
    label = "halted"  # the prefix of the run's stop_reason

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class BudgetExceeded(RunHalted):
    """A configured budget (requests, tokens, cost) was reached; the run stops resumably."""

    label = "budget"


class EndpointUnusable(RunHalted):
    """An endpoint failed as a whole, so no item can be served by it until it is fixed.

    Its key was refused (401/403), a single request cannot fit its limits (a tokens/min
    quota smaller than one request), or it asked for a wait longer than the endpoint's
    ``max_wait_s``. Written as a failed row per item, such an error would turn a run into a
    "complete" output of failed rows; instead the run stops resumably (exit code 4).

    Attributes:
        endpoint: the endpoint's config name (never its key).
        status: HTTP status, if a response said it.
    """

    exit_code = 4
    label = "endpoint"

    def __init__(self, reason: str, *, endpoint: str | None = None, status: int | None = None):
        self.endpoint = endpoint
        self.status = status
        prefix = f"endpoint {endpoint!r}: " if endpoint else ""
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{prefix}{code}{reason}")


class Stalled(RunHalted):
    """Nothing progressed (no call answered, no row written) for ``run.watchdog_stop_s``."""

    label = "watchdog"


class Draining(RunHalted):
    """A stop was asked (Ctrl+C) and this call would have to wait for a paused endpoint.

    The item is left undone instead of holding the drain for the pause.
    """

    label = "stopped"

"""``export --push-to-hub REPO``: upload an export directory to a Hugging Face Hub dataset repo.

Through ``huggingface_hub`` (installed with ``datasets``): ``HfApi.create_repo``
(``exist_ok``), then ``HfApi.upload_folder`` of the export directory as written, so
what the Hub holds is what ``datasets.load_dataset(DIR)`` reads locally (the card's
``configs`` name the data files). Data files of an earlier push that this export does
not have (a shard count that shrank, another format's files) are deleted in the same
commit; other files in the repository are left alone. Files that did not change are
not committed again, so pushing the same export twice makes no new commit.

The token comes from the environment variable named by ``token_env`` (``HF_TOKEN`` by
default), else from huggingface_hub's own login (``hf auth login``); it is never
printed. Errors of the Hub's API are mapped into :mod:`engine.errors` here: a refused
token is an :class:`~engine.errors.AuthError`, a server error a
:class:`~engine.errors.ServerError`, an unreachable endpoint a
:class:`~engine.errors.ConnectionLost`.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import msgspec

from ..errors import (
    AuthError,
    BadRequest,
    ConfigError,
    ConnectionLost,
    EndpointError,
    MalformedResponse,
    ServerError,
)

__all__ = ("DELETE_PATTERNS", "HubTarget", "PushResult", "push_export", "resolve_hub")

DELETE_PATTERNS = ("data/*", "data-*.arrow", "state.json", "dataset_info.json")
"""Remote files an export owns: removed when the new export does not have them."""

_HINT = "pip install 'synth-engine[export]' (it adds datasets, which brings huggingface_hub)"


class HubTarget:
    """Where and as whom to push (checked before any export work).

    Attributes:
        repo_id: ``namespace/name`` (or ``name``: the token's own namespace).
        endpoint: the Hub's URL (None: huggingface_hub's default, or ``HF_ENDPOINT``).
        token: the token, or None to let huggingface_hub find its stored login.
        private: create the repository private.
    """

    def __init__(
        self, repo_id: str, *, endpoint: str | None, token: str | None, private: bool
    ) -> None:
        self.repo_id = repo_id
        self.endpoint = endpoint
        self.token = token
        self.private = private


def _hub() -> ModuleType:
    try:
        import huggingface_hub
        import huggingface_hub.errors
        import huggingface_hub.utils.logging
    except ImportError as exc:
        raise ConfigError(
            "--push-to-hub needs huggingface_hub, which is not installed",
            path="--push-to-hub",
            hint=_HINT,
        ) from exc
    return huggingface_hub


def resolve_hub(repo_id: str, *, endpoint: str | None, token_env: str, private: bool) -> HubTarget:
    """Check the push settings before exporting: the library, the repo id, a token.

    Raises:
        ConfigError: huggingface_hub is missing, the repo id is malformed, or no token
            is set (in ``token_env`` or a stored login).
    """
    hub = _hub()
    parts = repo_id.split("/")
    if not repo_id or len(parts) > 2 or not all(parts):
        raise ConfigError(
            f"{repo_id!r} is not a repository id",
            path="--push-to-hub",
            hint="write NAMESPACE/NAME, e.g. my-org/my-dataset",
        )
    token = os.environ.get(token_env) or None
    if token is None and hub.get_token() is None:
        raise ConfigError(
            f"no Hugging Face token: the environment variable {token_env} is not set and "
            "there is no stored login",
            path="--push-to-hub",
            hint=f"export {token_env}=<a write token> or run `hf auth login`",
        )
    return HubTarget(repo_id, endpoint=endpoint, token=token, private=private)


def _mapped(exc: Exception, what: str) -> EndpointError:
    """A huggingface_hub or HTTP error as one of ours."""
    hub = _hub()
    if isinstance(exc, hub.errors.HfHubHTTPError):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if status in (401, 403):
            return AuthError(
                f"{what}: the Hub refused the token ({first}); use a token with write "
                "access to the repository's namespace",
                endpoint="hub",
                status=status,
            )
        if isinstance(status, int) and status >= 500:
            return ServerError(f"{what}: {first}", endpoint="hub", status=status)
        return BadRequest(f"{what}: {first}", endpoint="hub", status=status)
    if isinstance(exc, ValueError):
        return MalformedResponse(f"{what}: unexpected answer ({exc})", endpoint="hub")
    if isinstance(exc, (*_http_errors(hub), OSError)):
        return ConnectionLost(f"{what}: {type(exc).__name__}: {exc}", endpoint="hub")
    return EndpointError(f"{what}: {type(exc).__name__}: {exc}", endpoint="hub")


def _foreign(hub: ModuleType) -> tuple[type[Exception], ...]:
    """The errors a push can raise: the Hub's HTTP errors, the HTTP library's (whichever
    huggingface_hub uses: the base it gives HfHubHTTPError), OS errors, then malformed
    answers and upload-library failures."""
    return (hub.errors.HfHubHTTPError, *_http_errors(hub), OSError, ValueError, RuntimeError)


def _http_errors(hub: ModuleType) -> tuple[type[Exception], ...]:
    return tuple(b for b in hub.errors.HfHubHTTPError.__bases__ if b is not OSError)


class PushResult(msgspec.Struct, kw_only=True):
    """Where an export went: the repository's URL and the commit that holds it (the
    previous one when nothing changed)."""

    url: str
    commit: str


def push_export(directory: Path, target: HubTarget, *, message: str) -> PushResult:
    """Create the dataset repository if needed and upload ``directory``.

    Raises:
        AuthError: the token was refused.
        EndpointError: another Hub or network error.
    """
    hub = _hub()
    hub.utils.logging.disable_propagation()  # its own handler prints its warnings, once
    api = hub.HfApi(endpoint=target.endpoint, token=target.token)
    foreign = _foreign(hub)
    try:
        url = api.create_repo(
            target.repo_id, repo_type="dataset", private=target.private, exist_ok=True
        )
    except foreign as exc:
        raise _mapped(exc, f"create dataset repository {target.repo_id}") from exc
    repo_id = getattr(url, "repo_id", None) or target.repo_id
    try:
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(directory),
            commit_message=message,
            delete_patterns=list(DELETE_PATTERNS),
        )
    except foreign as exc:
        raise _mapped(exc, f"upload to {repo_id}") from exc
    return PushResult(url=str(url), commit=str(getattr(commit, "oid", "") or ""))

"""The simulated OpenAI Files API: the upload and download side of the Batch API.

Routes (shapes follow https://platform.openai.com/docs/api-reference/files):
``POST /v1/files`` (multipart: ``file`` and ``purpose``, optional ``expires_after``),
``GET /v1/files`` (``purpose``, ``limit``, ``order``, ``after``), ``GET /v1/files/{id}``,
``GET /v1/files/{id}/content`` and ``DELETE /v1/files/{id}``. Files live in memory for
the life of the server; the batch API stores its output and error files here too
(purpose ``batch_output``).

Checks: ``purpose`` must be one OpenAI accepts; a ``batch`` file must be named
``*.jsonl`` (OpenAI refuses other names for the Batch API); a file over
``batches.max_file_bytes`` (OpenAI: 512 MB) is refused with 413 while it is read. What a
batch file contains is checked when a batch is created from it, as OpenAI does.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import orjson
from aiohttp import BodyPartReader, web

from .lifecycle import BatchSettings, SimTime

if TYPE_CHECKING:
    from .server import _SimState

__all__ = ("FileStore", "Listed", "StoredFile", "page")

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_BATCH_FILE_TTL_S = 30 * 86_400
_CHUNK = 1 << 16


class StoredFile:
    """One file held by the simulated Files API."""

    __slots__ = ("created_at", "data", "expires_at", "filename", "id", "purpose")

    def __init__(
        self, file_id: str, filename: str, purpose: str, data: bytes, created_at: int
    ) -> None:
        self.id = file_id
        self.filename = filename
        self.purpose = purpose
        self.data = data
        self.created_at = created_at
        self.expires_at: int | None = (
            created_at + _BATCH_FILE_TTL_S if purpose in ("batch", "batch_output") else None
        )

    def object(self) -> dict[str, object]:
        """The file object OpenAI returns."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


class FileStore:
    """Files by id, and the handlers of the Files API routes.

    Args:
        state: the server's shared state (auth, error responses, headers).
        settings: batch settings (``max_file_bytes``).
        sim_time: the simulated clock (``created_at``).
    """

    def __init__(self, state: _SimState, settings: BatchSettings, sim_time: SimTime) -> None:
        self.state = state
        self.settings = settings
        self.time = sim_time
        self.files: dict[str, StoredFile] = {}
        self.uploaded = 0
        self.uploaded_bytes = 0

    # ------------------------------------------------------------------ store
    def add(self, data: bytes, filename: str, purpose: str) -> StoredFile:
        """Store a file and return it."""
        stored = StoredFile(
            f"file-sim{uuid.uuid4().hex[:20]}", filename, purpose, data, int(self.time.now())
        )
        self.files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        """The file with this id, if any."""
        return self.files.get(file_id)

    def stats(self) -> dict[str, object]:
        """Counters for ``/sim/stats``."""
        return {
            "files_uploaded": self.uploaded,
            "bytes_uploaded": self.uploaded_bytes,
            "files_stored": len(self.files),
        }

    # ------------------------------------------------------------------ helpers
    def json(self, body: dict[str, object], status: int = 200) -> web.Response:
        """A JSON response with the endpoint's usual headers."""
        return web.Response(status=status, body=orjson.dumps(body), headers=self.state.headers())

    def not_found(self, kind: str, ident: str) -> web.Response:
        """OpenAI's 404 for an unknown id."""
        return self.state.error(
            404, f"No such {kind}: {ident!r}", "invalid_request_error", None, param="id"
        )

    def authorized(self, request: web.Request) -> bool:
        """The request carries an accepted key (or the endpoint needs none)."""
        return self.state.settings.api_key is None or self.state._authorized(request)

    # ------------------------------------------------------------------ handlers
    async def upload(self, request: web.Request) -> web.Response:
        """``POST /v1/files``."""
        if not self.authorized(request):
            return self.state._unauthorized()
        if not request.content_type.startswith("multipart/"):
            return self.state.bad_request(
                "Uploads must be multipart/form-data with a 'file' part and a 'purpose' field.",
                None,
                "file",
            )
        reader = await request.multipart()
        fields: dict[str, str] = {}
        data: bytes | None = None
        filename = "upload"
        limit = self.settings.max_file_bytes
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not something OpenAI's upload takes
            if part.name == "file":
                filename = part.filename or filename
                buf = bytearray()
                while chunk := await part.read_chunk(_CHUNK):
                    buf += chunk
                    if len(buf) > limit:
                        return self.state.error(
                            413,
                            f"File is larger than the maximum of {limit} bytes; split it.",
                            "invalid_request_error",
                            "file_too_large",
                            param="file",
                        )
                data = bytes(buf)
            elif part.name:
                fields[part.name] = await part.text()
        purpose = fields.get("purpose")
        if data is None:
            return self.state.bad_request(
                "Missing required parameter: 'file'.", "missing_required_parameter", "file"
            )
        if purpose not in PURPOSES:
            return self.state.bad_request(
                f"Invalid value for 'purpose': {purpose!r}; expected one of {', '.join(PURPOSES)}.",
                "invalid_value" if purpose else "missing_required_parameter",
                "purpose",
            )
        if purpose == "batch" and not filename.endswith(".jsonl"):
            return self.state.bad_request(
                f"Invalid file format for Batch API. Must be .jsonl (got {filename!r}).",
                "invalid_file_format",
                "file",
            )
        stored = self.add(data, filename, purpose)
        seconds = fields.get("expires_after[seconds]")
        if seconds is not None:
            if not seconds.isdigit() or not 3600 <= int(seconds) <= 2_592_000:
                return self.state.bad_request(
                    "Invalid 'expires_after[seconds]': an integer from 3600 to 2592000.",
                    "invalid_value",
                    "expires_after",
                )
            stored.expires_at = stored.created_at + int(seconds)
        self.uploaded += 1
        self.uploaded_bytes += len(data)
        return self.json(stored.object())

    async def retrieve(self, request: web.Request) -> web.Response:
        """``GET /v1/files/{file_id}``."""
        if not self.authorized(request):
            return self.state._unauthorized()
        file_id = request.match_info["file_id"]
        stored = self.files.get(file_id)
        return self.json(stored.object()) if stored else self.not_found("File", file_id)

    async def content(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/files/{file_id}/content``: the bytes as uploaded or produced."""
        if not self.authorized(request):
            return self.state._unauthorized()
        file_id = request.match_info["file_id"]
        stored = self.files.get(file_id)
        if stored is None:
            return self.not_found("File", file_id)
        return web.Response(
            body=stored.data, headers=self.state.headers("application/octet-stream")
        )

    async def delete(self, request: web.Request) -> web.Response:
        """``DELETE /v1/files/{file_id}``."""
        if not self.authorized(request):
            return self.state._unauthorized()
        file_id = request.match_info["file_id"]
        if self.files.pop(file_id, None) is None:
            return self.not_found("File", file_id)
        return self.json({"id": file_id, "object": "file", "deleted": True})

    async def list_files(self, request: web.Request) -> web.Response:
        """``GET /v1/files``: newest first by default, cursor ``after``."""
        if not self.authorized(request):
            return self.state._unauthorized()
        query = request.query
        files = list(self.files.values())  # insertion order = creation order
        if query.get("order", "desc") != "asc":
            files.reverse()
        purpose = query.get("purpose")
        if purpose:
            files = [f for f in files if f.purpose == purpose]
        return self.json(page(files, query, default_limit=10_000))

    def register(self, app: web.Application) -> None:
        """Add the Files API routes to ``app``."""
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files", self.list_files)
        app.router.add_get("/v1/files/{file_id}", self.retrieve)
        app.router.add_get("/v1/files/{file_id}/content", self.content)
        app.router.add_delete("/v1/files/{file_id}", self.delete)


class Listed(Protocol):
    """What a list page holds: an object with an ``id`` and its JSON ``object()``."""

    @property
    def id(self) -> str:
        """The object's id (the ``after`` cursor names one)."""
        ...

    def object(self) -> dict[str, object]:
        """The object as the API returns it."""
        ...


def page(
    items: Sequence[Listed], query: Mapping[str, str], *, default_limit: int
) -> dict[str, object]:
    """An OpenAI list page of objects with ``.id`` and ``.object()``: ``after`` + ``limit``."""
    after = query.get("after")
    if after:
        ids = [item.id for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    raw = query.get("limit", "")
    limit = int(raw) if raw.isdigit() and int(raw) > 0 else default_limit
    chosen = items[:limit]
    return {
        "object": "list",
        "data": [item.object() for item in chosen],
        "first_id": chosen[0].id if chosen else None,
        "last_id": chosen[-1].id if chosen else None,
        "has_more": len(items) > limit,
    }

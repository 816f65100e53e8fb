"""A loopback server that speaks the Hugging Face Hub's upload API as huggingface_hub uses it.

For ``export --push-to-hub`` tests: ``HfApi(endpoint=URL).create_repo`` and
``upload_folder`` (and the ``repo_info`` it calls when nothing changed) run against it
unchanged. It implements the endpoints those calls make, with the request and answer
shapes huggingface_hub (2.x) sends and validates:

* ``POST /api/repos/create`` ``{name, organization, type, visibility}`` -> ``{url}``;
  409 when the repository exists (``exist_ok`` then goes on).
* ``POST /api/{type}s/{ns}/{name}/preupload/{rev}`` ``{files: [{path, sample, size}]}``
  -> ``{files: [{path, uploadMode, shouldIgnore, oid}]}``. Every file is answered
  ``regular`` (sent base64 in the commit), with the git blob id of the file the
  repository already holds, so unchanged files are not committed again. The real Hub
  answers ``lfs`` for large and binary files, which huggingface_hub then uploads through
  Xet storage; that path is not served here (see docs/export.md).
* ``POST /api/{type}s/{ns}/{name}/commit/{rev}`` (``application/x-ndjson``: a header
  line, then ``file`` / ``deletedFile`` / ``deletedFolder`` lines) -> ``{commitUrl,
  commitOid}``; ``lfsFile`` lines are refused (400).
* ``POST /api/validate-yaml`` ``{content, repoType}`` (upload_folder sends the card's
  README.md first) -> ``{errors, warnings}``, 400 when the metadata is malformed: here,
  YAML that does not parse to a mapping, ``size_categories`` outside the Hub's values,
  ``tags`` / ``task_categories`` that are not lists of strings, or ``configs`` without
  ``config_name`` and ``data_files`` (a subset of the Hub's own checks, which are not
  public).
* ``GET /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]`` (paged by a ``Link`` header like
  the Hub, 1000 entries a page) and ``GET /api/{type}s/{ns}/{name}[/revision/{rev}]``.

Tokens: ``Authorization: Bearer TOKEN`` must be one of ``tokens`` (token -> user); a
user may write only under their own name (else 403), as the Hub answers for a namespace
one has no rights on. Errors carry ``X-Error-Message`` like the Hub's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

__all__ = (
    "SIZE_CATEGORIES",
    "FakeHub",
    "FakeHubInThread",
    "Repo",
    "git_blob_id",
    "metadata_errors",
)


def git_blob_id(data: bytes) -> str:
    """The git blob id (sha1 of ``blob <size>\\0`` + data), as the Hub reports a file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class Repo:
    """A repository: its files (path -> bytes), commits (newest last) and visibility."""

    repo_type: str
    repo_id: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def head(self) -> str:
        """The id of the last commit (a fixed id before the first)."""
        return self.commits[-1]["oid"] if self.commits else "0" * 40


SIZE_CATEGORIES = (
    "n<1K",
    "1K<n<10K",
    "10K<n<100K",
    "100K<n<1M",
    "1M<n<10M",
    "10M<n<100M",
    "100M<n<1B",
    "1B<n<10B",
    "10B<n<100B",
    "100B<n<1T",
    "n>1T",
)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def metadata_errors(readme: str) -> list[str]:
    """What the fake Hub finds wrong with a README's YAML metadata (empty: nothing)."""
    if not readme.startswith("---\n"):
        return []
    end = readme.find("\n---\n", 4)
    if end < 0:
        return ["the YAML metadata block is not closed by a --- line"]
    try:
        meta = yaml.safe_load(readme[4:end])
    except yaml.YAMLError as exc:
        return [f"YAML does not parse: {exc}"]
    if not isinstance(meta, dict):
        return ["the metadata is not a mapping"]
    errors = [
        f'"{key}" must be a list of strings'
        for key in ("tags", "task_categories", "size_categories")
        if key in meta and not _strings(meta[key])
    ]
    errors += [
        f'"size_categories" has an unknown value {size!r}'
        for size in meta.get("size_categories") or []
        if size not in SIZE_CATEGORIES
    ]
    for i, config in enumerate(meta.get("configs") or []):
        if not isinstance(config, dict) or not isinstance(config.get("config_name"), str):
            errors.append(f'"configs[{i}].config_name" must be a string')
            continue
        files = config.get("data_files")
        if not (
            isinstance(files, str)
            or isinstance(files, list)
            and all(isinstance(f, dict) and {"split", "path"} <= set(f) for f in files)
        ):
            errors.append(f'"configs[{i}].data_files" must be a path or a list of split/path')
    return errors


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return web.json_response({"error": message}, status=status, headers=headers)


class FakeHub:
    """The server (``await start()`` / ``await aclose()``); ``repos`` holds what was pushed.

    Args:
        tokens: accepted tokens -> the user each belongs to.
        page_size: tree entries per page (the Hub's is 1000).
    """

    def __init__(self, tokens: dict[str, str], *, page_size: int = 1000) -> None:
        self.tokens = tokens
        self.page_size = page_size
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        self.validated: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        """A repository that was created (KeyError otherwise)."""
        return self.repos[f"{repo_type}s/{repo_id}"]

    async def start(self) -> None:
        """Listen on 127.0.0.1, a free port."""
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/api/repos/create", self._create)
        app.router.add_post("/api/validate-yaml", self._validate_yaml)
        base = "/api/{type:datasets|models|spaces}/{ns}/{name}"
        app.router.add_post(base + "/preupload/{rev}", self._preupload)
        app.router.add_post(base + "/commit/{rev}", self._commit)
        app.router.add_get(base + "/tree/{rev}", self._tree)
        app.router.add_get(base + "/tree/{rev}/{path:.*}", self._tree)
        app.router.add_get(base + "/revision/{rev}", self._info)
        app.router.add_get(base, self._info)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ helpers
    def _user(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        return self.tokens.get(token)

    def _target(self, request: web.Request) -> tuple[str, Repo | None]:
        info = request.match_info
        key = f"{info['type']}/{info['ns']}/{info['name']}"
        return key, self.repos.get(key)

    def _check(
        self, request: web.Request, *, write: bool
    ) -> tuple[Repo | None, web.Response | None]:
        self.requests.append(f"{request.method} {request.path}")
        user = self._user(request)
        if user is None:
            return None, _error(401, "Invalid credentials in Authorization header")
        key, repo = self._target(request)
        if repo is None or (repo.private and request.match_info["ns"] != user):
            return None, _error(404, f"Repository not found: {key}", "RepoNotFound")
        if write and request.match_info["ns"] != user:
            return None, _error(403, f"You don't have the rights to write to {key}")
        if request.match_info.get("rev", "main") != "main":
            return None, _error(404, "Revision not found", "RevisionNotFound")
        return repo, None

    # ------------------------------------------------------------------ routes
    async def _create(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path}")
        user = self._user(request)
        if user is None:
            return _error(401, "Invalid credentials in Authorization header")
        body = await request.json()
        namespace = body.get("organization") or user
        if namespace != user:
            return _error(
                403,
                f'You don\'t have the rights to create a dataset under the namespace "{namespace}"',
            )
        repo_type = body.get("type") or "model"
        repo_id = f"{namespace}/{body['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.url}/{prefix}{repo_id}"
        key = f"{repo_type}s/{repo_id}"
        if key in self.repos:
            return web.json_response(
                {"error": "You already created this dataset repo", "url": url}, status=409
            )
        private = body.get("visibility") == "private" or bool(body.get("private"))
        self.repos[key] = Repo(repo_type=repo_type, repo_id=repo_id, private=private)
        return web.json_response({"url": url, "name": repo_id, "id": repo_id})

    async def _validate_yaml(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path}")
        if self._user(request) is None:
            return _error(401, "Invalid credentials in Authorization header")
        body = await request.json()
        errors = metadata_errors(str(body.get("content", "")))
        self.validated.append(str(body.get("content", "")))
        if errors:
            return web.json_response(
                {"errors": [{"message": e} for e in errors], "warnings": []}, status=400
            )
        return web.json_response({"errors": [], "warnings": []})

    async def _preupload(self, request: web.Request) -> web.Response:
        repo, error = self._check(request, write=True)
        if error is not None:
            return error
        assert repo is not None
        body = await request.json()
        files = []
        for entry in body["files"]:
            sample = base64.b64decode(entry["sample"])
            assert len(sample) <= entry["size"], entry["path"]
            held = repo.files.get(entry["path"])
            files.append(
                {
                    "path": entry["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_id(held) if held is not None else None,
                }
            )
        return web.json_response({"files": files, "commitOid": repo.head})

    async def _commit(self, request: web.Request) -> web.Response:
        repo, error = self._check(request, write=True)
        if error is not None:
            return error
        assert repo is not None
        if request.content_type != "application/x-ndjson":
            return _error(400, f"expected application/x-ndjson, got {request.content_type}")
        lines = [json.loads(line) for line in (await request.read()).splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return _error(400, "the first line must be the commit header")
        header = lines[0]["value"]
        files = dict(repo.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    return _error(400, f"unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in files:
                    return _error(404, f"{value['path']}: no such file", "EntryNotFound")
                del files[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
            else:
                return _error(400, f"operation {key!r} is not served by this fake Hub")
        oid = hashlib.sha1(
            repo.head.encode()
            + json.dumps(sorted((p, git_blob_id(d)) for p, d in files.items())).encode(),
            usedforsecurity=False,
        ).hexdigest()
        repo.files = files
        repo.commits.append(
            {"oid": oid, "summary": header.get("summary", ""), "lines": len(lines) - 1}
        )
        prefix = f"{self.url}/{repo.repo_type}s/{repo.repo_id}"
        return web.json_response({"commitUrl": f"{prefix}/commit/{oid}", "commitOid": oid})

    async def _tree(self, request: web.Request) -> web.Response:
        repo, error = self._check(request, write=False)
        if error is not None:
            return error
        assert repo is not None
        path = request.match_info.get("path", "").strip("/")
        recursive = request.query.get("recursive", "false").lower() in ("1", "true")
        entries = []
        for name in sorted(repo.files):
            if path and not name.startswith(path + "/"):
                continue
            rest = name[len(path) + 1 :] if path else name
            if not recursive and "/" in rest:
                continue
            data = repo.files[name]
            entries.append(
                {"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)}
            )
        start = int(request.query.get("cursor", "0"))
        page = entries[start : start + self.page_size]
        headers = {}
        if start + self.page_size < len(entries):
            query = dict(request.query)
            query["cursor"] = str(start + self.page_size)
            headers["Link"] = f'<{request.url.with_query(query)}>; rel="next"'
        return web.json_response(page, headers=headers)

    async def _info(self, request: web.Request) -> web.Response:
        repo, error = self._check(request, write=False)
        if error is not None:
            return error
        assert repo is not None
        return web.json_response(
            {
                "id": repo.repo_id,
                "sha": repo.head,
                "private": repo.private,
                "siblings": [{"rfilename": p} for p in sorted(repo.files)],
            }
        )


class FakeHubInThread:
    """A :class:`FakeHub` on its own event loop in a thread, for a CLI run in a subprocess."""

    def __init__(self, tokens: dict[str, str], **kwargs: Any) -> None:
        self.hub = FakeHub(tokens, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        """The Hub endpoint to give ``HfApi(endpoint=...)``."""
        return self.hub.url

    def __enter__(self) -> FakeHub:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.hub.start(), self._loop).result(timeout=30)
        return self.hub

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.hub.aclose(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

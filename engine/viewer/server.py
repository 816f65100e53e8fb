"""The viewer's HTTP server: a read-only JSON API over one output directory, and the page.

Routes (GET only; any other method is answered 405, nothing is ever written):

* ``/`` and ``/static/*``: the page (files shipped in ``engine/viewer/static``);
* ``/api/run``: the manifest, row counts, whether the run is live, its ``status.json``
  (written by the run about once a second) and, once written, its ``report.json``;
* ``/api/rows?kind=&start=&limit=&stage=&reason=&q=&score=&min=&max=``: a page of rows
  as short summaries (:func:`~engine.viewer.query.run_query`);
* ``/api/row?kind=&pos=``: one whole row, with where it is stored;
* ``/api/facets?kind=``: the reasons, stages and scores found in the first rows.

It binds 127.0.0.1 by default, answers only requests whose ``Host`` names the loopback
address it listens on (so a web page elsewhere cannot reach it through DNS
rebinding), and its page loads nothing from outside the machine (the
Content-Security-Policy allows this server only). File reads run in worker threads,
so a viewer inside a run (``synth-engine run --view``) does not stall the run's loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import orjson
from aiohttp import web

from ..errors import ShardError
from ..io.shards import KINDS
from ..jsontypes import JSON, JSONObject
from ..metrics.status import STATUS_NAME
from ..serving import LoopbackServer
from .catalog import Catalog, Snapshot
from .query import RowQuery, facets, run_query, summarize

__all__ = ("STATIC_DIR", "ViewerServer", "run_state")

STATIC_DIR = Path(__file__).resolve().parent / "static"
REPORT_NAME = "report.json"
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
_MAX_LIMIT = 500
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _BadRequest(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _seconds(value: JSON) -> float:
    """A timestamp field of status.json (0 when absent or not a number)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _read_json(path: Path) -> JSONObject | None:
    try:
        value: JSON = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None  # absent, or replaced between two looks: the next poll reads it
    return value if isinstance(value, dict) else None


def run_state(
    snapshot: Snapshot, status: JSONObject | None, *, now: float, live_after_s: float
) -> tuple[str, str]:
    """``(state, detail)`` of the run behind an output.

    States: ``live`` (status.json says running and is fresh), ``complete``, ``stopped``
    (ended early, or its status went stale: killed), ``incomplete`` (no status to
    tell), ``empty`` (no manifest yet).
    """
    m = snapshot.manifest
    if status is not None and status.get("state") == "running":
        age = now - _seconds(status.get("updated_at"))
        if age <= live_after_s:
            return "live", "the run is writing this output now"
        if m is None or not m.complete:
            return "stopped", (
                f"no update for {age:.0f} s: the run was killed or is stuck "
                "(run the same command again to resume)"
            )
    if m is None:
        return "empty", "no manifest.json yet (nothing committed)"
    if m.complete:
        return "complete", f"complete since {m.ended_at or m.updated_at}"
    if m.stop_reason:
        return "stopped", f"stopped early: {m.stop_reason} (run the same command to resume)"
    return "incomplete", "not complete (interrupted, or running without a status file)"


class ViewerServer(LoopbackServer):
    """Serves the viewer of one output directory.

    Args:
        out_dir: the output directory (it may not exist yet: a run may be about to make it).
        host: interface to listen on (127.0.0.1 by default; anything else exposes the
            output to the network, see docs/viewer.md).
        port: TCP port (0: a free one).
        live_after_s: a ``status.json`` older than this means the run is not live.
        wall: wall-clock seconds since the epoch (the status file's clock).
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        live_after_s: float = 5.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(host=host, port=port)
        self.out_dir = Path(out_dir)
        self.catalog = Catalog(self.out_dir)
        self.live_after_s = live_after_s
        self._wall = wall
        self._static = {p.name: p for p in STATIC_DIR.iterdir() if p.suffix in _TYPES}

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:8765/``."""
        return self.address("/")

    def build_app(self) -> web.Application:
        """The application: the page, its files and the API (GET only)."""
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._file)
        app.router.add_get("/api/run", self._run)
        app.router.add_get("/api/rows", self._rows)
        app.router.add_get("/api/row", self._row)
        app.router.add_get("/api/facets", self._facets)
        return app

    # ------------------------------------------------------------ middleware
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.host in _LOOPBACK and _hostname(request.host) not in _LOOPBACK:
            return _json(
                {
                    "error": f"host {request.host!r} not allowed",
                    "hint": "open the viewer at " + self.url,
                },
                status=403,
            )
        try:
            response = await handler(request)
        except _BadRequest as exc:
            response = _json({"error": str(exc), "hint": exc.hint}, status=400)
        except ShardError as exc:
            response = _json({"error": exc.reason, "path": exc.path, "hint": exc.hint}, status=500)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    # ------------------------------------------------------------ page
    async def _index(self, request: web.Request) -> web.StreamResponse:
        return self._serve("index.html")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        return self._serve(request.match_info["name"])

    def _serve(self, name: str) -> web.StreamResponse:
        path = self._static.get(name)
        if path is None:
            raise web.HTTPNotFound(text=f"no such file: {name}")
        return web.Response(
            body=path.read_bytes(),
            content_type=_TYPES[path.suffix],
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    # ------------------------------------------------------------ api
    def _run_info(self) -> dict[str, object]:
        snap = self.catalog.snapshot()
        status = _read_json(self.out_dir / STATUS_NAME)
        now = self._wall()
        state, detail = run_state(snap, status, now=now, live_after_s=self.live_after_s)
        if status is not None:
            status["age_s"] = round(now - _seconds(status.get("updated_at")), 1)
        report = _read_json(self.out_dir / REPORT_NAME) if state != "live" else None
        m = snap.manifest
        manifest = None
        if m is not None:
            manifest = {
                "method": m.method,
                "complete": m.complete,
                "simulated": m.simulated,
                "stop_reason": m.stop_reason,
                "started_at": m.started_at,
                "updated_at": m.updated_at,
                "ended_at": m.ended_at,
                "engine_version": m.engine_version,
                "config_hash": m.config_hash,
                "totals": m.totals,
                "shards": len(m.shards),
                "derived": m.extra.get("derived", []),
            }
        simulated = bool(
            (m is not None and m.simulated) or (report is not None and report.get("simulated"))
        )
        return {
            "output": str(self.out_dir),
            "name": self.out_dir.name,
            "state": state,
            "state_detail": detail,
            "simulated": simulated,
            "manifest": manifest,
            "rows": {
                kind: {"total": snap.rows(kind), "uncommitted": snap.uncommitted(kind)}
                for kind in KINDS
            },
            "status": status,
            "report": report,
        }

    async def _run(self, request: web.Request) -> web.StreamResponse:
        return _json(await asyncio.to_thread(self._run_info))

    def _simulated(self) -> bool:
        m = self.catalog.snapshot().manifest
        return bool(m is not None and m.simulated)

    async def _rows(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        query = RowQuery(
            kind=_kind(q.get("kind", "kept")),
            stage=q.get("stage") or None,
            reason=q.get("reason") or None,
            text=q.get("q") or None,
            score=q.get("score") or None,
            score_min=_number(q, "min"),
            score_max=_number(q, "max"),
        )
        start = _integer(q, "start", 0)
        limit = min(_MAX_LIMIT, max(1, _integer(q, "limit", 50)))

        def work() -> dict[str, object]:
            page = run_query(self.catalog, query, start=start, limit=limit)
            simulated = self._simulated()
            return {
                "kind": query.kind,
                "filtered": query.filtered,
                "start": page.start,
                "next": page.next,
                "scanned": page.scanned,
                "total": page.total,
                "budget_spent": page.budget_spent,
                "rows": [summarize(f, row, simulated=simulated) for f, row in page.rows],
            }

        return _json(await asyncio.to_thread(work))

    async def _row(self, request: web.Request) -> web.StreamResponse:
        kind = _kind(request.query.get("kind", "kept"))
        position = _integer(request.query, "pos", 0)

        def work() -> dict[str, object] | None:
            found = self.catalog.locate(kind, position)
            if found is None:
                return None
            try:
                row: JSON = orjson.loads(found.raw)
            except orjson.JSONDecodeError as exc:
                row = {"_unreadable": f"line is not valid JSON ({exc})"}
            return {
                "kind": kind,
                "position": found.position,
                "file": found.shard.name,
                "line": found.line + 1,
                "committed": found.shard.committed,
                "simulated": self._simulated()
                or bool(isinstance(row, dict) and row.get("simulated")),
                "row": row,
            }

        found = await asyncio.to_thread(work)
        if found is None:
            return _json(
                {
                    "error": f"no {kind} row at position {position}",
                    "hint": "pick a row from the list",
                },
                status=404,
            )
        return _json(found)

    async def _facets(self, request: web.Request) -> web.StreamResponse:
        kind = _kind(request.query.get("kind", "kept"))
        return _json(await asyncio.to_thread(facets, self.catalog, kind))


def _hostname(host: str | None) -> str:
    """The name part of a Host header: ``127.0.0.1:8765`` -> ``127.0.0.1``, ``[::1]:80`` -> ``[::1]``."""
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0]


def _kind(value: str) -> str:
    if value not in KINDS:
        raise _BadRequest(f"unknown kind {value!r}", f"use one of {', '.join(KINDS)}")
    return value


def _integer(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw in (None, ""):
        return default
    try:
        return max(0, int(raw))
    except ValueError:
        raise _BadRequest(
            f"{name}={raw!r} is not a whole number", f"give {name} as e.g. 0"
        ) from None


def _number(query: Mapping[str, str], name: str) -> float | None:
    raw = query.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _BadRequest(f"{name}={raw!r} is not a number", f"give {name} as e.g. 2.5") from None
    if value != value:
        raise _BadRequest(f"{name} is not a number", f"give {name} as e.g. 2.5")
    return value

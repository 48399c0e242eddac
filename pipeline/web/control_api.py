"""The control API: HTTP/JSON, served by the supervisor (loopback by default).

    GET    /healthz          200 while the supervisor's loop turns (liveness)
    GET    /readyz           200 while running with every stage up; 503 starting, degraded or stopping
    GET    /streams          every stream: state, reason, last error, frame counters
    GET    /streams/NAME     one stream
    POST   /streams          add one: {"uri": ..., "name": ..., "mode": ..., "reconnect": {...}, ...}
    DELETE /streams/NAME     remove one: its sequence ends (END), its state is freed, its events close
    GET    /stages           the stage processes: pid, ready, restarts
    GET    /openapi.json     these endpoints, described for tools (OpenAPI 3)

Answers are JSON. A refused request changes nothing and says why:
400 (invalid URI or body), 403 (a file outside ``control.media_roots``),
404 (no such stream), 409 (the name is taken, or the state table is full),
503 (stopping). With a token configured, every endpoint but /healthz,
/readyz and /openapi.json wants ``Authorization: Bearer TOKEN`` (401
otherwise); listening beyond loopback, or ``control.require_token``,
requires one.

Served by Starlette on uvicorn (``pipeline.web.http_server``). The probes
answer on the event loop itself (the view answers them from the last
published status, without waiting); everything else that asks the view
runs on a worker thread, so a request waiting for the supervisor's loop
never holds up the others.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Sequence
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

import anyio
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.config import SourceConfig, describe_validation_error
from pipeline.errors import ActionPipeError
from pipeline.supervision.registry import StreamRequestError
from pipeline.supervision.view import PipelineView
from pipeline.web.guards import CloseAfterRefusal, RefuseAmbiguousFraming
from pipeline.web.http_server import HttpServer
from pipeline.web.media_roots import SourceNotAllowed, admit

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_S = 10.0  # a body trickled slower than this holds a connection no longer
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})  # probes and the description need no token
_STATUS_BY_CODE = {"duplicate": HTTPStatus.CONFLICT, "capacity": HTTPStatus.CONFLICT,
                   "unknown": HTTPStatus.NOT_FOUND, "invalid": HTTPStatus.BAD_REQUEST}


class ControlSettings(Protocol):
    """What the routes read at each request (so a test may swap the view of a running server)."""

    view: PipelineView
    token: str | None
    media_roots: Sequence[Path]


class _Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, indent=1).encode()


class RequestRefused(ActionPipeError):
    """A request the API answers with an error status; raised inside a route, answered by the app."""

    def __init__(self, status: int, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _answer(status: int, body: dict) -> Response:
    return _Json(body, status_code=status, headers={"Cache-Control": "no-store"})


def _error(status: int, message: str, code: str = "invalid") -> Response:
    return _answer(status, {"error": message, "code": code})


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on a worker thread: the view may read files or wait for the supervisor's loop. Abandoned,
    not waited for, when the server stops (the view's own timeout ends it)."""
    return await anyio.to_thread.run_sync(partial(fn, *args), abandon_on_cancel=True)


async def _view_call(fn: Callable[..., dict], *args: Any) -> dict:
    try:
        return await _off_loop(fn, *args)
    except StreamRequestError as exc:
        status = HTTPStatus.SERVICE_UNAVAILABLE if "stopping" in str(exc) else _STATUS_BY_CODE.get(exc.code, 400)
        raise RequestRefused(status, str(exc), exc.code) from None
    except TimeoutError:
        raise RequestRefused(HTTPStatus.SERVICE_UNAVAILABLE, "the supervisor did not answer in time", "busy") from None


async def _json_body(request: Request) -> dict:
    declared = request.headers.get("content-length")  # h11 has checked that it is a number
    refusal = RequestRefused(HTTPStatus.BAD_REQUEST, f"send a JSON object body (1 to {MAX_BODY_BYTES} bytes)")
    if declared is not None and not 0 < int(declared) <= MAX_BODY_BYTES:
        raise refusal
    data = bytearray()
    try:
        with anyio.fail_after(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                data += chunk
                if len(data) > MAX_BODY_BYTES:  # chunked bodies declare no length
                    raise refusal
    except TimeoutError:
        raise RequestRefused(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {BODY_TIMEOUT_S:g} s") from None
    if not data:
        raise refusal
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRefused(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestRefused(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
    return body


# -- routes (their docstrings, after '---', are their OpenAPI description) --------------------------
def _settings(request: Request) -> ControlSettings:
    return request.app.state.settings


async def healthz(request: Request) -> Response:
    """Liveness.
    ---
    summary: 200 while the supervisor's loop turns, 503 when it has stalled
    responses: {"200": {description: ok}, "503": {description: stalled}}
    """
    ok, body = _settings(request).view.health()
    return _answer(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)


async def readyz(request: Request) -> Response:
    """Readiness.
    ---
    summary: 200 while running with every stage up; 503 while starting, degraded or stopping
    responses: {"200": {description: ready}, "503": {description: starting, degraded or stopping}}
    """
    ok, body = _settings(request).view.readiness()
    return _answer(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)


async def list_streams(request: Request) -> Response:
    """Every stream.
    ---
    summary: every stream, with its state, reason, last error and frame counters
    responses: {"200": {description: "{streams: [...]}"}, "401": {description: no or wrong token}}
    """
    return _answer(HTTPStatus.OK, {"streams": await _off_loop(_settings(request).view.streams)})


async def get_stream(request: Request) -> Response:
    """One stream.
    ---
    summary: one stream by name
    responses: {"200": {description: the stream}, "404": {description: no such stream}}
    """
    name = request.path_params["name"]
    rows = [r for r in await _off_loop(_settings(request).view.streams) if r["name"] == name]
    if not rows:
        raise RequestRefused(HTTPStatus.NOT_FOUND, f"no stream named {name!r}", "unknown")
    return _answer(HTTPStatus.OK, rows[0])


async def add_stream(request: Request) -> Response:
    """Add a stream.
    ---
    summary: add a stream; the body has the keys of a sources entry (uri, name, mode, reconnect, ...)
    responses:
      "201": {description: added (it connects on its own)}
      "400": {description: invalid body or URI, or a file that cannot be opened}
      "403": {description: a file outside control.media_roots}
      "409": {description: the name is taken, or the state table is full}
      "503": {description: stopping, or the supervisor did not answer in time}
    """
    settings = _settings(request)
    body = await _json_body(request)
    try:
        source = SourceConfig.model_validate(body)
    except ValidationError as exc:
        raise RequestRefused(HTTPStatus.BAD_REQUEST, describe_validation_error(exc, SourceConfig)) from None
    try:
        source = admit(source, settings.media_roots)
    except SourceNotAllowed as exc:
        logger.warning("control API: %s", exc)  # someone tried; the operator may want to widen the roots, or know
        raise RequestRefused(HTTPStatus.FORBIDDEN, str(exc), "forbidden") from None
    return _answer(HTTPStatus.CREATED, await _view_call(settings.view.add_stream, source))


async def remove_stream(request: Request) -> Response:
    """Remove a stream.
    ---
    summary: end a stream's sequence (END), free its state, close its open events
    responses: {"202": {description: removal under way}, "404": {description: no such stream}}
    """
    name = request.path_params["name"]
    return _answer(HTTPStatus.ACCEPTED, await _view_call(_settings(request).view.remove_stream, name))


async def list_stages(request: Request) -> Response:
    """The stage processes.
    ---
    summary: every stage process, with its pid, readiness and restarts
    responses: {"200": {description: "{stages: [...]}"}}
    """
    return _answer(HTTPStatus.OK, {"stages": await _off_loop(_settings(request).view.stages)})


_SCHEMA = SchemaGenerator({"openapi": "3.0.0", "info": {"title": "actionpipe control API", "version": "1"}})


async def openapi(request: Request) -> Response:
    return _answer(HTTPStatus.OK, _SCHEMA.get_schema(routes=request.app.routes))


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/streams", list_streams, methods=["GET"]),
    Route("/streams", add_stream, methods=["POST"]),
    Route("/streams/{name}", get_stream, methods=["GET"]),
    Route("/streams/{name}", remove_stream, methods=["DELETE"]),
    Route("/stages", list_stages, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
]


async def _refused(request: Request, exc: RequestRefused) -> Response:
    return _error(exc.status, exc.message, exc.code)


async def _no_route(request: Request, exc: Exception) -> Response:
    # 404 and 405 alike: the API has no such endpoint for this method, and says which request it was.
    return _error(HTTPStatus.NOT_FOUND, f"no such endpoint: {request.method} {request.url.path}", "unknown")


class _TokenGate:
    """Every request but to OPEN_PATHS needs the token, checked before routing (an unknown path is 401 too)."""

    def __init__(self, app: ASGIApp, settings: ControlSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.settings.token
        if scope["type"] != "http" or not token or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if given.startswith(b"Bearer ") and hmac.compare_digest(given[7:], token.encode()):
            await self.app(scope, receive, send)
            return
        refusal = _error(HTTPStatus.UNAUTHORIZED, "this endpoint needs 'Authorization: Bearer TOKEN' (control.token)",
                         "unauthorised")
        await refusal(scope, receive, send)


class _NoTrailingSlash:
    """``/streams/`` is ``/streams``, as it always was: answered, not redirected (a redirect would name the
    request's own Host header)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and len(scope["path"]) > 1 and scope["path"].endswith("/"):
            scope = {**scope, "path": scope["path"].rstrip("/") or "/"}
        await self.app(scope, receive, send)


def control_app(settings: ControlSettings) -> Starlette:
    app = Starlette(routes=ROUTES, exception_handlers={RequestRefused: _refused, 404: _no_route, 405: _no_route})
    return guarded(app, settings)


def guarded(app: Starlette, settings) -> Starlette:
    """``app`` behind this API's gates: the token (``settings.token``, read at each request; the probes in
    OPEN_PATHS need none), no trailing-slash redirects, and the smuggling guards. Also used by the
    cluster coordinator's API."""
    app.router.redirect_slashes = False
    app.state.settings = settings
    # add_middleware wraps what is there: the last added sees a request first.
    app.add_middleware(_TokenGate, settings=settings)
    app.add_middleware(_NoTrailingSlash)
    app.add_middleware(CloseAfterRefusal)
    app.add_middleware(RefuseAmbiguousFraming)
    return app


class ControlServer(HttpServer):
    def __init__(self, view: PipelineView, host: str, port: int, token: str | None,
                 media_roots: Sequence[Path] = ()) -> None:
        self.view = view
        self.token = token
        self.media_roots = list(media_roots)
        super().__init__(control_app(self), host, port, name="control-api")


def start_control_api(view: PipelineView, host: str, port: int, token: str | None,
                      media_roots: Sequence[Path] = ()) -> ControlServer:
    return ControlServer(view, host, port, token, media_roots)


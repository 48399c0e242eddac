"""The cluster's control API, served by the coordinator (loopback by default; a token beyond it).

    GET    /healthz                 200 while the coordinator's loop runs
    GET    /nodes                   every node: state, streams placed on it, capacity, its metrics target
    POST   /nodes/NAME/drain        move every stream off NAME (each snapshotted at a step boundary)
    GET    /streams                 every stream: its node, placement state, generation, what its node says
    GET    /streams/NAME            one stream
    POST   /streams                 add one: a sources entry (uri, name, mode, ...) and its ``needs``
    DELETE /streams/NAME            remove one
    GET    /metrics                 the coordinator's metrics (Prometheus text)

Refusals as the single-host API's: 400 (invalid body), 403 (a file outside ``api.media_roots``), 404
(no such node or stream), 409 (a name taken, a node that cannot be drained). The gates (token, smuggling guards) are the control API's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.cluster.config import ClusterSource, CoordinatorApi
from pipeline.cluster.placement import PlacementError
from pipeline.config import describe_validation_error
from pipeline.web.control_api import RequestRefused, _answer, _json_body, _no_route, _off_loop, _refused, guarded
from pipeline.web.http_server import HttpServer
from pipeline.web.media_roots import SourceNotAllowed, admit

logger = logging.getLogger(__name__)
_STATUS = {"duplicate": HTTPStatus.CONFLICT, "conflict": HTTPStatus.CONFLICT, "unknown": HTTPStatus.NOT_FOUND,
           "invalid": HTTPStatus.BAD_REQUEST}


@dataclass
class _Settings:
    coordinator: object
    token: str | None
    media_roots: list


def _coordinator(request: Request):
    return request.app.state.settings.coordinator


async def _call(fn, *args):
    try:
        return await _off_loop(fn, *args)
    except PlacementError as exc:
        raise RequestRefused(_STATUS.get(getattr(exc, "code", "invalid"), HTTPStatus.BAD_REQUEST), str(exc),
                             getattr(exc, "code", "invalid")) from None


async def healthz(request: Request) -> Response:
    body = _coordinator(request).health()
    return _answer(HTTPStatus.OK if body["status"] == "ok" else HTTPStatus.SERVICE_UNAVAILABLE, body)


async def list_nodes(request: Request) -> Response:
    return _answer(HTTPStatus.OK, {"nodes": await _call(_coordinator(request).nodes)})


async def drain_node(request: Request) -> Response:
    return _answer(HTTPStatus.ACCEPTED, await _call(_coordinator(request).drain, request.path_params["name"]))


async def list_streams(request: Request) -> Response:
    return _answer(HTTPStatus.OK, {"streams": await _call(_coordinator(request).streams)})


async def get_stream(request: Request) -> Response:
    return _answer(HTTPStatus.OK, await _call(_coordinator(request).stream, request.path_params["name"]))


async def add_stream(request: Request) -> Response:
    body = await _json_body(request)
    try:
        source = ClusterSource.model_validate(body)
    except ValidationError as exc:
        raise RequestRefused(HTTPStatus.BAD_REQUEST, describe_validation_error(exc, ClusterSource)) from None
    try:
        admitted = admit(source, request.app.state.settings.media_roots)
    except SourceNotAllowed as exc:
        logger.warning("cluster API: %s", exc)
        raise RequestRefused(HTTPStatus.FORBIDDEN, str(exc), "forbidden") from None
    body = {**body, "uri": admitted.uri}
    return _answer(HTTPStatus.CREATED, await _call(_coordinator(request).add_stream, body))


async def remove_stream(request: Request) -> Response:
    return _answer(HTTPStatus.ACCEPTED, await _call(_coordinator(request).remove_stream, request.path_params["name"]))


async def metrics(request: Request) -> Response:
    text = await _off_loop(_coordinator(request).metrics_text)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/nodes", list_nodes, methods=["GET"]),
    Route("/nodes/{name}/drain", drain_node, methods=["POST"]),
    Route("/streams", list_streams, methods=["GET"]),
    Route("/streams", add_stream, methods=["POST"]),
    Route("/streams/{name}", get_stream, methods=["GET"]),
    Route("/streams/{name}", remove_stream, methods=["DELETE"]),
    Route("/metrics", metrics, methods=["GET"]),
]


def start_api(coordinator, settings: CoordinatorApi) -> HttpServer:
    app = Starlette(routes=ROUTES, exception_handlers={RequestRefused: _refused, 404: _no_route, 405: _no_route})
    return HttpServer(guarded(app, _Settings(coordinator, settings.token, list(settings.media_roots))), settings.host,
                      settings.port,
                      name="cluster-api")


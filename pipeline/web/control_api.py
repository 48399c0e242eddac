"""The control API: HTTP/JSON, served by the supervisor (loopback by default).

    GET    /healthz          200 while the supervisor's loop turns (liveness)
    GET    /readyz           200 while running with every stage up; 503 starting, degraded or stopping
    GET    /streams          every stream: state, reason, last error, frame counters
    GET    /streams/NAME     one stream
    POST   /streams          add one: {"uri": ..., "name": ..., "mode": ..., "reconnect": {...}, ...}
    DELETE /streams/NAME     remove one: its sequence ends (END), its state is freed, its events close
    GET    /stages           the stage processes: pid, ready, restarts

Answers are JSON. A refused request changes nothing and says why:
400 (invalid URI or body), 404 (no such stream), 409 (the name is taken, or
the state table is full), 503 (stopping). With a token configured, every
endpoint but /healthz and /readyz wants ``Authorization: Bearer TOKEN``
(401 otherwise); listening beyond loopback requires one.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from pydantic import ValidationError

from pipeline.config import SourceConfig, describe_validation_error
from pipeline.supervision.registry import StreamRequestError
from pipeline.supervision.view import PipelineView

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
_STATUS_BY_CODE = {"duplicate": HTTPStatus.CONFLICT, "capacity": HTTPStatus.CONFLICT,
                   "unknown": HTTPStatus.NOT_FOUND, "invalid": HTTPStatus.BAD_REQUEST}


class ControlServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], view: PipelineView, token: str | None) -> None:
        super().__init__(address, _Handler)
        self.view = view
        self.token = token


class _Handler(BaseHTTPRequestHandler):
    server: ControlServer
    protocol_version = "HTTP/1.1"

    # -- plumbing --------------------------------------------------------------------------------
    def log_message(self, fmt: str, *args) -> None:  # requests go to debug, not stderr
        logger.debug("control API: " + fmt, *args)

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body, indent=1).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, code: str = "invalid") -> None:
        self._answer(status, {"error": message, "code": code})

    def _authorised(self) -> bool:
        token = self.server.token
        if not token:
            return True
        given = self.headers.get("Authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode()):
            return True
        self._error(HTTPStatus.UNAUTHORIZED, "this endpoint needs 'Authorization: Bearer TOKEN' (control.token)",
                    "unauthorised")
        return False

    def _path(self) -> list[str]:
        return [unquote(p) for p in self.path.split("?", 1)[0].strip("/").split("/") if p]

    def _body(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY_BYTES:
            self._error(HTTPStatus.BAD_REQUEST, f"send a JSON object body (1 to {MAX_BODY_BYTES} bytes)")
            return None
        try:
            body = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError) as exc:
            self._error(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {exc}")
            return None
        if not isinstance(body, dict):
            self._error(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return None
        return body

    def _run(self, fn) -> None:
        try:
            fn()
        except StreamRequestError as exc:
            status = HTTPStatus.SERVICE_UNAVAILABLE if "stopping" in str(exc) else _STATUS_BY_CODE.get(exc.code, 400)
            self._error(status, str(exc), exc.code)
        except TimeoutError:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "the supervisor did not answer in time", "busy")

    # -- routes ----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        parts = self._path()
        view = self.server.view
        if parts == ["healthz"]:
            ok, body = view.health()
            self._answer(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)
        elif parts == ["readyz"]:
            ok, body = view.readiness()
            self._answer(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)
        elif not self._authorised():
            return
        elif parts == ["streams"]:
            self._answer(HTTPStatus.OK, {"streams": view.streams()})
        elif len(parts) == 2 and parts[0] == "streams":
            rows = [r for r in view.streams() if r["name"] == parts[1]]
            if rows:
                self._answer(HTTPStatus.OK, rows[0])
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no stream named {parts[1]!r}", "unknown")
        elif parts == ["stages"]:
            self._answer(HTTPStatus.OK, {"stages": view.stages()})
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: GET {self.path}", "unknown")

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorised():
            return
        if self._path() != ["streams"]:
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {self.path}", "unknown")
            return
        body = self._body()
        if body is None:
            return
        try:
            source = SourceConfig.model_validate(body)
        except ValidationError as exc:
            self._error(HTTPStatus.BAD_REQUEST, describe_validation_error(exc, SourceConfig))
            return

        def add() -> None:
            self._answer(HTTPStatus.CREATED, self.server.view.add_stream(source))

        self._run(add)

    def do_DELETE(self) -> None:  # noqa: N802
        if not self._authorised():
            return
        parts = self._path()
        if len(parts) != 2 or parts[0] != "streams":
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: DELETE {self.path}", "unknown")
            return

        def remove() -> None:
            self._answer(HTTPStatus.ACCEPTED, self.server.view.remove_stream(parts[1]))

        self._run(remove)


def start_control_api(view: PipelineView, host: str, port: int, token: str | None) -> ControlServer:
    server = ControlServer((host, port), view, token)
    threading.Thread(target=server.serve_forever, name="control-api", daemon=True).start()
    return server

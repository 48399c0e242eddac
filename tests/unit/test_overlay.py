"""The overlay's parts on their own: drawing, pairing frames with steps, video
stamps and files, the live board, the live page's answer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.stages.overlay.board import LiveBoard, frame_key
from pipeline.stages.overlay.drawing import OverlayLayout, preview_size, render_overlay
from pipeline.stages.overlay.pairing import StepMatcher
from pipeline.stages.overlay.video import OverlayVideoWriter, StreamTimeStamps
from pipeline.web.live_page import RateMeter, live_state

CLASSES = ("background", "approach", "recede", "enter")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- drawing ---------------------------------------------------------------------------------------
def _bar_fill(canvas: np.ndarray, layout: OverlayLayout, index: int) -> tuple[float, np.ndarray]:
    """How far along its track class ``index``'s bar is coloured, and its colour."""
    y0, y1 = layout.bar_row(index)
    zero, full = layout.bar_span
    row = canvas[(y0 + y1) // 2, zero:full].astype(int)
    track = np.array([60, 60, 60])
    coloured = np.abs(row - track).sum(axis=1) > 40
    coloured[:] = np.logical_and(coloured, np.abs(row - [60, 180, 255]).sum(axis=1) > 40)  # not the threshold mark
    filled = np.flatnonzero(coloured)
    return (filled.max() + 1) / (full - zero) if filled.size else 0.0, row[filled[0]] if filled.size else None


def test_bars_show_each_class_probability_and_active_actions_are_highlighted():
    frame = np.full((240, 320, 3), 90, np.uint8)
    layout = OverlayLayout(320, 240, CLASSES)
    probs = [0.1, 0.8, 0.0, 0.55]
    canvas = render_overlay(frame, layout, "yard", 75.5, probs, {"approach": 0.8}, on_threshold=0.5)
    assert canvas.shape == (layout.height, layout.width, 3)
    assert layout.width % 2 == 0 and layout.height % 2 == 0
    for index, p in enumerate(probs):
        fill, colour = _bar_fill(canvas, layout, index)
        assert fill == pytest.approx(p, abs=0.02), CLASSES[index]
        if index == 1:
            assert colour[1] > colour[0] and colour[1] > colour[2]  # active: green
        elif p > 0:
            assert colour[0] > colour[1]  # inactive: blue (BGR)
    # The camera frame itself is on the canvas, untouched.
    top = (layout.height - 240) // 2
    assert (canvas[top:top + 240, :320] == 90).all()


def test_render_refuses_probabilities_that_do_not_match_the_classes():
    layout = OverlayLayout(64, 48, CLASSES)
    with pytest.raises(ValueError, match="3 probabilities for 4 classes"):
        render_overlay(np.zeros((48, 64, 3), np.uint8), layout, "s", 0.0, [0.1, 0.2, 0.3], {}, 0.5)


@pytest.mark.parametrize("size, target, expected", [
    ((1280, 720), 480, (480, 270)), ((320, 240), 480, (320, 240)), ((641, 361), 480, (480, 270)),
    ((333, 111), 480, (332, 110)), ((1920, 1080), 640, (640, 360)),
])
def test_preview_size_keeps_aspect_never_scales_up_and_is_even(size, target, expected):
    assert preview_size(*size, target) == expected


# -- pairing -----------------------------------------------------------------------------------------
def test_frames_and_steps_pair_by_stream_time_in_either_order():
    matcher = StepMatcher(clock=Clock())
    frame_a, frame_b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    assert matcher.add_frame("a", 0.25, frame_a) is None
    assert matcher.add_step("b", 0.25, [0.5, 0.5]) is None  # another stream, same time: no pairing across streams
    both = matcher.add_step("a", 0.25, [0.9, 0.1])
    assert both.stream == "a" and both.t == 0.25 and both.frame is frame_a and both.probs == (0.9, 0.1)
    other = matcher.add_frame("b", 0.25, frame_b)
    assert other.frame is frame_b and other.probs == (0.5, 0.5)
    assert matcher.pending("a") == matcher.pending("b") == 0
    assert not matcher.unmatched


def test_a_step_whose_frame_never_comes_is_counted_once_and_a_lone_frame_is_not():
    clock = Clock()
    matcher = StepMatcher(max_wait_s=5.0, clock=clock)
    matcher.add_step("a", 1.0, [1.0])
    matcher.add_frame("a", 2.0, np.zeros((2, 2, 3), np.uint8))  # its step was dropped upstream
    clock.now += 4.9
    matcher.expire()
    assert matcher.pending("a") == 2 and not matcher.unmatched
    clock.now += 0.2
    matcher.expire()
    assert matcher.pending("a") == 0
    assert matcher.unmatched == {"a": 1} and matcher.frames_unused == {"a": 1}


def test_what_waits_is_bounded_per_stream_and_flushed_at_the_end():
    matcher = StepMatcher(max_pending=3, clock=Clock())
    for i in range(5):
        matcher.add_step("a", i * 0.25, [1.0])
    assert matcher.pending("a") == 3 and matcher.unmatched["a"] == 2
    # The oldest went first: the newest still pair.
    assert matcher.add_frame("a", 1.0, np.zeros((2, 2, 3), np.uint8)) is not None
    assert matcher.add_frame("a", 0.0, np.zeros((2, 2, 3), np.uint8)) is None
    matcher.flush()
    assert matcher.unmatched["a"] == 4 and matcher.frames_unused["a"] == 1 and matcher.pending("a") == 0


# -- video -----------------------------------------------------------------------------------------
def test_stamps_follow_stream_time_keep_gaps_and_never_go_back():
    stamps = StreamTimeStamps(step_s=0.25)
    assert [stamps.stamp(t) for t in (10.0, 10.25, 11.0)] == [0, 250, 1000]  # a gap stays a gap
    assert stamps.stamp(0.0) == 1250  # the stream's time started again (loop, reconnect): one step later
    assert stamps.stamp(0.25) == 1500
    assert stamps.stamp(0.25) == 1750  # never the same stamp twice


def _probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height,nb_read_frames:format=duration", "-of", "json", str(path)],
        capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    return {**data["streams"][0], "duration": float(data["format"]["duration"])}


def test_overlay_video_is_h264_at_stream_time(tmp_path):
    path = tmp_path / "yard.mp4"
    writer = OverlayVideoWriter(path, 96, 64, step_s=0.25)
    canvases = [np.full((64, 96, 3), 40 * i, np.uint8) for i in range(6)]
    times = [5.0, 5.25, 5.5, 6.5, 6.75, 7.0]  # a second missing in the middle (overlay frames dropped)
    for canvas, t in zip(canvases, times):
        writer.write(canvas, t)
    writer.close()
    info = _probe(path)
    assert info["codec_name"] == "h264" and (info["width"], info["height"]) == (96, 64)
    assert int(info["nb_read_frames"]) == 6
    assert info["duration"] == pytest.approx(2.25, abs=0.06)  # 5.0 .. 7.0 plus the last frame's step
    capture = cv2.VideoCapture(str(path))
    shades = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        shades.append(float(image.mean()))
    assert shades == pytest.approx([40.0 * i for i in range(6)], abs=3.0)


def test_overlay_video_refuses_odd_sizes_and_wrong_canvases(tmp_path):
    from pipeline.stages.overlay.video import OverlayVideoError

    with pytest.raises(OverlayVideoError, match="even sizes"):
        OverlayVideoWriter(tmp_path / "odd.mp4", 95, 64, step_s=0.25)
    writer = OverlayVideoWriter(tmp_path / "ok.mp4", 96, 64, step_s=0.25)
    with pytest.raises(OverlayVideoError, match="is not 64x96x3"):
        writer.write(np.zeros((64, 100, 3), np.uint8), 0.0)
    writer.close()


# -- the live board and page -----------------------------------------------------------------------
def _event(stream: str, action: str, kind: str, t: float) -> dict:
    return {"stream": stream, "action": action, "kind": kind, "t": t, "confidence": 0.9, "wall_time": 1.0,
            "reason": "threshold"}


def test_board_tracks_active_actions_from_events_and_keeps_the_last_ones(tmp_path):
    clock = Clock()
    board = LiveBoard(CLASSES, min_interval_s=0.5, clock=clock)
    board.event(_event("yard", "enter", "start", 1.0))
    board.event(_event("yard", "approach", "start", 2.0))
    board.event(_event("yard", "enter", "end", 3.0))
    assert board.active("yard") == {"approach": 0.9}
    for i in range(20):
        board.event(_event("yard", "recede", "start" if i % 2 == 0 else "end", 4.0 + i))
    snapshot = board.snapshot()["streams"]["yard"]
    assert len(snapshot["events"]) == 8 and snapshot["events"][0]["t"] == 23.0  # newest first, bounded
    assert board.active("gate") == {}


def test_board_publishes_frames_and_state_atomically_and_at_a_bounded_rate(tmp_path):
    clock = Clock()
    board = LiveBoard(CLASSES, min_interval_s=0.5, clock=clock)
    canvas = np.full((48, 64, 3), 200, np.uint8)
    board.step("yard", 1.0, [0.1, 0.2, 0.3, 0.4], canvas)
    board.publish(tmp_path)
    state = json.loads((tmp_path / "state.json").read_text())
    entry = state["streams"]["yard"]
    assert state["classes"] == list(CLASSES)
    assert entry["frame"] == f"{frame_key('yard')}.jpg" and entry["frame_version"] == 1 and entry["rendered"] == 1
    assert entry["probs"]["enter"] == pytest.approx(0.4)
    jpeg = cv2.imdecode(np.frombuffer((tmp_path / entry["frame"]).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape == (48, 64, 3) and abs(float(jpeg.mean()) - 200) < 3
    assert not list(tmp_path.glob("*.part"))  # written whole, then renamed
    # Within the interval a new frame waits; after it, it is published.
    board.step("yard", 1.25, [0.4, 0.3, 0.2, 0.1], np.zeros((48, 64, 3), np.uint8))
    assert not board.wants_frame("yard")
    clock.now += 0.1
    board.publish(tmp_path)
    assert json.loads((tmp_path / "state.json").read_text())["streams"]["yard"]["frame_version"] == 1
    clock.now += 0.5
    board.publish(tmp_path)
    assert json.loads((tmp_path / "state.json").read_text())["streams"]["yard"]["frame_version"] == 2


def test_rate_meter_measures_over_its_window():
    clock = Clock()
    meter = RateMeter(window_s=2.0, clock=clock)
    assert meter.rate(100) is None
    clock.now += 1.0
    assert meter.rate(110) == pytest.approx(10.0)
    clock.now += 2.0
    assert meter.rate(150) == pytest.approx(20.0)  # from the newest sample at least 2 s old (t=101, 110)
    clock.now += 1.5
    assert meter.rate(200) == pytest.approx(90 / 3.5)  # still from t=101: t=103 is only 1.5 s old
    assert meter.rate(0) is None  # counters that started again say nothing


class _Supervisor:
    """The two questions the page asks the supervisor (the real one is exercised in test_overlay_pipeline)."""

    def readiness(self):
        return True, {"status": "ready"}

    def streams(self):
        return [
            {"name": "yard", "state": "live", "reason": "opened", "error": "", "processed": 40, "events": 3,
             "reconnects": 1, "dropped": {"sampling": 100, "stale": 2}},
            {"name": "gate", "state": "failed", "reason": "failed", "error": "HTTP 404", "processed": 0, "events": 0,
             "reconnects": 0, "dropped": {}},
        ]


def test_live_state_joins_stream_states_with_the_board_and_totals_leave_out_sampling(tmp_path):
    board = LiveBoard(CLASSES, clock=Clock())
    board.event(_event("yard", "enter", "start", 1.0))
    board.step("yard", 1.0, [0.1, 0.2, 0.3, 0.4], np.zeros((48, 64, 3), np.uint8))
    board.publish(tmp_path, force=True)
    state = live_state(_Supervisor(), tmp_path)
    assert state["ready"] and state["status"] == "ready" and state["classes"] == list(CLASSES)
    assert state["totals"] == {"streams": 2, "live": 1, "failed": 1, "processed": 40, "dropped": 2, "events": 3,
                               "reconnects": 1, "overlay_frames": 1, "steps_per_s": None}
    yard, gate = state["streams"]
    assert yard["active"] == {"enter": 0.9} and yard["last_events"][0]["action"] == "enter"
    assert yard["frame"] == f"/frames/{frame_key('yard')}.jpg"
    assert gate["frame"] is None and gate["error"] == "HTTP 404" and gate["active"] == {}


def test_live_state_without_a_board_yet(tmp_path):
    state = live_state(_Supervisor(), tmp_path)
    assert [s["name"] for s in state["streams"]] == ["yard", "gate"]
    assert all(s["frame"] is None for s in state["streams"])

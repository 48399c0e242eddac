"""The overlay and the live page in real runs: real decoded video through the
real stage processes, the annotated videos read back with ffprobe and
OpenCV, the overlay process frozen (SIGSTOP) and killed (SIGKILL) while
scoring goes on, and the live page opened in headless Chromium (Debian's
``chromium``, installed by ``make system-deps``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.scores import read_scores
from pipeline.stages.overlay.board import frame_key
from pipeline.supervision.supervisor import Supervisor
from tests.conftest import REPO_ROOT
from tests.support.runs import MODEL, config, run_until, stream_row, synth_videos
from tools.testbed.live_page import screenshot_running_pipeline

SCORE_ATOL = 1e-5


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    paths = synth_videos(tmp_path_factory.mktemp("overlay-videos"), count=2, seed=4242, duration_range=(16.0, 18.0))
    return {"a": paths[0], "b": paths[1]}


@pytest.fixture(scope="module")
def offline(videos, tmp_path_factory) -> dict[str, list]:
    out = tmp_path_factory.mktemp("overlay-offline") / "offline.jsonl"
    subprocess.run([sys.executable, "-m", "tools.score_offline", "--model", str(MODEL), "--videos",
                    *map(str, videos.values()), "--out", str(out), "--quiet"], cwd=REPO_ROOT, check=True,
                   capture_output=True, timeout=300)
    by_stem: dict[str, list] = {}
    for step in read_scores(out):
        by_stem.setdefault(step.stream, []).append(step)
    return {name: by_stem[path.stem] for name, path in videos.items()}


def _frames_in(path: Path) -> tuple[str, int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,nb_read_frames", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    stream = json.loads(out.stdout)["streams"][0]
    return stream["codec_name"], int(stream["nb_read_frames"])


def _overlay_accounted(row: dict) -> bool:
    """Every scored step was drawn or counted as an overlay drop, once."""
    return row["overlay_frames"] + sum(row["overlay_dropped"].values()) == row["processed"]


def _assert_scores_are_offline(scores_file: Path, offline: dict[str, list]) -> None:
    streamed: dict[str, list] = {}
    for step in read_scores(scores_file):
        streamed.setdefault(step.stream, []).append(step)
    for name, reference in offline.items():
        got = streamed[name]
        assert [s.t for s in got] == pytest.approx([s.t for s in reference], abs=1e-9), name
        worst = max(abs(g.scores[c] - r.scores[c]) for g, r in zip(got, reference) for c in r.scores)
        assert worst < SCORE_ATOL, f"{name}: scores differ from offline by {worst}"


def test_overlay_writes_an_h264_video_per_stream_with_every_drawn_step(videos, offline, tmp_path):
    out = tmp_path / "overlay"
    supervisor = Supervisor(config(
        sources=[{"uri": str(p), "name": n} for n, p in videos.items()], overlay={"out_dir": str(out)},
        outputs={"scores_jsonl": str(tmp_path / "scores.jsonl"), "stdout": False},
    ))
    summary = run_until(supervisor, lambda sup: all(stream_row(sup, n).get("state") == "ended" for n in videos))
    # Steps the overlay video missed (under load) are a loss the exit status reports.
    missed = any(summary.streams[n]["overlay_dropped"] for n in videos)
    assert summary.exit_code == (3 if missed else 0) and bool(summary.losses) == missed, summary.losses
    _assert_scores_are_offline(tmp_path / "scores.jsonl", offline)
    for name in videos:
        row = summary.streams[name]
        assert _overlay_accounted(row), row
        assert row["overlay_frames"] > 0.8 * row["processed"], row  # a real-time replay leaves the overlay time
        codec, frames = _frames_in(out / f"{name}.mp4")
        assert codec == "h264" and frames == row["overlay_frames"], (name, frames, row)
        # What is drawn is the stream: the frame on the left, the panel beside it.
        capture = cv2.VideoCapture(str(out / f"{name}.mp4"))
        ok, image = capture.read()
        assert ok and image.shape[1] == 320 + 300 and image.shape[0] >= 240
        source = cv2.VideoCapture(str(videos[name]))
        ok, first = source.read()
        top = (image.shape[0] - 240) // 2
        assert np.abs(image[top:top + 240, :320].astype(int) - first.astype(int)).mean() < 12  # H.264, twice


def test_a_frozen_or_killed_overlay_costs_overlay_frames_not_scores(videos, offline, tmp_path):
    """SIGSTOP the overlay for a while, then SIGKILL it: scoring goes on meanwhile and gives the offline
    scores; the overlay's losses are counted; the supervisor restarts it and the run ends cleanly."""
    out = tmp_path / "overlay"
    supervisor = Supervisor(config(
        sources=[{"uri": str(p), "name": n} for n, p in videos.items()], overlay={"out_dir": str(out)},
        outputs={"scores_jsonl": str(tmp_path / "scores.jsonl"), "stdout": False},
        transport={"high_water_mark": 2},
    ))
    plan: dict = {}

    def operate(sup: Supervisor) -> None:
        stages = {s["name"]: s for s in sup.view.stages()}
        processed = stream_row(sup, "a").get("processed", 0)
        if "frozen_at" not in plan and processed >= 8 and all(s["ready"] for s in stages.values()):
            os.kill(stages["overlay"]["pid"], signal.SIGSTOP)
            plan.update(frozen_at=processed, pid=stages["overlay"]["pid"], since=time.monotonic())
        elif "thawed_at" not in plan and "since" in plan and time.monotonic() - plan["since"] >= 5.0:
            plan["thawed_at"] = processed
            os.kill(plan["pid"], signal.SIGCONT)
        elif "killed" not in plan and "thawed_at" in plan and processed >= plan["thawed_at"] + 8:
            os.kill(plan["pid"], signal.SIGKILL)
            plan["killed"] = processed

    summary = run_until(supervisor, lambda sup: all(stream_row(sup, n).get("state") == "ended" for n in videos),
                        during=operate, timeout_s=120)
    assert "killed" in plan, plan
    # While the overlay was frozen, scoring went on at the stream's pace (4 steps/s for 5 s).
    assert plan["thawed_at"] - plan["frozen_at"] >= 12, plan
    # The video missed the steps drawn while the overlay was frozen or dead: a loss, so exit 3.
    assert summary.exit_code == 3 and summary.restarts == {"overlay": 1}, (summary.exit_code, summary.restarts)
    assert [line for line in summary.losses if line.startswith("overlay video missed")], summary.losses
    _assert_scores_are_offline(tmp_path / "scores.jsonl", offline)
    dropped = 0
    for name in videos:
        row = summary.streams[name]
        assert _overlay_accounted(row), row
        dropped += sum(row["overlay_dropped"].values())
    assert dropped > 0  # the frozen overlay could not take everything
    # The killed process's videos stay readable (fragmented MP4); its successor started new ones.
    for name in videos:
        files = sorted(out.glob(f"{name}.mp4*"))
        assert len(files) == 2, files
        for path in files:
            codec, frames = _frames_in(path)
            assert codec == "h264" and frames > 0, path


def test_the_live_page_in_headless_chromium_shows_every_stream_its_frame_and_events(videos, tmp_path):
    capture = screenshot_running_pipeline(
        [{"uri": str(p), "name": n} for n, p in videos.items()], tmp_path / "live.png", events=1,
        model=str(MODEL), timeout_s=90, want_active_s=10,
    )
    state, dom = capture.state, capture.dom
    assert [s["name"] for s in state["streams"]] == ["a", "b"]
    events = [e for s in state["streams"] for e in s["last_events"]]
    assert events
    # The page's script drew what the API said: a card per stream with its state, its frame, its events.
    for stream in state["streams"]:
        assert f'data-stream="{stream["name"]}"' in dom
        assert f'src="/frames/{frame_key(stream["name"])}.jpg' in dom  # its own latest frame
    assert any(f'{e["action"]} {e["kind"]} at' in dom for e in events), dom[-3000:]
    assert "streams live" in dom and ">2 / 2<" in dom
    picture = cv2.imread(str(capture.png))
    assert picture is not None and picture.shape[:2] == (800, 1280)
    # The annotated frames are on it: text and flat panels have a few hundred colours, video frames thousands.
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 5000

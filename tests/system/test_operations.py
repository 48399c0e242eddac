"""Operations as they really happen: stop signals sent the way timeout, service managers and scripts send
them, a temp cleaner deleting the run folder mid-run, output paths that cannot be written, and the
Python API leaving nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.api import ActionPipeline
from pipeline.scores import read_scores
from pipeline.supervision.supervisor import Supervisor
from tests.conftest import REPO_ROOT
from tests.support.live import accounted
from tests.support.runs import MODEL, config, run_until, stream_row


def _cli(tmp_path: Path, *extra: str, prefix: tuple[str, ...] = ()) -> tuple[list[str], dict[str, Path]]:
    files = {"scores": tmp_path / "s.jsonl", "events": tmp_path / "e.jsonl", "summary": tmp_path / "summary.json"}
    command = [*prefix, sys.executable, "run_pipeline.py", "--loop", "--quiet", "--metrics-port", "0",
               "--control-port", "0", "--scores-out", str(files["scores"]), "--events-out", str(files["events"]),
               "--summary-json", str(files["summary"]), *extra]
    return command, files


def _wait_for_steps(files: dict[str, Path], steps: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if files["scores"].exists() and files["scores"].read_text().count("\n") >= steps:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {steps} scored steps within {timeout_s} s")


def _assert_drained(files: dict[str, Path], stderr: str) -> dict:
    assert "Traceback" not in stderr, stderr[-3000:]
    summary = json.loads(files["summary"].read_text())
    assert summary["interrupted"] and summary["failure"] == "", summary
    steps = read_scores(files["scores"])  # raises on an incomplete line
    events = [json.loads(line) for line in files["events"].read_text().splitlines()]
    for name, row in summary["streams"].items():
        assert row["processed"] == row["sent"] == len([s for s in steps if s.stream == name]) > 0, (name, row)
        assert accounted(row), row
        # Every action started was ended: the drain closed what was open.
        balance = sum(1 if e["kind"] == "start" else -1 for e in events if e["stream"] == name)
        assert balance == 0, [e for e in events if e["stream"] == name][-4:]
    return summary


def test_timeout_signalling_the_process_and_then_its_group_drains(media, tmp_path):
    """GNU timeout sends SIGTERM to the pipeline and then to its whole process group: one request.
    (--preserve-status: timeout exits with the pipeline's status, not its own 124.)

    Its time limit is not waited out: once the pipeline scores, timeout's timer is made to go off now.
    The timer is a SIGALRM to timeout itself, so sending it one runs exactly what the limit would have."""
    command, files = _cli(tmp_path, "--source", str(media["good"]),
                          prefix=("timeout", "--preserve-status", "-s", "TERM", "300"))
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_steps(files, 12)
        proc.send_signal(signal.SIGALRM)  # timeout's own timer signal: its limit has come
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # timeout leads a process group of its own
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    assert "== summary (stopped" in stdout
    summary = _assert_drained(files, stderr)
    assert summary["exit_code"] == 0


@pytest.mark.parametrize("how", ["SIGTERM to the main process, then its group", "SIGTERM twice, 0.1 s apart",
                                 "SIGHUP to the main process"])
def test_a_repeated_signal_within_the_window_and_sighup_drain(how, media, tmp_path):
    command, files = _cli(tmp_path, "--source", str(media["good"]))
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait_for_steps(files, 12)
        if how.startswith("SIGHUP"):
            proc.send_signal(signal.SIGHUP)
        else:
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)
            if "group" in how:
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    assert "== summary (stopped" in stdout
    _assert_drained(files, stderr)


def test_a_second_sigterm_after_the_window_stops_at_once_and_says_so(media, tmp_path):
    # An engine capped at 1 frame/s behind a fast replay: the drain would take many seconds.
    command, files = _cli(tmp_path, "--config", str(tmp_path / "slow.yaml"))
    command.remove("--loop")
    import yaml

    (tmp_path / "slow.yaml").write_text(yaml.safe_dump({
        "model": str(MODEL), "sources": [{"uri": str(media["good"])}], "replay": {"realtime": False},
        "engine": {"max_frames_per_s": 1.0, "max_batch_size": 1},
        "supervision": {"double_signal_window_s": 0.5}}))  # the window's length is not what is tested
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait_for_steps(files, 2)
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)  # past supervision.double_signal_window_s (0.5 s)
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, stderr[-2000:]
    assert "error: stopped without draining" in stderr and "Traceback" not in stderr
    summary = json.loads(files["summary"].read_text())
    assert summary["exit_code"] == 1 and "second stop request" in summary["failure"]


def test_a_run_folder_deleted_mid_run_comes_back_and_a_capture_restart_still_works(media, tmp_path):
    """A temp cleaner removes the run folder; then the capture worker is SIGKILLed. The counters carry
    on, the restarted capture reaches the others, and the run ends normally."""
    ipc = tmp_path / "ipc"
    supervisor = Supervisor(config(
        sources=[{"uri": str(media["good"]), "name": "a"}], transport={"ipc_dir": str(ipc)},
        temporal={"replay_reorder_timeout_s": 60.0}, outputs={"scores_jsonl": str(tmp_path / "s.jsonl")},
    ))
    plan: dict = {}

    def operate(sup: Supervisor) -> None:
        row = stream_row(sup, "a")
        stages = {s["name"]: s for s in sup.view.stages()}
        if "deleted" not in plan and row.get("processed", 0) >= 6 and all(s["ready"] for s in stages.values()):
            plan["captured_before"] = row["captured"]
            plan["folder"] = next(ipc.glob("actionpipe-*"))
            # As a temp cleaner does: what the running processes write meanwhile (a snapshot's temporary
            # file, say) can make one pass find the folder not empty; the cleaner goes on until it is gone.
            while plan["folder"].exists():
                shutil.rmtree(plan["folder"], ignore_errors=True)
            plan["deleted"] = row["processed"]
        elif "killed" not in plan and "deleted" in plan and (plan["folder"] / "metrics").is_dir() \
                and row["processed"] >= plan["deleted"] + 4:
            plan["captured_at_kill"] = row["captured"]
            os.kill(stages["capture:0"]["pid"], signal.SIGKILL)
            plan["killed"] = row["processed"]
        elif "killed" in plan and "after" not in plan and stages["capture:0"]["ready"] \
                and row["processed"] >= plan["killed"] + 4:
            plan["after"] = row["processed"]

    summary = run_until(supervisor, lambda sup: "after" in plan and stream_row(sup, "a").get("state") == "ended",
                        during=operate, timeout_s=120)
    assert "after" in plan, plan
    row = summary.streams["a"]
    assert summary.restarts == {"capture:0": 1}, summary.restarts
    assert row["sequences"] == {"open": 1, "restart": 1}, row
    assert row["captured"] >= plan["captured_at_kill"] >= plan["captured_before"], (row, plan)
    assert accounted(row), row
    assert row["processed"] == len(read_scores(tmp_path / "s.jsonl")), row  # no count was reset
    assert summary.exit_code == 0 and row["state"] == "ended"
    assert list(ipc.iterdir()) == []


def test_unwritable_output_paths_are_refused_before_anything_starts(media, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [
        (["--summary-json", str(blocker / "summary.json")], "--summary-json: folder"),
        (["--overlay-out", "/sys/kernel"], "overlay.out_dir: cannot write in /sys/kernel"),
        (["--events-out", str(blocker / "e.jsonl")], "(the --events-out flag)"),
    ]
    for args, fragment in cases:
        proc = subprocess.run([sys.executable, "run_pipeline.py", "--source", str(media["good"]), "--no-metrics",
                               "--no-control", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "TMPDIR": str(tmp_path), "XDG_RUNTIME_DIR": ""}, check=False)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], (args, proc.stderr)
        assert not list(tmp_path.glob("actionpipe-*"))


def test_the_python_api_leaves_no_folder_behind_after_a_run_or_a_failed_start(media, tmp_path):
    ipc = tmp_path / "ipc"
    pipeline = ActionPipeline.init([str(media["good"])], model=str(MODEL), replay={"realtime": False},
                                   transport={"ipc_dir": str(ipc)})
    with pipeline:
        summary = pipeline.join(120)
    assert summary.exit_code == 0
    assert list(ipc.iterdir()) == []
    broken = ActionPipeline.init([str(media["good"])], model=str(tmp_path / "missing.safetensors"),
                                 transport={"ipc_dir": str(ipc)})
    with pytest.raises(Exception, match="missing.safetensors"):
        broken.start()
    broken._run_thread.join(10)
    assert list(ipc.iterdir()) == []

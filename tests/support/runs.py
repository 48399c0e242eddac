"""Running the real multi-process pipeline from a test: its config, a run stopped once a condition
holds, a stream's row, small SynthActions videos to run it on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.config import validate_config
from pipeline.supervision.report import RunSummary
from pipeline.supervision.supervisor import Supervisor
from tests.conftest import REPO_ROOT

MODEL = REPO_ROOT / "models" / "synthactions_gru.safetensors"


def config(**sections):
    """A pipeline config for tests: the demo model, nothing on fixed ports, no stdout events."""
    data = {"model": str(MODEL), "metrics": {"port": 0}, "control": {"port": 0}, "outputs": {"stdout": False}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return validate_config(data)


def stream_row(supervisor: Supervisor, name: str) -> dict:
    rows = [r for r in supervisor.view.streams() if r["name"] == name]
    return rows[0] if rows else {}


def run_until(supervisor: Supervisor, done: Callable[[Supervisor], bool], timeout_s: float = 90.0,
              during: Callable[[Supervisor], None] | None = None) -> RunSummary:
    """Run the pipeline; ask it to stop (as SIGINT would) once ``done`` holds, or after ``timeout_s``.

    ``during`` is polled on the side while the run goes on (to kill a stage, restart a server, ...).
    """
    failures: list[BaseException] = []

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if supervisor.started and done(supervisor):
                    break
                if during is not None and supervisor.started:
                    during(supervisor)
                time.sleep(0.1)
        except BaseException as exc:  # surfaced by the test after the run
            failures.append(exc)
        finally:
            supervisor.request_stop()

    threading.Thread(target=watch, daemon=True).start()
    summary = supervisor.run()
    if failures:
        raise failures[0]
    return summary


def synth_videos(root: Path, count: int, seed: int, duration_range: tuple[float, float]) -> list[Path]:
    """``count`` small SynthActions videos (320x240, 15 fps) rendered under ``root``, sorted."""
    from tools.synthactions.dataset import write_dataset

    write_dataset(root, count=count, seed=seed, sizes=(320, 240), fps=15.0, duration_range=duration_range,
                  progress=False)
    return sorted((Path(root) / "videos").glob("*.mp4"))

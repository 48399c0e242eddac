"""Helpers for tests that run the real multi-process pipeline."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from pipeline.config import validate_config
from pipeline.supervisor import RunSummary, Supervisor
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
    rows = [r for r in supervisor.streams() if r["name"] == name]
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
                if supervisor._registry is not None and done(supervisor):
                    break
                if during is not None and supervisor._registry is not None:
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")

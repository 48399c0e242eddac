"""Open the live page of a running pipeline in headless Chromium and save a screenshot.

Starts the pipeline on the sources (replayed in a loop at their own pace),
waits until every stream shows a frame and at least ``events`` events have
happened (and, for a telling picture, until some action is active), then
takes the screenshot and stops the pipeline. Needs Debian's ``chromium``
(``make system-deps`` installs it). ``python -m tools.live_screenshot`` and
the tests (which check that the page shows the streams and their events)
use it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ActionPipeError
from tools.testbed.control import get_json

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class ScreenshotError(ActionPipeError, RuntimeError):
    """No screenshot: Chromium is missing or failed, or the page had nothing to show in time."""


@dataclass(frozen=True)
class PageCapture:
    png: Path
    dom: str  # the page's DOM after its script ran
    state: dict  # /api/live when the picture was taken


def find_chromium() -> str:
    """The Chromium (or Chrome) on the PATH."""
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    raise ScreenshotError("no Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + "): install Debian's "
                          "chromium (make system-deps does)")


def _chromium(url: str, extra: list[str], width: int, height: int, timeout_s: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="actionpipe-chromium-") as profile:
        command = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
                   f"--window-size={width},{height}", "--virtual-time-budget=4000", *extra, url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise ScreenshotError(f"chromium exited with {result.returncode}: {result.stderr.strip()[-500:]}")
    return result


def capture_page(url: str, out: Path, width: int = 1280, height: int = 800, timeout_s: float = 60.0) -> tuple[Path, str]:
    """Screenshot ``url`` into ``out`` and return it with the rendered DOM."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _chromium(url, [f"--screenshot={out}"], width, height, timeout_s)
    if not out.is_file():
        raise ScreenshotError(f"chromium wrote no screenshot to {out}")
    dom = _chromium(url, ["--dump-dom"], width, height, timeout_s).stdout
    return out, dom


def page_ready(state: dict, events: int) -> bool:
    """Whether the live page's state (``/api/live``) shows a frame of every stream and ``events`` events."""
    streams = state.get("streams", [])
    return (bool(streams) and all(s.get("frame") for s in streams)
            and state.get("totals", {}).get("events", 0) >= events)


def screenshot_running_pipeline(sources: list[dict], out: Path, events: int = 1, model: str | None = None,
                                width: int = 1280, height: int = 800, timeout_s: float = 120.0,
                                want_active_s: float = 20.0) -> PageCapture:
    """Run the pipeline on ``sources`` (looped), screenshot its live page once it has something to show."""
    from pipeline.config import validate_config
    from pipeline.supervision.supervisor import Supervisor

    data = {"sources": sources, "replay": {"loop": True}, "live_page": {"enabled": True, "port": 0},
            "metrics": {"port": 0}, "control": {"port": 0}, "outputs": {"stdout": False},
            "logging": {"level": "warning"}}
    if model:
        data["model"] = model
    supervisor = Supervisor(validate_config(data, "live_screenshot"))
    result: dict = {}

    def watch() -> None:
        try:
            deadline = time.monotonic() + timeout_s
            ready_since = None
            while time.monotonic() < deadline:
                if supervisor.live_url:
                    live_state = supervisor.live_url + "api/live"
                    state = get_json(live_state, timeout_s=5)
                    if page_ready(state, events):
                        ready_since = ready_since or time.monotonic()
                        active = any(s["active"] for s in state["streams"])
                        if active or time.monotonic() - ready_since > want_active_s:
                            png, dom = capture_page(supervisor.live_url, out, width, height)
                            result["capture"] = PageCapture(png, dom, get_json(live_state, timeout_s=5))
                            return
                time.sleep(0.2)
            result["error"] = ScreenshotError(f"the live page had nothing to show within {timeout_s:g} s")
        except Exception as exc:  # surfaced after the pipeline stopped
            result["error"] = exc
        finally:
            supervisor.request_stop()

    threading.Thread(target=watch, name="live-screenshot", daemon=True).start()
    supervisor.run()
    if "error" in result:
        raise result["error"]
    return result["capture"]

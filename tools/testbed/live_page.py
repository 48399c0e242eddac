"""Open the live page of a running pipeline in headless Chromium and save a screenshot.

    python -m tools.live_screenshot --source clip.mp4 --source yard=other.mp4 --out docs/images/live-page.png

Starts the pipeline on the sources (replayed in a loop at their own pace),
waits until every stream shows a frame and at least ``--events`` events have
happened (and, for a telling picture, until some action is active), then
takes the screenshot and stops the pipeline. Needs Debian's ``chromium``
(``make system-deps`` installs it). The tests use the same code to check
that the page shows the streams and their events.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class ScreenshotError(RuntimeError):
    pass


@dataclass(frozen=True)
class PageCapture:
    png: Path
    dom: str  # the page's DOM after its script ran
    state: dict  # /api/live when the picture was taken


def find_chromium() -> str:
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


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def page_ready(state: dict, events: int) -> bool:
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
                    state = _get_json(supervisor.live_url + "api/live")
                    if page_ready(state, events):
                        ready_since = ready_since or time.monotonic()
                        active = any(s["active"] for s in state["streams"])
                        if active or time.monotonic() - ready_since > want_active_s:
                            png, dom = capture_page(supervisor.live_url, out, width, height)
                            result["capture"] = PageCapture(png, dom, _get_json(supervisor.live_url + "api/live"))
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", action="append", required=True, metavar="[NAME=]FILE")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--model", help="head checkpoint (default: the demo model)")
    parser.add_argument("--events", type=int, default=2, help="wait for this many events first")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args(argv)
    from pipeline.cli import _source_entry
    from pipeline.logs import setup_logging

    setup_logging("warning", "live_screenshot")
    try:
        capture = screenshot_running_pipeline([_source_entry(s) for s in args.source], args.out, args.events,
                                              args.model, args.width, args.height)
    except (ScreenshotError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {capture.png} ({len(capture.state['streams'])} streams, {capture.state['totals']['events']} events)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Open the live page of a running pipeline in headless Chromium and save a screenshot.

    python -m tools.live_screenshot --source clip.mp4 --source yard=other.mp4 --out docs/images/live-page.png

How it waits for a telling picture: tools.testbed.live_page. Exit status 1
when no screenshot could be taken.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.cli import run
from tools.testbed.live_page import ScreenshotError, screenshot_running_pipeline


def _screenshot(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", action="append", required=True, metavar="[NAME=]FILE")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--model", help="head checkpoint (default: the demo model)")
    parser.add_argument("--events", type=int, default=2, help="wait for this many events first")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args(argv)
    from pipeline.logs import setup_logging
    from pipeline.sources.uri import source_entry

    setup_logging("warning", "live_screenshot")
    capture = screenshot_running_pipeline([source_entry(s) for s in args.source], args.out, args.events,
                                          args.model, args.width, args.height)
    print(f"wrote {capture.png} ({len(capture.state['streams'])} streams, {capture.state['totals']['events']} events)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_screenshot, argv, user_errors=(ScreenshotError, OSError, subprocess.TimeoutExpired), exit_code=1)


if __name__ == "__main__":
    sys.exit(main())

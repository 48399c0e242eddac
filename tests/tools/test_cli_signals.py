"""A tool stopped by SIGTERM (`timeout`, a CI runner) still runs its clean-up: what it started in sessions of
its own (pipelines, cameras) must not outlive it. Real processes and a real signal."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

TOOL = """
import sys, time
from pathlib import Path
from tools.cli import run

def main(argv):
    marker = Path(argv[0])
    try:
        marker.with_suffix(".started").write_text("")
        time.sleep(60)
        return 0
    finally:
        marker.write_text("cleaned up")

sys.exit(run(main, sys.argv[1:]))
"""


def test_sigterm_runs_the_tools_finally_and_exits_as_interrupted(tmp_path):
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", TOOL, str(marker)], cwd=REPO_ROOT, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while not marker.with_suffix(".started").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the tool did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert marker.read_text() == "cleaned up"
    assert "interrupted" in proc.stderr.read()

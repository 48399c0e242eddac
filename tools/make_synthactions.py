"""Render a SynthActions v1 data set (docs/synthactions.md).

    python -m tools.make_synthactions --out data/sa_train --count 200 --seed 1 \\
        [--size WxH|mixed] [--fps F | --fps-range LO HI] [--duration-range LO HI] \\
        [--looks all|train|heldout] [--workers N] [--overwrite] [--quiet]

Writes ``DIR/videos/<video_id>.mp4``, ``DIR/annotations.txt`` and
``DIR/manifest.json``. The same arguments always give the same data.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import NoReturn

from tools.evaluation.annotations import SYNTH_ACTIONS_CLASSES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> _Parser:
    p = _Parser(
        prog="python -m tools.make_synthactions",
        description="Render a deterministic SynthActions v1 data set (mp4 videos + THUMOS-style annotations).",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created; must be empty unless --overwrite)")
    p.add_argument("--count", required=True, type=int, metavar="N", help="number of videos (>= 1)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="data set seed (default 0)")
    p.add_argument(
        "--size",
        default="320x240",
        metavar="WxH|mixed",
        help="frame size, 320x240..1920x1080 with even sides, or 'mixed' for a random common size per video "
        "(default 320x240)",
    )
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--fps", type=float, metavar="F", help="frame rate for every video, 10..30")
    rate.add_argument(
        "--fps-range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="draw each video's frame rate from the integers in LO..HI and 15/25/29.97/30 (default 10 30)",
    )
    p.add_argument(
        "--duration-range",
        type=float,
        nargs=2,
        default=(30.0, 60.0),
        metavar=("LO", "HI"),
        help="video duration in seconds, drawn per video (default 30 60; at least 4)",
    )
    p.add_argument(
        "--looks",
        choices=("all", "train", "heldout"),
        default="all",
        help="which looks the scenes may use: all (default); train or heldout, which share no background kind, "
        "actor shape, actor fill or noise level (to test a model on scenes unlike its training set)",
    )
    p.add_argument("--workers", type=int, default=1, metavar="N", help="render N videos in parallel (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace the videos, annotations and manifest in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _fmt(v: float) -> str:
    return f"{v:g}"


def _validate(p: _Parser, args: argparse.Namespace) -> None:
    from tools.synthactions.dataset import parse_size

    if args.count < 1:
        p.error(f"--count {args.count} must be at least 1")
    if args.workers < 1:
        p.error(f"--workers {args.workers} must be at least 1")
    try:
        args.size_wh = parse_size(args.size)
    except ValueError as exc:
        p.error(f"--size: {exc}")
    if args.fps is not None and not (10.0 <= args.fps <= 30.0):
        p.error(f"--fps {_fmt(args.fps)} is outside 10..30")
    if args.fps_range is not None:
        lo, hi = args.fps_range
        for v in (lo, hi):
            if not (10.0 <= v <= 30.0):
                p.error(f"--fps-range value {_fmt(v)} is outside 10..30")
        if lo > hi:
            p.error(f"--fps-range {_fmt(lo)} {_fmt(hi)} is empty (LO > HI)")
    lo, hi = args.duration_range
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 4.0 or hi > 86400.0:
        p.error(f"--duration-range {_fmt(lo)} {_fmt(hi)} must lie within 4..86400 seconds")
    if lo > hi:
        p.error(f"--duration-range {_fmt(lo)} {_fmt(hi)} is empty (LO > HI)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        p.error(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        p.error(f"--out {out} is not empty; pass --overwrite to replace its data set")


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    _validate(p, args)

    from tools.synthactions.dataset import write_dataset

    try:
        instances = write_dataset(
            args.out,
            args.count,
            args.seed,
            sizes=args.size_wh,
            fps=args.fps,
            fps_range=tuple(args.fps_range) if args.fps_range else (10.0, 30.0),
            duration_range=tuple(args.duration_range),
            progress=not args.quiet,
            overwrite=args.overwrite,
            workers=args.workers,
            looks=args.looks,
        )
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    manifest = json.loads((Path(args.out) / "manifest.json").read_text(encoding="utf-8"))
    seconds = sum(v["duration"] for v in manifest["videos"])
    frames = sum(v["frames"] for v in manifest["videos"])
    per_class = Counter(i.action for i in instances)
    classes = " ".join(f"{c}={per_class.get(c, 0)}" for c in SYNTH_ACTIONS_CLASSES[1:])
    print(
        f"wrote {len(manifest['videos'])} videos ({seconds:.1f} s, {frames} frames, "
        f"{len(instances)} actions) to {args.out}: {classes}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

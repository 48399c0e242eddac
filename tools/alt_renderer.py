"""Render SynthActions v1 streams with the independent second renderer (tools.synthactions.alt_renderer).

    python -m tools.alt_renderer --out DIR --count N [--seed S]

writes DIR/videos/alt{S}_{i:04d}.mp4 and DIR/annotations.txt (THUMOS'14 style).
Bad input: one ``error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tools.cli import run
from tools.synthactions.alt_renderer import DEFAULT_FPS, DEFAULT_SIZES, write_alt_dataset


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 640x480, got {text!r}") from None
    return w, h


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.alt_renderer",
                                description="Render SynthActions v1 streams with an independent, plain-looking renderer.")
    p.add_argument("--out", type=Path, required=True, help="output folder (videos/ and annotations.txt)")
    p.add_argument("--count", type=int, required=True, help="number of videos")
    p.add_argument("--seed", type=int, default=0, help="random seed (>= 0); same seed, same data set")
    p.add_argument("--size", type=_size, action="append", help="WxH, repeatable (default 320x240, 640x480, 1280x720)")
    p.add_argument("--fps", type=int, action="append", help="frame rate, repeatable (default 10, 15, 24, 30)")
    p.add_argument("--min-duration", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument("--max-duration", type=float, default=50.0, help="seconds (default 50)")
    return p


def _render(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    t0 = time.perf_counter()
    write_alt_dataset(args.out, args.count, args.seed, sizes=tuple(args.size or DEFAULT_SIZES),
                      fps_choices=tuple(args.fps or DEFAULT_FPS), duration_range=(args.min_duration, args.max_duration))
    print(f"wrote {args.count} videos and annotations.txt to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    # The renderer's own checks raise ValueError; a file it cannot write, OSError or RuntimeError.
    return run(_render, argv, user_errors=(ValueError, RuntimeError, OSError))


if __name__ == "__main__":
    sys.exit(main())

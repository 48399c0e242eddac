"""What preparing a frame for the backbone costs against OpenCV's area resampling, and how close the
embeddings stay, on the benchmark's real H.264 videos and the judge's test streams.

    python -m tools.benchmark_preparation [--kinds 360p5 720p25] [--frames 60]

Both preparations are timed in the same run on the same decoded frames (CPU ms per frame, OpenCV on
one thread as in capture); the embeddings come from ONNX Runtime FP32.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engines.factory import REPO_ROOT, create_engine
from pipeline.sources.decoding import list_videos
from tools.bench.preparation import compare, spread_frames
from tools.bench.videos import KINDS, make_videos
from tools.cli import UsageError, run

JUDGE_VIDEOS = REPO_ROOT / "data" / "judge" / "ordinary" / "videos"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.benchmark_preparation", description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", nargs="+", default=["360p5", "720p25"],
                   help="benchmark videos (cached in build/bench; 1080p30 is rendered on first use)")
    p.add_argument("--frames", type=int, default=60, help="frames per kind of video")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        raise UsageError(f"--kinds {unknown}: choose from {sorted(KINDS)}")
    engine = create_engine("onnxruntime")
    sources = [(name, spread_frames(make_videos(KINDS[name], 1, 60)[0], args.frames)) for name in args.kinds]
    if JUDGE_VIDEOS.is_dir():  # rendered by `make evaluate`: the mixed sizes the demo head is judged on
        judge = [frame for video in list_videos(JUDGE_VIDEOS)[::6] for frame in spread_frames(video, 8)]
        sources.append(("judge streams, ordinary set", judge))
    print("| source | frame | frames | INTER_AREA, CPU ms | prepare_frame, CPU ms | ratio | cosine mean | cosine min |")
    print("|---|---|---|---|---|---|---|---|")
    for name, frames in sources:
        for size in sorted({f.shape[:2] for f in frames}):
            same = [f for f in frames if f.shape[:2] == size]
            c = compare(engine, name, same, repeats=args.repeats)
            print(f"| {name} | {c.frame_size[0]}x{c.frame_size[1]} | {c.frames} | {c.area_ms:.2f} | "
                  f"{c.prepared_ms:.2f} | {c.area_ms / c.prepared_ms:.1f}x | {c.cosine_mean:.4f} | {c.cosine_min:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))

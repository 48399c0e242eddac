"""What waiting between frames costs on this machine: the engine's and capture's CPU per frame flat
out (how the suite's ideal times them) against the same work paced, the thread sleeping between
frames as a live pipeline's stages do below saturation.

    python -m tools.benchmark_pacing [--kind 360p5] [--precision int8] [--gaps-ms 0 2 5 10 20 50]

The engine runs ONNX Runtime on one thread without spinning, at batch 1 (a frame that leaves at once,
as the embed worker sends one at low load); capture decodes on one thread and prepares each sampled
frame; the temporal worker's share is the parsing of a round's embedding messages (microseconds of
Python, where the other two are milliseconds of native code). Gaps alternate within each of
``--rounds`` rounds; each figure is the median over the rounds.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tools.bench.pacing import decode_steps, engine_frames, message_decoding, paced_costs
from tools.bench.stages import graph_for, sample_frames
from tools.bench.videos import KINDS, make_videos
from tools.cli import run


def main(argv: Sequence[str] | None = None) -> int:
    from engines.head_config import read_head_config
    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from tools.bench.paths import MODEL

    p = argparse.ArgumentParser(prog="python -m tools.benchmark_pacing", description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", default="360p5", choices=sorted(KINDS), help="benchmark video (cached in build/bench)")
    p.add_argument("--precision", default="int8", choices=["fp32", "int8"], help="the engine's graph")
    p.add_argument("--gaps-ms", type=float, nargs="+", default=[0, 2, 5, 10, 20, 50],
                   help="sleeps between calls; 0 (flat out) is the yardstick")
    p.add_argument("--calls", type=int, default=60, help="calls per gap and round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    kind = KINDS[args.kind]
    video = make_videos(kind, 1, 60)[0]
    engine = OnnxRuntimeEngine(graph_for(args.precision), intra_op_threads=1, allow_spinning=False)
    gaps = [ms / 1000 for ms in args.gaps_ms]
    try:
        works = [(f"engine, {args.precision}, batch 1", engine_frames(engine, sample_frames(video, 64))),
                 (f"capture's decode and preparation, {args.kind}",
                  decode_steps(video, read_head_config(MODEL).step_rate_hz)),
                 ("the temporal worker's parsing of 6 embedding messages", message_decoding(6))]
        results = [(name, paced_costs(work, gaps, args.calls, args.rounds)) for name, work in works]
    finally:  # a PacingError names the bad gap or count, and run() makes it the one line
        engine.close()
    print("| work | " + " | ".join(f"{ms:g} ms gap" for ms in args.gaps_ms) + " |")
    print("|---|" + "---|" * len(gaps))
    for name, costs in results:
        print(f"| {name}, CPU ms per call | " + " | ".join(
            f"{c.cpu_ms_per_call:.2f}" + ("" if c.gap_s == 0 else f" ({c.vs_flat_out:.2f}x)") for c in costs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))

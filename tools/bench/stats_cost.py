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
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _first_groups(embedder, count: int):
    """The shipped graph computing only its first ``count`` groups of statistics (the export drops
    every operation that no output needs)."""
    import torch

    class FirstGroups(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedder = embedder

        def forward(self, frames: torch.Tensor):
            embedding, groups = self.embedder.embedding_and_stat_groups(frames)
            return embedding, torch.cat(groups[:count], dim=1)

    return FirstGroups()


def _export(module, path: Path) -> None:
    import torch

    example = torch.zeros(2, 224, 224, 3, dtype=torch.uint8)
    torch.onnx.export(module, (example,), str(path), input_names=["frames"], output_names=["embedding", "stats"],
                      dynamic_axes={"frames": {0: "batch"}, "embedding": {0: "batch"}, "stats": {0: "batch"}},
                      opset_version=17, dynamo=False)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.benchmark_stats", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--runs-per-round", type=int, default=10)
    args = p.parse_args(argv)
    import warnings

    import onnxruntime as ort

    from engines.backbone import build_frame_embedder
    from engines.spec import STATS_DIM, STATS_V1_DIM, STATS_V3_DIM

    warnings.filterwarnings("ignore")
    embedder = build_frame_embedder()
    with tempfile.TemporaryDirectory() as folder:
        shipped, revision_3, first = (f"{n} statistics" for n in (STATS_DIM, STATS_V3_DIM, STATS_V1_DIM))
        paths = {shipped: Path(folder) / "all.onnx", revision_3: Path(folder) / "rev3.onnx",
                 first: Path(folder) / "first.onnx"}
        _export(embedder, paths[shipped])
        _export(_first_groups(embedder, 4), paths[revision_3])
        _export(_first_groups(embedder, 2), paths[first])
        sessions = {name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                    for name, path in paths.items()}
    frames = np.random.default_rng(0).integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8)
    for name, session in sessions.items():
        width = session.run(None, {"frames": frames})[1].shape[1]
        if f"{width} statistics" != name:
            raise RuntimeError(f"the graph for '{name}' makes {width} statistics")
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            for _ in range(args.runs_per_round):
                session.run(None, {"frames": frames})
            rates[name].append(args.batch * args.runs_per_round / (time.perf_counter() - start))
    medians = {name: float(np.median(values)) for name, values in rates.items()}
    for name, value in medians.items():
        print(f"{name}: {value:.1f} frames/s (median of {args.rounds} rounds, batch {args.batch})")
    for other in (revision_3, first):
        print(f"ratio {STATS_DIM}/{other.split()[0]}: {medians[shipped] / medians[other]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

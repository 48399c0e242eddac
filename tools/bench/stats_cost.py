"""What the frame statistics cost (``python -m tools.benchmark_stats``): the exported graph as shipped
against the same graph computing fewer groups of statistics, exported here from the same weights and
timed in ONNX Runtime in alternating rounds on the same frames.
"""

from __future__ import annotations

import time
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
    """``module`` as an ONNX graph of uint8 frames [N, 224, 224, 3] -> embedding, stats."""
    import torch

    example = torch.zeros(2, 224, 224, 3, dtype=torch.uint8)
    torch.onnx.export(module, (example,), str(path), input_names=["frames"], output_names=["embedding", "stats"],
                      dynamic_axes={"frames": {0: "batch"}, "embedding": {0: "batch"}, "stats": {0: "batch"}},
                      opset_version=17, dynamo=False)


def export_graphs(folder: Path) -> dict:
    """ONNX Runtime sessions (CPU) of the shipped graph and of the same graph making only the statistics of
    export revision 3 and of the first group, exported into ``folder``; by name, e.g. ``"482 statistics"``,
    the shipped one first."""
    import onnxruntime as ort

    from engines.backbone import build_frame_embedder
    from engines.spec import STATS_DIM, STATS_V1_DIM, STATS_V3_DIM

    embedder = build_frame_embedder()
    shipped, revision_3, first = (f"{n} statistics" for n in (STATS_DIM, STATS_V3_DIM, STATS_V1_DIM))
    paths = {shipped: folder / "all.onnx", revision_3: folder / "rev3.onnx", first: folder / "first.onnx"}
    _export(embedder, paths[shipped])
    _export(_first_groups(embedder, 4), paths[revision_3])
    _export(_first_groups(embedder, 2), paths[first])
    return {name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) for name, path in paths.items()}


def check_widths(sessions: dict, frames: np.ndarray) -> None:
    """Raises RuntimeError when a graph makes another number of statistics than its name says."""
    for name, session in sessions.items():
        width = session.run(None, {"frames": frames})[1].shape[1]
        if f"{width} statistics" != name:
            raise RuntimeError(f"the graph for '{name}' makes {width} statistics")


def frame_rates(sessions: dict, frames: np.ndarray, rounds: int, runs_per_round: int) -> dict[str, list[float]]:
    """Frames/s of each graph in each round; the graphs take turns within a round, so drift hits them alike."""
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            for _ in range(runs_per_round):
                session.run(None, {"frames": frames})
            rates[name].append(len(frames) * runs_per_round / (time.perf_counter() - start))
    return rates

"""What a backbone consumes and produces, without the model itself.

Kept free of PyTorch so that processes which only need the contract (capture,
the ONNX Runtime embed worker, the supervisor) never load it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

INPUT_NAME = "frames"
OUTPUT_NAMES = ("embedding", "stats")
INPUT_SIZE = 224
EMBEDDING_DIM = 1280
STATS_GRID = 4
# The frame statistics, in groups; a head trained on a prefix of the groups
# (its backbone spec's stats_dim) takes the first stats_dim values, so heads
# trained before a group was added keep working on the newer graph.
STATS_V1_DIM = 1 + 3 * STATS_GRID * STATS_GRID  # mean luma, mean RGB of a 4x4 grid
LUMA_GRID = 8  # mean luma of an 8x8 grid
FEATURE_GRID = 7  # the CNN's last feature map: mean activation per cell over the frame's mean
STATS_V3_DIM = STATS_V1_DIM + LUMA_GRID * LUMA_GRID + FEATURE_GRID * FEATURE_GRID  # export revision 3
FINE_LUMA_GRID = 16  # mean luma of a 16x16 grid
EDGE_GRID = 8  # mean luma gradient magnitude of an 8x8 grid
STATS_DIM = STATS_V3_DIM + FINE_LUMA_GRID * FINE_LUMA_GRID + EDGE_GRID * EDGE_GRID


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone consumes and produces; travels in model metadata."""

    name: str
    input_height: int
    input_width: int
    embedding_dim: int
    stats_dim: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BackboneSpec":
        return cls(**json.loads(text))


EFFICIENTNET_LITE0 = BackboneSpec(
    name="efficientnet_lite0-imagenet",
    input_height=INPUT_SIZE,
    input_width=INPUT_SIZE,
    embedding_dim=EMBEDDING_DIM,
    stats_dim=STATS_DIM,
)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

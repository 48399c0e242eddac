"""The frame backbone as the engines run it: uint8 RGB frames in, embeddings out.

Preprocessing lives inside the model so that every backend (ONNX Runtime,
PyTorch, TensorRT) consumes the same bytes that capture produced:

    frames   uint8  [N, 224, 224, 3]  RGB, already resized by capture
    embedding float32 [N, 1280]        EfficientNet-Lite0 pooled features
    stats     float32 [N, 482]         frame statistics, in groups (cells row-major from the top left):
                [0]        mean luma, in [0, 1]
                [1:49]     mean R, G, B of each cell of a 4x4 grid, in [0, 1]
                [49:113]   mean luma of each cell of an 8x8 grid, in [0, 1]
                [113:162]  the CNN's last feature map (7x7 cells): each cell's mean
                           activation over the whole map's mean (about 1 on average)
                [162:418]  mean luma of each cell of a 16x16 grid, in [0, 1]
                [418:482]  mean luma gradient magnitude (|dx| + |dy| between neighbouring
                           pixels) of each cell of an 8x8 grid

``stats`` exists because the temporal head must see global brightness (the
lights_on / lights_off actions), which the CNN's features largely normalise
away, and *where* in the frame things change (an object entering across an
edge, growing in the middle), which global pooling discards. The 8x8 luma
grid shows an object's outline and position more finely than the colour
grid; the feature-map cells show where the CNN sees *something* (an object)
whatever its colour, relative to the rest of the frame, so neither
brightness nor the object's hue moves them much. The 16x16 luma grid and
the 8x8 edge grid (where the picture has outlines, whatever their colours)
place an object's border finely enough to see it grow or slide by a few
pixels between steps: what tells a slow approach or entry from an actor
that only jitters. Cell means average hundreds to thousands of pixels, so
sensor noise barely moves them.

A head uses the first ``stats_dim`` values (its backbone spec): heads trained
on the first group only (49 values, export revision 2) or on the first three
(162, export revision 3) run unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engines.efficientnet_lite import EfficientNetLite0, load_pretrained
from engines.spec import (  # noqa: F401  (the contract's names, re-exported for the tools)
    EDGE_GRID,
    EFFICIENTNET_LITE0,
    FINE_LUMA_GRID,
    INPUT_NAME,
    LUMA_GRID,
    OUTPUT_NAMES,
    STATS_DIM,
    STATS_GRID,
    BackboneSpec,
    file_sha256,
)

# Bump when the graph's inputs, outputs or preprocessing change: cached exports rebuild.
EXPORT_REVISION = 4
ONNX_OPSET = 17


class FrameEmbedder(nn.Module):
    """uint8 NHWC RGB -> (embedding, stats); the graph every backend runs."""

    def __init__(self, network: EfficientNetLite0) -> None:
        super().__init__()
        self.network = network
        # Rec.601 luma weights for R, G, B.
        self.register_buffer("luma_weights", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, groups = self.embedding_and_stat_groups(frames)
        return embedding, torch.cat(groups, dim=1)

    def embedding_and_stat_groups(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The embedding, and the statistics as the groups they are concatenated from, in order:
        mean luma, the 4x4 colour grid (export revision 2), the 8x8 luma grid, the feature-map
        cells (revision 3), the fine grids (revision 4)."""
        x = frames.permute(0, 3, 1, 2).to(torch.float32)
        feature_map = self.network.feature_map((x - 127.0) / 128.0)
        embedding = feature_map.mean(dim=(2, 3))
        unit = x / 255.0
        luma_map = (unit * self.luma_weights).sum(dim=1, keepdim=True)
        luma = luma_map.mean(dim=(1, 2, 3))
        # Mean colour per cell: [N, 3, G, G] -> [N, G, G, 3] -> [N, G*G*3], row-major cells.
        grid = nn.functional.adaptive_avg_pool2d(unit, STATS_GRID).permute(0, 2, 3, 1).flatten(1)
        luma_grid = nn.functional.adaptive_avg_pool2d(luma_map, LUMA_GRID).flatten(1)
        activity = feature_map.mean(dim=1)  # [N, 7, 7]
        relative = activity / activity.mean(dim=(1, 2), keepdim=True).clamp_min(1e-6)
        return embedding, [luma[:, None], grid, luma_grid, relative.flatten(1), fine_statistics(luma_map)]


def fine_statistics(luma_map: torch.Tensor) -> torch.Tensor:
    """[N, 1, 224, 224] luma in [0, 1] -> [N, 320]: the 16x16 luma grid, then the 8x8 edge grid."""
    fine = nn.functional.adaptive_avg_pool2d(luma_map, FINE_LUMA_GRID).flatten(1)
    # Differences to the right and below, zero-padded back to the frame's size so that the cells
    # divide it evenly (a fixed pooling window: the ONNX export loses the padded map's size).
    dx = nn.functional.pad((luma_map[..., :, 1:] - luma_map[..., :, :-1]).abs(), (0, 1, 0, 0))
    dy = nn.functional.pad((luma_map[..., 1:, :] - luma_map[..., :-1, :]).abs(), (0, 0, 0, 1))
    edges = nn.functional.avg_pool2d(dx + dy, kernel_size=luma_map.shape[-1] // EDGE_GRID).flatten(1)
    return torch.cat([fine, edges], dim=1)


def build_frame_embedder(weights: Path | None = None) -> FrameEmbedder:
    return FrameEmbedder(load_pretrained(weights)).eval()


def export_onnx(out_path: Path, weights: Path | None = None) -> Path:
    """Export the FrameEmbedder to ONNX with a dynamic batch axis."""
    from engines.efficientnet_lite import pretrained_weights_path

    weights = weights or pretrained_weights_path()
    model = build_frame_embedder(weights)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, EFFICIENTNET_LITE0.input_height, EFFICIENTNET_LITE0.input_width, 3, dtype=torch.uint8)
    tmp_path = out_path.with_suffix(".onnx.partial")
    torch.onnx.export(
        model,
        (example,),
        str(tmp_path),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes={INPUT_NAME: {0: "batch"}, "embedding": {0: "batch"}, "stats": {0: "batch"}},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    import onnx

    proto = onnx.load(str(tmp_path))
    stamp = {
        "backbone": EFFICIENTNET_LITE0.to_json(),
        "weights_sha256": file_sha256(weights),
        "export_revision": str(EXPORT_REVISION),
    }
    for key, value in stamp.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp_path))
    tmp_path.replace(out_path)
    return out_path


def onnx_is_current(path: Path, weights: Path | None = None) -> bool:
    """True when ``path`` was exported from these weights by this export revision."""
    if not path.is_file():
        return False
    from engines.efficientnet_lite import pretrained_weights_path
    from engines.graph_metadata import read_graph_metadata

    props = read_graph_metadata(path)
    return props.get("export_revision") == str(EXPORT_REVISION) and props.get(
        "weights_sha256"
    ) == file_sha256(weights or pretrained_weights_path())


def ensure_onnx(path: Path, weights: Path | None = None) -> Path:
    if not onnx_is_current(path, weights):
        export_onnx(path, weights)
    return path
